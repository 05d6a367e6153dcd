"""How often the anatomy rules out a joint fovea model's answer on photographs without fovea
labels: its fovea within FOVEA_DISC_GAP of its own disc centre (``FoveaTask.doubt``, what
`palm predict` logs), counted by the first letter of the file name (PALM: P pathologic myopia,
H high myopia, N normal). A lower bound on its misses on eyes it never saw: a disc put on the
atrophy with the fovea on the real disc can keep the usual distance (docs/RESULTS.md).

    python benchmarks/doubted.py --images ../shared/data/palm224/PALM-Training400 \\
        --model runs/cv-fovea-disc-sources-atrophy/...-fold0.pt [--model ...] --out RECORD.json

Each model is counted alone, then all of them together as one (``--model`` repeated: the fold
models of a cross-validation, which learned different parts of the same data).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path

import click

from palm_algos.cases import list_images
from palm_algos.predict import Predictor
from palm_algos.tasks import FOVEA_DISC_GAP
from stamp import stamp


def answers(predictor: Predictor, images: list[Path]) -> dict[str, dict]:
    """Each image's fovea and disc centre as the model gives them (original pixels), and the
    gap between them in shares of the image's width and height (the squashed square the
    model sees)."""
    result = {}
    for image in images:
        photo = predictor.read(image)
        fovea, disc = predictor.predict_with_disc(image, photo)
        width, height = photo[1]
        gap = math.hypot((fovea[0] - disc[0]) / width, (fovea[1] - disc[1]) / height)
        result[image.name] = {"fovea": list(fovea), "disc": list(disc), "gap": gap}
    return result


def counts(gap: dict[str, float]) -> dict[str, dict[str, int]]:
    """Doubted and all photographs by the name's first letter, and overall."""
    doubted = Counter(name[0] for name, g in gap.items() if g < FOVEA_DISC_GAP)
    total = Counter(name[0] for name in gap)
    by_letter = {letter: {"doubted": doubted[letter], "of": total[letter]} for letter in sorted(total)}
    return {**by_letter, "all": {"doubted": sum(doubted.values()), "of": len(gap)}}


@click.command()
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "models", required=True, multiple=True, type=click.Path(exists=True, path_type=Path),
              help="A joint disc + fovea heat-map model (--arch disc-fovea-heatmaps); repeatable.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The JSON record to write.")
def main(images: Path, models: tuple[Path, ...], out: Path) -> None:
    logging.getLogger("palm_algos").setLevel(logging.ERROR)  # each doubt is counted here, not logged
    photographs = list_images(images)[0]
    record = {"images": str(images), "gap": FOVEA_DISC_GAP, "models": {}, "stamp": stamp()}
    for model in models:
        found = answers(Predictor.load(model, task="fovea"), photographs)
        counted = counts({name: answer["gap"] for name, answer in found.items()})
        record["models"][str(model)] = {"counts": counted, "answers": found}
        click.echo(f"{model}: {json.dumps(counted)}")
    every = [entry["counts"] for entry in record["models"].values()]
    record["total"] = {key: {"doubted": sum(c[key]["doubted"] for c in every), "of": sum(c[key]["of"] for c in every)}
                       for key in every[0]}
    click.echo(f"all models: {json.dumps(record['total'])}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
