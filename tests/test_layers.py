"""Imports run one way (docs/ARCHITECTURE.md): palm_algos never imports evaluation; evaluation
takes from palm_algos only the formats and the readers; the containers' entry point loads no CLI;
the `palm` command (palm_cli.py) sits above both. Fast: no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What evaluation may take from palm_algos: the bottom layer, torch-free (the formats, the
# readers of images and data folders, the drawings made on the images, and atomic writing).
READERS = {"palm_algos.formats", "palm_algos.errors", "palm_algos.atomic", "palm_algos.imageio", "palm_algos.cases", "palm_algos.sheets",
           "palm_algos.overlays"}


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def test_palm_algos_never_imports_evaluation():
    found = {f"{p.relative_to(ROOT)}: {m}" for p in (ROOT / "palm_algos").rglob("*.py")
             for m in imported_modules(p) if m.split(".")[0] in ("evaluation", "palm_cli")}
    assert not found


def test_evaluation_takes_only_formats_and_readers_from_palm_algos():
    found = {f"{p.relative_to(ROOT)}: {m}" for p in (ROOT / "evaluation").rglob("*.py")
             for m in imported_modules(p) if m.split(".")[0] == "palm_algos" and m not in READERS}
    assert not found


def _loaded_after(statement: str) -> set[str]:
    code = f"{statement}; import sys; print(' '.join(sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return set(run.stdout.split())


def test_the_containers_entry_point_loads_no_cli_and_no_torch():
    loaded = _loaded_after("import palm_algos.serve")
    assert not loaded & {"click", "palm_algos.cli", "evaluation", "torch"}


def test_the_palm_command_loads_no_torch():
    loaded = _loaded_after("import palm_cli")
    assert "torch" not in loaded and {"palm_algos.cli", "evaluation.cli"} <= loaded


def test_checkpoints_and_models_sit_below_the_tasks():
    """No import circle: a checkpoint is read without the tasks or the networks (task names
    come from formats, torch files from torchfile), and the networks without the checkpoints."""
    assert not _loaded_after("import palm_algos.checkpoint") & {"palm_algos.tasks", "palm_algos.models"}
    assert not _loaded_after("import palm_algos.models") & {"palm_algos.tasks", "palm_algos.checkpoint"}
