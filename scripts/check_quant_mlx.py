#!/usr/bin/env python3
"""End to end: the MLX fixtures mounted by gyrofs, loaded by transformers.

    /opt/q-mlx/bin/python scripts/check_quant_mlx.py [path/to/gyrofs]

(the environment of scripts/make_quant_mlx.py; gyrofs defaults to
target/debug/gyrofs). For every case under tests/data/quant/mlx/, mounts
its `model/` folder and checks that:
- every tensor of MNT/bf16 equals `reference.safetensors` (mx.dequantize,
  cast to BF16), and MNT/f16 equals `reference-f16.safetensors` where the
  case has one; and mx.dequantize run now on the stored tensors still gives
  the committed reference (the mlx installed here agrees with the fixtures);
- `AutoModelForCausalLM.from_pretrained(MNT/bf16)` loads with no missing or
  unexpected weights, and for the case with `logits.safetensors` its logits
  for `input_ids` equal the reference model's, bit for bit.
Prints one line per check and exits non-zero on the first failure.
"""

import json
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import torch
import transformers
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from gyrofs_mount import mounted  # noqa: E402

GYROFS = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target" / "debug" / "gyrofs"
DATA = ROOT / "tests" / "data" / "quant" / "mlx"


def view(mnt: Path, d: str) -> dict:
    out = {}
    for f in sorted((mnt / d).glob("model*.safetensors")):
        out.update(load_file(str(f)))
    return out


def same(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys(), f"{what}: names {sorted(got.keys() ^ want.keys())}"
    for k, w in want.items():
        g = got[k]
        assert g.dtype == w.dtype and g.shape == w.shape, f"{what}: {k}: {g.dtype} {g.shape}"
        assert torch.equal(g.view(torch.int16), w.view(torch.int16)), f"{what}: {k} differs"
    print(f"ok  {what}: {len(want)} tensors bit-identical")


def mlx_again(case: Path, want: dict) -> None:
    """mx.dequantize of the stored tensors, now, equals the committed reference."""
    q = json.loads((case / "model" / "config.json").read_text())["quantization"]
    w = mx.load(str(case / "model" / "model.safetensors"))
    n = 0
    for name, t in w.items():
        base = name[: -len(".weight")] if name.endswith(".weight") else None
        if base is None or f"{base}.scales" not in w:
            continue
        p = q.get(base, q)
        p = q if p is True else p
        d = mx.dequantize(
            t, w[f"{base}.scales"], w.get(f"{base}.biases"),
            group_size=p["group_size"], bits=p["bits"], mode=p.get("mode", "affine"),
        )
        d = torch.from_numpy(np.array(d.astype(mx.float32))).to(torch.bfloat16)
        assert torch.equal(d.view(torch.int16), want[name].view(torch.int16)), name
        n += 1
    print(f"ok  {case.name}: mx.dequantize {mx.__version__} still gives the reference ({n} weights)")


def main() -> None:
    for case in sorted(p for p in DATA.iterdir() if p.is_dir()):
        ref = load_file(str(case / "reference.safetensors"))
        mlx_again(case, ref)
        f16 = case / "reference-f16.safetensors"
        args = ["--dtype", "bf16,f16"] if f16.exists() else []
        with mounted(GYROFS, case / "model", *args) as mnt:
            same(view(mnt, "bf16"), ref, f"{case.name} bf16/")
            if f16.exists():
                same(view(mnt, "f16"), load_file(str(f16)), f"{case.name} f16/")
            model, info = transformers.AutoModelForCausalLM.from_pretrained(
                mnt / "bf16", dtype=torch.bfloat16, output_loading_info=True
            )
            missing = [k for key in ("missing_keys", "unexpected_keys", "mismatched_keys") for k in info[key]]
            assert not missing, f"{case.name}: {missing}"
            logits_file = case / "logits.safetensors"
            if logits_file.exists():
                golden = load_file(str(logits_file))
                with torch.no_grad():
                    logits = model(golden["input_ids"]).logits.float()
                assert torch.equal(logits, golden["logits"]), (
                    f"{case.name}: logits differ by {(logits - golden['logits']).abs().max()}"
                )
                print(f"ok  {case.name}: from_pretrained(MNT/bf16) logits {tuple(logits.shape)} "
                      "equal the reference model's")
            else:
                print(f"ok  {case.name}: from_pretrained(MNT/bf16) loads every weight")
            del model
    print("all MLX checks passed")


if __name__ == "__main__":
    main()
