"""benchmarks/camera_shift.py: a camera change moves the truth with the pixels, so a model that
finds the fovea exactly scores 0 under every shift, and one that finds the disc exactly Dice 1."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from palm_algos.cases import Case
from palm_algos.imageio import read_image
from palm_algos.tasks import DiscTask, FoveaTask

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import camera_shift  # noqa: E402


class SpotFinder:
    """A 'model' that answers the brightest spot of the photograph it is given, in its pixels."""

    task = FoveaTask.name

    def read(self, image):
        return read_image(image)

    def predict(self, image, photo):
        rgb, size = photo
        grey = rgb.astype(float).mean(2)
        ys, xs = np.nonzero(grey >= grey.max() * 0.9)
        assert (rgb.shape[1], rgb.shape[0]) == tuple(size)
        return xs.mean(), ys.mean()


@pytest.mark.parametrize("size", [(600, 400), (300, 500)])
def test_every_shift_moves_the_truth_with_the_spot(tmp_path, size):
    w, h = size
    rgb = np.zeros((h, w, 3), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    rgb[np.hypot(xx - w / 2, yy - h / 2) < 0.45 * min(w, h)] = 90  # a lit field of view
    rgb[200 - 4 : 200 + 5, 120 - 4 : 120 + 5] = 255  # the "fovea"
    Image.fromarray(rgb).save(tmp_path / "eye.png")
    case = Case(name="eye", image=tmp_path / "eye.png", size=size, fovea=(120.0, 200.0), disc_centre=(200.0, 200.0))
    scores = camera_shift.shift_scores(SpotFinder(), [case])
    assert set(scores) == {*camera_shift.SHIFTS, "disc-centred"}
    for name, score in scores.items():
        assert score["distance_normalised"]["mean"] < 0.01, name
        assert score["share_of_fov"]["mean"] < 0.01, name


def test_square_pads_to_a_square_around_the_photograph():
    rgb = np.full((40, 100, 3), 7, np.uint8)
    out, (dx, dy) = camera_shift.square(rgb)
    assert out.shape == (100, 100, 3) and (dx, dy) == (0.0, 30.0)
    assert (out[30:70] == 7).all() and not out[:30].any() and not out[70:].any()


def test_a_camera_aimed_at_the_disc_shows_a_round_field_around_it_with_the_fovea_inside():
    """disc_centred: a square of 2.5 times the disc-fovea distance centred a quarter of the way
    from the disc, the photograph's pixels where it has them, black outside them and outside
    the round field; the shift it returns takes the fovea to its pixel."""
    rgb = np.full((400, 600, 3), 50, np.uint8)
    rgb[200, 120] = 255  # the fovea's pixel
    out, (dx, dy) = camera_shift.disc_centred(rgb, fovea=(120.0, 200.0), disc=(40.0, 200.0))
    assert out.shape == (200, 200, 3) and (dx, dy) == (40.0, -100.0)  # centred on (60, 200), radius 100
    assert (out[round(200 + dy), round(120 + dx)] == 255).all()
    assert not out[60, :40].any()  # left of the photograph's edge (x < 0)
    assert (out[60, 40:190] == 50).all() and not out[0, 0].any() and not out[199, 199].any()  # the round field


class DiscFinder(SpotFinder):
    """A 'model' that answers the brightest pixels of the photograph it is given as the disc,
    reading it at half size as a disc model reads a large photograph."""

    task = DiscTask.name

    def read(self, image):
        return read_image(image, min_side=150)

    def predict(self, image, photo):
        rgb, size = photo
        grey = rgb.astype(float).mean(2)
        return grey >= (grey.max() + np.median(grey[grey > 0])) / 2  # halfway from the retina to the disc


def test_every_shift_moves_the_disc_mask_with_the_disc(tmp_path):
    w, h = 600, 400
    rgb = np.zeros((h, w, 3), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    rgb[np.hypot(xx - w / 2, yy - h / 2) < 0.45 * h] = 90
    disc = np.hypot(xx - 380, yy - 180) < 40
    rgb[disc] = 255
    Image.fromarray(rgb).save(tmp_path / "eye.jpg", quality=95)  # a JPEG: read reduced, as cameras' are
    Image.fromarray(np.where(disc, 0, 255).astype(np.uint8)).save(tmp_path / "eye.bmp")  # PALM: disc = 0
    case = Case(name="eye", image=tmp_path / "eye.jpg", size=(w, h), disc_mask=tmp_path / "eye.bmp")
    finder = DiscFinder()
    assert finder.read(case.image)[0].shape[0] < h  # the truth must be brought to the read scale
    scores = camera_shift.shift_scores(finder, [case])
    assert set(scores) == set(camera_shift.SHIFTS)
    for name, score in scores.items():
        assert score["dice"]["mean"] > 0.95 and score["below_0.5"] == 0, name
