"""One predictor for the three tasks: checkpoint in, predictions in original pixels out.

A folder is predicted as a pipeline (``predict_folder``): images are decoded in DataLoader
workers, the network runs on batches, and decoding each output to original pixels and writing
it (a full-size disc mask) happen in a few threads behind it. A single image
(``Predictor.predict``) is the batch of one of the same code. Under ``torchrun`` every rank
predicts its share of the images and rank 0 writes the one set of PALM files.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .cases import list_images
from .checkpoint import CheckpointError, load_checkpoint
from .data import model_views, normalise, view_box
from .errors import PalmError
from .formats import CSV_NAMES
from .fov import Frame
from .imageio import read_image
from .models.ensemble import Ensemble, FlipTTA
from .tasks import IMAGENET_MEAN, IMAGENET_STD, get_task
from .writers import OUTPUTS, OverlayWriter, csv_name_problem, own_folders, prepare_output

BATCH_SIZE = 8  # images per forward pass in batch mode (`palm predict --batch-size`)
log = logging.getLogger(__name__)


class PredictionError(PalmError):
    """One image's prediction is unusable (e.g. not a finite number); the others go on."""


class Predictor:
    """``Predictor.load(path).predict(image)`` -> PM risk | (x, y) | bool disc mask (H, W)."""

    def __init__(self, model: torch.nn.Module, meta: dict[str, Any], device: torch.device, tta: bool | None = None):
        self.meta, self.device = meta, device
        self.task = meta["task"]
        self._task = get_task(self.task)
        self.input_size = int(meta["input_size"])
        self.zoom = int(meta.get("zoom", 1))
        self.geometry = meta.get("geometry", "squash")  # checkpoints from before the FOV crop
        self.colour = meta.get("colour", "none")
        self.tta = self._task.tta_default if tta is None else tta
        if self.tta:
            model = FlipTTA(model, self._task.average, self._task.flip_back)
        if device.type == "cuda":  # convolutions run faster on NHWC tensors with cuDNN
            model = model.to(memory_format=torch.channels_last)
        self.model = model.eval()

    @classmethod
    def load(cls, checkpoint: Path, task: str | None = None, device: str | None = None,
             tta: bool | None = None) -> "Predictor":
        """A checkpoint (one model or an ensemble) ready to predict; ``tta`` None: the task's default."""
        ckpt = load_checkpoint(checkpoint, task=task)  # checks the meta record's fields
        meta = ckpt["meta"]
        task_ = get_task(meta["task"])
        if meta["arch"] not in task_.archs:
            raise CheckpointError(f"{checkpoint}: unknown architecture {meta['arch']!r} for {meta['task']} "
                                  f"(known: {', '.join(task_.archs)})")
        members = int(meta.get("members", 0))
        model = task_.build_model(meta["arch"], pretrained="none")
        if members:
            model = Ensemble([model] + [task_.build_model(meta["arch"], pretrained="none") for _ in range(members - 1)],
                             task_.average)
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError:
            raise PalmError(f"{checkpoint}: weights do not fit the {meta['arch']!r} architecture") from None
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(model.to(dev), meta, dev, tta=tta)

    def read(self, image: Path) -> tuple[Any, tuple[int, int]]:
        """The image as this model reads it (RGB at a reduced scale, original size), for
        ``predict``'s ``photo``: an overlay can then reuse it instead of decoding again."""
        return read_image(image, min_side=self.input_size * self.zoom)

    def predict(self, image: Path, photo: tuple[Any, tuple[int, int]] | None = None) -> Any:
        """One image (or ``photo``, what ``read`` made of it) -> prediction in original pixels:
        the batch of one of ``outputs`` and ``decode``."""
        first, big, frame = self.views(photo or self.read(image), image)
        output = self.outputs(first[None], None if big is None else big[None], [image])[0]
        if isinstance(output, PalmError):
            raise output
        return self.decode(output, frame)

    def views(self, photo: tuple[Any, tuple[int, int]], image: Path | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None, Frame]:
        """``data.model_views`` with this model's input size, zoom, geometry and colour; a
        model that reads fields of view says in the log where it found none (``image``)."""
        views = model_views(photo, self.input_size, self.zoom, self.geometry, self.colour)
        if self.geometry == "fov" and not views[2].fov:
            log.warning("%s: no field of view found (no dark border around the retina); "
                        "the %s model sees the whole image", image or "an image", self.task)
        return views

    @torch.inference_mode()
    def outputs(self, first: torch.Tensor, big: torch.Tensor | None, images: list[Path]) -> list[Any]:
        """A batch of ``model_views`` -> each image's raw output (the refining pass merged in
        where the model has one), or its PredictionError: one image's broken output is its
        own failure, not the batch's."""
        size = self.input_size
        outputs = [self._finite(output, image) for output, image in zip(self.forward(first), images)]
        if big is None:
            return outputs
        windows, boxes = [], []  # the refining pass, batched over the images it has a window for
        for i, output in enumerate(outputs):
            centre = None if isinstance(output, PalmError) else \
                self._task.view_centre(output) or self._task.fallback_centre(first[i])
            if centre is not None:
                left, top = view_box(centre, size * self.zoom, size)
                windows.append(big[i, :, top : top + size, left : left + size])
                boxes.append((i, left, top))
        if windows:
            for (i, left, top), window in zip(boxes, self.forward(torch.stack(windows))):
                window = self._finite(window, images[i])
                outputs[i] = window if isinstance(window, PalmError) else \
                    self._task.merge(outputs[i], window, (left, top, size), size * self.zoom)
        return outputs

    def decode(self, output: torch.Tensor, frame: Frame | tuple[int, int]) -> Any:
        """One raw output -> the prediction in original pixels, the input having shown ``frame``
        (an original (w, h): the whole image)."""
        return self._task.decode(output, frame)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """The bare model on a (B, 3, S, S) uint8 batch: its raw outputs, on the CPU."""
        batch = pixels.to(self.device, non_blocking=True)
        batch = normalise(batch, self.meta.get("mean", IMAGENET_MEAN), self.meta.get("std", IMAGENET_STD))
        if self.device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            return self.model(batch).float().cpu()

    @staticmethod
    def _finite(output: torch.Tensor, image: Path) -> torch.Tensor | PredictionError:
        """The raw output, refused where it holds NaN or infinity: such a prediction is never
        written (as NaN in a CSV, invalid JSON, or an empty disc mask that looks real)."""
        if not bool(torch.isfinite(output).all()):
            return PredictionError(f"{image}: the model's output is not finite (NaN or infinity); nothing written "
                                   f"for this image (are the checkpoint's weights broken?)")
        return output


