#!/usr/bin/env python3
"""Generate the golden fixtures for gyrofs's number-format kernels (src/quant/).

Run with the reference environment:  /opt/pyref/bin/python scripts/make_quant_golden.py
Writes small little-endian binary files under tests/data/quant/ (described in
tests/data/quant/README.md). Deterministic: every input comes from fixed lists or
numpy's PCG64 generator with fixed seeds, and all computation is on the CPU.

What is computed, and with which reference function:

1. Float -> BF16 (`float_*`): torch `Tensor.to(torch.bfloat16)` on CPU.
   - f16: all 65536 codes, `torch.arange(65536).to(int16).view(torch.float16)`.
   - f32 / f64: edge cases (ties to even both ways, just above/below ties, the
     overflow boundary, subnormals, +-0, +-inf, NaNs with signs and payloads)
     plus a few thousand random values.
   Each conversion is run twice: on the whole array (torch's vectorized kernel)
   and one element at a time (1-element tensors: the scalar path). The script
   asserts both give the same bits for every non-NaN result and NaN for the
   same inputs; the NaN *encoding* differs between paths (0xFFFF from the
   AVX2/AVX512 f32 kernel, 0x7FC0 from the scalar c10 path) so it is not
   pinned. The file holds the whole-array result.
   It also asserts that f64 -> bf16 equals f64 -> f32 -> bf16 (torch rounds
   twice) on all inputs.

2. MXFP4 (`mxfp4_*`): transformers
   `transformers.integrations.mxfp4._convert_moe_packed_tensors(blocks, scales)`
   (dtype=torch.bfloat16; it does `torch.ldexp(lut_bf16[nibble], scale - 127)`).
   - table: blocks [1, 256, 16, 16] where every row holds the bytes 0..255 and
     row s has scale byte s in all 16 blocks; the result is reduced to the
     256 x 16 table T[scale][nibble] (asserting every occurrence agrees) and
     asserted equal to the exact value FP4[nibble] * 2^(scale-127) rounded to
     BF16 (ldexp in eager torch is exact scaling: no NaN, even for scale 255).
   - layout: a random [E=2, rows=3, G=2, 16] blocks / [2, 3, 2] scales example
     and the function's output, which is TRANSPOSED: [E, G*32, rows].

3. FP8: torch `torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn)`
   (and float8_e5m2) `.float()` -> f32 bits, and `.to(torch.bfloat16)` -> bf16 bits.
   Block-scaled dequant (DeepSeek-V3 `weight_dequant` semantics):
   `(w.view(float8_e4m3fn).to(float32) * s_expanded).to(bfloat16)` where
   s_expanded = scale_inv.repeat_interleave(bm, 0)[:R].repeat_interleave(bn, 1)[:, :C],
   for weight [130, 260] with block (128, 128) (grid [2, 3]) and weight [37, 45]
   with block (8, 16) (grid [5, 3]). The script asserts that transformers'
   `Fp8Dequantize._dequantize_one(w, s, output_dtype=torch.bfloat16)` gives the
   same bits on a [256, 384] case (it only supports shapes that are multiples
   of the grid, so it cannot be the reference for the ragged cases).
"""

import json
import math
import os
import struct
import sys

import numpy as np
import torch
import transformers
from transformers.integrations.finegrained_fp8 import Fp8Dequantize
from transformers.integrations.mxfp4 import FP4_VALUES, _convert_moe_packed_tensors

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "quant")

torch.manual_seed(0)
torch.set_num_threads(1)


def write(name, data):
    path = os.path.join(OUT, name)
    with open(path, "wb") as f:
        f.write(data)
    print(f"{name}: {len(data)} bytes")


def bf16_bits(t):
    return t.view(torch.int16).numpy().view(np.uint16)


def is_nan_bf16(bits):
    bits = np.asarray(bits, dtype=np.uint16)
    return ((bits & 0x7F80) == 0x7F80) & ((bits & 0x007F) != 0)


def to_bf16_checked(arr):
    """arr: numpy float array. Returns whole-array bf16 bits after checking the scalar path."""
    t = torch.from_numpy(arr)
    whole = bf16_bits(t.to(torch.bfloat16)).copy()
    single = np.array([bf16_bits(t[i : i + 1].clone().to(torch.bfloat16))[0] for i in range(len(arr))], dtype=np.uint16)
    nw, ns = is_nan_bf16(whole), is_nan_bf16(single)
    assert (nw == ns).all(), "NaN-ness differs between vectorized and scalar paths"
    assert (whole[~nw] == single[~nw]).all(), "vectorized and scalar paths differ on a non-NaN"
    assert (nw == np.isnan(arr)).all(), "NaN out iff NaN in"
    return whole


