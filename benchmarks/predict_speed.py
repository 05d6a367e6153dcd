"""Prediction throughput: `palm predict`'s folder pipeline end to end vs. the bare batched
forward pass of the same network at the same batch size.

Both are measured in this one run on the same full-resolution synthetic JPEGs, for each task
at its documented recipe (benchmarks/train_final.sh; weights do not change the cost, so
untrained checkpoints are used). End to end = ``predict_folder`` (model loading excluded):
decoding the files, resizing, every network pass, decoding to original pixels, writing the PALM
files. The bare pass is the wrapped network (ensemble, flip TTA) on a ready batch, times the
passes the pipeline ran per image (two with the refining pass). Target: end to end >= 0.8 x bare.

``--memory 100,1000`` also runs the pipeline on that many small images, each count in a fresh
process, and reports the peak resident memory: it must not grow with the number of images.

    python benchmarks/predict_speed.py [--images 32] [--batch-size 8] [--workers N] [--memory 100,1000] [--out docs/results/speed.json]
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
from palm_algos.predict import BATCH_SIZE, Predictor, default_workers, predict_folder
from palm_algos.synth import synth_case
from palm_algos.tasks import IMAGENET_MEAN, IMAGENET_STD, get_task
from stamp import stamp

FULL = (2124, 2056)
RECIPES = {  # task -> (arch, input size, zoom, ensemble members): benchmarks/train_final.sh; TTA: the task's default
    "classification": ("resnet50", 112, 1, 1),
    "fovea": ("disc-fovea-heatmaps", 192, 1, 3),
    "disc": ("resnet34-aspp-unet", 256, 2, 1),
}
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
                    members: int = 1) -> Path:
    """An untrained checkpoint; ``members`` > 1: an ensemble of that many."""
    t = get_task(task)
    arch = arch or t.default_arch
    meta = {"task": task, "arch": arch, "input_size": input_size, "zoom": zoom,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    if members == 1:
        model = t.build_model(arch, "none")
        if zoom > 1:  # an untrained disc model finds no disc, and a pass that finds nothing is not refined
            last = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))][-1]
            with torch.no_grad():
                last.bias[-1] += 10  # the last class (the disc) everywhere: the refining pass always runs
        save_checkpoint(path, model.state_dict(), meta)
        return path
    parts = [make_checkpoint(path.with_suffix(f".m{i}.pt"), task, input_size, zoom, arch) for i in range(members)]
    combine_checkpoints(parts, path)
    return path


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


@click.command()
@click.option("--images", default=32, show_default=True, help="Full-resolution images per task.")
@click.option("--tasks", default="classification,fovea,disc", show_default=True)
@click.option("--batch-size", default=BATCH_SIZE, show_default=True)
@click.option("--workers", default=None, type=int, help="Decoding processes (default: predict's default).")
@click.option("--memory", default="", help="Comma-separated image counts for the peak-memory check, e.g. 100,1000.")
@click.option("--note", default="", help="A note for the record (e.g. the machine was shared).")
@click.option("--out", type=click.Path(path_type=Path), help="Also write the record as JSON (docs/results/speed.json).")
@click.option("--memory-run", "child_count", type=int, hidden=True, help="Internal: one memory check in this process.")
def main(images, tasks, batch_size, workers, memory, note, out, child_count):
    if child_count:
        print(json.dumps(memory_run(child_count, batch_size, workers)))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    workers = default_workers() if workers is None else workers
    where = torch.cuda.get_device_name() if device == "cuda" else f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads"
    print(f"{device}: {where}; batch {batch_size}, {workers} decoding workers, {images} images of {FULL[0]}x{FULL[1]}")
    print(f"{'task':15} {'recipe':34} {'passes':>6} {'predict img/s':>14} {'bare img/s':>11} {'ratio':>6}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "images"
        make_images(folder, FULL, images, unique=8)
        for task in tasks.split(","):
            arch, input_size, zoom, members = RECIPES[task]
            predictor = Predictor.load(make_checkpoint(tmp / f"{task}.pt", task, input_size, zoom, arch, members))
            predictor.predict(next(folder.iterdir()))  # warm-up
            seen = []  # images per pass the pipeline ran (an untrained disc model may find no disc to refine)
            hook = predictor.model.register_forward_hook(lambda module, args, output: seen.append(len(args[0])))
            started = time.perf_counter()
            run = predict_folder(predictor, folder, tmp / f"out-{task}", progress=False, batch_size=batch_size,
                                 workers=workers)
            end_to_end = (time.perf_counter() - started) / images
            hook.remove()
            assert run.predicted == images and not run.problems, run.problems
            passes = sum(seen) / images
            bare = bare_seconds_per_image(predictor, batch_size, max(2, images // batch_size)) * passes
            recipe = (f"{arch} {input_size} px" + (f", zoom {zoom}" if zoom > 1 else "")
                      + (f", {members} members" if members > 1 else "") + (", flip TTA" if predictor.tta else ""))
            print(f"{task:15} {recipe:34} {passes:>6.2f} {1 / end_to_end:>14.2f} {1 / bare:>11.2f} "
                  f"{bare / end_to_end:>6.2f}", flush=True)
            rows.append({"task": task, "recipe": recipe, "arch": arch, "input_size": input_size, "zoom": zoom,
                         "members": members, "tta": predictor.tta, "passes": passes,
                         "predict_images_per_second": 1 / end_to_end, "bare_images_per_second": 1 / bare,
                         "ratio": bare / end_to_end})
            del predictor
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
        record = {"device": device, "where": where, "platform": platform.machine(), "torch": torch.__version__,
                  "images": images, "image_size": list(FULL), "batch_size": batch_size, "workers": workers,
                  "rows": rows, "memory": {"recipe": f"{task} {arch} {input_size} px, zoom {zoom}, flip TTA",
                                           "image_size": list(MEMORY_IMAGE), "runs": memory_rows},
                  "note": note, "stamp": stamp()}
        out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
