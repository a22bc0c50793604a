//! The x86-64 AVX-512 (F/BW/VL, with AVX2 + F16C) kernels.
//!
//! Every function here enables `avx512f,avx512bw,avx512vl,avx2,f16c` and is
//! only reachable through [`KERNELS`], which `simd::get` hands out after
//! detecting all of them. Same results as the portable kernels, bit for bit;
//! ragged tails go to the portable code.
//!
//! What 512 bits add over [`super::avx2`]:
//! - MXFP4: one block is one register: nibbles widened to 32 word indices
//!   and `vpermw` into the scale's 16-word [`mxfp4::TABLE`] row (exact for
//!   every scale), one 64-byte store;
//! - transposed experts: after the byte transpose (shared with AVX2), each
//!   output row's 32 values are one `vpermw` of the scale-127 words and one
//!   masked add of the rows' exponent deltas (mask: non-zero nibbles);
//! - elementwise conversions and ggml runs 16 values per instruction, with
//!   `vpmovdw` narrowing and mask registers for the NaN rule. (The i-quants
//!   IQ2_* / IQ3_* take the AVX2 code: their grid lookups, compiled with
//!   AVX-512, become slow gathers.)

use std::arch::x86_64::*;

use super::avx2::{e4m3_small_bf16, transpose16};
use super::ggml_runs::{self as runs, Runs};
use super::{Fns, Kernels, Level};
use crate::quant::ggml::GgmlType;
use crate::quant::mxfp4::{self, PREFETCH_ROWS, Pair, Transposed, tile_deltas};
use crate::quant::{float, fp8};

pub(crate) static KERNELS: Kernels = Kernels {
    level: Level::Avx512,
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
        // AVX-512 adds nothing a 32-value block needs over AVX2.
        q8_0: super::avx2::q8_0,
        // INT4 codes: 8 values a vector suit the 8-row tiles; AVX2's code.
        nibbles: super::avx2::nibbles,
        int4_rows8: super::avx2::int4_rows8,
    },
};

// ---- loads, stores, rounding -------------------------------------------

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
fn load16(s: &[u8]) -> __m128i {
    let s = &s[..16];
    // SAFETY: `s` has 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
fn load32(s: &[u8]) -> __m256i {
    let s = &s[..32];
    // SAFETY: `s` has 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
fn load64(s: &[u8]) -> __m512i {
    let s = &s[..64];
    // SAFETY: `s` has 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(s.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
fn store32(d: &mut [u8], v: __m256i) {
    let d = &mut d[..32];
    // SAFETY: `d` has 32 writable bytes; the store is unaligned.
    unsafe { _mm256_storeu_si256(d.as_mut_ptr().cast(), v) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
fn store64(d: &mut [u8], v: __m512i) {
    let d = &mut d[..64];
    // SAFETY: `d` has 64 writable bytes; the store is unaligned.
    unsafe { _mm512_storeu_si512(d.as_mut_ptr().cast(), v) }
}

/// BF16 of 16 f32 (nearest even, NaN -> 0x7FC0) as 16 words.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
fn bf16x16(f: __m512) -> __m256i {
    let bits = _mm512_castps_si512(f);
    let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
    let biased = _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7FFF)), odd);
    let rounded = _mm512_srli_epi32::<16>(biased);
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(f, f);
    _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(
        rounded,
        nan,
        _mm512_set1_epi32(0x7FC0),
    ))
}

// ---- MXFP4 -----------------------------------------------------------------

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
unsafe fn mxfp4_blocks(pair: &Pair, out: &mut [u8]) {
    let m = _mm_set1_epi8(0x0F);
    for ((blk, &s), o) in pair
        .blocks()
        .chunks_exact(16)
        .zip(pair.scales())
        .zip(out.chunks_exact_mut(64))
    {
        let b = load16(blk);
        let lo = _mm_and_si128(b, m);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), m);
        // Values 0..31 in order: byte j's low nibble is value 2j.
        let nibbles = _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi));
        let idx = _mm512_cvtepu8_epi16(nibbles);
        let row = &mxfp4::TABLE[s as usize];
        // SAFETY: a table row is 16 u16 = 32 bytes; an unaligned load.
        let t = unsafe { _mm256_loadu_si256(row.as_ptr().cast()) };
        store64(o, _mm512_permutexvar_epi16(idx, _mm512_castsi256_si512(t)));
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
unsafe fn mxfp4_transposed(x: &Transposed, out: &mut [u8]) {
    let (scales, g) = (x.expert().scales(), x.expert().groups());
    mxfp4::walk_tiles(x, out, |x, gi, j0, out| {
        tile_deltas(scales, g, gi, j0)
            .map(|d| transposed_tile(x, gi, j0, &d, out))
            .is_some()
    });
}

