"""K-fold cross-validation of one task, scored end to end in original pixels.

Each fold trains with the shared loop for a fixed number of epochs (the held-out images are
not used to pick an epoch), then the fold's checkpoint predicts its held-out
images through ``Predictor`` (the same path as ``palm predict``) and the evaluation
package scores them. Writes a JSON record for docs/RESULTS.md.

    python benchmarks/cross_validate.py classification --data ../shared/data/palm224/PALM-Training400 \
        --folds 5 --epochs 12 --input-size 128 --out docs/results/classification.json

or a named recipe of palm_algos/recipes.toml (the runs behind docs/RESULTS.md; run_cv.sh runs them):

    python benchmarks/cross_validate.py --recipe cv-disc-seeds --data-root ../shared/data

With several ``--data`` folders (sources: cameras), the folds pool their cases; with
``--leave-one-source-out`` each fold is one source instead, trained on all the others: how a
model does on a camera it never saw (the protocol of docs/RESULTS.md's per-source table). A
source the task cannot score but that marks the optic disc (IDRiD's disc centres for a disc
model) is scored by where the model puts the disc (``disc_centre_errors``).
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
import torch

from evaluation import metrics
from palm_algos.cases import read_cases
from palm_algos.checkpoint import combine_checkpoints, load_checkpoint
from palm_algos.predict import Predictor
from palm_algos.recipes import command_line, given_options, options
from palm_algos.tasks import get_task
from palm_algos.train import TrainConfig, history_path, kfold_splits, last_path, starting_model, train
from camera_shift import SHIFT_SCORES, shift_scores
from stamp import stamp


def _score_classification(cases, risks) -> dict:
    y = np.array([c.label for c in cases])
    risk = np.array(risks)
    lo, hi = metrics.auc_ci(y, risk)
    return {"auc": metrics.auc(y, risk), "auc_ci95": [lo, hi],
            "sensitivity_at_0.85_specificity": metrics.sensitivity_at_specificity(y, risk)}


def _score_fovea(cases, points) -> dict:
    truth = np.array([c.fovea for c in cases])
    pred = np.array(points)
    px = metrics.fovea_distances(pred, truth)
    norm = metrics.normalised_fovea_distances(pred, truth, np.array([c.size for c in cases]))
    return {"distance_px": metrics.summary(px), "distance_normalised": metrics.summary(norm),
            "normalised_variance": float(np.var(norm)), "beyond_0.05": int((np.asarray(norm) > 0.05).sum()),
            "cases": len(cases)}


def _score_disc(cases, masks) -> dict:
    dice = [metrics.dice(p, c.read_disc()) for c, p in zip(cases, masks)]
    present = metrics.presence_f1([p.any() for p in masks], [c.read_disc().any() for c in cases])
    return {"dice": metrics.summary(dice), "presence_f1": present, "below_0.5": int((np.asarray(dice) < 0.5).sum()),
            "lowest": float(min(dice)), "cases": len(cases)}


SCORES = {"classification": _score_classification, "fovea": _score_fovea, "disc": _score_disc}


def marks_disc(case) -> bool:
    return case.disc_centre is not None or case.disc_mask is not None


def disc_centre_errors(predictor: Predictor, cases) -> dict:
    """Where the model puts the optic disc against where it is (the markup, else the centroid of
    the disc mask), as a share of the image size: how well it finds discs on cameras it never
    trained on. The joint fovea model's disc is its second point; a disc model's, the centroid
    of its mask ((0, 0) where it finds none), which also counts the true centres on its disc."""
    from palm_algos.tasks import _mask_centre, disc_centroid

    found, truth, sizes, on_disc = [], [], [], []
    for case in cases:
        prediction, centre = predictor.predict_with_disc(case.image)
        truth.append(case.disc_centre or _mask_centre(case))
        sizes.append(case.size)
        if centre is None:  # a disc mask in original pixels
            centre = disc_centroid(prediction, case.size) or (0.0, 0.0)
            x, y = (min(max(round(v), 0), n - 1) for v, n in zip(truth[-1], case.size))
            on_disc.append(bool(prediction[y, x]))
        found.append(centre)
    norm = metrics.normalised_fovea_distances(found, truth, sizes)
    return {"distance_normalised": metrics.summary(norm), "beyond_0.05": int((norm > 0.05).sum()),
            **({"on_disc": int(sum(on_disc))} if on_disc else {}), "cases": len(cases)}


def score(task: str, cases, predictions) -> dict:
    return SCORES[task](cases, predictions)


def trained_seconds(ckpt: Path, config: TrainConfig) -> float:
    """Training time of an existing fold checkpoint (the sum of its epochs in its
    history.jsonl), after checking it was trained with this very recipe."""
    trained = {k: v for k, v in load_checkpoint(ckpt)["meta"]["config"].items() if k != "extra"}
    if isinstance(trained.get("augment"), bool):  # recorded before the augmentation styles had names
        trained["augment"] = "standard" if trained["augment"] else "none"
    wanted = {k: v for k, v in vars(config).items() if k != "extra"}
    if trained != wanted:
        raise SystemExit(f"{ckpt}: trained with another recipe ({trained}), not {wanted}")
    return sum(h["seconds"] for h in epochs_done(ckpt))


def epochs_done(ckpt: Path) -> list[dict]:
    """The epoch records of a checkpoint's history.jsonl; for a fold model trained before there
    was one, those its .last.pt kept; none where it has neither."""
    path = history_path(ckpt)
    if path.is_file():
        return [json.loads(line) for line in path.read_text().splitlines()]
    return load_checkpoint(last_path(ckpt))["history"] if last_path(ckpt).is_file() else []


def to_train(ckpt: Path, config: TrainConfig, reuse: bool, resume: bool) -> bool:
    """Whether a fold model still needs training: not with --reuse, nor with --resume once its
    last epoch is done (a finished run keeps no .last.pt to resume from)."""
    return not reuse and not (resume and len(epochs_done(ckpt)) == config.epochs and ckpt.is_file())


def fewer(cases: list, count: int, seed: int) -> list:
    """``count`` of ``cases``, the first of one fixed shuffle: a smaller count's are among a larger's."""
    if count > len(cases):
        raise click.UsageError(f"--train-cases {count}: a fold has {len(cases)} training photographs")
    return random.Random(seed).sample(cases, len(cases))[:count]


def seed_paths(workdir: Path, fold_stem: str, seeds: int) -> list[Path]:
    """Where a fold's seed ensemble keeps its models. Seed 0 is the same training as the fold's
    single model (the same cases, settings and seed), so where the workdir holds that one it
    serves as seed 0: ``--seeds N --resume`` after a single-model run trains N-1 models a fold."""
    paths = [workdir / f"{fold_stem}-seed{j}.pt" for j in range(seeds)]
    single = workdir / f"{fold_stem}.pt"
    if not paths[0].is_file() and single.is_file():
        paths[0] = single
    return paths


@click.command()
@click.argument("task", required=False)
@click.option("--recipe", "recipe_name", help="Run a named cv-* recipe of palm_algos/recipes.toml; options given here win over it.")
@click.option("--data-root", type=click.Path(path_type=Path), help="With --recipe: the folder its data folders are relative to.")
@click.option("--data", multiple=True, type=click.Path(path_type=Path),
              help="Data folder; repeat to pool several sources (cameras).")
@click.option("--leave-one-source-out", "by_source", is_flag=True,
              help="Each fold is one --data source, trained on all the others (--folds is ignored).")
@click.option("--also-train", multiple=True, type=click.Path(path_type=Path),
              help="A source every fold also trains on and none is tested on (repeatable): the disc centres of IDRiD, "
                   "which a disc model learns from but Dice cannot score.")
@click.option("--extra-test", type=click.Path(path_type=Path), help="Also score the fold models on this folder (mean over folds).")
@click.option("--disc-centre-test", multiple=True, type=click.Path(path_type=Path),
              help="Also score where the model puts the disc (the joint fovea model's disc centre, a disc model's "
                   "centroid) on this folder of disc masks or centres (repeatable).")
@click.option("--folds", default=5)
@click.option("--members", default=1, help="> 1: each fold's model is the ensemble of the MEMBERS models that "
                                          "`palm train --folds MEMBERS` trains on the fold's training part.")
@click.option("--seeds", default=1, help="> 1: each fold's model is the ensemble of SEEDS models, each trained on all "
                                        "of the fold's training part with its own seed (SEED, SEED+1, ...); with "
                                        "--resume, a single-model run's fold model in --workdir serves as the first.")
@click.option("--only-folds", default="", help="Comma-separated fold numbers to run (default: all); the record "
                                              "then holds those folds only.")
@click.option("--epochs", default=12)
@click.option("--input-size", default=0)
@click.option("--zoom", default=1, help="fovea/disc: train and predict with the refining pass (see palm train --help).")
@click.option("--geometry", default="", help="fov or squash (default: the task's; see palm train --help).")
@click.option("--colour", default="", help="standardise, local or none (default: the task's).")
@click.option("--batch-size", default=16)
@click.option("--lr", default=1e-3)
@click.option("--arch", default="")
@click.option("--augment", default="", help="The task's augmentation style (default: the task's; palm train --help).")
@click.option("--seed", default=0)
@click.option("--train-cases", default=0, help="> 0: each fold learns from this many of its training photographs "
              "only (a fixed shuffle per fold, so 4 are among the 8): how many a user must annotate.")
@click.option("--pretrained", default="none", show_default=True,
              help="As palm train's: a palm model here fine-tunes it on each fold's training part (one's own camera).")
@click.option("--workdir", default="runs/cv", type=click.Path(path_type=Path))
@click.option("--reuse", is_flag=True, help="Score the fold checkpoints already in --workdir instead of training "
                                            "(after a change to prediction only); training times come from their history.")
@click.option("--resume", is_flag=True, help="Continue a stopped run: fold models already trained are kept, one "
                                             "stopped mid-way goes on from its last epoch (palm train --resume).")
@click.option("--camera-shift", "camera_shift", is_flag=True, help="fovea, disc: also score each fold's model on its "
              "held-out photographs as other cameras would show them (camera_shift.py; with --reuse, no training).")
@click.option("--note", default="", help="What else differs in this run (kept in the record).")
@click.option("--out", type=click.Path(path_type=Path))
@click.pass_context
def main(ctx, task, recipe_name, data_root, data, by_source, also_train, extra_test, disc_centre_test, folds, members, seeds, only_folds,
         epochs, input_size, zoom, geometry, colour, batch_size, lr, arch, augment, seed, train_cases, pretrained, workdir, reuse, resume, camera_shift, note, out):
    """Every variant is scored from the same fold models: the single model (for an ensemble,
    each member, averaged), the ensemble, and both with flip TTA; the recipe is the largest
    model with TTA as the task's default has it (what `palm predict` runs)."""
    if recipe_name:  # the recipe's command line, under the options given here
        line = command_line(options(recipe_name, data_root, given_options(ctx, leave=("recipe_name", "data_root"))))
        print(f"recipe {recipe_name}: cross_validate.py {' '.join(line)}", flush=True)
        return main.main(line, standalone_mode=False)
    if not task or not data or not out:
        raise click.UsageError("give TASK, --data and --out (or a --recipe)")
    task_ = get_task(task)
    tables = [read_cases(folder).cases for folder in data]
    sources = [[c for c in table if task_.scorable(c)] for table in tables]
    cases = [c for source in sources for c in source]
    if camera_shift and task not in SHIFT_SCORES:
        raise click.UsageError(f"--camera-shift moves each case's truth with the pixels: give one of {', '.join(SHIFT_SCORES)}")
    if by_source and len(sources) < 2:
        raise SystemExit("--leave-one-source-out needs two or more --data sources")
    if not cases:
        raise SystemExit(f"no --data source has {task} truth to score")
    # a source left out is scored on its task's truth, or, where it has none, on where its discs are
    splits = ([([c for j, other in enumerate(tables) if j != k for c in other if task_.usable(c)],
                sources[k] or [c for c in table if marks_disc(c)]) for k, table in enumerate(tables)]
              if by_source else kfold_splits(task_, cases, folds, seed))
    learn_only = [c for folder in also_train for c in read_cases(folder).cases if task_.usable(c)]
    if train_cases:
        splits = [(fewer(tr, train_cases, seed + k), va) for k, (tr, va) in enumerate(splits)]
    splits = [(tr + learn_only, va) for tr, va in splits]
    extra_cases = [c for c in read_cases(extra_test).cases if task_.scorable(c)] if extra_test else []
    disc_sources = {str(d): [c for c in read_cases(d).cases if marks_disc(c)] for d in disc_centre_test}
    disc_only = {k for k, source in enumerate(sources) if not source} if by_source else set()  # scored on where the disc is
    if empty := [str(data[k]) for k in disc_only if not splits[k][1]]:
        raise SystemExit(f"{empty[0]}: nothing a {task} model can be scored on (no {task} truth, no disc marked)")
    config = TrainConfig(arch=arch, pretrained=pretrained, input_size=input_size, zoom=zoom, geometry=geometry,
                         colour=colour, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, augment=augment)
    start = starting_model(task_, config)
    config, fine_tuning = config.resolved(task_, start), start is not None
    stem = (f"{task}-{config.arch}-{config.input_size}px-{config.epochs}ep-zoom{config.zoom}"
            f"-{config.geometry}-{config.colour}" + ("" if config.augment == "standard" else f"-{config.augment}")
            + (f"-from-{Path(pretrained).stem}" if fine_tuning else "") + (f"-{train_cases}cases" if train_cases else ""))
    oof_cases, oof_pred, fold_records, extra = [], defaultdict(list), [], defaultdict(list)
    # the variant that is the recipe: the largest model, with TTA as palm predict runs it by default
    if members > 1 and seeds > 1:
        raise SystemExit("--members and --seeds are two kinds of ensemble: give one")
    size = max(members, seeds)
    recipe = ("ensemble" if size > 1 else "single") + ("+tta" if task_.tta_default else "")
    # the model before fine-tuning, on each fold's held-out photographs: what fine-tuning gained
    before = ({"before fine-tuning": Predictor.load(pretrained, task=task, tta=False),
               "before fine-tuning+tta": Predictor.load(pretrained, task=task, tta=True)} if fine_tuning else {})
    started = time.time()
    chosen = {int(k) for k in only_folds.split(",") if k.strip()}
    if chosen - set(range(len(splits))):
        raise click.UsageError(f"--only-folds {only_folds}: the folds are 0 to {len(splits) - 1}")
    for k, (tr, va) in enumerate(splits):
        if chosen and k not in chosen:
            continue
        t0 = time.time()
        if size > 1:
            paths = ([workdir / f"{stem}-fold{k}-member{j}.pt" for j in range(size)] if members > 1
                     else seed_paths(workdir, f"{stem}-fold{k}", size))
            if members > 1:  # as `palm train --folds`: each member keeps its best epoch on its inner fold
                plans = [(inner_tr, inner_va, config) for inner_tr, inner_va in kfold_splits(task_, tr, members, seed)]
            else:  # as train_final.sh's seed ensembles: all the training part, the last epoch, another seed
                plans = [(tr, [], replace(config, seed=seed + j)) for j in range(seeds)]
            for path, (member_tr, member_va, member_config) in zip(paths, plans):
                if to_train(path, member_config, reuse, resume):
                    train(task_, member_tr, member_va, member_config, path, resume=resume, progress=False)
            seconds = (sum(trained_seconds(p, c) for p, (_, _, c) in zip(paths, plans)) if reuse or resume
                       else time.time() - t0)
            ckpt = workdir / f"{stem}-fold{k}-ensemble.pt"
            combine_checkpoints(paths, ckpt)
            variants = {f"member{j}": Predictor.load(p, task=task, tta=False) for j, p in enumerate(paths)}
            variants.update({"ensemble": Predictor.load(ckpt, task=task, tta=False),
                             "ensemble+tta": Predictor.load(ckpt, task=task, tta=True)})
        else:
            ckpt = workdir / f"{stem}-fold{k}.pt"
            if to_train(ckpt, config, reuse, resume):
                train(task_, tr, [], config, ckpt, resume=resume, progress=False)  # no peeking: the last epoch
            seconds = trained_seconds(ckpt, config) if reuse or resume else time.time() - t0
            variants = {"single": Predictor.load(ckpt, task=task, tta=False),
                        "single+tta": Predictor.load(ckpt, task=task, tta=True)}
        variants.update(before)
        scores = {}
        for name, predictor in variants.items():
            if k in disc_only:
                scores[name] = disc_centre_errors(predictor, va)
                continue
            predictions = [predictor.predict(c.image) for c in va]
            oof_pred[name] += predictions
            scores[name] = score(task, va, predictions)
            if extra_cases:
                extra[name].append(score(task, extra_cases, [predictor.predict(c.image) for c in extra_cases]))
        recipe_model = variants[recipe]
        centres = {d: disc_centre_errors(recipe_model, cs) for d, cs in disc_sources.items()}
        shifts = shift_scores(recipe_model, va) if camera_shift and k not in disc_only else {}
        fold_records.append({**({"disc_centre": centres} if centres else {}), **({"camera_shift": shifts} if shifts else {}), "fold": k, **({"source": str(data[k])} if by_source else {}), "train_seconds": round(seconds, 1), "trained_on": len(tr), "cases": len(va), **scores[recipe],
                             "variants": {n: v for n, v in scores.items() if n != recipe}})
        print(json.dumps(fold_records[-1], default=float), flush=True)
        oof_cases += [] if k in disc_only else va
    pooled = {name: score(task, oof_cases, predictions) for name, predictions in oof_pred.items()}
    if size > 1 and pooled:  # the single model: each member index pooled over the folds, then their mean
        pooled = {"single (mean member)": _mean_scores([pooled.pop(f"member{j}") for j in range(size)]), **pooled}
        extra = {"single (mean member)": sum((extra.pop(f"member{j}") for j in range(size)), []), **extra} if extra else extra
    record = {
        "task": task, "data": [str(d) for d in data] if len(data) > 1 else str(data[0]),
        **({"also_train": [str(d) for d in also_train]} if also_train else {}),
        "folds": "leave-one-source-out" if by_source else folds, "members": members, **({"seeds": seeds} if seeds > 1 else {}),
        **({"only_folds": sorted(chosen)} if chosen else {}), **({"train_cases": train_cases} if train_cases else {}),
        **({"note": note} if note else {}),
        "config": {k: v for k, v in vars(config).items() if k != "extra"},
        "cross_validated": pooled.get(recipe, {}),  # none where only a disc-centre fold ran
        "recipe_variant": recipe,
        "variants": pooled,
        "per_fold": fold_records,
        "mean_train_seconds_per_fold": round(float(np.mean([f["train_seconds"] for f in fold_records])), 1),
        "total_seconds": round(time.time() - started, 1),
        "torch_threads": torch.get_num_threads(),
        "stamp": stamp(),
    }
    if disc_sources:  # the mean over the fold models
        record["disc_centre_test"] = {d: _mean_scores([f["disc_centre"][d] for f in fold_records]) for d in disc_sources}
    if extra:
        record["extra_test"] = {"data": str(extra_test), "per_fold": extra[recipe],
                                "variants": {n: _mean_scores(v) for n, v in extra.items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(json.dumps(record["variants"], indent=2, default=float))


def _mean_scores(scores: list[dict]) -> dict:
    """The mean of several score records, key by key (nested dicts and lists too)."""
    first = scores[0]
    if isinstance(first, dict):
        return {k: _mean_scores([s[k] for s in scores]) for k in first}
    if isinstance(first, list):
        return [_mean_scores([s[i] for s in scores]) for i in range(len(first))]
    return float(np.mean(scores))


if __name__ == "__main__":
    main()
