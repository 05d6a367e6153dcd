"""The algorithm containers' one entry point: ``serve.main(task)``.

The input mode is read off ``/input``:

* **grand-challenge** (``/input/inputs.json`` present): one job, one image. The image is the one
  ``.mha``/``.tif`` file in ``/input/<relative_path>/`` of the input socket (slug
  ``color-fundus-image``). Outputs, by task:
  ``/output/pathologic-myopia-likelihood.json`` (a bare number), ``/output/fovea.json``
  (a grand-challenge Point in the image's world space) or
  ``/output/images/optic-disc-segmentation/output.mha`` (uint8, 1 = disc, geometry of the input).
* **PALM batch** (anything else): every image under ``/input`` (any supported format, nested
  folders included) -> ``Classification_Results.csv`` / ``Fovea_Localization_Results.csv`` /
  ``Disc_Segmentation/*.bmp`` (+ ``png/``) in ``/output``. A bad image is reported and skipped;
  the others are still written, and the exit status is 1.

The model is the one ``*.pt`` checkpoint under ``/opt/ml/model`` (where grand-challenge
extracts an uploaded model tarball), else under ``/opt/app/model`` (baked into the image).
Slugs and folders can be changed with the environment variables below or the matching options;
``python -m palm_algos.serve TASK --help`` lists them.

Only ``/output`` (and ``/tmp``, by libraries) is written; nothing needs the network.
A failure ends with exit status 1 and a one-line reason as the last line of stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

from .cli import TASKS
from .errors import PalmError, one_line
from .writers import prepare_output

INPUT = Path("/input")
OUTPUT = Path("/output")
MODEL_DIRS = (Path("/opt/ml/model"), Path("/opt/app/model"))
INPUT_SLUG = "color-fundus-image"
OUTPUT_SLUGS = {
    "classification": "pathologic-myopia-likelihood",
    "fovea": "fovea",
    "disc": "optic-disc-segmentation",
}
GC_IMAGE_SUFFIXES = (".mha", ".tif", ".tiff")

# Environment variables (options of the same meaning win over them).
ENV_INPUT, ENV_OUTPUT, ENV_MODEL = "PALM_INPUT", "PALM_OUTPUT", "PALM_MODEL"
ENV_INPUT_SLUG, ENV_OUTPUT_SLUG = "PALM_INPUT_SLUG", "PALM_OUTPUT_SLUG"


class ServeError(PalmError):
    """A problem with the container's input, model or setup (one line, shown as it is)."""


# -- model -----------------------------------------------------------------------------------------


