"""Pictures of what the models found (and what the ground truth says) on the fundus photograph.

One picture per image, long side ``SIDE`` px: the disc as its contour, the fovea as a cross,
the PM risk as text; prediction in ``PREDICTION`` colour, ground truth in ``TRUTH`` colour
(blue against yellow: told apart with any colour vision; the truth's cross is also turned by
45 degrees, so two crosses on one spot stay distinct). Coordinates and masks are given in the
image's original pixels and scaled here, so callers never think about the picture's size.

numpy and Pillow only: the evaluation container, which has no torch, draws these too.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from .atomic import write_bytes
from .imageio import image_size, read_image

SIDE = 1024
JPEG_QUALITY = 85
PREDICTION = (255, 214, 0)  # yellow
TRUTH = (0, 150, 255)  # azure
TEXT = (255, 255, 255)


def draw_overlay(
    image: Path | str | np.ndarray,
    *,
    pm_risk: float | None = None,
    fovea: tuple[float, float] | None = None,
    disc: np.ndarray | None = None,
    truth_label: int | None = None,
    truth_fovea: tuple[float, float] | None = None,
    truth_disc: np.ndarray | None = None,
    dice: float | None = None,
    fovea_distance: float | None = None,
    size: tuple[int, int] | None = None,
    side: int = SIDE,
    text: bool = True,
) -> Image.Image:
    """The RGB picture of one image with whatever of prediction, truth and scores is given.

    ``image``: a file (decoded at a reduced scale where the picture allows) or an RGB/grey
    array. ``size``: the original (width, height) where the array is a reduced copy, so that
    ``fovea`` (x, y) and masks of any resolution still land in the right place. A fovea of
    None or (0, 0) means "no fovea" (PALM's convention) and draws nothing. ``text=False``
    leaves out the words (thumbnails, whose captions are in the page).
    """
    photo, size = _photo(image, size, side)
    scale = side / max(size)
    shape = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    picture = photo.convert("RGB").resize(shape, Image.BILINEAR)
    line = max(2, round(side / 400))
    for mask, colour in ((truth_disc, TRUTH), (disc, PREDICTION)):
        if mask is not None:
            _contour(picture, mask, colour, line)
    draw = ImageDraw.Draw(picture)
    for point, colour, turned in ((truth_fovea, TRUTH, True), (fovea, PREDICTION, False)):
        if point is not None and tuple(point) != (0, 0):
            centre = ((point[0] + 0.5) * scale - 0.5, (point[1] + 0.5) * scale - 0.5)  # pixel centres, as resize has them
            _cross(draw, centre, colour, arm=side / 40, width=line, turned=turned)
    if text:
        _caption(draw, side, pm_risk, fovea, disc, truth_label, truth_fovea, truth_disc, dice, fovea_distance)
    return picture


def save_overlay(picture: Image.Image, path: Path | str, quality: int = JPEG_QUALITY) -> Path:
    """Write the picture as a JPEG (folders made as needed); a 1024 px overlay is ~50-100 kB."""
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    return write_bytes(Path(path), buffer.getvalue())


def read_photo(path: Path | str, side: int = SIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """The image as RGB uint8 and its original (width, height), decoded no larger than a picture
    of ``side`` px needs (JPEG draft mode: 1/2, 1/4 or 1/8 scale while the long side stays >= side).
    Read once, it serves several pictures (a full overlay and its thumbnail)."""
    width, height = image_size(Path(path))
    return read_image(Path(path), min_side=math.ceil(side * min(width, height) / max(width, height)))


def _photo(image, size, side) -> tuple[Image.Image, tuple[int, int]]:
    """The photograph as a PIL image and its original (width, height)."""
    if not isinstance(image, np.ndarray):
        image, size = read_photo(image, side)
    photo = Image.fromarray(np.ascontiguousarray(image))
    return photo, tuple(size or photo.size)


def _contour(picture: Image.Image, mask: np.ndarray, colour, line: int) -> None:
    """Paint the border of ``mask`` (any resolution) as a band about 2 * ``line`` px wide.

    Only the disc's surroundings are scaled and filtered: a disc is a few percent of the image,
    and rank filters over the whole picture would cost ten times the rest of the drawing.
    """
    mask = np.asarray(mask, dtype=bool)
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return
    sx, sy = picture.width / mask.shape[1], picture.height / mask.shape[0]
    pad = line + 2
    box = (max(0, math.floor(columns[0] * sx) - pad), max(0, math.floor(rows[0] * sy) - pad),
           min(picture.width, math.ceil((columns[-1] + 1) * sx) + pad),
           min(picture.height, math.ceil((rows[-1] + 1) * sy) + pad))
    grey = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (box[2] - box[0], box[3] - box[1]), Image.BILINEAR, box=(box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy))
    grey = grey.point(lambda v: 255 if v >= 128 else 0)
    reach = 2 * line - 1  # odd filter size: the band reaches line - 1 px each side of the border
    band = ImageChops.subtract(grey.filter(ImageFilter.MaxFilter(reach)), grey.filter(ImageFilter.MinFilter(reach)))
    picture.paste(colour, box, mask=band)


def _cross(draw: ImageDraw.ImageDraw, centre, colour, arm: float, width: int, turned: bool) -> None:
    """A cross with a dark outline, visible on pale disc and dark background alike."""
    x, y = centre
    ends = ([(x - arm, y - arm), (x + arm, y + arm)], [(x - arm, y + arm), (x + arm, y - arm)]) if turned \
        else ([(x - arm, y), (x + arm, y)], [(x, y - arm), (x, y + arm)])
    for fill, extra in (((0, 0, 0), 2), (colour, 0)):
        for segment in ends:
            draw.line(segment, fill=fill, width=width + extra)


def _caption(draw, side, pm_risk, fovea, disc, truth_label, truth_fovea, truth_disc, dice, fovea_distance) -> None:
    """Top-left, where a fundus photograph is black: the words are also the legend's colours."""
    lines = []
    if pm_risk is not None or fovea is not None or disc is not None:
        lines.append(("prediction" + (f"   PM risk {pm_risk:.2f}" if pm_risk is not None else ""), PREDICTION))
    if truth_label is not None or truth_fovea is not None or truth_disc is not None:
        label = {None: "", 0: "   not PM (label 0)", 1: "   PM (label 1)"}[None if truth_label is None else int(truth_label)]
        lines.append(("truth" + label, TRUTH))
    scores = [f"Dice {dice:.3f}" if dice is not None else "",
              f"fovea distance {fovea_distance:.1f} px" if fovea_distance is not None else ""]
    if any(scores):
        lines.append(("   ".join(s for s in scores if s), TEXT))
    font = ImageFont.load_default(size=max(10, side // 36))
    y = side // 80
    for words, colour in lines:
        draw.text((side // 80, y), words, fill=colour, font=font, stroke_width=max(1, side // 400), stroke_fill=(0, 0, 0))
        y += round(font.size * 1.3)
