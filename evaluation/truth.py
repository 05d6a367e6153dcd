"""The ground truth an evaluation scores against, and whose problems are the organiser's.

A folder (or .zip) in any layout ``palm_algos.cases.read_cases`` reads, or the ground truth
as organisers ship it, without the images: label sheets (``imgName, Label, Fovea_X,
Fovea_Y``, xlsx or csv) and/or ``Disc_Masks/``. Without the images, a case's size comes from
its mask, else from ``Width``/``Height`` columns of a sheet; where neither exists the size is
unknown (``UNKNOWN_SIZE``) and only the normalised fovea distance is left out.

Every problem here raises GroundTruthError (exit status 2, "Ground truth problem
(organiser's side): ..."), never a participant's "Invalid submission".
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pandas as pd

from palm_algos.cases import PALM_NAME, Case, list_images, read_cases, read_sheet
from palm_algos.errors import PalmError
from palm_algos.imageio import ImageError, image_size, is_image

from .unpack import is_junk, truth_folder
from .validation import GroundTruthError

UNKNOWN_SIZE = (0, 0)
SHEET_SUFFIXES = (".xlsx", ".xls", ".csv")
_SIZE_COLUMNS = {"width": ("width", "imagewidth", "imgwidth"), "height": ("height", "imageheight", "imgheight")}


@dataclass
class GroundTruth:
    root: Path  # as given (a folder or a zip), for messages
    cases: list[Case]
    problems: list[str] = field(default_factory=list)  # one line each, naming the file
    layout: str = ""


def size_known(case: Case) -> bool:
    return tuple(case.size) != UNKNOWN_SIZE


def annotated(case: Case) -> bool:
    return case.label is not None or case.fovea is not None or case.fovea_absent or case.disc_mask is not None


@contextmanager
def open_ground_truth(path: Path) -> Iterator[GroundTruth]:
    """The ground truth at ``path`` (a folder or a zip, extracted for as long as it is open)."""
    with truth_folder(path) as folder:
        yield read_ground_truth(folder, shown=Path(path))


def read_ground_truth(folder: Path, shown: Path | None = None) -> GroundTruth:
    folder = Path(folder)
    shown = Path(shown or folder)

    def named(text: str) -> str:  # messages name what the organiser gave, not a temporary folder
        return text.replace(str(folder), str(shown)) if folder != shown else text

    images, _ = list_images(folder)
    if images:
        try:
            table = read_cases(folder)
        except PalmError as exc:
            raise GroundTruthError(named(str(exc))) from None
        truth = GroundTruth(shown, table.cases, [named(p) for p in table.problems], table.layout)
    else:
        truth = _without_images(folder, shown)
        truth.problems = [named(p) for p in truth.problems]
    if not any(annotated(c) for c in truth.cases):
        first = f"; first problem reading it: {truth.problems[0]}" if truth.problems else ""
        raise GroundTruthError(
            f"{shown}: no annotations for any of its {len(truth.cases)} images: no labels (a Label column or "
            f"H/N/P file names), fovea positions (Fovea_X, Fovea_Y) or Disc_Masks/{first}", truth.problems)
    return truth


# -- the organisers' release: sheets and masks, no images ------------------------------------


def _without_images(folder: Path, shown: Path) -> GroundTruth:
    files = [p for p in sorted(folder.rglob("*")) if not any(is_junk(part) for part in p.relative_to(folder).parts)]
    sheets = [p for p in files if p.is_file() and p.suffix.lower() in SHEET_SUFFIXES and not p.name.startswith("~$")]
    mask_dirs = [p for p in files if p.is_dir() and p.name.lower() == "disc_masks"]
    if not sheets and not mask_dirs:
        raise GroundTruthError(f"{shown}: no images, label sheet or Disc_Masks/ folder found")
    problems: list[str] = []
    records: dict[str, dict] = {}
    for mask_dir in mask_dirs:
        for path in sorted(mask_dir.iterdir()):
            if is_junk(path.name) or not path.is_file():
                continue
            if not is_image(path):
                problems.append(f"{path}: skipped, not an image")
                continue
            record = records.setdefault(path.stem, {})
            if "mask" in record:
                problems.append(f"{path}: second mask for {path.stem!r} (also {record['mask']}); skipped")
                continue
            try:
                record["size"] = image_size(path)
            except ImageError as exc:
                problems.append(str(exc))
                continue
            record["mask"] = path
    for sheet in sheets:
        _read_sheet_rows(sheet, records, problems)
    cases = []
    for name, record in records.items():
        label = record.get("label")
        if label is None and PALM_NAME.match(name) and name[0].upper() in "HNP":
            label = int(name[0].upper() == "P")
        fovea = record.get("fovea")
        cases.append(Case(
            name=name,
            image=record.get("mask", folder / name),  # no image: a mask shares its geometry
            size=record.get("size", UNKNOWN_SIZE),
            label=label,
            fovea=None if fovea == (0.0, 0.0) else fovea,
            fovea_absent=fovea == (0.0, 0.0),
            disc_mask=record.get("mask"),
            disc_is_dark=True,
        ))
    return GroundTruth(shown, cases, problems, "palm (no images)")


def _norm(text: object) -> str:
    return re.sub(r"[^a-z]", "", str(text).lower())


def _read_sheet_rows(sheet: Path, records: dict[str, dict], problems: list[str]) -> None:
    if sheet.suffix.lower() == ".csv":
        head = sheet.read_text(errors="replace").split("\n", 1)[0]
        if not any(a in _norm(head) for a in ("imgname", "fovea", "label")):
            return  # some other csv (notes, a submission): not a label sheet
    try:
        frame = read_sheet(sheet)
    except PalmError as exc:
        problems.append(str(exc))
        return
    sizes = _size_columns(sheet)
    seen: set[str] = set()
    for index, row in frame.iterrows():
        where = f"{sheet}: row {index + 2} ({row['name']})"
        name = str(row["name"])
        if name in seen:
            problems.append(f"{sheet}: {name!r} appears more than once; the first row is used")
            continue
        seen.add(name)
        update = {}
        try:
            if "label" in frame.columns and pd.notna(row["label"]) and str(row["label"]).strip():
                label = _number(row["label"], where, "Label")
                if label not in (0, 1):
                    raise GroundTruthError(f"{where}: Label must be 0 or 1, got {row['label']!r}")
                update["label"] = int(label)
            if "x" in frame.columns and "y" in frame.columns:
                update["fovea"] = (_number(row["x"], where, "Fovea_X"), _number(row["y"], where, "Fovea_Y"))
            if sizes is not None and index in sizes.index:
                width, height = (_number(sizes.loc[index, c], where, c) for c in ("width", "height"))
                if width < 1 or height < 1 or width != int(width) or height != int(height):
                    raise GroundTruthError(f"{where}: Width and Height must be whole numbers of pixels")
                update["sheet_size"] = (int(width), int(height))
        except GroundTruthError as exc:
            problems.append(str(exc).removeprefix("Ground truth problem (organiser's side): "))
            continue
        record = records.setdefault(name, {})
        for key, value in update.items():
            if key == "sheet_size":
                if "size" in record and record["size"] != value:
                    problems.append(f"{where}: Width x Height {value[0]}x{value[1]} differs from its mask "
                                    f"({record['size'][0]}x{record['size'][1]}); the mask's size is used")
                record.setdefault("size", value)
            elif key in record and record[key] != value:
                raise GroundTruthError(f"{where}: {key} {value} disagrees with {record['from'][key]} ({record[key]}): "
                                       f"two label sheets that disagree; keep the right one")
            else:
                record[key] = value
                record.setdefault("from", {})[key] = where


def _size_columns(sheet: Path) -> pd.DataFrame | None:
    """Width and Height columns of a sheet, indexed like read_sheet's rows; None where absent."""
    try:
        frame = (pd.read_csv(sheet, dtype=str, skipinitialspace=True) if sheet.suffix.lower() == ".csv"
                 else pd.read_excel(sheet, dtype=str))
    except Exception:  # read_sheet has already read it; a second failure is not news
        return None
    found = {}
    for key, aliases in _SIZE_COLUMNS.items():
        found[key] = next((c for c in frame.columns if _norm(c) in aliases), None)
    if None in found.values():
        return None
    return frame[[found["width"], found["height"]]].set_axis(["width", "height"], axis=1)


def _number(value: object, where: str, column: str) -> float:
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()
    if not text:
        raise GroundTruthError(f"{where}: {column} is empty")
    try:
        number = float(text)
    except ValueError:
        raise GroundTruthError(f"{where}: {column} is not a number ({text!r})") from None
    if not math.isfinite(number):
        raise GroundTruthError(f"{where}: {column} is not a finite number ({text!r})")
    return number
