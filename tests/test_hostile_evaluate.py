"""Hostile inputs against the evaluation side: `palm evaluate` (PALM folders and zips) and the
evaluation container's entry point (`evaluation.gc`, grand-challenge predictions.json mode).

Every case asserts the exit status (0 scored, 1 invalid submission, 2 the organiser's side:
ground truth or output folder), one line that names the file and the problem, no traceback,
and no metrics.json where nothing was scored. The table of these cases is in
docs/HOSTILE_INPUTS.md ("## Evaluation (palm evaluate, evaluation container)").
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from evaluation.gc import main as gc_main
from palm_cli import main as palm

W, H = 60, 40
# name -> (label, fovea (0, 0) = not visible, disc box (x0, y0, x1, y1) or None = no disc)
TRUTH = {
    "V0001": (1, (30, 20), (10, 10, 20, 20)),
    "V0002": (1, (25, 15), (30, 10, 40, 20)),
    "V0003": (0, (0, 0), (5, 5, 15, 15)),
    "V0004": (0, (40, 30), None),
}
SHEET = "PM_Label_and_Fovea_Location.csv"


def disc(name: str) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    box = TRUTH[name][2]
    if box is not None:
        x0, y0, x1, y1 = box
        mask[y0:y1, x0:x1] = True
    return mask


def save(mask: np.ndarray, path: Path, disc_value=0, background=255) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, disc_value, background).astype(np.uint8)).save(path)


def sheet_rows(sizes: bool = False) -> list[str]:
    head = "imgName,Label,Fovea_X,Fovea_Y" + (",Width,Height" if sizes else "")
    rows = [f"{n}.jpg,{label},{f[0]},{f[1]}" + (f",{W},{H}" if sizes else "") for n, (label, f, _) in TRUTH.items()]
    return [head, *rows]


def make_truth(root: Path, images: bool = True, sheet: bool = True, masks: bool = True, sizes: bool = False) -> Path:
    """PALM validation-style ground truth: V names (labels only from the sheet)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in TRUTH:
        if images:
            Image.new("RGB", (W, H), (120, 60, 30)).save(root / f"{name}.png")
        if masks:
            save(disc(name), root / "Disc_Masks" / f"{name}.bmp")
    if sheet:
        (root / SHEET).write_text("\n".join(sheet_rows(sizes)) + "\n")
    return root


def write_sub(folder: Path, names: dict[str, str] | None = None, tasks=("classification", "fovea", "disc"),
              mask=lambda name, path: save(disc(name), path), suffix: str = ".bmp") -> Path:
    """A perfect PALM submission; ``names`` renames cases in the files (case tests)."""
    names = names or {}
    folder.mkdir(parents=True, exist_ok=True)
    if "classification" in tasks:
        rows = "".join(f"{names.get(n, n)}.jpg,{0.9 if label else 0.1}\n" for n, (label, _, _) in TRUTH.items())
        (folder / "Classification_Results.csv").write_text("FileName,PM Risk\n" + rows)
    if "fovea" in tasks:
        rows = "".join(f"{names.get(n, n)}.jpg,{f[0]},{f[1]}\n" for n, (_, f, _) in TRUTH.items())
        (folder / "Fovea_Localization_Results.csv").write_text("FileName,Fovea_X,Fovea_Y\n" + rows)
    if "disc" in tasks:
        for name in TRUTH:
            mask(name, folder / "Disc_Segmentation" / f"{names.get(name, name)}{suffix}")
    return folder


