//! Float32 and float16 outputs, for the `f32/` and `f16/` views
//! (`gyrofs mount --dtype bf16,f16,f32`).
//!
//! Every stored number format is first turned into its float32 value, and
//! that value is then written as F32 or rounded once to F16:
//! - F16, BF16, F8_E4M3, F8_E5M2 and MXFP4 values are exact in f32 (an MXFP4
//!   value `FP4 x 2^(s - 127)` of magnitude 2^128 or more is +/-inf, as in
//!   transformers' float32 dequantization); F64 is rounded to f32 (nearest
//!   even), as torch's `.to(torch.float32)` does; block-scaled FP8 is the f32
//!   product `f32(w) x scale_inv`; GGUF types are gguf-py's float32 values
//!   (`ggml::dequantize_f32`);
//! - F16 outputs are `f16(f32 value)`: one rounding to nearest even, values
//!   of magnitude 65520 or more become +/-inf, subnormals are kept (what
//!   torch's `.to(torch.float16)` does; for MXFP4 it is what transformers'
//!   `_convert_moe_packed_tensors(dtype=torch.float16)` computes with exact
//!   `ldexp` scaling, and for GGUF what its loader does: float32, then cast).
//!
//! NaN: as for BF16 (docs/NUMERICS.md), every NaN output is one canonical
//! encoding, `0x7E00` (F16) or `0x7FC00000` (F32), whatever torch's code path
//! would give. The golden tests (`tests/data/quant/*.f16`, `*.f32`, written
//! by scripts/make_dtype_golden.py) pin every other bit.
//!
//! These kernels are scalar: the converted views people load are BF16; F16
//! and F32 are for loaders and GPUs that need them, at a few GB/s.

use super::KernelError;
use super::fp8::{BlockScaledSlice, E4M3_F32, E5M2_F32};
use super::mxfp4::{FP4_E2M1, Pair, Transposed};
use crate::dtype::Dtype;

/// The canonical F16 NaN.
pub const F16_NAN: u16 = 0x7E00;
/// The canonical F32 NaN.
pub const F32_NAN: u32 = 0x7FC0_0000;

/// `x` rounded to F16 bits: nearest, ties to even; +/-inf from 65520 up;
/// subnormals kept; NaN -> [`F16_NAN`].
pub fn f16_from_f32(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let abs = b & 0x7FFF_FFFF;
    if abs > 0x7F80_0000 {
        return F16_NAN;
    }
    if abs >= 0x477F_F000 {
        // 65520 = 65504 + half an F16 ulp: the tie rounds to even, past the
        // largest finite F16.
        return sign | 0x7C00;
    }
    if abs < 0x3880_0000 {
        // Below 2^-14: F16 subnormals are multiples of 2^-24. Scaling by a
        // power of two is exact in f32.
        let m = (f32::from_bits(abs) * 16_777_216.0).round_ties_even();
        return sign | m as u16;
    }
    let e = (abs >> 23) + 15 - 127;
    let m = abs & 0x7F_FFFF;
    let mut h = (e << 10) | (m >> 13);
    let rem = m & 0x1FFF;
    if rem > 0x1000 || (rem == 0x1000 && h & 1 == 1) {
        h += 1;
    }
    sign | h as u16
}

/// Can [`float_to_f32`] read elements of `d`?
pub fn is_float(d: Dtype) -> bool {
    matches!(
        d,
        Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64 | Dtype::F8_E4M3 | Dtype::F8_E5M2
    )
}

fn length(kernel: &'static str, what: &'static str, got: usize, expected: usize) -> KernelError {
    KernelError::Length {
        kernel,
        what,
        got,
        expected,
    }
}

