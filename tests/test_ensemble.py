"""Ensembles and flip TTA: one checkpoint for many models, the same predictions where they must be."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from palm_algos.checkpoint import CheckpointError, combine_checkpoints, load_checkpoint, save_checkpoint
from palm_algos.cli import main
from palm_algos.predict import Predictor
from palm_algos.tasks import IMAGENET_MEAN, IMAGENET_STD, get_task

ARCHS = {"classification": "resnet50", "fovea": "disc-fovea-heatmaps", "disc": "resnet34-aspp-unet"}


def random_checkpoint(path, task, seed=0, input_size=64, arch=None):
    torch.manual_seed(seed)
    arch = arch or ARCHS[task]
    model = get_task(task).build_model(arch, pretrained="none").eval()
    meta = {"task": task, "arch": arch, "input_size": input_size, "zoom": 1,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    save_checkpoint(path, model.state_dict(), meta)
    return path


def fundus(tmp_path, name="eye", symmetric=False, size=(96, 80)):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    if symmetric:
        array[:, size[0] // 2 :] = array[:, : size[0] // 2][:, ::-1]
    path = tmp_path / f"{name}.png"
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize("task", ["classification", "fovea", "disc"])
@pytest.mark.parametrize("tta", [False, True])
def test_an_ensemble_of_identical_members_predicts_what_one_member_does(tmp_path, task, tta):
    one = random_checkpoint(tmp_path / "one.pt", task)
    ensemble = tmp_path / "ensemble.pt"
    meta = combine_checkpoints([one, one, one], ensemble)
    assert meta["members"] == 3 and len(meta["member_meta"]) == 3
    image = fundus(tmp_path)
    single = Predictor.load(one, tta=tta).predict(image)
    joint = Predictor.load(ensemble, tta=tta).predict(image)
    if task == "disc":
        assert single.shape == (80, 96) and np.array_equal(single, joint)
    else:
        assert np.allclose(single, joint, atol=1e-5)


def test_an_ensemble_averages_its_members_probabilities(tmp_path):
    a, b = (random_checkpoint(tmp_path / f"m{s}.pt", "classification", seed=s) for s in (1, 2))
    combine_checkpoints([a, b], tmp_path / "ab.pt")
    image = fundus(tmp_path)
    risks = [Predictor.load(p, tta=False).predict(image) for p in (a, b)]
    assert risks[0] != pytest.approx(risks[1])  # two different models
    assert Predictor.load(tmp_path / "ab.pt", tta=False).predict(image) == pytest.approx(np.mean(risks), abs=1e-6)


def test_ensembles_unpack_into_a_larger_ensemble_and_refuse_other_models(tmp_path):
    a, b, c = (random_checkpoint(tmp_path / f"m{s}.pt", "classification", seed=s) for s in (1, 2, 3))
    combine_checkpoints([a, b], tmp_path / "ab.pt")
    meta = combine_checkpoints([tmp_path / "ab.pt", c], tmp_path / "abc.pt")
    assert meta["members"] == 3
    image = fundus(tmp_path)
    mean = np.mean([Predictor.load(p, tta=False).predict(image) for p in (a, b, c)])
    assert Predictor.load(tmp_path / "abc.pt", tta=False).predict(image) == pytest.approx(mean, abs=1e-6)
    other_size = random_checkpoint(tmp_path / "big.pt", "classification", input_size=96)
    with pytest.raises(CheckpointError, match="big.pt: cannot join the ensemble: its input_size differ"):
        combine_checkpoints([a, other_size], tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="at least two"):
        combine_checkpoints([a], tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def test_palm_ensemble_command_writes_one_checkpoint_palm_predict_uses(tmp_path):
    a, b = (random_checkpoint(tmp_path / f"m{s}.pt", "fovea", seed=s) for s in (1, 2))
    runner = CliRunner()
    result = runner.invoke(main, ["ensemble", "--out", str(tmp_path / "both.pt"), str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert "fovea ensemble of 2 disc-fovea-heatmaps models" in result.output
    assert load_checkpoint(tmp_path / "both.pt", task="fovea")["meta"]["members"] == 2
    images = tmp_path / "images"
    images.mkdir()
    fundus(images, "P0001")
    result = runner.invoke(main, ["predict", "fovea", "--input", str(images), "--output", str(tmp_path / "out"),
                                  "--model", str(tmp_path / "both.pt")])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "out" / "Fovea_Localization_Results.csv").read_text().splitlines()
    assert rows[0] == "FileName,Fovea_X,Fovea_Y" and rows[1].startswith("P0001.png,")
    result = runner.invoke(main, ["ensemble", "--out", str(tmp_path / "x.pt"), str(a), str(tmp_path / "missing.pt")])
    assert result.exit_code == 1 and "missing.pt: no such checkpoint file" in result.output


def raw_fovea(predictor: Predictor, image) -> tuple[float, float]:
    """The model's fovea in original pixels as its (TTA-averaged) output says, before decode."""
    first, big, frame = predictor.views(predictor.read(image))
    output = predictor.outputs(first[None], None if big is None else big[None], [image])[0]
    return frame.original(*output[:2].tolist())


