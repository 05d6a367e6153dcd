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

import numpy as np
import torch
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


def dim(rgb: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """A darker, warmer camera that compresses harder (training's ``RandomJpeg`` at quality 60)."""
    pixels = np.clip(((rgb / 255.0) ** 1.6 * np.array([1.05, 0.85, 0.7])) * 255 + 0.5, 0, 255).astype(np.uint8)
    image = tv_tensors.Image(torch.from_numpy(pixels).permute(2, 0, 1))
    return RandomJpeg((60, 60))(image).permute(1, 2, 0).numpy(), (0.0, 0.0)


SHIFTS = {"as-shot": as_shot, "square": square, "dim": dim}


def shift_scores(predictor: Predictor, cases: list[Case]) -> dict:
    """Each shift's scores of ``predictor``'s fovea on ``cases``: as a share of the FOV's
    diameter, normalised as PALM does (by the changed image's size), and beyond 0.05. Each
    photograph is read once, as the model reads it (reduced), and that becomes the original
    every shift changes."""
    found = {name: ([], [], [], []) for name in SHIFTS}  # prediction, truth, size, FOV diameter
    for case in cases:
        rgb, size = predictor.read(case.image)
        sx, sy = rgb.shape[1] / size[0], rgb.shape[0] / size[1]
        circle = find_fov(rgb)
        diameter = 2 * circle[2] if circle else max(rgb.shape[:2])
        for name, shift in SHIFTS.items():
            changed, (dx, dy) = shift(rgb)
            changed_size = (changed.shape[1], changed.shape[0])
            truth = ((case.fovea[0] + 0.5) * sx - 0.5 + dx, (case.fovea[1] + 0.5) * sy - 0.5 + dy)
            point = predictor.predict(case.image, photo=(changed, changed_size))
            for column, value in zip(found[name], (point, truth, changed_size, diameter)):
                column.append(value)
    scores = {}
    for name, (pred, truth, sizes, diameters) in found.items():
        pred, truth = np.array(pred, float), np.array(truth, float)
        norm = metrics.normalised_fovea_distances(pred, truth, sizes)
        scores[name] = {"share_of_fov": metrics.summary(np.hypot(*(pred - truth).T) / np.array(diameters)),
                        "distance_normalised": metrics.summary(norm), "beyond_0.05": int((norm > 0.05).sum()),
                        "cases": len(cases)}
    return scores
