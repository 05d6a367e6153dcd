"""The PALM and grand-challenge formats are named once, in palm_algos/formats.py: the writing
side, the reading side, the tests, the benchmarks and build.sh all agree with it. Fast: no torch."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from evaluation import cli as evaluation_cli
from evaluation import gc, leaderboard, submission, tasks as evaluation_tasks
from palm_algos import formats, imageio, serve, writers
from palm_algos.formats import gc_output_file, interface, stays_below

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("palm_algos", "evaluation", "benchmarks", "containers", "tests")
                 for p in (ROOT / folder).rglob("*.py")) + [ROOT / "palm_cli.py"]


def test_both_sides_use_the_same_objects():
    assert serve.TASKS is submission.TASKS is leaderboard.TASKS is formats.TASKS
    assert serve.OUTPUT_SLUGS is submission.OUTPUT_SLUGS is gc.OUTPUT_SLUGS is evaluation_cli.OUTPUT_SLUGS \
        is formats.OUTPUT_SLUGS
    assert serve.INPUT_SLUG is formats.INPUT_SLUG
    assert writers.CSV_NAMES is formats.CSV_NAMES and writers.PALM_COLUMNS is formats.PALM_COLUMNS
    assert submission.FORMATS is formats.FORMATS
    assert serve.GC_IMAGE_SUFFIXES is submission.GC_IMAGE_SUFFIXES is evaluation_tasks.GC_IMAGE_SUFFIXES \
        is imageio.GC_IMAGE_SUFFIXES is formats.GC_IMAGE_SUFFIXES
    assert serve.interface is submission.interface is formats.interface


def _format_values() -> list:
    return [value for name, value in vars(formats).items()
            if name.isupper() and isinstance(value, (str, tuple, dict))]


def test_no_format_constant_is_defined_twice():
    """No module but formats.py assigns a name to a literal equal to a format constant (or to
    one of a dict's values), so a rename cannot miss a copy."""
    values = _format_values()
    values += [v for value in values if isinstance(value, dict) for v in value.values()]
    copies = []
    for path in SOURCES:
        if path.name == "formats.py" or not path.is_file():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                try:
                    literal = ast.literal_eval(node.value)
                except (ValueError, TypeError):
                    continue
                if any(type(literal) is type(v) and literal == v for v in values):
                    copies.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not copies, f"format constants defined again (import them from palm_algos.formats): {copies}"


CODE = [p for p in SOURCES if p.parts[len(ROOT.parts)] != "tests"]  # tests may spell the real names out


def _code_constants(path: Path):
    """(line, value) of each string constant in ``path`` that is neither a docstring nor
    part of an f-string's text."""
    tree = ast.parse(path.read_text())
    skip = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)}
    skip |= {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def test_no_file_name_or_slug_is_written_inline():
    """A PALM file name or a socket slug appears in code only in formats.py, also inline
    (``entries.get("Disc_Segmentation")``), not only as an assignment; the task names, which
    one slug shares, are keys everywhere."""
    names = {f.palm_file for f in formats.FORMATS.values()} | {f.slug for f in formats.FORMATS.values()}
    names = (names | {formats.INPUT_SLUG}) - set(formats.TASKS)
    copies = [f"{path.relative_to(ROOT)}:{line} {value!r}" for path in CODE if path.name != "formats.py"
              for line, value in _code_constants(path) if value in names]
    assert not copies, f"file names or slugs written out again (take them from palm_algos.formats): {copies}"


def test_no_code_branches_on_a_task_name():
    """What differs per task stands in the task tables (formats.FORMATS, palm_algos.tasks,
    evaluation.tasks, writers.OUTPUTS), never in ``if task == "disc"``."""
    branches = []
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
                sides = [node.left, node.comparators[0]]
                named = [s.id if isinstance(s, ast.Name) else s.attr for s in sides if isinstance(s, (ast.Name, ast.Attribute))]
                literal = [s.value for s in sides if isinstance(s, ast.Constant)]
                if any(n == "task" or n.endswith("_task") for n in named) and set(literal) & set(formats.TASKS):
                    branches.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not branches, f"branches on a task name (put the difference in the task's table row): {branches}"


def test_build_sh_tasks_are_the_tasks():
    line = re.search(r"^TASKS=\(([^)]*)\)", (ROOT / "build.sh").read_text(), re.MULTILINE)
    assert line and tuple(line.group(1).split()) == formats.TASKS


def test_build_sh_guides_are_the_tasks_guides():
    """build.sh bakes and exports each task's guide beside its model (GUIDE) as serve finds it."""
    from palm_algos.tasks import get_task

    line = re.search(r"^declare -A GUIDE=\(([^)]*)\)", (ROOT / "build.sh").read_text(), re.MULTILINE)
    pairs = dict(re.findall(r"\[(\w+)\]=(\w+)", line.group(1))) if line else None
    assert pairs == {task: get_task(task).guide_task for task in formats.TASKS if get_task(task).guide_task}


def test_every_task_has_one_format_record():
    assert tuple(formats.FORMATS) == tuple(writers.OUTPUTS) == formats.TASKS
    assert all(f.task == task for task, f in formats.FORMATS.items())
    assert tuple(evaluation_tasks.TABLE) == formats.TASKS
    assert tuple(formats.PALM_COLUMNS) == tuple(formats.CSV_NAMES) \
        == tuple(t for t, row in evaluation_tasks.TABLE.items() if row.csv_value)


def test_the_model_tasks_are_the_format_tasks():
    pytest.importorskip("torch")
    from palm_algos import tasks

    assert tuple(tasks.TASKS) == formats.TASKS


def test_gc_output_file_lies_in_the_socket_path():
    for task in formats.TASKS:
        relative = formats.gc_relative_path(task, "s")
        assert gc_output_file(task, "s") == relative or gc_output_file(task, "s").startswith(relative + "/")
    assert gc_output_file("disc", "optic-disc-segmentation") == "images/optic-disc-segmentation/output.mha"


def test_interface_reads_both_key_names():
    assert interface({"interface": {"slug": "a"}}) == {"slug": "a"}
    assert interface({"socket": {"slug": "b"}}) == {"slug": "b"}
    assert interface({"interface": "not a dict"}) == {} and interface({}) == {}


@pytest.mark.parametrize("relative, below", [
    ("images/x", True), ("", True), ("a/../../b", False), ("..", False), ("/etc", False),
    ("\\etc\\passwd", False), ("images\\..\\..\\x", False), ("a..b/c", True),
])
def test_stays_below(relative, below):
    assert stays_below(relative) is below
