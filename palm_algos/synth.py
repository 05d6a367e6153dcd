"""Synthetic fundus photographs with known label, fovea and disc: the bundled example data.

Not realistic, only recognisable: a round field of view, a bright disc with vessels leaving
it, a dark fovea about 2.5 disc diameters away, and for pathologic myopia the signs a grader
looks for, strong enough that a small network learns them in a few CPU minutes (the demo's
quick models must score clearly above chance): a pale crescent of atrophy on the temporal side
of the disc, a tessellated background and pale patches of chorioretinal atrophy. Everything is
decided by the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import PalmError

MIN_SIDE = 32


@dataclass
class SynthCase:
    name: str
    image: np.ndarray  # (H, W, 3) uint8
    label: int
    fovea: tuple[float, float] | None  # None: not visible
    disc: np.ndarray  # (H, W) bool, all False when no disc is visible


def synth_case(seed: int, size: tuple[int, int] = (512, 512), label: int | None = None,
               show_disc: bool = True, show_fovea: bool = True) -> SynthCase:
    w, h = (int(v) for v in size)
    if min(w, h) < MIN_SIDE:
        raise PalmError(f"synthetic images need both sides >= {MIN_SIDE} px, got {w}x{h}")
    rng = np.random.default_rng(seed)
    label = int(rng.random() < 0.5) if label is None else label
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    scale = min(w, h)
    cx, cy = w / 2 + rng.normal(0, 0.02) * w, h / 2 + rng.normal(0, 0.02) * h
    field_r = 0.48 * scale
    r_field = np.hypot(xx - cx, yy - cy) / field_r

    left_eye = rng.random() < 0.5
    disc_r = scale * rng.uniform(0.06, 0.08)
    dx = (-1 if left_eye else 1) * scale * rng.uniform(0.15, 0.2)
    disc_x, disc_y = cx + dx, cy + rng.normal(0, 0.03) * scale
    fovea_x, fovea_y = disc_x - np.sign(dx) * 2.5 * 2 * disc_r, disc_y + rng.normal(0.03, 0.01) * scale

    base = np.array([0.75, 0.33, 0.13]) * rng.uniform(0.8, 1.1)
    shade = np.clip(1.1 - 0.45 * r_field**2, 0, None)
    img = shade[..., None] * base

    if label:  # tessellation: low-frequency pale/dark mottling
        blobs = _smooth_noise(rng, h, w, cells=12)
        img *= (1 + 0.35 * blobs)[..., None]

    fovea_d = np.hypot(xx - fovea_x, yy - fovea_y) / (1.2 * disc_r)
    img *= (1 - 0.45 * np.exp(-fovea_d**2))[..., None]

    _draw_vessels(img, rng, xx, yy, disc_x, disc_y, disc_r, scale)

    ex, ey = disc_r * rng.uniform(0.9, 1.0), disc_r * rng.uniform(1.0, 1.15)
    disc_d = ((xx - disc_x) / ex) ** 2 + ((yy - disc_y) / ey) ** 2
    disc = disc_d <= 1.0
    if show_disc:
        glow = np.exp(-np.clip(disc_d - 1, 0, None) * 3)[..., None]
        img = img * (1 - glow) + glow * np.array([0.98, 0.9, 0.62])
    else:
        disc = np.zeros_like(disc)
    if label:  # peripapillary atrophy: a pale crescent on the temporal side (towards the fovea)
        halo = (disc_d > 1.2) & (disc_d < rng.uniform(3.5, 6.0)) & ((xx - disc_x) * np.sign(-dx) > -0.3 * disc_r)
        img[halo] = img[halo] * 0.4 + np.array([0.9, 0.8, 0.65]) * 0.6
        for _ in range(rng.integers(2, 5)):  # patchy atrophy around the macula, sparing the fovea
            angle, dist = rng.uniform(0, 2 * np.pi), disc_r * rng.uniform(1.6, 3.0)
            px, py = fovea_x + dist * np.cos(angle), fovea_y + dist * np.sin(angle)
            patch = np.hypot((xx - px) / rng.uniform(0.5, 1.0), (yy - py) / rng.uniform(0.5, 1.0)) / disc_r
            fade = np.exp(-np.clip(patch - 1, 0, None) * 4)[..., None] * 0.55
            img = img * (1 - fade) + fade * np.array([0.92, 0.78, 0.55])

    img += rng.normal(0, 0.015, img.shape)
    img[r_field > 1] = 0
    inside = 0 <= fovea_x < w and 0 <= fovea_y < h
    if not show_fovea or not inside or r_field[int(fovea_y), int(fovea_x)] > 1:
        fovea = None  # hidden, or outside the image or the field of view
    else:
        fovea = (float(fovea_x), float(fovea_y))
    image = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    prefix = "P" if label else ("H" if rng.random() < 0.15 else "N")
    return SynthCase(f"{prefix}{seed:04d}", image, label, fovea, disc & (r_field <= 1))


def write_palm_example(out: Path, count: int = 24, size: tuple[int, int] = (512, 512),
                       seed: int = 0) -> Path:
    """A small PALM-release-shaped folder: images, fovea table, Disc_Masks/*.bmp.

    Every 12th case shows no disc and every 16th no fovea, as PALM's own data does.
    """
    if count < 1:
        raise PalmError(f"count must be at least 1, got {count}")
    out = Path(out)
    images, masks = out / "images", out / "Disc_Masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    rows = ["imgName,Label,Fovea_X,Fovea_Y"]
    for i in range(count):
        case = synth_case(seed * 10_000 + i + 1, size, label=i % 2,
                          show_disc=(i % 12 != 11), show_fovea=(i % 16 != 15))
        Image.fromarray(case.image).save(images / f"{case.name}.jpg", quality=92)
        Image.fromarray(np.where(case.disc, 0, 255).astype(np.uint8)).save(masks / f"{case.name}.bmp")
        x, y = case.fovea if case.fovea else (0.0, 0.0)
        rows.append(f"{case.name}.jpg,{case.label},{x:.2f},{y:.2f}")
    (out / "labels.csv").write_text("\n".join(rows) + "\n")
    return out


def _smooth_noise(rng, h, w, cells):
    coarse = rng.normal(0, 1, (cells, cells)).astype(np.float32)
    im = Image.fromarray(coarse, mode="F").resize((w, h), Image.BICUBIC)
    arr = np.asarray(im)
    return arr / (np.abs(arr).max() + 1e-6)


def _draw_vessels(img, rng, xx, yy, x0, y0, disc_r, scale):
    for k in range(rng.integers(6, 10)):
        angle = rng.uniform(0, 2 * np.pi)
        bend = rng.normal(0, 0.8)
        length = scale * rng.uniform(0.3, 0.5)
        width = disc_r * rng.uniform(0.06, 0.12)
        t = np.linspace(0, 1, 60)
        px = x0 + np.cos(angle + bend * t) * length * t
        py = y0 + np.sin(angle + bend * t) * length * t
        for x, y in zip(px, py):
            r = max(2.0 * width, 1.0)
            sl = (slice(max(int(y - r), 0), int(y + r) + 1), slice(max(int(x - r), 0), int(x + r) + 1))
            d = np.hypot(xx[sl] - x, yy[sl] - y)
            img[sl] *= (1 - 0.35 * np.exp(-((d / width) ** 2)))[..., None]
