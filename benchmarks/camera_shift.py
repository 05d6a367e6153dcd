"""The fovea or disc fold models of a cross-validation run on their held-out photographs as
other cameras would show them: the same eyes, another frame or another colour.

Only IDRiD has fovea labels (and only Drishti-GS1 and DRIONS disc masks), so a camera a model
never saw cannot be scored directly. This scores the next best thing: each fold model on its own
held-out images after a camera change that keeps the truth known (the fovea, or the disc mask,
moves with the pixels):

- ``as-shot``: the photograph as decoded (the cross-validation's own score);
- ``square``: padded with black to a square, the whole field of view inside the frame, as
  cameras with a square sensor show it (PALM's 1444x1444 and 2124x2056 photographs);
- ``dim``: darker (gamma 1.6), warmer (channel gains 1.05, 0.85, 0.7) and JPEG quality 60;
- ``disc-centred`` (the fovea only: it needs the case's fovea and disc): a camera aimed near the
  disc, as disc-centred protocols shoot (Drishti-GS1, some of PALM's photographs): a round field
  centred a quarter of the way from the disc to the fovea, 1.25 times their distance in radius,
  where the photograph has no retina black; the fovea lies 0.6 of the radius from the centre.

Fovea distances are reported as shares of the field of view's diameter (IDRiD's FOV: 3400 of
4288 px), which no change of frame alters, and as the PALM normalisation of the changed image;
the disc as Dice, at the scale the model reads the photograph.

``cross_validate.py --camera-shift`` adds these scores to its record (with ``--reuse``, from fold
models already trained), e.g.

    python benchmarks/cross_validate.py --recipe cv-fovea-disc-sources-local --data-root ../shared/data \\
        --reuse --camera-shift --out docs/results/camera-shift-fovea-disc-sources-local.json
    python benchmarks/cross_validate.py --recipe cv-disc-fov-all-sources-local-seeds --data-root ../shared/data \
        --reuse --camera-shift --out docs/results/camera-shift-disc-fov-all-sources-local-seeds.json
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from evaluation import metrics
from palm_algos.cases import Case
from palm_algos.fov import find_fov
from palm_algos.predict import Predictor
from palm_algos.tasks import RandomJpeg


def as_shot(rgb: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    return rgb, (0.0, 0.0)


def square(rgb: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Black rows (or columns) on both sides up to a square; returns the image and the shift."""
    h, w = rgb.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    out = np.zeros((side, side, 3), np.uint8)
    out[top : top + h, left : left + w] = rgb
    return out, (float(left), float(top))


def darker(rgb: np.ndarray) -> np.ndarray:
    """A darker (gamma 1.6), warmer (channel gains 1.05, 0.85, 0.7) camera's colours."""
    return np.clip(((rgb / 255.0) ** 1.6 * np.array([1.05, 0.85, 0.7])) * 255 + 0.5, 0, 255).astype(np.uint8)


