#!/usr/bin/env python3
"""Generate src/quant/ggml_tables.rs: the lookup tables of the ggml IQ quant types.

    /opt/pyref/bin/python scripts/make_ggml_tables.py [OUT]   (default: src/quant/ggml_tables.rs)

The tables are taken from the `gguf` Python package (gguf.quants), which is the
reference gyrofs's GGUF dequantization is tested against, so that the Rust
kernels index exactly the grids the reference uses:

- KSIGNS (128 bytes): `gguf.quants.IQ2_XXS.ksigns`, the 7-bit -> 8-bit sign
  pattern table (bit i set = element i negative) of IQ2_XXS, IQ2_XS, IQ3_XXS.
- IQ2XXS_GRID (256), IQ2XS_GRID (512), IQ2S_GRID (1024), IQ1S_GRID (2048):
  rows of 8 grid values; IQ3XXS_GRID (256), IQ3S_GRID (512): rows of 4.
  Each row is the class's `grid` after `init_grid()` (float32 values that are
  small integers), packed little-endian one byte per value: value j of a row is
  byte j (`(row >> 8*j) & 0xFF`); IQ1S values (-1, 0, 1) are stored as
  two's-complement bytes. This is the same packing ggml's C tables use
  (iq2xxs_grid, ...), so the rows can be compared with ggml-common.h.
- IQ4NL_VALUES (16, i8): `gguf.quants.IQ4_NL.kvalues` (also used by IQ4_XS).
- FP4_VALUES_X2 (16, i8): `gguf.quants.MXFP4.kvalues`, the E2M1 values doubled
  (also used by NVFP4).

Deterministic: the output depends only on the installed gguf package.
"""

import sys

import numpy as np
from gguf import quants

OUT = sys.argv[1] if len(sys.argv) > 1 else "src/quant/ggml_tables.rs"


def grid_rows(cls, signed=False):
    cls.init_grid()
    g = np.asarray(cls.grid, dtype=np.float32).reshape(cls.grid_shape)
    rows = []
    for r in g:
        vals = [int(v) for v in r]
        assert all(float(v) == float(x) for v, x in zip(vals, r)), "grid value not an integer"
        packed = 0
        for j, v in enumerate(vals):
            b = v & 0xFF if signed else v
            assert 0 <= b <= 255
            packed |= b << (8 * j)
        rows.append(packed)
    return rows


def emit_rows(out, name, rows, width, per_line, doc):
    ty = "u64" if width == 8 else "u32"
    digits = 2 * width
    out.append(f"/// {doc}")
    out.append("#[rustfmt::skip]")
    out.append(f"pub static {name}: [{ty}; {len(rows)}] = [")
    for i in range(0, len(rows), per_line):
        chunk = rows[i:i + per_line]
        out.append("    " + " ".join(f"0x{r:0{digits}x}," for r in chunk))
    out.append("];")
    out.append("")


def main():
    out = [
        "//! Lookup tables of the ggml IQ / FP4 quant types (generated, do not edit).",
        "//!",
        "//! Written by `scripts/make_ggml_tables.py` from the `gguf` Python package",
        "//! (`gguf.quants`), the reference the kernels in `ggml.rs` are tested against.",
        "//! Grid rows pack one value per byte, little-endian: value j of a row is",
        "//! `(row >> (8 * j)) as u8` (IQ1S: as i8).",
        "",
    ]
    ksigns = list(quants.IQ2_XXS.ksigns)
    assert len(ksigns) == 128
    out.append("/// IQ2_XXS / IQ2_XS / IQ3_XXS sign patterns: 7-bit index -> 8 sign bits.")
    out.append("#[rustfmt::skip]")
    out.append("pub static KSIGNS: [u8; 128] = [")
    for i in range(0, 128, 16):
        out.append("    " + " ".join(f"0x{b:02x}," for b in ksigns[i:i + 16]))
    out.append("];")
    out.append("")
    emit_rows(out, "IQ2XXS_GRID", grid_rows(quants.IQ2_XXS), 8, 4, "IQ2_XXS grid: 256 rows of 8 values in {8, 25, 43}.")
    emit_rows(out, "IQ2XS_GRID", grid_rows(quants.IQ2_XS), 8, 4, "IQ2_XS grid: 512 rows of 8 values in {8, 25, 43}.")
    emit_rows(out, "IQ2S_GRID", grid_rows(quants.IQ2_S), 8, 4, "IQ2_S grid: 1024 rows of 8 values in {8, 25, 43}.")
    emit_rows(out, "IQ3XXS_GRID", grid_rows(quants.IQ3_XXS), 4, 8, "IQ3_XXS grid: 256 rows of 4 values in {4, 12, ..., 62}.")
    emit_rows(out, "IQ3S_GRID", grid_rows(quants.IQ3_S), 4, 8, "IQ3_S grid: 512 rows of 4 values in {1, 3, ..., 15}.")
    emit_rows(out, "IQ1S_GRID", grid_rows(quants.IQ1_S, signed=True), 8, 4,
              "IQ1_S / IQ1_M grid: 2048 rows of 8 values in {-1, 0, 1} (two's-complement bytes).")
    iq4 = list(quants.IQ4_NL.kvalues)
    out.append("/// IQ4_NL / IQ4_XS non-linear 4-bit values.")
    out.append("#[rustfmt::skip]")
    out.append("pub static IQ4NL_VALUES: [i8; 16] = [" + ", ".join(str(v) for v in iq4) + "];")
    out.append("")
    fp4 = list(quants.MXFP4.kvalues)
    assert fp4 == list(quants.NVFP4.kvalues)
    out.append("/// FP4 E2M1 values doubled (MXFP4, NVFP4): index = nibble.")
    out.append("#[rustfmt::skip]")
    out.append("pub static FP4_VALUES_X2: [i8; 16] = [" + ", ".join(str(v) for v in fp4) + "];")
    with open(OUT, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
