#!/usr/bin/env bash
# palm container images: build, test, export, demo.   ./build.sh help
#
# Everything it needs it sets up itself (Docker daemon, an offline base image, a wheelhouse) and
# caches what is expensive: the base image lives in Docker, the wheels in ./wheelhouse.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD

TAG=${PALM_TAG:-latest}
TASKS=(classification fovea disc)
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

  build    Build the four images: palm-torch-base (Python + torch + palm), palm-classification,
           palm-fovea and palm-disc FROM it (inference.py + models/<task>.pt baked in when
           present), and palm-evaluation (no torch). Sets up what it needs first, cached for
           later runs: a Docker daemon, the base image (python:3.11-slim, or a Debian bookworm
           image made with debootstrap when Docker Hub is out of reach) and ./wheelhouse
           (pip download on this machine; image builds run with --network none).
  test     Run every image under --network none --read-only --cap-drop=ALL ... with /input
           read-only, in PALM batch mode and grand-challenge mode (a full-resolution
           2124x2056 image and a broken image included), and check the outputs with
           pytest -m docker tests/test_containers.py. Models: models/<task>.pt, else tiny ones
           trained on synthetic data (1 epoch, --pretrained none) in build/containers/models.
  export   Write export/palm-<name>.tar.gz (docker save | gzip) for each image, and
           export/<task>-model.tar.gz (the checkpoint, for grand-challenge's model upload).
  demo     Build, make the synthetic example (example/, palm data synth), train quick models
           when models/ has none (saying so), run the three algorithm containers on it in
           grand-challenge mode (PALM_DEMO_JOBS images, default 8, one run each) and score
           them with the evaluation container, run them in PALM batch mode on all images, and
           write the leaderboard page over both (out/demo/); prints where everything is.
  help     This text.

Environment:
  PALM_BASE_IMAGE   base of every image (default: python:3.11-slim if present or pullable,
                    else $LOCAL_BASE made with debootstrap)
  PALM_TORCH        cpu | cuda | auto (default auto: a CPU-only torch wheel from /opt/wheels
                    or PALM_TORCH_WHEEL when there is one, else pyproject's CUDA torch pin)
  PALM_TORCH_WHEEL  path of a CPU torch wheel to use
  PALM_TAG          image tag (default latest)
  PALM_PYTHON       host Python with palm and pytest (default .venv/bin/python, else python3)
  PALM_DEMO_JOBS    images the demo runs as grand-challenge jobs (default 8)
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

# -- wheelhouse --------------------------------------------------------------------------------

host_python() {
    if [ -n "${PALM_PYTHON:-}" ]; then echo "$PALM_PYTHON"
    elif [ -x "$ROOT/.venv/bin/python" ]; then echo "$ROOT/.venv/bin/python"
    else command -v python3; fi
}

torch_requirements() {
    # Prints the torch + torchvision requirement lines (a wheel path for a local CPU torch).
    local flavour=${PALM_TORCH:-auto} wheel=${PALM_TORCH_WHEEL:-}
    if [ "$flavour" != cuda ] && [ -z "$wheel" ]; then
        wheel=$(ls /opt/wheels/torch-*+cpu-cp311-*x86_64.whl 2>/dev/null | sort -V | tail -1 || true)
    fi
    if [ "$flavour" = cpu ] && [ -z "$wheel" ]; then die "PALM_TORCH=cpu but no CPU torch wheel (set PALM_TORCH_WHEEL)"; fi
    if [ "$flavour" != cuda ] && [ -n "$wheel" ]; then
        # torch 2.M.p pairs with torchvision 0.(M+15).p
        local version minor patch
        version=$(basename "$wheel" | cut -d- -f2)            # 2.13.0+cpu
        minor=$(echo "$version" | cut -d. -f2); patch=$(echo "${version%%+*}" | cut -d. -f3)
        echo "$wheel"
        echo "torchvision==0.$((minor + 15)).$patch"
    else
        python3 containers/tools/project_deps.py pyproject.toml --extra models
    fi
}

ensure_wheelhouse() {
    local py torch_lines stamp
    py=$(host_python)
    torch_lines=$(torch_requirements)
    stamp=$( { python3 containers/tools/project_deps.py pyproject.toml; python3 containers/tools/project_deps.py pyproject.toml --build-system; echo "$torch_lines"; } | sha256sum | cut -c1-16)
    if [ "$(cat "$WHEELHOUSE/.complete" 2>/dev/null)" = "$stamp" ]; then return; fi
    say "filling $WHEELHOUSE (pip download: cp311 manylinux wheels; torch: $(echo "$torch_lines" | head -1 | xargs basename))"
    local t0=$(date +%s)
    mkdir -p "$WHEELHOUSE"
    local target=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none
                  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
                  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform linux_x86_64 --platform any)
    "$py" -m pip download -q --disable-pip-version-check -d "$WHEELHOUSE" "${target[@]}" \
        $(python3 containers/tools/project_deps.py pyproject.toml) \
        $(python3 containers/tools/project_deps.py pyproject.toml --build-system) 2>&1 | grep -v '^WARNING: Location' >&2 || true
    # shellcheck disable=SC2086
    "$py" -m pip download -q --disable-pip-version-check -d "$WHEELHOUSE" "${target[@]}" \
        $torch_lines 2>&1 | grep -v '^WARNING: Location' >&2 || true
    # Name what the torch layer installs: package==version from the wheels just fetched.
    local spec line name
    : >"$WHEELHOUSE/torch-requirements.txt"
    while read -r line; do
        if [ -f "$line" ]; then
            name=$(basename "$line"); spec="torch==$(echo "$name" | cut -d- -f2)"
            [ -f "$WHEELHOUSE/$name" ] || die "pip download did not fetch $line"
        else spec=$line; fi
        echo "$spec" >>"$WHEELHOUSE/torch-requirements.txt"
    done <<<"$torch_lines"
    # pip download says nothing when one requirement fails: check they all resolve offline.
    "$py" -m pip download -q --disable-pip-version-check --no-index --find-links "$WHEELHOUSE" -d "$WORK/wheel-check" \
        "${target[@]}" $(python3 containers/tools/project_deps.py pyproject.toml) \
        -r "$WHEELHOUSE/torch-requirements.txt" >/dev/null 2>&1 \
        || die "the wheelhouse is incomplete (pip download failed above?); remove $WHEELHOUSE and retry"
    rm -rf "$WORK/wheel-check"
    echo "$stamp" >"$WHEELHOUSE/.complete"
    say "wheelhouse: $(du -sh "$WHEELHOUSE" | cut -f1) in $(( $(date +%s) - t0 )) s"
}

# -- build -------------------------------------------------------------------------------------

image_size() { docker image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }

cmd_build() {
    mkdir -p "$WORK"
    ensure_docker
    ensure_base_image
    ensure_wheelhouse
    local t0 task ctx
    say "base image: $BASE"
    t0=$(date +%s)
    docker_build --build-arg BASE_IMAGE="$BASE" -f containers/evaluation/Dockerfile -t "$(image evaluation)" . \
        >"$WORK/build-evaluation.log" 2>&1 || { tail -30 "$WORK/build-evaluation.log" >&2; die "building $(image evaluation) failed (log: $WORK/build-evaluation.log)"; }
    say "built $(image evaluation) in $(( $(date +%s) - t0 )) s"
    t0=$(date +%s)
    docker_build --build-arg BASE_IMAGE="$BASE" -f containers/base/Dockerfile -t "$(image torch-base)" . \
        >"$WORK/build-torch-base.log" 2>&1 || { tail -30 "$WORK/build-torch-base.log" >&2; die "building $(image torch-base) failed (log: $WORK/build-torch-base.log)"; }
    say "built $(image torch-base) in $(( $(date +%s) - t0 )) s"
    for task in "${TASKS[@]}"; do
        t0=$(date +%s)
        ctx=$WORK/context/$task
        rm -rf "$ctx"; mkdir -p "$ctx"; cp -r "containers/$task/." "$ctx/"
        if [ -f "models/$task.pt" ]; then
            cp "models/$task.pt" "$ctx/model/$task.pt"
            say "baking models/$task.pt into $(image "$task")"
        fi
        docker_build --build-arg BASE_IMAGE="$(image torch-base)" -t "$(image "$task")" "$ctx" \
            >"$WORK/build-$task.log" 2>&1 || { tail -30 "$WORK/build-$task.log" >&2; die "building $(image "$task") failed (log: $WORK/build-$task.log)"; }
        say "built $(image "$task") in $(( $(date +%s) - t0 )) s"
    done
    for name in evaluation torch-base "${TASKS[@]}"; do
        printf '  %-28s %s\n' "$(image "$name")" "$(image_size "$(image "$name")")" >&2
    done
}

ensure_built() {  # test, export and demo always use images of the current sources (cached steps are instant)
    cmd_build
}

# -- models for tests and the demo ---------------------------------------------------------------

# Run `palm ...` inside palm-torch-base (no host torch needed) with $1 mounted at /work.
palm_in_container() {
    local dir=$1; shift
    docker run "${RUN_FLAGS[@]}" --user "$(id -u):$(id -g)" -v "$dir:/work" -w /work \
        --entrypoint palm "$(image torch-base)" "$@"
}

# Print the checkpoint folder for each task: models/ when it has <task>.pt, else tiny models.
quick_models() {
    local out=$1 data=$2 task
    mkdir -p "$out"
    for task in "${TASKS[@]}"; do
        if [ -f "models/$task.pt" ]; then
            mkdir -p "$out/from-models/$task"; cp -u "models/$task.pt" "$out/from-models/$task/$task.pt"
            continue
        fi
        [ -f "$out/$task/$task.pt" ] && continue
        say "no models/$task.pt: training a quick $task model on synthetic data (1 epoch, no pretraining; for testing only)"
        mkdir -p "$out/$task"
        local arch=() size=64
        [ "$task" = fovea ] && arch=(--arch resnet50)
        palm_in_container "$ROOT/build" train "$task" --data "/work/${data#"$ROOT/build/"}" \
            --out "/work/${out#"$ROOT/build/"}/$task/$task.pt" --pretrained none --epochs 1 \
            --input-size "$size" --batch-size 4 "${arch[@]}" >"$out/train-$task.log" 2>&1 \
            || { tail -20 "$out/train-$task.log" >&2; die "training the quick $task model failed"; }
    done
}

model_dir() { # the folder to mount at /opt/ml/model for task $2 given quick_models' $1
    if [ -f "models/$2.pt" ]; then echo "$1/from-models/$2"; else echo "$1/$2"; fi
}

# -- test ----------------------------------------------------------------------------------------

cmd_test() {
    local t0=$(date +%s)
    ensure_built
    mkdir -p "$WORK/data"
    [ -f "$WORK/data/example/labels.csv" ] || palm_in_container "$WORK" data synth /work/data/example --count 12 --size 256x256 >/dev/null
    quick_models "$WORK/models" "$WORK/data/example"
    local py
    py=$(host_python)
    "$py" -c "import pytest, palm_algos, SimpleITK" 2>/dev/null \
        || die "$py lacks pytest/palm/SimpleITK: pip install -e '.[dev]' (or set PALM_PYTHON)"
    say "running tests/test_containers.py"
    PALM_DOCKER_TESTS=1 PALM_TAG=$TAG PALM_TEST_MODELS="$WORK/models" PALM_TEST_WORK="$WORK/test" \
        "$py" -m pytest -q -m docker -p no:cacheprovider tests/test_containers.py "$@"
    say "container tests finished in $(( $(date +%s) - t0 )) s"
}

# -- export --------------------------------------------------------------------------------------

cmd_export() {
    ensure_built
    mkdir -p "$EXPORT"
    local name task t0
    for name in evaluation "${TASKS[@]}"; do
        t0=$(date +%s)
        docker save "$(image "$name")" | gzip -1 >"$EXPORT/palm-$name.tar.gz.tmp"
        mv "$EXPORT/palm-$name.tar.gz.tmp" "$EXPORT/palm-$name.tar.gz"
        say "export/palm-$name.tar.gz: $(du -h "$EXPORT/palm-$name.tar.gz" | cut -f1) in $(( $(date +%s) - t0 )) s"
    done
    for task in "${TASKS[@]}"; do
        if [ -f "models/$task.pt" ]; then
            tar -C models -czf "$EXPORT/$task-model.tar.gz" "$task.pt"
            say "export/$task-model.tar.gz (upload as the algorithm's model; extracted to /opt/ml/model)"
        else
            say "no models/$task.pt: no $task-model.tar.gz (train one: palm train $task ...)"
        fi
    done
}

# -- demo ----------------------------------------------------------------------------------------

cmd_demo() {
    local t0=$(date +%s) example=$ROOT/example out=$ROOT/out/demo task job py
    py=$(host_python)
    "$py" -c "import palm_algos, evaluation, SimpleITK" 2>/dev/null \
        || die "$py lacks palm: pip install -e '.[dev]' (or set PALM_PYTHON)"
    ensure_built
    if [ ! -f "$example/labels.csv" ]; then
        say "making the synthetic example in example/ (palm data synth)"
        "$py" -m palm_algos.cli data synth "$example" --count 24 --size 512x512 >&2
    fi
    mkdir -p "$WORK"
    if ! ls models/*.pt >/dev/null 2>&1; then
        say "models/ has no checkpoints: training QUICK models on the synthetic example (1 epoch, no pretraining: the scores mean nothing)"
    fi
    rm -rf "$WORK/demo-example"; cp -r "$example" "$WORK/demo-example"
    quick_models "$WORK/demo-models" "$WORK/demo-example"
    rm -rf "$out"; mkdir -p "$out/submissions"
    # grand-challenge mode: one container run per image, as grand-challenge runs jobs (~8 s each
    # on 2 cores, so a spread of PALM_DEMO_JOBS images, with their ground truth for the scoring).
    "$py" containers/test/gc_jobs.py prepare "$example" "$out/jobs" --limit "${PALM_DEMO_JOBS:-8}" \
        --truth "$out/jobs-truth" >/dev/null
    for task in "${TASKS[@]}"; do
        say "$(image "$task"): $(ls "$out/jobs" | wc -l) grand-challenge jobs, model $(model_dir "$WORK/demo-models" "$task")"
        for job in "$out"/jobs/*/; do
            docker run "${RUN_FLAGS[@]}" -v "${job}input:/input:ro" -v "${job}output:/output" \
                -v "$(model_dir "$WORK/demo-models" "$task"):/opt/ml/model:ro" "$(image "$task")" >>"$out/$task-gc.log" 2>&1 \
                || say "  $(basename "$job") failed: $(tail -1 "$out/$task-gc.log")"
        done
    done
    "$py" containers/test/gc_jobs.py collect "$out/jobs" "$out/evaluation-input" >/dev/null
    say "$(image evaluation): scoring the jobs against their ground truth (grand-challenge mode)"
    mkdir -p "$out/submissions/quick-models-gc"; chmod 777 "$out/submissions/quick-models-gc"
    docker run "${RUN_FLAGS[@]}" -v "$out/evaluation-input:/input:ro" \
        -v "$out/jobs-truth:/opt/ml/input/data/ground_truth:ro" -v "$out/submissions/quick-models-gc:/output" \
        "$(image evaluation)" >"$out/evaluation.log" 2>&1 || { cat "$out/evaluation.log" >&2; die "the evaluation container failed"; }
    sed 's/^/  /' "$out/evaluation.log" >&2
    # PALM batch mode: the three containers on the image folder -> one PALM submission.
    mkdir -p "$out/submissions/quick-models-palm"; chmod 777 "$out/submissions/quick-models-palm"
    for task in "${TASKS[@]}"; do
        say "$(image "$task"): PALM batch mode on example/images"
        docker run "${RUN_FLAGS[@]}" -v "$example/images:/input:ro" -v "$out/submissions/quick-models-palm:/output" \
            -v "$(model_dir "$WORK/demo-models" "$task"):/opt/ml/model:ro" "$(image "$task")" >"$out/$task-palm.log" 2>&1 \
            || say "  failed: $(tail -1 "$out/$task-palm.log")"
    done
    say "writing the leaderboard (palm leaderboard)"
    "$py" -m palm_algos.cli leaderboard "$out/submissions" --ground-truth "$example" --out "$out/leaderboard" \
        >"$out/leaderboard.log" 2>&1 || { cat "$out/leaderboard.log" >&2; die "palm leaderboard failed"; }
    sed 's/^/  /' "$out/leaderboard.log" >&2
    cat >&2 <<EOF

demo finished in $(( $(date +%s) - t0 )) s
  synthetic example          $example
  models                     $(for t in "${TASKS[@]}"; do printf '%s ' "$(model_dir "$WORK/demo-models" "$t")"; done)
  grand-challenge jobs       $out/jobs/<job>/{input,output}
  evaluation input / output  $out/evaluation-input, $out/submissions/quick-models-gc/metrics.json
                             (scored on the $(ls "$out/jobs" | wc -l) grand-challenge jobs only; PALM mode: all images)
  PALM batch submission      $out/submissions/quick-models-palm
  leaderboard                $out/leaderboard/leaderboard.html
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
