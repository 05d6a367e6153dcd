"""evaluation: metrics against hand-computed values, validation of participant input,
the grand-challenge predictions.json path, the CLI and the leaderboard (synthetic data)."""

from __future__ import annotations

import base64
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from evaluation import metrics as M
from evaluation.gc import main as gc_main
from evaluation.leaderboard import Entry, build, rank
from evaluation.scoring import evaluate_palm, write_metrics
from evaluation.validation import ValidationError, bare_name
from palm_cli import main as palm

W, H = 60, 40
# name, fovea (0, 0 = not visible), disc box (x0, y0, x1, y1) or None for no disc
TRUTH = {
    "P0001": ((30, 20), (10, 10, 20, 20)),
    "P0002": ((25, 15), (30, 10, 40, 20)),
    "N0003": ((0, 0), (5, 5, 15, 15)),
    "N0004": ((40, 30), None),
}


def disc_mask(box) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    if box is not None:
        x0, y0, x1, y1 = box
        mask[y0:y1, x0:x1] = True
    return mask


def save_palm_mask(mask: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, 0, 255).astype(np.uint8)).save(path)


@pytest.fixture
def truth(tmp_path) -> Path:
    """A PALM-shaped ground truth folder: images, fovea sheet (one (0,0)), Disc_Masks/."""
    root = tmp_path / "truth"
    root.mkdir()
    rows = ["imgName,Fovea_X,Fovea_Y"]
    for name, (fovea, box) in TRUTH.items():
        Image.new("RGB", (W, H), (120, 60, 30)).save(root / f"{name}.png")
        save_palm_mask(disc_mask(box), root / "Disc_Masks" / f"{name}.bmp")
        rows.append(f"{name}.jpg,{fovea[0]},{fovea[1]}")
    (root / "fovea.csv").write_text("\n".join(rows) + "\n")
    return root


