#!/usr/bin/env python3
"""What llama-quantize writes for the gguf/ view's fixtures: the reference of
gguf/model-Q4_K_M.gguf, model-Q5_K_M.gguf, model-Q6_K.gguf, model-Q4_0.gguf.

For each fixture NAME of tests/data/gguf-out/ (made by scripts/make_gguf_out.py),
the converter's BF16 file (KEEP/NAME-bf16.gguf, else converted here with
make_gguf_out.convert) is quantized with `llama_cpp.llama_model_quantize`
(llama-cpp-python 0.3.36's binding of llama-quantize: default parameters, no
importance matrix, one thread) to each type, and NAME.quant.json records, per
type: the key order with each key's GGUF type, general.file_type, and every
tensor's name, type, dims, offset in the data section and SHA-256 (every
other key's value is the BF16 file's, which NAME.expected.json holds; the
script checks that). A type llama-quantize refuses is recorded with its
error (gpt-oss's MXFP4 experts: it does not requantize without
--allow-requantize).

Run: KEEP=/tmp/keep /opt/pyref/bin/python scripts/make_gguf_quant.py [NAME ...]
With KEEP the quantized files are kept there too (NAME-Q4_K_M.gguf, ...), for
scripts/check_gguf_out.py.
"""

import ctypes
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_gguf_out as mk  # noqa: E402

import llama_cpp  # noqa: E402

MIXES = {"Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "Q4_0": 2}
NAMES = ["llama", "llama-f32", "llama-256", "mixtral", "gemma2", "gemma2-f16", "gemma3", "phi3",
         "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "gpt2", "gpt_oss"]


def quantize(src, dst, ftype):
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = 1
    return llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p))


def main():
    keep = os.environ.get("KEEP")
    names = sys.argv[1:] or NAMES
    llama_cpp.llama_backend_init()
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            bf16 = Path(keep or tmp) / f"{name}-bf16.gguf"
            if not bf16.exists():
                bf16.parent.mkdir(parents=True, exist_ok=True)
                mk.convert(mk.OUT / name, "bf16", bf16, None if name.startswith(("llama", "mixtral", "gemma", "phi3")) else
                           {"gpt2": "gpt-2", "gpt_oss": "gpt-4o"}.get(name, "qwen2"))
            base = {k: (t, v) for k, t, v in mk.describe(bf16)["kv"]}
            out = {"reference": "llama_cpp.llama_model_quantize, llama-cpp-python 0.3.36, default params, nthread 1",
                   "types": {}}
            for mix, ftype in MIXES.items():
                dst = Path(keep or tmp) / f"{name}-{mix}.gguf"
                rc = quantize(bf16, dst, ftype)
                if rc != 0:
                    out["types"][mix] = {"refused": rc}
                    continue
                got = mk.describe(dst)
                for k, t, v in got["kv"]:
                    if k == "general.file_type":
                        assert v == ftype, (name, mix, v)
                    else:
                        assert base[k] == (t, v), (name, mix, k)
                out["types"][mix] = {"keys": [[k, t] for k, t, _ in got["kv"]], "file_type": ftype,
                                     "tensors": got["tensors"]}
                print(name, mix, "ok", flush=True)
        text = json.dumps(out, separators=(",", ":"))
        (mk.OUT / f"{name}.quant.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
