#!/usr/bin/env python3
"""End-to-end check with transformers (not part of `cargo test`: needs torch).

    /opt/pyref/bin/python scripts/check_transformers.py [SAMPLE]

Mounts SAMPLE (default tests/data/gpt-oss-tiny) and its original/ twin with
gyrofs (`--dtype bf16,f16,f32`), loads `MNT/bf16`, `MNT/f16` and `MNT/f32` of
both with `AutoModelForCausalLM.from_pretrained(..., dtype=...)` in their
dtype, and checks that every weight and the logits on a fixed prompt are
bit-identical to loading the MXFP4 checkpoint itself with transformers in that
dtype (which dequantizes on CPU). Exits non-zero on any difference.
"""

import gc
import os
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gyrofs_mount import mounted  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GYROFS = os.path.join(ROOT, "target", "release", "gyrofs")


def bits(t):
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int16)


def main():
    sample = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data", "gpt-oss-tiny")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    ok = True
    for view, dtype in [("bf16", torch.bfloat16), ("f16", torch.float16), ("f32", torch.float32)]:
        ref = AutoModelForCausalLM.from_pretrained(sample, dtype=dtype)
        x = torch.arange(1, 17).reshape(1, -1) % ref.config.vocab_size
        want = ref(x).logits
        for src in (sample, os.path.join(sample, "original")):
            with mounted(GYROFS, src, "--dtype", "bf16,f16,f32") as mnt:
                got = AutoModelForCausalLM.from_pretrained(os.path.join(mnt, view), dtype=dtype)
                a, b = ref.state_dict(), got.state_dict()
                bad = [k for k in a if k not in b or not torch.equal(bits(a[k]), bits(b[k]))]
                same_logits = torch.equal(want, got(x).logits)
                print(f"{src} {view}: {len(a) - len(bad)}/{len(a)} weights bit-identical, "
                      f"logits identical: {same_logits}")
                ok = ok and not bad and same_logits
                del got, a, b
                gc.collect()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
