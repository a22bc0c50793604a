#!/usr/bin/env python3
"""Tiny PyTorch *models* for gyrofs's PyTorch source tests, with references.

Writes tests/data/torch-models/ (run with /opt/pyref/bin/python: torch,
transformers, safetensors; deterministic):

- nanoGPT training checkpoints made by nanoGPT's own model code (copied below
  from karpathy/nanoGPT model.py, unchanged in what it computes) and saved the
  way its train.py saves them (`{"model", "optimizer", "model_args",
  "iter_num", "best_val_loss", "config"}`):
    nanogpt-compiled.pt   torch.compile's `_orig_mod.` prefix, bias=True, tied lm_head
    nanogpt-ddp-nobias.pt DDP's `module.` prefix, bias=False, causal-mask buffers
                          `attn.bias` (nanoGPT's non-flash path), tied
    nanogpt-untied.pt     no prefix, lm_head not tied, only the training `config`
    nanogpt-noargs.pt     no model_args and no config: not mappable
  and for each mappable one `expected-bf16-<name>.safetensors`: the Hugging Face
  GPT2LMHeadModel state dict converted eagerly in torch (Conv1D weights
  transposed, `.to(torch.bfloat16)`, zero biases where the model has none,
  lm_head left out when tied) -- what `MNT/bf16` must hold, bit for bit;
- Hugging Face `pytorch_model.bin` folders of a tiny GPT2LMHeadModel saved
  by transformers' own `save_pretrained(safe_serialization=False)`:
    hf-gpt2-bin/       pytorch_model.bin + config.json
    hf-gpt2-sharded/   pytorch_model-0000i-of-0000n.bin + pytorch_model.bin.index.json + config.json
  and `expected-hf-gpt2.safetensors`: `torch.load(weights_only=True)` of the
  single file (every tensor, contiguous).

scripts/check_torch.py loads the mounted views with transformers and compares
logits with the same models computed eagerly.
"""

import json
import math
import shutil
import sys
from pathlib import Path

import safetensors
import safetensors.torch
import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "torch-models"


# ---- nanoGPT model.py (the parts that define the weights and the forward pass) ----


class LayerNorm(nn.Module):
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, mask_buffer):
        super().__init__()
        self.c_attn = nn.Linear(config["n_embd"], 3 * config["n_embd"], bias=config["bias"])
        self.c_proj = nn.Linear(config["n_embd"], config["n_embd"], bias=config["bias"])
        self.n_head = config["n_head"]
        self.n_embd = config["n_embd"]
        if mask_buffer:  # nanoGPT registers it when flash attention is unavailable
            t = config["block_size"]
            self.register_buffer("bias", torch.tril(torch.ones(t, t)).view(1, 1, t, t))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        att = att.masked_fill(~mask, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config["n_embd"], 4 * config["n_embd"], bias=config["bias"])
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config["n_embd"], config["n_embd"], bias=config["bias"])

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config, mask_buffer):
        super().__init__()
        self.ln_1 = LayerNorm(config["n_embd"], bias=config["bias"])
        self.attn = CausalSelfAttention(config, mask_buffer)
        self.ln_2 = LayerNorm(config["n_embd"], bias=config["bias"])
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config, tied=True, mask_buffer=False):
        super().__init__()
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config["vocab_size"], config["n_embd"]),
                wpe=nn.Embedding(config["block_size"], config["n_embd"]),
                h=nn.ModuleList([Block(config, mask_buffer) for _ in range(config["n_layer"])]),
                ln_f=LayerNorm(config["n_embd"], bias=config["bias"]),
            )
        )
        self.lm_head = nn.Linear(config["n_embd"], config["vocab_size"], bias=False)
        if tied:
            self.transformer.wte.weight = self.lm_head.weight

    def forward(self, idx):
        pos = torch.arange(0, idx.size(1), dtype=torch.long)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


class Wrapped(nn.Module):
    """What torch.compile (`_orig_mod`) or DDP (`module`) look like to state_dict()."""

    def __init__(self, attr, m):
        super().__init__()
        setattr(self, attr, m)


ARGS = dict(n_layer=2, n_head=2, n_embd=16, block_size=8, bias=True, vocab_size=40, dropout=0.0)
TRAIN_CONFIG = {"out_dir": "out", "eval_interval": 2000, "learning_rate": 6e-4, "dtype": "bfloat16", "compile": True}
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def trained(args, tied, mask_buffer, seed, adam):
    torch.manual_seed(seed)
    model = GPT(args, tied=tied, mask_buffer=mask_buffer)
    # Randomise the LayerNorms too, so a lost or zeroed tensor shows.
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    if adam:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    else:  # smaller fixtures: one state tensor per parameter
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    idx = torch.randint(0, args["vocab_size"], (2, args["block_size"]))
    model(idx).square().mean().backward()
    opt.step()
    return model, opt


