"""Scoring a submission against ground truth cases: one task at a time, every case reported.

``score(cases, submission)`` returns the metrics.json document, or raises ValidationError
with the full report when a fatal problem was found. Ground truth comes from
``palm_algos.cases.read_cases`` (any supported layout); nothing here knows file layouts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from palm_algos.cases import Case, read_cases
from palm_algos.imageio import ImageError, read_grey

from . import metrics as M
from .submission import Submission, read_gc_submission, read_palm_submission
from .validation import short_list

SPECIFICITY = 0.85


def evaluate_palm(submission: Path, ground_truth: Path, progress: bool | None = False) -> dict:
    """Score a PALM-layout submission folder against a ground truth folder."""
    return score(read_cases(ground_truth).cases, read_palm_submission(submission), progress=progress)


def evaluate_gc(input_dir: Path, ground_truth: Path, slugs: dict[str, str] | None = None, progress: bool = False) -> dict:
    """Score grand-challenge algorithm jobs (``predictions.json``) against ground truth."""
    return score(read_cases(ground_truth).cases, read_gc_submission(input_dir, slugs), progress=progress)


def score(cases: list[Case], sub: Submission, progress: bool | None = False) -> dict:
    """Each task the submission holds, scored on its own; raise if any problem is fatal."""
    report = sub.report
    per_case: dict[str, dict] = {}
    aggregates: dict[str, dict] = {}
    known = {c.name for c in cases}
    tasks = {
        "classification": ([c for c in cases if c.label is not None], sub.risk, "labels"),
        "fovea": ([c for c in cases if c.fovea is not None or c.fovea_absent], sub.fovea, "fovea positions"),
        "disc": ([c for c in cases if c.disc_mask is not None], sub.disc, "disc masks"),
    }
    scorers = {"classification": _classification, "fovea": _fovea, "disc": _disc}
    for task in sub.tasks():
        truth, predictions, what = tasks[task]
        source = sub.sources.get(task, task)
        if not truth:
            report.warn(f"{source}: the ground truth has no {what}; {task} not scored")
            continue
        wanted = {c.name for c in truth}
        rejected = {name for t, name in sub.rejected if t == task}
        missing = set() if "*" in rejected else wanted - predictions.keys() - rejected
        extra = predictions.keys() - known
        if missing:
            report.error(f"{source}: no prediction for {len(missing)} of {len(wanted)} images: {short_list(missing)}")
        if extra:
            report.warn(f"{source}: ignored {len(extra)} predictions for images not in the test set: {short_list(extra)}")
        scored = [c for c in truth if c.name in predictions]
        aggregates[task] = scorers[task](scored, predictions, sub, per_case, progress)
    if sub.tasks() and not aggregates and not report.errors:
        report.error(f"nothing to score: the ground truth has no annotations for {', '.join(sub.tasks())}")
    report.raise_if_fatal()
    return {"case": per_case, "aggregates": aggregates, "warnings": list(report.warnings)}


def _classification(cases, risk, sub, per_case, progress) -> dict:
    y_true = np.array([c.label for c in cases], dtype=int)
    y_score = np.array([risk[c.name] for c in cases], dtype=float)
    for c in cases:
        per_case.setdefault(c.name, {}).update(label=c.label, pm_risk=risk[c.name])
    low, high = M.auc_ci(y_true, y_score)
    return {
        "auc": M.auc(y_true, y_score),
        "auc_ci_low": low,
        "auc_ci_high": high,
        "sensitivity_at_85_specificity": M.sensitivity_at_specificity(y_true, y_score, SPECIFICITY),
        "n_cases": len(cases),
        "n_positive": int(y_true.sum()),
    }


def _fovea(cases, fovea, sub, per_case, progress) -> dict:
    visible = [c for c in cases if c.fovea is not None and not c.fovea_absent]
    for c in cases:
        if c.fovea is None or c.fovea_absent:
            per_case.setdefault(c.name, {}).update(fovea_absent=True, fovea_distance=None)
    pred = np.array([_to_pixels(c, fovea[c.name], sub.fovea_in_world) for c in visible], dtype=float).reshape(-1, 2)
    true = np.array([c.fovea for c in visible], dtype=float).reshape(-1, 2)
    sizes = np.array([c.size for c in visible], dtype=float).reshape(-1, 2)
    dist = M.fovea_distances(pred, true)
    norm = M.normalised_fovea_distances(pred, true, sizes)
    outside = [c.name for c, (x, y) in zip(visible, pred) if not (0 <= x < c.size[0] and 0 <= y < c.size[1])]
    if outside:
        sub.report.warn(f"{sub.sources['fovea']}: {len(outside)} fovea positions lie outside the image: {short_list(outside)}")
    for c, (x, y), d, n in zip(visible, pred, dist, norm):
        per_case.setdefault(c.name, {}).update(
            fovea_absent=False, fovea_x=float(x), fovea_y=float(y), fovea_distance=float(d), fovea_normalised_distance=float(n)
        )
    stats, nstats = M.summary(dist), M.summary(norm)
    return {
        "mean_distance": stats["mean"],
        "std_distance": stats["std"],
        "median_distance": stats["median"],
        "mean_normalised_distance": nstats["mean"],
        "std_normalised_distance": nstats["std"],
        "median_normalised_distance": nstats["median"],
        "n_cases": len(visible),
        "n_no_fovea": len(cases) - len(visible),
    }


def _to_pixels(case: Case, xy: tuple[float, float], in_world: bool) -> tuple[float, float]:
    """grand-challenge points are in world space: map them through the image's geometry."""
    if not in_world or case.image.suffix.lower() not in (".mha", ".tif", ".tiff"):
        return xy
    import SimpleITK as sitk

    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(case.image))
        reader.ReadImageInformation()
    except RuntimeError:
        return xy
    dim = reader.GetDimension()
    direction = np.array(reader.GetDirection()).reshape(dim, dim)[:2, :2]
    spacing, origin = np.array(reader.GetSpacing()[:2]), np.array(reader.GetOrigin()[:2])
    index = np.linalg.solve(direction * spacing, np.asarray(xy, dtype=float) - origin)
    return float(index[0]), float(index[1])


