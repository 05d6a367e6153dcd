"""One checkpoint file: weights plus what is needed to use them ({"state_dict", "meta"}).

Loaded with ``weights_only=True``: a checkpoint is data, never code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import PalmError


class CheckpointError(PalmError):
    pass


def save_checkpoint(path: Path, state_dict: dict, meta: dict[str, Any], **extra: Any) -> None:
    """Write atomically (temp file + rename): an interrupted save never spoils the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"state_dict": state_dict, "meta": {**meta, "palm_version": __version__}, **extra}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, task: str | None = None) -> dict[str, Any]:
    """Read a palm checkpoint; with ``task``, refuse one trained for another task."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable palm checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "task" not in ckpt.get("meta", {}):
        raise CheckpointError(f"{path}: not a palm checkpoint (no state_dict/meta record)")
    if task is not None and ckpt["meta"]["task"] != task:
        raise CheckpointError(
            f"{path}: this checkpoint was trained for {ckpt['meta']['task']!r}, not {task!r}"
        )
    return ckpt
