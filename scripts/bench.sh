#!/usr/bin/env bash
# gyrofs benchmarks. Every figure is reported next to a baseline measured in
# the same run on the same machine (these machines are noisy; ratios travel,
# absolute numbers do not). Method and recorded results: docs/PERFORMANCE.md.
#
#   scripts/bench.sh [mount] [read] ...     (default: all sections)
#
# Environment: BENCH_DIR (scratch space, default /tmp/gyrofs-bench; needs
# ~6 GB of real disk for `read`), BENCH_READ_LAYERS (layers of the random
# 20b-shaped checkpoint used by `read`, default 4, ~4.6 GB).
# Needs root (mounts, drop_caches) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-/tmp/gyrofs-bench}
mkdir -p "$BENCH_DIR"
cargo build --release --quiet
G=$PWD/target/release/gyrofs
MNT=$BENCH_DIR/mnt
mkdir -p "$MNT"
cleanup() { umount -l "$MNT" 2>/dev/null || true; }
trap cleanup EXIT

now() { date +%s.%N; }
# secs CMD...: wall seconds of one run
secs() { local t0; t0=$(now); "$@" >/dev/null; echo "$(now) - $t0" | bc -l; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
fmt() { printf "%.3f" "$1"; }
size_of() { du -sb --apparent-size "$@" | awk '{s+=$1} END {printf "%.0f\n", s}'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

mount_once() { "$G" mount "$1" "$MNT"; }
umount_wait() { umount "$MNT"; while grep -q " $MNT " /proc/self/mounts; do sleep 0.01; done; }

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
    pid=$(pgrep -f "gyrofs mount .*$MNT" | head -1)
    cat "$MNT"/bf16/experts/layer_* > /dev/null
    grep -E "VmHWM|RssAnon|RssFile" "/proc/$pid/status" | tr -s ' ' | sed 's/^/    /'
    umount_wait
}

sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(mount read bf16 experts)
command -v bc >/dev/null || { echo "bench.sh needs bc (apt-get install bc)" >&2; exit 1; }
for s in "${sections[@]}"; do
    "bench_$s"
    echo
done
