"""Benchmark: score 400 full-resolution PALM cases (all three tasks) and say where time goes.

    python benchmarks/bench_evaluation.py [--cases 400] [--keep DIR]

Writes a PALM-shaped ground truth (2124x2056 JPEG images, fovea sheet, Disc_Masks/*.bmp) and a
perturbed PALM submission into a temporary folder (about 3.5 GB of BMP), scores it the way
`palm evaluate` does, and prints the time per task and per step. Target: <= 15 s for 400 cases
on two cores; decoding the 800 masks should dominate.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

import palm_algos.cases as cases_module
from evaluation import masks, metrics, scoring
from evaluation.submission import read_palm_submission
from palm_algos.cases import read_cases
from palm_algos.formats import CSV_NAMES, DISC_FOLDER, PALM_COLUMNS

W, H = 2124, 2056


def disc(cx: int, cy: int, r: int) -> np.ndarray:
    """PALM mask: 0 = disc, 255 = background; drawn in a patch, not over the whole image."""
    mask = np.full((H, W), 255, np.uint8)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    mask[cy - r : cy + r + 1, cx - r : cx + r + 1][xx**2 + yy**2 <= r**2] = 0
    return mask


def generate(root: Path, count: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    truth, sub = root / "truth", root / "submission"
    (truth / "Disc_Masks").mkdir(parents=True)
    (sub / DISC_FOLDER).mkdir(parents=True)
    photo = root / "photo.jpg"
    Image.new("RGB", (W, H), (150, 70, 40)).save(photo, quality=90)
    fovea_rows, risk_rows, pred_fovea_rows = ["imgName,Fovea_X,Fovea_Y"], [], []
    for i in range(count):
        name = f"{'P' if i < count // 2 else 'N'}{i + 1:04d}"
        shutil.copyfile(photo, truth / f"{name}.jpg")
        fx, fy = (0, 0) if i % 50 == 0 else (int(rng.integers(800, 1300)), int(rng.integers(800, 1200)))
        fovea_rows.append(f"{name}.jpg,{fx},{fy}")
        pred_fovea_rows.append(f"{name}.jpg,{fx + rng.normal(0, 30):.1f},{fy + rng.normal(0, 30):.1f}")
        label = name[0] == "P"
        risk_rows.append(f"{name}.jpg,{np.clip(0.35 * label + rng.random() * 0.65, 0, 1):.4f}")
        cx, cy, r = int(rng.integers(300, 1800)), int(rng.integers(300, 1700)), int(rng.integers(120, 200))
        empty = i % 40 == 0  # a few images without a visible disc
        Image.fromarray(np.full((H, W), 255, np.uint8) if empty else disc(cx, cy, r)).save(truth / "Disc_Masks" / f"{name}.bmp")
        dx, dy = rng.integers(-15, 16, 2)
        Image.fromarray(disc(cx + int(dx), cy + int(dy), r + int(rng.integers(-10, 11)))).save(
            sub / DISC_FOLDER / f"{name}.bmp")
    (truth / "fovea.csv").write_text("\n".join(fovea_rows) + "\n")
    for task, rows in (("classification", risk_rows), ("fovea", pred_fovea_rows)):
        (sub / CSV_NAMES[task]).write_text(",".join(PALM_COLUMNS[task]) + "\n" + "\n".join(rows) + "\n")
    return truth, sub


def timed(table: dict, key: str, module, attr: str) -> None:
    """Wrap module.attr so that its total time is added to table[key]."""
    original = getattr(module, attr)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            table[key] += time.perf_counter() - start

    setattr(module, attr, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=400)
    parser.add_argument("--keep", type=Path, help="generate into (and keep) this folder")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="palm-bench-"))
    try:
        start = time.perf_counter()
        truth, sub = generate(root, args.cases)
        print(f"generated {args.cases} cases of {W}x{H} in {time.perf_counter() - start:.1f} s ({root})")

        steps: dict[str, float] = defaultdict(float)
        timed(steps, "decode ground truth masks", cases_module, "read_grey")
        timed(steps, "decode predicted masks", masks, "read_grey")
        timed(steps, "label-map check", masks, "_is_label_map")
        timed(steps, "Dice", metrics, "dice")
        timed(steps, "Hausdorff (surface k-d tree)", metrics, "hausdorff")
        tasks: dict[str, float] = {}
        for task, fn in (("classification", "_classification"), ("fovea", "_fovea"), ("disc", "_disc")):
            tasks[task] = 0.0
            timed(tasks, task, scoring, fn)

        start = time.perf_counter()
        table = read_cases(truth)
        read_truth = time.perf_counter() - start
        start = time.perf_counter()
        submission = read_palm_submission(sub)
        read_sub = time.perf_counter() - start
        start = time.perf_counter()
        result = scoring.score(table.cases, submission)
        total_score = time.perf_counter() - start
        total = read_truth + read_sub + total_score

        print(f"\nread ground truth (headers, sheet)   {read_truth:6.2f} s")
        print(f"read submission (CSV, file list)      {read_sub:6.2f} s")
        for task, seconds in tasks.items():
            print(f"score {task:<30} {seconds:6.2f} s")
        print(f"total                                 {total:6.2f} s  ({total / args.cases * 1000:.1f} ms per case)")
        print("\ndisc steps:")
        for step, seconds in sorted(steps.items(), key=lambda kv: -kv[1]):
            print(f"  {step:<34} {seconds:6.2f} s")
        decode = steps["decode ground truth masks"] + steps["decode predicted masks"]
        print(f"  {'decode, both masks together':<34} {decode:6.2f} s")
        grouped = {"decoding masks (PIL -> numpy)": decode,
                   **{k: v for k, v in steps.items() if not k.startswith("decode")}}
        print(f"dominant step: {max(grouped, key=grouped.get)}")
        agg = result["aggregates"]
        print(f"\nAUC {agg['classification']['auc']:.3f}, fovea mean distance {agg['fovea']['mean_distance']:.1f} px, "
              f"mean Dice {agg['disc']['mean_dice']:.3f}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
