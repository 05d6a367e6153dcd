"""The fovea fold models of a cross-validation run on their held-out photographs as other
cameras would show them: the same eyes, another frame or another colour.

Only IDRiD has fovea labels, so a camera the fovea model never saw cannot be scored directly.
This scores the next best thing: each fold model on its own held-out images after a camera
change that keeps the truth known (the fovea moves with the pixels):

- ``as-shot``: the photograph as decoded (the cross-validation's own score);
- ``square``: padded with black to a square, the whole field of view inside the frame, as
  cameras with a square sensor show it (PALM's 1444x1444 and 2124x2056 photographs);
- ``dim``: darker (gamma 1.6), warmer (channel gains 1.05, 0.85, 0.7) and JPEG quality 60.

Distances are reported as shares of the field of view's diameter (IDRiD's FOV: 3400 of 4288
px), which no change of frame alters, and as the PALM normalisation of the changed image.

``cross_validate.py --camera-shift`` adds these scores to its record (with ``--reuse``, from fold
models already trained), e.g.

    python benchmarks/cross_validate.py --recipe cv-fovea-disc-sources-local --data-root ../shared/data \\
        --reuse --camera-shift --out docs/results/camera-shift-fovea-disc-sources-local.json
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from evaluation import metrics
from palm_algos.cases import Case
from palm_algos.fov import find_fov
from palm_algos.predict import Predictor


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


def dim(rgb: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """A darker, warmer camera that compresses harder."""
    pixels = (rgb / 255.0) ** 1.6 * np.array([1.05, 0.85, 0.7])
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels * 255 + 0.5, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=60)
    return np.asarray(Image.open(buffer).convert("RGB")), (0.0, 0.0)


SHIFTS = {"as-shot": as_shot, "square": square, "dim": dim}


def shifted(predictor: Predictor, case: Case, shift) -> tuple[np.ndarray, np.ndarray, tuple[int, int], float]:
    """The prediction and the truth in the changed photograph's pixels, its size, and its FOV's
    diameter there. The photograph as the model reads it (reduced) becomes the new original."""
    rgb, size = predictor.read(case.image)
    scale = rgb.shape[1] / size[0]
    changed, (dx, dy) = shift(rgb)
    truth = np.array([(case.fovea[0] + 0.5) * scale - 0.5 + dx, (case.fovea[1] + 0.5) * scale - 0.5 + dy])
    new_size = (changed.shape[1], changed.shape[0])
    point = predictor.predict(case.image, photo=(changed, new_size))
    circle = find_fov(rgb)
    diameter = 2 * circle[2] if circle else max(rgb.shape[:2])
    return np.asarray(point, float), truth, new_size, diameter


def shift_scores(predictor: Predictor, cases: list[Case]) -> dict:
    """Each shift's scores of ``predictor``'s fovea on ``cases``: as a share of the FOV's
    diameter, normalised as PALM does (by the changed image's size), and beyond 0.05."""
    scores = {}
    for name, shift in SHIFTS.items():
        pred, truth, sizes, diameters = zip(*(shifted(predictor, case, shift) for case in cases))
        pred, truth = np.array(pred), np.array(truth)
        norm = metrics.normalised_fovea_distances(pred, truth, sizes)
        scores[name] = {"share_of_fov": metrics.summary(np.hypot(*(pred - truth).T) / np.array(diameters)),
                        "distance_normalised": metrics.summary(norm), "beyond_0.05": int((norm > 0.05).sum()),
                        "cases": len(cases)}
    return scores
