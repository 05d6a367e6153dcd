"""Classification task and the shared loop: augmentation, checkpoints, CSV output, real training, DDP."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torchvision import tv_tensors
from torchvision.transforms import v2

from palm_algos.cases import read_cases
from palm_algos.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from palm_algos.cli import main
from palm_algos.errors import PalmError
from palm_algos.models.pretrained import load_backbone
from palm_algos.predict import Predictor
from palm_algos.tasks import RandomVarianceGaussianNoise, get_task
from palm_algos.train import TrainConfig, _describe, duration, holdout_split, kfold_splits, train

TINY = dict(pretrained="none", input_size=64, batch_size=8, lr=1e-3, augment="none")


def few_palm_cases(folder: Path, n: int = 8):
    cases = read_cases(folder).cases
    return [c for c in cases if c.label == 1][: n // 2] + [c for c in cases if c.label == 0][: n // 2]


def test_noise_statistics_follow_the_paper():
    torch.manual_seed(0)
    noise = RandomVarianceGaussianNoise(p=1.0)
    grey = tv_tensors.Image(torch.full((3, 128, 128), 0.5))
    variances, means = [], []
    for _ in range(40):
        delta = noise(grey).as_subclass(torch.Tensor) - 0.5
        variances.append(delta.var().item())
        means.append(delta.mean().item())
    assert 0.009 < min(variances) and max(variances) < 0.052  # variance drawn from [0.01, 0.05]
    assert max(variances) - min(variances) > 0.02  # ... and really drawn, not fixed
    assert abs(sum(means) / len(means) - 0.01) < 0.004  # mean 0.01


def test_noise_leaves_labels_alone_and_p_zero_is_identity():
    image = tv_tensors.Image(torch.rand(3, 16, 16))
    out, label = RandomVarianceGaussianNoise(p=0.0)(image, 1)
    assert torch.equal(out, image) and label == 1


def test_rotation_is_within_30_degrees():
    task = get_task("classification")
    rotation = next(t for t in task.augmentation() if isinstance(t, v2.RandomRotation))
    assert list(rotation.degrees) == [-30.0, 30.0]
    # a rotated bright bar keeps its centre and turns by at most 30 degrees
    image = torch.zeros(1, 65, 65, dtype=torch.uint8)
    image[0, 32, :] = 255
    torch.manual_seed(1)
    for _ in range(10):
        out = rotation(tv_tensors.Image(image))[0].float()
        ys, xs = torch.nonzero(out > 128, as_tuple=True)
        slope = torch.linalg.lstsq(torch.stack([xs.float() - 32, torch.ones_like(xs, dtype=torch.float)], 1),
                                   (ys.float() - 32)[:, None]).solution[0].item()
        assert abs(torch.rad2deg(torch.atan(torch.tensor(slope))).item()) <= 30.5


def test_checkpoint_round_trip_and_refusal(tmp_path):
    model = get_task("classification").build_model("resnet50", "none")
    save_checkpoint(tmp_path / "c.pt", model.state_dict(), {"task": "classification", "arch": "resnet50", "input_size": 64,
                                                              "mean": [0.5] * 3, "std": [0.2] * 3})
    ckpt = load_checkpoint(tmp_path / "c.pt", task="classification")
    assert ckpt["meta"]["palm_version"]
    predictor = Predictor.load(tmp_path / "c.pt")
    assert all(torch.equal(a, b) for a, b in zip(predictor.model.state_dict().values(), model.state_dict().values()))
    with pytest.raises(CheckpointError, match="trained for 'classification', not 'disc'"):
        load_checkpoint(tmp_path / "c.pt", task="disc")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable palm checkpoint") as refused:
        load_checkpoint(tmp_path / "junk.pt")
    assert "weights_only" not in str(refused.value)  # torch's advice to load unsafely is not passed on
    (tmp_path / "cut.pt").write_bytes((tmp_path / "c.pt").read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match=r"cut.pt: not a readable palm checkpoint \(PytorchStreamReader [^.]*\)$"):
        load_checkpoint(tmp_path / "cut.pt")


def test_pretrained_switch(tmp_path, monkeypatch):
    from torchvision.models import ResNet50_Weights, resnet50

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("socket.socket.connect", lambda *a: (_ for _ in ()).throw(OSError("no network")))
    with pytest.raises(PalmError, match="are not cached at .*--pretrained none"):
        load_backbone(resnet50(), "imagenet", ResNet50_Weights.IMAGENET1K_V2)
    source = resnet50()
    torch.save(source.state_dict(), tmp_path / "w.pt")
    target = load_backbone(resnet50(), tmp_path / "w.pt", ResNet50_Weights.IMAGENET1K_V2)
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    with pytest.raises(PalmError, match="existing weights file"):
        load_backbone(resnet50(), tmp_path / "missing.pt", ResNet50_Weights.IMAGENET1K_V2)


def test_splits_are_stratified_and_cover_every_case(palm224):
    task = get_task("classification")
    cases = read_cases(palm224).cases
    tr, va = holdout_split(task, cases, 0.2)
    assert len(va) == 80 and abs(sum(c.label for c in va) / 80 - 213 / 400) < 0.02
    folds = kfold_splits(task, cases, 5)
    assert sorted(c.name for _, va in folds for c in va) == sorted(c.name for c in cases)


def test_splits_of_tiny_sets_fail_clearly_or_drop_stratification(palm224):
    task = get_task("classification")
    three = [c for c in read_cases(palm224).cases if c.label == 1][:2] + [next(c for c in read_cases(palm224).cases if c.label == 0)]
    tr, va = holdout_split(task, three, 0.2)  # 1 held out: too few to stratify, still a split
    assert len(tr) == 2 and len(va) == 1
    with pytest.raises(PalmError, match="too few to hold out"):
        holdout_split(task, three[:1], 0.5)
    with pytest.raises(PalmError, match="--folds 5: needs 2 to 3"):
        kfold_splits(task, three, 5)
    assert len(kfold_splits(task, three, 3)) == 3  # the single negative cannot be stratified over 3 folds


def test_tiny_real_training_run_lowers_the_loss_and_predicts_the_csv(palm224, tmp_path):
    cases = few_palm_cases(palm224)
    config = TrainConfig(epochs=6, **TINY)
    result = train(get_task("classification"), cases, cases[:4], config, tmp_path / "m.pt", progress=False)
    losses = [r["train_loss"] for r in result["history"]]
    assert losses[-1] < losses[0]
    assert (tmp_path / "m.pt").is_file() and not (tmp_path / "m.last.pt").exists()  # a finished run keeps no .last.pt
    lines = (tmp_path / "m.history.jsonl").read_text().splitlines()
    assert [json.loads(line)["train_loss"] for line in lines] == losses and len(lines) == 6
    assert json.loads(lines[0])["val_auc"] is None  # one class in the validation cases: strict JSON, no NaN

    images = tmp_path / "images"
    images.mkdir()
    for c in cases:
        (images / c.image.name).write_bytes(c.image.read_bytes())
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", "classification", "--input", str(images), "--output", str(out),
                                       "--model", str(tmp_path / "m.pt")])
    assert result.exit_code == 1 and "broken.jpg: cannot read image" in result.output
    assert "Traceback" not in result.output
    rows = list(csv.reader(open(out / "Classification_Results.csv")))
    assert rows[0] == ["FileName", "PM Risk"]
    assert sorted(r[0] for r in rows[1:]) == sorted(c.image.name for c in cases)
    assert all(0 <= float(r[1]) <= 1 for r in rows[1:])


def test_resume_continues_from_the_last_epoch(synth_example, tmp_path):
    cases = read_cases(synth_example).cases
    task = get_task("classification")
    train(task, cases, [], TrainConfig(epochs=1, **TINY), tmp_path / "m.pt", progress=False, keep_last=True)
    assert (tmp_path / "m.last.pt").is_file()
    result = train(task, cases, [], TrainConfig(epochs=2, **TINY), tmp_path / "m.pt", resume=True, progress=False)
    assert [r["epoch"] for r in result["history"]] == [1, 2]
    assert load_checkpoint(tmp_path / "m.pt")["meta"]["epoch"] == 2
    assert not (tmp_path / "m.last.pt").exists()
    assert [json.loads(line)["epoch"] for line in (tmp_path / "m.history.jsonl").read_text().splitlines()] == [1, 2]


def test_the_log_shows_durations_as_times():
    assert [duration(s) for s in (13.04, 125, 3725)] == ["13.0 s", "2 min 05 s", "1 h 02 min"]
    line = _describe({"epoch": 3, "train_loss": 0.51234, "seconds": 13.0})
    assert line == "epoch 3  train_loss 0.5123  time 13.0 s"


def test_wrong_task_checkpoint_is_refused_by_the_cli(synth_example, tmp_path):
    cases = read_cases(synth_example).cases
    train(get_task("classification"), cases, [], TrainConfig(epochs=1, **TINY), tmp_path / "m.pt", progress=False)
    result = CliRunner().invoke(main, ["predict", "fovea", "--input", str(synth_example / "images"),
                                       "--output", str(tmp_path / "o"), "--model", str(tmp_path / "m.pt")])
    assert result.exit_code == 1
    assert "trained for 'classification', not 'fovea'" in result.output and "Traceback" not in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(synth_example, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(_free_port()), "-m", "palm_algos.cli", "train", "classification",
               "--data", str(synth_example), "--out", str(tmp_path / "ddp.pt"), "--pretrained", "none",
               "--epochs", "1", "--input-size", "64", "--batch-size", "2", "--val-fraction", "0.25"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = load_checkpoint(tmp_path / "ddp.pt", task="classification")["meta"]
    assert meta["epoch"] == 1 and meta["train_cases"] == 6
    assert "val_auc" in meta["metrics"]
