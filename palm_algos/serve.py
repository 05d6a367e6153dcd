"""The algorithm containers' one entry point: ``serve.main(task)``, whose ``run`` picks the mode.

The input mode is read off ``/input``:

* **grand-challenge** (``/input/inputs.json`` present): one job, one image. The image is the one
  ``.mha``/``.tif`` file in ``/input/<relative_path>/`` of the input socket (slug
  ``color-fundus-image``). Outputs, by task:
  ``/output/pathologic-myopia-likelihood.json`` (a bare number), ``/output/fovea.json``
  (a grand-challenge Point in the image's world space) or
  ``/output/images/optic-disc-segmentation/output.mha`` (uint8, 1 = disc, geometry of the input).
* **PALM batch** (anything else): every image under ``/input`` (any supported format, nested
  folders included) -> ``Classification_Results.csv`` / ``Fovea_Localization_Results.csv`` /
  ``Disc_Segmentation/*.bmp`` (with ``--png``/``PALM_PNG=1`` also ``png/*.png``) in ``/output``. A bad image is reported and skipped;
  the others are still written, and the exit status is 1. With ``--overlays`` (or
  ``PALM_OVERLAYS=1``; off by default) also ``/output/overlays/<stem>.jpg``, the photograph with
  what the model(s) found; grand-challenge mode never writes them.

``main("all")`` (the ``palm-all`` image) runs every task of ``TASKS`` in one go: one
grand-challenge job writes the three outputs, each to its own socket; batch mode decodes each
image once for all three models and writes all the PALM files (``predict.predict_batch``, the
routine `palm predict` runs too). The checkpoints are then ``<task>.pt`` (one per task) under ``/opt/ml/model`` or
``/opt/app/model``.

The model is the one ``*.pt`` checkpoint under ``/opt/ml/model`` (where grand-challenge
extracts an uploaded model tarball), else under ``/opt/app/model`` (baked into the image).
Slugs and folders can be changed with the environment variables below or the matching options;
``python -m palm_algos.serve TASK --help`` lists them. The images set ``PALM_<TASK>_SLUG`` and
``PALM_INPUT_SLUG`` from build arguments (``./build.sh build --fovea-slug ...``), since
grand-challenge lets no one set environment variables at run time.

Only ``/output`` (and ``/tmp``, by libraries) is written; nothing needs the network.
A failure ends with exit status 1 and a one-line reason as the last line of stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import PalmError, one_line
from .formats import GC_IMAGE_SUFFIXES, INPUT_SLUG, OUTPUT_SLUGS, TASKS, gc_output_file, interface, stays_below
from .writers import OUTPUTS, prepare_output

INPUT = Path("/input")
OUTPUT = Path("/output")
MODEL_DIRS = (Path("/opt/ml/model"), Path("/opt/app/model"))
ALL = "all"  # the palm-all image: every task of TASKS in one run

# Environment variables (options of the same meaning win over them; an empty one is unset).
ENV_INPUT, ENV_OUTPUT, ENV_MODEL = "PALM_INPUT", "PALM_OUTPUT", "PALM_MODEL"
ENV_INPUT_SLUG, ENV_OUTPUT_SLUG = "PALM_INPUT_SLUG", "PALM_OUTPUT_SLUG"
ENV_OVERLAYS = "PALM_OVERLAYS"  # batch mode: 1/true/yes/on also writes /output/overlays/*.jpg
ENV_PNG = "PALM_PNG"  # batch mode: 1/true/yes/on also writes Disc_Segmentation/png/*.png
ENV_TASK_SLUGS = {task: f"PALM_{task.upper()}_SLUG" for task in OUTPUT_SLUGS}  # baked in at build time
SLUG_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")  # grand-challenge slugs; also a safe file name


class ServeError(PalmError):
    """A problem with the container's input, model or setup (one line, shown as it is)."""


# -- model -----------------------------------------------------------------------------------------


