#!/usr/bin/env bash
# gyrofs benchmarks. Every figure is reported next to a baseline measured in
# the same run on the same machine (these machines are noisy; ratios travel,
# absolute numbers do not). Method and recorded results: docs/PERFORMANCE.md.
#
#   scripts/bench.sh [mount] [read] [bf16] [cores] [experts] [load] [gguf] [gguf_hf] [gguf_gptoss] [gguf_out] [scale] [torch] [remote]
#   (default: all)
#
# Environment: BENCH_DIR (scratch space, default /tmp/gyrofs-bench; needs
# ~16 GB of real disk for all sections, ~6 GB for `read`), BENCH_READ_LAYERS (layers of the random
# 20b-shaped checkpoint used by `read`, default 4, ~4.6 GB); for `gguf`:
# BENCH_GGUF_MB (MiB of BF16 output per ggml type, default 512; the largest
# scratch file, F16/BF16, is this size and is deleted after its row),
# BENCH_GGUF_TYPES (space-separated ggml type names), BENCH_PYTHON (a Python
# with gguf + numpy for the baseline, default /opt/pyref/bin/python),
# GYROFS_BIN (the gyrofs binary to measure; default: build this checkout),
# BENCH_BASE_BIN (scale: also measure this other build, same run),
# BENCH_TORCH_MB (torch: size of the generated pytorch_model.bin, default 2048),
# BENCH_LOAD_LAYERS (load: layers of the gpt-oss-120b-shaped model loaded,
# default 1: ~4 GB of source and an ~8.7 GB local copy a layer, deleted at the
# end unless BENCH_LOAD_KEEP_COPY=1; BENCH_LOAD_DEQUANT=0 skips transformers'
# own dequantizing load), BENCH_GGUF_HF_LAYERS
# (gguf_hf: layers of the llama-8b-shaped Q4_K GGUF, default 4),
# BENCH_GGUF_OUT_LAYERS (gguf_out: layers of the Llama-3.2-1B-shaped model,
# default 16, ~2.5 GB; LLAMA_CPP: llama.cpp's source folder, for its
# converter; needs llama_cpp in BENCH_PYTHON); for `remote`
# (a local fake S3 / Hub server, scripts/fake_remote.py, ~3 GB of inputs
# under $BENCH_DIR/remote, ~7 min): BENCH_REMOTE_RATE (the server's bandwidth
# cap in bytes/s, default 200000000; 0 = uncapped), BENCH_REMOTE_SEQ_MB (the
# sequentially read object, default 1024), BENCH_REMOTE_EXPERTS (experts of
# the MoE layer, default 32), BENCH_REMOTE_LLAMA_LAYERS (the BF16 Llama
# loaded, default 16, ~0.63 GB), BENCH_REMOTE_GPTOSS_LAYERS (the MXFP4
# gpt-oss loaded, default 1; 0 skips it).
# Needs root (mounts, drop_caches), python3 and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-/tmp/gyrofs-bench}
mkdir -p "$BENCH_DIR"
# GYROFS_BIN: benchmark another build (e.g. the previous commit's, to compare
# two builds in one session); default: build this checkout's release binary.
if [ -n "${GYROFS_BIN:-}" ]; then
    G=$GYROFS_BIN
else
    cargo build --release --quiet
    G=$PWD/target/release/gyrofs
