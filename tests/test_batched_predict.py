"""Batched, pipelined prediction: the same PALM files whatever the batch size, the decoding
workers or the number of torchrun processes, and one bad image costs only itself."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from palm_algos.checkpoint import combine_checkpoints, save_checkpoint
from palm_algos.cli import main
from palm_algos.formats import CSV_NAMES, DISC_FOLDER, TASKS
from palm_algos.predict import Predictor, predict_folder
from palm_algos.synth import synth_case
from palm_algos.tasks import IMAGENET_MEAN, IMAGENET_STD, get_task

REPO = Path(__file__).resolve().parents[1]


def checkpoint(path: Path, task: str, arch: str, input_size: int, zoom: int = 1, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = get_task(task).build_model(arch, pretrained="none").eval()
    save_checkpoint(path, model.state_dict(), {"task": task, "arch": arch, "input_size": input_size, "zoom": zoom,
                                               "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)})
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny untrained models of the documented recipes' kinds: a ResNet50, an ensemble of
    heat-map models with the refining pass, the disc U-Net with the refining pass (flip TTA is
    the disc's default, and the tests switch it on for all)."""
    folder = tmp_path_factory.mktemp("models")
    members = [checkpoint(folder / f"fovea{s}.pt", "fovea", "disc-fovea-heatmaps", 64, zoom=2, seed=s) for s in range(2)]
    combine_checkpoints(members, folder / "fovea.pt")
    return {"classification": checkpoint(folder / "classification.pt", "classification", "resnet50", 32),
            "fovea": folder / "fovea.pt",
            "disc": checkpoint(folder / "disc.pt", "disc", "resnet34-aspp-unet", 64, zoom=2)}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Six small synthetic JPEGs of different sizes: batches of 4 end with a short one."""
    folder = tmp_path_factory.mktemp("images")
    for i in range(6):
        Image.fromarray(synth_case(i + 1, (150 + 6 * i, 140)).image).save(folder / f"V{i:04d}.jpg", quality=90)
    return folder


def run(models, images: Path, out: Path, task: str, batch_size: int, workers: int):
    return predict_folder(Predictor.load(models[task], tta=True), images, out, progress=False,
                          batch_size=batch_size, workers=workers)


def rows(out: Path, task: str) -> dict[str, list[float]]:
    with open(out / CSV_NAMES[task], newline="") as f:
        return {row[0]: [float(v) for v in row[1:]] for row in list(csv.reader(f))[1:]}


def masks(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted((out / DISC_FOLDER).glob("*.bmp"))}


def assert_same_outputs(a: Path, b: Path, tasks=TASKS) -> None:
    """Risks to 1e-5 (6 digits written) and positions to the 2 digits written; masks exactly."""
    for task in tasks:
        if task in CSV_NAMES:
            first, second = rows(a, task), rows(b, task)
            assert list(first) == list(second)
            for name in first:
                assert first[name] == pytest.approx(second[name], abs=1e-5 if task == "classification" else 0.011), name
        else:
            first, second = masks(a), masks(b)
            assert list(first) == list(second) and first
            for name in first:
                assert np.array_equal(first[name], second[name]), name


@pytest.mark.parametrize("task", TASKS)
def test_batch_size_and_workers_do_not_change_the_predictions(models, images, tmp_path, task):
    one = run(models, images, tmp_path / "one", task, batch_size=1, workers=0)
    four = run(models, images, tmp_path / "four", task, batch_size=4, workers=2)
    assert one == four and one.predicted == 6 and not one.problems
    assert_same_outputs(tmp_path / "one", tmp_path / "four", [task])


@pytest.mark.parametrize("task", TASKS)
def test_a_batch_is_the_images_predicted_one_by_one(models, images, task):
    """``Predictor.predict`` (the overlays' and grand-challenge's path) is the batch of one."""
    predictor = Predictor.load(models[task], tta=True)
    passes = []
    predictor.model.register_forward_hook(lambda module, args, out: passes.append(len(args[0])))
    paths = sorted(images.iterdir())
    alone = [predictor.predict(p) for p in paths]
    passes.clear()
    views = [predictor.views(predictor.read(p)) for p in paths]
    big = torch.stack([v[1] for v in views]) if predictor.zoom > 1 else None
    batched = [predictor.decode(out, v[2])
               for out, v in zip(predictor.outputs(torch.stack([v[0] for v in views]), big, paths), views)]
    assert passes[0] == len(paths)  # one batch
    assert len(passes) == predictor.zoom  # the refining pass: one more batch
    for single, together in zip(alone, batched):
        if task == "disc":
            assert np.array_equal(single, together)
        else:
            assert np.allclose(single, together, atol=1e-5)


class NaNForFlatImages(torch.nn.Module):
    """The model, with a broken output for an image of one colour only."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x).clone()
        out[x.flatten(2).std(2).amax(1) == 0] = float("nan")
        return out


