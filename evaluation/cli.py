"""`palm evaluate` and `palm leaderboard` (joined to the `palm` group in palm_cli.py).

A participant's mistake prints the whole report to stderr and ends with one 'Error: ...'
line and exit status 1; a problem on the organiser's side (ground truth, output folder) ends
the same way with exit status 2. Never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from palm_algos.errors import PalmError
from palm_algos.formats import OUTPUT_SLUGS, TASKS


def _fail(exc: PalmError):
    for line in getattr(exc, "problems", [])[:200]:
        click.echo(line, err=True)
    error = click.ClickException(" ".join(str(exc).split()))
    error.exit_code = getattr(exc, "exit_code", 1)
    raise error from None


def _slug_options(command):
    for task in reversed(TASKS):
        command = click.option(f"--{task}-slug", help=f"Output slug (--gc; default: {OUTPUT_SLUGS[task]} when present, "
                                                     f"else the output of its kind).")(command)
    return command


@click.command()
@click.option("--submission", type=click.Path(path_type=Path),
              help="PALM results (CSV files, Disc_Segmentation/): a folder or a .zip, also inside one team folder.")
@click.option("--ground-truth", type=click.Path(path_type=Path),
              help="Ground truth folder or .zip: any layout `palm data inspect` reads, or label sheet + Disc_Masks/ without images.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Where to write metrics.json (default: beside the submission, named after it: "
                   "results/ -> results.metrics.json; with --gc: /output/metrics.json).")
@click.option("--gc", is_flag=True, help="grand-challenge mode: read predictions.json and job outputs from --input.")
@click.option("--input", "input_dir", type=click.Path(path_type=Path), default=Path("/input"), show_default=True,
              help="grand-challenge input folder (with --gc).")
@_slug_options
def evaluate(submission, ground_truth, out, gc, input_dir, **slug_options):
    """Score a submission (any of the three tasks) and write metrics.json."""
    from . import gc as gc_mode
    from .scoring import evaluate_palm, summary_lines, truth_lines, write_metrics

    try:
        if gc:  # the evaluation container's job (python -m evaluation.gc), with click's messages
            slugs = {task: slug_options[f"{task}_slug"] for task in TASKS if slug_options[f"{task}_slug"]}
            out = out or gc_mode.OUTPUT / "metrics.json"
            result = gc_mode.run(input_dir, ground_truth or gc_mode.GROUND_TRUTH, out, slugs)
        else:
            if submission is None or ground_truth is None:
                raise click.UsageError("give --submission and --ground-truth (or --gc)")
            result = evaluate_palm(submission, ground_truth, progress=None)
            out = out or beside(submission)
            write_metrics(result, out)
    except PalmError as exc:
        _fail(exc)
    for line in truth_lines(result):
        click.echo(line, err=True)
    for line in summary_lines(result):
        click.echo(line)
    click.echo(f"wrote {out}")


def beside(submission: Path) -> Path:
    """metrics.json's default place: next to the submission folder or zip, named after it (not
    inside it: `palm leaderboard` would take a folder holding metrics.json as already scored)."""
    submission = Path(os.path.abspath(submission))
    name = submission.stem if submission.suffix.lower() == ".zip" else submission.name
    return submission.with_name(f"{name}.metrics.json")


@click.command()
@click.argument("submissions", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--ground-truth", type=click.Path(path_type=Path), help="Needed for submissions in PALM layout.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("leaderboard"), show_default=True)
@click.option("--missing", type=click.Choice(["worst", "skip"]), default="worst", show_default=True,
              help="A task a submission lacks: tie for the worst rank, or rank on the tasks it has.")
@click.option("--gallery/--no-gallery", default=True, show_default=True,
              help="Per submission, the worst cases as pictures of truth and prediction (docs/OVERLAYS.md).")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The ground truth's fundus images, for the gallery where --ground-truth holds none.")
def leaderboard(submissions, ground_truth, out, missing, gallery, images):
    """Rank every subfolder or .zip of SUBMISSIONS (PALM layout or metrics.json); write CSV, Markdown, HTML."""
    from .leaderboard import build

    try:
        table = build(submissions, ground_truth, out, missing=missing, gallery=gallery, images=images)
    except PalmError as exc:
        _fail(exc)
    for row in table.itertuples(index=False):
        place = "" if row.rank != row.rank else f"{row.rank:g}"  # NaN for invalid ones
        click.echo(f"{place:>5}  {row.submission}  {row.status}")
    click.echo(f"wrote {out / 'leaderboard.html'}, leaderboard.csv, leaderboard.md")
