//! The aarch64 Advanced SIMD (NEON) kernels.
//!
//! NEON is part of every aarch64 CPU, so on aarch64 this path is always the
//! one taken. The x86 CI only compiles and lints it
//! (`scripts/check_aarch64.sh`); its tests (every path against the golden
//! files and the portable code) pass under qemu-user
//! (`scripts/check_aarch64.sh --test`). It mirrors the x86 paths with
//! 128-bit vectors:
//! - MXFP4 whole blocks: `tbl` (`vqtbl1q_u8`) of the nibbles into the
//!   scale's table row split in low and high bytes ([`mxfp4::TABLE_SPLIT`]),
//!   stored interleaved (`st2`) as little-endian BF16 words; exact for every
//!   scale byte;
//! - MXFP4 transposed experts: the AVX2 algorithm (16 x 16 byte transposes
//!   by `zip` stages, nibble lookup of the scale-127 BF16 bits, exponent
//!   deltas where exact, the table elsewhere);
//! - F16 -> f32 as [`float::f16_to_f32`] does it (stable Rust has no f16
//!   vector types): the exponent/mantissa bits moved into f32 position and
//!   multiplied by 2^112, exact, subnormals included; inf/NaN by a compare;
//! - F32 / F64 -> BF16: the same integer round-to-nearest-even on f32 bits as
//!   [`crate::quant::bf16::from_f32`], NaN -> 0x7FC0 (F64 first narrowed by
//!   `fcvtn`, which rounds to nearest even like `x as f32`);
//! - FP8: E5M2 as F16 with a zero low byte; E4M3 by integer exponent
//!   rebias (BF16 bytes directly for plain E4M3; block-scaled: f32, with
//!   subnormal codes as `m * 2^-9`, then one `fmul`);
//! - ggml: the runs of `ggml_runs` (shared with x86), then `a * f32(q)`
//!   (+/- m) with IEEE f32 vector arithmetic (`fmul` then `fadd`, never a
//!   fused `fmla`) and the same rounding.
//!
//! All of it assumes the Linux default FPCR (no flush-to-zero), as the
//! portable code's f32 arithmetic does.

use std::arch::aarch64::*;

use super::ggml_runs::{self as runs, Runs};
use super::{Fns, Kernels, Level};
use crate::quant::ggml::GgmlType;
use crate::quant::ggml_encode::{Floats, f16_numpy};
use crate::quant::mxfp4::{self, Pair, Transposed, tile_deltas};
use crate::quant::{float, fp8};

pub(crate) static KERNELS: Kernels = Kernels {
    level: Level::Neon,
    fns: Fns {
        mxfp4_blocks,
        mxfp4_transposed,
        f16,
        f32,
        f64,
        e4m3,
        e5m2,
        e4m3_scaled,
        ggml,
        q8_0,
        // INT4 codes: not accelerated on NEON yet (the portable code).
        nibbles: crate::quant::nibbles::portable_nibbles,
        int4_rows8: crate::quant::nibbles::portable_int4_rows8,
    },
};

/// 16 bytes of `s` (from its start).
#[inline]
#[target_feature(enable = "neon")]
fn load16(s: &[u8]) -> uint8x16_t {
    let s = &s[..16];
    // SAFETY: `s` has 16 readable bytes; `ld1` of bytes needs no alignment.
    unsafe { vld1q_u8(s.as_ptr()) }
}

/// Store 16 bytes into the start of `d`.
#[inline]
#[target_feature(enable = "neon")]
fn store16(d: &mut [u8], v: uint8x16_t) {
    let d = &mut d[..16];
    // SAFETY: `d` has 16 writable bytes; `st1` of bytes needs no alignment.
    unsafe { vst1q_u8(d.as_mut_ptr(), v) }
}

