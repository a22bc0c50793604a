#!/usr/bin/env python3
"""Throughput of compressed-tensors INT4 (pack-quantized, symmetric, groups
of 128, BF16 scales: llm-compressor's W4A16) dequantization: the library's
own CPU decompression on one thread against reading the same weights through
a fresh gyrofs mount, and the mount time of an 8B-shaped checkpoint.

    /opt/q-ct/bin/python scripts/bench_quant_compressed_tensors.py [GYROFS]

GYROFS defaults to target/debug/gyrofs (the debug profile builds gyrofs at
opt-level 1; a release build is faster). Writes its checkpoints in a
temporary folder under /tmp and removes them.
`BENCH_PRETOUCH_GB=N`: touch and free N GB of anonymous memory right before
each timed read (scripts/bench_quant_common.py); the output says which.

1. One 8B-shaped layer's weights (Llama-3-8B: q/o 4096x4096, k/v 1024x4096,
   gate/up 14336x4096, down 4096x14336), random codes packed by
   compressed-tensors' own `pack_to_int32`, random BF16 scales. Library:
   `PackedQuantizationCompressor.decompress` per weight with
   `torch.set_num_threads(1)` (best of 3). Mount: each weight's
   `bf16/tensors/<name>.safetensors` read whole with 16 MiB reads, after a
   fresh mount (`--threads 1`, so nothing is in the page cache), best of 3
   mounts. Then the same file sizes as lossless raw/ bytes through a fresh
   mount (a plain BF16 checkpoint of the same shapes): the transport's
   ceiling.
2. Mount time of a 32-layer 8B-shaped checkpoint (224 quantized weights,
   sparse: only the headers and `weight_shape` values are written): the
   time `gyrofs mount` takes to return, best of 5.
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

from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_quant_common import mode, pretouch, raw_ceiling  # noqa: E402
from gyrofs_mount import mounted  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GROUP = 128
LAYER = {
    "self_attn.q_proj": (4096, 4096),
    "self_attn.k_proj": (1024, 4096),
    "self_attn.v_proj": (1024, 4096),
    "self_attn.o_proj": (4096, 4096),
    "mlp.gate_proj": (14336, 4096),
    "mlp.up_proj": (14336, 4096),
    "mlp.down_proj": (4096, 14336),
}
WEIGHTS = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group",
                           group_size=GROUP)
SCHEME = QuantizationScheme(targets=["Linear"], weights=WEIGHTS, format="pack-quantized")


def config(layers):
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": layers, "num_attention_heads": 32,
        "num_key_value_heads": 8, "vocab_size": 128256, "torch_dtype": "bfloat16",
        "quantization_config": {
            "quant_method": "compressed-tensors", "format": "pack-quantized",
            "quantization_status": "compressed", "ignore": ["lm_head"],
            "config_groups": {"group_0": {"targets": ["Linear"], "format": "pack-quantized",
                                          "weights": WEIGHTS.model_dump(mode="json")}},
        },
    }


def one_layer(folder):
    g = torch.Generator().manual_seed(0)
    state, parts = {}, {}
    for m, (rows, cols) in LAYER.items():
        name = f"model.layers.0.{m}"
        q = torch.randint(-8, 8, (rows, cols), generator=g, dtype=torch.int8)
        scale = (torch.rand((rows, cols // GROUP), generator=g) * 0.01 + 0.001).to(torch.bfloat16)
        p = {"weight_packed": pack_to_int32(q, 4), "weight_scale": scale,
             "weight_shape": torch.tensor([rows, cols])}
        parts[name] = p
        state.update({f"{name}.{k}": v for k, v in p.items()})
    save_file(state, os.path.join(folder, "model.safetensors"))
    json.dump(config(1), open(os.path.join(folder, "config.json"), "w"))
    return parts


def library_seconds(parts):
    torch.set_num_threads(1)
    best = float("inf")
    for _ in range(3):
        pretouch()
        t0 = time.perf_counter()
        for p in parts.values():
            w = PackedQuantizationCompressor.decompress(dict(p), SCHEME)["weight"]
            assert w.dtype == torch.bfloat16
        best = min(best, time.perf_counter() - t0)
    return best


def mount_seconds(gyrofs, folder, names):
    best = float("inf")
    for _ in range(3):
        with mounted(gyrofs, folder, "--threads", "1") as mnt:
            pretouch()
            t0 = time.perf_counter()
            n = 0
            for name in names:
                with open(os.path.join(mnt, "bf16", "tensors", f"{name}.weight.safetensors"),
                          "rb", buffering=0) as f:
                    while True:
                        b = f.read(16 << 20)
                        if not b:
                            break
                        n += len(b)
            best = min(best, time.perf_counter() - t0)
    return best, n


def sparse_8b(path, layers=32):
    """An 8B-shaped checkpoint whose tensor data are holes, but for the
    weight_shape values that recognition reads."""
    header, shapes, off = {}, [], 0
    for i in range(layers):
        for m, (rows, cols) in LAYER.items():
            name = f"model.layers.{i}.{m}"
            for k, dtype, shape, size in [
                ("weight_packed", "I32", [rows, cols // 8], rows * cols // 2),
                ("weight_scale", "BF16", [rows, cols // GROUP], rows * cols // GROUP * 2),
                ("weight_shape", "I64", [2], 16),
            ]:
                header[f"{name}.{k}"] = {"dtype": dtype, "shape": shape,
                                         "data_offsets": [off, off + size]}
                if k == "weight_shape":
                    shapes.append((off, rows, cols))
                off += size
        for norm in ["input_layernorm", "post_attention_layernorm"]:
            header[f"model.layers.{i}.{norm}.weight"] = {
                "dtype": "BF16", "shape": [4096], "data_offsets": [off, off + 8192]}
            off += 8192
    for name, shape in [("model.embed_tokens.weight", [128256, 4096]),
                        ("lm_head.weight", [128256, 4096]), ("model.norm.weight", [4096])]:
        size = shape[0] * (shape[1] if len(shape) > 1 else 1) * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + size]}
        off += size
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(path, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        base = 8 + len(h)
        for o, rows, cols in shapes:
            f.seek(base + o)
            f.write(struct.pack("<qq", rows, cols))
        f.truncate(base + off)
    json.dump(config(layers), open(os.path.join(path, "config.json"), "w"))
    return len(header), base + off


def mount_time(gyrofs, folder):
    best = float("inf")
    with tempfile.TemporaryDirectory() as t:
        mnt = os.path.join(t, "mnt")
        os.mkdir(mnt)
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([gyrofs, "mount", folder, mnt], check=True)
            best = min(best, time.perf_counter() - t0)
            assert os.path.isdir(os.path.join(mnt, "bf16")), "bf16/ is missing"
            subprocess.run(["umount", mnt], check=True)
            while os.path.ismount(mnt):
                time.sleep(0.01)
    return best


def main():
    gyrofs = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "gyrofs")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    print(f"CPU: {cpu}; torch {torch.__version__}, one thread; gyrofs: {gyrofs}")
    print(f"timed reads: {mode()}")
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        parts = one_layer(folder)
        lib = library_seconds(parts)
        mnt, n = mount_seconds(gyrofs, folder, parts.keys())
        gb = sum(r * c * 2 for r, c in LAYER.values()) / 1e9
        print(f"one 8B layer, INT4 group 128 -> BF16 ({gb:.3f} GB of BF16):")
        print(f"  compressed-tensors decompress, 1 thread: {lib:.3f} s ({gb / lib:.2f} GB/s)")
        print(f"  gyrofs bf16/ read after a fresh mount:   {mnt:.3f} s ({gb / mnt:.2f} GB/s, "
              f"{n} bytes with headers)")
        print(f"  ratio: {lib / mnt:.1f}x the library")
        shapes = {f"model.layers.0.{m}.weight": shape for m, shape in LAYER.items()}
        raw = raw_ceiling(gyrofs, shapes, folder, 16 << 20)
        print(f"  raw/ ceiling (the same bytes as lossless BF16, fresh mount): {raw:.2f} GB/s")
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        tensors, size = sparse_8b(folder)
        t = mount_time(gyrofs, folder)
        print(f"mount of an 8B-shaped INT4 checkpoint ({tensors} tensors, 224 quantized weights, "
              f"{size / 1e9:.1f} GB sparse): {t * 1000:.0f} ms")


if __name__ == "__main__":
    main()
