"""Reading any torch file (a palm checkpoint, a pretrained weights file) as data, never code.

Below both ``checkpoint`` and ``models``: both read torch files, and neither imports the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import PalmError


def load_torch_file(path: Path, what: str, error: type[PalmError] = PalmError) -> Any:
    """``torch.load`` with ``weights_only=True`` (a file is data, never code), on the CPU; any
    failure is one ``error`` line naming the file as ``what`` and the loader's first line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling raises anything on a hostile file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"{path}: not a readable {what} ({first})") from None
