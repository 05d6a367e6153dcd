"""Camera-independent geometry and colour: the fundus field of view.

Every fundus camera shows the retina as a lit disc (often cut by the image's top and bottom)
on a dark border, but cameras differ in where that disc lies, how large it is in pixels, and
in colour and brightness. A model that sees the field of view (FOV) at one fixed diameter,
with its colours (or its local contrast: ``local_contrast``) standardised inside it, sees every
camera alike.

``Frame`` is the box of the original image that fills the network's square input: the FOV's
bounding square (padded with black where it leaves the image), or, where no FOV is found,
the whole image squashed to a square (the models' path before FOVs). Every output is mapped
back through the same frame, so positions and masks stay in original pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GEOMETRIES = ("fov", "squash")  # a checkpoint's "geometry": FOV crop, or the whole image squashed
COLOURS = ("standardise", "local", "equalise", "none")  # a checkpoint's "colour": standardised in the
# FOV, its local contrast standardised (``local_contrast``), its grey levels ranked (``equalise``),
# or as decoded
LOCAL_SIGMA = 1 / 16  # of the image's side (the FOV's diameter): the scale of uneven illumination
FIND_SIDE = 256  # the FOV is found on a copy this size (longer side): fast, and a px is 1/256
FOV_LEVELS = (0.03, 0.06, 0.15, 0.3)  # lit thresholds tried, as shares from the border's black to the bright
FOV_FIT = 0.95  # the least intersection over union of a found circle and the lit region it explains
STRAIGHT = 0.15  # a border row or column longer than this share of the side is a straight cut
LIT = 0.15  # a pixel is lit when its brightest channel exceeds this share of the bright level


@dataclass(frozen=True)
class Frame:
    """The box (left, top, width, height, in original pixels) that the model's square input
    shows, of an image of original ``size`` (w, h); ``fov`` tells whether it is a found FOV."""

    left: float
    top: float
    width: float
    height: float
    size: tuple[int, int]
    fov: bool = False

    @classmethod
    def whole(cls, size: tuple[int, int]) -> "Frame":
        return cls(0.0, 0.0, float(size[0]), float(size[1]), (int(size[0]), int(size[1])))

    def normalised(self, x: float, y: float) -> tuple[float, float]:
        """Original pixel (x, y) -> (u, v) in [0, 1] of the input (pixel centres at integers)."""
        return ((x + 0.5 - self.left) / self.width, (y + 0.5 - self.top) / self.height)

    def original(self, u: float, v: float) -> tuple[float, float]:
        """The inverse of ``normalised``."""
        return (u * self.width + self.left - 0.5, v * self.height + self.top - 0.5)

    def in_view(self, x: float, y: float) -> bool:
        u, v = self.normalised(x, y)
        return 0 <= u <= 1 and 0 <= v <= 1


def as_frame(frame_or_size) -> Frame:
    """A Frame as it is, or an original (w, h) size as the whole-image frame."""
    return frame_or_size if isinstance(frame_or_size, Frame) else Frame.whole(frame_or_size)


def lit(brightest: np.ndarray) -> np.ndarray:
    """Where a photograph is lit: its brightest channel ``brightest`` (any shape) above
    ``LIT`` of the bright level (its 95th percentile), and above the sensor's black."""
    level = np.percentile(brightest, 95) if brightest.size else 0.0
    return brightest > max(4.0, LIT * level)


def find_fov(rgb: np.ndarray) -> tuple[float, float, float] | None:
    """The field of view as a circle (cx, cy, radius) in ``rgb``'s pixels, or None.

    The lit region is thresholded on the brightest channel at a few levels between the
    border's black and the retina's bright (a dim camera's vignetted rim, a grey border), and a
    circle is fitted to its border where that is no straight cut (the image edge, or a
    sensor's edge inside a padded frame: a FOV cut at top and bottom is found too); the level
    whose circle explains its lit region best wins. None where there is no dark border to fit
    (the photograph is all retina) or no circle explains the lit region.
    """
    h, w = rgb.shape[:2]
    step = max(1, round(max(h, w) / FIND_SIDE))
    small = rgb[::step, ::step].max(axis=2).astype(np.float32)
    bright, black = np.percentile(small, 95), np.percentile(small, 2)
    if bright < 8:
        return None  # a black picture
    fits = [_fit_circle(small > black + max(4.0, share * (bright - black))) for share in FOV_LEVELS]
    fits = [fit for fit in fits if fit is not None]
    if not fits:
        return None
    (cx, cy, radius), overlap = max(fits, key=lambda fit: fit[1])
    if overlap < FOV_FIT:
        return None  # no circle: rather the whole image than a wrong field
    return ((cx + 0.5) * step - 0.5, (cy + 0.5) * step - 0.5, radius * step)


