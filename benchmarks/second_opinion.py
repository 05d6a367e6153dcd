"""The disc model alone against the disc model heeding the joint fovea model's disc centre
(palm-all: ``Task.heed``), image by image, on disc sources neither model trained on.

`palm predict disc` runs the first; `palm predict fovea disc` (and palm-all) the second. Both
models must come from trainings that left the tested sources out, e.g.

    palm train disc --data ../shared/data/drishti-gs1/Training --data ../shared/data/idrid \\
        --pretrained none --input-size 256 --zoom 2 --epochs 15 --batch-size 8 --val-fraction 0 \\
        --out runs/heed/disc.pt
    palm train fovea --data ../shared/data/idrid --data ../shared/data/drishti-gs1/Training \\
        --pretrained none --arch disc-fovea-heatmaps --augment classic --input-size 192 \\
        --epochs 50 --batch-size 8 --val-fraction 0 --out runs/heed/fovea.pt
    python benchmarks/second_opinion.py --disc-model runs/heed/disc.pt \\
        --fovea-model runs/heed/fovea.pt --test ../shared/data/drions-sample \\
        --out docs/results/second-opinion.json

and the other way round (docs/results/second-opinion-drishti.json: Drishti-GS1 left out; the
fovea model is final-fovea's, which learns IDRiD and DRIONS's discs):

    palm train disc --data ../shared/data/drions-sample --data ../shared/data/idrid \\
        --pretrained none --input-size 256 --zoom 2 --epochs 15 --batch-size 8 --val-fraction 0 \\
        --out runs/heed2/disc-unseen-drishti.pt
    python benchmarks/second_opinion.py --disc-model runs/heed2/disc-unseen-drishti.pt \\
        --fovea-model models/fovea.pt --test ../shared/data/drishti-gs1/Training \\
        --out docs/results/second-opinion-drishti.json

The local contrast (``--colour local``, ``fov.local_contrast``) against those two disc models,
the same commands with ``--colour local`` and the outputs under runs/local
(docs/results/second-opinion-local-drions.json, second-opinion-local-drishti.json; the DRIONS
one guided by runs/hint/fovea-unseen-drions.pt, trained as runs/heed/fovea.pt above). Two seeds
of the DRIONS one averaged as final-disc averages its three
(docs/results/second-opinion-local-drions-2seeds.json; -3seeds.json: seed 2 as well, the same way):

    palm train disc --data ../shared/data/drishti-gs1/Training --data ../shared/data/idrid \
        --pretrained none --geometry fov --colour local --input-size 256 --zoom 2 --epochs 15 \
        --batch-size 8 --val-fraction 0 --seed 1 --out runs/local/disc-unseen-drions-seed1.pt
    palm ensemble --out runs/local/disc-unseen-drions-2seeds.pt \
        runs/local/disc-unseen-drions.pt runs/local/disc-unseen-drions-seed1.pt
    python benchmarks/second_opinion.py --disc-model runs/local/disc-unseen-drions-2seeds.pt \
        --fovea-model runs/hint/fovea-unseen-drions.pt --test ../shared/data/drions-sample \
        --out docs/results/second-opinion-local-drions-2seeds.json

The seed-0 model trained again with the field-of-view finder of 2026-12-06 (the first command
of this paragraph with --seed 0 and --out runs/newfov/disc-unseen-drions.pt), scored the same
way: docs/results/second-opinion-local-drions-finder.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from evaluation import metrics
from palm_algos.cases import read_cases
from palm_algos.predict import Predictor
from palm_algos.tasks import _mask_centre
from stamp import stamp


def _summary(dice: list[float]) -> dict:
    return {"dice": metrics.summary(dice), "below_0.5": int((np.asarray(dice) < 0.5).sum())}


def compare(disc: Predictor, fovea: Predictor, source: Path) -> dict:
    """Per image of ``source`` with a disc mask: Dice alone, Dice heeding, the fovea model's
    disc-centre error (normalised as the fovea's); and their summaries."""
    images = []
    for case in (c for c in read_cases(source).cases if c.disc_mask is not None):
        truth = case.read_disc()
        _, centre = fovea.predict_with_disc(case.image)
        error = metrics.normalised_fovea_distances([centre], [_mask_centre(case)], [case.size])[0]
        images.append({"image": case.image.name, "alone": metrics.dice(disc.predict(case.image), truth),
                       "heeding": metrics.dice(disc.predict(case.image, disc=centre), truth),
                       "disc_centre_error": float(error)})
        click.echo(f"{source.name} {case.image.name}: alone {images[-1]['alone']:.3f}, heeding "
                   f"{images[-1]['heeding']:.3f} (its disc centre off by {error:.4f})", err=True)
    errors = np.array([i["disc_centre_error"] for i in images])
    return {"alone": _summary([i["alone"] for i in images]), "heeding": _summary([i["heeding"] for i in images]),
            "disc_centre": {"distance_normalised": metrics.summary(errors), "beyond_0.05": int((errors > 0.05).sum())},
            "images": images}


@click.command()
@click.option("--disc-model", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--fovea-model", required=True, type=click.Path(exists=True, path_type=Path),
              help="A joint disc + fovea heat-map model (--arch disc-fovea-heatmaps).")
@click.option("--test", "sources", required=True, multiple=True, type=click.Path(exists=True, path_type=Path),
              help="A folder of photographs with disc masks (repeatable).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The JSON record to write.")
def main(disc_model: Path, fovea_model: Path, sources: tuple[Path, ...], out: Path) -> None:
    disc = Predictor.load(disc_model, task="disc")
    fovea = Predictor.load(fovea_model, task="fovea")
    record = {"disc_model": str(disc_model), "fovea_model": str(fovea_model),
              "disc_recipe": disc.meta.get("config"), "fovea_recipe": fovea.meta.get("config"),
              "sources": {str(source): compare(disc, fovea, source) for source in sources}, "stamp": stamp()}
    for source, result in record["sources"].items():
        click.echo(f"{source}: alone {result['alone']['dice']['mean']:.4f} ({result['alone']['below_0.5']} below 0.5), "
                   f"heeding {result['heeding']['dice']['mean']:.4f} ({result['heeding']['below_0.5']} below 0.5)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
