#!/usr/bin/env python3
"""Write the bundled sample checkpoint: a tiny gpt-oss-shaped MoE model.

    python3 scripts/make_sample.py [OUTDIR]      (default: tests/data/gpt-oss-tiny)

It writes the same weights in both gpt-oss layouts:
  OUTDIR/                 Hugging Face layout: config.json with an mxfp4
                          quantization_config, two shards plus
                          model.safetensors.index.json, generation_config.json;
                          experts as *_blocks / *_scales (U8) pairs.
  OUTDIR/original/        gpt-oss original layout: block.N.* names, fused qkv,
                          config.json in the original format, dtypes.json
                          (BF16 / FP4 / UE8), one model.safetensors.

Standard library only and fully deterministic (fixed seed), so the committed
files can be regenerated bit for bit. The safetensors files are written the way
the reference writer does it: tensors sorted by dtype alignment (descending)
then name, `{"format":"pt"}` metadata, compact JSON padded with spaces to a
multiple of 8.
"""

import json
import os
import random
import struct
import sys

# Dimensions: small, but every MXFP4 axis is a multiple of 32.
LAYERS, EXPERTS, TOPK = 2, 4, 2
VOCAB, HIDDEN, INTER = 32, 64, 64
HEAD_DIM, HEADS, KV_HEADS = 16, 4, 2
SLIDING_WINDOW = 8

ALIGN = {"BF16": 2, "F32": 4, "U8": 1}


def bf16_bytes(values):
    """float list -> little-endian bf16 bytes (round to nearest even)."""
    out = bytearray()
    for v in values:
        bits = struct.unpack("<I", struct.pack("<f", v))[0]
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        out += struct.pack("<H", bits)
    return bytes(out)


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


class Weights:
    """Deterministic random weights, in Hugging Face names."""

    def __init__(self, seed=20261125):
        self.rng = random.Random(seed)
        self.t = {}  # name -> (dtype, shape, bytes)

    def bf16(self, name, shape, scale=0.05, offset=0.0):
        vals = [offset + self.rng.gauss(0.0, scale) for _ in range(numel(shape))]
        self.t[name] = ("BF16", shape, bf16_bytes(vals))

    def u8(self, name, shape, lo=0, hi=255):
        data = bytes(self.rng.randint(lo, hi) for _ in range(numel(shape)))
        self.t[name] = ("U8", shape, data)