/// One full tile by exponent arithmetic (see `avx2::transposed_tile`);
/// rows in natural order: lane 0 of rows[i] is row j0 + i, lane 1 row
/// j0 + i + 16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
fn transposed_tile(x: &Transposed, gi: usize, j0: usize, delta: &[i16; 32], out: &mut [u8]) {
    let (blocks, g) = (x.expert().blocks(), x.expert().groups());
    let mut rows = [_mm256_setzero_si256(); 16];
    for (i, row) in rows.iter_mut().enumerate() {
        let a = (j0 + i) * g + gi;
        let b = a + 16 * g;
        mxfp4::prefetch(blocks, (a + PREFETCH_ROWS * g) * 16);
        mxfp4::prefetch(blocks, (b + PREFETCH_ROWS * g) * 16);
        *row = _mm256_set_m128i(load16(&blocks[b * 16..]), load16(&blocks[a * 16..]));
    }
    let cols = transpose16(&rows);
    // SAFETY: a table row is 32 bytes, `delta` 64 bytes; unaligned loads.
    let (base, d) = unsafe {
        (
            _mm512_castsi256_si512(_mm256_loadu_si256(mxfp4::TABLE[127].as_ptr().cast())),
            _mm512_loadu_si512(delta.as_ptr().cast()),
        )
    };
    let seven = _mm512_set1_epi16(7);
    let m = _mm256_set1_epi8(0x0F);
    let (k0, k1) = x.ks(gi);
    for (p, &col) in cols.iter().enumerate() {
        for (k, nib) in [
            (2 * p, _mm256_and_si256(col, m)),
            (2 * p + 1, _mm256_and_si256(_mm256_srli_epi16::<4>(col), m)),
        ] {
            if k < k0 || k >= k1 {
                continue;
            }
            let idx = _mm512_cvtepu8_epi16(nib);
            let v = _mm512_permutexvar_epi16(idx, base);
            let nonzero = _mm512_test_epi16_mask(idx, seven);
            let v = _mm512_mask_add_epi16(v, nonzero, v, d);
            let o = x.at(gi, k, j0);
            store64(&mut out[o..], v);
        }
    }
}

// ---- F16 / F32 / F64 -------------------------------------------------------

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
unsafe fn f16(src: &[u8], dst: &mut [u8]) {
    let mut s = src.chunks_exact(64);
    let mut d = dst.chunks_exact_mut(64);
    for (s, d) in (&mut s).zip(&mut d) {
        let a = bf16x16(_mm512_cvtph_ps(load32(s)));
        let b = bf16x16(_mm512_cvtph_ps(load32(&s[32..])));
        store64(d, _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b));
    }
    float::portable_f16(s.remainder(), d.into_remainder());
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
unsafe fn f32(src: &[u8], dst: &mut [u8]) {
    let mut s = src.chunks_exact(128);
    let mut d = dst.chunks_exact_mut(64);
    for (s, d) in (&mut s).zip(&mut d) {
        let a = bf16x16(_mm512_castsi512_ps(load64(s)));
        let b = bf16x16(_mm512_castsi512_ps(load64(&s[64..])));
        store64(d, _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b));
    }
    float::portable_f32(s.remainder(), d.into_remainder());
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
unsafe fn f64(src: &[u8], dst: &mut [u8]) {
    let mut s = src.chunks_exact(128);
    let mut d = dst.chunks_exact_mut(32);
    for (s, d) in (&mut s).zip(&mut d) {
        // vcvtpd2ps rounds to nearest even, as `x as f32` does.
        let lo = _mm512_cvtpd_ps(_mm512_castsi512_pd(load64(s)));
        let hi = _mm512_cvtpd_ps(_mm512_castsi512_pd(load64(&s[64..])));
        let f = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castps_pd(_mm512_castps256_ps512(lo)),
            _mm256_castps_pd(hi),
        ));
        store32(d, bf16x16(f));
    }
    float::portable_f64(s.remainder(), d.into_remainder());
}

