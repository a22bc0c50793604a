#!/usr/bin/env python3
"""Golden data for gyrofs's ports of ggml's reference quantizers
(src/quant/ggml_quantize/): what llama-quantize's quantizer writes for a set
of float32 rows, computed by the reference itself.

Run with the reference environment:
    /opt/pyref/bin/python scripts/make_kquant_golden.py
    /opt/pyref/bin/python scripts/make_kquant_golden.py --stress DIR [ROWS]   (not committed;
        then KQUANT_STRESS_DIR=DIR cargo test --lib many_random_rows)

The reference is `ggml_quantize_chunk` (imatrix NULL: the
`quantize_row_*_ref` functions llama-quantize uses without an importance
matrix) of the `libggml-base.so` bundled with llama-cpp-python (0.3.36),
called through ctypes.

Writes tests/data/quant/kquant.in (ROWS rows of 256 float32, little-endian)
and tests/data/quant/kquant.<TYPE> (the quantized rows) for TYPE in q4_0,
q5_0, q5_1, q4_k, q5_k, q6_k. Deterministic: fixed rows, then numpy PCG64
with a fixed seed.

Rows: all zeros; one huge value among small ones; float32 denormals only;
denormals mixed with normal values; tiny values below ggml's GROUP_MAX_EPS;
constant rows (positive, negative); all-positive and all-negative rows;
values near float16's range (d overflows); +-3e38 extremes (no NaN, no inf);
a row rounded to BF16 as llama-quantize reads a BF16 GGUF; one-hot rows;
then random rows (normal, uniform, heavy-tailed, with outliers) at scales
from 1e-6 to 1e4; then 14 rows that tell the reference's float operation
order from one with a fused multiply-add.
"""

import ctypes
import pathlib
import sys
from pathlib import Path

import numpy as np
import llama_cpp

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "quant"
LIB = pathlib.Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"

TYPES = {"q4_0": (2, 32, 18), "q5_0": (6, 32, 22), "q5_1": (7, 32, 24),
         "q4_k": (12, 256, 144), "q5_k": (13, 256, 176), "q6_k": (14, 256, 210)}
N = 256


def rows():
    rng = np.random.Generator(np.random.PCG64(20261206))
    out = []
    out.append(np.zeros(N, np.float32))
    r = rng.normal(0, 0.02, N).astype(np.float32); r[37] = 1e6; out.append(r)
    r = rng.normal(0, 0.02, N).astype(np.float32); r[200] = -3e4; out.append(r)
    d = rng.integers(1, 1 << 23, N).astype(np.uint32) | (rng.integers(0, 2, N).astype(np.uint32) << 31)
    out.append(d.view(np.float32))
    m = rng.normal(0, 1, N).astype(np.float32); m[::3] = d[::3].view(np.float32); out.append(m)
    out.append((rng.normal(0, 1, N) * 1e-17).astype(np.float32))
    out.append(np.full(N, 0.75, np.float32))
    out.append(np.full(N, -2.5, np.float32))
    out.append(np.abs(rng.normal(0, 1, N)).astype(np.float32))
    out.append(-np.abs(rng.normal(0, 1, N)).astype(np.float32))
    out.append(rng.uniform(-70000, 70000, N).astype(np.float32))
    out.append(rng.uniform(-1, 1, N).astype(np.float32) * np.float32(1e5))
    e = rng.uniform(-1, 1, N).astype(np.float32) * np.float32(3e38); out.append(e)
    e = np.zeros(N, np.float32); e[5] = 3e38; e[77] = -3e38; out.append(e)
    b = rng.normal(0, 0.05, N).astype(np.float32)
    out.append((b.view(np.uint32) & 0xFFFF0000).view(np.float32))
    h = np.zeros(N, np.float32); h[0] = 1.0; out.append(h)
    h = np.zeros(N, np.float32); h[255] = -1e-3; h[128] = 5e-4; out.append(h)
    for i, scale in enumerate([1e-6, 1e-3, 0.02, 0.5, 1.0, 3.0, 100.0, 1e4]):
        out.append((rng.normal(0, 1, N) * scale).astype(np.float32))
        out.append((rng.uniform(-1, 1, N) * scale).astype(np.float32))
        t = (rng.standard_t(2, N) * scale).astype(np.float32)
        t[rng.integers(0, N, 3)] *= 40
        out.append(t)
    # Witnesses of float operation order: rows of stress_rows(8000) where a
    # port that fuses one multiply-add (sum_xl or the error's scale * l + min
    # in make_qkx2_quants, sumlx in make_qx_quants, sum_x2 in Q4_K) writes
    # another block than the reference (found with such mutated ports).
    witnesses = [865, 1002, 2169, 20, 29, 39, 133, 734, 1232, 2032, 3488, 3536, 3824, 4370]
    out.extend(stress_rows(8000)[witnesses])
    return np.stack(out).astype(np.float32)


def stress_rows(n):
    """`n` random rows for a longer comparison (not committed): scales from 1e-8 to
    1e5; normal, uniform, heavy-tailed, one-signed, many ties (integers times a
    scale), sprinkled zeros; every other row rounded to BF16."""
    rng = np.random.Generator(np.random.PCG64(7))
    parts = []
    for k in range(n):
        s = 10.0 ** rng.uniform(-8, 5)
        kind = k % 6
        if kind == 0:
            r = rng.normal(0, s, N)
        elif kind == 1:
            r = rng.uniform(-s, s, N)
        elif kind == 2:
            r = rng.standard_t(1.5, N) * s
        elif kind == 3:
            r = np.abs(rng.normal(0, s, N)) * rng.choice([-1, 1])
        elif kind == 4:
            r = np.round(rng.normal(0, 4, N)) * s
        else:
            r = rng.normal(0, s, N)
            r[rng.integers(0, N, 4)] = 0
        r = r.astype(np.float32)
        if k % 2:
            r = (r.view(np.uint32) & 0xFFFF0000).view(np.float32)
        parts.append(r)
    return np.stack(parts)


def main():
    lib = ctypes.CDLL(str(LIB))
    f = lib.ggml_quantize_chunk
    f.restype = ctypes.c_size_t
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                  ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    # --stress DIR [ROWS]: DIR/in and DIR/<type> for the Rust test that reads
    # KQUANT_STRESS_DIR (quant::ggml_quantize, many_random_rows_...).
    stress = sys.argv[1:2] == ["--stress"]
    out = Path(sys.argv[2]) if stress else OUT
    x = np.ascontiguousarray(stress_rows(int(sys.argv[3]) if len(sys.argv) > 3 else 8000) if stress else rows())
    assert not np.isnan(x).any() and not np.isinf(x).any()
    out.mkdir(parents=True, exist_ok=True)
    prefix = "" if stress else "kquant."
    (out / f"{prefix}in").write_bytes(x.tobytes())
    for name, (tid, bs, ts) in TYPES.items():
        dst = np.zeros(x.shape[0] * N // bs * ts, np.uint8)
        n = f(tid, x.ctypes.data, dst.ctypes.data, 0, x.shape[0], N, None)
        assert n == dst.size, (name, n, dst.size)
        (out / f"{prefix}{name}").write_bytes(dst.tobytes())
    print(f"{x.shape[0]} rows; files in {out}")


if __name__ == "__main__":
    main()
