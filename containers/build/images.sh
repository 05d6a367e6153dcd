# shellcheck shell=bash
# Part of ./build.sh, which sources it (its settings and helpers: say, die, image, ...).
# build: the images, staged contexts and the slug build arguments.

stage_torch_base() {
    # Sets TORCH_CONTEXT: palm-torch-base's build context, what containers/Dockerfile's torch-base
    # target uses laid out as in the repository, with wheelhouse/torch = wheelhouse/torch-$TORCH_FLAVOUR.
    # Hard links, so it costs nothing; one folder per torch build, because BuildKit keeps one
    # copy per context folder and would otherwise copy the 3 GB CUDA wheelhouse at every build.
    TORCH_CONTEXT=$WORK/context/torch-base-$TORCH_FLAVOUR
    local link=-al attempt
    for attempt in 1 2; do
        rm -rf "$TORCH_CONTEXT"; mkdir -p "$TORCH_CONTEXT/containers" "$TORCH_CONTEXT/wheelhouse"
        cp $link .dockerignore pyproject.toml palm_cli.py palm_algos evaluation "$TORCH_CONTEXT/" 2>/dev/null \
            && cp $link containers/tools "$TORCH_CONTEXT/containers/" 2>/dev/null \
            && cp $link "$WHEELHOUSE/core" "$TORCH_CONTEXT/wheelhouse/core" 2>/dev/null \
            && cp $link "$WHEELHOUSE/torch-$TORCH_FLAVOUR" "$TORCH_CONTEXT/wheelhouse/torch" 2>/dev/null \
            && return
        link=-a  # no hard links across file systems: copy
    done
    die "cannot stage the palm-torch-base build context in $TORCH_CONTEXT"
}

image_size() { docker image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }

cmd_build() {
    local name t0 task ctx  # local: a caller's own (release_step's name) stays its own
    parse_slugs "$@"
    mkdir -p "$WORK"
    ensure_docker
    ensure_base_image
    ensure_wheelhouse
    say "base image: $BASE; torch: $TORCH_FLAVOUR (${WHEELHOUSE#"$ROOT/"}/torch-$TORCH_FLAVOUR); tag: $TAG"
    t0=$(date +%s)
    docker_build --build-arg BASE_IMAGE="$BASE" -f containers/Dockerfile --target evaluation -t "$(image evaluation)" . \
        >"$WORK/build-evaluation.log" 2>&1 || { tail -30 "$WORK/build-evaluation.log" >&2; die "building $(image evaluation) failed (log: $WORK/build-evaluation.log)"; }
    say "built $(image evaluation) in $(( $(date +%s) - t0 )) s"
    t0=$(date +%s)
    stage_torch_base
    docker_build --build-arg BASE_IMAGE="$BASE" --label palm.torch="$TORCH_FLAVOUR" \
        -f "$ROOT/containers/Dockerfile" --target torch-base -t "$(image torch-base)" "$TORCH_CONTEXT" \
        >"$WORK/build-torch-base.log" 2>&1 || { tail -30 "$WORK/build-torch-base.log" >&2; die "building $(image torch-base) failed (log: $WORK/build-torch-base.log)"; }
    say "built $(image torch-base) in $(( $(date +%s) - t0 )) s"
    for name in "${ALGOS[@]}"; do
        build_algorithm "$name" "$(image "$name")" "${SLUG_BUILD_ARGS[@]}"
    done
    for name in evaluation torch-base "${ALGOS[@]}"; do
        printf '  %-28s %s\n' "$(image "$name")" "$(image_size "$(image "$name")")" >&2
    done
    tidy_docker
}

build_algorithm() {  # build_algorithm NAME IMAGE [--build-arg ...]: containers/algorithm with TASK=NAME, FROM palm-torch-base
    local name=$1 target=$2 ctx=$WORK/context/$1 t0=$(date +%s) task baked=(); shift 2
    rm -rf "$ctx"; mkdir -p "$ctx"; cp -r containers/algorithm/. "$ctx/"
    for task in "${TASKS[@]}"; do  # a task's image bakes its model and its GUIDE's (palm_algos/serve.py
        # guide_beside); palm-all bakes every one present
        if [ -f "models/$task.pt" ] && { [ "$name" = all ] || [ "$name" = "$task" ] || [ "$task" = "${GUIDE[$name]:-}" ]; }; then
            cp "models/$task.pt" "$ctx/model/$task.pt"; baked+=("models/$task.pt")
        fi
    done
    [ ${#baked[@]} -eq 0 ] || say "baking ${baked[*]} into $target"
    docker_build --build-arg BASE_IMAGE="$(image torch-base)" --build-arg TASK="$name" "$@" -t "$target" "$ctx" \
        >"$WORK/build-$name.log" 2>&1 || { tail -30 "$WORK/build-$name.log" >&2; die "building $target failed (log: $WORK/build-$name.log)"; }
    say "built $target in $(( $(date +%s) - t0 )) s${*:+ ($*)}"
}

parse_slugs() {
    # Sets SLUG_BUILD_ARGS from the build options (--fovea-slug SLUG, ...) over the environment
    # (PALM_FOVEA_SLUG, ...); empty: the Dockerfiles' defaults.
    local var opt value
    declare -A given=()
    while [ $# -gt 0 ]; do
        case $1 in
            --*-slug|--*-slug=*)  # --input-slug, or --<task>-slug for each of TASKS
                opt=${1%%=*}; opt=${opt#--}; var=PALM_$(echo "${opt%-slug}" | tr a-z A-Z)_SLUG
                [[ " ${SLUG_ARGS[*]} " == *" $var "* ]] || die "build: unknown option $1 (./build.sh help)"
                if [[ $1 == *=* ]]; then given[$var]=${1#*=}; shift
                else [ $# -ge 2 ] || die "$1 needs a value"; given[$var]=$2; shift 2; fi ;;
            *) die "build: unknown option $1 (./build.sh help)" ;;
        esac
    done
    SLUG_BUILD_ARGS=()
    for var in "${SLUG_ARGS[@]}"; do
        value=${given[$var]:-${!var:-}}
        [ -n "$value" ] || continue
        [[ $value =~ ^[A-Za-z0-9_][A-Za-z0-9_-]*$ ]] || die "$var=$value: a slug has letters, digits, '-' and '_' only"
        SLUG_BUILD_ARGS+=(--build-arg "$var=$value")
    done
}

ensure_built() {  # test, export and demo always use images of the current sources (cached steps are instant)
    cmd_build  # with the slugs of the environment (PALM_FOVEA_SLUG=...), if any
}
