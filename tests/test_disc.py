"""Disc task: the pyramid network, CE + Dice loss, post-processing, mask formats, training."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from palm_algos.cases import read_cases
from palm_algos.cli import main
from palm_algos.imageio import write_mha_image
from palm_algos.postprocess import clean_disc
from palm_algos.tasks import get_task, soft_dice_loss
from palm_algos.train import TrainConfig, train
from palm_algos.writers import write_disc_masks, write_gc_mask

TASK = get_task("disc")


def test_three_input_scales_all_reach_the_output():
    model = TASK.build_model("resnet34-aspp-unet", "none").eval()
    full = torch.randn(1, 3, 128, 128, requires_grad=True)
    half = torch.randn(1, 3, 64, 64, requires_grad=True)
    quarter = torch.randn(1, 3, 32, 32, requires_grad=True)
    out = model.forward_pyramid(full, half, quarter)
    assert out.shape == (1, 2, 128, 128)
    out.sum().backward()
    for name, x in (("full", full), ("half", half), ("quarter", quarter)):
        assert x.grad is not None and x.grad.abs().sum() > 0, f"the {name}-scale input is ignored"
    # and forward() builds that pyramid itself: changing only the 1/4-scale image changes the output
    with torch.no_grad():
        a = model.forward_pyramid(full, half, quarter)
        b = model.forward_pyramid(full, half, quarter + 1)
    assert not torch.allclose(a, b)


def test_default_pyramid_is_512_256_128():
    model = TASK.build_model("resnet34-aspp-unet", "none").eval()
    seen = []
    original = model.forward_pyramid
    model.forward_pyramid = lambda *xs: seen.extend(x.shape[-1] for x in xs) or original(*xs)
    with torch.no_grad():
        model(torch.randn(1, 3, TASK.default_input_size, TASK.default_input_size))
    assert seen == [512, 256, 128]


def test_loss_is_cross_entropy_plus_dice_by_hand():
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, -1.0]]]])  # (1, 2, 2, 2)
    target = torch.tensor([[[0, 1], [1, 0]]])
    p1 = torch.softmax(logits, 1)[0, 1]
    ce = -(torch.log(torch.softmax(logits, 1)[0, 0, 0, 0]) + torch.log(p1[0, 1]) + torch.log(p1[1, 0])
           + torch.log(torch.softmax(logits, 1)[0, 0, 1, 1])) / 4
    dice = 1 - (2 * (p1[0, 1] + p1[1, 0]) + 1) / (p1.sum() + 2 + 1)
    assert TASK.loss(logits, target).item() == pytest.approx((ce + dice).item(), rel=1e-5)
    assert soft_dice_loss(logits, target).item() == pytest.approx(dice.item(), rel=1e-5)
    assert F.cross_entropy(logits, target).item() == pytest.approx(ce.item(), rel=1e-5)


def test_postprocessing_keeps_the_largest_region_and_fills_holes():
    mask = np.zeros((60, 60), bool)
    mask[10:40, 10:40] = True
    mask[20:25, 20:25] = False  # a hole
    mask[50:55, 50:55] = True  # a stray blob
    clean = clean_disc(mask)
    assert clean[20:25, 20:25].all() and not clean[50:55, 50:55].any()
    assert clean.sum() == 30 * 30
    assert not clean_disc(np.zeros((8, 8), bool)).any()


def test_three_mask_formats_at_original_size(tmp_path):
    disc = np.zeros((2056, 2124), bool)
    disc[900:1200, 1500:1800] = True
    write_disc_masks("P0001.jpg", disc, tmp_path, png=True)
    bmp = np.asarray(Image.open(tmp_path / "Disc_Segmentation" / "P0001.bmp"))
    png = np.asarray(Image.open(tmp_path / "Disc_Segmentation" / "png" / "P0001.png"))
    for mask in (bmp, png):
        assert mask.shape == (2056, 2124) and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 255} and np.array_equal(mask == 0, disc)
    reference = tmp_path / "input.mha"
    write_mha_image(np.zeros((2056, 2124, 3), np.uint8), reference)
    ref = sitk.ReadImage(str(reference))
    ref.SetSpacing((0.5, 0.5))
    ref.SetOrigin((3.0, 4.0))
    sitk.WriteImage(ref, str(reference))
    write_gc_mask(disc, reference, tmp_path / "output.mha")
    out = sitk.ReadImage(str(tmp_path / "output.mha"))
    assert out.GetPixelID() == sitk.sitkUInt8 and out.GetSize() == (2124, 2056)
    assert out.GetSpacing() == (0.5, 0.5) and out.GetOrigin() == (3.0, 4.0)
    assert np.array_equal(sitk.GetArrayFromImage(out), disc.astype(np.uint8))


def test_the_bmp_is_the_file_pillow_writes_byte_for_byte(tmp_path):
    """The BMP is built from the raw pixels (no encoder); it must be what Pillow would write."""
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 5), (41, 50), (2056, 2124)]:
        disc = rng.random(shape) > 0.5
        write_disc_masks("X.jpg", disc, tmp_path)
        Image.fromarray(np.where(disc, 0, 255).astype(np.uint8)).save(tmp_path / "pillow.bmp")
        assert (tmp_path / "Disc_Segmentation" / "X.bmp").read_bytes() == (tmp_path / "pillow.bmp").read_bytes(), shape


def test_no_disc_gives_an_all_white_bmp(tmp_path):
    write_disc_masks("N0002.jpg", np.zeros((40, 50), bool), tmp_path, png=False)
    assert (np.asarray(Image.open(tmp_path / "Disc_Segmentation" / "N0002.bmp")) == 255).all()


def test_tiny_real_training_run_and_prediction_at_original_size(drions, tmp_path):
    cases = read_cases(drions).cases[:6]
    config = TrainConfig(pretrained="none", input_size=64, epochs=8, batch_size=6, lr=3e-4, augment="none")
    result = train(TASK, cases, cases[:2], config, tmp_path / "d.pt", progress=False)
    losses = [r["train_loss"] for r in result["history"]]
    assert losses[-1] < losses[0]
    assert 0 <= result["best"]["val_dice"] <= 1
    images = tmp_path / "images"
    images.mkdir()
    (images / cases[0].image.name).write_bytes(cases[0].image.read_bytes())
    run = CliRunner().invoke(main, ["predict", "disc", "--input", str(images), "--output", str(tmp_path / "out"),
                                    "--model", str(tmp_path / "d.pt")])
    assert run.exit_code == 0, run.output
    mask = np.asarray(Image.open(tmp_path / "out" / "Disc_Segmentation" / f"{cases[0].name}.bmp"))
    assert mask.shape == (400, 600) and set(np.unique(mask)) <= {0, 255}


def test_decoding_cleans_up_and_upsamples_to_the_original_size():
    logits = torch.zeros(2, 64, 64)
    logits[0] = 5  # background, confidently
    logits[1, 20:40, 30:50] = 10  # the disc
    logits[1, 28:31, 38:41] = 0  # a hole in it
    logits[1, 2:5, 2:5] = 10  # a stray blob
    disc = TASK.decode(logits, (2124, 2056))
    assert disc.shape == (2056, 2124) and disc.dtype == bool
    ys, xs = np.nonzero(disc)
    assert abs(xs.min() - 30 * 2124 / 64) < 3 and abs(ys.max() + 1 - 40 * 2056 / 64) < 3
    assert disc[int(29.5 * 2056 / 64), int(39.5 * 2124 / 64)]  # the hole is filled
    assert not disc[: 10 * 2056 // 64, : 10 * 2124 // 64].any()  # the blob is gone
    assert not TASK.decode(torch.zeros(2, 64, 64), (100, 80)).any()