# ---------------------------------------------------------------- floats
def f32_cases():
    u = []
    # exact values, signed zero, infinities
    u += [0x00000000, 0x80000000, 0x3F800000, 0xBF800000, 0x7F800000, 0xFF800000]
    # ties: 1 + 2^-8 (to even: down), 1 + 3*2^-8 (to even: up), and +-1 ulp around them
    for base in (0x3F808000, 0x3F818000, 0x40498000, 0x3F7F8000):
        for d in (-1, 0, 1):
            for s in (0, 0x80000000):
                u.append((base + d) | s)
    # overflow boundary: max bf16 0x7F7F; 0x7F7F7FFF stays, 0x7F7F8000 is a tie to inf (even), f32::MAX -> inf
    for v in (0x7F7F0000, 0x7F7F7FFF, 0x7F7F8000, 0x7F7F8001, 0x7F7FFFFF, 0x7F7E8000, 0x7F7E8001):
        u += [v, v | 0x80000000]
    # subnormals: min, ties to 0, ties to even, top of subnormal range rounding into the normals
    for v in (0x00000001, 0x00007FFF, 0x00008000, 0x00008001, 0x00018000, 0x00017FFF, 0x00010000,
              0x007F7FFF, 0x007F8000, 0x007FFFFF, 0x00800000, 0x00808000, 0x00818000):
        u += [v, v | 0x80000000]
    # NaNs: quiet/signalling, both signs, payloads (incl. payloads that would round into inf)
    u += [0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FA12345,
          0xFFB00000, 0x7F810000, 0x7F808000, 0x7FC18000, 0x7F800100]
    rng = np.random.default_rng(20240601)
    u += list(rng.integers(0, 2**32, 1000, dtype=np.uint64))
    normals = (rng.standard_normal(1000) * 10.0 ** rng.uniform(-3, 3, 1000)).astype(np.float32)
    u += list(normals.view(np.uint32))
    # ties and near-ties at random finite bf16 values (odd and even)
    b = rng.integers(0, 0x7F7F, 1000, dtype=np.uint64) | (rng.integers(0, 2, 1000, dtype=np.uint64) << 15)
    for x in b:
        t = (int(x) << 16) | 0x8000
        u += [t - 1, t, t + 1]
    sub = rng.integers(0, 0x800000, 200, dtype=np.uint64) | (rng.integers(0, 2, 200, dtype=np.uint64) << 31)
    u += list(sub)
    return np.array([int(x) for x in u], dtype=np.uint32)


