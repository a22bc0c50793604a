//! F16, F32 and F64 to BF16, the conversions of the BF16 view of an
//! unquantized checkpoint.
//!
//! Each element goes to f32 and is rounded once to BF16 by [`bf16::from_f32`]:
//! - F16 -> f32 is exact (the branch-free [`f16_to_f32`]), so F16 -> BF16 is a
//!   single round-to-nearest-even;
//! - F32 -> BF16 is a single round-to-nearest-even;
//! - F64 -> BF16 rounds TWICE, f64 -> f32 then f32 -> BF16, both to nearest
//!   even, because that is what torch's `Tensor.to(torch.bfloat16)` does (on
//!   every code path; pinned by the golden test). It differs from a direct
//!   rounding when the f32 rounding lands exactly on a BF16 tie, and near the
//!   overflow boundary (f64 values in [0x1.feffffp127, 0x1.ffp127) round to
//!   inf instead of the largest finite BF16).
//!
//! NaN always becomes the canonical `0x7FC0` (see [`bf16`]).
//!
//! Slice kernels take `n` source elements as little-endian bytes and write `n`
//! BF16 values as little-endian bytes; both slices may have any alignment.
//! They run the path `simd::active` chose (F16C `vcvtph2ps` on x86-64); the
//! code here is the portable one.
//!
//! Why not the `half` crate for F16 (issue 8), decided by measurement
//! (`cargo bench --bench kernel_table -- f16`, docs/PERFORMANCE.md):
//! - exactness is not the question: `half::f16::to_f32`, `to_f32_const` and
//!   its F16C slice conversion give the same f32 as [`f16_to_f32`] for all
//!   65536 codes (NaNs quieted alike), hence the same BF16 after rounding;
//! - speed is: `half`'s slice API (`HalfFloatSliceExt::convert_to_f32_slice`,
//!   F16C when present) converts to an f32 buffer, which then has to be
//!   rounded in a second pass; with this crate's SIMD F32 -> BF16 kernel as
//!   that pass it ran at a third of the fused kernel (F16C conversion and
//!   rounding in registers, no intermediate buffer): 0.3 vs 0.9 of memcpy
//!   per core. Per element, `half::f16::to_f32` (a runtime feature check and
//!   a call per value) and `to_f32_const` (branches) ran at about a quarter
//!   of the branch-free [`f16_to_f32`] below, which is also a `const fn` the
//!   FP8 tables are built with.
//!
//! So gyrofs keeps its own conversion, and `half` is the independent
//! reference the tests compare it with (a dev-dependency).

use super::simd::{self, Kernels};
use super::{KernelError, bf16, check_elementwise};

/// 2^112 as f32: rebases an F16 exponent (bias 15) onto f32's (bias 127).
const TWO_POW_112: f32 = f32::from_bits((112 + 127) << 23);

/// F16 bits to f32 (exact, no branches).
///
/// Normal and subnormal F16 values are reinterpreted with their
/// exponent/mantissa field shifted into f32 position and multiplied by
/// 2^112, which is exact; infinities keep their sign, NaNs keep sign and
/// payload and are made quiet (as the x86 `vcvtph2ps` instruction and torch do).
#[inline]
pub const fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7FFF;
    let finite = (f32::from_bits(em << 13) * TWO_POW_112).to_bits();
    let quiet = if em > 0x7C00 { 0x0040_0000 } else { 0 };
    let special = (em << 13) | 0x7F80_0000 | quiet;
    let bits = if em >= 0x7C00 { special } else { finite };
    f32::from_bits(bits | sign)
}

/// F16 bits to BF16 bits (one rounding, nearest even).
#[inline]
pub const fn f16_to_bf16_bits(h: u16) -> u16 {
    bf16::from_f32(f16_to_f32(h))
}

/// F64 to BF16 bits: f64 -> f32 -> BF16, each to nearest even (torch's
/// double rounding).
#[inline]
pub const fn f64_to_bf16_bits(x: f64) -> u16 {
    bf16::from_f32(x as f32)
}

/// F16 (`2n` bytes) to BF16 (`2n` bytes).
pub fn f16_to_bf16(src: &[u8], dst: &mut [u8]) -> Result<(), KernelError> {
    simd::active().f16_to_bf16(src, dst)
}

/// F32 (`4n` bytes) to BF16 (`2n` bytes).
pub fn f32_to_bf16(src: &[u8], dst: &mut [u8]) -> Result<(), KernelError> {
    simd::active().f32_to_bf16(src, dst)
}

