#!/usr/bin/env python3
"""Write the GGUF golden fixtures under tests/data/gguf/.

    /opt/pyref/bin/python scripts/make_gguf_golden.py [OUTDIR]   (default: tests/data/gguf)

Needs the `gguf` (0.19), numpy and torch packages; the Rust tests only read the
committed output. Fully deterministic (numpy default_rng with fixed seeds, and
GGUFWriter output depends only on its inputs), so re-running it reproduces the
committed files bit for bit.

What it writes:

quants.gguf  -- written with gguf.GGUFWriter (GGUF v3, default alignment 32).
    Metadata: general.architecture plus one key of every value type (u8 ... f64,
    bool, string with non-ASCII text, u64 max, i64 min, f32/f64 NaN and inf) and
    arrays: i32, f32, bool, strings, an array of arrays of mixed element types.
    Tensors, for every ggml type gguf.quants.dequantize supports:
      F32, F16, BF16: "<TYPE>.plain", a 2-D tensor of chosen bit patterns
        (NaNs with payloads, +-inf, +-0, subnormals, BF16 rounding ties,
        F32 max) followed by random bits.
      block types: "<TYPE>.rows" (2-D) and "<TYPE>.vec" (1-D); 32-element block
        types use a row length of 96 (not a multiple of 256), NVFP4 192.
        Block bytes are uniformly random, then every f16 scale field (d, dmin,
        m; the split d of IQ1_M) is overwritten block by block with values
        cycling through SPECIAL_F16 (normal, subnormal, +-0, +-inf, NaNs,
        f16 max) so that exactness on those values is pinned; MXFP4's E8M0
        exponent cycles through 0, 1, 2, 127, 128, 254, 255 and random bytes;
        NVFP4's UE4M3 scales include 0x00, 0x7F, 0x80, 0xFF.
      MoE-shaped 3-D tensors ([n_expert, rows, cols] numpy order):
        "blk.0.ffn_down_exps.weight" Q4_K [4, 2, 256],
        "blk.0.ffn_up_exps.weight" MXFP4 [2, 3, 64],
        "blk.0.ffn_gate_exps.weight" IQ4_NL [2, 2, 96].
      Types gyrofs keeps raw (no reference dequantization in gguf-py):
        "ids.i8" I8, "ids.i32" I32, "ids.i64" I64, "w.f64" F64,
        "act.q8_k" Q8_K (random bytes).
quants_ref.gguf -- one F32 tensor per dequantizable tensor of quants.gguf,
    same name, same numpy shape: gguf.quants.dequantize(data, type) where data
    is the tensor as gguf.GGUFReader reads it back from quants.gguf (float32,
    exactly what the Rust kernels must produce before rounding to BF16).
aligned64.gguf -- GGUFWriter with add_custom_alignment(64): general.alignment
    = 64 and two small tensors (Q8_0, F16); used for alignment/data_start.
expected.json -- what gguf.GGUFReader reads from quants.gguf and
    aligned64.gguf (version, alignment, data offset; per tensor: name, ggml type
    id and name, numpy shape, absolute data offset, n_bytes) plus the metadata
    as JSON in gyrofs's convention (docs/GGUF.md: f32 as the shortest decimal
    that reads back as the same f32, non-finite floats as "NaN"/"inf"/"-inf").

Checks it makes while writing: every reference's torch BF16 rounding
(`Tensor.to(torch.bfloat16)`) equals round-to-nearest-even, which is what
gyrofs's quant::bf16::from_f32 does, so comparing from_f32(ref) in Rust is
comparing against torch. The one difference is the NaN encoding: torch's
vectorized CPU path writes 0xFFFF (its scalar path 0x7FC0); gyrofs always
writes 0x7FC0. The script checks torch's NaNs are NaNs and prints the
encodings it saw.
"""

import json
import math
import os
import sys

import numpy as np
import torch
from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType as T, quants
from gguf.constants import GGML_QUANT_SIZES

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/data/gguf"

SPECIAL_F16 = [
    None,    # a typical scale: random in [1e-4, 0.1)
    0x0001,  # smallest subnormal
    0x03FF,  # largest subnormal
    0x8200,  # negative subnormal
    0x0000,  # +0
    0x8000,  # -0
    0x7C00,  # +inf
    0xFC00,  # -inf
    0x7E00,  # quiet NaN
    0x7C01,  # signalling NaN pattern
    0xFE01,  # negative NaN with payload
    0x7BFF,  # f16 max
    0x0400,  # smallest normal
    None,
]