def dim(rgb: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """A darker, warmer camera that compresses harder (training's ``RandomJpeg`` at quality 60)."""
    image = tv_tensors.Image(torch.from_numpy(darker(rgb)).permute(2, 0, 1))
    return RandomJpeg((60, 60))(image).permute(1, 2, 0).numpy(), (0.0, 0.0)


def disc_centred(rgb: np.ndarray, fovea: tuple[float, float], disc: tuple[float, float],
                 towards: float = 0.25, reach: float = 1.25) -> tuple[np.ndarray, tuple[float, float]]:
    """The round field of a camera aimed ``towards`` of the way from ``disc`` to ``fovea``
    (read pixels), ``reach`` times their distance in radius; returns the image and the shift."""
    (fx, fy), (dx, dy) = fovea, disc
    radius = reach * float(np.hypot(fx - dx, fy - dy))
    cx, cy = dx + towards * (fx - dx), dy + towards * (fy - dy)
    left, top, side = round(cx - radius), round(cy - radius), round(2 * radius)
    h, w = rgb.shape[:2]
    out = np.zeros((side, side, 3), np.uint8)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
    out[y0 - top : y1 - top, x0 - left : x1 - left] = rgb[y0:y1, x0:x1]
    yy, xx = np.mgrid[0:side, 0:side]
    out[np.hypot(xx + 0.5 - side / 2, yy + 0.5 - side / 2) > side / 2] = 0
    return out, (float(-left), float(-top))


SHIFTS = {"as-shot": as_shot, "square": square, "dim": dim}


def shift_scores(predictor: Predictor, cases: list[Case]) -> dict:
    """Each shift's scores of ``predictor`` (a fovea or a disc model) on ``cases``. Each
    photograph is read once, as the model reads it (reduced), and that becomes the original
    every shift changes."""
    return SHIFT_SCORES[predictor.task](predictor, cases)


def fovea_shift_scores(predictor: Predictor, cases: list[Case]) -> dict:
    """The fovea: as a share of the FOV's diameter, normalised as PALM does (by the changed
    image's size), and beyond 0.05."""
    found = {name: ([], [], [], []) for name in (*SHIFTS, "disc-centred")}  # prediction, truth, size, FOV diameter
    for case in cases:
        rgb, size = predictor.read(case.image)
        sx, sy = rgb.shape[1] / size[0], rgb.shape[0] / size[1]
        circle = find_fov(rgb)
        diameter = 2 * circle[2] if circle else max(rgb.shape[:2])
        def read_pixels(x: float, y: float) -> tuple[float, float]:  # original pixel indices -> the read photograph's
            return (x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5

        fovea = read_pixels(*case.fovea)
        disc = case.disc_centre and read_pixels(*case.disc_centre)
        shifts = {**SHIFTS, **({"disc-centred": lambda rgb: disc_centred(rgb, fovea, disc)} if disc else {})}
        for name, shift in shifts.items():
            changed, (dx, dy) = shift(rgb)
            changed_size = (changed.shape[1], changed.shape[0])
            truth = (fovea[0] + dx, fovea[1] + dy)
            point = predictor.predict(case.image, photo=(changed, changed_size))
            for column, value in zip(found[name], (point, truth, changed_size, diameter)):
                column.append(value)
    scores = {}
    for name, (pred, truth, sizes, diameters) in ((n, f) for n, f in found.items() if f[0]):
        pred, truth = np.array(pred, float), np.array(truth, float)
        norm = metrics.normalised_fovea_distances(pred, truth, sizes)
        scores[name] = {"share_of_fov": metrics.summary(np.hypot(*(pred - truth).T) / np.array(diameters)),
                        "distance_normalised": metrics.summary(norm), "beyond_0.05": int((norm > 0.05).sum()),
                        "cases": len(pred)}
    return scores


def disc_shift_scores(predictor: Predictor, cases: list[Case]) -> dict:
    """The disc: Dice against the case's mask brought to the read photograph's pixels and
    moved as the shift moved them, and how many fall below 0.5."""
    found = {name: [] for name in SHIFTS}
    for case in cases:
        rgb, _ = predictor.read(case.image)
        h, w = rgb.shape[:2]
        truth = np.asarray(Image.fromarray(case.read_disc()).resize((w, h), Image.NEAREST))
        for name, shift in SHIFTS.items():
            changed, (dx, dy) = shift(rgb)
            moved = np.zeros(changed.shape[:2], bool)
            moved[round(dy) : round(dy) + h, round(dx) : round(dx) + w] = truth
            mask = predictor.predict(case.image, photo=(changed, (changed.shape[1], changed.shape[0])))
            found[name].append(metrics.dice(mask, moved))
    return {name: {"dice": metrics.summary(np.array(dice)), "below_0.5": int((np.array(dice) < 0.5).sum()),
                   "cases": len(cases)} for name, dice in found.items()}


SHIFT_SCORES = {"fovea": fovea_shift_scores, "disc": disc_shift_scores}  # the tasks whose truth moves with the pixels