#[target_feature(enable = "neon")]
unsafe fn mxfp4_blocks(pair: &Pair, out: &mut [u8]) {
    for ((blk, &s), o) in pair
        .blocks()
        .chunks_exact(16)
        .zip(pair.scales())
        .zip(out.chunks_exact_mut(64))
    {
        let t = &mxfp4::TABLE_SPLIT[s as usize];
        let (lo_bytes, hi_bytes) = (load16(&t[..16]), load16(&t[16..]));
        let b = load16(blk);
        let lo = vandq_u8(b, vdupq_n_u8(15));
        let hi = vshrq_n_u8::<4>(b);
        // Byte j's low nibble is value 2j: zip gives values 0..15, 16..31.
        for (idx, at) in [(vzip1q_u8(lo, hi), 0), (vzip2q_u8(lo, hi), 32)] {
            let pair = uint8x16x2_t(vqtbl1q_u8(lo_bytes, idx), vqtbl1q_u8(hi_bytes, idx));
            let d = &mut o[at..at + 32];
            // SAFETY: `d` has 32 writable bytes, what `st2` of two byte
            // vectors writes (interleaved: low byte, high byte per value).
            unsafe { vst2q_u8(d.as_mut_ptr(), pair) };
        }
    }
}

/// BF16 bits of 4 f32 (nearest even, NaN -> 0x7FC0).
#[inline]
#[target_feature(enable = "neon")]
fn bf16x4(f: float32x4_t) -> uint16x4_t {
    let bits = vreinterpretq_u32_f32(f);
    let odd = vandq_u32(vshrq_n_u32::<16>(bits), vdupq_n_u32(1));
    let biased = vaddq_u32(vaddq_u32(bits, vdupq_n_u32(0x7FFF)), odd);
    let rounded = vshrq_n_u32::<16>(biased);
    let nan = vmvnq_u32(vceqq_f32(f, f));
    vmovn_u32(vbslq_u32(nan, vdupq_n_u32(0x7FC0), rounded))
}

/// Round 8 f32 to BF16 and store them into 16 bytes of `d`.
#[inline]
#[target_feature(enable = "neon")]
fn store_bf16x8(d: &mut [u8], a: float32x4_t, b: float32x4_t) {
    store16(d, vreinterpretq_u8_u16(vcombine_u16(bf16x4(a), bf16x4(b))));
}

#[target_feature(enable = "neon")]
unsafe fn f32(src: &[u8], dst: &mut [u8]) {
    let mut s = src.chunks_exact(32);
    let mut d = dst.chunks_exact_mut(16);
    for (s, d) in (&mut s).zip(&mut d) {
        let a = vreinterpretq_f32_u8(load16(s));
        let b = vreinterpretq_f32_u8(load16(&s[16..]));
        store_bf16x8(d, a, b);
    }
    float::portable_f32(s.remainder(), d.into_remainder());
}

#[target_feature(enable = "neon")]
unsafe fn f64(src: &[u8], dst: &mut [u8]) {
    let mut s = src.chunks_exact(64);
    let mut d = dst.chunks_exact_mut(16);
    let two = |s: &[u8]| vcvt_f32_f64(vreinterpretq_f64_u8(load16(s)));
    for (s, d) in (&mut s).zip(&mut d) {
        let a = vcombine_f32(two(s), two(&s[16..]));
        let b = vcombine_f32(two(&s[32..]), two(&s[48..]));
        store_bf16x8(d, a, b);
    }
    float::portable_f64(s.remainder(), d.into_remainder());
}

/// 8 bytes of `s` (from its start).
#[inline]
#[target_feature(enable = "neon")]
fn load8(s: &[u8]) -> uint8x8_t {
    let s = &s[..8];
    // SAFETY: `s` has 8 readable bytes; `ld1` of bytes needs no alignment.
    unsafe { vld1_u8(s.as_ptr()) }
}

// ---- MXFP4 transposed ------------------------------------------------------

/// Transpose 16 x 16 bytes: `x[i]` is row `i`; the result's element `p`
/// holds byte `p` of rows 0..15 (the zip stages of `avx2::transpose16`).
#[inline]
#[target_feature(enable = "neon")]
fn transpose16(x: &[uint8x16_t; 16]) -> [uint8x16_t; 16] {
    let z = vdupq_n_u8(0);
    let mut a = [z; 16];
    for i in 0..8 {
        a[i] = vzip1q_u8(x[2 * i], x[2 * i + 1]);
        a[8 + i] = vzip2q_u8(x[2 * i], x[2 * i + 1]);
    }
    let mut b = [z; 16];
    for h in 0..2 {
        for i in 0..4 {
            let u = vreinterpretq_u16_u8(a[8 * h + 2 * i]);
            let v = vreinterpretq_u16_u8(a[8 * h + 2 * i + 1]);
            b[8 * h + i] = vreinterpretq_u8_u16(vzip1q_u16(u, v));
            b[8 * h + 4 + i] = vreinterpretq_u8_u16(vzip2q_u16(u, v));
        }
    }
    let mut c = [z; 16];
    for q in 0..4 {
        for i in 0..2 {
            let u = vreinterpretq_u32_u8(b[4 * q + 2 * i]);
            let v = vreinterpretq_u32_u8(b[4 * q + 2 * i + 1]);
            c[4 * q + i] = vreinterpretq_u8_u32(vzip1q_u32(u, v));
            c[4 * q + 2 + i] = vreinterpretq_u8_u32(vzip2q_u32(u, v));
        }
    }
    let mut cols = [z; 16];
    for cp in 0..8 {
        let u = vreinterpretq_u64_u8(c[2 * cp]);
        let v = vreinterpretq_u64_u8(c[2 * cp + 1]);
        cols[2 * cp] = vreinterpretq_u8_u64(vzip1q_u64(u, v));
        cols[2 * cp + 1] = vreinterpretq_u8_u64(vzip2q_u64(u, v));
    }
    cols
}

