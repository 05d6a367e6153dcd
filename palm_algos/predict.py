"""One predictor for the three tasks: checkpoint in, predictions in original pixels out.

A folder is predicted as a pipeline (``predict_tasks``): each image is decoded once, in
DataLoader workers (or, for JPEGs with ``decode="gpu"``, by nvJPEG on the device), and every
task's network runs on the same batch; decoding each output to original pixels (on the
device: a disc mask crosses to the host as bytes) and writing it happen in a few threads
behind. A single image (``Predictor.predict``) is the batch of one of the same code. Under
``torchrun`` every rank predicts its share of the images and rank 0 writes the one set of
PALM files. ``predict_batch`` is the batch routine of `palm predict` and the containers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import distributed
from .cases import list_images
from .checkpoint import CheckpointError, load_checkpoint
from .data import model_views, normalise, view_box
from .errors import PalmError
from .formats import CSV_NAMES, TASKS
from .fov import Frame, as_frame
from .imageio import image_size, read_image
from .models.ensemble import Ensemble, FlipTTA
from .tasks import IMAGENET_MEAN, IMAGENET_STD, get_task
from .writers import (OUTPUTS, OverlayWriter, RowLog, csv_name_problem, disc_masks_done, own_folders, prepare_output,
                      write_csv)

BATCH_SIZE = 8  # images per forward pass in batch mode (`palm predict --batch-size`)
DECODERS = ("cpu", "gpu")  # `--decode`: Pillow in worker processes, or nvJPEG on the GPU for JPEGs
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
        self.model = model.eval()
        self.checkpoint: Path | None = None  # the file it was loaded from (Predictor.load)
        self.guide: Predictor | None = None  # the disc's second opinion where no other model gives one (guided_by)

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
        predictor = cls(model.to(dev), meta, dev, tta=tta)
        predictor.checkpoint = Path(checkpoint)
        return predictor

    def guided_by(self, guide: "Predictor") -> "Predictor":
        """This disc model with ``guide``, a joint disc + fovea heat-map model, as its refining
        pass's second opinion (``Task.heed``) wherever no other model of the run gives one:
        palm-disc and `palm predict disc --guide` then find the disc as palm-all does, where
        the fovea model runs first."""
        guide_task = self._task.guide_task
        if guide_task is None:
            raise PalmError(f"{self.checkpoint}: a {self.task} model takes no guide")
        joint = get_task(guide_task).joint_arch
        if guide.task != guide_task or guide.meta["arch"] != joint:
            raise PalmError(f"{guide.checkpoint}: not a joint disc + {guide_task} model ({guide.task}, "
                            f"{guide.meta['arch']}): it has no disc centre to guide the {self.task} (train a "
                            f"{guide_task} model with --arch {joint})")
        self.guide = guide
        return self

    def describe(self) -> str:
        """The start-of-run log line: model, architecture, members, input, device, TTA and guide."""
        members = int(self.meta.get("members", 0)) or 1
        zoom = f", refining pass x{self.zoom}" if self.zoom > 1 else ""
        guide = f"; its refining window guided by the disc centre of {self.guide.checkpoint}" if self.guide else ""
        return (f"{self.task}: model {self.checkpoint}: {self.meta['arch']}, {members} member{'s' * (members > 1)}, "
                f"{self.input_size} px{zoom}, on {self.device}, flip TTA {'on' if self.tta else 'off'}{guide}")

    def read(self, image: Path) -> tuple[Any, tuple[int, int]]:
        """The image as this model reads it (RGB at a reduced scale, original size), for
        ``predict``'s ``photo``: an overlay can then reuse it instead of decoding again."""
        return read_image(image, min_side=self.input_size * self.zoom)

    def predict(self, image: Path, photo: tuple[Any, tuple[int, int]] | None = None,
                disc: tuple[float, float] | None = None) -> Any:
        """One image (or ``photo``, what ``read`` made of it) -> prediction in original pixels:
        the batch of one of ``outputs`` and ``decode``. ``disc``: another model's disc centre
        (original pixels), which the disc's refining pass heeds."""
        return self.predict_with_disc(image, photo, disc)[0]

    def predict_with_disc(self, image: Path, photo: tuple[Any, tuple[int, int]] | None = None,
                          disc: tuple[float, float] | None = None) -> tuple[Any, tuple[float, float] | None]:
        """``predict``, and where this model puts the optic disc (``disc_centre``, original
        pixels, or None): one grand-challenge job of palm-all hands it on to the disc model, as
        ``predict_tasks`` does. Without ``disc``, the ``guide`` (if any) reads the image and
        gives it, as the fovea model of palm-all would (where the guide fails, the disc model
        works alone, as in batch mode)."""
        if disc is None and self.guide is not None:
            with contextlib.suppress(PalmError):
                disc = self.guide.predict_with_disc(image)[1]
        first, big, frame = self.views(photo or self.read(image), image)
        output = self.outputs(first[None], None if big is None else big[None], [image], [_in_view(disc, frame)])[0]
        if isinstance(output, PalmError):
            raise output
        return self.decode(output, frame, image), self.disc_centre(output, frame)

    def views(self, photo: tuple[Any, tuple[int, int]], image: Path | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None, Frame]:
        """``data.model_views`` with this model's input size, zoom, geometry and colour; a
        model that reads fields of view says in the log where it found none (``image``)."""
        views = model_views(photo, self.input_size, self.zoom, self.geometry, self.colour)
        if self.geometry == "fov" and not views[2].fov:
            log.warning("%s: no field of view found (no round, dark border around the retina); "
                        "the %s model sees the whole image", image or "an image", self.task)
        return views

    @torch.inference_mode()
    def outputs(self, first: torch.Tensor, big: torch.Tensor | None, images: list[Path],
                discs: list[tuple[float, float] | None] | None = None) -> list[Any]:
        """A batch of ``model_views`` -> each image's raw output (the refining pass merged in
        where the model has one), or its PredictionError: one image's broken output is its
        own failure, not the batch's. ``discs``: per image, another model's disc centre in
        [0, 1] of this model's input, or None; the refining pass heeds it (``Task.heed``)."""
        size = self.input_size
        outputs = [self._finite(output, image) for output, image in zip(self.forward(first), images)]
        if big is None:
            return outputs
        windows, boxes = [], []  # the refining pass, batched over the images' candidate windows
        for i, output in enumerate(outputs):
            if isinstance(output, PalmError):
                continue
            centres = self._task.view_centres(output)
            if discs and discs[i] is not None:
                heeded = self._task.heed(centres, discs[i])
                if left := sum(centre not in heeded for centre in centres):  # here palm-all and palm-disc may differ
                    log.warning("%s: disc: the refining pass looks only near the fovea model's disc centre "
                                "(%d of the first pass's %d places left out)", images[i], left, len(centres))
                centres = heeded
            centres = centres or [self._task.fallback_centre(first[i])]
            for centre in filter(None, centres):
                left, top = view_box(centre, size * self.zoom, size)
                windows.append(big[i, :, top : top + size, left : left + size])
                boxes.append((i, left, top))
        tried: dict[int, list[tuple[torch.Tensor | PredictionError, int, int]]] = defaultdict(list)
        if windows:
            for (i, left, top), window in zip(boxes, self.forward(torch.stack(windows))):
                tried[i].append((self._finite(window, images[i]), left, top))
        for i, found in tried.items():  # an image with several windows keeps its surest (the first of equals)
            window, left, top = found[0] if len(found) == 1 else max(found, key=lambda f: self._score(f[0]))
            outputs[i] = window if isinstance(window, PalmError) else \
                self._task.merge(outputs[i], window, (left, top, size), size * self.zoom)
        return outputs

    def disc_centre(self, output: Any, frame: Frame | tuple[int, int]) -> tuple[float, float] | None:
        """Where this model's raw ``output`` (its input having shown ``frame``) puts the optic
        disc, in original pixels: the joint fovea model's second opinion for the disc model."""
        centre = None if isinstance(output, PalmError) else self._task.disc_centre(output)
        return None if centre is None else as_frame(frame).original(*centre)

    def _score(self, window: torch.Tensor | PredictionError) -> float:
        """``window_score``, a broken window's error first (it must reach the user)."""
        return math.inf if isinstance(window, PalmError) else self._task.window_score(window)

    def decode(self, output: torch.Tensor, frame: Frame | tuple[int, int], image: Path | None = None) -> Any:
        """One raw output -> the prediction in original pixels, the input having shown ``frame``
        (an original (w, h): the whole image); where the task doubts it (``Task.doubt``), the
        log says why, naming ``image``: the prediction is written all the same."""
        if (doubt := self._task.doubt(output)) is not None:
            log.warning("%s: %s: %s", image or "an image", self.task, doubt)
        return self._task.decode(output, frame)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """The bare model on a (B, 3, S, S) uint8 batch: its raw outputs, left on the device
        (``decode`` brings back only what a prediction needs: a number, a point, mask bytes)."""
        batch = pixels.to(self.device, non_blocking=True)
        batch = normalise(batch, self.meta.get("mean", IMAGENET_MEAN), self.meta.get("std", IMAGENET_STD))
        if self.device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            return self.model(batch).float()

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
    predicted: int  # of them, with a prediction written (by this run or, with resume, an earlier one)
    problems: list[str]  # "path: problem" for every image (or folder) left out: the run failed
    skipped: list[str] = []  # "path: skipped, ..." for files that are not images: a notice only
    resumed: int = 0  # of ``predicted``, those an earlier run had written (``resume``)


