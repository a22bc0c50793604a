#!/usr/bin/env python3
"""Reference BF16 weights of the bundled sample, computed by transformers.

    /opt/pyref/bin/python scripts/make_bf16_golden.py     (needs torch + transformers)

Loads tests/data/gpt-oss-tiny (Hugging Face layout, MXFP4 experts) with
`AutoModelForCausalLM.from_pretrained(..., dtype=torch.bfloat16)` on CPU, where
transformers dequantizes MXFP4 itself (integrations/mxfp4.py), and writes the
resulting state dict to tests/data/golden/bf16-reference.safetensors. That file is
what `MNT/bf16` must equal bit for bit, for the Hugging Face layout and for the
original/ twin (tests/mount_bf16.rs). Versions used are stored in its metadata.
"""

import os

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SAMPLE = os.path.join(ROOT, "tests", "data", "gpt-oss-tiny")
OUT = os.path.join(ROOT, "tests", "data", "golden", "bf16-reference.safetensors")


def main():
    model = AutoModelForCausalLM.from_pretrained(SAMPLE, dtype=torch.bfloat16)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    meta = {"torch": torch.__version__, "transformers": transformers.__version__,
            "source": "tests/data/gpt-oss-tiny", "generator": "scripts/make_bf16_golden.py"}
    save_file(state, OUT, metadata=meta)
    print(f"wrote {len(state)} tensors to {OUT}")


if __name__ == "__main__":
    main()