def find_checkpoint(task: str, model: Path | None = None, search: tuple[Path, ...] = MODEL_DIRS,
                    named: bool = False) -> Path:
    """The checkpoint to use: ``model`` (a file, or a folder to search), else the first folder
    of ``search`` that holds one. A folder must hold exactly one ``*.pt`` (or one ``<task>.pt``).

    ``named`` (palm-all, whose folders hold a checkpoint per task): only ``<task>.pt`` counts.
    """
    if model is not None:
        model = Path(model)
        if model.is_file():
            if named:
                raise ServeError(f"{model}: palm-all needs a model folder holding {', '.join(f'{t}.pt' for t in OUTPUT_SLUGS)}")
            return model
        if not model.is_dir():
            raise ServeError(f"{model}: no such model file or folder")
        search = (model,)
    for folder in search:
        if not folder.is_dir():
            continue
        found = sorted(p for p in folder.rglob("*.pt") if p.is_file() and not p.name.startswith("."))
        if named:
            found = [p for p in found if p.name == f"{task}.pt"]
            if len(found) > 1:
                shown = ", ".join(str(p.relative_to(folder)) for p in found[:5])
                raise ServeError(f"{folder}: {len(found)} {task}.pt checkpoints ({shown}); keep one")
        if len(found) == 1:
            return found[0]
        by_name = [p for p in found if p.name == f"{task}.pt"]
        if len(by_name) == 1:
            return by_name[0]
        if found:
            shown = ", ".join(str(p.relative_to(folder)) for p in found[:5])
            raise ServeError(f"{folder}: {len(found)} checkpoints ({shown}); keep one, or name it {task}.pt")
    where = " or ".join(str(f) for f in search)
    raise ServeError(
        f"no {task} model: expected {f'{task}.pt' if named else 'one *.pt checkpoint'} in {where} "
        f"(mount a folder at /opt/ml/model, upload a model tarball on grand-challenge, "
        f"or bake models/{task}.pt in with ./build.sh build)"
    )


# -- input modes -------------------------------------------------------------------------------------


def detect_mode(input_dir: Path) -> str:
    """``"grand-challenge"`` when ``inputs.json`` is present, else ``"palm"`` (batch)."""
    return "grand-challenge" if (Path(input_dir) / "inputs.json").is_file() else "palm"


def inside(root: Path, relative: str, what: str = "relative_path") -> Path:
    """``root / relative``, refused when ``relative`` is absolute, climbs with ``..`` or
    resolves (through links) outside ``root``."""
    text = str(relative)
    if not text.strip() or not stays_below(text):
        raise ServeError(f"inputs.json: {what} {text!r} is not a path inside {root}")
    path = Path(root) / PurePosixPath(text.replace("\\", "/"))
    try:
        path.resolve().relative_to(Path(root).resolve())
    except ValueError:
        raise ServeError(f"inputs.json: {what} {text!r} leads outside {root}") from None
    return path


