"""The evaluation container's entry point: ``python -m evaluation.gc`` (or ``python -m evaluation``).

Reads ``/input/predictions.json`` and the job outputs, scores them against the ground truth in
``/opt/ml/input/data/ground_truth`` and writes ``/output/metrics.json``. A participant's
mistake ends with exit status 1 and a one-line reason as the last line of stderr, which is
what grand-challenge shows them; the full report is printed above it. A problem on the
organiser's side (ground truth, an unwritable output folder) ends the same way with exit
status 2 and a line saying so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from palm_algos.errors import PalmError
from palm_algos.formats import OUTPUT_SLUGS

from .scoring import evaluate_gc, summary_lines, truth_lines, write_metrics

INPUT = Path("/input")
GROUND_TRUTH = Path("/opt/ml/input/data/ground_truth")
OUTPUT = Path("/output")


def run(input_dir: Path, ground_truth: Path, metrics: Path, slugs: dict[str, str] | None = None) -> dict:
    """Score and write ``metrics`` (metrics.json); raises ValidationError / SetupError (PalmError)
    on failure. The container and `palm evaluate --gc` both run this."""
    result = evaluate_gc(input_dir, ground_truth, slugs)
    write_metrics(result, metrics)
    return result


def report_failure(exc: PalmError) -> None:
    """Every problem on stderr, then the one line grand-challenge shows the participant."""
    for line in getattr(exc, "problems", [])[:200]:
        print(line, file=sys.stderr)
    print(" ".join(str(exc).split()), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.gc", description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=INPUT, help="folder with predictions.json and job outputs")
    parser.add_argument("--ground-truth", type=Path, default=GROUND_TRUTH)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder for metrics.json")
    for task, slug in OUTPUT_SLUGS.items():
        parser.add_argument(f"--{task}-slug", help=f"output slug of the {task} task (default: {slug!r} when "
                            f"present, else the one output of its interface kind)")
    args = parser.parse_args(argv)
    slugs = {task: getattr(args, f"{task}_slug") for task in OUTPUT_SLUGS if getattr(args, f"{task}_slug")}
    try:
        result = run(args.input, args.ground_truth, Path(args.output) / "metrics.json", slugs)
    except PalmError as exc:
        report_failure(exc)
        return getattr(exc, "exit_code", 1)
    for line in truth_lines(result):
        print(line, file=sys.stderr)
    for line in summary_lines(result):
        print(line)
    print(f"wrote {Path(args.output) / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