#[target_feature(enable = "neon")]
unsafe fn mxfp4_transposed(x: &Transposed, out: &mut [u8]) {
    let (scales, g) = (x.expert().scales(), x.expert().groups());
    mxfp4::walk_tiles(x, out, |x, gi, j0, out| {
        tile_deltas(scales, g, gi, j0)
            .map(|d| transposed_tile(x, gi, j0, &d, out))
            .is_some()
    });
}

/// One full tile (32 source rows of block column `gi`) by exponent
/// arithmetic, as two halves of 16 rows.
#[inline]
#[target_feature(enable = "neon")]
fn transposed_tile(x: &Transposed, gi: usize, j0: usize, delta: &[i16; 32], out: &mut [u8]) {
    let (blocks, g) = (x.expert().blocks(), x.expert().groups());
    let base = &mxfp4::TABLE_SPLIT[127];
    let (base_lo, base_hi) = (load16(&base[..16]), load16(&base[16..]));
    // 0xFF where the nibble is not a zero: only those take the scale.
    let nonzero = vreinterpretq_u8_u64(vdupq_n_u64(0xFFFF_FFFF_FFFF_FF00));
    let m = vdupq_n_u8(0x0F);
    let (k0, k1) = x.ks(gi);
    for h in 0..2 {
        let mut rows = [vdupq_n_u8(0); 16];
        for (i, row) in rows.iter_mut().enumerate() {
            let at = (j0 + 16 * h + i) * g + gi;
            *row = load16(&blocks[at * 16..]);
        }
        let cols = transpose16(&rows);
        let d = &delta[16 * h..16 * h + 16];
        // SAFETY: `d` is 16 i16: two 8-lane loads.
        let (d0, d1) = unsafe {
            (
                vreinterpretq_u16_s16(vld1q_s16(d.as_ptr())),
                vreinterpretq_u16_s16(vld1q_s16(d[8..].as_ptr())),
            )
        };
        for (p, &col) in cols.iter().enumerate() {
            for (k, nib) in [(2 * p, vandq_u8(col, m)), (2 * p + 1, vshrq_n_u8::<4>(col))] {
                if k < k0 || k >= k1 {
                    continue;
                }
                let lo = vqtbl1q_u8(base_lo, nib);
                let hi = vqtbl1q_u8(base_hi, nib);
                let nz = vqtbl1q_u8(nonzero, nib);
                let w0 = vreinterpretq_u16_u8(vzip1q_u8(lo, hi));
                let w1 = vreinterpretq_u16_u8(vzip2q_u8(lo, hi));
                let m0 = vreinterpretq_u16_u8(vzip1q_u8(nz, nz));
                let m1 = vreinterpretq_u16_u8(vzip2q_u8(nz, nz));
                let w0 = vaddq_u16(w0, vandq_u16(d0, m0));
                let w1 = vaddq_u16(w1, vandq_u16(d1, m1));
                let o = x.at(gi, k, j0 + 16 * h);
                let (o0, o1) = out[o..o + 32].split_at_mut(16);
                store16(o0, vreinterpretq_u8_u16(w0));
                store16(o1, vreinterpretq_u8_u16(w1));
            }
        }
    }
}

// ---- F16 / FP8 ---------------------------------------------------------------

