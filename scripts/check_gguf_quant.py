#!/usr/bin/env python3
"""gyrofs's llama-quantize files are llama-quantize's, byte for byte, and llama.cpp
computes the same logits with them.

For each fixture of tests/data/gguf-out/ (scripts/make_gguf_out.py), mount it, quantize
the mounted `gguf/model-BF16.gguf` (the converter's BF16 file: tests/gguf_out.rs checks
that) with `llama_cpp.llama_model_quantize` (llama-cpp-python's binding of
llama-quantize: default parameters, no importance matrix) to Q4_K_M, Q5_K_M, Q6_K and
Q4_0, and compare with the mounted `gguf/model-<TYPE>.gguf`:
- the whole file, byte for byte (on a difference, scripts/compare_gguf.py says where);
- the logits of every position of a prompt, loaded with llama-cpp-python (mmap on),
  bit for bit.
A fixture llama-quantize refuses (gpt-oss: MXFP4 is not requantized) must have no such
files in the mount. Prints one line per file; exits 1 on any difference.

    /opt/pyref/bin/python scripts/check_gguf_quant.py [path/to/gyrofs [NAME ...]]
"""

import ctypes
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from check_gguf_out import load  # noqa: E402
from compare_gguf import compare  # noqa: E402
from gyrofs_mount import mounted  # noqa: E402

DATA = ROOT / "tests" / "data" / "gguf-out"
MIXES = {"Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "Q4_0": 2}
PROMPT = "The quick brown fox jumps over the lazy dog. Hello world!"


def quantize(src, dst, ftype):
    import llama_cpp
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    return llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p))


def logits(path):
    model = load(path)
    ids = model.tokenize(PROMPT.encode(), add_bos=True)
    model.reset()
    model.eval(ids)
    return np.array(model.scores[: len(ids)], dtype=np.float32)


def main():
    gyrofs = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target" / "release" / "gyrofs")
    names = sys.argv[2:] or sorted(p.name for p in DATA.iterdir() if p.is_dir())
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            with mounted(gyrofs, DATA / name) as mnt:
                bf16 = mnt / "gguf" / "model-BF16.gguf"
                for mix, ftype in MIXES.items():
                    ours = mnt / "gguf" / f"model-{mix}.gguf"
                    ref = Path(tmp) / f"{name}-{mix}.gguf"
                    if quantize(bf16, ref, ftype) != 0:
                        ok = not ours.exists()
                        print(f"{name} {mix}: llama-quantize refuses; "
                              f"{'not offered either' if ok else 'DIFFERENT: the mount offers it'}", flush=True)
                        bad += not ok
                        continue
                    problems = []
                    if ref.read_bytes() != ours.read_bytes():
                        problems, _ = compare(str(ref), str(ours))
                        problems = ["bytes differ"] + problems[:10]
                    a, b = logits(ref), logits(ours)
                    if a.shape != b.shape or not np.array_equal(a.view(np.uint32), b.view(np.uint32)):
                        problems.append(f"logits differ (max |d| {np.abs(a - b).max()})")
                    status = "same bytes, same logits" if not problems else "DIFFERENT: " + "; ".join(problems)
                    print(f"{name} {mix}: {status} ({b.shape[0]} positions)", flush=True)
                    bad += bool(problems)
    print("all good" if not bad else f"{bad} differences")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
