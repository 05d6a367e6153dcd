"""One predictor for the three tasks: checkpoint in, predictions in original pixels out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torchvision.transforms import v2
from tqdm import tqdm

from .cases import list_images
from .checkpoint import CheckpointError, load_checkpoint
from .data import normalise, square_resize, view_box
from .errors import PalmError
from .formats import CSV_NAMES
from .imageio import read_image
from .models.ensemble import Ensemble, FlipTTA
from .tasks import IMAGENET_MEAN, IMAGENET_STD, get_task
from .writers import OUTPUTS, OverlayWriter, csv_name_problem, prepare_output


class PredictionError(PalmError):
    """One image's prediction is unusable (e.g. not a finite number); the others go on."""


class Predictor:
    """``Predictor.load(path).predict(image)`` -> PM risk | (x, y) | bool disc mask (H, W)."""

    def __init__(self, model: torch.nn.Module, meta: dict[str, Any], device: torch.device, tta: bool | None = None):
        self.meta, self.device = meta, device
        self.task = meta["task"]
        self._task = get_task(self.task)
        self.input_size = int(meta["input_size"])
        self.tta = self._task.tta_default if tta is None else tta
        if self.tta:
            model = FlipTTA(model, self._task.average, self._task.flip_back)
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
        return read_image(image, min_side=self.input_size * int(self.meta.get("zoom", 1)))

    @torch.inference_mode()
    def predict(self, image: Path, photo: tuple[Any, tuple[int, int]] | None = None) -> Any:
        """One image (or ``photo``, what ``read`` made of it) -> prediction in original pixels;
        models trained with ``zoom`` > 1 run a second, refining pass on the window around what
        the first pass found."""
        size_in, zoom = self.input_size, int(self.meta.get("zoom", 1))
        rgb, size = photo or self.read(image)
        pixels = square_resize(rgb, size_in * zoom)
        if zoom == 1:
            return self._task.decode(self._finite(self.forward(pixels), image), size)
        output = self._finite(self.forward(v2.functional.resize(pixels, [size_in, size_in], antialias=True)), image)
        centre = self._task.view_centre(output)
        if centre is not None:
            left, top = view_box(centre, size_in * zoom, size_in)
            window = self._finite(self.forward(pixels[:, top : top + size_in, left : left + size_in]), image)
            output = self._task.merge(output, window, (left, top, size_in), size_in * zoom)
        return self._task.decode(output, size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """The bare model on one (3, S, S) uint8 image: its raw output, on the CPU."""
        batch = normalise(pixels[None], self.meta.get("mean", IMAGENET_MEAN), self.meta.get("std", IMAGENET_STD))
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            return self.model(batch.to(self.device))[0].float().cpu()

    @staticmethod
    def _finite(output: torch.Tensor, image: Path) -> torch.Tensor:
        """The raw output, refused where it holds NaN or infinity: such a prediction is never
        written (as NaN in a CSV, invalid JSON, or an empty disc mask that looks real)."""
        if not bool(torch.isfinite(output).all()):
            raise PredictionError(f"{image}: the model's output is not finite (NaN or infinity); nothing written "
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


def predict_folder(predictor: Predictor, input_dir: Path, output_dir: Path, progress: bool = True,
                   overlays: OverlayWriter | None = None) -> FolderRun:
    """PALM batch mode: predict every image under ``input_dir`` and write the PALM files (and,
    given ``overlays``, hand each prediction to it for the pictures).

    The output folder is checked first. A bad image is reported ("path: problem") and skipped,
    whatever went wrong with it; all other predictions are written. Files that are not images
    are listed in ``skipped`` and do not fail the run.
    """
    input_dir, output_dir = check_input_folder(input_dir), Path(output_dir)
    skipped: list[str] = []
    images, failures = list_images(input_dir, skipped=skipped)
    if not images:
        detail = f" ({len(skipped)} other file(s): {skipped[0]}{', ...' if len(skipped) > 1 else ''})" if skipped else ""
        raise PalmError(f"{input_dir}: no images found{detail}")
    prepare_output(output_dir)
    output = OUTPUTS[predictor.task]
    results: dict[str, Any] = {}
    for path in tqdm(images, desc=f"{predictor.task}", disable=not progress, file=sys.stderr):
        if predictor.task in CSV_NAMES and (problem := csv_name_problem(path.name)):
            failures.append(f"{path}: {problem}")
            continue
        try:
            photo = predictor.read(path)
            value = predictor.predict(path, photo)
        except PalmError as exc:
            failures.append(str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - one odd image must not cost the others their results
            failures.append(f"{path}: unexpected error ({type(exc).__name__}: {' '.join(str(exc).split())})")
            continue
        if output.each:
            output.each(path.name, value, output_dir)  # a write error stops the run: OutputError
        if overlays:
            overlays.add(path, predictor.task, value, photo)
        results[path.name] = value
    if output.table:
        output.table(results, output_dir)
    return FolderRun(len(images), len(results), failures, skipped)
