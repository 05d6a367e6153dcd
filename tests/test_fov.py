"""The field of view (issue 23): found on real photographs of every data set and on synthetic
fields cut by the image edge; original pixels -> network input -> original pixels within 1 px
for points and masks; the disc's first-pass fallback on an image where the first pass misses,
and its refining pass choosing the real disc over a brighter reflection."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from palm_algos.cases import Case, read_cases
from palm_algos.data import model_views, prepare_image
from palm_algos.errors import PalmError
from palm_algos.fov import Frame, crop, equalise, find_fov, frame_for, lit, local_contrast, paste, standardise
from palm_algos.imageio import read_image
from palm_algos.predict import Predictor
from palm_algos.tasks import get_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import camera_shift  # noqa: E402  (the other cameras: a square frame, darker colours)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FOVEA, DISC = get_task("fovea"), get_task("disc")


def fundus(size, centre, radius, spot=None, disc=None, seed=0) -> np.ndarray:
    """A synthetic photograph: a lit, shaded, noisy field of view of ``radius`` at ``centre``
    (cut where it leaves the image) on a black border; a white square ``spot`` (1/64 of the
    width, centred on that pixel) and a bright ``disc`` = (x, y, r) where given."""
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    rng = np.random.default_rng(seed)
    r = np.hypot(xx - centre[0], yy - centre[1]) / radius
    image = (np.clip(1.1 - 0.5 * r**2, 0, None)[..., None] * [180, 80, 30] * (r <= 1)[..., None])
    image += rng.normal(0, 3, image.shape) * (r <= 1)[..., None]
    if disc is not None:
        image[np.hypot(xx - disc[0], yy - disc[1]) <= disc[2]] = [250, 220, 170]
    if spot is not None:
        x, y = spot
        half = max(4, w // 128)
        image[y - half : y + half + 1, x - half : x + half + 1] = 255
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size, centre, radius", [
    ((600, 400), (300, 200), 250),      # cut at top and bottom (DRIONS-like)
    ((4288, 2848), (2150, 1420), 1700),  # IDRiD-like, cut at top and bottom
    ((512, 512), (256, 256), 240),      # the whole circle inside (PALM-like)
    ((900, 700), (520, 330), 300),      # off-centre
    ((800, 600), (400, 380), 360),      # cut on three sides
])
def test_a_synthetic_field_of_view_is_found_also_when_cut_by_the_image_edge(size, centre, radius):
    found = find_fov(fundus(size, centre, radius))
    assert found is not None
    cx, cy, r = found
    tolerance = 0.01 * max(size) + 1  # the finder works on a copy of about 256 px
    assert abs(cx - centre[0]) <= tolerance and abs(cy - centre[1]) <= tolerance and abs(r - radius) <= tolerance


@pytest.mark.parametrize("border", [0, 22])  # black, and the grey border some cameras leave
def test_a_field_cut_by_a_sensor_inside_a_padded_square_frame_is_found(border):
    w, h, radius = 600, 400, 280
    photo = fundus((w, h), (300, 200), radius)
    yy, xx = np.mgrid[:h, :w]
    photo[np.hypot(xx - 300, yy - 200) > radius] = border
    frame, (_, top) = camera_shift.square(photo)  # the circle cut by straight edges inside the picture, not at its edge
    found = find_fov(frame)
    assert found is not None
    assert np.allclose(found, (300, 200 + top, radius), atol=0.01 * w + 1)


def test_a_dim_vignetted_field_is_found_whole_not_only_its_bright_centre():
    w, h, radius = 800, 800, 380
    photo = fundus((w, h), (400, 400), radius).astype(float)
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(xx - 400, yy - 400) / radius
    photo *= np.clip(1 - 0.9 * r**3, 0.08, 1)[..., None]  # the rim at a tenth of the centre (myopic eyes, PALM)
    found = find_fov(photo.astype(np.uint8))
    assert found is not None
    assert np.allclose(found, (400, 400, radius), atol=0.01 * w + 1)


@pytest.mark.parametrize("source", ["idrid", "drishti-gs1", "drions", "palm224"])
def test_the_field_of_view_of_real_photographs_is_found_also_squared_and_dimmed(source):
    folder, count, _ = SOURCES[source]
    if not (DATA / folder).is_dir():
        pytest.skip(f"{DATA / folder} is absent (the shared data sets are not in a fresh clone)")
    paths = sorted((DATA / folder).glob("*.jpg"))[:: 5][:count]
    dim_found = 0
    for path in paths:
        rgb, _ = read_image(path, min_side=512)
        circle = np.array(find_fov(rgb))
        frame, (_, top) = camera_shift.square(rgb)
        found = find_fov(frame)
        assert found is not None, path
        assert np.abs(np.array(found) - (0, top, 0) - circle).max() <= 0.05 * circle[2], (path, found, circle)
        found = find_fov(camera_shift.darker(rgb))  # a rim dimmed to black may be lost: then none, never a wrong one
        assert found is None or np.abs(np.array(found) - circle).max() <= 0.05 * circle[2], (path, found, circle)
        dim_found += found is not None
    assert dim_found >= 0.75 * len(paths)


def test_no_field_of_view_where_there_is_no_dark_border_or_no_light():
    lit = np.full((300, 400, 3), 120, np.uint8)
    assert find_fov(lit) is None  # all retina: nothing to fit
    assert find_fov(np.zeros((300, 400, 3), np.uint8)) is None
    assert frame_for(lit, (4000, 3000), "fov") == Frame.whole((4000, 3000))  # today's path


SOURCES = {  # folder, images checked, expected FOV diameter / image width
    "idrid": ("idrid/images", 8, (0.75, 0.85)),
    "drishti-gs1": ("drishti-gs1/Training/images", 8, (0.78, 1.02)),
    "drions": ("drions-sample/images", 8, (0.85, 0.95)),
    "palm224": ("palm224/PALM-Training400", 8, (0.95, 1.03)),
}


@pytest.mark.parametrize("source", SOURCES)
def test_the_field_of_view_is_found_on_real_photographs_of_every_data_set(source):
    folder, count, (low, high) = SOURCES[source]
    if not (DATA / folder).is_dir():
        pytest.skip(f"{DATA / folder} is absent (the shared data sets are not in a fresh clone)")
    paths = sorted((DATA / folder).glob("*.jpg"))[:: 5][:count]
    for path in paths:
        rgb, size = read_image(path, min_side=256)
        circle = find_fov(rgb)
        assert circle is not None, path
        cx, cy, r = circle
        assert low <= 2 * r / rgb.shape[1] <= high, (path, 2 * r / rgb.shape[1])
        assert abs(cx / rgb.shape[1] - 0.5) < 0.08, path  # these cameras centre the field of view
        frame = frame_for(rgb, size, "fov")
        assert frame.fov and math.isclose(frame.width, frame.height, rel_tol=0.02)


@pytest.mark.parametrize("size, centre, radius, spot", [
    ((4288, 2848), (2150, 1420), 1700, (3100, 900)),
    ((600, 400), (300, 200), 250, (120, 330)),
    ((2124, 2056), (1062, 1028), 1000, (1500, 1700)),
])
def test_a_point_goes_to_the_network_input_and_back_within_one_pixel(tmp_path, size, centre, radius, spot):
    path = tmp_path / "photo.png"
    Image.fromarray(fundus(size, centre, radius, spot=spot)).save(path)
    case = Case(name="photo", image=path, size=size, fovea=(float(spot[0]), float(spot[1])))
    s = 256
    image, frame = prepare_image(path, s, "fov")
    assert frame.fov
    target = FOVEA.target(case, s, frame)  # input pixels
    grey = image.float().mean(0)
    ys, xs = torch.nonzero(grey >= 0.9 * grey.max(), as_tuple=True)
    assert np.allclose([xs.float().mean(), ys.float().mean()], target[0].tolist(), atol=1.0)
    back = FOVEA.decode(FOVEA.to_tensor(target), frame)
    assert np.allclose(back, case.fovea, atol=1.0)
    assert np.allclose(frame.original(*frame.normalised(*case.fovea)), case.fovea, atol=1e-9)


@pytest.mark.parametrize("size, centre, radius, disc", [
    ((600, 400), (300, 200), 250, (420, 180, 40)),
    ((2124, 2056), (1062, 1028), 1000, (700, 1100, 150)),
])
def test_a_disc_mask_goes_to_the_network_input_and_back_within_one_pixel(size, centre, radius, disc):
    rgb = fundus(size, centre, radius)
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    truth = np.hypot(xx - disc[0], yy - disc[1]) <= disc[2]
    frame = frame_for(rgb, size, "fov")
    s = 256
    view = torch.from_numpy(crop(truth, frame)).float()[None, None]
    view = torch.nn.functional.interpolate(view, size=(s, s), mode="bilinear", align_corners=False)[0, 0]
    logits = torch.stack([0.5 - view, view - 0.5]) * 20  # the model's two classes, disc where the mask is
    mask = DISC.decode(logits, frame)
    assert mask.shape == truth.shape
    rows, cols = np.nonzero(mask)
    assert abs(cols.mean() - disc[0]) <= 1 and abs(rows.mean() - disc[1]) <= 1
    assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.97


def test_crop_and_paste_are_inverses_where_the_box_leaves_the_image():
    array = np.arange(40 * 60).reshape(40, 60)
    frame = Frame(-10.0, -5.0, 70.0, 70.0, (60, 40), fov=True)
    part = crop(array, frame)
    assert part.shape == (70, 70) and (part[:5] == 0).all() and part[5, 10] == array[0, 0]
    assert np.array_equal(paste(part, frame), array)


def test_standardised_colours_agree_across_a_dark_and_a_bright_camera():
    bright = fundus((400, 300), (200, 150), 180, disc=(260, 140, 20))
    dark = (bright.astype(np.float32) * 0.35 * np.array([1.0, 0.8, 1.2])).astype(np.uint8)
    a, b = standardise(bright).astype(float), standardise(dark).astype(float)
    lit = bright.max(2) > 40
    assert np.abs(a[lit] - b[lit]).mean() < 6  # one look, whatever the exposure and tint
    assert (b[~(bright.max(2) > 0)] == 0).all()  # the border stays black



def test_local_contrast_agrees_across_an_uneven_tinted_flash_where_standardising_cannot():
    even = fundus((400, 300), (200, 150), 180, disc=(260, 140, 20))
    flash = np.linspace(0.45, 1.0, 400)[None, :, None] * np.array([0.8, 1.0, 1.2])  # falls off to the left, bluish
    uneven = np.clip(even * flash, 0, 255).astype(np.uint8)
    lit = even.max(2) > 40
    local = np.abs(local_contrast(even).astype(float) - local_contrast(uneven).astype(float))[lit].mean()
    glob = np.abs(standardise(even).astype(float) - standardise(uneven).astype(float))[lit].mean()
    assert local < 6 and glob > 2 * local
    yy, xx = np.mgrid[:300, :400]
    distance = np.hypot(xx - 260, yy - 140)
    shown = local_contrast(uneven).astype(float).mean(2)
    assert shown[distance <= 18].mean() > shown[(distance > 25) & (distance < 40)].mean() + 60  # the disc stands out
    assert (local_contrast(uneven)[~(even.max(2) > 0)] == 0).all()  # the border stays black


def test_equalised_colours_undo_a_cameras_tone_curve_where_standardising_cannot():
    shot = fundus((400, 300), (200, 150), 180, disc=(260, 140, 20)) // 2  # levels 0-127
    curve = np.round(255 * (np.arange(256) / 127) ** np.array([[0.7], [0.8], [0.6]])).clip(0, 255)
    other = np.stack([curve[c].astype(np.uint8)[shot[..., c]] for c in range(3)], axis=2)  # no two levels merged
    lit = (shot.max(2) > 20) & (other.max(2) > 20)
    equalised = np.abs(equalise(shot).astype(float) - equalise(other).astype(float))[lit]
    standardised = np.abs(standardise(shot).astype(float) - standardise(other).astype(float))[lit]
    assert equalised.max() <= 1 and standardised.mean() > 3  # one look whatever the curve
    shown = equalise(shot)[lit].astype(float)
    assert np.allclose(shown.mean(0), 128, atol=3) and np.allclose(shown.std(0), 48, atol=6)
    assert (equalise(other)[~(shot.max(2) > 0)] == 0).all()  # the border stays black


class MissesOnTheFirstPass(torch.nn.Module):
    """A disc model that misses on the first pass (an unfamiliar camera: nothing found) and
    segments bright pixels on every later one (the refining window)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        bright = (batch.mean(1) > 1.2).float()  # normalised input: the white disc only
        if self.calls == 1:
            bright = torch.zeros_like(bright)
        return torch.stack([1 - bright, bright], 1) * 8 - 4


