"""The `palm` command: palm_algos's commands (data, train, predict, ensemble) and evaluation's
(evaluate, leaderboard) in one group.

It is assembled here, above both packages, so that neither imports the other's CLI. Torch is
imported inside the commands that need it: `palm data` and `palm evaluate` run where only the
evaluation dependencies are installed.
"""

from __future__ import annotations

import click

from evaluation.cli import evaluate, leaderboard
from palm_algos import __version__
from palm_algos import cli as algos_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="palm")
def main():
    """PALM pathologic myopia methods: train, predict, evaluate, rank."""


for command in (*algos_cli.main.commands.values(), evaluate, leaderboard):
    main.add_command(command)


if __name__ == "__main__":  # python -m palm_cli ...
    main()
