#!/usr/bin/env python3
"""bitsandbytes dequantization: the library's own CPU dequantization on one
thread against reading the same weights through a gyrofs mount, and the
mount time of an 8B-shaped bitsandbytes checkpoint (not run in CI).

1. One 8B-shaped layer (Llama-3-8B: q/o 4096x4096, k/v 1024x4096,
   gate/up 14336x4096, down 4096x14336), quantized by the library
   (`bitsandbytes.functional.quantize_4bit`, NF4, blocksize 64, nested, BF16;
   and LLM.int8() `int8_vectorwise_quant`) and written as transformers
   serializes them, in /tmp. Library: `dequantize_4bit(weight, quant_state)`
   (and `int8_vectorwise_dequant(...).to(bfloat16)`, transformers'
   `dequantize`), `torch.set_num_threads(1)`, OMP_NUM_THREADS=1, best of 3.
   gyrofs: a fresh mount per round (`--threads 1`), every
   bf16/tensors/<weight>.safetensors read once with 1 MiB reads (the source
   is in the page cache; the BF16 bytes are computed on read), best of 3.
2. Mount time: a 32-layer 8B-shaped NF4 nested checkpoint as a sparse file
   (only the header and the quant_state JSON tensors written), `gyrofs mount`
   until it answers, best of 5.

Run (as root, after `cargo build`):
    /opt/q-bnb/bin/python scripts/bench_quant_bnb.py [path/to/gyrofs]
(or GYROFS=path/to/gyrofs). `BENCH_PRETOUCH_GB=N`: touch and free N GB of
anonymous memory right before each timed read
(scripts/bench_quant_common.py); the output says which. The same file sizes
are also read as lossless raw/ bytes through a fresh mount (a plain BF16
checkpoint of the same shapes): the transport's ceiling.
Versions: see scripts/make_quant_bnb.py.
"""

import json
import os
import shutil
import struct
import subprocess
import tempfile
import sys
import time

os.environ["OMP_NUM_THREADS"] = "1"

from bench_quant_common import mode, pretouch, raw_ceiling  # noqa: E402

import bitsandbytes.functional as F  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.set_num_threads(1)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GYROFS = (sys.argv[1] if len(sys.argv) > 1 else
          os.environ.get("GYROFS", os.path.join(ROOT, "target", "debug", "gyrofs")))
H, I, KV = 4096, 14336, 1024
LAYER = {
    "self_attn.q_proj": (H, H),
    "self_attn.k_proj": (KV, H),
    "self_attn.v_proj": (KV, H),
    "self_attn.o_proj": (H, H),
    "mlp.gate_proj": (I, H),
    "mlp.up_proj": (I, H),
    "mlp.down_proj": (H, I),
}
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": H,
    "intermediate_size": I,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "rms_norm_eps": 1e-5,
    "torch_dtype": "bfloat16",
}


def qconfig(bits):
    return {
        "quant_method": "bitsandbytes",
        "load_in_4bit": bits == 4,
        "load_in_8bit": bits == 8,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_quant_storage": "uint8",
        "llm_int8_skip_modules": None,
    }


def write_layer(dirpath, bits):
    """One layer's quantized weights; returns {name: (library dequantizer)}."""
    torch.manual_seed(0)
    tensors, deq = {}, {}
    for mod, shape in LAYER.items():
        name = f"model.layers.0.{mod}"
        w = (torch.randn(shape) * 0.02).to(torch.bfloat16)
        if bits == 4:
            q, st = F.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
            tensors[name + ".weight"] = q
            for k, v in st.as_dict(packed=True).items():
                tensors[f"{name}.weight.{k}"] = v
            deq[name + ".weight"] = (lambda q=q, st=st: F.dequantize_4bit(q, st))
        else:
            cb, scb, _ = F.int8_vectorwise_quant(w.half())
            tensors[name + ".weight"] = cb
            tensors[name + ".SCB"] = scb
            tensors[name + ".weight_format"] = torch.tensor(0, dtype=torch.uint8)
            deq[name + ".weight"] = (
                lambda cb=cb, scb=scb: F.int8_vectorwise_dequant(cb, scb).to(torch.bfloat16)
            )
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(dirpath, "model.safetensors"))
    cfg = dict(CONFIG, num_hidden_layers=1, quantization_config=qconfig(bits))
    json.dump(cfg, open(os.path.join(dirpath, "config.json"), "w"))
    return deq


def mount(src, mnt, *extra):
    t = time.perf_counter()
    subprocess.run([GYROFS, "mount", src, mnt, *extra], check=True, timeout=120)
    return time.perf_counter() - t


def umount(mnt):
    subprocess.run(["umount", mnt], check=True, timeout=120)