def disc_model_on_a_photograph(model: torch.nn.Module, path: Path, disc) -> tuple[Predictor, torch.Tensor, Frame]:
    """A 900x700 synthetic photograph with a white ``disc`` (x, y, r) saved at ``path``; the
    test ``model`` as a refining disc predictor (128 px, zoom 2), its first-pass view, frame."""
    Image.fromarray(fundus((900, 700), (450, 350), 330, disc=disc)).save(path)
    meta = {"task": "disc", "arch": "test", "input_size": 128, "zoom": 2, "geometry": "fov", "colour": "none"}
    predictor = Predictor(model, meta, torch.device("cpu"), tta=False)
    first, _, frame = predictor.views(predictor.read(path))
    return predictor, first, frame


def assert_the_mask_is_on(disc, predictor: Predictor, path: Path) -> None:
    rows, cols = np.nonzero(predictor.predict(path))
    assert len(rows) and abs(cols.mean() - disc[0]) < 3 and abs(rows.mean() - disc[1]) < 3


def test_the_disc_fallback_puts_the_refining_window_on_a_disc_the_first_pass_missed(tmp_path):
    disc, path = (640, 300, 45), tmp_path / "missed.png"
    predictor, first, frame = disc_model_on_a_photograph(MissesOnTheFirstPass(), path, disc)
    centre = DISC.fallback_centre(first)
    u, v = frame.normalised(disc[0], disc[1])
    assert abs(centre[0] - u) < 0.03 and abs(centre[1] - v) < 0.03
    assert_the_mask_is_on(disc, predictor, path)
    assert predictor.model.calls == 2  # the first pass and the refining window