def f64_cases():
    d = []
    def f(x):
        return struct.unpack("<Q", struct.pack("<d", x))[0]
    for x in (0.0, -0.0, 1.0, -1.0, math.inf, -math.inf, 1e300, -1e300, 5e-324, -5e-324, 1e-310, 2.0**-149,
              2.0**-150, 2.0**-150 + 2.0**-170, 2.0**-134, 2.0**-134 + 2.0**-160, 2.0**-133 * 1.5,
              3.4028234663852886e38, 3.4028235677973366e38, 3.402823669209385e38,
              float.fromhex("0x1.fep127"), float.fromhex("0x1.fefffffp127"), float.fromhex("0x1.ff00000000001p127"),
              float.fromhex("0x1.feffffep127"), float.fromhex("0x1.fefffe0000001p127"), float.fromhex("0x1.ffp127"),
              float.fromhex("0x1.fffffefffffffp127"), float.fromhex("0x1.ffffffp127")):
        d += [f(x), f(-x)]
    # double-rounding witnesses: 1 + 2^-8 +- 2^-40 (tie in bf16 after f32 rounding), 1 + 3*2^-8 +- 2^-40
    for base in (1 + 2.0**-8, 1 + 3 * 2.0**-8, 1.0 + 2.0**-8 + 2.0**-23, 1.0 + 2.0**-8 - 2.0**-24):
        for delta in (-(2.0**-40), 0.0, 2.0**-40, 2.0**-25, -(2.0**-25)):
            d += [f(base + delta), f(-(base + delta))]
    d += [0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001, 0xFFF0000000000001, 0x7FFFFFFFFFFFFFFF,
          0xFFFFFFFFFFFFFFFF, 0x7FF4000012345678, 0x7FF0000020000000]
    rng = np.random.default_rng(20240602)
    # random f32 values widened with random low bits (mantissa bits below f32 precision)
    f32 = rng.integers(0, 0x7F800000, 1500, dtype=np.uint64) | (rng.integers(0, 2, 1500, dtype=np.uint64) << 31)
    w = np.frombuffer(f32.astype(np.uint32).view(np.float32).astype(np.float64).tobytes(), dtype=np.uint64)
    d += [int(x) ^ int(y) for x, y in zip(w, rng.integers(0, 2**29, 1500, dtype=np.uint64))]
    # ties of bf16 (exact in f32) perturbed below and at f32 resolution
    b = rng.integers(0x0080, 0x7F7F, 700, dtype=np.uint64)
    for x in b:
        tie = struct.unpack("<f", struct.pack("<I", (int(x) << 16) | 0x8000))[0]
        ulp32 = float(np.spacing(np.float32(tie)))
        for delta in (0.0, ulp32 / 4, -ulp32 / 4, ulp32 / 2, -ulp32 / 2, ulp32):
            d.append(f(tie + delta))
    normals = rng.standard_normal(800) * 10.0 ** rng.uniform(-40, 40, 800)
    d += list(normals.view(np.uint64))
    return np.array([int(x) for x in d], dtype=np.uint64)


def gen_floats():
    codes = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    h = codes.view(np.float16)
    out16 = to_bf16_checked(h)
    write("float_f16_all.bf16", out16.astype("<u2").tobytes())

    u32 = f32_cases()
    out32 = to_bf16_checked(u32.view(np.float32))
    write("float_f32.in", u32.astype("<u4").tobytes())
    write("float_f32.bf16", out32.astype("<u2").tobytes())

    u64 = f64_cases()
    x64 = u64.view(np.float64)
    out64 = to_bf16_checked(x64)
    twice = bf16_bits(torch.from_numpy(x64).to(torch.float32).to(torch.bfloat16))
    nan = is_nan_bf16(out64)
    assert (out64[~nan] == twice[~nan]).all(), "f64->bf16 is not f64->f32->bf16"
    # and it is genuinely different from single rounding on some inputs (the witnesses above)
    single = []
    for x in x64[~nan]:
        single.append(exact_round_bf16(float(x)))
    assert (np.array(single, dtype=np.uint16) != out64[~nan]).any()
    write("float_f64.in", u64.astype("<u8").tobytes())
    write("float_f64.bf16", out64.astype("<u2").tobytes())


def exact_round_bf16(x):
    """Round a Python float (f64) directly to bf16 bits (nearest, ties to even), no intermediate f32."""
    if math.isnan(x):
        return 0x7FC0
    sign = 0x8000 if math.copysign(1.0, x) < 0 else 0
    a = abs(x)
    if a == math.inf:
        return sign | 0x7F80
    from fractions import Fraction
    fa = Fraction(a)
    # bf16 grid: exponent e in [-126, 127], 7 fraction bits; subnormal step 2^-133
    if fa == 0:
        return sign
    e = max(math.floor(math.log2(a)), -126)
    if Fraction(2) ** e > fa:
        e -= 1
    if Fraction(2) ** (e + 1) <= fa:
        e += 1
    e = max(e, -126)
    step = Fraction(2) ** (e - 7)
    q = fa / step
    n = math.floor(q)
    r = q - n
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and n % 2 == 1):
        n += 1
    v = n * step
    if v >= Fraction(2) ** 128:
        return sign | 0x7F80
    return sign | struct.unpack("<I", struct.pack("<f", float(v)))[0] >> 16


