#!/usr/bin/env bash
# palm container images: build, test, export, demo.   ./build.sh help
#
# Everything it needs it sets up itself (Docker daemon, an offline base image, a wheelhouse, the
# project venv .venv for test and demo) and caches what is expensive: the base image lives in
# Docker, the wheels in ./wheelhouse, the venv in ./.venv.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD

TAG=${PALM_TAG:-latest}
TASKS=(classification fovea disc)
ALGOS=("${TASKS[@]}" all)            # algorithm images: one per task, and palm-all (every task in one)
SLUG_ARGS=(PALM_INPUT_SLUG PALM_CLASSIFICATION_SLUG PALM_FOVEA_SLUG PALM_DISC_SLUG)  # build arguments of the algorithm images
# The phase the end-to-end slug test imitates: palm-all built with these slugs, scored by kind.
TEST_SLUGS=(--input-slug fundus-photo --classification-slug pm-likelihood --fovea-slug fovea-location
            --disc-slug disc-mask)
WHEELHOUSE=$ROOT/wheelhouse
WORK=$ROOT/build/containers          # staging contexts, test inputs, test models (gitignored)
EXPORT=$ROOT/export
LOCAL_BASE=palm-debian-base:bookworm
DEBIAN_MIRROR=${PALM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DOCKERD_LOG=${PALM_DOCKERD_LOG:-/var/log/palm-dockerd.log}
# Security options of every test/demo run (grand-challenge runs algorithms much like this).
RUN_FLAGS=(--rm --network none --read-only --tmpfs /tmp --cap-drop=ALL
           --security-opt=no-new-privileges --memory=4g --pids-limit=256)
START=$(date +%s)

say() { printf '[build.sh %4ss] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }
image() { printf 'palm-%s:%s' "$1" "$TAG"; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "needs root for: $*"; fi; }

usage() {
    cat <<EOF
usage: ./build.sh COMMAND

  build [--classification-slug SLUG] [--fovea-slug SLUG] [--disc-slug SLUG] [--input-slug SLUG]
           Build the images: palm-torch-base (Python + torch + palm); palm-classification,
           palm-fovea, palm-disc and palm-all (the three tasks in one image) FROM it
           (inference.py + models/<task>.pt baked in when present); and palm-evaluation (no
           torch). The slug options (or PALM_CLASSIFICATION_SLUG=... etc. in the environment)
           set the grand-challenge socket slugs the algorithm images read and write, baked in
           as environment defaults (defaults: pathologic-myopia-likelihood, fovea,
           optic-disc-segmentation, color-fundus-image). Sets up what it needs first, cached for
           later runs: a Docker daemon, the base image (python:3.11-slim, or a Debian bookworm
           image made with debootstrap when Docker Hub is out of reach) and ./wheelhouse
           (pip download on this machine of the wheels the base image's Python and glibc
           install; image builds run with --network none).
  test     Run every image under --network none --read-only --cap-drop=ALL ... with /input
           read-only, in PALM batch mode and grand-challenge mode (a full-resolution
           2124x2056 image and a broken image included), and check the outputs with
           pytest -m docker tests/test_containers.py. Models: models/<task>.pt, else quick ones
           trained on synthetic images (--pretrained none) in build/containers/models, which
           must then reach AUC >= 0.9, Dice >= 0.8 and a fovea within 5 % of the image size on
           held-back synthetic images (the demo's example).
           Also builds palm-all-slugs:TAG (palm-all with ${TEST_SLUGS[*]})
           and scores its outputs with palm-evaluation, which finds them by kind.
  export   Write export/palm-<name>.tar.gz (docker save | gzip; palm-<name>-<tag>.tar.gz when
           PALM_TAG is not latest) for each image, export/<task>-model.tar.gz (the
           checkpoint, for grand-challenge's model upload) and export/all-model.tar.gz (the
           three, for palm-all).
  demo     Build, make the synthetic example (example/, palm data synth: 24 images the quick
           models never train on), train quick models when models/ has none (on 48 other
           synthetic images, 3 to 4 min for the three), run the three algorithm containers on it in
           grand-challenge mode (PALM_DEMO_JOBS images, default 8, one run each) and score
           them with the evaluation container, run palm-all in PALM batch mode on all images
           with overlays (PALM_OVERLAYS=1: overlays/<image>.jpg), and write the leaderboard
           page with its case gallery over both (out/demo/); prints where everything is.
  help     This text.

Environment:
  PALM_BASE_IMAGE   base of every image (default: python:3.11-slim if present or pullable,
                    else $LOCAL_BASE made with debootstrap)
  PALM_TORCH        cpu | cuda | auto (default auto: a CPU-only torch wheel from /opt/wheels
                    or PALM_TORCH_WHEEL when there is one, else pyproject's CUDA torch pin).
                    Each has its own wheelhouse (wheelhouse/torch-cpu, wheelhouse/torch-cuda).
                    The CUDA image runs on CPU-only machines too, so "test" checks it here:
                      PALM_TORCH=cuda PALM_TAG=cuda ./build.sh test
  PALM_TORCH_WHEEL  path of a CPU torch wheel to use
  PALM_TAG          image tag (default latest); PALM_TAG=cuda keeps the CUDA images beside
                    the CPU ones (palm-*:cuda and palm-*:latest)
  PALM_PYTHON       host Python with palm, pytest and SimpleITK for test and demo (default:
                    the project venv .venv, which test and demo make or complete themselves
                    with the README's install: python3 -m venv .venv && .venv/bin/pip
                    install -e '.[dev]')
  PALM_DEMO_JOBS    images the demo runs as grand-challenge jobs (default 8)
  PALM_INPUT_SLUG, PALM_CLASSIFICATION_SLUG, PALM_FOVEA_SLUG, PALM_DISC_SLUG
                    build-time slugs, as the build options (the options win); use another
                    PALM_TAG for images with other slugs, e.g.
                      PALM_TAG=phase2 ./build.sh build --fovea-slug fovea-point
EOF
}

# -- Docker ------------------------------------------------------------------------------------

ensure_docker() {
    if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
        if command -v apt-get >/dev/null; then
            say "installing docker.io and debootstrap (apt-get)"
            as_root apt-get update -qq
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
        fi
    fi
    command -v docker >/dev/null || die "no docker client; install docker.io"
    if ! docker info >/dev/null 2>&1; then
        command -v dockerd >/dev/null || die "no Docker daemon and no dockerd to start"
        say "starting dockerd (log: $DOCKERD_LOG)"
        as_root mkdir -p "$(dirname "$DOCKERD_LOG")"
        # No iptables/bridge here: every build and run uses --network none anyway.
        as_root sh -c "nohup dockerd --storage-driver=overlay2 --iptables=false --bridge=none >>'$DOCKERD_LOG' 2>&1 &"
        for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
        docker info >/dev/null 2>&1 || die "dockerd did not come up; see $DOCKERD_LOG"
    fi
    # BuildKit is needed for RUN --mount. docker >= 23 builds with the buildx plugin; the
    # docker.io 20.10 client has BuildKit built in.
    BUILD_CMD=()
    if docker buildx version >/dev/null 2>&1; then
        BUILD_CMD=(docker buildx build --load)
    else
        local client major
        for client in docker /usr/bin/docker; do
            command -v "$client" >/dev/null || continue
            major=$("$client" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1) || true
            if [ -n "$major" ] && [ "$major" -lt 23 ]; then
                BUILD_CMD=(env DOCKER_BUILDKIT=1 "$client" build); break
            fi
        done
    fi
    [ ${#BUILD_CMD[@]} -gt 0 ] || die "BuildKit needed: install the buildx plugin (docker-buildx) or docker.io 20.10"
}

docker_build() { "${BUILD_CMD[@]}" --network none --progress "${PALM_PROGRESS:-plain}" "$@"; }

# -- base image --------------------------------------------------------------------------------

ensure_base_image() {
    BASE=${PALM_BASE_IMAGE:-auto}
    [ "$BASE" != auto ] && { have_image "$BASE" || docker pull "$BASE" >&2; return; }
    if have_image python:3.11-slim; then BASE=python:3.11-slim; return; fi
    if have_image "$LOCAL_BASE"; then BASE=$LOCAL_BASE; return; fi
    if timeout 120 docker pull -q python:3.11-slim >/dev/null 2>&1; then BASE=python:3.11-slim; return; fi
    say "Docker Hub out of reach: making $LOCAL_BASE with debootstrap (Debian bookworm, Python 3.11)"
    command -v debootstrap >/dev/null || die "debootstrap is not installed"
    local dir t0=$(date +%s)
    dir=$(mktemp -d /var/tmp/palm-rootfs.XXXXXX)
    as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1 \
        bookworm "$dir" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { as_root rm -rf "$dir"; die "debootstrap failed; see $WORK/debootstrap.log"; }
    as_root sh -c "rm -rf '$dir'/var/cache/apt/*.bin '$dir'/var/cache/apt/archives/*.deb '$dir'/var/lib/apt/lists/* \
        '$dir'/usr/share/doc/* '$dir'/usr/share/man/* '$dir'/usr/share/locale/* '$dir'/usr/share/info/*"
    as_root tar -C "$dir" -c . | docker import -c 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >/dev/null
    as_root rm -rf "$dir"
    BASE=$LOCAL_BASE
    say "made $LOCAL_BASE in $(( $(date +%s) - t0 )) s"
}

# -- host Python: the project venv -------------------------------------------------------------

VENV=$ROOT/.venv
# What the demo and the container tests import on the host (the README's test install has it).
HOST_MODULES=(palm_algos evaluation SimpleITK pytest)
VENV_MODULES=("${HOST_MODULES[@]}" torch torchvision matplotlib)

has_modules() {  # has_modules PYTHON [--here] MODULE...: all importable (--here: palm from this checkout)
    local py=$1; shift
    [ -x "$py" ] || command -v "$py" >/dev/null || return 1
    "$py" - "$ROOT" "$@" 2>/dev/null <<'PY'
import importlib.util, os, pathlib, sys
sys.path = [p for p in sys.path if p not in ("", os.getcwd())]  # installed, not found in the checkout
root, names = pathlib.Path(sys.argv[1]).resolve(), sys.argv[2:]
here = names[:1] == ["--here"]
names = names[1:] if here else names
if any(importlib.util.find_spec(n) is None for n in names):
    sys.exit(1)
if here and pathlib.Path(importlib.util.find_spec("palm_algos").origin).resolve().parents[1] != root:
    sys.exit(1)
PY
}

ensure_venv() {
    # Sets PY, the host Python of the demo and the container tests: PALM_PYTHON, else the project
    # venv .venv, made or completed here with the README's test install when it lacks it:
    #   python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'
    if [ -n "${PALM_PYTHON:-}" ]; then
        PY=$PALM_PYTHON
        has_modules "$PY" "${HOST_MODULES[@]}" \
            || die "PALM_PYTHON=$PY lacks palm, pytest or SimpleITK: $PY -m pip install -e '.[dev]'"
        return
    fi
    PY=$VENV/bin/python
    has_modules "$PY" --here "${VENV_MODULES[@]}" && return
    local log=$WORK/venv.log t0=$(date +%s)
    mkdir -p "$WORK"; : >"$log"
    if [ ! -x "$PY" ]; then
        command -v python3 >/dev/null || die "no python3: install Python 3.11+ (or set PALM_PYTHON)"
        python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || die "python3 is $(python3 -V 2>&1 | cut -d' ' -f2); palm needs 3.11+ (or set PALM_PYTHON)"
        if ! python3 -c 'import ensurepip, venv' 2>/dev/null && command -v apt-get >/dev/null; then
            say "installing python3-venv (apt-get)"
            as_root apt-get update -qq
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        fi
        say "making the project venv: python3 -m venv .venv"
        python3 -m venv "$VENV" >>"$log" 2>&1 || die "python3 -m venv .venv failed: $(tail -1 "$log") (log: $log)"
    fi
    say "installing palm into .venv: .venv/bin/pip install -e '.[dev]' (the README's test install, with torch: a few minutes; log: ${log#"$ROOT/"})"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -e '.[dev]' >>"$log" 2>&1 \
        || die "pip install -e '.[dev]' into .venv failed: $(pip_error "$log") (log: $log)"
    has_modules "$PY" --here "${VENV_MODULES[@]}" || die ".venv still lacks palm's modules after pip install (log: $log)"
    say ".venv ready in $(( $(date +%s) - t0 )) s"
}

pip_error() {  # the line of pip's log $1 that says what went wrong
    local line
    line=$(sed -n 's/^ *ERROR: No matching distribution found for /no matching distribution found for /p' "$1" | tail -1)
    [ -n "$line" ] || line=$(sed -n 's/^ *ERROR: //p' "$1" | tail -1)
    [ -n "$line" ] || line=$(sed -n 's/^ *error: //p' "$1" | tail -1)
    [ -n "$line" ] || line=$(grep -v '^ *$' "$1" | tail -1)
    echo "$line" | cut -c1-300
}

pip_python() {
    # The Python whose pip fills the wheelhouse: PALM_PYTHON, .venv, python3, else a pip-only venv.
    if [ -n "${PALM_PYTHON:-}" ]; then echo "$PALM_PYTHON"
    elif [ -x "$VENV/bin/python" ]; then echo "$VENV/bin/python"
    elif python3 -m pip --version >/dev/null 2>&1; then command -v python3
    else
        [ -x "$WORK/pip-venv/bin/python" ] || python3 -m venv "$WORK/pip-venv" >/dev/null 2>&1 \
            || die "python3 has no pip and cannot make a venv: install python3-pip or python3-venv"
        echo "$WORK/pip-venv/bin/python"
    fi
}

# -- wheelhouse --------------------------------------------------------------------------------
#
# wheelhouse/core         everything but torch (pyproject's dependencies + setuptools to build palm)
# wheelhouse/torch-cpu    a CPU-only torch wheel + torchvision and their dependencies
# wheelhouse/torch-cuda   pyproject's torch pin (the CUDA build: nvidia-*, triton) + torchvision
# Each folder has its own stamp (.complete: a hash of its requirement lines and target
# platforms), so the two torch builds never evict each other.

choose_torch() {
    # Sets TORCH_FLAVOUR (cpu | cuda) and TORCH_LINES (torch + torchvision requirement lines; a
    # wheel path for a local CPU torch).
    local want=${PALM_TORCH:-auto} wheel=${PALM_TORCH_WHEEL:-}
    case $want in auto|cpu|cuda) ;; *) die "PALM_TORCH=$want: use cpu, cuda or auto" ;; esac
    if [ "$want" != cuda ] && [ -z "$wheel" ]; then
        wheel=$(ls /opt/wheels/torch-*+cpu-cp311-*x86_64.whl 2>/dev/null | sort -V | tail -1 || true)
    fi
    if [ "$want" = cpu ] && [ -z "$wheel" ]; then die "PALM_TORCH=cpu but no CPU torch wheel (set PALM_TORCH_WHEEL)"; fi
    if [ "$want" != cuda ] && [ -n "$wheel" ]; then
        [ -f "$wheel" ] || die "PALM_TORCH_WHEEL=$wheel: no such file"
        # torch 2.M.p pairs with torchvision 0.(M+15).p
        local version minor patch
        version=$(basename "$wheel" | cut -d- -f2)            # 2.13.0+cpu
        minor=$(echo "$version" | cut -d. -f2); patch=$(echo "${version%%+*}" | cut -d. -f3)
        TORCH_FLAVOUR=cpu
        TORCH_LINES="$wheel"$'\n'"torchvision==0.$((minor + 15)).$patch"
    else
        TORCH_FLAVOUR=cuda
        TORCH_LINES=$(python3 containers/tools/project_deps.py pyproject.toml --extra models)
    fi
}

wheel_target() {
    # Sets WHEEL_TARGET: pip download's options for wheels that install in the base image: CPython
    # 3.11, x86_64 and every manylinux tag its glibc accepts (2.36 on Debian bookworm, the local
    # base; nvidia-cudnn-cu13, for one, ships only manylinux_2_27 wheels).
    local glibc minor x
    glibc=$(docker run --rm --network none --entrypoint python3 "$BASE" -c \
        'import platform; print(platform.libc_ver()[1])' 2>/dev/null) || true
    minor=${glibc#2.}
    [[ $glibc = 2.* && $minor =~ ^[0-9]+$ && $minor -ge 17 ]] \
        || die "cannot read the glibc version of $BASE (got '${glibc}'); its python3 must run and be glibc >= 2.17"
    GLIBC_MINOR=$minor
    WHEEL_TARGET=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none)
    for ((x = minor; x >= 17; x--)); do WHEEL_TARGET+=(--platform "manylinux_2_${x}_x86_64"); done
    WHEEL_TARGET+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64
                   --platform linux_x86_64 --platform any)
}

fetch_failure() {
    # One line from pip download's log $1: which requirement could not be fetched, and why.
    local log=$1 req versions more=""
    req=$(sed -n 's/^ERROR: No matching distribution found for //p' "$log" | tail -1)
    if grep -qE 'NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|Max retries exceeded' "$log"; then
        echo "cannot fetch ${req:-the wheels}: the package index is out of reach (log: $log)"
    elif [ -n "$req" ]; then
        versions=$(sed -n 's/^ERROR: Could not find a version that satisfies the requirement .* (from versions: \(.*\))$/\1/p' "$log" | tail -1)
        if [ "$(echo "$versions" | tr ',' '\n' | wc -l)" -gt 4 ]; then more="..., "; fi
        versions=$(echo "$versions" | tr ',' '\n' | tail -4 | tr -d ' ' | paste -sd, - | sed 's/,/, /g')
        echo "cannot fetch $req: the index has no wheel of it for CPython 3.11, x86_64, manylinux_2_17..2_$GLIBC_MINOR (the base image has glibc 2.$GLIBC_MINOR); versions with one: ${more}${versions:-none} (log: $log)"
    else
        echo "pip download failed: $(pip_error "$log") (log: $log)"
    fi
}

fill_folder() {
    # fill_folder DIR WHAT REQUIREMENT...: pip download into DIR unless its stamp says it is filled.
    local dir=$1 what=$2 stamp log py t0=$(date +%s); shift 2
    stamp=$(printf '%s\n' "$@" "${WHEEL_TARGET[@]}" | sha256sum | cut -c1-16)
    [ "$(cat "$dir/.complete" 2>/dev/null)" = "$stamp" ] && return
    log=$WORK/wheelhouse-$(basename "$dir").log
    say "filling ${dir#"$ROOT/"} (pip download: $what; CPython 3.11, x86_64 manylinux_2_17..2_$GLIBC_MINOR wheels)"
    mkdir -p "$dir"
    rm -f "$dir/.complete"
    py=$(pip_python)
    "$py" -m pip download --disable-pip-version-check --progress-bar off -d "$dir" \
        "${WHEEL_TARGET[@]}" "$@" >"$log" 2>&1 || die "$(fetch_failure "$log")"
    echo "$stamp" >"$dir/.complete"
    say "${dir#"$ROOT/"}: $(du -sh "$dir" | cut -f1) in $(( $(date +%s) - t0 )) s"
}

ensure_wheelhouse() {
    choose_torch
    wheel_target
    if [ -f "$WHEELHOUSE/.complete" ]; then  # the one-folder layout of earlier versions
        say "moving to the per-flavour wheelhouse layout: removing the wheels at the top of ${WHEELHOUSE#"$ROOT/"}"
        rm -f "$WHEELHOUSE"/*.whl "$WHEELHOUSE/.complete" "$WHEELHOUSE/torch-requirements.txt"
    fi
    # shellcheck disable=SC2046
    fill_folder "$WHEELHOUSE/core" "pyproject's dependencies and setuptools" \
        $(python3 containers/tools/project_deps.py pyproject.toml) \
        $(python3 containers/tools/project_deps.py pyproject.toml --build-system)
    local dir=$WHEELHOUSE/torch-$TORCH_FLAVOUR spec line name
    # shellcheck disable=SC2086
    fill_folder "$dir" "$TORCH_FLAVOUR torch: $(echo "$TORCH_LINES" | xargs -n1 basename | paste -sd' ' -)" $TORCH_LINES
    # Name what the torch layer installs: package==version (a wheel path becomes its pin).
    while read -r line; do
        if [ -f "$line" ]; then
            name=$(basename "$line"); spec="torch==$(echo "$name" | cut -d- -f2)"
            [ -f "$dir/$name" ] || die "pip download did not fetch $line; remove ${dir#"$ROOT/"} and retry"
        else spec=$line; fi
        echo "$spec"
    done <<<"$TORCH_LINES" >"$dir/torch-requirements.txt"
}

# -- build -------------------------------------------------------------------------------------

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
    parse_slugs "$@"
    mkdir -p "$WORK"
    ensure_docker
    ensure_base_image
    ensure_wheelhouse
    local t0 task ctx
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
}

build_algorithm() {  # build_algorithm NAME IMAGE [--build-arg ...]: containers/algorithm with TASK=NAME, FROM palm-torch-base
    local name=$1 target=$2 ctx=$WORK/context/$1 t0=$(date +%s) task baked=(); shift 2
    rm -rf "$ctx"; mkdir -p "$ctx"; cp -r containers/algorithm/. "$ctx/"
    for task in "${TASKS[@]}"; do  # a task's image bakes its model; palm-all bakes every one present
        if [ -f "models/$task.pt" ] && { [ "$name" = all ] || [ "$name" = "$task" ]; }; then
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
            --input-slug|--classification-slug|--fovea-slug|--disc-slug)
                [ $# -ge 2 ] || die "$1 needs a value"
                opt=${1#--}; var=PALM_$(echo "${opt%-slug}" | tr a-z A-Z)_SLUG
                given[$var]=$2; shift 2 ;;
            --input-slug=*|--classification-slug=*|--fovea-slug=*|--disc-slug=*)
                opt=${1%%=*}; opt=${opt#--}; var=PALM_$(echo "${opt%-slug}" | tr a-z A-Z)_SLUG
                given[$var]=${1#*=}; shift ;;
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

# -- models for tests and the demo ---------------------------------------------------------------

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

# -- test ----------------------------------------------------------------------------------------

cmd_test() {
    local t0=$(date +%s)
    ensure_venv
    ensure_built
    mkdir -p "$WORK/data"
    quick_models "$WORK/models"
    [ -f "$WORK/models/heldout/labels.csv" ] || palm_in_container "$ROOT/build" data synth "/work/${WORK#"$ROOT/build/"}/models/heldout" "${QUICK_HELDOUT[@]}" >/dev/null
    # a phase with other slugs: palm-all built with them, its outputs scored by the evaluation image
    parse_slugs "${TEST_SLUGS[@]}"
    build_algorithm all "$(image all-slugs)" "${SLUG_BUILD_ARGS[@]}"
    say "running tests/test_containers.py"
    PALM_DOCKER_TESTS=1 PALM_TAG=$TAG PALM_TEST_SLUGS="${TEST_SLUGS[*]}" PALM_TEST_TORCH=$TORCH_FLAVOUR PALM_TEST_MODELS="$WORK/models" PALM_TEST_HELDOUT="$WORK/models/heldout" PALM_TEST_WORK="$WORK/test" \
        "$PY" -m pytest -q -m docker -p no:cacheprovider tests/test_containers.py "$@"
    say "container tests of the $TAG images ($TORCH_FLAVOUR torch) finished in $(( $(date +%s) - t0 )) s"
}

# -- export --------------------------------------------------------------------------------------

cmd_export() {
    ensure_built
    mkdir -p "$EXPORT"
    local name task t0
    local suffix=""
    [ "$TAG" = latest ] || suffix=-$TAG      # export/palm-<name>-cuda.tar.gz beside the CPU ones
    for name in evaluation "${ALGOS[@]}"; do
        t0=$(date +%s)
        docker save "$(image "$name")" | gzip -1 >"$EXPORT/palm-$name$suffix.tar.gz.tmp"
        mv "$EXPORT/palm-$name$suffix.tar.gz.tmp" "$EXPORT/palm-$name$suffix.tar.gz"
        say "export/palm-$name$suffix.tar.gz: $(du -h "$EXPORT/palm-$name$suffix.tar.gz" | cut -f1) in $(( $(date +%s) - t0 )) s"
    done
    for task in "${TASKS[@]}"; do
        if [ -f "models/$task.pt" ]; then
            tar -C models -czf "$EXPORT/$task-model.tar.gz" "$task.pt"
            say "export/$task-model.tar.gz (upload as the algorithm's model; extracted to /opt/ml/model)"
        else
            say "no models/$task.pt: no $task-model.tar.gz (train one: palm train $task ...)"
        fi
    done
    if [ -f models/classification.pt ] && [ -f models/fovea.pt ] && [ -f models/disc.pt ]; then
        tar -C models -czf "$EXPORT/all-model.tar.gz" classification.pt fovea.pt disc.pt
        say "export/all-model.tar.gz (palm-all's model: the three checkpoints)"
    fi
}

# -- demo ----------------------------------------------------------------------------------------

cmd_demo() {
    local t0=$(date +%s) example=$ROOT/example out=$ROOT/out/demo task job
    ensure_venv
    ensure_built
    # The example is the quick models' held-back set: they never train on it, so the scores mean
    # something (made again when an older demo left one of another shape).
    if [ "$(cat "$example/.synth" 2>/dev/null)" != "${QUICK_HELDOUT[*]}" ]; then
        say "making the synthetic example in example/ (palm data synth example ${QUICK_HELDOUT[*]})"
        rm -rf "$example"
        "$PY" -m palm_cli data synth "$example" "${QUICK_HELDOUT[@]}" >&2
        echo "${QUICK_HELDOUT[*]}" >"$example/.synth"
    fi
    mkdir -p "$WORK"
    quick_models "$WORK/models"
    rm -rf "$out"; mkdir -p "$out/submissions"
    # grand-challenge mode: one container run per image, as grand-challenge runs jobs (~8 s each
    # on 2 cores, so a spread of PALM_DEMO_JOBS images, with their ground truth for the scoring).
    "$PY" containers/test/gc_jobs.py prepare "$example" "$out/jobs" --limit "${PALM_DEMO_JOBS:-8}" \
        --truth "$out/jobs-truth" >/dev/null
    for task in "${TASKS[@]}"; do
        say "$(image "$task"): $(ls "$out/jobs" | wc -l) grand-challenge jobs, model $(model_dir "$WORK/models" "$task")"
        for job in "$out"/jobs/*/; do
            docker run "${RUN_FLAGS[@]}" -v "${job}input:/input:ro" -v "${job}output:/output" \
                -v "$(model_dir "$WORK/models" "$task"):/opt/ml/model:ro" "$(image "$task")" >>"$out/$task-gc.log" 2>&1 \
                || say "  $(basename "$job") failed: $(tail -1 "$out/$task-gc.log")"
        done
    done
    "$PY" containers/test/gc_jobs.py collect "$out/jobs" "$out/evaluation-input" >/dev/null
    say "$(image evaluation): scoring the jobs against their ground truth (grand-challenge mode)"
    mkdir -p "$out/submissions/quick-models-gc"; chmod 777 "$out/submissions/quick-models-gc"
    docker run "${RUN_FLAGS[@]}" -v "$out/evaluation-input:/input:ro" \
        -v "$out/jobs-truth:/opt/ml/input/data/ground_truth:ro" -v "$out/submissions/quick-models-gc:/output" \
        "$(image evaluation)" >"$out/evaluation.log" 2>&1 || { cat "$out/evaluation.log" >&2; die "the evaluation container failed"; }
    sed 's/^/  /' "$out/evaluation.log" >&2
    # PALM batch mode: palm-all on the image folder -> one PALM submission, and with
    # PALM_OVERLAYS=1 one picture per image with all three predictions (overlays/).
    mkdir -p "$out/submissions/quick-models-palm" "$out/all-model"; chmod 777 "$out/submissions/quick-models-palm"
    for task in "${TASKS[@]}"; do  # palm-all's model folder: <task>.pt each (copies: a mount follows no link out)
        cp "$(model_dir "$WORK/models" "$task")/$task.pt" "$out/all-model/"
    done
    say "$(image all): PALM batch mode on example/images, with overlays (PALM_OVERLAYS=1)"
    docker run "${RUN_FLAGS[@]}" -e PALM_OVERLAYS=1 -v "$example/images:/input:ro" \
        -v "$out/submissions/quick-models-palm:/output" -v "$out/all-model:/opt/ml/model:ro" "$(image all)" \
        >"$out/all-palm.log" 2>&1 || say "  failed: $(tail -1 "$out/all-palm.log")"
    say "writing the leaderboard (palm leaderboard)"
    "$PY" -m palm_cli leaderboard "$out/submissions" --ground-truth "$example" --out "$out/leaderboard" \
        >"$out/leaderboard.log" 2>&1 || { cat "$out/leaderboard.log" >&2; die "palm leaderboard failed"; }
    sed 's/^/  /' "$out/leaderboard.log" >&2
    grep '^|' "$out/leaderboard/leaderboard.md" | sed 's/^/  /' >&2  # the scores, as the page shows them
    cat >&2 <<EOF

demo finished in $(( $(date +%s) - t0 )) s
  synthetic example          $example
  models                     $(for t in "${TASKS[@]}"; do printf '%s ' "$(model_dir "$WORK/models" "$t")"; done)
  grand-challenge jobs       $out/jobs/<job>/{input,output}
  evaluation input / output  $out/evaluation-input, $out/submissions/quick-models-gc/metrics.json
                             (scored on the $(ls "$out/jobs" | wc -l) grand-challenge jobs only; PALM mode: all images)
  PALM batch submission      $out/submissions/quick-models-palm
  overlays (palm-all)        $out/submissions/quick-models-palm/overlays/<image>.jpg
  leaderboard                $out/leaderboard/leaderboard.html
  case gallery               $out/leaderboard/gallery/<submission>/ (the worst cases, in leaderboard.html)
  logs                       $out/*.log
EOF
}

case "${1:-help}" in
    build) shift; cmd_build "$@" ;;
    test) shift; cmd_test "$@" ;;
    export) shift; cmd_export "$@" ;;
    demo) shift; cmd_demo "$@" ;;
    help|-h|--help) usage ;;
    *) usage >&2; exit 2 ;;
esac
