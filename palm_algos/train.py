"""The one training loop for all three tasks, in the shape of torchvision's reference scripts:
``train`` sets up and runs the epochs, each a ``train_one_epoch`` (the learning rate following
``warmup_cosine_schedule`` per batch) and an ``evaluate`` on the validation split.

CPU or CUDA is picked automatically, with mixed precision on CUDA; under ``torchrun`` the
model is wrapped in DistributedDataParallel (NCCL on GPUs, gloo on CPUs). Every epoch
writes ``<out>.last.pt`` (weights, optimiser and schedule: ``resume`` continues from it; three
times the model's size, so removed when the run ends unless ``keep_last``) and rewrites
``<out>.history.jsonl`` (one JSON line per epoch); the epoch with the best validation metric
is written to ``<out>`` (the last one when no validation split is used).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from . import distributed
from .cases import Case
from .checkpoint import checked, has_palm_record, load_checkpoint, save_checkpoint, unpack
from .data import CaseDataset
from .errors import PalmError
from .tasks import IMAGENET_MEAN, IMAGENET_STD, Task
from .torchfile import load_torch_file


# Fine-tuning's starting point: the weights and the meta of one palm model.
StartingModel = tuple[dict[str, torch.Tensor], dict[str, Any]]


@dataclass
class TrainConfig:
    arch: str = ""  # empty: the task's default (the paper's network)
    pretrained: str = "imagenet"  # imagenet | none | backbone weights | a palm model of the task (fine-tuning)
    input_size: int = 0  # 0: the task's default
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    seed: int = 0
    workers: int = 0
    augment: str = ""  # the task's augmentation style (Task.augmentations); "none" for ablations and tests; empty: the task's
    zoom: int = 1  # > 1: also learn the refining pass's view (fovea, disc); 1 = the paper's single pass
    geometry: str = ""  # fov.GEOMETRIES; empty: the task's default ("fov" for the disc)
    colour: str = ""  # fov.COLOURS: "standardise" | "local" | "equalise" | "none"; empty: the task's default
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self, task: Task, start: StartingModel | None = None) -> "TrainConfig":
        """The task's defaults filled in (a model fine-tuned keeps its network's settings:
        ``start``, where the caller has it loaded already, else looked up); settings the task
        cannot use are refused."""
        own = self
        if start := start or starting_model(task, self):
            own = replace(self, **network_settings(self, start[1], self.pretrained))
        if own.zoom > 1 and not task.refines:
            raise PalmError("--zoom is for fovea and disc: a classifier has no region to refine")
        if own.augment and own.augment not in (*task.augmentations, "none"):
            raise PalmError(f"--augment {own.augment!r}: {task.name} has {', '.join(task.augmentations)} or none")
        return replace(own, arch=own.arch or task.default_arch, input_size=own.input_size or task.default_input_size,
                       geometry=own.geometry or task.default_geometry, colour=own.colour or task.default_colour,
                       augment=own.augment or task.default_augment)


# What makes a network the one it is, with the value that leaves each to a default.
NETWORK_SETTINGS = {"arch": "", "input_size": 0, "zoom": 1, "geometry": "", "colour": ""}


def starting_model(task: Task, config: TrainConfig) -> StartingModel | None:
    """Fine-tuning: where ``--pretrained`` names a palm model of ``task`` (the shipped disc.pt,
    say, to adapt it to one's own camera), the weights and meta the whole network starts from;
    of an ensemble, member SEED mod N, so a recipe's seeds fine-tune one member each. None for
    ``imagenet``, ``none``, bare weights and other tasks' models (the backbone switch,
    ``models.pretrained``: a classifier's ResNet50 can start the fovea's)."""
    path = Path(config.pretrained)
    if config.pretrained in ("imagenet", "none") or not path.is_file():
        return None
    loaded = load_torch_file(path, "PyTorch weights file")
    if not has_palm_record(loaded) or loaded["meta"].get("task") != task.name:
        return None
    members = unpack(checked(path, loaded, task.name))
    return members[config.seed % len(members)]


def network_settings(config: TrainConfig, meta: dict[str, Any], source: str) -> dict[str, Any]:
    """The starting model's network settings; one the command sets otherwise is refused: the
    weights were learned for the model's (left to its default, a setting is the model's)."""
    clashes = [f"--{key.replace('_', '-')} {getattr(config, key)}" for key, unset in NETWORK_SETTINGS.items()
               if getattr(config, key) not in (unset, meta.get(key, unset))]
    if clashes:
        shown = ", ".join(f"{key.replace('_', ' ')} {meta.get(key)}" for key in NETWORK_SETTINGS)
        raise PalmError(f"--pretrained {source}: a model of {shown}; {', '.join(clashes)} differs: leave it "
                        "out to fine-tune the model with the settings it learned")
    return {key: meta.get(key, unset) for key, unset in NETWORK_SETTINGS.items()}


def last_path(out: Path) -> Path:
    return Path(out).with_suffix(".last.pt")


def history_path(out: Path) -> Path:
    return Path(out).with_suffix(".history.jsonl")


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train(task: Task, train_cases: list[Case], val_cases: list[Case], config: TrainConfig, out: Path,
          resume: bool = False, progress: bool = True, keep_last: bool = False) -> dict[str, Any]:
    """Train ``task`` and write checkpoints; returns {"best": metrics, "history": [...]}."""
    start = starting_model(task, config)  # read once: its settings and its weights are one file's
    config = config.resolved(task, start)
    train_cases = [c for c in train_cases if task.learns_from(c, config.arch)]
    val_cases = [c for c in val_cases if task.scorable(c)]
    if not train_cases:
        raise PalmError(f"no training case has {task.name} ground truth")
    rank, world = distributed.rank_and_world()
    device = distributed.join()
    main_process = rank == 0
    generator = seed_everything(config.seed + rank)

    model = task.build_model(config.arch, "none" if start else config.pretrained)
    if start:
        model.load_state_dict(start[0])
        if progress and main_process:
            tqdm.write(f"fine-tuning {config.pretrained}: {config.arch}, {config.input_size} px, zoom {config.zoom}, "
                       f"{config.geometry}, colour {config.colour}")
    model = model.to(device)
    views = {"zoom": config.zoom, "geometry": config.geometry, "colour": config.colour}
    train_set = CaseDataset(task, train_cases, config.input_size, train=config.augment != "none",
                            progress=progress and main_process, augment=config.augment, **views)
    val_set = CaseDataset(task, val_cases, config.input_size, train=False, progress=False,
                          **views) if val_cases else None
    sampler = DistributedSampler(train_set, world, rank, seed=config.seed) if world > 1 else None
    batch_size = min(config.batch_size, len(train_set))
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                        drop_last=len(train_set) > batch_size, num_workers=config.workers,
                        generator=generator, pin_memory=device.type == "cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = warmup_cosine_schedule(optimizer, warmup_steps=max(1, int(config.warmup_epochs * len(loader))),
                                      total_steps=max(1, config.epochs * len(loader)))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")

    meta = {"task": task.name, "arch": config.arch, "input_size": config.input_size, **views,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "config": asdict(config),
            "train_cases": len(train_cases), "val_cases": len(val_cases)}
    start_epoch, history, best = 0, [], None
    if resume and last_path(out).is_file():
        state = load_checkpoint(last_path(out), task=task.name)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, history, best = state["epoch"], state["history"], state.get("best")
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    for epoch in range(start_epoch, config.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        started = time.time()
        train_loss = train_one_epoch(task, net, loader, optimizer, schedule, scaler, device,
                                     f"{task.name} epoch {epoch + 1}/{config.epochs}", progress and main_process)
        record = {"epoch": epoch + 1, "train_loss": train_loss, "seconds": round(time.time() - started, 1)}
        if not main_process:
            continue
        if val_set is not None:
            record.update({f"val_{k}": v for k, v in evaluate(task, model, val_set, device).items()})
        history.append(record)
        if improves(task, record, best):
            best = record
            save_checkpoint(out, model.state_dict(), {**meta, "epoch": epoch + 1, "metrics": record})
        save_checkpoint(last_path(out), model.state_dict(), {**meta, "epoch": epoch + 1, "metrics": record},
                        optimizer=optimizer.state_dict(), schedule=schedule.state_dict(),
                        epoch=epoch + 1, history=history, best=best)
        history_path(out).write_text("".join(_json_line(r) for r in history))
        if progress:
            tqdm.write(_describe(record))
    if main_process and not keep_last:
        last_path(out).unlink(missing_ok=True)
    if world > 1:
        dist.barrier()
        distributed.leave()
    return {"best": best, "history": history}


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int,
                           total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate per batch: a linear warm-up over ``warmup_steps``, then cosine decay
    to 0 at ``total_steps``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))


def train_one_epoch(task: Task, net: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    schedule: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
                    device: torch.device, description: str, progress: bool) -> float:
    """One pass over ``loader``, mixed precision on CUDA, the schedule stepped per batch;
    returns the mean training loss."""
    net.train()
    losses = []
    bar = tqdm(loader, desc=description, disable=not progress, leave=False)
    for images, targets in bar:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            loss = task.loss(net(images), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return float(np.mean(losses))


def improves(task: Task, record: dict[str, Any], best: dict[str, Any] | None) -> bool:
    """Whether an epoch's record beats the best so far on the task's metric (always, without
    validation)."""
    key = f"val_{task.metric_name}"
    score = record.get(key)
    if best is None or score is None:
        return True
    return score > best[key] if task.higher_is_better else score < best[key]


@torch.no_grad()
def predict_outputs(model: torch.nn.Module, dataset, device: torch.device, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw outputs and targets for a whole dataset, in order."""
    model.eval()
    outputs, targets = [], []
    for images, target in DataLoader(dataset, batch_size=batch_size):
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            outputs.append(model(images.to(device)).float().cpu())
        targets.append(target)
    return torch.cat(outputs), torch.cat(targets)


