"""evaluation on real folders from ../shared/data, with predictions whose scores are known
by construction (exact masks -> Dice 1, shifted masks -> Dice by hand, fovea + (3, 4) -> 5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from palm_algos.cases import read_cases
from palm_cli import main as palm

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared(relative: str) -> Path:
    folder = SHARED / relative
    if not folder.is_dir():
        pytest.skip(f"{folder} not present: real data lives in ../shared/data inside the workplace only")
    return folder


def write_masks(folder: Path, masks: dict[str, np.ndarray]) -> None:
    (folder / "Disc_Segmentation").mkdir(parents=True, exist_ok=True)
    for name, mask in masks.items():
        Image.fromarray(np.where(mask, 0, 255).astype(np.uint8)).save(folder / "Disc_Segmentation" / f"{name}.bmp")


def hand_dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * int((a & b).sum()) / (int(a.sum()) + int(b.sum()))


def test_drions_disc_exact_and_shifted(tmp_path):
    truth = shared("drions-sample")
    cases = read_cases(truth).cases
    masks = {c.name: c.read_disc() for c in cases}
    write_masks(tmp_path / "subs" / "exact", masks)
    shifted = {n: np.roll(m, 7, axis=1) for n, m in masks.items()}
    write_masks(tmp_path / "subs" / "shifted", shifted)
    expected = np.mean([hand_dice(masks[n], shifted[n]) for n in masks])

    runner = CliRunner()
    for name, dice in (("exact", 1.0), ("shifted", expected)):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(palm, ["evaluate", "--submission", str(tmp_path / "subs" / name),
                                      "--ground-truth", str(truth), "--out", str(out)])
        assert result.exit_code == 0, result.output + result.stderr
        agg = json.loads(out.read_text())["aggregates"]["disc"]
        assert agg["n_cases"] == len(cases)
        assert agg["mean_dice"] == pytest.approx(dice)
    shifted_agg = json.loads((tmp_path / "shifted.json").read_text())["aggregates"]["disc"]
    assert shifted_agg["median_hausdorff"] == pytest.approx(7.0, abs=1.0)  # a 7 px shift, boundary noise aside

    board = runner.invoke(palm, ["leaderboard", str(tmp_path / "subs"), "--ground-truth", str(truth),
                                 "--out", str(tmp_path / "board")])
    assert board.exit_code == 0, board.output + board.stderr
    table = (tmp_path / "board" / "leaderboard.csv").read_text().splitlines()
    assert table[1].startswith("1.0,exact") and table[2].startswith("2.0,shifted")
    assert "data:image/png;base64," in (tmp_path / "board" / "leaderboard.html").read_text()


def test_palm224_classification_and_fovea(tmp_path):
    source = shared("palm224/PALM-Training400")
    images = sorted(source.glob("P*.jpg"))[:6] + sorted(source.glob("N*.jpg"))[:6]
    truth = tmp_path / "truth"
    truth.mkdir()
    rows = ["imgName,Fovea_X,Fovea_Y"]
    for i, image in enumerate(images):
        (truth / image.name).symlink_to(image)
        rows.append(f"{image.name},{0 if i == 0 else 100 + i},{0 if i == 0 else 90 + i}")  # first: no fovea
    (truth / "Fovea_Localization.csv").write_text("\n".join(rows) + "\n")
    cases = {c.name: c for c in read_cases(truth).cases}
    assert sum(c.label for c in cases.values()) == 6 and cases[images[0].stem].fovea_absent

    sub = tmp_path / "sub"
    sub.mkdir()
    # risks: positives 0.6..0.9 and negatives 0.1..0.65: one negative (0.65) outranks two positives
    pos = iter([0.6, 0.62, 0.7, 0.8, 0.85, 0.9])
    neg = iter([0.1, 0.2, 0.3, 0.4, 0.5, 0.65])
    risk = {n: next(pos) if c.label else next(neg) for n, c in sorted(cases.items())}
    (sub / "Classification_Results.csv").write_text(
        "FileName,PM Risk\n" + "".join(f"{n}.jpg,{r}\n" for n, r in risk.items()))
    fovea_rows = "".join(
        f"{n}.jpg,{(c.fovea or (0, 0))[0] + 3},{(c.fovea or (0, 0))[1] + 4}\n" for n, c in cases.items())
    (sub / "Fovea_Localization_Results.csv").write_text("FileName,Fovea_X,Fovea_Y\n" + fovea_rows)

    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(palm, ["evaluate", "--submission", str(sub), "--ground-truth", str(truth),
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    agg = json.loads(out.read_text())["aggregates"]
    assert agg["classification"]["auc"] == pytest.approx(34 / 36)  # 2 of 36 pairs misordered
    assert agg["classification"]["auc_ci_low"] <= 34 / 36 <= agg["classification"]["auc_ci_high"]
    # 0.85 specificity allows no false positive of 6: threshold above 0.65 finds 4 of 6 positives
    assert agg["classification"]["sensitivity_at_85_specificity"] == pytest.approx(4 / 6)
    assert agg["fovea"]["mean_distance"] == pytest.approx(5.0)
    assert agg["fovea"]["n_cases"] == 11 and agg["fovea"]["n_no_fovea"] == 1
    assert agg["fovea"]["mean_normalised_distance"] == pytest.approx(np.hypot(3 / 224, 4 / 224))
