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
from .formats import CSV_NAMES, DISC_FOLDER, DISC_PNG_FOLDER, PALM_COLUMNS, name_problem
from .imageio import palm_mask_bmp, pixel_to_world, write_mha_mask, write_palm_mask
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


def classification_row(name: str, risk: float) -> list[str]:
    """`FileName,PM Risk`; FileName is the image's file name as PALM lists it."""
    return [name, _number(risk, name, 6)]


def fovea_row(name: str, point: tuple[float, float] | None) -> list[str]:
    """`FileName,Fovea_X,Fovea_Y` in original pixels; (0, 0) where no fovea was found (PALM's convention)."""
    return [name, _number(point[0], name, 2), _number(point[1], name, 2)] if point else [name, "0", "0"]


def write_csv(task: str, rows: list[list[str]], out_dir: Path) -> Path:
    """The task's PALM CSV (header, then ``rows`` as given), whole or not at all."""
    return _write_csv(Path(out_dir) / CSV_NAMES[task], PALM_COLUMNS[task], rows)


def write_disc_masks(name: str, disc: np.ndarray, out_dir: Path, png: bool = False) -> None:
    """`Disc_Segmentation/<stem>.bmp` (0 = disc, 255 = background), whole or not at all (a mask
    on disc is a finished one, which ``--resume`` counts on); with ``png`` also a PNG copy.
    PALM reads the BMP, grand-challenge the MHA socket: neither needs the PNG."""
    stem = Path(name).stem
    _write_whole(out_dir / DISC_FOLDER / f"{stem}.bmp", palm_mask_bmp(disc))
    if png:
        path = out_dir / DISC_FOLDER / DISC_PNG_FOLDER / f"{stem}.png"
        with writing(path):
            write_palm_mask(disc, path)


def disc_masks_done(out_dir: Path) -> set[str]:
    """Stems of the disc masks already in ``out_dir`` (what ``--resume`` need not predict again)."""
    folder = Path(out_dir) / DISC_FOLDER
    return {p.stem for p in folder.glob("*.bmp")} if folder.is_dir() else set()


class RowLog:
    """A PALM CSV written as its rows come: each row is appended (and flushed) to
    ``<CSV>.partial`` at once, so a stopped run keeps what it predicted; ``finish`` writes the
    CSV whole, sorted as asked, and removes the partial file. Under torchrun each rank keeps
    its own (``<CSV>.rank<N>.partial``)."""

    def __init__(self, task: str, out_dir: Path, rank: int = 0, world: int = 1, fresh: bool = True):
        """``fresh``: start the partial file empty; else add to what a stopped run left."""
        name = CSV_NAMES[task]
        self.path = Path(out_dir) / (f"{name}.partial" if world == 1 else f"{name}.rank{rank}.partial")
        with writing(self.path):
            self.file = open(self.path, "w" if fresh else "a", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)

    def add(self, row: list[str]) -> None:
        with writing(self.path):
            self.writer.writerow(row)
            self.file.flush()

    def close(self) -> None:
        self.file.close()

    @staticmethod
    def done(task: str, out_dir: Path) -> dict[str, list[str]]:
        """The rows an earlier run of ``task`` left in ``out_dir`` (its CSV, then every
        partial file), by file name: what ``--resume`` keeps instead of predicting again.
        A row cut short by the stop is dropped (that image is predicted again)."""
        name, width = CSV_NAMES[task], len(PALM_COLUMNS[task])
        rows: dict[str, list[str]] = {}
        final = Path(out_dir) / name
        for path in ([final] if final.is_file() else []) + sorted(Path(out_dir).glob(f"{name}*.partial")):
            with writing(path), open(path, newline="", encoding="utf-8", errors="replace") as f:
                lines = list(csv.reader(f))
            complete = path != final or not lines or lines[0] == list(PALM_COLUMNS[task])
            for row in lines[1:] if path == final else lines:
                if complete and len(row) == width and all(row):
                    rows[row[0]] = row
        return rows

    @staticmethod
    def remove_all(task: str, out_dir: Path) -> None:
        """Once the whole CSV is written: every rank's partial file of ``task``."""
        for path in Path(out_dir).glob(f"{CSV_NAMES[task]}*.partial"):
            with contextlib.suppress(OSError):
                path.unlink()


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

    each: Callable[..., None] | None  # PALM mode, per image as it comes: (name, value, out_dir, png) (a mask file)
    row: Callable[[str, Any], list[str]] | None  # PALM mode, a CSV row per image (CSV_NAMES[task])
    gc: Callable[[Any, Path, Path, str], None]  # grand-challenge: (value, input image, output file, slug)
    describe: Callable[[Any], str]  # one prediction in a log line
    marks: Callable[[Any], dict[str, Any]]  # what draw_overlay draws of one prediction


OUTPUTS = {
    "classification": TaskOutput(each=None, row=classification_row,
                                 gc=lambda risk, image, path, slug: write_gc_float(risk, path),
                                 describe=lambda risk: f"PM likelihood {risk:.4f}",
                                 marks=lambda risk: {"pm_risk": risk}),
    "fovea": TaskOutput(each=None, row=fovea_row,
                        gc=lambda xy, image, path, slug: write_gc_point(xy, image, path, name=slug),
                        describe=lambda xy: f"fovea at ({xy[0]:.1f}, {xy[1]:.1f}) px",
                        marks=lambda xy: {"fovea": xy}),
    "disc": TaskOutput(each=write_disc_masks, row=None,
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
    task of the run. An image's picture is drawn as soon as every task has predicted it (or
    failed on it), so only the predictions of images still waiting for a task are held;
    ``finish`` draws any left."""

    def __init__(self, out_dir: Path, tasks: tuple[str, ...] | list[str]):
        self.folder, self.tasks = Path(out_dir) / OVERLAY_FOLDER, tuple(tasks)
        self.pending: dict[Path, dict[str, Any]] = {}
        self.heard: dict[Path, set[str]] = {}

    def add(self, image: Path, task: str, value: Any, photo: tuple[np.ndarray, tuple[int, int]] | None = None,
            tasks: list[str] | None = None) -> None:
        """``value`` None: ``task`` failed on this image. ``photo``: the image as the predictor
        decoded it, (RGB, original size); reused where it is large enough for the picture, so
        the image is not decoded twice. ``tasks``: those the image waits for (default: all;
        fewer where a resumed run had done the others)."""
        marks = self.pending.setdefault(image, {})
        if value is not None:
            marks.update(OUTPUTS[task].marks(value))
        heard = self.heard.setdefault(image, set())
        heard.add(task)
        if heard.issuperset(self.tasks if tasks is None else tasks):
            self._draw(image, photo)

    def finish(self) -> None:
        for image in list(self.pending):
            self._draw(image)

    def _draw(self, image: Path, photo=None) -> None:
        marks = self.pending.pop(image)
        self.heard.pop(image, None)
        if not marks:
            return  # every task failed on it: nothing to show
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