def _disc(cases, masks, sub, per_case, progress) -> dict:
    report, source = sub.report, sub.sources["disc"]
    dices, distances, true_present, pred_present, nonbinary = [], [], [], [], []
    quiet = None if progress is None else not progress  # None: a bar only on a terminal
    for c in tqdm(cases, desc="disc masks", unit="mask", disable=quiet, leave=False):
        mask = masks[c.name]
        true = c.read_disc()
        try:
            grey = read_grey(mask.path)
        except ImageError:
            report.error(f"{source}: {mask.path.name}: cannot read the mask (expected an 8-bit image)")
            continue
        if grey.shape != true.shape:
            report.error(
                f"{source}: {mask.path.name}: mask is {grey.shape[1]}x{grey.shape[0]}, "
                f"expected {true.shape[1]}x{true.shape[0]} (the image size)"
            )
            continue
        pred, binary = _binarise(grey, mask.dark)
        if not binary:
            nonbinary.append(c.name)
        d = M.dice(pred, true)
        h = M.hausdorff(pred, true, _spacing(mask.path)) if pred.any() and true.any() else M.NAN
        dices.append(d)
        true_present.append(bool(true.any()))
        pred_present.append(bool(pred.any()))
        if not math.isnan(h):
            distances.append(h)
        per_case.setdefault(c.name, {}).update(
            dice=d, hausdorff=h, disc_present=true_present[-1], disc_predicted=pred_present[-1]
        )
    if nonbinary:
        levels = "0/255" if next(iter(masks.values())).dark else "0/1 or 0/255"
        report.warn(f"{source}: {len(nonbinary)} masks are not binary ({levels}); binarised at 128: {short_list(nonbinary)}")
    t, p = np.array(true_present, bool), np.array(pred_present, bool)
    stats = M.summary(dices)
    return {
        "mean_dice": stats["mean"],
        "std_dice": stats["std"],
        "median_dice": stats["median"],
        "presence_f1": M.presence_f1(p, t),
        "mean_hausdorff": M.summary(distances)["mean"],
        "median_hausdorff": M.summary(distances)["median"],
        "n_cases": len(dices),
        "n_both_empty": int(np.count_nonzero(~t & ~p)),
        "n_one_empty": int(np.count_nonzero(t ^ p)),
        "n_hausdorff": len(distances),
    }


def _binarise(grey: np.ndarray, dark: bool) -> tuple[np.ndarray, bool]:
    """Disc as bool, and whether the mask was binary. ``read_grey`` gives 0/255 for both PALM
    masks (0 = disc) and 0/1 label maps (1 = disc, scaled to 255); anything else is binarised at 128."""
    binary = np.count_nonzero(grey == 0) + np.count_nonzero(grey == 255) == grey.size
    return (grey < 128 if dark else grey >= 128), binary


def _spacing(path: Path) -> tuple[float, float]:
    """(row, column) spacing of an MHA prediction for the Hausdorff distance; 1 for BMP/PNG."""
    if path.suffix.lower() != ".mha":
        return 1.0, 1.0
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    sx, sy = reader.GetSpacing()[:2]
    return float(sy), float(sx)


# -- output ----------------------------------------------------------------------------------


def clean(value):
    """Recursively replace NaN/inf by None and numpy scalars by Python numbers."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return M.finite_or_none(value)


def write_metrics(result: dict, path: Path) -> None:
    """metrics.json, strictly valid JSON (no NaN)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(result), indent=2, allow_nan=False) + "\n")


def summary_lines(result: dict) -> list[str]:
    """A short human summary of the aggregates."""
    agg = clean(result.get("aggregates", {}))

    def f(value, digits=4):
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = []
    if "classification" in agg:
        a = agg["classification"]
        lines.append(
            f"classification  AUC {f(a['auc'])} (95% CI {f(a['auc_ci_low'])}-{f(a['auc_ci_high'])}), "
            f"sensitivity at 0.85 specificity {f(a['sensitivity_at_85_specificity'])}, {a['n_cases']} images"
        )
    if "fovea" in agg:
        a = agg["fovea"]
        lines.append(
            f"fovea           mean distance {f(a['mean_distance'], 2)} px (std {f(a['std_distance'], 2)}, "
            f"median {f(a['median_distance'], 2)}), {a['n_cases']} images, {a['n_no_fovea']} without fovea left out"
        )
    if "disc" in agg:
        a = agg["disc"]
        lines.append(
            f"disc            mean Dice {f(a['mean_dice'])}, presence F1 {f(a['presence_f1'])}, "
            f"mean Hausdorff {f(a['mean_hausdorff'], 2)}, {a['n_cases']} images ({a['n_both_empty']} both empty)"
        )
    lines += [f"warning: {w}" for w in result.get("warnings", [])]
    return lines
