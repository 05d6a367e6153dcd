"""Overlays (palm_algos.overlays) and the leaderboard's case gallery, on real synthetic files.

The pictures are checked where they must be right: the aspect ratio, the disc contour on the
mask's border and the cross on the fovea, both mapped back to original pixels. The gallery
page is checked as a browser sees it (headless Chromium, where installed): something drawn,
the photographs loaded from disk, and no request leaving the folder.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import ndimage

from evaluation.leaderboard import build
from palm_algos.overlays import PREDICTION, TRUTH, draw_overlay, save_overlay
from palm_algos.synth import synth_case, write_palm_example

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def coloured(picture: Image.Image, colour) -> np.ndarray:
    """(row, column) of the pixels painted exactly ``colour``."""
    return np.argwhere(np.all(np.asarray(picture) == colour, axis=2))


def to_original(points: np.ndarray, scale: float) -> np.ndarray:
    """Picture pixel centres -> original pixel coordinates."""
    return (points + 0.5) / scale - 0.5


@pytest.mark.parametrize("size", [(300, 200), (200, 330), (2124, 2056)])
def test_overlay_keeps_the_aspect_ratio(tmp_path, size):
    case = synth_case(1, size)
    path = tmp_path / "V0001.jpg"
    Image.fromarray(case.image).save(path, quality=90)
    for image in (path, case.image):
        picture = draw_overlay(image, pm_risk=0.7, fovea=case.fovea, disc=case.disc)
        assert max(picture.size) == 1024 and picture.mode == "RGB"
        assert picture.size[0] / picture.size[1] == pytest.approx(size[0] / size[1], abs=2 / min(picture.size))
    saved = save_overlay(picture, tmp_path / "out" / "V0001.jpg")
    with Image.open(saved) as written:
        assert written.format == "JPEG" and written.size == picture.size


@pytest.mark.parametrize("reduced", [False, True], ids=["original image", "half-size copy with size="])
def test_contour_lies_on_the_predicted_mask_border(reduced):
    case = synth_case(4, (400, 300))
    height, width = case.disc.shape
    image = case.image[::2, ::2] if reduced else case.image
    picture = draw_overlay(image, disc=case.disc, size=(width, height), text=False)
    scale = picture.width / width
    contour = coloured(picture, PREDICTION)
    assert len(contour) > 100
    border = case.disc ^ ndimage.binary_erosion(case.disc)
    to_border = ndimage.distance_transform_edt(~border)  # original pixels
    rows, columns = np.round(to_original(contour, scale)).astype(int).T
    assert to_border[rows.clip(0, height - 1), columns.clip(0, width - 1)].max() <= 2
    # and the whole border is drawn: every border pixel has contour within 2 original pixels
    painted = np.zeros(picture.size[::-1], bool)
    painted[tuple(contour.T)] = True
    to_contour = ndimage.distance_transform_edt(~painted) / scale
    border_rows, border_columns = np.round((np.argwhere(border) + 0.5) * scale - 0.5).astype(int).T
    assert to_contour[border_rows, border_columns].max() <= 2


def test_crosses_lie_on_the_fovea_points_and_none_is_drawn_for_no_fovea():
    case = synth_case(2, (640, 480))
    predicted, truth = (210.0, 260.0), (400.0, 150.0)
    picture = draw_overlay(case.image, fovea=predicted, truth_fovea=truth, text=False)
    scale = picture.width / 640
    for colour, point in ((PREDICTION, predicted), (TRUTH, truth)):
        centre = to_original(coloured(picture, colour).mean(axis=0), scale)[::-1]  # (x, y)
        assert centre == pytest.approx(point, abs=1.5)
    for nothing in (None, (0, 0)):
        assert len(coloured(draw_overlay(case.image, fovea=nothing, text=False), PREDICTION)) == 0


# -- the gallery -------------------------------------------------------------------------------


def submission_with_errors(truth: Path, folder: Path, shift: int) -> Path:
    """Every task answered, with a disc shifted by ``shift`` px and the fovea off by 10-30 px."""
    (folder / "Disc_Segmentation").mkdir(parents=True)
    rows = [line.split(",") for line in (truth / "labels.csv").read_text().split()[1:]]
    risk, fovea = ["FileName,PM Risk"], ["FileName,Fovea_X,Fovea_Y"]
    for i, (file, label, x, y) in enumerate(rows):
        name = Path(file).stem
        risk.append(f"{file},{abs(int(label) - (0.9 if i == 3 else 0.2)):.2f}")  # case 3 confidently wrong
        fovea.append(f"{file},{float(x) + 10 + 3 * i},{float(y)}")
        mask = np.asarray(Image.open(truth / "Disc_Masks" / f"{name}.bmp"))
        Image.fromarray(np.roll(mask, shift + i, axis=1)).save(folder / "Disc_Segmentation" / f"{name}.bmp")
    (folder / "Classification_Results.csv").write_text("\n".join(risk) + "\n")
    (folder / "Fovea_Localization_Results.csv").write_text("\n".join(fovea) + "\n")
    return folder


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    """A leaderboard of two submissions on a synthetic PALM example (images, labels, masks)."""
    root = tmp_path_factory.mktemp("gallery")
    truth = write_palm_example(root / "example", count=8, size=(320, 300), seed=3)
    submission_with_errors(truth, root / "subs" / "alpha", shift=2)
    submission_with_errors(truth, root / "subs" / "beta team", shift=6)
    build(root / "subs", truth, root / "board", progress=False)
    return root / "board"


def links(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', page)


def test_gallery_shows_the_worst_cases_with_existing_pictures_and_no_external_reference(board):
    page = (board / "leaderboard.html").read_text()
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<link|@import|url\(|//", re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page))
    files = [link for link in links(page) if not link.startswith("data:")]
    thumbnails = [link for link in files if link.endswith("_thumb.jpg")]
    assert len(thumbnails) == 2 * 3 * 6  # two submissions, three tasks, six worst cases each
    for link in files:
        assert (board / link.replace("%20", " ")).is_file(), link
    with Image.open(board / thumbnails[0].replace("%20", " ")) as thumbnail:
        assert max(thumbnail.size) <= 200
    alpha = page[page.index("Cases: alpha"):page.index("Cases: beta team")]
    worst_disc = re.findall(r"Dice ([0-9.]+)</figcaption>", alpha)
    assert worst_disc == sorted(worst_disc, key=float) and len(worst_disc) == 6
    assert "P30004" in alpha[alpha.index("Classification:"):].split("</figure>")[0]  # the confidently wrong one first
    assert alpha.count("<tr><td>") == 8 and "table class='sortable'" in alpha and "<script>" in page


def test_gallery_from_ground_truth_without_images_needs_the_images_folder(tmp_path):
    example = write_palm_example(tmp_path / "example", count=4, size=(200, 180), seed=5)
    truth = tmp_path / "truth"
    shutil.copytree(example / "Disc_Masks", truth / "Disc_Masks")
    shutil.copy(example / "labels.csv", truth)
    submission_with_errors(example, tmp_path / "subs" / "alpha", shift=3)
    build(tmp_path / "subs", truth, tmp_path / "plain", progress=False)
    assert not (tmp_path / "plain" / "gallery").exists()
    assert "--images" in (tmp_path / "plain" / "leaderboard.html").read_text()
    build(tmp_path / "subs", truth, tmp_path / "board", progress=False, images=example / "images")
    assert len(list((tmp_path / "board" / "gallery" / "alpha").glob("*_thumb.jpg"))) == 4


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_gallery_page_renders_in_a_headless_browser_without_network(board, tmp_path):
    shot = tmp_path / "page.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
         '--host-resolver-rules=MAP * ~NOTFOUND', f"--screenshot={shot}", "--window-size=1280,2000",
         (board / "leaderboard.html").as_uri()],
        check=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    fundus = (red > 120) & (green < 110) & (blue < 70) & (red > 2 * green)  # the thumbnails' orange retina
    assert fundus.sum() > 10_000, "the gallery's thumbnails did not load from disk"


def test_palm_predict_overlays_one_picture_per_image_with_its_aspect_ratio(tmp_path):
    from test_ensemble import random_checkpoint

    from palm_algos.cli import main as palm_algos_main

    images = tmp_path / "images"
    images.mkdir()
    for name, size in (("wide", (300, 200)), ("tall", (200, 330))):
        Image.fromarray(synth_case(1, size).image).save(images / f"{name}.png")
    models = [random_checkpoint(tmp_path / f"{task}.pt", task, input_size=32) for task in ("fovea", "disc")]
    out = tmp_path / "out"
    result = CliRunner().invoke(palm_algos_main, ["predict", "fovea", "disc", "--input", str(images), "--output", str(out),
                                                  "--model", str(models[0]), "--model", str(models[1]), "--overlays"])
    assert result.exit_code == 0, result.output
    assert (out / "Fovea_Localization_Results.csv").is_file() and (out / "Disc_Segmentation" / "wide.bmp").is_file()
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["tall.jpg", "wide.jpg"]
    with Image.open(out / "overlays" / "wide.jpg") as wide, Image.open(out / "overlays" / "tall.jpg") as tall:
        assert wide.size == (1024, 683) and tall.size == (621, 1024)
    plain = CliRunner().invoke(palm_algos_main, ["predict", "fovea", "--input", str(images), "--output", str(tmp_path / "plain"),
                                                 "--model", str(models[0])])
    assert plain.exit_code == 0 and not (tmp_path / "plain" / "overlays").exists()


def test_leaderboard_command_images_and_no_gallery_options(tmp_path):
    from palm_cli import main as palm

    example = write_palm_example(tmp_path / "example", count=4, size=(200, 180), seed=5)
    truth = tmp_path / "truth"  # label sheet and masks, no images
    shutil.copytree(example / "Disc_Masks", truth / "Disc_Masks")
    shutil.copy(example / "labels.csv", truth)
    submission_with_errors(example, tmp_path / "subs" / "alpha", shift=3)
    common = ["leaderboard", str(tmp_path / "subs"), "--ground-truth"]
    result = CliRunner().invoke(palm, [*common, str(truth), "--out", str(tmp_path / "board"), "--images", str(example / "images")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "board" / "gallery" / "alpha").glob("*_thumb.jpg"))) == 4
    result = CliRunner().invoke(palm, [*common, str(example), "--out", str(tmp_path / "none"), "--no-gallery"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "none" / "gallery").exists() and "gallery/" not in (tmp_path / "none" / "leaderboard.html").read_text()
