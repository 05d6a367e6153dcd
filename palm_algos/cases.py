"""One case table for every data layout: PALM release, IDRiD, Drishti-GS1, DRIONS, plain folders.

``read_cases(folder)`` recognises the layout and returns the cases it found together with
the problems it met (one line each, naming the file). Nothing downstream knows where a case
came from: training, prediction and evaluation all see ``Case`` records.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import DataError
from .imageio import IMAGE_SUFFIXES, ImageError, image_size, is_image, read_grey
from .sheets import SHEET_SUFFIXES, label, may_be_label_sheet, name_label, number, read_sheet

MASK_FOLDERS = {"disc_masks", "disc-softmaps", "masks", "disc_segmentation", "lesion_masks"}


@dataclass(frozen=True)
class Case:
    """One image and the ground truth its source provides.

    ``fovea`` is (x, y) in original pixels; ``fovea_absent`` is True where the annotation says
    no fovea is visible (PALM writes (0, 0)); both empty means the source has no fovea data.
    """

    name: str
    image: Path
    size: tuple[int, int]
    label: int | None = None
    fovea: tuple[float, float] | None = None
    fovea_absent: bool = False
    disc_centre: tuple[float, float] | None = None  # (x, y) in original pixels (IDRiD's OD markups)
    disc_mask: Path | None = None
    disc_is_dark: bool = True  # PALM BMP: disc = 0; soft maps and DRIONS: disc = bright

    def read_disc(self) -> np.ndarray:
        """The disc as a boolean (H, W) array at the mask's own resolution (binarised at 128)."""
        if self.disc_mask is None:
            raise DataError(f"{self.name}: no disc mask")
        grey = read_grey(self.disc_mask)
        return grey < 128 if self.disc_is_dark else grey >= 128


@dataclass
class CaseTable:
    """Cases plus the problems met while reading them (one line each, naming the file)."""

    cases: list[Case] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    layout: str = ""

    def __len__(self) -> int:
        return len(self.cases)

    def by_name(self) -> dict[str, Case]:
        return {c.name: c for c in self.cases}


