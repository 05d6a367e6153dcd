"""Reading a submission, PALM folder or grand-challenge predictions.json, into one shape.

Readers only parse and check what each file says on its own (headers, numbers, names,
duplicates); whether the cases match the ground truth, and the masks themselves, are
checked while scoring. Every problem goes into the Report, nothing is raised here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from palm_algos.formats import (DISC_PNG_FOLDER, FORMATS, GC_IMAGE_SUFFIXES, MASK_SUFFIXES, OUTPUT_SLUGS, TASKS, interface,
                                name_problem, stays_below)

from .tasks import TABLE
from .unpack import is_junk
from .validation import Report, bare_name, short_list


@dataclass(frozen=True)
class MaskFile:
    """A predicted disc mask; ``dark`` is the PALM convention (0 = disc), else 1 = disc (MHA).

    ``label`` names the file in messages (its name, or its path below the grand-challenge input).
    """

    path: Path
    dark: bool
    label: str = ""


@dataclass
class Submission:
    """Predictions per task (task -> case name (file stem) -> prediction: the PM risk, the
    fovea point, the disc's MaskFile); a task the submission does not answer is absent."""

    predictions: dict[str, dict] = field(default_factory=dict)
    fovea_in_world: bool = False  # grand-challenge points are in the image's world space
    sources: dict[str, str] = field(default_factory=dict)  # task -> what to name in messages
    rejected: set[tuple[str, str]] = field(default_factory=set)  # (task, name or "*") already reported
    report: Report = field(default_factory=Report)

    def tasks(self) -> list[str]:
        return [t for t in TASKS if t in self.predictions]


# -- PALM folder -----------------------------------------------------------------------------


RESULT_NAMES = {f.palm_file.lower() for f in FORMATS.values()}
MAX_DEPTH = 8


def read_palm_submission(folder: Path, shown: Path | None = None) -> Submission:
    """The PALM layout: the two CSV files and the Disc_Segmentation folder, any subset of them.

    The results may sit inside one team folder (or several nested ones), as zips made by a
    desktop's "compress" command hold them; ``__MACOSX/``, dot files and the like are ignored.
    ``shown`` is how messages name the submission (a zip's name rather than a temporary folder).
    """
    folder = Path(folder)
    shown = Path(shown or folder)
    sub = Submission()
    if not folder.is_dir():
        sub.report.error(f"{shown}: no such folder")
        return sub
    try:
        folder, others = _results_folder(folder)
        listing = sorted(p for p in folder.iterdir() if not is_junk(p.name))
    except OSError as exc:
        sub.report.error(f"{shown}: cannot read the folder ({exc.strerror or type(exc).__name__})")
        return sub
    entries: dict[str, Path] = {}
    for path in listing:
        key = path.name.lower()
        if key in RESULT_NAMES and key in entries:
            sub.report.error(f"{entries[key].name} and {path.name}: two results whose names differ only by case")
        entries.setdefault(key, path)
    for task in (t for t in TASKS if TABLE[t].csv_value):
        path = entries.get(FORMATS[task].palm_file.lower())
        if path is None:
            continue
        sub.sources[task] = path.name
        rows, bad = read_palm_csv(path, FORMATS[task].columns, sub.report)
        if rows is None:  # unusable as a whole (already reported): no per-case complaints
            rows, bad = {}, {"*"}
        sub.rejected |= {(task, name) for name in bad}
        predictions = sub.predictions[task] = {name: TABLE[task].csv_value(numbers) for name, numbers in rows.items()}
        for name, prediction in predictions.items():
            if text := TABLE[task].csv_problem(prediction):
                sub.report.error(f"{path.name}: {name}: {text}")
    for task in (t for t in TASKS if not TABLE[t].csv_value):  # the rest submit a folder of masks
        masks = entries.get(FORMATS[task].palm_file.lower())
        if masks is not None and masks.is_dir():
            sub.sources[task] = masks.name
            sub.predictions[task] = _mask_folder(masks, MASK_SUFFIXES, dark=True, report=sub.report,
                                                 quiet={DISC_PNG_FOLDER})
    if not sub.tasks() and not sub.report.errors:
        found = f"; found the folders {short_list(p.name for p in others)}: submit one team's results" if others else ""
        files = ", ".join(f.palm_file for f in FORMATS.values() if f.columns)
        folders = " or ".join(f"{f.palm_file}/" for f in FORMATS.values() if not f.columns)
        sub.report.error(f"{shown.name or shown}: no results found; expected {files} or a {folders} folder{found}")
    return sub


def _results_folder(folder: Path) -> tuple[Path, list[Path]]:
    """The folder holding the results: ``folder``, or the single team folder inside it (repeatedly).

    Also returns the subfolders found where no results were, to name them in the message.
    """
    for _ in range(MAX_DEPTH):
        entries = [p for p in folder.iterdir() if not is_junk(p.name)]
        if any(p.name.lower() in RESULT_NAMES for p in entries):
            return folder, []
        subfolders = [p for p in entries if p.is_dir()]
        if len(subfolders) != 1:
            return folder, subfolders
        folder = subfolders[0]
    return folder, []


def _norm(text: str) -> str:
    return re.sub(r"[\s_]", "", text.strip().lower())


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_palm_csv(
    path: Path, columns: tuple[str, ...], report: Report
) -> tuple[dict[str, tuple[float, ...]] | None, set[str]]:
    """Rows of a PALM results CSV as name -> numbers, and the names of rows with bad values.

    Every bad line is reported, none raised; None for a file that cannot be used at all.
    """
    name, expected = path.name, ",".join(columns)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        report.error(f"{name}: cannot read the file as UTF-8 text ({type(exc).__name__})")
        return None, set()
    reader = csv.reader(io.StringIO(text))
    try:
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        report.error(f"{name}: not a valid CSV file ({exc})")
        return None, set()
    if not rows:
        report.error(f"{name}: the file is empty; expected the header '{expected}' and one row per image")
        return None, set()
    header = [cell.strip() for cell in rows[0][1]]
    if [_norm(c) for c in header[: len(columns)]] != [_norm(c) for c in columns]:
        if len(header) >= 2 and _is_number(header[1]):
            report.error(f"{name}: missing header; the first line must be '{expected}'")
        else:
            report.error(f"{name}: wrong header '{','.join(header)}'; expected '{expected}'")
        return None, set()
    if len(header) > len(columns):
        report.warn(f"{name}: extra columns ignored: {', '.join(header[len(columns):])}")
    values: dict[str, tuple[float, ...]] = {}
    bad: set[str] = set()
    first_line: dict[str, int] = {}
    for line, row in rows[1:]:
        where = f"{name}: line {line}"
        if len(row) != len(header):  # cells beyond the header would be dropped without a word
            comma = "; a decimal comma splits a number in two: write 0.9, not 0,9" if len(row) > len(header) else ""
            report.error(f"{where}: {len(row)} cell{'s' * (len(row) != 1)}, but the header has {len(header)} "
                         f"({','.join(header)}){comma}")
            continue
        if problem := name_problem(row[0]):
            report.error(f"{where}: FileName {row[0]!r} {problem}")
            continue
        stem = bare_name(row[0])
        numbers, ok = [], True
        for column, cell in zip(columns[1:], row[1:]):
            number = _parse_number(cell)
            if isinstance(number, str):
                report.error(f"{where}: {column} {number}")
                ok = False
            numbers.append(number)
        if stem in first_line:
            report.error(f"{where}: duplicate row for {stem!r} (first at line {first_line[stem]})")
            continue
        first_line[stem] = line
        if ok:
            values[stem] = tuple(numbers)
        else:
            bad.add(stem)
    return values, bad


def _parse_number(cell: str) -> float | str:
    """The number in a cell, or a string saying what is wrong with it."""
    cell = cell.strip()
    if not cell:
        return "is empty"
    try:
        number = float(cell)
    except ValueError:
        return f"is not a number ({cell!r})"
    if not math.isfinite(number):
        return f"is not a finite number ({cell!r})"
    return number


def _mask_folder(folder: Path, suffixes: tuple[str, ...], dark: bool, report: Report,
                 quiet: set[str] = frozenset()) -> dict[str, MaskFile]:
    """The masks in ``folder`` by stem; other entries are named in a warning, except the folders
    in ``quiet`` (`palm predict --png`'s own copies, never scored)."""
    masks: dict[str, MaskFile] = {}
    ignored = []
    try:
        listing = sorted(folder.iterdir())
    except OSError as exc:
        report.error(f"{folder.name}: cannot read the folder ({exc.strerror or type(exc).__name__})")
        return masks
    for path in listing:
        if is_junk(path.name) or (path.name in quiet and path.is_dir()):
            continue
        if not path.is_file() or path.suffix.lower() not in suffixes:
            ignored.append(path.name)
            continue
        if path.stem in masks:
            report.error(f"{folder.name}: two masks for {path.stem!r}: {masks[path.stem].path.name} and {path.name}")
            continue
        masks[path.stem] = MaskFile(path, dark, path.name)
    if ignored:
        report.warn(f"{folder.name}: ignored {len(ignored)} entries that are not {'/'.join(suffixes)} files: {', '.join(ignored[:5])}")
    return masks


# -- grand-challenge predictions.json --------------------------------------------------------


def read_gc_submission(input_dir: Path, slugs: dict[str, str] | None = None) -> Submission:
    """Jobs of an algorithm run: ``predictions.json`` plus ``<pk>/output/<relative_path>`` files.

    A job is matched to a case by the original name (stem) of its input image. ``slugs`` names
    the output slug of a task; a task not named there is found by its default slug, else by its
    interface kind (see ``choose_slugs``).
    """
    input_dir = Path(input_dir)
    given = {task: slug for task, slug in (slugs or {}).items() if slug}
    sub = Submission(fovea_in_world=True)
    report = sub.report
    try:
        jobs = json.loads((input_dir / "predictions.json").read_text())
    except FileNotFoundError:
        report.error(f"{input_dir / 'predictions.json'}: not found")
        return sub
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        report.error(f"predictions.json: not valid JSON ({exc})")
        return sub
    if not isinstance(jobs, list):
        report.error("predictions.json: expected a list of algorithm jobs")
        return sub
    slugs = choose_slugs(jobs, given, report)
    if slugs is None:  # reported: which outputs are which cannot be told
        return sub
    found: dict[str, dict] = {task: {} for task in TASKS}
    job_of: dict[str, str] = {}
    for index, job in enumerate(jobs):
        if not isinstance(job, dict) or not isinstance(job.get("pk"), (str, int)):
            report.error(f"predictions.json: job {index} has no 'pk'")
            continue
        pk = str(job["pk"])
        if bare_name(pk) is None:
            report.error(f"predictions.json: job pk {pk!r} is not a plain identifier")
            continue
        name = _input_name(job)
        if name is None:
            report.error(f"job {pk}: no input image with a file name")
            continue
        stem = bare_name(name)
        if stem is None:
            report.error(f"job {pk}: input image name {name!r} must be a bare file name")
            continue
        if stem in job_of:
            report.error(f"job {pk}: a second job for image {stem!r} (also job {job_of[stem]})")
            continue
        job_of[stem] = pk
        outputs = {_slug(o): o for o in job.get("outputs") or [] if isinstance(o, dict)}
        for task in TASKS:
            entry = outputs.get(slugs[task]) if task in slugs else None
            if entry is None:
                continue
            where = f"job {pk} ({name}): {slugs[task]}"
            location = _location(input_dir, pk, entry, where, report)
            if location is None:
                sub.rejected.add((task, stem))
                continue
            if TABLE[task].gc_value:
                value = _gc_value(location, entry, where, report)
                parsed = None if value is None else TABLE[task].gc_value(value, where, report)
            else:  # an image output: the disc mask
                mask = _gc_mask(location, where, report)
                if mask is not None and not _inside(mask, input_dir, where, report):
                    mask = None
                parsed = None if mask is None else MaskFile(mask, dark=False, label=mask.relative_to(input_dir).as_posix())
            if parsed is None:
                sub.rejected.add((task, stem))
            else:
                found[task][stem] = parsed
    for task in TASKS:
        if task in slugs and any(slugs[task] in {_slug(o) for o in (j.get("outputs") or []) if isinstance(o, dict)}
                                 for j in jobs if isinstance(j, dict)):
            sub.sources[task] = slugs[task]
    sub.predictions = {task: found[task] for task in TASKS if task in sub.sources}
    if not jobs:
        report.error("predictions.json: no algorithm jobs")
    elif not sub.tasks() and not report.errors:
        seen = output_kinds(jobs)
        report.error(f"predictions.json: no Float, Point or Segmentation output (nor one named "
                     f"{', '.join(given.get(t, OUTPUT_SLUGS[t]) for t in TASKS)}); outputs seen: {_seen(seen)}")
    return sub


def output_kinds(jobs: list) -> dict[str, set[str]]:
    """Every output slug of the jobs, with the interface kinds it is given (lower case)."""
    seen: dict[str, set[str]] = {}
    for job in jobs:
        if not isinstance(job, dict):
            continue
        for output in job.get("outputs") or []:
            if not isinstance(output, dict):
                continue
            slug = _slug(output)
            if isinstance(slug, str) and slug:
                kind = interface(output).get("kind")
                seen.setdefault(slug, set()).add(kind.strip().lower() if isinstance(kind, str) else "")
    return seen


def _seen(seen: dict[str, set[str]]) -> str:
    if not seen:
        return "none"
    return ", ".join(f"{slug} ({'/'.join(sorted(k or '?' for k in kinds))})" for slug, kinds in sorted(seen.items()))


def choose_slugs(jobs: list, given: dict[str, str], report: Report) -> dict[str, str] | None:
    """Which output slug holds each task: task -> slug, for the tasks the jobs have.

    A slug given for a task is used (its absence is an error, never a skip). Otherwise the task's
    default slug when the jobs have it, else the one output of the task's interface kind (Float,
    Point, Segmentation, else Image) not already taken, with a warning naming it. Two candidates
    of a kind cannot be told apart: one error naming the slugs seen, and None. A task with no
    output of its kind is absent from the submission (and so not scored), as in a phase without it.
    """
    seen = output_kinds(jobs)
    chosen: dict[str, str] = {}
    for task, slug in given.items():
        if slug not in seen:
            report.error(f"no output {slug!r} for {task} (--{task}-slug); outputs seen: {_seen(seen)}")
            return None
        chosen[task] = slug
    for task in TASKS:
        if task not in chosen and OUTPUT_SLUGS[task] in seen and OUTPUT_SLUGS[task] not in chosen.values():
            chosen[task] = OUTPUT_SLUGS[task]
    taken = set(chosen.values())
    for task in TASKS:
        if task in chosen:
            continue
        for kinds in FORMATS[task].kinds:
            candidates = sorted(s for s, k in seen.items() if s not in taken and k & set(kinds))
            if len(candidates) > 1:
                report.error(f"cannot tell which output is the {task} ({kinds[0].title()}): "
                             f"{', '.join(candidates)}; outputs seen: {_seen(seen)}; "
                             f"name it with --{task}-slug")
                return None
            if candidates:
                chosen[task] = candidates[0]
                taken.add(candidates[0])
                report.warn(f"{task}: output {candidates[0]!r} found by its kind ({kinds[0].title()}); "
                            f"the default slug is {OUTPUT_SLUGS[task]!r}")
                break
    unused = sorted(set(seen) - taken)
    if unused:
        report.warn(f"outputs not scored: {', '.join(unused)}")
    return chosen


def _slug(value: dict) -> str | None:
    return interface(value).get("slug")


def _location(input_dir: Path, pk: str, entry: dict, where: str, report: Report) -> Path | None:
    """Where a job's output lies: ``<input>/<pk>/output/<relative_path>``, never outside it."""
    relative = str(interface(entry).get("relative_path") or "")
    if not stays_below(relative):
        report.error(f"{where}: relative_path {relative!r} leads outside the job's output folder")
        return None
    location = input_dir / pk / "output" / relative
    return location if _inside(location, input_dir, where, report) else None


def _inside(path: Path, input_dir: Path, where: str, report: Report) -> bool:
    """False (reported) for a path that a link leads out of the input folder."""
    if not path.exists():
        return True  # nothing to read: reported where it is needed
    try:
        path.resolve().relative_to(input_dir.resolve())
    except (ValueError, OSError):
        report.error(f"{where}: {path.relative_to(input_dir).as_posix()} leads outside {input_dir} (a link); refused")
        return False
    return True


def _input_name(job: dict) -> str | None:
    for value in job.get("inputs") or []:
        image = value.get("image") if isinstance(value, dict) else None
        if isinstance(image, dict) and image.get("name"):
            return str(image["name"])
    return None


def _gc_value(location: Path, entry: dict, where: str, report: Report):
    if location.is_file():
        try:
            return json.loads(location.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            report.error(f"{where}: {location.name} is not valid JSON ({exc})")
            return None
    if entry.get("value") is not None:
        return entry["value"]
    report.error(f"{where}: no output file {location.name} and no value")
    return None


def _gc_mask(location: Path, where: str, report: Report) -> Path | None:
    if location.is_file():
        return location
    files = sorted(p for p in location.glob("*") if p.suffix.lower() in GC_IMAGE_SUFFIXES) if location.is_dir() else []
    if len(files) != 1:
        report.error(f"{where}: expected one .mha image in the output, found {len(files)}")
        return None
    return files[0]
