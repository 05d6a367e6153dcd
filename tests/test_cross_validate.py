"""benchmarks/cross_validate.py run end to end on a tiny synthetic set: the bookkeeping that
decides which fold models are trained and which are reused."""

import json
from pathlib import Path

import click
from click.testing import CliRunner


def run(cross_validate: click.Command, tmp_path: Path, data: Path, out: str, *extra: str) -> dict:
    result = CliRunner().invoke(cross_validate, [
        "classification", "--data", str(data), "--folds", "2", "--epochs", "1", "--input-size", "32",
        "--batch-size", "4", "--pretrained", "none", "--workdir", str(tmp_path / "work"),
        "--out", str(tmp_path / out), *extra])
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / out).read_text())


def test_a_seed_ensemble_resumed_after_a_single_model_run_takes_its_models_as_seed_0(cross_validate, synth_example, tmp_path):
    """Seed 0 of a seed ensemble is the single model's training: --seeds 2 --resume trains one
    more model a fold, and its member 0 scores as the single model did."""
    single = run(cross_validate, tmp_path, synth_example, "single.json")
    fold_models = sorted((tmp_path / "work").glob("*-fold?.pt"))
    assert len(fold_models) == 2
    written = {p: p.stat().st_mtime_ns for p in fold_models}

    seeds = run(cross_validate, tmp_path, synth_example, "seeds.json", "--seeds", "2", "--resume")

    assert {p: p.stat().st_mtime_ns for p in fold_models} == written  # not trained again
    assert not list((tmp_path / "work").glob("*-seed0.pt"))
    assert len(list((tmp_path / "work").glob("*-fold?-seed1.pt"))) == 2
    for before, after in zip(single["per_fold"], seeds["per_fold"]):
        assert after["variants"]["member0"]["auc"] == before["auc"]
