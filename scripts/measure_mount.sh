#!/usr/bin/env bash
# Mount time and daemon memory of a GGUF with a big tokenizer (issue 24):
# makes the tiny gemma3 test model with an N-token vocabulary and N merges
# (scripts/make_big_vocab_gguf.py, default N = 262144, Gemma 3's size),
# mounts it and the original (440 tokens), and prints for each: the time
# `gyrofs mount` takes to return, the daemon's RSS and anonymous memory
# after mounting, then the time to read bf16/tokenizer.json and the RSS
# after that.
#
#   scripts/measure_mount.sh [N] [GYROFS]    (default: target/debug/gyrofs)
#
# Needs root (or fuse3) and /opt/pyref's gguf package.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-262144}
bin=$(realpath "${2:-target/debug/gyrofs}")
tmp=$(mktemp -d -t gyrofs-measure.XXXXXX)
mnt=$tmp/mnt
mkdir "$mnt"
cleanup() { "$bin" umount "$mnt" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
/opt/pyref/bin/python scripts/make_big_vocab_gguf.py "$tmp/big.gguf" "$n"

measure() {
    local name=$1 src=$2
    local t0 t1 pid
    t0=$(date +%s.%N)
    "$bin" mount "$src" "$mnt" 2>/dev/null
    t1=$(date +%s.%N)
    pid=$(pgrep -f -- "$mnt --foreground" | head -1)
    local rss anon
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    anon=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status")
    local r0 r1
    r0=$(date +%s.%N)
    local size
    size=$(wc -c <"$mnt/bf16/tokenizer.json" 2>/dev/null || echo "-")
    r1=$(date +%s.%N)
    local rss2
    rss2=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    printf '%-28s %8.3f s %7d KB %7d KB   tokenizer.json %10s B read in %6.3f s, RSS then %7d KB\n' \
        "$name ($(du -k "$src" | cut -f1) KB)" "$(echo "$t1 - $t0" | bc)" "$rss" "$anon" \
        "$size" "$(echo "$r1 - $r0" | bc)" "$rss2"
    "$bin" umount "$mnt"
    while mountpoint -q "$mnt"; do sleep 0.05; done
}

printf '%-28s %10s %10s %10s\n' "source" "mount" "RSS" "RssAnon"
measure "gemma3 (440 tokens)" tests/data/gguf-models/gemma3-f16.gguf
measure "gemma3 ($n tokens)" "$tmp/big.gguf"
