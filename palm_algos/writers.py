"""Prediction files in the PALM submission layout (CSV, BMP/PNG masks) and grand-challenge's
value formats. The CLI and the containers both write through here."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .imageio import pixel_to_world, write_mha_mask, write_palm_mask

CSV_NAMES = {"classification": "Classification_Results.csv", "fovea": "Fovea_Localization_Results.csv"}
DISC_FOLDER = "Disc_Segmentation"


def write_classification_csv(risks: dict[str, float], out_dir: Path) -> Path:
    """`FileName,PM Risk`; FileName is the image's file name as PALM lists it."""
    return _write_csv(out_dir / CSV_NAMES["classification"], ["FileName", "PM Risk"],
                      [[name, f"{risk:.6f}"] for name, risk in risks.items()])


def write_fovea_csv(points: dict[str, tuple[float, float] | None], out_dir: Path) -> Path:
    """`FileName,Fovea_X,Fovea_Y` in original pixels; (0, 0) where no fovea was found (PALM's convention)."""
    return _write_csv(out_dir / CSV_NAMES["fovea"], ["FileName", "Fovea_X", "Fovea_Y"],
                      [[name, f"{p[0]:.2f}", f"{p[1]:.2f}"] if p else [name, "0", "0"] for name, p in points.items()])


def write_disc_masks(name: str, disc: np.ndarray, out_dir: Path, png: bool = True) -> None:
    """`Disc_Segmentation/<stem>.bmp` (0 = disc, 255 = background), and a PNG twin."""
    stem = Path(name).stem
    write_palm_mask(disc, out_dir / DISC_FOLDER / f"{stem}.bmp")
    if png:
        write_palm_mask(disc, out_dir / DISC_FOLDER / "png" / f"{stem}.png")


def write_gc_float(value: float, path: Path) -> None:
    _write_json(float(value), path)


def write_gc_point(xy: tuple[float, float], image: Path, path: Path, name: str = "fovea") -> None:
    """grand-challenge Point: 3 coordinates in the world space of the input image. The fovea
    models always give a position (the evaluation accepts no null), so there is no "none" case."""
    x, y = pixel_to_world(image, *xy)
    _write_json({"version": {"major": 1, "minor": 0}, "type": "Point", "name": name, "point": [x, y, 0.0]}, path)


def write_gc_mask(disc: np.ndarray, image: Path, path: Path) -> None:
    write_mha_mask(disc, path, reference=image)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_json(value, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value) + "\n")
