"""Prediction files in the PALM submission layout (CSV, BMP/PNG masks) and grand-challenge's
value formats. The CLI and the containers both write through here.

Writing never loses what is already there: the output folder is checked before anything is
predicted (``prepare_output``), every file (CSV, JSON, masks, overlays) is written whole or not
at all (``atomic``: a temporary file, checked, renamed into place), and a file system error is
one ``OutputError`` line naming the file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from .atomic import write_bytes
from .errors import PalmError, one_line
from .formats import CSV_NAMES, DISC_FOLDER, PALM_COLUMNS, name_problem
from .imageio import pixel_to_world, write_mha_mask, write_palm_mask
from .overlays import SIDE, draw_overlay, read_photo, save_overlay


class OutputError(PalmError):
    """The outputs cannot be written where they were asked for (the message says where and why)."""


def prepare_output(out_dir: Path) -> Path:
    """Create ``out_dir`` and make sure a file can be written in it, before any work is done."""
    out_dir = Path(out_dir)
    for folder in (out_dir, *out_dir.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                what = "is a file" if folder.is_file() else "is not a folder"
                where = what if folder == out_dir else f"cannot be created: {folder} {what}"
                raise OutputError(f"{out_dir}: output folder {where}")
            break
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot write the outputs in this folder ({exc.strerror or exc})") from None
    return out_dir


@contextlib.contextmanager
def writing(path: Path):
    """Turn a file system error while writing ``path`` into one OutputError line."""
    try:
        yield
    except OSError as exc:
        where = exc.filename if exc.filename else path
        raise OutputError(f"{where}: cannot write the outputs ({exc.strerror or exc})") from None


def csv_name_problem(name: str) -> str | None:
    """Why a file name cannot be a row of a PALM CSV, or None: ``formats.name_problem``, the
    rule the evaluation reads FileName cells by."""
    problem = name_problem(name)
    return f"file name {problem}" if problem else None


def write_classification_csv(risks: dict[str, float], out_dir: Path) -> Path:
    """`FileName,PM Risk`; FileName is the image's file name as PALM lists it."""
    return _write_csv(out_dir / CSV_NAMES["classification"], PALM_COLUMNS["classification"],
                      [[name, _number(risk, name, 6)] for name, risk in risks.items()])


def write_fovea_csv(points: dict[str, tuple[float, float] | None], out_dir: Path) -> Path:
    """`FileName,Fovea_X,Fovea_Y` in original pixels; (0, 0) where no fovea was found (PALM's convention)."""
    return _write_csv(out_dir / CSV_NAMES["fovea"], PALM_COLUMNS["fovea"],
                      [[name, _number(p[0], name, 2), _number(p[1], name, 2)] if p else [name, "0", "0"]
                       for name, p in points.items()])


def write_disc_masks(name: str, disc: np.ndarray, out_dir: Path, png: bool = True) -> None:
    """`Disc_Segmentation/<stem>.bmp` (0 = disc, 255 = background), and a PNG twin."""
    stem = Path(name).stem
    for path in [out_dir / DISC_FOLDER / f"{stem}.bmp"] + ([out_dir / DISC_FOLDER / "png" / f"{stem}.png"] if png else []):
        with writing(path):
            write_palm_mask(disc, path)


def write_gc_float(value: float, path: Path) -> None:
    _write_json(float(value), path)


def write_gc_point(xy: tuple[float, float], image: Path, path: Path, name: str = "fovea") -> None:
    """grand-challenge Point: 3 coordinates in the world space of the input image. The fovea
    models always give a position (the evaluation accepts no null), so there is no "none" case."""
    x, y = pixel_to_world(image, *xy)
    _write_json({"version": {"major": 1, "minor": 0}, "type": "Point", "name": name, "point": [x, y, 0.0]}, path)


def write_gc_mask(disc: np.ndarray, image: Path, path: Path) -> None:
    with writing(path):
        write_mha_mask(disc, path, reference=image)


class TaskOutput(NamedTuple):
    """How one task's predictions are written and shown: the writing side of the task table,
    which the predictor and the containers ask instead of comparing task names."""

    each: Callable[[str, Any, Path], None] | None  # PALM mode, per image as it comes (a mask file)
    table: Callable[[dict[str, Any], Path], Path] | None  # PALM mode, once for all images (a CSV)
    gc: Callable[[Any, Path, Path, str], None]  # grand-challenge: (value, input image, output file, slug)
    describe: Callable[[Any], str]  # one prediction in a log line
    marks: Callable[[Any], dict[str, Any]]  # what draw_overlay draws of one prediction


