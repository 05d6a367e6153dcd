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

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from palm_algos.cases import Case, list_images, read_cases
from palm_algos.errors import DataError, PalmError
from palm_algos.imageio import ImageError, image_size, is_image
from palm_algos.sheets import SHEET_SUFFIXES, label, may_be_label_sheet, name_label, number, read_sheet

from .unpack import is_junk, truth_folder
from .validation import GroundTruthError

UNKNOWN_SIZE = (0, 0)


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
        if label is None:
            label = name_label(name)
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


def _read_sheet_rows(sheet: Path, records: dict[str, dict], problems: list[str]) -> None:
    if not may_be_label_sheet(sheet):
        return  # some other csv (notes, a submission): not a label sheet
    try:
        frame = read_sheet(sheet)
    except PalmError as exc:
        problems.append(str(exc))
        return
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
            found = label(row["label"], where) if "label" in frame.columns else None
            if found is not None:
                update["label"] = found
            if "x" in frame.columns and "y" in frame.columns:
                update["fovea"] = (number(row["x"], where, "Fovea_X"), number(row["y"], where, "Fovea_Y"))
            if "width" in frame.columns:
                width, height = (number(row[c], where, c) for c in ("width", "height"))
                if width < 1 or height < 1 or width != int(width) or height != int(height):
                    raise DataError(f"{where}: Width and Height must be whole numbers of pixels")
                update["sheet_size"] = (int(width), int(height))
        except DataError as exc:
            problems.append(str(exc))
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
