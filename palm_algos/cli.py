"""The commands of palm_algos: data, train, predict, ensemble. The `palm` command joins them
with evaluation's (palm_cli.py); `python -m palm_algos.cli` runs them alone (torchrun uses it).

Torch is imported inside the commands that need it, so `palm data` runs where only the
evaluation dependencies are installed.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from . import __version__, distributed
from .errors import PalmError, one_line
from .formats import TASKS
from .fov import COLOURS, GEOMETRIES


def user_errors(command):
    """Show a PalmError as one 'Error: ...' line and exit 1, never as a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PalmError as exc:
            raise click.ClickException(one_line(exc)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="palm")
def main():
    """PALM pathologic myopia methods: data, train, predict, ensemble (`palm` adds evaluate, leaderboard)."""


def _train_options(command):
    options = [
        click.option("--recipe", help="Train a named recipe of palm_algos/recipes.toml (final-TASK, quick-TASK: "
                                      "task, data and options; a seed ensemble where it is one); options given "
                                      "here win over the recipe's."),
        click.option("--data-root", type=click.Path(path_type=Path),
                     help="With --recipe: the folder its data folders are relative to (laid out like ../shared/data)."),
        click.option("--dry-run", is_flag=True, help="With --recipe: print the palm commands it runs, and run none."),
        click.option("--data", "data_dirs", multiple=True, type=click.Path(path_type=Path),
                     help="Data folder in any supported layout (repeat to combine folders)."),
        click.option("--out", type=click.Path(path_type=Path), help="Checkpoint file to write."),
        click.option("--arch", default="", help="Network (default: the paper's, first below): classification resnet50; "
                                                "fovea vgg19-fused, vgg19, resnet50, disc-fovea-heatmaps; "
                                                "disc resnet34-aspp-unet."),
        click.option("--pretrained", default="imagenet", show_default=True,
                     help="imagenet (torchvision weights API), none (from scratch), a backbone weights file, or a "
                          "palm model of the task to fine-tune (e.g. models/disc.pt on your camera's photographs: the "
                          "whole network starts from it and keeps its settings; of an ensemble, member SEED mod N)."),
        click.option("--input-size", default=0, help="Square input size in px (default: the task's)."),
        click.option("--zoom", default=1, show_default=True, type=click.IntRange(1, 4),
                     help="fovea/disc: >1 adds a refining pass on a window of the ZOOM x larger image "
                          "around the first estimate (1 = the paper's single pass)."),
        click.option("--geometry", default="", type=click.Choice(("",) + GEOMETRIES),
                     help="What the network sees: fov (the field of view at a fixed size, found in each "
                          "photograph) or squash (the whole image); default: the task's (fov for the disc, squash for the fovea)."),
        click.option("--colour", default="", type=click.Choice(("",) + COLOURS),
                     help="standardise (colours standardised inside the field of view), local (its local "
                          "contrast: the image less its local mean, standardised), equalise (each channel's grey "
                          "levels ranked inside the field of view: a camera's tone curve undone) or none; "
                          "default: the task's (standardise for the fovea, local for the disc)."),
        click.option("--epochs", default=30, show_default=True),
        click.option("--batch-size", default=16, show_default=True),
        click.option("--lr", default=1e-3, show_default=True),
        click.option("--val-fraction", default=0.2, show_default=True, help="Hold-out share for validation; 0 trains on all."),
        click.option("--augment", default="",
                     help="The task's augmentation: standard (fovea and disc: with camera-like colour, blur and JPEG changes), "
                          "none, or another the task offers (fovea and disc: classic, as before the field of view; "
                          "fovea: mild, classic with a squarer frame and a tone curve, atrophy, classic with myopic eyes' pale "
                          "atrophy painted beside the disc, or aimed, classic with the round field of a camera aimed elsewhere "
                          "(from the disc to near the fovea); disc: wide, or atrophy, standard with that atrophy painted around "
                          "its mask's disc); default: the task's (aimed for the fovea, standard otherwise)."),
        click.option("--folds", default=0, help="K-fold cross-validation instead of one hold-out: writes OUT.foldK.pt "
                                                "per fold and OUT, the ensemble of the K fold models."),
        click.option("--seed", default=0, show_default=True),
        click.option("--workers", default=0, show_default=True, help="DataLoader worker processes."),
        click.option("--resume", is_flag=True, help="Continue from <out>.last.pt (left by a run that stopped early)."),
        click.option("--keep-last", is_flag=True, help="Keep <out>.last.pt (weights, optimiser, schedule; 3x the "
                                                       "model's size) after the last epoch, to train on with --resume."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command("train")
@click.argument("task", required=False, type=click.Choice(TASKS))
@_train_options
@user_errors
def train_command(task, recipe, data_root, dry_run, data_dirs, out, arch, pretrained, input_size, zoom, geometry, colour,
                  epochs, batch_size, lr, val_fraction, augment, folds, seed, workers, resume, keep_last):
    """Train TASK (classification, fovea, disc) on one or more data folders, or a named --recipe.

    `palm train --recipe final-disc --data-root ../shared/data --out models/disc.pt` trains the
    documented disc models (--dry-run shows the commands).

    Writes OUT (the best epoch; the last without validation) and OUT.history.jsonl (one JSON
    line per epoch).

    Multi-GPU / multi-node: run under torchrun, e.g.
    `torchrun --nproc-per-node 4 -m palm_algos.cli train disc ...`.
    """
    if recipe:
        return _train_recipe(click.get_current_context(), recipe, data_root, dry_run)
    if not task or not data_dirs or not out:
        missing = [name for name, value in (("TASK", task), ("--data", data_dirs), ("--out", out)) if not value]
        raise click.UsageError(f"give {', '.join(missing)} (or a --recipe)")
    if data_root or dry_run:
        raise click.UsageError("--data-root and --dry-run go with --recipe")
    from .cases import read_cases
    from .tasks import get_task
    from .train import TrainConfig, holdout_split, kfold_splits, train

    task_ = get_task(task)
    cases = []
    for folder in data_dirs:
        table = read_cases(folder)
        for line in table.problems:
            click.echo(f"warning: {line}", err=True)
        cases += table.cases
    usable = [c for c in cases if task_.usable(c)]
    partial = sum(not task_.scorable(c) for c in usable)
    click.echo(f"{len(usable)} of {len(cases)} cases have {task} ground truth"
               + (f" ({partial} of them in part only, never validated on)" if partial else ""), err=True)
    if not usable:
        raise PalmError(f"{', '.join(map(str, data_dirs))}: no case has {task} ground truth to learn from")
    if note := task_.left_out(cases):
        click.echo(note, err=True)
    config = TrainConfig(arch=arch, pretrained=pretrained, input_size=input_size, zoom=zoom, geometry=geometry,
                         colour=colour, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, workers=workers,
                         augment=augment).resolved(task_)
    if unlearnable := sum(not task_.learns_from(c, config.arch) for c in usable):
        click.echo(f"--arch {config.arch} cannot learn from {unlearnable} of them (no {task} position to learn): "
                   "left out of training", err=True)
    if folds:
        summary = []
        for k, (tr, va) in enumerate(kfold_splits(task_, usable, folds, seed)):
            result = train(task_, tr, va, config, out.with_suffix(f".fold{k}.pt"), resume=resume,
                           keep_last=keep_last)
            summary.append(result["best"])
            click.echo(f"fold {k}: " + json.dumps(result["best"]))
        metric = f"val_{task_.metric_name}"
        values = [b[metric] for b in summary if b and metric in b]
        click.echo(f"cross-validated {task_.metric_name}: mean {sum(values) / len(values):.4f} over {len(values)} folds")
        if distributed.rank_and_world()[0] == 0:
            from .checkpoint import combine_checkpoints

            combine_checkpoints([out.with_suffix(f".fold{k}.pt") for k in range(folds)], out)
            click.echo(f"checkpoint: {out} (the ensemble of the {folds} fold models)")
        return
    tr, va = holdout_split(task_, usable, val_fraction, seed)
    result = train(task_, tr, va, config, out, resume=resume, keep_last=keep_last)
    click.echo(f"best: {json.dumps(result['best'])}")
    click.echo(f"checkpoint: {out}")


def _train_recipe(ctx: click.Context, name: str, data_root: Path | None, dry_run: bool) -> None:
    """Run (or with ``dry_run`` print) the `palm` commands of recipe ``name``, each parsed as
    typed: what is printed is what is trained."""
    import shlex

    from .recipes import given_options, train_commands

    given = given_options(ctx, leave=("recipe", "data_root", "dry_run"))
    if "task" in given:
        raise click.UsageError(f"give TASK or --recipe, not both (recipe {name} names its task)")
    commands = train_commands(name, data_root, given)
    for line in commands:  # each parses before any trains
        try:
            main.commands[line[0]].make_context(line[0], line[1:])
        except click.UsageError as exc:
            raise click.UsageError(f"recipe {name} is no palm {line[0]} command line: {exc.format_message()}") from None
    for line in commands:
        if dry_run:
            click.echo(shlex.join(["palm", *line]))
            continue
        click.echo(f"recipe {name}: palm {shlex.join(line)}", err=True)
        main.main(line, prog_name="palm", standalone_mode=False)


@main.command("predict")
@click.argument("tasks", nargs=-1, required=True, type=click.Choice(TASKS))
@click.option("--input", "input_dir", required=True, type=click.Path(path_type=Path), help="Folder of images (nested ok).")
@click.option("--output", "output_dir", required=True, type=click.Path(path_type=Path), help="Folder for the PALM files.")
@click.option("--model", "checkpoints", multiple=True, type=click.Path(path_type=Path),
              help="Checkpoint, one model or an ensemble; one per TASK, in the same order (default: models/<task>.pt).")
@click.option("--guide", type=click.Path(path_type=Path),
              help="disc without fovea: a joint disc + fovea model (the final fovea model) whose disc centre guides "
                   "the disc's refining window, as when both TASKs run (default: none; with fovea, its own model guides).")
@click.option("--tta/--no-tta", default=None,
              help="Average the prediction on the image and its mirror image (default: on where it pays; see docs/RESULTS.md).")
@click.option("--overlays", is_flag=True,
              help="Also write OUTPUT/overlays/<image>.jpg: the photograph with what the models found, every TASK on one picture.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1),
              help="Images per forward pass (the results do not depend on it).")
@click.option("--workers", default=None, type=click.IntRange(0),
              help="Processes decoding the images beside the network (default: one per core but one; 0: none).")
@click.option("--decode", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="gpu: JPEGs decoded by nvJPEG on the models' GPU, in batches (any other file, or a JPEG it "
                   "refuses, on the CPU); without CUDA, says so and decodes on the CPU.")
@click.option("--device", default=None,
              help="Where the models run: cpu, cuda, cuda:1 ... (default: this rank's GPU where CUDA is present, else the CPU).")
@click.option("--png/--no-png", default=False, show_default=True,
              help="Also write Disc_Segmentation/png/<image>.png beside each BMP (PALM reads the BMP; grand-challenge "
                   "an .mha socket: neither needs the PNG).")
@click.option("--resume", is_flag=True,
              help="Continue a stopped run in the same --output: images whose rows or masks are already there are "
                   "not predicted again.")
@user_errors
def predict_command(tasks, input_dir, output_dir, checkpoints, guide, tta, overlays, batch_size, workers, decode, device,
                    png, resume):
    """Predict each TASK (classification, fovea, disc; one or more) for every image in --input
    and write the PALM submission files. Each image is decoded once for all TASKs.

    A file that cannot be predicted is listed ("failed: ...") and the others are still written
    (exit status 1); files that are not images are listed as skipped (exit status 0). CSV rows
    are kept in <CSV>.partial while the run goes on; the CSV itself is written at the end.

    Many GPUs (or CPU processes): run under torchrun, e.g.
    `torchrun --nproc-per-node 4 -m palm_algos.cli predict disc ...`; each process predicts a
    share of the images and the PALM files are written once, as by one process.
    """
    if checkpoints and len(checkpoints) != len(tasks):
        raise click.BadParameter(f"give one --model per task ({len(tasks)}), or none", param_hint="--model")
    from .predict import Predictor, predict_batch
    from .tasks import get_task

    guided = [task for task in tasks if get_task(task).guide_task not in (None, *tasks)]  # what --guide aims
    if guide and not guided:
        raise click.BadParameter("guides the disc where fovea does not run (with fovea, its own model guides)",
                                 param_hint="--guide")

    models = dict(zip(tasks, checkpoints or [Path("models") / f"{task}.pt" for task in tasks]))
    rank = distributed.rank_and_world()[0]
    say = (lambda line: click.echo(one_line(line), err=True)) if rank == 0 else (lambda line: None)

    def load(task: str, path: Path) -> Predictor:
        predictor = Predictor.load(path, task=task, tta=tta, device=device)
        if guide and task in guided:
            predictor.guided_by(Predictor.load(guide, task=get_task(task).guide_task, device=device))
        return predictor

    try:
        device = str(distributed.join(device))
        batch = predict_batch(models, input_dir, output_dir, load, say=say, warn=say, overlays=overlays,
                              progress=rank == 0, batch_size=batch_size, workers=workers, decode=decode, png=png,
                              resume=resume)
    finally:
        distributed.leave()
    for task, run in batch.runs.items():
        skipped = f"; {len(run.skipped)} other file(s) skipped" if run.skipped else ""
        resumed = f" ({run.resumed} from the run resumed)" if run.resumed else ""
        if rank == 0:
            click.echo(one_line(f"wrote {task} predictions for {run.predicted} of {run.found} images{resumed} "
                                f"to {output_dir}{skipped}"))
    if batch.overlays and rank == 0:
        click.echo(one_line(f"wrote overlays to {batch.overlays}"))
    problems = sum(len(run.problems) for run in batch.runs.values())
    if problems:
        if rank:
            raise SystemExit(1)  # rank 0 says why
        raise click.ClickException(f"{problems} input(s) could not be predicted; see the 'failed:' lines above")


@main.command("ensemble")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="The ensemble checkpoint to write (never one of CHECKPOINTS).")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=Path))
@user_errors
def ensemble_command(out, checkpoints):
    """Join CHECKPOINTS (fold or seed models of one task, architecture and input size) into one
    ensemble checkpoint --out, which `palm predict` and the containers use like any model.

    `palm train --folds K` writes the ensemble of its fold models itself.
    """
    from .checkpoint import combine_checkpoints

    if any(out.exists() and path.exists() and out.samefile(path) for path in checkpoints):
        raise PalmError(f"{out}: --out is one of the checkpoints to join; name a new file for the ensemble")

    meta = combine_checkpoints(list(checkpoints), out)
    click.echo(f"wrote {out}: {meta['task']} ensemble of {meta['members']} {meta['arch']} models")


