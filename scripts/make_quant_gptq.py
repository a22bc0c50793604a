#!/usr/bin/env python3
"""GPTQ and AWQ fixtures for tests/quant_gptq.rs and tests/quant_awq.rs.

Writes tests/data/quant/gptq/<case>/ and tests/data/quant/awq/<case>/: a tiny
random LlamaForCausalLM (1 layer, hidden 64, intermediate 128, vocab 128,
float16) whose linear layers are stored as the libraries store them, plus
the golden data of the libraries' own dequantization:

- model/: the checkpoint (the source to mount): model.safetensors,
  config.json (with quantization_config, or, for the AutoGPTQ-style case, a
  quantize_config.json side file instead);
- reference.safetensors: every dequantized weight under the model's name
  (`<module>.weight`, [out, in]), the library's float16 result cast to BF16;
- reference_f16.safetensors (cases with `f16`): the float16 result itself;
- logits.safetensors: float32 logits of the dequantized model (every tensor
  as bf16/ serves it: BF16, then float32) for `input_ids` (also stored),
  for scripts/check_quant_gptq.py.

GPTQ quantization needs calibration and, in practice, a GPU; any code
pattern is a valid checkpoint, so the codes, zeros, scales and act-order
g_idx are random (asymmetric zeros as random int32 words, so every field
value, including the v1 "all ones" zero that carries into its neighbour,
occurs; symmetric zeros packed with gptqmodel's own `pack_cols`). The
reference is gptqmodel's CPU path as it loads a checkpoint:
`TorchLinear` (gptqmodel/nn_modules/qlinear/torch.py) with the stored
buffers, `convert_gptq_v1_to_v2_format_module` (utils/model.py) for
checkpoint_format gptq, then `dequantize_weight()` (qlinear/__init__.py),
transposed. AWQ: `dequantize_gemm` of
gptqmodel/quantization/awq/utils/packing_utils.py (AutoAWQ's function, what
gptqmodel's `AwqTorchLinear` calls), codes packed with `pack_awq`.

Environment (/opt/q-gptq, built once):
    python3 -m venv /opt/q-gptq
    echo /opt/pyref/lib/python3.11/site-packages \
        > /opt/q-gptq/lib/python3.11/site-packages/pyref.pth
    /opt/q-gptq/bin/pip install -U pip setuptools wheel
    BUILD_CUDA_EXT=0 /opt/q-gptq/bin/pip install --no-build-isolation gptqmodel==7.7.0
Versions: gptqmodel 7.7.0, torch 2.15.0 (CPU), transformers 5.24.0,
safetensors 0.8.0, Python 3.11.7.

Run (re-runnable; replaces the case folders):
    /opt/q-gptq/bin/python scripts/make_quant_gptq.py
"""

import json
import math
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from gptqmodel.nn_modules.qlinear.torch import TorchLinear
from gptqmodel.quantization.awq.utils.packing_utils import dequantize_gemm, pack_awq
from gptqmodel.utils.model import convert_gptq_v1_to_v2_format_module
from gptqmodel.utils.model_dequant import pack_cols

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "quant")
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
INPUT_IDS = torch.tensor([[1, 5, 9, 77, 3, 100, 42, 8, 127, 0, 64, 33, 12, 90, 7, 2]])


def llama(seed):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=64, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg).half()
    return cfg, {k: v.contiguous() for k, v in model.state_dict().items()}


def rand_words(shape, g):
    return torch.randint(-2**31, 2**31, shape, generator=g, dtype=torch.int64).to(torch.int32)


def rand_scales(shape, g):
    return (torch.rand(shape, generator=g) * 0.03 + 0.002).half()