def find_checkpoint(task: str, model: Path | None = None, search: tuple[Path, ...] = MODEL_DIRS) -> Path:
    """The checkpoint to use: ``model`` (a file, or a folder to search), else the first folder
    of ``search`` that holds one. A folder must hold exactly one ``*.pt`` (or one ``<task>.pt``)."""
    if model is not None:
        model = Path(model)
        if model.is_file():
            return model
        if not model.is_dir():
            raise ServeError(f"{model}: no such model file or folder")
        search = (model,)
    for folder in search:
        if not folder.is_dir():
            continue
        found = sorted(p for p in folder.rglob("*.pt") if p.is_file() and not p.name.startswith("."))
        if len(found) == 1:
            return found[0]
        named = [p for p in found if p.name == f"{task}.pt"]
        if len(named) == 1:
            return named[0]
        if found:
            shown = ", ".join(str(p.relative_to(folder)) for p in found[:5])
            raise ServeError(f"{folder}: {len(found)} checkpoints ({shown}); keep one, or name it {task}.pt")
    where = " or ".join(str(f) for f in search)
    raise ServeError(
        f"no {task} model: expected one *.pt checkpoint in {where} "
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
    rel = PurePosixPath(text.replace("\\", "/"))
    if not text.strip() or rel.is_absolute() or ".." in rel.parts:
        raise ServeError(f"inputs.json: {what} {text!r} is not a path inside {root}")
    path = Path(root) / rel
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


def _interface(value: dict) -> dict:
    found = value.get("interface") or value.get("socket") or {}  # newer exports say "socket"
    return found if isinstance(found, dict) else {}


def gc_input_image(input_dir: Path, slug: str = INPUT_SLUG) -> Path:
    """The input image of a grand-challenge job: the one .mha/.tif file of socket ``slug``."""
    input_dir = Path(input_dir)
    values = read_inputs_json(input_dir)
    matches = [v for v in values if _interface(v).get("slug") == slug]
    if not matches:
        slugs = sorted({str(_interface(v).get("slug")) for v in values})
        raise ServeError(
            f"inputs.json: no input {slug!r} (found: {', '.join(slugs) or 'none'}); "
            f"set {ENV_INPUT_SLUG} to the input's slug"
        )
    relative = _interface(matches[0]).get("relative_path") or f"images/{slug}"
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
    if task == "disc":
        return Path(output_dir) / "images" / slug / "output.mha"
    return Path(output_dir) / f"{slug}.json"


def run_gc(predictor: Any, input_dir: Path, output_dir: Path, input_slug: str, output_slug: str) -> tuple[Path, Any]:
    """One grand-challenge job: predict the input image and write the output socket's file."""
    from .writers import write_gc_float, write_gc_mask, write_gc_point

    image = gc_input_image(input_dir, input_slug)
    try:
        value = predictor.predict(image)
    except PalmError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line for the job's log, as in batch mode
        raise ServeError(f"{image}: unexpected error ({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    target = gc_output_path(predictor.task, output_dir, output_slug)
    if predictor.task == "classification":
        write_gc_float(value, target)
    elif predictor.task == "fovea":
        write_gc_point(value, image, target, name=output_slug)
    else:
        write_gc_mask(value, image, target)
    return target, value


def _describe(task: str, value: Any) -> str:
    if task == "classification":
        return f"PM likelihood {value:.4f}"
    if task == "fovea":
        return f"fovea at ({value[0]:.1f}, {value[1]:.1f}) px"
    return f"disc of {int(value.sum())} px"


# -- entry point -----------------------------------------------------------------------------------


def parse_args(task: str, argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog=f"palm-{task}", description=f"PALM {task} algorithm container (see palm_algos/serve.py)."
    )
    parser.add_argument("--input", type=Path, default=Path(env.get(ENV_INPUT, INPUT)), help=f"input folder [{ENV_INPUT}, {INPUT}]")
    parser.add_argument("--output", type=Path, default=Path(env.get(ENV_OUTPUT, OUTPUT)), help=f"output folder [{ENV_OUTPUT}, {OUTPUT}]")
    parser.add_argument("--model", type=Path, default=Path(env[ENV_MODEL]) if env.get(ENV_MODEL) else None,
                        help=f"checkpoint file or folder [{ENV_MODEL}; default: {', '.join(map(str, MODEL_DIRS))}]")
    parser.add_argument("--input-slug", default=env.get(ENV_INPUT_SLUG, INPUT_SLUG), help=f"grand-challenge input slug [{ENV_INPUT_SLUG}]")
    parser.add_argument("--output-slug", default=env.get(ENV_OUTPUT_SLUG, OUTPUT_SLUGS[task]), help=f"grand-challenge output slug [{ENV_OUTPUT_SLUG}]")
    return parser.parse_args(argv)


def load_predictor(task: str, checkpoint: Path):
    from .predict import Predictor

    return Predictor.load(checkpoint, task=task)


def main(task: str, argv: list[str] | None = None, load=load_predictor) -> int:
    """Run the container for ``task``; returns the exit status (0, or 1 with a reason on stderr)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    args = parse_args(task, argv)
    name = f"palm-{task}"
    start = time.monotonic()

    def say(line: str) -> None:
        print(f"{name}: {one_line(line)}", file=sys.stderr, flush=True)

    try:
        if not args.input.is_dir():
            raise ServeError(f"{args.input}: input folder not found" if not args.input.exists()
                             else f"{args.input}: input is not a folder")
        mode = detect_mode(args.input)
        print(one_line(f"{name}: {mode} mode, input {args.input}, output {args.output}"), flush=True)
        prepare_output(args.output)  # before the model and the images: nothing computed is lost
        checkpoint = find_checkpoint(task, args.model)
        predictor = load(task, checkpoint)
        meta = getattr(predictor, "meta", {}) or {}
        details = ", ".join(f"{k} {meta[k]}" for k in ("arch", "input_size", "palm_version") if k in meta)
        print(one_line(f"{name}: model {checkpoint}" + (f" ({details})" if details else "")), flush=True)
        if mode == "grand-challenge":
            target, value = run_gc(predictor, args.input, args.output, args.input_slug, args.output_slug)
            print(one_line(f"{name}: {_describe(task, value)}; wrote {target} in {time.monotonic() - start:.1f} s"), flush=True)
            return 0
        from .predict import predict_folder

        found, predicted, problems, skipped = predict_folder(predictor, args.input, args.output,
                                                              progress=sys.stderr.isatty())
    except PalmError as exc:
        say(f"error: {exc}")
        return 1
    except OSError as exc:  # e.g. /output not writable, disk full
        where = f"{exc.filename}: " if exc.filename else ""
        say(f"error: {where}{exc.strerror or exc}")
        return 1
    for line in problems:
        say(f"failed: {line}")
    for line in skipped:
        say(line)
    summary = f"{predicted} of {found} images predicted in {time.monotonic() - start:.1f} s, outputs in {args.output}"
    if skipped:
        summary += f"; {len(skipped)} other file(s) skipped"
    if problems:
        say(f"{summary}; {len(problems)} failed (listed above)")
        return 1
    say(summary)
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        print(f"usage: python -m palm_algos.serve {{{','.join(TASKS)}}} [options]", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1], sys.argv[2:]))