class FooledOnTheFirstPass(torch.nn.Module):
    """A disc model that, on the first pass, sees a disc at a bright reflection (the top left
    of the field of view) and only a faint one on the real disc; on a refining window it
    segments the white disc surely and the reflection's window weakly."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        bright = (batch.mean(1) > 1.2).float()
        if self.calls == 1:  # the first pass: (1, 128, 128)
            glare = torch.zeros_like(bright)
            glare[:, 20:50, 20:50] = 1.0
            return torch.stack([torch.zeros_like(bright), glare * 6 + bright * 3 - 4], 1)
        logits = torch.stack([torch.zeros_like(bright), bright * 8 - 4], 1)
        weak = ~(bright.flatten(1).any(1))  # a window without the white disc: a doubtful region
        logits[weak, 1, 30:70, 30:70] = 0.3
        return logits


def test_a_faint_first_pass_disc_wins_over_a_brighter_reflection_in_the_refining_pass(tmp_path):
    """The refining pass looks at every place the first pass saw a disc, even faintly, and keeps
    the window it is surest of: a reflection that outshone the disc in the first pass loses."""
    disc, path = (640, 380, 45), tmp_path / "fooled.png"
    predictor, first, frame = disc_model_on_a_photograph(FooledOnTheFirstPass(), path, disc)
    centres = DISC.view_centres(predictor.forward(first[None])[0])
    u, v = frame.normalised(disc[0], disc[1])
    assert len(centres) == 2 and centres[0] == pytest.approx((35 / 128, 35 / 128), abs=0.02)  # the reflection first
    assert centres[1] == pytest.approx((u, v), abs=0.03)
    predictor.model.calls = 0
    assert_the_mask_is_on(disc, predictor, path)
    assert predictor.model.calls == 2  # one first pass, one batch of both windows


class SurerOfAReflection(torch.nn.Module):
    """On the first pass, as ``FooledOnTheFirstPass``; on a refining window, surer of the
    reflection's (a sure find) than of the real disc's (a faint one): the window score alone
    picks the reflection, as all three members of the disc ensemble did on DRIONS image_110."""

    def __init__(self):
        super().__init__()
        self.first = FooledOnTheFirstPass()

    def forward(self, batch):
        if self.first.calls == 0:
            return self.first(batch)
        bright = (batch.mean(1) > 1.2).float()
        disc = bright * 4.2 - 4  # the disc: a probability of 0.55
        glare = torch.full_like(disc, -4.0)
        glare[:, 30:70, 30:70] = 4.0  # no disc in the window: the reflection, surely
        found = bright.flatten(1).any(1)[:, None, None]
        return torch.stack([torch.zeros_like(disc), torch.where(found, disc, glare)], 1)


class JointFoveaModel(torch.nn.Module):
    """A joint disc + fovea model that finds the fovea and the disc where ``points`` says:
    (fovea x, fovea y, disc x, disc y) in [0, 1] of the whole image."""

    def __init__(self, points):
        super().__init__()
        self.points = torch.tensor(points, dtype=torch.float32)

    def forward(self, batch):
        return self.points.expand(len(batch), 4)


def joint_fovea_predictor(disc: tuple[int, int, int], size=(900, 700)) -> Predictor:
    """A joint disc + fovea model's predictor that puts the disc at ``disc`` of a ``size`` photograph."""
    fovea = JointFoveaModel([0.3, 0.5, (disc[0] + 0.5) / size[0], (disc[1] + 0.5) / size[1]])
    return Predictor(fovea, {"task": "fovea", "arch": FOVEA.joint_arch, "input_size": 64, "geometry": "squash",
                             "colour": "none"}, torch.device("cpu"), tta=False)