def test_a_bad_image_in_a_batch_costs_only_itself(models, images, tmp_path):
    clean = tmp_path / "clean"
    run(models, images, clean, "classification", batch_size=4, workers=0)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for p in images.iterdir():
        (mixed / p.name).write_bytes(p.read_bytes())
    (mixed / "V0001b.jpg").write_bytes((images / "V0002.jpg").read_bytes()[:300])  # cut short: cannot be decoded
    Image.new("RGB", (160, 140), (90, 40, 20)).save(mixed / "V0002b.jpg")  # the model's output is NaN for it
    predictor = Predictor.load(models["classification"], tta=True)
    predictor.model = NaNForFlatImages(predictor.model)
    result = predict_folder(predictor, mixed, tmp_path / "out", progress=False, batch_size=4, workers=2)
    assert (result.found, result.predicted) == (8, 6)
    assert [line.split(": ")[0] for line in result.problems] == [str(mixed / "V0001b.jpg"), str(mixed / "V0002b.jpg")]
    assert "cannot read image" in result.problems[0] and "not finite" in result.problems[1]
    assert_same_outputs(clean, tmp_path / "out", ["classification"])


def test_predict_cli_takes_batch_size_and_workers(models, images, tmp_path):
    args = ["predict", "classification", "--input", str(images), "--output", str(tmp_path / "out"),
            "--model", str(models["classification"]), "--batch-size", "3", "--workers", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "wrote classification predictions for 6 of 6 images" in result.output
    bad = CliRunner().invoke(main, args[:-2] + ["--workers", "-1"])
    assert bad.exit_code == 2 and "--workers" in bad.output


def test_torchrun_shards_the_images_and_writes_one_merged_run(models, images, tmp_path):
    """Two gloo processes on the CPU write what one process writes; a bad image is reported
    once, and the exit status is the single run's."""
    folder = tmp_path / "in"
    folder.mkdir()
    for p in images.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "V0004b.jpg").write_bytes(b"not a jpeg")
    common = ["predict", *TASKS, "--input", str(folder), "--tta", "--batch-size", "2", "--workers", "0",
              *[arg for task in TASKS for arg in ("--model", str(models[task]))]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "palm_algos.cli", *common, "--output", str(tmp_path / "single")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    sharded = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                              "-m", "palm_algos.cli", *common, "--output", str(tmp_path / "sharded")],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 1, single.stderr
    assert sharded.returncode != 0, sharded.stderr
    failed = [line for line in sharded.stderr.splitlines() if line.startswith("failed: ")]
    assert failed == [line for line in single.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 3 and all("V0004b.jpg: cannot read image" in line for line in failed)  # once per task
    for task in TASKS:
        assert f"wrote {task} predictions for 6 of 7 images" in sharded.stdout
    assert_same_outputs(tmp_path / "single", tmp_path / "sharded")
    assert sorted(p.name for p in (tmp_path / "sharded").rglob("*") if p.is_file()) == \
        sorted(p.name for p in (tmp_path / "single").rglob("*") if p.is_file())
