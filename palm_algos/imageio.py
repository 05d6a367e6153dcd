"""Reading fundus photographs and writing disc masks, in every format PALM users meet.

Images come back as RGB uint8 arrays together with their *original* size, so that a
prediction made on a reduced copy can always be mapped back to original pixels.

Every reader checks the size a header declares before it decodes a pixel: memory stays bounded
whatever a file claims (``MAX_PIXELS``, ``MAX_BYTES``). MetaImage (.mha) files are read here, not
by SimpleITK, so that a corrupt or truncated compressed stream is an error (SimpleITK's MetaIO
does not report a failed inflate) and a header cannot make the reader open a file outside the
image's own folder (``ElementDataFile``).
"""

from __future__ import annotations

import errno
import io
import math
import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from .atomic import write_bytes, write_file
from .errors import PalmError
from .formats import GC_IMAGE_SUFFIXES, IMAGE_SUFFIXES

# The largest image read: 50 M pixels (e.g. 8660 x 5774; fundus cameras give at most ~24 M) and
# 1 GiB of decoded pixel data. Decoding such an image and normalising it to RGB uint8 takes
# about 1.6 x its data at most (measured), under the containers' 4 GB; anything a header
# declares beyond it is refused before a pixel is decoded.
MAX_PIXELS = 50_000_000
MAX_BYTES = 1 << 30


class ImageError(PalmError):
    """An input file that cannot be used; the message names the file and the problem."""


class GeometryError(ImageError):
    """An image whose world geometry (origin, spacing, direction) cannot map pixels to world
    positions and back: not finite, a spacing <= 0, a singular direction."""


# The first bytes of the formats PIL reads, for files whose suffix says nothing (a JPEG named
# .jfif or .jpe, a PNG without a suffix); WebP is RIFF....WEBP, BMP is BM and a header size.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
_BMP_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)


def is_image(path: Path) -> bool:
    """Whether ``path`` is an image palm reads: by its suffix (``IMAGE_SUFFIXES``), else by its
    content. The one rule of prediction, training and the ground truth: a photograph is never
    left out for its name."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        if not path.is_file():  # a pipe or device is never opened: reading it would block
            return False
        with open(path, "rb") as f:
            head = f.read(18)
    except OSError:
        return False
    return (head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
            or (head[:2] == b"BM" and len(head) == 18 and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header alone."""
    path = Path(path)
    _check_suffix(path)
    if path.suffix.lower() == ".mha":
        header = _mha_header(path)
        return header.dims[0], header.dims[1]
    try:
        try:
            with _open_pil(path) as im:
                return im.size
        except (OSError, UnidentifiedImageError):
            if path.suffix.lower() not in GC_IMAGE_SUFFIXES:
                raise
            return _itk_size(path)  # a TIFF PIL cannot open (float, BigTIFF): let SimpleITK try
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise anything on a hostile file
        raise ImageError(f"{path}: cannot read image ({_why(exc)})") from None


