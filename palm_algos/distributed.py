"""Which process am I: the one answer for train and predict under ``torchrun``.

torchrun starts one process per GPU (or CPU share) and tells each its place through the
environment (RANK, WORLD_SIZE, LOCAL_RANK). Outside torchrun a process is rank 0 of 1.
"""

from __future__ import annotations

import os

from .errors import PalmError


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process: torchrun's, else (0, 1). Read from the environment,
    so it holds before the process group starts and after it ends."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def join(device: str | None = None):
    """This rank's torch device, after joining the process group under torchrun (WORLD_SIZE >
    1; NCCL between GPUs, gloo between CPUs). ``device``: the one asked for, else this rank's
    GPU (LOCAL_RANK) where CUDA is present, else the CPU."""
    import torch
    import torch.distributed as dist

    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except RuntimeError:
        raise PalmError(f"device {device!r}: not a torch device (cpu, cuda, cuda:1 ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PalmError(f"device {str(device)!r}: CUDA is not available here (use cpu)")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if rank_and_world()[1] > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def leave() -> None:
    """End this process's part in the process group (nothing outside torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather(value):
    """Every rank's ``value``, in rank order (``[value]`` outside torchrun)."""
    rank, world = rank_and_world()
    if world == 1:
        return [value]
    import torch.distributed as dist

    parts = [None] * world
    dist.all_gather_object(parts, value)
    return parts
