"""Write docs/RESULTS.md from docs/results/*.json (cross_validate.py and predict_speed.py records).

One row per run; a run's recipe (input size, zoom, epochs, training time) is in its row, so
recipes can be compared side by side.

    python benchmarks/results_table.py            # prints the Markdown
    python benchmarks/results_table.py --write    # writes docs/RESULTS.md
"""

from __future__ import annotations

import json
from pathlib import Path

from stamp import describe

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
INTRO = RESULTS.parent / "RESULTS.intro.md"  # the prose around the tables, kept by hand


def runs(prefix: str) -> list[dict]:
    found = [json.loads(p.read_text()) | {"file": p.name} for p in sorted(RESULTS.glob(f"{prefix}*.json"))]
    return sorted(found, key=lambda r: (r["config"]["arch"], r["config"].get("zoom", 1), r["config"]["input_size"],
                                        r["config"]["epochs"]))


def recipe(r: dict) -> str:
    c = r["config"]
    zoom, variant = c.get("zoom", 1), r.get("recipe_variant", "single")
    members, seeds = r.get("members", 1), r.get("seeds", 1)
    ensemble = (f", ensemble of {members} inner-fold models" if members > 1 else
                f", ensemble of {seeds} seeds" if seeds > 1 else "")
    view = (", field of view" if c.get("geometry") == "fov" else "") + (
        {"standardise": ", colours standardised", "local": ", local contrast standardised", "equalise": ", grey levels equalised",
         "none": "", None: ""}.get(c.get("colour"), f", colour {c.get('colour')}"))
    also = f", every fold also learning {' and '.join(map(_source_name, r['also_train']))}" if r.get("also_train") else ""
    seed = f", seed {c['seed']}" if c.get("seed") and seeds == 1 else ""
    tuned = "" if c.get("pretrained", "none") in ("none", "imagenet") else f", fine-tuned from {Path(c['pretrained']).name}"
    return (f"{c['input_size']} px{f', zoom {zoom}' if zoom > 1 else ''}, {c['epochs']} ep, batch {c['batch_size']}"
            f"{view}{also}{ensemble}{seed}{tuned}{', flip TTA' if variant.endswith('+tta') else ''}"
            + (f" ({r['note']})" if r.get("note") else ""))


def minutes(r: dict) -> str:
    """Mean and fastest fold: the machine is shared, and the fastest fold is the least disturbed."""
    fastest = min(f["train_seconds"] for f in r["per_fold"])
    return f"{r['mean_train_seconds_per_fold'] / 60:.1f} ({fastest / 60:.1f})"


def section(title: str, columns: list[str], rows: list[list[str]], intro: str = "") -> list[str]:
    """A Markdown section: title, optional paragraph, one table; nothing when there are no rows."""
    if not rows:
        return []
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return [f"## {title}", "", *([intro, ""] if intro else []), line(columns), "|" + "---|" * len(columns),
            *map(line, rows), ""]


FOLD_TIME, RECORD = "CPU min / fold: mean (fastest)", "record (its stamp where it has one: date, commit, device, torch)"


def record_cell(r: dict) -> str:
    """The record's file, and its stamp where it has one (records before the stamps have none)."""
    return f"`{r['file']}`" + (f" ({describe(r)})" if describe(r) else "")


def classification() -> list[str]:
    rows = []
    for r in runs("classification"):
        cv = r["cross_validated"]
        rows.append([recipe(r), str(r["folds"]), f"{cv['auc']:.4f}", f"{cv['auc_ci95'][0]:.4f} - {cv['auc_ci95'][1]:.4f}",
                     f"{cv['sensitivity_at_0.85_specificity']:.3f}", ", ".join(f"{f['auc']:.3f}" for f in r["per_fold"]),
                     minutes(r), record_cell(r)])
    return section("Classification: PALM-Training400 (224 px copies), ResNet50 from scratch",
                   ["recipe", "folds", "pooled out-of-fold AUC", "95% CI (bootstrap)", "sensitivity at 0.85 specificity",
                    "per-fold AUC", FOLD_TIME, RECORD], rows)


def fovea() -> list[str]:
    rows = []
    for r in runs("fovea-"):
        cv = r["cross_validated"]
        px, norm = cv["distance_px"], cv["distance_normalised"]
        beyond = f"{cv['beyond_0.05']} of {cv['cases']}" if "beyond_0.05" in cv else "–"  # older records lack it
        rows.append([r["config"]["arch"], recipe(r), f"{px['mean']:.1f}", f"{px['median']:.1f}", f"{norm['mean']:.4f}",
                     f"{norm['median']:.4f}", beyond, f"{cv['normalised_variance']:.5f}", minutes(r), record_cell(r)])
    return section("Fovea: IDRiD (69 images, 4288x2848), from scratch: the Table 1 rerun",
                   ["arch", "recipe", "mean distance (px)", "median (px)", "mean normalised", "median normalised",
                    "beyond 0.05", "variance (normalised)", FOLD_TIME, RECORD], rows)