def check_input_folder(input_dir: Path) -> Path:
    input_dir = Path(input_dir)
    if not input_dir.exists():
        raise PalmError(f"{input_dir}: no such folder")
    if not input_dir.is_dir():
        raise PalmError(f"{input_dir}: not a folder (give the folder that holds the images)")
    return input_dir


def default_workers() -> int:
    """Decoding processes beside the network: every core but one (0 on one core: decode in-line)."""
    return max(0, (os.cpu_count() or 1) - 1)


def unexpected(path: Path, exc: BaseException) -> str:
    return f"{path}: unexpected error ({type(exc).__name__}: {' '.join(str(exc).split())})"


class _Read(NamedTuple):
    index: int  # in the sorted list of the run's images
    path: Path
    frames: tuple[Frame, ...] | None  # per predictor, what its input showed of the image
    photo: Any  # what the decode made of it, kept for the overlays only
    problem: str | None  # "path: problem" when it cannot be read
    tasks: tuple[int, ...]  # the predictors (by position) that still need it


class _Reader:
    """One image decoded once, at the largest size any of the run's models needs (that model's
    ``Predictor.read``), and every model's ``Predictor.views`` of it."""

    def __init__(self, predictors: list[Predictor], keep_photo: bool):
        self.read = max(predictors, key=lambda p: p.input_size * p.zoom).read
        self.min_side = max(p.input_size * p.zoom for p in predictors)
        self.views = [p.views for p in predictors]
        self.keep_photo = keep_photo

    def __call__(self, path: Path, photo: tuple[Any, tuple[int, int]] | None = None) -> tuple[list, _Read]:
        """(per predictor (first, big), the image's _Read without index and tasks); ``photo``:
        an image already decoded (the GPU decoder's)."""
        photo = photo or self.read(path)
        views = [views(photo, path) for views in self.views]
        return [v[:2] for v in views], _Read(-1, path, tuple(v[2] for v in views), photo if self.keep_photo else None,
                                             None, ())


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