@main.group()
def data():
    """Inspect data folders and make the synthetic example."""


@data.command("inspect")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--decode", is_flag=True, help="Decode every image to find truncated files (slower).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@user_errors
def data_inspect(folder: Path, decode: bool, as_json: bool):
    """Report the cases, labels, fovea and mask coverage, sizes and problems in FOLDER."""
    from .cases import read_cases, summarise

    table = read_cases(folder, check_images=decode)
    summary = summarise(table)
    if as_json:
        click.echo(json.dumps({**summary, "problem_lines": table.problems}, indent=2))
        return
    click.echo(f"{folder}: {summary['layout']} layout")
    click.echo(f"  cases            {summary['cases']}")
    click.echo(f"  labelled         {summary['labelled']} ({summary['pathologic']} pathologic)")
    click.echo(f"  fovea            {summary['with_fovea']} with position, {summary['fovea_absent']} marked absent")
    click.echo(f"  disc masks       {summary['with_disc_mask']}")
    sizes = ", ".join(f"{k} ({v})" for k, v in list(summary["sizes"].items())[:5])
    click.echo(f"  sizes            {sizes}")
    click.echo(f"  problems         {summary['problems']}")
    for line in table.problems:
        click.echo(f"    {line}")


@data.command("synth")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--count", default=24, show_default=True, help="Number of images.")
@click.option("--size", default="512x512", show_default=True, help="Image size WxH.")
@click.option("--seed", default=0, show_default=True)
@user_errors
def data_synth(out: Path, count: int, size: str, seed: int):
    """Write a PALM-shaped synthetic example (images, labels.csv, Disc_Masks/) to OUT."""
    from .synth import write_palm_example

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WxH such as 512x512, got {size!r}", param_hint="--size")
    write_palm_example(out, count=count, size=(w, h), seed=seed)
    click.echo(f"wrote {count} synthetic cases to {out}")


if __name__ == "__main__":  # `torchrun -m palm_algos.cli train|predict ...`
    main()