def by_source(r: dict) -> bool:
    return r["folds"] == "leave-one-source-out"


def disc() -> list[str]:
    rows = []
    for r in (r for r in runs("disc") if not by_source(r)):
        cv = r["cross_validated"]
        extra = r.get("extra_test", {}).get("per_fold", [])
        drions = f"{sum(e['dice']['mean'] for e in extra) / len(extra):.4f}" if extra else "–"
        rows.append([recipe(r), str(r["folds"]), f"{cv['dice']['mean']:.4f}", f"{cv['dice']['median']:.4f}",
                     f"{cv['dice']['std']:.4f}", f"{cv['presence_f1']:.3f}", drions, minutes(r), record_cell(r)])
    return section("Optic disc: Drishti-GS1 training (50 images), DRIONS sample as a second test set, from scratch",
                   ["recipe", "folds", "out-of-fold mean Dice", "median", "std", "presence F1",
                    "DRIONS mean Dice (fold models, averaged)", FOLD_TIME, RECORD], rows)


def other_cameras() -> list[str]:
    """Leave one source out (a camera never trained on), and the fovea model's disc centre on
    the disc sources it never saw."""
    rows = []
    for r in runs("disc"):
        if not by_source(r):
            continue
        centres = {f["source"] for f in r["per_fold"] if "dice" not in f}  # sources marking disc centres only
        named = {s: _source_name(s) + (" (disc centres)" if s in centres else "") for s in r["data"]}
        for fold in r["per_fold"]:
            others = ", ".join([named[s] for s in r["data"] if s != fold["source"]]
                               + [f"{_source_name(s)} (disc centres)" for s in r.get("also_train", [])])
            if "dice" in fold:
                rows.append(["disc", recipe(r), others, _source_name(fold["source"]), f"{fold['dice']['mean']:.4f}",
                             f"{fold['dice']['median']:.4f}", f"{fold['below_0.5']} of {fold['cases']} below Dice 0.5",
                             f"`{r['file']}`"])
            else:  # where the disc model's disc lies, against the markup
                distance = fold["distance_normalised"]
                rows.append(["disc (its centroid)", recipe(r), others, named[fold["source"]], f"{distance['mean']:.4f}",
                             f"{distance['median']:.4f}", f"{fold['beyond_0.05']} of {fold['cases']} beyond 0.05; "
                             f"the markup on the disc in {fold['on_disc']}", f"`{r['file']}`"])
    for r in runs("fovea-"):
        for source, s in r.get("disc_centre_test", {}).items():
            trained_on = ", ".join([_source_name(r["data"])] + [f"{_source_name(extra)} (discs)" for extra in r.get("also_train", [])])
            rows.append(["fovea (its disc centre)", recipe(r), trained_on, _source_name(source),
                         f"{s['distance_normalised']['mean']:.4f}", f"{s['distance_normalised']['median']:.4f}",
                         f"{s['beyond_0.05']:.1f} of {s['cases']} beyond 0.05 (mean over the fold models)", f"`{r['file']}`"])
    intro = ("Each row is a model tested on photographs of a source (a camera) it never trained on: "
             "`cross_validate.py --leave-one-source-out` trains on all the other sources. Disc: Dice; on "
             "a source that marks disc centres only (IDRiD), the centroid of the model's disc against the "
             "markup; fovea: the joint model's disc-centre estimate against the centroid of the source's "
             "disc masks; distances as a share of the image size.")
    return section("Other cameras: per source, never trained on", ["task", "recipe", "trained on", "tested on", "mean",
                                                                    "median", "tail", RECORD], rows, intro)


def shifted(r: dict) -> list[tuple[str, list[dict]]]:
    """A record's camera shifts (camera_shift.py): each shift's scores, fold by fold."""
    folds = [f["camera_shift"] for f in r["per_fold"] if "camera_shift" in f]
    return [(name, [fold[name] for fold in folds]) for name in (folds[0] if folds else [])]


def pooled(scores: list[dict], key: str, stat: str = "mean") -> float:
    """A statistic of the folds' scores weighted by their cases (the mean over all cases)."""
    return sum(s[key][stat] * s["cases"] for s in scores) / sum(s["cases"] for s in scores)