def gptq_layer(inf, outf, bits, gs, desc_act, sym, fmt, g):
    groups = 1 if gs == -1 else math.ceil(inf / gs)
    if desc_act:
        perm = torch.randperm(inf, generator=g)
        g_idx = torch.empty(inf, dtype=torch.int32)
        g_idx[perm] = (torch.arange(inf) // (inf if gs == -1 else gs)).to(torch.int32)
    else:
        g_idx = (torch.arange(inf) // (inf if gs == -1 else gs)).to(torch.int32)
    qweight = rand_words((inf * bits // 32, outf), g)
    if sym:
        # symmetric: every zero is 2^(bits-1); v1 stores it minus one
        z = (1 << (bits - 1)) - (1 if fmt == "gptq" else 0)
        qzeros = pack_cols(torch.full((groups, outf), z, dtype=torch.int32), bits,
                           pack_dtype=torch.int32)
    else:
        qzeros = rand_words((groups, outf * bits // 32), g)
    scales = rand_scales((groups, outf), g)
    m = TorchLinear(bits=bits, group_size=gs, sym=sym, desc_act=desc_act,
                    in_features=inf, out_features=outf, bias=False)
    with torch.no_grad():
        m.qweight.copy_(qweight)
        m.qzeros.copy_(qzeros)
        m.scales.copy_(scales)
        m.g_idx.copy_(g_idx)
        if fmt == "gptq":
            convert_gptq_v1_to_v2_format_module(m, bits, torch.int32)
        m.post_init()
        w = m.dequantize_weight().t().contiguous()
    assert w.dtype == torch.float16 and w.shape == (outf, inf)
    return {"qweight": qweight, "qzeros": qzeros, "scales": scales, "g_idx": g_idx}, w


def awq_layer(inf, outf, gs, g):
    groups = inf // gs
    codes = torch.randint(0, 16, (inf, outf), generator=g, dtype=torch.int32)
    zeros = torch.randint(0, 16, (groups, outf), generator=g, dtype=torch.int32)
    qweight, qzeros = pack_awq(codes, zeros, 4)
    scales = rand_scales((groups, outf), g)
    w = dequantize_gemm(qweight, qzeros, scales, 4, gs).t().contiguous()
    assert w.dtype == torch.float16 and w.shape == (outf, inf)
    return {"qweight": qweight, "qzeros": qzeros, "scales": scales}, w


def logits_of(cfg, state):
    torch.set_num_threads(1)
    model = LlamaForCausalLM(cfg).float().eval()
    model.load_state_dict(state)
    with torch.no_grad():
        return model(INPUT_IDS).logits.float().contiguous()


def write(case_dir, cfg, stored, deq, qc, side=None, f16=False):
    shutil.rmtree(case_dir, ignore_errors=True)
    model_dir = os.path.join(case_dir, "model")
    os.makedirs(model_dir)
    save_file(stored, os.path.join(model_dir, "model.safetensors"), metadata={"format": "pt"})
    conf = cfg.to_dict()
    conf["torch_dtype"] = "float16"
    conf["architectures"] = ["LlamaForCausalLM"]
    if qc is not None:
        conf["quantization_config"] = qc
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(conf, f, indent=2, sort_keys=True)
    if side is not None:
        with open(os.path.join(model_dir, "quantize_config.json"), "w") as f:
            json.dump(side, f, indent=2, sort_keys=True)
    save_file({k: v.bfloat16() for k, v in deq.items()},
              os.path.join(case_dir, "reference.safetensors"))
    if f16:
        save_file(deq, os.path.join(case_dir, "reference_f16.safetensors"))
    # the model as bf16/ serves it: every tensor BF16, then float32
    state = {k: v.bfloat16().float() for k, v in stored.items() if v.is_floating_point()}
    for k, v in deq.items():
        state[k] = v.bfloat16().float()
    state = {k: v for k, v in state.items() if not k.endswith(".scales")}
    save_file({"logits": logits_of(cfg, state), "input_ids": INPUT_IDS.to(torch.int64)},
              os.path.join(case_dir, "logits.safetensors"))
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(case_dir) for f in fs)
    print(f"{case_dir}: {size // 1024} KiB", file=sys.stderr)


def quantize(state, layer_of, seed):
    """Replace each linear weight the case quantizes by its stored parts."""
    g = torch.Generator().manual_seed(seed)
    stored, deq = {}, {}
    for name, t in state.items():
        module = name[: -len(".weight")] if name.endswith(".weight") else None
        spec = layer_of(module) if module and any(module.endswith(l) for l in LINEARS) else None
        if spec is None:
            stored[name] = t
            continue
        parts, w = spec(t.shape[1], t.shape[0], g)
        for role, p in parts.items():
            stored[f"{module}.{role}"] = p.contiguous()
        deq[name] = w
    return stored, deq


def gptq_qc(bits, gs, desc_act, sym, fmt="gptq", **extra):
    qc = {"quant_method": "gptq", "bits": bits, "group_size": gs, "desc_act": desc_act,
          "sym": sym, "checkpoint_format": fmt, "pack_dtype": "int32", "lm_head": False,
          "damp_percent": 0.05, "true_sequential": True, "static_groups": False,
          "meta": {"quantizer": ["gptqmodel:7.7.0"]}}
    qc.update(extra)
    return qc


def gptq_case(name, bits, gs, desc_act, sym, fmt="gptq", seed=0, f16=False, side=False):
    cfg, state = llama(seed)
    layer = lambda m: (lambda i, o, g: gptq_layer(i, o, bits, gs, desc_act, sym, fmt, g))
    stored, deq = quantize(state, layer, seed + 1000)
    qc = gptq_qc(bits, gs, desc_act, sym, fmt)
    if side:
        # AutoGPTQ: config.json without quantization_config, quantize_config.json beside it
        side_qc = {"bits": bits, "group_size": gs, "damp_percent": 0.01, "desc_act": desc_act,
                   "static_groups": False, "sym": sym, "true_sequential": True,
                   "model_name_or_path": None, "model_file_base_name": "model",
                   "is_marlin_format": False, "quant_method": "gptq", "checkpoint_format": fmt}
        write(os.path.join(ROOT, "gptq", name), cfg, stored, deq, None, side=side_qc, f16=f16)
    else:
        write(os.path.join(ROOT, "gptq", name), cfg, stored, deq, qc, f16=f16)


def gptq_dynamic():
    # gptqmodel's per-module overrides: down_proj at 8 bits (group 64), o_proj skipped
    cfg, state = llama(7)

    def layer(m):
        if m.endswith("o_proj"):
            return None
        if m.endswith("down_proj"):
            return lambda i, o, g: gptq_layer(i, o, 8, 64, False, False, "gptq", g)
        return lambda i, o, g: gptq_layer(i, o, 4, 32, True, False, "gptq", g)

    stored, deq = quantize(state, layer, 1007)
    qc = gptq_qc(4, 32, True, False, dynamic={
        r"+:.*\.down_proj": {"bits": 8, "group_size": 64},
        r"-:.*\.o_proj": {},
    })
    write(os.path.join(ROOT, "gptq", "dynamic"), cfg, stored, deq, qc)


def awq_case(name, gs, seed, not_convert=None, f16=False):
    cfg, state = llama(seed)

    def layer(m):
        if not_convert and any(n in m for n in not_convert):
            return None
        return lambda i, o, g: awq_layer(i, o, gs, g)

    stored, deq = quantize(state, layer, seed + 1000)
    qc = {"quant_method": "awq", "bits": 4, "group_size": gs, "zero_point": True,
          "version": "gemm", "modules_to_not_convert": not_convert}
    write(os.path.join(ROOT, "awq", name), cfg, stored, deq, qc, f16=f16)


def main():
    gptq_case("b4_g32_sym", 4, 32, False, True, seed=1, f16=True)
    gptq_case("b4_g32_act", 4, 32, True, False, seed=2)
    gptq_case("b3_g64_act", 3, 64, True, False, seed=3)
    gptq_case("b8_g32", 8, 32, False, False, seed=4)
    gptq_case("b2_channel_side", 2, -1, False, False, seed=5, side=True)
    gptq_case("b4_v2", 4, 32, False, False, fmt="gptq_v2", seed=6)
    gptq_dynamic()
    awq_case("g32", 32, seed=11, f16=True)
    awq_case("g64_not_convert", 64, seed=12, not_convert=["o_proj"])


if __name__ == "__main__":
    main()
