#!/usr/bin/env python3
"""Fixtures for the bitsandbytes source (tests/quant_bnb.rs): tiny random Llama
models quantized by the real library on CPU and saved as transformers saves
them, with the library's own dequantization as golden data.

Environment (venv /opt/q-bnb, made with `python3 -m venv /opt/q-bnb` then
`pip install bitsandbytes transformers==5.24.0 accelerate==1.16.0 safetensors==0.8.0`):
    torch 2.15.0, bitsandbytes 0.50.2, transformers 5.24.0, accelerate 1.16.0,
    safetensors 0.8.0, Python 3.11, on an x86-64 CPU without AVX-512 (the
    library's scalar CPU kernel; see docs/QUANTIZED.md for the AVX-512 path).

Run:  /opt/q-bnb/bin/python scripts/make_quant_bnb.py
Writes tests/data/quant/bnb/<case>/: the quantized checkpoint
(config.json, model.safetensors, generation_config.json), and, in
golden/ (a subfolder, so not part of the checkpoint gyrofs mounts):
- reference.safetensors: every tensor of the dequantized model under the
  model's name, in BF16 (the library's output cast to BF16: for 4-bit
  `bitsandbytes.functional.dequantize_4bit` in the quant_state's dtype, for
  8-bit `bitsandbytes.functional.int8_vectorwise_dequant` (float32));
- reference_f16.safetensors (fp4_nested_f16: quant_state dtype float16): the
  same in F16, the library's output as it is;
- reference_f32.safetensors (int8: the library's float32 output as it is,
  layer 0's weights);
- logits.safetensors: `logits` (float32) of the dequantized model in BF16 for
  `input_ids` (int64) (the end-to-end check, scripts/check_quant_bnb.py).
Re-runnable: the models are seeded; the folders are rewritten.
"""

import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")

import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as F  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    BitsAndBytesConfig,
    LlamaConfig,
    LlamaForCausalLM,
)

torch.set_num_threads(1)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "quant", "bnb")
INPUT_IDS = torch.tensor([[1, 5, 9, 17, 33, 40, 50, 63]], dtype=torch.int64)


def base_model(tmp, dtype, hidden=32, intermediate=64, layers=2, heads=4, kv_heads=2, head_dim=None, seed=0):
    """A small random Llama saved in `dtype` under tmp/base."""
    torch.manual_seed(seed)
    kw = {}
    if head_dim is not None:
        kw["head_dim"] = head_dim
    cfg = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=64,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        **kw,
    )
    m = LlamaForCausalLM(cfg).to(dtype)
    path = os.path.join(tmp, "base")
    m.save_pretrained(path)
    return path


def requantize(model, blocksize, quant_type, nested):
    """Quantize every Linear4bit again with another blocksize (transformers'
    config has no blocksize; the library's Params4bit has)."""
    for _, mod in model.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            w = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state)
            q, state = F.quantize_4bit(
                w, blocksize=blocksize, compress_statistics=nested, quant_type=quant_type
            )
            mod.weight = bnb.nn.Params4bit(
                data=q,
                requires_grad=False,
                quant_state=state,
                blocksize=blocksize,
                compress_statistics=nested,
                quant_type=quant_type,
                module=mod,
                bnb_quantized=True,
            )


def dequantized(model):
    """Every tensor of the model, the quantized weights dequantized by the
    library (in its output dtype)."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            out[name + ".weight"] = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state)
        elif isinstance(mod, bnb.nn.Linear8bitLt):
            out[name + ".weight"] = F.int8_vectorwise_dequant(mod.weight.data, mod.weight.SCB)
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if name not in out and not name.endswith(("SCB", "weight_format")) and "rotary" not in name:
            out[name] = p.data
    return out


def logits(config_dir, tensors):
    """The dequantized model's logits, in BF16, computed as
    scripts/check_quant_bnb.py computes them from MNT/bf16 (saved, then
    `from_pretrained`)."""
    cfg = json.load(open(os.path.join(config_dir, "config.json")))
    cfg.pop("quantization_config", None)
    cfg.pop("torch_dtype", None)
    cfg["dtype"] = "bfloat16"
    model = LlamaForCausalLM(LlamaConfig(**cfg)).to(torch.bfloat16)
    missing, unexpected = model.load_state_dict(
        {k: v.to(torch.bfloat16) for k, v in tensors.items()}, strict=False
    )
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16).eval()
        with torch.no_grad():
            return model(INPUT_IDS).logits.float().contiguous()


def make(case, dtype, qconfig, blocksize=None, **shape):
    out = os.path.join(ROOT, case)
    with tempfile.TemporaryDirectory() as tmp:
        base = base_model(tmp, dtype, **shape)
        model = AutoModelForCausalLM.from_pretrained(
            base, quantization_config=qconfig, device_map="cpu", dtype=dtype
        )
        if blocksize is not None:
            requantize(
                model, blocksize, qconfig.bnb_4bit_quant_type, qconfig.bnb_4bit_use_double_quant
            )
        shutil.rmtree(out, ignore_errors=True)
        model.save_pretrained(out)
    # the reference is what the library makes of the saved checkpoint
    model = AutoModelForCausalLM.from_pretrained(out, device_map="cpu")
    deq = dequantized(model)
    golden = os.path.join(out, "golden")
    os.makedirs(golden)
    save_file(
        {k: v.to(torch.bfloat16).contiguous() for k, v in deq.items()},
        os.path.join(golden, "reference.safetensors"),
    )
    if dtype == torch.float16:
        assert all(v.dtype == torch.float16 for v in deq.values())
        save_file(
            {k: v.contiguous() for k, v in deq.items()},
            os.path.join(golden, "reference_f16.safetensors"),
        )
    if qconfig.load_in_8bit:
        save_file(
            {
                k: v.contiguous()
                for k, v in deq.items()
                if v.dtype == torch.float32 and ".layers.0." in k
            },
            os.path.join(golden, "reference_f32.safetensors"),
        )
    save_file(
        {"logits": logits(out, deq), "input_ids": INPUT_IDS},
        os.path.join(golden, "logits.safetensors"),
    )
    size = sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs
    )
    print(f"{case}: {size} bytes", file=sys.stderr)


def main():
    bf16 = torch.bfloat16
    make(
        "nf4",
        bf16,
        BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            llm_int8_skip_modules=["lm_head", "down_proj"],
        ),
    )
    make(
        "nf4_nested",
        bf16,
        BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True
        ),
        # 576 x 32 = 288 blocks of 64: two nested blocks of 256, the second partial
        intermediate=576,
        layers=1,
    )
    make(
        "nf4_nested_b128",
        bf16,
        BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True
        ),
        blocksize=128,
    )
    make(
        "fp4_f32",
        torch.float32,
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4"),
    )
    make(
        "fp4_nested_f16",
        torch.float16,
        BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_use_double_quant=True
        ),
    )
    # the packed bytes stored as bfloat16 elements (FSDP-style quant_storage)
    make(
        "nf4_storage_bf16",
        bf16,
        BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_quant_storage=torch.bfloat16
        ),
    )
    # odd last dims (the library's generic path) and blocks across rows
    make(
        "fp4_odd",
        bf16,
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4"),
        hidden=63,
        intermediate=96,
        heads=3,
        kv_heads=1,
        head_dim=16,
    )
    make(
        "int8",
        bf16,
        BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["lm_head", "o_proj"]),
    )


if __name__ == "__main__":
    main()
