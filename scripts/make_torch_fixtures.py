#!/usr/bin/env python3
"""Generate the torch.save fixtures and their golden data (tests/data/torch/).

Run with the reference environment:  /opt/pyref/bin/python scripts/make_torch_fixtures.py
Deterministic (fixed seeds; torch.save zip output is a function of its input;
zip entries written here carry the fixed 1980-01-01 timestamp), except the
legacy-format files, whose storage keys are torch's memory addresses
(`str(storage._cdata)`): they change from run to run, and nothing depends on them.
Versions it ran with go to tests/data/torch/SOURCE.json.

For every good fixture `<name>.pt` the reference is torch itself:
`torch.load(path, weights_only=True)` (with `safe_globals([argparse.Namespace])`
where a fixture holds one), then

- `expected-<name>.safetensors`: `safetensors.torch.save_file({path: t.contiguous()
  .clone()})` for every tensor the load reaches, by the path rules of
  src/source/torch/mod.rs (implemented again below, independently: `Walk`);
- `expected-<name>.json`: `{"format", "archive_name", "big_endian", "paths"
  (tensor paths in traversal order), "tensors" ({path: {dtype, shape,
  requires_grad}}), "values" (the object tree as JSON by the same rules)}`.

Hostile and broken files go to tests/data/torch/bad/. They are written as raw
bytes (hand-assembled pickles, rewritten zips) and are NEVER loaded by Python:
only the Rust parser reads them. tests/torch_parse.rs pins the exact error line
(or the neutralised result) for each.
"""

import argparse
import collections
import io
import json
import math
import os
import struct
import sys
import zipfile
from pathlib import Path

import numpy
import safetensors
import torch
import torch.nn as nn
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "torch"
BAD = OUT / "bad"

SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.uint16: "U16",
    torch.uint32: "U32",
    torch.uint64: "U64",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.float8_e4m3fnuz: "F8_E4M3FNUZ",
    torch.float8_e5m2fnuz: "F8_E5M2FNUZ",
    torch.float8_e8m0fnu: "F8_E8M0",
}


# ---------------------------------------------------------------------------
# The documented walk (src/source/torch/mod.rs), over torch.load's result.


