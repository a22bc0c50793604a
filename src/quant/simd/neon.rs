//! The aarch64 Advanced SIMD (NEON) kernels.
//!
//! Deliberately small and plain: NEON is part of every aarch64 CPU, but this
//! path is only compiled and type-checked here (`cargo check --target
//! aarch64-unknown-linux-gnu`, see scripts/check_aarch64.sh), not run by the
//! x86 CI. So it accelerates only kernels that are short and obviously
//! equivalent to the portable ones, and leaves the rest to the portable code:
//! - MXFP4 whole blocks: `tbl` (`vqtbl1q_u8`) of the nibbles into the
//!   scale's table row split in low and high bytes ([`mxfp4::TABLE_SPLIT`]),
//!   stored interleaved (`st2`) as little-endian BF16 words; exact for every
//!   scale byte, as on x86;
//! - F32 / F64 -> BF16: the same integer round-to-nearest-even on f32 bits as
//!   [`crate::quant::bf16::from_f32`], NaN -> 0x7FC0 (F64 first narrowed by
//!   `fcvtn`, which rounds to nearest even like `x as f32`).
//!
//! Left portable: F16 (stable Rust has no f16 vector intrinsics), FP8, the
//! transposed MXFP4 kernel and the ggml types.

use std::arch::aarch64::*;

use super::{Fns, Kernels, Level};
use crate::quant::{float, fp8, mxfp4};

pub(crate) static KERNELS: Kernels = Kernels {
    level: Level::Neon,
    fns: Fns {
        mxfp4_blocks,
        mxfp4_transposed: mxfp4::portable_transposed,
        f16: float::portable_f16,
        f32,
        f64,
        e4m3: fp8::portable_e4m3,
        e5m2: fp8::portable_e5m2,
        e4m3_scaled: fp8::portable_e4m3_scaled,
        ggml: super::portable_ggml,
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
unsafe fn mxfp4_blocks(blocks: &[u8], scales: &[u8], out: &mut [u8]) {
    for ((blk, &s), o) in blocks
        .chunks_exact(16)
        .zip(scales)
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
