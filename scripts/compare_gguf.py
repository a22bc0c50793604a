#!/usr/bin/env python3
"""Compare two GGUF files field by field: every key/value (type and value, in
order), every tensor (name, type, shape, offset) and its bytes. Keys that name
the model's authorship (general.name, the model card's fields) may differ and
are listed apart, as docs/GGUF_OUT.md allows.

    python scripts/compare_gguf.py REFERENCE.gguf OURS.gguf [--json]

Exit status 0 when they are the same model file, 1 otherwise (one line per
difference). Needs the `gguf` package (gguf-py) and numpy.
"""

import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType

# Keys gyrofs may write differently (docs/GGUF_OUT.md, "Authorship keys").
AUTHORSHIP = (
    "general.name", "general.author", "general.version", "general.organization",
    "general.finetune", "general.basename", "general.description", "general.quantized_by",
    "general.license", "general.license.name", "general.license.link", "general.url",
    "general.doi", "general.uuid", "general.repo_url", "general.source.", "general.base_model.",
    "general.dataset.", "general.tags", "general.languages",
)


def authorship(key):
    return any(key == a or (a.endswith(".") and key.startswith(a)) for a in AUTHORSHIP)


def value(field):
    t = field.types[0] if field.types else None
    if t == GGUFValueType.ARRAY:
        sub = field.types[1] if len(field.types) > 1 else None
        if sub == GGUFValueType.STRING:
            return ("array", "string", [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data])
        return ("array", str(sub), [field.parts[i].tobytes() for i in field.data])
    if t == GGUFValueType.STRING:
        return ("string", bytes(field.parts[field.data[0]]).decode("utf-8", "replace"))
    return (str(t), field.parts[field.data[0]].tobytes())


def load(path):
    r = GGUFReader(path)
    kv = [(k, value(f)) for k, f in r.fields.items() if not k.startswith("GGUF.")]
    tensors = [(t.name, int(t.tensor_type), [int(x) for x in t.shape], int(t.data_offset),
                np.asarray(t.data).tobytes()) for t in r.tensors]
    return kv, tensors


def compare(ref_path, ours_path):
    ref_kv, ref_t = load(ref_path)
    our_kv, our_t = load(ours_path)
    problems = []
    ref_keys = [k for k, _ in ref_kv if not authorship(k)]
    our_keys = [k for k, _ in our_kv if not authorship(k)]
    if ref_keys != our_keys:
        problems.append(f"key order differs:\n  reference {ref_keys}\n  ours      {our_keys}")
    ours = dict(our_kv)
    for k, v in ref_kv:
        if authorship(k) or k not in ours:
            continue
        if ours[k] != v:
            problems.append(f"{k}: reference {str(v)[:300]} != ours {str(ours[k])[:300]}")
    if len(ref_t) != len(our_t):
        problems.append(f"{len(ref_t)} tensors in the reference, {len(our_t)} in ours")
    for a, b in zip(ref_t, our_t):
        if a[:3] != b[:3]:
            problems.append(f"tensor {a[:3]} != {b[:3]}")
        elif a[4] != b[4]:
            n = sum(x != y for x, y in zip(a[4], b[4]))
            problems.append(f"tensor {a[0]}: {n} of {len(a[4])} bytes differ")
    # Offsets relative to the data section (the headers' lengths differ by
    # the authorship keys).
    rel = lambda ts: [t[3] - ts[0][3] for t in ts] if ts else []
    if rel(ref_t) != rel(our_t):
        problems.append("tensor data offsets differ")
    skipped = sorted({k for k, _ in ref_kv + our_kv if authorship(k)})
    return problems, skipped


def main():
    ref, ours = sys.argv[1], sys.argv[2]
    problems, skipped = compare(ref, ours)
    for p in problems:
        print(p)
    if not problems:
        print(f"same ({len(skipped)} authorship keys not compared: {', '.join(skipped) or 'none'})")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
