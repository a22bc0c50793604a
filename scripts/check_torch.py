#!/usr/bin/env python3
"""Load gyrofs's bf16/ view of PyTorch sources with transformers, unmodified.

For the fixtures of scripts/make_torch_models.py (run it first if
tests/data/torch-models/ is missing; needs torch + transformers):

- every nanoGPT training checkpoint with model_args or config: mount it,
  `GPT2LMHeadModel.from_pretrained(MNT/bf16, dtype=torch.bfloat16)`, and check
  that (1) its state dict is bit-identical to the same weights converted
  eagerly in torch (transpose, .to(bfloat16); expected-bf16-*.safetensors),
  (2) its logits are identical to a GPT2LMHeadModel built from those eager
  weights with the same config, and (3) in float32 it computes what nanoGPT's
  own model computes with the same (bf16-rounded) weights: this is what
  `activation_function: "gelu"` is for (HF's default gelu_new is further off);
- the Hugging Face pytorch_model.bin folders (single file and shards):
  `from_pretrained(dir)` of the .bin itself vs `from_pretrained(MNT/bf16)`,
  both in bfloat16: bit-identical weights and logits.

    /opt/pyref/bin/python scripts/check_torch.py [path/to/gyrofs]
"""

import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "torch-models"
GYROFS = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target" / "release" / "gyrofs"
sys.path.insert(0, str(ROOT / "scripts"))
from gyrofs_mount import mounted  # noqa: E402
from make_torch_models import GPT  # noqa: E402  (nanoGPT's model code)


def same_state(a, b, what):
    assert sorted(a) == sorted(b), f"{what}: names differ: {sorted(set(a) ^ set(b))}"
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, f"{what}: {k}"
        assert torch.equal(a[k].view(torch.int16), b[k].view(torch.int16)), f"{what}: {k} differs"


def state(model):
    sd = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        sd.pop("lm_head.weight", None)
    return {k: v for k, v in sd.items() if not k.endswith(".attn.bias") and not k.endswith(".attn.masked_bias")}


def check_nanogpt(name):
    ckpt = torch.load(DATA / f"{name}.pt", weights_only=True)
    args = ckpt.get("model_args") or ckpt["config"]
    expected = load_file(DATA / f"expected-bf16-{name}.safetensors")
    idx = torch.randint(0, 40, (3, 8), generator=torch.Generator().manual_seed(0))
    with mounted(GYROFS, DATA / f"{name}.pt") as mnt:
        model = transformers.GPT2LMHeadModel.from_pretrained(mnt / "bf16", dtype=torch.bfloat16)
        same_state(state(model), expected, name)
        eager = transformers.GPT2LMHeadModel(transformers.GPT2Config.from_pretrained(mnt / "bf16"))
        eager.load_state_dict(expected, strict=False)
        eager.tie_weights()
        eager = eager.to(torch.bfloat16)
        with torch.no_grad():
            a, b = model(idx).logits, eager(idx).logits
        assert torch.equal(a, b), f"{name}: logits differ from the eager conversion"
        # Same computation as nanoGPT's own model (float32, bf16-rounded weights).
        sd = {k.split("_orig_mod.")[-1].split("module.")[-1]: v for k, v in ckpt["model"].items()}
        nano = GPT(dict(args, vocab_size=sd["transformer.wte.weight"].shape[0]),
                   tied="lm_head.weight" not in expected, mask_buffer=any(k.endswith(".attn.bias") for k in sd))
        nano.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in sd.items()}, strict=False)
        with torch.no_grad():
            ours = model.float()(idx).logits
            theirs = nano(idx)
        diff = (ours - theirs).abs().max().item()
        assert diff < 1e-4, f"{name}: float32 logits differ from nanoGPT's by {diff}"
        print(f"{name}: {len(expected)} weights bit-identical, logits identical (bf16); "
              f"float32 vs nanoGPT's own model: max |diff| {diff:.2e}")


def check_hf(folder):
    idx = torch.randint(0, 48, (2, 12), generator=torch.Generator().manual_seed(1))
    ref = transformers.GPT2LMHeadModel.from_pretrained(DATA / folder, dtype=torch.bfloat16)
    with mounted(GYROFS, DATA / folder) as mnt:
        model = transformers.GPT2LMHeadModel.from_pretrained(mnt / "bf16", dtype=torch.bfloat16)
        same_state(state(model), state(ref), folder)
        with torch.no_grad():
            assert torch.equal(model(idx).logits, ref(idx).logits), f"{folder}: logits differ"
    print(f"{folder}: from_pretrained(MNT/bf16) == from_pretrained(pytorch_model*.bin), weights and logits")


def main():
    for name in ["nanogpt-compiled", "nanogpt-ddp-nobias", "nanogpt-untied"]:
        check_nanogpt(name)
    for folder in ["hf-gpt2-bin", "hf-gpt2-sharded"]:
        check_hf(folder)
    print("all good")


if __name__ == "__main__":
    main()
