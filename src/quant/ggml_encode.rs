//! Float32 values encoded as ggml tensor data, bit for bit as llama.cpp's
//! converter writes them: `convert_hf_to_gguf.py` hands float32 numpy arrays
//! to gguf-py's `quants.quantize`, which
//! - F32: keeps them;
//! - F16: `astype(np.float16)`: round to nearest, ties to even; magnitudes
//!   from 65520 up become inf; subnormals kept; a NaN keeps its sign and the
//!   top ten bits of its payload, made quiet if they are all zero (numpy's
//!   `npy_floatbits_to_halfbits`);
//! - BF16: `ggml_compute_fp32_to_bf16`: a NaN keeps its sign and top bits
//!   and is made quiet (`| 0x0040`), anything else rounds to nearest even
//!   on the bits;
//! - Q8_0: `quantize_row_q8_0_ref`: per block of 32, `d = amax / 127` and
//!   `id = 1 / d` (0 when `d` is 0) in float32, `q = roundf(x * id)` (half
//!   away from zero), `d` stored as F16 (nearest even).
//!
//! A row is one ggml row: `ne0` values (a multiple of the block size for
//! Q8_0). Rows are independent, so a partial read encodes only its rows.

use super::KernelError;
use super::ggml::GgmlType;
use super::wide::f16_from_f32;

/// Can rows of `ty` be written here?
pub fn can_encode(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0
    )
}

/// Bytes of `n` values of `ty` (whole blocks; `None` when `n` is not).
pub fn encoded_len(ty: GgmlType, n: u64) -> Option<u64> {
    let (bs, ts) = (ty.block_size(), ty.type_size());
    n.is_multiple_of(bs).then(|| n / bs * ts)
}

/// Encode `values` (whole blocks of `ty`) into `out` (exactly
/// [`encoded_len`] bytes).
pub fn encode(ty: GgmlType, values: &[f32], out: &mut [u8]) -> Result<(), KernelError> {
    const KERNEL: &str = "ggml_encode::encode";
    if !can_encode(ty) {
        return Err(KernelError::Shape {
            kernel: KERNEL,
            why: format!("cannot write {ty}"),
        });
    }
    let want = encoded_len(ty, values.len() as u64).ok_or_else(|| KernelError::Shape {
        kernel: KERNEL,
        why: format!("{} values are not whole {ty} blocks", values.len()),
    })?;
    if out.len() as u64 != want {
        return Err(KernelError::Length {
            kernel: KERNEL,
            what: "out",
            got: out.len(),
            expected: want as usize,
        });
    }
    match ty {
        GgmlType::F32 => {
            for (v, o) in values.iter().zip(out.chunks_exact_mut(4)) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (v, o) in values.iter().zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&f16_numpy(*v).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (v, o) in values.iter().zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&bf16_ggml(*v).to_le_bytes());
            }
        }
        _ => q8_0_rows(values, out),
    }
    Ok(())
}

/// Q8_0 blocks of `values` into `out`.
fn q8_0_rows(values: &[f32], out: &mut [u8]) {
    for (b, o) in values.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
        q8_0_block(
            b.try_into().expect("32 values"),
            o.try_into().expect("34 bytes"),
        );
    }
}

/// `x` as F16 bits, as numpy's `astype(np.float16)` rounds it.
pub fn f16_numpy(x: f32) -> u16 {
    let b = x.to_bits();
    if b & 0x7FFF_FFFF > 0x7F80_0000 {
        let sign = ((b >> 16) & 0x8000) as u16;
        let payload = ((b & 0x007F_FFFF) >> 13) as u16;
        return sign | 0x7C00 | payload.max(1);
    }
    f16_from_f32(x)
}

/// `x` as BF16 bits, as ggml's `ggml_compute_fp32_to_bf16` (and gguf-py's
/// `BF16.quantize_blocks`) rounds it.
pub fn bf16_ggml(x: f32) -> u16 {
    let n = x.to_bits();
    if n & 0x7FFF_FFFF > 0x7F80_0000 {
        return ((n >> 16) | 64) as u16;
    }
    ((u64::from(n) + u64::from(0x7FFF + ((n >> 16) & 1))) >> 16) as u16
}

/// `roundf`: to nearest, halves away from zero (gguf-py's `np_roundf`:
/// `floor(a) + floor(2 * (a - floor(a)))` with `a = |x|`, signed as `x`).
/// Without `floor`, which baseline x86-64 (no SSE4.1) makes a libm call:
/// below 2^23 the truncation to an integer is `floor(a)` and `a - floor(a)`
/// is exact; from 2^23 on `a` is integral; inf gives NaN as `inf - inf`
/// does in the formula.
#[cfg(test)]
fn roundf(x: f32) -> f32 {
    let a = x.abs();
    if a < 8_388_608.0 {
        let t = a as u32 as f32;
        let b = if a - t >= 0.5 { t + 1.0 } else { t };
        return b.copysign(x);
    }
    if a.is_infinite() { f32::NAN } else { x }
}

