#!/usr/bin/env python3
"""Seed corpus for the fuzz targets (tests/fuzz/), from the test fixtures.

    python3 scripts/make_fuzz_corpus.py

Writes tests/fuzz/corpus/<target>/ (standard library only, deterministic):

  safetensors_header  the golden one-tensor files (both layouts) and the
                      sample's first shard
  gguf_header         the GGUF fixtures (aligned64.gguf, quants.gguf)
  side_json           the sample's config.json, generation_config.json,
                      shard index, and the original layout's config and
                      dtypes.json
  volume              whole sources in the volume target's input format
                      (parts joined by SEP, see fuzz_targets/volume.rs):
                      single files, a Hugging Face folder with an MXFP4
                      pair and an index, a gpt-oss original folder, an FP8
                      block-scaled pair with its config, a GGUF split set,
                      torch.save files (one a nanoGPT checkpoint, one
                      with repeated keys, one tensor path reached many
                      ways), GGUF models mapped to Hugging Face folders
                      (with an unplaced tensor; one incomplete)
  torch_checkpoint    the torch.save fixtures of tests/data/torch/ (zip,
                      legacy, every pickle protocol) and its bad/ ones

scripts/fuzz.sh runs the targets with these seeds (read-only) and keeps what
the fuzzer finds under tests/fuzz/target/corpus/. Keep the corpus small
(well under 1 MB): fixtures larger than 64 KiB are left out.
"""

import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DATA = os.path.join(ROOT, "tests", "data")
SAMPLE = os.path.join(DATA, "gpt-oss-tiny")
GOLDEN = os.path.join(DATA, "golden")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")

# Must match SEP in tests/fuzz/fuzz_targets/volume.rs.
SEP = b"\n%%gyrofs-fuzz-part%%\n"


def read(*path):
    with open(os.path.join(*path), "rb") as f:
        return f.read()


