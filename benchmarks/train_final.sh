#!/usr/bin/env bash
# The documented final recipes, one per task: the models docs/RESULTS.md reports, trained on
# every image of the task's data set. `palm predict --model OUT.pt` uses the result as it is
# (flip TTA as each task's default; each recipe is an ensemble of seeds, whose models are kept
# beside it as OUT-seedN.pt).
#
#   bash benchmarks/train_final.sh classification|fovea|disc DATA_ROOT OUT.pt
#
# The recipes are final-TASK in palm_algos/recipes.toml; this runs
#   palm train --recipe final-TASK --data-root DATA_ROOT --out OUT.pt
# (add --dry-run to see its palm commands). DATA_ROOT is laid out like ../shared/data
# (palm224/PALM-Training400, idrid, drishti-gs1/Training, drions-sample). From scratch (no ImageNet weights on
# our machines); set PALM_PRETRAINED=imagenet where torchvision's weights can be had. Each task
# trains in 31 to 57 minutes on a 2-core CPU (times in docs/RESULTS.md).
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 classification|fovea|disc DATA_ROOT OUT.pt" >&2; exit 2; }
TASK=$1 DATA=$2 OUT=$3
PALM=${PALM:-palm}

start=$(date +%s)
$PALM train --recipe "final-$TASK" --data-root "$DATA" --out "$OUT" ${PALM_PRETRAINED:+--pretrained "$PALM_PRETRAINED"}
echo "trained $TASK in $(( $(date +%s) - start )) s: $OUT" >&2
