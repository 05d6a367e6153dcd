"""The `--pretrained imagenet|none|PATH` switch shared by every architecture.

`imagenet` goes through torchvision's weights API (the cache under $TORCH_HOME first, a
download otherwise); where neither works the user is told exactly where to put the file.
"""

from __future__ import annotations

import socket
from pathlib import Path

import torch
from torch import nn
from torchvision.models import WeightsEnum

from ..torchfile import load_torch_file
from ..errors import PalmError


def imagenet_state_dict(weights: WeightsEnum) -> dict[str, torch.Tensor]:
    """ImageNet weights from the torch hub cache, or downloaded with a short timeout."""
    filename = weights.url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, HTTPError, OSError, hash mismatch
        raise PalmError(
            f"ImageNet weights {weights} are not cached at {cached} and could not be downloaded "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            f"copy {weights.url} to that path, pass --pretrained PATH to a local file, "
            f"or --pretrained none to train from scratch"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def file_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file: a bare state dict or a palm checkpoint (of another task:
    the same task's is fine-tuned whole, ``train.starting_model``)."""
    path = Path(path)
    if not path.is_file():
        raise PalmError(f"{path}: no such file; --pretrained takes 'imagenet', 'none', or an existing weights file or palm model")
    state = load_torch_file(path, "PyTorch weights file")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PalmError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def load_backbone(module: nn.Module, pretrained: str | Path | None, weights: WeightsEnum) -> nn.Module:
    """Fill ``module`` (a torchvision backbone) from the chosen source; heads stay as built.

    Keys whose shapes differ (a 1000-class head) are skipped; a file sharing no key at all
    with the backbone is an error rather than a silent from-scratch run.
    """
    if pretrained in (None, "none"):
        return module
    state = imagenet_state_dict(weights) if pretrained == "imagenet" else file_state_dict(pretrained)
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise PalmError(f"{pretrained}: no weight in this file fits the {type(module).__name__} backbone")
    module.load_state_dict(usable, strict=False)
    return module