# byte offsets of the f16 scale fields in one block
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
    T.IQ2_XXS: [0], T.IQ2_XS: [0], T.IQ2_S: [0], T.IQ3_XXS: [0], T.IQ3_S: [0],
    T.IQ1_S: [0], T.IQ4_NL: [0], T.IQ4_XS: [0], T.TQ1_0: [52], T.TQ2_0: [64],
    T.IQ1_M: [], T.MXFP4: [], T.NVFP4: [],
}

BLOCK_TYPES = [
    T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K,
    T.IQ2_XXS, T.IQ2_XS, T.IQ3_XXS, T.IQ1_S, T.IQ4_NL, T.IQ3_S, T.IQ2_S, T.IQ4_XS,
    T.IQ1_M, T.TQ1_0, T.TQ2_0, T.MXFP4, T.NVFP4,
]


def f16_value(rng, special):
    if special is None:
        return int(np.float16(rng.uniform(1e-4, 0.1)).view(np.uint16))
    return special


def random_blocks(rng, qtype, n_blocks, phase):
    """n_blocks random blocks with their scale fields set to special values."""
    _, ts = GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(n_blocks, ts), dtype=np.uint8)
    for i in range(n_blocks):
        for k, off in enumerate(F16_FIELDS[qtype]):
            v = f16_value(rng, SPECIAL_F16[(phase + i + 5 * k) % len(SPECIAL_F16)])
            b[i, off:off + 2] = np.frombuffer(np.uint16(v).tobytes(), dtype=np.uint8)
        if qtype == T.IQ1_M:
            # d is spread over the top nibbles of the 4 u16 scale words
            v = f16_value(rng, SPECIAL_F16[(phase + i) % len(SPECIAL_F16)])
            for w in range(4):
                off = 48 + 2 * w
                word = int(b[i, off]) | int(b[i, off + 1]) << 8
                word = (word & 0x0FFF) | (((v >> (4 * w)) & 0xF) << 12)
                b[i, off] = word & 0xFF
                b[i, off + 1] = word >> 8
        if qtype == T.MXFP4:
            e = [0, 1, 2, 127, 128, 254, 255, None][(phase + i) % 8]
            if e is not None:
                b[i, 0] = e
        if qtype == T.NVFP4 and i % 2 == 0:
            b[i, 0:4] = [0x00, 0x7F, 0x80, 0xFF][(i // 2) % 4:] + [0x00, 0x7F, 0x80, 0xFF][:(i // 2) % 4]
    return b


def plain_f32(rng):
    special = [0x7FC00000, 0x7F800001, 0xFFC12345, 0x7F800000, 0xFF800000, 0x00000000, 0x80000000,
               0x00000001, 0x807FFFFF, 0x3F808000, 0x3F818000, 0x3F808001, 0xBF80FFFF, 0x7F7FFFFF,
               0x7F7F8000, 0x0000FFFF, 0x00008000, 0x00018000]
    bits = np.concatenate([np.array(special, dtype=np.uint32),
                           rng.integers(0, 2**32, size=24 - len(special), dtype=np.uint32)])
    return bits.view(np.float32).reshape(3, 8)


def plain_f16(rng):
    special = [0x7E00, 0x7C01, 0xFE01, 0x7C00, 0xFC00, 0x0000, 0x8000, 0x0001, 0x83FF, 0x0400,
               0x7BFF, 0x3C00, 0x3C01, 0xBC03]
    bits = np.concatenate([np.array(special, dtype=np.uint16),
                           rng.integers(0, 2**16, size=40 - len(special), dtype=np.uint16)])
    return bits.view(np.float16).reshape(5, 8)


def plain_bf16(rng):
    special = [0x7FC0, 0x7F81, 0xFFC1, 0x7F80, 0xFF80, 0x0000, 0x8000, 0x0001, 0x807F, 0x3F80]
    bits = np.concatenate([np.array(special, dtype=np.uint16),
                           rng.integers(0, 2**16, size=32 - len(special), dtype=np.uint16)])
    return bits.reshape(4, 8)


def json_f32(x):
    x = np.float32(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(str(x))  # numpy prints the shortest round-trip decimal


def json_f64(x):
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)


def add_metadata(w):
    """Add one key of every value type; return the expected JSON of each."""
    exp = {}
    w.add_uint8("t.u8", 200); exp["t.u8"] = 200
    w.add_int8("t.i8", -128); exp["t.i8"] = -128
    w.add_uint16("t.u16", 65535); exp["t.u16"] = 65535
    w.add_int16("t.i16", -32768); exp["t.i16"] = -32768
    w.add_uint32("t.u32", 4294967295); exp["t.u32"] = 4294967295
    w.add_int32("t.i32", -2147483648); exp["t.i32"] = -2147483648
    w.add_float32("t.f32", 1e-5); exp["t.f32"] = json_f32(1e-5)
    w.add_float32("t.f32_nan", float("nan")); exp["t.f32_nan"] = "NaN"
    w.add_float32("t.f32_inf", float("-inf")); exp["t.f32_inf"] = "-inf"
    w.add_bool("t.bool", True); exp["t.bool"] = True
    w.add_string("t.string", "héllo ✓ 世界"); exp["t.string"] = "héllo ✓ 世界"
    w.add_uint64("t.u64", 2**64 - 1); exp["t.u64"] = 2**64 - 1
    w.add_int64("t.i64", -2**63); exp["t.i64"] = -2**63
    w.add_float64("t.f64", 0.1); exp["t.f64"] = 0.1
    w.add_float64("t.f64_inf", float("inf")); exp["t.f64_inf"] = "inf"
    w.add_array("t.arr_i32", [1, -2, 3]); exp["t.arr_i32"] = [1, -2, 3]
    w.add_array("t.arr_f32", [0.5, 0.1, -2.0]); exp["t.arr_f32"] = [json_f32(v) for v in [0.5, 0.1, -2.0]]
    w.add_array("t.arr_bool", [True, False]); exp["t.arr_bool"] = [True, False]
    toks = ["<s>", "</s>", "▁the", "Ġworld", "\n", ""]
    w.add_array("tokenizer.ggml.tokens", toks); exp["tokenizer.ggml.tokens"] = toks
    w.add_array("t.nested", [[1, 2], ["x", "yz"], [[True]]])
    exp["t.nested"] = [[1, 2], ["x", "yz"], [[True]]]
    return exp


def tensor_info(r):
    return {
        "version": int(r.fields["GGUF.version"].parts[0][0]),
        "alignment": int(r.alignment),
        "data_start": int(r.data_offset),
        "tensors": [
            {
                "name": t.name,
                "type": t.tensor_type.name,
                "type_id": int(t.tensor_type),
                "shape": [int(d) for d in reversed(t.shape.tolist())],
                "offset": int(t.data_offset),
                "n_bytes": int(t.n_bytes),
            }
            for t in r.tensors
        ],
    }


def bf16_rne(ref):
    bits = ref.view(np.uint32).astype(np.uint64)
    out = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(ref), np.uint16(0x7FC0), out)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240611)

    path = os.path.join(OUT, "quants.gguf")
    w = GGUFWriter(path, "gyrofs-test")
    exp_meta = {"general.architecture": "gyrofs-test"}
    exp_meta.update(add_metadata(w))

    w.add_tensor("F32.plain", plain_f32(rng))
    w.add_tensor("F16.plain", plain_f16(rng))
    w.add_tensor("BF16.plain", plain_bf16(rng), raw_dtype=T.BF16)
    phase = 0
    for qt in BLOCK_TYPES:
        bs, ts = GGML_QUANT_SIZES[qt]
        if bs == 32:
            rows, cols, vec = 4, 96, 160
        elif bs == 64:
            rows, cols, vec = 3, 192, 320
        else:
            rows, cols, vec = 3, 512, 2560
        nb = rows * cols // bs
        b = random_blocks(rng, qt, nb, phase)
        w.add_tensor(f"{qt.name}.rows", b.reshape(rows, cols // bs * ts), raw_dtype=qt)
        phase += nb
        nb = vec // bs
        b = random_blocks(rng, qt, nb, phase)
        w.add_tensor(f"{qt.name}.vec", b.reshape(nb * ts), raw_dtype=qt)
        phase += nb
    for name, qt, shape in [
        ("blk.0.ffn_down_exps.weight", T.Q4_K, (4, 2, 256)),
        ("blk.0.ffn_up_exps.weight", T.MXFP4, (2, 3, 64)),
        ("blk.0.ffn_gate_exps.weight", T.IQ4_NL, (2, 2, 96)),
    ]:
        bs, ts = GGML_QUANT_SIZES[qt]
        nb = shape[0] * shape[1] * shape[2] // bs
        b = random_blocks(rng, qt, nb, phase)
        phase += nb
        w.add_tensor(name, b.reshape(shape[0], shape[1], shape[2] // bs * ts), raw_dtype=qt)
    w.add_tensor("ids.i8", np.arange(-3, 5, dtype=np.int8))
    w.add_tensor("ids.i32", np.array([[1, -1, 2**31 - 1], [-2**31, 0, 7]], dtype=np.int32))
    w.add_tensor("ids.i64", np.array([2**63 - 1, -2**63, 5], dtype=np.int64))
    w.add_tensor("w.f64", np.array([0.1, -np.inf, 1e300], dtype=np.float64))
    w.add_tensor("act.q8_k", rng.integers(0, 256, size=(2, 292), dtype=np.uint8), raw_dtype=T.Q8_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    r = GGUFReader(path)
    # Cross-check the non-nested metadata against what the reader decodes.
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "t.nested":
            continue
        got = field.contents()
        want = exp_meta[key]
        if isinstance(got, float) or (isinstance(got, list) and got and isinstance(got[0], float)):
            conv = json_f32 if field.types[-1] == 6 else json_f64
            got = [conv(v) for v in got] if isinstance(got, list) else conv(got)
        assert got == want, (key, got, want)

    ref_path = os.path.join(OUT, "quants_ref.gguf")
    rw = GGUFWriter(ref_path, "gyrofs-test-ref")
    n_checked = 0
    torch_nans = set()
    for t in r.tensors:
        if t.tensor_type in (T.I8, T.I16, T.I32, T.I64, T.F64, T.Q8_K):
            continue
        ref = quants.dequantize(t.data, t.tensor_type)
        assert ref.dtype == np.float32
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        ref = np.ascontiguousarray(ref).reshape(shape)
        torch_bits = torch.from_numpy(ref.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        nan = np.isnan(ref)
        assert np.array_equal(torch_bits[~nan], bf16_rne(ref)[~nan]), t.name
        # torch's vectorized CPU conversion writes NaN as 0xFFFF, its scalar
        # path as 0x7FC0; gyrofs always writes 0x7FC0. Both are NaN.
        assert np.all((torch_bits[nan] & 0x7F80 == 0x7F80) & (torch_bits[nan] & 0x7F != 0)), t.name
        torch_nans.update(int(x) for x in torch_bits[nan])
        n_checked += ref.size
        rw.add_tensor(t.name, ref)
    rw.write_header_to_file()
    rw.write_kv_data_to_file()
    rw.write_tensors_to_file()
    rw.close()

    a_path = os.path.join(OUT, "aligned64.gguf")
    aw = GGUFWriter(a_path, "gyrofs-test")
    aw.add_custom_alignment(64)
    aw.add_tensor("q", random_blocks(rng, T.Q8_0, 3, 0).reshape(3 * 34), raw_dtype=T.Q8_0)
    aw.add_tensor("h", np.arange(5, dtype=np.float16))
    aw.write_header_to_file()
    aw.write_kv_data_to_file()
    aw.write_tensors_to_file()
    aw.close()

    expected = {
        "quants.gguf": dict(tensor_info(r), metadata=exp_meta),
        "aligned64.gguf": dict(tensor_info(GGUFReader(a_path)),
                               metadata={"general.architecture": "gyrofs-test", "general.alignment": 64}),
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False, allow_nan=False)
        f.write("\n")
    sizes = {n: os.path.getsize(os.path.join(OUT, n)) for n in sorted(os.listdir(OUT))}
    print(f"{n_checked} reference values: torch BF16 rounding == RNE except NaN encodings "
          f"{sorted(hex(x) for x in torch_nans)}; sizes: {sizes}")


if __name__ == "__main__":
    main()
