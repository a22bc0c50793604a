#!/usr/bin/env python3
"""Load gyrofs's GGUF -> Hugging Face folders with transformers and compare.

    /opt/pyref/bin/python scripts/check_gguf_hf.py --mount [path/to/gyrofs [fixture-prefix ...]]
        mounts every fixture GGUF (or those named) with gyrofs and checks MNT/bf16 (the product);
    GYROFS_GGUF_HF_EXPORT=/tmp/ghf cargo test --test gguf_hf export_folders
    /opt/pyref/bin/python scripts/check_gguf_hf.py /tmp/ghf
        checks folders written from the mapping alone (no mount).

For each folder (one per fixture in tests/data/gguf-models/): the state dict of
AutoModelForCausalLM.from_pretrained(folder, dtype=bfloat16) equals
transformers' own GGUF load bit for bit (the .expected.safetensors), the
logits equal those of the model loaded from the GGUF (with the config fixes
of make_gguf_models.py where transformers' loader is wrong), and
AutoTokenizer.from_pretrained(folder) encodes and decodes the test strings
exactly as the GGUF tokenizer does (the .tokenizer.json cases).
"""

import json
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_gguf_models as m  # noqa: E402
from gyrofs_mount import mounted  # noqa: E402


def main():
    if sys.argv[1] == "--mount":
        root = Path(__file__).resolve().parent.parent
        gyrofs = sys.argv[2] if len(sys.argv) > 2 else str(root / "target" / "release" / "gyrofs")
        failures = 0
        only = sys.argv[3:]
        for gguf in sorted(m.OUT.glob("*.gguf")):
            if only and not any(gguf.stem.startswith(o) for o in only):
                continue
            with mounted(gyrofs, gguf) as mnt:
                failures += check(mnt / "bf16", gguf.stem)
        sys.exit(1 if failures else 0)
    root = Path(sys.argv[1])
    failures = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        failures += check(folder, folder.name)
    sys.exit(1 if failures else 0)


def check(folder, name):
    """Check one Hugging Face folder made from fixture `name`; 1 on failure."""
    if True:
        arch = name.rsplit("-", 1)[0]
        problems = []
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
        expected = load_file(str(m.OUT / f"{name}.expected.safetensors"))
        state = model.state_dict()
        for key, value in expected.items():
            if key not in state or not torch.equal(state[key].view(torch.int16), value.view(torch.int16)):
                problems.append(f"tensor {key}")
        if arch == "gpt_oss":
            # transformers cannot read the GGUF (make_gguf_models.GPT_OSS_NOTE): the reference is the
            # original model, saved again from its config and state dict and loaded as any folder
            import tempfile
            from safetensors.torch import save_file

            to_dict = json.loads((m.OUT / f"{arch}.config.json").read_text())["to_dict"]
            with tempfile.TemporaryDirectory() as tmp:
                transformers.GptOssConfig.from_dict(to_dict).save_pretrained(tmp)
                save_file(expected, str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
                ref = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16)
        else:
            if arch in m.LOADER_PATCHES:
                m.LOADER_PATCHES[arch]()
            fixes = m.FIXES[arch](m.metadata(m.OUT / f"{name}.gguf")) if arch in m.FIXES else {}
            kwargs = {}
            if fixes:
                config = transformers.AutoConfig.from_pretrained(m.OUT, gguf_file=f"{name}.gguf")
                m.apply_fixes(config, fixes)
                kwargs["config"] = config
            ref = transformers.AutoModelForCausalLM.from_pretrained(m.OUT, gguf_file=f"{name}.gguf",
                                                                    dtype=torch.bfloat16, **kwargs)
        ids = torch.tensor([[1, 5, 9, 17, 33, 65, 100, 7]])
        with torch.no_grad():
            if not torch.equal(model(ids).logits, ref(ids).logits):
                problems.append("logits")
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        tokref = json.loads((m.OUT / f"{arch}.tokenizer.json").read_text())
        cases = tokref["cases"]
        # Where transformers' GGUF tokenizer and the model's own differ (phi3), gyrofs follows the
        # original: its encodings (scripts/make_spm_originals.py) instead of these.
        original = tokref.get("original", {}).get("cases", [])
        for case in original:
            if tok(case["text"], add_special_tokens=False)["input_ids"] != case["ids_no_special"]:
                if "known_difference" in case:
                    print(f"  {name}: {case['text']!r} differs from the original tokenizer, as documented: "
                          f"{case['known_difference']}")
                else:
                    problems.append(f"tokenizer on {case['text']!r} (the original tokenizer's encoding)")
        differs = {o["text"] for o in original} - {(c["text"]) for c in cases if
                                                   {"text": c["text"], "ids_no_special": c["ids_no_special"]} in original}
        cases = [c for c in cases if c["text"] not in differs]
        for case in cases:
            ids = tok(case["text"])["input_ids"]
            if ids != case["ids"] or tok.decode(ids) != case["decoded"] or \
                    tok.decode(ids, skip_special_tokens=True) != case["decoded_skip_special"] or \
                    tok(case["text"], add_special_tokens=False)["input_ids"] != case["ids_no_special"]:
                problems.append(f"tokenizer on {case['text']!r}")
        print(name, "ok" if not problems else problems)
        return int(bool(problems))


if __name__ == "__main__":
    main()
