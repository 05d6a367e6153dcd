"""A local leaderboard: score every submission in a folder, rank them, write CSV, Markdown, HTML.

Ranking rule (docs/METRICS.md): each task ranks the valid submissions on its headline metric
(AUC high, mean fovea distance low, mean Dice high) with ties averaged (scipy ``rankdata``
'average'); the overall rank is the rank of the mean of a submission's task ranks. A
submission without a task ties for the worst rank in it (``missing="worst"``) or is ranked
on the tasks it has (``missing="skip"``). Invalid submissions are listed with their reason.
With the ground truth's photographs at hand, the page also shows each submission's worst cases
(``evaluation.gallery``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from tqdm import tqdm

from palm_algos.atomic import write_bytes
from palm_algos.cases import Case

from .gallery import FOLDER, SORT_SCRIPT, Gallery, gallery_html, photos_of
from .scoring import clean, score, write_metrics
from .submission import TASKS, read_palm_submission
from .tasks import TABLE
from .truth import GroundTruth, open_ground_truth
from .unpack import is_junk, submission_folder
from .validation import ValidationError

MISSING_RULES = ("worst", "skip")


@dataclass
class Entry:
    """One submission: its metrics.json document, or why it could not be scored."""

    name: str
    result: dict | None = None
    error: str | None = None
    worst: dict[str, list[str]] | None = None  # task -> cases drawn in the gallery, worst first

    def headline(self, task: str) -> float | None:
        if self.result is None:
            return None
        task_metrics = (self.result.get("aggregates") or {}).get(task)
        value = task_metrics.get(TABLE[task].headline[0]) if isinstance(task_metrics, dict) else None
        return float(value) if isinstance(value, (int, float)) else None


def load_entry(folder: Path, cases: GroundTruth | list[Case] | None, name: str | None = None,
               gallery: Gallery | None = None) -> Entry:
    """A subfolder holding metrics.json is taken as scored; otherwise it is a PALM folder or zip.

    With ``gallery``, the worst cases are drawn while the submission's masks are at hand (a zip
    is extracted only for as long as it is scored); a scored folder's pictures show no
    predicted disc. A ground-truth problem (GroundTruthError) is not one submission's: it propagates.
    """
    folder = Path(folder)
    name = name or folder.name
    metrics = folder / "metrics.json"
    if metrics.is_file():
        try:
            result = json.loads(metrics.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return Entry(name, error=f"metrics.json is not valid JSON ({exc})")
        if not isinstance(result, dict) or not isinstance(result.get("aggregates"), dict):
            return Entry(name, error="metrics.json has no 'aggregates'")
        return Entry(name, result=result, worst=gallery.draw(name, result, None) if gallery else None)
    if cases is None:
        return Entry(name, error="a PALM folder needs --ground-truth to be scored")
    try:
        with submission_folder(folder) as opened:
            submission = read_palm_submission(opened, shown=folder)
            result = clean(score(cases, submission))
            return Entry(name, result=result, worst=gallery.draw(name, result, submission.predictions.get("disc")) if gallery else None)
    except ValidationError as exc:
        return Entry(name, error=str(exc))


def rank(entries: list[Entry], missing: str = "worst") -> pd.DataFrame:
    """One row per submission: headline metrics, task ranks, mean rank, overall rank."""
    if missing not in MISSING_RULES:
        raise ValueError(f"missing must be one of {MISSING_RULES}, got {missing!r}")
    valid = [e for e in entries if e.result is not None]
    tasks = [t for t in TASKS if any(e.headline(t) is not None for e in valid)]
    table = pd.DataFrame({"submission": [e.name for e in valid]})
    for task in tasks:
        metric, higher = TABLE[task].headline
        values = np.array([np.nan if e.headline(task) is None else e.headline(task) for e in valid], float)
        table[f"{task}_{metric}"] = values
        key = -values if higher else values
        if missing == "worst":
            ranks = rankdata(np.where(np.isnan(key), np.inf, key), method="average")
        else:
            ranks = np.full(len(valid), np.nan)
            present = ~np.isnan(key)
            ranks[present] = rankdata(key[present], method="average")
        table[f"{task}_rank"] = ranks
    rank_columns = [f"{t}_rank" for t in tasks]
    if valid and rank_columns:
        with np.errstate(all="ignore"):
            mean = np.nanmean(table[rank_columns].to_numpy(float), axis=1) if missing == "skip" else table[rank_columns].mean(axis=1).to_numpy()
        table["mean_rank"] = mean
        table["rank"] = rankdata(np.where(np.isnan(mean), np.inf, mean), method="average")
    else:
        table["mean_rank"] = np.nan
        table["rank"] = np.nan
    table["status"] = "valid"
    invalid = pd.DataFrame({"submission": [e.name for e in entries if e.result is None],
                            "status": [f"invalid: {e.error.removeprefix('Invalid submission: ')}"
                                       for e in entries if e.result is None]})
    table = table.sort_values(["rank", "submission"], kind="stable")
    table = pd.concat([table, invalid], ignore_index=True) if len(invalid) else table.reset_index(drop=True)
    return table[["rank", "submission"] + [c for c in table.columns if c not in ("rank", "submission")]]


def build(
    submissions: Path,
    ground_truth: Path | None,
    out: Path,
    missing: str = "worst",
    progress: bool | None = None,
    gallery: bool = True,
    images: Path | None = None,
) -> pd.DataFrame:
    """Score every subfolder and .zip of ``submissions``; write leaderboard.{csv,md,html} to ``out``.

    ``gallery``: draw each submission's worst cases under ``out/gallery/`` from the ground
    truth's photographs, or from ``images`` (a folder) where the ground truth has none.
    """
    submissions, out = Path(submissions), Path(out)
    sources = sorted(p for p in submissions.iterdir()
                     if not is_junk(p.name) and (p.is_dir() or p.suffix.lower() == ".zip"))
    stems = [p.stem if p.suffix.lower() == ".zip" else p.name for p in sources]
    names = [stem if stems.count(stem) == 1 else p.name for stem, p in zip(stems, sources)]
    shutil.rmtree(out / FOLDER, ignore_errors=True)  # pictures of an earlier run would be stale
    pictures = None
    with ExitStack() as stack:
        truth = stack.enter_context(open_ground_truth(ground_truth)) if ground_truth else None
        photos = photos_of(truth.cases, images) if truth and gallery else {}
        if photos:
            pictures = Gallery(out / FOLDER, {c.name: c for c in truth.cases}, photos)
        entries = [
            load_entry(source, truth, name, pictures)
            for source, name in tqdm(list(zip(sources, names)), desc="scoring", unit="submission",
                                     disable=None if progress is None else not progress)
        ]
    table = rank(entries, missing)
    out.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        if entry.result is not None:
            write_metrics(entry.result, out / "metrics" / f"{entry.name}.json")
    write_bytes(out / "leaderboard.csv", table.to_csv(index=False).encode("utf-8"))
    about = caption(ground_truth, datetime.now(timezone.utc))
    write_bytes(out / "leaderboard.md", markdown(table, missing, about, entries).encode("utf-8"))
    note = "" if pictures or not gallery else "No case pictures: the ground truth has no images (palm leaderboard --images)."
    write_bytes(out / "leaderboard.html", html_page(table, entries, missing, note, about).encode("utf-8"))
    return table


# -- rendering -------------------------------------------------------------------------------


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


COLUMN_NAMES = {"rank": "Rank", "submission": "Submission", "mean_rank": "Mean task rank", "status": "Status"}
METRIC_NAMES = {"auc": "AUC", "mean_distance": "mean distance (px)", "mean_dice": "mean Dice", "rank": "rank"}
WARNINGS_SHOWN = 20  # per submission; metrics/<submission>.json holds them all


def heading(column: str) -> str:
    """A column of the table as a person reads it: 'fovea_mean_distance' -> 'Fovea mean distance (px)'
    (leaderboard.csv keeps the names for programs)."""
    if column in COLUMN_NAMES:
        return COLUMN_NAMES[column]
    task, _, metric = column.partition("_")
    return f"{task.capitalize()} {METRIC_NAMES.get(metric, metric.replace('_', ' '))}"


def caption(ground_truth: Path | None, when: datetime) -> str:
    """When the board was scored and against which ground truth."""
    truth = Path(ground_truth).name if ground_truth else "none given (scored metrics.json files only)"
    return f"Scored {when:%Y-%m-%d %H:%M} UTC against the ground truth {truth}."


def warnings_of(entries: list[Entry]) -> list[tuple[str, list[str]]]:
    """(submission, its first warnings and how many more) for each scored submission that has any."""
    found = []
    for entry in entries:
        warnings = [str(w) for w in (entry.result or {}).get("warnings") or []]
        if warnings:
            more = len(warnings) - WARNINGS_SHOWN
            found.append((entry.name, warnings[:WARNINGS_SHOWN] + ([f"... and {more} more"] if more > 0 else [])))
    return found


def markdown(table: pd.DataFrame, missing: str, about: str = "", entries: list[Entry] = ()) -> str:
    header = "| " + " | ".join(heading(c) for c in table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    rows = ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in table.itertuples(index=False)]
    note = f"\nOverall rank = rank of the mean task rank (ties averaged); missing tasks: {missing}.\n"
    warnings = "".join(f"\n## Warnings: {name}\n\n" + "".join(f"- {w}\n" for w in lines)
                       for name, lines in warnings_of(list(entries)))
    return "# PALM leaderboard\n\n" + (f"{about}\n\n" if about else "") + "\n".join([header, rule, *rows]) + "\n" + note + warnings


def html_page(table: pd.DataFrame, entries: list[Entry], missing: str, gallery_note: str = "", about: str = "") -> str:
    """One page: the table, the evaluation's warnings, the plots as base64 PNG, then each
    submission's cases, whose pictures are files beside the page (gallery/); no request leaves
    the folder."""
    head = "".join(f"<th>{html.escape(heading(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in table.itertuples(index=False)
    )
    try:
        figures = "".join(f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="data:image/png;base64,{png}">'
                          for title, png in plots(entries))
    except ImportError:
        figures = "<p>Plots need matplotlib (pip install palm[plots]).</p>"
    warnings = "".join(f"<h3>{html.escape(name)}</h3><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in lines) + "</ul>"
                       for name, lines in warnings_of(entries))
    if warnings:
        warnings = f"<h2>Warnings</h2>{warnings}"
    cases = "".join(gallery_html(e.name, e.result, e.worst) for e in entries if e.result is not None)
    if gallery_note:
        cases = f"<p>{html.escape(gallery_note)}</p>{cases}"
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
             "img{max-width:100%}.gallery{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;font-size:small}"
             "table.sortable th{cursor:pointer;background:#eee}")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>PALM leaderboard</title><style>{style}</style></head>"
        f"<body><h1>PALM leaderboard</h1><p>{html.escape(about)}</p><table><tr>{head}</tr>{body}</table>"
        f"<p>Overall rank = rank of the mean task rank (ties averaged); missing tasks: {html.escape(missing)}.</p>"
        f"{warnings}{figures}{cases}<script>{SORT_SCRIPT}</script></body></html>\n"
    )


def _cases(entry: Entry) -> dict:
    cases = (entry.result or {}).get("case")
    return cases if isinstance(cases, dict) else {}


def _per_case(entry: Entry, key: str) -> list[float]:
    cases = _cases(entry)
    return [float(v[key]) for v in cases.values() if isinstance(v, dict) and isinstance(v.get(key), (int, float))]


def plots(entries: list[Entry]) -> list[tuple[str, str]]:
    """(title, base64 PNG) for the ROC curves and the per-case distance and Dice distributions."""
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    valid = [e for e in entries if e.result is not None]
    out = []
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    for entry in valid:
        cases = [v for v in _cases(entry).values()
                 if isinstance(v, dict) and v.get("label") is not None and v.get("pm_risk") is not None]
        labels = [v["label"] for v in cases]
        if len(set(labels)) == 2:
            fpr, tpr, _ = roc_curve(labels, [v["pm_risk"] for v in cases])
            auc = entry.headline("classification")
            ax.plot(fpr, tpr, label=f"{entry.name} (AUC {'n/a' if auc is None else f'{auc:.3f}'})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC, pathologic myopia")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize="small")
    out.append(("ROC curves", _png(fig)))
    for key, title, label in (("fovea_distance", "Fovea distance per image", "distance (px)"),
                              ("dice", "Disc Dice per image", "Dice")):
        data = [(e.name, _per_case(e, key)) for e in valid]
        data = [(n, d) for n, d in data if d]
        fig = Figure(figsize=(max(4, 1.2 * len(data) + 2), 4))
        ax = fig.add_subplot()
        if data:
            ax.boxplot([d for _, d in data], tick_labels=[n for n, _ in data])
            ax.tick_params(axis="x", labelrotation=30)
        ax.set(ylabel=label, title=title)
        out.append((title, _png(fig)))
    return out


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=80)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
