# shellcheck shell=bash
# Part of ./build.sh, which sources it (its settings and helpers: say, die, image, ...).
# release: from a fresh clone to upload-ready images with the real models, one command.

RELEASE=$ROOT/build/release  # each finished step's stamp

# ./build.sh release [--data DIR] [--<task>-slug SLUG ...]
cmd_release() {
    local data=${PALM_DATA:-$ROOT/../shared/data} slugs=()
    while [ $# -gt 0 ]; do
        case $1 in
            --data) [ $# -ge 2 ] || die "--data needs a folder"; data=$2; shift 2 ;;
            --data=*) data=${1#*=}; shift ;;
            --*-slug|--*-slug=*) slugs+=("$1"); [[ $1 == *=* ]] || { slugs+=("${2:-}"); shift; }; shift ;;
            *) die "release: unknown option $1 (./build.sh help)" ;;
        esac
    done
    parse_slugs "${slugs[@]}"  # checked before hours of training, not after
    local arg
    for arg in "${SLUG_BUILD_ARGS[@]}"; do  # as the environment's slugs, which every later build takes
        [[ $arg == *=* ]] && export "${arg?}"
    done
    mkdir -p "$RELEASE"
    ensure_venv
    release_step models release_models "$data"
    release_step build cmd_build
    release_step test cmd_test
    release_step export cmd_export
    release_summary
}

release_step() {  # release_step NAME COMMAND ARGS...: timed; a step that fails can be run again
    local step=$1 t0=$(date +%s); shift
    say "release step '$step' ..."
    "$@"
    say "release step '$step' done in $(( $(date +%s) - t0 )) s"
}

# models/<task>.pt trained by benchmarks/train_final.sh (recipe final-<task>), unless it already
# holds the same recipe: its `palm train --dry-run` lines are stamped in models/<task>.recipe.
# A task whose training stopped is trained again; the finished ones are kept. The data folder
# is spelled one way (relative to the checkout, or absolute when far from it), so the stamp of
# `--data ../shared/data` holds for the default $ROOT/../shared/data too: the same data never
# trains an hour again for being spelled differently.
release_models() {
    local data=$1 task recipe why
    [ -d "$data" ] || die "no data folder $data: give --data DIR, laid out like ../shared/data (docs/DATA.md)"
    data=$(realpath -s --relative-to="$ROOT" "$data")
    [[ $data == ../../* ]] && data=$(realpath -s "$ROOT/$data")
    mkdir -p models
    for task in "${TASKS[@]}"; do
        recipe=$("$PY" -m palm_cli train --recipe "final-$task" --data-root "$data" --out "models/$task.pt" --dry-run) \
            || die "palm train --recipe final-$task --dry-run failed"
        if [ ! -f "models/$task.pt" ]; then
            why="no model yet"
        elif [ ! -f "models/$task.recipe" ]; then
            why="no models/$task.recipe: its training stopped, or it was made otherwise"
        elif [ "$(cat "models/$task.recipe")" != "$recipe" ]; then
            why="models/$task.recipe holds another recipe (or other data) than final-$task now"
        else
            say "models/$task.pt holds recipe final-$task: kept"
            continue
        fi
        say "training models/$task.pt ($why; recipe final-$task; $("$PY" -c 'import torch; print("CUDA" if torch.cuda.is_available() else "CPU: 31 to 57 min a task, docs/RESULTS.md")'))"
        rm -f "models/$task.recipe"
        PALM=${PALM:-"$PY -m palm_cli"} bash benchmarks/train_final.sh "$task" "$data" "models/$task.pt" \
            || die "training models/$task.pt failed"
        echo "$recipe" >"models/$task.recipe"
    done
}

release_summary() {  # what to upload, and the settings the phase needs
    local suffix="" name gpu
    [ "$TAG" = latest ] || suffix=-$TAG
    gpu="not needed (CPU torch; a GPU is used when present)"
    [ "$TORCH_FLAVOUR" = cuda ] && gpu="recommended (CUDA torch; it also runs on CPU)"
    {
        echo
        echo "Upload-ready (export/):"
        for name in "${ALGOS[@]}" evaluation; do
            printf '  %-32s %s\n' "palm-$name$suffix.tar.gz" "$(du -h "$EXPORT/palm-$name$suffix.tar.gz" | cut -f1)"
        done
        echo
        echo "Interfaces of each algorithm image (input -> outputs, slug (kind)):"
        "$PY" - "${ALGOS[@]}" <<'PY'
import os, sys
from palm_algos import formats

slug = lambda task: os.environ.get(f"PALM_{task.upper()}_SLUG") or formats.OUTPUT_SLUGS[task]
source = os.environ.get("PALM_INPUT_SLUG") or formats.INPUT_SLUG
for name in sys.argv[1:]:
    tasks = formats.TASKS if name == "all" else (name,)
    outputs = ", ".join(f"{slug(t)} ({formats.FORMATS[t].kind})" for t in tasks)
    print(f"  palm-{name}: {source} (Image) -> {outputs}")
PY
        echo
        echo "Phase settings: memory 8 GB (the tests run them in 4 GB), GPU $gpu;"
        echo "models are baked into the images (export/*-model.tar.gz are the same checkpoints for a separate model upload)."
    } >&2
}