def safetensors(tensors, metadata=None):
    """A safetensors file: tensors is a list of (name, dtype, shape, bytes) in data order."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    off = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors)


def volume(config=b"", dtypes=b"", index=b"", tensors=()):
    """An input of the volume target: a folder (or, with one part, a file)."""
    return SEP.join([config, dtypes, index, *tensors])


def gguf(kvs, tensors):
    """A GGUF v3 file (alignment 32): kvs is a list of (key, u32 or str),
    tensors a list of (name, ggml dims fastest first) of F32 zeros."""
    def text(x):
        b = x.encode()
        return struct.pack("<Q", len(b)) + b
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for k, v in kvs:
        out += text(k) + (struct.pack("<II", 4, v) if isinstance(v, int) else struct.pack("<I", 8) + text(v))
    off, data = 0, b""
    for name, dims in tensors:
        out += text(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", 0, off)
        n = 4
        for d in dims:
            n *= d
        blob = bytes(n) + bytes(-n % 32)
        data += blob
        off += len(blob)
    return out + bytes(-len(out) % 32) + data


def toy_llama(blocks, declared, extra=()):
    """A llama GGUF of `blocks` blocks whose metadata says `declared`."""
    t = [("token_embd.weight", [8, 6]), ("output_norm.weight", [8])]
    for k in range(blocks):
        for leaf, dims in [("attn_q", [8, 8]), ("attn_k", [8, 4]), ("attn_v", [8, 4]),
                           ("attn_output", [8, 8]), ("ffn_up", [8, 16]), ("ffn_down", [16, 8])]:
            t.append((f"blk.{k}.{leaf}.weight", dims))
    kvs = [("general.architecture", "llama"), ("llama.block_count", declared),
           ("llama.embedding_length", 8), ("llama.attention.head_count", 2),
           ("llama.attention.head_count_kv", 1)]
    return gguf(kvs, t + list(extra))


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    golden = {
        layout: sorted(os.listdir(os.path.join(GOLDEN, layout, "raw", "tensors")))
        for layout in ("hf", "original")
    }
    for layout, names in golden.items():
        for n in names:
            write("safetensors_header", f"{layout}-{n}", read(GOLDEN, layout, "raw", "tensors", n))
    write("safetensors_header", "shard-1", read(SAMPLE, "model-00001-of-00002.safetensors"))

    for n in ("aligned64.gguf", "quants.gguf"):
        write("gguf_header", n, read(DATA, "gguf", n))

    side = {
        "config.json": read(SAMPLE, "config.json"),
        "generation_config.json": read(SAMPLE, "generation_config.json"),
        "index.json": read(SAMPLE, "model.safetensors.index.json"),
        "original-config.json": read(SAMPLE, "original", "config.json"),
        "original-dtypes.json": read(SAMPLE, "original", "dtypes.json"),
    }
    for n, b in side.items():
        write("side_json", n, b)

    # volume: single files, opened by path.
    write("volume", "file-hf-norm", read(GOLDEN, "hf", "raw", "tensors", "model.norm.weight.safetensors"))
    write("volume", "file-aligned64", read(DATA, "gguf", "aligned64.gguf"))
    write("volume", "file-quants", read(DATA, "gguf", "quants.gguf"))

    # A Hugging Face folder: the golden one-tensor files as shards, an index
    # naming them, the sample's config (gpt_oss, 4 experts).
    hf = golden["hf"]
    shard = lambda i: f"model-{i + 1:05}-of-{len(hf):05}.safetensors"
    index = {"metadata": {}, "weight_map": {n[: -len(".safetensors")]: shard(i) for i, n in enumerate(hf)}}
    hf_files = [read(GOLDEN, "hf", "raw", "tensors", n) for n in hf]
    write("volume", "folder-hf", volume(side["config.json"], b"", json.dumps(index).encode(), hf_files))

    # A gpt-oss original folder: config, dtypes.json, no index.
    orig_files = [read(GOLDEN, "original", "raw", "tensors", n) for n in golden["original"]]
    write("volume", "folder-original",
          volume(side["original-config.json"], side["original-dtypes.json"], b"", orig_files))

    # MXFP4 experts pair (Hugging Face names) and a block-scaled FP8 pair.
    q = lambda n: read(DATA, "quant", n)
    moe = safetensors([
        ("model.layers.0.mlp.experts.down_proj_blocks", "U8", [2, 3, 2, 16], q("mxfp4_layout.blocks")),
        ("model.layers.0.mlp.experts.down_proj_scales", "U8", [2, 3, 2], q("mxfp4_layout.scales")),
    ], {"format": "pt"})
    config = json.dumps({"model_type": "gpt_oss", "num_local_experts": 2, "num_hidden_layers": 1}).encode()
    write("volume", "folder-mxfp4", volume(config, tensors=[moe]))
    fp8 = safetensors([
        ("x.weight_scale_inv", "F32", [5, 3], q("fp8_block_b.scale_inv")),
        ("x.weight", "F8_E4M3", [37, 45], q("fp8_block_b.weight")),
    ])
    config = json.dumps({"quantization_config": {"quant_method": "fp8", "weight_block_size": [8, 16]}}).encode()
    write("volume", "folder-fp8", volume(config, tensors=[fp8]))

    # A GGUF split set of two files.
    g = read(DATA, "gguf", "aligned64.gguf")
    write("volume", "folder-gguf-split", volume(tensors=[g, g]))

    # torch.save files (zip and legacy, every pickle protocol), and the
    # hostile ones the reader refuses; a nanoGPT checkpoint as a whole source
    # (bf16/ maps it to GPT-2).
    for sub in ("", "bad"):
        d = os.path.join(DATA, "torch", sub)
        for n in sorted(os.listdir(d)):
            if n.endswith(".pt") and os.path.getsize(os.path.join(d, n)) <= 64 * 1024:
                write("torch_checkpoint", (sub + "-" if sub else "") + n, read(d, n))
    write("volume", "file-torch-views", read(DATA, "torch", "views.pt"))
    write("volume", "file-torch-legacy", read(DATA, "torch", "nanogpt-legacy.pt"))
    write("volume", "file-nanogpt", read(DATA, "torch-models", "nanogpt-untied.pt"))
    # Repeated keys (last value wins; keys that print the same renamed) and
    # one tensor path reached many ways, as whole sources.
    write("volume", "file-torch-dup-keys", read(DATA, "torch", "dup-keys.pt"))
    write("volume", "file-torch-path-collisions", read(DATA, "torch", "bad", "path-collisions.pt"))

    # GGUF models mapped to Hugging Face folders: experts concatenated
    # (qwen3_moe), norms offset (gemma2), experts interleaved and transposed
    # from ggml MXFP4 (gpt_oss).
    for n in ("qwen3_moe-q8_0", "gemma2-q8_0", "gpt_oss-bf16"):
        write("volume", f"file-gguf-hf-{n}", read(DATA, "gguf-models", n + ".gguf"))
    # A complete llama with a tensor the mapping has no place for (kept
    # under its GGUF name), and one short of the blocks it declares (not
    # mapped).
    write("volume", "file-gguf-hf-llama-extra", toy_llama(1, 1, [("rope_freqs.weight", [2])]))
    write("volume", "file-gguf-hf-llama-incomplete", toy_llama(1, 2))


if __name__ == "__main__":
    main()
