"""The one reader of label sheets (PALM's ``imgName, Label, Fovea_X, Fovea_Y``, IDRiD's markups),
for the training data (``cases``) and the ground truth an evaluation scores against
(``evaluation.truth``), so both accept the same columns and refuse the same cells.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from .errors import DataError

SHEET_SUFFIXES = (".xlsx", ".xls", ".csv")
PALM_NAME = re.compile(r"^[HNPVT]\d{4}$", re.IGNORECASE)
_COLUMNS = {  # what each column may be called, as norm() writes it; width and height are optional
    "name": ("imgname", "imagename", "imageno", "filename", "image", "name"),
    "label": ("label", "pmlabel", "pm"),
    "x": ("foveax", "xcoordinate", "x"),
    "y": ("foveay", "ycoordinate", "y"),
    "width": ("width", "imagewidth", "imgwidth"),
    "height": ("height", "imageheight", "imgheight"),
}


def norm(text: object) -> str:
    """A column name as compared: lower case letters only (``Fovea_X`` -> ``foveax``)."""
    return re.sub(r"[^a-z]", "", str(text).lower())


def name_label(name: str) -> int | None:
    """The label PALM's file names carry: H (high myopia) and N (normal) 0, P (pathologic) 1;
    None for other names (V and T are the validation and test sets, unlabelled by name)."""
    if PALM_NAME.match(name) and name[0].upper() in "HNP":
        return int(name[0].upper() == "P")
    return None


def may_be_label_sheet(path: Path) -> bool:
    """Whether ``path`` could be a label sheet; a csv whose header names no image, fovea or
    label column is some other table (notes, a submission), passed over without a problem."""
    if path.suffix.lower() != ".csv":
        return path.suffix.lower() in SHEET_SUFFIXES
    head = path.read_text(errors="replace").split("\n", 1)[0]
    return any(a in norm(head) for a in ("imgname", "fovea", "label"))


def read_sheet(path: Path) -> pd.DataFrame:
    """A PALM/IDRiD label table (xlsx or csv) as columns name[, label][, x, y][, width, height]."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype=str, skipinitialspace=True)
        else:
            frame = pd.read_excel(path, dtype=str)
    except Exception as exc:  # pandas raises many types for a broken sheet
        raise DataError(f"{path}: cannot read table ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    frame = frame.loc[:, [not str(c).startswith("Unnamed") for c in frame.columns]]
    frame = frame.dropna(how="all")
    found = {}
    for key, aliases in _COLUMNS.items():
        for column in frame.columns:
            if norm(column) in aliases and key not in found:
                found[key] = column
    if "name" not in found or not ({"label"} <= found.keys() or {"x", "y"} <= found.keys()):
        raise DataError(
            f"{path}: not a label table; expected columns like 'imgName, Label, Fovea_X, Fovea_Y', "
            f"found {', '.join(map(str, frame.columns)) or 'none'}"
        )
    if not {"width", "height"} <= found.keys():
        found.pop("width", None), found.pop("height", None)
    out = frame[list(found.values())].rename(columns={v: k for k, v in found.items()})
    out["name"] = out["name"].astype(str).str.strip().map(lambda n: Path(n).stem)
    return out


def number(value: object, where: str, column: str) -> float:
    """The finite number in a sheet cell; DataError naming the row and column otherwise."""
    text = "" if pd.isna(value) else str(value).strip()
    if not text:
        raise DataError(f"{where}: {column} is empty")
    try:
        found = float(text)
    except ValueError:
        raise DataError(f"{where}: {column} is not a number ({text!r})") from None
    if not math.isfinite(found):
        raise DataError(f"{where}: {column} is not a finite number ({text!r})")
    return found


def label(value: object, where: str) -> int | None:
    """The 0/1 label in a sheet cell; None where the cell is blank."""
    if pd.isna(value) or not str(value).strip():
        return None
    found = number(value, where, "Label")
    if found not in (0, 1):
        raise DataError(f"{where}: Label must be 0 or 1, got {value!r}")
    return int(found)