@pytest.mark.parametrize("how", ["together", "guided", "alone"])
def test_the_disc_window_heeds_the_fovea_models_disc_centre_when_both_run(tmp_path, caplog, how):
    """In one run of both models (palm-all), the disc's refining pass looks only where the
    joint fovea model puts the disc: a reflection the disc model is surer of loses, and the log
    names the image. The disc model with that model as its guide (palm-disc, `palm predict disc
    --guide`) does the same, writing no fovea file. Alone, it keeps its surest window (the
    reflection)."""
    from palm_algos.predict import predict_tasks

    disc = (640, 380, 45)
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    disc_model, _, _ = disc_model_on_a_photograph(SurerOfAReflection(), folder / "glare.png", disc)
    fovea_model = joint_fovea_predictor(disc)
    predictors = {"together": [fovea_model, disc_model], "guided": [disc_model], "alone": [disc_model]}[how]
    if how == "guided":
        disc_model.guided_by(fovea_model)
    runs = predict_tasks(predictors, folder, out, progress=False, workers=0)
    heard = how != "alone"
    assert runs["disc"].predicted == 1 and list(runs) == [p.task for p in predictors]
    assert (out / "Fovea_Localization_Results.csv").exists() == (how == "together")
    mask = np.asarray(Image.open(out / "Disc_Segmentation" / "glare.bmp")) == 0
    rows, cols = np.nonzero(mask)
    on_disc = abs(cols.mean() - disc[0]) < 3 and abs(rows.mean() - disc[1]) < 3
    assert on_disc == heard
    told = [r.getMessage() for r in caplog.records if "fovea model's disc centre" in r.getMessage()]
    assert told == ([f"{folder / 'glare.png'}: disc: the refining pass looks only near the fovea model's disc centre "
                     "(1 of the first pass's 2 places left out)"] if heard else [])


