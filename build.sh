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
declare -A GUIDE=([disc]=fovea)      # Task.guide_task: the model baked and exported beside a task's own
SLUG_ARGS=(PALM_INPUT_SLUG)        # build arguments of the algorithm images: the input slug, PALM_<TASK>_SLUG each
for task in "${TASKS[@]}"; do SLUG_ARGS+=("PALM_${task^^}_SLUG"); done
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
  release [--data DIR] [--classification-slug SLUG] [--fovea-slug SLUG] [--disc-slug SLUG] [--input-slug SLUG]
           From a clone to upload-ready images with the real models, each step timed: trains
           models/<task>.pt with benchmarks/train_final.sh (recipes final-<task>, CUDA when
           present; a model already stamped with the same recipe in models/<task>.recipe is
           kept, so a stopped release goes on where it stopped), builds the images with those
           models baked in (the slug options as for build), runs the locked-down test, exports
           the tarballs and prints what to upload: each image, its interfaces (slugs and kinds)
           and the phase's settings. DIR: the data root, laid out like ../shared/data
           (default; PALM_DATA in the environment; docs/DATA.md).
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
  PALM_BUILD_CACHE  BuildKit cache kept after each build (default 10GB); every build also
                    removes the images its tags moved away from (label palm.build)
  PALM_INPUT_SLUG, PALM_CLASSIFICATION_SLUG, PALM_FOVEA_SLUG, PALM_DISC_SLUG
                    build-time slugs, as the build options (the options win); use another
                    PALM_TAG for images with other slugs, e.g.
                      PALM_TAG=phase2 ./build.sh build --fovea-slug fovea-point
EOF
}

# The parts, one file each; build.sh keeps the settings, the helpers they share and the commands.
for part in docker venv wheelhouse images models test export demo release; do
    # shellcheck source=/dev/null
    source "$ROOT/containers/build/$part.sh"
done

case "${1:-help}" in
    build) shift; cmd_build "$@" ;;
    test) shift; cmd_test "$@" ;;
    export) shift; cmd_export "$@" ;;
    demo) shift; cmd_demo "$@" ;;
    release) shift; cmd_release "$@" ;;
    help|-h|--help) usage ;;
    *) usage >&2; exit 2 ;;
esac
