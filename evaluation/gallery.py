"""The leaderboard's case gallery: each submission's worst cases as pictures, every case as a row.

Per task the ``WORST`` worst cases (lowest Dice, largest fovea distance, largest classification
error |label - PM risk|, i.e. the most confident wrong answers first) are drawn by
``palm_algos.overlays``: ground truth and prediction on one picture, a full-size JPEG and a
thumbnail, under ``<leaderboard>/gallery/<submission>/``. The page links them by relative paths,
so the leaderboard folder opens from disk with no server and no network.
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from palm_algos.cases import Case, list_images
from palm_algos.imageio import ImageError
from palm_algos.overlays import draw_overlay, read_photo, save_overlay

from .masks import MaskError, read_prediction
from .submission import MaskFile
from .tasks import TABLE, finite

FOLDER = "gallery"
WORST = 6
THUMB_SIDE = 180
SCORE_COLUMNS = ("label", "pm_risk", "fovea_distance", "fovea_normalised_distance", "dice", "hausdorff")
SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach((th, column) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
  const up = th.dataset.order !== 'up'; th.dataset.order = up ? 'up' : 'down';
  const key = row => { const text = row.cells[column].textContent, n = parseFloat(text); return isNaN(n) ? [1, text] : [0, n]; };
  rows.sort((a, b) => {
    const x = key(a), y = key(b), c = x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
    return up ? c : -c;
  });
  body.append(...rows);
}));
"""


def case_table(result: dict) -> dict[str, dict]:
    """The per-case scores of a metrics.json document (which may come from anywhere: checked)."""
    cases = result.get("case")
    return {str(n): v for n, v in cases.items() if isinstance(v, dict)} if isinstance(cases, dict) else {}


def worst_cases(cases: dict[str, dict], count: int = WORST) -> dict[str, list[str]]:
    """task -> up to ``count`` case names, worst first."""
    def ranked(score, highest_worst):
        scored = [(score(v), name) for name, v in cases.items() if score(v) is not None]
        return [name for _, name in sorted(scored, reverse=highest_worst)[:count]]

    # the tasks in reverse order: the disc, whose pictures say the most, first
    worst = {name: ranked(*TABLE[name].worst) for name in reversed(TABLE)}
    return {task: names for task, names in worst.items() if names}


def photos_of(truth_cases: list[Case], images: Path | None = None) -> dict[str, Path]:
    """case name -> fundus photograph: from ``images`` where given, else the ground truth's own
    images (ground truth shipped without images has none, and its cases point at masks)."""
    if images is not None:
        return {path.stem: path for path in list_images(Path(images))[0]}
    return {c.name: c.image for c in truth_cases if c.image != c.disc_mask and c.image.is_file()}


@dataclass
class Gallery:
    """Where a leaderboard's pictures go, and the ground truth and photographs they show."""

    folder: Path  # <leaderboard>/gallery
    truth: dict[str, Case]
    photos: dict[str, Path]
    count: int = WORST

    def draw(self, submission: str, result: dict, masks: dict[str, MaskFile] | None) -> dict[str, list[str]]:
        """Draw the submission's worst cases (``masks``: its predicted discs, where at hand);
        return task -> names of the cases drawn, worst first."""
        cases = case_table(result)
        worst = worst_cases(cases, self.count)
        drawn = set()
        for name in sorted({n for names in worst.values() for n in names}):
            if name in self.truth and name in self.photos and self._draw_case(submission, name, cases[name], masks):
                drawn.add(name)
        shown = {task: [n for n in names if n in drawn] for task, names in worst.items()}
        return {task: names for task, names in shown.items() if names}

    def _draw_case(self, submission: str, name: str, scores: dict, masks: dict[str, MaskFile] | None) -> bool:
        case = self.truth[name]
        try:
            photo, size = read_photo(self.photos[name])
            truth_disc = case.read_disc() if case.disc_mask is not None else None
        except ImageError:
            return False
        disc = None
        if masks and name in masks:
            try:
                disc = read_prediction(masks[name].path, masks[name].dark, (size[1], size[0])).disc
            except MaskError:
                pass  # already reported by the scoring; the picture shows the rest
        x, y = finite(scores.get("fovea_x")), finite(scores.get("fovea_y"))
        found = dict(pm_risk=finite(scores.get("pm_risk")), fovea=None if x is None or y is None else (x, y), disc=disc,
                     truth_label=case.label, truth_fovea=None if case.fovea_absent else case.fovea, truth_disc=truth_disc,
                     dice=finite(scores.get("dice")), fovea_distance=finite(scores.get("fovea_distance")), size=size)
        folder = self.folder / submission
        save_overlay(draw_overlay(photo, **found), folder / f"{name}.jpg")
        save_overlay(draw_overlay(photo, side=THUMB_SIDE, text=False, **found), folder / f"{name}_thumb.jpg")
        return True


def gallery_html(submission: str, result: dict, worst: dict[str, list[str]] | None) -> str:
    """The submission's section: thumbnails of its worst cases (``worst``: task -> the cases
    drawn, None where none were), then every case's scores (sortable)."""
    cases = case_table(result)
    if not cases:
        return ""
    drawn = {n for names in (worst or {}).values() for n in names}

    def link(name: str, file: str) -> str:
        return f"{FOLDER}/{quote(submission)}/{quote(name)}{file}"

    parts = [f"<h2>Cases: {html.escape(submission)}</h2>"]
    for task, names in (worst or {}).items():
        figures = "".join(
            f'<figure><a href="{link(n, ".jpg")}"><img src="{link(n, "_thumb.jpg")}" alt="{html.escape(n)}"></a>'
            f"<figcaption>{html.escape(n)}<br>{html.escape(_caption(task, cases[n]))}</figcaption></figure>"
            for n in names)
        parts.append(f"<h3>{html.escape(TABLE[task].worst_title)}</h3><div class='gallery'>{figures}</div>")
    columns = [c for c in SCORE_COLUMNS if any(v.get(c) is not None for v in cases.values())]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("case", *columns))
    rows = "".join(
        f"<tr><td>{_name_cell(n, link(n, '.jpg') if n in drawn else None)}</td>"
        + "".join(f"<td>{_number(v.get(c))}</td>" for c in columns) + "</tr>"
        for n, v in sorted(cases.items()))
    parts.append(f"<details><summary>Per-image scores ({len(cases)} images; click a column to sort)</summary>"
                 f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></details>")
    return "".join(parts)


def _caption(task: str, scores: dict) -> str:
    return TABLE[task].caption.format_map(defaultdict(str, {k: _number(v) for k, v in scores.items()}))


def _name_cell(name: str, href: str | None) -> str:
    return f'<a href="{href}">{html.escape(name)}</a>' if href else html.escape(name)


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else html.escape(str(value))
    return f"{value:.4g}"
