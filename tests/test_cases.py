"""Case readers on the real data sets and on small files in every layout they accept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from palm_algos.cases import DataError, list_images, read_cases, read_sheet, summarise

W, H = 40, 30


def jpg(path: Path, size=(W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(path)
    return path


def bmp_mask(path: Path, disc: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(disc, 0, 255).astype(np.uint8)).save(path)
    return path


def one_problem(table, *words) -> str:
    hits = [p for p in table.problems if all(w in p for w in words)]
    assert len(hits) == 1, table.problems
    return hits[0]


# -- real data -------------------------------------------------------------------------------


def test_real_palm224(palm224):
    table = read_cases(palm224)
    assert (len(table), table.layout, table.problems) == (400, "palm", [])
    assert sum(c.label == 1 for c in table.cases) == 213
    assert {c.size for c in table.cases} == {(224, 224)}


def test_real_idrid(idrid):
    table = read_cases(idrid)
    assert (len(table), table.layout, table.problems) == (69, "idrid", [])
    first = table.by_name()["IDRiD_001"]  # IDRiD_OD_Center_Markups.csv: IDRiD_001,651,1453
    assert first.disc_centre == (651.0, 1453.0) and first.fovea == (1914.0, 1617.0)
    assert all(c.disc_centre is not None for c in table.cases)
    assert all(c.fovea is not None for c in table.cases)
    case = table.by_name()["IDRiD_001"]
    assert case.fovea == (1914, 1617) and case.size == (4288, 2848)


def test_real_drishti(drishti):
    table = read_cases(drishti)
    assert (len(table), table.layout, table.problems) == (50, "drishti-gs1", [])
    assert all(c.disc_mask is not None for c in table.cases)
    case = table.cases[0]
    disc = case.read_disc()
    assert case.disc_is_dark is False
    assert disc.dtype == bool and disc.shape == (case.size[1], case.size[0])
    assert 0.005 < disc.mean() < 0.1  # a disc-centred 30 degree photograph


def test_real_drions(drions):
    table = read_cases(drions)
    assert (len(table), table.layout, table.problems) == (19, "images+masks", [])
    assert all(c.disc_mask is not None and c.size == (600, 400) for c in table.cases)
    assert 0.005 < table.cases[0].read_disc().mean() < 0.2


# -- PALM release layouts --------------------------------------------------------------------


def test_palm_folder_labels_from_prefix(tmp_path):
    for name in ("H0001", "N0002", "P0003", "P0004", "V0001"):
        jpg(tmp_path / f"{name}.jpg")
    table = read_cases(tmp_path)
    labels = {c.name: c.label for c in table.cases}
    assert labels == {"H0001": 0, "N0002": 0, "P0003": 1, "P0004": 1, "V0001": None}
    assert summarise(table)["pathologic"] == 2 and table.problems == []


VALIDATION = pd.DataFrame({"ID": [1, 2, 3], "imgName": ["V0001.jpg", "V0002.jpg", "V0003.jpg"],
                           "Label": [1, 0, 0], "Fovea_X": [12.5, 0, 20], "Fovea_Y": [8.25, 0, 15]})
TRAIN_FOVEA = pd.DataFrame({"imgName": ["P0001.jpg", "N0002.jpg"], "Fovea_X": [0, 30.5], "Fovea_Y": [0, 10]})


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_palm_validation_sheet(tmp_path, suffix):
    for name in ("V0001", "V0002", "V0003"):
        jpg(tmp_path / "PALM-Validation400" / f"{name}.jpg")
    sheet = tmp_path / "PALM-Validation-GT" / f"PM_Label_and_Fovea_Location{suffix}"
    sheet.parent.mkdir()
    VALIDATION.to_excel(sheet, index=False) if suffix == ".xlsx" else VALIDATION.to_csv(sheet, index=False)
    cases = read_cases(tmp_path).by_name()
    assert cases["V0001"].label == 1 and cases["V0001"].fovea == (12.5, 8.25)
    assert cases["V0002"].fovea is None and cases["V0002"].fovea_absent
    assert cases["V0003"].label == 0 and cases["V0003"].fovea == (20, 15) and not cases["V0003"].fovea_absent


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_palm_training_fovea_sheet(tmp_path, suffix):
    jpg(tmp_path / "PALM-Training400" / "P0001.jpg")
    jpg(tmp_path / "PALM-Training400" / "N0002.jpg")
    sheet = tmp_path / f"Fovea_Location_train{suffix}"
    TRAIN_FOVEA.to_excel(sheet, index=False) if suffix == ".xlsx" else TRAIN_FOVEA.to_csv(sheet, index=False)
    table = read_cases(tmp_path)
    cases = table.by_name()
    assert (cases["P0001"].label, cases["P0001"].fovea, cases["P0001"].fovea_absent) == (1, None, True)
    assert (cases["N0002"].label, cases["N0002"].fovea) == (0, (30.5, 10))
    assert table.problems == []
    assert list(read_sheet(sheet).columns) == ["name", "x", "y"]


def test_palm_disc_masks(tmp_path):
    jpg(tmp_path / "images" / "P0001.jpg")
    jpg(tmp_path / "images" / "N0002.jpg")
    disc = np.zeros((H, W), bool)
    disc[10:20, 5:15] = True
    bmp_mask(tmp_path / "Disc_Masks" / "P0001.bmp", disc)
    bmp_mask(tmp_path / "Disc_Masks" / "N0002.bmp", np.zeros((H, W), bool))  # all white: no disc
    table = read_cases(tmp_path)
    cases = table.by_name()
    assert table.problems == [] and summarise(table)["with_disc_mask"] == 2
    assert cases["P0001"].disc_is_dark and (cases["P0001"].read_disc() == disc).all()
    assert not cases["N0002"].read_disc().any()


def test_mask_problems(tmp_path):
    jpg(tmp_path / "images" / "P0001.jpg")
    jpg(tmp_path / "images" / "P0002.jpg")
    bmp_mask(tmp_path / "Disc_Masks" / "P0001.bmp", np.zeros((H // 2, W // 2), bool))
    bmp_mask(tmp_path / "Disc_Masks" / "P0002.bmp", np.zeros((H, W), bool))
    bmp_mask(tmp_path / "Disc_Masks" / "P0002.png", np.zeros((H, W), bool))
    bmp_mask(tmp_path / "Disc_Masks" / "P0009.bmp", np.zeros((H, W), bool))
    table = read_cases(tmp_path)
    cases = table.by_name()
    assert cases["P0001"].disc_mask is None and "mask is 20x15" in one_problem(table, "P0001.bmp")
    assert cases["P0002"].disc_mask.name == "P0002.bmp" and "second mask" in one_problem(table, "P0002.png")
    assert "no such image" in one_problem(table, "P0009.bmp")


# -- IDRiD, Drishti, DRIONS ------------------------------------------------------------------


def test_idrid_csv_with_trailing_columns(tmp_path):
    jpg(tmp_path / "images" / "IDRiD_001.jpg")
    jpg(tmp_path / "images" / "IDRiD_002.jpg")
    (tmp_path / "IDRiD_Fovea_Center_Markups.csv").write_text(
        "Image No,X- Coordinate,Y - Coordinate,,,,\r\nIDRiD_001,1914,1617,,,,\r\n"
        "IDRiD_002,22,7.5,,,,\r\n,,,,,,\r\n,,,,,,\r\n")
    table = read_cases(tmp_path)
    assert table.layout == "idrid" and table.problems == []
    assert table.by_name()["IDRiD_001"].fovea == (1914, 1617)
    assert table.by_name()["IDRiD_002"].fovea == (22, 7.5)


def test_drishti_soft_maps(tmp_path):
    jpg(tmp_path / "images" / "drishtiGS_001.jpg")
    soft = np.array([0, 64, 128, 191, 255] * 8, np.uint8)[None].repeat(H, 0)  # 40 columns
    (tmp_path / "disc-softmaps").mkdir()
    Image.fromarray(soft).save(tmp_path / "disc-softmaps" / "drishtiGS_001_ODsegSoftmap.png")
    table = read_cases(tmp_path)
    case = table.cases[0]
    assert (table.layout, case.name, case.disc_is_dark, table.problems) == ("drishti-gs1", "drishtiGS_001", False, [])
    assert (case.read_disc() == (soft >= 128)).all() and case.read_disc().mean() == pytest.approx(0.6)


def test_drions_masks(tmp_path):
    jpg(tmp_path / "images" / "image_001.jpg")
    jpg(tmp_path / "images" / "image_002.jpg")
    mask = np.zeros((H, W), np.uint8)
    mask[5:25, 10:30] = 255
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks" / "image_001.jpg")
    table = read_cases(tmp_path)
    assert table.layout == "images+masks"
    assert (table.by_name()["image_001"].read_disc() == (mask > 0)).mean() > 0.98  # lossy JPEG mask
    assert "no mask" in one_problem(table, "image_002.jpg")


# -- bad input -------------------------------------------------------------------------------


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(DataError, match="no usable images"):
        read_cases(tmp_path)
    with pytest.raises(DataError, match="no such folder"):
        read_cases(tmp_path / "nowhere")
    jpg(tmp_path / "a.jpg")
    with pytest.raises(DataError, match="expected a folder"):
        read_cases(tmp_path / "a.jpg")


def test_truncated_image_found_by_check_images(tmp_path):
    jpg(tmp_path / "P0001.jpg")
    jpg(tmp_path / "P0002.jpg", size=(400, 300))
    data = (tmp_path / "P0002.jpg").read_bytes()
    (tmp_path / "P0002.jpg").write_bytes(data[: len(data) // 2])
    assert len(read_cases(tmp_path)) == 2  # the header alone looks fine
    table = read_cases(tmp_path, check_images=True)
    assert [c.name for c in table.cases] == ["P0001"]
    assert "truncated" in one_problem(table, "P0002.jpg")


def test_unsupported_and_duplicate_files(tmp_path):
    jpg(tmp_path / "a" / "P0001.jpg")
    jpg(tmp_path / "b" / "P0001.jpg")
    (tmp_path / "a" / "P0002.doc").write_bytes(b"notes")  # an image neither by suffix nor by content
    (tmp_path / "broken.png").write_bytes(b"not a png")
    images, problems = list_images(tmp_path)
    assert images == [tmp_path / "a" / "P0001.jpg", tmp_path / "broken.png"]
    table = read_cases(tmp_path)
    assert [c.name for c in table.cases] == ["P0001"]
    assert "duplicate name 'P0001'" in one_problem(table, str(tmp_path / "b" / "P0001.jpg"))
    assert "unsupported file type '.doc'" in one_problem(table, "P0002.doc")
    assert "cannot read image" in one_problem(table, "broken.png")
    assert all("\n" not in p for p in table.problems)


def test_sheet_problems_are_all_listed(tmp_path):
    for name in ("V0001", "V0002", "V0003", "V0004", "V0005", "V0006"):
        jpg(tmp_path / f"{name}.jpg")
    (tmp_path / "labels.csv").write_text(
        "imgName,Label,Fovea_X,Fovea_Y\n"
        "V0001.jpg,1,10,12\n"
        "V0001.jpg,0,11,13\n"        # duplicate row: the first wins
        "V0002.jpg,2,10,12\n"        # label not 0/1
        "V0003.jpg,0,left,12\n"      # non-numeric
        "V0004.jpg,yes,5,5\n"        # non-numeric label
        "V0099.jpg,1,10,12\n")       # no such image; V0005 and V0006 have no row
    table = read_cases(tmp_path)
    cases = table.by_name()
    assert (cases["V0001"].label, cases["V0001"].fovea) == (1, (10, 12))
    assert cases["V0002"].label is None and cases["V0003"].fovea is None
    assert "'V0001' appears 2 times" in one_problem(table, "labels.csv", "V0001")
    one_problem(table, "labels.csv: row 4 (V0002): Label must be 0 or 1, got '2'")
    one_problem(table, "labels.csv: row 5 (V0003): Fovea_X is not a number ('left')")
    one_problem(table, "labels.csv: row 6 (V0004): Label is not a number ('yes')")
    one_problem(table, "labels.csv: row 7: 'V0099' names no image")
    one_problem(table, "labels.csv: no row for 2 image(s): V0005, V0006")
    assert len(table.problems) == 6


def test_sheet_that_is_not_a_label_table(tmp_path):
    jpg(tmp_path / "P0001.jpg")
    (tmp_path / "notes.csv").write_text("run,score\n1,0.5\n")  # some other csv: ignored
    pd.DataFrame({"imgName": ["P0001.jpg"], "Score": [0.3]}).to_excel(tmp_path / "scores.xlsx", index=False)
    (tmp_path / "~$scores.xlsx").write_bytes(b"excel lock file")
    table = read_cases(tmp_path)
    assert "not a label table" in one_problem(table, "scores.xlsx")
    assert table.cases[0].label == 1


def test_empty_fovea_cell_and_row_numbers_after_blank_rows(tmp_path):
    jpg(tmp_path / "P0001.jpg")
    jpg(tmp_path / "P0002.jpg")
    frame = pd.DataFrame({"imgName": ["P0001.jpg", None, "P0002.jpg"], "Fovea_X": [5, None, None],
                          "Fovea_Y": [6, None, 7]})
    frame.to_excel(tmp_path / "Fovea_Location_train.xlsx", index=False)
    table = read_cases(tmp_path)
    assert table.by_name()["P0001"].fovea == (5, 6)
    one_problem(table, "Fovea_Location_train.xlsx: row 4 (P0002): Fovea_X is empty")
