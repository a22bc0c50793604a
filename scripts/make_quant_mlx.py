#!/usr/bin/env python3
"""MLX quantized checkpoints for gyrofs's MLX source tests, with references.

Run with the MLX reference environment (re-runnable, deterministic):

    python3 -m venv /opt/q-mlx
    echo /opt/pyref/lib/python3.11/site-packages > /opt/q-mlx/lib/python3.11/site-packages/zz_pyref.pth   # torch from /opt/pyref
    /opt/q-mlx/bin/pip install mlx mlx-cpu mlx-lm
    /opt/q-mlx/bin/python scripts/make_quant_mlx.py

Versions used for the committed fixtures: mlx 0.32.4 (mlx-cpu 0.32.4),
mlx-lm 0.32.2, transformers 5.25.0, torch 2.15.0, safetensors 0.8.0,
numpy 2.4.6, on Linux x86-64 (mlx's CPU backend).

For each case, a tiny random LlamaForCausalLM is saved by transformers
(bf16), loaded by mlx-lm (`mlx_lm.utils.load_model`), cast to the case's
dtype and quantized by mlx-lm's own `quantize_model` (what `mlx_lm.convert
--quantize` runs; convert itself also needs a tokenizer, which these models
do not have), then saved by `save_model` + `save_config`, exactly as
`mlx_lm.convert` saves them. Each folder `tests/data/quant/mlx/<case>/`
holds:
- `model/`: `model.safetensors`, `config.json`, as mlx-lm writes them (`quantization`
  and its copy `quantization_config`, per-module overrides);
- `reference.safetensors`: every weight of the model under its own name,
  quantized ones as `mx.dequantize(weight, scales, biases, group_size, bits,
  mode)` (mlx's CPU backend) cast to BF16, the others as stored cast to BF16:
  what `MNT/bf16` must hold, bit for bit;
- `reference-f16.safetensors` (the f16 case only): the same in F16, the
  library's output dtype there: what `MNT/f16` must hold;
- `logits.safetensors` (the `affine4_g64` case): `logits` (F32) of the
  reference model (transformers, BF16, the weights of `reference.safetensors`)
  for `input_ids` (I64), for scripts/check_quant_mlx.py.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import mlx.core as mx
import numpy as np
import torch
import transformers
from mlx.utils import tree_map_with_path
from mlx_lm.utils import load_model, quantize_model, save_config, save_model
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "quant" / "mlx"


def tiny_llama(folder: Path, layers: int, seed: int) -> None:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    # random norms, so that passing them through is checked
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
    model.save_pretrained(folder)


def mixed_predicate(path, module):
    """Per-module overrides: every bit width and group size somewhere."""
    if path.endswith("q_proj"):
        return {"group_size": 64, "bits": 2}
    if path.endswith("k_proj"):
        return {"group_size": 32, "bits": 5}
    if path.endswith("v_proj"):
        return {"group_size": 64, "bits": 8}
    if path.endswith("down_proj"):
        return {"group_size": 128, "bits": 3}
    if path.endswith("o_proj"):
        return False  # left unquantized
    if path == "lm_head":
        return {"group_size": 32, "bits": 8}
    return True  # the top-level 6-bit, group 32


CASES = {
    # name: (layers, dtype, group_size, bits, mode, predicate)
    "affine4_g64": (2, "bfloat16", 64, 4, "affine", None),
    "affine3_g32_f16": (1, "float16", 32, 3, "affine", None),
    "mixed": (1, "bfloat16", 32, 6, "affine", mixed_predicate),
    "mxfp4": (1, "bfloat16", 32, 4, "mxfp4", None),
    "nvfp4": (1, "bfloat16", 16, 4, "nvfp4", None),
    "mxfp8": (1, "bfloat16", 32, 8, "mxfp8", None),
}


def dequantized(folder: Path, dtype) -> dict:
    """Every weight of the saved MLX model as the model's own tensor:
    mx.dequantize for the quantized ones (their scales' dtype, or BF16 for
    the fp modes), cast to `dtype`."""
    config = json.loads((folder / "config.json").read_text())
    q = config["quantization"]
    w = mx.load(str(folder / "model.safetensors"))
    out = {}
    for name, t in w.items():
        if name.endswith(".scales") or name.endswith(".biases"):
            continue
        base = name[: -len(".weight")] if name.endswith(".weight") else None
        if base is not None and f"{base}.scales" in w:
            p = q.get(base, q)
            if p is True:
                p = q
            mode = p.get("mode", "affine")
            t = mx.dequantize(
                t,
                w[f"{base}.scales"],
                w.get(f"{base}.biases"),
                group_size=p["group_size"],
                bits=p["bits"],
                mode=mode,
            )
        out[name] = torch.from_numpy(np.array(t.astype(mx.float32))).to(dtype)
    return out


def logits_of(folder: Path, ref: dict) -> dict:
    """The reference model's logits: transformers with the weights of ref."""
    config = json.loads((folder / "config.json").read_text())
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(config))
        save_file(ref, str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16)
    ids = torch.tensor([[1, 5, 9, 17, 33, 65, 127, 3, 0, 42]], dtype=torch.int64)
    with torch.no_grad():
        logits = model(ids).logits.float()
    return {"input_ids": ids, "logits": logits.contiguous()}


def make(name: str, layers, dtype, group_size, bits, mode, predicate, seed) -> None:
    case = OUT / name
    if case.exists():
        shutil.rmtree(case)
    folder = case / "model"
    with tempfile.TemporaryDirectory() as tmp:
        hf = Path(tmp) / "hf"
        tiny_llama(hf, layers, seed)
        model, config = load_model(hf)
        # what mlx_lm.convert does with --dtype: cast every float parameter
        cast = getattr(mx, dtype)
        model.update(
            tree_map_with_path(
                lambda k, v: v.astype(cast) if mx.issubdtype(v.dtype, mx.floating) else v,
                model.parameters(),
            )
        )
        model, config = quantize_model(
            model, config, group_size, bits, mode=mode, quant_predicate=predicate
        )
        save_model(folder, model, donate_model=False)
        save_config(config, config_path=folder / "config.json")
    ref = dequantized(folder, torch.bfloat16)
    save_file(ref, str(case / "reference.safetensors"), metadata={"format": "pt"})
    if dtype == "float16":
        ref16 = dequantized(folder, torch.float16)
        save_file(ref16, str(case / "reference-f16.safetensors"), metadata={"format": "pt"})
    if name == "affine4_g64":
        save_file(logits_of(folder, ref), str(case / "logits.safetensors"))
    for f in case.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)
    size = sum(f.stat().st_size for f in case.rglob("*") if f.is_file())
    print(f"{name}: {size} bytes", file=sys.stderr)


def main() -> None:
    for seed, (name, case) in enumerate(CASES.items()):
        make(name, *case, seed=seed)


if __name__ == "__main__":
    main()
