"""Scoring a submission against ground truth cases: one task at a time, every case reported.

``score(truth, submission)`` returns the metrics.json document, or raises ValidationError
(the participant's problem) with the full report when a fatal problem was found, or
GroundTruthError (the organiser's) when the ground truth lacks what the submission answers.
Ground truth comes from ``evaluation.truth`` (any layout ``palm_algos.cases.read_cases``
reads, or sheets and masks without the images); nothing here knows file layouts.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from palm_algos.atomic import write_bytes
from palm_algos.cases import Case
from palm_algos.imageio import GeometryError, ImageError, image_geometry

from . import metrics as M
from .submission import Submission, read_gc_submission, read_palm_submission
from .tasks import PIXEL_SPACE, TABLE, truth_geometry
from .truth import GroundTruth, open_ground_truth
from .unpack import submission_folder
from .validation import GroundTruthError, SetupError, short_list


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
    answering = {task: [c for c in cases if TABLE[task].in_truth(c)] for task in sub.tasks()}
    lacking = [t for t in sub.tasks() if not answering[t]]
    if lacking:
        raise GroundTruthError(_lacking(truth, sub, lacking), report.lines())
    _check_geometries(cases, sub)
    for task in sub.tasks():
        truth_cases, predictions = answering[task], sub.predictions[task]
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
        aggregates[task] = TABLE[task].score(scored, predictions, sub, per_case, progress)
    report.raise_if_fatal()
    result = {"case": per_case, "aggregates": aggregates, "warnings": list(report.warnings)}
    if report.truth:
        result["ground_truth_notes"] = list(report.truth)
    return result


def _lacking(truth: GroundTruth, sub: Submission, tasks: list[str]) -> str:
    """One line: what the ground truth lacks, which submitted file needs it, and a likely cause."""
    parts = []
    for task in tasks:
        what, where = TABLE[task].needs
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

    for task, predictions in sub.predictions.items():
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
        sub.predictions[task] = matched
    sub.rejected = {(task, target(name)[0] or name) for task, name in sub.rejected}


def _shown(name: str, predictions: dict) -> str:
    value = predictions[name]
    return repr(getattr(value, "label", None) or name)


# -- geometry: the ground truth's is the truth -------------------------------------------------

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
    masks, fovea = sub.predictions.get("disc"), sub.predictions.get("fovea")
    if not masks:
        return
    by_name = {c.name: c for c in cases}
    ignored = []
    for name, mask in sorted(masks.items()):
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
        if sub.fovea_in_world and fovea and name in fovea:
            sub.report.error(
                f"fovea: {mask.label} has {shown}, but the ground truth image {case.image.name} {held}: the job's "
                f"fovea point cannot be mapped to pixels. If the archive's images carry this geometry, give them as "
                f"the ground truth images; otherwise the algorithm must copy the input image's geometry")
            sub.rejected.add(("fovea", name))
            fovea.pop(name)
        else:
            ignored.append(f"{mask.label} ({shown})")
    if ignored:
        sub.report.warn(f"{sub.sources.get('disc', 'disc')}: {len(ignored)} masks carry a geometry other than the ground "
                        f"truth's; ignored: Dice and Hausdorff are measured on the ground truth's pixel grid and "
                        f"spacing: {short_list(ignored)}")


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

    lines = [task.summary(agg[name]) for name, task in TABLE.items() if name in agg]
    lines += [f"warning: {w}" for w in result.get("warnings", [])]
    return lines
