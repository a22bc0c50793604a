#!/usr/bin/env python3
"""GPTQ and AWQ dequantization: the library on one CPU thread against
reading the same weights through a gyrofs mount (not run in CI).

1. Writes, in a temporary folder, one 8B-shaped (Llama-3-8B) layer's
   q_proj (4096 x 4096), gate_proj (14336 x 4096) and down_proj
   (4096 x 14336), 4-bit, groups of 128, as a GPTQ (v1, act-order g_idx)
   and as an AWQ GEMM checkpoint, with random codes.
2. Times the library's own CPU dequantization of those weights with
   `torch.set_num_threads(1)`: gptqmodel 7.7's `TorchLinear.dequantize_weight`
   (after `convert_gptq_v1_to_v2_format_module`, as it loads) and AutoAWQ's
   `dequantize_gemm` (gptqmodel's copy), best of 3.
3. Mounts each checkpoint afresh (`--threads 1`) and reads
   bf16/tensors/<weight>.safetensors of the same weights, cat-style (1 MiB
   reads, one after another), best of 3 fresh mounts; prints MB/s of BF16
   output and the ratio.
4. Reads the same file sizes as lossless raw/ bytes through a fresh mount
   (a plain BF16 checkpoint of the same shapes): the transport's ceiling.
5. Writes an 8B-shaped GPTQ checkpoint (32 layers, 7 quantized linear
   layers each, as a sparse file: only its header is data) and prints the
   time `gyrofs mount` takes to return, best of 5.

    /opt/q-gptq/bin/python scripts/bench_quant_gptq.py [path/to/gyrofs]

`BENCH_PRETOUCH_GB=N`: touch and free N GB of anonymous memory right before
each timed read (scripts/bench_quant_common.py); the output says which.
"""

import json
import os
import struct
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import save_file

from gptqmodel.nn_modules.qlinear.torch import TorchLinear
from gptqmodel.quantization.awq.utils.packing_utils import dequantize_gemm
from gptqmodel.utils.model import convert_gptq_v1_to_v2_format_module

from bench_quant_common import mode, pretouch, raw_ceiling

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GYROFS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "gyrofs")
SHAPES = {"model.layers.0.self_attn.q_proj": (4096, 4096),
          "model.layers.0.mlp.gate_proj": (14336, 4096),
          "model.layers.0.mlp.down_proj": (4096, 14336)}
GS = 128
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
          "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
          "num_hidden_layers": 32, "vocab_size": 128256, "torch_dtype": "float16"}


def words(shape, g):
    return torch.randint(-2**31, 2**31, shape, generator=g, dtype=torch.int64).to(torch.int32)