def read_all(path):
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return n
            n += len(b)


def bench_layer(tmp, bits):
    src = os.path.join(tmp, f"layer{bits}")
    os.makedirs(src)
    deq = write_layer(src, bits)
    read_all(os.path.join(src, "model.safetensors"))  # page cache
    lib = []
    for _ in range(3):
        pretouch()
        t = time.perf_counter()
        for f in deq.values():
            f()
        lib.append(time.perf_counter() - t)
    out_bytes = sum(2 * r * c for r, c in LAYER.values())
    mnt = os.path.join(tmp, "mnt")
    os.makedirs(mnt, exist_ok=True)
    ours = []
    for _ in range(3):
        mount(src, mnt, "--threads", "1")
        try:
            pretouch()
            t = time.perf_counter()
            for name in deq:
                read_all(os.path.join(mnt, "bf16", "tensors", name + ".safetensors"))
            ours.append(time.perf_counter() - t)
        finally:
            umount(mnt)
    what = "NF4 nested, blocksize 64" if bits == 4 else "LLM.int8()"
    gl, go = out_bytes / min(lib) / 1e9, out_bytes / min(ours) / 1e9
    print(
        f"{what}: one 8B layer ({out_bytes / 1e6:.0f} MB of BF16): library {min(lib):.3f} s "
        f"({gl:.2f} GB/s), gyrofs mount read {min(ours):.3f} s ({go:.2f} GB/s): "
        f"{min(lib) / min(ours):.1f}x"
    )
    shutil.rmtree(src)


def sparse_checkpoint(path, layers=32):
    """An 8B-shaped NF4 nested checkpoint: the header and quant_state JSON
    tensors written, everything else a hole."""
    header, data, off = {"__metadata__": {"format": "pt"}}, [], 0

    def add(name, dtype, shape, nbytes, payload=None):
        nonlocal off
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + nbytes]}
        if payload is not None:
            data.append((off, payload))
        off += nbytes

    add("model.embed_tokens.weight", "BF16", [128256, H], 128256 * H * 2)
    for layer in range(layers):
        p = f"model.layers.{layer}"
        for mod, (r, c) in LAYER.items():
            n = r * c
            blocks = n // 64
            w = f"{p}.{mod}.weight"
            st = json.dumps(
                {
                    "quant_type": "nf4",
                    "blocksize": 64,
                    "dtype": "bfloat16",
                    "shape": [r, c],
                    "nested_blocksize": 256,
                    "nested_dtype": "float32",
                    "nested_offset": 0.05,
                }
            ).encode()
            add(w, "U8", [n // 2, 1], n // 2)
            add(w + ".absmax", "U8", [blocks], blocks)
            add(w + ".quant_map", "F32", [16], 64)
            add(w + ".nested_absmax", "F32", [blocks // 256], blocks // 256 * 4)
            add(w + ".nested_quant_map", "F32", [256], 1024)
            add(w + ".quant_state.bitsandbytes__nf4", "U8", [len(st)], len(st), st)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            add(f"{p}.{norm}.weight", "BF16", [H], H * 2)
    add("model.norm.weight", "BF16", [H], H * 2)
    add("lm_head.weight", "BF16", [128256, H], 128256 * H * 2)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        base = 8 + len(text)
        for o, payload in data:
            f.seek(base + o)
            f.write(payload)
        f.truncate(base + off)
    return len(header) - 1


def bench_mount(tmp):
    src = os.path.join(tmp, "sparse8b")
    os.makedirs(src)
    n = sparse_checkpoint(os.path.join(src, "model.safetensors"))
    json.dump(
        dict(CONFIG, num_hidden_layers=32, quantization_config=qconfig(4)),
        open(os.path.join(src, "config.json"), "w"),
    )
    mnt = os.path.join(tmp, "mnt8b")
    os.makedirs(mnt)
    times = []
    for _ in range(5):
        times.append(mount(src, mnt))
        assert os.path.exists(os.path.join(mnt, "bf16", "config.json")), "bf16/ is missing"
        umount(mnt)
    print(f"mount of an 8B-shaped NF4 nested checkpoint ({n} tensors, sparse): best {min(times) * 1e3:.0f} ms")
    shutil.rmtree(src)


def main():
    print(f"timed reads: {mode()}")
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        bench_layer(tmp, 4)
        bench_layer(tmp, 8)
        shapes = {f"model.layers.0.{m}.weight": shape for m, shape in LAYER.items()}
        raw = raw_ceiling(GYROFS, shapes, tmp)
        print(f"raw/ ceiling (the same bytes as lossless BF16, fresh mount): {raw:.2f} GB/s")
        bench_mount(tmp)


if __name__ == "__main__":
    main()
