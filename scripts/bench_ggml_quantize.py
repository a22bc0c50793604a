#!/usr/bin/env python3
"""llama-quantize's quantizer, timed: `ggml_quantize_chunk` (no importance
matrix: what llama-quantize runs per chunk) of llama-cpp-python's
libggml-base.so on the float32 rows of a file, one thread.

    /opt/pyref/bin/python scripts/bench_ggml_quantize.py ROWS.f32 ROW_LEN TYPE_ID [SECONDS]

Prints `<input MB/s>` (decimal megabytes of float32 input per second, the best
of repeated runs over about SECONDS, default 2). benches/quantize.rs runs it
in the same run as its own measurement.
"""

import ctypes
import sys
import time
from pathlib import Path

import numpy as np
import llama_cpp


def main():
    path, n, ty = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    secs = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    f = lib.ggml_quantize_chunk
    f.restype = ctypes.c_size_t
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                  ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    x = np.fromfile(path, dtype=np.float32)
    rows = x.size // n
    dst = np.zeros(x.size * 2, np.uint8)
    best = float("inf")
    end = time.perf_counter() + secs
    while True:
        t = time.perf_counter()
        f(ty, x.ctypes.data, dst.ctypes.data, 0, rows, n, None)
        best = min(best, time.perf_counter() - t)
        if time.perf_counter() > end:
            break
    print(f"{x.nbytes / best / 1e6:.1f}")


if __name__ == "__main__":
    main()
