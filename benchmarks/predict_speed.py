"""Prediction throughput against its limits: `palm predict`'s pipeline end to end, the bare
batched forward pass, and the decoding limit, per task and for all tasks in one pass.

All are measured in this one run on the same full-resolution synthetic JPEGs, for each task
at its final recipe (palm_algos/recipes.toml's final-TASK, which train_final.sh trains:
architecture, input size, zoom, and the seed ensemble's members; weights do not change the cost, so untrained checkpoints are
used; TTA: the task's default). Columns:

* end to end: ``predict_tasks`` (model loading excluded): decoding the files, resizing, every
  network pass, decoding to original pixels, writing the PALM files;
* bare: the wrapped network (ensemble, flip TTA) on a ready batch on the device, times the
  passes the pipeline ran per image (two with the refining pass);
* decoding: the same images through the same worker pool (``predict.image_batches``, the same
  batch size and workers, ``--decode`` as given), with no network;
* limit: what end to end could reach. On a GPU the network and the decoding overlap: the
  slower of the two. On the CPU they share the cores: an image costs its decode plus its
  forward pass. ratio = end to end / limit; target >= 0.8.

The all-tasks row runs the three models in one pass (each image decoded once). Records are
stamped with date, commit, torch version, device and cores.

``--memory 100,1000`` also runs the pipeline on that many small images, each count in a fresh
process, and reports the peak resident memory: it must not grow with the number of images.

    python benchmarks/predict_speed.py [--images 32] [--batch-size 8] [--workers N] [--decode cpu|gpu] [--memory 100,1000] [--out docs/results/speed.json]
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch
from PIL import Image

from palm_algos.checkpoint import combine_checkpoints, save_checkpoint
from palm_algos.formats import TASKS
from palm_algos.predict import BATCH_SIZE, DECODERS, Predictor, default_workers, image_batches, predict_folder, predict_tasks
from palm_algos.recipes import recipe
from palm_algos.synth import synth_case
from palm_algos.tasks import IMAGENET_MEAN, IMAGENET_STD, get_task
from stamp import stamp

FULL = (2124, 2056)


def final_recipes() -> dict[str, tuple[str, int, int, int, dict]]:
    """task -> (arch, input size, zoom, ensemble members, the input's geometry and colour) of the
    final recipes (palm_algos/recipes.toml's final-TASK, which benchmarks/train_final.sh trains)."""
    found = {}
    for task in TASKS:
        chosen = recipe(f"final-{task}")
        found[task] = (chosen.get("arch", get_task(task).default_arch), int(chosen["input-size"]),
                       int(chosen.get("zoom", 1)), int(chosen.get("seeds", 1)),
                       {key: chosen[key] for key in ("geometry", "colour") if key in chosen})
    return found


MEMORY_RECIPE = ("disc", "resnet34-aspp-unet", 64, 2, 1)  # the memory check: small, and full-size masks to write
MEMORY_IMAGE = (256, 256)


def make_images(folder: Path, size: tuple[int, int], count: int, unique: int | None = None) -> None:
    """``count`` synthetic JPEGs; with ``unique``, copies of that many (the costs are the same)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"V{i + 1:04d}.jpg"
        if unique and i >= unique:
            shutil.copyfile(folder / f"V{i % unique + 1:04d}.jpg", path)
        else:
            Image.fromarray(synth_case(i + 1, size).image).save(path, quality=95)


def make_checkpoint(path: Path, task: str, input_size: int, zoom: int, arch: str | None = None,
                    members: int = 1, view: dict | None = None) -> Path:
    """An untrained checkpoint; ``members`` > 1: an ensemble of that many; ``view``: the
    input's geometry and colour, as a recipe sets them."""
    t = get_task(task)
    arch = arch or t.default_arch
    meta = {"task": task, "arch": arch, "input_size": input_size, "zoom": zoom,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), **(view or {})}
    if members == 1:
        model = t.build_model(arch, "none")
        if zoom > 1:  # an untrained disc model finds no disc, and a pass that finds nothing is not refined
            last = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))][-1]
            with torch.no_grad():
                last.bias[-1] += 10  # the last class (the disc) everywhere: the refining pass always runs
        save_checkpoint(path, model.state_dict(), meta)
        return path
    parts = [make_checkpoint(path.with_suffix(f".m{i}.pt"), task, input_size, zoom, arch, view=view)
             for i in range(members)]
    combine_checkpoints(parts, path)
    return path


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decoding_seconds_per_image(predictors: list[Predictor], folder: Path, batch_size: int, workers: int,
                               decode: str) -> float:
    """The decoding limit: the run's images through the pipeline's own decoding side, no network."""
    paths = sorted(folder.iterdir())
    todo = [(i, p, tuple(range(len(predictors)))) for i, p in enumerate(paths)]
    started = time.perf_counter()
    for _ in image_batches(predictors, todo, batch_size, workers, decode, say=lambda line: None):
        pass
    synchronise(predictors[0].device)
    return (time.perf_counter() - started) / len(paths)