def _fit_circle(lit_pixels: np.ndarray) -> tuple[tuple[float, float, float], float] | None:
    """A circle fitted to the border of the largest lit region, and how well it explains that
    region (intersection over union inside the box the region spans), or None."""
    from scipy import ndimage

    labels, count = ndimage.label(ndimage.binary_opening(lit_pixels, iterations=2))
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    field = ndimage.binary_fill_holes(labels == sizes.argmax())
    border = field & ~ndimage.binary_erosion(field)
    border[:2, :] = border[-2:, :] = border[:, :2] = border[:, -2:] = False  # the image edge is no FOV edge
    sh, sw = field.shape
    border[border.sum(1) > STRAIGHT * sw, :] = False  # nor is a straight cut: a sensor's edge inside a
    border[:, border.sum(0) > STRAIGHT * sh] = False  # padded frame
    ys, xs = np.nonzero(border)
    if len(xs) < 20:
        return None
    circle = None
    for _ in range(3):  # least squares (Kasa), then again without the points that fit worst
        a = np.stack([xs, ys, np.ones_like(xs)], 1).astype(np.float64)
        b = (xs.astype(np.float64) ** 2 + ys.astype(np.float64) ** 2)
        (p, q, r), *_ = np.linalg.lstsq(a, b, rcond=None)
        cx, cy = p / 2, q / 2
        radius = np.sqrt(max(r + cx * cx + cy * cy, 0.0))
        circle = (cx, cy, radius)
        residual = np.abs(np.hypot(xs - cx, ys - cy) - radius)
        keep = residual <= max(2.0, np.percentile(residual, 80))
        if keep.all() or keep.sum() < 20:
            break
        xs, ys = xs[keep], ys[keep]
    cx, cy, radius = circle
    if not (0.3 * min(sh, sw) <= radius <= 0.8 * max(sh, sw)) or not (0 <= cx < sw and 0 <= cy < sh):
        return None
    rows, cols = np.nonzero(field.any(1))[0], np.nonzero(field.any(0))[0]
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # the photograph: its edges cut the circle
    yy, xx = np.mgrid[box]
    disc = np.hypot(xx - cx, yy - cy) <= radius
    inside = field[box]
    return circle, (disc & inside).sum() / max(1, (disc | inside).sum())


def frame_for(rgb: np.ndarray, size: tuple[int, int], geometry: str) -> Frame:
    """The frame a model of ``geometry`` reads of a decoded image ``rgb`` (possibly reduced)
    whose original size is ``size``. The box is whole pixels of ``rgb``, so cropping is exact."""
    if geometry == "squash":
        return Frame.whole(size)
    circle = find_fov(rgb)
    if circle is None:
        return Frame.whole(size)
    cx, cy, radius = circle
    side = max(1, round(2 * radius))
    left, top = round(cx + 0.5 - side / 2), round(cy + 0.5 - side / 2)
    sx, sy = size[0] / rgb.shape[1], size[1] / rgb.shape[0]
    return Frame(left * sx, top * sy, side * sx, side * sy, (int(size[0]), int(size[1])), fov=True)


def crop(array: np.ndarray, frame: Frame) -> np.ndarray:
    """The part of ``array`` (H, W[, C], any scale of the original) that ``frame`` shows,
    padded with zeros where the box leaves the image."""
    h, w = array.shape[:2]
    sx, sy = w / frame.size[0], h / frame.size[1]
    left, top = round(frame.left * sx), round(frame.top * sy)
    right, bottom = left + max(1, round(frame.width * sx)), top + max(1, round(frame.height * sy))
    if left >= 0 and top >= 0 and right <= w and bottom <= h:
        return array[top:bottom, left:right]
    out = np.zeros((bottom - top, right - left) + array.shape[2:], dtype=array.dtype)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, w), min(bottom, h)
    if x1 > x0 and y1 > y0:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = array[y0:y1, x0:x1]
    return out


