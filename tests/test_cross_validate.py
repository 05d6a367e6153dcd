"""benchmarks/cross_validate.py run end to end on a tiny synthetic set: the bookkeeping that
decides which fold models are trained and which are reused."""

import json
from pathlib import Path
from types import ModuleType

from click.testing import CliRunner, Result


def invoke(cross_validate: ModuleType, tmp_path: Path, data: Path, out: str, *extra: str) -> Result:
    """Two folds of a classifier at 32 px, one epoch."""
    return CliRunner().invoke(cross_validate.main, [
        "classification", "--data", str(data), "--folds", "2", "--epochs", "1", "--input-size", "32",
        "--batch-size", "4", "--pretrained", "none", "--workdir", str(tmp_path / "work"),
        "--out", str(tmp_path / out), *extra])


def run(cross_validate: ModuleType, tmp_path: Path, data: Path, out: str, *extra: str) -> dict:
    result = invoke(cross_validate, tmp_path, data, out, *extra)
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


def test_train_cases_cuts_each_folds_training_part_to_nested_subsets(cross_validate, synth_example, tmp_path):
    """--train-cases N: each fold learns from N of its training photographs, is scored on all its
    held-out ones, and keeps its models apart from a run on all of them."""
    record = run(cross_validate, tmp_path, synth_example, "three.json", "--train-cases", "3")
    assert record["train_cases"] == 3
    assert [f["trained_on"] for f in record["per_fold"]] == [3, 3]
    assert sum(f["cases"] for f in record["per_fold"]) == 8
    assert len(list((tmp_path / "work").glob("*-3cases-fold?.pt"))) == 2

    cases = list(range(12))
    assert set(cross_validate.fewer(cases, 4, seed=1)) <= set(cross_validate.fewer(cases, 8, seed=1))


def test_impossible_counts_and_folds_are_one_line(cross_validate, synth_example, tmp_path):
    for extra, problem in ((["--train-cases", "9"], "--train-cases 9: a fold has 4 training photographs"),
                           (["--only-folds", "5"], "--only-folds 5: the folds are 0 to 1")):
        result = invoke(cross_validate, tmp_path, synth_example, "r.json", *extra)
        assert result.exit_code == 2 and problem in result.output, result.output
        assert not (tmp_path / "r.json").exists()


def write_centres_only(folder: Path, count: int = 4) -> Path:
    """An IDRiD-shaped folder: photographs whose optic disc is marked by its centre only."""
    from PIL import Image

    from palm_algos.synth import synth_case

    (folder / "images").mkdir(parents=True)
    fovea, disc = ["Image No,X- Coordinate,Y - Coordinate"], ["Image No,X- Coordinate,Y - Coordinate"]
    for i in range(count):
        case = synth_case(500 + i, (256, 256))
        name = f"IDRiD_{i + 1:03d}"
        Image.fromarray(case.image).save(folder / "images" / f"{name}.jpg", quality=92)
        rows, cols = case.disc.nonzero()
        fovea.append(f"{name},{case.fovea[0]:.0f},{case.fovea[1]:.0f}")
        disc.append(f"{name},{cols.mean():.0f},{rows.mean():.0f}")
    (folder / "IDRiD_Fovea_Center_Markups.csv").write_text("\n".join(fovea) + "\n")
    (folder / "IDRiD_OD_Center_Markups.csv").write_text("\n".join(disc) + "\n")
    return folder


def test_a_source_marking_disc_centres_only_is_left_out_and_scored_on_where_the_disc_is(cross_validate, synth_example, tmp_path):
    """Leave one source out for the disc: the masked source is scored by Dice, having learned
    the centres; the centres-only source (IDRiD's kind) by where the model's disc lies."""
    centres = write_centres_only(tmp_path / "centres")
    result = CliRunner().invoke(cross_validate.main, [
        "disc", "--data", str(synth_example), "--data", str(centres), "--leave-one-source-out",
        "--epochs", "1", "--input-size", "64", "--batch-size", "4", "--pretrained", "none",
        "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "loso.json")])
    assert result.exit_code == 0, result.output
    masked, centred = json.loads((tmp_path / "loso.json").read_text())["per_fold"]
    discs = sum(1 for m in (synth_example / "Disc_Masks").glob("*.bmp"))
    assert (masked["trained_on"], masked["cases"]) == (4, discs) and 0 <= masked["dice"]["mean"] <= 1
    assert (centred["trained_on"], centred["cases"]) == (discs, 4) and "dice" not in centred
    assert centred["distance_normalised"]["mean"] >= 0 and 0 <= centred["on_disc"] <= 4
    assert centred["beyond_0.05"] <= 4 and centred["source"] == str(centres)
