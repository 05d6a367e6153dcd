"""What differs per task on the evaluation side, one row per task: which ground-truth cases
it needs, how its predictions are read (a PALM CSV row's numbers, a predictions.json value),
its scorer, its summary line, its leaderboard headline and its gallery (worst cases first,
and their captions). A task added here is scored, ranked and drawn without another change in
``scoring``, ``submission``, ``leaderboard`` or ``gallery``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from tqdm import tqdm

from palm_algos.cases import Case
from palm_algos.formats import GC_IMAGE_SUFFIXES, TASKS
from palm_algos.imageio import ImageError, image_geometry, world_to_pixel

from . import metrics as M
from .masks import INVERTED, LABEL_MAP, MAX_DISC_SHARE, MaskError, read_prediction
from .truth import size_known
from .validation import GroundTruthError, Report, short_list

SPECIFICITY = 0.85


@dataclass(frozen=True)
class Task:
    """How one task is scored, reported, ranked and drawn."""

    name: str
    needs: tuple[str, str]  # what the ground truth must hold, and where it comes from
    in_truth: Callable[[Case], bool]  # whether a ground-truth case answers this task
    # score(cases, predictions, submission, per_case, progress) -> the task's aggregates
    score: Callable[..., dict]
    summary: Callable[[dict], str]  # the aggregates as one line of `palm evaluate`'s output
    headline: tuple[str, bool]  # the aggregate a leaderboard ranks by, and whether higher is better
    worst_title: str  # the gallery's heading over the worst cases
    # The gallery's worst cases: a case's scores -> the number they rank by (None: not scored),
    # and whether the highest is the worst.
    worst: tuple[Callable[[dict], float | None], bool]
    caption: str  # a drawn case's caption: str.format over its per-case scores
    # A PALM CSV row's numbers -> the prediction, and what is wrong with one (None: nothing);
    # None for a task that submits masks.
    csv_value: Callable[[list[float]], object] | None = None
    csv_problem: Callable[[object], str | None] | None = None
    # A predictions.json value -> the prediction (None where reported); None for an image output.
    gc_value: Callable[[object, str, Report], object] | None = None


def finite(value) -> float | None:
    """``value`` as a float where it is a finite number (metrics.json may come from anywhere)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _f(value, digits=4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


# -- classification --------------------------------------------------------------------------


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


def _classification_line(a: dict) -> str:
    return (f"classification  AUC {_f(a['auc'])} (95% CI {_f(a['auc_ci_low'])}-{_f(a['auc_ci_high'])}), "
            f"sensitivity at 0.85 specificity {_f(a['sensitivity_at_85_specificity'])}, {a['n_cases']} images")


def _risk_error(scores: dict) -> float | None:
    label, risk = finite(scores.get("label")), finite(scores.get("pm_risk"))
    return None if label is None or risk is None else abs(label - risk)


def _risk(value, where: str, report: Report) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        report.error(f"{where}: expected a number between 0 and 1, got {json.dumps(value)[:40]}")
        return None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        report.error(f"{where}: the likelihood must be between 0 and 1, got {value}")
        return None
    return float(value)


# -- fovea -----------------------------------------------------------------------------------


def _fovea(cases, fovea, sub, per_case, progress) -> dict:
    visible = [c for c in cases if c.fovea is not None and not c.fovea_absent]
    for c in cases:
        if c.fovea is None or c.fovea_absent:
            per_case.setdefault(c.name, {}).update(fovea_absent=True, fovea_distance=None)
    pred = np.array([_to_pixels(c, fovea[c.name], sub.fovea_in_world) for c in visible], dtype=float).reshape(-1, 2)
    flat = [c.name for c in visible if truth_geometry(c) is PIXEL_SPACE]
    if sub.fovea_in_world and flat:
        sub.report.note_truth(
            f"{len(flat)} images hold no geometry (JPEG, PNG or BMP): their grand-challenge fovea points are read as "
            f"pixel positions (right where the archive's images have origin 0 and spacing 1, as grand-challenge "
            f"stores JPEG/PNG uploads; a job's mask with another geometry is an error): {short_list(flat)}")
    true = np.array([c.fovea for c in visible], dtype=float).reshape(-1, 2)
    known = np.array([size_known(c) for c in visible], dtype=bool)
    sizes = np.array([c.size if size_known(c) else (np.nan, np.nan) for c in visible], dtype=float).reshape(-1, 2)
    dist = M.fovea_distances(pred, true)
    norm = M.normalised_fovea_distances(pred, true, sizes)  # NaN where the size is unknown
    unknown = [c.name for c, k in zip(visible, known) if not k]
    if unknown:
        sub.report.note_truth(
            f"image size unknown for {len(unknown)} images (no image, mask or Width/Height column): "
            f"their normalised fovea distance is left out: {short_list(unknown)}")
    outside = [c.name for c, k, (x, y) in zip(visible, known, pred)
               if k and not (0 <= x < c.size[0] and 0 <= y < c.size[1])]
    if outside:
        sub.report.warn(f"{sub.sources['fovea']}: {len(outside)} fovea positions lie outside the image: {short_list(outside)}")
    for c, (x, y), d, n in zip(visible, pred, dist, norm):
        per_case.setdefault(c.name, {}).update(
            fovea_absent=False, fovea_x=float(x), fovea_y=float(y), fovea_distance=float(d), fovea_normalised_distance=float(n)
        )
    stats, nstats = M.summary(dist), M.summary(norm[known])
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
    """grand-challenge points are in world space: map them through the image's geometry, as the
    algorithms mapped them out (pixel space where the image has no readable geometry)."""
    if not in_world or case.image.suffix.lower() not in GC_IMAGE_SUFFIXES:
        return xy
    try:
        return world_to_pixel(case.image, *xy)
    except ImageError:
        return xy


def _fovea_line(a: dict) -> str:
    return (f"fovea           mean distance {_f(a['mean_distance'], 2)} px (std {_f(a['std_distance'], 2)}, "
            f"median {_f(a['median_distance'], 2)}), {a['n_cases']} images, {a['n_no_fovea']} without fovea left out")


def _point(value, where: str, report: Report) -> tuple[float, float] | None:
    point = value.get("point") if isinstance(value, dict) else None
    if (
        not isinstance(point, list)
        or len(point) < 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in point)
    ):
        report.error(f"{where}: expected a Point {{\"type\": \"Point\", \"point\": [x, y, 0]}} with finite numbers")
        return None
    return float(point[0]), float(point[1])


