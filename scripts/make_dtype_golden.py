#!/usr/bin/env python3
"""Golden files for the f16/ and f32/ views (`gyrofs mount --dtype f16,f32`).

Run with the reference environment:  /opt/pyref/bin/python scripts/make_dtype_golden.py
Reads the inputs make_quant_golden.py and make_gguf_golden.py wrote and writes,
next to them, what torch / transformers / gguf-py give in float32 and float16
(little-endian raw arrays, described in tests/data/quant/README.md):

- floats: torch `Tensor.to(torch.float32)` / `.to(torch.float16)` of
  every F16 code (`float_f16_all.f32`), every BF16 code (`float_bf16_all.f32`,
  `float_bf16_all.f16`), the F32 and F64 inputs of `float_f32.in` /
  `float_f64.in` (`float_f32.f16`, `float_f64.f32`, `float_f64.f16`), and
  every F8 code (`fp8_e4m3.f16`, `fp8_e5m2.f16`; their f32 is `fp8_*.f32`);
- MXFP4: transformers `_convert_moe_packed_tensors(blocks, scales, dtype=...)`
  for the 256 x 16 (scale, nibble) table (`mxfp4_table.f32`, `.f16`);
- block-scaled FP8: `(w.float() * s_expanded)` kept in float32, and
  `.to(torch.float16)` (`fp8_block_{a,b}.f32`, `.f16`);
- GGUF: transformers loads GGUF tensors as gguf-py's float32 dequantization
  and then casts: `quants_ref.gguf` (make_gguf_golden.py) holds the float32;
  `gguf_quants.f16` is `torch.from_numpy(f32).to(torch.float16)` of each of
  its tensors, concatenated in file order.

The script asserts that torch's whole-array and one-element results agree on
every non-NaN output; NaN encodings are not pinned (the tests accept any NaN
where torch gives one and require gyrofs's canonical NaN).
"""

import os
import sys

import numpy as np
import torch
from transformers.integrations.mxfp4 import _convert_moe_packed_tensors

QUANT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "quant")
GGUF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "gguf")

torch.set_num_threads(1)


def read(name, dtype):
    return np.fromfile(os.path.join(QUANT, name), dtype=dtype)


def write(name, arr):
    path = os.path.join(QUANT, name)
    arr.tofile(path)
    print(f"{name}: {arr.nbytes} bytes")


def bits(t):
    if t.dtype == torch.float32:
        return t.view(torch.int32).numpy().view(np.uint32).astype("<u4")
    return t.view(torch.int16).numpy().view(np.uint16).astype("<u2")


def convert(t, dtype):
    """t.to(dtype), checked against one-element conversions."""
    whole = t.to(dtype)
    single = torch.stack([x.reshape(1).to(dtype)[0] for x in t.reshape(-1)]).reshape(whole.shape)
    nan = torch.isnan(whole)
    assert torch.equal(nan, torch.isnan(single))
    a, b = bits(whole), bits(single)
    assert (a[~nan.numpy()] == b[~nan.numpy()]).all(), f"vectorized and scalar {dtype} disagree"
    return bits(whole)


def floats():
    f16 = torch.from_numpy(np.arange(65536, dtype=np.uint16).view(np.int16)).view(torch.float16)
    write("float_f16_all.f32", convert(f16, torch.float32))
    bf = torch.from_numpy(np.arange(65536, dtype=np.uint16).view(np.int16)).view(torch.bfloat16)
    write("float_bf16_all.f32", convert(bf, torch.float32))
    write("float_bf16_all.f16", convert(bf, torch.float16))
    f32 = torch.from_numpy(read("float_f32.in", "<u4").view(np.float32).copy())
    write("float_f32.f16", convert(f32, torch.float16))
    f64 = torch.from_numpy(read("float_f64.in", "<u8").view(np.float64).copy())
    write("float_f64.f32", convert(f64, torch.float32))
    write("float_f64.f16", convert(f64, torch.float16))
    for name, dt in [("e4m3", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)]:
        codes = torch.arange(256, dtype=torch.uint8).view(dt)
        write(f"fp8_{name}.f16", convert(codes, torch.float16))


def mxfp4():
    blocks = np.tile(np.arange(256, dtype=np.uint8).reshape(16, 16), (256, 1, 1)).reshape(1, 256, 16, 16)
    scales = np.tile(np.arange(256, dtype=np.uint8).reshape(256, 1), (1, 16)).reshape(1, 256, 16)
    for dtype, suffix in [(torch.float32, "f32"), (torch.float16, "f16")]:
        out = _convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales), dtype=dtype)
        # [1, 16*32, 256] transposed -> row s holds the 512 values of scale s.
        vals = out[0].transpose(0, 1).contiguous()  # [256 scales, 512 values]
        b = bits(vals).reshape(256, 256, 2)  # [scale, byte, (low, high)]
        table = np.zeros((256, 16), dtype=b.dtype)
        for byte in range(256):
            lo, hi = byte & 15, byte >> 4
            for s in range(256):
                for nib, got in [(lo, b[s, byte, 0]), (hi, b[s, byte, 1])]:
                    if table[s, nib] == 0:
                        table[s, nib] = got
                    elif table[s, nib] != got:
                        nan = ((got & 0x7F800000) == 0x7F800000) if suffix == "f32" else ((got & 0x7C00) == 0x7C00)
                        assert nan, (s, nib)
        write(f"mxfp4_table.{suffix}", table)


def fp8_block():
    for name, (rows, cols), (bm, bn) in [("a", (130, 260), (128, 128)), ("b", (37, 45), (8, 16))]:
        w = torch.from_numpy(read(f"fp8_block_{name}.weight", np.uint8).reshape(rows, cols).copy())
        s = torch.from_numpy(read(f"fp8_block_{name}.scale_inv", "<f4").copy())
        gr, gc = -(-rows // bm), -(-cols // bn)
        s = s.reshape(gr, gc)
        se = s.repeat_interleave(bm, 0)[:rows].repeat_interleave(bn, 1)[:, :cols]
        prod = w.view(torch.float8_e4m3fn).to(torch.float32) * se
        write(f"fp8_block_{name}.f32", bits(prod))
        write(f"fp8_block_{name}.f16", convert(prod, torch.float16))


def gguf_quants():
    import gguf

    r = gguf.GGUFReader(os.path.join(GGUF, "quants_ref.gguf"))
    parts = []
    for t in r.tensors:
        f32 = torch.from_numpy(np.array(t.data, dtype=np.float32).reshape(-1).copy())
        parts.append(convert(f32, torch.float16))
    out = np.concatenate(parts)
    arr = out.astype("<u2")
    path = os.path.join(GGUF, "quants_ref.f16")
    arr.tofile(path)
    print(f"quants_ref.f16: {arr.nbytes} bytes")


def main():
    floats()
    mxfp4()
    fp8_block()
    gguf_quants()


if __name__ == "__main__":
    sys.exit(main())