/// f32 values (`n`) to BF16 (`2n` bytes): [`f32_to_bf16`] of their bytes
/// (the rounding of the views' computed values, `bf16::from_f32` per
/// element, on the active path).
pub fn f32s_to_bf16(src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: f32 has no padding and no invalid bit patterns, u8 has
        // alignment 1, and the length is `src`'s in bytes; on a
        // little-endian target these are the values' little-endian bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(src.as_ptr().cast::<u8>(), std::mem::size_of_val(src))
        };
        f32_to_bf16(bytes, dst)
    }
    #[cfg(not(target_endian = "little"))]
    {
        let bytes: Vec<u8> = src.iter().flat_map(|x| x.to_le_bytes()).collect();
        f32_to_bf16(&bytes, dst)
    }
}

/// F64 (`8n` bytes) to BF16 (`2n` bytes), rounding through f32 like torch.
pub fn f64_to_bf16(src: &[u8], dst: &mut [u8]) -> Result<(), KernelError> {
    simd::active().f64_to_bf16(src, dst)
}

impl Kernels {
    /// [`f16_to_bf16`] on this path.
    pub fn f16_to_bf16(&self, src: &[u8], dst: &mut [u8]) -> Result<(), KernelError> {
        check_elementwise("f16_to_bf16", src, 2, dst)?;
        // SAFETY: a `Kernels` exists only for a path this CPU supports.
        unsafe { (self.fns.f16)(src, dst) };
        Ok(())
    }

    /// [`f32_to_bf16`] on this path.
    pub fn f32_to_bf16(&self, src: &[u8], dst: &mut [u8]) -> Result<(), KernelError> {
        check_elementwise("f32_to_bf16", src, 4, dst)?;
        // SAFETY: a `Kernels` exists only for a path this CPU supports.
        unsafe { (self.fns.f32)(src, dst) };
        Ok(())
    }

    /// [`f64_to_bf16`] on this path.
    pub fn f64_to_bf16(&self, src: &[u8], dst: &mut [u8]) -> Result<(), KernelError> {
        check_elementwise("f64_to_bf16", src, 8, dst)?;
        // SAFETY: a `Kernels` exists only for a path this CPU supports.
        unsafe { (self.fns.f64)(src, dst) };
        Ok(())
    }
}

/// The portable F16 kernel (lengths checked by the caller; SIMD paths use
/// it for their ragged tails).
pub(crate) fn portable_f16(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(2).zip(dst.chunks_exact_mut(2)) {
        let h = u16::from_le_bytes([s[0], s[1]]);
        d.copy_from_slice(&f16_to_bf16_bits(h).to_le_bytes());
    }
}

/// The portable F32 kernel.
pub(crate) fn portable_f32(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(2)) {
        let x = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        d.copy_from_slice(&bf16::from_f32(x).to_le_bytes());
    }
}

