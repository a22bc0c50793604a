#!/usr/bin/env python3
"""MLX dequantization speed: mlx's own CPU `mx.dequantize` against reading
the same weights through a gyrofs mount; and the mount time of an
8B-shaped MLX checkpoint.

    /opt/q-mlx/bin/python scripts/bench_quant_mlx.py [path/to/gyrofs] [BITS] [GROUP]

(the environment of scripts/make_quant_mlx.py; gyrofs defaults to
target/debug/gyrofs; BITS 4, GROUP 64 by default). Everything is written
under a temporary directory in /tmp and removed at the end.
`BENCH_PRETOUCH_GB=N`: touch and free N GB of anonymous memory right before
each timed read (scripts/bench_quant_common.py); the output says which.
The same file sizes are also read as lossless raw/ bytes through a fresh
mount (a plain BF16 checkpoint of the same shapes): the transport's ceiling.

1. One Llama-3-8B-shaped layer's weights (q/o_proj 4096x4096, k/v_proj
   1024x4096, gate/up_proj 14336x4096, down_proj 4096x14336), random,
   quantized by `mx.quantize` (affine, BF16 scales), saved as mlx-lm saves
   a model (model.safetensors + config.json with `quantization`).
2. mlx: `mx.dequantize` of each weight, evaluated, best of 3, pinned to one
   core (`os.sched_setaffinity`; mlx's CPU ops run on the calling thread).
3. gyrofs: a fresh mount (the daemon pinned to the same one core,
   `--threads 1`), each `bf16/tensors/<weight>.safetensors` read whole
   (`cat`-style, 4 MiB reads); a fresh mount per run, best of 3.
   Prints output GB/s (BF16 bytes) for each and the ratio.
4. Mount time: an 8B-shaped checkpoint of 32 such layers plus quantized
   embed_tokens / lm_head (128256 x 4096) as a sparse file (the header
   only: holes are never read at mount), `gyrofs mount` until it returns,
   best of 5.
"""

import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quant_common import mode, pretouch, raw_ceiling  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

GYROFS = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target" / "debug" / "gyrofs"
BITS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
GROUP = int(sys.argv[3]) if len(sys.argv) > 3 else 64
CORE = {0}

LAYER = {
    "self_attn.q_proj": (4096, 4096),
    "self_attn.k_proj": (1024, 4096),
    "self_attn.v_proj": (1024, 4096),
    "self_attn.o_proj": (4096, 4096),
    "mlp.gate_proj": (14336, 4096),
    "mlp.up_proj": (14336, 4096),
    "mlp.down_proj": (4096, 14336),
}

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "rms_norm_eps": 1e-5,
    "torch_dtype": "bfloat16",
    "quantization": {"group_size": GROUP, "bits": BITS},
    "quantization_config": {"group_size": GROUP, "bits": BITS},
}


def one_layer(folder: Path) -> dict:
    mx.random.seed(0)
    weights = {}
    for name, (o, i) in LAYER.items():
        w = (mx.random.normal((o, i)) * 0.02).astype(mx.bfloat16)
        q, s, b = mx.quantize(w, group_size=GROUP, bits=BITS)
        base = f"model.layers.0.{name}"
        weights[f"{base}.weight"], weights[f"{base}.scales"], weights[f"{base}.biases"] = q, s, b
    mx.eval(weights)
    folder.mkdir()
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    (folder / "config.json").write_text(json.dumps(dict(CONFIG, num_hidden_layers=1)))
    return weights


def mlx_seconds(weights: dict) -> float:
    best = float("inf")
    for _ in range(3):
        pretouch()
        t0 = time.perf_counter()
        for name in LAYER:
            base = f"model.layers.0.{name}"
            d = mx.dequantize(
                weights[f"{base}.weight"], weights[f"{base}.scales"], weights[f"{base}.biases"],
                group_size=GROUP, bits=BITS,
            )
            mx.eval(d)
            del d
        best = min(best, time.perf_counter() - t0)
    return best


def read_all(mnt: Path) -> float:
    t0 = time.perf_counter()
    for name in LAYER:
        p = mnt / "bf16" / "tensors" / f"model.layers.0.{name}.weight.safetensors"
        with open(p, "rb", buffering=0) as f:
            while f.read(4 << 20):
                pass
    return time.perf_counter() - t0


