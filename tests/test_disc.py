"""Disc task: the pyramid network, CE + Dice loss, post-processing, mask formats, training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from palm_algos.cases import Case, read_cases
from palm_algos.cli import main
from palm_algos.imageio import write_mha_image
from palm_algos.postprocess import DISC_REACH, clean_disc, trim_lobes
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


def test_a_lobe_no_disc_has_is_trimmed_and_a_tilted_disc_kept_whole():
    """trim_lobes: a disc run on along a vessel arcade (what the disc model did on IDRiD's bright
    nerve-fibre layer) loses the lobe; an ellipse twice as long as wide (a tilted myopic disc),
    a round disc and no disc are left as they are."""
    rows, cols = np.mgrid[:200, :200]
    disc = (rows - 120) ** 2 + (cols - 100) ** 2 <= 30**2
    lobe = (np.abs(cols - 85 + (rows - 120) * 0.3) <= 14) & (rows >= 20) & (rows <= 120)
    trimmed = trim_lobes(disc | lobe)
    assert trimmed[disc].all() and not trimmed[20:40].any()
    assert not trimmed[np.hypot(rows - 120, cols - 100) > DISC_REACH * 30 + 1].any()
    tilted = ((rows - 100) / 30.0) ** 2 + ((cols - 100) / (30.0 * DISC_REACH)) ** 2 <= 1
    for whole in (tilted, disc, np.zeros((8, 8), bool)):
        assert np.array_equal(trim_lobes(whole), whole)


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


def test_a_disc_known_by_its_centre_is_a_partial_mask_around_it():
    """IDRiD's disc centres teach the disc model too: disc within half a typical disc radius,
    background beyond 1.4 of it, UNKNOWN (skipped by loss and metric) between."""
    from palm_algos.fov import Frame
    from palm_algos.tasks import CENTRE_RING, DISC_RADIUS, UNKNOWN, centre_target

    frame = Frame(100.0, -200.0, 3400.0, 3400.0, (4288, 2848), fov=True)  # a FOV cut at top and bottom
    centre = (3000.0, 1400.0)
    target = centre_target(centre, frame, 256)
    assert target.shape == (256, 256) and set(np.unique(target)) == {0, 1, UNKNOWN}
    rows, cols = np.nonzero(target == 1)
    assert frame.original((cols.mean() + 0.5) / 256, (rows.mean() + 0.5) / 256) == pytest.approx(centre, abs=3400 / 256)
    radius = DISC_RADIUS * 256  # in input pixels: the frame is the FOV
    assert np.sqrt((target == 1).sum() / np.pi) == pytest.approx(CENTRE_RING[0] * radius, rel=0.1)
    assert np.sqrt(((target == 1) | (target == UNKNOWN)).sum() / np.pi) == pytest.approx(CENTRE_RING[1] * radius, rel=0.1)
    case = Case("IDRiD_001", Path("IDRiD_001.jpg"), (4288, 2848), disc_centre=centre)
    assert TASK.usable(case) and not TASK.scorable(case)
    assert np.array_equal(TASK.target(case, 256, frame), target)


def test_loss_and_dice_skip_the_unknown_ring():
    from palm_algos.tasks import UNKNOWN

    target = torch.zeros(1, 32, 32, dtype=torch.long)
    target[0, 12:20, 12:20] = UNKNOWN
    target[0, 14:18, 14:18] = 1
    logits = torch.zeros(1, 2, 32, 32)
    logits[:, 1] = -5.0
    logits[0, 1, 14:18, 14:18] = 5.0  # the known disc, right
    other = logits.clone()
    other[0, 1, 12:20, 12:20] = torch.randn(8, 8) * 5  # anything in the ring
    other[0, 1, 14:18, 14:18] = 5.0
    assert TASK.loss(other, target).item() == pytest.approx(TASK.loss(logits, target).item(), rel=1e-5)
    assert TASK.metrics(other, target)["dice"] == 1.0
    wrong = logits.clone()
    wrong[0, 1, 0:4, 0:4] = 5.0  # disc where the background is known
    assert TASK.loss(wrong, target) > TASK.loss(logits, target) and TASK.metrics(wrong, target)["dice"] < 1


def test_idrid_disc_centres_become_training_targets_on_their_disc(idrid):
    """On real IDRiD photographs (field of view, 512 px stored): the partial mask's disc sits
    on the markup, and the refining window (ZoomView) centres on it."""
    from palm_algos.data import CaseDataset, prepare_image

    cases = [c for c in read_cases(idrid).cases if TASK.usable(c)][:3]
    data = CaseDataset(TASK, cases, 256, train=False, progress=False, zoom=2, geometry="fov", colour="standardise")
    for case, target, image in zip(cases, data.targets, data.images):
        frame = prepare_image(case.image, 512, "fov")[1]
        assert frame.fov
        rows, cols = np.nonzero(target.numpy() == 1)
        found = frame.original((cols.mean() + 0.5) / 512, (rows.mean() + 0.5) / 512)
        assert np.hypot(found[0] - case.disc_centre[0], found[1] - case.disc_centre[1]) < frame.width / 512 * 2
        x, y = data[cases.index(case)]
        assert x.shape == (3, 256, 256) and y.shape == (256, 256) and (y == 1).any()


@pytest.mark.parametrize("source", ["drishti", "idrid"])
def test_atrophy_is_painted_around_a_disc_masks_disc_and_never_over_it(source, request):
    """RandomAtrophy on the disc task's targets, real photographs stored as training stores
    them (field of view, 512 px): the retina just beyond the disc turns paler on one side,
    sized by the mask's own disc (Drishti-GS1's 30-degree discs are twice IDRiD's); every pixel
    the mask calls disc, or unknown (IDRiD's centre targets), keeps its value, and so does the
    mask; a photograph whose mask shows no disc is left alone."""
    from scipy import ndimage
    from torchvision import tv_tensors

    from palm_algos.data import prepare_image
    from palm_algos.tasks import RandomAtrophy

    cases = [c for c in read_cases(request.getfixturevalue(source)).cases if TASK.usable(c)][:3]
    torch.manual_seed(0)
    paler = []  # of each photograph's rim just beyond what is spared, the share painted paler
    for case in cases:
        stored, frame = prepare_image(case.image, 512, "fov")
        mask = TASK.target(case, 512, frame)
        painted, kept = RandomAtrophy(p=1.0, patches=1.0)(tv_tensors.Image(stored), mask)
        assert painted.dtype == torch.uint8 and painted.shape == stored.shape and torch.equal(kept, mask)
        spare = mask.numpy() != 0
        assert torch.equal(painted[:, torch.from_numpy(spare)], stored[:, torch.from_numpy(spare)]), case.name
        disc = mask.numpy() == 1
        radius = np.sqrt(disc.sum() / np.pi) / (0.5 if source == "idrid" else 1.0)  # a centre target: half a disc
        distance = ndimage.distance_transform_edt(~spare)
        beyond = (distance > 0) & (distance < 0.3 * radius)  # a rim just beyond the disc
        change = (painted.float().mean(0) - stored.float().mean(0)).numpy()[beyond]
        paler.append((change > 20).mean())
    assert np.mean(paler) > 0.25, paler  # a crescent or ring, paler on one side at least (a small one
    # can hide in a centre target's unknown ring, where nothing is learned anyway)
    empty = tv_tensors.Mask(torch.zeros(512, 512, dtype=torch.uint8))
    assert torch.equal(RandomAtrophy(p=1.0)(tv_tensors.Image(stored), empty)[0], stored)


def _logits(mask: np.ndarray) -> torch.Tensor:
    """A raw disc output (2, H, W) whose disc is ``mask``."""
    disc = torch.from_numpy(mask).float()
    return torch.stack([1 - disc, disc]) * 4 - 2


def test_a_disc_mask_no_ellipse_fills_is_doubted_and_an_ellipse_is_not():
    """A tilted ellipse (a myopic disc, 2:1) and a round disc fill their convex hulls: no word;
    a crescent (the pale atrophy beside a disc, which models that never saw myopic eyes take
    for it) fills far less: doubted, naming the shape; no disc at all: nothing to doubt."""
    from palm_algos.postprocess import solidity
    from palm_algos.tasks import DISC_SOLIDITY

    rows, cols = np.mgrid[0:256, 0:256]
    round_disc = (rows - 128) ** 2 + (cols - 128) ** 2 <= 30**2
    tilted = ((rows - 128) / 40.0) ** 2 + ((cols - 128) / 20.0) ** 2 <= 1
    crescent = ((rows - 128) ** 2 + (cols - 128) ** 2 <= 50**2) & ~((rows - 128) ** 2 + (cols - 100) ** 2 <= 45**2)
    assert solidity(round_disc) > 0.98 and solidity(tilted) > 0.98 and solidity(crescent) < 0.7
    assert solidity(np.zeros((8, 8), bool)) == 1.0
    for mask in (round_disc, tilted, np.zeros((256, 256), bool)):
        assert TASK.doubt(_logits(mask)) is None
    line = TASK.doubt(_logits(crescent))
    assert line is not None and "convex hull" in line and f"at least {DISC_SOLIDITY}" in line and "check this image" in line