def test_one_image_heeds_the_disc_centre_it_is_given(tmp_path):
    """``Predictor.predict`` (a grand-challenge job) heeds a disc centre as the batch does."""
    disc, path = (640, 380, 45), tmp_path / "glare.png"
    predictor, _, _ = disc_model_on_a_photograph(SurerOfAReflection(), path, disc)
    rows, cols = np.nonzero(predictor.predict(path, disc=(disc[0] + 8, disc[1] - 6)))
    assert abs(cols.mean() - disc[0]) < 3 and abs(rows.mean() - disc[1]) < 3
    predictor.model.first.calls = 0  # its next call is a first pass again
    rows, cols = np.nonzero(predictor.predict(path))  # alone: the reflection (top left)
    assert cols.mean() < disc[0] - 100 and rows.mean() < disc[1] - 100
    predictor.model.first.calls = 0
    rows, cols = np.nonzero(predictor.guided_by(joint_fovea_predictor(disc)).predict(path))  # its guide tells it
    assert abs(cols.mean() - disc[0]) < 3 and abs(rows.mean() - disc[1]) < 3
    predictor.model.first.calls = 0
    broken = joint_fovea_predictor((math.nan, math.nan, 0))  # its output is not finite: it says nothing
    rows, cols = np.nonzero(predictor.guided_by(broken).predict(path))  # alone again: the reflection
    assert cols.mean() < disc[0] - 100 and rows.mean() < disc[1] - 100


