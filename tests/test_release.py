"""`./build.sh release`'s model step, without Docker: the final recipes are trained once, a
model stamped with the same recipe is kept (a stopped release goes on where it stopped), and a
changed recipe trains that model again. `palm` is a recorder here; the recipes are the real ones."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def checkout(tmp_path):
    """build.sh, its parts and train_final.sh in a folder of their own (models/ is written there)."""
    for part in ("build.sh", "containers/build", "benchmarks/train_final.sh"):
        target = tmp_path / part
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (ROOT / part).is_dir() else shutil.copy)(ROOT / part, target)
    recorder = tmp_path / "palm"  # records its command line and writes the checkpoint it was asked for
    recorder.write_text('#!/bin/sh\necho "$@" >>"$(dirname "$0")/calls.log"\n'
                        'while [ $# -gt 0 ]; do [ "$1" = --out ] && echo model >"$2"; shift; done\n')
    recorder.chmod(recorder.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "data").mkdir()
    return tmp_path


def release_models(checkout: Path, data: str = "data") -> subprocess.CompletedProcess:
    script = f"set -- help; source ./build.sh >/dev/null; release_models '{data}'"
    env = {**os.environ, "PY": sys.executable, "PALM": str(checkout / "palm"), "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", "-c", f'PY="$PY"; {script}'], cwd=checkout, env=env, capture_output=True, text=True)


def calls(checkout: Path) -> list[str]:
    log = checkout / "calls.log"
    return log.read_text().splitlines() if log.is_file() else []


def test_release_trains_each_final_recipe_once_and_keeps_a_stamped_model(checkout):
    first = release_models(checkout)
    assert first.returncode == 0, first.stderr
    trained = calls(checkout)
    assert [c.split()[:3] for c in trained] == [["train", "--recipe", f"final-{t}"] for t in ("classification", "fovea", "disc")]
    for task in ("classification", "fovea", "disc"):
        assert (checkout / "models" / f"{task}.pt").is_file()
        assert f"palm train {task} --data data/" in (checkout / "models" / f"{task}.recipe").read_text()
    again = release_models(checkout)
    assert again.returncode == 0 and calls(checkout) == trained  # nothing trained twice
    assert again.stderr.count("holds recipe final-") == 3


def test_a_model_whose_recipe_changed_or_whose_training_stopped_is_trained_again(checkout):
    assert release_models(checkout).returncode == 0
    (checkout / "models" / "fovea.recipe").write_text("palm train fovea --epochs 1\n")  # another recipe
    (checkout / "models" / "disc.recipe").unlink()  # a training that stopped before its stamp
    before = len(calls(checkout))
    run = release_models(checkout)
    assert run.returncode == 0
    assert [c.split()[2] for c in calls(checkout)[before:]] == ["final-fovea", "final-disc"]
    assert "training models/fovea.pt (models/fovea.recipe holds another recipe" in run.stderr
    assert "training models/disc.pt (no models/disc.recipe: its training stopped" in run.stderr


def test_the_same_data_spelled_another_way_keeps_the_models(checkout):
    """`--data ../shared/data` and the default $ROOT/../shared/data are one folder: a release
    given one spelling after the other trains nothing again (it once retrained an hour)."""
    (checkout / "shared").mkdir()
    (checkout / "data").rename(checkout / "shared" / "data")
    assert release_models(checkout, "shared/data").returncode == 0
    trained = calls(checkout)
    for spelling in (str(checkout / "shared" / "data"), "./shared/../shared/data/"):
        again = release_models(checkout, spelling)
        assert again.returncode == 0 and calls(checkout) == trained, again.stderr
    assert "--data shared/data/" in (checkout / "models" / "disc.recipe").read_text()


def test_release_without_data_is_one_clear_line(checkout):
    shutil.rmtree(checkout / "data")
    run = release_models(checkout)
    assert run.returncode != 0 and "no data folder data" in run.stderr and not calls(checkout)


def test_each_release_step_is_reported_under_its_own_name(checkout):
    """A step's command may loop over its own `name` (cmd_build does): the timing line still
    names the step (it once read "release step 'all' done")."""
    script = ("set -- help; source ./build.sh >/dev/null; "
              "loops() { for name in classification all; do :; done; }; release_step build loops")
    done = subprocess.run(["bash", "-c", script], cwd=checkout, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "release step 'build' done in" in done.stderr