class _Images(Dataset):
    """The run's images as the networks see them, decoded in DataLoader workers; a file that
    cannot be read becomes its problem line, never an exception that would end the batch.
    With ``jpeg_bytes`` a JPEG's header is checked and its bytes handed on for the GPU decoder."""

    def __init__(self, items: list[tuple[int, Path, tuple[int, ...]]], reader: _Reader, jpeg_bytes: bool = False):
        self.items, self.reader, self.jpeg_bytes = items, reader, jpeg_bytes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int):
        index, path, tasks = self.items[k]
        try:
            if self.jpeg_bytes:
                data = path.read_bytes()
                if _is_jpeg(data):
                    image_size(path)  # the header's limits, before any pixel is decoded
                    return torch.frombuffer(bytearray(data), dtype=torch.uint8), _Read(index, path, None, None, None, tasks)
            views, read = self.reader(path)
        except PalmError as exc:
            return None, _Read(index, path, None, None, str(exc), tasks)
        except Exception as exc:  # noqa: BLE001 - one odd image must not cost the others their results
            return None, _Read(index, path, None, None, unexpected(path, exc), tasks)
        return views, read._replace(index=index, tasks=tasks)


class _Batch(NamedTuple):
    views: list[tuple[torch.Tensor, torch.Tensor | None]] | None  # per predictor, stacked over ``decoded``
    decoded: list[_Read]
    jpegs: list[tuple[torch.Tensor, _Read]]  # file bytes for the GPU decoder
    failed: list[_Read]


