# shellcheck shell=bash
# Part of ./build.sh, which sources it (its settings and helpers: say, die, image, ...).
# test: every image run as grand-challenge runs it, checked by tests/test_containers.py.

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
    tidy_docker
    say "running tests/test_containers.py"
    PALM_DOCKER_TESTS=1 PALM_TAG=$TAG PALM_TEST_SLUGS="${TEST_SLUGS[*]}" PALM_TEST_TORCH=$TORCH_FLAVOUR PALM_TEST_MODELS="$WORK/models" PALM_TEST_HELDOUT="$WORK/models/heldout" PALM_TEST_WORK="$WORK/test" \
        "$PY" -m pytest -q -m docker -p no:cacheprovider tests/test_containers.py "$@"
    say "container tests of the $TAG images ($TORCH_FLAVOUR torch) finished in $(( $(date +%s) - t0 )) s"
}