# -- disc ------------------------------------------------------------------------------------


def _disc(cases, masks, sub, per_case, progress) -> dict:
    report, source = sub.report, sub.sources["disc"]
    dices, distances, true_present, pred_present, nonbinary = [], [], [], [], []
    noted: dict[str, list[str]] = {LABEL_MAP: [], INVERTED: []}
    quiet = None if progress is None else not progress  # None: a bar only on a terminal
    for c in tqdm(cases, desc="disc masks", unit="mask", disable=quiet, leave=False):
        mask = masks[c.name]
        try:
            true = c.read_disc()
        except ImageError as exc:
            raise GroundTruthError(str(exc), report.lines()) from None
        if np.count_nonzero(true) > MAX_DISC_SHARE * true.size:
            report.note_truth(f"{c.disc_mask}: the disc covers more than half of the image; is the mask inverted?")
        try:
            read = read_prediction(mask.path, mask.dark, true.shape)
        except MaskError as exc:
            report.error(f"{source}: {mask.label}: {exc}")
            continue
        pred = read.disc
        if not read.binary:
            nonbinary.append(c.name)
        if read.note:
            noted[read.note].append(mask.label)
        d = M.dice(pred, true)
        spacing = truth_geometry(c)[1][::-1]  # (row, column)
        h = M.hausdorff(pred, true, spacing) if pred.any() and true.any() else M.NAN
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
    if noted[LABEL_MAP]:
        report.warn(f"{source}: {len(noted[LABEL_MAP])} masks are 0/1 label maps, read with 1 = disc "
                    f"(PALM masks are 0 = disc, 255 = background): {short_list(noted[LABEL_MAP])}")
    if noted[INVERTED]:
        report.warn(f"{source}: {len(noted[INVERTED])} masks look inverted: the pixels that mean disc by their "
                    f"convention cover more than half of the image, so they are read the other way round: "
                    f"{short_list(noted[INVERTED])}")
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


def _disc_line(a: dict) -> str:
    return (f"disc            mean Dice {_f(a['mean_dice'])}, presence F1 {_f(a['presence_f1'])}, "
            f"mean Hausdorff {_f(a['mean_hausdorff'], 2)}, {a['n_cases']} images ({a['n_both_empty']} both empty)")


# -- geometry: the ground truth's is the truth -------------------------------------------------

PIXEL_SPACE = ((0.0, 0.0), (1.0, 1.0), np.eye(2))


def truth_geometry(case: Case):
    """(origin, spacing, direction) of a case's ground truth: its image's (without images, its
    mask's) where that is an MHA/TIFF; pixel space for JPEG, PNG and BMP, which hold none.
    Disc masks are measured in it and grand-challenge points mapped through it."""
    if case.image.suffix.lower() not in GC_IMAGE_SUFFIXES:
        return PIXEL_SPACE
    try:
        return image_geometry(case.image)
    except ImageError as exc:
        raise GroundTruthError(str(exc)) from None


# -- the table -------------------------------------------------------------------------------

TABLE = {t.name: t for t in (
    Task("classification", ("labels", "a Label column in a label sheet, or H/N/P file names"),
         in_truth=lambda c: c.label is not None, score=_classification, summary=_classification_line,
         headline=("auc", True), worst_title="Classification: largest error |label - PM risk|",
         worst=(_risk_error, True), caption="label {label}, PM risk {pm_risk}",
         csv_value=lambda numbers: numbers[0],
         csv_problem=lambda risk: None if 0.0 <= risk <= 1.0 else f"PM Risk must be between 0 and 1, got {risk:g}",
         gc_value=_risk),
    Task("fovea", ("fovea positions", "Fovea_X, Fovea_Y columns in a label sheet"),
         in_truth=lambda c: c.fovea is not None or c.fovea_absent, score=_fovea, summary=_fovea_line,
         headline=("mean_distance", False), worst_title="Fovea: largest distance",
         worst=(lambda v: finite(v.get("fovea_distance")), True), caption="distance {fovea_distance} px",
         csv_value=lambda numbers: (numbers[0], numbers[1]), csv_problem=lambda point: None, gc_value=_point),
    Task("disc", ("disc masks", "a Disc_Masks/ folder"),
         in_truth=lambda c: c.disc_mask is not None, score=_disc, summary=_disc_line,
         headline=("mean_dice", True), worst_title="Disc: lowest Dice",
         worst=(lambda v: finite(v.get("dice")), False), caption="Dice {dice}"),
)}
assert tuple(TABLE) == TASKS, "one row per task of palm_algos.formats, in its order"
