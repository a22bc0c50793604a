#!/usr/bin/env python3
"""Write a synthetic llama-shaped GGUF model for benchmarks.

    python3 scripts/make_synthetic_gguf.py OUT.gguf [--preset llama-8b|llama-70b|tiny|gpt-oss-20b]
        [--layers N] [--hidden H] [--ffn F] [--vocab V] [--heads N] [--kv-heads N]
        [--experts E] [--type Q4_K] [--fill sparse|random] [--no-tokenizer]
    python3 scripts/make_synthetic_gguf.py OUT.gguf --tensors N [--dims 512,512] [--type Q4_K] ...

Model mode: the tensor names, ggml-order dims and metadata of a llama.cpp
llama model (token_embd, blk.N.attn_{norm,q,k,v,output}, blk.N.ffn_{norm,gate,
up,down}, output_norm, output): 2-D matrices in `--type`, norms F32. With
`--experts E` the FFN is a mixture of experts (blk.N.ffn_{gate,up,down}_exps,
3-D, plus the F32 router blk.N.ffn_gate_inp) and `llama.expert_count` is set.
`--preset llama-8b` (32 layers, hidden 4096, FFN 14336, vocab 128256, 32/8
heads) in Q4_K is ~4.5 GB; `--preset llama-70b` (80 layers, hidden 8192, FFN
28672) ~40 GB. The metadata has a synthetic tokenizer (tokenizer.ggml.tokens
and token_type, one entry per vocab id) so the header is as large as a real
one; `--no-tokenizer` leaves it out. `--preset gpt-oss-20b` writes a
llama.cpp gpt-oss model instead (24 layers, hidden 2880, 32 experts of 2880,
64/8 heads of 64, vocab 201088): attention and embeddings in BF16 with F32
biases, norms, sinks and router, experts `blk.N.ffn_{gate,up,down}_exps` in
MXFP4 (`--type` is ignored), and the metadata keys llama.cpp writes (YaRN,
sliding window, key length).

Tensor-count mode (`--tensors N`): N tensors of `--dims` (ggml order, fastest
first: "512,512") in `--type`, named blk.I.ffn_up_exps.J.weight, for mount-time
scaling and dequantization throughput.

`--fill sparse` writes the header and extends the file with a hole
(multi-GB in milliseconds, for mount time); `--fill random` writes random
blocks whose scale fields are set to a fixed small value (f16 d, dmin, m =
2^-8; MXFP4 exponents 110..130; NVFP4 scales 1.0; F16/BF16/F32 values with
small exponents), so every dequantized value is finite.

GGUF v3, little-endian, alignment 32 (no general.alignment key), tensor data
in file order with each offset a multiple of 32. Standard library only.
"""

import argparse
import os
import struct

# name: (GGUF id, elements per block, bytes per block), as src/quant/ggml.rs.
TYPES = {
    "F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20),
    "Q5_0": (6, 32, 22), "Q5_1": (7, 32, 24), "Q8_0": (8, 32, 34), "Q8_1": (9, 32, 40),
    "Q2_K": (10, 256, 84), "Q3_K": (11, 256, 110), "Q4_K": (12, 256, 144), "Q5_K": (13, 256, 176),
    "Q6_K": (14, 256, 210), "Q8_K": (15, 256, 292), "IQ2_XXS": (16, 256, 66), "IQ2_XS": (17, 256, 74),
    "IQ3_XXS": (18, 256, 98), "IQ1_S": (19, 256, 50), "IQ4_NL": (20, 32, 18), "IQ3_S": (21, 256, 110),
    "IQ2_S": (22, 256, 82), "IQ4_XS": (23, 256, 136), "I8": (24, 1, 1), "I16": (25, 1, 2),
    "I32": (26, 1, 4), "I64": (27, 1, 8), "F64": (28, 1, 8), "IQ1_M": (29, 256, 56),
    "BF16": (30, 1, 2), "TQ1_0": (34, 256, 54), "TQ2_0": (35, 256, 66), "MXFP4": (39, 32, 17),
    "NVFP4": (40, 64, 36),
}

# llama.cpp's general.file_type (LLAMA_FTYPE_MOSTLY_*) for the main type.
FILE_TYPE = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10,
    "Q3_K": 12, "Q4_K": 15, "Q5_K": 17, "Q6_K": 18, "IQ2_XXS": 19, "IQ2_XS": 20, "IQ3_XXS": 23,
    "IQ1_S": 24, "IQ4_NL": 25, "IQ3_S": 26, "IQ2_S": 28, "IQ4_XS": 30, "IQ1_M": 31, "BF16": 32,
    "TQ1_0": 36, "TQ2_0": 37, "MXFP4": 38,
}

