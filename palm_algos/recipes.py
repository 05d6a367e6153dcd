"""The training recipes of recipes.toml, as the command lines they run.

A recipe is data, not a script: its keys are the options of the command that reads it (`palm
train`, `benchmarks/cross_validate.py`), so `palm train --recipe final-disc` runs exactly the
`palm train` command lines that `--dry-run` prints. The file ships inside the package: an
installed palm and the containers read the same recipes as a checkout.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from .errors import PalmError

RECIPES = Path(__file__).with_name("recipes.toml")
DATA_KEYS = ("data", "also-train", "extra-test", "disc-centre-test")  # folders relative to the data root


def read_recipes(path: Path = RECIPES) -> dict[str, dict[str, Any]]:
    """Every recipe by name, each with what it takes ``from`` another filled in."""
    tables = tomllib.loads(path.read_text())

    def filled(name: str, seen: tuple[str, ...]) -> dict[str, Any]:
        if name in seen:
            raise PalmError(f"{path}: recipe {seen[0]!r} comes from itself ({' -> '.join((*seen, name))})")
        if name not in tables:
            raise PalmError(f"{path}: recipe {seen[-1]!r} comes from {name!r}, which is no recipe")
        table = dict(tables[name])
        base = table.pop("from", None)
        return {**filled(base, (*seen, name)), **table} if base else table

    return {name: filled(name, ()) for name in tables}


def recipe(name: str) -> dict[str, Any]:
    recipes = read_recipes()
    if name not in recipes:
        raise PalmError(f"unknown recipe {name!r}; {RECIPES.name} names {', '.join(recipes)}")
    return recipes[name]


def options(name: str, data_root: Path | None, given: dict[str, Any]) -> dict[str, Any]:
    """Recipe ``name``'s options, its data folders below ``data_root``, under the options
    ``given`` on the command line (which win)."""
    chosen = recipe(name)
    needs_root = [key for key in DATA_KEYS if key in chosen and key not in given]
    if needs_root and data_root is None:
        raise PalmError(f"recipe {name!r}: its data folders are relative to a data root: give --data-root "
                        f"(a folder laid out like ../shared/data)")
    for key in needs_root:
        chosen[key] = [str(data_root / p) for p in chosen[key]] if isinstance(chosen[key], list) else str(data_root / chosen[key])
    return {**chosen, **given}


def command_line(options: dict[str, Any]) -> list[str]:
    """``task`` (the command's argument) then ``--key value`` for each option: a list repeats
    the option, a flag is written when on."""
    line = [str(options["task"])] if "task" in options else []
    for key, value in options.items():
        if key == "task" or value is False or value is None:
            continue
        for one in value if isinstance(value, (list, tuple)) else [value]:
            line += [f"--{key}"] if one is True else [f"--{key}", str(one)]
    return line


def train_commands(name: str, data_root: Path | None, given: dict[str, Any]) -> list[list[str]]:
    """The `palm` command lines (without `palm`) that train recipe ``name``: one `train`, or
    with ``seeds`` one per seed (OUT-seedS.pt) and the `ensemble` of them at OUT."""
    chosen = options(name, data_root, given)
    seeds = int(chosen.pop("seeds", 1))
    if "out" not in chosen:
        raise PalmError(f"recipe {name!r}: give --out (the checkpoint to write)")
    if seeds <= 1:
        return [["train", *command_line(chosen)]]
    out, first = Path(chosen["out"]), int(chosen.get("seed", 0))
    members = [out.with_name(f"{out.stem}-seed{seed}.pt") for seed in range(first, first + seeds)]
    return [["train", *command_line({**chosen, "out": member, "seed": first + i})] for i, member in enumerate(members)] \
        + [["ensemble", "--out", str(out), *map(str, members)]]


def given_options(ctx: click.Context, leave: tuple[str, ...] = ()) -> dict[str, Any]:
    """The options and arguments typed on ``ctx``'s command line (not their defaults), by the
    name a recipe gives them (``--input-size`` -> ``input-size``); ``leave`` names parameters
    that are not the command's own settings (``recipe``, ``data_root``)."""
    given = {}
    for param in ctx.command.params:
        if param.name in leave or ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        key = param.opts[0].lstrip("-") if isinstance(param, click.Option) else param.name
        value = ctx.params[param.name]
        given[key] = [str(v) for v in value] if isinstance(value, tuple) else str(value) if isinstance(value, Path) else value
    return given
