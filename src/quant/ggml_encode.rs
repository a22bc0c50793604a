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
//! The values come as little-endian bytes of F32, F16 or BF16 ([`Floats`]:
//! a source tensor's own type when the GGUF tensor only moves its values,
//! so nothing is widened into a float32 copy first). Widening F16 / BF16 to
//! float32 is exact, so the bytes are those of the float32 values.
//!
//! A row is one ggml row: `ne0` values (a multiple of the block size for
//! Q8_0). Rows are independent, so a partial read encodes only its rows.
//! Q8_0 runs through the kernel table (`simd`): AVX2 and NEON encode a
//! block in vector registers with the same float operations.

use super::KernelError;
use super::float::f16_to_f32;
use super::ggml::GgmlType;
use super::simd::{self, Kernels};
use super::wide::f16_from_f32;

/// The float type of the values encoded (little-endian bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floats {
    F32,
    F16,
    BF16,
}

impl Floats {
    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            Floats::F32 => 4,
            Floats::F16 | Floats::BF16 => 2,
        }
    }

    /// The values of `src` (whole values) into `out` (one per value),
    /// exactly.
    pub fn widen(self, src: &[u8], out: &mut [f32]) {
        match self {
            Floats::F32 => {
                for (v, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                    *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            Floats::F16 => {
                for (v, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                    *v = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
                }
            }
            Floats::BF16 => {
                for (v, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                    *v = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
                }
            }
        }
    }
}

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

/// Check that `n` values are whole blocks of `ty` and that `out` holds
/// exactly their encoding ([`encoded_len`]); `kernel` names the caller.
pub(crate) fn check_out(
    kernel: &'static str,
    ty: GgmlType,
    n: usize,
    out: &[u8],
) -> Result<(), KernelError> {
    let want = encoded_len(ty, n as u64).ok_or_else(|| KernelError::Shape {
        kernel,
        why: format!("{n} values are not whole {ty} blocks"),
    })?;
    if out.len() as u64 != want {
        return Err(KernelError::Length {
            kernel,
            what: "out",
            got: out.len(),
            expected: want as usize,
        });
    }
    Ok(())
}

/// Encode the values `src` (of type `from`, whole blocks of `ty`) into
/// `out` (exactly [`encoded_len`] bytes), with the active kernels.
pub fn encode(ty: GgmlType, from: Floats, src: &[u8], out: &mut [u8]) -> Result<(), KernelError> {
    simd::active().encode(ty, from, src, out)
}

impl Kernels {
    /// [`encode`] with this path's kernels.
    pub fn encode(
        &self,
        ty: GgmlType,
        from: Floats,
        src: &[u8],
        out: &mut [u8],
    ) -> Result<(), KernelError> {
        const KERNEL: &str = "ggml_encode::encode";
        if !can_encode(ty) {
            return Err(KernelError::Shape {
                kernel: KERNEL,
                why: format!("cannot write {ty}"),
            });
        }
        if !src.len().is_multiple_of(from.bytes()) {
            return Err(KernelError::Shape {
                kernel: KERNEL,
                why: format!("{} bytes are not whole {from:?} values", src.len()),
            });
        }
        check_out(KERNEL, ty, src.len() / from.bytes(), out)?;
        if ty == GgmlType::Q8_0 {
            // SAFETY: a `Kernels` is only handed out (`simd::get`,
            // `available`, `active`) for a path the CPU supports; `src` is
            // whole blocks of 32 values and `out` 34 bytes per block,
            // checked above.
            unsafe { (self.fns.q8_0)(from, src, out) };
            return Ok(());
        }
        if from == Floats::F32 && ty == GgmlType::F32 {
            out.copy_from_slice(src);
            return Ok(());
        }
        // F32 / F16 / BF16 out: through float32, a stack buffer at a time.
        match ty {
            GgmlType::F32 => each_value(from, src, out, |v| v.to_le_bytes()),
            GgmlType::F16 => each_value(from, src, out, |v| f16_numpy(v).to_le_bytes()),
            _ => each_value(from, src, out, |v| bf16_ggml(v).to_le_bytes()),
        }
        Ok(())
    }
}

/// Write each value of `src` (of type `from`) as the `N` bytes `f` makes of
/// it, into `out` (`N` bytes per value, checked by the caller). `N` is a
/// constant, so each store is one move, not a call to `memmove` (which a
/// length known only at run time compiled to: half the time of an F16
/// file's reads).
#[inline(always)]
fn each_value<const N: usize>(
    from: Floats,
    src: &[u8],
    out: &mut [u8],
    f: impl Fn(f32) -> [u8; N],
) {
    let mut vals = [0f32; 64];
    for (s, o) in src.chunks(64 * from.bytes()).zip(out.chunks_mut(64 * N)) {
        let vals = &mut vals[..s.len() / from.bytes()];
        from.widen(s, vals);
        for (v, o) in vals.iter().zip(o.chunks_exact_mut(N)) {
            o.copy_from_slice(&f(*v));
        }
    }
}

/// The portable Q8_0 kernel: each block widened, then [`q8_0_block`].
pub(crate) fn portable_q8_0(from: Floats, src: &[u8], out: &mut [u8]) {
    let w = 32 * from.bytes();
    let mut x = [0f32; 32];
    for (b, o) in src.chunks_exact(w).zip(out.chunks_exact_mut(34)) {
        from.widen(b, &mut x);
        q8_0_block(&x, o.try_into().expect("34 bytes"));
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
///
/// A NaN anywhere in the block makes `d` NaN, as gguf-py's `np.max`
/// propagates it: `d` is stored as the F16 NaN 0x7E00 and every code is 0
/// (`roundf(NaN)` cast). numpy's vectorized reduction sometimes passes a
/// NaN's payload into `d` instead (which lane, depends on numpy's build and
/// CPU); gyrofs always writes 0x7E00 (docs/GGUF_OUT.md).
pub fn q8_0_block(x: &[f32; 32], out: &mut [u8; 34]) {
    // The largest magnitude, in 8 lanes: the same value in any order, and
    // vector code. Compares, not `f32::max`, whose result for a signaling
    // NaN is not specified.
    let mut lanes = [0f32; 8];
    let mut nan = false;
    for chunk in x.chunks_exact(8) {
        for (m, v) in lanes.iter_mut().zip(chunk) {
            let a = v.abs();
            nan |= a.is_nan();
            *m = if a > *m { a } else { *m };
        }
    }
    let amax = lanes.iter().fold(0f32, |m, &v| if v > m { v } else { m });
    let d = if nan { f32::NAN } else { amax / 127.0 };
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
        // A NaN anywhere: d is the F16 NaN, every code 0; an inf: d inf,
        // every code 0 (gguf-py 0.19 on numpy 2.4, `quants.quantize`).
        for (at, bits) in [(0, 0x7F80_0001u32), (5, 0xFFA0_0001), (7, 0xFFC1_2345)] {
            let mut x: [f32; 32] = std::array::from_fn(|i| -3.0 + 5.0 * i as f32 / 31.0);
            x[at] = f32::from_bits(bits);
            let mut o = [1u8; 34];
            q8_0_block(&x, &mut o);
            assert_eq!(&o[..2], &[0x00, 0x7E], "NaN {bits:#x} at {at}");
            assert!(o[2..].iter().all(|&b| b == 0));
        }
        let mut x = [0f32; 32];
        x[1] = f32::INFINITY;
        let mut o = [1u8; 34];
        q8_0_block(&x, &mut o);
        assert_eq!(&o[..2], &[0x00, 0x7C]);
        assert!(o[2..].iter().all(|&b| b == 0));
        // An all-zero block: d = 0, every q 0.
        let mut z = [7u8; 34];
        q8_0_block(&[0.0; 32], &mut z);
        assert!(z.iter().all(|&b| b == 0));
    }

    /// Blocks of 32 raw values that reach every branch of the Q8_0 code
    /// (first and last, so that vector paths meet them in full groups of
    /// blocks and in a ragged tail):
    /// random bit patterns (NaN, inf, subnormals among them), random
    /// normal values of every scale, all zeros, one huge value, a
    /// subnormal amax (`1 / d` overflows), signaling NaNs, and values on
    /// the rounding halves.
    fn q8_0_inputs(from: Floats) -> Vec<u8> {
        let w = from.bytes();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let put = |out: &mut Vec<u8>, x: f32| match from {
            Floats::F32 => out.extend(x.to_le_bytes()),
            Floats::F16 => out.extend(f16_numpy(x).to_le_bytes()),
            Floats::BF16 => out.extend(bf16_ggml(x).to_le_bytes()),
        };
        let specials: [&[f32]; 7] = [
            &[0.0],
            &[-0.0],
            &[1e30, 1.0, -1.0],
            &[1e-40, -3e-41, 5e-45],
            &[
                f32::from_bits(0x7F80_0001),
                2.0,
                f32::from_bits(0xFFA0_0000),
            ],
            &[f32::INFINITY, 1.0, f32::NAN],
            &[127.0, 0.5, -0.5, 1.5, -2.5, 63.5, 0.499_999_97],
        ];
        let put_specials = |out: &mut Vec<u8>| {
            for sp in specials {
                for k in 0..32 {
                    put(out, sp[k % sp.len()]);
                }
            }
        };
        let mut out = Vec::new();
        put_specials(&mut out);
        for _ in 0..2000 {
            for _ in 0..32 * w {
                out.push(next() as u8);
            }
        }
        for _ in 0..2000 {
            let scale = 2f32.powi((next() % 60) as i32 - 30);
            for _ in 0..32 {
                let u = (next() >> 40) as f32 / (1u64 << 24) as f32;
                put(&mut out, (u * 2.0 - 1.0) * scale);
            }
        }
        // And last, where they fall in the ragged tail of eight-block groups.
        put_specials(&mut out);
        out
    }

    #[test]
    fn every_q8_0_path_writes_the_portable_bytes() {
        for from in [Floats::F32, Floats::F16, Floats::BF16] {
            let src = q8_0_inputs(from);
            let n = src.len() / from.bytes() / 32;
            let mut want = vec![0u8; n * 34];
            portable_q8_0(from, &src, &mut want);
            // The portable kernel is the float32 reference on the widened
            // values.
            let mut x = [0f32; 32];
            for (b, o) in src
                .chunks_exact(32 * from.bytes())
                .zip(want.chunks_exact(34))
            {
                from.widen(b, &mut x);
                let mut one = [0u8; 34];
                q8_0_block(&x, &mut one);
                assert_eq!(&one[..], o);
            }
            for k in simd::available() {
                let mut got = vec![0xAAu8; n * 34];
                k.encode(GgmlType::Q8_0, from, &src, &mut got).unwrap();
                for (i, (g, w)) in got.chunks(34).zip(want.chunks(34)).enumerate() {
                    assert_eq!(g, w, "{} path, {from:?}, block {i}", k.level());
                }
            }
        }
    }

    #[test]
    fn encode_checks_lengths_and_widens_exactly() {
        let k = simd::active();
        let mut out = [0u8; 34];
        assert!(
            k.encode(GgmlType::Q8_0, Floats::BF16, &[0; 62], &mut out)
                .is_err()
        );
        assert!(
            k.encode(GgmlType::Q8_0, Floats::F32, &[0; 129], &mut out)
                .is_err()
        );
        assert!(
            k.encode(GgmlType::Q8_0, Floats::F16, &[0; 64], &mut out[..33])
                .is_err()
        );
        assert!(
            k.encode(GgmlType::Q4_K, Floats::F32, &[0; 4], &mut out[..4])
                .is_err()
        );
        // BF16 in, F16 and F32 out: through the exact float32 value.
        let bf = [0x3F80u16, 0xC2F7, 0x0001, 0x7FC1];
        let src: Vec<u8> = bf.iter().flat_map(|b| b.to_le_bytes()).collect();
        let mut f32s = [0u8; 16];
        k.encode(GgmlType::F32, Floats::BF16, &src, &mut f32s)
            .unwrap();
        for (b, c) in bf.iter().zip(f32s.chunks(4)) {
            assert_eq!(
                u32::from_le_bytes(c.try_into().unwrap()),
                u32::from(*b) << 16
            );
        }
        let mut f16s = [0u8; 8];
        k.encode(GgmlType::F16, Floats::BF16, &src, &mut f16s)
            .unwrap();
        for (b, c) in bf.iter().zip(f16s.chunks(2)) {
            let want = f16_numpy(f32::from_bits(u32::from(*b) << 16));
            assert_eq!(u16::from_le_bytes([c[0], c[1]]), want);
        }
    }

    fn half_bits_to_f32(h: u16) -> f32 {
        crate::quant::float::f16_to_f32(h)
    }
}