/// f32 of 4 F16 (`h`), exactly as [`float::f16_to_f32`] (NaN payloads
/// aside: every NaN rounds to 0x7FC0).
#[inline]
#[target_feature(enable = "neon")]
fn f16x4(h: uint16x4_t) -> float32x4_t {
    let h = vmovl_u16(h);
    let sign = vshlq_n_u32::<16>(vandq_u32(h, vdupq_n_u32(0x8000)));
    let em = vandq_u32(h, vdupq_n_u32(0x7FFF));
    let shifted = vshlq_n_u32::<13>(em);
    let two_pow_112 = vdupq_n_f32(f32::from_bits((112 + 127) << 23));
    let finite = vreinterpretq_u32_f32(vmulq_f32(vreinterpretq_f32_u32(shifted), two_pow_112));
    // Exponent all ones: inf (mantissa 0) or NaN.
    let special = vorrq_u32(shifted, vdupq_n_u32(0x7F80_0000));
    let is_special = vcgeq_u32(em, vdupq_n_u32(0x7C00));
    vreinterpretq_f32_u32(vorrq_u32(vbslq_u32(is_special, special, finite), sign))
}

/// Convert 8 F16 (`h`) and store their BF16 into 16 bytes of `d`.
#[inline]
#[target_feature(enable = "neon")]
fn f16x8_store(d: &mut [u8], h: uint16x8_t) {
    store_bf16x8(d, f16x4(vget_low_u16(h)), f16x4(vget_high_u16(h)));
}

#[target_feature(enable = "neon")]
unsafe fn f16(src: &[u8], dst: &mut [u8]) {
    let mut s = src.chunks_exact(16);
    let mut d = dst.chunks_exact_mut(16);
    for (s, d) in (&mut s).zip(&mut d) {
        f16x8_store(d, vreinterpretq_u16_u8(load16(s)));
    }
    float::portable_f16(s.remainder(), d.into_remainder());
}

#[target_feature(enable = "neon")]
unsafe fn e5m2(src: &[u8], dst: &mut [u8]) {
    let mut s = src.chunks_exact(8);
    let mut d = dst.chunks_exact_mut(16);
    for (s, d) in (&mut s).zip(&mut d) {
        // Code c is the F16 with high byte c.
        f16x8_store(d, vshll_n_u8::<8>(load8(s)));
    }
    fp8::portable_e5m2(s.remainder(), d.into_remainder());
}

/// f32 of 4 F8_E4M3 codes (the low 4 lanes of `c` widened), as
/// `fp8::E4M3_F32` except that NaN is 0x7FC00000; see `avx2::e4m3x8`.
#[inline]
#[target_feature(enable = "neon")]
fn e4m3x4(c: uint16x4_t) -> float32x4_t {
    let c = vmovl_u16(c);
    let mag = vandq_u32(c, vdupq_n_u32(0x7F));
    let normal = vaddq_u32(vshlq_n_u32::<20>(mag), vdupq_n_u32(120 << 23));
    // Codes 0..7 are zero and the subnormals m * 2^-9: an exact product of
    // a small integer and a power of two.
    let two_pow_minus_9 = vdupq_n_f32(1.0 / 512.0);
    let small = vreinterpretq_u32_f32(vmulq_f32(vcvtq_f32_u32(mag), two_pow_minus_9));
    let v = vbslq_u32(vcltq_u32(mag, vdupq_n_u32(8)), small, normal);
    let nan = vceqq_u32(mag, vdupq_n_u32(0x7F));
    let v = vbslq_u32(nan, vdupq_n_u32(0x7FC0_0000), v);
    let sign = vshlq_n_u32::<24>(vandq_u32(c, vdupq_n_u32(0x80)));
    vreinterpretq_f32_u32(vorrq_u32(v, sign))
}

