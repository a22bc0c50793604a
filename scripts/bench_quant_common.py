"""Shared by scripts/bench_quant_*.py: the pretouch option and the raw/
ceiling (not run in CI; standard library only, so every venv imports it).

- `BENCH_PRETOUCH_GB` (environment, default 0): right before each timed
  read (the library's dequantization and the mount's), `pretouch()`
  allocates that many GB of anonymous memory, writes every page and frees
  it. On a VM whose host backs guest memory lazily (and takes freed pages
  back), the first write to a page costs a host fault: a fresh mount's
  replies land in new page-cache pages, so even lossless raw/ bytes come
  at 0.65-0.84 GB/s there. Pretouching hands the reads pages the host
  already backs. The scripts print which mode a run used.
- `raw_ceiling()`: the same file sizes read through a fresh mount as
  lossless raw/ bytes (a plain BF16 checkpoint with tensors of the
  benchmark's shapes): what FUSE and the page cache deliver with no
  computation at all, measured in the same run.
"""

import json
import mmap
import os
import struct
import subprocess
import tempfile
import time

PRETOUCH_GB = float(os.environ.get("BENCH_PRETOUCH_GB", "0") or 0)


def mode() -> str:
    """The pretouch mode, in words, for the scripts' output."""
    if PRETOUCH_GB > 0:
        return f"pretouched ({PRETOUCH_GB:g} GB of anonymous memory touched and freed before each timed read)"
    return "plain (no pretouch)"


def pretouch(gb: float = PRETOUCH_GB) -> None:
    """Allocate `gb` GB of anonymous memory, write every page, free it."""
    n = int(gb * 1e9)
    if n <= 0:
        return
    m = mmap.mmap(-1, n)
    chunk = b"\1" * (64 << 20)
    for off in range(0, n, len(chunk)):
        m.write(chunk[: min(len(chunk), n - off)])
    m.close()


def _write_bf16(path: str, shapes: dict) -> int:
    """A safetensors file of random BF16 tensors `name -> (rows, cols)`;
    returns the tensor bytes."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, (r, c) in shapes.items():
        header[name] = {"dtype": "BF16", "shape": [r, c], "data_offsets": [off, off + 2 * r * c]}
        off += 2 * r * c
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        left = off
        while left:
            k = min(left, 64 << 20)
            f.write(os.urandom(k))
            left -= k
    return off


def raw_ceiling(gyrofs, shapes: dict, tmp: str, read_size: int = 1 << 20, prefix=()) -> float:
    """GB/s of reading `raw/tensors/<name>.safetensors` whole (`read_size`
    reads), one file per entry of `shapes` (`name -> (rows, cols)`, BF16),
    after a fresh `--threads 1` mount of a plain BF16 checkpoint: best of 3
    mounts, pretouched like the other reads. `prefix`: a command the mount
    runs under (`taskset -c 0`)."""
    src = os.path.join(tmp, "raw-ceiling.safetensors")
    total = _write_bf16(src, shapes)
    best = float("inf")
    try:
        for _ in range(3):
            mnt = tempfile.mkdtemp(prefix="gyrofs-raw-", dir=tmp)
            subprocess.run([*prefix, str(gyrofs), "mount", "--threads", "1", src, mnt], check=True)
            try:
                pretouch()
                t0 = time.perf_counter()
                for name in shapes:
                    with open(os.path.join(mnt, "raw", "tensors", f"{name}.safetensors"), "rb",
                              buffering=0) as f:
                        while f.read(read_size):
                            pass
                best = min(best, time.perf_counter() - t0)
            finally:
                subprocess.run(["umount", mnt], check=True)
                os.rmdir(mnt)
    finally:
        os.unlink(src)
    return total / best / 1e9