fi
MNT=$BENCH_DIR/mnt
mkdir -p "$MNT"
# REMOTE_PID: the fake remote server of `remote`, killed on every exit path.
REMOTE_PID=
cleanup() {
    umount -l "$MNT" 2>/dev/null || true
    if [ -n "$REMOTE_PID" ]; then kill "$REMOTE_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
# secs CMD...: wall seconds of one run
secs() { local t0; t0=$(now); "$@" >/dev/null; echo "$(now) - $t0" | bc -l; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
fmt() { printf "%.3f" "$1"; }
size_of() { du -sb --apparent-size "$@" | awk '{s+=$1} END {printf "%.0f\n", s}'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# Seconds to a model loaded with from_pretrained(ARGV1) in BF16 with every
# weight read (they may be mmap-backed, and a lazy load would measure nothing).
LOAD_PY='import sys, time, torch
from transformers import AutoModelForCausalLM
t0 = time.perf_counter()
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
for p in m.state_dict().values():  # read every weight (they may be mmap-backed)
    p.contiguous().view(-1).view(torch.uint8)[::2048].sum()
print(time.perf_counter() - t0)'

# Warnings (e.g. a synthetic GGUF's missing tokenizer) go to a log, not
# between the rows; a failed mount prints them.
mount_once() {  # SOURCE [mount options...]
    "$G" mount "$@" "$MNT" 2>"$BENCH_DIR/mount.log" || { cat "$BENCH_DIR/mount.log" >&2; return 1; }
}
umount_wait() { umount "$MNT"; while grep -q " $MNT " /proc/self/mounts; do sleep 0.01; done; }
# The same, then wait (at most 60 s) for the daemon to exit: with
# --cache-converted it writes and seals what it computed after the unmount.
# After gigabytes written (a filled cache): let the disk finish them before
# the next timed read (this VM's disk reads slowly for a while after a large
# write: a remount's load right after filling its cache measured 2-3x its
# time a minute later).
settle() { sync; sleep "${BENCH_SETTLE_S:-30}"; }
umount_exit() {
    umount_wait
    local t=0
    while pgrep -f -- " mount .* $MNT\$" >/dev/null && [ $t -lt 600 ]; do sleep 0.1; t=$((t + 1)); done
}

bench_mount() {
    echo "## mount: time to a mount that answers vs tensor count and bytes"
    echo "(sparse files: headers are real, data is holes; 'ls' = gyrofs ls > /dev/null, same run)"
    printf "%-28s %8s %10s %12s %12s %14s\n" checkpoint tensors GB "mount ms" "ls ms" "us/tensor"
    local specs=("20b:--preset 20b" "120b:--preset 120b")
    for spec in "${specs[@]}"; do
        local name=${spec%%:*} args=${spec#*:}
        local dir=$BENCH_DIR/sparse-$name
        [ -d "$dir" ] || python3 scripts/make_synthetic.py "$dir" $args --fill sparse
        report_mount "gpt-oss-$name (sparse)" "$dir"
    done
    for n in 10000 100000; do
        local f=$BENCH_DIR/many-$n.safetensors
        [ -f "$f" ] || python3 - "$f" "$n" <<'EOF'
import json, struct, sys
path, n = sys.argv[1], int(sys.argv[2])
h = {"__metadata__": {"format": "pt"}}
for i in range(n):
    h[f"model.layers.{i // 1000}.mlp.experts.{i % 1000}.w{i % 3}.weight"] = {"dtype": "BF16", "shape": [512, 512], "data_offsets": [i * 524288, (i + 1) * 524288]}
t = json.dumps(h, separators=(",", ":")); t += " " * (-len(t) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(t)) + t.encode()); f.truncate(8 + len(t) + n * 524288)
EOF
        report_mount "$n x 512 KiB (sparse)" "$f"
    done
}

report_mount() {
    local label=$1 src=$2
    local tensors gb ms lsms
    tensors=$("$G" ls --json "$src" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tensor_count"])')
    gb=$(echo "$(size_of "$src") / 1000000000" | bc -l)
    ms=$(for _ in 1 2 3 4 5; do s=$(secs mount_once "$src"); umount_wait; echo "$s * 1000" | bc -l; done | median)
    lsms=$(for _ in 1 2 3 4 5; do echo "$(secs "$G" ls "$src") * 1000" | bc -l; done | median)
    printf "%-28s %8d %10.1f %12.1f %12.1f %14.2f\n" "$label" "$tensors" "$gb" "$ms" "$lsms" "$(echo "$ms * 1000 / $tensors" | bc -l)"
}

bench_read() {
    local layers=${BENCH_READ_LAYERS:-4}
    local dir=$BENCH_DIR/random-20b-l$layers
    [ -d "$dir" ] || python3 scripts/make_synthetic.py "$dir" --preset 20b --layers "$layers" --fill random
    local bytes
    bytes=$(size_of "$dir"/*.safetensors)
    echo "## read: sequential read of raw/model.safetensors vs cat of the source shards"
    echo "(gpt-oss-20b shapes, $layers layers, $(fmt "$(echo "$bytes / 1000000000" | bc -l)") GB of random data; source warm in the page cache)"
    cat "$dir"/*.safetensors > /dev/null
    cat "$dir"/*.safetensors > /dev/null
    local base fuse_cold fuse_warm
    base=$(for _ in 1 2 3; do secs cat "$dir"/*.safetensors; done | median)
    fuse_cold=$(for _ in 1 2 3; do mount_once "$dir"; s=$(secs cat "$MNT/raw/model.safetensors"); echo "$s"; umount_wait; done | median)
    mount_once "$dir"
    cat "$MNT/raw/model.safetensors" > /dev/null
    fuse_warm=$(for _ in 1 2 3; do secs cat "$MNT/raw/model.safetensors"; done | median)
    umount_wait
    local gbs=$(( bytes ))
    printf "%-52s %8s %8s\n" "" "GB/s" "ratio"
    printf "%-52s %8.2f %8s\n" "cat source shards (baseline)" "$(echo "$gbs / $base / 1000000000" | bc -l)" "1.00"
    printf "%-52s %8.2f %8.2f\n" "cat MNT/raw/model.safetensors, first read" "$(echo "$gbs / $fuse_cold / 1000000000" | bc -l)" "$(echo "$base / $fuse_cold" | bc -l)"
    printf "%-52s %8.2f %8.2f\n" "cat MNT/raw/model.safetensors, again (page cache)" "$(echo "$gbs / $fuse_warm / 1000000000" | bc -l)" "$(echo "$base / $fuse_warm" | bc -l)"
}

bench_bf16() {
    local layers=${BENCH_READ_LAYERS:-4}
    local dir=$BENCH_DIR/random-20b-l$layers
    local py=${BENCH_PYTHON:-/opt/pyref/bin/python}
    [ -d "$dir" ] || python3 scripts/make_synthetic.py "$dir" --preset 20b --layers "$layers" --fill random
    echo "## bf16: MXFP4 expert dequantization (gpt-oss-20b shapes, $layers layers)"
    echo "(BF16 bytes produced per second; the same expert tensors in every row; baseline: transformers'"
    echo " own CPU dequantization, integrations.mxfp4._convert_moe_packed_tensors, same run)"
    local files=() out_bytes
    mount_once "$dir"
    for f in "$MNT"/bf16/tensors/*experts.gate_up_proj.safetensors "$MNT"/bf16/tensors/*experts.down_proj.safetensors; do
        files+=("${f#"$MNT"/}")
    done
    out_bytes=$(cd "$MNT" && size_of "${files[@]}")
    umount_wait
    local base=n/a
    if "$py" -c "import torch, transformers" 2>/dev/null; then
        base=$("$py" - "$dir" <<'PY'
import glob, sys, time, torch
from safetensors import safe_open
from transformers.integrations.mxfp4 import _convert_moe_packed_tensors
torch.set_num_threads(torch.get_num_threads())
pairs = []
for shard in sorted(glob.glob(sys.argv[1] + "/*.safetensors")):
    f = safe_open(shard, "pt")
    for k in f.keys():
        if k.endswith("_blocks"):
            pairs.append((shard, k))
t = 0.0
for shard, k in pairs:
    f = safe_open(shard, "pt")
    blocks, scales = f.get_tensor(k), f.get_tensor(k.replace("_blocks", "_scales"))
    t0 = time.perf_counter()
    out = _convert_moe_packed_tensors(blocks, scales, dtype=torch.bfloat16)
    t += time.perf_counter() - t0
    del out
print(t)
PY
)
    fi
    # Source cold: nothing in the page cache.
    drop_caches
    mount_once "$dir"
    local cold warm again
    cold=$( (cd "$MNT" && secs cat "${files[@]}") )
    umount_wait
    # Source warm (in the page cache), mount fresh: pure dequantization cost.
    cat "$dir"/*.safetensors > /dev/null
    warm=$(for _ in 1 2 3; do mount_once "$dir"; s=$( (cd "$MNT" && secs cat "${files[@]}") ); echo "$s"; umount_wait; done | median)
    mount_once "$dir"
    (cd "$MNT" && cat "${files[@]}" > /dev/null)
    again=$( (cd "$MNT" && secs cat "${files[@]}") )
    umount_wait
    local gb
    gb=$(echo "$out_bytes / 1000000000" | bc -l)
    printf "%-60s %8s %8s\n" "($(fmt "$gb") GB of BF16 experts)" "GB/s" "ratio"
    if [ "$base" != n/a ]; then
        printf "%-60s %8.2f %8s\n" "transformers CPU dequant, source warm (baseline)" "$(echo "$gb / $base" | bc -l)" "1.00"
    else
        printf "%-60s %8s\n" "transformers CPU dequant (baseline)" "n/a: no torch+transformers in $py"
        base=0
    fi
    ratio() { if [ "$base" = 0 ]; then echo n/a; else printf "%.2f" "$(echo "$base / $1" | bc -l)"; fi; }
    printf "%-60s %8.2f %8s\n" "gyrofs: cat MNT/bf16/tensors/*experts*, source cold" "$(echo "$gb / $cold" | bc -l)" "$(ratio "$cold")"
    printf "%-60s %8.2f %8s\n" "gyrofs: same, source warm, first read (dequantizing)" "$(echo "$gb / $warm" | bc -l)" "$(ratio "$warm")"
    printf "%-60s %8.2f %8s\n" "gyrofs: same, read again (kernel page cache)" "$(echo "$gb / $again" | bc -l)" "$(ratio "$again")"
}

bench_experts() {
    local layers=${BENCH_READ_LAYERS:-4}
    local dir=$BENCH_DIR/random-20b-l$layers
    local py=${BENCH_PYTHON:-/opt/pyref/bin/python}
    [ -d "$dir" ] || python3 scripts/make_synthetic.py "$dir" --preset 20b --layers "$layers" --fill random
    local f=layer_02_expert_017.safetensors
    echo "## experts: open + read one expert file (gpt-oss-20b shapes, $layers layers x 32 experts)"
    echo "(ms, median of 3; cold = page cache dropped before a fresh mount; warm = source cached, fresh mount;"
    echo " baseline: safetensors safe_open + get_slice(...)[17] of the same tensors, and for bf16 also"
    echo " transformers' _convert_moe_packed_tensors on that expert, same run)"
    local raw_cold raw_warm bf_cold bf_warm base_raw=n/a base_bf=n/a
    one() { drop_caches; mount_once "$dir"; s=$(secs cat "$MNT/$1/experts/$f"); umount_wait; echo "$s * 1000" | bc -l; }
    raw_cold=$(for _ in 1 2 3; do one raw; done | median)
    bf_cold=$(for _ in 1 2 3; do one bf16; done | median)
    cat "$dir"/*.safetensors > /dev/null
    warm() { mount_once "$dir"; s=$(secs cat "$MNT/$1/experts/$f"); umount_wait; echo "$s * 1000" | bc -l; }
    raw_warm=$(for _ in 1 2 3; do warm raw; done | median)
    bf_warm=$(for _ in 1 2 3; do warm bf16; done | median)
    if "$py" -c "import torch, transformers, safetensors" 2>/dev/null; then
        read -r base_raw base_bf < <("$py" - "$dir" <<'PY'
import glob, json, sys, time, torch
from safetensors import safe_open
from transformers.integrations.mxfp4 import _convert_moe_packed_tensors
d = sys.argv[1]
wm = json.load(open(d + "/model.safetensors.index.json"))["weight_map"]
names = [n for n in wm if n.startswith("model.layers.2.mlp.experts.")]
def run(deq):
    t0 = time.perf_counter()
    got = {}
    for n in names:
        with safe_open(f"{d}/{wm[n]}", "pt") as f:
            got[n] = f.get_slice(n)[17].clone()  # clone: make sure the bytes are read
    if deq:
        for n in names:
            if n.endswith("_blocks"):
                s = n.replace("_blocks", "_scales")
                _convert_moe_packed_tensors(got[n][None], got[s][None], dtype=torch.bfloat16)
    return (time.perf_counter() - t0) * 1000
raw = sorted(run(False) for _ in range(3))[1]
bf = sorted(run(True) for _ in range(3))[1]
print(f"{raw:.1f} {bf:.1f}")
PY
)
    fi
    printf "%-58s %10s %10s %14s\n" "" "cold ms" "warm ms" "warm baseline"
    printf "%-58s %10.1f %10.1f %14s\n" "raw/experts/$f (lossless)" "$raw_cold" "$raw_warm" "$base_raw"
    printf "%-58s %10.1f %10.1f %14s\n" "bf16/experts/$f (dequantized)" "$bf_cold" "$bf_warm" "$base_bf"

    echo "daemon memory after reading every bf16 expert file (cat bf16/experts/layer_*; RssFile is the"
    echo "source's page-cache pages mapped by the daemon, reclaimable; RssAnon is gyrofs's own memory):"
    mount_once "$dir"
    local pid
    pid=$(pgrep -f " mount .*$MNT" | head -1)
    cat "$MNT"/bf16/experts/layer_* > /dev/null
    grep -E "VmHWM|RssAnon|RssFile" "/proc/$pid/status" | tr -s ' ' | sed 's/^/    /'
    umount_wait
}

bench_gguf() {
    local gdir=$BENCH_DIR/gguf py=${BENCH_PYTHON:-/opt/pyref/bin/python}
    local gen="python3 scripts/make_synthetic_gguf.py"
    mkdir -p "$gdir"
    # Mount that must succeed, and unmount that also waits for the daemon to
    # exit. One mount in ~100 once failed here with "the mount daemon exited
    # before the mount was ready"; a likely cause is the previous daemon,
    # whose fuser session calls umount(MNT) again on its way out (the
    # "Failed to umount filesystem: Invalid argument" in its log), which
    # would take a new mount at the same path with it.
    # Failures inside $( ... | median) cannot stop the script: they leave a
    # mark that `gguf_check` turns into an error.
    local failed=$gdir/failed
    rm -f "$failed"
    gguf_mounted() { grep -q " $MNT " /proc/self/mounts || { echo "mounting $1 failed" >> "$failed"; exit 1; }; }
    # (2>/dev/null: these synthetic files have no Hugging Face mapping, and
    # each mount would warn so.)
    gguf_mount() { mount_once "$1" 2>/dev/null || true; gguf_mounted "$1"; }
    gguf_umount() { umount_wait; while pgrep -f -x -- "$G mount .* $MNT --foreground" >/dev/null; do sleep 0.01; done; }
    gguf_check() {
        if [ -e "$failed" ] || ! [[ $1 =~ ^[0-9.]+$ ]]; then
            echo "bench_gguf: $2: measurement failed: $(cat "$failed" 2>/dev/null)" >&2
            exit 1
        fi
    }

    echo "## gguf: mount time of a GGUF vs tensor count and bytes"
    echo "(sparse files: headers are real, incl. a 128256-token tokenizer for the llama presets; data is holes;"
    echo " 'ls' = gyrofs ls > /dev/null, same run; median of 5)"
    printf "%-32s %8s %8s %10s %10s %10s %8s\n" checkpoint tensors GB "mount ms" "ls ms" "us/tensor" "ms/GB"
    local spec rows=()
    for spec in "llama-8b:--preset llama-8b" "llama-70b:--preset llama-70b"; do
        local name=${spec%%:*} args=${spec#*:} f
        f=$gdir/sparse-$name-Q4_K.gguf
        [ -f "$f" ] || $gen "$f" $args --type Q4_K --fill sparse >/dev/null
        rows+=("$name Q4_K (sparse):$f")
    done
    for spec in "10000:512,512" "10000:4096,4096" "100000:512,512"; do
        local n=${spec%%:*} dims=${spec#*:} f
        f=$gdir/many-$n-${dims/,/x}.gguf
        [ -f "$f" ] || $gen "$f" --tensors "$n" --dims "$dims" --type Q4_K --fill sparse >/dev/null
        rows+=("$n x ${dims/,/x} Q4_K:$f")
    done
    for spec in "${rows[@]}"; do
        local label=${spec%%:*} src=${spec#*:} tensors gb ms lsms
        tensors=$("$G" ls --json "$src" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tensor_count"])')
        gb=$(echo "$(size_of "$src") / 1000000000" | bc -l)
        ms=$(for _ in 1 2 3 4 5; do s=$(secs mount_once "$src"); gguf_mounted "$src"; gguf_umount; echo "$s * 1000" | bc -l; done | median)
        lsms=$(for _ in 1 2 3 4 5; do echo "$(secs "$G" ls "$src") * 1000" | bc -l; done | median)
        gguf_check "$ms" "mount $src"
        gguf_check "$lsms" "ls $src"
        printf "%-32s %8d %8.1f %10.1f %10.1f %10.2f %8.2f\n" "$label" "$tensors" "$gb" "$ms" "$lsms" \
            "$(echo "$ms * 1000 / $tensors" | bc -l)" "$(echo "$ms / $gb" | bc -l)"
    done
    echo

    # Dequantization: per type, 4 random tensors of ggml dims [16384, rows]
    # (BENCH_GGUF_MB MiB of BF16 output in all), source warm, fresh mount.
    local mb=${BENCH_GGUF_MB:-512}
    local nrows=$(( mb * 8 ))
    local elems=$(( 4 * 16384 * nrows ))
    local types=${BENCH_GGUF_TYPES:-"F16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS MXFP4 BF16 TQ1_0 TQ2_0 IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ1_S IQ1_M NVFP4"}
    local havepy=0 gb
    "$py" -c "import gguf, numpy" 2>/dev/null && havepy=1
    gb=$(echo "$elems * 2 / 1000000000" | bc -l)
    echo "## gguf: BF16 dequantization throughput per ggml type (GB/s of BF16 output)"
    echo "(per type: 4 random tensors [$nrows, 16384], $(fmt "$gb") GB of BF16 output. gyrofs: cat MNT/bf16/tensors/*,"
    echo " source warm in the page cache, fresh mount, median of 3. Baseline, same run: gguf.quants.dequantize(raw, type)"
    echo " (gguf-py, numpy) on the same bytes (GGUFReader, copied to memory first), dequantize call only, its f32"
    echo " output counted as 2 bytes/value, median of 3. ratio = gyrofs / gguf-py)"
    printf "%-8s %10s %12s %12s %8s\n" type "source MB" "gyrofs GB/s" "gguf-py GB/s" ratio
    local t
    for t in $types; do
        local f=$gdir/rand-$t.gguf files=() g fuse base=n/a gp ratio
        $gen "$f" --tensors 4 --dims "16384,$nrows" --type "$t" --fill random >/dev/null
        cat "$f" > /dev/null
        cat "$f" > /dev/null
        gguf_mount "$f"
        for g in "$MNT"/bf16/tensors/*.safetensors; do files+=("${g#"$MNT"/}"); done
        gguf_umount
        [ ${#files[@]} -eq 4 ] || { echo "bench_gguf: $t: expected 4 tensors, got ${#files[@]}" >&2; exit 1; }
        fuse=$(for _ in 1 2 3; do gguf_mount "$f"; s=$( (cd "$MNT" && secs cat "${files[@]}") ); echo "$s"; gguf_umount; done | median)
        gguf_check "$fuse" "$t: cat MNT/bf16/tensors/*"
        if [ $havepy = 1 ]; then
            base=$("$py" - "$f" "$elems" <<'PY'
import sys, time
import numpy as np
import gguf
from gguf.quants import dequantize
r = gguf.GGUFReader(sys.argv[1])
raws = [(np.array(t.data), t.tensor_type) for t in r.tensors]
n = sum(int(np.prod(t.shape)) for t in r.tensors)
assert n == int(sys.argv[2]), (n, sys.argv[2])
for raw, ty in raws:  # warm-up: lazy grid tables of the IQ types
    dequantize(raw[:1], ty)
times = []
for _ in range(3):
    t = 0.0
    for raw, ty in raws:
        t0 = time.perf_counter()
        out = dequantize(raw, ty)
        t += time.perf_counter() - t0
        if not np.isfinite(out).all():
            sys.exit(f"{ty.name}: non-finite values in the reference output")
        del out
    times.append(t)
print(sorted(times)[1])
PY
)
        fi
        if [ "$base" = n/a ]; then gp=n/a ratio=n/a; else
            gguf_check "$base" "$t: gguf-py baseline"
            gp=$(printf "%.3f" "$(echo "$gb / $base" | bc -l)")
            ratio=$(printf "%.1f" "$(echo "$base / $fuse" | bc -l)")
        fi
        printf "%-8s %10.0f %12.2f %12s %8s\n" "$t" "$(echo "$(size_of "$f") / 1000000" | bc -l)" \
            "$(echo "$gb / $fuse" | bc -l)" "$gp" "$ratio"
        rm -f "$f"
    done
    [ $havepy = 1 ] || echo "(gguf-py baseline: n/a, no gguf+numpy in $py)"
}

# daemon_hwm: peak RSS (VmHWM, kB) of the daemon serving $MNT.
daemon_hwm() {
    local pid
    pid=$(pgrep -f -- "mount .* $MNT --foreground" | head -1)
    awk '/VmHWM/ {print $2}' "/proc/$pid/status"
}

bench_scale() {
    local base=${BENCH_BASE_BIN:-}
    echo "## scale: mount time and daemon memory vs tensor count (sparse safetensors of 256x256 BF16 tensors)"
    echo "(mount = gyrofs mount until it answers, median of 3; peak RSS = the daemon's VmHWM after mounting;"
    echo " ls = gyrofs ls > /dev/null; manifest = first stat of manifest.json (sizes the streamed manifest)."
    [ -n "$base" ] && echo " 'before' rows: BENCH_BASE_BIN=$base in the same run."
    echo ")"
    printf "%-10s %-8s %10s %12s %10s %12s\n" tensors build "mount s" "peak RSS MB" "ls s" "manifest s"
    local n
    for n in 10000 100000 1000000; do
        local f=$BENCH_DIR/scale-$n.safetensors
        [ -f "$f" ] || python3 - "$f" "$n" <<'EOF2'
import json, struct, sys
path, n = sys.argv[1], int(sys.argv[2])
parts = ['{"__metadata__":{"format":"pt"}']
for i in range(n):
    parts.append(',"layers.%d.e%d.w":{"dtype":"BF16","shape":[256,256],"data_offsets":[%d,%d]}' % (i // 1000, i % 1000, i * 131072, (i + 1) * 131072))
parts.append("}")
t = "".join(parts); t += " " * (-len(t) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(t)) + t.encode()); f.truncate(8 + len(t) + n * 131072)
EOF2
        local bin label
        for spec in "this:$G" ${base:+"before:$base"}; do
            label=${spec%%:*} bin=${spec#*:}
            local ms hwm lss mans
            ms=$(for _ in 1 2 3; do s=$(secs "$bin" mount "$f" "$MNT"); umount_wait; echo "$s"; done | median)
            "$bin" mount "$f" "$MNT" 2>/dev/null
            hwm=$(daemon_hwm)
            mans=$(secs stat "$MNT/manifest.json")
            umount_wait
            lss=$(secs "$bin" ls "$f")
            printf "%-10s %-8s %10.2f %12.0f %10.2f %12.2f\n" "$n" "$label" "$ms" "$(echo "$hwm / 1024" | bc -l)" "$lss" "$mans"
        done
    done
}

bench_torch() {
    local py=${BENCH_PYTHON:-/opt/pyref/bin/python}
    local mb=${BENCH_TORCH_MB:-2048}
    local dir=$BENCH_DIR/torch-$mb
    echo "## torch: a ${mb} MiB pytorch_model.bin (F32, GPT-2-medium-like shapes), source warm in the page cache"
    if ! "$py" -c "import torch, safetensors" 2>/dev/null; then
        echo "n/a: no torch + safetensors in $py"
        return
    fi
    if [ ! -f "$dir/pytorch_model.bin" ]; then
        mkdir -p "$dir"
        "$py" - "$dir/pytorch_model.bin" "$mb" <<'EOF2'
import sys, torch
path, mb = sys.argv[1], int(sys.argv[2])
sd, total, i = {}, 0, 0
g = torch.Generator().manual_seed(0)
while total < mb << 20:
    for name, shape in [("attn.c_attn.weight", (1024, 3072)), ("attn.c_proj.weight", (1024, 1024)),
                        ("mlp.c_fc.weight", (1024, 4096)), ("mlp.c_proj.weight", (4096, 1024)),
                        ("ln_1.weight", (1024,)), ("ln_1.bias", (1024,))]:
        t = torch.randn(shape, generator=g)
        sd[f"h.{i}.{name}"] = t
        total += t.numel() * 4
    i += 1
torch.save(sd, path)
EOF2
    fi
    local f=$dir/pytorch_model.bin bytes
    bytes=$(size_of "$f")
    cat "$f" > /dev/null; cat "$f" > /dev/null
    local tensors mount_ms cat_src cat_raw conv conv_rss base_s base_rss
    tensors=$("$G" ls --json "$f" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tensor_count"])')
    mount_ms=$(for _ in 1 2 3 4 5; do s=$(secs mount_once "$f"); umount_wait; echo "$s * 1000" | bc -l; done | median)
    cat_src=$(for _ in 1 2 3; do secs cat "$f"; done | median)
    cat_raw=$(for _ in 1 2 3; do mount_once "$f"; s=$(secs cat "$MNT/raw/model.safetensors"); echo "$s"; umount_wait; done | median)
    # Both write a 2 GB copy into the page cache: alternate, 3 each, with
    # the previous copy deleted and written back first (sync), median.
    local convs=() crss=() bases=() rsss=() s r
    for _ in 1 2 3; do
        rm -rf "$dir/out-gyrofs" "$dir/out-torch.safetensors"; sync
        read -r s r < <(/usr/bin/time -f "%e %M" "$G" convert "$f" "$dir/out-gyrofs" --view raw/model.safetensors --quiet 2>&1 | tail -1)
        convs+=("$s"); crss+=("$r")
        rm -rf "$dir/out-gyrofs" "$dir/out-torch.safetensors"; sync
        read -r s r < <(/usr/bin/time -f "%e %M" "$py" - "$f" "$dir/out-torch.safetensors" 2>&1 >/dev/null <<'EOF2' | tail -1
import sys, torch
from safetensors.torch import save_file
sd = torch.load(sys.argv[1], mmap=True, weights_only=True)
save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2])
EOF2
)
        bases+=("$s"); rsss+=("$r")
    done
    rm -rf "$dir/out-gyrofs"
    conv=$(printf "%s\n" "${convs[@]}" | median)
    base_s=$(printf "%s\n" "${bases[@]}" | median)
    base_rss=$(printf "%s\n" "${rsss[@]}" | median)
    conv_rss=$(printf "%s\n" "${crss[@]}" | median)
    rm -f "$dir/out-torch.safetensors"
    local gb
    gb=$(echo "$bytes / 1000000000" | bc -l)
    echo "($tensors tensors, $(fmt "$gb") GB; baseline: torch.load(mmap=True, weights_only=True) + safetensors.torch.save_file, what users run today;
 both write the copy: median of 3, alternating, the previous copy deleted and synced first)"
    printf "%-64s %10s\n" "" "value"
    printf "%-64s %10.1f\n" "gyrofs mount, ms (median of 5)" "$mount_ms"
    printf "%-64s %10.2f\n" "cat of the .bin, GB/s" "$(echo "$gb / $cat_src" | bc -l)"
    printf "%-64s %10.2f\n" "cat MNT/raw/model.safetensors (fresh mount), GB/s" "$(echo "$gb / $cat_raw" | bc -l)"
    printf "%-64s %10.2f\n" "gyrofs convert --view raw/model.safetensors, s" "$conv"
    printf "%-64s %10.0f\n" "gyrofs convert, peak RSS MB" "$(echo "$conv_rss / 1024" | bc -l)"
    printf "%-64s %10.2f\n" "torch.load(mmap) + save_file, s" "$base_s"
    printf "%-64s %10.0f\n" "torch.load(mmap) + save_file, peak RSS MB" "$(echo "$base_rss / 1024" | bc -l)"
}

daemon_pid() { pgrep -f -- "mount .* $MNT --foreground" | head -1; }
# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Busy time of the whole machine (all CPUs, clock ticks): user, nice,
# system, irq, softirq, steal.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

bench_cores() {
    local layers=${BENCH_READ_LAYERS:-4}
    local dir=$BENCH_DIR/random-20b-l$layers
    [ -d "$dir" ] || python3 scripts/make_synthetic.py "$dir" --preset 20b --layers "$layers" --fill random
    local f=bf16/tensors/model.layers.0.mlp.experts.gate_up_proj.safetensors
    local hz
    hz=$(getconf CLK_TCK)
    echo "## cores: one sequential reader of one large computed file (cat $f, MXFP4 -> BF16)"
    echo "(source warm, fresh mount each time, median of 3 by wall time; cores = CPU time / wall time of the"
    echo " daemon, and of the whole machine ($(nproc) CPUs; the rest is the reader: its copies out of the page"
    echo " cache); baseline: the same binary with its compute pool limited to one thread, RAYON_NUM_THREADS=1)"
    cat "$dir"/*.safetensors > /dev/null
    local bytes
    mount_once "$dir"; bytes=$(stat -c %s "$MNT/$f"); umount_wait
    printf "%-44s %8s %8s %14s %14s\n" "" "GB/s" "ratio" "daemon cores" "machine cores"
    local base=
    for spec in "one compute thread (baseline):1" "default pool:"; do
        local label=${spec%%:*} threads=${spec#*:}
        local rows
        rows=$(for _ in 1 2 3; do
            RAYON_NUM_THREADS=$threads mount_once "$dir"
            local pid t0 c0 m0 t1 c1 m1
            pid=$(daemon_pid)
            c0=$(cpu_ticks "$pid"); m0=$(machine_ticks); t0=$(now)
            cat "$MNT/$f" > /dev/null
            t1=$(now); c1=$(cpu_ticks "$pid"); m1=$(machine_ticks)
            umount_wait
            local wall
            wall=$(echo "$t1 - $t0" | bc -l)
            echo "$wall $(echo "($c1 - $c0) / $hz / $wall" | bc -l) $(echo "($m1 - $m0) / $hz / $wall" | bc -l)"
        done | sort -g | sed -n 2p)
        local wall cores machine
        read -r wall cores machine <<< "$rows"
        [ -n "$base" ] || base=$wall
        printf "%-44s %8.2f %8.2f %14.2f %14.2f\n" "$label" "$(echo "$bytes / $wall / 1000000000" | bc -l)" \
            "$(echo "$base / $wall" | bc -l)" "$cores" "$machine"
    done
    # The transport's ceiling: a lossless file (no compute) read the same way.
    local raw=raw/model.safetensors rb rs
    mount_once "$dir"; rb=$(stat -c %s "$MNT/$raw"); rs=$(secs cat "$MNT/$raw"); umount_wait
    printf "%-44s %8.2f\n" "lossless $raw (no compute)" "$(echo "$rb / $rs / 1000000000" | bc -l)"
}

bench_gguf_gptoss() {
    local layers=${BENCH_READ_LAYERS:-4}
    local st=$BENCH_DIR/random-20b-l$layers
    local g=$BENCH_DIR/gptoss-gguf/gpt-oss-20b-l1.gguf
    [ -d "$st" ] || python3 scripts/make_synthetic.py "$st" --preset 20b --layers "$layers" --fill random
    mkdir -p "$(dirname "$g")"
    [ -f "$g" ] || python3 scripts/make_synthetic_gguf.py "$g" --preset gpt-oss-20b --layers 1 --vocab 1000 --fill random
    echo "## gguf_gptoss: gpt-oss-20b experts from a GGUF (ggml MXFP4, llama.cpp layout) as Hugging Face BF16"
    echo "(cat of bf16/tensors/model.layers.0.mlp.experts.{gate_up_proj,down_proj}.safetensors, source warm,"
    echo " fresh mount, median of 3; baseline: the same tensors (same shapes, same BF16 bytes per value) from a"
    echo " gpt-oss safetensors source (Hugging Face MXFP4 layout), same run; transformers cannot load the GGUF)"
    cat "$st"/*.safetensors "$g" > /dev/null
    printf "%-52s %10s %10s %8s\n" "" "GB/s" "baseline" "ratio"
    for t in gate_up_proj down_proj; do
        local f=bf16/tensors/model.layers.0.mlp.experts.$t.safetensors bytes a b
        mount_once "$g"; bytes=$(stat -c %s "$MNT/$f"); umount_wait
        a=$(for _ in 1 2 3; do mount_once "$g"; secs cat "$MNT/$f"; umount_wait; done | median)
        b=$(for _ in 1 2 3; do mount_once "$st"; secs cat "$MNT/$f"; umount_wait; done | median)
        printf "%-52s %10.2f %10.2f %8.2f\n" "$t from the GGUF (baseline: from safetensors)" \
            "$(echo "$bytes / $a / 1000000000" | bc -l)" "$(echo "$bytes / $b / 1000000000" | bc -l)" \
            "$(echo "$b / $a" | bc -l)"
    done
}

# load: what users feel. transformers from_pretrained(..., dtype=bfloat16) of
# a gpt-oss-120b-shaped Hugging Face folder (BF16 embeddings and lm_head, 128
# MXFP4 experts a layer; BENCH_LOAD_LAYERS layers, default 1: bf16/ is ~8.7 GB
# a layer) with every page of every parameter read, against the same load of
# a local BF16 copy made with `gyrofs convert`. Median of 3, alternating which
# side goes first, in one run. The copy is deleted at the end.
bench_load() {
    local layers=${BENCH_LOAD_LAYERS:-1}
    local dir=$BENCH_DIR/random-120b-l$layers
    local py=${BENCH_PYTHON:-/opt/pyref/bin/python}
    local copy=$BENCH_DIR/bf16-copy-120b-l$layers
    "$py" -c "import torch, transformers" 2>/dev/null || { echo "## load: skipped (no torch + transformers in $py)"; return; }
    [ -f "$dir/config.json" ] || python3 scripts/make_synthetic.py "$dir" --preset 120b --layers "$layers" --fill random
    if [ ! -f "$copy/config.json" ]; then
        rm -rf "$copy"
        "$G" convert "$dir" "$copy" --view bf16 --files-only >/dev/null 2>&1
    fi
    local cached=0 cache_dir=$BENCH_DIR/load-cache
    "$G" mount --help | grep -q -- '--cache-converted' && cached=1
    local load="$LOAD_PY"
    # run_load DIR: seconds of one load (a failed load prints its error and stops the section)
    run_load() {
        local out
        out=$("$py" -c "$load" "$1" 2>"$BENCH_DIR/load.err" | tail -1)
        [ -n "$out" ] || { tail -5 "$BENCH_DIR/load.err" >&2; return 1; }
        echo "$out"
    }
    local a_disk=() b_disk=() a_warm=() b_again=() b_fresh=() e_disk=() a_disk_e=() f_again=() f_fill=()
    local i
    for i in 1 2 3; do
        # (a) + (b): from disk on both sides, then the same load again (the
        # copy in the page cache; the mount live, its pages just read).
        local_side() {
            drop_caches
            a_disk+=("$(run_load "$copy")")
            a_warm+=("$(run_load "$copy")")
        }
        mount_side() {
            drop_caches
            mount_once "$dir"
            b_disk+=("$(run_load "$MNT/bf16")")
            b_again+=("$(run_load "$MNT/bf16")")
            umount_wait
        }
        if [ $((i % 2)) = 1 ]; then local_side; mount_side; else mount_side; local_side; fi
        # (c) a fresh mount, the MXFP4 source in the page cache.
        cat "$dir"/*.safetensors > /dev/null
        mount_once "$dir"
        b_fresh+=("$(run_load "$MNT/bf16")")
        umount_wait
        # (e) --cache-converted: the cache filled once (before the first
        # round), a remount with the page cache dropped, against the copy
        # from disk; alternating.
        if [ $cached = 1 ]; then
            if [ "$i" = 1 ]; then
                rm -rf "$cache_dir"
                mount_once "$dir" --cache-converted --cache-dir "$cache_dir"
                run_load "$MNT/bf16" > /dev/null
                umount_exit
                settle
            fi
            cache_side() {
                drop_caches
                mount_once "$dir" --cache-converted --cache-dir "$cache_dir"
                e_disk+=("$(run_load "$MNT/bf16")")
                umount_exit
            }
            copy_side() { drop_caches; a_disk_e+=("$(run_load "$copy")"); }
            if [ $((i % 2)) = 1 ]; then copy_side; cache_side; else cache_side; copy_side; fi
            # (f) a fresh mount with an empty cache: the load that fills it
            # (from disk), then the load again on that live mount (its files
            # now complete: in passthrough), against (b).
            rm -rf "$cache_dir.f"
            drop_caches
            mount_once "$dir" --cache-converted --cache-dir "$cache_dir.f"
            f_fill+=("$(run_load "$MNT/bf16")")
            f_again+=("$(run_load "$MNT/bf16")")
            umount_exit
            rm -rf "$cache_dir.f"
            settle
        fi
    done
    # (d) transformers' own dequantizing load of the MXFP4 folder (once, source warm).
    local d=n/a
    if [ "${BENCH_LOAD_DEQUANT:-1}" = 1 ]; then
        cat "$dir"/*.safetensors > /dev/null
        d=$(run_load "$dir")
    fi
    local ad bd aw ba bf
    ad=$(printf "%s\n" "${a_disk[@]}" | median)
    bd=$(printf "%s\n" "${b_disk[@]}" | median)
    aw=$(printf "%s\n" "${a_warm[@]}" | median)
    ba=$(printf "%s\n" "${b_again[@]}" | median)
    bf=$(printf "%s\n" "${b_fresh[@]}" | median)
    local gb
    gb=$(size_of "$copy"/*.safetensors)
    echo "## load: transformers from_pretrained(dtype=bfloat16) of a gpt-oss-120b-shaped model ($layers layer(s): bf16/ $(fmt "$(echo "$gb / 1000000000" | bc -l)") GB, source $(fmt "$(echo "$(size_of "$dir"/*.safetensors) / 1000000000" | bc -l)") GB)"
    echo "(seconds to a loaded model with every page of every parameter read, median of 3, alternating; local copy made with"
    echo " gyrofs convert; 'from disk' = page cache dropped before the load, both sides; all: $(printf "%s " "${a_disk[@]}")| $(printf "%s " "${b_disk[@]}"))"
    printf "%-66s %8s %8s\n" "" "s" "ratio"
    printf "%-66s %8.2f %8s\n" "(a) local BF16 copy, from disk (baseline)" "$ad" "1.00"
    printf "%-66s %8.2f %8.2f\n" "(a) fresh mount of the MXFP4 source, from disk" "$bd" "$(echo "$bd / $ad" | bc -l)"
    printf "%-66s %8.2f %8s\n" "(b) local BF16 copy again, in the page cache (baseline)" "$aw" "1.00"
    printf "%-66s %8.2f %8.2f\n" "(b) the load again on the live mount (its pages just read)" "$ba" "$(echo "$ba / $aw" | bc -l)"
    printf "%-66s %8.2f %8.2f\n" "(c) fresh mount, MXFP4 source in the page cache" "$bf" "$(echo "$bf / $aw" | bc -l)"
    if [ "$d" != n/a ]; then
        printf "%-66s %8.2f %7.2fx slower than (c)\n" "(d) transformers' dequantizing load of the MXFP4 folder (once)" "$d" "$(echo "$d / $bf" | bc -l)"
    fi
    if [ $cached = 1 ]; then
        local ed aed
        ed=$(printf "%s\n" "${e_disk[@]}" | median)
        aed=$(printf "%s\n" "${a_disk_e[@]}" | median)
        local ff fa
        ff=$(printf "%s\n" "${f_fill[@]}" | median)
        fa=$(printf "%s\n" "${f_again[@]}" | median)
        echo "(e) all: $(printf "%s " "${a_disk_e[@]}")| $(printf "%s " "${e_disk[@]}"); (f) all: $(printf "%s " "${f_again[@]}")"
        printf "%-66s %8.2f %8s\n" "(e) local BF16 copy, from disk (baseline)" "$aed" "1.00"
        printf "%-66s %8.2f %8.2f\n" "(e) --cache-converted, filled, remount, page cache dropped" "$ed" "$(echo "$ed / $aed" | bc -l)"
        printf "%-66s %8.2f %8.2f\n" "(e) the filling load: fresh mount, empty cache, from disk" "$ff" "$(echo "$ff / $aed" | bc -l)"
        printf "%-66s %8.2f %8.2f\n" "(f) --cache-converted: the load again on the live mount (vs (b))" "$fa" "$(echo "$fa / $aw" | bc -l)"
        rm -rf "$cache_dir"
    fi
    [ "${BENCH_LOAD_KEEP_COPY:-0}" = 1 ] || rm -rf "$copy"
}

bench_gguf_hf() {
    local layers=${BENCH_GGUF_HF_LAYERS:-4}
    local py=${BENCH_PYTHON:-/opt/pyref/bin/python}
    local dir=$BENCH_DIR/gguf-hf-l$layers
    local name=llama-8b-l$layers-Q4_K.gguf
    "$py" -c "import torch, transformers, gguf" 2>/dev/null || { echo "## gguf_hf: skipped (no torch + transformers + gguf in $py)"; return; }
    mkdir -p "$dir"
    [ -f "$dir/$name" ] || python3 scripts/make_synthetic_gguf.py "$dir/$name" --preset llama-8b --layers "$layers" --type Q4_K --fill random
    echo "## gguf_hf: a GGUF as a Hugging Face model (llama-8b shapes, $layers layers, Q4_K, random blocks)"
    echo "(seconds to a loaded model with every weight read, and peak memory, median of 3, alternating; GGUF warm in the"
    echo " page cache, fresh mount each time;"
    echo " baseline: transformers' own from_pretrained(dir, gguf_file=...), which dequantizes to float32 with gguf-py, same run;"
    echo " peak MB: the Python process's maxrss, and for gyrofs also the daemon's own memory (RssAnon; its mapped GGUF is page cache))"
    cat "$dir/$name" > /dev/null
    local load='import resource, sys, time, torch
from transformers import AutoModelForCausalLM
kw = {"gguf_file": sys.argv[2]} if len(sys.argv) > 2 else {}
t0 = time.perf_counter()
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16, **kw)
for p in m.state_dict().values():  # read every weight (they may be mmap-backed)
    p.contiguous().view(-1).view(torch.uint8)[::2048].sum()
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)'
    local base=() mnt=() anon=()
    for _ in 1 2 3; do
        base+=("$("$py" -c "$load" "$dir" "$name" 2>/dev/null | tail -1)")
        local mt t rss
        mt=$(secs mount_once "$dir/$name")
        read -r t rss <<< "$("$py" -c "$load" "$MNT/bf16" 2>/dev/null | tail -1)"
        mnt+=("$(echo "$t + $mt" | bc -l) $rss")
        anon+=("$(awk '/RssAnon/ {print $2 / 1024}' "/proc/$(daemon_pid)/status")")
        umount_wait
    done
    local bs bm ms mm am
    read -r bs bm <<< "$(printf "%s\n" "${base[@]}" | sort -g | sed -n 2p)"
    read -r ms mm <<< "$(printf "%s\n" "${mnt[@]}" | sort -g | sed -n 2p)"
    am=$(printf "%s\n" "${anon[@]}" | median)
    printf "%-60s %8s %8s %10s %10s\n" "" "s" "ratio" "peak MB" "daemon MB"
    printf "%-60s %8.2f %8s %10.0f %10s\n" "from_pretrained(dir, gguf_file=...) (baseline)" "$bs" "1.00" "$bm" "-"
    printf "%-60s %8.2f %8.2f %10.0f %10.0f\n" "gyrofs mount + from_pretrained(MNT/bf16)" "$ms" "$(echo "$bs / $ms" | bc -l)" "$mm" "$am"
}

# remote: the fake remote server (scripts/fake_remote.py) and its counters.
remote_stats() {  # "requests data_requests bytes" since the last remote_reset
    curl -sf --max-time 20 "$RURL/__stats?log=0" |
        python3 -c 'import json, sys; s = json.load(sys.stdin); print(s["requests"], s["data_requests"], s["bytes"])'
}
remote_reset() { curl -sf --max-time 20 -X POST "$RURL/__reset" >/dev/null; }
# remote_mount URL CACHE_DIR: mount with its own block cache; the daemon logs
# (RUST_LOG=info: large fetches, retries, errors) to a new $RLOGS/mount-*.
remote_mount() {
    local log
    log=$(mktemp "$RLOGS/mount-$(date +%H%M%S)-XXXX")
    echo "gyrofs mount $1 (cache $2)" > "$log"
    RUST_LOG=${RUST_LOG:-info} "$G" mount "$1" "$MNT" --cache-dir "$2" --log-file "$log" 2>>"$log" ||
        { tail -20 "$log" >&2; return 1; }
}
# fresh_cache: a new, empty block cache directory.
fresh_cache() { mktemp -d "$RDIR/cache-XXXX"; }
mb() { printf "%.1f" "$(echo "$1 / 1000000" | bc -l)"; }

bench_remote() {
    local py=${BENCH_PYTHON:-/opt/pyref/bin/python}
    local rate=${BENCH_REMOTE_RATE:-200000000}
    local seq_mb=${BENCH_REMOTE_SEQ_MB:-1024} experts=${BENCH_REMOTE_EXPERTS:-32}
    local llama_layers=${BENCH_REMOTE_LLAMA_LAYERS:-16} gptoss_layers=${BENCH_REMOTE_GPTOSS_LAYERS:-1}
    local RDIR=$BENCH_DIR/remote
    local root=$RDIR/root hub=$RDIR/hub RLOGS=$RDIR/logs
    local sha_moe sha_llama sha_gptoss
    sha_moe=$(printf '%040d' 1); sha_llama=$(printf '%040d' 2); sha_gptoss=$(printf '%040d' 3)
    local havetorch=0
    "$py" -c "import torch, transformers, huggingface_hub" 2>/dev/null && havetorch=1
    mkdir -p "$root/bucket" "$hub" "$RLOGS"
    rm -rf "$RDIR"/cache-* "$RLOGS"/*

    # Inputs, generated once (into *.tmp, then renamed), again when their
    # size settings change (remembered in $RDIR/NAME.params).
    fresh_input() {  # NAME SETTINGS DIR...: true (after removing DIR...) if NAME must be generated
        local name=$1 want=$2
        shift 2
        [ "$(cat "$RDIR/$name.params" 2>/dev/null)" != "$want" ] || return 1
        rm -rf "$@"
        echo "$want" > "$RDIR/$name.params"
    }
    local seqf=$root/bucket/seq/model.safetensors
    fresh_input seq "$seq_mb" "$seqf" || true
    if [ ! -f "$seqf" ]; then
        mkdir -p "$(dirname "$seqf")"
        python3 - "$seqf.tmp" "$seq_mb" <<'PY'
import sys
sys.path.insert(0, "scripts")
import make_synthetic as m
path, mb = sys.argv[1], int(sys.argv[2])
m.write_shard(path, [(f"model.layers.{i}.weight", "BF16", [4096, 8192], "bf16") for i in range(max(1, mb // 64))], "random")
PY
        mv "$seqf.tmp" "$seqf"
    fi
    local moe=$hub/org/moe/commits/$sha_moe
    fresh_input moe "$experts" "$hub/org/moe" || true
    if [ ! -d "$moe" ]; then
        rm -rf "$RDIR/moe.tmp"; mkdir -p "$RDIR/moe.tmp" "$hub/org/moe/refs"
        python3 - "$RDIR/moe.tmp" "$experts" <<'PY'
import json, sys
sys.path.insert(0, "scripts")
import make_synthetic as m
d, E = sys.argv[1], int(sys.argv[2])
h = i = 2880
e = "model.layers.0.mlp.experts."
m.write_shard(d + "/model.safetensors", [
    ("model.embed_tokens.weight", "BF16", [32, h], "bf16"),
    (e + "gate_up_proj_blocks", "U8", [E, 2 * i, h // 32, 16], "blocks"),
    (e + "gate_up_proj_scales", "U8", [E, 2 * i, h // 32], "scales"),
    (e + "gate_up_proj_bias", "BF16", [E, 2 * i], "bf16"),
    (e + "down_proj_blocks", "U8", [E, h, i // 32, 16], "blocks"),
    (e + "down_proj_scales", "U8", [E, h, i // 32], "scales"),
    (e + "down_proj_bias", "BF16", [E, h], "bf16"),
], "random")
c = json.load(open("tests/data/gpt-oss-tiny/config.json"))
c.update(hidden_size=h, intermediate_size=i, num_hidden_layers=1, num_local_experts=E, layer_types=["full_attention"])
json.dump(c, open(d + "/config.json", "w"), indent=2)
PY
        mkdir -p "$(dirname "$moe")"; mv "$RDIR/moe.tmp" "$moe"
        echo "$sha_moe" > "$hub/org/moe/refs/main"
    fi
    local llama=$hub/org/llama/commits/$sha_llama
    fresh_input llama "$llama_layers" "$hub/org/llama" || true
    if [ $havetorch = 1 ] && [ ! -d "$llama" ]; then
        rm -rf "$RDIR/llama.tmp"; mkdir -p "$hub/org/llama/refs"
        { "$py" - "$RDIR/llama.tmp" "$llama_layers" <<'PY'
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
out, layers = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=4096, num_hidden_layers=layers,
                  num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=2048,
                  tie_word_embeddings=False)
LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out, max_shard_size="256MB")
PY
        } 2>"$RDIR/generate.log"
        mkdir -p "$(dirname "$llama")"; mv "$RDIR/llama.tmp" "$llama"
        echo "$sha_llama" > "$hub/org/llama/refs/main"
    fi
    # gpt-oss-20b shapes with a small vocabulary (8192: embeddings of 47 MB
    # instead of 1.2 GB), MXFP4 experts, loadable by transformers.
    local gptoss=$hub/org/gptoss/commits/$sha_gptoss
    fresh_input gptoss "$gptoss_layers" "$hub/org/gptoss" || true
    if [ $havetorch = 1 ] && [ "$gptoss_layers" -gt 0 ] && [ ! -d "$gptoss" ]; then
        rm -rf "$RDIR/gptoss.tmp"; mkdir -p "$hub/org/gptoss/refs"
        python3 - "$RDIR/gptoss.tmp" "$gptoss_layers" <<'PY'
import sys
sys.path.insert(0, "scripts")
import make_synthetic as m
m.PRESETS["20b-v8k"] = dict(m.PRESETS["20b"], vocab=8192)
sys.argv = ["make_synthetic.py", sys.argv[1], "--preset", "20b-v8k", "--layers", sys.argv[2], "--fill", "random"]
m.main()
PY
        mkdir -p "$(dirname "$gptoss")"; mv "$RDIR/gptoss.tmp" "$gptoss"
        echo "$sha_gptoss" > "$hub/org/gptoss/refs/main"
    fi

    # The server: bandwidth cap on every body byte, all connections together.
    rm -f "$RDIR/port"
    python3 scripts/fake_remote.py --root "$root" --hub-root "$hub" --port-file "$RDIR/port" \
        --rate "$rate" > "$RDIR/server.log" 2>&1 &
    REMOTE_PID=$!
    local i=0
    until [ -s "$RDIR/port" ]; do
        i=$((i + 1))
        if [ $i -gt 200 ] || ! kill -0 "$REMOTE_PID" 2>/dev/null; then
            echo "bench_remote: fake_remote.py did not start: $(cat "$RDIR/server.log")" >&2
            return 1
        fi
        sleep 0.1
    done
    local RURL
    RURL=http://127.0.0.1:$(tr -d '\n' < "$RDIR/port")
    local -x AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_REGION=us-east-1 AWS_ENDPOINT_URL=$RURL \
        HF_ENDPOINT=$RURL HF_TOKEN= HF_HOME=$RDIR/hf-home HF_HUB_DISABLE_TELEMETRY=1 \
        HF_HUB_DISABLE_PROGRESS_BARS=1
    # The server hashes Hub files (sha1, sha256) on first use and caches the
    # hashes: do it now, outside every measurement.
    for r in moe llama gptoss; do
        [ -d "$hub/org/$r" ] && curl -sf --max-time 600 "$RURL/api/models/org/$r/tree/main?recursive=true" >/dev/null
    done
    # Server side warm: its files come from its page cache, so the cap (not
    # this disk) is the bound.
    remote_warm() {
        cat "$seqf" "$moe"/* > /dev/null
        local d
        for d in "$llama" "$gptoss"; do if [ -d "$d" ]; then cat "$d"/* > /dev/null; fi; done
    }
    local cap="capped at $(printf "%.0f" "$(echo "$rate / 1000000" | bc -l)") MB/s"
    [ "$rate" != 0 ] || cap="uncapped (BENCH_REMOTE_RATE=0)"
    # ofcap BYTES_PER_SEC: the fraction of the cap
    ofcap() { if [ "$rate" = 0 ]; then echo -; else printf "%.2f" "$(echo "$1 / $rate" | bc -l)"; fi; }
    echo "## remote: remote sources through the block cache, against a fake S3 / Hub server $cap"
    echo "(scripts/fake_remote.py --rate $rate on 127.0.0.1: one token bucket for all connections, body bytes"
    echo " only; cold = a fresh --cache-dir; median of 3, alternating with the baseline, same server, same cap;"
    echo " requests / MB = the server's counters (all requests / data requests, body bytes) for that step)"

    # 1. Sequential read of one large object.
    local size url=s3://bucket/seq/ curls=() colds=() warms=() locals_=() crow= grow= wrow= mrow=
    size=$(stat -c %s "$seqf")
    for _ in 1 2 3; do
        remote_warm
        remote_reset
        local s c r
        s=$(secs curl -sf --max-time 600 -o /dev/null "$RURL/bucket/seq/model.safetensors")
        curls+=("$s $(remote_stats)")
        c=$(fresh_cache)
        remote_reset
        remote_mount "$url" "$c"
        mrow=$(remote_stats)
        remote_reset
        s=$(secs cat "$MNT/raw/model.safetensors")
        colds+=("$s $(remote_stats) $(stat -c %s "$MNT/raw/model.safetensors")")
        umount_wait
        # The same cache remounted, page cache dropped: bytes from the local
        # block cache; baseline: cat of the source file from the same disk.
        drop_caches
        remote_mount "$url" "$c"
        remote_reset
        s=$(secs cat "$MNT/raw/model.safetensors")
        warms+=("$s $(remote_stats)")
        umount_wait
        drop_caches
        locals_+=("$(secs cat "$seqf")")
        rm -rf "$c"
    done
    crow=$(printf "%s\n" "${curls[@]}" | sort -g | sed -n 2p)
    grow=$(printf "%s\n" "${colds[@]}" | sort -g | sed -n 2p)
    wrow=$(printf "%s\n" "${warms[@]}" | sort -g | sed -n 2p)
    local lt
    lt=$(printf "%s\n" "${locals_[@]}" | median)
    local ct cq cd cb gt gq gd gb gsize wt wq wd wb
    read -r ct cq cd cb <<< "$crow"
    read -r gt gq gd gb gsize <<< "$grow"
    read -r wt wq wd wb <<< "$wrow"
    echo "### sequential: cat MNT/raw/model.safetensors of $url (one $(mb "$size") MB safetensors file of random BF16)"
    echo "(MB/s = file bytes / s; of cap = bytes/s / BENCH_REMOTE_RATE (goal >= 0.80); ratio = baseline s / s, same run;"
    echo " the mount itself: $(echo "$mrow" | awk '{print $1}') requests, $(mb "$(echo "$mrow" | awk '{print $3}')") MB)"
    printf "%-60s %7s %8s %7s %6s %9s %11s\n" "" s "MB/s" "of cap" ratio requests "MB fetched"
    printf "%-60s %7.2f %8.1f %7s %6s %9d %11s\n" "curl of the object, same server (baseline)" "$ct" \
        "$(echo "$size / $ct / 1000000" | bc -l)" "$(ofcap "$(echo "$size / $ct" | bc -l)")" 1.00 "$cq" "$(mb "$cb")"
    printf "%-60s %7.2f %8.1f %7s %6.2f %9d %11s\n" "gyrofs, cold cache" "$gt" \
        "$(echo "$gsize / $gt / 1000000" | bc -l)" "$(ofcap "$(echo "$gsize / $gt" | bc -l)")" "$(echo "$ct / $gt" | bc -l)" "$gq" "$(mb "$gb")"
    printf "%-60s %7.2f %8.1f %7s %6s %9s %11s\n" "cat of the source file, page cache dropped (baseline)" "$lt" \
        "$(echo "$size / $lt / 1000000" | bc -l)" - 1.00 - -
    printf "%-60s %7.2f %8.1f %7s %6.2f %9d %11s\n" "gyrofs, same cache remounted, page cache dropped" "$wt" \
        "$(echo "$gsize / $wt / 1000000" | bc -l)" - "$(echo "$lt / $wt" | bc -l)" "$wq" "$(mb "$wb")"
    echo "(source file $size bytes; MNT/raw/model.safetensors $gsize bytes; cold read fetched $gb bytes in $gd data requests)"
    echo

    # 2. One expert of a gpt-oss-20b-shaped MoE layer: first byte, whole file.
    local ef=layer_00_expert_007.safetensors e=7 ranges share
    ranges=$(python3 - "$moe/model.safetensors" "$experts" "$e" <<'PY'
import json, struct, sys
path, E, e = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
for k, v in h.items():
    if ".experts." in k:
        a, b = v["data_offsets"]
        s = (b - a) // E
        print(f"{8 + n + a + e * s}-{8 + n + a + (e + 1) * s - 1}")
PY
)
    share=$(echo "$ranges" | awk -F- '{s += $2 - $1 + 1} END {print s}')
    local cdn=$RURL/cdn/org/moe/$sha_moe/model.safetensors
    local args=() first=1 rg
    for rg in $ranges; do
        [ $first = 1 ] || args+=(--next)
        args+=(-sf --max-time 60 -r "$rg" -o /dev/null -w '%{time_starttransfer}\n' "$cdn")
        first=0
    done
    local ttfb='import os, struct, sys, time
t0 = time.perf_counter()
f = open(sys.argv[1], "rb", buffering=0)
n = struct.unpack("<Q", f.read(8))[0]
f.seek(8 + n)
assert len(f.read(1)) == 1
t1 = time.perf_counter()
while f.read(1 << 20):
    pass
t2 = time.perf_counter()
print((t1 - t0) * 1000, (t2 - t0) * 1000, os.fstat(f.fileno()).st_size)'
    local ebase=() ebf=() eraw=() v
    for _ in 1 2 3; do
        remote_warm
        remote_reset
        local t0 t1 fb
        t0=$(now)
        fb=$(curl "${args[@]}" | sed -n 1p)
        t1=$(now)
        ebase+=("$(echo "($t1 - $t0) * 1000" | bc -l) $(echo "$fb * 1000" | bc -l) $(remote_stats)")
        for v in bf16 raw; do
            local c out
            c=$(fresh_cache)
            remote_mount hf://org/moe "$c"
            remote_reset
            out="$(python3 -c "$ttfb" "$MNT/$v/experts/$ef") $(remote_stats)"
            if [ $v = bf16 ]; then ebf+=("$out"); else eraw+=("$out"); fi
            umount_wait
            rm -rf "$c"
        done
    done
    local bw bf bq bd bb
    read -r bw bf bq bd bb <<< "$(printf "%s\n" "${ebase[@]}" | sort -g | sed -n 2p)"
    echo "### expert: one expert file of hf://org/moe (gpt-oss-20b-shaped MoE layer, $experts experts, $(mb "$(stat -c %s "$moe/model.safetensors")") MB)"
    echo "(fresh cache, mount, counters reset, then in Python: open MNT/VIEW/experts/$ef, read the 8-byte"
    echo " header length n, seek to 8+n, read 1 byte = first byte (the header is built locally; the first tensor byte"
    echo " needs the fetch); then read to the end = whole. Source bytes of the expert: its 1/$experts of the six expert"
    echo " tensors, $(mb "$share") MB in 6 ranges. Baseline: one curl fetching those 6 ranges from the Hub's CDN URL"
    echo " (keep-alive), same cap; its first byte = curl's time_starttransfer of the first range. ms, median of 3)"
    printf "%-50s %10s %9s %9s %9s %11s %9s\n" "" "first ms" "whole ms" "ratio" requests "MB fetched" "/source"
    printf "%-50s %10.1f %9.1f %9s %9d %11s %9.2f\n" "curl of the expert's 6 source ranges (baseline)" "$bf" "$bw" 1.00 "$bq" "$(mb "$bb")" "$(echo "$bb / $share" | bc -l)"
    [ "$rate" = 0 ] || printf "%-50s %10s %9.1f %9s\n" "source bytes / cap (ideal)" - "$(echo "$share / $rate * 1000" | bc -l)" -
    local row lab ft wt2 fsz q d b
    for v in bf16 raw; do
        if [ $v = bf16 ]; then row=$(printf "%s\n" "${ebf[@]}" | sort -g -k2 | sed -n 2p); lab="bf16/experts/$ef"; else
            row=$(printf "%s\n" "${eraw[@]}" | sort -g -k2 | sed -n 2p); lab="raw/experts/$ef"; fi
        read -r ft wt2 fsz q d b <<< "$row"
        printf "%-50s %10.1f %9.1f %9.2f %9d %11s %9.2f\n" "$lab ($(mb "$fsz") MB)" "$ft" "$wt2" \
            "$(echo "$bw / $wt2" | bc -l)" "$q" "$(mb "$b")" "$(echo "$b / $share" | bc -l)"
    done
    echo

    # 3. from_pretrained of a model from the Hub: gyrofs vs download first.
    if [ $havetorch = 0 ]; then
        echo "### from_pretrained: skipped (no torch + transformers + huggingface_hub in $py)"
    else
        bench_remote_load hf://org/llama "$sha_llama" "$llama" \
            "Llama, $llama_layers layers, hidden 1024, random init, BF16: bf16/ is lossless"
        if [ -d "$gptoss" ]; then
            bench_remote_load hf://org/gptoss "$sha_gptoss" "$gptoss" \
                "gpt-oss-20b shapes, $gptoss_layers layer(s), vocab 8192, random, MXFP4 experts: bf16/ dequantizes them; transformers dequantizes the download on CPU"
        fi
    fi

    # (fuser logs a WARN for every ioctl, e.g. Python's isatty() at open.)
    echo "(mount logs: $(ls "$RLOGS" | wc -l) mounts, $(cat "$RLOGS"/mount-* | grep -E ' (WARN|ERROR) ' | grep -vc 'Not Implemented\] ioctl' || true) warnings or errors other than fuser's unimplemented ioctl; $RLOGS)"
    kill "$REMOTE_PID" 2>/dev/null || true
    wait "$REMOTE_PID" 2>/dev/null || true
    REMOTE_PID=
    rm -rf "$RDIR"/cache-* "$RDIR"/dl
}

# bench_remote_load URL SHA DIR LABEL: from_pretrained through gyrofs (cold:
# fresh cache; warm: URL@SHA remounted on the same cache) against
# snapshot_download + from_pretrained of the download. Runs inside
# bench_remote (its server, environment and helpers).
bench_remote_load() {
    local url=$1 sha=$2 dir=$3 label=$4 repo=${1#hf://}
    local dl=$RDIR/dl bytes
    bytes=$(size_of "$dir")
    local load="$LOAD_PY"
    local download='import sys, time
from huggingface_hub import snapshot_download
t0 = time.perf_counter()
snapshot_download(sys.argv[1], revision=sys.argv[2], local_dir=sys.argv[3])
print(time.perf_counter() - t0)'
    local how="huggingface_hub.snapshot_download(repo, revision=\"main\", local_dir=...)"
    # huggingface_hub follows a HEAD's redirect when it stays on the same
    # host, and the fake Hub's CDN (/cdn/...) is on the Hub's host, without
    # X-Repo-Commit: snapshot_download then fails ("missing the
    # 'X-Repo-Commit' header"). With the Hub at localhost and the CDN at
    # 127.0.0.1 (same server, same cap) it stops at the 302, as with the real
    # Hub's CDN.
    local hf_endpoint=${RURL/127.0.0.1/localhost}
    local fallback=0
    # dl_once: download into $dl; prints seconds.
    dl_once() {
        rm -rf "$dl"; sync
        if [ $fallback = 0 ]; then
            HF_ENDPOINT=$hf_endpoint "$py" -c "$download" "$repo" main "$dl" 2>"$RDIR/snapshot_download.err" | tail -1 || true
        else
            local t0 f
            t0=$(now); mkdir -p "$dl"
            for f in $(curl -sf --max-time 60 "$RURL/api/models/$repo/revision/main" |
                       python3 -c 'import json, sys; print("\n".join(s["rfilename"] for s in json.load(sys.stdin)["siblings"]))'); do
                mkdir -p "$(dirname "$dl/$f")"
                curl -sfL --max-time 600 -o "$dl/$f" "$RURL/$repo/resolve/main/$f"
            done
            echo "$(now) - $t0" | bc -l
        fi
    }
    local base=() cold=() warm=() lwarm=()
    for _ in 1 2 3; do
        remote_warm
        remote_reset
        local d l m c s
        d=$(dl_once)
        if ! [[ $d =~ ^[0-9.]+$ ]]; then
            if [ $fallback = 1 ]; then echo "bench_remote: download by curl failed" >&2; return 1; fi
            echo "snapshot_download failed against the fake Hub (falling back to curl of the resolve URLs):"
            tail -5 "$RDIR/snapshot_download.err" | sed 's/^/    /'
            curl -sf --max-time 20 "$RURL/__stats" | python3 -c 'import json, sys
for e in json.load(sys.stdin)["log"]:
    if e["status"] is None or e["status"] >= 400: print("    request", e["method"], e["path"], "->", e["status"])' | tail -5
            fallback=1 how="curl -L of each file's resolve URL (siblings of /api/models/REPO/revision/main)"
            remote_reset
            d=$(dl_once)
        fi
        local st
        st=$(remote_stats)
        l=$("$py" -c "$load" "$dl" 2>/dev/null | tail -1)
        base+=("$(echo "$d + $l" | bc -l) $d $l $st")
        c=$(fresh_cache)
        remote_reset
        m=$(secs remote_mount "$url" "$c")
        l=$("$py" -c "$load" "$MNT/bf16" 2>/dev/null | tail -1)
        cold+=("$(echo "$m + $l" | bc -l) $m $l $(remote_stats)")
        umount_wait
        # Warm: page cache dropped; the download from disk, the mount from
        # its block cache, pinned to the commit.
        drop_caches
        lwarm+=("$("$py" -c "$load" "$dl" 2>/dev/null | tail -1)")
        drop_caches
        remote_reset
        m=$(secs remote_mount "$url@$sha" "$c")
        l=$("$py" -c "$load" "$MNT/bf16" 2>/dev/null | tail -1)
        warm+=("$(echo "$m + $l" | bc -l) $m $l $(remote_stats)")
        umount_wait
        rm -rf "$c"
    done
    local bt bd bl bq bdq bb ct cm cl cq cdq cb wt wm wl wq wdq wb lw
    read -r bt bd bl bq bdq bb <<< "$(printf "%s\n" "${base[@]}" | sort -g | sed -n 2p)"
    read -r ct cm cl cq cdq cb <<< "$(printf "%s\n" "${cold[@]}" | sort -g | sed -n 2p)"
    read -r wt wm wl wq wdq wb <<< "$(printf "%s\n" "${warm[@]}" | sort -g | sed -n 2p)"
    lw=$(printf "%s\n" "${lwarm[@]}" | median)
    echo "### from_pretrained: $url ($label; $(mb "$bytes") MB in $(ls "$dir" | grep -c safetensors$) safetensors files)"
    echo "(seconds to a loaded model with every weight read, median of 3, alternating. Cold: gyrofs mount (fresh"
    echo " cache) + from_pretrained(MNT/bf16), against $how"
    echo " + from_pretrained(local_dir). Warm: page cache dropped; gyrofs remounts $url@SHA on the same cache,"
    echo " against from_pretrained(local_dir) of the download. ratio = this / baseline)"
    printf "%-62s %7s %7s %7s %7s %9s %11s\n" "" s fetch load ratio requests "MB fetched"
    printf "%-62s %7.2f %7.2f %7.2f %7s %9d %11s\n" "download + from_pretrained(local_dir), cold (baseline)" "$bt" "$bd" "$bl" 1.00 "$bq" "$(mb "$bb")"
    printf "%-62s %7.2f %7.2f %7.2f %7.2f %9d %11s\n" "gyrofs mount + from_pretrained(MNT/bf16), cold cache" "$ct" "$cm" "$cl" "$(echo "$ct / $bt" | bc -l)" "$cq" "$(mb "$cb")"
    printf "%-62s %7.2f %7s %7.2f %7s %9s %11s\n" "from_pretrained(local_dir), page cache dropped (baseline)" "$lw" - "$lw" 1.00 - -
    printf "%-62s %7.2f %7.2f %7.2f %7.2f %9d %11s\n" "gyrofs remount @SHA + from_pretrained, page cache dropped" "$wt" "$wm" "$wl" "$(echo "$wt / $lw" | bc -l)" "$wq" "$(mb "$wb")"
    echo "(fetch = the download, or gyrofs mount until it answers; gyrofs's weight bytes are fetched during load)"
    echo
}

# gguf_out: the gguf/ view (docs/GGUF_OUT.md) on a Llama-3.2-1B-shaped model.
bench_gguf_out() {
    local py=${BENCH_PYTHON:-/opt/pyref/bin/python}
    local layers=${BENCH_GGUF_OUT_LAYERS:-16}
    local llama_cpp=${LLAMA_CPP:-/work/tmp-gguf/llama_cpp_python-0.3.36/vendor/llama.cpp}
    local dir=$BENCH_DIR/gguf-out-l$layers src conv=$BENCH_DIR/gguf-out-l$layers/converted
    src=$dir/model
    "$py" -c "import torch, transformers, gguf, llama_cpp" 2>/dev/null ||
        { echo "## gguf_out: skipped (no torch + transformers + gguf + llama_cpp in $py)"; return; }
    [ -f "$llama_cpp/convert_hf_to_gguf.py" ] || { echo "## gguf_out: skipped (no llama.cpp converter at LLAMA_CPP=$llama_cpp)"; return; }
    mkdir -p "$dir" "$conv"
    if [ ! -f "$src/model.safetensors" ]; then
        # Llama-3.2-1B shapes (hidden 2048, 32 heads, 8 KV heads, intermediate 8192, vocab 128256,
        # tied embeddings), random BF16 weights; the tokenizer is a fixture's (tiny SentencePiece).
        "$py" - "$src" "$layers" <<'PY'
import json, shutil, sys, torch
from pathlib import Path
from safetensors.torch import save_file
out, layers = Path(sys.argv[1]), int(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
fix = Path("tests/data/gguf-out/llama")
for f in ("tokenizer.model", "tokenizer_config.json"):
    shutil.copy(fix / f, out / f)
H, I, V, heads, kv = 2048, 8192, 128256, 32, 8
d = H // heads
g = torch.Generator().manual_seed(0)
r = lambda *s: (0.02 * torch.randn(*s, generator=g)).to(torch.bfloat16)
state = {"model.embed_tokens.weight": r(V, H), "model.norm.weight": r(H)}
for i in range(layers):
    p = f"model.layers.{i}."
    state.update({p + "input_layernorm.weight": r(H), p + "post_attention_layernorm.weight": r(H),
                  p + "self_attn.q_proj.weight": r(H, H), p + "self_attn.k_proj.weight": r(kv * d, H),
                  p + "self_attn.v_proj.weight": r(kv * d, H), p + "self_attn.o_proj.weight": r(H, H),
                  p + "mlp.gate_proj.weight": r(I, H), p + "mlp.up_proj.weight": r(I, H), p + "mlp.down_proj.weight": r(H, I)})
save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": I,
       "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": V,
       "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True,
       "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"}
(out / "config.json").write_text(json.dumps(cfg, indent=2))
PY
    fi
    echo "## gguf_out: the gguf/ view, Llama-3.2-1B shapes ($layers layers, $(mb "$(size_of "$src"/model.safetensors)") MB of BF16)"
    # A cold read of a tensor file through the mount: the source warm in the page cache, a fresh mount each
    # time, median of 3, alternating; ratio = this file's throughput / raw/model.safetensors's.
    local tmpf=$dir/read.txt
    local load='import sys, time, llama_cpp
t0 = time.perf_counter()
kw = dict(model_path=sys.argv[1], n_ctx=64, verbose=False, n_threads=2)
try:
    m = llama_cpp.Llama(use_extra_bufts=False, **kw)
except TypeError:
    m = llama_cpp.Llama(**kw)
m.eval(m.tokenize(b"Hello world", add_bos=True))
print(time.perf_counter() - t0)'
    cat "$src/model.safetensors" > /dev/null
    : > "$tmpf"
    for _ in 1 2 3; do
        for f in raw/model.safetensors gguf/model-BF16.gguf gguf/model-F16.gguf gguf/model-Q8_0.gguf gguf/model-Q4_K_M.gguf; do
            mount_once "$src"
            local n t
            n=$(stat -c %s "$MNT/$f")
            t=$(secs cat "$MNT/$f")
            echo "$f $n $t" >> "$tmpf"
            umount_wait
        done
    done
    local raw_rate
    raw_rate=$(awk '$1 == "raw/model.safetensors" {printf "%.0f\n", $2 / $3}' "$tmpf" | median)
    printf "%-44s %10s %8s\n" "cold read through the mount (cat)" "GB/s" "ratio"
    for f in raw/model.safetensors gguf/model-BF16.gguf gguf/model-F16.gguf gguf/model-Q8_0.gguf gguf/model-Q4_K_M.gguf; do
        local r
        r=$(awk -v f="$f" '$1 == f {printf "%.0f\n", $2 / $3}' "$tmpf" | median)
        printf "%-44s %10.2f %8.2f\n" "$f" "$(echo "$r / 1000000000" | bc -l)" "$(echo "$r / $raw_rate" | bc -l)"
    done
    # The converter's own file (convert_hf_to_gguf.py --outtype q8_0), its time, and llama.cpp's load
    # (Llama() + one evaluation, mmap on) of it and of the mounted file; then "convert + load" against
    # "mount + load". Page cache dropped before each (both sides read their source from disk).
    local base=() ours=() convs=()
    for _ in 1 2 3; do
        rm -f "$conv/model-Q8_0.gguf"
        drop_caches
        convs+=("$(secs "$py" "$llama_cpp/convert_hf_to_gguf.py" "$src" --outtype q8_0 --outfile "$conv/model-Q8_0.gguf" 2>/dev/null)")
        drop_caches
        base+=("$("$py" -c "$load" "$conv/model-Q8_0.gguf" 2>/dev/null | tail -1)")
        drop_caches
        local mt lt
        mt=$(secs mount_once "$src")
        lt=$("$py" -c "$load" "$MNT/gguf/model-Q8_0.gguf" 2>/dev/null | tail -1)
        ours+=("$(echo "$mt + $lt" | bc -l) $mt $lt")
        umount_wait
    done
    local cv bl ot om ol
    cv=$(printf "%s\n" "${convs[@]}" | median)
    bl=$(printf "%s\n" "${base[@]}" | median)
    read -r ot om ol <<< "$(printf "%s\n" "${ours[@]}" | sort -g | sed -n 2p)"
    printf "%-60s %8s %8s\n" "Q8_0, page cache dropped (median of 3, alternating)" "s" "ratio"
    printf "%-60s %8.2f %8s\n" "llama.cpp load + 1 eval of the converter's file (baseline)" "$bl" "1.00"
    printf "%-60s %8.2f %8.2f\n" "llama.cpp load + 1 eval of MNT/gguf/model-Q8_0.gguf" "$ol" "$(echo "$ol / $bl" | bc -l)"
    printf "%-60s %8.2f %8s\n" "convert_hf_to_gguf.py --outtype q8_0 + load (baseline)" "$(echo "$cv + $bl" | bc -l)" "1.00"
    printf "%-60s %8.2f %7.2fx faster\n" "gyrofs mount + load" "$ot" "$(echo "($cv + $bl) / $ot" | bc -l)"
    # The same loads with everything in the page cache: the converter's file warm; a fresh mount
    # with its source warm; the load again on that live mount (its pages stay cached).
    local bw=() ow=() aw=()
    for _ in 1 2 3; do
        cat "$conv/model-Q8_0.gguf" > /dev/null
        bw+=("$("$py" -c "$load" "$conv/model-Q8_0.gguf" 2>/dev/null | tail -1)")
        cat "$src/model.safetensors" > /dev/null
        mount_once "$src"
        ow+=("$("$py" -c "$load" "$MNT/gguf/model-Q8_0.gguf" 2>/dev/null | tail -1)")
        aw+=("$("$py" -c "$load" "$MNT/gguf/model-Q8_0.gguf" 2>/dev/null | tail -1)")
        umount_wait
    done
    local bwm owm awm
    bwm=$(printf "%s\n" "${bw[@]}" | median)
    owm=$(printf "%s\n" "${ow[@]}" | median)
    awm=$(printf "%s\n" "${aw[@]}" | median)
    printf "%-60s %8s %8s\n" "Q8_0, page cache warm (median of 3, alternating)" "s" "ratio"
    printf "%-60s %8.2f %8s\n" "llama.cpp load + 1 eval of the converter's file (baseline)" "$bwm" "1.00"
    printf "%-60s %8.2f %8.2f\n" "the mounted file, fresh mount, source warm" "$owm" "$(echo "$owm / $bwm" | bc -l)"
    printf "%-60s %8.2f %8.2f\n" "the mounted file again, same mount" "$awm" "$(echo "$awm / $bwm" | bc -l)"
    # With --cache-converted (docs/CACHE.md): the file converted once (one cat), then loaded after a
    # remount with the page cache dropped, against the converter's file from disk; alternating.
    local cdir=$dir/converted-cache bc=() cc=()
    rm -rf "$cdir"
    mount_once "$src" --cache-converted --cache-dir "$cdir"
    cat "$MNT/gguf/model-Q8_0.gguf" > /dev/null
    umount_exit
    local i
    for i in 1 2 3; do
        conv_side() { drop_caches; bc+=("$("$py" -c "$load" "$conv/model-Q8_0.gguf" 2>/dev/null | tail -1)"); }
        cache_side() {
            drop_caches
            mount_once "$src" --cache-converted --cache-dir "$cdir"
            cc+=("$("$py" -c "$load" "$MNT/gguf/model-Q8_0.gguf" 2>/dev/null | tail -1)")
            umount_exit
        }
        if [ $((i % 2)) = 1 ]; then conv_side; cache_side; else cache_side; conv_side; fi
    done
    local bcm ccm
    bcm=$(printf "%s\n" "${bc[@]}" | median)
    ccm=$(printf "%s\n" "${cc[@]}" | median)
    printf "%-60s %8s %8s\n" "Q8_0 --cache-converted, remounted, page cache dropped" "s" "ratio"
    printf "%-60s %8.2f %8s\n" "llama.cpp load + 1 eval of the converter's file (baseline)" "$bcm" "1.00"
    printf "%-60s %8.2f %8.2f\n" "the mounted file, converted bytes from the cache" "$ccm" "$(echo "$ccm / $bcm" | bc -l)"
    rm -rf "$cdir"
    rm -f "$conv/model-Q8_0.gguf"
    # Q4_K_M (issue 21): the recommended path, convert to BF16 then llama-quantize (its default
    # threads), against mount + cat of gguf/model-Q4_K_M.gguf; source warm, once each.
    local quant='import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))'
    cat "$src/model.safetensors" > /dev/null
    local cb qt mk ck
    cb=$(secs "$py" "$llama_cpp/convert_hf_to_gguf.py" "$src" --outtype bf16 --outfile "$conv/model-BF16.gguf" 2>/dev/null)
    qt=$(secs "$py" -c "$quant" "$conv/model-BF16.gguf" "$conv/model-Q4_K_M.gguf" 2>/dev/null)
    mk=$(secs mount_once "$src")
    ck=$(secs cat "$MNT/gguf/model-Q4_K_M.gguf")
    # The same tensors and keys (scripts/compare_gguf.py: authorship keys such as general.name,
    # which the converter takes from the folder's name, apart).
    local same=different
    "$py" scripts/compare_gguf.py "$conv/model-Q4_K_M.gguf" "$MNT/gguf/model-Q4_K_M.gguf" 2>/dev/null |
        grep -q '^same' && same=same
    local same_note="$same tensors and keys"
    umount_wait
    printf "%-60s %8s %8s\n" "Q4_K_M, source warm (once)" "s" "ratio"
    printf "%-60s %8.2f %8s\n" "convert_hf_to_gguf.py --outtype bf16 + llama-quantize Q4_K_M" "$(echo "$cb + $qt" | bc -l)" "1.00"
    printf "%-60s %8.2f %8s\n" "  of which llama-quantize" "$qt" ""
    printf "%-60s %8.2f %7.2fx faster\n" "gyrofs mount + cat gguf/model-Q4_K_M.gguf ($same_note)" "$(echo "$mk + $ck" | bc -l)" "$(echo "($cb + $qt) / ($mk + $ck)" | bc -l)"
    rm -f "$conv/model-BF16.gguf" "$conv/model-Q4_K_M.gguf"
}

sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(mount read bf16 cores experts load gguf gguf_hf gguf_gptoss gguf_out scale torch remote)
command -v bc >/dev/null || { echo "bench.sh needs bc (apt-get install bc)" >&2; exit 1; }
for s in "${sections[@]}"; do
    "bench_$s"
    echo
done
