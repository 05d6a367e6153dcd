"""The README's pictures of real photographs: the models on IDRiD images they never trained on.

IDRiD is the one data set here whose licence (CC BY 4.0) lets the project show its photographs.
The fovea model is a cross-validation fold model (``cross_validate.py`` keeps them in its
``--workdir``), drawn on its own left-out fold; the disc model is any model that never saw
IDRiD (the final disc model learns Drishti-GS1 and DRIONS only). The run is the user's: ``palm
predict fovea disc --overlays``, then ``palm leaderboard`` against the fold's fovea and disc
centres, and the pictures are made from what those two commands wrote:

- ``real-overlays.jpg``: the fold's best, median and worst fovea case, as ``palm predict
  --overlays`` drew them (yellow: the models; no ground truth on these);
- ``real-gallery.jpg``: the leaderboard gallery's worst fovea cases (blue: truth, yellow:
  prediction), the thumbnails the page shows, with each case's normalised distance.

    python benchmarks/real_pictures.py --idrid ../shared/data/idrid \\
        --fovea-model runs/cv-fovea-z1/fovea-...-fold0.pt --fold 0 \\
        --disc-model models/disc.pt --workdir runs/pictures --out docs/pictures
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
from PIL import Image, ImageDraw

from evaluation.gallery import case_table
from palm_algos.cases import read_cases
from palm_algos.formats import CSV_NAMES
from palm_algos.tasks import get_task
from palm_algos.train import kfold_splits

ROOT = Path(__file__).resolve().parents[1]
SHEETS = {"fovea": "IDRiD_Fovea_Center_Markups.csv", "disc_centre": "IDRiD_OD_Center_Markups.csv"}
SIDE = 400  # each overlay's long side in real-overlays.jpg
CREDIT = "IDRiD (Porwal et al. 2018, CC BY 4.0)"


def palm(*args: str) -> None:
    """One `palm` command, as a user runs it (its output passes through)."""
    subprocess.run([sys.executable, "-m", "palm_cli", *args], cwd=ROOT, check=True)


def held_out_truth(idrid: Path, folds: int, fold: int, seed: int, truth: Path) -> list[str]:
    """An IDRiD-layout folder of the fold's left-out cases (images linked, markups copied);
    returns their names. The split is cross_validate.py's (``train.kfold_splits``)."""
    task = get_task("fovea")
    cases = [c for c in read_cases(idrid).cases if task.usable(c)]
    _, held_out = kfold_splits(task, cases, folds, seed)[fold]
    (truth / "images").mkdir(parents=True, exist_ok=True)
    for case in held_out:
        link = truth / "images" / case.image.name
        if not link.exists():
            os.symlink(case.image.resolve(), link)
    for attribute, sheet in SHEETS.items():
        with open(truth / sheet, "w", newline="") as f:
            rows = csv.writer(f)
            rows.writerow(["Image No", "X- Coordinate", "Y - Coordinate"])
            rows.writerows([c.name, *getattr(c, attribute)] for c in held_out if getattr(c, attribute))
    return sorted(c.name for c in held_out)


def fovea_distances(metrics: Path, key: str = "fovea_normalised_distance") -> dict[str, float]:
    """case -> fovea distance (normalised, or another of the case's scores), from a metrics.json."""
    cases = case_table(json.loads(metrics.read_text()))
    return {name: v[key] for name, v in cases.items() if v.get(key) is not None}


def strip(pictures: list[tuple[Path, str]], side: int, credit: str) -> Image.Image:
    """Pictures side by side at ``side`` px (long side), each with a caption, and a credit line."""
    tiles = []
    for path, caption in pictures:
        tile = Image.open(path).convert("RGB")
        tile.thumbnail((side, side), Image.LANCZOS)
        tiles.append((tile, caption))
    width = sum(t.width for t, _ in tiles) + 8 * (len(tiles) + 1)
    height = max(t.height for t, _ in tiles) + 52
    sheet = Image.new("RGB", (width, height), "white")
    draw, x = ImageDraw.Draw(sheet), 8
    for tile, caption in tiles:
        sheet.paste(tile, (x, 8))
        draw.text((x, tile.height + 12), caption, fill="black")
        x += tile.width + 8
    draw.text((8, height - 18), credit, fill=(90, 90, 90))
    return sheet


@click.command()
@click.option("--idrid", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--fovea-model", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="A fold model of cross_validate.py fovea on --idrid (trained without --fold's images).")
@click.option("--fold", type=int, required=True, help="The fold --fovea-model left out.")
@click.option("--folds", type=int, default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="cross_validate.py's --seed (it decides the folds).")
@click.option("--disc-model", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="A disc model that never trained on IDRiD.")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("runs/pictures"), show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("docs/pictures"), show_default=True)
@click.option("--gallery-count", type=int, default=5, show_default=True)
def main(idrid, fovea_model, fold, folds, seed, disc_model, workdir, out, gallery_count):
    truth, run, board = workdir / "truth", workdir / "run", workdir / "leaderboard"
    names = held_out_truth(idrid, folds, fold, seed, truth)
    print(f"fold {fold} of {folds}: {len(names)} IDRiD images the fovea model never saw", flush=True)
    palm("predict", "fovea", "disc", "--input", str(truth / "images"), "--output", str(run),
         "--model", str(fovea_model), "--model", str(disc_model), "--overlays")
    # scored: the fovea only (IDRiD has disc centres, not the masks a disc score needs)
    submission = workdir / "submissions" / "fold-model"
    submission.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / CSV_NAMES["fovea"], submission / CSV_NAMES["fovea"])
    palm("leaderboard", str(submission.parent), "--ground-truth", str(truth), "--out", str(board))
    metrics = board / "metrics" / f"{submission.name}.json"  # the leaderboard's scoring of the submission
    distances = fovea_distances(metrics)
    ranked = sorted(distances, key=distances.get)
    chosen = {"best": ranked[0], "median": ranked[len(ranked) // 2], "worst": ranked[-1]}
    out.mkdir(parents=True, exist_ok=True)
    overlays = [(run / "overlays" / f"{name}.jpg", f"{name} ({which}): fovea {distances[name]:.4f}")
                for which, name in chosen.items()]
    strip(overlays, SIDE, f"palm predict fovea disc --overlays, models never trained on these images. {CREDIT}"
          ).save(out / "real-overlays.jpg", quality=85, optimize=True)
    gallery = board / "gallery" / submission.name  # the page's thumbnails, worst first as it ranks them (in px)
    pixels = fovea_distances(metrics, "fovea_distance")
    worst = [name for name in sorted(pixels, key=pixels.get, reverse=True) if (gallery / f"{name}_thumb.jpg").is_file()]
    thumbs = [(gallery / f"{name}_thumb.jpg", f"{name}: {distances[name]:.4f}") for name in worst[:gallery_count]]
    strip(thumbs, 180, f"palm leaderboard's gallery, worst fovea cases (blue: truth, yellow: models). {CREDIT}"
          ).save(out / "real-gallery.jpg", quality=85, optimize=True)
    mean = sum(distances.values()) / len(distances)
    print(f"fovea on the left-out fold: mean {mean:.4f}, median {distances[chosen['median']]:.4f} normalised; "
          f"wrote {out / 'real-overlays.jpg'} and {out / 'real-gallery.jpg'}")


if __name__ == "__main__":
    main()