def read_cases(root: Path, check_images: bool = False) -> CaseTable:
    """Read any supported layout under ``root``; raise DataError only if nothing is usable."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if root.is_file():
        raise DataError(f"{root}: expected a folder of images, got a file")
    if list(root.glob("*Fovea_Center_Markups.csv")):
        table = _read_idrid(root)
    elif (root / "disc-softmaps").is_dir():
        table = _read_paired_masks(root, "drishti-gs1", "disc-softmaps", "_ODsegSoftmap", dark=False)
    elif (root / "images").is_dir() and (root / "masks").is_dir():
        table = _read_paired_masks(root, "images+masks", "masks", "", dark=False)
    else:
        table = _read_palm(root)
    if check_images:
        table.cases = _keep_readable(table.cases, table.problems)
    if not table.cases:
        detail = f": {table.problems[0]}" if table.problems else ""
        raise DataError(f"{root}: no usable images found (supported: {', '.join(IMAGE_SUFFIXES)}){detail}")
    return table


def list_images(root: Path, skipped: list[str] | None = None, exclude: tuple[Path, ...] | list[Path] = ()
                ) -> tuple[list[Path], list[str]]:
    """Every image file under ``root`` (sorted, nested folders and linked folders included) and
    the problems: a folder that cannot be listed, a broken link, a special file or a duplicate
    name (images that are left out). Other files (not images) are noted in ``skipped`` when it
    is given, else among the problems; sheets and notes (csv, xlsx, json, txt, md), hidden
    files and folders, mask folders (``Disc_Masks``...) and the folders in ``exclude`` (a run's
    own outputs, ``writers.own_folders``) are passed over silently."""
    root = Path(root)
    problems: list[str] = []
    notes = problems if skipped is None else skipped
    found: list[Path] = []
    seen_folders: set[str] = set()
    excluded = {os.path.realpath(p) for p in exclude}

    def unlistable(exc: OSError) -> None:
        problems.append(f"{exc.filename}: cannot list this folder ({exc.strerror or exc}); its files are left out")

    for folder, subfolders, files in os.walk(root, onerror=unlistable, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen_folders:  # a link back to a folder already listed (a loop, or a second way in)
            notes.append(f"{folder}: skipped, a link to a folder already listed ({real})")
            subfolders[:] = []
            continue
        seen_folders.add(real)
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d.lower() not in MASK_FOLDERS
                         and os.path.realpath(os.path.join(folder, d)) not in excluded]
        found += (Path(folder) / name for name in files if not name.startswith("."))
    images, seen = [], {}
    for path in sorted(found):
        if not is_image(path):
            if path.suffix.lower() not in (".csv", ".xlsx", ".xls", ".json", ".txt", ".md"):
                notes.append(f"{path}: skipped, unsupported file type {path.suffix or '(none)'!r}")
            continue
        if not path.is_file():
            if path.is_symlink() and not path.exists():
                problems.append(f"{path}: broken link (to {os.readlink(path)}); skipped")
            else:
                problems.append(f"{path}: not a regular file (a pipe, socket or device); skipped")
            continue
        if path.stem in seen:
            problems.append(f"{path}: duplicate name {path.stem!r} (also {seen[path.stem]}); skipped")
            continue
        seen[path.stem] = path
        images.append(path)
    return images, problems


# -- layouts ---------------------------------------------------------------------------------


def _cases_from_images(images: list[Path], problems: list[str]) -> dict[str, Case]:
    cases = {}
    for path in images:
        try:
            cases[path.stem] = Case(name=path.stem, image=path, size=image_size(path))
        except ImageError as exc:
            problems.append(str(exc))
    return cases


def _read_palm(root: Path) -> CaseTable:
    images, problems = list_images(root)
    cases = _cases_from_images(images, problems)
    for name, case in cases.items():
        if name_label(name) is not None:
            cases[name] = replace(case, label=name_label(name))
    sheets = (p for p in root.rglob("*") if p.suffix.lower() in SHEET_SUFFIXES and p.is_file())
    given: dict = {}  # (name, field) -> the sheet row that set it: a second sheet must agree
    for sheet in sorted(p for p in sheets if not p.name.startswith((".", "~$"))):  # no Excel lock files
        _apply_sheet(sheet, cases, problems, given=given)
    for mask_dir in sorted(p for p in root.rglob("*") if p.is_dir() and p.name.lower() == "disc_masks"):
        _attach_masks(mask_dir, "", cases, problems, dark=True)
    return CaseTable(list(cases.values()), problems, "palm")


def _read_idrid(root: Path) -> CaseTable:
    images, problems = list_images(root / "images" if (root / "images").is_dir() else root)
    cases = _cases_from_images(images, problems)
    given: dict = {}
    for sheet in sorted(root.glob("*Fovea_Center_Markups.csv")):
        _apply_sheet(sheet, cases, problems, given=given)
    for sheet in sorted(root.glob("*OD_Center_Markups.csv")):
        _apply_sheet(sheet, cases, problems, point="disc_centre", given=given)
    return CaseTable(list(cases.values()), problems, "idrid")


def _read_paired_masks(root: Path, layout: str, mask_folder: str, suffix: str, dark: bool) -> CaseTable:
    images, problems = list_images(root / "images")
    cases = _cases_from_images(images, problems)
    _attach_masks(root / mask_folder, suffix, cases, problems, dark=dark)
    for name, case in cases.items():
        if case.disc_mask is None:
            problems.append(f"{case.image}: no mask in {root / mask_folder}")
    return CaseTable(list(cases.values()), problems, layout)


def _attach_masks(folder: Path, suffix: str, cases: dict[str, Case], problems: list[str], dark: bool):
    for path in sorted(folder.iterdir()):
        if not is_image(path):
            continue
        name = path.stem[: -len(suffix)] if suffix and path.stem.endswith(suffix) else path.stem
        if name not in cases:
            problems.append(f"{path}: mask for {name!r}, but no such image")
            continue
        if cases[name].disc_mask is not None:
            problems.append(f"{path}: second mask for {name!r} (also {cases[name].disc_mask}); skipped")
            continue
        try:
            size = image_size(path)
        except ImageError as exc:
            problems.append(str(exc))
            continue
        if size != cases[name].size:
            problems.append(f"{path}: mask is {size[0]}x{size[1]}, image {name!r} is "
                            f"{cases[name].size[0]}x{cases[name].size[1]}; skipped")
            continue
        cases[name] = replace(cases[name], disc_mask=path, disc_is_dark=dark)


# -- label sheets ----------------------------------------------------------------------------


def _apply_sheet(sheet: Path, cases: dict[str, Case], problems: list[str], point: str = "fovea",
                 given: dict | None = None) -> None:
    """Labels and positions from one sheet; ``point`` names what the x, y columns locate
    ("fovea", or "disc_centre" for IDRiD's optic disc markups). ``given`` records which sheet
    row set each value: a later sheet that says otherwise is a DataError naming both (which
    one is right is the data owner's call, never the reading order's)."""
    given = {} if given is None else given
    if "markups" not in sheet.name.lower() and not may_be_label_sheet(sheet):
        return  # some other csv (a submission, notes): not ours to read
    try:
        frame = read_sheet(sheet)
    except DataError as exc:
        problems.append(str(exc))
        return
    counts = Counter(frame["name"])
    for name, count in counts.items():
        if count > 1:
            problems.append(f"{sheet}: {name!r} appears {count} times; the first row is used")
    seen = set()
    for index, row in zip(frame.index, frame.itertuples(index=False)):
        row_number = index + 2  # the sheet's own row: header is row 1 (blank rows were dropped)
        name = row.name
        if name in seen:
            continue
        seen.add(name)
        if name not in cases:
            problems.append(f"{sheet}: row {row_number}: {name!r} names no image in the folder")
            continue
        where = f"{sheet}: row {row_number} ({name})"
        try:
            update = {}
            found = label(row.label, where) if "label" in frame.columns else None
            if found is not None:
                update["label"] = found
            if "x" in frame.columns:
                label_x, label_y = ("Fovea_X", "Fovea_Y") if point == "fovea" else ("X", "Y")
                x = number(row.x, where, label_x)
                y = number(row.y, where, label_y)
                if point != "fovea":
                    update[point] = None if x == 0 and y == 0 else (x, y)
                elif x == 0 and y == 0:
                    update.update(fovea=None, fovea_absent=True)
                else:
                    update.update(fovea=(x, y), fovea_absent=False)
        except DataError as exc:
            problems.append(str(exc))
            continue
        for key, value in update.items():
            earlier = given.get((name, key))
            if earlier and getattr(cases[name], key) != value:
                raise DataError(f"{where}: {key} {value!r} disagrees with {earlier} ({getattr(cases[name], key)!r}): "
                                f"two label sheets that disagree; keep the right one")
            given[(name, key)] = where
        cases[name] = replace(cases[name], **update)
    named = set(counts)
    missing = [n for n in cases if n not in named]
    if missing and len(missing) < len(cases):
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        problems.append(f"{sheet}: no row for {len(missing)} image(s): {shown}")


def _keep_readable(cases: list[Case], problems: list[str]) -> list[Case]:
    """Decode every image and mask (slow): truncated files only show up here; they are dropped."""
    from .imageio import read_image

    kept = []
    for case in cases:
        try:
            read_image(case.image, min_side=64)
            if case.disc_mask is not None:
                read_grey(case.disc_mask)
        except ImageError as exc:
            problems.append(f"{exc}; skipped")
            continue
        kept.append(case)
    return kept


def summarise(table: CaseTable) -> dict:
    """Counts for ``palm data inspect``."""
    cases = table.cases
    sizes = Counter(c.size for c in cases)
    return {
        "layout": table.layout,
        "cases": len(cases),
        "labelled": sum(c.label is not None for c in cases),
        "pathologic": sum(c.label == 1 for c in cases),
        "with_fovea": sum(c.fovea is not None for c in cases),
        "fovea_absent": sum(c.fovea_absent for c in cases),
        "with_disc_mask": sum(c.disc_mask is not None for c in cases),
        "sizes": {f"{w}x{h}": n for (w, h), n in sizes.most_common()},
        "problems": len(table.problems),
    }
