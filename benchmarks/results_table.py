"""Write docs/RESULTS.md from docs/results/*.json (cross_validate.py and predict_speed.py records).

One row per run; a run's recipe (input size, zoom, epochs, training time) is in its row, so
recipes can be compared side by side.

    python benchmarks/results_table.py            # prints the Markdown
    python benchmarks/results_table.py --write    # writes docs/RESULTS.md
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
INTRO = RESULTS.parent / "RESULTS.intro.md"  # the prose around the tables, kept by hand


def runs(prefix: str) -> list[dict]:
    found = [json.loads(p.read_text()) | {"file": p.name} for p in sorted(RESULTS.glob(f"{prefix}*.json"))]
    return sorted(found, key=lambda r: (r["config"]["arch"], r["config"].get("zoom", 1), r["config"]["input_size"],
                                        r["config"]["epochs"]))


def recipe(r: dict) -> str:
    c = r["config"]
    zoom = c.get("zoom", 1)
    return (f"{c['input_size']} px{f', zoom {zoom}' if zoom > 1 else ''}, {c['epochs']} ep, batch {c['batch_size']}")


def minutes(r: dict) -> str:
    """Mean and fastest fold: the machine is shared, and the fastest fold is the least disturbed."""
    fastest = min(f["train_seconds"] for f in r["per_fold"])
    return f"{r['mean_train_seconds_per_fold'] / 60:.1f} ({fastest / 60:.1f})"


def classification() -> list[str]:
    rows = []
    for r in runs("classification"):
        cv = r["cross_validated"]
        per_fold = ", ".join(f"{f['auc']:.3f}" for f in r["per_fold"])
        rows.append(f"| {recipe(r)} | {r['folds']} | {cv['auc']:.4f} | {cv['auc_ci95'][0]:.4f} - {cv['auc_ci95'][1]:.4f} | "
                    f"{cv['sensitivity_at_0.85_specificity']:.3f} | {per_fold} | "
                    f"{minutes(r)} | `{r['file']}` |")
    return ["## Classification: PALM-Training400 (224 px copies), ResNet50 from scratch", "",
            "| recipe | folds | pooled out-of-fold AUC | 95% CI (bootstrap) | sensitivity at 0.85 specificity | "
            "per-fold AUC | CPU min / fold: mean (fastest) | record |",
            "|---|---|---|---|---|---|---|---|", *rows, ""] if rows else []


def fovea() -> list[str]:
    rows = []
    for r in runs("fovea-"):
        cv = r["cross_validated"]
        rows.append(f"| {r['config']['arch']} | {recipe(r)} | {cv['distance_px']['mean']:.1f} | "
                    f"{cv['distance_px']['median']:.1f} | {cv['distance_normalised']['mean']:.4f} | "
                    f"{cv['distance_normalised']['median']:.4f} | {cv['normalised_variance']:.5f} | {minutes(r)} | "
                    f"`{r['file']}` |")
    return ["## Fovea: IDRiD (69 images, 4288x2848), from scratch: the Table 1 rerun", "",
            "| arch | recipe | mean distance (px) | median (px) | mean normalised | median normalised | "
            "variance (normalised) | CPU min / fold: mean (fastest) | record |",
            "|---|---|---|---|---|---|---|---|---|", *rows, ""] if rows else []


def disc() -> list[str]:
    rows = []
    for r in runs("disc"):
        cv = r["cross_validated"]
        extra = r.get("extra_test", {}).get("per_fold", [])
        drions = f"{sum(e['dice']['mean'] for e in extra) / len(extra):.4f}" if extra else "–"
        rows.append(f"| {recipe(r)} | {r['folds']} | {cv['dice']['mean']:.4f} | {cv['dice']['median']:.4f} | "
                    f"{cv['dice']['std']:.4f} | {cv['presence_f1']:.3f} | {drions} | {minutes(r)} | `{r['file']}` |")
    return ["## Optic disc: Drishti-GS1 training (50 images), DRIONS sample as a second test set, from scratch", "",
            "| recipe | folds | out-of-fold mean Dice | median | std | presence F1 | DRIONS mean Dice (fold models, averaged) | "
            "CPU min / fold: mean (fastest) | record |",
            "|---|---|---|---|---|---|---|---|---|", *rows, ""] if rows else []


def speed() -> list[str]:
    path = RESULTS / "speed.json"
    if not path.is_file():
        return []
    record = json.loads(path.read_text())
    rows = [f"| {r['task']} | {r['input']} ({r['image_size'][0]}x{r['image_size'][1]}) | {r['input_size']} | "
            f"{r['zoom']} | {r['passes']:.0f} | {r['predict_seconds']:.3f} | {r['forward_seconds']:.3f} | "
            f"**{r['ratio']:.2f}** |" for r in record["rows"]]
    return ["## Prediction speed: `palm predict` end to end vs. the bare forward pass", "",
            f"Per image, {record['images']} synthetic JPEGs per row, CPU, {record['torch_threads']} threads, "
            "both measured in one run by `python benchmarks/predict_speed.py --out docs/results/speed.json`. "
            "End to end = read and decode the file, resize, every network pass, decoding to original "
            "pixels, writing the PALM files. The bare cost is the forward pass times the passes predict ran "
            "(two with the refining pass). Target: ratio <= 1.2.", "",
            "| task | input image | S | zoom | passes | predict s/img | forward s/img | ratio |",
            "|---|---|---|---|---|---|---|---|", *rows, ""]


def document() -> str:
    intro = INTRO.read_text() if INTRO.is_file() else "# Results\n"
    return intro.rstrip() + "\n\n" + "\n".join(classification() + fovea() + disc() + speed())


def main() -> None:
    import sys

    text = document()
    if "--write" in sys.argv[1:]:
        (RESULTS.parent / "RESULTS.md").write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
