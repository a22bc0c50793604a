#!/usr/bin/env bash
# Build the gyrofs wheel, install it into a fresh virtual environment and run
# the README's Python example on the bundled sample
# (scripts/check_python_package.py: mount, load with safetensors, unmount,
# errors, ls, convert, man page and completions installed).
#
# Usage: scripts/test_python_package.sh   (run by tests/python_package.rs)
# The wheel is built with the dev profile (GYROFS_WHEEL_PROFILE to change),
# reusing what `cargo test` compiled. Prints `skipped: ...` and exits 0 when
# Python's venv or the package registry (pip install maturin) is not
# available; every other failure fails.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
skip() {
    echo "skipped: python package test: $*"
    exit 0
}
python=${PYTHON:-python3}
command -v "$python" >/dev/null || skip "$python not found"
"$python" -m venv "$work/build" >"$work/venv.log" 2>&1 ||
    skip "$python -m venv failed (Debian: apt-get install python3-venv): $(tail -1 "$work/venv.log")"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
timeout 300 "$work/build/bin/pip" install -q maturin >"$work/pip.log" 2>&1 ||
    skip "pip install maturin failed (no package registry?): $(tail -1 "$work/pip.log")"

set -e
start=$SECONDS
MATURIN=$work/build/bin/maturin scripts/build_wheel.sh \
    --profile "${GYROFS_WHEEL_PROFILE:-dev}" --out "$work/wheels"
wheel=$(ls "$work"/wheels/gyrofs-*.whl)
echo "built $(basename "$wheel") in $((SECONDS - start)) s"

"$python" -m venv "$work/fresh"
"$work/fresh/bin/pip" install -q "$wheel"
# The example loads with the safetensors package when the registry has it
# (no framework needed); the check says when it falls back to json+struct.
timeout 300 "$work/fresh/bin/pip" install -q safetensors >"$work/pip2.log" 2>&1 ||
    echo "note: pip install safetensors failed; loading with json+struct: $(tail -1 "$work/pip2.log")"
# Run from elsewhere, so that `import gyrofs` is the installed package.
cd "$work"
"$work/fresh/bin/python" "$repo/scripts/check_python_package.py" "$repo/tests/data/gpt-oss-tiny"
echo "python package test passed in $((SECONDS - start)) s"
