#!/usr/bin/env python3
"""The original tokenizers of the SentencePiece GGUF fixtures, next to transformers' GGUF one.

tests/data/gguf-models/ARCH.tokenizer.json records what transformers' GGUF loader makes of a
GGUF's tokenizer (scripts/make_gguf_models.py). Where that loader's pipeline differs from the
tokenizer the model was made with (phi3: transformers 5.24 gives a Phi-3 GGUF a Prepend+Replace
normalizer, which puts an extra "▁" before text that starts with a space; the model's own
`LlamaTokenizer` uses a Metaspace pre-tokenizer that does not), gyrofs follows the original. This
script rebuilds each SentencePiece fixture's original tokenizer exactly as make_gguf_models.py
made it (the trainer is deterministic; the vocabulary is checked against the GGUF's), and adds
to ARCH.tokenizer.json an "original" entry: its class, normalizer, pre-tokenizer and decoder,
and its encodings of the test strings plus strings of leading, repeated and mixed whitespace
(a case gyrofs knowingly encodes otherwise says why, `known_difference`).
tests/gguf_hf.rs compares gyrofs's pipeline with it, scripts/check_gguf_hf.py the encodings.

    /opt/pyref/bin/python scripts/make_spm_originals.py [ARCH ...]
"""

import json
import runpy
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
M = runpy.run_path(str(HERE / "make_gguf_models.py"), run_name="make_gguf_models")
OUT = M["OUT"]

# SentencePiece fixtures: arch -> a GGUF of it (for the vocabulary check).
SPM = {"llama": "llama-f16.gguf", "gemma2": "gemma2-bf16.gguf", "gemma3": "gemma3-f16.gguf",
       "phi3": "phi3-f16.gguf", "nemotron": "nemotron-bf16.gguf"}

# Where gyrofs knowingly differs from the original: arch -> (text containing, why).
GEMMA_KNOWN = ("<start_of_turn>", "a user-defined piece of the SentencePiece model: one token to the original, "
               "plain text to transformers' GGUF tokenizer and to gyrofs, which follow the GGUF's token types")
KNOWN = {"gemma2": GEMMA_KNOWN, "gemma3": GEMMA_KNOWN}

WHITESPACE = [
    "  leading spaces and  double  spaces\tand a tab",
    " one leading space",
    "\tleading tab",
    "\t two  \t kinds\t\t",
    "trailing   ",
    "   ",
    "\n\n  x \n",
    "a\u3000b\u00a0c",
]


def main():
    import transformers
    from gguf import GGUFReader

    for arch in sys.argv[1:] or list(SPM):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            M["ARCHS"][arch][0](folder)
            tok = transformers.AutoTokenizer.from_pretrained(folder)
        reader = GGUFReader(str(OUT / SPM[arch]))
        tokens = reader.fields["tokenizer.ggml.tokens"].contents()
        vocab = tok.get_vocab()
        if any(vocab.get(t) != i for i, t in enumerate(tokens) if t in vocab) or \
                sum(t in vocab for t in tokens) < len(tokens) * 0.9:
            sys.exit(f"{arch}: the rebuilt tokenizer's vocabulary is not the GGUF's")
        pipeline = json.loads(tok.backend_tokenizer.to_str())
        texts = M["TESTS"] + WHITESPACE
        cases = [{"text": t, "ids_no_special": tok(t, add_special_tokens=False)["input_ids"]} for t in texts]
        for c in cases:
            if KNOWN.get(arch, ("",))[0] in c["text"] and arch in KNOWN:
                c["known_difference"] = KNOWN[arch][1]
        path = OUT / f"{arch}.tokenizer.json"
        ref = json.loads(path.read_text())
        ref["original"] = {"class": type(tok).__name__,
                           **{k: pipeline[k] for k in ("normalizer", "pre_tokenizer", "decoder")},
                           "cases": cases}
        path.write_text(M["canonical"](ref))
        print(f"{arch}: {type(tok).__name__}, {len(cases)} cases")


if __name__ == "__main__":
    main()
