#!/usr/bin/env python3
"""Fixtures for tests/quant_modelopt.rs: tiny random Llama models quantized
by NVIDIA ModelOpt on CPU (`mtq.quantize` with a short random calibration
loop, then `export_hf_checkpoint`: the unified Hugging Face export), with
ModelOpt's own dequantization as golden data.

Run with the reference venv:

    /opt/q-ct/bin/python scripts/make_quant_modelopt.py

Versions this was made with (venv /opt/q-ct, see make_quant_compressed_tensors.py):
    nvidia-modelopt 0.47.0, compressed-tensors 0.20.1,
    transformers 5.24.0, torch 2.15.0 (CPU), safetensors 0.8.0

Each case is written under tests/data/quant/modelopt/<case>/:
    model/...               what export_hf_checkpoint writes (config.json with
                            quantization_config.quant_method "modelopt", and
                            hf_quant_config.json)
    reference.safetensors   every quantized weight dequantized by ModelOpt
                            (`NVFP4QTensor.dequantize` / `FP8QTensor.dequantize`,
                            dtype BF16, the model's), under the model's name
    logits.safetensors      the logits (F32) for `input_ids` of the model with
                            those weights

Case `nvfp4_side_file` is `nvfp4` as older exports wrote it: config.json
without quantization_config, only hf_quant_config.json.

The NVFP4 reference is also compared with compressed-tensors' NVFP4
dequantization of the same values (global scale = 1 / weight_scale_2: ModelOpt
multiplies by weight_scale_2, compressed-tensors divides by its global scale;
the script prints how many values agree: with 0.47.0 / 0.20.1 every value of
the fixture, the bits of all but the zeros of nibble 8, -0 in
compressed-tensors' FP4 table and +0 in ModelOpt's).
"""

import json
import os
import shutil
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

import modelopt.torch.quantization as mtq
from modelopt.torch.export import export_hf_checkpoint
from modelopt.torch.quantization.qtensor.fp8_tensor import FP8QTensor
from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "quant",
                    "modelopt")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=False, architectures=["LlamaForCausalLM"])
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.5)
    return model.to(torch.bfloat16)


def calibrate(model):
    g = torch.Generator().manual_seed(1)
    model(torch.randint(0, 64, (2, 16), generator=g))


def reference(folder):
    stored = load_file(os.path.join(folder, "model.safetensors"))
    weights = {}
    for k, s in stored.items():
        if not k.endswith(".weight_scale"):
            continue
        m = k[: -len(".weight_scale")]
        w = stored[m + ".weight"]
        if w.dtype == torch.uint8:  # NVFP4
            shape = (w.shape[0], w.shape[1] * 2)
            q = NVFP4QTensor(torch.Size(shape), torch.bfloat16, w)
            d = q.dequantize(dtype=torch.bfloat16, scale=s, double_scale=stored[m + ".weight_scale_2"],
                             block_sizes={-1: 16})
        else:  # FP8, one scale per tensor
            q = FP8QTensor(w.shape, torch.bfloat16, w)
            d = q.dequantize(dtype=torch.bfloat16, scale=s)
        weights[m + ".weight"] = d.to(torch.bfloat16).contiguous()
    return weights, stored


def against_compressed_tensors(weights, stored):
    """compressed-tensors' NVFP4 dequantization of the same stored values."""
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import dequantize
    same = same_value = total = 0
    args = QuantizationArgs(num_bits=4, type="float", strategy="tensor_group", group_size=16)
    for name, want in weights.items():
        m = name[: -len(".weight")]
        w = stored[m + ".weight"]
        if w.dtype != torch.uint8:
            continue
        x = unpack_fp4_from_uint8(w, w.shape[0], w.shape[1] * 2)
        g = (1.0 / stored[m + ".weight_scale_2"].float()).reshape([1])
        d = dequantize(x_q=x, scale=stored[m + ".weight_scale"].to(x.dtype), args=args,
                       global_scale=g, dtype=x.dtype)
        same += int((d.view(torch.int16) == want.view(torch.int16)).sum())
        same_value += int((d == want).sum())  # -0 == +0
        total += want.numel()
    return same, same_value, total


CASES = {
    "nvfp4": mtq.NVFP4_DEFAULT_CFG,
    "fp8": mtq.FP8_DEFAULT_CFG,
}


LOGITS = """
import os, shutil, sys, tempfile, torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM
ckpt, out = sys.argv[1:]
state = {k: v for k, v in load_file(os.path.join(ckpt, "model.safetensors")).items()
         if not k.endswith(("_scale", "_scale_2"))}
state.update(load_file(os.path.join(out, "reference.safetensors")))
with tempfile.TemporaryDirectory() as t:
    shutil.copy(os.path.join(ckpt, "config.json"), t)
    import json
    c = json.load(open(os.path.join(t, "config.json")))
    c.pop("quantization_config", None)
    json.dump(c, open(os.path.join(t, "config.json"), "w"))
    save_file(state, os.path.join(t, "model.safetensors"), metadata={"format": "pt"})
    # loaded as a checkpoint is (the rotary inv_freq stays F32)
    model = AutoModelForCausalLM.from_pretrained(t, dtype=torch.bfloat16)
model.eval()
ids = torch.tensor([[1, 5, 9, 17, 33, 2, 60, 7, 3, 11, 40, 22]])
with torch.no_grad():
    logits = model(ids).logits.float().contiguous()
save_file({"logits": logits, "input_ids": ids}, os.path.join(out, "logits.safetensors"))
"""


def make(name, cfg):
    out = os.path.join(ROOT, name)
    shutil.rmtree(out, ignore_errors=True)
    ckpt = os.path.join(out, "model")
    model = mtq.quantize(tiny_model(), cfg, calibrate)
    export_hf_checkpoint(model, export_dir=ckpt)
    weights, stored = reference(ckpt)
    assert weights, name
    save_file(weights, os.path.join(out, "reference.safetensors"))
    if name == "nvfp4":
        same, same_value, total = against_compressed_tensors(weights, stored)
        print(f"{name}: compressed-tensors' NVFP4 gives the same BF16 bits for {same} of {total} "
              f"values, the same value for {same_value} (its FP4 nibble 8 is -0, ModelOpt's +0)",
              file=sys.stderr)
    # in a process of its own: ModelOpt, once imported and applied, changes
    # how transformers' modules run (its quantized attention), so the
    # reference model must run without it
    subprocess.run([sys.executable, "-c", LOGITS, ckpt, out], check=True)
    if name == "nvfp4":
        side = os.path.join(ROOT, "nvfp4_side_file")
        shutil.rmtree(side, ignore_errors=True)
        shutil.copytree(out, side)
        p = os.path.join(side, "model", "config.json")
        c = json.load(open(p))
        del c["quantization_config"]
        json.dump(c, open(p, "w"), indent=4)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    print(f"{name}: {len(weights)} weights, {size} bytes", file=sys.stderr)


def main():
    only = sys.argv[1:]
    for name, cfg in CASES.items():
        if not only or name in only:
            make(name, cfg)


if __name__ == "__main__":
    main()
