#!/usr/bin/env python3
"""Golden Gyro files for the bundled sample, from the specification alone.

    python3 scripts/make_golden.py

An independent implementation of docs/FORMAT.md (standard library only; it
shares no code with gyrofs): it reads the sample's safetensors headers,
dtypes.json and index, and writes the exact bytes that these virtual files
must have into tests/data/golden/<layout>/:

  raw/tensors/<name>.safetensors   complete files, for a few tensors
  raw/model.safetensors.header     the first 8 + N bytes of the pack

tests/golden.rs compares gyrofs's files (through the read path and through a
real mount) with these bytes. If the format changes on purpose, change
docs/FORMAT.md and this script together and regenerate.
"""

import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SAMPLE = os.path.join(ROOT, "tests", "data", "gpt-oss-tiny")
GOLDEN = os.path.join(ROOT, "tests", "data", "golden")

BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
        "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16,
        "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64,
        "I64": 64, "U64": 64}


def canonical(v):
    """Canonical JSON: sorted keys, no whitespace, raw UTF-8."""
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def jstr(s):
    return json.dumps(s, ensure_ascii=False)


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    start = 8 + n
    md = header.pop("__metadata__", {})
    tensors = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        tensors[name] = {"dtype": t["dtype"], "shape": t["shape"], "start": start + b, "end": start + e}
    return md, tensors, os.path.getsize(path)


class Source:
    def __init__(self, folder):
        self.folder = folder
        names = sorted(os.listdir(folder))
        if "model.safetensors.index.json" in names:
            with open(os.path.join(folder, "model.safetensors.index.json")) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        else:
            shards = [n for n in names if n.endswith(".safetensors")]
        self.format = "gpt-oss-original" if "dtypes.json" in names else "safetensors"
        self.files = []  # (name, size, metadata)
        self.tensors = {}  # name -> dict(file index, ...)
        for i, shard in enumerate(shards):
            md, ts, size = read_header(os.path.join(folder, shard))
            self.files.append((shard, size, md))
            for name, t in ts.items():
                t["file"] = i
                t["logical"] = t["dtype"]
                self.tensors[name] = t
        if "dtypes.json" in names:
            with open(os.path.join(folder, "dtypes.json")) as f:
                for name, dt in json.load(f).items():
                    self.tensors[name]["logical"] = dt
        for name, t in self.tensors.items():
            for sep in (".", "_"):
                if name.endswith(sep + "blocks"):
                    peer = name[: -len("blocks")] + "scales"
                    if peer in self.tensors:
                        t["quant"] = {"peer": peer, "role": "blocks", "scheme": "mxfp4", "values_per_block": 32}
                        self.tensors[peer]["quant"] = {"peer": name, "role": "scales", "scheme": "mxfp4", "values_per_block": 32}
                        if t["logical"] == t["dtype"]:
                            t["logical"] = "FP4"
                        if self.tensors[peer]["logical"] == self.tensors[peer]["dtype"]:
                            self.tensors[peer]["logical"] = "UE8"

    def source_json(self, file_indices):
        files = []
        for i in sorted(set(file_indices)):
            name, size, md = self.files[i]
            entry = {"name": name, "size": size}
            if md:
                entry["metadata"] = md
            files.append(entry)
        return {"files": files, "format": self.format}

    def record(self, name):
        t = self.tensors[name]
        rec = {
            "logical_dtype": t["logical"],
            "source": {"dtype": t["dtype"], "file": self.files[t["file"]][0], "name": name,
                       "offsets": [t["start"], t["end"]], "shape": t["shape"]},
            "transform": {"kind": "identity"},
        }
        if "quant" in t:
            rec["quant"] = t["quant"]
        return rec

    def data(self, name):
        t = self.tensors[name]
        with open(os.path.join(self.folder, self.files[t["file"]][0]), "rb") as f:
            f.seek(t["start"])
            return f.read(t["end"] - t["start"])


def gyro_header(view, source_json, entries):
    """entries: list of (name, dtype, shape, record, nbytes) in data order."""
    records = {name: rec for name, _, _, rec, _ in entries}
    md = [("format", "pt"), ("gyro.source", canonical(source_json)),
          ("gyro.tensors", canonical(records)), ("gyro.version", "1"), ("gyro.view", view)]
    text = '{"__metadata__":{' + ",".join(jstr(k) + ":" + jstr(v) for k, v in md) + "}"
    off = 0
    for name, dtype, shape, _, n in entries:
        text += "," + jstr(name) + ':{"dtype":' + jstr(dtype) + ',"shape":[' + ",".join(map(str, shape)) + "]"
        text += ',"data_offsets":[%d,%d]}' % (off, off + n)
        off += n
    text += "}"
    raw = text.encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def escape(name):
    out = ""
    for i, c in enumerate(name):
        if c == "%":
            out += "%25"
        elif c == "/":
            out += "%2F"
        elif c == "." and i == 0:
            out += "%2E"
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out += "%%%02X" % ord(c)
        else:
            out += c
    assert len(out) + len(".safetensors") <= 255, "long names are not exercised here"
    return out


def main():
    cases = {
        "hf": (SAMPLE, ["model.embed_tokens.weight", "model.layers.0.mlp.experts.gate_up_proj_blocks",
                        "model.layers.0.mlp.experts.gate_up_proj_scales", "model.norm.weight"]),
        "original": (os.path.join(SAMPLE, "original"), ["block.0.attn.qkv.weight", "block.1.mlp.mlp2_weight.blocks",
                                                        "block.1.mlp.mlp2_weight.scales", "norm.scale"]),
    }
    for layout, (folder, names) in cases.items():
        src = Source(folder)
        for name in names:
            t = src.tensors[name]
            entry = (name, t["dtype"], t["shape"], src.record(name), t["end"] - t["start"])
            header = gyro_header("raw/tensors", src.source_json([t["file"]]), [entry])
            write(os.path.join(GOLDEN, layout, "raw", "tensors", escape(name) + ".safetensors"),
                  header + src.data(name))
        order = sorted(src.tensors, key=lambda n: (-max(BITS[src.tensors[n]["dtype"]] // 8, 1),
                                                   src.tensors[n]["file"], src.tensors[n]["start"]))
        entries = [(n, src.tensors[n]["dtype"], src.tensors[n]["shape"], src.record(n),
                    src.tensors[n]["end"] - src.tensors[n]["start"]) for n in order]
        header = gyro_header("raw", src.source_json(range(len(src.files))), entries)
        write(os.path.join(GOLDEN, layout, "raw", "model.safetensors.header"), header)


if __name__ == "__main__":
    main()