def make_weights():
    w = Weights()
    w.bf16("model.embed_tokens.weight", [VOCAB, HIDDEN])
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w.bf16(p + "input_layernorm.weight", [HIDDEN], 0.02, 1.0)
        w.bf16(p + "post_attention_layernorm.weight", [HIDDEN], 0.02, 1.0)
        w.bf16(p + "self_attn.q_proj.weight", [HEADS * HEAD_DIM, HIDDEN])
        w.bf16(p + "self_attn.q_proj.bias", [HEADS * HEAD_DIM], 0.01)
        w.bf16(p + "self_attn.k_proj.weight", [KV_HEADS * HEAD_DIM, HIDDEN])
        w.bf16(p + "self_attn.k_proj.bias", [KV_HEADS * HEAD_DIM], 0.01)
        w.bf16(p + "self_attn.v_proj.weight", [KV_HEADS * HEAD_DIM, HIDDEN])
        w.bf16(p + "self_attn.v_proj.bias", [KV_HEADS * HEAD_DIM], 0.01)
        w.bf16(p + "self_attn.o_proj.weight", [HIDDEN, HEADS * HEAD_DIM])
        w.bf16(p + "self_attn.o_proj.bias", [HIDDEN], 0.01)
        w.bf16(p + "self_attn.sinks", [HEADS], 0.5)
        w.bf16(p + "mlp.router.weight", [EXPERTS, HIDDEN])
        w.bf16(p + "mlp.router.bias", [EXPERTS], 0.01)
        e = p + "mlp.experts."
        w.u8(e + "gate_up_proj_blocks", [EXPERTS, 2 * INTER, HIDDEN // 32, 16])
        # Scales near 127 (2^0) keep the toy model's activations sane.
        w.u8(e + "gate_up_proj_scales", [EXPERTS, 2 * INTER, HIDDEN // 32], 119, 124)
        w.bf16(e + "gate_up_proj_bias", [EXPERTS, 2 * INTER], 0.01)
        w.u8(e + "down_proj_blocks", [EXPERTS, HIDDEN, INTER // 32, 16])
        w.u8(e + "down_proj_scales", [EXPERTS, HIDDEN, INTER // 32], 119, 124)
        w.bf16(e + "down_proj_bias", [EXPERTS, HIDDEN], 0.01)
    w.bf16("model.norm.weight", [HIDDEN], 0.02, 1.0)
    w.bf16("lm_head.weight", [VOCAB, HIDDEN])
    return w.t


def to_original(hf):
    """The same weights under gpt-oss original names, with q|k|v fused by rows."""
    out, dtypes = {}, {}

    def put(name, t, logical=None):
        out[name] = t
        dtypes[name] = logical or t[0]

    put("embedding.weight", hf["model.embed_tokens.weight"])
    put("unembedding.weight", hf["lm_head.weight"])
    put("norm.scale", hf["model.norm.weight"])
    for i in range(LAYERS):
        p, b = f"model.layers.{i}.", f"block.{i}."
        put(b + "attn.norm.scale", hf[p + "input_layernorm.weight"])
        put(b + "mlp.norm.scale", hf[p + "post_attention_layernorm.weight"])
        for kind in ("weight", "bias"):
            q, k, v = (hf[p + f"self_attn.{x}_proj.{kind}"] for x in "qkv")
            shape = [q[1][0] + k[1][0] + v[1][0]] + q[1][1:]
            put(b + f"attn.qkv.{kind}", ("BF16", shape, q[2] + k[2] + v[2]))
        put(b + "attn.out.weight", hf[p + "self_attn.o_proj.weight"])
        put(b + "attn.out.bias", hf[p + "self_attn.o_proj.bias"])
        put(b + "attn.sinks", hf[p + "self_attn.sinks"])
        put(b + "mlp.gate.weight", hf[p + "mlp.router.weight"])
        put(b + "mlp.gate.bias", hf[p + "mlp.router.bias"])
        e = p + "mlp.experts."
        put(b + "mlp.mlp1_weight.blocks", hf[e + "gate_up_proj_blocks"], "FP4")
        put(b + "mlp.mlp1_weight.scales", hf[e + "gate_up_proj_scales"], "UE8")
        put(b + "mlp.mlp1_bias", hf[e + "gate_up_proj_bias"])
        put(b + "mlp.mlp2_weight.blocks", hf[e + "down_proj_blocks"], "FP4")
        put(b + "mlp.mlp2_weight.scales", hf[e + "down_proj_scales"], "UE8")
        put(b + "mlp.mlp2_bias", hf[e + "down_proj_bias"])
    return out, dtypes


def write_safetensors(path, tensors):
    names = sorted(tensors, key=lambda n: (-ALIGN[tensors[n][0]], n))
    header = {"__metadata__": {"format": "pt"}}
    offset, blobs = 0, []
    for n in names:
        dtype, shape, data = tensors[n]
        assert len(data) == numel(shape) * {"BF16": 2, "F32": 4, "U8": 1}[dtype], n
        header[n] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text.encode())
        for b in blobs:
            f.write(b)
    return offset


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def hf_config():
    return {
        "architectures": ["GptOssForCausalLM"],
        "attention_bias": True,
        "attention_dropout": 0.0,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "experts_per_token": TOPK,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initial_context_length": 64,
        "initializer_range": 0.02,
        "intermediate_size": INTER,
        "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(LAYERS)],
        "max_position_embeddings": 256,
        "model_type": "gpt_oss",
        "num_attention_heads": HEADS,
        "num_experts_per_tok": TOPK,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "num_local_experts": EXPERTS,
        "output_router_logits": False,
        "quantization_config": {
            "modules_to_not_convert": [
                "model.layers.*.self_attn",
                "model.layers.*.mlp.router",
                "model.embed_tokens",
                "lm_head",
            ],
            "quant_method": "mxfp4",
        },
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "factor": 4.0,
            "original_max_position_embeddings": 64,
            "rope_type": "yarn",
            "truncate": False,
        },
        "rope_theta": 150000,
        "router_aux_loss_coef": 0.9,
        "sliding_window": SLIDING_WINDOW,
        "swiglu_limit": 7.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": VOCAB,
    }


def original_config():
    return {
        "num_hidden_layers": LAYERS,
        "num_experts": EXPERTS,
        "experts_per_token": TOPK,
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "swiglu_limit": 7.0,
        "head_dim": HEAD_DIM,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "sliding_window": SLIDING_WINDOW,
        "initial_context_length": 64,
        "rope_theta": 150000,
        "rope_scaling_factor": 4.0,
        "rope_ntk_alpha": 1,
        "rope_ntk_beta": 32,
    }


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data", "gpt-oss-tiny")
    os.makedirs(os.path.join(out, "original"), exist_ok=True)
    hf = make_weights()

    # Two shards: layer 0 and the embedding in the first, the rest in the second.
    first = {n: t for n, t in hf.items() if n.startswith("model.layers.0.") or n == "model.embed_tokens.weight"}
    second = {n: t for n, t in hf.items() if n not in first}
    shards = [("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second)]
    total, weight_map = 0, {}
    for fname, tensors in shards:
        total += write_safetensors(os.path.join(out, fname), tensors)
        weight_map.update({n: fname for n in tensors})
    write_json(os.path.join(out, "model.safetensors.index.json"), {"metadata": {"total_size": total}, "weight_map": weight_map})
    write_json(os.path.join(out, "config.json"), hf_config())
    write_json(os.path.join(out, "generation_config.json"), {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "do_sample": True})

    orig, dtypes = to_original(hf)
    write_safetensors(os.path.join(out, "original", "model.safetensors"), orig)
    write_json(os.path.join(out, "original", "config.json"), original_config())
    write_json(os.path.join(out, "original", "dtypes.json"), dtypes)


if __name__ == "__main__":
    main()