def gptq_parts(outf, inf, g):
    groups = inf // GS
    perm = torch.randperm(inf, generator=g)
    g_idx = torch.empty(inf, dtype=torch.int32)
    g_idx[perm] = (torch.arange(inf) // GS).to(torch.int32)
    return {"qweight": words((inf // 8, outf), g), "qzeros": words((groups, outf // 8), g),
            "scales": (torch.rand((groups, outf), generator=g) * 0.02 + 0.001).half(),
            "g_idx": g_idx}


def awq_parts(outf, inf, g):
    groups = inf // GS
    return {"qweight": words((inf, outf // 8), g), "qzeros": words((groups, outf // 8), g),
            "scales": (torch.rand((groups, outf), generator=g) * 0.02 + 0.001).half()}


def best(f, n=3):
    times = []
    for _ in range(n):
        pretouch()
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def library_gptq(layers):
    mods = []
    for (outf, inf), p in layers:
        m = TorchLinear(bits=4, group_size=GS, sym=False, desc_act=True, in_features=inf,
                        out_features=outf, bias=False)
        with torch.no_grad():
            for k, v in p.items():
                getattr(m, k).copy_(v)
            convert_gptq_v1_to_v2_format_module(m, 4, torch.int32)
            m.post_init()
        mods.append(m)

    def run():
        with torch.no_grad():
            for m in mods:
                m.dequantize_weight()
    return best(run)


def library_awq(layers):
    def run():
        with torch.no_grad():
            for _, p in layers:
                dequantize_gemm(p["qweight"], p["qzeros"], p["scales"], 4, GS)
    return best(run)


def write_checkpoint(folder, tensors, qc):
    os.makedirs(folder, exist_ok=True)
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({**CONFIG, "quantization_config": qc}, f)


def read_through_mount(src, names, mnt):
    def one():
        subprocess.run([GYROFS, "mount", "--threads", "1", src, mnt], check=True)
        try:
            pretouch()
            t0 = time.perf_counter()
            for n in names:
                with open(os.path.join(mnt, "bf16", "tensors", n + ".weight.safetensors"), "rb",
                          buffering=0) as f:
                    while f.read(1 << 20):
                        pass
            return time.perf_counter() - t0
        finally:
            subprocess.run([GYROFS, "umount", mnt], check=True)
    return min(one() for _ in range(3))


def sparse_8b(path):
    """An 8B-shaped GPTQ safetensors file: the header, then a hole."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    shapes = {"self_attn.q_proj": (4096, 4096), "self_attn.k_proj": (1024, 4096),
              "self_attn.v_proj": (1024, 4096), "self_attn.o_proj": (4096, 4096),
              "mlp.gate_proj": (14336, 4096), "mlp.up_proj": (14336, 4096),
              "mlp.down_proj": (4096, 14336)}

    def add(name, dtype, shape, width):
        nonlocal off
        n = width
        for s in shape:
            n *= s
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n

    add("model.embed_tokens.weight", "F16", (128256, 4096), 2)
    for layer in range(32):
        for m, (outf, inf) in shapes.items():
            p = f"model.layers.{layer}.{m}"
            add(p + ".qweight", "I32", (inf // 8, outf), 4)
            add(p + ".qzeros", "I32", (inf // GS, outf // 8), 4)
            add(p + ".scales", "F16", (inf // GS, outf), 2)
            add(p + ".g_idx", "I32", (inf,), 4)
        for n in ("input_layernorm", "post_attention_layernorm"):
            add(f"model.layers.{layer}.{n}.weight", "F16", (4096,), 2)
    add("model.norm.weight", "F16", (4096,), 2)
    add("lm_head.weight", "F16", (128256, 4096), 2)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + off)
    return len(header) - 1


def main():
    torch.set_num_threads(1)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    print(f"CPU: {cpu}; torch {torch.__version__}, 1 thread; gyrofs {GYROFS}")
    print(f"timed reads: {mode()}")
    g = torch.Generator().manual_seed(0)
    out_bytes = sum(o * i * 2 for o, i in SHAPES.values())
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        mnt = os.path.join(tmp, "mnt")
        os.makedirs(mnt)
        for fmt in ("gptq", "awq"):
            parts = gptq_parts if fmt == "gptq" else awq_parts
            layers = [(shape, parts(*shape, g)) for shape in SHAPES.values()]
            lib = library_gptq(layers) if fmt == "gptq" else library_awq(layers)
            tensors = {f"{n}.{k}": v for n, (_, p) in zip(SHAPES, layers) for k, v in p.items()}
            qc = ({"quant_method": "gptq", "bits": 4, "group_size": GS, "desc_act": True,
                   "sym": False, "checkpoint_format": "gptq"} if fmt == "gptq" else
                  {"quant_method": "awq", "bits": 4, "group_size": GS, "zero_point": True,
                   "version": "gemm"})
            src = os.path.join(tmp, fmt)
            write_checkpoint(src, tensors, qc)
            del layers, tensors
            mount = read_through_mount(src, list(SHAPES), mnt)
            print(f"{fmt}: {len(SHAPES)} weights, {out_bytes / 1e6:.0f} MB of BF16: "
                  f"library {lib:.3f} s ({out_bytes / lib / 1e6:.0f} MB/s), "
                  f"mount read {mount:.3f} s ({out_bytes / mount / 1e6:.0f} MB/s): "
                  f"{lib / mount:.1f}x")
        raw = raw_ceiling(GYROFS, {n + ".weight": s for n, s in SHAPES.items()}, tmp)
        print(f"raw/ ceiling: the same {out_bytes / 1e6:.0f} MB as lossless BF16 through a fresh "
              f"mount: {raw * 1e3:.0f} MB/s")
        sparse = os.path.join(tmp, "8b")
        os.makedirs(sparse)
        n = sparse_8b(os.path.join(sparse, "model.safetensors"))
        with open(os.path.join(sparse, "config.json"), "w") as f:
            json.dump({**CONFIG, "quantization_config": {
                "quant_method": "gptq", "bits": 4, "group_size": GS, "desc_act": True,
                "sym": False, "checkpoint_format": "gptq"}}, f)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([GYROFS, "mount", sparse, mnt], check=True)
            times.append(time.perf_counter() - t0)
            assert os.path.exists(os.path.join(mnt, "bf16", "config.json"))
            subprocess.run([GYROFS, "umount", mnt], check=True)
        print(f"mount of an 8B-shaped GPTQ checkpoint ({n} tensors, sparse): "
              f"{min(times) * 1000:.0f} ms (best of 5)")


if __name__ == "__main__":
    main()
