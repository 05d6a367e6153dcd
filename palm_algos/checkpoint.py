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


ENSEMBLE_MUST_AGREE = ("task", "arch", "input_size", "zoom", "mean", "std")


def combine_checkpoints(paths: list[Path], out: Path) -> dict[str, Any]:
    """Write one ensemble checkpoint of ``paths`` (models of one task, architecture, input
    size and zoom; ensembles among them are unpacked) and return its meta.

    The members' weights sit under ``members.<i>.`` as in ``models.ensemble.Ensemble``; the
    meta is the first member's with ``members`` (the count) and each member's own meta."""
    if len(paths) < 2:
        raise CheckpointError("an ensemble needs at least two checkpoints")
    states, metas = [], []
    for path in paths:
        ckpt = load_checkpoint(path)
        meta = ckpt["meta"]
        if metas:
            differ = [k for k in ENSEMBLE_MUST_AGREE if meta.get(k) != metas[0].get(k)]
            if differ:
                raise CheckpointError(f"{path}: cannot join the ensemble: its {', '.join(differ)} "
                                      f"differ from {paths[0]}'s")
        for i in range(int(meta.get("members", 0))):  # an ensemble: its members, one by one
            prefix = f"members.{i}."
            states.append({k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)})
            metas.append({**meta["member_meta"][i], **{k: meta[k] for k in ENSEMBLE_MUST_AGREE if k in meta}})
        if not meta.get("members"):
            states.append(ckpt["state_dict"])
            metas.append(meta)
    state = {f"members.{i}.{k}": v for i, s in enumerate(states) for k, v in s.items()}
    shared = {k: v for k, v in metas[0].items() if k not in ("metrics", "epoch", "member_meta")}
    meta = {**shared, "members": len(states),
            "member_meta": [{k: v for k, v in m.items() if k not in ENSEMBLE_MUST_AGREE} for m in metas]}
    save_checkpoint(out, state, meta)
    return meta
