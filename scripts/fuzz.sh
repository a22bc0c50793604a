#!/usr/bin/env bash
# Fuzz gyrofs's parsers of untrusted bytes with cargo-fuzz (libFuzzer).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs each TARGET (default: all of them, one after the other) for SECONDS
# (default 60) and prints one line per target: executions, executions per
# second, and crashes (a crash, timeout or out-of-memory input found; it is
# saved under tests/fuzz/artifacts/TARGET/ and the run of that target stops
# there, as libFuzzer does). Exits non-zero if any target found one.
#
# Targets (tests/fuzz/fuzz_targets/):
#   safetensors_header  source::safetensors::parse_bytes
#   gguf_header         source::gguf::parse_data, metadata JSON
#   side_json           source::parse_index / parse_dtypes / parse_json, config readers
#   volume              whole sources through Volume::open, every file read
#   torch_checkpoint    source::torch::parse: zip, legacy stream, unpickler
#
# Needs no nightly: RUSTC_BOOTSTRAP=1 lets the stable compiler take the
# sanitizer flags cargo-fuzz passes. Installs cargo-fuzz if missing.
# FUZZ_SANITIZER=none runs libFuzzer without AddressSanitizer (default:
# address), for machines where ASan does not run: panics, timeouts and
# out-of-memory inputs are still caught.
#
# Seeds (tests/fuzz/corpus/TARGET/, written by scripts/make_fuzz_corpus.py)
# are only read; what the fuzzer finds goes to tests/fuzz/target/corpus/TARGET/
# and is reused by the next run. Reproduce a crash with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz TARGET tests/fuzz/artifacts/TARGET/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(safetensors_header gguf_header side_json volume torch_checkpoint)

secs=60
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    secs=$1
    shift
fi
if [[ $# -gt 0 ]]; then
    TARGETS=("$@")
fi
sanitizer=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1
fuzz_dir=tests/fuzz

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

logs=$fuzz_dir/target/logs
mkdir -p "$logs"
for t in "${TARGETS[@]}"; do
    echo "building $t (sanitizer: $sanitizer)" >&2
    cargo fuzz build --fuzz-dir "$fuzz_dir" -s "$sanitizer" "$t" >"$logs/build.log" 2>&1 ||
        { cat "$logs/build.log" >&2; exit 2; }
done

failed=0
printf '%-20s %8s %12s %8s  %s\n' target seconds executions exec/s crashes
for t in "${TARGETS[@]}"; do
    work=$fuzz_dir/target/corpus/$t
    seeds=$fuzz_dir/corpus/$t
    artifacts=$fuzz_dir/artifacts/$t
    mkdir -p "$work" "$seeds" "$artifacts"
    log=$logs/$t.log
    marker=$logs/$t.start
    touch "$marker"
    start=$(date +%s)
    status=0
    cargo fuzz run --fuzz-dir "$fuzz_dir" -s "$sanitizer" "$t" "$work" "$seeds" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
    took=$(($(date +%s) - start))
    execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -n 1)
    rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log" | tail -n 1)
    found=$(find "$artifacts" -type f -newer "$marker" | sort)
    note=0
    if [[ -n $found || $status -ne 0 ]]; then
        failed=1
        note="$(printf '%s\n' "$found" | grep -c . || true): ${found:-none saved} (exit $status; log: $log)"
    fi
    printf '%-20s %8s %12s %8s  %s\n' "$t" "$took" "${execs:-?}" "${rate:-?}" "$note"
done
exit $failed