def camera_shifts() -> list[str]:
    """The fovea and disc fold models on their held-out photographs as other cameras show them
    (camera_shift.py): the frame squared, the colours dimmed and compressed."""
    shifts = [r for r in runs("fovea-") + runs("camera-shift-") if r["task"] == "fovea"]
    rows = [[recipe(r), name, f"{pooled(scores, 'share_of_fov'):.4f}", f"{pooled(scores, 'distance_normalised'):.4f}",
             f"{sum(s['beyond_0.05'] for s in scores)} of {sum(s['cases'] for s in scores)}", f"`{r['file']}`"]
            for r in shifts for name, scores in shifted(r)]
    intro = ("Each fold model of a fovea cross-validation on its own held-out IDRiD photographs, as-shot and as other "
             "cameras would show them (`cross_validate.py --camera-shift`, `benchmarks/camera_shift.py`): the truth "
             "moves with the pixels. Distance as a share of the field of view's diameter, and normalised as PALM does "
             "by the changed image's size.")
    fovea = section("Other cameras, simulated: the fovea under a changed frame or colour",
                    ["recipe", "camera change", "share of the FOV: mean", "normalised: mean", "beyond 0.05", RECORD],
                    rows, intro)
    discs = [r for r in runs("disc") + runs("camera-shift-") if r["task"] == "disc"]
    rows = [[recipe(r), name, f"{pooled(scores, 'dice'):.4f}",
             f"{sum(s['below_0.5'] for s in scores)} of {sum(s['cases'] for s in scores)}", f"`{r['file']}`"]
            for r in discs for name, scores in shifted(r)]
    intro = ("Each fold model of a disc cross-validation on its own held-out Drishti-GS1 photographs, as-shot and as "
             "other cameras would show them (the same shifts): the mask moves with the pixels. Dice at the scale the "
             "model reads the photograph.")
    return fovea + section("Other cameras, simulated: the disc under a changed frame or colour",
                           ["recipe", "camera change", "mean Dice", "below 0.5", RECORD], rows, intro)


def fine_tuning() -> list[str]:
    """A model fine-tuned on some photographs of a camera it never saw, scored on the others,
    beside the same model before fine-tuning on the same photographs."""
    def dice(s: dict) -> str:
        return f"{s['dice']['mean']:.4f} (median {s['dice']['median']:.4f}, lowest {s['lowest']:.4f}), {s['below_0.5']} below 0.5"

    rows = []
    for r in runs("fine-tune-"):
        before = "before fine-tuning" + ("+tta" if r["recipe_variant"].endswith("+tta") else "")
        kept = r.get("extra_test")
        total = r["cross_validated"]["cases"]
        learned = sorted({f.get("trained_on", total - f["cases"]) for f in r["per_fold"]})
        rows.append([recipe(r), _source_name(r["data"]), f"{learned[0]}-{learned[-1]}" if len(learned) > 1 else str(learned[0]),
                     f"{r['folds']} folds, {total} photographs",
                     dice(r["variants"][before]), dice(r["cross_validated"]),
                     f"{_source_name(kept['data'])}: {kept['variants'][before]['dice']['mean']:.4f} -> "
                     f"{kept['variants'][r['recipe_variant']]['dice']['mean']:.4f}" if kept else "–",
                     minutes(r), record_cell(r)])
    intro = ("One's own camera: a model that never saw a source's photographs, fine-tuned (`palm train --pretrained "
             "MODEL.pt`) on each fold's share of them (all of it, or some: `--train-cases`) and scored on the rest; *before* is the same model on the same "
             "held-out photographs, untouched. Dice, pooled over the folds. *Kept* is the mean Dice on a source the "
             "model learned before, untouched -> fine-tuned (the mean over the fold models): what fine-tuning kept.")
    return section("Other cameras: fine-tuning on a few photographs of one's own", ["recipe", "camera", "fine-tuned on, a fold", "held out",
                   "before fine-tuning", "fine-tuned", "kept", FOLD_TIME, RECORD], rows, intro)


def _source_name(folder: str) -> str:
    path = Path(folder)
    return path.parent.name if path.name in ("Training", "images") else path.name


HEADLINE = {"classification": ("auc", "AUC"), "fovea": ("distance_normalised", "mean normalised distance"),
            "disc": ("dice", "mean Dice")}