/// The f32 values of `out.len()` elements of dtype `from` (little-endian
/// bytes in `src`).
pub fn float_to_f32(from: Dtype, src: &[u8], out: &mut [f32]) -> Result<(), KernelError> {
    const K: &str = "wide::float_to_f32";
    let width = (from.bits() / 8) as usize;
    if !is_float(from) {
        return Err(KernelError::Shape {
            kernel: K,
            why: format!("{from} is not a float dtype"),
        });
    }
    if src.len() != out.len() * width {
        return Err(length(K, "input", src.len(), out.len() * width));
    }
    let chunks = src.chunks_exact(width);
    match from {
        Dtype::F16 => chunks.zip(out).for_each(|(c, o)| {
            *o = super::float::f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
        }),
        Dtype::BF16 => chunks.zip(out).for_each(|(c, o)| {
            *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
        }),
        Dtype::F32 => chunks.zip(out).for_each(|(c, o)| {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }),
        Dtype::F64 => chunks.zip(out).for_each(|(c, o)| {
            *o = f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32;
        }),
        Dtype::F8_E4M3 => chunks
            .zip(out)
            .for_each(|(c, o)| *o = E4M3_F32[c[0] as usize]),
        _ => chunks
            .zip(out)
            .for_each(|(c, o)| *o = E5M2_F32[c[0] as usize]),
    }
    Ok(())
}

/// The exact f32 value of an MXFP4 nibble under scale byte `scale` (+/-inf
/// at 2^128 and above).
pub fn mxfp4_value(scale: u8, nibble: u8) -> f32 {
    // Exact in f64 (a 2-bit significand times a power of two in range);
    // the cast to f32 is exact or overflows.
    let pow2 = f64::from_bits((scale as u64 + 1023 - 127) << 52);
    (FP4_E2M1[(nibble & 15) as usize] as f64 * pow2) as f32
}

/// MXFP4 values `first .. first + out.len()` (storage order) of `pair`.
pub fn mxfp4_to_f32(pair: &Pair, first: usize, out: &mut [f32]) -> Result<(), KernelError> {
    const K: &str = "wide::mxfp4_to_f32";
    let end = first.checked_add(out.len());
    if end.is_none_or(|e| e > pair.values()) {
        return Err(KernelError::Shape {
            kernel: K,
            why: format!("values {first}+{} past {}", out.len(), pair.values()),
        });
    }
    let (blocks, scales) = (pair.blocks(), pair.scales());
    for (k, o) in out.iter_mut().enumerate() {
        let v = first + k;
        let byte = blocks[v / 2];
        let nibble = if v.is_multiple_of(2) {
            byte & 15
        } else {
            byte >> 4
        };
        *o = mxfp4_value(scales[v / 32], nibble);
    }
    Ok(())
}

/// The output rows `x` of one gpt-oss expert dequantized and transposed
/// (`[G*32, R]` of blocks `[R, G, 16]`, see [`Transposed`]):
/// `out[(c - c0) * r + j]` is value `c` of source row `j`, and `out.len()`
/// must be `x.len()`.
pub fn mxfp4_transposed_to_f32(x: &Transposed, out: &mut [f32]) -> Result<(), KernelError> {
    const K: &str = "wide::mxfp4_transposed_to_f32";
    if out.len() != x.len() {
        return Err(length(K, "output", out.len(), x.len()));
    }
    let e = x.expert();
    let (blocks, scales, r, g) = (e.blocks(), e.scales(), e.rows(), e.groups());
    let c0 = x.out_rows().start;
    for c in x.out_rows() {
        let (gi, k) = (c / 32, c % 32);
        for j in 0..r {
            let at = j * g + gi;
            let byte = blocks[at * 16 + k / 2];
            let nibble = if k.is_multiple_of(2) {
                byte & 15
            } else {
                byte >> 4
            };
            out[(c - c0) * r + j] = mxfp4_value(scales[at], nibble);
        }
    }
    Ok(())
}

/// Block-scaled F8_E4M3 elements `x` (see [`BlockScaledSlice`]) as their
/// f32 products with the tile's `scale_inv`; `out.len()` must be the
/// number of elements.
pub fn fp8_block_to_f32(x: &BlockScaledSlice, out: &mut [f32]) -> Result<(), KernelError> {
    const K: &str = "wide::fp8_block_to_f32";
    let (weight, first, scale_inv) = (x.weight(), x.first(), x.scale_inv());
    if weight.len() != out.len() {
        return Err(length(K, "weight", weight.len(), out.len()));
    }
    let geometry = x.layout();
    let (_, gc) = geometry.scale_shape();
    let (cols, (bm, bn)) = (geometry.cols(), geometry.block());
    for (k, (w, o)) in weight.iter().zip(out.iter_mut()).enumerate() {
        let e = first + k;
        let (row, col) = (e / cols, e % cols);
        let s = (row / bm) * gc + col / bn;
        let scale = f32::from_le_bytes(scale_inv[s * 4..s * 4 + 4].try_into().expect("4 bytes"));
        *o = E4M3_F32[*w as usize] * scale;
    }
    Ok(())
}

