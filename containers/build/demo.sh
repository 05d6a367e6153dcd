# shellcheck shell=bash
# Part of ./build.sh, which sources it (its settings and helpers: say, die, image, ...).
# demo: the containers on the synthetic example, scored, with the leaderboard page.

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
