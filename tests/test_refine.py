"""The refining pass (--zoom): the training view keeps targets aligned, the two outputs merge
into original pixels correctly, and a zoom checkpoint really runs two passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from palm_algos.data import CaseDataset, ZoomView, square_resize, view_box
from palm_algos.predict import Predictor
from palm_algos.tasks import get_task
from palm_algos.train import TrainConfig, train
from test_fovea import brightest
from test_fovea import spot_image as spot_case

FOVEA, DISC = get_task("fovea"), get_task("disc")


def test_view_box_centres_and_stays_inside():
    assert view_box((0.5, 0.5), 128, 64) == (32, 32)
    assert view_box((0.0, 1.0), 128, 64) == (0, 64)  # shifted inside, never padded
    assert view_box((0.3, 0.7), 256, 128) == (13, 115)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_zoom_view_keeps_the_key_point_on_the_spot(tmp_path, p):
    case = spot_case(tmp_path, (900, 600), (610, 250))
    big, size = 128, 64
    image = tv_tensors.Image(square_resize(np.asarray(Image.open(case.image).convert("RGB")), big))
    point = FOVEA.target(case, big)
    torch.manual_seed(0)
    for _ in range(5):  # several random windows
        out_image, out_point = ZoomView(size, p=p)(image, point)
        assert out_image.shape[-2:] == (size, size) and out_point.canvas_size == (size, size)
        assert np.allclose(brightest(out_image), out_point[0].tolist(), atol=1.0)


def test_zoom_view_crops_the_mask_with_the_image():
    big, size = 96, 48
    mask = torch.zeros(big, big, dtype=torch.uint8)
    mask[60:80, 10:30] = 1
    image = tv_tensors.Image(mask[None].repeat(3, 1, 1) * 255)
    torch.manual_seed(1)
    out_image, out_mask = ZoomView(size, p=1.0, jitter=0.0)(image, tv_tensors.Mask(mask))
    assert out_mask.shape == (size, size) and out_mask.sum() == 400  # the whole disc, at full detail
    assert torch.equal(out_image[0] > 127, out_mask.bool())


def test_fovea_merge_maps_the_window_estimate_back():
    window = torch.tensor([0.25, 0.75])  # normalised inside a 64 px window at (32, 16) of 128 px
    merged = FOVEA.merge(torch.tensor([0.9, 0.9]), window, (32, 16, 64), 128)
    assert torch.allclose(merged, torch.tensor([(32 + 16) / 128, (16 + 48) / 128]))
    assert FOVEA.view_centres(torch.tensor([0.3, 0.6])) == [pytest.approx((0.3, 0.6))]


def test_disc_merge_keeps_the_window_and_finds_no_centre_without_a_disc():
    first = torch.zeros(2, 32, 32)
    first[1, 8:16, 8:16] = 5.0  # a disc around (12, 12) of 32
    first[1, 28:32, 28:32] = 5.0  # and a false one, outside the window below
    assert DISC.view_centres(first)[0] == pytest.approx((0.375, 0.375))  # the largest region first
    window = torch.zeros(2, 32, 32)
    window[1, 10:20, 10:20] = 3.0
    merged = DISC.merge(first, window, (4, 8, 32), 64)
    assert merged.shape == (2, 64, 64)
    assert torch.equal(merged[:, 8:40, 4:36], window)
    disc = DISC.decode(merged, (64, 64))
    assert disc.sum() == 100 and disc[18:28, 14:24].all()  # only the window's disc survives
    no_disc = torch.zeros(2, 32, 32) + torch.tensor([3.0, 0.0])[:, None, None]  # disc nowhere above 0.05
    assert DISC.view_centres(no_disc) == [] and DISC.window_score(no_disc) == 0
    assert DISC.merge(first, no_disc, (4, 8, 32), 64) is first  # an empty window removes nothing


def test_a_zoom_checkpoint_runs_two_passes_and_returns_original_pixels(tmp_path):
    cases = [spot_case(tmp_path, (300, 200), (60 + 30 * i, 50 + 20 * i), name=f"s{i}") for i in range(4)]
    ckpt = tmp_path / "fovea.pt"
    config = TrainConfig(arch="resnet50", pretrained="none", input_size=32, zoom=2, epochs=1, batch_size=4)
    train(FOVEA, cases, [], config, ckpt, progress=False)
    predictor = Predictor.load(ckpt, task="fovea")
    assert predictor.meta["zoom"] == 2
    calls = []
    predictor.model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    x, y = predictor.predict(cases[0].image)
    assert calls == [torch.Size([1, 3, 32, 32])] * 2
    assert 0 <= x < 300 and 0 <= y < 200


def test_zoom_datasets_store_the_larger_image_and_yield_input_size(tmp_path):
    cases = [spot_case(tmp_path, (300, 200), (100, 80))]
    train_set = CaseDataset(FOVEA, cases, 32, train=True, progress=False, zoom=2)
    val_set = CaseDataset(FOVEA, cases, 32, train=False, progress=False, zoom=2)
    assert train_set.images[0].shape[-1] == 64
    for dataset in (train_set, val_set):
        image, target = dataset[0]
        assert image.shape == (3, 32, 32) and 0 <= target[:2].min() and target[:2].max() <= 1
        assert target[2:].isnan().all()  # no disc centre in this case: the joint model skips it
    _, target = val_set[0]  # the validation view is the whole image: target = (x + 0.5) / W
    assert torch.allclose(target[:2], torch.tensor([100.5 / 300, 80.5 / 200]), atol=1e-4)


def test_cli_refuses_zoom_for_classification_and_data_without_ground_truth(tmp_path):
    from click.testing import CliRunner

    from palm_algos.cli import main

    runner = CliRunner()
    assert runner.invoke(main, ["data", "synth", str(tmp_path / "synth"), "--count", "4", "--size", "64x64"]).exit_code == 0
    zoomed = runner.invoke(main, ["train", "classification", "--data", str(tmp_path / "synth"), "--out",
                                  str(tmp_path / "c.pt"), "--pretrained", "none", "--zoom", "2"])
    assert zoomed.exit_code == 1 and "Error: --zoom is for fovea and disc" in zoomed.output
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.new("RGB", (32, 32)).save(plain / "photo.png")
    unlabelled = runner.invoke(main, ["train", "classification", "--data", str(plain), "--out", str(tmp_path / "c.pt"),
                                      "--pretrained", "none"])
    assert unlabelled.exit_code == 1 and "no case has classification ground truth" in unlabelled.output
    assert unlabelled.exception is None or isinstance(unlabelled.exception, SystemExit)


def test_the_window_score_prefers_a_round_disc_to_a_crescent_of_equal_confidence():
    yy, xx = np.mgrid[:64, :64]
    disc = np.hypot(xx - 32, yy - 32) <= 12
    crescent = (np.hypot(xx - 32, yy - 32) <= 20) & (np.hypot(xx - 40, yy - 32) > 18)  # a rim reflection's shape
    scores = []
    for region in (disc, crescent):
        logits = torch.zeros(2, 64, 64)
        logits[1] = torch.from_numpy(np.where(region, 4.0, -4.0)).float()
        scores.append(DISC.window_score(logits))
    assert scores[0] > 0.85 and scores[1] < 0.5 * scores[0]  # a digital circle fills about 0.9 of its reach
