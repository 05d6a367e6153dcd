#!/usr/bin/env bash
# The documented final recipes, one per task: the models docs/RESULTS.md reports, trained on
# every image of the task's data set. `palm predict --model OUT.pt` uses the result as it is
# (flip TTA as each task's default; an ensemble where the recipe is one: the seed models of the
# classification and disc ensembles are kept beside it as OUT-seedN.pt).
#
#   bash benchmarks/train_final.sh classification|fovea|disc DATA_ROOT OUT.pt
#
# DATA_ROOT is laid out like ../shared/data (palm224/PALM-Training400, idrid,
# drishti-gs1/Training). From scratch by default (no ImageNet weights on our machines); set
# PALM_PRETRAINED=imagenet where torchvision's weights can be had. Each task trains within
# 60 minutes on a 2-core CPU (times in docs/RESULTS.md).
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 classification|fovea|disc DATA_ROOT OUT.pt" >&2; exit 2; }
TASK=$1 DATA=$2 OUT=$3
PALM=${PALM:-palm}
PRETRAINED=(--pretrained "${PALM_PRETRAINED:-none}")

# Trains `palm train TASK ARGS...` with seeds 0, 1 and 2, each on every image, and writes their
# ensemble to OUT (the recipes where the seed ensemble measurably helps, docs/RESULTS.md).
seed_ensemble() {
  local task=$1 seeds=() seed
  shift
  for seed in 0 1 2; do
    seeds+=("${OUT%.pt}-seed$seed.pt")
    $PALM train "$task" "$@" --out "${seeds[-1]}" "${PRETRAINED[@]}" --seed $seed --val-fraction 0
  done
  $PALM ensemble "$OUT" "${seeds[@]}"
}

start=$(date +%s)
case $TASK in
  classification)  # the paper's ResNet50 at 112 px, the ensemble of 3 seeds
    seed_ensemble classification --data "$DATA/palm224/PALM-Training400" \
        --input-size 112 --epochs 14 --batch-size 16 ;;
  fovea)  # disc-and-fovea heat maps, one model on every image
    $PALM train fovea --data "$DATA/idrid" --out "$OUT" "${PRETRAINED[@]}" --arch disc-fovea-heatmaps \
        --input-size 192 --epochs 50 --batch-size 8 --val-fraction 0 ;;
  disc)  # the paper's ResNet34-ASPP U-Net at 256 px with the refining pass, 30 epochs, 3 seeds
    seed_ensemble disc --data "$DATA/drishti-gs1/Training" \
        --input-size 256 --zoom 2 --epochs 30 --batch-size 8 ;;
  *) echo "unknown task $TASK (classification, fovea or disc)" >&2; exit 2 ;;
esac
echo "trained $TASK in $(( $(date +%s) - start )) s: $OUT" >&2
