"""palm: the PALM (ISBI 2019) transfer-learning methods, trained, run and scored.

The package root imports no torch: data reading and evaluation work without it.
"""

__version__ = "0.1.0"