// ---- FP8 -------------------------------------------------------------------

/// f32 of 16 F8_E4M3 codes (NaN as 0x7FC00000); see `avx2::e4m3x8`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
fn e4m3x16(c: __m128i) -> __m512i {
    let c = _mm512_cvtepu8_epi32(c);
    let mag = _mm512_and_si512(c, _mm512_set1_epi32(0x7F));
    let normal = _mm512_add_epi32(_mm512_slli_epi32::<20>(mag), _mm512_set1_epi32(120 << 23));
    // SAFETY: the first 16 entries of the table are 64 bytes; an unaligned
    // load. Codes 0..7 (zero, subnormals) are taken from it.
    let small = unsafe { _mm512_loadu_si512(fp8::E4M3_F32.as_ptr().cast()) };
    let small = _mm512_permutexvar_epi32(mag, small);
    let v = _mm512_mask_mov_epi32(
        normal,
        _mm512_cmplt_epi32_mask(mag, _mm512_set1_epi32(8)),
        small,
    );
    let nan = _mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7F));
    let v = _mm512_mask_mov_epi32(v, nan, _mm512_set1_epi32(0x7FC0_0000));
    let sign = _mm512_slli_epi32::<24>(_mm512_and_si512(c, _mm512_set1_epi32(0x80)));
    _mm512_or_si512(v, sign)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
