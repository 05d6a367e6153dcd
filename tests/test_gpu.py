"""The GPU and the CPU agree (#25 item 5): the same checkpoints on CUDA (autocast) and on the
CPU give PM risks within 1e-3, fovea positions within 0.5 px at original resolution and disc
masks with Dice >= 0.999, with the CPU decoder and with ``--decode gpu`` (nvJPEG). The final
models under models/ are used where all three are there (untrained ones otherwise). Skipped
where CUDA is absent."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from palm_algos.formats import CSV_NAMES, DISC_FOLDER, TASKS
from palm_algos.predict import Predictor, predict_tasks
from palm_algos.synth import synth_case
from tests.test_batched_predict import checkpoint

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on a GPU machine)")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu")
    images = folder / "in"
    images.mkdir()
    for i in range(12):
        Image.fromarray(synth_case(i + 1, (1062, 1028)).image).save(images / f"V{i:04d}.jpg", quality=95)
    trained = {task: REPO / "models" / f"{task}.pt" for task in TASKS}
    if all(path.is_file() for path in trained.values()):
        return images, trained  # the final models: masks and positions that mean something
    models = {"classification": checkpoint(folder / "c.pt", "classification", "resnet50", 112),
              "fovea": checkpoint(folder / "f.pt", "fovea", "disc-fovea-heatmaps", 192),
              "disc": checkpoint(folder / "d.pt", "disc", "resnet34-aspp-unet", 256, zoom=2)}
    return images, models


def outputs(out):
    found = {}
    for task in ("classification", "fovea"):
        with open(out / CSV_NAMES[task], newline="") as f:
            found[task] = {row[0]: np.array([float(v) for v in row[1:]]) for row in list(csv.reader(f))[1:]}
    found["disc"] = {p.name: np.asarray(Image.open(p)) == 0 for p in sorted((out / DISC_FOLDER).glob("*.bmp"))}
    return found


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2 * (a & b).sum() / total


def predict(setup, out, device, decode="cpu"):
    images, models = setup
    predictors = [Predictor.load(models[task], device=device, tta=True) for task in TASKS]
    runs = predict_tasks(predictors, images, out, progress=False, batch_size=4, workers=2, decode=decode)
    assert all(run.predicted == 12 and not run.problems for run in runs.values())
    return outputs(out)


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_gpu_and_cpu_agree(setup, tmp_path, decode):
    cpu, gpu = predict(setup, tmp_path / "cpu", "cpu"), predict(setup, tmp_path / "gpu", "cuda", decode)
    for name in cpu["classification"]:
        assert abs(cpu["classification"][name] - gpu["classification"][name]).max() <= 1e-3, name
        assert np.hypot(*(cpu["fovea"][name] - gpu["fovea"][name])) <= 0.5, name
    assert list(cpu["disc"]) == list(gpu["disc"])
    for name in cpu["disc"]:
        assert dice(cpu["disc"][name], gpu["disc"][name]) >= 0.999, name
