# shellcheck shell=bash
# Part of ./build.sh, which sources it (its settings and helpers: say, die, image, ...).
# The host Python of test and demo (the project venv .venv), and the Python whose pip fills the wheelhouse.

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