def test_an_ensemble_takes_its_members_median_position(tmp_path):
    """Of three seeds, the one far off is outvoted: each coordinate is the members' median."""
    paths = [random_checkpoint(tmp_path / f"m{s}.pt", "fovea", seed=s) for s in (1, 2, 3)]
    combine_checkpoints(paths, tmp_path / "three.pt")
    image = fundus(tmp_path)
    members = np.array([raw_fovea(Predictor.load(p, tta=False), image) for p in paths])
    assert len({tuple(m.round(3)) for m in members}) == 3  # three different models
    joint = raw_fovea(Predictor.load(tmp_path / "three.pt", tta=False), image)
    assert joint == pytest.approx(tuple(np.median(members, axis=0)), abs=1e-3)
    assert get_task("fovea").average(torch.tensor([[0.2, 0.4], [0.6, 0.8]])).tolist() == pytest.approx([0.4, 0.6])


@pytest.mark.parametrize("task", ["classification", "fovea", "disc"])
def test_flip_tta_on_a_mirror_symmetric_image(tmp_path, task):
    """The image and its mirror are the same picture: TTA must give the plain answer for the
    class, the mirror-symmetric answer for positions and masks."""
    image = fundus(tmp_path, symmetric=True, size=(96, 96))
    ckpt = random_checkpoint(tmp_path / "m.pt", task)
    plain = Predictor.load(ckpt, tta=False).predict(image)
    tta = Predictor.load(ckpt, tta=True).predict(image)
    if task == "classification":
        assert tta == pytest.approx(plain, abs=1e-6)
    elif task == "fovea":  # the averaged raw positions (decode may then turn the fovea: tasks.anatomical)
        plain, tta = (raw_fovea(Predictor.load(ckpt, tta=t), image) for t in (False, True))
        assert tta[0] == pytest.approx((96 - 1) / 2, abs=1e-3)  # x mirrored about the centre and averaged
        assert tta[1] == pytest.approx(plain[1], abs=1e-4)  # y untouched by a horizontal flip
    else:
        assert np.array_equal(tta, tta[:, ::-1])


def test_tta_flip_back_undoes_the_flip_for_every_task():
    for task, output in (("classification", torch.randn(3, 2)), ("disc", torch.randn(3, 2, 8, 8)),
                         ("fovea", torch.rand(3, 4))):
        t = get_task(task)
        assert torch.allclose(t.flip_back(t.flip_back(output)), output)
    points = torch.tensor([[0.2, 0.3, 0.7, 0.6]])
    assert torch.allclose(get_task("fovea").flip_back(points), torch.tensor([[0.8, 0.3, 0.3, 0.6]]))
