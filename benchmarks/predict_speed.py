"""`palm predict` end to end per image vs. the bare forward pass at the same input size.

Both are measured in this one run on the same synthetic images (weights do not change the
cost, so an untrained checkpoint is used). A model with the refining pass (zoom 2) runs the
network twice per image, so its bare cost is two forward passes. Target: ratio <= 1.2.

    python benchmarks/predict_speed.py [--images 8] [--tasks classification,fovea,disc]
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click
import torch
from PIL import Image

from palm_algos.checkpoint import save_checkpoint
from palm_algos.predict import Predictor, predict_folder
from palm_algos.synth import synth_case
from palm_algos.tasks import IMAGENET_MEAN, IMAGENET_STD, get_task

FULL = (2124, 2056)
CASES = {  # task -> [(label, image size, input size, zoom)]: the documented recipes, and the paper's size
    "classification": [("224 px", (224, 224), 112, 1), ("full resolution", FULL, 112, 1),
                       ("224 px", (224, 224), 224, 1), ("full resolution", FULL, 224, 1)],
    "fovea": [("full resolution", FULL, 128, 1), ("full resolution", FULL, 128, 2)],
    "disc": [("full resolution", FULL, 256, 1), ("full resolution", FULL, 256, 2), ("full resolution", FULL, 512, 1)],
}


def make_images(folder: Path, size: tuple[int, int], count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        case = synth_case(i + 1, size)
        Image.fromarray(case.image).save(folder / f"V{i + 1:04d}.jpg", quality=95)


def make_checkpoint(path: Path, task: str, input_size: int, zoom: int) -> None:
    t = get_task(task)
    model = t.build_model(t.default_arch, "none")
    save_checkpoint(path, model.state_dict(), {"task": task, "arch": t.default_arch, "input_size": input_size,
                                               "zoom": zoom, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)})


@torch.inference_mode()
def bare_forward_seconds(predictor: Predictor, count: int) -> float:
    x = torch.randn(1, 3, predictor.input_size, predictor.input_size)
    predictor.model(x)  # warm-up
    started = time.perf_counter()
    for _ in range(count):
        predictor.model(x)
    return (time.perf_counter() - started) / count


@click.command()
@click.option("--images", default=8, show_default=True)
@click.option("--tasks", default="classification,fovea,disc", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="Also write the rows as JSON (docs/results/speed.json).")
def main(images: int, tasks: str, out: Path | None):
    print(f"torch threads: {torch.get_num_threads()}")
    rows = []
    print(f"{'task':15} {'input':16} {'S':>4} {'zoom':>4} {'passes':>6} {'predict s/img':>14} {'forward s/img':>14} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for task in tasks.split(","):
            for label, size, input_size, zoom in CASES[task]:
                folder = tmp / f"{task}-{size[0]}"
                if not folder.is_dir():
                    make_images(folder, size, images)
                make_checkpoint(tmp / f"{task}.pt", task, input_size, zoom)
                predictor = Predictor.load(tmp / f"{task}.pt")
                predictor.predict(next(folder.iterdir()))  # warm-up
                forward = bare_forward_seconds(predictor, images)
                calls = []  # the passes predict really ran (an untrained disc model may find no disc to refine)
                hook = predictor.model.register_forward_hook(lambda *_: calls.append(1))
                started = time.perf_counter()
                failures = predict_folder(predictor, folder, tmp / f"out-{task}", progress=False).problems
                end_to_end = (time.perf_counter() - started) / images
                hook.remove()
                forward *= len(calls) / images
                assert not failures, failures
                print(f"{task:15} {label:16} {input_size:>4} {zoom:>4} {len(calls) / images:>6.2f} {end_to_end:>14.3f} {forward:>14.3f} "
                      f"{end_to_end / forward:>6.2f}", flush=True)
                rows.append({"task": task, "input": label, "image_size": list(size), "input_size": input_size,
                             "zoom": zoom, "passes": len(calls) / images, "predict_seconds": end_to_end,
                             "forward_seconds": forward, "ratio": end_to_end / forward})
    if out:
        out.write_text(json.dumps({"images": images, "torch_threads": torch.get_num_threads(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