def test_only_a_joint_fovea_model_guides_only_a_disc_model(tmp_path):
    """A fovea regressor has no disc centre to give, and only the disc model takes a guide:
    each refused with one line naming the checkpoint."""
    disc_model, _, _ = disc_model_on_a_photograph(SurerOfAReflection(), tmp_path / "glare.png", (640, 380, 45))
    regressor = joint_fovea_predictor((640, 380, 45))
    regressor.meta = {**regressor.meta, "arch": "vgg19-fused"}
    regressor.checkpoint = Path("fovea-vgg19.pt")
    with pytest.raises(PalmError, match=r"fovea-vgg19.pt: not a joint disc \+ fovea model .*--arch disc-fovea-heatmaps"):
        disc_model.guided_by(regressor)
    with pytest.raises(PalmError, match="a fovea model takes no guide"):
        joint_fovea_predictor((640, 380, 45)).guided_by(joint_fovea_predictor((640, 380, 45)))
    assert disc_model.guide is None


def test_a_disc_opinion_far_from_every_first_pass_place_is_the_refining_window():
    """The first pass's places near the other model's disc are kept (its own centre is the
    more exact); where none is near, the opinion itself is where the window goes."""
    glare, faint = (0.27, 0.27), (0.7, 0.55)
    assert DISC.heed([glare, faint], (0.71, 0.56)) == [faint]
    assert DISC.heed([glare], (0.71, 0.56)) == [(0.71, 0.56)]
    assert DISC.heed([], (0.71, 0.56)) == [(0.71, 0.56)]
    assert FOVEA.heed([glare], (0.71, 0.56)) == [glare]  # only the disc listens
    assert FOVEA.disc_centre(torch.tensor([0.1, 0.2, 0.7, 0.6])) == pytest.approx((0.7, 0.6))
    assert FOVEA.disc_centre(torch.tensor([0.1, 0.2])) is None  # a fovea regressor has no disc head


def test_an_image_without_a_disc_keeps_an_empty_mask(tmp_path):
    path = tmp_path / "nodisc.png"
    Image.fromarray(fundus((900, 700), (450, 350), 330)).save(path)
    meta = {"task": "disc", "arch": "test", "input_size": 128, "zoom": 2, "geometry": "fov", "colour": "none"}
    predictor = Predictor(MissesOnTheFirstPass(), meta, torch.device("cpu"), tta=False)
    assert not predictor.predict(path).any()


def test_model_views_without_a_field_of_view_is_todays_squashed_image():
    rgb = np.random.default_rng(0).integers(40, 200, (300, 400, 3), dtype=np.uint8)
    first, big, frame = model_views((rgb, (400, 300)), 64, 1, "fov")
    same, _, whole = model_views((rgb, (400, 300)), 64, 1, "squash")
    assert torch.equal(first, same) and frame == whole == Frame.whole((400, 300)) and big is None


