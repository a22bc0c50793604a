#!/opt/pyref/bin/python
"""Write a GGUF with a big tokenizer, to measure mounting it (issue 24):
the tiny gemma3 model of tests/data/gguf-models/gemma3-f16.gguf with its
vocabulary replaced by N made-up tokens (with scores and token types) and N
merges in `tokenizer.ggml.merges`: N = 262144 is Gemma 3's vocabulary size.

    scripts/make_big_vocab_gguf.py OUT.gguf [N]

Needs the gguf package (/opt/pyref). Not a fixture: scripts/measure_mount.sh
makes it in a temporary folder.
"""

import sys
from pathlib import Path

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "tests/data/gguf-models/gemma3-f16.gguf"
REPLACED = {
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
}


def field_value(field):
    """A reader field's value as GGUFWriter takes it."""
    types = field.types
    if types[0] == gguf.GGUFValueType.ARRAY:
        return [field.contents(i) for i in range(len(field.data))]
    return field.contents()


def main():
    out = Path(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 262144
    r = gguf.GGUFReader(BASE)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(out, arch)
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in REPLACED:
            continue
        types = field.types
        value = field_value(field)
        if types[0] == gguf.GGUFValueType.ARRAY:
            w.add_array(key, value)
        else:
            w.add_key_value(key, value, types[0])
    # The base's tokens first (its special tokens keep their ids), then
    # made-up ones: "▁" + the index spelled in letters, like word pieces.
    base = field_value(r.fields["tokenizer.ggml.tokens"])
    letters = "abcdefghijklmnopqrstuvwxyz"

    def word(i):
        s = ""
        while True:
            s = letters[i % 26] + s
            i //= 26
            if i == 0:
                return "\u2581" + s

    tokens = list(base) + [word(i) for i in range(n - len(base))]
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) for i in range(n)])
    w.add_token_types([1] * n)
    merges = [f"{t[:2]} {t[2:]}" for t in tokens if len(t) > 2]
    merges += ["\u2581 a"] * (n - len(merges))
    w.add_token_merges(merges[:n])
    for t in r.tensors:
        w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