def zip_folder(folder: Path, target: Path, prefix: str = "", extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return target


# -- the harness -----------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str
    metrics: Path


@dataclass
class Case:
    """``build(tmp, monkeypatch)`` -> (submission or gc input, ground truth[, output path])."""

    build: Callable
    code: int
    line: tuple[str, ...]  # all of these on one line of the output
    check: Callable[[dict], None] | None = None  # on metrics.json when scored


def check_lines(run: Run, case: Case) -> None:
    text = run.out + "\n" + run.err
    assert "Traceback" not in text, text
    if case.code:
        last = run.err.strip().splitlines()[-1]
        assert all(part in last for part in case.line), f"last stderr line: {last!r}\n{text}"
        assert not run.metrics.exists()
    else:
        assert any(all(part in line for part in case.line) for line in text.splitlines()), text
        assert run.metrics.is_file()
        data = json.loads(run.metrics.read_text())
        if case.check:
            case.check(data)


def run_cli(args: list[str], metrics: Path) -> Run:
    result = CliRunner().invoke(palm, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return Run(result.exit_code, result.stdout, result.stderr, metrics)


def agg(task: str, key: str, value):
    def check(data):
        assert data["aggregates"][task][key] == pytest.approx(value), data["aggregates"]
    return check


def all_perfect(data):
    a = data["aggregates"]
    assert a["classification"]["auc"] == 1.0
    assert a["fovea"]["mean_distance"] == 0.0
    assert a["disc"]["mean_dice"] == 1.0, a["disc"]


# -- palm evaluate: builders -----------------------------------------------------------------


def _label_map(tmp, mp):  # 10: numpy label array saved as it is, 1 = disc
    sub = write_sub(tmp / "sub", suffix=".png", mask=lambda n, p: save(disc(n), p, 1, 0))
    return sub, make_truth(tmp / "gt")


def _swapped(tmp, mp):  # 10: white disc on black
    return write_sub(tmp / "sub", mask=lambda n, p: save(disc(n), p, 255, 0)), make_truth(tmp / "gt")


def _swapped_rgb(tmp, mp):  # 10: colour PNG, white disc on black
    def mask(name, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.where(disc(name), 255, 0).astype(np.uint8)).convert("RGB").save(path)
    return write_sub(tmp / "sub", suffix=".png", mask=mask), make_truth(tmp / "gt")


def _one_swapped(tmp, mp):  # 10: one mask of four swapped: named alone
    sub = write_sub(tmp / "sub")
    save(disc("V0002"), sub / "Disc_Segmentation" / "V0002.bmp", 255, 0)
    return sub, make_truth(tmp / "gt")


def _wrong_size(tmp, mp):
    sub = write_sub(tmp / "sub")
    Image.fromarray(np.full((H + 1, W), 255, np.uint8)).save(sub / "Disc_Segmentation" / "V0002.bmp")
    return sub, make_truth(tmp / "gt")


def _not_an_image(tmp, mp):
    sub = write_sub(tmp / "sub")
    (sub / "Disc_Segmentation" / "V0003.bmp").write_bytes(b"BM not really a bitmap")
    return sub, make_truth(tmp / "gt")


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and header declaring a huge 1-bit image, with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _png_bomb(tmp, mp):  # header declares 30000x30000: refused from the header, nothing decoded
    sub = write_sub(tmp / "sub", suffix=".png")
    (sub / "Disc_Segmentation" / "V0001.png").write_bytes(png_header_only(30000, 30000))
    return sub, make_truth(tmp / "gt")


def _two_masks(tmp, mp):
    sub = write_sub(tmp / "sub")
    save(disc("V0001"), sub / "Disc_Segmentation" / "V0001.png")
    return sub, make_truth(tmp / "gt")


def _case_twins_masks(tmp, mp):  # 13: V0001.bmp and v0001.bmp
    sub = write_sub(tmp / "sub")
    save(disc("V0001"), sub / "Disc_Segmentation" / "v0001.bmp")
    return sub, make_truth(tmp / "gt")


LOWER = {n: n.lower() for n in TRUTH}


def _lower_rows(tmp, mp):  # 13
    return write_sub(tmp / "sub", names=LOWER, tasks=("classification", "fovea")), make_truth(tmp / "gt")


def _lower_masks(tmp, mp):  # 13
    return write_sub(tmp / "sub", names=LOWER, tasks=("disc",)), make_truth(tmp / "gt")


def _case_twins_rows(tmp, mp):  # 13: two rows whose names differ only by case
    sub = write_sub(tmp / "sub", tasks=("classification",))
    with open(sub / "Classification_Results.csv", "a") as f:
        f.write("v0001.jpg,0.2\n")
    return sub, make_truth(tmp / "gt")


def _zip(tmp, mp):  # 11
    return zip_folder(write_sub(tmp / "sub"), tmp / "sub.zip"), make_truth(tmp / "gt")


def _zip_team_macosx(tmp, mp):  # 11 + 12: as the Finder zips a folder
    junk = {"__MACOSX/team/._Classification_Results.csv": b"\0\5\26\7junk",
            "team/.DS_Store": b"\0\0\0\1Bud1"}
    return zip_folder(write_sub(tmp / "sub"), tmp / "sub.zip", prefix="team/", extra=junk), make_truth(tmp / "gt")


def _zip_entry(name: str, data: bytes = b"x", attr: int | None = None):
    def build(tmp, mp):
        target = zip_folder(write_sub(tmp / "sub"), tmp / "sub.zip")
        with zipfile.ZipFile(target, "a") as zf:
            info = zipfile.ZipInfo(name)
            if attr is not None:
                info.external_attr = attr << 16
            zf.writestr(info, data)
        return target, make_truth(tmp / "gt")
    return build


def _zip_limit(attribute: str, value: int):
    def build(tmp, mp):
        import evaluation.unpack

        mp.setattr(evaluation.unpack, attribute, value)
        return zip_folder(write_sub(tmp / "sub"), tmp / "sub.zip"), make_truth(tmp / "gt")
    return build


def _not_a_zip(tmp, mp):
    (tmp / "sub.zip").write_text("FileName,PM Risk\n")
    return tmp / "sub.zip", make_truth(tmp / "gt")


def _encrypted_zip(tmp, mp):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("Classification_Results.csv", "FileName,PM Risk\nV0001.jpg,0.9\n")
    data = bytearray(buffer.getvalue())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the 'encrypted' flag bit
        at = data.find(signature) + offset
        data[at] |= 1
    (tmp / "sub.zip").write_bytes(bytes(data))
    return tmp / "sub.zip", make_truth(tmp / "gt")


def _corrupt_zip(tmp, mp):  # a stored member with one byte changed: CRC mismatch
    buffer = io.BytesIO()
    text = "FileName,PM Risk\n" + "".join(f"{n}.jpg,0.5\n" for n in TRUTH)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("Classification_Results.csv", text)
    data = buffer.getvalue().replace(b"V0003.jpg,0.5", b"V0003.jpg,0.6")
    (tmp / "sub.zip").write_bytes(data)
    return tmp / "sub.zip", make_truth(tmp / "gt")


def _team_folder(tmp, mp):  # 12
    write_sub(tmp / "sub" / "Team Alpha")
    (tmp / "sub" / "__MACOSX").mkdir()
    (tmp / "sub" / ".DS_Store").write_bytes(b"\0")
    return tmp / "sub", make_truth(tmp / "gt")


def _two_team_folders(tmp, mp):  # 12: which one?
    write_sub(tmp / "sub" / "alpha")
    write_sub(tmp / "sub" / "beta")
    return tmp / "sub", make_truth(tmp / "gt")


def _apple_double(tmp, mp):  # macOS resource forks beside the results
    sub = write_sub(tmp / "sub")
    (sub / "._Classification_Results.csv").write_bytes(b"\0\5\26\7\0\2\0\0Mac OS X")
    (sub / "Disc_Segmentation" / "._V0001.bmp").write_bytes(b"\0\5\26\7")
    return sub, make_truth(tmp / "gt")


def _missing_sub(tmp, mp):
    return tmp / "nothing-here", make_truth(tmp / "gt")


def _plain_file_sub(tmp, mp):
    write_sub(tmp / "sub", tasks=("classification",))
    return tmp / "sub" / "Classification_Results.csv", make_truth(tmp / "gt")


def _csv(text: str | bytes, name: str = "Classification_Results.csv"):
    def build(tmp, mp):
        sub = tmp / "sub"
        sub.mkdir()
        (sub / name).write_bytes(text if isinstance(text, bytes) else text.encode())
        return sub, make_truth(tmp / "gt")
    return build


RISK = "FileName,PM Risk\n" + "".join(f"{n}.jpg,0.5\n" for n in TRUTH)


def _csv_folder(tmp, mp):  # a folder where the CSV should be
    sub = tmp / "sub"
    (sub / "Classification_Results.csv").mkdir(parents=True)
    return sub, make_truth(tmp / "gt")


def _out_under_file(tmp, mp):  # --out below a file: cannot write metrics.json
    (tmp / "blocker").write_text("a file")
    return write_sub(tmp / "sub"), make_truth(tmp / "gt"), tmp / "blocker" / "metrics.json"


def _gt(**kwargs):
    def build(tmp, mp):
        return write_sub(tmp / "sub"), make_truth(tmp / "gt", **kwargs)
    return build


def _gt_missing(tmp, mp):
    return write_sub(tmp / "sub"), tmp / "no-truth"


def _gt_file(tmp, mp):
    (tmp / "truth.csv").write_text("\n".join(sheet_rows()) + "\n")
    return write_sub(tmp / "sub"), tmp / "truth.csv"


def _gt_empty(tmp, mp):
    (tmp / "gt").mkdir()
    return write_sub(tmp / "sub"), tmp / "gt"


def _gt_broken_sheet(tmp, mp):
    gt = make_truth(tmp / "gt", sheet=False)
    (gt / SHEET).write_text("imgName,Remarks\nV0001.jpg,fine\n")
    return write_sub(tmp / "sub"), gt


def _gt_shipped_xlsx(tmp, mp):  # 15: as organisers ship it: the xlsx and Disc_Masks/, no images
    gt = make_truth(tmp / "gt", images=False, sheet=False)
    frame = pd.DataFrame([{"ID": i + 1, "imgName": f"{n}.jpg", "Label": label, "Fovea_X": f[0], "Fovea_Y": f[1]}
                          for i, (n, (label, f, _)) in enumerate(TRUTH.items())])
    frame.to_excel(gt / "PM_Label_and_Fovea_Location.xlsx", index=False)
    sub = write_sub(tmp / "sub")
    rows = "".join(f"{n}.jpg,{f[0] + 3},{f[1] + 4}\n" for n, (_, f, _) in TRUTH.items())
    (sub / "Fovea_Localization_Results.csv").write_text("FileName,Fovea_X,Fovea_Y\n" + rows)
    return sub, gt


def _shifted_fovea(data):
    assert data["aggregates"]["classification"]["auc"] == 1.0
    assert data["aggregates"]["disc"]["mean_dice"] == 1.0
    fovea = data["aggregates"]["fovea"]
    assert fovea["mean_distance"] == pytest.approx(5.0)
    assert fovea["mean_normalised_distance"] == pytest.approx(np.hypot(3 / W, 4 / H))  # W, H from the masks


def _gt_sheet_sizes(tmp, mp):  # 15: the sheet alone, with Width/Height columns
    gt = make_truth(tmp / "gt", images=False, masks=False, sizes=True)
    sub = write_sub(tmp / "sub", tasks=("classification", "fovea"))
    rows = "".join(f"{n}.jpg,{f[0] + 3},{f[1] + 4}\n" for n, (_, f, _) in TRUTH.items())
    (sub / "Fovea_Localization_Results.csv").write_text("FileName,Fovea_X,Fovea_Y\n" + rows)
    return sub, gt


def _gt_sheet_no_sizes(tmp, mp):  # 15: no size anywhere: distances scored, normalised ones null
    gt = make_truth(tmp / "gt", images=False, masks=False)
    return write_sub(tmp / "sub", tasks=("classification", "fovea")), gt


def _no_normalised(data):
    fovea = data["aggregates"]["fovea"]
    assert fovea["mean_distance"] == 0.0 and fovea["mean_normalised_distance"] is None


# -- issue 24: builders -----------------------------------------------------------------------


def _two_sheets_disagree(tmp, mp):  # 24.6: a second label sheet that says otherwise for V0002
    gt = make_truth(tmp / "gt")
    rows = sheet_rows()
    rows[2] = rows[2].replace("V0002.jpg,1,", "V0002.jpg,0,")
    (gt / "labels-second-reader.csv").write_text("\n".join(rows) + "\n")
    return write_sub(tmp / "sub"), gt


def _two_sheets_disagree_no_images(tmp, mp):  # 24.6: the same in the organisers' release (no images)
    gt = make_truth(tmp / "gt", images=False)
    rows = sheet_rows()
    rows[1] = rows[1].replace("V0001.jpg,1,30,20", "V0001.jpg,1,31,20")
    (gt / "labels-second-reader.csv").write_text("\n".join(rows) + "\n")
    return write_sub(tmp / "sub"), gt


def _odd_names_truth(tmp, mp):  # 24.10: names prediction writes (':' is a plain character on Linux)
    gt = make_truth(tmp / "gt", masks=False)
    Image.new("RGB", (W, H), (120, 60, 30)).save(gt / "a:b.png")
    with open(gt / SHEET, "a") as f:
        f.write("a:b.jpg,1,10,10\n")
    sub = write_sub(tmp / "sub", tasks=("classification",))
    with open(sub / "Classification_Results.csv", "a") as f:
        f.write("a:b.jpg,0.95\n")
    return sub, gt


PALM_CASES = {
    # 10: mask conventions
    "label-map-masks": Case(_label_map, 0, ("V0001.png", "0/1 label map", "1 = disc"), agg("disc", "mean_dice", 1.0)),
    "swapped-colours": Case(_swapped, 0, ("V0001.bmp", "inverted"), agg("disc", "mean_dice", 1.0)),
    "swapped-colour-png": Case(_swapped_rgb, 0, ("V0002.png", "inverted"), agg("disc", "mean_dice", 1.0)),
    "one-mask-swapped": Case(_one_swapped, 0, ("1 masks", "V0002.bmp", "inverted"), agg("disc", "mean_dice", 1.0)),
    "mask-wrong-size": Case(_wrong_size, 1, ("V0002.bmp", "mask is 60x41, expected 60x40")),
    "mask-not-an-image": Case(_not_an_image, 1, ("V0003.bmp", "cannot read the mask")),
    "mask-png-bomb-header": Case(_png_bomb, 1, ("V0001.png", "mask is 30000x30000, expected 60x40")),
    "two-masks-one-case": Case(_two_masks, 1, ("two masks for 'V0001'", "V0001.bmp", "V0001.png")),
    # 13: names
    "lower-case-rows": Case(_lower_rows, 0, ("classification", "AUC 1.0000")),
    "lower-case-masks": Case(_lower_masks, 0, ("disc", "mean Dice 1.0000"), agg("disc", "n_cases", 4)),
    "rows-differ-by-case": Case(_case_twins_rows, 1, ("Classification_Results.csv", "'V0001'", "'v0001'", "differ only by case")),
    "masks-differ-by-case": Case(_case_twins_masks, 1, ("Disc_Segmentation", "V0001.bmp", "v0001.bmp", "differ only by case")),
    # 11: zips
    "zip": Case(_zip, 0, ("disc", "mean Dice 1.0000"), all_perfect),
    "zip-team-folder-macosx": Case(_zip_team_macosx, 0, ("fovea", "mean distance 0.00"), all_perfect),
    "zip-path-traversal": Case(_zip_entry("../evil.csv"), 1, ("sub.zip", "'../evil.csv'", "outside")),
    "zip-absolute-path": Case(_zip_entry("/tmp/evil.csv"), 1, ("sub.zip", "'/tmp/evil.csv'", "outside")),
    "zip-backslash-traversal": Case(_zip_entry("..\\..\\evil.csv"), 1, ("sub.zip", "evil.csv", "outside")),
    "zip-symlink": Case(_zip_entry("link.csv", b"/etc/passwd", 0o120777), 1, ("sub.zip", "'link.csv'", "symbolic link")),
    "zip-too-many-files": Case(_zip_limit("MAX_FILES", 3), 1, ("sub.zip", "more than 3 files")),
    "zip-too-large": Case(_zip_limit("MAX_BYTES", 1000), 1, ("sub.zip", "more than 1000 bytes")),
    "zip-not-a-zip": Case(_not_a_zip, 1, ("sub.zip", "not a valid zip file")),
    "zip-encrypted": Case(_encrypted_zip, 1, ("sub.zip", "Classification_Results.csv", "encrypted")),
    "zip-corrupt-member": Case(_corrupt_zip, 1, ("sub.zip", "Classification_Results.csv", "corrupt")),
    # 12: nesting
    "team-folder": Case(_team_folder, 0, ("classification", "AUC 1.0000"), all_perfect),
    "two-team-folders": Case(_two_team_folders, 1, ("no results found", "alpha", "beta")),
    "apple-double-files": Case(_apple_double, 0, ("disc", "mean Dice 1.0000"), all_perfect),
    # the path itself
    "submission-missing": Case(_missing_sub, 1, ("nothing-here", "no such file or folder")),
    "submission-plain-file": Case(_plain_file_sub, 1, ("Classification_Results.csv", "expected a folder or a .zip file")),
    # CSV files
    "csv-not-utf8": Case(_csv(b"FileName,PM Risk\nV0001\xe9.jpg,0.5\n"), 1, ("Classification_Results.csv", "UTF-8")),
    "csv-semicolons": Case(_csv(RISK.replace(",", ";")), 1, ("Classification_Results.csv", "wrong header 'FileName;PM Risk'")),
    "csv-infinite-risk": Case(_csv(RISK.replace("V0002.jpg,0.5", "V0002.jpg,inf")), 1,
                              ("Classification_Results.csv", "line 3", "not a finite number")),
    "csv-is-a-folder": Case(_csv_folder, 1, ("Classification_Results.csv", "cannot read")),
    "out-under-a-file": Case(_out_under_file, 2, ("blocker", "cannot write")),
    # 14: ground-truth problems are the organiser's
    "gt-missing": Case(_gt_missing, 2, ("Ground truth problem", "no-truth", "no such file or folder")),
    "gt-is-a-file": Case(_gt_file, 2, ("Ground truth problem", "truth.csv", "expected a folder")),
    "gt-empty-folder": Case(_gt_empty, 2, ("Ground truth problem", "gt", "no images, label sheet or Disc_Masks")),
    "gt-no-annotations": Case(_gt(sheet=False, masks=False), 2, ("Ground truth problem", "no annotations")),
    "gt-no-label-sheet": Case(_gt(sheet=False), 2,
                              ("Ground truth problem", "no labels", "Classification_Results.csv", "Fovea_Localization_Results.csv")),
    "gt-broken-sheet": Case(_gt_broken_sheet, 2, ("Ground truth problem", SHEET, "not a label table")),
    # 15: ground truth without the images
    "gt-shipped-without-images": Case(_gt_shipped_xlsx, 0, ("fovea", "mean distance 5.00"), _shifted_fovea),
    "gt-sheet-with-sizes": Case(_gt_sheet_sizes, 0, ("fovea", "mean distance 5.00"),
                                agg("fovea", "mean_normalised_distance", np.hypot(3 / W, 4 / H))),
    "gt-sheet-without-sizes": Case(_gt_sheet_no_sizes, 0, ("ground truth", "image size unknown", "normalised"), _no_normalised),
    # issue 24
    "decimal-commas": Case(_csv("FileName,PM Risk\nV0001.jpg,0,9\nV0002.jpg,0,8\nV0003.jpg,0,1\nV0004.jpg,0,2\n"), 1,
                           ("Classification_Results.csv", "line 2", "3 cells", "header has 2", "decimal comma")),
    "fovea-decimal-commas": Case(_csv("FileName,Fovea_X,Fovea_Y\nV0001.jpg,30,0,20,0\n", "Fovea_Localization_Results.csv"),
                                 1, ("Fovea_Localization_Results.csv", "line 2", "5 cells", "header has 3")),
    "row-short-of-header": Case(_csv("FileName,PM Risk,Note\nV0001.jpg,0.9\n"), 1,
                                ("Classification_Results.csv", "line 2", "2 cells", "header has 3")),
    "gt-two-sheets-disagree": Case(_two_sheets_disagree, 2, ("Ground truth problem", "labels-second-reader.csv", SHEET,
                                                             "V0002", "disagree")),
    "gt-two-sheets-disagree-no-images": Case(_two_sheets_disagree_no_images, 2,
                                             ("Ground truth problem", "labels-second-reader.csv", SHEET, "V0001", "disagree")),
    "name-with-colon": Case(_odd_names_truth, 0, ("classification", "AUC 1.0000", "5 images")),
    "name-leading-space": Case(_csv(RISK.replace("V0002.jpg", " V0002.jpg")), 1,
                               ("Classification_Results.csv", "line 3", "' V0002.jpg'", "space")),
}


@pytest.mark.parametrize("name", list(PALM_CASES))
def test_palm_evaluate_hostile(name, tmp_path, monkeypatch):
    case = PALM_CASES[name]
    built = case.build(tmp_path, monkeypatch)
    sub, gt = built[:2]
    out = built[2] if len(built) > 2 else tmp_path / "out" / "metrics.json"
    run = run_cli(["evaluate", "--submission", str(sub), "--ground-truth", str(gt), "--out", str(out)], out)
    assert run.code == case.code, run.out + run.err
    check_lines(run, case)
    if case.code:
        assert run.err.strip().splitlines()[-1].startswith("Error: ")


# -- grand-challenge mode --------------------------------------------------------------------


def gc_input(root: Path, names=None, mask=None) -> Path:
    """A fake /input: one job per case with a likelihood, a Point and an MHA mask."""
    from palm_algos.imageio import write_mha_mask

    jobs = []
    for i, (name, (label, fovea, _)) in enumerate(TRUTH.items()):
        pk = f"job-{i}"
        out = root / pk / "output"
        out.mkdir(parents=True)
        (out / "pathologic-myopia-likelihood.json").write_text(json.dumps(0.9 if label else 0.1))
        point = {"version": {"major": 1, "minor": 0}, "type": "Point", "name": "fovea", "point": [*fovea, 0]}
        (out / "fovea.json").write_text(json.dumps(point))
        mha = out / "images" / "optic-disc-segmentation" / "output.mha"
        (mask or (lambda n, p: write_mha_mask(disc(n), p)))(name, mha)
        image_name = (names or {}).get(name, name) + ".png"
        jobs.append({
            "pk": pk,
            "inputs": [{"interface": {"slug": "color-fundus-image", "relative_path": "images/color-fundus"},
                        "image": {"name": image_name}}],
            "outputs": [
                {"interface": {"slug": "pathologic-myopia-likelihood", "relative_path": "pathologic-myopia-likelihood.json"}},
                {"interface": {"slug": "fovea", "relative_path": "fovea.json"}},
                {"interface": {"slug": "optic-disc-segmentation", "relative_path": "images/optic-disc-segmentation"}},
            ],
        })
    (root / "predictions.json").write_text(json.dumps(jobs))
    return root


def _gc_plain(tmp, mp):
    return gc_input(tmp / "input"), make_truth(tmp / "gt")


def _gc_predictions(text: str | None):
    def build(tmp, mp):
        inp = gc_input(tmp / "input")
        if text is None:
            (inp / "predictions.json").unlink()
        else:
            (inp / "predictions.json").write_text(text)
        return inp, make_truth(tmp / "gt")
    return build


def _gc_edit(change):
    def build(tmp, mp):
        inp = gc_input(tmp / "input")
        jobs = json.loads((inp / "predictions.json").read_text())
        change(jobs, inp, tmp)
        (inp / "predictions.json").write_text(json.dumps(jobs))
        return inp, make_truth(tmp / "gt")
    return build


def _pk_traversal(jobs, inp, tmp):
    jobs[1]["pk"] = "../job-1"


def _relative_dotdot(jobs, inp, tmp):
    jobs[2]["outputs"][1]["interface"]["relative_path"] = "../../job-0/output/fovea.json"


def _link_outside(jobs, inp, tmp):
    secret = tmp / "secret.json"
    secret.write_text(json.dumps({"type": "Point", "point": [1, 2, 0]}))
    target = inp / "job-1" / "output" / "fovea.json"
    target.unlink()
    target.symlink_to(secret)


def _likelihood_text(jobs, inp, tmp):
    (inp / "job-0" / "output" / "pathologic-myopia-likelihood.json").write_text('"high"')


def _gc_swapped_mha(tmp, mp):  # 10: an algorithm that wrote 0 = disc, 1 = background
    from palm_algos.imageio import write_mha_mask

    return gc_input(tmp / "input", mask=lambda n, p: write_mha_mask(~disc(n), p)), make_truth(tmp / "gt")


def write_mha_header(path: Path, fields: str, payload: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("ObjectType = Image\nNDims = 2\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
                      + fields).encode() + payload)


def _gc_external_data(tmp, mp):  # an .mha whose pixels come from a file outside /input
    stolen = tmp / "gt-disc.raw"  # stands in for the organiser's ground truth on the same machine
    stolen.write_bytes(disc("V0001").astype(np.uint8).tobytes())

    def mask(name, path):
        write_mha_header(path, f"DimSize = {W} {H}\nElementType = MET_UCHAR\nElementDataFile = {stolen}\n")
    return gc_input(tmp / "input", mask=mask), make_truth(tmp / "gt")


def _gc_huge_header(tmp, mp):  # a tiny .mha declaring 20000x20000 x 3
    from palm_algos.imageio import write_mha_mask

    def mask(name, path):
        if name == "V0002":
            write_mha_header(path, "DimSize = 20000 20000\nElementNumberOfChannels = 3\nElementType = MET_UCHAR\n"
                             "CompressedData = True\nElementDataFile = LOCAL\n", zlib.compress(b"\0" * 1000))
        else:
            write_mha_mask(disc(name), path)
    return gc_input(tmp / "input", mask=mask), make_truth(tmp / "gt")


def _gc_corrupt_mha(tmp, mp):  # 64 bytes zeroed inside the compressed pixels
    from palm_algos.imageio import write_mha_mask

    def mask(name, path):
        noisy = np.random.default_rng(0).random((H, W)) < 0.5 if name == "V0003" else disc(name)
        write_mha_mask(noisy, path)
        if name == "V0003":
            data = bytearray(path.read_bytes())
            start = data.find(b"ElementDataFile = LOCAL\n") + len("ElementDataFile = LOCAL\n")
            data[start + 20:start + 84] = bytes(64)
            path.write_bytes(bytes(data))
    return gc_input(tmp / "input", mask=mask), make_truth(tmp / "gt")


def _gc_garbage_mha(tmp, mp):
    from palm_algos.imageio import write_mha_mask

    def mask(name, path):
        write_mha_mask(disc(name), path)
        if name == "V0004":
            path.write_bytes(b"\0\1\2 this is no image")
    return gc_input(tmp / "input", mask=mask), make_truth(tmp / "gt")


def _gc_two_mha(tmp, mp):
    inp = gc_input(tmp / "input")
    (inp / "job-2" / "output" / "images" / "optic-disc-segmentation" / "extra.mha").write_bytes(b"")
    return inp, make_truth(tmp / "gt")


def _gc_lower_names(tmp, mp):  # 13: grand-challenge keeps the upload's name, v0001.png
    return gc_input(tmp / "input", names=LOWER), make_truth(tmp / "gt")


def _gc_gt_without_images(tmp, mp):  # 15
    return gc_input(tmp / "input"), make_truth(tmp / "gt", images=False)


def _gc_gt_missing(tmp, mp):
    return gc_input(tmp / "input"), tmp / "no-truth"


def _gc_gt_no_fovea(tmp, mp):  # 14: the jobs answer fovea, the ground truth has none
    gt = make_truth(tmp / "gt", sheet=False)
    for name in TRUTH:  # labels from P/N names, so only the fovea is missing
        label = "P" if TRUTH[name][0] else "N"
        (gt / f"{name}.png").rename(gt / f"{label}{name[1:]}.png")
        (gt / "Disc_Masks" / f"{name}.bmp").rename(gt / "Disc_Masks" / f"{label}{name[1:]}.bmp")
    inp = gc_input(tmp / "input", names={n: ("P" if TRUTH[n][0] else "N") + n[1:] for n in TRUTH})
    return inp, gt


def _gc_out_under_file(tmp, mp):
    (tmp / "blocker").write_text("a file")
    return gc_input(tmp / "input"), make_truth(tmp / "gt"), tmp / "blocker"


# -- issue 24, items 3 and 12: whose geometry -----------------------------------------------


def write_mask_geometry(disc_mask: np.ndarray, path: Path, origin=(0.0, 0.0), spacing=(1.0, 1.0)) -> None:
    """A grand-challenge mask (1 = disc) with the given origin and spacing; spacing 0 is patched into the header
    (SimpleITK refuses to write it)."""
    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(disc_mask.astype(np.uint8))
    image.SetOrigin(origin)
    image.SetSpacing([s or 1.0 for s in spacing])
    sitk.WriteImage(image, str(path), useCompression=True)
    if 0 in spacing:
        data = path.read_bytes()
        at = data.index(b"ElementSpacing = ")
        end = data.index(b"\n", at)
        path.write_bytes(data[:at] + b"ElementSpacing = 0 0" + data[end:])


def shifted(name: str, dx: int = 5) -> np.ndarray:
    return np.roll(disc(name), dx, axis=1)  # the disc 5 px to the right: Hausdorff 5 px


def _only_disc_outputs(inp: Path) -> None:
    jobs = json.loads((inp / "predictions.json").read_text())
    for job in jobs:
        job["outputs"] = [o for o in job["outputs"] if o["interface"]["slug"] == "optic-disc-segmentation"]
    (inp / "predictions.json").write_text(json.dumps(jobs))


def _gc_mask_spacing(spacing, disc_only: bool = True):
    def build(tmp, mp):  # 24.3: the participant's mask sets the spacing the Hausdorff distance is measured in
        inp = gc_input(tmp / "input", mask=lambda n, p: write_mask_geometry(shifted(n), p, spacing=spacing))
        if disc_only:
            _only_disc_outputs(inp)
        return inp, make_truth(tmp / "gt")
    return build


ORIGIN, SPACING = (10.0, 20.0), (0.5, 0.5)  # the archive's .mha images in item 12


def world_jobs(root: Path) -> Path:
    """Jobs as palm-all writes them for archive images of origin (10, 20), spacing 0.5: world-space points,
    masks carrying that geometry."""
    inp = gc_input(root, mask=lambda n, p: write_mask_geometry(disc(n), p, ORIGIN, SPACING))
    for i, (name, (_, fovea, _)) in enumerate(TRUTH.items()):
        world = [ORIGIN[0] + SPACING[0] * fovea[0], ORIGIN[1] + SPACING[1] * fovea[1], 0]
        point = {"version": {"major": 1, "minor": 0}, "type": "Point", "name": "fovea", "point": world}
        (inp / f"job-{i}" / "output" / "fovea.json").write_text(json.dumps(point))
    return inp


def _gc_world_points_pixel_truth(tmp, mp):  # 24.12: ground truth in the PALM layout (PNG + sheet): no geometry
    return world_jobs(tmp / "input"), make_truth(tmp / "gt")


def _gc_world_points_mha_truth(tmp, mp):  # 24.12: the same jobs against the archive's images as ground truth
    import SimpleITK as sitk

    gt = make_truth(tmp / "gt")
    for name in TRUTH:
        (gt / f"{name}.png").unlink()
        image = sitk.GetImageFromArray(np.full((H, W, 3), 90, np.uint8), isVector=True)
        image.SetOrigin(ORIGIN)
        image.SetSpacing(SPACING)
        sitk.WriteImage(image, str(gt / f"{name}.mha"), useCompression=True)
    return world_jobs(tmp / "input"), gt


GC_CASES = {
    "gc-predictions-missing": Case(_gc_predictions(None), 1, ("predictions.json", "not found")),
    "gc-predictions-not-json": Case(_gc_predictions("{oops"), 1, ("predictions.json", "not valid JSON")),
    "gc-predictions-not-a-list": Case(_gc_predictions('{"jobs": []}'), 1, ("predictions.json", "expected a list")),
    "gc-predictions-empty-list": Case(_gc_predictions("[]"), 1, ("predictions.json", "no algorithm jobs")),
    "gc-pk-traversal": Case(_gc_edit(_pk_traversal), 1, ("predictions.json", "'../job-1'", "not a plain identifier")),
    "gc-relative-path-dotdot": Case(_gc_edit(_relative_dotdot), 1, ("job job-2", "relative_path", "outside")),
    "gc-output-links-outside": Case(_gc_edit(_link_outside), 1, ("job job-1", "fovea.json", "outside")),
    "gc-likelihood-text": Case(_gc_edit(_likelihood_text), 1, ("job job-0", "expected a number")),
    "gc-swapped-mha": Case(_gc_swapped_mha, 0, ("job-0/output/images/optic-disc-segmentation/output.mha", "inverted"),
                           agg("disc", "mean_dice", 1.0)),
    "gc-mha-external-data": Case(_gc_external_data, 1, ("job-0/output/images/optic-disc-segmentation/output.mha", "ElementDataFile")),
    "gc-mha-huge-header": Case(_gc_huge_header, 1, ("job-1/output/images/optic-disc-segmentation/output.mha",
                                                    "mask is 20000x20000, expected 60x40")),
    "gc-mha-corrupt-data": Case(_gc_corrupt_mha, 1, ("job-2/output/images/optic-disc-segmentation/output.mha", "corrupt")),
    "gc-mha-garbage": Case(_gc_garbage_mha, 1, ("job-3/output/images/optic-disc-segmentation/output.mha", "cannot read")),
    "gc-two-mha": Case(_gc_two_mha, 1, ("job job-2", "expected one .mha image in the output, found 2")),
    "gc-lower-case-names": Case(_gc_lower_names, 0, ("classification", "AUC 1.0000"), all_perfect),
    "gc-gt-without-images": Case(_gc_gt_without_images, 0, ("fovea", "mean distance 0.00"), all_perfect),
    "gc-gt-missing": Case(_gc_gt_missing, 2, ("Ground truth problem", "no-truth", "no such file or folder")),
    "gc-gt-no-fovea": Case(_gc_gt_no_fovea, 2, ("Ground truth problem", "no fovea positions", "fovea")),
    "gc-output-under-a-file": Case(_gc_out_under_file, 2, ("blocker", "cannot write")),
    # issue 24
    "gc-mask-spacing-tiny": Case(_gc_mask_spacing((0.001, 0.001)), 0, ("optic-disc-segmentation", "geometry", "ignored"),
                                 agg("disc", "mean_hausdorff", 5.0)),
    "gc-mask-spacing-zero": Case(_gc_mask_spacing((0.0, 0.0)), 0, ("optic-disc-segmentation", "geometry", "ignored"),
                                 agg("disc", "mean_hausdorff", 5.0)),
    "gc-mask-spacing-with-points": Case(_gc_mask_spacing((0.001, 0.001), disc_only=False), 1,
                                        ("fovea", "job-0/output/images/optic-disc-segmentation/output.mha", "spacing (0.001, 0.001)", "no geometry")),
    "gc-world-points-pixel-truth": Case(_gc_world_points_pixel_truth, 1,
                                        ("fovea", "job-0/output/images/optic-disc-segmentation/output.mha", "origin (10, 20)", "no geometry")),
    "gc-world-points-mha-truth": Case(_gc_world_points_mha_truth, 0, ("fovea", "mean distance 0.00"), all_perfect),
}


@pytest.mark.parametrize("name", list(GC_CASES))
def test_gc_hostile(name, tmp_path, monkeypatch, capsys):
    case = GC_CASES[name]
    built = case.build(tmp_path, monkeypatch)
    inp, gt = built[:2]
    out = built[2] if len(built) > 2 else tmp_path / "output"
    code = gc_main(["--input", str(inp), "--ground-truth", str(gt), "--output", str(out)])
    captured = capsys.readouterr()
    run = Run(code, captured.out, captured.err, out / "metrics.json")
    assert code == case.code, captured.out + captured.err
    check_lines(run, case)


def test_suite_size():
    assert len(PALM_CASES) + len(GC_CASES) >= 25


# -- mechanisms behind the cases -------------------------------------------------------------


def test_mask_convention_rule():
    from evaluation.masks import read_prediction

    def tmp_mask(tmp_dir: Path, values: np.ndarray, suffix=".png") -> Path:
        path = tmp_dir / f"m{suffix}"
        Image.fromarray(values.astype(np.uint8)).save(path)
        return path

    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        box = np.zeros((H, W), bool)
        box[5:10, 5:10] = True
        cases = [
            (np.where(box, 0, 255), box, None),  # PALM: 0 = disc
            (np.where(box, 1, 0), box, "label map"),  # 0/1 label map: 1 = disc
            (np.where(box, 255, 0), box, "inverted"),  # white disc on black
            (np.full((H, W), 255), np.zeros((H, W), bool), None),  # all white: no disc
            (np.zeros((H, W)), np.zeros((H, W), bool), "inverted"),  # all black: read as no disc, said so
        ]
        for values, expected, note in cases:
            read = read_prediction(tmp_mask(folder, values), dark=True, shape=(H, W))
            assert (read.disc == expected).all() and read.note == note, (values.max(), read.note)


def test_ground_truth_names_differing_by_case_are_ambiguous(tmp_path):
    """Ground-truth images AB01 and ab01: exact names match, another case of them is ambiguous."""
    from evaluation.scoring import evaluate_palm
    from evaluation.validation import ValidationError

    gt = tmp_path / "gt"
    gt.mkdir()
    for name in ("AB01", "ab01", "CD02"):
        Image.new("RGB", (W, H)).save(gt / f"{name}.png")
    (gt / "labels.csv").write_text("imgName,Label\nAB01.png,1\nab01.png,0\nCD02.png,0\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "Classification_Results.csv").write_text("FileName,PM Risk\nAB01.jpg,0.9\nab01.jpg,0.1\ncd02.jpg,0.2\n")
    assert evaluate_palm(sub, gt)["aggregates"]["classification"]["n_cases"] == 3
    (sub / "Classification_Results.csv").write_text("FileName,PM Risk\nAb01.jpg,0.9\nab01.jpg,0.1\nCD02.jpg,0.2\n")
    with pytest.raises(ValidationError) as info:
        evaluate_palm(sub, gt)
    assert any("'Ab01' matches 'AB01' and 'ab01'" in p for p in info.value.problems), info.value.problems


def test_zip_extraction_stays_inside(tmp_path):
    """Nothing is written outside the temporary folder, and the folder is gone afterwards."""
    from evaluation.unpack import submission_folder
    from evaluation.validation import ValidationError

    target = zip_folder(write_sub(tmp_path / "sub"), tmp_path / "sub.zip", extra={"../escaped.txt": b"x"})
    with pytest.raises(ValidationError):
        with submission_folder(target):
            pass
    assert not (tmp_path / "escaped.txt").exists()
    good = zip_folder(write_sub(tmp_path / "sub2"), tmp_path / "sub2.zip")
    with submission_folder(good) as folder:
        assert (folder / "Classification_Results.csv").is_file()
        kept = folder
    assert not kept.exists()
    with submission_folder(tmp_path / "sub2") as folder:
        assert folder == tmp_path / "sub2"
    assert (tmp_path / "sub2").is_dir()


def test_leaderboard_takes_zips_and_stops_on_ground_truth_problems(tmp_path):
    subs = tmp_path / "subs"
    write_sub(subs / "alpha")
    zip_folder(write_sub(tmp_path / "b"), subs / "beta.zip", prefix="team-beta/")
    runner = CliRunner()
    ok = runner.invoke(palm, ["leaderboard", str(subs), "--ground-truth", str(make_truth(tmp_path / "gt")),
                              "--out", str(tmp_path / "board")])
    assert ok.exit_code == 0, ok.output
    table = (tmp_path / "board" / "leaderboard.csv").read_text()
    assert "alpha" in table and "beta" in table and "invalid" not in table
    bad = runner.invoke(palm, ["leaderboard", str(subs), "--ground-truth", str(make_truth(tmp_path / "gt2", sheet=False)),
                               "--out", str(tmp_path / "board2")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert bad.stderr.strip().splitlines()[-1].startswith("Error: Ground truth problem")
