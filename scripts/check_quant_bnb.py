#!/usr/bin/env python3
"""End-to-end check of the bitsandbytes fixtures (not run in CI): mount each
tests/data/quant/bnb/<case>, load MNT/bf16 with transformers
(`AutoModelForCausalLM.from_pretrained`, BF16) and compare its logits for
golden/logits.safetensors' `input_ids` with the reference model's (the
library's dequantized weights, scripts/make_quant_bnb.py), bit for bit.

Run (debug build, as root, with the venv of make_quant_bnb.py):
    cargo build && /opt/q-bnb/bin/python scripts/check_quant_bnb.py [CASE ...]
"""

import os
import subprocess
import sys
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
DATA = os.path.join(ROOT, "tests", "data", "quant", "bnb")
GYROFS = os.environ.get("GYROFS", os.path.join(ROOT, "target", "debug", "gyrofs"))


def check(case):
    src = os.path.join(DATA, case)
    want = load_file(os.path.join(src, "golden", "logits.safetensors"))
    with tempfile.TemporaryDirectory() as tmp:
        mnt = os.path.join(tmp, "mnt")
        os.mkdir(mnt)
        subprocess.run([GYROFS, "mount", src, mnt], check=True, timeout=60)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                os.path.join(mnt, "bf16"), dtype=torch.bfloat16
            ).eval()
            assert getattr(model.config, "quantization_config", None) is None
            with torch.no_grad():
                got = model(want["input_ids"]).logits.float()
            del model
        finally:
            subprocess.run(["umount", mnt], check=False, timeout=60)
    same = torch.equal(got, want["logits"])
    diff = (got - want["logits"]).abs().max().item()
    print(f"{case}: logits {'equal' if same else 'DIFFER'} (max |diff| {diff:g})")
    return same


def main():
    cases = sys.argv[1:] or sorted(
        d for d in os.listdir(DATA) if os.path.isdir(os.path.join(DATA, d))
    )
    ok = all([check(c) for c in cases])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
