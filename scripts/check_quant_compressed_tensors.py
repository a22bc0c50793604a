#!/usr/bin/env python3
"""End-to-end check of compressed-tensors sources (not part of `cargo test`:
needs torch and transformers; run with the reference venv):

    /opt/q-ct/bin/python scripts/check_quant_compressed_tensors.py [CASE...]

For each fixture under tests/data/quant/compressed_tensors/ and
tests/data/quant/modelopt/ (made by make_quant_compressed_tensors.py and
make_quant_modelopt.py; CASE is e.g. `modelopt/nvfp4`), mounts CASE/model with gyrofs (the debug
build, target/debug/gyrofs), loads MNT/bf16 with
`AutoModelForCausalLM.from_pretrained(..., dtype=torch.bfloat16)` and checks
that its logits for the fixed input ids equal the reference model's
(`logits.safetensors`: the library's dequantized weights in the same
architecture), bit for bit. Exits non-zero on any difference.
"""

import os
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gyrofs_mount import mounted  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GYROFS = os.path.join(ROOT, "target", "debug", "gyrofs")
QUANT = os.path.join(ROOT, "tests", "data", "quant")
FAMILIES = ["compressed_tensors", "modelopt"]


def main():
    cases = sys.argv[1:] or [f"{f}/{c}" for f in FAMILIES
                             for c in sorted(os.listdir(os.path.join(QUANT, f)))]
    ok = True
    for case in cases:
        ref = load_file(os.path.join(QUANT, case, "logits.safetensors"))
        with mounted(GYROFS, os.path.join(QUANT, case, "model")) as mnt:
            model = AutoModelForCausalLM.from_pretrained(os.path.join(mnt, "bf16"),
                                                         dtype=torch.bfloat16)
            model.eval()
            with torch.no_grad():
                got = model(ref["input_ids"]).logits.float()
        same = torch.equal(got, ref["logits"])
        print(f"{case}: logits of from_pretrained(MNT/bf16) identical to the reference: {same}"
              + ("" if same else f" (max abs diff {(got - ref['logits']).abs().max().item()})"))
        ok = ok and same
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