def hf_state_dict(model, args, tied):
    """The GPT2LMHeadModel state dict, converted eagerly (what MNT/bf16 holds)."""
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith(".attn.bias"):
            continue  # the causal-mask buffer
        if k == "lm_head.weight" and tied:
            continue
        if any(k.endswith(c) for c in CONV1D):
            v = v.t()
        sd[k] = v.contiguous().to(torch.bfloat16)
    if not args["bias"]:
        n = args["n_embd"]
        for l in range(args["n_layer"]):
            p = f"transformer.h.{l}."
            for name, size in [("ln_1.bias", n), ("attn.c_attn.bias", 3 * n), ("attn.c_proj.bias", n),
                               ("ln_2.bias", n), ("mlp.c_fc.bias", 4 * n), ("mlp.c_proj.bias", n)]:
                sd[p + name] = torch.zeros(size, dtype=torch.bfloat16)
        sd["transformer.ln_f.bias"] = torch.zeros(n, dtype=torch.bfloat16)
    return sd


def nanogpt(name, wrap, args, tied, mask_buffer, keys, seed, adam=False):
    model, opt = trained(args, tied, mask_buffer, seed, adam)
    sd = (Wrapped(wrap, model) if wrap else model).state_dict()
    ckpt = {"model": sd, "optimizer": opt.state_dict(), "iter_num": 2000, "best_val_loss": torch.tensor(3.25)}
    if "model_args" in keys:
        ckpt["model_args"] = dict(args)
    if "config" in keys:
        ckpt["config"] = dict(TRAIN_CONFIG, **{k: args[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "bias", "dropout")})
    torch.save(ckpt, OUT / f"{name}.pt")
    if keys:
        safetensors.torch.save_file(hf_state_dict(model, args, tied), OUT / f"expected-bf16-{name}.safetensors")


def hf_gpt2():
    """A GPT2LMHeadModel as transformers (before v5) saved it without
    safetensors: `torch.save(state_dict)` as pytorch_model.bin, or shards with
    an index (transformers 5 writes only safetensors, so the split is done
    here the way `save_pretrained(safe_serialization=False)` did it)."""
    torch.manual_seed(7)
    cfg = transformers.GPT2Config(vocab_size=48, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    model = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    for d in ["hf-gpt2-bin", "hf-gpt2-sharded"]:
        shutil.rmtree(OUT / d, ignore_errors=True)
        (OUT / d).mkdir()
        cfg.to_json_file(OUT / d / "config.json")
    sd = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
    torch.save(sd, OUT / "hf-gpt2-bin" / "pytorch_model.bin")
    names = list(sd)
    half = len(names) // 2
    shards = [names[:half], names[half:]]
    weight_map, total = {}, 0
    for i, part in enumerate(shards):
        fname = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        torch.save({k: sd[k] for k in part}, OUT / "hf-gpt2-sharded" / fname)
        for k in part:
            weight_map[k] = fname
            total += sd[k].numel() * sd[k].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (OUT / "hf-gpt2-sharded" / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2) + "\n")
    sd = torch.load(OUT / "hf-gpt2-bin" / "pytorch_model.bin", weights_only=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, OUT / "expected-hf-gpt2.safetensors")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for f in list(OUT.glob("*.pt")) + list(OUT.glob("expected-*")):
        f.unlink()
    nanogpt("nanogpt-compiled", "_orig_mod", ARGS, tied=True, mask_buffer=False, keys=("model_args", "config"), seed=1, adam=True)
    nanogpt("nanogpt-ddp-nobias", "module", dict(ARGS, bias=False), tied=True, mask_buffer=True, keys=("model_args",), seed=2)
    nanogpt("nanogpt-untied", None, ARGS, tied=False, mask_buffer=False, keys=("config",), seed=3)
    nanogpt("nanogpt-noargs", None, ARGS, tied=True, mask_buffer=False, keys=(), seed=4)
    hf_gpt2()
    (OUT / "SOURCE.json").write_text(
        json.dumps(
            {
                "generator": "scripts/make_torch_models.py",
                "python": sys.version.split()[0],
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "safetensors": safetensors.__version__,
            },
            indent=1,
            sort_keys=True,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
