"""Scoring a submission against ground truth cases: one task at a time, every case reported.

``score(truth, submission)`` returns the metrics.json document, or raises ValidationError
(the participant's problem) with the full report when a fatal problem was found, or
GroundTruthError (the organiser's) when the ground truth lacks what the submission answers.
Ground truth comes from ``evaluation.truth`` (any layout ``palm_algos.cases.read_cases``
reads, or sheets and masks without the images); nothing here knows file layouts.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from palm_algos.atomic import write_bytes
from palm_algos.cases import Case
from palm_algos.formats import GC_IMAGE_SUFFIXES
from palm_algos.imageio import GeometryError, ImageError, image_geometry, world_to_pixel

from . import metrics as M
from .masks import INVERTED, LABEL_MAP, MAX_DISC_SHARE, MaskError, read_prediction
from .submission import Submission, read_gc_submission, read_palm_submission
from .truth import GroundTruth, open_ground_truth, size_known
from .unpack import submission_folder
from .validation import GroundTruthError, SetupError, short_list

SPECIFICITY = 0.85
NEEDED = {  # task -> what the ground truth must hold, and where it comes from
    "classification": ("labels", "a Label column in a label sheet, or H/N/P file names"),
    "fovea": ("fovea positions", "Fovea_X, Fovea_Y columns in a label sheet"),
    "disc": ("disc masks", "a Disc_Masks/ folder"),
}


def evaluate_palm(submission: Path, ground_truth: Path, progress: bool | None = False) -> dict:
    """Score a PALM-layout submission (a folder or a .zip) against ground truth (folder or .zip)."""
    with open_ground_truth(ground_truth) as truth, submission_folder(submission) as folder:
        return score(truth, read_palm_submission(folder, shown=Path(submission)), progress=progress)


def evaluate_gc(input_dir: Path, ground_truth: Path, slugs: dict[str, str] | None = None, progress: bool = False) -> dict:
    """Score grand-challenge algorithm jobs (``predictions.json``) against ground truth."""
    with open_ground_truth(ground_truth) as truth:
        return score(truth, read_gc_submission(input_dir, slugs), progress=progress)


def score(truth: GroundTruth | list[Case], sub: Submission, progress: bool | None = False) -> dict:
    """Each task the submission holds, scored on its own; raise if any problem is fatal.

    The result holds ``ground_truth_notes`` (the organiser's problems, for the log; not
    written to metrics.json) where there are any.
    """
    if not isinstance(truth, GroundTruth):
        truth = GroundTruth(Path("ground truth"), list(truth))
    cases = truth.cases
    report = sub.report
    report.truth.extend(truth.problems)
    per_case: dict[str, dict] = {}
    aggregates: dict[str, dict] = {}
    known = {c.name for c in cases}
    _match_names(sub, sorted(known), report)
    tasks = {
        "classification": ([c for c in cases if c.label is not None], sub.risk),
        "fovea": ([c for c in cases if c.fovea is not None or c.fovea_absent], sub.fovea),
        "disc": ([c for c in cases if c.disc_mask is not None], sub.disc),
    }
    lacking = [t for t in sub.tasks() if not tasks[t][0]]
    if lacking:
        raise GroundTruthError(_lacking(truth, sub, lacking), report.lines())
    _check_geometries(cases, sub)
    scorers = {"classification": _classification, "fovea": _fovea, "disc": _disc}
    for task in sub.tasks():
        truth_cases, predictions = tasks[task]
        source = sub.sources.get(task, task)
        wanted = {c.name for c in truth_cases}
        rejected = {name for t, name in sub.rejected if t == task}
        missing = set() if "*" in rejected else wanted - predictions.keys() - rejected
        extra = predictions.keys() - known
        if missing:
            report.error(f"{source}: no prediction for {len(missing)} of {len(wanted)} images: {short_list(missing)}")
        if extra:
            report.warn(f"{source}: ignored {len(extra)} predictions for images not in the test set: {short_list(extra)}")
        scored = [c for c in truth_cases if c.name in predictions]
        aggregates[task] = scorers[task](scored, predictions, sub, per_case, progress)
    report.raise_if_fatal()
    result = {"case": per_case, "aggregates": aggregates, "warnings": list(report.warnings)}
    if report.truth:
        result["ground_truth_notes"] = list(report.truth)
    return result


def _lacking(truth: GroundTruth, sub: Submission, tasks: list[str]) -> str:
    """One line: what the ground truth lacks, which submitted file needs it, and a likely cause."""
    parts = []
    for task in tasks:
        what, where = NEEDED[task]
        parts.append(f"no {what} (needed for {sub.sources.get(task, task)}; expected {where})")
    hints = [p for p in truth.problems if any(s in p.lower() for s in (".csv", ".xls", "mask"))]
    hint = f"; first problem reading it: {hints[0]}" if hints else ""
    return f"{truth.root} has {' and '.join(parts)}{hint}"


def _match_names(sub: Submission, names: list[str], report) -> None:
    """Key predictions by ground-truth names, matched case-insensitively where unambiguous.

    An exact name always wins; ``v0001`` finds ``V0001`` when no other ground-truth name
    differs from it only by case. Two predictions that land on one image are an error.
    """
    exact = set(names)
    folded: dict[str, list[str]] = defaultdict(list)
    for name in names:
        folded[name.casefold()].append(name)
    twins = [group for group in folded.values() if len(group) > 1]
    if twins:
        report.note_truth(f"{len(twins)} sets of image names differ only by case ({short_list(', '.join(g) for g in twins)}); "
                          "predictions for them must match the case exactly")

    def target(name: str) -> tuple[str | None, str | None]:
        if name in exact or name == "*":
            return name, None
        group = folded.get(name.casefold(), [])
        if len(group) > 1:
            shown = " and ".join(repr(g) for g in sorted(group))
            return None, f"{name!r} matches {shown} of the ground truth, which differ only by case"
        return (group[0] if group else name), None

    for task, attribute in (("classification", "risk"), ("fovea", "fovea"), ("disc", "disc")):
        predictions = getattr(sub, attribute)
        if predictions is None:
            continue
        source = sub.sources.get(task, task)
        matched, first = {}, {}
        for name, value in predictions.items():
            image, problem = target(name)
            if problem:
                report.error(f"{source}: {problem}")
                continue
            if image in matched:
                report.error(f"{source}: {_shown(first[image], predictions)} and {_shown(name, predictions)} "
                             f"differ only by case; both would be the prediction for image {image!r}")
                continue
            matched[image], first[image] = value, name
        setattr(sub, attribute, matched)
    sub.rejected = {(task, target(name)[0] or name) for task, name in sub.rejected}


def _shown(name: str, predictions: dict) -> str:
    value = predictions[name]
    return repr(getattr(value, "label", None) or name)


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


def _geometry_text(geometry) -> str:
    (ox, oy), (sx, sy), direction = geometry
    turned = "" if np.allclose(direction, np.eye(2)) else f", direction {np.round(direction, 4).ravel().tolist()}"
    return f"origin ({ox:g}, {oy:g}), spacing ({sx:g}, {sy:g}){turned}"


def _same_geometry(a, b) -> bool:
    return all(np.allclose(np.asarray(x, float), np.asarray(y, float), rtol=1e-4, atol=1e-4) for x, y in zip(a, b))


def _check_geometries(cases: list[Case], sub: Submission) -> None:
    """A submitted mask's geometry is never used: Dice and Hausdorff are measured on the ground
    truth's pixel grid, in its spacing. A mask whose geometry differs from the ground truth's
    (pixel space where it holds none) is named in a warning; where its job also answers a
    fovea point, that point's world is in doubt (item 12: archive images with an origin, ground
    truth as JPEGs), so the job is an error rather than a distance in the wrong space."""
    if not sub.disc:
        return
    by_name = {c.name: c for c in cases}
    ignored = []
    for name, mask in sorted(sub.disc.items()):
        case = by_name.get(name)
        if mask.dark or case is None:  # PALM masks (BMP/PNG) hold no geometry
            continue
        truth = truth_geometry(case)
        try:
            geometry = image_geometry(mask.path)
            shown = _geometry_text(geometry)
        except GeometryError as exc:
            geometry, shown = None, str(exc).split(": ", 1)[-1]
        except ImageError:
            continue  # an unreadable mask: the disc scoring names it
        if geometry is not None and _same_geometry(geometry, truth):
            continue
        held = "holds no geometry (pixel space)" if truth is PIXEL_SPACE else f"has {_geometry_text(truth)}"
        if sub.fovea_in_world and sub.fovea and name in sub.fovea:
            sub.report.error(
                f"fovea: {mask.label} has {shown}, but the ground truth image {case.image.name} {held}: the job's "
                f"fovea point cannot be mapped to pixels. If the archive's images carry this geometry, give them as "
                f"the ground truth images; otherwise the algorithm must copy the input image's geometry")
            sub.rejected.add(("fovea", name))
            sub.fovea.pop(name)
        else:
            ignored.append(f"{mask.label} ({shown})")
    if ignored:
        sub.report.warn(f"{sub.sources.get('disc', 'disc')}: {len(ignored)} masks carry a geometry other than the ground "
                        f"truth's; ignored: Dice and Hausdorff are measured on the ground truth's pixel grid and "
                        f"spacing: {short_list(ignored)}")


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


METRICS_KEYS = ("case", "aggregates", "warnings")


def write_metrics(result: dict, path: Path) -> None:
    """metrics.json, strictly valid JSON (no NaN); the organiser's ground-truth notes stay out."""
    path = Path(path)
    text = json.dumps(clean({k: v for k, v in result.items() if k in METRICS_KEYS}), indent=2, allow_nan=False) + "\n"
    try:
        write_bytes(path, text.encode("utf-8"))
    except OSError as exc:
        raise SetupError(f"Output problem (organiser's side): {path}: cannot write metrics.json "
                         f"({exc.strerror or type(exc).__name__})") from None


def truth_lines(result: dict, limit: int = 50) -> list[str]:
    """The ground truth's problems, one line each, for the organiser's log (stderr)."""
    notes = result.get("ground_truth_notes") or []
    more = [f"ground truth: ... and {len(notes) - limit} more"] if len(notes) > limit else []
    return [f"ground truth: {n}" for n in notes[:limit]] + more


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
