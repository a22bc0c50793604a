#!/usr/bin/env bash
# Build gyrofs, mount the bundled sample checkpoint (a tiny gpt-oss MXFP4
# mixture-of-experts model), show its tree and a tensor, then unmount.
#
#   scripts/demo.sh [SOURCE]     (default: tests/data/gpt-oss-tiny)
#
# Needs root, or fusermount3 (Debian package fuse3) for other users.
set -euo pipefail
cd "$(dirname "$0")/.."

src=${1:-tests/data/gpt-oss-tiny}
# Not --quiet: on a fresh clone the first build takes several minutes, and
# cargo's progress says so.
echo "building gyrofs (cargo build --release; the first build takes a few minutes) ..." >&2
cargo build --release
bin=${CARGO_TARGET_DIR:-target}/release/gyrofs
mnt=$(mktemp -d -t gyrofs-demo.XXXXXX)
cleanup() { "$bin" umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true; rmdir "$mnt" 2>/dev/null || true; }
trap cleanup EXIT
echo

echo "\$ gyrofs ls $src"
"$bin" ls "$src" | sed -n '1,6p;$p'
echo
echo "\$ gyrofs mount $src $mnt"
"$bin" mount "$src" "$mnt"
echo
echo "\$ find . -maxdepth 3 -not -path './*/tensors/*' | sort     (in $mnt)"
(cd "$mnt" && find . -maxdepth 3 -not -path './*/tensors/*' | sort)
echo "   ... plus $(ls "$mnt/raw/tensors" | wc -l) files in raw/tensors/ and $(ls "$mnt/bf16/tensors" | wc -l) in bf16/tensors/"
echo
f=$(ls "$mnt/bf16/tensors" | grep -m1 'gate_up_proj.safetensors' || ls "$mnt/bf16/tensors" | head -1)
echo "\$ ls -l bf16/tensors/$f; head -c 700 bf16/tensors/$f   (its Gyro header)"
ls -l "$mnt/bf16/tensors/$f"
head -c 700 "$mnt/bf16/tensors/$f" | tail -c +9 | tr -d '\0'
echo " ..."
echo
echo "\$ cmp <(tail -c 16 raw/model.safetensors) <(tail -c 16 <last source shard>) && echo lossless"
last=$(ls "$src"/*.safetensors | tail -1)
cmp <(tail -c 16 "$mnt/raw/model.safetensors") <(tail -c 16 "$last") && echo lossless