def paste(part: np.ndarray, frame: Frame) -> np.ndarray:
    """The inverse of ``crop`` at original size: ``part`` (the frame's box resampled to whole
    original pixels) placed in an original-size array of zeros, cut where the box leaves it."""
    w, h = frame.size
    left, top = round(frame.left), round(frame.top)
    out = np.zeros((h, w) + part.shape[2:], dtype=part.dtype)
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + part.shape[1], w), min(top + part.shape[0], h)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = part[y0 - top : y1 - top, x0 - left : x1 - left]
    return out


def standardise(image: np.ndarray, spread: float = 48.0) -> np.ndarray:
    """Colour standardised inside the field of view: each channel's lit pixels moved to mean
    128 and standard deviation ``spread`` (uint8 (H, W, 3) in and out). A dark camera, a
    bright one and a red-tinted one then look alike; the dark border stays dark."""
    pixels = image.reshape(-1, 3).astype(np.float32)
    inside = lit(pixels.max(axis=1))
    if inside.sum() < 16:
        return image
    return _spread(pixels, inside, spread).reshape(image.shape)


def local_contrast(image: np.ndarray, spread: float = 48.0) -> np.ndarray:
    """``standardise`` of the image less its local mean inside the field of view (a Gaussian
    of ``LOCAL_SIGMA`` of its side, the dark border left out of the mean): what differs
    between cameras and flashes at large scales (vignetting, an uneven or pale illumination,
    a colour cast) is gone, while the disc's rim against the retina around it stays (Graham's
    preprocessing for fundus photographs, at the scale of the disc). The mean is taken at an
    eighth of the resolution, where that Gaussian is smooth: 10x faster, the same to a grey level."""
    import torch
    import torch.nn.functional as F
    from torchvision.transforms.v2.functional import gaussian_blur

    pixels = image.astype(np.float32)
    inside = lit(pixels.max(axis=2))
    if inside.sum() < 16:
        return image
    h, w = inside.shape
    step = 8
    sigma = LOCAL_SIGMA * max(h, w) / step
    weighted = torch.from_numpy(np.concatenate([pixels * inside[..., None], inside[..., None]], axis=2))
    small = F.avg_pool2d(weighted.permute(2, 0, 1)[None], step, ceil_mode=True)
    small = gaussian_blur(small, [2 * math.ceil(3 * sigma) + 1] * 2, [sigma, sigma])
    mean = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    local = mean[..., :3] / np.maximum(mean[..., 3:], 1e-3)
    return _spread((pixels - local).reshape(-1, 3), inside.ravel(), spread).reshape(image.shape)


def equalise(image: np.ndarray, spread: float = 48.0) -> np.ndarray:
    """Each channel's lit pixels ranked, and the ranks laid on a normal curve of mean 128 and
    standard deviation ``spread`` (uint8 (H, W, 3) in and out). Whatever keeps the order of a
    channel's grey levels (a camera's tone curve, gains, a colour cast) leaves the output as it
    was, where ``standardise`` undoes only gains and offsets: a darker camera's gamma is undone,
    the levels it crushed together are not."""
    from scipy.special import ndtri

    inside = lit(image.max(axis=2).astype(np.float32))
    if inside.sum() < 16:
        return image
    out = np.zeros_like(image)
    for channel in range(3):
        levels = image[..., channel]
        counts = np.bincount(levels[inside], minlength=256).astype(np.float64)
        middle_rank = (np.cumsum(counts) - counts / 2) / counts.sum()  # in (0, 1) for every level present
        shown = np.clip(128 + spread * ndtri(np.clip(middle_rank, 1e-6, 1 - 1e-6)), 0, 255).astype(np.uint8)
        out[..., channel] = np.where(inside, shown[levels], 0)
    return out


def show_colours(image: np.ndarray, colour: str) -> np.ndarray:
    """``image`` (uint8 (H, W, 3)) as a model of ``colour`` (one of ``COLOURS``) sees it."""
    shows = {"standardise": standardise, "local": local_contrast, "equalise": equalise, "none": lambda same: same}
    return shows[colour](image)


def _spread(pixels: np.ndarray, inside: np.ndarray, spread: float) -> np.ndarray:
    """(N, 3) float pixels -> uint8, each channel's ``inside`` pixels at mean 128 and standard
    deviation ``spread``, the rest black."""
    mean, std = pixels[inside].mean(0), pixels[inside].std(0) + 1.0
    out = (pixels - mean) / std * spread + 128
    out[~inside] = 0
    return np.clip(out, 0, 255).astype(np.uint8)