def mount_and_read(folder: Path) -> float:
    best = float("inf")
    for _ in range(3):
        mnt = Path(tempfile.mkdtemp(prefix="gyrofs-bench-"))
        subprocess.run(
            ["taskset", "-c", "0", str(GYROFS), "mount", str(folder), str(mnt), "--threads", "1"],
            check=True,
        )
        try:
            pretouch()
            best = min(best, read_all(mnt))
        finally:
            subprocess.run([str(GYROFS), "umount", str(mnt)], check=False)
            os.rmdir(mnt)
    return best


def sparse_8b(folder: Path) -> None:
    """A 32-layer 8B-shaped MLX checkpoint: a real header, data as a hole."""
    header = {"__metadata__": {"format": "mlx"}}
    off = 0

    def add(name, dtype, shape, width):
        nonlocal off
        n = width
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        off += n

    def quantized(base, o, i):
        add(f"{base}.weight", "U32", [o, i * BITS // 32], 4)
        add(f"{base}.scales", "BF16", [o, i // GROUP], 2)
        add(f"{base}.biases", "BF16", [o, i // GROUP], 2)

    quantized("model.embed_tokens", 128256, 4096)
    for layer in range(32):
        for name, (o, i) in LAYER.items():
            quantized(f"model.layers.{layer}.{name}", o, i)
        add(f"model.layers.{layer}.input_layernorm.weight", "BF16", [4096], 2)
        add(f"model.layers.{layer}.post_attention_layernorm.weight", "BF16", [4096], 2)
    add("model.norm.weight", "BF16", [4096], 2)
    quantized("lm_head", 128256, 4096)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    folder.mkdir()
    path = folder / "model.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        f.truncate(8 + len(h) + off)
    (folder / "config.json").write_text(json.dumps(dict(CONFIG, num_hidden_layers=32)))
    print(f"8B-shaped checkpoint: {len(header) - 1} tensors, {(8 + len(h) + off) / 1e9:.2f} GB (sparse)")


def mount_seconds(folder: Path) -> float:
    best = float("inf")
    for _ in range(5):
        mnt = Path(tempfile.mkdtemp(prefix="gyrofs-bench-"))
        t0 = time.perf_counter()
        subprocess.run([str(GYROFS), "mount", str(folder), str(mnt)], check=True)
        best = min(best, time.perf_counter() - t0)
        assert (mnt / "bf16" / "model.safetensors.index.json").exists() or any(
            (mnt / "bf16").glob("model*.safetensors")
        ), "bf16/ missing: the checkpoint was not recognised"
        subprocess.run([str(GYROFS), "umount", str(mnt)], check=False)
        os.rmdir(mnt)
    return best


def main() -> None:
    os.sched_setaffinity(0, CORE)
    print(f"timed reads: {mode()}")
    with tempfile.TemporaryDirectory(prefix="gyrofs-bench-mlx-") as tmp:
        tmp = Path(tmp)
        weights = one_layer(tmp / "layer")
        out_bytes = sum(o * i * 2 for o, i in LAYER.values())
        m = mlx_seconds(weights)
        del weights
        g = mount_and_read(tmp / "layer")
        print(f"one 8B layer, affine {BITS}-bit group {GROUP}, BF16 scales: "
              f"{out_bytes / 1e6:.0f} MB of BF16 output")
        print(f"  mlx {mx.__version__} mx.dequantize (CPU, one core): {m:.3f} s, {out_bytes / m / 1e9:.2f} GB/s")
        print(f"  gyrofs mount, bf16/ read (one core):               {g:.3f} s, {out_bytes / g / 1e9:.2f} GB/s")
        print(f"  gyrofs / mlx: {m / g:.1f}x")
        shapes = {f"model.layers.0.{n}.weight": s for n, s in LAYER.items()}
        raw = raw_ceiling(GYROFS, shapes, str(tmp), 4 << 20, ("taskset", "-c", "0"))
        print(f"  raw/ ceiling (the same bytes as lossless BF16, fresh mount): {raw:.2f} GB/s")
        sparse_8b(tmp / "8b")
        print(f"  mount time, 8B-shaped MLX checkpoint: {mount_seconds(tmp / '8b') * 1000:.0f} ms")


if __name__ == "__main__":
    main()
