"""One checkpoint file: weights plus what is needed to use them ({"state_dict", "meta"}).

Loaded with ``weights_only=True``: a checkpoint is data, never code.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import PalmError
from .formats import TASKS
from .torchfile import load_torch_file
from .fov import COLOURS, GEOMETRIES


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
    """Read a palm checkpoint and check its record (``check_record``); with ``task``, refuse one
    trained for another task."""
    path = Path(path)
    if path.is_dir():
        held = sorted(p.name for p in path.glob("*.pt"))
        shown = f"; it holds {', '.join(held[:5])}" if held else "; it holds no *.pt file"
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file (name the .pt file{shown})")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return checked(path, load_torch_file(path, "palm checkpoint", CheckpointError), task)


def has_palm_record(loaded: Any) -> bool:
    """Whether a loaded torch file is a palm checkpoint (weights with a meta record), not bare weights."""
    return isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded.get("meta"), dict)


def checked(path: Path, ckpt: Any, task: str | None = None) -> dict[str, Any]:
    """``ckpt``, loaded from ``path``, if it is a usable palm checkpoint (of ``task``, if given)."""
    if not has_palm_record(ckpt) or "task" not in ckpt["meta"]:
        raise CheckpointError(f"{path}: not a palm checkpoint (no state_dict/meta record)")
    meta = ckpt["meta"]
    if not isinstance(meta["task"], str) or meta["task"] not in TASKS:
        raise CheckpointError(f"{path}: meta record: task {meta['task']!r} is not one of {', '.join(TASKS)}")
    if task is not None and meta["task"] != task:
        raise CheckpointError(f"{path}: this checkpoint was trained for {meta['task']!r}, not {task!r}")
    problem = check_record(ckpt)
    if problem:
        raise CheckpointError(f"{path}: not a usable palm checkpoint: {problem}")
    return ckpt


MAX_INPUT_SIZE = 2048  # bigger would not fit the containers' memory (and no model here is trained so)


def check_record(ckpt: dict[str, Any]) -> str | None:
    """What is wrong with a checkpoint's ``state_dict`` and ``meta`` record (None: nothing).

    ``meta`` needs ``task``, ``arch`` (the network's name) and ``input_size`` (px, 32 to 2048);
    ``zoom`` (1-4), ``mean``/``std`` (3 numbers each) and, for an ensemble, ``members`` (the
    count, >= 2) with ``member_meta`` (one record per member) are checked where present."""
    state, meta = ckpt["state_dict"], ckpt["meta"]
    if not isinstance(state, dict):
        return f"its state_dict is a {type(state).__name__}, not a dict of named tensors"
    odd = next((k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        return f"its state_dict holds {odd!r}: {type(state[odd]).__name__}, not a tensor"

    def integer(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not isinstance(meta.get("arch"), str) or not meta["arch"]:
        return "meta has no 'arch' (the network's name, e.g. resnet50)" if "arch" not in meta else \
            f"meta 'arch' is {meta['arch']!r}, not a network's name"
    if "input_size" not in meta:
        return "meta has no 'input_size' (the model's input side in pixels)"
    if not integer(meta["input_size"]) or not 32 <= meta["input_size"] <= MAX_INPUT_SIZE:
        return f"meta 'input_size' is {meta['input_size']!r}; expected a whole number of pixels from 32 to {MAX_INPUT_SIZE}"
    if "zoom" in meta and (not integer(meta["zoom"]) or not 1 <= meta["zoom"] <= 4):
        return f"meta 'zoom' is {meta['zoom']!r}; expected 1 to 4"
    if "zoom" in meta and meta["input_size"] * meta["zoom"] > MAX_INPUT_SIZE * 2:
        return f"meta 'input_size' x 'zoom' is {meta['input_size'] * meta['zoom']} px; at most {MAX_INPUT_SIZE * 2}"
    for key, known in (("geometry", GEOMETRIES), ("colour", COLOURS)):
        if key in meta and meta[key] not in known:
            return f"meta {key!r} is {meta[key]!r}; expected one of {', '.join(known)}"
    for key in ("mean", "std"):
        values = meta.get(key, [0.5, 0.5, 0.5])
        if (not isinstance(values, (list, tuple)) or len(values) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
                or (key == "std" and min(values) <= 0)):
            return f"meta {key!r} is {values!r}; expected 3 numbers (one per colour channel){', above 0' if key == 'std' else ''}"
    if "members" in meta and meta["members"] not in (0, None):
        members, member_meta = meta["members"], meta.get("member_meta")
        if not integer(members) or members < 2:
            return f"meta 'members' is {members!r}; an ensemble has a whole number of members, at least 2"
        if not isinstance(member_meta, list) or len(member_meta) != members or not all(isinstance(m, dict) for m in member_meta):
            return f"meta 'member_meta' should hold one record per member ({members})"
    return None


ENSEMBLE_MUST_AGREE = ("task", "arch", "input_size", "zoom", "geometry", "colour", "mean", "std")


def unpack(ckpt: dict[str, Any]) -> list[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
    """A checkpoint's models as (state dict, meta): an ensemble's members one by one (their
    weights under ``members.<i>.``), or the one model it is."""
    meta = ckpt["meta"]
    if not meta.get("members"):
        return [(ckpt["state_dict"], meta)]
    shared = {k: meta[k] for k in ENSEMBLE_MUST_AGREE if k in meta}
    return [({k[len(f"members.{i}."):]: v for k, v in ckpt["state_dict"].items() if k.startswith(f"members.{i}.")},
             {**meta["member_meta"][i], **shared}) for i in range(int(meta["members"]))]


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
        if metas:
            differ = [k for k in ENSEMBLE_MUST_AGREE if ckpt["meta"].get(k) != metas[0].get(k)]
            if differ:
                raise CheckpointError(f"{path}: cannot join the ensemble: its {', '.join(differ)} "
                                      f"differ from {paths[0]}'s")
        for state, meta in unpack(ckpt):
            states.append(state)
            metas.append(meta)
    state = {f"members.{i}.{k}": v for i, s in enumerate(states) for k, v in s.items()}
    shared = {k: v for k, v in metas[0].items() if k not in ("metrics", "epoch", "member_meta")}
    meta = {**shared, "members": len(states),
            "member_meta": [{k: v for k, v in m.items() if k not in ENSEMBLE_MUST_AGREE} for m in metas]}
    save_checkpoint(out, state, meta)
    return meta