def _stack(views: list[list]) -> list[tuple[torch.Tensor, torch.Tensor | None]] | None:
    """Per-image views -> per predictor (first-pass batch, window-source batch or None)."""
    if not views:
        return None
    return [(torch.stack([v[p][0] for v in views]), torch.stack([v[p][1] for v in views]) if views[0][p][1] is not None
             else None) for p in range(len(views[0]))]


def _collate(samples) -> _Batch:
    """Runs in the worker: the batch's uint8 views stacked there, so the main process gets a
    few tensors (in shared memory) per batch, not an object per image."""
    decoded = [(v, r) for v, r in samples if r.problem is None and isinstance(v, list)]
    return _Batch(_stack([v for v, _ in decoded]), [r for _, r in decoded],
                  [(v, r) for v, r in samples if r.problem is None and isinstance(v, torch.Tensor)],
                  [r for v, r in samples if r.problem is not None])


class _GpuDecoder:
    """JPEG bytes -> every model's views: nvJPEG decodes the batch on ``device`` in one call
    and reduces each image there, as Pillow's reduced decode would (by 2, 4 or 8 while both
    sides stay >= the largest input any model needs); only that small copy crosses to the
    host, where ``_Reader`` makes the views (the field of view, colours) as on the CPU path.
    An image nvJPEG refuses (CMYK, broken) is decoded on the CPU instead: it costs only its
    own speed, and a broken one its own problem line."""

    def __init__(self, device: torch.device, reader: _Reader):
        self.device, self.reader = device, reader

    def __call__(self, batch: _Batch) -> _Batch:
        if not batch.jpegs:
            return batch
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            images = decode_jpeg([data for data, _ in batch.jpegs], mode=ImageReadMode.RGB, device=self.device)
        except Exception:  # noqa: BLE001 - one image nvJPEG refuses: the others one by one
            images = [self._one(data) for data, _ in batch.jpegs]
        views, decoded, failed = [], [], list(batch.failed)
        for (_, read), image in zip(batch.jpegs, images):
            try:
                each, made = self.reader(read.path, None if image is None else self._photo(image))
            except PalmError as exc:
                failed.append(read._replace(problem=str(exc)))
                continue
            except Exception as exc:  # noqa: BLE001 - one odd image must not cost the others their results
                failed.append(read._replace(problem=unexpected(read.path, exc)))
                continue
            views.append(each)
            decoded.append(made._replace(index=read.index, tasks=read.tasks))
        ours = _stack(views)
        if batch.views is None or ours is None:
            return _Batch(batch.views or ours, batch.decoded + decoded, [], failed)
        joined = [(torch.cat([a, b]), None if abig is None else torch.cat([abig, bbig]))
                  for (a, abig), (b, bbig) in zip(batch.views, ours)]
        return _Batch(joined, batch.decoded + decoded, [], failed)

    def _photo(self, image: torch.Tensor) -> tuple[Any, tuple[int, int]]:
        """(the reduced RGB on the host, original (w, h)), as ``imageio.read_image`` makes it."""
        from torchvision.transforms import v2

        h, w = image.shape[-2:]
        factor = 1
        while factor < 8 and min(h, w) // (factor * 2) >= self.reader.min_side:
            factor *= 2
        if factor > 1:
            image = v2.functional.resize(image, [h // factor, w // factor], antialias=True)
        return image.permute(1, 2, 0).cpu().numpy(), (w, h)

    def _one(self, data: torch.Tensor) -> torch.Tensor | None:
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        except Exception:  # noqa: BLE001 - decoded on the CPU instead
            return None


class _Finisher:
    """One task's side of the pipeline: decodes raw outputs to original pixels and writes them
    (``TaskOutput.each``: a disc mask's BMP) in a few threads, so the network does not wait;
    results are taken back in image order, with at most ``limit`` waiting (bounded memory),
    and a CSV task's rows go to its partial file as they are taken."""

    def __init__(self, predictor: Predictor, output_dir: Path, overlays: OverlayWriter | None, limit: int,
                 rows: RowLog | None, png: bool, run_tasks: list[str]):
        self.run_tasks = run_tasks  # every predictor's task, in the run's order
        self.position = run_tasks.index(predictor.task)  # its frame in each _Read's frames
        self.predictor, self.output, self.output_dir, self.overlays = predictor, OUTPUTS[predictor.task], output_dir, overlays
        self.limit, self.pending, self.rows, self.png = limit, deque(), rows, png
        self.done: list[tuple[int, str, list[str] | None]] = []  # (index, file name, CSV row where the task has one)
        self.problems: list[tuple[int, str]] = []
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="palm-write")

    def add(self, read: _Read, output: Any) -> None:
        if isinstance(output, PalmError):
            self._failed(read, str(output))
            return
        self.pending.append((read, self.pool.submit(self._finish, read, output)))
        while len(self.pending) > self.limit:
            self._take()

    def _failed(self, read: _Read, line: str) -> None:
        self.problems.append((read.index, line))
        if self.overlays:
            self.overlays.add(read.path, self.predictor.task, None, tasks=self._tasks(read))

    def _tasks(self, read: _Read) -> list[str]:
        """The tasks the image's picture waits for: the writer's, less those of this run that
        had nothing to do for it (done by the run resumed)."""
        idle = {task for i, task in enumerate(self.run_tasks) if i not in read.tasks}
        return [task for task in self.overlays.tasks if task not in idle]

    def _finish(self, read: _Read, output: torch.Tensor) -> Any:
        """The prediction (and its CSV row), or the PalmError that is this image's failure; a
        write error is raised and stops the run (the folder, not the image, is at fault)."""
        try:
            value = self.predictor.decode(output, read.frames[self.position], read.path)
            row = self.output.row(read.path.name, value) if self.output.row else None
        except PalmError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - one odd output must not cost the others their results
            return PredictionError(unexpected(read.path, exc))
        if self.output.each:
            self.output.each(read.path.name, value, self.output_dir, png=self.png)
        return value, row

    def _take(self) -> None:
        read, future = self.pending.popleft()
        result = future.result()
        if isinstance(result, PalmError):
            self._failed(read, str(result))
            return
        value, row = result
        if self.rows and row:
            self.rows.add(row)
        if self.overlays:
            self.overlays.add(read.path, self.predictor.task, value, read.photo, tasks=self._tasks(read))
        self.done.append((read.index, read.path.name, row))

    def finish(self) -> None:
        """Take back every pending result (the caller shuts the pool down, whatever happens)."""
        while self.pending:
            self._take()


def _outputs(predictor: Predictor, first: torch.Tensor, big: torch.Tensor | None, paths: list[Path],
             discs: list[tuple[float, float] | None]) -> list[Any]:
    """``predictor.outputs``; where a batch fails as a whole, its images one by one, so an
    image that breaks the network (or a step after it) costs only itself."""
    try:
        return predictor.outputs(first, big, paths, discs)
    except Exception as exc:  # noqa: BLE001
        if len(paths) == 1:
            return [PredictionError(unexpected(paths[0], exc))]
    return [out for i in range(len(paths))
            for out in _outputs(predictor, first[i : i + 1], None if big is None else big[i : i + 1], paths[i : i + 1],
                                discs[i : i + 1])]


def _in_view(point: tuple[float, float] | None, frame: Frame) -> tuple[float, float] | None:
    """An original-pixel ``point`` in [0, 1] of the input that showed ``frame``; None outside it."""
    if point is None or not as_frame(frame).in_view(*point):
        return None
    return as_frame(frame).normalised(*point)


def _already_done(task: str, output_dir: Path) -> tuple[dict[str, list[str]], set[str]]:
    """What an earlier run of ``task`` left in ``output_dir``: (CSV rows by file name, disc mask stems)."""
    if OUTPUTS[task].row:
        return RowLog.done(task, output_dir), set()
    return {}, disc_masks_done(output_dir)


def _silent(line: str) -> None:
    pass


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def gpu_decoding(device: torch.device, say: Callable[[str], None] = _stderr) -> bool:
    """Whether ``--decode gpu`` can run: it needs the model on a CUDA device; else one line says
    so and the CPU decodes."""
    if device.type == "cuda":
        return True
    say(f"--decode gpu: CUDA is not available (the models run on {device}); decoding on the CPU")
    return False


def image_batches(predictors: list[Predictor], todo: list[tuple[int, Path, tuple[int, ...]]], batch_size: int,
                  workers: int | None, decode: str = "cpu", keep_photo: bool = False,
                  say: Callable[[str], None] | None = None) -> Iterator[_Batch]:
    """The decoding side of the pipeline: ``todo``'s images (index, path, the predictors that
    need it) in batches of every predictor's uint8 views (on the host: with ``decode="gpu"``
    nvJPEG decodes and reduces the JPEGs on the device first)."""
    device = predictors[0].device
    gpu = decode == "gpu" and gpu_decoding(device, say or _stderr)
    workers = default_workers() if workers is None else workers
    workers = workers if len(todo) > batch_size else 0  # one batch: starting a worker would cost more
    reader = _Reader(predictors, keep_photo)
    loader = DataLoader(_Images(todo, reader, jpeg_bytes=gpu), batch_size=max(1, batch_size), num_workers=workers,
                        collate_fn=_collate, pin_memory=device.type == "cuda")
    to_device = _GpuDecoder(device, reader) if gpu else (lambda batch: batch)
    for batch in loader:
        yield to_device(batch)


def predict_tasks(predictors: list[Predictor], input_dir: Path, output_dir: Path, progress: bool = True,
                  overlays: OverlayWriter | None = None, batch_size: int = BATCH_SIZE, workers: int | None = None,
                  decode: str = "cpu", png: bool = False, resume: bool = False) -> dict[str, FolderRun]:
    """PALM batch mode for every predictor at once: each image under ``input_dir`` is decoded
    once (at the largest size any model needs) and fed to every model, in order (a model with a
    disc head, the joint fovea model, before the disc model, which heeds it; without the fovea
    task, the disc model's ``guide`` runs first for that alone); the PALM files are
    written as results come (CSV rows to ``<CSV>.partial``, replaced by the whole CSV at the
    end), and, given ``overlays``, each prediction is handed to it for the pictures.

    The output folder is checked first. A bad image is reported ("path: problem") and skipped,
    whatever went wrong with it; all other predictions are written. Files that are not images
    are listed in ``skipped`` and do not fail the run. ``workers``: decoding processes (None:
    ``default_workers``). ``decode="gpu"``: JPEGs decoded by nvJPEG on the models' GPU.
    ``png``: also a PNG copy of each disc mask. ``resume``: images whose outputs an earlier run
    left in ``output_dir`` (CSV rows, partial or whole; disc masks) are not predicted again.
    Under torch.distributed each rank predicts every world-th image and writes its disc masks;
    rank 0 writes the CSVs of all; every rank returns the whole run.
    """
    input_dir, output_dir = check_input_folder(input_dir), Path(output_dir)
    tasks = [p.task for p in predictors]
    guides = [p.guide for p in predictors if p.guide is not None and p.guide.task not in tasks]  # run first, unwritten
    runners = guides + predictors  # by position: each image's views and frames, ``_Read.tasks``
    skipped: list[str] = []
    images, failures = list_images(input_dir, skipped=skipped, exclude=own_folders(input_dir, output_dir))
    if not images:
        detail = f" ({len(skipped)} other file(s): {skipped[0]}{', ...' if len(skipped) > 1 else ''})" if skipped else ""
        raise PalmError(f"{input_dir}: no images found{detail}")
    prepare_output(output_dir)
    rank, world = distributed.rank_and_world()
    earlier = {task: _already_done(task, output_dir) if resume else ({}, set()) for task in tasks}
    names = {path.name for path in images}
    resumed = {task: {name: row for name, row in earlier[task][0].items() if name in names} for task in tasks}
    masks_done = {task: earlier[task][1] for task in tasks}
    problems: dict[str, list[tuple[int, str]]] = {task: [(-1, line) for line in failures] if rank == 0 else [] for task in tasks}
    todo, resumed_count = [], {task: 0 for task in tasks}
    for index, path in list(enumerate(images))[rank::world]:
        need = []
        for p, predictor in enumerate(predictors):
            task = predictor.task
            if path.name in resumed[task] or path.stem in masks_done[task]:
                resumed_count[task] += 1
            elif task in CSV_NAMES and (problem := csv_name_problem(path.name)):
                problems[task].append((index, f"{path}: {problem}"))
            else:
                need.append(len(guides) + p)
        if need:  # a guide runs where a model it guides does
            aims = [g for g, guide in enumerate(guides) if any(runners[p].guide is guide for p in need)]
            todo.append((index, path, tuple(aims + need)))
    total = sum(1 for k in range(len(images)) if any(  # the whole run's images to decode (progress, all ranks)
        not (images[k].name in resumed[t] or images[k].stem in masks_done[t]) for t in tasks))
    if decode == "gpu" and not gpu_decoding(predictors[0].device, _stderr if rank == 0 else _silent):
        decode = "cpu"
    rows = {t: RowLog(t, output_dir, rank, world, fresh=not resume) for t in tasks if OUTPUTS[t].row}
    finishers = [_Finisher(p, output_dir, overlays, limit=2 * batch_size + 4, rows=rows.get(p.task), png=png,
                           run_tasks=[r.task for r in runners])
                 for p in predictors]
    bar = tqdm(total=total, desc="+".join(tasks), unit="img", disable=not progress, file=sys.stderr)
    try:
        for batch in image_batches(runners, todo, batch_size, workers, decode, keep_photo=overlays is not None):
            discs = {}  # image index -> the disc centre a model found (original pixels), for the models after it
            for p, (predictor, finisher) in enumerate(zip(runners, [None] * len(guides) + finishers)):
                mine = [k for k, read in enumerate(batch.decoded) if p in read.tasks]
                if mine:
                    first, big = batch.views[p]
                    if len(mine) < len(batch.decoded):
                        first, big = first[mine], None if big is None else big[mine]
                    reads = [batch.decoded[k] for k in mine]
                    heard = [_in_view(discs.get(read.index), read.frames[p]) for read in reads]
                    for read, output in zip(reads, _outputs(predictor, first, big, [r.path for r in reads], heard)):
                        if (centre := predictor.disc_centre(output, read.frames[p])) is not None:
                            discs[read.index] = centre
                        if finisher:
                            finisher.add(read, output)
                for read in batch.failed:
                    if p in read.tasks and finisher:
                        finisher.add(read, PalmError(read.problem))
            bar.update(min(world * (len(batch.decoded) + len(batch.failed)), total - bar.n))  # rank 0 stands for all
        for finisher in finishers:
            finisher.finish()
    finally:
        for finisher in finishers:
            finisher.pool.shutdown(wait=True, cancel_futures=True)
        for row_log in rows.values():
            row_log.close()
        bar.close()
    parts = distributed.gather(([(f.done, problems[f.predictor.task] + f.problems) for f in finishers], resumed_count))
    order = {path.name: index for index, path in enumerate(images)}
    runs = {}
    for p, task in enumerate(tasks):
        done = [d for part, _ in parts for d in part[p][0]]
        failed = [line for _, line in sorted((q for part, _ in parts for q in part[p][1]), key=lambda q: q[0])]
        earlier_count = sum(counts[task] for _, counts in parts)
        if task in rows and rank == 0:
            table = resumed[task] | {name: row for _, name, row in done}
            write_csv(task, [table[name] for name in sorted(table, key=order.get)], output_dir)
            RowLog.remove_all(task, output_dir)
        runs[task] = FolderRun(len(images), len(done) + earlier_count, failed, skipped, earlier_count)
    return runs


def predict_folder(predictor: Predictor, input_dir: Path, output_dir: Path, progress: bool = True,
                   overlays: OverlayWriter | None = None, batch_size: int = BATCH_SIZE,
                   workers: int | None = None, **options) -> FolderRun:
    """PALM batch mode for one model: ``predict_tasks`` with one predictor."""
    return predict_tasks([predictor], input_dir, output_dir, progress, overlays, batch_size, workers,
                         **options)[predictor.task]


class BatchRun(NamedTuple):
    runs: dict[str, FolderRun]  # by task, in TASKS order
    failed: dict[str, str]  # task -> why it was not run (its model could not be loaded; ``keep_going`` only)
    overlays: Path | None  # the pictures' folder, where they were asked for


def predict_batch(checkpoints: dict[str, Path], input_dir: Path, output_dir: Path,
                  load: Callable[[str, Path], Predictor], say: Callable[[str], None] = print,
                  warn: Callable[[str], None] = print, overlays: bool = False, keep_going: bool = False, progress: bool = True,
                  **options) -> BatchRun:
    """The one batch routine of `palm predict` and the containers' PALM batch mode: check the
    folders, load every task's predictor (``load(task, checkpoint)``) and ``say`` what runs,
    predict all tasks in one pass (``options``: ``predict_tasks``'s), draw the overlays, and
    ``warn`` of every problem ("failed: ...", tagged with its task when there are several) and
    skipped file.

    ``keep_going`` (palm-all): a task whose model cannot be loaded is reported and left out,
    the others still run; otherwise its PalmError ends the run before anything is predicted.
    Under torchrun only rank 0 speaks.
    """
    check_input_folder(input_dir)  # the folders first: no model is loaded for a typo
    prepare_output(output_dir)
    if distributed.rank_and_world()[0] != 0:
        say = warn = _silent
    tasks = sorted(checkpoints, key=TASKS.index)
    predictors, failed = [], {}
    for task in tasks:
        try:
            predictor = load(task, checkpoints[task])
        except PalmError as exc:
            if not keep_going:
                raise
            failed[task] = str(exc)
            warn(f"error: {task}: {exc}")  # the other tasks still run
            continue
        say(predictor.describe() if hasattr(predictor, "describe") else f"{task}: model {checkpoints[task]}")
        predictors.append(predictor)
    if not predictors:
        return BatchRun({}, failed, None)
    pictures = OverlayWriter(output_dir, [p.task for p in predictors]) if overlays else None
    runs = predict_tasks(predictors, input_dir, output_dir, progress=progress, overlays=pictures, **options)
    if pictures:
        pictures.finish()
    for task, run in runs.items():
        for line in run.problems:
            warn(f"failed: {task}: {line}" if len(tasks) > 1 else f"failed: {line}")
    for line in next(iter(runs.values())).skipped:
        warn(line)
    return BatchRun(runs, failed, pictures.folder if pictures else None)
