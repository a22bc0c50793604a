#!/usr/bin/env python3
"""llama.cpp loads gyrofs's gguf/ files exactly as it loads the converter's own.

For each fixture of tests/data/gguf-out/ (scripts/make_gguf_out.py), mount it, and
for every output type load `MNT/gguf/model-T.gguf` with llama-cpp-python (mmap on, the
default) next to the converter's file for the same folder, and compare:
- the tokenization of test strings (with and without special tokens) and detokenization;
- the logits of every position of a prompt (bit for bit);
- the converter's file and the mounted one, key by key and tensor by tensor
  (scripts/compare_gguf.py; authorship keys apart).
Prints one line per file; exits 1 on any difference.

    /opt/pyref/bin/python scripts/check_gguf_out.py [path/to/gyrofs [NAME ...]]

Needs llama-cpp-python (pip install llama-cpp-python==0.3.36; it compiles llama.cpp,
~15 min on 2 cores), gguf, numpy, and the converter's files: made again into a
temporary folder with scripts/make_gguf_out.py's converter (LLAMA_CPP), or taken from
REFERENCE_DIR (files NAME-T.gguf, as `KEEP=DIR scripts/make_gguf_out.py` leaves them).
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from compare_gguf import compare  # noqa: E402
from gyrofs_mount import mounted  # noqa: E402

DATA = ROOT / "tests" / "data" / "gguf-out"
TYPES = [("f32", "F32"), ("f16", "F16"), ("bf16", "BF16"), ("q8_0", "Q8_0")]
TEXTS = ["Hello world", " Hello  world ", "The quick brown fox jumps over the lazy dog.", "12345 3.14 x=42",
         "Ça va très bien, merci! café", "日本語 中文 Русский 🙂", "line one\nline two\n\n\ttabbed  spaced",
         "It's you're they'll", "   leading spaces", ""]
PROMPT = "The quick brown fox jumps over the lazy dog. Hello world!"


def load(path):
    import llama_cpp
    kw = dict(model_path=str(path), n_ctx=128, logits_all=True, verbose=False, seed=0, n_threads=1)
    try:
        return llama_cpp.Llama(use_extra_bufts=False, **kw)
    except TypeError:
        return llama_cpp.Llama(**kw)


def run(model):
    toks = [(model.tokenize(t.encode(), add_bos=b, special=s), ) for t in TEXTS for b in (False, True)
            for s in (False, True)]
    detok = [model.detokenize(model.tokenize(t.encode(), add_bos=False)) for t in TEXTS]
    ids = model.tokenize(PROMPT.encode(), add_bos=True)
    model.reset()
    model.eval(ids)
    logits = np.array(model.scores[: len(ids)], dtype=np.float32)
    return toks, detok, logits


def reference(name, t, tmp):
    ref_dir = os.environ.get("REFERENCE_DIR")
    if ref_dir:
        return Path(ref_dir) / f"{name}-{t}.gguf"
    out = Path(tmp) / f"{name}-{t}.gguf"
    if not out.exists():
        env = dict(os.environ, GGUF_OUT_DIR=str(Path(tmp) / "fixtures"), KEEP=tmp)
        subprocess.run([sys.executable, str(HERE / "make_gguf_out.py"), name], check=True, env=env,
                       capture_output=True)
    return out


def main():
    gyrofs = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target" / "release" / "gyrofs")
    names = sys.argv[2:] or sorted(p.name for p in DATA.iterdir() if p.is_dir())
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            with mounted(gyrofs, DATA / name) as mnt:
                if not (mnt / "gguf").is_dir():
                    print(f"{name}: no gguf/ folder (manifest notes: see gyrofs ls --json)")
                    bad += 1
                    continue
                for t, file in TYPES:
                    ours = mnt / "gguf" / f"model-{file}.gguf"
                    ref = reference(name, t, tmp)
                    problems, _ = compare(str(ref), str(ours))
                    a, b = run(load(ref)), run(load(ours))
                    if a[0] != b[0] or a[1] != b[1]:
                        problems.append("tokenization differs")
                    if a[2].shape != b[2].shape or not np.array_equal(a[2].view(np.uint32), b[2].view(np.uint32)):
                        problems.append(f"logits differ (max |d| {np.abs(a[2] - b[2]).max()})")
                    status = "same" if not problems else "DIFFERENT: " + "; ".join(problems)
                    print(f"{name} {file}: {status} ({b[2].shape[0]} positions, {b[2].shape[1]} logits)", flush=True)
                    bad += bool(problems)
    print("all good" if not bad else f"{bad} differences")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
