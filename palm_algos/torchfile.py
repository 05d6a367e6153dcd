"""Reading any torch file (a palm checkpoint, a pretrained weights file) as data, never code.

Below both ``checkpoint`` and ``models``: both read torch files, and neither imports the other.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from .errors import PalmError


def load_torch_file(path: Path, what: str, error: type[PalmError] = PalmError) -> Any:
    """``torch.load`` with ``weights_only=True`` (a file is data, never code), on the CPU; any
    failure is one ``error`` line naming the file as ``what`` and the loader's first sentence
    (what follows is torch's advice to its own users, such as loading with
    ``weights_only=False``, which palm never does)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling raises anything on a hostile file
        text = str(exc).strip()
        first = re.split(r"(?<=[.:])\s+(?=[A-Z])", text.splitlines()[0], maxsplit=1)[0] if text else type(exc).__name__
        raise error(f"{path}: not a readable {what} ({first.rstrip('.')})") from None
