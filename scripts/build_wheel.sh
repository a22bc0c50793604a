#!/usr/bin/env bash
# Build the gyrofs wheel (`pip install gyrofs`): the gyrofs binary (maturin,
# "bin" bindings, as ruff and uv ship theirs), the Python package in
# python/gyrofs, and the man page and shell completions, generated from the
# command line's definition and installed under the environment's share/.
#
# Usage: scripts/build_wheel.sh [--profile release|dev] [--out DIR]
#   --profile  cargo profile (default release; dev reuses most of a `cargo test` build)
#   --out      where the wheel goes (default target/wheels)
# Needs maturin on PATH (pip install maturin) or named by $MATURIN. Offline
# apart from cargo's registry (crates already fetched are reused).
# `pip install .` / `maturin build` without this script also make a working
# wheel, without the man page and completions.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
out=target/wheels
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "usage: scripts/build_wheel.sh [--profile release|dev] [--out DIR]" >&2; exit 2 ;;
    esac
done
maturin=${MATURIN:-maturin}
case "$profile" in dev) dir=debug ;; *) dir=$profile ;; esac
target=${CARGO_TARGET_DIR:-target}

# The binary first, to generate the man page and completions with.
cargo build --quiet --profile "$profile" --bin gyrofs
gyrofs=$target/$dir/gyrofs

# maturin puts gyrofs.data/data/* (next to pyproject.toml) under the
# environment's prefix at install. So that nothing is written into the
# source tree, the wheel is built from a copy of what it is made of (the
# crate, the package, the README) in a temporary folder, with gyrofs.data
# generated there; cargo's target folder stays this one's.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r Cargo.toml Cargo.lock README.md pyproject.toml python src benches "$stage"/
data=$stage/gyrofs.data
share=$data/data/share
mkdir -p "$share/man/man1" "$share/bash-completion/completions" \
    "$share/zsh/site-functions" "$share/fish/vendor_completions.d"
"$gyrofs" man > "$share/man/man1/gyrofs.1"
for command in mount umount ls convert; do
    "$gyrofs" man "$command" > "$share/man/man1/gyrofs-$command.1"
done
"$gyrofs" completions bash > "$share/bash-completion/completions/gyrofs"
"$gyrofs" completions zsh > "$share/zsh/site-functions/_gyrofs"
"$gyrofs" completions fish > "$share/fish/vendor_completions.d/gyrofs.fish"

CARGO_TARGET_DIR=$(realpath "$target") "$maturin" build \
    --manifest-path "$stage/Cargo.toml" --profile "$profile" --out "$(realpath -m "$out")"