def read_image(path: Path, min_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image as RGB uint8 (H, W, 3) and return it with its original (width, height).

    With ``min_side``, a JPEG is decoded at 1/2, 1/4 or 1/8 scale (PIL draft mode) as long as
    both sides stay >= ``min_side``: a model that needs 512 px never pays for 4288 px.
    """
    path = Path(path)
    _check_suffix(path)
    try:
        array = _read_without_pil(path)
        if array is not None:
            return _to_rgb_uint8(array, path), (array.shape[1], array.shape[0])
        with _open_pil(path) as im:
            _check_orientation(im, path)
            size = im.size
            if min_side and im.format == "JPEG":
                scale = min(size) / min_side
                if scale >= 2:
                    im.draft("RGB", (size[0] // int(min(scale, 8)), size[1] // int(min(scale, 8))))
            im.load()
            array = _pil_to_rgb(im, path)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise anything on a hostile file
        raise ImageError(f"{path}: cannot read image ({_why(exc)})") from None
    return array, size


def read_grey(path: Path) -> np.ndarray:
    """Read a mask or soft map as a 2-D uint8 array (colour is averaged)."""
    path = Path(path)
    _check_suffix(path)
    try:
        array = _read_without_pil(path)
        if array is None:
            with _open_pil(path) as im:
                im.load()
                if im.mode not in ("1", "L", "RGB", "I", "F") and not im.mode.startswith("I;16"):
                    im = im.convert("RGB")  # palette (P): colours, not indices; alpha dropped
                array = np.asarray(im)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise anything on a hostile file
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
    """PALM convention: 8-bit BMP (or PNG, by suffix), 0 = disc, 255 = background; written
    whole or not at all (``atomic``)."""
    path = Path(path)
    disc = np.asarray(disc)
    if disc.ndim != 2:
        raise ValueError(f"expected a 2-D disc mask, got shape {disc.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.where(disc, 0, 255).astype(np.uint8)).save(buffer, format=Image.registered_extensions()[path.suffix.lower()])
    write_bytes(path, buffer.getvalue())


def palm_mask_bmp(disc: np.ndarray) -> bytes:
    """The PALM mask (0 = disc, 255 = background) as the 8-bit greyscale BMP file Pillow
    writes, byte for byte, built straight from the pixels: a BMP is raw rows behind a header."""
    disc = np.asarray(disc)
    if disc.ndim != 2:
        raise ValueError(f"expected a 2-D disc mask, got shape {disc.shape}")
    h, w = disc.shape
    stride = (w + 3) // 4 * 4  # rows padded to 4 bytes, stored bottom-up
    rows = np.zeros((h, stride), np.uint8)
    rows[:, :w] = np.where(disc[::-1], 0, 255)
    palette = np.repeat(np.arange(256, dtype=np.uint8), 4).reshape(256, 4)
    palette[:, 3] = 0
    offset = 14 + 40 + palette.nbytes
    ppm = 3780  # 96 dpi, as Pillow stamps it
    header = struct.pack("<2sIHHI", b"BM", offset + rows.nbytes, 0, 0, offset) + \
        struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 0, rows.nbytes, ppm, ppm, 256, 256)
    return header + palette.tobytes() + rows.tobytes()


def write_mha_mask(disc: np.ndarray, path: Path, reference: Path | None = None) -> None:
    """grand-challenge convention: compressed uint8 MHA, 1 = disc, 0 = background.

    Origin, spacing and direction are copied from ``reference`` (the input image) when given.
    """
    import SimpleITK as sitk

    out = sitk.GetImageFromArray(np.asarray(disc, dtype=np.uint8))
    if reference is not None:
        origin, spacing, direction = image_geometry(Path(reference))
        out.SetOrigin(origin)
        out.SetSpacing(spacing)
        out.SetDirection(direction.ravel().tolist())
    _write_mha(out, Path(path))


def write_mha_image(rgb: np.ndarray, path: Path) -> None:
    """An RGB image as a vector MHA, the way grand-challenge stores uploaded photographs."""
    import SimpleITK as sitk

    _write_mha(sitk.GetImageFromArray(rgb, isVector=True), Path(path))


def _write_mha(image, path: Path) -> None:
    """SimpleITK writes the file under a temporary name (it leaves a cut file where the disk is
    full); it is read back whole, by this module's reader, before it takes ``path``."""
    import SimpleITK as sitk

    def write(temporary: Path) -> None:
        try:
            sitk.WriteImage(image, str(temporary), useCompression=True)
        except RuntimeError as exc:
            reason = re.search(r"Reason: (.+)", str(exc))
            raise OSError(errno.EIO, reason.group(1).strip() if reason else "SimpleITK could not write it") from None

    def check(temporary: Path) -> None:
        try:
            _mha_read(temporary)
        except ImageError as exc:
            raise OSError(errno.EIO, f"the written file does not read back whole ({str(exc).rsplit(': ', 1)[-1]})") from None

    write_file(path, write, check=check)


def pixel_to_world(image_path: Path, x: float, y: float) -> tuple[float, float]:
    """Map a pixel position to the image's world space (origin + direction (spacing * index))."""
    origin, spacing, direction = image_geometry(Path(image_path))
    world = np.array(origin) + direction @ (np.array(spacing) * np.array([x, y], dtype=float))
    return float(world[0]), float(world[1])


def world_to_pixel(image_path: Path, x: float, y: float) -> tuple[float, float]:
    """The inverse of ``pixel_to_world``: a world position (a grand-challenge Point) to pixels."""
    origin, spacing, direction = image_geometry(Path(image_path))
    index = np.linalg.solve(direction * np.array(spacing), np.array([x, y], dtype=float) - np.array(origin))
    return float(index[0]), float(index[1])


def image_geometry(path: Path) -> tuple[tuple[float, float], tuple[float, float], np.ndarray]:
    """(origin, spacing, 2x2 direction) of the image's first two axes: from the header of an
    .mha or of a TIFF SimpleITK reads; pixel space (0, 1, identity) for every other image,
    a TIFF that only PIL reads included (such files carry no world geometry)."""
    path = Path(path)
    origin, spacing, direction = np.zeros(2), np.ones(2), np.eye(2)
    suffix = path.suffix.lower()
    if suffix == ".mha":
        header = _mha_header(path)
        origin, spacing, direction = header.origin, header.spacing, header.direction
    elif suffix in GC_IMAGE_SUFFIXES:
        try:
            info = _itk_info(path)
        except RuntimeError:
            pass  # SimpleITK cannot identify it (a JPEG or GIF named .tif): PIL read it, pixel space
        else:
            dim = info.GetDimension()
            origin = np.array(info.GetOrigin(), dtype=float)
            spacing = np.array(info.GetSpacing(), dtype=float)
            direction = np.array(info.GetDirection(), dtype=float).reshape(dim, dim)
    origin, spacing, direction = np.asarray(origin, float)[:2], np.asarray(spacing, float)[:2], np.asarray(direction, float)[:2, :2]
    problem = geometry_problem(origin, spacing, direction)
    if problem:
        raise GeometryError(f"{path}: unusable image geometry: {problem} (origin {origin.tolist()}, spacing "
                            f"{spacing.tolist()}, direction {direction.ravel().tolist()})")
    return (float(origin[0]), float(origin[1])), (float(spacing[0]), float(spacing[1])), direction


def geometry_problem(origin, spacing, direction) -> str | None:
    """Why a geometry cannot map pixels to world positions and back, or None."""
    values = [np.asarray(v, float) for v in (origin, spacing, direction)]
    if not all(np.isfinite(v).all() for v in values):
        return "a value is not finite"
    if (values[1] <= 0).any():
        return "a spacing is not above 0"
    if abs(np.linalg.det(values[2])) < 1e-6:
        return "its direction matrix is singular (it maps the image onto a line or a point)"
    return None


# -- helpers ---------------------------------------------------------------------------------


def _check_suffix(path: Path) -> None:
    if not is_image(path):
        raise ImageError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(IMAGE_SUFFIXES)} (or a JPEG, PNG, GIF, BMP, TIFF or WebP by its content)"
        )


