"""Where the fovea lies beside the optic disc: facts of the eye, not of a camera.

The joint fovea model reads its fovea map inside the cone these allow (``models.fovea``), and
``tasks.anatomical`` turns a fovea outside it; both sit above this module.
"""

from __future__ import annotations

import functools
import math

# The fovea lies temporal to the optic disc and a little below it: the line from the disc's centre
# to the fovea runs FOVEA_ANGLE degrees below the horizontal on average (IDRiD's 69 markups: 6 +-
# 4.5, from -4 to 15; the literature's 5-8). ANGLE_GATE degrees either side of it (4.4 standard
# deviations) is as far as a fovea is believed; that is an anatomical fact, not a camera's.
FOVEA_ANGLE, ANGLE_GATE = 6.0, 20.0
# The widest frame (width over height) a squashing model is assumed to see: 3:2, IDRiD's and
# DRIONS's, the widest of our sources. A wider frame squashes the cone further than
# ``squashed_cone`` allows at its two ends.
WIDEST_FRAME = 1.5


@functools.cache  # read by every forward pass of the joint fovea model
def squashed_cone(widest: float = WIDEST_FRAME) -> tuple[float, float]:
    """(lowest, highest) angle in degrees below the horizontal of the line from the disc to the
    fovea as a network sees it: FOVEA_ANGLE +- ANGLE_GATE in the eye, on any frame from square
    to ``widest`` squashed to a square (squashing a W/H frame multiplies an angle's tangent by W/H)."""
    angles = [math.degrees(math.atan(aspect * math.tan(math.radians(FOVEA_ANGLE + side * ANGLE_GATE))))
              for aspect in (1.0, widest) for side in (-1, 1)]
    return min(angles), max(angles)
