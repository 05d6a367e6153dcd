"""Fovea task: coordinates through every transform, the Euclidean loss, the no-fovea rule, training."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from palm_algos.cases import Case, read_cases
from palm_algos.cli import main
from palm_algos.data import CaseDataset, square_resize
from palm_algos.models.fovea import soft_argmax
from palm_algos.tasks import euclidean_loss, get_task
from palm_algos.train import TrainConfig, holdout_split, kfold_splits, train

TASK = get_task("fovea")


def spot_image(tmp_path, size, xy, name="spot"):
    """A black image with one bright 9x9 spot centred on pixel ``xy`` (pixel indices)."""
    w, h = size
    array = np.zeros((h, w, 3), np.uint8)
    x, y = xy
    array[y - 4 : y + 5, x - 4 : x + 5] = 255
    path = tmp_path / f"{name}.png"
    Image.fromarray(array).save(path)
    return Case(name=name, image=path, size=size, fovea=(float(x), float(y)))


def brightest(image: torch.Tensor) -> tuple[float, float]:
    grey = image.float().mean(0)
    ys, xs = torch.nonzero(grey >= grey.max() * 0.9, as_tuple=True)
    return xs.float().mean().item(), ys.float().mean().item()


@pytest.mark.parametrize("size", [(4288, 2848), (2124, 2056), (300, 500)])
def test_position_follows_resize_rotation_and_flip_to_within_one_pixel(tmp_path, size):
    w, h = size
    case = spot_image(tmp_path, size, (int(w * 0.62), int(h * 0.41)))
    s = 256
    keypoint = TASK.target(case, s)
    image = tv_tensors.Image(square_resize(np.asarray(Image.open(case.image).convert("RGB")), s))
    assert np.allclose(brightest(image), keypoint[0].tolist(), atol=1.0)  # squash-resize
    for transform in (v2.RandomHorizontalFlip(p=1), v2.RandomVerticalFlip(p=1), v2.RandomRotation((25, 25)),
                      v2.RandomRotation((-30, -30))):
        out_image, out_point = transform(image, keypoint)
        assert np.allclose(brightest(out_image), out_point[0].tolist(), atol=1.0), transform
    # and back to original pixels through the task's decoding
    normalised = TASK.to_tensor(keypoint)
    assert np.allclose(TASK.decode(normalised, size), case.fovea, atol=1e-3)


def test_euclidean_loss_matches_a_hand_computation():
    pred = torch.tensor([[0.5, 0.5], [0.1, 0.2]])
    true = torch.tensor([[0.8, 0.9], [0.1, 0.2]])
    assert euclidean_loss(pred, true).item() == pytest.approx((0.5 + 0.0) / 2)  # 3-4-5 triangle scaled by 0.1


def test_soft_argmax_finds_the_peak():
    heat = torch.full((1, 1, 8, 16), -50.0)
    heat[0, 0, 2, 12] = 50.0
    assert soft_argmax(heat)[0].tolist() == pytest.approx([12.5 / 16, 2.5 / 8], abs=1e-4)


def two_peaks(cells: list[tuple[int, int]], h: int = 48, w: int = 48) -> torch.Tensor:
    """A (1, 1, h, w) score map with equal peaks at the (row, col) ``cells``."""
    heat = torch.full((1, 1, h, w), -30.0)
    for row, col in cells:
        heat[0, 0, row, col] = 5.0
    return heat


def test_squashed_cone_is_the_eyes_cone_on_a_square_frame_and_wider_on_a_wide_one():
    from palm_algos.anatomy import ANGLE_GATE, FOVEA_ANGLE, squashed_cone

    assert squashed_cone(1.0) == pytest.approx((FOVEA_ANGLE - ANGLE_GATE, FOVEA_ANGLE + ANGLE_GATE))
    lowest, highest = squashed_cone(1.5)
    assert lowest == pytest.approx(np.degrees(np.arctan(1.5 * np.tan(np.radians(-14.0)))))
    assert lowest < FOVEA_ANGLE - ANGLE_GATE and highest > FOVEA_ANGLE + ANGLE_GATE


@pytest.mark.parametrize("side", [-1, 1])  # the fovea left of the disc (a right eye) or right of it
def test_the_fovea_map_is_read_inside_the_anatomys_cone_beside_the_disc(side):
    from palm_algos.models.fovea import fovea_in_cone

    disc_cell = (20, 24)  # (row, col); the disc's centre at the cell's centre
    disc = torch.tensor([[(disc_cell[1] + 0.5) / 48, (disc_cell[0] + 0.5) / 48]])
    fovea_cell = (22, 24 + side * 16)  # 16 cells away, 7 degrees below: where a fovea lies
    lesion_cell = (40, 24 + side * 12)  # 59 degrees below: no fovea lies there
    heat = two_peaks([fovea_cell, lesion_cell])
    between = soft_argmax(heat)[0]
    inside = fovea_in_cone(heat, disc)[0]
    assert inside.tolist() == pytest.approx([(fovea_cell[1] + 0.5) / 48, (fovea_cell[0] + 0.5) / 48], abs=1e-4)
    assert between[1] > 0.6  # the plain reading: halfway down to the lesion
    # a map with (almost) nothing in the cone disagrees with the anatomy: read as it is
    outside = two_peaks([lesion_cell])
    assert fovea_in_cone(outside, disc)[0].tolist() == pytest.approx(soft_argmax(outside)[0].tolist(), abs=1e-6)


def test_the_joint_model_learns_the_whole_maps_and_reads_the_fovea_in_the_cone():
    from palm_algos.models.fovea import disc_fovea_heatmaps

    model = disc_fovea_heatmaps(pretrained=None)
    fovea = two_peaks([(22, 40), (40, 36)])
    disc = two_peaks([(20, 24)])
    model.heatmaps = lambda x: torch.cat([fovea, disc], dim=1).expand(len(x), -1, -1, -1)
    x = torch.zeros(2, 3, 192, 192)
    learned = model.train()(x)
    read = model.eval()(x)
    assert torch.allclose(learned[:, :2], soft_argmax(fovea).expand(2, -1))  # halfway down to the second peak
    assert torch.allclose(read[:, :2], torch.tensor([[40.5 / 48, 22.5 / 48]] * 2), atol=1e-4)
    assert torch.equal(read[:, 2:], learned[:, 2:])  # the disc is read as it learned
    assert torch.allclose(read[:, 2:], torch.tensor([[24.5 / 48, 20.5 / 48]] * 2), atol=1e-4)


def test_cases_without_a_visible_fovea_are_never_learned(tmp_path):
    visible = spot_image(tmp_path, (200, 100), (120, 50), "V0001")
    absent = replace(spot_image(tmp_path, (200, 100), (60, 50), "V0002"), fovea=None, fovea_absent=True)
    assert TASK.usable(visible) and not TASK.usable(absent)
    with pytest.raises(Exception, match="no training case has fovea ground truth"):
        train(TASK, [absent], [], TrainConfig(pretrained="none", input_size=32, epochs=1), tmp_path / "m.pt",
              progress=False)


def test_the_joint_model_learns_the_disc_of_a_case_without_a_fovea_label(tmp_path):
    """Drishti-GS1 and DRIONS have disc masks and no fovea: the joint model's disc head learns
    them (a camera more), the fovea term skips them, and no validation scores them."""
    seen = spot_image(tmp_path, (120, 90), (80, 40), "seen")
    seen = replace(seen, disc_centre=(30.0, 45.0))
    disc_only = replace(spot_image(tmp_path, (120, 90), (40, 50), "disc_only"), fovea=None, disc_centre=(40.0, 50.0))
    assert TASK.usable(disc_only) and not TASK.scorable(disc_only)
    assert TASK.learns_from(disc_only, "disc-fovea-heatmaps") and not TASK.learns_from(disc_only, "vgg19-fused")

    target = torch.stack([TASK.to_tensor(TASK.target(c, 64)) for c in (seen, disc_only)])
    assert target[1, :2].isnan().all() and target[1, 2:].isfinite().all()
    output = torch.tensor([[0.6, 0.5, 0.3, 0.5], [0.1, 0.9, 0.3, 0.5]], requires_grad=True)
    loss = TASK.loss(output, target)
    by_hand = (euclidean_loss(output[:1, :2], target[:1, :2])
               + TASK.disc_weight * euclidean_loss(output[:, 2:], target[:, 2:]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(by_hand.item())
    loss.backward()
    assert output.grad[1, :2].abs().sum() == 0  # the unknown fovea pulls nowhere
    assert TASK.metrics(output.detach(), target)["mean_distance"] == pytest.approx(
        float(torch.linalg.vector_norm(output[0, :2] - target[0, :2]).detach()))
    # a batch of disc-only cases: the fovea term is zero, not NaN
    assert torch.isfinite(TASK.loss(output[1:], target[1:]))

    # the case trains in every fold and is never held out; a model without a disc head skips it
    folds = kfold_splits(TASK, [seen, replace(seen, name="b"), replace(seen, name="c"), disc_only], 3)
    assert all(disc_only in tr and disc_only not in va for tr, va in folds)
    assert disc_only not in holdout_split(TASK, [seen, replace(seen, name="b"), disc_only], 0.5)[1]
    config = dict(pretrained="none", input_size=32, epochs=1, batch_size=2)
    result = train(TASK, [seen, disc_only], [disc_only], TrainConfig(arch="disc-fovea-heatmaps", **config),
                   tmp_path / "j.pt", progress=False)
    assert np.isfinite(result["history"][0]["train_loss"]) and "val_mean_distance" not in result["history"][0]
    assert torch.load(tmp_path / "j.pt", weights_only=True)["meta"]["train_cases"] == 2
    with pytest.raises(Exception, match="no training case has fovea ground truth"):
        train(TASK, [disc_only], [], TrainConfig(arch="vgg19-fused", **config), tmp_path / "v.pt", progress=False)


@pytest.mark.parametrize("arch", ["disc-fovea-heatmaps", "vgg19"])
def test_cli_reports_left_out_cases(tmp_path, arch):
    from palm_algos.synth import write_palm_example

    folder = write_palm_example(tmp_path / "ex", count=16, size=(96, 96), seed=3)  # case 16 has no fovea
    result = CliRunner().invoke(main, ["train", "fovea", "--data", str(folder), "--out", str(tmp_path / "f.pt"),
                                       "--pretrained", "none", "--epochs", "1", "--input-size", "32",
                                       "--val-fraction", "0", "--arch", arch])
    assert result.exit_code == 0, result.output
    # its disc mask is still ground truth for the joint model's disc head, not for a regressor
    assert "16 of 16 cases have fovea ground truth (1 of them in part only, never validated on)" in result.output
    assert "no fovea position learned from 1 case(s) marked 'no fovea visible'" in result.output
    unlearnable = "--arch vgg19 cannot learn from 1 of them (no fovea position to learn): left out of training"
    assert (unlearnable in result.output) == (arch == "vgg19")


@pytest.mark.parametrize("arch, points", [("vgg19-fused", 1), ("vgg19", 1), ("resnet50", 1), ("disc-fovea-heatmaps", 2)])
def test_every_architecture_regresses_into_the_unit_square(arch, points):
    model = TASK.build_model(arch, "none").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 2 * points) and bool(((out >= 0) & (out <= 1)).all())


@pytest.mark.parametrize("size", [(4288, 2848), (2124, 2056), (300, 500)])
def test_joint_target_round_trip_in_original_pixels_through_flip_and_back(tmp_path, size):
    """Fovea and disc centre: original pixels -> input-size key points -> normalised target ->
    (mirror image, flip_back) -> original pixels again."""
    w, h = size
    # the fovea temporal to the disc and a little below it, as in an eye (tasks.anatomical)
    case = replace(spot_image(tmp_path, size, (int(w * 0.62), int(h * 0.41))), disc_centre=(w * 0.2 + 0.3, h * 0.35))
    for s in (64, 192, 256):
        target = TASK.target(case, s)
        normalised = TASK.to_tensor(target)
        assert normalised.shape == (4,)
        assert np.allclose(TASK.decode(normalised, size), case.fovea, atol=1e-2)
        assert np.allclose(TASK.decode(normalised[2:], size), case.disc_centre, atol=1e-2)
        image = tv_tensors.Image(torch.zeros(3, s, s, dtype=torch.uint8))
        _, mirrored = v2.RandomHorizontalFlip(p=1)(image, target)
        back = TASK.flip_back(TASK.to_tensor(mirrored)[None])[0]
        assert torch.allclose(back, normalised, atol=1e-5)


def test_disc_centre_comes_from_the_mask_where_no_markup_gives_it(synth_example):
    case = next(c for c in read_cases(synth_example).cases if c.disc_mask is not None and c.fovea is not None)
    rows, cols = np.nonzero(case.read_disc())
    target = TASK.to_tensor(TASK.target(case, 64))
    assert target[2:].tolist() == pytest.approx([(cols.mean() + 0.5) / case.size[0], (rows.mean() + 0.5) / case.size[1]],
                                                abs=1e-4)


def test_the_joint_loss_learns_the_disc_only_where_it_is_known():
    output = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]])
    known = torch.tensor([[0.5, 0.8, 0.2, 0.6], [0.5, 0.8, float("nan"), float("nan")]])
    assert TASK.loss(output, known).item() == pytest.approx(0.3 + TASK.disc_weight * 0.4)
    assert TASK.loss(output[:, :2], known).item() == pytest.approx(0.3)  # one-point models: the fovea alone
    outside = known.clone()
    outside[0, 2] = -0.1  # a refining window that does not hold the disc: only the fovea is learned
    assert TASK.loss(output, outside).item() == pytest.approx(0.3)
    assert TASK.metrics(output, known)["mean_distance"] == pytest.approx(0.3)


def test_tiny_real_training_run_on_idrid(idrid, tmp_path):
    cases = read_cases(idrid).cases[:6]
    config = TrainConfig(pretrained="none", input_size=64, epochs=8, batch_size=6, lr=3e-4, augment="none")
    result = train(TASK, cases, [], config, tmp_path / "f.pt", progress=False)
    losses = [r["train_loss"] for r in result["history"]]
    assert losses[-1] < losses[0]
    images = tmp_path / "images"
    images.mkdir()
    for c in cases[:2]:
        (images / c.image.name).write_bytes(c.image.read_bytes())
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", "fovea", "--input", str(images), "--output", str(out),
                                       "--model", str(tmp_path / "f.pt")])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(open(out / "Fovea_Localization_Results.csv")))
    assert rows[0] == ["FileName", "Fovea_X", "Fovea_Y"]
    for name, x, y in rows[1:]:
        assert name.endswith(".jpg") and 0 <= float(x) <= 4288 and 0 <= float(y) <= 2848


def test_dataset_targets_are_normalised_positions(idrid):
    case = read_cases(idrid).by_name()["IDRiD_001"]
    _, target = CaseDataset(TASK, [case], 64, train=False, progress=False)[0]
    assert target.tolist() == pytest.approx([1914.5 / 4288, 1617.5 / 2848, 651.5 / 4288, 1453.5 / 2848], abs=1e-5)


def test_palm_train_folds_writes_the_ensemble_of_its_fold_models(tmp_path):
    from palm_algos.checkpoint import load_checkpoint
    from palm_algos.synth import write_palm_example

    folder = write_palm_example(tmp_path / "ex", count=8, size=(96, 96), seed=3)
    out = tmp_path / "f.pt"
    result = CliRunner().invoke(main, ["train", "fovea", "--data", str(folder), "--out", str(out), "--folds", "2",
                                       "--arch", "disc-fovea-heatmaps", "--pretrained", "none", "--epochs", "1",
                                       "--input-size", "32", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert f"checkpoint: {out} (the ensemble of the 2 fold models)" in result.output
    meta = load_checkpoint(out, task="fovea")["meta"]
    assert meta["members"] == 2 and meta["arch"] == "disc-fovea-heatmaps"
    assert (tmp_path / "f.fold0.pt").is_file() and (tmp_path / "f.fold1.pt").is_file()


def test_a_fovea_the_anatomy_does_not_allow_is_turned_beside_its_disc():
    from palm_algos.tasks import FOVEA_ANGLE, anatomical

    disc, size = (3000.0, 1400.0), (4288, 2848)
    believed = (3000.0 - 1300.0, 1400.0 + 150.0)  # temporal, a little below: kept as it is
    assert anatomical(believed, disc, size) == believed
    missed = (3000.0 - 1000.0, 1400.0 + 780.0)  # 38 degrees below: turned, length and side kept
    x, y = anatomical(missed, disc, size)
    assert np.hypot(x - disc[0], y - disc[1]) == pytest.approx(np.hypot(1000, 780))
    assert np.degrees(np.arctan2(y - disc[1], disc[0] - x)) == pytest.approx(FOVEA_ANGLE) and x < disc[0]
    other_eye = anatomical((1000.0 + 1000.0, 1400.0 - 600.0), (1000.0, 1400.0), size)  # above, to the right
    assert other_eye[0] > 1000.0 and other_eye[1] > 1400.0
    assert anatomical((4000.0, 0.0), (4200.0, 2800.0), size)[0] <= size[0] - 1  # kept inside the image


def test_decode_turns_only_a_joint_models_fovea():
    frame = (4288, 2848)
    fovea, disc = [0.25, 0.95], [0.7, 0.5]  # in original pixels 34 degrees below the disc
    turned = TASK.decode(torch.tensor(fovea + disc), frame)
    alone = TASK.decode(torch.tensor(fovea), frame)
    assert alone == pytest.approx((0.25 * 4288 - 0.5, 0.95 * 2848 - 0.5))
    assert turned != pytest.approx(alone)
