"""benchmarks/train_final.sh, the documented final recipes: each task's OUT.pt is what `palm
predict --model OUT.pt` uses as it is (the classification and disc ones the ensembles of their
3 seed models). Run on 8 real cases per task with the recipes shrunk to one epoch at 32 px,
through the script's PALM hook, so that the script's own logic (commands, seeds, ensembling)
is what runs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from palm_algos.checkpoint import load_checkpoint
from palm_algos.formats import TASKS

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def shrunk_palm(tmp_path_factory) -> Path:
    """A `palm` that trains every recipe for one epoch at 32 px (the last option wins in click)."""
    wrapper = tmp_path_factory.mktemp("bin") / "palm"
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = train ]; then exec {sys.executable} -m palm_algos.cli "$@" '
                       f'--epochs 1 --input-size 32; else exec {sys.executable} -m palm_algos.cli "$@"; fi\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


@pytest.fixture(scope="module")
def small_data_root(shared_data, tmp_path_factory) -> Path:
    """DATA_ROOT laid out like ../shared/data, 8 real cases per task (links, and the IDRiD
    sheets cut to those rows), and 4 of the DRIONS sample, the disc recipe's second source."""
    root = tmp_path_factory.mktemp("data")

    def link(relative: str, names: list[str]) -> None:
        (root / relative).mkdir(parents=True)
        for name in names:
            (root / relative / name).symlink_to(shared_data / relative / name)

    palm = sorted(p.name for p in (shared_data / "palm224/PALM-Training400").glob("*.jpg"))
    link("palm224/PALM-Training400", [n for n in palm if n[0] == "P"][:4] + [n for n in palm if n[0] != "P"][:4])
    idrid = sorted(p.stem for p in (shared_data / "idrid/images").glob("*.jpg"))[:8]
    link("idrid/images", [f"{n}.jpg" for n in idrid])
    for sheet in (shared_data / "idrid").glob("*.csv"):
        lines = sheet.read_text().splitlines()
        (root / "idrid" / sheet.name).write_text("\n".join([lines[0]] + [l for l in lines[1:] if l.split(",")[0] in idrid]) + "\n")
    drishti = sorted(p.stem for p in (shared_data / "drishti-gs1/Training/images").glob("*.jpg"))[:8]
    link("drishti-gs1/Training/images", [f"{n}.jpg" for n in drishti])
    link("drishti-gs1/Training/disc-softmaps", [f"{n}_ODsegSoftmap.png" for n in drishti])
    drions = sorted(p.name for p in (shared_data / "drions-sample/images").glob("*.jpg"))[:4]
    link("drions-sample/images", drions)
    link("drions-sample/masks", drions)
    return root


@pytest.mark.parametrize("task", TASKS)
def test_train_final_writes_the_checkpoint_palm_predict_uses(shared_data, small_data_root, shrunk_palm, tmp_path, task):
    """Every final recipe is an ensemble of 3 seeds, its seed models kept beside it."""
    out = tmp_path / "models" / f"{task}.pt"
    env = {**os.environ, "PALM": str(shrunk_palm)}
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "train_final.sh"), task, str(small_data_root), str(out)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    meta = load_checkpoint(out)["meta"]
    assert meta["task"] == task and int(meta.get("members", 0)) == 3
    assert sorted(p.name for p in out.parent.glob(f"{task}-seed?.pt")) == [f"{task}-seed{s}.pt" for s in range(3)]
    images = tmp_path / "images"
    images.mkdir()
    source = {"classification": "palm224/PALM-Training400/P0001.jpg", "fovea": "idrid/images/IDRiD_001.jpg",
              "disc": "drishti-gs1/Training/images/drishtiGS_002.jpg"}[task]
    (images / Path(source).name).symlink_to(shared_data / source)
    predicted = subprocess.run([sys.executable, "-m", "palm_algos.cli", "predict", task, "--input", str(images),
                                "--output", str(tmp_path / "out"), "--model", str(out), "--workers", "0"],
                               capture_output=True, text=True, cwd=ROOT)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert "for 1 of 1 images" in predicted.stdout + predicted.stderr
