"""Reading a predicted disc mask: which pixels are the disc, and the checks made before decoding.

The rule (docs/METRICS.md, "Optic disc segmentation"), per file:

1. PALM masks (BMP/PNG) are 0 = disc, 255 = background; grand-challenge masks (MHA/TIFF) are
   1 = disc, 0 = background (or 255 = disc).
2. A BMP/PNG whose pixel values are only 0 and 1 (a label array saved as it is: black to the
   eye) is a label map: 1 = disc, as label maps have it.
3. A disc covers a few percent of a fundus photograph. Where the pixels read as disc cover
   more than half of the image, the mask is taken to be inverted (white disc on black, a 0/1
   map with 0 = disc, an all-black mask meaning "no disc") and read the other way round.

Cases 2 and 3 are named in a warning, file by file; nothing is inverted silently.

Before any pixel is decoded: an MHA's pixel data must be in the file itself
(``ElementDataFile = LOCAL``: a header cannot point at another file, such as the ground
truth, which ``palm_algos.imageio`` would read when it lies beside the mask); and the header
must declare the ground truth mask's size (so a 200-byte file cannot claim gigabytes). The
pixels are then read by ``imageio.read_grey``, the one image reader: compressed MHA data must
inflate cleanly to exactly the declared size there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from palm_algos.errors import PalmError
from palm_algos.formats import MASK_SUFFIXES
from palm_algos.imageio import ImageError, image_size, mha_fields, read_grey

MAX_DISC_SHARE = 0.5  # a disc read as covering more of the image than this is an inverted mask
LABEL_MAP, INVERTED = "label map", "inverted"


class MaskError(PalmError):
    """A predicted mask that cannot be used; the message says why (the caller names the file)."""


@dataclass
class MaskRead:
    disc: np.ndarray  # bool (H, W)
    binary: bool  # the file held two levels only (0/255, or 0/1)
    note: str | None = None  # LABEL_MAP or INVERTED: read other than by the file's convention


def read_prediction(path: Path, dark: bool, shape: tuple[int, int]) -> MaskRead:
    """The disc of a predicted mask that must be ``shape`` (rows, columns); raise MaskError.

    ``dark``: the PALM convention (0 = disc); otherwise bright = disc (grand-challenge).
    """
    path = Path(path)
    height, width = shape
    declared = header_size(path)
    if declared != (width, height):
        raise MaskError(f"mask is {_size_text(declared)}, expected {width}x{height} (the image size)")
    try:
        grey = read_grey(path)
    except ImageError as exc:
        raise MaskError(f"cannot read the mask ({_reason(exc, path)})") from None
    if grey.shape != (height, width):
        raise MaskError(f"mask is {grey.shape[1]}x{grey.shape[0]}, expected {width}x{height} (the image size)")
    binary = np.count_nonzero(grey == 0) + np.count_nonzero(grey == 255) == grey.size
    note = None
    if dark and binary and _is_label_map(path):
        disc, note = grey >= 128, LABEL_MAP
    else:
        disc = grey < 128 if dark else grey >= 128
    if np.count_nonzero(disc) > MAX_DISC_SHARE * disc.size:
        disc, note = ~disc, INVERTED
    return MaskRead(disc, binary, note)


def header_size(path: Path) -> tuple[int, ...]:
    """(width, height[, depth...]) as the header declares it, without decoding pixels."""
    if path.suffix.lower() == ".mha":
        size = mha_size(path)
        return size[:2] if all(d == 1 for d in size[2:]) else size
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # only the header is read: the size is checked next, not trusted
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise MaskError(f"cannot read the mask ({_reason(exc, path)})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    try:
        return image_size(path)  # a TIFF PIL cannot open: SimpleITK reads its header
    except ImageError as exc:
        raise MaskError(f"cannot read the mask ({_reason(exc, path)})") from None


def mha_size(path: Path) -> tuple[int, ...]:
    """The DimSize of a MetaImage header whose pixel data are LOCAL (imageio's header reader;
    nothing decoded, nothing else checked yet: read_grey does that)."""
    try:
        fields, _ = mha_fields(path)
    except ImageError as exc:
        raise MaskError(f"cannot read the mask ({_reason(exc, path)})") from None
    source = fields["elementdatafile"]
    if source.upper() != "LOCAL":
        raise MaskError(f"the header's ElementDataFile names another file ({source!r}); "
                        "only pixel data inside the .mha file (ElementDataFile = LOCAL) is read")
    try:
        size = tuple(int(v) for v in fields.get("dimsize", "").split())
    except ValueError:
        raise MaskError(f"cannot read the mask (DimSize {fields.get('dimsize')!r} is not a list of whole numbers)") from None
    if len(size) < 2 or min(size) < 1:
        raise MaskError(f"cannot read the mask (DimSize {fields.get('dimsize')!r} does not describe a 2-D image)")
    return size


def _is_label_map(path: Path) -> bool:
    """Whether a BMP/PNG holds the values 0 and 1 only (a label array, not black and white)."""
    if path.suffix.lower() not in MASK_SUFFIXES:
        return False
    try:
        with Image.open(path) as im:
            if im.mode == "1":
                return False  # 1-bit: black and white to the eye
            if im.mode not in ("L", "RGB", "I", "F") and not im.mode.startswith("I;16"):
                im = im.convert("RGB")  # palette: the colours, as read_grey sees them
            extrema = im.getextrema()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return False
    high = max(e[1] for e in extrema) if isinstance(extrema[0], tuple) else extrema[1]
    return high == 1


def _size_text(size: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in size)


def _reason(exc: Exception, path: Path) -> str:
    """The cause alone: without the path (the caller names the file) or a second 'cannot read'."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.replace(f"{path}: ", "").replace(str(path), path.name)
    return re.sub(r"^cannot read (?:mask|image) \((.*)\)$", r"\1", text)
