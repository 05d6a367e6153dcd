# shellcheck shell=bash
# Part of ./build.sh, which sources it (its settings and helpers: say, die, image, ...).
# export: the images and the model archives as tar.gz files for upload.

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
    local files
    for task in "${TASKS[@]}"; do
        if [ -f "models/$task.pt" ]; then
            files=("$task.pt")  # and its GUIDE's model, where present (palm_algos/serve.py guide_beside)
            [ ! -f "models/${GUIDE[$task]:-}.pt" ] || files+=("${GUIDE[$task]}.pt")
            tar -C models -czf "$EXPORT/$task-model.tar.gz" "${files[@]}"
            say "export/$task-model.tar.gz: ${files[*]} (upload as the algorithm's model; extracted to /opt/ml/model)"
        else
            say "no models/$task.pt: no $task-model.tar.gz (train one: palm train $task ...)"
        fi
    done
    if [ -f models/classification.pt ] && [ -f models/fovea.pt ] && [ -f models/disc.pt ]; then
        tar -C models -czf "$EXPORT/all-model.tar.gz" classification.pt fovea.pt disc.pt
        say "export/all-model.tar.gz (palm-all's model: the three checkpoints)"
    fi
}