/// Write `values` as `to` (F32 or F16), little-endian, into `out`.
pub fn encode(values: &[f32], to: Dtype, out: &mut [u8]) -> Result<(), KernelError> {
    const K: &str = "wide::encode";
    match to {
        Dtype::F32 => {
            if out.len() != values.len() * 4 {
                return Err(length(K, "output", out.len(), values.len() * 4));
            }
            for (v, o) in values.iter().zip(out.chunks_exact_mut(4)) {
                let bits = if v.is_nan() { F32_NAN } else { v.to_bits() };
                o.copy_from_slice(&bits.to_le_bytes());
            }
        }
        Dtype::F16 => {
            if out.len() != values.len() * 2 {
                return Err(length(K, "output", out.len(), values.len() * 2));
            }
            for (v, o) in values.iter().zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&f16_from_f32(*v).to_le_bytes());
            }
        }
        other => {
            return Err(KernelError::Shape {
                kernel: K,
                why: format!("{other} is not a wide output"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::fp8::BlockScaled;
    use crate::quant::golden::{read, u16s, u32s};
    use crate::quant::mxfp4::Expert;

    fn is_nan16(b: u16) -> bool {
        b & 0x7C00 == 0x7C00 && b & 0x03FF != 0
    }

    fn is_nan32(b: u32) -> bool {
        b & 0x7F80_0000 == 0x7F80_0000 && b & 0x007F_FFFF != 0
    }

    /// gyrofs's output equals torch's, but for NaN, where it is canonical.
    #[track_caller]
    fn check16(what: &str, got: &[u16], want: &[u16]) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let w = if is_nan16(w) { F16_NAN } else { w };
            assert_eq!(g, w, "{what}[{i}]: got {g:#06x} want {w:#06x}");
        }
    }

    #[track_caller]
    fn check32(what: &str, got: &[u32], want: &[u32]) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let w = if is_nan32(w) { F32_NAN } else { w };
            assert_eq!(g, w, "{what}[{i}]: got {g:#010x} want {w:#010x}");
        }
    }

    fn wide(from: Dtype, src: &[u8], to: Dtype) -> Vec<u8> {
        let n = src.len() / (from.bits() / 8) as usize;
        let mut vals = vec![0f32; n];
        float_to_f32(from, src, &mut vals).unwrap();
        let mut out = vec![0u8; n * (to.bits() / 8) as usize];
        encode(&vals, to, &mut out).unwrap();
        out
    }

    #[test]
    fn floats_match_torch() {
        let all16: Vec<u8> = (0..=u16::MAX).flat_map(|c| c.to_le_bytes()).collect();
        let f = wide(Dtype::F16, &all16, Dtype::F32);
        check32("f16->f32", &u32s(&f), &u32s(&read("float_f16_all.f32")));
        let f = wide(Dtype::BF16, &all16, Dtype::F32);
        check32("bf16->f32", &u32s(&f), &u32s(&read("float_bf16_all.f32")));
        let f = wide(Dtype::BF16, &all16, Dtype::F16);
        check16("bf16->f16", &u16s(&f), &u16s(&read("float_bf16_all.f16")));
        let f = wide(Dtype::F32, &read("float_f32.in"), Dtype::F16);
        check16("f32->f16", &u16s(&f), &u16s(&read("float_f32.f16")));
        let f = wide(Dtype::F64, &read("float_f64.in"), Dtype::F32);
        check32("f64->f32", &u32s(&f), &u32s(&read("float_f64.f32")));
        let f = wide(Dtype::F64, &read("float_f64.in"), Dtype::F16);
        check16("f64->f16", &u16s(&f), &u16s(&read("float_f64.f16")));
        let codes: Vec<u8> = (0..=255).collect();
        for (d, name) in [(Dtype::F8_E4M3, "e4m3"), (Dtype::F8_E5M2, "e5m2")] {
            let f = wide(d, &codes, Dtype::F16);
            check16(name, &u16s(&f), &u16s(&read(&format!("fp8_{name}.f16"))));
            let f = wide(d, &codes, Dtype::F32);
            check32(name, &u32s(&f), &u32s(&read(&format!("fp8_{name}.f32"))));
        }
    }

    #[test]
    fn mxfp4_matches_transformers() {
        let mut f32s = Vec::new();
        let mut f16s = Vec::new();
        for s in 0..=255u8 {
            for n in 0..16u8 {
                let v = mxfp4_value(s, n);
                f32s.push(if v.is_nan() { F32_NAN } else { v.to_bits() });
                f16s.push(f16_from_f32(v));
            }
        }
        check32("mxfp4 f32", &f32s, &u32s(&read("mxfp4_table.f32")));
        check16("mxfp4 f16", &f16s, &u16s(&read("mxfp4_table.f16")));
    }

    #[test]
    fn fp8_block_matches_torch() {
        for (name, rows, cols, block) in [("a", 130, 260, (128, 128)), ("b", 37, 45, (8, 16))] {
            let geo = BlockScaled::new(rows, cols, block).unwrap();
            let w = read(&format!("fp8_block_{name}.weight"));
            let s = read(&format!("fp8_block_{name}.scale_inv"));
            let mut vals = vec![0f32; rows * cols];
            // In two pieces, to exercise `first`.
            let half = vals.len() / 2 + 3;
            let (a, b) = vals.split_at_mut(half);
            fp8_block_to_f32(&geo.slice(&w[..half], 0, &s).unwrap(), a).unwrap();
            fp8_block_to_f32(&geo.slice(&w[half..], half, &s).unwrap(), b).unwrap();
            let mut out32 = vec![0u8; vals.len() * 4];
            encode(&vals, Dtype::F32, &mut out32).unwrap();
            check32(
                name,
                &u32s(&out32),
                &u32s(&read(&format!("fp8_block_{name}.f32"))),
            );
            let mut out16 = vec![0u8; vals.len() * 2];
            encode(&vals, Dtype::F16, &mut out16).unwrap();
            check16(
                name,
                &u16s(&out16),
                &u16s(&read(&format!("fp8_block_{name}.f16"))),
            );
        }
    }

    #[test]
    fn transposed_agrees_with_natural_order() {
        let (r, g) = (5usize, 3usize);
        let blocks: Vec<u8> = (0..r * g * 16).map(|i| (i * 53 % 256) as u8).collect();
        let scales: Vec<u8> = (0..r * g).map(|i| (110 + i * 7 % 40) as u8).collect();
        let mut natural = vec![0f32; r * g * 32];
        mxfp4_to_f32(&Pair::new(&blocks, &scales).unwrap(), 0, &mut natural).unwrap();
        let (c0, c1) = (7, 70);
        let mut t = vec![0f32; (c1 - c0) * r];
        let x = Expert::new(&blocks, &scales, r, g)
            .unwrap()
            .transposed(c0..c1)
            .unwrap();
        mxfp4_transposed_to_f32(&x, &mut t).unwrap();
        for c in c0..c1 {
            for j in 0..r {
                assert_eq!(
                    t[(c - c0) * r + j].to_bits(),
                    natural[j * g * 32 + c].to_bits()
                );
            }
        }
    }

    /// The F16 rounding against the reference `half` crate on edge cases and
    /// a stride through every f32 bit pattern.
    #[test]
    fn f16_rounding_agrees_with_half() {
        let check = |b: u32| {
            let x = f32::from_bits(b);
            let want = if x.is_nan() {
                F16_NAN
            } else {
                half::f16::from_f32(x).to_bits()
            };
            assert_eq!(f16_from_f32(x), want, "{b:#010x}");
        };
        for b in (0..=u32::MAX).step_by(997) {
            check(b);
        }
        for base in [
            0x477F_E000u32,
            0x477F_F000,
            0x3880_0000,
            0x3380_0000,
            0x3300_0000,
            0,
        ] {
            for d in 0..4096 {
                check(base.wrapping_add(d));
                check(base.wrapping_sub(d));
                check(base.wrapping_add(d) | 0x8000_0000);
            }
        }
    }
}
