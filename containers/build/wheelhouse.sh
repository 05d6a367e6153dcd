# shellcheck shell=bash
# Part of ./build.sh, which sources it (its settings and helpers: say, die, image, ...).
# The wheelhouse: every wheel the image builds install, fetched on the host (builds run with --network none).

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
