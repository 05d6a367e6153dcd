# shellcheck shell=bash
# Part of ./build.sh, which sources it (its settings and helpers: say, die, image, ...).
# The quick models that test and demo use when models/ has no checkpoint.

# Run `palm ...` inside palm-torch-base (no host torch needed) with $1 mounted at /work.
palm_in_container() {
    local dir=$1; shift
    docker run "${RUN_FLAGS[@]}" --user "$(id -u):$(id -g)" -v "$dir:/work" -w /work \
        --entrypoint palm "$(image torch-base)" "$@"
}

# The quick models: what `test` and `demo` run when models/ has no checkpoint. They learn the
# synthetic example from scratch in 3 to 4 minutes for the three on 2 cores, and tests/test_containers.py
# checks on held-back synthetic images that they did (AUC, Dice, fovea distance thresholds), so a
# change that stops the models from learning fails `./build.sh test`. Their recipes are
# quick-<task> in palm_algos/recipes.toml (no pretraining; data root: quick_models' $1).
QUICK_TRAIN=(--count 48 --size 256x256 --seed 0)    # their training images (palm data synth)
QUICK_HELDOUT=(--count 24 --size 512x448 --seed 1)  # the demo's example: never trained on

# Train the quick model of each task that models/ lacks into $1/<task>/<task>.pt (kept while its
# recipe is unchanged: its palm commands are stamped beside it), on synthetic images in $1/train.
quick_models() {
    local out=$1 task recipe train
    local seen="/work/${out#"$ROOT/build/"}"  # $out as palm_in_container "$ROOT/build" sees it
    mkdir -p "$out"
    [ -f "$out/train/labels.csv" ] || palm_in_container "$ROOT/build" data synth "$seen/train" "${QUICK_TRAIN[@]}" >/dev/null
    for task in "${TASKS[@]}"; do
        if [ -f "models/$task.pt" ]; then
            mkdir -p "$out/from-models/$task"; cp -u "models/$task.pt" "$out/from-models/$task/$task.pt"
            continue
        fi
        train=(train --recipe "quick-$task" --data-root "$seen" --out "$seen/$task/$task.pt")
        recipe="$(palm_in_container "$ROOT/build" "${train[@]}" --dry-run) ${QUICK_TRAIN[*]}" \
            || die "palm train --recipe quick-$task --dry-run failed"
        [ -f "$out/$task/$task.pt" ] && [ "$(cat "$out/$task/recipe" 2>/dev/null)" = "$recipe" ] && continue
        say "no models/$task.pt: training a quick $task model on synthetic images (palm train --recipe quick-$task, 1-2 min)"
        rm -rf "$out/$task"; mkdir -p "$out/$task"
        palm_in_container "$ROOT/build" "${train[@]}" >"$out/train-$task.log" 2>&1 \
            || { tail -20 "$out/train-$task.log" >&2; die "training the quick $task model failed"; }
        echo "$recipe" >"$out/$task/recipe"
    done
}

model_dir() { # the folder to mount at /opt/ml/model for task $2 given quick_models' $1
    if [ -f "models/$2.pt" ]; then echo "$1/from-models/$2"; else echo "$1/$2"; fi
}