@torch.inference_mode()
def bare_seconds_per_image(predictor: Predictor, batch_size: int, batches: int) -> float:
    """The wrapped network alone on a ready, normalised batch on the device, as Predictor.forward runs it."""
    x = torch.randn(batch_size, 3, predictor.input_size, predictor.input_size, device=predictor.device)
    if predictor.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)

    def run():
        with torch.autocast(predictor.device.type, enabled=predictor.device.type == "cuda"):
            predictor.model(x)

    run()  # warm-up
    synchronise(predictor.device)
    started = time.perf_counter()
    for _ in range(batches):
        run()
    synchronise(predictor.device)
    return (time.perf_counter() - started) / (batches * batch_size)


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its largest child (a DataLoader worker), MB."""
    self_kb = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmHWM:")) if Path("/proc/self/status").is_file() \
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"main": self_kb / 1024, "largest_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def memory_run(count: int, batch_size: int, workers: int | None) -> dict:
    """In this (fresh) process: ``count`` small images through the pipeline; its peak memory."""
    task, arch, input_size, zoom, members = MEMORY_RECIPE
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_images(tmp / "in", MEMORY_IMAGE, count, unique=10)
        predictor = Predictor.load(make_checkpoint(tmp / "m.pt", task, input_size, zoom, arch, members))
        started = time.perf_counter()
        run = predict_folder(predictor, tmp / "in", tmp / "out", progress=False, batch_size=batch_size, workers=workers)
        seconds = time.perf_counter() - started
        assert run.predicted == count and not run.problems, run.problems
    return {"images": count, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def limit_of(bare: float, decoding: float, device: str) -> float:
    """Seconds per image the pipeline could reach: overlapped on a GPU, added on the CPU."""
    return max(bare, decoding) if device == "cuda" else bare + decoding


@click.command()
@click.option("--images", default=32, show_default=True, help="Full-resolution images.")
@click.option("--tasks", default="classification,fovea,disc", show_default=True)
@click.option("--batch-size", default=BATCH_SIZE, show_default=True)
@click.option("--workers", default=None, type=int, help="Decoding processes (default: predict's default).")
@click.option("--decode", type=click.Choice(DECODERS), default="cpu", show_default=True)
@click.option("--memory", default="", help="Comma-separated image counts for the peak-memory check, e.g. 100,1000.")
@click.option("--note", default="", help="A note for the record (e.g. the machine was shared).")
@click.option("--out", type=click.Path(path_type=Path), help="Also write the record as JSON (docs/results/speed.json).")
@click.option("--memory-run", "child_count", type=int, hidden=True, help="Internal: one memory check in this process.")
def main(images, tasks, batch_size, workers, decode, memory, note, out, child_count):
    if child_count:
        print(json.dumps(memory_run(child_count, batch_size, workers)))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    workers = default_workers() if workers is None else workers
    where = torch.cuda.get_device_name() if device == "cuda" else f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads"
    print(f"{device}: {where}; batch {batch_size}, {workers} decoding workers, --decode {decode}, "
          f"{images} images of {FULL[0]}x{FULL[1]}")
    print(f"{'task':15} {'recipe':44} {'passes':>6} {'predict img/s':>14} {'bare img/s':>11} {'decode img/s':>13} "
          f"{'limit img/s':>12} {'ratio':>6}")
    recipes = final_recipes()
    rows = []
    tasks = [t for t in tasks.split(",") if t]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "images"
        make_images(folder, FULL, images, unique=8)
        predictors, bares = {}, {}

        def measure(name: str, chosen: list[Predictor], recipe: str, bare: float, passes: float, run) -> None:
            decoding = decoding_seconds_per_image(chosen, folder, batch_size, workers, decode)
            started = time.perf_counter()
            run()
            end_to_end = (time.perf_counter() - started) / images
            limit = limit_of(bare, decoding, device)
            print(f"{name:15} {recipe:44} {passes:>6.2f} {1 / end_to_end:>14.2f} {1 / bare:>11.2f} {1 / decoding:>13.2f} "
                  f"{1 / limit:>12.2f} {limit / end_to_end:>6.2f}", flush=True)
            rows.append({"task": name, "recipe": recipe, "passes": passes, "predict_images_per_second": 1 / end_to_end,
                         "bare_images_per_second": 1 / bare, "decoding_images_per_second": 1 / decoding,
                         "limit_images_per_second": 1 / limit, "ratio": limit / end_to_end})

        for task in tasks:
            arch, input_size, zoom, members, view = recipes[task]
            predictor = Predictor.load(make_checkpoint(tmp / f"{task}.pt", task, input_size, zoom, arch, members, view))
            recipe = (f"{arch} {input_size} px" + (f", zoom {zoom}" if zoom > 1 else "")
                      + "".join(f", {value}" for value in view.values())
                      + (f", {members} members" if members > 1 else "") + (", flip TTA" if predictor.tta else ""))

            def one(predictor=predictor, task=task):
                run = predict_folder(predictor, folder, tmp / f"out-{task}", progress=False, batch_size=batch_size,
                                     workers=workers, decode=decode)
                assert run.predicted == images and not run.problems, run.problems

            seen = []  # images per pass (an untrained disc model may find no disc to refine): counted on a warm-up run
            hook = predictor.model.register_forward_hook(lambda module, args, output: seen.append(len(args[0])))
            one()
            hook.remove()
            passes = sum(seen) / images
            bares[task] = bare_seconds_per_image(predictor, batch_size, max(2, images // batch_size)) * passes
            measure(task, [predictor], recipe, bares[task], passes, one)
            predictors[task] = predictor
        if len(predictors) > 1:
            chosen = list(predictors.values())

            def together():
                runs = predict_tasks(chosen, folder, tmp / "out-all", progress=False, batch_size=batch_size,
                                     workers=workers, decode=decode)
                assert all(r.predicted == images and not r.problems for r in runs.values())

            measure("+".join(predictors), chosen, "each image decoded once for all", sum(bares.values()),
                    float("nan"), together)
        del predictors
    memory_rows = []
    for count in [int(c) for c in memory.split(",") if c.strip()]:
        command = [sys.executable, __file__, "--memory-run", str(count), "--batch-size", str(batch_size),
                   *(["--workers", str(workers)] if workers is not None else [])]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        rss = result["peak_rss_mb"]
        print(f"memory: {count} images of {MEMORY_IMAGE[0]}x{MEMORY_IMAGE[1]} in {result['seconds']:.0f} s: peak RSS "
              f"{rss['main']:.0f} MB (largest decoding worker {rss['largest_worker']:.0f} MB)", flush=True)
        memory_rows.append(result)
    if out:
        task, arch, input_size, zoom, _ = MEMORY_RECIPE
        record = {"device": device, "where": where, "platform": platform.machine(),
                  "decode": decode, "images": images, "image_size": list(FULL), "batch_size": batch_size, "workers": workers,
                  "rows": rows, "memory": {"recipe": f"{task} {arch} {input_size} px, zoom {zoom}, flip TTA",
                                           "image_size": list(MEMORY_IMAGE), "runs": memory_rows},
                  "note": note, "stamp": stamp()}
        out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