OUTPUTS = {
    "classification": TaskOutput(each=None, table=write_classification_csv,
                                 gc=lambda risk, image, path, slug: write_gc_float(risk, path),
                                 describe=lambda risk: f"PM likelihood {risk:.4f}",
                                 marks=lambda risk: {"pm_risk": risk}),
    "fovea": TaskOutput(each=None, table=write_fovea_csv,
                        gc=lambda xy, image, path, slug: write_gc_point(xy, image, path, name=slug),
                        describe=lambda xy: f"fovea at ({xy[0]:.1f}, {xy[1]:.1f}) px",
                        marks=lambda xy: {"fovea": xy}),
    "disc": TaskOutput(each=write_disc_masks, table=None,
                       gc=lambda disc, image, path, slug: write_gc_mask(disc, image, path),
                       describe=lambda disc: f"disc of {int(disc.sum())} px",
                       marks=lambda disc: {"disc": disc}),
}

OVERLAY_FOLDER = "overlays"


def own_folders(input_dir: Path, out_dir: Path) -> list[Path]:
    """The folders a run writes that may lie inside its input folder: never read back as input.
    The output folder itself where it lies below the input; its mask and overlay folders where
    the two are one."""
    input_dir, out_dir = Path(input_dir).resolve(), Path(out_dir).resolve()
    return [out_dir / DISC_FOLDER, out_dir / OVERLAY_FOLDER] + ([out_dir] if out_dir != input_dir else [])


class OverlayWriter:
    """``overlays/<stem>.jpg`` in the output folder: one picture per image with the marks of every
    task of the run. An image's picture is drawn when the run's last task has predicted it, so
    only the earlier tasks' predictions are held (in ``TASKS`` order the disc comes last: no
    full-size mask is kept); ``finish`` draws the images the last task left out."""

    def __init__(self, out_dir: Path, tasks: tuple[str, ...] | list[str]):
        self.folder, self.last = Path(out_dir) / OVERLAY_FOLDER, tasks[-1]
        self.pending: dict[Path, dict[str, Any]] = {}

    def add(self, image: Path, task: str, value: Any, photo: tuple[np.ndarray, tuple[int, int]] | None = None) -> None:
        """``photo``: the image as the predictor decoded it, (RGB, original size); reused where it
        is large enough for the picture, so the image is not decoded twice."""
        self.pending.setdefault(image, {}).update(OUTPUTS[task].marks(value))
        if task == self.last:
            self._draw(image, photo)

    def finish(self) -> None:
        for image in list(self.pending):
            self._draw(image)

    def _draw(self, image: Path, photo=None) -> None:
        marks = self.pending.pop(image)
        if photo is None or not _fits_picture(*photo):
            photo = read_photo(image)
        path = self.folder / f"{Path(image).stem}.jpg"
        with writing(path):
            save_overlay(draw_overlay(photo[0], size=photo[1], **marks), path)


def _fits_picture(rgb: np.ndarray, size: tuple[int, int]) -> bool:
    """Whether a decoded copy is the whole image or large enough for a SIDE px picture."""
    return rgb.shape[1::-1] == tuple(size) or min(rgb.shape[:2]) >= SIDE * min(size) / max(size)


def _number(value: float, name: str, digits: int) -> str:
    if not math.isfinite(value):
        raise OutputError(f"{name}: refusing to write a non-finite prediction ({value})")
    return f"{value:.{digits}f}"


def _write_csv(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> Path:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    try:
        data = text.getvalue().encode("utf-8")
    except UnicodeEncodeError as exc:  # callers check names first (csv_name_problem)
        bad = one_line(exc.object[max(exc.start - 40, 0) : exc.end + 40])
        raise OutputError(f"{path}: not written: a file name is not valid UTF-8 (...{bad}...)") from None
    _write_whole(path, data)
    return path


def _write_json(value, path: Path) -> None:
    try:
        text = json.dumps(value, allow_nan=False) + "\n"
    except ValueError:
        raise OutputError(f"{path}: refusing to write a non-finite value ({value})") from None
    _write_whole(path, text.encode("utf-8"))


def _write_whole(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (``atomic``); a failure is one OutputError line."""
    with writing(path):
        write_bytes(path, data)