# EXIF Orientation values: how a viewer turns the stored pixels to show them
_ORIENTATIONS = {2: "mirrored", 3: "turned 180 degrees", 4: "mirrored upside down", 5: "mirrored and turned",
                 6: "turned 90 degrees clockwise", 7: "mirrored and turned", 8: "turned 90 degrees anticlockwise"}


def _check_orientation(im: Image.Image, path: Path) -> None:
    """Refuse a photograph whose EXIF Orientation tag turns it for display (issue 24, item 8).

    PALM positions and masks, like grand-challenge's, are in the stored pixel grid; a model
    would see such a photograph sideways to what every viewer shows. Turning it and mapping the
    results back is possible, but one line that says so keeps every result in stored pixels."""
    orientation = im.getexif().get(0x0112, 1)
    if orientation in _ORIENTATIONS:
        raise ImageError(f"{path}: EXIF orientation {orientation} ({_ORIENTATIONS[orientation]} for display): "
                         f"results are given in the stored pixel grid, which viewers show turned; store the "
                         f"pixels upright (e.g. exiftran -ai, or mogrify -auto-orient) and run it again")


def _why(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror  # "Permission denied", not "[Errno 13] Permission denied: '<the path again>'"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _read_without_pil(path: Path) -> np.ndarray | None:
    """The pixels of an .mha (read here) or of a TIFF SimpleITK reads (with its geometry, as
    grand-challenge writes them); None: the file is PIL's to read."""
    if path.suffix.lower() == ".mha":
        return _mha_read(path)
    if path.suffix.lower() in GC_IMAGE_SUFFIXES:
        return _itk_read_tiff(path)
    return None


def _itk_info(path: Path):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _itk_size(path: Path) -> tuple[int, int]:
    info = _itk_info(path)
    size = info.GetSize()
    _check_extent(path, size, info.GetNumberOfComponents(), _itk_item_size(info))
    return int(size[0]), int(size[1])


def _itk_item_size(info) -> int:
    """Bytes per component of the pixel type SimpleITK reports (8 when it cannot be told)."""
    import SimpleITK as sitk

    bits = re.search(r"(\d+)-bit", sitk.GetPixelIDValueAsString(info.GetPixelID()))
    return int(bits.group(1)) // 8 if bits else 8


def _itk_read_tiff(path: Path) -> np.ndarray | None:
    """A TIFF through SimpleITK, its declared size checked first; None where SimpleITK cannot
    read it (PIL may)."""
    import SimpleITK as sitk

    try:
        info = _itk_info(path)
    except RuntimeError:
        return None
    _check_extent(path, info.GetSize(), info.GetNumberOfComponents(), _itk_item_size(info))
    try:
        array = sitk.GetArrayFromImage(info.Execute())
    except RuntimeError:
        return None
    if array.ndim == 3 and array.shape[0] == 1 and array.shape[-1] not in (3, 4):
        array = array[0]  # a 2-D image stored as a single 3-D slice
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    return array


def _check_extent(path: Path, dims, channels: int = 1, item_size: int = 1) -> None:
    """Refuse, before anything is decoded, an image whose header declares more than
    ``MAX_PIXELS`` pixels or ``MAX_BYTES`` of pixel data."""
    dims = [int(d) for d in dims]
    pixels = math.prod(dims)
    nbytes = pixels * max(int(channels), 1) * int(item_size)
    if pixels > MAX_PIXELS or nbytes > MAX_BYTES:
        shape = " x ".join(map(str, dims)) + (f" x {channels} channels" if channels > 1 else "")
        raise ImageError(f"{path}: image too large: the header declares {shape} ({nbytes / 1e9:.2g} GB of pixels); "
                         f"the limit is {MAX_PIXELS // 1_000_000} M pixels and {MAX_BYTES >> 30} GiB")


def _open_pil(path: Path) -> Image.Image:
    """``Image.open`` (lazy: the header only) that refuses a declared size past the limit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is lower
        try:
            im = Image.open(path)
        except Image.DecompressionBombError as exc:  # PIL's own limit (a few times ours): the header alone
            declared = re.search(r"\((\d+) pixels\)", str(exc))
            shown = f"{int(declared.group(1)) / 1e6:.0f} M pixels" if declared else "more pixels than PIL allows"
            raise ImageError(f"{path}: image too large: the header declares {shown}; the limit is "
                             f"{MAX_PIXELS // 1_000_000} M pixels") from None
    try:
        _check_extent(path, im.size, len(im.getbands()), 4 if im.mode in ("I", "F") else 1)
    except ImageError:
        im.close()
        raise
    return im


# -- MetaImage (.mha) --------------------------------------------------------------------------

_MET_TYPES = {"MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2", "MET_INT": "i4",
              "MET_UINT": "u4", "MET_LONG": "i4", "MET_ULONG": "u4", "MET_LONG_LONG": "i8",
              "MET_ULONG_LONG": "u8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8"}
_MHA_HEADER_LIMIT = 1 << 16  # a MetaImage header is a few hundred bytes of "Key = Value" lines


class _MhaHeader(NamedTuple):
    dims: tuple[int, ...]  # x, y[, z]
    channels: int
    dtype: np.dtype
    compressed: bool
    compressed_size: int | None
    data_file: Path
    offset: int  # where the pixel data starts in data_file (-1: at its end)
    origin: np.ndarray
    spacing: np.ndarray
    direction: np.ndarray  # dims x dims, direction[i, j]: axis j's component i

    @property
    def nbytes(self) -> int:
        return math.prod(self.dims) * self.channels * self.dtype.itemsize


def mha_fields(path: Path) -> tuple[dict[str, str], int]:
    """A MetaImage header's "Key = Value" lines up to ElementDataFile (lower-case keys, values
    unchecked) and where the pixel data start; reads at most 64 KiB, decodes nothing."""
    try:
        with open(path, "rb") as f:
            head = f.read(_MHA_HEADER_LIMIT)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read image ({exc.strerror or _why(exc)})") from None
    fields: dict[str, str] = {}
    pos = 0
    while "elementdatafile" not in fields:
        end = head.find(b"\n", pos)
        if end < 0:
            raise ImageError(f"{path}: not a MetaImage (.mha) file (no ElementDataFile line in its header)")
        line = head[pos:end].decode("latin-1").strip()
        pos = end + 1
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not line.isascii() or not line.replace("\t", " ").isprintable():
            raise ImageError(f"{path}: not a MetaImage (.mha) file (binary data where its text header should be)")
        if not sep or not key.strip().replace("_", "").isalnum():
            raise ImageError(f"{path}: not a MetaImage (.mha) file (header line {line[:40]!r})")
        fields[key.strip().lower()] = value.strip()
    return fields, pos


def _mha_header(path: Path) -> _MhaHeader:
    """Parse and check a MetaImage header: 2-D (or one 3-D slice), a known element type, a size
    within the limits, pixel data LOCAL or in a file beside the header."""
    fields, pos = mha_fields(path)

    def bad(what: str) -> ImageError:
        return ImageError(f"{path}: unusable MetaImage header: {what}")

    def numbers(key: str, kind=float, count: int | None = None, default=None):
        if key not in fields:
            if default is None:
                raise bad(f"no {key} line")
            return default
        try:
            values = [kind(v) for v in fields[key].split()]
        except ValueError:
            raise bad(f"{key} = {fields[key][:40]!r} is not {count or 'a list of'} number(s)") from None
        if count is not None and len(values) != count:
            raise bad(f"{key} = {fields[key][:40]!r} should hold {count} number(s)")
        return values

    def flag(key: str) -> bool:
        return fields.get(key, "false").lower() in ("true", "1", "yes")

    ndims = numbers("ndims", int, 1)[0]
    if not 2 <= ndims <= 3:
        raise bad(f"NDims = {ndims}; expected a 2-D image")
    dims = tuple(numbers("dimsize", int, ndims))
    if min(dims) < 1:
        raise bad(f"DimSize = {fields['dimsize']!r} has an empty side")
    if ndims == 3 and dims[2] != 1:
        raise ImageError(f"{path}: a 3-D volume ({' x '.join(map(str, dims))} voxels); expected a 2-D image")
    channels = numbers("elementnumberofchannels", int, 1, [1])[0]
    if not 1 <= channels <= 4:
        raise bad(f"ElementNumberOfChannels = {channels}; expected 1 (grey) to 4 (RGBA)")
    element = fields.get("elementtype", "").upper().removesuffix("_ARRAY")
    if element not in _MET_TYPES:
        raise bad(f"ElementType {fields.get('elementtype', '(none)')!r} is not supported "
                  f"(use one of {', '.join(_MET_TYPES)})")
    if "binarydata" in fields and not flag("binarydata"):
        raise bad("BinaryData = False (pixel values as text) is not supported")
    order = ">" if flag("binarydatabyteordermsb") or flag("elementbyteordermsb") else "<"
    dtype = np.dtype(order + _MET_TYPES[element])
    _check_extent(path, dims, channels, dtype.itemsize)

    source = fields["elementdatafile"]
    if source.upper() == "LOCAL":
        data_file, offset = Path(path), pos
    else:
        if (not source or "/" in source or "\\" in source or source in (".", "..") or source.upper().startswith("LIST")
                or "%" in source or " " in source):
            raise bad(f"ElementDataFile = {source[:80]!r}: only LOCAL or the name of a file beside the header is read")
        data_file = Path(path).parent / source
        if data_file.resolve().parent != Path(path).resolve().parent:
            raise bad(f"ElementDataFile = {source!r} leads outside the image's folder (a link); only LOCAL "
                      f"or a file beside the header is read")
        offset = numbers("headersize", int, 1, [0])[0]
        if offset < -1:
            raise bad(f"HeaderSize = {offset}")
    compressed = flag("compresseddata")
    compressed_size = numbers("compresseddatasize", int, 1, [-1])[0] if compressed else -1
    if compressed and offset == -1:
        raise bad("HeaderSize = -1 with compressed data")

    origin = numbers("offset", float, ndims, None) if "offset" in fields else numbers(
        "origin" if "origin" in fields else "position", float, ndims, [0.0] * ndims)
    spacing = numbers("elementspacing" if "elementspacing" in fields else "elementsize", float, ndims, [1.0] * ndims)
    matrix_key = next((k for k in ("transformmatrix", "rotation", "orientation") if k in fields), None)
    matrix = numbers(matrix_key, float, ndims * ndims) if matrix_key else np.eye(ndims).ravel().tolist()
    direction = np.array(matrix, dtype=float).reshape(ndims, ndims).T  # MetaIO stores it column by column
    return _MhaHeader(dims, channels, dtype, compressed, compressed_size if compressed_size >= 0 else None,
                      data_file, offset, np.array(origin, float), np.array(spacing, float), direction)


def _mha_read(path: Path) -> np.ndarray:
    """The pixels of an .mha as (H, W) or (H, W, C), checked against its header: raw data
    must be complete; compressed data must inflate, pass its checksum and give exactly the
    declared size (never more is decompressed than that)."""
    header = _mha_header(path)
    nbytes = header.nbytes
    data = bytearray(nbytes)
    try:
        with open(header.data_file, "rb") as f:
            if header.offset == -1:  # the data are the last nbytes of the file
                f.seek(0, 2)
                f.seek(max(f.tell() - nbytes, 0))
            else:
                f.seek(header.offset)
            if header.compressed:
                _inflate_into(f, data, header.compressed_size, path)
            else:
                got = f.readinto(data)
                if got < nbytes:
                    raise ImageError(f"{path}: truncated: {got} of the {nbytes} bytes of pixel data its header declares")
    except FileNotFoundError:
        raise ImageError(f"{path}: its ElementDataFile {header.data_file.name!r} is missing") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read image ({exc.strerror or _why(exc)})") from None
    shape = header.dims[::-1] + ((header.channels,) if header.channels > 1 else ())
    array = np.frombuffer(data, dtype=header.dtype).reshape(shape)
    if len(header.dims) == 3:
        array = array[0]  # one slice (checked in the header)
    return array


def _inflate_into(f, data: bytearray, compressed_size: int | None, path: Path, chunk: int = 1 << 20) -> None:
    """Inflate the zlib (or gzip) stream at ``f`` into ``data``, which it must fill exactly."""
    inflater = zlib.decompressobj(47)  # 32 + 15: zlib or gzip header, as MetaIO writes and reads
    view, filled, left = memoryview(data), 0, compressed_size
    try:
        while not inflater.eof:
            if inflater.unconsumed_tail:
                block = inflater.unconsumed_tail
            else:
                block = f.read(chunk if left is None else min(chunk, left))
                if left is not None:
                    left -= len(block)
                if not block:
                    break
            room = len(data) - filled
            out = inflater.decompress(block, max(room, 1))
            if len(out) > room:
                raise ImageError(f"{path}: more pixel data than its header declares "
                                 f"({len(data)} bytes); the file is corrupt or its DimSize wrong")
            view[filled : filled + len(out)] = out
            filled += len(out)
    except zlib.error as exc:
        raise ImageError(f"{path}: corrupt compressed pixel data (zlib: {exc})") from None
    if filled < len(data):
        raise ImageError(f"{path}: truncated: its compressed pixel data give {filled} of the {len(data)} bytes "
                         f"its header declares")
    if not inflater.eof:
        raise ImageError(f"{path}: truncated: its compressed pixel data end before their checksum")


def _pil_to_rgb(im: Image.Image, path: Path) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _to_rgb_uint8(np.asarray(im), path)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, im)
    return np.asarray(im.convert("RGB"))


def _rescale_to_uint8(array: np.ndarray) -> np.ndarray:
    """0..1 (floats, binary maps) -> x255; 0..255 kept; any other range stretched to 0..255;
    NaN and infinity count as 0. Works on one float32 copy: a decoded image may be large."""
    with np.errstate(all="ignore"):  # float64 beyond float32's range: infinity, then 0
        work = np.array(array, dtype=np.float32)
        bad = ~np.isfinite(work)
        if bad.any():
            work[bad] = 0
        del bad
        lo, hi = float(work.min()), float(work.max())
        if hi <= lo and not (0 <= lo <= 255):
            return np.zeros(work.shape, np.uint8)
        if lo >= 0 and hi <= 1:
            work *= 255
        elif lo < 0 or hi > 255:
            scale = 255.0 / (hi - lo)
            work *= np.float32(scale)
            work -= np.float32(lo * scale)
        np.rint(work, out=work)
        np.clip(work, 0, 255, out=work)
        return work.astype(np.uint8)


def _to_rgb_uint8(array: np.ndarray, path: Path | None) -> np.ndarray:
    if array.ndim == 2:
        if array.dtype != np.uint8:
            array = _rescale_to_uint8(array)  # before the channels are repeated: a third of the memory
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