def write_submission(folder: Path, risk=None, fovea=None, masks=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if risk is not None:
        (folder / "Classification_Results.csv").write_text(
            "FileName,PM Risk\n" + "".join(f"{n}.jpg,{r}\n" for n, r in risk.items()))
    if fovea is not None:
        (folder / "Fovea_Localization_Results.csv").write_text(
            "FileName,Fovea_X,Fovea_Y\n" + "".join(f"{n}.jpg,{x},{y}\n" for n, (x, y) in fovea.items()))
    for name, mask in (masks or {}).items():
        save_palm_mask(mask, folder / "Disc_Segmentation" / f"{name}.bmp")
    return folder


def perfect(folder: Path) -> Path:
    return write_submission(
        folder,
        risk={n: 0.9 if n[0] == "P" else 0.1 for n in TRUTH},
        fovea={n: f for n, (f, _) in TRUTH.items()},
        masks={n: disc_mask(b) for n, (_, b) in TRUTH.items()},
    )


# -- metrics ---------------------------------------------------------------------------------


def test_auc_and_sensitivity_by_hand():
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert M.auc(y, s) == pytest.approx(0.75)
    # specificity >= 0.85 allows only fpr = 0, where one of two positives is found
    assert M.sensitivity_at_specificity(y, s, 0.85) == pytest.approx(0.5)
    assert M.sensitivity_at_specificity(y, s, 0.5) == pytest.approx(1.0)
    assert math.isnan(M.auc([1, 1], [0.2, 0.3]))


def test_auc_ci_brackets_the_auc_and_never_hangs():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = np.clip(y * 0.3 + rng.random(60) * 0.7, 0, 1)
    low, high = M.auc_ci(y, s)
    assert low <= M.auc(y, s) <= high
    # grand-challenge-metrics never draws the last index: these would loop forever there
    assert all(math.isnan(v) for v in M.auc_ci([0, 1], [0.2, 0.8]))
    assert all(math.isnan(v) for v in M.auc_ci([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.9]))


def test_fovea_distances_by_hand():
    assert M.fovea_distances([[13, 24]], [[10, 20]]).tolist() == [5.0]
    norm = M.normalised_fovea_distances([[13, 24]], [[10, 20]], [[30, 40]])
    assert norm[0] == pytest.approx(math.sqrt((3 / 30) ** 2 + (4 / 40) ** 2))
    s = M.summary([3, 4, 5])
    assert s == {"mean": 4.0, "std": pytest.approx(math.sqrt(2 / 3)), "median": 4.0}
    assert all(math.isnan(v) for v in M.summary([]).values())


def test_dice_rules():
    a = np.zeros((5, 5), bool)
    b = a.copy()
    a[1:3, 1:3] = True
    b[1:3, 2:4] = True  # one column shift: overlap 2 of 4 + 4
    assert M.dice(a, b) == pytest.approx(0.5)
    assert M.dice(a, a) == 1.0
    assert M.dice(np.zeros((5, 5), bool), np.zeros((5, 5), bool)) == 1.0
    assert M.dice(a, np.zeros((5, 5), bool)) == 0.0


def test_hausdorff_by_hand_and_equal_to_full_image():
    from grand_challenge_metrics.stats import hausdorff_distance

    a, b = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    a[0, 0], b[3, 4] = True, True
    assert M.hausdorff(a, b) == pytest.approx(5.0)
    assert M.hausdorff(a, b, spacing=(2.0, 1.0)) == pytest.approx(math.sqrt(6**2 + 4**2))
    assert math.isnan(M.hausdorff(a, np.zeros_like(a)))
    yy, xx = np.mgrid[:120, :150]
    p = (xx - 60) ** 2 + (yy - 50) ** 2 < 30**2
    t = ((xx - 70) ** 2 + (yy - 55) ** 2 < 25**2) | ((xx < 8) & (yy > 100))  # touches the border
    assert M.hausdorff(p, t, (1.5, 1.0)) == pytest.approx(hausdorff_distance(p, t, voxelspacing=(1.5, 1.0)))
    rng = np.random.default_rng(1)
    for _ in range(20):  # ragged shapes, holes, several components: still the same number
        p, t = rng.random((30, 45)) < 0.2, rng.random((30, 45)) < 0.05
        t[0, 0] = True
        spacing = tuple(rng.uniform(0.5, 2.0, 2))
        assert M.hausdorff(p, t, spacing) == pytest.approx(hausdorff_distance(p, t, voxelspacing=spacing))


def test_presence_f1_by_hand():
    assert M.presence_f1([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert M.presence_f1([1, 0], [1, 0]) == 1.0
    assert math.isnan(M.presence_f1([0, 0], [0, 0]))


# -- scoring a PALM folder -------------------------------------------------------------------


def test_perfect_submission(truth, tmp_path):
    result = evaluate_palm(perfect(tmp_path / "sub"), truth)
    agg = result["aggregates"]
    assert agg["classification"]["auc"] == 1.0
    assert agg["classification"]["n_cases"] == 4
    assert agg["fovea"]["mean_distance"] == 0.0
    assert agg["fovea"]["n_cases"] == 3 and agg["fovea"]["n_no_fovea"] == 1
    assert agg["disc"]["mean_dice"] == 1.0
    assert agg["disc"]["n_both_empty"] == 1 and agg["disc"]["presence_f1"] == 1.0
    assert result["case"]["N0003"]["fovea_absent"] is True
    assert result["case"]["N0004"]["hausdorff"] != result["case"]["N0004"]["hausdorff"]  # NaN before writing


def test_known_errors_by_construction(truth, tmp_path):
    shifted = {n: np.roll(disc_mask(b), 5, axis=1) for n, (_, b) in TRUTH.items()}  # 10x10 box, 5 px right
    shifted["P0002"] = np.zeros((H, W), bool)  # one empty: Dice 0
    sub = write_submission(
        tmp_path / "sub",
        fovea={n: (f[0] + 3, f[1] + 4) for n, (f, _) in TRUTH.items()},
        masks=shifted,
    )
    result = evaluate_palm(sub, truth)
    fovea, disc = result["aggregates"]["fovea"], result["aggregates"]["disc"]
    assert "classification" not in result["aggregates"]  # each task on its own
    assert fovea["mean_distance"] == pytest.approx(5.0) and fovea["std_distance"] == pytest.approx(0.0)
    assert fovea["mean_normalised_distance"] == pytest.approx(math.hypot(3 / W, 4 / H))
    # P0001, N0003: Dice 2*50/200 = 0.5; P0002: 0; N0004 both empty: 1
    assert [result["case"][n]["dice"] for n in TRUTH] == pytest.approx([0.5, 0.0, 0.5, 1.0])
    assert disc["mean_dice"] == pytest.approx(0.5)
    assert disc["n_one_empty"] == 1 and disc["n_hausdorff"] == 2
    assert disc["mean_hausdorff"] == pytest.approx(5.0)
    assert disc["presence_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1))


def test_metrics_json_has_no_nan(truth, tmp_path):
    result = evaluate_palm(perfect(tmp_path / "sub"), truth)
    write_metrics(result, tmp_path / "metrics.json")
    text = (tmp_path / "metrics.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))
    assert data["case"]["N0004"]["hausdorff"] is None
    assert set(data) == {"case", "aggregates", "warnings"}


# -- validation ------------------------------------------------------------------------------

GOOD_RISK = "FileName,PM Risk\nP0001.jpg,0.9\nP0002.jpg,0.8\nN0003.jpg,0.2\nN0004.jpg,0.1\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD_RISK.replace("N0004.jpg,0.1\n", ""), "no prediction for 1 of 4 images: N0004"),
        (GOOD_RISK + "P0001.jpg,0.5\n", "line 6: duplicate row for 'P0001' (first at line 2)"),
        (GOOD_RISK.replace("FileName,PM Risk", "name,risk"), "wrong header 'name,risk'; expected 'FileName,PM Risk'"),
        (GOOD_RISK.replace("FileName,PM Risk\n", ""), "missing header"),
        (GOOD_RISK.replace("0.9", "nan"), "line 2: PM Risk is not a finite number ('nan')"),
        (GOOD_RISK.replace("0.9", "high"), "line 2: PM Risk is not a number ('high')"),
        (GOOD_RISK.replace("0.9", ""), "line 2: PM Risk is empty"),
        (GOOD_RISK.replace("0.9", "1.5"), "PM Risk must be between 0 and 1, got 1.5"),
        (GOOD_RISK.replace("0.8", "-0.1"), "PM Risk must be between 0 and 1, got -0.1"),
        (GOOD_RISK.replace("P0001.jpg", "../P0001.jpg"), "'../P0001.jpg' must be a bare file name"),
        (GOOD_RISK.replace("P0001.jpg", "a/P0001.jpg"), "'a/P0001.jpg' must be a bare file name"),
        (GOOD_RISK.replace("P0001.jpg,0.9", "P0001.jpg"), "line 2: 1 cell, but the header has 2"),
        ("", "the file is empty"),
    ],
)
def test_classification_csv_problems_are_fatal(truth, tmp_path, text, expected):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "Classification_Results.csv").write_text(text)
    with pytest.raises(ValidationError) as info:
        evaluate_palm(sub, truth)
    assert "\n" not in str(info.value)
    assert any(expected in line for line in info.value.problems), info.value.problems


def test_fovea_csv_header_and_values(truth, tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "Fovea_Localization_Results.csv").write_text(
        "FileName,X,Y\nP0001.jpg,1,2\n")
    with pytest.raises(ValidationError, match="wrong header 'FileName,X,Y'; expected 'FileName,Fovea_X,Fovea_Y'"):
        evaluate_palm(sub, truth)


def test_extra_cases_and_extra_columns_only_warn(truth, tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "Classification_Results.csv").write_text(
        "FileName,PM Risk,notes\n" + GOOD_RISK.split("\n", 1)[1].replace("\n", ",\n") + "X0009.jpg,0.5,\n")
    result = evaluate_palm(sub, truth)
    assert result["aggregates"]["classification"]["auc"] == 1.0
    assert any("ignored 1 predictions for images not in the test set: X0009" in w for w in result["warnings"])
    assert any("extra columns ignored: notes" in w for w in result["warnings"])


def test_predicts_own_png_copies_pass_without_a_warning(truth, tmp_path):
    """`palm predict --png` writes Disc_Segmentation/png/: scored from the BMPs, never warned
    about; any other stray entry still is."""
    sub = perfect(tmp_path / "sub")
    masks = sub / "Disc_Segmentation"
    (masks / "png").mkdir()
    Image.open(next(masks.glob("*.bmp"))).save(masks / "png" / "P0001.png")
    assert not [w for w in evaluate_palm(sub, truth)["warnings"] if "Disc_Segmentation" in w]
    (masks / "notes").mkdir()
    assert any("ignored 1 entries that are not .bmp/.png files: notes" in w for w in evaluate_palm(sub, truth)["warnings"])


def test_mask_problems(truth, tmp_path):
    sub = perfect(tmp_path / "sub")
    masks = sub / "Disc_Segmentation"
    Image.fromarray(np.full((H + 1, W), 255, np.uint8)).save(masks / "P0002.bmp")  # wrong size
    (masks / "N0003.bmp").write_bytes(b"not an image")  # unreadable
    (masks / "P0001.png").write_bytes(b"")  # a second mask for one case
    with pytest.raises(ValidationError) as info:
        evaluate_palm(sub, truth)
    problems = "\n".join(info.value.problems)
    assert "P0002.bmp: mask is 60x41, expected 60x40" in problems
    assert "N0003.bmp: cannot read the mask" in problems
    assert "two masks for 'P0001'" in problems
    assert str(info.value).startswith("Invalid submission: ") and "more problems" in str(info.value)


def test_non_binary_mask_is_binarised_with_a_warning(truth, tmp_path):
    sub = perfect(tmp_path / "sub")
    grey = np.where(disc_mask(TRUTH["P0001"][1]), 100, 200).astype(np.uint8)  # 100 < 128: disc
    Image.fromarray(grey).save(sub / "Disc_Segmentation" / "P0001.bmp")
    result = evaluate_palm(sub, truth)
    assert result["case"]["P0001"]["dice"] == 1.0
    assert any("1 masks are not binary (0/255); binarised at 128: P0001" in w for w in result["warnings"])


def test_empty_folder_and_bare_names(truth, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidationError, match="no results found"):
        evaluate_palm(tmp_path / "empty", truth)
    assert bare_name("P0001.jpg") == "P0001" and bare_name("P0001") == "P0001"
    assert bare_name("../x.jpg") is None and bare_name("a\\b.jpg") is None and bare_name(" ") is None


def test_cli_evaluate_success_and_failure(truth, tmp_path):
    runner = CliRunner()
    out = tmp_path / "m.json"
    ok = runner.invoke(palm, ["evaluate", "--submission", str(perfect(tmp_path / "good")),
                              "--ground-truth", str(truth), "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "AUC 1.0000" in ok.output and json.loads(out.read_text())["aggregates"]["disc"]["mean_dice"] == 1.0
    assert ok.output.strip().splitlines()[-1] == f"wrote {out}"
    for submission, written in ((tmp_path / "good", tmp_path / "good.metrics.json"),  # beside it, not inside
                                (shutil.make_archive(str(tmp_path / "team"), "zip", tmp_path / "good"),
                                 tmp_path / "team.metrics.json")):
        default = runner.invoke(palm, ["evaluate", "--submission", str(submission), "--ground-truth", str(truth)])
        assert default.exit_code == 0, default.output
        assert default.output.strip().splitlines()[-1] == f"wrote {written}"
        assert json.loads(written.read_text())["aggregates"]["classification"]["auc"] == 1.0
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "Classification_Results.csv").write_text(GOOD_RISK.replace("0.9", "x").replace("0.8", "2"))
    failed = runner.invoke(palm, ["evaluate", "--submission", str(bad), "--ground-truth", str(truth)])
    assert failed.exit_code == 1
    assert "Traceback" not in failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last == "Error: Invalid submission: Classification_Results.csv: line 2: PM Risk is not a number ('x') (and 1 more problem; see the log)"


# -- grand-challenge -------------------------------------------------------------------------


def make_gc_input(root: Path, truth_dir: Path, broken: bool = False) -> Path:
    """A fake /input: predictions.json with 3 jobs and their json and mha outputs."""
    from palm_algos.imageio import write_mha_mask

    jobs = []
    for i, name in enumerate(["P0001", "P0002", "N0003"]):
        pk = f"job-{i}"
        fovea, box = TRUTH[name]
        out = root / pk / "output"
        out.mkdir(parents=True)
        risk = 0.9 if name[0] == "P" else 0.2
        (out / "pathologic-myopia-likelihood.json").write_text(json.dumps("high" if broken and i == 1 else risk))
        point = {"version": {"major": 1, "minor": 0}, "type": "Point", "name": "fovea",
                 "point": [fovea[0] + 3, fovea[1] + 4, 0]}
        (out / "fovea.json").write_text(json.dumps(point))
        write_mha_mask(disc_mask(box), out / "images" / "optic-disc-segmentation" / "output.mha")
        jobs.append({
            "pk": pk,
            "inputs": [{"interface": {"slug": "color-fundus-image", "relative_path": "images/color-fundus",
                                      "kind": "Image"}, "image": {"name": f"{name}.png"}}],
            "outputs": [
                {"interface": {"slug": "pathologic-myopia-likelihood",
                               "relative_path": "pathologic-myopia-likelihood.json", "kind": "Float"}, "value": risk},
                {"interface": {"slug": "fovea", "relative_path": "fovea.json", "kind": "Point"}, "value": point},
                {"interface": {"slug": "optic-disc-segmentation", "relative_path": "images/optic-disc-segmentation",
                               "kind": "Segmentation"}, "image": {"name": "output.mha"}},
            ],
        })
    (root / "predictions.json").write_text(json.dumps(jobs))
    return root


def gc_truth(truth: Path) -> Path:
    """The ground truth for exactly the three jobs."""
    for name in ("N0004",):
        (truth / f"{name}.png").unlink()
        (truth / "Disc_Masks" / f"{name}.bmp").unlink()
    sheet = truth / "fovea.csv"
    sheet.write_text("".join(line + "\n" for line in sheet.read_text().splitlines() if "N0004" not in line))
    return truth


def test_gc_predictions_json(truth, tmp_path, capsys):
    gt = gc_truth(truth)
    inp = make_gc_input(tmp_path / "input", gt)
    code = gc_main(["--input", str(inp), "--ground-truth", str(gt), "--output", str(tmp_path / "output")])
    assert code == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "output" / "metrics.json").read_text())
    agg = data["aggregates"]
    assert agg["classification"]["auc"] == 1.0 and agg["classification"]["n_cases"] == 3
    assert agg["fovea"]["mean_distance"] == pytest.approx(5.0) and agg["fovea"]["n_no_fovea"] == 1
    assert agg["disc"]["mean_dice"] == 1.0 and agg["disc"]["n_cases"] == 3
    assert set(data["case"]) == {"P0001", "P0002", "N0003"}
    assert not any("not binary" in w for w in data.get("warnings", [])), "0/1 MHA label maps are binary"
    assert "mean Dice 1.0000" in capsys.readouterr().out
    cli = CliRunner().invoke(palm, ["evaluate", "--gc", "--input", str(inp), "--ground-truth", str(gt),
                                    "--out", str(tmp_path / "cli.json")])
    assert cli.exit_code == 0, cli.output
    assert json.loads((tmp_path / "cli.json").read_text())["aggregates"] == data["aggregates"]


def test_gc_single_task_and_absent_slug(truth, tmp_path, capsys):
    """A phase with one task scores that task; a slug given but absent fails (never a silent skip)."""
    gt = gc_truth(truth)
    inp = make_gc_input(tmp_path / "input", gt)
    jobs = json.loads((inp / "predictions.json").read_text())
    for job in jobs:
        job["outputs"] = [o for o in job["outputs"] if o["interface"]["slug"] == "fovea"]
    (inp / "predictions.json").write_text(json.dumps(jobs))
    code = gc_main(["--input", str(inp), "--ground-truth", str(gt), "--output", str(tmp_path / "out")])
    assert code == 0
    agg = json.loads((tmp_path / "out" / "metrics.json").read_text())["aggregates"]
    assert list(agg) == ["fovea"]
    capsys.readouterr()
    code = gc_main(["--input", str(inp), "--ground-truth", str(gt), "--output", str(tmp_path / "out2"),
                    "--disc-slug", "something-else"])
    assert code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "'something-else'" in last and "fovea (point)" in last


def test_gc_failure_last_stderr_line(truth, tmp_path):
    gt = gc_truth(truth)
    inp = make_gc_input(tmp_path / "input", gt, broken=True)
    run = subprocess.run(
        [sys.executable, "-m", "evaluation.gc", "--input", str(inp), "--ground-truth", str(gt),
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("Invalid submission: job job-1 (P0002.png): pathologic-myopia-likelihood: expected a number")
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_gc_bad_predictions_json(truth, tmp_path):
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "predictions.json").write_text("{not json")
    from evaluation.scoring import evaluate_gc

    with pytest.raises(ValidationError, match="predictions.json: not valid JSON"):
        evaluate_gc(tmp_path / "input", truth)


def _edit_jobs(inp: Path, change) -> None:
    jobs = json.loads((inp / "predictions.json").read_text())
    change(jobs)
    (inp / "predictions.json").write_text(json.dumps(jobs))


def _drop_disc_output(jobs):
    jobs[2]["outputs"] = jobs[2]["outputs"][:2]


def _duplicate_job(jobs):
    jobs.append(dict(jobs[0], pk="job-9"))


@pytest.mark.parametrize(
    "change, files, expected",
    [
        (_drop_disc_output, {}, "optic-disc-segmentation: no prediction for 1 of 3 images: N0003"),
        (_duplicate_job, {}, "job job-9: a second job for image 'P0001' (also job job-0)"),
        (None, {"job-0/output/fovea.json": '{"type": "Point", "point": ["a", 2, 0]}'}, "fovea: expected a Point"),
        (None, {"job-0/output/pathologic-myopia-likelihood.json": "NaN"}, "between 0 and 1, got nan"),
        (None, {"job-1/output/pathologic-myopia-likelihood.json": "1.2"}, "between 0 and 1, got 1.2"),
        (None, {"job-1/output/fovea.json": "{oops"}, "fovea.json is not valid JSON"),
        (None, {"job-2/output/images/optic-disc-segmentation/second.mha": ""}, "expected one .mha image in the output, found 2"),
    ],
)
def test_gc_problems(truth, tmp_path, change, files, expected):
    from evaluation.scoring import evaluate_gc

    gt = gc_truth(truth)
    inp = make_gc_input(tmp_path / "input", gt)
    if change:
        _edit_jobs(inp, change)
    for relative, text in files.items():
        (inp / relative).write_text(text)
    with pytest.raises(ValidationError) as info:
        evaluate_gc(inp, gt)
    assert any(expected in line for line in info.value.problems), info.value.problems


def test_gc_socket_key_and_nothing_to_score(truth, tmp_path):
    from evaluation.scoring import evaluate_gc

    gt = gc_truth(truth)
    inp = make_gc_input(tmp_path / "input", gt)

    def rename(jobs):
        for job in jobs:
            for value in job["inputs"] + job["outputs"]:
                value["socket"] = value.pop("interface")

    _edit_jobs(inp, rename)
    assert evaluate_gc(inp, gt)["aggregates"]["disc"]["mean_dice"] == 1.0
    for image in gt.glob("*.png"):  # labels come from names: without P/N names there are none
        image.rename(image.with_name("x" + image.name))
    # the ground truth lacks what the jobs answer: the organiser's problem, not the participant's
    from evaluation.validation import GroundTruthError

    with pytest.raises(GroundTruthError, match=r"^Ground truth problem \(organiser's side\): .*no annotations"):
        evaluate_gc(inp, gt, slugs={"fovea": "-", "disc": "-"})


def test_cli_missing_ground_truth_is_one_line(tmp_path):
    result = CliRunner().invoke(palm, ["evaluate", "--submission", str(tmp_path), "--ground-truth",
                                       str(tmp_path / "nope")])
    assert result.exit_code == 2 and "Traceback" not in result.stderr  # 2: the organiser's side
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: Ground truth problem (organiser's side): {tmp_path / 'nope'}: no such file or folder")


def test_evaluation_imports_no_torch():
    code = "import evaluation.cli, evaluation.gc, evaluation.leaderboard, sys; assert 'torch' not in sys.modules"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr


# -- leaderboard -----------------------------------------------------------------------------


def entry(name, auc=None, dist=None, dice=None) -> Entry:
    agg = {}
    if auc is not None:
        agg["classification"] = {"auc": auc}
    if dist is not None:
        agg["fovea"] = {"mean_distance": dist}
    if dice is not None:
        agg["disc"] = {"mean_dice": dice}
    return Entry(name, result={"case": {}, "aggregates": agg})


def test_rank_rules():
    entries = [entry("A", 1.0, 0.0, 1.0), entry("B", 1.0), entry("C", 0.5, 5.0, 0.5), Entry("D", error="bad header")]
    worst = rank(entries, "worst").set_index("submission")
    # classification A,B tie 1.5, C 3; fovea A 1, C 2, B (missing) 3; disc likewise
    assert worst.loc["A", "mean_rank"] == pytest.approx((1.5 + 1 + 1) / 3)
    assert worst.loc["B", "mean_rank"] == pytest.approx((1.5 + 3 + 3) / 3)
    assert worst.loc["C", "mean_rank"] == pytest.approx((3 + 2 + 2) / 3)
    assert worst["rank"].to_dict() == {"A": 1.0, "C": 2.0, "B": 3.0, "D": pytest.approx(float("nan"), nan_ok=True)}
    assert worst.loc["D", "status"] == "invalid: bad header"
    skip = rank(entries, "skip").set_index("submission")
    assert skip.loc["B", "mean_rank"] == pytest.approx(1.5)
    assert skip["rank"].dropna().to_dict() == {"A": 1.0, "B": 2.0, "C": 3.0}
    # two submissions missing a task tie for the worst places: (2 + 3) / 2
    tie = rank([entry("A", 0.9, 1.0), entry("B", 0.8), entry("C", 0.7)], "worst").set_index("submission")
    assert tie.loc["B", "fovea_rank"] == tie.loc["C", "fovea_rank"] == 2.5


def test_leaderboard_folders_html_and_cli(truth, tmp_path):
    subs = tmp_path / "subs"
    perfect(subs / "alpha")
    write_submission(subs / "beta", risk={n: 0.5 if n[0] == "P" else 0.6 for n in TRUTH} | {"X0009": 0.5},
                     fovea={n: (f[0] + 3, f[1] + 4) for n, (f, _) in TRUTH.items()})
    (subs / "gamma").mkdir()
    (subs / "gamma" / "Classification_Results.csv").write_text("oops\n")
    (subs / "delta").mkdir()
    precomputed = evaluate_palm(perfect(tmp_path / "delta_src"), truth)
    precomputed["aggregates"]["classification"]["auc"] = 0.25
    write_metrics(precomputed, subs / "delta" / "metrics.json")

    table = build(subs, truth, tmp_path / "board", progress=False).set_index("submission")
    assert table.loc["alpha", "rank"] == 1.0
    assert table.loc["gamma", "status"].startswith("invalid: Classification_Results.csv: wrong header")
    # classification: alpha 1, beta (AUC 0) 3... delta 0.25 -> 2; fovea alpha/delta tie 1.5, beta 3;
    # disc alpha/delta 1.5, beta missing 3
    assert table.loc["delta", "mean_rank"] == pytest.approx((2 + 1.5 + 1.5) / 3)
    assert table.loc["beta", "rank"] == 3.0
    page = (tmp_path / "board" / "leaderboard.html").read_text()
    images = [part.split('"', 1)[0] for part in page.split('src="data:image/png;base64,')[1:]]
    assert len(images) == 3 and all(base64.b64decode(img).startswith(b"\x89PNG") for img in images)
    for title in ("ROC curves", "Fovea distance per image", "Disc Dice per image"):
        assert title in page
    assert (tmp_path / "board" / "leaderboard.csv").read_text().startswith("rank,submission")  # names for programs
    board = (tmp_path / "board" / "leaderboard.md").read_text()
    headers = ("| Rank | Submission | Classification AUC | Classification rank | Fovea mean distance (px) | Fovea rank "
               "| Disc mean Dice | Disc rank | Mean task rank | Status |")
    for text in (board, page):
        assert "against the ground truth truth." in text and "Scored 20" in text  # the date and the truth's name
        assert "ignored 1 predictions for images not in the test set: X0009" in text  # beta's warning
    assert headers in board
    assert "<th>Fovea mean distance (px)</th>" in page and "<h2>Warnings</h2><h3>beta</h3>" in page

    result = CliRunner().invoke(palm, ["leaderboard", str(subs), "--ground-truth", str(truth),
                                       "--out", str(tmp_path / "board2"), "--missing", "skip"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "board2" / "leaderboard.html").exists() and "gamma" in result.output