def variants() -> list[str]:
    """Ensemble and TTA gains, each variant scored from the very same fold models."""
    rows = []
    for task, (key, label) in HEADLINE.items():
        for r in runs(task):
            if "variants" not in r or by_source(r):
                continue
            cells = []
            for name, scores in r["variants"].items():
                value = scores[key]["mean"] if isinstance(scores[key], dict) else scores[key]
                cells.append(f"{name}: {value:.4f}")
            extra = r.get("extra_test", {}).get("variants", {})
            drions = ", ".join(f"{n}: {v['dice']['mean']:.4f}" for n, v in extra.items()) or "–"
            rows.append([task, label, recipe(r), "; ".join(cells), drions, record_cell(r)])
    intro = ("Every variant of one record is scored from the same fold models: *single* is one model "
             "(for an ensemble record, each member scored alone, then averaged), *ensemble* the "
             "members' averaged output, *+tta* adds the mirror image (`palm predict --tta`).")
    return section("Ensembles and test-time augmentation, measured separately",
                   ["task", "metric", "recipe", "pooled out-of-fold, per variant", "second test set (DRIONS)", RECORD],
                   rows, intro)


def speed() -> list[str]:
    path = RESULTS / "speed.json"
    if not path.is_file():
        return []
    record = json.loads(path.read_text())
    if "batch_size" not in record:  # a record of the per-image path, before the pipeline: not comparable
        return []
    limit = "decoding_images_per_second" in record["rows"][0]  # since #25: the decoding limit beside the network
    columns = [("passes", "passes"), ("predict img/s", "predict_images_per_second"), ("bare img/s", "bare_images_per_second")]
    columns += [("decoding img/s", "decoding_images_per_second"), ("limit img/s", "limit_images_per_second")] if limit else []
    rows = [[r["task"], r["recipe"], *(_number(r[key]) for _, key in columns), f"**{r['ratio']:.2f}**"]
            for r in record["rows"]]
    decode = f", --decode {record['decode']}" if limit else ""
    intro = (f"Images per second, {record['images']} synthetic JPEGs of {record['image_size'][0]}x{record['image_size'][1]}, "
             f"{record['device']} ({record['where']}), batch {record['batch_size']}, "
             f"{record['workers']} decoding worker(s){decode}, measured in one run by `python benchmarks/predict_speed.py "
             "--out docs/results/speed.json`. End to end = `palm predict`'s pipeline (model loading excluded): "
             "decoding the files, resizing, every network pass in batches, decoding to original pixels and writing "
             "the PALM files. Bare = the network alone (ensemble and flip TTA included) on a ready batch of the same "
             "size, times the passes the pipeline ran per image (two with the refining pass). "
             + ("Decoding = the same images through the same worker pool, no network; limit = the slower of bare "
                "and decoding on a GPU, their sum on the CPU; ratio = end to end / limit. The last row runs every "
                "task in one pass (each image decoded once). " if limit else "Ratio = end to end / bare. ")
             + "Target: ratio >= 0.8." + (f" Note: {record['note']}." if record.get("note") else "")
             + (f" Recorded: {describe(record)}." if describe(record) else ""))
    lines = section("Prediction throughput: `palm predict` end to end vs. its limit",
                    ["task", "recipe", *(name for name, _ in columns), "ratio"], rows, intro)
    memory = record.get("memory", {})
    if not memory.get("runs") and (RESULTS / "speed-memory.json").is_file():  # the memory check run on its own
        memory = json.loads((RESULTS / "speed-memory.json").read_text()).get("memory", {})
    if memory.get("runs"):
        runs_ = memory["runs"]
        lines += [f"Peak resident memory of one run, {memory['recipe']}, "
                  f"{memory['image_size'][0]}x{memory['image_size'][1]} images: "
                  + "; ".join(f"{m['images']} images {m['peak_rss_mb']['main']:.0f} MB (largest decoding worker "
                              f"{m['peak_rss_mb']['largest_worker']:.0f} MB)" for m in runs_)
                  + " (`predict_speed.py --tasks \"\" --memory 100,1000`; each count in a fresh process).", ""]
    return lines


def _number(value: float) -> str:
    """Two decimals; a dash where the record has none (NaN: the all-tasks row's passes)."""
    return "–" if value != value else f"{value:.2f}"


def document() -> str:
    intro = INTRO.read_text() if INTRO.is_file() else "# Results\n"
    return intro.rstrip() + "\n\n" + "\n".join(classification() + fovea() + disc() + other_cameras() + fine_tuning() + camera_shifts() + variants() + speed())


def main() -> None:
    import sys

    text = document()
    if "--write" in sys.argv[1:]:
        (RESULTS.parent / "RESULTS.md").write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