def test_camera_augmentation_keeps_images_uint8_and_targets_in_place():
    """Colour, gamma, blur and JPEG changes (Pillow's JPEG: the CPU images have no torchvision
    image library) touch the image only, never the mask or the points."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from palm_algos.tasks import RandomJpeg, camera_augmentation

    image = tv_tensors.Image(torch.from_numpy(fundus((64, 48), (32, 24), 22)).permute(2, 0, 1).contiguous())
    mask = tv_tensors.Mask(torch.zeros(48, 64, dtype=torch.uint8))
    mask[10:20, 30:40] = 1
    points = tv_tensors.KeyPoints([[12.0, 30.0]], canvas_size=(48, 64))
    torch.manual_seed(0)
    for transform in [RandomJpeg((30, 30)), *camera_augmentation()]:
        out_image, out_mask, out_points = v2.Compose([transform])(image, mask, points)
        assert out_image.dtype == torch.uint8 and out_image.shape == image.shape
        assert torch.equal(out_mask, mask) and torch.equal(out_points, points)
    assert not torch.equal(RandomJpeg((30, 30))(image), image)  # a real re-encoding


@pytest.mark.parametrize("rows", [0.5, 2 / 3, 0.9])
def test_square_frame_moves_the_points_with_the_pixels(rows):
    """A squarer camera's frame on the squashed input: the rows shrink, black rows fill the rest,
    and a marked point stays on what it marked (within 1 px), an unknown point stays unknown."""
    from torchvision import tv_tensors

    from palm_algos.tasks import RandomSquareFrame

    pixels = torch.full((3, 96, 96), 60, dtype=torch.uint8)  # a grey photograph
    pixels[:, 60:66, 20:26] = 255  # a bright spot centred on (22.5, 62.5)
    points = tv_tensors.KeyPoints([[22.5, 62.5], [math.nan, math.nan]], canvas_size=(96, 96))
    torch.manual_seed(1)
    out_image, out_points = RandomSquareFrame((rows, rows))(tv_tensors.Image(pixels), points)
    assert out_image.shape == pixels.shape and out_points.canvas_size == (96, 96)
    black_rows = out_image[0].amax(1).eq(0).sum().item()
    assert black_rows == 96 - round(96 * rows)
    spot = (out_image[0] > 150).float()
    ys, xs = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    x, y = out_points[0].tolist()
    assert abs(x - (xs * spot).sum() / spot.sum()) < 1 and abs(y - (ys * spot).sum() / spot.sum()) < 1
    assert out_points[1].isnan().all()


def test_atrophy_is_painted_pale_beside_the_disc_on_the_foveas_side_and_nowhere_it_would_lie(idrid):
    """RandomAtrophy on real IDRiD photographs as training stores them: the retina between the
    disc and the fovea, just beyond the disc's rim, turns paler; the disc's centre, the fovea,
    the dark border and the key points stay as they are; a photograph whose disc is unknown
    is left alone."""
    from torchvision import tv_tensors

    from palm_algos.tasks import DISC_RADIUS, RandomAtrophy

    task = get_task("fovea")
    cases = [c for c in read_cases(idrid).cases if c.fovea and c.disc_centre][:4]
    torch.manual_seed(0)
    for case in cases:
        stored, frame = prepare_image(case.image, 192, "squash")
        points = task.target(case, 192, frame)
        painted, kept = RandomAtrophy(p=1.0, patches=1.0)(tv_tensors.Image(stored), points)
        assert painted.dtype == torch.uint8 and painted.shape == stored.shape and torch.equal(kept, points)
        (fx, fy), (dx, dy) = points.tolist()
        before, after = stored.float().mean(0), painted.float().mean(0)
        radius = DISC_RADIUS * lit(stored.amax(0).numpy()).any(0).sum()  # across, in input pixels
        rim = round(dx + math.copysign(1.25 * radius, fx - dx)), round(dy)  # just beyond the disc
        assert after[rim[1], rim[0]] > before[rim[1], rim[0]] + 20, case.name
        for x, y in ((dx, dy), (fx, fy)):
            assert torch.equal(painted[:, round(y), round(x)], stored[:, round(y), round(x)]), case.name
        border = stored.amax(0) < 4
        assert torch.equal(painted[:, border], stored[:, border])
    unknown = tv_tensors.KeyPoints([[fx, fy], [math.nan, math.nan]], canvas_size=(192, 192))
    assert torch.equal(RandomAtrophy(p=1.0)(tv_tensors.Image(stored), unknown)[0], stored)


@pytest.mark.parametrize("disc_x, doubted", [(0.55, True), (0.75, False)])
def test_a_fovea_beside_the_models_own_disc_is_written_and_doubted_in_the_log(tmp_path, caplog, disc_x, doubted):
    """No fovea lies within FOVEA_DISC_GAP of the disc's centre: where the joint model says so
    (PALM's myopic eyes: atrophy taken for the disc), the log names the image and why, and the
    prediction is still written; a fovea at the usual distance goes without a word."""
    from palm_algos.predict import predict_tasks

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    Image.fromarray(fundus((300, 200), (150, 100), 95)).save(folder / "eye.png")
    predictor = joint_fovea_predictor((0, 0, 0), size=(300, 200))
    predictor.model.points = torch.tensor([0.45, 0.5, disc_x, 0.5])
    runs = predict_tasks([predictor], folder, out, progress=False, workers=0)
    assert runs["fovea"].predicted == 1
    rows = (out / "Fovea_Localization_Results.csv").read_text().splitlines()
    assert rows[1].startswith("eye.png,") and len(rows) == 2
    told = [r.getMessage() for r in caplog.records if "check this image" in r.getMessage()]
    gap = disc_x - 0.45
    assert told == ([f"{folder / 'eye.png'}: fovea: the fovea found {gap:.2f} of the image from the model's own disc "
                     "centre, where a fovea lies at least 0.15 from it: one of the two is wrong (an eye or a camera "
                     "unlike those it learned from, e.g. atrophy around the disc or a disc-centred photograph); check this "
                     "image"] if doubted else [])


def test_the_doubted_benchmark_counts_the_foveas_on_their_own_disc_by_the_names_letter(tmp_path):
    """benchmarks/doubted.py: each photograph's fovea-to-disc gap as the model gives them (0.10
    of the image here), counted as doubted below FOVEA_DISC_GAP, by PALM's letters."""
    import doubted

    for name in ("P0001.png", "P0002.png", "N0001.png"):
        Image.fromarray(fundus((300, 200), (150, 100), 95)).save(tmp_path / name)
    predictor = joint_fovea_predictor((0, 0, 0), size=(300, 200))
    predictor.model.points = torch.tensor([0.45, 0.5, 0.55, 0.5])
    found = doubted.answers(predictor, sorted(tmp_path.glob("*.png")))
    assert sorted(found) == ["N0001.png", "P0001.png", "P0002.png"]
    assert all(a["gap"] == pytest.approx(0.10, abs=0.01) and a["disc"][0] > a["fovea"][0] for a in found.values())
    gaps = {name: a["gap"] for name, a in found.items()}
    assert doubted.counts({**gaps, "P0002.png": 0.30}) == {
        "N": {"doubted": 1, "of": 1}, "P": {"doubted": 1, "of": 2}, "all": {"doubted": 2, "of": 3}}