/// One Q8_0 block: F16 `d` then 32 signed bytes, `q = roundf(x * id) as
/// i8` ([`q8_0_code`]).
pub fn q8_0_block(x: &[f32; 32], out: &mut [u8; 34]) {
    // The largest magnitude (NaN ignored, as f32::max does), in 8 lanes:
    // the same value in any order, and vector code.
    let mut lanes = [0f32; 8];
    for chunk in x.chunks_exact(8) {
        for (m, v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(v.abs());
        }
    }
    let amax = lanes.iter().fold(0f32, |m, &v| m.max(v));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out[..2].copy_from_slice(&f16_numpy(d).to_le_bytes());
    let mut q = [0u8; 32];
    for (q, v) in q.iter_mut().zip(x) {
        *q = q8_0_code(v * id) as u8;
    }
    out[2..].copy_from_slice(&q);
}

/// `roundf(y) as i8` (Rust's saturating cast: NaN is 0), without branches
/// so that a block's 32 codes compile to vector code: the magnitude is
/// clamped to 256 (which saturates the same way), truncated, and rounded up
/// when its fraction is at least one half; inf gives 0, as `roundf` makes
/// it NaN.
#[inline(always)]
fn q8_0_code(y: f32) -> i8 {
    let a = y.abs();
    // In 0..=256 (`min` gives 256 for NaN).
    let c = a.min(256.0);
    // SAFETY: `c` is a finite float in 0..=256, which an i32 holds; the
    // unchecked conversion is a plain truncation, which vectorizes where
    // the saturating `as` does not.
    let t: i32 = unsafe { c.to_int_unchecked() };
    let r = t + i32::from(c - t as f32 >= 0.5);
    let signed = if y.is_sign_negative() { -r } else { r };
    let q = signed.clamp(-128, 127) as i8;
    if a < f32::INFINITY { q } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_on_the_bits_and_quiets_nan() {
        assert_eq!(bf16_ggml(1.0), 0x3F80);
        // 1 + 2^-8 is a tie: to even (down); 1 + 3 * 2^-8 up.
        assert_eq!(bf16_ggml(f32::from_bits(0x3F80_8000)), 0x3F80);
        assert_eq!(bf16_ggml(f32::from_bits(0x3F81_8000)), 0x3F82);
        assert_eq!(bf16_ggml(f32::INFINITY), 0x7F80);
        assert_eq!(bf16_ggml(f32::MAX), 0x7F80);
        assert_eq!(bf16_ggml(f32::from_bits(0xFF80_0001)), 0xFFC0);
        assert_eq!(bf16_ggml(f32::from_bits(0x7FA1_2345)), 0x7FE1);
    }

    #[test]
    fn f16_matches_numpy() {
        assert_eq!(f16_numpy(1.0), 0x3C00);
        assert_eq!(f16_numpy(65504.0), 0x7BFF);
        assert_eq!(f16_numpy(65520.0), 0x7C00);
        assert_eq!(f16_numpy(-1e-8), 0x8000);
        assert_eq!(f16_numpy(f32::from_bits(0x7FC0_0000)), 0x7E00);
        // A payload only in the low bits stays a NaN.
        assert_eq!(f16_numpy(f32::from_bits(0x7F80_0001)), 0x7C01);
    }

    #[test]
    fn q8_0_is_the_reference_quantizer() {
        let mut x = [0f32; 32];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (i as f32 - 15.5) * 0.25;
        }
        let mut out = [0u8; 34];
        q8_0_block(&x, &mut out);
        let d = half_bits_to_f32(u16::from_le_bytes([out[0], out[1]]));
        assert!((d - 3.875 / 127.0).abs() < 1e-5);
        assert_eq!(out[2] as i8, -127);
        assert_eq!(out[33] as i8, 127);
        // roundf is gguf-py's np_roundf on every float: a spread of bit
        // patterns, and every value near the halves below 2^23.
        let np_roundf = |x: f32| {
            let a = x.abs();
            let f = a.floor();
            (f + (2.0 * (a - f)).floor()).copysign(x)
        };
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for bits in (0..=u32::MAX).step_by(65_521) {
            let x = f32::from_bits(bits);
            assert!(same(roundf(x), np_roundf(x)), "{x:e} ({bits:#x})");
        }
        for k in -300i32..300 {
            let h = k as f32 + 0.5;
            for x in [
                h,
                f32::from_bits(h.to_bits() - 1),
                f32::from_bits(h.to_bits() + 1),
            ] {
                assert!(same(roundf(x), np_roundf(x)), "{x:e}");
            }
        }
        // The Q8_0 code is roundf's, cast as Rust casts.
        for bits in (0..=u32::MAX).step_by(4_099) {
            let y = f32::from_bits(bits);
            assert_eq!(q8_0_code(y), roundf(y) as i8, "{y:e} ({bits:#x})");
        }
        for k in -300i32..300 {
            let h = k as f32 + 0.5;
            for y in [
                h,
                f32::from_bits(h.to_bits() - 1),
                f32::from_bits(h.to_bits() + 1),
            ] {
                assert_eq!(q8_0_code(y), roundf(y) as i8, "{y:e}");
            }
        }
        // roundf: halves away from zero.
        assert_eq!(roundf(2.5), 3.0);
        assert_eq!(roundf(-2.5), -3.0);
        assert_eq!(roundf(0.49999997), 0.0);
        // An all-zero block: d = 0, every q 0.
        let mut z = [7u8; 34];
        q8_0_block(&[0.0; 32], &mut z);
        assert!(z.iter().all(|&b| b == 0));
    }

    fn half_bits_to_f32(h: u16) -> f32 {
        crate::quant::float::f16_to_f32(h)
    }
}