class Walk:
    def __init__(self):
        self.paths = []
        self.tensors = {}  # path -> tensor
        self.meta = {}

    @staticmethod
    def join(path, seg):
        return seg if path == "" else f"{path}.{seg}"

    @staticmethod
    def num(x):
        if isinstance(x, bool):
            return x
        if isinstance(x, int):
            return x if -(2**63) <= x < 2**64 else str(x)
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x

    def key_json(self, k):
        if k is None or isinstance(k, (bool, str)):
            return k
        if isinstance(k, (int, float)):
            return self.num(k)
        if isinstance(k, (bytes, bytearray)):
            return {"gyro_bytes": len(k)}
        if isinstance(k, tuple):
            return [self.key_json(x) for x in k]
        raise ValueError(f"key {k!r} not covered by the fixtures")

    def key_text(self, k):
        if isinstance(k, str):
            return k
        if isinstance(k, int) and not isinstance(k, bool):
            return str(k)
        return json.dumps(self.key_json(k), separators=(",", ":"), ensure_ascii=False)

    def omitted_reason(self, t):
        if t.is_quantized:
            return "a quantized tensor"
        if t.is_sparse:
            return "a sparse tensor"
        if t.device.type == "meta":
            return "a meta tensor (it has no data)"
        if t.is_conj() or t.is_neg():
            return "a tensor with its conj or neg bit set (a lazy view whose bytes are not its values)"
        if t.dtype not in SAFETENSORS_DTYPES:
            return f"a {t.dtype} tensor (no safetensors dtype holds it)"
        return None

    def tensor(self, t, path, opaque):
        why = self.omitted_reason(t)
        if why is not None:
            return {"gyro_omitted": why}
        assert opaque is None, "fixtures put no tensor inside an opaque object"
        if path == "":
            path = "tensor"
        if path in self.tensors:
            n = 2
            while f"{path}#{n}" in self.tensors:
                n += 1
            path = f"{path}#{n}"
        self.paths.append(path)
        self.tensors[path] = t
        self.meta[path] = {
            "dtype": SAFETENSORS_DTYPES[t.dtype],
            "shape": list(t.shape),
            "requires_grad": bool(t.requires_grad),
        }
        return {"gyro_tensor": path}

    def walk(self, x, path="", opaque=None):
        if isinstance(x, torch.Tensor):
            return self.tensor(x, path, opaque)
        if isinstance(x, dict):
            out = {}
            for k, v in x.items():
                key = self.key_text(k)
                if key in out:
                    n = 2
                    while f"{key}#{n}" in out:
                        n += 1
                    key = f"{key}#{n}"
                out[key] = self.walk(v, self.join(path, key), opaque)
            return out
        if isinstance(x, (list, tuple, set, frozenset)):
            return [self.walk(v, self.join(path, str(i)), opaque) for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return self.num(x) if isinstance(x, (int, float)) else x
        if isinstance(x, (bytes, bytearray)):
            return {"gyro_bytes": len(x)}
        if isinstance(x, complex):
            return {"gyro_complex": [self.num(x.real), self.num(x.imag)]}
        if isinstance(x, (torch.dtype, torch.device, torch.layout)):
            return str(x)
        if isinstance(x, argparse.Namespace):
            name = "argparse.Namespace"
            return {"gyro_opaque": name, "state": self.walk(vars(x), self.join(path, "state"), name)}
        raise ValueError(f"{path}: {type(x)} not covered by the fixtures")


def write_expected(name, path, archive_name, big_endian=False, safe=()):
    with torch.serialization.safe_globals(list(safe)):
        obj = torch.load(path, weights_only=True)
    write_expected_obj(name, obj, archive_name, big_endian)


def write_expected_obj(name, obj, archive_name, big_endian=False):
    w = Walk()
    values = w.walk(obj)
    tensors = {}
    for p, t in w.tensors.items():
        c = t.detach().contiguous().clone()
        tensors[p] = c
    if tensors:
        save_file(tensors, OUT / f"expected-{name}.safetensors")
    expected = {
        "format": "legacy" if archive_name is None else "zip",
        "archive_name": archive_name,
        "big_endian": big_endian,
        "paths": w.paths,
        "tensors": w.meta,
        "values": values,
    }
    (OUT / f"expected-{name}.json").write_text(
        json.dumps(expected, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    )


def save(name, obj, legacy=False, via_buffer=False, safe=(), load_zip_twin=False, protocol=2):
    """torch.save obj to <name>.pt and write its expected files.

    `load_zip_twin`: load the reference from a default zip save of the same
    object instead. Used where torch cannot load its own output: its legacy
    loader fails on UntypedStorage persistent ids (float8, uint16/32/64:
    AttributeError in `_legacy_load`), and the weights_only unpickler knows
    only protocol 2's opcodes."""
    path = OUT / f"{name}.pt"
    if via_buffer:
        b = io.BytesIO()
        torch.save(obj, b, pickle_protocol=protocol)
        path.write_bytes(b.getvalue())
        archive = "archive"
    elif legacy:
        torch.save(obj, path, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
        archive = None
    else:
        torch.save(obj, path, pickle_protocol=protocol)
        archive = name
    if load_zip_twin:
        twin = io.BytesIO()
        torch.save(obj, twin)
        twin.seek(0)
        with torch.serialization.safe_globals(list(safe)):
            twin_obj = torch.load(twin, weights_only=True)
        write_expected_obj(name, twin_obj, archive)
        return path
    write_expected(name, path, archive, safe=safe)
    return path


def plain(name, obj, protocol):
    """A zip whose data.pkl is `pickle.dumps(obj, protocol)` of plain Python
    data (no tensors): covers the opcodes torch.save's protocol 2 never
    writes. The reference is obj itself."""
    import pickle

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr(zipfile.ZipInfo(f"{name}/data.pkl"), pickle.dumps(obj, protocol=protocol))
        z.writestr(zipfile.ZipInfo(f"{name}/byteorder"), b"little")
    (OUT / f"{name}.pt").write_bytes(out.getvalue())
    write_expected_obj(name, obj, name)


# ---------------------------------------------------------------------------
# Good fixtures.


def gen(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if dtype.is_floating_point:
        x = torch.randn(shape, generator=g, dtype=torch.float32) * 3
        return x.to(dtype)
    info = torch.iinfo(dtype)
    lo, hi = max(info.min, -(2**62)), min(info.max, 2**62)
    return torch.randint(lo, hi, shape, generator=g, dtype=torch.int64).to(dtype)


def dtype_dict():
    d = {}
    for i, dt in enumerate(SAFETENSORS_DTYPES):
        d[str(dt).removeprefix("torch.")] = gen((2, 3), dt, 100 + i)
    d["scalar"] = torch.tensor(2.5)
    d["empty"] = torch.zeros(0, 4)
    return d


def views_dict():
    base = gen((4, 6), torch.float32, 1)
    cube = gen((2, 3, 4), torch.bfloat16, 2)
    u16 = gen((10,), torch.uint16, 3)
    i8 = gen((3, 1), torch.int8, 4)
    return {
        "base": base,
        "transposed": base.t(),
        "stepped": base[::2, 1::3],
        "narrowed": base.narrow(0, 1, 2),
        "row": base[3],
        "element": base[2, 5],
        "expanded": i8.expand(3, 5),
        "broadcast0": gen((4,), torch.float16, 5).expand(2, 4),
        "permuted": cube.permute(2, 0, 1),
        "cube_slice": cube[:, 1:, ::3],
        "u16_tail": u16[3:][::2],
        "empty_view": base[:, 6:],
    }


class Block(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(n, 3 * n)
        self.attn.c_proj = nn.Linear(n, n)
        self.ln_2 = nn.LayerNorm(n)
        self.mlp = nn.Module()
        self.mlp.c_fc = nn.Linear(n, 4 * n)
        self.mlp.c_proj = nn.Linear(4 * n, n)


class GPT(nn.Module):
    def __init__(self, vocab=16, block=4, n=8, layers=1):
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(vocab, n)
        self.transformer.wpe = nn.Embedding(block, n)
        self.transformer.h = nn.ModuleList([Block(n) for _ in range(layers)])
        self.transformer.ln_f = nn.LayerNorm(n)
        self.lm_head = nn.Linear(n, vocab, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied

    def forward(self, idx):
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(idx.shape[1]))
        for b in self.transformer.h:
            x = x + b.attn.c_proj(b.attn.c_attn(b.ln_1(x))[..., : x.shape[-1]])
            x = x + b.mlp.c_proj(torch.nn.functional.gelu(b.mlp.c_fc(b.ln_2(x))))
        return self.lm_head(self.transformer.ln_f(x))


class Compiled(nn.Module):
    """What torch.compile's wrapper looks like to state_dict(): `_orig_mod.` keys."""

    def __init__(self, m):
        super().__init__()
        self._orig_mod = m


def nanogpt():
    torch.manual_seed(0)
    model = GPT()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=6e-4,
        betas=(0.9, 0.95),
    )
    idx = torch.randint(0, 16, (2, 4))
    loss = model(idx).float().square().mean()
    loss.backward()
    opt.step()
    model_args = dict(n_layer=1, n_head=2, n_embd=8, block_size=4, bias=True, vocab_size=16, dropout=0.0)
    return {
        "model": Compiled(model).state_dict(),
        "optimizer": opt.state_dict(),
        "model_args": model_args,
        "iter_num": 3,
        "best_val_loss": torch.tensor(2.5),
        "config": {
            "out_dir": "out-tiny",
            "eval_interval": 250,
            "always_save_checkpoint": False,
            "learning_rate": 6e-4,
            "dtype": "bfloat16",
            "compile": True,
            "init_from": None,
        },
    }


def params_state_dict():
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    return collections.OrderedDict(m.named_parameters())


def nested():
    shared = gen((2, 2), torch.float32, 7)
    return {
        "lists": [gen((2,), torch.int32, 8), [gen((1,), torch.int64, 9), "leaf", 3], ()],
        "tuple": (1, 2.5, None, True, "s"),
        "same_object": shared,
        "same_again": shared,
        "numbers": {"nan": float("nan"), "inf": float("inf"), "neg_inf": float("-inf"), "big": 2**70, "u64": 2**64 - 1, "neg": -5},
        "text": "héllo ✓",
        "bytes": b"\x00\x01\x02",
        "bytearray": bytearray(b"abcd"),
        "size": torch.Size([2, 3]),
        "device": torch.device("cuda", 1),
        "cpu": torch.device("cpu"),
        "dtype": torch.bfloat16,
        "layout": torch.strided,
        "complex": complex(1.5, -2.0),
        "set": {3},
        "int_keys": {1: "one", "1": "string one", 2: gen((3,), torch.float16, 10)},
        "tuple_key": {(0, "a"): 1, None: 2, True: 3},
        "a.b": gen((1,), torch.float32, 11),
        "a": {"b": gen((1,), torch.float32, 12)},
        "empty": {},
    }


def plain_data(proto):
    d = collections.OrderedDict()
    d["ints"] = [0, 1, -1, 255, 256, 65535, 65536, -(2**31), 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 2**100, -(2**100)]
    d["floats"] = [0.0, -0.0, 1.5, 1e-300, 6.02e23, float("inf"), float("nan")]
    d["text"] = ["", "plain", "quote ' \" \\ backslash", "newline\nand\ttab", "ünïcödé ✓ \U0001f600"]
    d["bytes"] = [b"", b"\x00\xff raw", bytearray(b"ba")]
    d["bools"] = [True, False, None]
    d["tuples"] = [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)]
    d["nested"] = {"x": {"y": [[], {}, [[1]]]}, 7: "int key", (1, "t"): "tuple key"}
    d["set"] = {42}
    d["complex"] = complex(0.5, 2.0)
    d["shared"] = d["tuples"]
    if proto >= 4:
        d["frozenset"] = frozenset({9})
    return d


def unsupported():
    q = torch.quantize_per_tensor(torch.tensor([0.5, 1.0]), 0.5, 0, torch.qint8)
    sp = torch.tensor([[0.0, 1.0], [2.0, 0.0]]).to_sparse()
    return {
        "kept": gen((2,), torch.float32, 20),
        "complex64": torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64),
        "complex128": torch.tensor([1j], dtype=torch.complex128),
        "quantized": q,
        "sparse": sp,
        "meta": torch.empty(3, device="meta"),
        "neg_view": torch._neg_view(gen((2,), torch.float32, 21)),
    }


def big_endian(name):
    """A zip whose storages are big-endian (`byteorder` = `big`), written by
    rewriting a little-endian torch.save zip with byteswapped payloads."""
    obj = {
        "f32": gen((3, 2), torch.float32, 30).t(),
        "f16": gen((4,), torch.float16, 31),
        "bf16": gen((2, 2), torch.bfloat16, 32),
        "i64": gen((3,), torch.int64, 33),
        "u8": gen((5,), torch.uint8, 34),
    }
    little = io.BytesIO()
    torch.save(obj, little)
    # Storage keys follow first use in the pickle: dict order.
    sizes = {str(i): t.element_size() for i, t in enumerate(obj.values())}
    zin = zipfile.ZipFile(little)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            rel = info.filename.split("/", 1)[1]
            if rel == "byteorder":
                data = b"big"
            elif rel.startswith("data/"):
                size = sizes[rel[len("data/"):]]
                data = numpy.frombuffer(data, dtype=f"u{size}").byteswap().tobytes()
            zout.writestr(zipfile.ZipInfo(info.filename.replace("archive/", f"{name}/", 1)), data)
    path = OUT / f"{name}.pt"
    path.write_bytes(out.getvalue())
    write_expected(name, path, name, big_endian=True)


def rezipped(name, source):
    """A torch zip rewritten by Python's zipfile: ZIP64 local extra fields
    forced, unaligned payloads, an archive comment."""
    zin = zipfile.ZipFile(source)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        zout.comment = b"rewritten by make_torch_fixtures.py"
        for info in zin.infolist():
            new = zipfile.ZipInfo(info.filename.replace(source.stem + "/", f"{name}/", 1))
            with zout.open(new, "w", force_zip64=True) as f:
                f.write(zin.read(info.filename))
    path = OUT / f"{name}.pt"
    path.write_bytes(out.getvalue())
    write_expected(name, path, name)


# ---------------------------------------------------------------------------
# Hand-assembled pickles for hostile and broken files. Never loaded here.


def p_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def p_int(n):
    return b"J" + struct.pack("<i", n)


def p_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def p_tuple(*items):
    return b"(" + b"".join(items) + b"t"


P_EMPTY_ODICT = p_global("collections", "OrderedDict") + b")R"


def p_storage(key, numel, cls="FloatStorage"):
    return p_tuple(p_str("storage"), p_global("torch", cls), p_str(key), p_str("cpu"), p_int(numel)) + b"Q"


def p_tensor(storage, offset, size, stride):
    return (
        p_global("torch._utils", "_rebuild_tensor_v2")
        + p_tuple(
            storage,
            p_int(offset),
            p_tuple(*map(p_int, size)),
            p_tuple(*map(p_int, stride)),
            b"\x89",
            P_EMPTY_ODICT,
        )
        + b"R"
    )


def p_dict(*pairs):
    return b"}(" + b"".join(k + v for k, v in pairs) + b"u"


def torch_zip(name, data_pkl, storages=None, deflate=(), out_dir=None):
    """A torch.save-shaped zip written by Python's zipfile (in bad/, or
    `out_dir`)."""
    storages = storages if storages is not None else {"0": struct.pack("<4f", 1, 2, 3, 4)}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        def put(rel, data):
            method = zipfile.ZIP_DEFLATED if rel in deflate else zipfile.ZIP_STORED
            z.writestr(zipfile.ZipInfo(f"{name}/{rel}"), data, compress_type=method)

        put("data.pkl", data_pkl)
        put("byteorder", b"little")
        for k, v in storages.items():
            put(f"data/{k}", v)
        put("version", b"3\n")
    ((out_dir or BAD) / f"{name}.pt").write_bytes(out.getvalue())
    return (out_dir or BAD) / f"{name}.pt"


def p_float(x):
    return b"G" + struct.pack(">d", x)


def duplicate_keys():
    """A state dict with repeated keys, which torch.save cannot write: a
    hand-made data.pkl that torch.load reads as Python does (the last value
    of a key wins, in the key's first place), with keys distinct in Python
    that print the same (1 and "1")."""
    f4 = lambda *v: struct.pack(f"<{len(v)}f", *v)
    storages = {"0": f4(1, 2, 3, 4), "1": f4(5, 6, 7, 8), "2": f4(9, 10, 11, 12)}
    t = lambda key, size: p_tensor(p_storage(key, 4), 0, [size], [1])
    body = p_dict(
        (p_str("w"), t("0", 4)),
        (p_str("x"), t("1", 2)),
        (p_str("w"), t("2", 3)),  # torch.load: w is storage 2's, first in order
        (p_str("m"), p_dict((p_str("a"), t("0", 1)))),
        (p_str("m"), p_dict((p_str("b"), t("1", 1)))),  # m.a is gone
        (p_int(1), p_str("int one")),
        (p_str("1"), p_str("string one")),  # another key that prints as 1
        (b"\x88", p_str("True replaces int one")),  # True == 1
        (p_float(1.0), p_str("1.0 replaces it again")),  # 1.0 == 1
        (p_float(2.5), p_str("two and a half")),
        (p_str("w"), t("1", 4)),  # and w once more
    )
    path = torch_zip("dup-keys", b"\x80\x02" + body + b".", storages, out_dir=OUT)
    write_expected("dup-keys", path, "dup-keys")


def hostile():
    one = p_tensor(p_storage("0", 4), 0, [4], [1])
    ok = lambda body: b"\x80\x02" + body + b"."
    # Code execution attempts: each must be refused, and CANARY never appear.
    torch_zip("os-system", ok(p_global("os", "system") + p_tuple(p_str("touch CANARY")) + b"R"))
    torch_zip("posix-system", ok(p_dict((p_str("w"), one), (p_str("x"), p_global("posix", "system") + p_tuple(p_str("touch CANARY")) + b"R"))))
    torch_zip("builtins-eval", b"\x80\x04" + b"\x8c\x08builtins\x8c\x04eval\x93" + p_tuple(p_str("__import__('os').system('touch CANARY')")) + b"R.")
    torch_zip("builtins-exec", ok(p_global("__builtin__", "exec") + p_tuple(p_str("import os; os.system('touch CANARY')")) + b"R"))
    torch_zip("subprocess-inst", ok(b"(" + p_str("touch") + p_str("CANARY") + b"isubprocess\nPopen\n"))
    torch_zip("getattr-obj", ok(b"(" + p_global("builtins", "getattr") + p_global("os", "path") + p_str("exists") + b"o"))
    # A non-allowlisted callable that no tensor depends on: a placeholder.
    torch_zip("reduce-unknown", ok(p_dict(
        (p_str("w"), one),
        (p_str("evil"), p_global("evil.module", "run") + p_tuple(p_str("touch CANARY")) + b"R"),
        (p_str("built"), p_global("evil.module", "Thing") + b")\x81" + p_dict((p_str("__setstate__"), p_str("x")), (p_str("n"), p_int(7))) + b"b"),
    )))
    # ... and one a tensor depends on: refused, naming it.
    torch_zip("tensor-from-unknown", ok(p_dict((p_str("w"), p_tensor(p_global("evil.module", "make_storage") + b")R", 0, [4], [1])))))
    torch_zip("tensor-inside-unknown", ok(p_dict((p_str("m"), p_global("evil.module", "Model") + b")\x81" + p_dict((p_str("w"), one)) + b"b"))))
    # BUILD on a plain dict; INST/OBJ building placeholders.
    torch_zip("build-on-dict", ok(b"}" + p_dict((p_str("a"), p_int(1))) + b"b"))
    torch_zip("inst-obj", ok(p_dict(
        (p_str("inst"), b"(" + p_int(1) + b"ievil.module\nThing\n"),
        (p_str("obj"), b"(" + p_global("evil.module", "Thing") + p_int(2) + b"o"),
        (p_str("w"), one),
    )))
    # Resource exhaustion.
    torch_zip("deep-marks", ok(b"(" * 2000 + b"N" + b"t" * 2000))
    torch_zip("deep-lists", ok(b"]" * 1500 + b"a" * 1499))
    torch_zip("huge-memo-index", ok(p_int(1) + b"r\xff\xff\xff\xff0" + b"j\xfe\xff\xff\xff"))
    torch_zip("length-2-60", ok(b"\x8d" + struct.pack("<Q", 1 << 60) + b"abc"))
    torch_zip("long4-huge", ok(b"\x8b" + struct.pack("<i", 2**31 - 1) + b"\x00" * 16))
    torch_zip("frame-huge", b"\x80\x04\x95" + struct.pack("<Q", 1 << 62) + b"N.")
    # 2^200 paths through shared lists: L(n+1) = [L(n), L(n)].
    blow = b"]q\x00" + p_int(1) + b"a"
    for i in range(1, 200):
        blow += b"](h" + bytes([(i - 1) % 256]) + b"h" + bytes([(i - 1) % 256]) + b"eq" + bytes([i % 256])
    torch_zip("shared-blowup", ok(blow))
    torch_zip("self-cycle", ok(b"]q\x00h\x00a"))
    # Keys distinct in Python that print the same (each NaN is its own key,
    # printed "NaN"): every one renamed, "NaN"#2, #3, ..., in linear time,
    # with the notes capped.
    torch_zip("nan-keys", ok(b"}(" + (p_float(float("nan")) + b"N") * 3000 + b"u"))
    # One tensor at one path many ways: D(k) = {"x": D(k+1), "x.x": D(k+2)}
    # reaches D(n), a tensor, at path x.x...x by Fibonacci(n) routes.
    n = 16
    fib = p_tensor(p_storage("0", 4), 0, [4], [1]) + b"q" + bytes([n])
    nxt = None
    for k in range(n - 1, -1, -1):
        d = b"}(" + p_str("x") + b"h" + bytes([k + 1]) + p_str("x.x") + b"h" + bytes([min(k + 2, n)]) + b"uq" + bytes([k])
        fib += d
    torch_zip("path-collisions", ok(fib + b"0h\x00"))
    # One node per byte (NONE): about 36 bytes of memory per byte of pickle.
    torch_zip("none-flood", ok(b"(" + b"N" * 60000 + b"l"))
    torch_zip("unknown-opcode", ok(p_dict((p_str("w"), one))) [:-1] + b"\xff.")
    torch_zip("truncated-pickle", ok(p_dict((p_str("w"), one)))[:40])
    torch_zip("stack-underflow", ok(b"a"))
    torch_zip("mark-misuse", ok(p_int(1) + b"u"))
    # Archive and storage problems.
    torch_zip("missing-storage", ok(p_dict((p_str("w"), one))), storages={})
    torch_zip("short-storage", ok(p_dict((p_str("w"), one))), storages={"0": b"\x00" * 8})
    torch_zip("view-past-storage", ok(p_dict((p_str("w"), p_tensor(p_storage("0", 4), 0, [3, 2], [1, 2])))))
    torch_zip("deflated", ok(p_dict((p_str("w"), one))), deflate={"data/0"})
    torch_zip("deflated-pickle", ok(p_dict((p_str("w"), one))), deflate={"data.pkl"})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(zipfile.ZipInfo("nodata/version"), b"3\n")
    (BAD / "no-data-pkl.pt").write_bytes(out.getvalue())
    (BAD / "plain-pickle.pt").write_bytes(ok(p_dict((p_str("a"), p_int(1)))))
    (BAD / "not-torch.pt").write_bytes(b"hello, world\n")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    BAD.mkdir(parents=True, exist_ok=True)
    for f in list(OUT.glob("*.pt")) + list(OUT.glob("expected-*")) + list(BAD.glob("*.pt")):
        f.unlink()

    save("dtypes", dtype_dict())
    save("dtypes-legacy", dtype_dict(), legacy=True, load_zip_twin=True)
    save("views", views_dict())
    save("views-legacy", views_dict(), legacy=True, load_zip_twin=True)
    save("params", params_state_dict())
    save("nanogpt", nanogpt())
    save("nanogpt-legacy", nanogpt(), legacy=True)
    save("nested", nested())
    save("namespace", {"model": params_state_dict(), "args": argparse.Namespace(lr=0.1, name="run-1", layers=[1, 2], extra={"a": None})}, safe=[argparse.Namespace])
    save("unsupported", unsupported())
    save("archive-folder", {"w": gen((3,), torch.float32, 40)}, via_buffer=True)
    save("tensor-root", gen((2, 2), torch.float64, 41))
    save("views-proto1", views_dict(), protocol=1, load_zip_twin=True)
    save("nanogpt-proto4-legacy", nanogpt(), legacy=True, protocol=4, load_zip_twin=True)
    save("nested-proto5", nested(), protocol=5, load_zip_twin=True)
    for proto in [0, 1, 3, 4, 5]:
        plain(f"plain-proto{proto}", plain_data(proto), proto)
    save("large", {"big": gen((130, 130), torch.float32, 42), "small": gen((3,), torch.int8, 43)})
    big_endian("bigendian")
    rezipped("rezipped", OUT / "views.pt")
    duplicate_keys()
    hostile()

    (OUT / "SOURCE.json").write_text(
        json.dumps(
            {
                "generator": "scripts/make_torch_fixtures.py",
                "python": sys.version.split()[0],
                "torch": torch.__version__,
                "safetensors": safetensors.__version__,
                "numpy": numpy.__version__,
            },
            indent=1,
            sort_keys=True,
        )
        + "\n"
    )
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