class FolderRun(NamedTuple):
    found: int  # images found under the input folder
    predicted: int
    problems: list[str]  # "path: problem" for every image (or folder) left out: the run failed
    skipped: list[str] = []  # "path: skipped, ..." for files that are not images: a notice only


def check_input_folder(input_dir: Path) -> Path:
    input_dir = Path(input_dir)
    if not input_dir.exists():
        raise PalmError(f"{input_dir}: no such folder")
    if not input_dir.is_dir():
        raise PalmError(f"{input_dir}: not a folder (give the folder that holds the images)")
    return input_dir


def default_workers() -> int:
    """Decoding processes beside the network: all but one core, at most 8 (0: decode in-line)."""
    return min(8, (os.cpu_count() or 1) - 1)


def unexpected(path: Path, exc: BaseException) -> str:
    return f"{path}: unexpected error ({type(exc).__name__}: {' '.join(str(exc).split())})"


class _Read(NamedTuple):
    index: int  # in the sorted list of the run's images
    path: Path
    frame: Frame | None  # what the model's input showed of the image (its original (w, h) within)
    photo: Any  # what ``read`` made of it, kept for the overlays only
    problem: str | None  # "path: problem" when it cannot be read


class _Images(Dataset):
    """The run's images as the network sees them, decoded in DataLoader workers; a file that
    cannot be read becomes its problem line, never an exception that would end the batch."""

    def __init__(self, items: list[tuple[int, Path]], predictor: Predictor, keep_photo: bool):
        self.items, self.keep_photo = items, keep_photo
        self.read, self.views = predictor.read, predictor.views

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int):
        index, path = self.items[k]
        try:
            photo = self.read(path)
            views = self.views(photo, path)
        except PalmError as exc:
            return None, _Read(index, path, None, None, str(exc))
        except Exception as exc:  # noqa: BLE001 - one odd image must not cost the others their results
            return None, _Read(index, path, None, None, unexpected(path, exc))
        return views[:2], _Read(index, path, views[2], photo if self.keep_photo else None, None)


def _collate(samples):
    """(first-pass batch or None, window-source batch or None, every image's _Read)."""
    views = [v for v, _ in samples if v is not None]
    first = torch.stack([v[0] for v in views]) if views else None
    big = torch.stack([v[1] for v in views]) if views and views[0][1] is not None else None
    return first, big, [r for _, r in samples]