def test_a_camera_aimed_elsewhere_moves_the_points_with_the_pixels_and_keeps_the_fovea_in_its_round_field(idrid):
    """RandomFixation on real IDRiD photographs as training stores them: the key points land
    where a mark at the fovea lands (within a pixel), the fovea inside the new round field,
    black outside it; a photograph whose fovea is unknown is left alone."""
    from torchvision import tv_tensors

    from palm_algos.tasks import RandomFixation

    task = get_task("fovea")
    cases = [c for c in read_cases(idrid).cases if c.fovea and c.disc_centre][:4]
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(192.0), torch.arange(192.0), indexing="ij")
    for case in cases:
        stored, frame = prepare_image(case.image, 192, "squash")
        points = task.target(case, 192, frame)
        (fx, fy), _ = points.tolist()
        mark = tv_tensors.Mask((torch.hypot(xx - fx, yy - fy) <= 2).to(torch.uint8) * 255)
        for _ in range(3):
            image, marked, moved = RandomFixation(p=1.0)(tv_tensors.Image(stored), mark, points)
            (mx, my), _ = moved.tolist()
            ys, xs = torch.nonzero(marked > 127, as_tuple=True)
            assert math.hypot(mx - 95.5, my - 95.5) < 0.9 * 96, case.name
            if math.hypot(mx - 95.5, my - 95.5) < 80:  # the mark whole, not cut by the field's edge
                assert abs(xs.float().mean() - mx) <= 1 and abs(ys.float().mean() - my) <= 1, case.name
            outside = torch.hypot(xx - 95.5, yy - 95.5) > 97
            assert image.shape == stored.shape and not image[:, outside].any(), case.name
    unknown = tv_tensors.KeyPoints([[math.nan, math.nan], [fx, fy]], canvas_size=(192, 192))
    assert torch.equal(RandomFixation(p=1.0)(tv_tensors.Image(stored), unknown)[0], stored)
