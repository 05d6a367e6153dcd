"""Reading fundus photographs and writing disc masks, in every format PALM users meet.

Images come back as RGB uint8 arrays together with their *original* size, so that a
prediction made on a reduced copy can always be mapped back to original pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import PalmError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".mha")
_ITK_SUFFIXES = (".mha", ".tif", ".tiff")


class ImageError(PalmError):
    """An input file that cannot be used; the message names the file and the problem."""


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header alone."""
    path = Path(path)
    _check_suffix(path)
    try:
        if path.suffix.lower() == ".mha":
            return _itk_size(path)
        try:
            with Image.open(path) as im:
                return im.size
        except (OSError, UnidentifiedImageError):
            if path.suffix.lower() not in _ITK_SUFFIXES:
                raise
            return _itk_size(path)  # a TIFF PIL cannot open (float, BigTIFF): let SimpleITK try
    except (OSError, UnidentifiedImageError, RuntimeError) as exc:
        raise ImageError(f"{path}: cannot read image ({_why(exc)})") from None


def read_image(path: Path, min_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image as RGB uint8 (H, W, 3) and return it with its original (width, height).

    With ``min_side``, a JPEG is decoded at 1/2, 1/4 or 1/8 scale (PIL draft mode) as long as
    both sides stay >= ``min_side``: a model that needs 512 px never pays for 4288 px.
    """
    path = Path(path)
    _check_suffix(path)
    try:
        if path.suffix.lower() in _ITK_SUFFIXES:
            try:
                array = _itk_read(path)
            except RuntimeError:
                if path.suffix.lower() == ".mha":
                    raise
                array = None  # a TIFF SimpleITK cannot read: let PIL try
            if array is not None:
                size = (array.shape[1], array.shape[0])
                return _to_rgb_uint8(array, path), size
        with Image.open(path) as im:
            size = im.size
            if min_side and im.format == "JPEG":
                scale = min(size) / min_side
                if scale >= 2:
                    im.draft("RGB", (size[0] // int(min(scale, 8)), size[1] // int(min(scale, 8))))
            im.load()
            array = _pil_to_rgb(im, path)
    except (OSError, UnidentifiedImageError, RuntimeError, SyntaxError) as exc:
        raise ImageError(f"{path}: cannot read image ({_why(exc)})") from None
    return array, size


def read_grey(path: Path) -> np.ndarray:
    """Read a mask or soft map as a 2-D uint8 array (colour is averaged)."""
    path = Path(path)
    _check_suffix(path)
    try:
        array = None
        if path.suffix.lower() in _ITK_SUFFIXES:
            try:
                array = _itk_read(path)
            except RuntimeError:
                if path.suffix.lower() == ".mha":
                    raise
        if array is None:
            with Image.open(path) as im:
                im.load()
                if im.mode not in ("1", "L", "RGB", "I", "F") and not im.mode.startswith("I;16"):
                    im = im.convert("RGB")  # palette (P): colours, not indices; alpha dropped
                array = np.asarray(im)
    except (OSError, UnidentifiedImageError, RuntimeError, SyntaxError) as exc:
        raise ImageError(f"{path}: cannot read mask ({_why(exc)})") from None
    if array.ndim == 3:
        array = array[..., :3].mean(axis=2)
    if array.ndim != 2:
        raise ImageError(f"{path}: expected a 2-D mask, got shape {array.shape}")
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype != np.uint8 or array.max(initial=0) <= 1:
        array = _rescale_to_uint8(array)  # also a 0/1 label map (grand-challenge MHA) -> 0/255
    return array


def write_palm_mask(disc: np.ndarray, path: Path) -> None:
    """PALM convention: 8-bit BMP (or PNG, by suffix), 0 = disc, 255 = background."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    disc = np.asarray(disc)
    if disc.ndim != 2:
        raise ValueError(f"expected a 2-D disc mask, got shape {disc.shape}")
    Image.fromarray(np.where(disc, 0, 255).astype(np.uint8)).save(path)


def write_mha_mask(disc: np.ndarray, path: Path, reference: Path | None = None) -> None:
    """grand-challenge convention: compressed uint8 MHA, 1 = disc, 0 = background.

    Origin, spacing and direction are copied from ``reference`` (the input image) when given.
    """
    import SimpleITK as sitk

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = sitk.GetImageFromArray(np.asarray(disc, dtype=np.uint8))
    if reference is not None and Path(reference).suffix.lower() in _ITK_SUFFIXES:
        ref = _itk_info(Path(reference))
        out.SetOrigin(ref.GetOrigin()[:2])
        out.SetSpacing(ref.GetSpacing()[:2])
        direction = np.array(ref.GetDirection()).reshape(ref.GetDimension(), -1)[:2, :2]
        out.SetDirection(direction.ravel().tolist())
    sitk.WriteImage(out, str(path), useCompression=True)


def write_mha_image(rgb: np.ndarray, path: Path) -> None:
    """An RGB image as a vector MHA, the way grand-challenge stores uploaded photographs."""
    import SimpleITK as sitk

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path), useCompression=True)


def pixel_to_world(image_path: Path, x: float, y: float) -> tuple[float, float]:
    """Map a pixel position to the image's world space (origin + spacing * index)."""
    if Path(image_path).suffix.lower() not in _ITK_SUFFIXES:
        return float(x), float(y)
    try:
        info = _itk_info(Path(image_path))
    except RuntimeError as exc:
        raise ImageError(f"{image_path}: cannot read image header ({_why(exc)})") from None
    dim = info.GetDimension()
    origin = np.array(info.GetOrigin(), dtype=float)
    spacing = np.array(info.GetSpacing(), dtype=float)
    direction = np.array(info.GetDirection(), dtype=float).reshape(dim, dim)
    index = np.zeros(dim)
    index[:2] = x, y
    world = origin + direction @ (spacing * index)
    return float(world[0]), float(world[1])


# -- helpers ---------------------------------------------------------------------------------


def _check_suffix(path: Path) -> None:
    if not is_image(path):
        raise ImageError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(IMAGE_SUFFIXES)}"
        )


def _why(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _itk_info(path: Path):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _itk_size(path: Path) -> tuple[int, int]:
    size = _itk_info(path).GetSize()
    return int(size[0]), int(size[1])


def _itk_read(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    if array.ndim == 3 and array.shape[0] == 1 and array.shape[-1] not in (3, 4):
        array = array[0]  # a 2-D image stored as a single 3-D slice
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    return array


def _pil_to_rgb(im: Image.Image, path: Path) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _to_rgb_uint8(np.asarray(im), path)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, im)
    return np.asarray(im.convert("RGB"))


def _rescale_to_uint8(array: np.ndarray) -> np.ndarray:
    """0..1 (floats, binary maps) -> x255; 0..255 kept; any other range stretched to 0..255."""
    array = np.nan_to_num(array.astype(np.float64))
    lo, hi = float(array.min()), float(array.max())
    if lo >= 0 and hi <= 1:
        return (array * 255).round().astype(np.uint8)
    if lo >= 0 and hi <= 255:
        return array.round().astype(np.uint8)
    if hi <= lo:
        return np.zeros(array.shape, np.uint8)
    return ((array - lo) * (255.0 / (hi - lo))).round().astype(np.uint8)


def _to_rgb_uint8(array: np.ndarray, path: Path | None) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageError(f"{path}: expected a 2-D grey or colour image, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = _rescale_to_uint8(array)
    return np.ascontiguousarray(array)
