"""Imitate grand-challenge around the containers: job inputs in, predictions.json out.

    python containers/test/gc_jobs.py prepare IMAGES_OR_EXAMPLE JOBS [--limit N] [--truth DIR]
        one job folder per image: JOBS/<pk>/input/{inputs.json, images/color-fundus-image/<uuid>.mha}
        and an empty JOBS/<pk>/output/ for an algorithm container to fill; with --truth, the
        ground truth of just those images (PALM layout) for the evaluation container
    python containers/test/gc_jobs.py collect JOBS OUT [--slug TASK=SLUG ...]
        OUT/predictions.json + OUT/<pk>/output/...: what grand-challenge hands the evaluation
        container at /input after the algorithm jobs ran (each output with its slug and its
        interface kind: Float, Point, Segmentation)

Used by ./build.sh demo, tests/test_containers.py and the dry run of a phase without Docker
(docs/CONTAINERS.md). Host side only (numpy, SimpleITK, palm).
"""

from __future__ import annotations

import argparse
import json
import shutil
import uuid
from pathlib import Path

from palm_algos.cases import list_images
from palm_algos.imageio import read_image, write_mha_image, write_palm_mask
from palm_algos.formats import FORMATS, INPUT_SLUG, OUTPUT_SLUGS, gc_output_file, gc_relative_path


def input_value(name: str, slug: str = INPUT_SLUG) -> dict:
    return {
        "pk": 1,
        "interface": {"slug": slug, "kind": "Image", "super_kind": "Image", "relative_path": f"images/{slug}"},
        "image": {"pk": str(uuid.uuid4()), "name": name},
        "file": None,
        "value": None,
    }


def prepare(source: Path, jobs: Path, limit: int | None = None, truth: Path | None = None,
            input_slug: str = INPUT_SLUG) -> list[Path]:
    """One grand-challenge job folder per image of ``source`` (images are stored as MHA, as
    grand-challenge converts uploads)."""
    folder = source / "images" if (source / "images").is_dir() else source
    images, _ = list_images(folder)
    if limit is not None and limit < len(images):  # spread over the sorted names: H, N and P
        images = [images[round(i * (len(images) - 1) / max(limit - 1, 1))] for i in range(limit)]
    if truth is not None:
        write_truth(source, images, truth)
    made = []
    for index, image in enumerate(images):
        job = jobs / f"job-{index:04d}"
        rgb, _ = read_image(image)
        write_mha_image(rgb, job / "input" / "images" / input_slug / f"{uuid.uuid4()}.mha")
        (job / "input" / "inputs.json").write_text(json.dumps([input_value(image.name, input_slug)], indent=2))
        (job / "output").mkdir(parents=True, exist_ok=True)
        (job / "output").chmod(0o777)  # the container's non-root user writes here
        made.append(job)
    return made


def write_truth(source: Path, images: list[Path], out: Path) -> Path:
    """The ground truth of ``images`` alone, in the PALM layout (images/, labels.csv, Disc_Masks/):
    from any layout palm reads, disc masks included (a Drishti-GS1 soft map or a DRIONS mask
    becomes the PALM BMP, 0 = disc)."""
    from palm_algos.cases import read_cases

    cases = read_cases(source).by_name()
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = ["imgName,Label,Fovea_X,Fovea_Y"]
    for image in images:
        case = cases[image.stem]
        shutil.copy2(image, out / "images" / image.name)
        x, y = case.fovea if case.fovea else (0.0, 0.0)
        rows.append(f"{image.name},{'' if case.label is None else case.label},{x},{y}")
        if case.disc_mask is not None:
            write_palm_mask(case.read_disc(), out / "Disc_Masks" / f"{image.stem}.bmp")
    (out / "labels.csv").write_text("\n".join(rows) + "\n")
    return out


def collect(jobs: Path, out: Path, slugs: dict[str, str] | None = None) -> Path:
    """predictions.json for the evaluation container, and each job's outputs beside it.

    ``slugs`` (task -> slug) overrides the default output slugs, as a phase's interfaces do.
    """
    slugs = {**OUTPUT_SLUGS, **(slugs or {})}
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for job in sorted(p for p in jobs.iterdir() if (p / "input" / "inputs.json").is_file()):
        pk = job.name
        outputs = []
        for task, slug in slugs.items():
            if (job / "output" / gc_output_file(task, slug)).is_file():
                relative = gc_relative_path(task, slug)
                outputs.append({"interface": {"slug": slug, "kind": FORMATS[task].kind, "relative_path": relative},
                                "value": None, "file": None, "image": None})
        records.append({
            "pk": pk,
            "status": "Succeeded",
            "inputs": json.loads((job / "input" / "inputs.json").read_text()),
            "outputs": outputs,
        })
        if (out / pk).exists():
            shutil.rmtree(out / pk)
        shutil.copytree(job / "output", out / pk / "output")
    path = out / "predictions.json"
    path.write_text(json.dumps(records, indent=2))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("source", type=Path)
    p.add_argument("jobs", type=Path)
    p.add_argument("--limit", type=int)
    p.add_argument("--truth", type=Path, help="write the ground truth of the chosen images here")
    p.add_argument("--input-slug", default=INPUT_SLUG)
    c = sub.add_parser("collect")
    c.add_argument("jobs", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--slug", action="append", default=[], metavar="TASK=SLUG", help="an output slug other than the default")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        print(f"{len(prepare(args.source, args.jobs, args.limit, args.truth, args.input_slug))} jobs in {args.jobs}")
    else:
        slugs = dict(item.split("=", 1) for item in args.slug)
        unknown = sorted(set(slugs) - set(OUTPUT_SLUGS))
        if unknown:
            parser.error(f"--slug: unknown task {unknown[0]!r} (one of {', '.join(OUTPUT_SLUGS)})")
        print(collect(args.jobs, args.out, slugs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