/// The portable F64 kernel.
pub(crate) fn portable_f64(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(8).zip(dst.chunks_exact_mut(2)) {
        let x = f64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
        d.copy_from_slice(&f64_to_bf16_bits(x).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::golden::{Rng, assert_bf16_matches, read, u16s};

    type Kernel = fn(&Kernels, &[u8], &mut [u8]) -> Result<(), KernelError>;

    fn run(kernels: &Kernels, kernel: Kernel, src: &[u8], width: usize) -> Vec<u16> {
        let n = src.len() / width;
        // Misalign both slices by one byte: data comes from an mmap at any offset.
        let mut s = vec![0u8; src.len() + 1];
        s[1..].copy_from_slice(src);
        let mut d = vec![0u8; 2 * n + 1];
        kernel(kernels, &s[1..], &mut d[1..]).unwrap();
        u16s(&d[1..])
    }

    #[test]
    fn f32_values_round_as_bf16_from_f32() {
        let mut rng = Rng(9);
        for n in [0usize, 1, 7, 8, 9, 33, 1000] {
            let v: Vec<f32> = rng
                .special_floats(4, 4 * n)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let mut got = vec![0u8; 2 * n];
            f32s_to_bf16(&v, &mut got).unwrap();
            let want: Vec<u8> = v
                .iter()
                .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
                .collect();
            assert_eq!(got, want, "n {n}");
        }
        assert!(f32s_to_bf16(&[1.0], &mut [0u8; 3]).is_err());
    }

    #[test]
    fn f16_all_codes_match_torch() {
        let src: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
        let want = u16s(&read("float_f16_all.bf16"));
        for k in simd::available() {
            let got = run(k, Kernels::f16_to_bf16, &src, 2);
            assert_bf16_matches(k.level().name(), &got, &want, |i| format!("{i:#06x}"));
        }
    }

    /// Every path equals the portable one on random bit patterns (all
    /// classes: NaN, inf, subnormal, ties), at every length up to 300 and
    /// every alignment of input and output.
    #[test]
    fn every_path_equals_portable() {
        let kernels: [(Kernel, usize); 3] = [
            (Kernels::f16_to_bf16, 2),
            (Kernels::f32_to_bf16, 4),
            (Kernels::f64_to_bf16, 8),
        ];
        let mut rng = Rng(7);
        let portable = simd::get(simd::Level::Portable).unwrap();
        for (kernel, width) in kernels {
            for n in (0..300).chain([1000, 4099]) {
                let a = n % 5;
                let src = rng.special_floats(width, n * width + a);
                let src = &src[a..];
                let want = run(portable, kernel, src, width);
                for k in simd::available() {
                    let got = run(k, kernel, src, width);
                    assert_eq!(got, want, "{} width {width} n {n}", k.level());
                }
            }
        }
    }

    #[test]
    fn f16_to_f32_is_exact() {
        for h in 0..=u16::MAX {
            let ours = f16_to_f32(h);
            let reference = half::f16::from_bits(h).to_f32();
            if reference.is_nan() {
                assert!(ours.is_nan());
                assert_eq!(
                    ours.to_bits() & 0x8000_0000,
                    reference.to_bits() & 0x8000_0000
                );
            } else {
                assert_eq!(ours.to_bits(), reference.to_bits(), "{h:#06x}");
            }
        }
        assert_eq!(f16_to_f32(0x7D00).to_bits(), 0x7FE0_0000);
        assert_eq!(f16_to_f32(0xFE00).to_bits(), 0xFFC0_0000);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    }

    #[test]
    fn f32_cases_match_torch() {
        let src = read("float_f32.in");
        let want = u16s(&read("float_f32.bf16"));
        assert!(want.len() > 5000);
        for k in simd::available() {
            let got = run(k, Kernels::f32_to_bf16, &src, 4);
            assert_bf16_matches(k.level().name(), &got, &want, |i| {
                format!(
                    "{:#010x}",
                    u32::from_le_bytes(src[4 * i..4 * i + 4].try_into().unwrap())
                )
            });
        }
    }

    #[test]
    fn f64_cases_match_torch() {
        let src = read("float_f64.in");
        let want = u16s(&read("float_f64.bf16"));
        assert!(want.len() > 5000);
        for k in simd::available() {
            let got = run(k, Kernels::f64_to_bf16, &src, 8);
            assert_bf16_matches(k.level().name(), &got, &want, |i| {
                format!(
                    "{:#018x}",
                    u64::from_le_bytes(src[8 * i..8 * i + 8].try_into().unwrap())
                )
            });
        }
    }

    #[test]
    fn f64_rounds_twice() {
        // 1 + 2^-8 + 2^-40: above the BF16 tie, but f32 rounding lands on it.
        assert_eq!(
            f64_to_bf16_bits(1.0 + 2f64.powi(-8) + 2f64.powi(-40)),
            0x3F80
        );
        assert_eq!(
            f64_to_bf16_bits(1.0 + 3.0 * 2f64.powi(-8) - 2f64.powi(-40)),
            0x3F82
        );
        // Below the overflow tie 0x1.ffp127, but its f32 rounding is the tie.
        assert_eq!(
            f64_to_bf16_bits(f64::from_bits(0x47EF_EFFF_F000_0000)),
            0x7F80
        );
        assert_eq!(
            f64_to_bf16_bits(f64::from_bits(0x47EF_EFFF_E000_0000)),
            0x7F7F
        );
        assert_eq!(f64_to_bf16_bits(f64::NAN), bf16::NAN);
        assert_eq!(f64_to_bf16_bits(-1e300), 0xFF80);
        assert_eq!(f64_to_bf16_bits(-1e-300), 0x8000);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        for k in simd::available() {
            let mut d = [0u8; 4];
            assert!(k.f16_to_bf16(&[0; 6], &mut d).is_err());
            assert!(k.f32_to_bf16(&[0; 12], &mut d).is_err());
            assert!(k.f64_to_bf16(&[0; 8], &mut d).is_err());
        }
        let mut d = [0u8; 4];
        assert!(f32_to_bf16(&[0; 7], &mut d).is_err());
        assert!(f32_to_bf16(&[0; 8], &mut d[..3]).is_err());
        assert!(f64_to_bf16(&[0; 8], &mut d).is_err());
        assert!(f16_to_bf16(&[0; 2], &mut d).is_err());
        assert!(f16_to_bf16(&[], &mut []).is_ok());
        assert!(f64_to_bf16(&[0; 16], &mut d).is_ok());
    }
}
