"""What an overlay costs per image: decode, draw (disc contour, fovea cross, PM risk text), JPEG.

Measured on synthetic JPEGs at full PALM resolution (2124x2056) and at 224 px, with the
prediction alone (`palm predict --overlays`) and with prediction, ground truth and scores (the
leaderboard's gallery: a 1024 px picture and a thumbnail). Masks come at the image's own size,
as predictions and ground truth do. No torch.

``--models DIR`` (``<task>/<task>.pt`` for each task, as ``./build.sh test`` leaves them in
build/containers/models) times instead what ``--overlays`` adds to prediction (with torch): the
three tasks' ``predict_folder`` on full-resolution JPEGs with and without the overlay writer,
twice each.

    python benchmarks/overlay_speed.py [--images 8] [--models build/containers/models]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
import numpy as np
from PIL import Image

from palm_algos.overlays import draw_overlay, read_photo, save_overlay
from palm_algos.synth import synth_case

SIZES = {"full resolution 2124x2056": (2124, 2056), "224 px": (224, 224)}
THUMB_SIDE = 200


def one_image(path: Path, case, with_truth: bool, out: Path) -> dict[str, float]:
    """Seconds per step for one picture (and its thumbnail where the gallery makes one)."""
    times = {}
    start = time.perf_counter()
    photo, size = read_photo(path)
    times["decode"] = time.perf_counter() - start
    found = dict(pm_risk=0.8, fovea=case.fovea, disc=np.roll(case.disc, 9, axis=1), size=size)
    if with_truth:
        found.update(truth_label=case.label, truth_fovea=case.fovea, truth_disc=case.disc, dice=0.9, fovea_distance=9.0)
    start = time.perf_counter()
    pictures = [draw_overlay(photo, **found)]
    if with_truth:
        pictures.append(draw_overlay(photo, side=THUMB_SIDE, text=False, **found))
    times["draw"] = time.perf_counter() - start
    start = time.perf_counter()
    for i, picture in enumerate(pictures):
        save_overlay(picture, out / f"{i}.jpg")
    times["jpeg"] = time.perf_counter() - start
    return times


def with_prediction(models: Path, folder: Path, out: Path) -> None:
    """Seconds (wall and CPU) of predicting the three tasks with and without overlays."""
    from palm_algos.formats import TASKS
    from palm_algos.predict import Predictor, predict_folder
    from palm_algos.writers import OverlayWriter

    predictors = {task: Predictor.load(models / task / f"{task}.pt", task=task) for task in TASKS}
    for predictor in predictors.values():  # warm-up: torch's first calls cost seconds
        predictor.predict(next(folder.iterdir()))
    for _ in range(2):
        for overlays in (False, True):
            wall, cpu = time.perf_counter(), time.process_time()
            pictures = OverlayWriter(out / str(overlays), TASKS) if overlays else None
            for task in TASKS:
                predict_folder(predictors[task], folder, out / str(overlays), progress=False, overlays=pictures)
            if pictures:
                pictures.finish()
            click.echo(f"{'with' if overlays else 'without':7s} overlays: {time.perf_counter() - wall:6.1f} s wall, "
                       f"{time.process_time() - cpu:6.1f} s CPU")


@click.command()
@click.option("--images", default=8, show_default=True)
@click.option("--models", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Time prediction with and without overlays, with these models (full resolution only).")
def main(images: int, models: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if models:
            folder = Path(tmp) / "images"
            folder.mkdir()
            for i in range(images):
                Image.fromarray(synth_case(i + 1, SIZES["full resolution 2124x2056"]).image).save(folder / f"{i}.jpg", quality=95)
            with_prediction(models, folder, Path(tmp) / "out")
            return
        for label, size in SIZES.items():
            cases = [synth_case(i + 1, size) for i in range(images)]
            paths = []
            for i, case in enumerate(cases):
                paths.append(Path(tmp) / f"{size[0]}_{i}.jpg")
                Image.fromarray(case.image).save(paths[-1], quality=95)
            for mode, with_truth in (("prediction", False), ("gallery: truth + prediction + thumbnail", True)):
                one_image(paths[0], cases[0], with_truth, Path(tmp))  # warm-up: font loading, first decode
                runs = [one_image(p, c, with_truth, Path(tmp)) for p, c in zip(paths, cases)]
                ms = {step: 1000 * float(np.mean([r[step] for r in runs])) for step in runs[0]}
                steps = ", ".join(f"{step} {value:.1f}" for step, value in ms.items())
                click.echo(f"{label:27s} {mode:40s} {sum(ms.values()):6.1f} ms/image ({steps})")


if __name__ == "__main__":
    main()