PRESETS = {
    "llama-8b": dict(layers=32, hidden=4096, ffn=14336, vocab=128256, heads=32, kv_heads=8),
    "llama-70b": dict(layers=80, hidden=8192, ffn=28672, vocab=128256, heads=64, kv_heads=8),
    "tiny": dict(layers=2, hidden=256, ffn=512, vocab=512, heads=4, kv_heads=2),
    "gpt-oss-20b": dict(layers=24, hidden=2880, ffn=2880, vocab=201088, heads=64, kv_heads=8, experts=32,
                        head_dim=64),
}

ALIGN = 32

# ---- random block data with sane scales -----------------------------------

D_F16 = struct.pack("<e", 2.0 ** -8)  # the fixed f16 value of every d / dmin / m field


def _nibble_table(hi):
    """Byte map keeping the low nibble and setting the high nibble to `hi`."""
    return bytes((b & 0x0F) | (hi << 4) for b in range(256))


_d_bits = struct.unpack("<H", D_F16)[0]
# Per type: (f16 field offsets, [(byte offset, translation table)]).
PATCHES = {
    "Q4_0": ([0], []), "Q4_1": ([0, 2], []), "Q5_0": ([0], []), "Q5_1": ([0, 2], []),
    "Q8_0": ([0], []), "Q8_1": ([0, 2], []),
    "Q2_K": ([80, 82], []), "Q3_K": ([108], []), "Q4_K": ([0, 2], []), "Q5_K": ([0, 2], []),
    "Q6_K": ([208], []),
    "IQ2_XXS": ([0], []), "IQ2_XS": ([0], []), "IQ2_S": ([0], []), "IQ3_XXS": ([0], []),
    "IQ3_S": ([0], []), "IQ1_S": ([0], []), "IQ4_NL": ([0], []), "IQ4_XS": ([0], []),
    "TQ1_0": ([52], []), "TQ2_0": ([64], []),
    # IQ1_M: d is spread over the top nibbles of the four u16 scale words at 48..56.
    "IQ1_M": ([], [(49 + 2 * k, _nibble_table((_d_bits >> (4 * k)) & 0xF)) for k in range(4)]),
    # MXFP4: E8M0 exponent byte -> 110..130 (2^-18 .. 2^2).
    "MXFP4": ([], [(0, bytes(110 + b % 21 for b in range(256)))]),
    # NVFP4: four UE4M3 scales -> 0x38 (1.0, times 0.5).
    "NVFP4": ([], [(k, bytes([0x38]) * 256) for k in range(4)]),
    # Q8_K: f32 d at 0: exponent byte -> 0x3C (2^-7 .. 2^-6 range).
    "Q8_K": ([], [(3, bytes((b & 0x80) | 0x3C for b in range(256)))]),
    # Plain floats: the byte holding the top exponent bits -> small exponents.
    "F16": ([], [(1, bytes((b & 0x83) | 0x30 for b in range(256)))]),  # |x| in 2^-3 .. 2^-2
    "BF16": ([], [(1, bytes((b & 0x80) | (0x3C + (b & 0x03)) for b in range(256)))]),
    "F32": ([], [(3, bytes((b & 0x80) | (0x3C + (b & 0x01)) for b in range(256)))]),
    "F64": ([], [(7, bytes((b & 0x80) | 0x3F for b in range(256)))]),
}
CHUNK = 64 << 20


def random_blocks(tname, nbytes):
    """Yield `nbytes` of random whole blocks of type `tname`, scale fields fixed."""
    _, _, ts = TYPES[tname]
    f16s, tables = PATCHES.get(tname, ([], []))
    per = max(1, CHUNK // ts) * ts
    while nbytes > 0:
        k = min(nbytes, per)
        nb = k // ts
        buf = bytearray(os.urandom(k))
        for o in f16s:
            buf[o::ts] = D_F16[0:1] * nb
            buf[o + 1::ts] = D_F16[1:2] * nb
        for o, table in tables:
            buf[o::ts] = bytes(buf[o::ts]).translate(table)
        yield buf
        nbytes -= k


# ---- GGUF writer ----------------------------------------------------------

def s_(x):
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, value):
    """One key/value: vtype is 'u32', 'f32', 'str', 'str[]' or 'i32[]'."""
    out = s_(key)
    if vtype == "u32":
        out += struct.pack("<II", 4, value)
    elif vtype == "f32":
        out += struct.pack("<If", 6, value)
    elif vtype == "str":
        out += struct.pack("<I", 8) + s_(value)
    elif vtype == "str[]":
        out += struct.pack("<IIQ", 9, 8, len(value)) + b"".join(s_(v) for v in value)
    elif vtype == "i32[]":
        out += struct.pack("<IIQ", 9, 5, len(value)) + struct.pack(f"<{len(value)}i", *value)
    else:
        raise ValueError(vtype)
    return out