def read_inputs_json(input_dir: Path) -> list[dict]:
    path = Path(input_dir) / "inputs.json"
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ServeError(f"{path}: not readable JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
        raise ServeError(f"{path}: expected a list of socket values")
    return values


def gc_input_image(input_dir: Path, slug: str = INPUT_SLUG) -> Path:
    """The input image of a grand-challenge job: the one .mha/.tif file of socket ``slug``."""
    input_dir = Path(input_dir)
    values = read_inputs_json(input_dir)
    matches = [v for v in values if interface(v).get("slug") == slug]
    if not matches:
        slugs = sorted({str(interface(v).get("slug")) for v in values})
        raise ServeError(
            f"inputs.json: no input {slug!r} (found: {', '.join(slugs) or 'none'}); "
            f"set {ENV_INPUT_SLUG} to the input's slug"
        )
    if len(matches) > 1:
        raise ServeError(f"inputs.json: {len(matches)} values for the input {slug!r}; a job predicts one image")
    relative = interface(matches[0]).get("relative_path") or f"images/{slug}"
    folder = inside(input_dir, relative)
    if not folder.is_dir():
        raise ServeError(f"{folder}: input folder of {slug!r} not found")
    images = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in GC_IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if len(images) != 1:
        listed = ", ".join(p.name for p in images[:5]) or "none"
        raise ServeError(f"{folder}: expected one {'/'.join(GC_IMAGE_SUFFIXES)} image, found {len(images)} ({listed})")
    inside(input_dir, str(images[0].relative_to(input_dir)), "image")  # no link out of /input
    return images[0]


def gc_output_path(task: str, output_dir: Path, slug: str) -> Path:
    """Where grand-challenge expects the output of ``task`` for socket ``slug``."""
    return Path(output_dir) / gc_output_file(task, slug)


def run_gc(predictor: Any, input_dir: Path, output_dir: Path, input_slug: str, output_slug: str,
           disc: tuple[float, float] | None = None) -> tuple[Path, Any, tuple[float, float] | None]:
    """One grand-challenge job: predict the input image and write the output socket's file;
    (that file, the prediction, where the model put the optic disc). ``disc``: where an earlier
    model of the job put it (``Predictor.predict_with_disc``)."""
    image = gc_input_image(input_dir, input_slug)
    try:
        value, disc = predictor.predict_with_disc(image, disc=disc)
    except PalmError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line for the job's log, as in batch mode
        raise ServeError(f"{image}: unexpected error ({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    target = gc_output_path(predictor.task, output_dir, output_slug)
    OUTPUTS[predictor.task].gc(value, image, target, output_slug)
    return target, value, disc


# -- entry point -----------------------------------------------------------------------------------


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def default_output_slug(task: str) -> str:
    """PALM_OUTPUT_SLUG (a one-task image), else PALM_<TASK>_SLUG (set at build time), else the default."""
    return _env(ENV_OUTPUT_SLUG) or _env(ENV_TASK_SLUGS[task]) or OUTPUT_SLUGS[task]


def task_list(task: str) -> tuple[str, ...]:
    return tuple(TASKS) if task == ALL else (task,)


def parse_args(task: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"palm-{task}",
        description=(f"PALM {task} algorithm container" if task != ALL else
                     f"PALM algorithm container for all tasks ({', '.join(TASKS)})") + " (see palm_algos/serve.py).",
    )
    parser.add_argument("--input", type=Path, default=Path(_env(ENV_INPUT) or INPUT), help=f"input folder [{ENV_INPUT}, {INPUT}]")
    parser.add_argument("--output", type=Path, default=Path(_env(ENV_OUTPUT) or OUTPUT), help=f"output folder [{ENV_OUTPUT}, {OUTPUT}]")
    parser.add_argument("--model", type=Path, default=Path(_env(ENV_MODEL)) if _env(ENV_MODEL) else None,
                        help=f"checkpoint file or folder [{ENV_MODEL}; default: {', '.join(map(str, MODEL_DIRS))}]")
    parser.add_argument("--input-slug", default=_env(ENV_INPUT_SLUG) or INPUT_SLUG, help=f"grand-challenge input slug [{ENV_INPUT_SLUG}]")
    if task == ALL:
        for each in TASKS:
            parser.add_argument(f"--{each}-slug", default=_env(ENV_TASK_SLUGS[each]) or OUTPUT_SLUGS[each],
                                help=f"grand-challenge output slug of {each} [{ENV_TASK_SLUGS[each]}, {OUTPUT_SLUGS[each]}]")
    else:
        parser.add_argument("--output-slug", default=default_output_slug(task),
                            help=f"grand-challenge output slug [{ENV_OUTPUT_SLUG}, {ENV_TASK_SLUGS[task]}, {OUTPUT_SLUGS[task]}]")
    parser.add_argument("--png", action=argparse.BooleanOptionalAction,
                        default=(_env(ENV_PNG) or "").lower() in ("1", "true", "yes", "on"),
                        help=f"batch mode: also write Disc_Segmentation/png/<image>.png beside each BMP (PALM reads the "
                             f"BMP, grand-challenge the .mha socket: neither needs it) [{ENV_PNG}=1; default off]")
    parser.add_argument("--overlays", action=argparse.BooleanOptionalAction,
                        default=(_env(ENV_OVERLAYS) or "").lower() in ("1", "true", "yes", "on"),
                        help=f"batch mode: also write overlays/<image>.jpg, the photograph with what the models "
                             f"found (never in grand-challenge mode) [{ENV_OVERLAYS}=1; default off]")
    args = parser.parse_args(argv)
    args.slugs = ({each: getattr(args, f"{each}_slug") for each in TASKS} if task == ALL
                  else {task: args.output_slug})
    return args


def check_slugs(input_slug: str, slugs: dict[str, str]) -> None:
    """Slugs become file and folder names under /output: letters, digits, - and _ only, one per output."""
    for what, slug in [("input", input_slug), *slugs.items()]:
        if not SLUG_PATTERN.fullmatch(slug):
            raise ServeError(f"{what} slug {slug!r}: use letters, digits, '-' and '_' only")
    if len(set(slugs.values())) < len(slugs):
        raise ServeError(f"output slugs must differ: {', '.join(f'{t}={s}' for t, s in slugs.items())}")


def load_predictor(task: str, checkpoint: Path):
    from .predict import Predictor

    return Predictor.load(checkpoint, task=task)


def guide_beside(task: str, checkpoint: Path) -> Path | None:
    """A one-task image's second opinion, where its task takes a guide (``Task.guide_task``):
    ``<guide task>.pt`` in its checkpoint's folder. palm-disc's is fovea.pt, the joint disc +
    fovea model that ./build.sh build bakes in beside disc.pt (or one uploaded with it), whose
    disc centre aims the refining window as in palm-all (``Predictor.guided_by``). Else None."""
    from .tasks import get_task

    guide_task = get_task(task).guide_task
    if guide_task is None:
        return None
    guide = Path(checkpoint).parent / f"{guide_task}.pt"
    return guide if guide.is_file() and guide != Path(checkpoint) else None


def guided(load, guide: Path, warn):
    """``load`` with the model ``guide`` (``guide_beside``) as the guide of the task it aims. A
    guide that cannot guide (no disc head, unreadable) is only ``warn``-ed of: the model then
    works alone."""
    from .tasks import get_task

    def load_guided(task: str, checkpoint: Path):
        predictor = load(task, checkpoint)
        try:
            return predictor.guided_by(load(get_task(task).guide_task, guide))
        except PalmError as exc:
            warn(f"{exc}; the {task} model places its refining window alone")
            return predictor

    return load_guided


class _Log:
    """The container's lines: what it does on stdout, problems on stderr, each as ``palm-<task>: ...``."""

    def __init__(self, task: str):
        self.name, self.task, self.start = f"palm-{task}", task, time.monotonic()

    def say(self, line: str) -> None:
        print(one_line(f"{self.name}: {line}"), flush=True)

    def warn(self, line: str) -> None:
        print(one_line(f"{self.name}: {line}"), file=sys.stderr, flush=True)

    def elapsed(self) -> str:
        return f"in {time.monotonic() - self.start:.1f} s"


def main(task: str, argv: list[str] | None = None, load=load_predictor) -> int:
    """Run the container for ``task`` (or ``"all"``: every task of TASKS); returns the exit
    status (0, or 1 with a one-line reason as the last line of stderr)."""
    if task not in TASKS and task != ALL:
        raise ValueError(f"unknown task {task!r}")
    args, log = parse_args(task, argv), _Log(task)
    try:
        return run(task, args, load, log)
    except PalmError as exc:
        log.warn(f"error: {exc}")
    except OSError as exc:  # e.g. /output not writable, disk full
        log.warn(f"error: {f'{exc.filename}: ' if exc.filename else ''}{exc.strerror or exc}")
    return 1


def run(task: str, args: argparse.Namespace, load, log: _Log) -> int:
    """Pick the mode off the input folder, as grand-challenge-forge's template picks its handler."""
    if not args.input.is_dir():
        raise ServeError(f"{args.input}: input folder not found" if not args.input.exists()
                         else f"{args.input}: input is not a folder")
    mode = detect_mode(args.input)
    log.say(f"{mode} mode, input {args.input}, output {args.output}")
    if mode == "grand-challenge":
        check_slugs(args.input_slug, args.slugs)
    prepare_output(args.output)  # before the model and the images: nothing computed is lost
    checkpoints = {each: find_checkpoint(each, args.model, named=task == ALL) for each in task_list(task)}  # all found first
    if task != ALL and (guide := guide_beside(task, checkpoints[task])):
        load = guided(load, guide, log.warn)
    return (run_gc_job if mode == "grand-challenge" else run_batch)(task, args, checkpoints, load, log)


def run_gc_job(task: str, args: argparse.Namespace, checkpoints: dict[str, Path], load, log: _Log) -> int:
    """One grand-challenge job: each task predicts the one input image and writes its socket;
    palm-all goes on past a task that fails (exit status 1)."""
    failed, disc = [], None  # disc: the joint fovea model's disc centre, which the disc model heeds
    for each, checkpoint in checkpoints.items():
        tagged = (lambda line: f"{each}: {line}") if task == ALL else (lambda line: line)
        try:
            predictor = load(each, checkpoint)
            log.say(predictor.describe() if hasattr(predictor, "describe") else tagged(f"model {checkpoint}"))
            target, value, found = run_gc(predictor, args.input, args.output, args.input_slug, args.slugs[each], disc)
            disc = found or disc
            log.say(tagged(f"{OUTPUTS[each].describe(value)}; wrote {target} {log.elapsed()}"))
            del predictor
        except PalmError as exc:
            if task != ALL:
                raise
            log.warn(f"error: {each}: {exc}")  # the other tasks still run; the exit status is 1
            failed.append(each)
    if failed:
        log.warn(f"error: {', '.join(failed)} failed (see above); wrote the other outputs {log.elapsed()}")
        return 1
    return 0


def run_batch(task: str, args: argparse.Namespace, checkpoints: dict[str, Path], load, log: _Log) -> int:
    """PALM batch mode: every image under the input folder, every task in one pass."""
    from .predict import predict_batch

    batch = predict_batch(checkpoints, args.input, args.output, load, say=log.say, warn=log.warn,
                          overlays=args.overlays, keep_going=task == ALL, progress=sys.stderr.isatty(), png=args.png)
    runs = batch.runs
    if task == ALL:
        counts = ", ".join(f"{each} {run.predicted} of {run.found}" for each, run in runs.items())
    else:
        counts = f"{runs[task].predicted} of {runs[task].found}"
    summary = f"{counts} images predicted {log.elapsed()}, outputs in {args.output}"
    if batch.overlays:
        summary += f" (overlays in {batch.overlays})"
    skipped = next(iter(runs.values())).skipped if runs else []
    if skipped:
        summary += f"; {len(skipped)} other file(s) skipped"
    problems = sum(len(run.problems) for run in runs.values())
    parts = ([f"{problems} failed (listed above)"] if problems else []) + \
            ([f"{', '.join(batch.failed)} not run (see above)"] if batch.failed else [])
    log.warn("; ".join([summary, *parts]))
    return 1 if parts else 0


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in (*TASKS, ALL):
        print(f"usage: python -m palm_algos.serve {{{','.join((*TASKS, ALL))}}} [options]", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1], sys.argv[2:]))
