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


# A disc is an ellipse whose long axis is at most about twice its short one (a tilted myopic
# disc; most are within 1.3), so no part of it lies further from the centre of its widest
# inscribed circle than DISC_REACH times that circle's radius.
DISC_REACH = 2.0


def trim_lobes(disc: np.ndarray, reach: float = DISC_REACH) -> np.ndarray:
    """A cleaned disc mask less what reaches further than ``reach`` inscribed radii from its
    widest point: on a camera it never saw, a disc model can run on along the bright nerve-fibre
    layer beside a vessel arcade (IDRiD, docs/RESULTS.md), a lobe no disc has. The largest
    region left is kept; a disc-shaped mask is left as it is."""
    if not disc.any():
        return disc
    depth = ndimage.distance_transform_edt(disc)
    row, col = np.unravel_index(depth.argmax(), depth.shape)
    rows, cols = np.ogrid[: disc.shape[0], : disc.shape[1]]
    near = (rows - row) ** 2 + (cols - col) ** 2 <= (reach * depth.max()) ** 2
    return disc if near[disc].all() else clean_disc(disc & near)


def solidity(disc: np.ndarray) -> float:
    """The share of the pixels within its convex hull that a mask fills: an ellipse, as every
    disc is, fills nearly all of them; the pale atrophy of a myopic eye or a patch at its
    macula, which a model that never saw such eyes takes for the disc, much less (PALM,
    docs/RESULTS.md). 1.0 for an empty mask or a line (nothing to doubt)."""
    from scipy.spatial import ConvexHull, Delaunay, QhullError

    rows, cols = np.nonzero(disc & ~ndimage.binary_erosion(disc))
    edge = np.stack([rows, cols], 1).astype(float)
    try:
        hull = Delaunay(edge[ConvexHull(edge).vertices])
    except (QhullError, ValueError):  # too few pixels, or all on one line
        return 1.0
    grid = np.stack(np.mgrid[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1], -1).reshape(-1, 2)
    return float(min(1.0, disc.sum() / max(1, int((hull.find_simplex(grid) >= 0).sum()))))
