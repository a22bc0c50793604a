#!/usr/bin/env python3
"""Fixtures for tests/quant_compressed_tensors.rs: tiny random Llama models
quantized by llm-compressor / compressed-tensors on CPU, saved as the library
saves them, with the library's own dequantization as golden data.

Run with the reference venv (its own, since llm-compressor pins its stack):

    /opt/q-ct/bin/python scripts/make_quant_compressed_tensors.py

Versions this was made with (the venv /opt/q-ct: `python3 -m venv` plus a
.pth onto /opt/pyref's site-packages for torch and transformers):
    compressed-tensors 0.20.1, llmcompressor 0.14.0.1,
    transformers 5.24.0, torch 2.15.0 (CPU), safetensors 0.8.0

Each case is written under tests/data/quant/compressed_tensors/<case>/:
    model/config.json, model.safetensors, ...   what `save_pretrained(save_compressed=True)` writes
    reference.safetensors                 every dequantized weight under the model's
                                          name, as BF16: compressed-tensors' own
                                          per-module decompression (see `reference`)
    logits.safetensors                    the logits (F32) for `input_ids` of the
                                          model with those weights

Re-runnable: the same seed gives the same files.
"""

import json
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file
from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import QuantizationModifier

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "quant",
                    "compressed_tensors")
INPUT_IDS = torch.tensor([[1, 5, 9, 17, 33, 2, 60, 7, 3, 11, 40, 22]])


def tiny_model(layers=2, hidden=64, inter=128, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    # wider than init's 0.02 so that the quantization grid is exercised
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.ndim == 2:
                p.normal_(0, 0.5)
    model = model.to(torch.bfloat16)
    # oneshot reads the model's config from disk (model.config.name_or_path)
    base = os.path.join(tempfile.gettempdir(), f"q-ct-base-{layers}-{hidden}-{inter}-{seed}")
    model.save_pretrained(base)
    return AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)


def args(num_bits=4, type="int", symmetric=True, strategy="group", group_size=None,
         block_structure=None, dynamic=False):
    a = {"num_bits": num_bits, "type": type, "symmetric": symmetric, "strategy": strategy,
         "dynamic": dynamic}
    if group_size is not None:
        a["group_size"] = group_size
    if block_structure is not None:
        a["block_structure"] = block_structure
    return a


def group(targets, weights, input_activations=None):
    g = {"targets": targets, "weights": weights}
    if input_activations is not None:
        g["input_activations"] = input_activations
    return g


LINEAR = ["Linear"]
ATTN = ["re:.*self_attn\\.(q|k|v|o)_proj$"]
MLP = ["re:.*mlp\\.(gate|up|down)_proj$"]

CASES = {
    # the most common: INT4 symmetric, groups of 32, lm_head ignored
    "w4a16_group": dict(
        recipe=QuantizationModifier(targets=LINEAR, ignore=["lm_head"], config_groups={
            "group_0": group(LINEAR, args(4, group_size=32))})),
    # asymmetric INT4 (packed zero points), config groups that differ per
    # module (group 16 for attention, channel for MLP), one module ignored
    "w4_asym_mixed": dict(
        layers=1,
        recipe=QuantizationModifier(
            ignore=["lm_head", "model.layers.0.self_attn.o_proj"], config_groups={
                "group_0": group(ATTN, args(4, symmetric=False, group_size=16)),
                "group_1": group(MLP, args(4, symmetric=False, strategy="channel")),
            })),
    # INT8 packed: per channel, per tensor, asymmetric per channel (packed
    # zero points)
    "w8_mixed": dict(
        layers=1,
        recipe=QuantizationModifier(ignore=["lm_head"], config_groups={
            "group_0": group(ATTN, args(8, strategy="channel")),
            "group_1": group(["re:.*mlp\\.(gate|up)_proj$"], args(8, strategy="tensor")),
            "group_2": group(["re:.*mlp\\.down_proj$"],
                             args(8, symmetric=False, strategy="channel")),
        })),
    # INT4 blocks (edge blocks partial), INT8 asymmetric per tensor (an
    # unpacked I8 zero point)
    "w4_block": dict(
        layers=1,
        recipe=QuantizationModifier(ignore=["lm_head"], config_groups={
            "group_0": group(ATTN + ["re:.*mlp\\.(gate|up)_proj$"],
                             args(4, strategy="block", block_structure=[48, 40])),
            "group_1": group(["re:.*mlp\\.down_proj$"],
                             args(8, symmetric=False, strategy="tensor")),
        })),
    # int-quantized: W8A8 INT8 (per-channel weights, dynamic per-token activations)
    "w8a8_int": dict(
        layers=1,
        recipe=QuantizationModifier(targets=LINEAR, ignore=["lm_head"], scheme="W8A8")),
    # naive-quantized: INT8 weights stored as int8 tensors, asymmetric per channel
    "naive_int8": dict(
        layers=1, format="naive-quantized",
        recipe=QuantizationModifier(ignore=["lm_head"], config_groups={
            "group_0": group(LINEAR, args(8, symmetric=False, strategy="channel"))})),
    # float-quantized FP8 E4M3: per channel (FP8_DYNAMIC), per tensor, per block
    "fp8": dict(
        layers=1,
        recipe=QuantizationModifier(ignore=["lm_head"], config_groups={
            "group_0": group(ATTN, args(8, type="float", strategy="channel"),
                             args(8, type="float", strategy="token", dynamic=True)),
            "group_1": group(["re:.*mlp\\.(gate|up)_proj$"], args(8, type="float",
                                                                  strategy="tensor")),
            "group_2": group(["re:.*mlp\\.down_proj$"],
                             args(8, type="float", strategy="block", block_structure=[32, 32]),
                             args(8, type="float", strategy="group", group_size=32,
                                  dynamic=True)),
        })),
    # NVFP4 weights (FP4 E2M1, FP8 group-16 scales, F32 global scale)
    "nvfp4": dict(
        layers=1,
        recipe=QuantizationModifier(targets=LINEAR, ignore=["lm_head"], scheme="NVFP4A16")),
    # MXFP4 weights (mxfp4-pack-quantized: FP4 E2M1 packed like NVFP4, E8M0
    # group-32 scales stored as U8 exponents, no global scale)
    "mxfp4": dict(
        layers=1,
        recipe=QuantizationModifier(targets=LINEAR, ignore=["lm_head"], scheme="MXFP4A16")),
    # MXFP8 weights (mxfp8-quantized: FP8 E4M3 codes, E8M0 group-32 scales as U8)
    "mxfp8": dict(
        layers=1,
        recipe=QuantizationModifier(targets=LINEAR, ignore=["lm_head"], scheme="MXFP8A16")),
    # MXFP6 weights (mxfp6-pack-quantized: FP6 E2M3, four codes in three
    # bytes, E8M0 group-32 scales as U8)
    "mxfp6": dict(
        layers=1,
        recipe=QuantizationModifier(targets=LINEAR, ignore=["lm_head"], scheme="MXFP6A16")),
}


