"""K-fold cross-validation of one task, scored end to end in original pixels.

Each fold trains with the shared loop for a fixed number of epochs (the held-out images are
not used to pick an epoch), then the fold's checkpoint predicts its held-out
images through ``Predictor`` (the same path as ``palm predict``) and the evaluation
package scores them. Writes a JSON record for docs/RESULTS.md.

    python benchmarks/cross_validate.py classification --data ../shared/data/palm224/PALM-Training400 \
        --folds 5 --epochs 12 --input-size 128 --out docs/results/classification.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import torch

from evaluation import metrics
from palm_algos.cases import read_cases
from palm_algos.checkpoint import load_checkpoint
from palm_algos.predict import Predictor
from palm_algos.tasks import get_task
from palm_algos.train import TrainConfig, kfold_splits, last_path, train


def score(task: str, cases, predictions) -> dict:
    if task == "classification":
        y = np.array([c.label for c in cases])
        risk = np.array(predictions)
        lo, hi = metrics.auc_ci(y, risk)
        return {"auc": metrics.auc(y, risk), "auc_ci95": [lo, hi],
                "sensitivity_at_0.85_specificity": metrics.sensitivity_at_specificity(y, risk)}
    if task == "fovea":
        truth = np.array([c.fovea for c in cases])
        pred = np.array(predictions)
        px = metrics.fovea_distances(pred, truth)
        norm = metrics.normalised_fovea_distances(pred, truth, np.array([c.size for c in cases]))
        return {"distance_px": metrics.summary(px), "distance_normalised": metrics.summary(norm),
                "normalised_variance": float(np.var(norm))}
    dice = [metrics.dice(p, c.read_disc()) for c, p in zip(cases, predictions)]
    present = metrics.presence_f1([p.any() for p in predictions], [c.read_disc().any() for c in cases])
    return {"dice": metrics.summary(dice), "presence_f1": present}


def trained_seconds(ckpt: Path, config: TrainConfig) -> float:
    """Training time of an existing fold checkpoint (sum of its epochs), after checking it was
    trained with this very recipe."""
    state = load_checkpoint(last_path(ckpt))
    trained = {k: v for k, v in state["meta"]["config"].items() if k != "extra"}
    wanted = {k: v for k, v in vars(config).items() if k != "extra"}
    if trained != wanted:
        raise SystemExit(f"{ckpt}: trained with another recipe ({trained}), not {wanted}")
    return sum(h["seconds"] for h in state["history"])


@click.command()
@click.argument("task")
@click.option("--data", required=True, type=click.Path(path_type=Path))
@click.option("--extra-test", type=click.Path(path_type=Path), help="Also score the fold models on this folder (mean over folds).")
@click.option("--folds", default=5)
@click.option("--epochs", default=12)
@click.option("--input-size", default=0)
@click.option("--zoom", default=1, help="fovea/disc: train and predict with the refining pass (see palm train --help).")
@click.option("--batch-size", default=16)
@click.option("--lr", default=1e-3)
@click.option("--arch", default="")
@click.option("--seed", default=0)
@click.option("--workdir", default="runs/cv", type=click.Path(path_type=Path))
@click.option("--reuse", is_flag=True, help="Score the fold checkpoints already in --workdir instead of training "
                                            "(after a change to prediction only); training times come from their history.")
@click.option("--out", required=True, type=click.Path(path_type=Path))
def main(task, data, extra_test, folds, epochs, input_size, zoom, batch_size, lr, arch, seed, workdir, reuse, out):
    task_ = get_task(task)
    cases = [c for c in read_cases(data).cases if task_.usable(c)]
    config = TrainConfig(arch=arch, pretrained="none", input_size=input_size, zoom=zoom, epochs=epochs,
                         batch_size=batch_size, lr=lr, seed=seed).resolved(task_)
    oof_cases, oof_pred, fold_records, extra = [], [], [], []
    started = time.time()
    for k, (tr, va) in enumerate(kfold_splits(task_, cases, folds, seed)):
        ckpt = workdir / f"{task}-{config.arch}-zoom{config.zoom}-fold{k}.pt"
        t0 = time.time()
        if reuse:
            seconds = trained_seconds(ckpt, config)
        else:
            train(task_, tr, [], config, ckpt, progress=False)  # no peeking: the fold model is the last epoch
            seconds = time.time() - t0
        predictor = Predictor.load(ckpt, task=task)
        predictions = [predictor.predict(c.image) for c in va]
        fold_score = score(task, va, predictions)
        fold_records.append({"fold": k, "train_seconds": round(seconds, 1), "cases": len(va), **fold_score})
        print(json.dumps(fold_records[-1]), flush=True)
        oof_cases += va
        oof_pred += predictions
        if extra_test:
            extra_cases = [c for c in read_cases(extra_test).cases if task_.usable(c)]
            extra.append(score(task, extra_cases, [predictor.predict(c.image) for c in extra_cases]))
    record = {
        "task": task, "data": str(data), "folds": folds, "config": {k: v for k, v in vars(config).items() if k != "extra"},
        "cross_validated": score(task, oof_cases, oof_pred),
        "per_fold": fold_records,
        "mean_train_seconds_per_fold": round(float(np.mean([f["train_seconds"] for f in fold_records])), 1),
        "total_seconds": round(time.time() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    if extra:
        record["extra_test"] = {"data": str(extra_test), "per_fold": extra}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(json.dumps(record["cross_validated"], indent=2, default=float))


if __name__ == "__main__":
    main()
