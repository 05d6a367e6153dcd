#!/usr/bin/env bash
# The cross-validation runs behind docs/RESULTS.md, one after another (CPU, from scratch).
# Usage: bash benchmarks/run_cv.sh [classification|fovea|disc ...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${PALM_SHARED_DATA:-../shared/data}
mkdir -p docs/results runs
for task in "${@:-classification disc fovea}"; do
  for t in $task; do
    case $t in
      classification)
        python benchmarks/cross_validate.py classification --data "$DATA/palm224/PALM-Training400" \
          --folds 5 --epochs 8 --input-size 96 --batch-size 16 --out docs/results/classification.json ;;
      disc)
        python benchmarks/cross_validate.py disc --data "$DATA/drishti-gs1/Training" --extra-test "$DATA/drions-sample" \
          --folds 3 --epochs 15 --input-size 256 --batch-size 8 --out docs/results/disc.json ;;
      fovea)
        for arch in vgg19-fused vgg19 resnet50; do
          python benchmarks/cross_validate.py fovea --arch $arch --data "$DATA/idrid" \
            --folds 3 --epochs 15 --input-size 128 --batch-size 8 --out docs/results/fovea-$arch.json
        done ;;
    esac
  done
done
