#!/usr/bin/env bash
# Build gyrofs, mount the bundled sample checkpoint, show its tree and one
# tensor file, then unmount.
#
#   scripts/demo.sh [SOURCE]     (default: tests/data/gpt-oss-tiny)
#
# Needs root, or fusermount3 (Debian package fuse3) for other users.
set -euo pipefail
cd "$(dirname "$0")/.."

src=${1:-tests/data/gpt-oss-tiny}
cargo build --release --quiet
bin=target/release/gyrofs
mnt=$(mktemp -d -t gyrofs-demo.XXXXXX)
cleanup() { "$bin" umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true; rmdir "$mnt" 2>/dev/null || true; }
trap cleanup EXIT

echo "\$ gyrofs ls $src"
"$bin" ls "$src" | sed -n '1,6p;$p'
echo
echo "\$ gyrofs mount $src $mnt"
"$bin" mount "$src" "$mnt"
echo
echo "\$ find $mnt -maxdepth 2 | sort"
(cd "$mnt" && find . -maxdepth 2 | sort)
echo "   ... plus $(ls "$mnt/raw/tensors" | wc -l) files in raw/tensors/"
echo
f=$(ls "$mnt/raw/tensors" | grep -m1 'gate_up_proj_blocks\|mlp1_weight.blocks' || ls "$mnt/raw/tensors" | head -1)
echo "\$ ls -l raw/tensors/$f; head -c 500 raw/tensors/$f   (its Gyro header)"
ls -l "$mnt/raw/tensors/$f"
head -c 500 "$mnt/raw/tensors/$f" | tail -c +9 | tr -d '\0'
echo " ..."
echo
echo "\$ cmp <(tail -c 16 raw/model.safetensors) <(tail -c 16 <last source shard>) && echo lossless"
last=$(ls "$src"/*.safetensors | tail -1)
cmp <(tail -c 16 "$mnt/raw/model.safetensors") <(tail -c 16 "$last") && echo lossless