unsafe fn e4m3(src: &[u8], dst: &mut [u8]) {
    // BF16 bytes straight from the codes, as `avx2::e4m3`, 64 at a time.
    let small = e4m3_small_bf16();
    let small_lo = _mm512_broadcast_i32x4(small);
    let small_hi = _mm512_broadcast_i32x4(_mm_srli_si128::<8>(small));
    // Qwords of the interleaved words (codes 0..7 | 16..23 | .. and
    // 8..15 | 24..31 | ..) in code order.
    let first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    let second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    let mut s = src.chunks_exact(64);
    let mut d = dst.chunks_exact_mut(128);
    let byte = |v: u8| _mm512_set1_epi8(v as i8);
    for (s, d) in (&mut s).zip(&mut d) {
        let c = load64(s);
        let mag = _mm512_and_si512(c, byte(0x7F));
        let hi = _mm512_add_epi8(
            _mm512_and_si512(_mm512_srli_epi16::<4>(mag), byte(0x07)),
            byte(0x3C),
        );
        let lo = _mm512_and_si512(_mm512_slli_epi16::<4>(mag), byte(0xF0));
        let is_small = _mm512_cmplt_epu8_mask(mag, byte(8));
        let hi = _mm512_mask_shuffle_epi8(hi, is_small, small_hi, mag);
        let lo = _mm512_mask_shuffle_epi8(lo, is_small, small_lo, mag);
        let nan = _mm512_cmpeq_epi8_mask(mag, byte(0x7F));
        let hi = _mm512_mask_mov_epi8(hi, nan, byte(0x7F));
        let lo = _mm512_mask_mov_epi8(lo, nan, byte(0xC0));
        let sign = _mm512_maskz_mov_epi8(!nan, _mm512_and_si512(c, byte(0x80)));
        let hi = _mm512_or_si512(hi, sign);
        let w0 = _mm512_unpacklo_epi8(lo, hi);
        let w1 = _mm512_unpackhi_epi8(lo, hi);
        let (d0, d1) = d.split_at_mut(64);
        store64(d0, _mm512_permutex2var_epi64(w0, first, w1));
        store64(d1, _mm512_permutex2var_epi64(w0, second, w1));
    }
    fp8::portable_e4m3(s.remainder(), d.into_remainder());
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
unsafe fn e4m3_scaled(src: &[u8], scale: f32, dst: &mut [u8]) {
    let mut s = src.chunks_exact(16);
    let mut d = dst.chunks_exact_mut(32);
    let k = _mm512_set1_ps(scale);
    for (s, d) in (&mut s).zip(&mut d) {
        let v = _mm512_castsi512_ps(e4m3x16(load16(s)));
        store32(d, bf16x16(_mm512_mul_ps(v, k)));
    }
    fp8::portable_e4m3_scaled(s.remainder(), scale, d.into_remainder());
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
unsafe fn e5m2(src: &[u8], dst: &mut [u8]) {
    let mut s = src.chunks_exact(16);
    let mut d = dst.chunks_exact_mut(32);
    for (s, d) in (&mut s).zip(&mut d) {
        // Code c is the F16 with high byte c.
        let h = _mm256_slli_epi16::<8>(_mm256_cvtepu8_epi16(load16(s)));
        store32(d, bf16x16(_mm512_cvtph_ps(h)));
    }
    fp8::portable_e5m2(s.remainder(), d.into_remainder());
}

// ---- ggml ------------------------------------------------------------------

/// [`emit`]'s operations (`runs::Op` as a const generic).
const MUL: u8 = 0;
const ADD: u8 = 1;
const SUB: u8 = 2;

/// BF16 of a block's runs into `out[..2 * BS]`: `a * f32(q)` (then `+ m`
/// or `- m` by `OP`), 16 values at a time; `KV`: look the codes up in
/// `kv` first. `kv` and `bias` are `r.kv` and `r.bias` as vectors.
///
/// # Safety
///
/// The CPU supports AVX-512 F/BW/VL. `#[inline(always)]` compiles this body into its
/// callers, which enable those features (a `#[target_feature]` function
/// would be a call per block here, which measured a third slower).
#[inline(always)]
unsafe fn emit<const BS: usize, const OP: u8, const KV: bool>(
    r: &Runs<BS>,
    kv: __m128i,
    bias: __m128i,
    out: &mut [u8],
) {
    let out = &mut out[..2 * BS];
    let shift = r.run.trailing_zeros();
    for i in (0..BS).step_by(16) {
        let t = (i >> shift) & 15;
        // SAFETY: the CPU supports the features (this function's contract);
        // `r.q[i..i + 16]` is in bounds (`i + 16 <= BS`): an unaligned load.
        unsafe {
            let q = _mm_loadu_si128(r.q[i..i + 16].as_ptr().cast());
            let q = if KV { _mm_shuffle_epi8(kv, q) } else { q };
            let q = _mm_sub_epi8(q, bias);
            let a = _mm512_set1_ps(r.a[t]);
            let mut y = _mm512_mul_ps(a, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)));
            if OP == ADD {
                y = _mm512_add_ps(y, _mm512_set1_ps(r.m[t]));
            } else if OP == SUB {
                y = _mm512_sub_ps(y, _mm512_set1_ps(r.m[t]));
            }
            store32(&mut out[2 * i..], bf16x16(y));
        }
    }
}

/// Every `TS`-byte block of `b` through `decode` and [`emit`]; `OP` and
/// `KV` must be the type's `runs::shape` (the tests compare every type
/// with the portable code).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
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
    let kv = shape.kv.map_or(_mm_setzero_si128(), |t| {
        // SAFETY: a value table is 16 i8; an unaligned 16-byte load.
        unsafe { _mm_loadu_si128(t.as_ptr().cast()) }
    });
    let bias = _mm_set1_epi8(shape.bias);
    for (c, o) in b.chunks_exact(TS).zip(out.chunks_exact_mut(2 * BS)) {
        let Ok(c) = c.try_into() else { continue };
        decode(c, &mut r);
        // SAFETY: this function runs with the features `emit` needs.
        unsafe { emit::<BS, OP, KV>(&r, kv, bias, o) };
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
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
        // The i-quants' grid lookups: compiled with AVX-512, LLVM
        // vectorizes them into gathers, which are slow on current CPUs (a
        // third slower than the AVX2 build, measured on Zen 4).
        T::IQ2_XXS | T::IQ2_XS | T::IQ2_S | T::IQ3_XXS | T::IQ3_S | T::IQ1_S | T::IQ1_M => {
            // SAFETY: this path runs only where AVX2 and F16C are present too.
            return unsafe { super::avx2::ggml(ty, b, out) };
        }
        _ => return false,
    }
    true
}