def evaluate(task: Task, model: torch.nn.Module, dataset, device: torch.device) -> dict[str, float]:
    return task.metrics(*predict_outputs(model, dataset, device))


def _describe(record: dict) -> str:
    return "  ".join(f"time {duration(v)}" if k == "seconds" else f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in record.items())


def _json_line(record: dict) -> str:
    """One line of history.jsonl, strict JSON: a metric that is not a number (an AUC on one
    class) is null."""
    return json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}) + "\n"


def duration(seconds: float) -> str:
    """'13.0 s', '2 min 05 s', '1 h 02 min': a time as a person reads it."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _strata(task: Task, cases: list[Case]) -> list[int] | None:
    labels = [c.label for c in cases]
    if task.stratifies and min(labels.count(0), labels.count(1)) >= 2:
        return labels
    return None


def holdout_split(task: Task, cases: list[Case], val_fraction: float, seed: int = 0) -> tuple[list[Case], list[Case]]:
    """Random (for classification, label-stratified) split of the scorable cases; fraction 0
    keeps everything for training. Cases a task learns from but cannot score (a disc centre
    without a mask, a disc without a fovea label) always train."""
    from sklearn.model_selection import train_test_split

    cases, learn_only = _scorable_and_learn_only(task, cases)
    if val_fraction <= 0:
        return cases + learn_only, []
    held_out = math.ceil(val_fraction * len(cases))
    if held_out >= len(cases):
        raise PalmError(f"{len(cases)} case(s) are too few to hold out {val_fraction:.0%} for validation; "
                        f"use --val-fraction 0 or more data")
    strata = _strata(task, cases)
    if strata and min(held_out, len(cases) - held_out) < 2:
        strata = None  # too few to keep the label ratio on both sides
    tr, va = train_test_split(cases, test_size=held_out, random_state=seed, stratify=strata)
    return tr + learn_only, va


def kfold_splits(task: Task, cases: list[Case], folds: int, seed: int = 0) -> list[tuple[list[Case], list[Case]]]:
    """K folds (label-stratified for classification); every scorable case is validated once,
    and the cases that can only be learned from train in every fold."""
    from sklearn.model_selection import KFold, StratifiedKFold

    cases, learn_only = _scorable_and_learn_only(task, cases)
    if not 2 <= folds <= len(cases):
        raise PalmError(f"--folds {folds}: needs 2 to {len(cases)} (the number of cases with {task.name} ground "
                        f"truth to score)")
    strata = _strata(task, cases)
    if strata and min(strata.count(0), strata.count(1)) < folds:
        strata = None  # a label rarer than the folds cannot be spread over them
    splitter = (StratifiedKFold if strata else KFold)(n_splits=folds, shuffle=True, random_state=seed)
    return [([cases[i] for i in tr] + learn_only, [cases[i] for i in va])
            for tr, va in splitter.split(cases, strata or [0] * len(cases))]


def _scorable_and_learn_only(task: Task, cases: list[Case]) -> tuple[list[Case], list[Case]]:
    usable = [c for c in cases if task.usable(c)]
    return [c for c in usable if task.scorable(c)], [c for c in usable if not task.scorable(c)]
