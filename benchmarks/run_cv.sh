#!/usr/bin/env bash
# The cross-validation runs behind docs/RESULTS.md, one after another (CPU, from scratch), then
# the speed benchmark and docs/RESULTS.md itself. Each writes docs/results/<record>.json.
# Usage: bash benchmarks/run_cv.sh [classification|fovea|disc|speed ...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${PALM_SHARED_DATA:-../shared/data}
# Each run is a cv-* recipe of palm_algos/recipes.toml (what it trains, and why, is written there).
runs() { local name; for name in "$@"; do python benchmarks/cross_validate.py --recipe "$name" --data-root "$DATA"; done; }
mkdir -p docs/results runs
for t in ${@:-classification disc fovea speed}; do
  case $t in
    classification)
      runs cv-classification-96px-8ep cv-classification cv-classification-224px cv-classification-224px-seeds cv-classification-ensemble cv-classification-seeds ;;
    disc)
      runs cv-disc cv-disc-zoom2 cv-disc-zoom2-30ep cv-disc-zoom2-tta cv-disc-zoom2-30ep-rerun cv-disc-seeds \
           cv-disc-wide-zoom2-30ep cv-disc-loso cv-disc-loso-idrid cv-disc-loso-idrid-seeds cv-disc-loso-every-source cv-disc-loso-every-source-seeds cv-disc-loso-every-source-atrophy \
           cv-disc-fov-all-sources cv-disc-fov-all-sources-local \
           cv-disc-fov-all-sources-local-seeds cv-disc-fov
      [ -f runs/ft/disc-unseen-drions.pt ] || palm train disc --data "$DATA/drishti-gs1/Training" --data "$DATA/idrid" \
        --pretrained none --geometry fov --colour local --input-size 256 --zoom 2 --epochs 15 --batch-size 8 \
        --val-fraction 0 --seed 0 --out runs/ft/disc-unseen-drions.pt
      runs cv-disc-fine-tune-drions cv-disc-fine-tune-drions-4 cv-disc-fine-tune-drions-8 ;;
    fovea)
      runs cv-fovea-vgg19-fused cv-fovea-vgg19 cv-fovea-resnet50 cv-fovea-vgg19-fused-zoom2 \
           cv-fovea-heatmaps-ensemble cv-fovea-heatmaps cv-fovea-heatmaps-seed1 cv-fovea-heatmaps-zoom2 \
           cv-fovea-heatmaps-fov cv-fovea-heatmaps-standardise cv-fovea-heatmaps-standardise-seed1 \
           cv-fovea-disc-sources cv-fovea-disc-sources-seed1 cv-fovea-disc-sources-seeds cv-fovea-disc-sources-drishti \
           cv-fovea-disc-sources-local cv-fovea-disc-sources-local-seed1 \
           cv-fovea-disc-sources-mild cv-fovea-disc-sources-equalise cv-fovea-disc-sources-atrophy cv-fovea-disc-sources-aimed cv-fovea-disc-sources-aimed-seeds ;;
    speed)
      python benchmarks/predict_speed.py --out docs/results/speed.json ;;
    *) echo "unknown run $t" >&2; exit 2 ;;
  esac
done
python benchmarks/results_table.py --write