def nbytes_of(tname, dims):
    _, bs, ts = TYPES[tname]
    n = 1
    for d in dims:
        n *= d
    if dims[0] % bs:
        raise SystemExit(f"row length {dims[0]} is not a multiple of the {tname} block size {bs}")
    return n // bs * ts


def write_gguf(path, kvs, tensors, fill):
    """tensors: [(name, dims in ggml order, type name)]. Returns (data bytes, file bytes)."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs)
    infos, off, sizes = [], 0, []
    for name, dims, tname in tensors:
        n = nbytes_of(tname, dims)
        infos.append(s_(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, TYPES[tname][0], off))
        sizes.append(n)
        off += -(-n // ALIGN) * ALIGN
    head += b"".join(infos)
    head += b"\0" * (-len(head) % ALIGN)
    with open(path, "wb") as f:
        f.write(head)
        if fill == "sparse":
            f.truncate(len(head) + off)
        else:
            for (_, _, tname), n in zip(tensors, sizes):
                for buf in random_blocks(tname, n):
                    f.write(buf)
                f.write(b"\0" * (-n % ALIGN))
    return off, len(head) + off


def llama_tensors(c, qtype):
    H, F, V, L, E = c["hidden"], c["ffn"], c["vocab"], c["layers"], c.get("experts", 0)
    kv_dim = H // c["heads"] * c["kv_heads"]
    out = [("token_embd.weight", [H, V], qtype)]
    for i in range(L):
        p = f"blk.{i}."
        out += [
            (p + "attn_norm.weight", [H], "F32"),
            (p + "attn_q.weight", [H, H], qtype),
            (p + "attn_k.weight", [H, kv_dim], qtype),
            (p + "attn_v.weight", [H, kv_dim], qtype),
            (p + "attn_output.weight", [H, H], qtype),
            (p + "ffn_norm.weight", [H], "F32"),
        ]
        if E:
            out += [
                (p + "ffn_gate_inp.weight", [H, E], "F32"),
                (p + "ffn_gate_exps.weight", [H, F, E], qtype),
                (p + "ffn_up_exps.weight", [H, F, E], qtype),
                (p + "ffn_down_exps.weight", [F, H, E], qtype),
            ]
        else:
            out += [
                (p + "ffn_gate.weight", [H, F], qtype),
                (p + "ffn_up.weight", [H, F], qtype),
                (p + "ffn_down.weight", [F, H], qtype),
            ]
    out += [("output_norm.weight", [H], "F32"), ("output.weight", [H, V], qtype)]
    return out


def tokenizer_kvs(vocab):
    """A synthetic byte-level tokenizer of `vocab` tokens (as large in the header as a real one)."""
    return [
        kv("tokenizer.ggml.model", "str", "gpt2"),
        kv("tokenizer.ggml.tokens", "str[]", [f"<tok{i}>" for i in range(vocab)]),
        kv("tokenizer.ggml.token_type", "i32[]", [1] * vocab),
        kv("tokenizer.ggml.bos_token_id", "u32", 0),
        kv("tokenizer.ggml.eos_token_id", "u32", 1),
    ]


def gpt_oss_tensors(c):
    H, F, V, L, E, D = c["hidden"], c["ffn"], c["vocab"], c["layers"], c["experts"], c["head_dim"]
    q, kvd = c["heads"] * D, c["kv_heads"] * D
    out = [("token_embd.weight", [H, V], "BF16")]
    for i in range(L):
        p = f"blk.{i}."
        out += [
            (p + "attn_norm.weight", [H], "F32"),
            (p + "post_attention_norm.weight", [H], "F32"),
            (p + "attn_q.weight", [H, q], "BF16"), (p + "attn_q.bias", [q], "F32"),
            (p + "attn_k.weight", [H, kvd], "BF16"), (p + "attn_k.bias", [kvd], "F32"),
            (p + "attn_v.weight", [H, kvd], "BF16"), (p + "attn_v.bias", [kvd], "F32"),
            (p + "attn_output.weight", [q, H], "BF16"), (p + "attn_output.bias", [H], "F32"),
            (p + "attn_sinks.weight", [c["heads"]], "F32"),
            (p + "ffn_gate_inp.weight", [H, E], "F32"), (p + "ffn_gate_inp.bias", [E], "F32"),
            (p + "ffn_gate_exps.weight", [H, F, E], "MXFP4"), (p + "ffn_gate_exps.bias", [F, E], "F32"),
            (p + "ffn_up_exps.weight", [H, F, E], "MXFP4"), (p + "ffn_up_exps.bias", [F, E], "F32"),
            (p + "ffn_down_exps.weight", [F, H, E], "MXFP4"), (p + "ffn_down_exps.bias", [H, E], "F32"),
        ]
    out += [("output_norm.weight", [H], "F32"), ("output.weight", [H, V], "BF16")]
    return out


def gpt_oss_kvs(c, name, tokenizer):
    a = "gpt-oss."
    kvs = [
        kv("general.architecture", "str", "gpt-oss"),
        kv("general.name", "str", name),
        kv(a + "block_count", "u32", c["layers"]),
        kv(a + "context_length", "u32", 131072),
        kv(a + "embedding_length", "u32", c["hidden"]),
        kv(a + "feed_forward_length", "u32", c["ffn"]),
        kv(a + "expert_feed_forward_length", "u32", c["ffn"]),
        kv(a + "attention.head_count", "u32", c["heads"]),
        kv(a + "attention.head_count_kv", "u32", c["kv_heads"]),
        kv(a + "attention.key_length", "u32", c["head_dim"]),
        kv(a + "attention.value_length", "u32", c["head_dim"]),
        kv(a + "attention.sliding_window", "u32", 128),
        kv(a + "attention.layer_norm_rms_epsilon", "f32", 1e-5),
        kv(a + "rope.freq_base", "f32", 150000.0),
        kv(a + "rope.scaling.type", "str", "yarn"),
        kv(a + "rope.scaling.factor", "f32", 32.0),
        kv(a + "rope.scaling.original_context_length", "u32", 4096),
        kv(a + "expert_count", "u32", c["experts"]),
        kv(a + "expert_used_count", "u32", 4),
        kv("general.file_type", "u32", FILE_TYPE["MXFP4"]),
    ]
    if tokenizer:
        kvs += tokenizer_kvs(c["vocab"])
    return kvs


def llama_kvs(c, qtype, name, tokenizer):
    H = c["hidden"]
    kvs = [
        kv("general.architecture", "str", "llama"),
        kv("general.name", "str", name),
        kv("llama.block_count", "u32", c["layers"]),
        kv("llama.context_length", "u32", 8192),
        kv("llama.embedding_length", "u32", H),
        kv("llama.feed_forward_length", "u32", c["ffn"]),
        kv("llama.attention.head_count", "u32", c["heads"]),
        kv("llama.attention.head_count_kv", "u32", c["kv_heads"]),
        kv("llama.rope.freq_base", "f32", 500000.0),
        kv("llama.attention.layer_norm_rms_epsilon", "f32", 1e-5),
        kv("llama.rope.dimension_count", "u32", H // c["heads"]),
        kv("llama.vocab_size", "u32", c["vocab"]),
    ]
    if c.get("experts"):
        kvs += [kv("llama.expert_count", "u32", c["experts"]),
                kv("llama.expert_used_count", "u32", min(2, c["experts"]))]
    if qtype in FILE_TYPE:
        kvs.append(kv("general.file_type", "u32", FILE_TYPE[qtype]))
    if tokenizer:
        kvs += tokenizer_kvs(c["vocab"])
    return kvs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--preset", default="llama-8b", choices=PRESETS)
    for k in ("layers", "hidden", "ffn", "vocab", "heads", "kv-heads", "experts"):
        ap.add_argument("--" + k, type=int)
    ap.add_argument("--type", default="Q4_K", choices=TYPES, help="type of the big matrices (default Q4_K)")
    ap.add_argument("--fill", default="sparse", choices=["sparse", "random"])
    ap.add_argument("--no-tokenizer", action="store_true")
    ap.add_argument("--tensors", type=int, help="tensor-count mode: write N tensors of --dims")
    ap.add_argument("--dims", default="512,512", help="ggml-order dims for --tensors (default 512,512)")
    a = ap.parse_args()

    if a.tensors is not None:
        dims = [int(x) for x in a.dims.split(",")]
        tensors = [(f"blk.{i // 1000}.ffn_up_exps.{i % 1000}.weight", dims, a.type) for i in range(a.tensors)]
        kvs = [kv("general.architecture", "str", "llama"),
               kv("general.name", "str", f"synthetic {a.tensors} x {a.type} {a.dims}"),
               kv("llama.block_count", "u32", max(1, -(-a.tensors // 1000)))]
    else:
        c = dict(PRESETS[a.preset])
        for k in ("layers", "hidden", "ffn", "vocab", "heads", "kv_heads", "experts"):
            if getattr(a, k) is not None:
                c[k] = getattr(a, k)
        if a.preset.startswith("gpt-oss"):
            tensors = gpt_oss_tensors(c)
            kvs = gpt_oss_kvs(c, f"synthetic {a.preset}", not a.no_tokenizer)
        else:
            tensors = llama_tensors(c, a.type)
            kvs = llama_kvs(c, a.type, f"synthetic {a.preset} {a.type}", not a.no_tokenizer)
    data, total = write_gguf(a.out, kvs, tensors, a.fill)
    print(f"{a.out}: {len(tensors)} tensors, {total / 1e9:.3f} GB ({a.fill})")


if __name__ == "__main__":
    main()