#[target_feature(enable = "neon")]
unsafe fn e4m3(src: &[u8], dst: &mut [u8]) {
    // BF16 bytes straight from the codes, as `avx2::e4m3`: normal codes are
    // `mag << 4` plus 120 << 7, codes below 8 from the table, NaN 0x7FC0.
    let (mut small_lo, mut small_hi) = ([0u8; 16], [0u8; 16]);
    for (i, &v) in fp8::E4M3_BF16[..8].iter().enumerate() {
        [small_lo[i], small_hi[i]] = v.to_le_bytes();
    }
    let (small_lo, small_hi) = (load16(&small_lo), load16(&small_hi));
    let mut s = src.chunks_exact(16);
    let mut d = dst.chunks_exact_mut(32);
    for (s, d) in (&mut s).zip(&mut d) {
        let c = load16(s);
        let mag = vandq_u8(c, vdupq_n_u8(0x7F));
        let hi = vaddq_u8(vshrq_n_u8::<4>(mag), vdupq_n_u8(0x3C));
        let lo = vshlq_n_u8::<4>(mag);
        let is_small = vcltq_u8(mag, vdupq_n_u8(8));
        let hi = vbslq_u8(is_small, vqtbl1q_u8(small_hi, mag), hi);
        let lo = vbslq_u8(is_small, vqtbl1q_u8(small_lo, mag), lo);
        let nan = vceqq_u8(mag, vdupq_n_u8(0x7F));
        let sign = vbicq_u8(vandq_u8(c, vdupq_n_u8(0x80)), nan);
        let hi = vorrq_u8(vbslq_u8(nan, vdupq_n_u8(0x7F), hi), sign);
        let lo = vbslq_u8(nan, vdupq_n_u8(0xC0), lo);
        let d = &mut d[..32];
        // SAFETY: `d` has 32 writable bytes, what `st2` of two byte vectors
        // writes (interleaved: low byte, high byte per value).
        unsafe { vst2q_u8(d.as_mut_ptr(), uint8x16x2_t(lo, hi)) };
    }
    fp8::portable_e4m3(s.remainder(), d.into_remainder());
}

#[target_feature(enable = "neon")]
unsafe fn e4m3_scaled(src: &[u8], scale: f32, dst: &mut [u8]) {
    let mut s = src.chunks_exact(8);
    let mut d = dst.chunks_exact_mut(16);
    let k = vdupq_n_f32(scale);
    for (s, d) in (&mut s).zip(&mut d) {
        let c = vmovl_u8(load8(s));
        let a = vmulq_f32(e4m3x4(vget_low_u16(c)), k);
        let b = vmulq_f32(e4m3x4(vget_high_u16(c)), k);
        store_bf16x8(d, a, b);
    }
    fp8::portable_e4m3_scaled(s.remainder(), scale, d.into_remainder());
}

// ---- ggml ------------------------------------------------------------------

/// `emit`'s operations (`runs::Op` as a const generic).
const MUL: u8 = 0;
const ADD: u8 = 1;
const SUB: u8 = 2;

/// BF16 of a block's runs into `out[..2 * BS]`, 16 values at a time (see
/// `avx2::emit`).
///
/// # Safety
///
/// The CPU supports NEON (every aarch64 CPU does; `#[inline(always)]`
/// compiles this body into its `#[target_feature(enable = "neon")]` callers).
#[inline(always)]
unsafe fn emit<const BS: usize, const OP: u8, const KV: bool>(
    r: &Runs<BS>,
    kv: uint8x16_t,
    bias: uint8x16_t,
    out: &mut [u8],
) {
    let out = &mut out[..2 * BS];
    let shift = r.run.trailing_zeros();
    for i in (0..BS).step_by(16) {
        let t = (i >> shift) & 15;
        let o = &mut out[2 * i..2 * i + 32];
        // SAFETY: the CPU supports NEON (this function's contract); the
        // loads and stores are of in-bounds slices (bounds-checked helpers).
        unsafe { emit16::<OP, KV>(&r.q[i..i + 16], r.a[t], r.m[t], kv, bias, o) };
    }
}

/// 16 values of [`emit`] into `o` (32 bytes).
#[inline]
#[target_feature(enable = "neon")]
fn emit16<const OP: u8, const KV: bool>(
    q: &[u8],
    a: f32,
    m: f32,
    kv: uint8x16_t,
    bias: uint8x16_t,
    o: &mut [u8],
) {
    {
        let q = load16(q);
        let q = if KV { vqtbl1q_u8(kv, q) } else { q };
        let q = vreinterpretq_s8_u8(vsubq_u8(q, bias));
        let (lo, hi) = (vmovl_s8(vget_low_s8(q)), vmovl_s8(vget_high_s8(q)));
        let a = vdupq_n_f32(a);
        let m = vdupq_n_f32(m);
        let value = |x: int16x4_t| {
            let y = vmulq_f32(a, vcvtq_f32_s32(vmovl_s16(x)));
            match OP {
                ADD => vaddq_f32(y, m),
                SUB => vsubq_f32(y, m),
                _ => y,
            }
        };
        let (o0, o1) = o.split_at_mut(16);
        store_bf16x8(o0, value(vget_low_s16(lo)), value(vget_high_s16(lo)));
        store_bf16x8(o1, value(vget_low_s16(hi)), value(vget_high_s16(hi)));
    }
}

