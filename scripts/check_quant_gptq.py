#!/usr/bin/env python3
"""End-to-end check of the GPTQ and AWQ fixtures (not run in CI).

For every case of tests/data/quant/{gptq,awq}/ (scripts/make_quant_gptq.py):
mount its model/ with gyrofs, load MNT/bf16 with
`AutoModelForCausalLM.from_pretrained(..., dtype=torch.float32)` and check
that its logits for the stored input_ids equal the reference logits
(logits.safetensors: the model with the library's dequantized weights)
exactly.

    /opt/q-gptq/bin/python scripts/check_quant_gptq.py [path/to/gyrofs]
"""

import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GYROFS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "gyrofs")


def check(case_dir):
    want = load_file(os.path.join(case_dir, "logits.safetensors"))
    with tempfile.TemporaryDirectory() as mnt:
        subprocess.run([GYROFS, "mount", os.path.join(case_dir, "model"), mnt], check=True)
        try:
            model = AutoModelForCausalLM.from_pretrained(os.path.join(mnt, "bf16"),
                                                         dtype=torch.float32).eval()
            assert getattr(model.config, "quantization_config", None) is None
            with torch.no_grad():
                got = model(want["input_ids"]).logits.float()
            del model
        finally:
            subprocess.run(["umount", "-l", mnt], check=True)
    same = torch.equal(got, want["logits"])
    diff = (got - want["logits"]).abs().max().item()
    return same, diff


def main():
    torch.set_num_threads(1)
    failed = 0
    for family in ("gptq", "awq"):
        base = os.path.join(ROOT, "tests", "data", "quant", family)
        for case in sorted(os.listdir(base)):
            same, diff = check(os.path.join(base, case))
            failed += not same
            print(f"{family}/{case}: logits {'equal' if same else 'DIFFER'} (max |diff| {diff})")
    print(f"{'FAILED' if failed else 'ok'}: {failed} case(s) differ")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