class _Finisher:
    """Decodes raw outputs to original pixels and writes them (``TaskOutput.each``: a disc
    mask's upsampling and BMP/PNG encoding) in a few threads, so the network does not wait;
    results are taken back in image order, with at most ``limit`` waiting (bounded memory)."""

    def __init__(self, predictor: Predictor, output_dir: Path, overlays: OverlayWriter | None, limit: int):
        self.predictor, self.output, self.output_dir, self.overlays = predictor, OUTPUTS[predictor.task], output_dir, overlays
        self.limit, self.pending = limit, deque()
        self.done: list[tuple[int, str, Any]] = []  # (index, file name, value; None where no table needs it)
        self.problems: list[tuple[int, str]] = []
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="palm-write")

    def add(self, read: _Read, output: Any) -> None:
        if isinstance(output, PalmError):
            self.problems.append((read.index, str(output)))
            return
        self.pending.append((read, self.pool.submit(self._finish, read, output)))
        while len(self.pending) > self.limit:
            self._take()

    def _finish(self, read: _Read, output: torch.Tensor) -> Any:
        """The prediction, or the PalmError that is this image's failure; a write error is raised
        and stops the run (the folder, not the image, is at fault)."""
        try:
            value = self.predictor.decode(output, read.frame)
        except PalmError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - one odd output must not cost the others their results
            return PredictionError(unexpected(read.path, exc))
        if self.output.each:
            self.output.each(read.path.name, value, self.output_dir)
        return value

    def _take(self) -> None:
        read, future = self.pending.popleft()
        value = future.result()
        if isinstance(value, PalmError):
            self.problems.append((read.index, str(value)))
            return
        if self.overlays:
            self.overlays.add(read.path, self.predictor.task, value, read.photo)
        self.done.append((read.index, read.path.name, value if self.output.table else None))

    def finish(self) -> None:
        """Take back every pending result (the caller shuts the pool down, whatever happens)."""
        while self.pending:
            self._take()


def _outputs(predictor: Predictor, first: torch.Tensor, big: torch.Tensor | None, paths: list[Path]) -> list[Any]:
    """``predictor.outputs``; where a batch fails as a whole, its images one by one, so an
    image that breaks the network (or a step after it) costs only itself."""
    try:
        return predictor.outputs(first, big, paths)
    except Exception as exc:  # noqa: BLE001
        if len(paths) == 1:
            return [PredictionError(unexpected(paths[0], exc))]
    return [out for i in range(len(paths))
            for out in _outputs(predictor, first[i : i + 1], None if big is None else big[i : i + 1], paths[i : i + 1])]


def _rank_and_world() -> tuple[int, int]:
    """This process's share of a run: (rank, world size) of torch.distributed, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def predict_folder(predictor: Predictor, input_dir: Path, output_dir: Path, progress: bool = True,
                   overlays: OverlayWriter | None = None, batch_size: int = BATCH_SIZE,
                   workers: int | None = None) -> FolderRun:
    """PALM batch mode: predict every image under ``input_dir`` and write the PALM files (and,
    given ``overlays``, hand each prediction to it for the pictures).

    The output folder is checked first. A bad image is reported ("path: problem") and skipped,
    whatever went wrong with it; all other predictions are written. Files that are not images
    are listed in ``skipped`` and do not fail the run. ``workers``: decoding processes (None:
    ``default_workers``). Under torch.distributed each rank predicts every world-th image and
    writes its disc masks; rank 0 writes the CSV of all; every rank returns the whole run.
    """
    input_dir, output_dir = check_input_folder(input_dir), Path(output_dir)
    skipped: list[str] = []
    images, failures = list_images(input_dir, skipped=skipped, exclude=own_folders(input_dir, output_dir))
    if not images:
        detail = f" ({len(skipped)} other file(s): {skipped[0]}{', ...' if len(skipped) > 1 else ''})" if skipped else ""
        raise PalmError(f"{input_dir}: no images found{detail}")
    prepare_output(output_dir)
    rank, world = _rank_and_world()
    output = OUTPUTS[predictor.task]
    finisher = _Finisher(predictor, output_dir, overlays, limit=2 * batch_size + 4)
    finisher.problems += [(-1, line) for line in failures] if rank == 0 else []
    todo = []
    for index, path in list(enumerate(images))[rank::world]:
        if predictor.task in CSV_NAMES and (problem := csv_name_problem(path.name)):
            finisher.problems.append((index, f"{path}: {problem}"))
        else:
            todo.append((index, path))
    workers = default_workers() if workers is None else workers
    workers = workers if len(todo) > batch_size else 0  # one batch: starting a worker would cost more
    loader = DataLoader(_Images(todo, predictor, keep_photo=overlays is not None),
                        batch_size=max(1, batch_size), num_workers=workers, collate_fn=_collate,
                        pin_memory=predictor.device.type == "cuda")
    bar = tqdm(total=len(todo), desc=predictor.task, unit="img", disable=not progress, file=sys.stderr)
    try:
        for first, big, reads in loader:
            readable = [r for r in reads if r.problem is None]
            outputs = iter(_outputs(predictor, first, big, [r.path for r in readable]) if readable else [])
            for read in reads:
                finisher.add(read, PalmError(read.problem) if read.problem else next(outputs))
            bar.update(len(reads))
        finisher.finish()
    finally:
        finisher.pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    done, problems = finisher.done, finisher.problems
    if world > 1:
        import torch.distributed as dist

        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, (done, problems))
        done, problems = [d for part in parts for d in part[0]], [p for part in parts for p in part[1]]
    results = {name: value for _, name, value in sorted(done, key=lambda d: d[0])}
    if output.table and rank == 0:
        output.table(results, output_dir)
    problems = [line for _, line in sorted(problems, key=lambda p: p[0])]
    return FolderRun(len(images), len(results), problems, skipped)