/// Every `TS`-byte block of `b` through `decode` and [`emit`]; `OP` and
/// `KV` must be the type's `runs::shape`.
#[inline]
#[target_feature(enable = "neon")]
fn each<const TS: usize, const BS: usize, const OP: u8, const KV: bool>(
    ty: GgmlType,
    b: &[u8],
    out: &mut [u8],
    decode: impl Fn(&[u8; TS], &mut Runs<BS>),
) {
    let Some(shape) = runs::shape(ty) else {
        return;
    };
    debug_assert_eq!((shape.op as u8, shape.kv.is_some()), (OP, KV), "{ty}");
    let mut r = Runs::<BS>::new(shape);
    let kv = shape
        .kv
        .map_or(vdupq_n_u8(0), |t| load16(&t.map(|v| v as u8)));
    let bias = vdupq_n_u8(shape.bias as u8);
    for (c, o) in b.chunks_exact(TS).zip(out.chunks_exact_mut(2 * BS)) {
        let Ok(c) = c.try_into() else { continue };
        decode(c, &mut r);
        // SAFETY: this function runs with NEON.
        unsafe { emit::<BS, OP, KV>(&r, kv, bias, o) };
    }
}

#[target_feature(enable = "neon")]
unsafe fn ggml(ty: GgmlType, b: &[u8], out: &mut [u8]) -> bool {
    use GgmlType as T;
    match ty {
        T::Q4_0 => each::<18, 32, MUL, false>(ty, b, out, runs::q4_0),
        T::Q4_1 => each::<20, 32, ADD, false>(ty, b, out, runs::q4_1),
        T::Q5_0 => each::<22, 32, MUL, false>(ty, b, out, runs::q5_0),
        T::Q5_1 => each::<24, 32, ADD, false>(ty, b, out, runs::q5_1),
        T::Q8_0 => each::<34, 32, MUL, false>(ty, b, out, runs::q8_0),
        T::Q2_K => each::<84, 256, SUB, false>(ty, b, out, runs::q2_k),
        T::Q3_K => each::<110, 256, MUL, false>(ty, b, out, runs::q3_k),
        T::Q4_K => each::<144, 256, SUB, false>(ty, b, out, runs::q4_k),
        T::Q5_K => each::<176, 256, SUB, false>(ty, b, out, runs::q5_k),
        T::Q6_K => each::<210, 256, MUL, false>(ty, b, out, runs::q6_k),
        T::IQ4_NL => each::<18, 32, MUL, true>(ty, b, out, runs::iq4_nl),
        T::IQ4_XS => each::<136, 256, MUL, true>(ty, b, out, runs::iq4_xs),
        T::MXFP4 => each::<17, 32, MUL, true>(ty, b, out, runs::mxfp4),
        T::NVFP4 => each::<36, 64, MUL, true>(ty, b, out, runs::nvfp4),
        T::TQ1_0 => each::<54, 256, MUL, false>(ty, b, out, runs::tq1_0),
        T::TQ2_0 => each::<66, 256, MUL, false>(ty, b, out, runs::tq2_0),
        T::IQ2_XXS => each::<66, 256, MUL, false>(ty, b, out, runs::iq2_xxs),
        T::IQ2_XS => each::<74, 256, MUL, false>(ty, b, out, runs::iq2_xs),
        T::IQ2_S => each::<82, 256, MUL, false>(ty, b, out, runs::iq2_s),
        T::IQ3_XXS => each::<98, 256, MUL, false>(ty, b, out, runs::iq3_xxs),
        T::IQ3_S => each::<110, 256, MUL, false>(ty, b, out, runs::iq3_s),
        T::IQ1_S => each::<50, 256, MUL, false>(ty, b, out, runs::iq1_s),
        T::IQ1_M => each::<56, 256, MUL, false>(ty, b, out, runs::iq1_m),
        _ => return false,
    }
    true
}

// ---- Q8_0 encoding -----------------------------------------------------------

