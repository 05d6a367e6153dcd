"""Disc mask clean-up: one disc per eye, without holes."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def clean_disc(mask: np.ndarray) -> np.ndarray:
    """Keep the largest connected region and fill its holes; an empty mask stays empty."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == sizes.argmax()
    return ndimage.binary_fill_holes(mask)
