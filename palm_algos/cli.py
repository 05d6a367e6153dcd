"""The `palm` command: data, train, predict, evaluate, leaderboard.

Torch is imported inside the commands that need it, so `palm data` and `palm evaluate` run
where only the evaluation dependencies are installed.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from . import __version__
from .errors import PalmError

TASKS = ("classification", "fovea", "disc")


def user_errors(command):
    """Show a PalmError as one 'Error: ...' line and exit 1, never as a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PalmError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="palm")
def main():
    """PALM pathologic myopia methods: train, predict, evaluate, rank."""


@main.group()
def data():
    """Inspect data folders and make the synthetic example."""


@data.command("inspect")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--decode", is_flag=True, help="Decode every image to find truncated files (slower).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@user_errors
def data_inspect(folder: Path, decode: bool, as_json: bool):
    """Report the cases, labels, fovea and mask coverage, sizes and problems in FOLDER."""
    from .cases import read_cases, summarise

    table = read_cases(folder, check_images=decode)
    summary = summarise(table)
    if as_json:
        click.echo(json.dumps({**summary, "problem_lines": table.problems}, indent=2))
        return
    click.echo(f"{folder}: {summary['layout']} layout")
    click.echo(f"  cases            {summary['cases']}")
    click.echo(f"  labelled         {summary['labelled']} ({summary['pathologic']} pathologic)")
    click.echo(f"  fovea            {summary['with_fovea']} with position, {summary['fovea_absent']} marked absent")
    click.echo(f"  disc masks       {summary['with_disc_mask']}")
    sizes = ", ".join(f"{k} ({v})" for k, v in list(summary["sizes"].items())[:5])
    click.echo(f"  sizes            {sizes}")
    click.echo(f"  problems         {summary['problems']}")
    for line in table.problems:
        click.echo(f"    {line}")


@data.command("synth")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--count", default=24, show_default=True, help="Number of images.")
@click.option("--size", default="512x512", show_default=True, help="Image size WxH.")
@click.option("--seed", default=0, show_default=True)
@user_errors
def data_synth(out: Path, count: int, size: str, seed: int):
    """Write a PALM-shaped synthetic example (images, labels.csv, Disc_Masks/) to OUT."""
    from .synth import write_palm_example

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WxH such as 512x512, got {size!r}", param_hint="--size")
    write_palm_example(out, count=count, size=(w, h), seed=seed)
    click.echo(f"wrote {count} synthetic cases to {out}")