# ---------------------------------------------------------------- mxfp4
def gen_mxfp4():
    blocks = np.tile(np.arange(256, dtype=np.uint8).reshape(16, 16), (256, 1, 1)).reshape(1, 256, 16, 16)
    scales = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 16, axis=1).reshape(1, 256, 16)
    out = _convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales), dtype=torch.bfloat16)
    assert out.shape == (1, 512, 256) and out.dtype == torch.bfloat16
    o = bf16_bits(out)[0]  # [512 values, 256 scales]
    table = np.zeros((256, 16), dtype=np.uint16)
    seen = np.zeros((256, 16), dtype=bool)
    for s in range(256):
        for p in range(256):  # byte position p holds byte value p
            for k, nib in ((0, p & 15), (1, p >> 4)):
                v = o[2 * p + k, s]
                if seen[s, nib]:
                    assert table[s, nib] == v, (s, nib)
                table[s, nib] = v
                seen[s, nib] = True
    assert seen.all()
    for s in range(256):
        for n in range(16):
            assert table[s, n] == exact_round_bf16(math.ldexp(FP4_VALUES[n], s - 127)), (s, n, hex(table[s, n]))
    assert not is_nan_bf16(table).any()
    write("mxfp4_table.bf16", table.astype("<u2").tobytes())

    rng = np.random.default_rng(20240603)
    b = rng.integers(0, 256, (2, 3, 2, 16), dtype=np.uint8)
    s = rng.integers(118, 136, (2, 3, 2)).astype(np.uint8)
    s[0, 0, 1] = 0
    s[1, 2, 0] = 255
    s[1, 1, 1] = 254
    out = _convert_moe_packed_tensors(torch.from_numpy(b), torch.from_numpy(s), dtype=torch.bfloat16)
    assert out.shape == (2, 64, 3)
    write("mxfp4_layout.blocks", b.tobytes())
    write("mxfp4_layout.scales", s.tobytes())
    write("mxfp4_layout.bf16", bf16_bits(out).astype("<u2").tobytes())


# ---------------------------------------------------------------- fp8
def gen_fp8():
    for name, dt in (("e4m3", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)):
        a = torch.arange(256, dtype=torch.uint8).view(dt)
        f = a.float().view(torch.int32).numpy().view(np.uint32)
        b = bf16_bits(a.to(torch.bfloat16))
        write(f"fp8_{name}.f32", f.astype("<u4").tobytes())
        write(f"fp8_{name}.bf16", b.astype("<u2").tobytes())

    def reference(w_u8, s_f32, bm, bn):
        r, c = w_u8.shape
        w = torch.from_numpy(w_u8).view(torch.float8_e4m3fn)
        s = torch.from_numpy(s_f32)
        se = s.repeat_interleave(bm, 0)[:r].repeat_interleave(bn, 1)[:, :c]
        return bf16_bits((w.to(torch.float32) * se).to(torch.bfloat16))

    rng = np.random.default_rng(20240604)
    # cross-check the expression against transformers on a shape it supports
    w = rng.integers(0, 256, (256, 384), dtype=np.uint8)
    s = (rng.uniform(1, 2, (2, 3)) * 2.0 ** rng.integers(-20, 5, (2, 3))).astype(np.float32)
    tf = Fp8Dequantize(None)._dequantize_one(torch.from_numpy(w).view(torch.float8_e4m3fn), torch.from_numpy(s),
                                             output_dtype=torch.bfloat16)
    mine, theirs = reference(w, s, 128, 128), bf16_bits(tf)
    nan = is_nan_bf16(theirs)
    assert (nan == is_nan_bf16(mine)).all() and (mine[~nan] == theirs[~nan]).all()

    for tag, (rows, cols), (bm, bn) in (("a", (130, 260), (128, 128)), ("b", (37, 45), (8, 16))):
        w = rng.integers(0, 256, (rows, cols), dtype=np.uint8)
        g = (-(-rows // bm), -(-cols // bn))
        s = (rng.uniform(1, 2, g) * 2.0 ** rng.integers(-20, 5, g)).astype(np.float32)
        if tag == "a":
            s[0, 1] = np.float32(1e36)  # 448 * 1e36 overflows f32
            s[1, 0] = np.float32(1e-40)  # f32 subnormal scale: products are f32 subnormals
            s[1, 2] = np.float32(1.0)
        write(f"fp8_block_{tag}.weight", w.tobytes())
        write(f"fp8_block_{tag}.scale_inv", s.astype("<f4").tobytes())
        write(f"fp8_block_{tag}.bf16", reference(w, s, bm, bn).astype("<u2").tobytes())


def main():
    os.makedirs(OUT, exist_ok=True)
    gen_floats()
    gen_mxfp4()
    gen_fp8()
    info = {
        "generator": "scripts/make_quant_golden.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    write("SOURCE.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