/// Whole Q8_0 blocks from F32, F16 or BF16 values: the AVX2 algorithm
/// (`avx2::q8_0`) with 128-bit vectors. `amax` and the clamp to 256 use a
/// compare and select rather than `fmaxnm` / `fminnm`, which turn a
/// signaling NaN into NaN; a NaN in the block is found by `fcmeq` of each
/// value with itself (then `d` is NaN, every code 0); `d` goes to F16 by
/// the portable conversion; the saturating narrows (`sqxtn`) clamp to
/// -128..=127.
#[target_feature(enable = "neon")]
unsafe fn q8_0(from: Floats, src: &[u8], out: &mut [u8]) {
    let w = 32 * from.bytes();
    for (s, o) in src.chunks_exact(w).zip(out.chunks_exact_mut(34)) {
        let mut x = [vdupq_n_f32(0.0); 8];
        match from {
            Floats::F32 => {
                for (k, v) in x.iter_mut().enumerate() {
                    *v = vreinterpretq_f32_u8(load16(&s[16 * k..]));
                }
            }
            Floats::BF16 | Floats::F16 => {
                for (k, v) in x.chunks_exact_mut(2).enumerate() {
                    let h = vreinterpretq_u16_u8(load16(&s[16 * k..]));
                    let (lo, hi) = (vget_low_u16(h), vget_high_u16(h));
                    if from == Floats::BF16 {
                        v[0] = vreinterpretq_f32_u32(vshlq_n_u32::<16>(vmovl_u16(lo)));
                        v[1] = vreinterpretq_f32_u32(vshlq_n_u32::<16>(vmovl_u16(hi)));
                    } else {
                        v[0] = f16x4(lo);
                        v[1] = f16x4(hi);
                    }
                }
            }
        }
        q8_0_block(x, o);
    }
}

/// One Q8_0 block of the 32 values `x` into the first 34 bytes of `o`.
#[inline]
#[target_feature(enable = "neon")]
fn q8_0_block(x: [float32x4_t; 8], o: &mut [u8]) {
    let mut m = vdupq_n_f32(0.0);
    let mut ordered = vdupq_n_u32(u32::MAX);
    for v in x {
        let a = vabsq_f32(v);
        m = vbslq_f32(vcgtq_f32(a, m), a, m);
        ordered = vandq_u32(ordered, vceqq_f32(v, v));
    }
    let d = if vminvq_u32(ordered) == 0 {
        f32::NAN
    } else {
        vmaxvq_f32(m) / 127.0
    };
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let idv = vdupq_n_f32(id);
    let mut q = [vdup_n_s8(0); 4];
    for (k, q) in q.iter_mut().enumerate() {
        let w = vcombine_s16(
            vqmovn_s32(codes4(x[2 * k], idv)),
            vqmovn_s32(codes4(x[2 * k + 1], idv)),
        );
        *q = vqmovn_s16(w);
    }
    o[..2].copy_from_slice(&f16_numpy(d).to_le_bytes());
    store16(&mut o[2..], vreinterpretq_u8_s8(vcombine_s8(q[0], q[1])));
    store16(&mut o[18..], vreinterpretq_u8_s8(vcombine_s8(q[2], q[3])));
}

/// `roundf(v * id)` of 4 values as i32: 0 for NaN and inf, the magnitude at
/// most 256 (the narrows then saturate as the portable cast does). A helper
/// function rather than a closure, which would not get the target feature.
#[inline]
#[target_feature(enable = "neon")]
fn codes4(v: float32x4_t, idv: float32x4_t) -> int32x4_t {
    let (cap, inf) = (vdupq_n_f32(256.0), vdupq_n_f32(f32::INFINITY));
    let y = vmulq_f32(v, idv);
    let a = vabsq_f32(y);
    let c = vbslq_f32(vcltq_f32(a, cap), a, cap);
    let t = vrndq_f32(c);
    let half = vcgeq_f32(vsubq_f32(c, t), vdupq_n_f32(0.5));
    let up = vandq_u32(half, vreinterpretq_u32_f32(vdupq_n_f32(1.0)));
    let r = vaddq_f32(t, vreinterpretq_f32_u32(up));
    let signed = vbslq_f32(vdupq_n_u32(0x8000_0000), y, r);
    let finite = vreinterpretq_s32_u32(vcltq_f32(a, inf));
    vandq_s32(vcvtq_s32_f32(signed), finite)
}
