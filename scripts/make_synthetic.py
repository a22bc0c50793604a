#!/usr/bin/env python3
"""Write a synthetic gpt-oss-shaped checkpoint for benchmarks.

    python3 scripts/make_synthetic.py OUTDIR [--preset 20b|120b|tiny] [--layers N]
                                             [--fill random|sparse] [--shard-gb G]
                                             [--layout hf|original]

`--preset 20b` has the real gpt-oss-20b tensor names, shapes and dtypes
(24 layers, 32 experts, hidden 2880, vocab 201088: ~13 GB in the HF layout);
`--layers` shrinks it. `--fill sparse` writes headers only and extends the
files with holes (multi-GB in milliseconds, for mount-time measurements);
`--fill random` writes pseudo-random data with sane BF16 exponents and MXFP4
scales in 2^-17..2^3 (for read and dequantization throughput). Standard library
only.
"""

import argparse
import json
import os
import struct

PRESETS = {
    "20b": dict(layers=24, experts=32, topk=4, vocab=201088, hidden=2880, inter=2880, head_dim=64, heads=64, kv=8),
    "120b": dict(layers=36, experts=128, topk=4, vocab=201088, hidden=2880, inter=2880, head_dim=64, heads=64, kv=8),
    "tiny": dict(layers=2, experts=4, topk=2, vocab=32, hidden=64, inter=64, head_dim=16, heads=4, kv=2),
}
SIZE = {"BF16": 2, "U8": 1}