def reference(folder, layers):
    """Every quantized weight of the checkpoint in `folder`, dequantized by
    compressed-tensors itself: the config's schemes attached to a skeleton
    of the model by `apply_quantization_config` (the library's own target /
    ignore matching), then, per module, its format's
    `BaseCompressor.decompress` on the module's stored tensors (what
    `ModelCompressor.decompress_model` runs per module). transformers 5.24's
    `CompressedTensorsDequantize` applies one scheme to every module of a
    checkpoint with several config groups, so it is not used here. The
    library's output dtype is the scale's (BF16 here); saved as BF16."""
    cfg = json.load(open(os.path.join(folder, "config.json")))
    qc = QuantizationConfig.model_validate(cfg["quantization_config"])
    skeleton = tiny_model(layers=layers)
    apply_quantization_config(skeleton, qc)
    stored = load_file(os.path.join(folder, "model.safetensors"))
    weights = {}
    for name, module in skeleton.named_modules():
        scheme = getattr(module, "quantization_scheme", None)
        if scheme is None or scheme.weights is None:
            continue
        local = {k[len(name) + 1:]: v for k, v in stored.items() if k.startswith(name + ".")}
        compressor = BaseCompressor.get_value_from_registry(scheme.format or qc.format)
        w = compressor.decompress(local, scheme)["weight"]
        weights[name + ".weight"] = w.to(torch.bfloat16).contiguous()
    return weights


def make(name, spec):
    out = os.path.join(ROOT, name)
    shutil.rmtree(out, ignore_errors=True)
    ckpt = os.path.join(out, "model")
    model = tiny_model(layers=spec.get("layers", 2))
    oneshot(model=model, recipe=spec["recipe"])
    kw = {}
    if "format" in spec:
        kw["quantization_format"] = spec["format"]
    model.save_pretrained(ckpt, save_compressed=True, **kw)

    weights = reference(ckpt, spec.get("layers", 2))
    save_file(weights, os.path.join(out, "reference.safetensors"))
    # the reference model: the same architecture with the dequantized weights
    # and the stored unquantized tensors
    model = tiny_model(layers=spec.get("layers", 2))
    state = dict(load_file(os.path.join(ckpt, "model.safetensors")))
    state = {k: v for k, v in state.items() if k in model.state_dict()}
    state.update(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and not [m for m in missing if "rotary" not in m], (missing, unexpected)
    model.eval()
    with torch.no_grad():
        logits = model(INPUT_IDS).logits.float().contiguous()
    save_file({"logits": logits, "input_ids": INPUT_IDS.contiguous()},
              os.path.join(out, "logits.safetensors"))
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    print(f"{name}: {len(weights)} weights, {size} bytes", file=sys.stderr)


def main():
    only = sys.argv[1:]
    for name, spec in CASES.items():
        if not only or name in only:
            make(name, spec)


if __name__ == "__main__":
    main()
