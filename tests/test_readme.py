"""The README stays true to the tree and to the commands: its Layout section lists what exists
and every code folder and module there is, and every option a README command uses (`palm
...`, `./build.sh ...`) is one that command's --help names; `palm train --help` names every
network. Fast: no training."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import click
import pytest

from palm_cli import main as palm

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CODE_FOLDERS = ("palm_algos", "evaluation", "containers", "benchmarks")  # each module and subfolder listed
NOT_LISTED = {"__init__.py", "__main__.py", "__pycache__"}


def layout_block() -> str:
    section = README.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```\n", 1)[1].split("```", 1)[0]


def layout_paths() -> set[str]:
    """Every path the Layout block names, relative to the root: each line starts with a
    top-level entry (indented lines continue the one above); parenthesised notes are skipped."""
    paths, top = set(), ""
    for line in layout_block().splitlines():
        if not line.strip():
            continue
        words = re.sub(r"\([^()]*\)", " ", line).split()
        if not line[0].isspace():
            top, words = words[0], words[1:]
            paths.add(top.rstrip("/"))
        if top.endswith("/"):
            paths.update(top + w.rstrip("/") for w in words if re.fullmatch(r"[\w.-]+(/[\w.-]+)*/?", w)
                         and (w.endswith("/") or "." in w or w == "Dockerfile"))
    return paths


def tracked() -> list[str]:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [f for f in files.stdout.splitlines() if (ROOT / f).exists()]


def test_layout_lists_what_exists_and_everything_there_is():
    listed = layout_paths()
    assert {"palm_cli.py", "palm_algos", "palm_algos/train.py", "containers/test/gc_jobs.py"} <= listed  # the parser works
    missing = sorted(p for p in listed if not (ROOT / p).exists())
    assert not missing, f"README Layout names paths that do not exist: {missing}"
    files = tracked()
    top = {f.split("/")[0] for f in files if not f.startswith(".") and "/" in f or f.endswith((".py", ".sh"))}
    unlisted = sorted(top - listed)
    assert not unlisted, f"README Layout lacks these top-level folders or modules: {unlisted}"
    inside = {"/".join(f.split("/")[:2]) for f in files if f.split("/")[0] in CODE_FOLDERS and f.count("/") >= 1}
    unlisted = sorted(p for p in inside - listed if p.split("/")[1] not in NOT_LISTED
                      and not any(q.startswith(p + "/") for q in listed))  # containers/test via test/gc_jobs.py
    assert not unlisted, f"README Layout lacks these modules or folders: {unlisted}"


# -- options ---------------------------------------------------------------------------------

COMMAND = re.compile(r"(?:^|\s|`)(palm|palm_algos\.cli|\./build\.sh)\s+([a-z][\w-]*(?:\s+[a-z][\w-]*)?)")
OPTION = re.compile(r"(?<![\w-])--[a-z][\w-]*(?:/--[a-z][\w-]*)?")


def readme_commands() -> list[tuple[str, str, list[str]]]:
    """(program, command words, options) for each `palm ...` and `./build.sh ...` the README
    shows: in bash blocks (a `\\` continues a line; an indented comment, `#   --folds 5 ...`,
    goes on with the command above it, a plain `# ...` comment ends it; what precedes a
    command on its line, such as torchrun's options, is not its) and in inline code."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        current = None
        for line in block.replace("\\\n", " ").splitlines():
            text = line.strip()
            if text.startswith("#") and not text.startswith("#  "):
                current = None
            parts = re.split(r"(?=(?:^|\s)(?:palm|palm_algos\.cli|\./build\.sh)\s)", text.lstrip("#").strip())
            for index, part in enumerate(parts):
                match = COMMAND.search(part)
                if match and match.start() <= 1:
                    current = (match[1], match[2], [])
                    found.append(current)
                    current[2].extend(OPTION.findall(part[match.end():]))
                elif current and (index > 0 or len(parts) == 1):
                    current[2].extend(OPTION.findall(part))
    for span in re.findall(r"`([^`\n]+)`", README):
        match = COMMAND.match(span) or COMMAND.match(" " + span)
        if match:
            found.append((match[1], match[2], OPTION.findall(span[match.end() - 1:])))
    return found


def palm_help(words: str) -> str:
    """The --help text of the deepest palm command the words name ('data inspect', 'train fovea')."""
    command, ctx = palm, click.Context(palm, info_name="palm")
    for word in words.split():
        if not isinstance(command, click.Group) or word not in command.commands:
            break
        command = command.commands[word]
        ctx = click.Context(command, info_name=word, parent=ctx)
    assert command is not palm, f"README: `palm {words}` is no palm command"
    return command.get_help(ctx)


def build_help() -> str:
    return subprocess.run(["bash", str(ROOT / "build.sh"), "help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60).stdout


def test_every_option_in_a_readme_command_exists():
    commands = readme_commands()
    assert any(p == "palm" and w.startswith("train") and "--folds" in o for p, w, o in commands)  # the parser works
    assert any(p == "./build.sh" and "--fovea-slug" in o for p, w, o in commands)
    wrong, build = [], build_help()
    for program, words, options in commands:
        if program == "./build.sh":
            assert words.split()[0] in re.findall(r"^  ([a-z]+)\b", build, re.M), f"./build.sh {words}: no such command"
            text = build
        else:
            text = palm_help(words)
        for option in options:
            for name in option.split("/"):
                if not re.search(re.escape(name) + r"(?![\w-])", text):
                    wrong.append(f"{program} {words} {name}")
    assert not wrong, f"README uses options that --help does not name: {sorted(set(wrong))}"


def test_train_help_names_every_network():
    """`--arch` lists its choices in words (the CLI imports no torch to print its help), so
    a network added to a task must be added there too."""
    pytest.importorskip("torch")
    from palm_algos.formats import TASKS
    from palm_algos.tasks import get_task

    help_text = " ".join(palm_help("train").split()).replace("- ", "-")  # click wraps at hyphens
    for task in TASKS:
        for arch in get_task(task).archs:
            assert re.search(rf"{task} [^;]*(?<![\w-]){re.escape(arch)}(?![\w-])", help_text), f"palm train --help: --arch lacks {task} {arch}"