def hf_tensors(c):
    """(name, dtype, shape, kind) in the HF layout, in writing order."""
    H, I, E, d = c["hidden"], c["inter"], c["experts"], c["head_dim"]
    out = [("model.embed_tokens.weight", "BF16", [c["vocab"], H], "bf16")]
    for i in range(c["layers"]):
        p = f"model.layers.{i}."
        e = p + "mlp.experts."
        out += [
            (p + "input_layernorm.weight", "BF16", [H], "bf16"),
            (p + "post_attention_layernorm.weight", "BF16", [H], "bf16"),
            (p + "self_attn.q_proj.weight", "BF16", [c["heads"] * d, H], "bf16"),
            (p + "self_attn.q_proj.bias", "BF16", [c["heads"] * d], "bf16"),
            (p + "self_attn.k_proj.weight", "BF16", [c["kv"] * d, H], "bf16"),
            (p + "self_attn.k_proj.bias", "BF16", [c["kv"] * d], "bf16"),
            (p + "self_attn.v_proj.weight", "BF16", [c["kv"] * d, H], "bf16"),
            (p + "self_attn.v_proj.bias", "BF16", [c["kv"] * d], "bf16"),
            (p + "self_attn.o_proj.weight", "BF16", [H, c["heads"] * d], "bf16"),
            (p + "self_attn.o_proj.bias", "BF16", [H], "bf16"),
            (p + "self_attn.sinks", "BF16", [c["heads"]], "bf16"),
            (p + "mlp.router.weight", "BF16", [E, H], "bf16"),
            (p + "mlp.router.bias", "BF16", [E], "bf16"),
            (e + "gate_up_proj_blocks", "U8", [E, 2 * I, H // 32, 16], "blocks"),
            (e + "gate_up_proj_scales", "U8", [E, 2 * I, H // 32], "scales"),
            (e + "gate_up_proj_bias", "BF16", [E, 2 * I], "bf16"),
            (e + "down_proj_blocks", "U8", [E, H, I // 32, 16], "blocks"),
            (e + "down_proj_scales", "U8", [E, H, I // 32], "scales"),
            (e + "down_proj_bias", "BF16", [E, H], "bf16"),
        ]
    out += [("model.norm.weight", "BF16", [H], "bf16"), ("lm_head.weight", "BF16", [c["vocab"], H], "bf16")]
    return out


def original_tensors(c):
    H, I, E, d = c["hidden"], c["inter"], c["experts"], c["head_dim"]
    qkv = (c["heads"] + 2 * c["kv"]) * d
    out = [("embedding.weight", "BF16", [c["vocab"], H], "bf16")]
    for i in range(c["layers"]):
        b = f"block.{i}."
        out += [
            (b + "attn.norm.scale", "BF16", [H], "bf16"),
            (b + "attn.qkv.weight", "BF16", [qkv, H], "bf16"),
            (b + "attn.qkv.bias", "BF16", [qkv], "bf16"),
            (b + "attn.sinks", "BF16", [c["heads"]], "bf16"),
            (b + "attn.out.weight", "BF16", [H, c["heads"] * d], "bf16"),
            (b + "attn.out.bias", "BF16", [H], "bf16"),
            (b + "mlp.norm.scale", "BF16", [H], "bf16"),
            (b + "mlp.gate.weight", "BF16", [E, H], "bf16"),
            (b + "mlp.gate.bias", "BF16", [E], "bf16"),
            (b + "mlp.mlp1_weight.blocks", "U8", [E, 2 * I, H // 32, 16], "blocks"),
            (b + "mlp.mlp1_weight.scales", "U8", [E, 2 * I, H // 32], "scales"),
            (b + "mlp.mlp1_bias", "BF16", [E, 2 * I], "bf16"),
            (b + "mlp.mlp2_weight.blocks", "U8", [E, H, I // 32, 16], "blocks"),
            (b + "mlp.mlp2_weight.scales", "U8", [E, H, I // 32], "scales"),
            (b + "mlp.mlp2_bias", "BF16", [E, H], "bf16"),
        ]
    out += [("norm.scale", "BF16", [H], "bf16"), ("unembedding.weight", "BF16", [c["vocab"], H], "bf16")]
    return out


def numel(shape):
    n = 1
    for x in shape:
        n *= x
    return n


# Byte maps that make random bytes sane: BF16 high bytes -> exponents near 2^-6..2^1,
# scale bytes -> 110..130.
BF16_HI = bytes((b & 0x80) | (0x3C + (b & 0x03)) for b in range(256))
SCALES = bytes(110 + b % 21 for b in range(256))
CHUNK = 64 << 20


def write_data(f, kind, n):
    while n > 0:
        k = min(n, CHUNK)
        buf = bytearray(os.urandom(k))
        if kind == "bf16":
            buf[1::2] = bytes(buf[1::2]).translate(BF16_HI)
        elif kind == "scales":
            buf = bytes(buf).translate(SCALES)
        f.write(buf)
        n -= k


def write_shard(path, tensors, fill):
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    order = sorted(tensors, key=lambda t: (-SIZE[t[1]], t[0]))
    for name, dtype, shape, _ in order:
        n = numel(shape) * SIZE[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    text = json.dumps(header, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text.encode())
        if fill == "sparse":
            f.truncate(8 + len(text) + off)
        else:
            for name, dtype, shape, kind in order:
                write_data(f, kind, numel(shape) * SIZE[dtype])
    return off


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--preset", default="20b", choices=PRESETS)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--fill", default="sparse", choices=["sparse", "random"])
    ap.add_argument("--shard-gb", type=float, default=4.0)
    ap.add_argument("--layout", default="hf", choices=["hf", "original"])
    a = ap.parse_args()
    c = dict(PRESETS[a.preset])
    if a.layers:
        c["layers"] = a.layers
    os.makedirs(a.out, exist_ok=True)
    if a.layout == "original":
        write_shard(os.path.join(a.out, "model.safetensors"), original_tensors(c), a.fill)
        cfg = {"num_hidden_layers": c["layers"], "num_experts": c["experts"], "experts_per_token": c["topk"],
               "vocab_size": c["vocab"], "hidden_size": c["hidden"], "intermediate_size": c["inter"],
               "swiglu_limit": 7.0, "head_dim": c["head_dim"], "num_attention_heads": c["heads"],
               "num_key_value_heads": c["kv"], "sliding_window": 128, "initial_context_length": 4096,
               "rope_theta": 150000, "rope_scaling_factor": 32.0, "rope_ntk_alpha": 1, "rope_ntk_beta": 32}
        dtypes = {n: {"blocks": "FP4", "scales": "UE8"}.get(k, "BF16") for n, _, _, k in original_tensors(c)}
        json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=2)
        json.dump(dtypes, open(os.path.join(a.out, "dtypes.json"), "w"), indent=2)
        return
    tensors = hf_tensors(c)
    shards, cur, size = [], [], 0
    for t in tensors:
        n = numel(t[2]) * SIZE[t[1]]
        if cur and size + n > a.shard_gb * (1 << 30):
            shards.append(cur)
            cur, size = [], 0
        cur.append(t)
        size += n
    shards.append(cur)
    weight_map, total = {}, 0
    for i, s in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        total += write_shard(os.path.join(a.out, name), s, a.fill)
        weight_map.update({t[0]: name for t in s})
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
              open(os.path.join(a.out, "model.safetensors.index.json"), "w"), indent=2)
    cfg = {
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "attention_bias": True,
        "head_dim": c["head_dim"], "hidden_act": "silu", "hidden_size": c["hidden"],
        "intermediate_size": c["inter"], "num_attention_heads": c["heads"], "num_hidden_layers": c["layers"],
        "num_key_value_heads": c["kv"], "num_local_experts": c["experts"], "num_experts_per_tok": c["topk"],
        "experts_per_token": c["topk"], "vocab_size": c["vocab"], "sliding_window": 128, "swiglu_limit": 7.0,
        "rms_norm_eps": 1e-05, "rope_theta": 150000, "tie_word_embeddings": False,
        "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(c["layers"])],
        "max_position_embeddings": 131072, "initial_context_length": 4096,
        "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
                         "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": False},
        "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [
            "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]},
        "torch_dtype": "bfloat16",
    }
    json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=2)


if __name__ == "__main__":
    main()
