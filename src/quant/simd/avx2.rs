//! The x86-64 AVX2 (+ F16C) kernels.
//!
//! Every function here is `#[target_feature(enable = "avx2,f16c")]` and is
//! only reachable through [`KERNELS`], which `simd::get` hands out after
//! detecting both features. Each computes exactly the portable kernel's
//! bytes (the tests check every path against the golden files and against
//! the portable code); ragged tails go to the portable code.
//!
//! Techniques (facts as in ggml's x86 quants and the `half` crate):
//! - MXFP4: `pshufb` of a nibble vector into the scale's 16-entry BF16 table
//!   row, split in a low-byte and a high-byte half ([`mxfp4::TABLE_SPLIT`]),
//!   then byte interleaving into words: exact for every scale byte.
//! - MXFP4 transposed experts: 32 source rows x 16 bytes are transposed as
//!   bytes (4 unpack stages), so that one vector holds one byte position of
//!   32 rows; a nibble lookup gives the scale-127 BF16 bits, and the row's
//!   scale is added to the exponent field ([`mxfp4::EXPONENT_SCALES`], exact
//!   there; other tiles take the portable table code).
//! - F16: `vcvtph2ps` (exact, NaN quieted) then integer round-to-nearest-even
//!   on the f32 bits, NaN -> 0x7FC0 by compare and blend.
//! - FP8 E4M3 by integer operations: the exponent rebiased (`+ 120 << 7`
//!   in BF16, `+ 120 << 23` in f32), the 8 subnormal codes from the table;
//!   plain E4M3 computes the BF16 bytes directly, block-scaled E4M3 goes
//!   through f32 and one multiply. E5M2 is F16 with a zero low byte.
//! - ggml: blocks unpacked into runs (`ggml_runs`), then `a * f32(q)` (+/- m)
//!   with IEEE f32 vector arithmetic (no FMA), then rounding as for F16.
//! - INT4 nibbles through a 16-entry f32 table (compressed-tensors, MLX):
//!   a word's 8 nibbles shifted into lanes (`vpsrlvd`), two `vpermps`
//!   lookups and a blend on bit 3.
//! - GPTQ / AWQ, eight output rows at once: one vector holds one input's
//!   codes for the eight rows (GPTQ: eight consecutive `qweight` words;
//!   AWQ: one word's nibbles), `(q - z) * s` in f32 (exact), `vcvtps2ph`
//!   (the F16 rounding), an 8 x 8 transpose of the F16 values, `vcvtph2ps`.

use std::arch::x86_64::*;

use super::ggml_runs::{self as runs, Runs};
use super::{Fns, Kernels, Level};
use crate::quant::ggml::GgmlType;
use crate::quant::ggml_encode::Floats;
use crate::quant::mxfp4::{self, PREFETCH_ROWS, Pair, Transposed, tile_deltas};
use crate::quant::nibbles::{Packing, Rows8};
use crate::quant::{float, fp8};

pub(crate) static KERNELS: Kernels = Kernels {
    level: Level::Avx2,
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
        nibbles,
        int4_rows8,
    },
};

// ---- loads, stores, rounding -------------------------------------------

/// 16 bytes of `s` (from its start) as a vector.
#[inline]
#[target_feature(enable = "avx2")]
fn load16(s: &[u8]) -> __m128i {
    let s = &s[..16];
    // SAFETY: `s` has 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
}

/// 32 bytes of `s` (from its start) as a vector.
#[inline]
#[target_feature(enable = "avx2")]
fn load32(s: &[u8]) -> __m256i {
    let s = &s[..32];
    // SAFETY: `s` has 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// Store `v` into the first 32 bytes of `d`.
#[inline]
#[target_feature(enable = "avx2")]
fn store32(d: &mut [u8], v: __m256i) {
    let d = &mut d[..32];
    // SAFETY: `d` has 32 writable bytes; the store is unaligned.
    unsafe { _mm256_storeu_si256(d.as_mut_ptr().cast(), v) }
}

/// BF16 bits of 8 f32 (nearest even, NaN -> 0x7FC0), one per 32-bit lane.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn bf16x8(f: __m256) -> __m256i {
    let bits = _mm256_castps_si256(f);
    let odd = _mm256_and_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(1));
    let biased = _mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7FFF)), odd);
    let rounded = _mm256_srli_epi32::<16>(biased);
    let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(f, f));
    _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7FC0), nan)
}

/// Round 16 f32 (`a` then `b`) to BF16 and store them in 32 bytes of `d`.
#[inline]
#[target_feature(enable = "avx2")]
fn store_bf16x16(d: &mut [u8], a: __m256, b: __m256) {
    // packus interleaves the 128-bit lanes: a0 b0 a1 b1; put them in order.
    let packed = _mm256_packus_epi32(bf16x8(a), bf16x8(b));
    store32(d, _mm256_permute4x64_epi64::<0b11_01_10_00>(packed));
}

// ---- MXFP4 -----------------------------------------------------------------

/// Nibble indices of a 16-byte block for `pshufb`: lane 0 holds values
/// 0..7 and 16..23, lane 1 values 8..15 and 24..31, so that interleaving the
/// looked-up low and high bytes gives values 0..15 and then 16..31.
#[inline]
#[target_feature(enable = "avx2")]
fn block_indices(blk: &[u8]) -> __m256i {
    let b = load16(blk);
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(b, m);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), m);
    let i0 = _mm_unpacklo_epi8(lo, hi); // values 0..15
    let i1 = _mm_unpackhi_epi8(lo, hi); // values 16..31
    _mm256_set_m128i(_mm_unpackhi_epi64(i0, i1), _mm_unpacklo_epi64(i0, i1))
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn mxfp4_blocks(pair: &Pair, out: &mut [u8]) {
    for ((blk, &s), o) in pair
        .blocks()
        .chunks_exact(16)
        .zip(pair.scales())
        .zip(out.chunks_exact_mut(64))
    {
        let idx = block_indices(blk);
        let t = &mxfp4::TABLE_SPLIT[s as usize];
        let lo = _mm256_broadcastsi128_si256(load16(&t[..16]));
        let hi = _mm256_broadcastsi128_si256(load16(&t[16..]));
        let l = _mm256_shuffle_epi8(lo, idx);
        let h = _mm256_shuffle_epi8(hi, idx);
        let (o0, o1) = o.split_at_mut(32);
        store32(o0, _mm256_unpacklo_epi8(l, h));
        store32(o1, _mm256_unpackhi_epi8(l, h));
    }
}

/// Transpose 16 x 16 bytes in each 128-bit lane: `x[i]` is row `i`; the
/// result's element `p` holds byte `p` of rows 0..15 (per lane).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn transpose16(x: &[__m256i; 16]) -> [__m256i; 16] {
    let z = _mm256_setzero_si256();
    // a[i]: columns 0..7 of rows 2i, 2i+1 (byte pairs); a[8 + i]: 8..15.
    let mut a = [z; 16];
    for i in 0..8 {
        a[i] = _mm256_unpacklo_epi8(x[2 * i], x[2 * i + 1]);
        a[8 + i] = _mm256_unpackhi_epi8(x[2 * i], x[2 * i + 1]);
    }
    // b[4q + i]: columns 4q..4q+3 of rows 4i..4i+3.
    let mut b = [z; 16];
    for h in 0..2 {
        for i in 0..4 {
            let (u, v) = (a[8 * h + 2 * i], a[8 * h + 2 * i + 1]);
            b[8 * h + i] = _mm256_unpacklo_epi16(u, v);
            b[8 * h + 4 + i] = _mm256_unpackhi_epi16(u, v);
        }
    }
    // c[2cp + i]: columns 2cp, 2cp+1 of rows 8i..8i+7.
    let mut c = [z; 16];
    for q in 0..4 {
        for i in 0..2 {
            let (u, v) = (b[4 * q + 2 * i], b[4 * q + 2 * i + 1]);
            c[4 * q + i] = _mm256_unpacklo_epi32(u, v);
            c[4 * q + 2 + i] = _mm256_unpackhi_epi32(u, v);
        }
    }
    let mut cols = [z; 16];
    for cp in 0..8 {
        cols[2 * cp] = _mm256_unpacklo_epi64(c[2 * cp], c[2 * cp + 1]);
        cols[2 * cp + 1] = _mm256_unpackhi_epi64(c[2 * cp], c[2 * cp + 1]);
    }
    cols
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn mxfp4_transposed(x: &Transposed, out: &mut [u8]) {
    let (scales, g) = (x.expert().scales(), x.expert().groups());
    mxfp4::walk_tiles(x, out, |x, gi, j0, out| {
        tile_deltas(scales, g, gi, j0)
            .map(|d| transposed_tile(x, gi, j0, &d, out))
            .is_some()
    });
}

/// One full tile (32 source rows of block column `gi`) by exponent
/// arithmetic; `delta` from [`tile_deltas`].
#[inline]
#[target_feature(enable = "avx2")]
fn transposed_tile(x: &Transposed, gi: usize, j0: usize, delta: &[i16; 32], out: &mut [u8]) {
    let (blocks, g) = (x.expert().blocks(), x.expert().groups());
    // Lane 0 of rows[i] is source row j0 + ORDER[i], lane 1 row
    // j0 + ORDER[i] + 8, with ORDER = 0..8, 16..24: interleaving bytes 0..7
    // of both lanes then gives rows 0..15 in order, bytes 8..15 rows 16..31.
    let mut rows = [_mm256_setzero_si256(); 16];
    for (i, row) in rows.iter_mut().enumerate() {
        let a = (j0 + i + (i / 8) * 8) * g + gi;
        let b = a + 8 * g;
        mxfp4::prefetch(blocks, (a + PREFETCH_ROWS * g) * 16);
        mxfp4::prefetch(blocks, (b + PREFETCH_ROWS * g) * 16);
        *row = _mm256_set_m128i(load16(&blocks[b * 16..]), load16(&blocks[a * 16..]));
    }
    let cols = transpose16(&rows);
    let base = &mxfp4::TABLE_SPLIT[127];
    let base_lo = _mm256_broadcastsi128_si256(load16(&base[..16]));
    let base_hi = _mm256_broadcastsi128_si256(load16(&base[16..]));
    // 0xFF where the nibble is not a zero: only those take the scale.
    let nonzero = _mm256_set_epi64x(
        0xFFFF_FFFF_FFFF_FF00u64 as i64,
        0xFFFF_FFFF_FFFF_FF00u64 as i64,
        0xFFFF_FFFF_FFFF_FF00u64 as i64,
        0xFFFF_FFFF_FFFF_FF00u64 as i64,
    );
    // SAFETY: `delta` is 32 i16 (64 bytes): two unaligned 32-byte loads.
    let (d0, d1) = unsafe {
        let p = delta.as_ptr();
        (
            _mm256_loadu_si256(p.cast()),
            _mm256_loadu_si256(p.add(16).cast()),
        )
    };
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
            let l = _mm256_shuffle_epi8(base_lo, nib);
            let h = _mm256_shuffle_epi8(base_hi, nib);
            let nz = _mm256_shuffle_epi8(nonzero, nib);
            let w0 = _mm256_unpacklo_epi8(l, h);
            let w1 = _mm256_unpackhi_epi8(l, h);
            let w0 = _mm256_add_epi16(w0, _mm256_and_si256(d0, _mm256_unpacklo_epi8(nz, nz)));
            let w1 = _mm256_add_epi16(w1, _mm256_and_si256(d1, _mm256_unpackhi_epi8(nz, nz)));
            let o = x.at(gi, k, j0);
            let (o0, o1) = out[o..o + 64].split_at_mut(32);
            store32(o0, w0);
            store32(o1, w1);
        }
    }
}

// ---- F16 / F32 / F64 -------------------------------------------------------

#[target_feature(enable = "avx2,f16c")]
unsafe fn f16(src: &[u8], dst: &mut [u8]) {
    let mut s = src.chunks_exact(32);
    let mut d = dst.chunks_exact_mut(32);
    for (s, d) in (&mut s).zip(&mut d) {
        let a = _mm256_cvtph_ps(load16(s));
        let b = _mm256_cvtph_ps(load16(&s[16..]));
        store_bf16x16(d, a, b);
    }
    float::portable_f16(s.remainder(), d.into_remainder());
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn f32(src: &[u8], dst: &mut [u8]) {
    let mut s = src.chunks_exact(64);
    let mut d = dst.chunks_exact_mut(32);
    for (s, d) in (&mut s).zip(&mut d) {
        let a = _mm256_castsi256_ps(load32(s));
        let b = _mm256_castsi256_ps(load32(&s[32..]));
        store_bf16x16(d, a, b);
    }
    float::portable_f32(s.remainder(), d.into_remainder());
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn f64(src: &[u8], dst: &mut [u8]) {
    let mut s = src.chunks_exact(128);
    let mut d = dst.chunks_exact_mut(32);
    // vcvtpd2ps rounds to nearest even (the MXCSR default Rust runs with),
    // as `x as f32` does.
    let four = |s: &[u8]| _mm256_cvtpd_ps(_mm256_castsi256_pd(load32(s)));
    for (s, d) in (&mut s).zip(&mut d) {
        let a = _mm256_set_m128(four(&s[32..]), four(s));
        let b = _mm256_set_m128(four(&s[96..]), four(&s[64..]));
        store_bf16x16(d, a, b);
    }
    float::portable_f64(s.remainder(), d.into_remainder());
}

// ---- FP8 -------------------------------------------------------------------

/// f32 of 8 F8_E4M3 codes (the low 8 bytes of `c`), as `fp8::E4M3_F32`
/// except that NaN is 0x7FC00000 (any NaN rounds to 0x7FC0). Integer
/// operations only: normal codes rebias their exponent (`+ 120 << 23`),
/// the 8 subnormal magnitudes come from the table (float arithmetic on
/// f32 subnormals would be exact too, but costs a microcode assist).
#[inline]
#[target_feature(enable = "avx2")]
fn e4m3x8(c: __m128i) -> __m256 {
    let c = _mm256_cvtepu8_epi32(c);
    let mag = _mm256_and_si256(c, _mm256_set1_epi32(0x7F));
    let normal = _mm256_add_epi32(_mm256_slli_epi32::<20>(mag), _mm256_set1_epi32(120 << 23));
    // SAFETY: the first 8 entries of the table (codes 0..7: zero and the
    // subnormals) are 32 bytes; an unaligned load.
    let small = unsafe { _mm256_loadu_si256(fp8::E4M3_F32.as_ptr().cast()) };
    let small = _mm256_permutevar8x32_epi32(small, mag);
    let is_small = _mm256_cmpgt_epi32(_mm256_set1_epi32(8), mag);
    let v = _mm256_blendv_epi8(normal, small, is_small);
    let nan = _mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x7F));
    let v = _mm256_blendv_epi8(v, _mm256_set1_epi32(0x7FC0_0000), nan);
    let sign = _mm256_slli_epi32::<24>(_mm256_and_si256(c, _mm256_set1_epi32(0x80)));
    _mm256_castsi256_ps(_mm256_or_si256(v, sign))
}

/// The BF16 of the E4M3 codes 0..7 (zero and the subnormals `m * 2^-9`)
/// split in bytes: low bytes in 0..8, high bytes in 8..16 (for `pshufb`).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn e4m3_small_bf16() -> __m128i {
    // SAFETY: the first 8 entries of the table are 16 bytes; an unaligned load.
    let t = unsafe { _mm_loadu_si128(fp8::E4M3_BF16.as_ptr().cast()) };
    _mm_shuffle_epi8(
        t,
        _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15),
    )
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn e4m3(src: &[u8], dst: &mut [u8]) {
    // BF16 bytes straight from the codes (every E4M3 value is exact in
    // BF16): normal codes are `(c & 0x7F) << 4` plus the exponent rebias
    // 120 << 7 (high byte 0x3C + mag >> 4, low byte mag << 4), the codes
    // below 8 come from the table, 0x7F / 0xFF are NaN 0x7FC0, the sign is
    // bit 7.
    let small = e4m3_small_bf16();
    let small_lo = _mm256_broadcastsi128_si256(small);
    let small_hi = _mm256_broadcastsi128_si256(_mm_srli_si128::<8>(small));
    let mut s = src.chunks_exact(32);
    let mut d = dst.chunks_exact_mut(64);
    let byte = |v: i8| _mm256_set1_epi8(v);
    for (s, d) in (&mut s).zip(&mut d) {
        let c = load32(s);
        let mag = _mm256_and_si256(c, byte(0x7F));
        let hi = _mm256_add_epi8(
            _mm256_and_si256(_mm256_srli_epi16::<4>(mag), byte(0x07)),
            byte(0x3C),
        );
        let lo = _mm256_and_si256(_mm256_slli_epi16::<4>(mag), byte(0xF0u8 as i8));
        let is_small = _mm256_cmpgt_epi8(byte(8), mag);
        let hi = _mm256_blendv_epi8(hi, _mm256_shuffle_epi8(small_hi, mag), is_small);
        let lo = _mm256_blendv_epi8(lo, _mm256_shuffle_epi8(small_lo, mag), is_small);
        let nan = _mm256_cmpeq_epi8(mag, byte(0x7F));
        let sign = _mm256_andnot_si256(nan, _mm256_and_si256(c, byte(0x80u8 as i8)));
        let hi = _mm256_or_si256(_mm256_blendv_epi8(hi, byte(0x7F), nan), sign);
        let lo = _mm256_blendv_epi8(lo, byte(0xC0u8 as i8), nan);
        // Words of codes 0..7 | 16..23 and 8..15 | 24..31: put in order.
        let w0 = _mm256_unpacklo_epi8(lo, hi);
        let w1 = _mm256_unpackhi_epi8(lo, hi);
        let (d0, d1) = d.split_at_mut(32);
        store32(d0, _mm256_permute2x128_si256::<0x20>(w0, w1));
        store32(d1, _mm256_permute2x128_si256::<0x31>(w0, w1));
    }
    fp8::portable_e4m3(s.remainder(), d.into_remainder());
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn e4m3_scaled(src: &[u8], scale: f32, dst: &mut [u8]) {
    let mut s = src.chunks_exact(16);
    let mut d = dst.chunks_exact_mut(32);
    let k = _mm256_set1_ps(scale);
    for (s, d) in (&mut s).zip(&mut d) {
        let c = load16(s);
        let a = _mm256_mul_ps(e4m3x8(c), k);
        let b = _mm256_mul_ps(e4m3x8(_mm_srli_si128::<8>(c)), k);
        store_bf16x16(d, a, b);
    }
    fp8::portable_e4m3_scaled(s.remainder(), scale, d.into_remainder());
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn e5m2(src: &[u8], dst: &mut [u8]) {
    let mut s = src.chunks_exact(16);
    let mut d = dst.chunks_exact_mut(32);
    for (s, d) in (&mut s).zip(&mut d) {
        // Code c is the F16 with high byte c.
        let h = _mm256_slli_epi16::<8>(_mm256_cvtepu8_epi16(load16(s)));
        let a = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
        let b = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(h));
        store_bf16x16(d, a, b);
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
/// The CPU supports AVX2. `#[inline(always)]` compiles this body into its
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
            let x0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
            let x1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(q)));
            let a = _mm256_set1_ps(r.a[t]);
            let (mut y0, mut y1) = (_mm256_mul_ps(a, x0), _mm256_mul_ps(a, x1));
            if OP == ADD {
                let m = _mm256_set1_ps(r.m[t]);
                (y0, y1) = (_mm256_add_ps(y0, m), _mm256_add_ps(y1, m));
            } else if OP == SUB {
                let m = _mm256_set1_ps(r.m[t]);
                (y0, y1) = (_mm256_sub_ps(y0, m), _mm256_sub_ps(y1, m));
            }
            store_bf16x16(&mut out[2 * i..], y0, y1);
        }
    }
}

/// Every `TS`-byte block of `b` through `decode` and [`emit`]; `OP` and
/// `KV` must be the type's `runs::shape` (the tests compare every type
/// with the portable code).
#[inline]
#[target_feature(enable = "avx2")]
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

#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn ggml(ty: GgmlType, b: &[u8], out: &mut [u8]) -> bool {
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

/// Whole Q8_0 blocks from F32, F16 or BF16 values: the portable
/// `ggml_encode::q8_0_block` in vector registers, with the same float
/// operations (so the same bytes):
/// - `amax`: `vmaxps(|x|, m)` (which keeps `m` when `|x|` is NaN), the
///   lanes then reduced in any order; NaN (`d` the F16 NaN 0x7E00, every
///   code 0) when an unordered compare finds a NaN in the block;
/// - `d = amax / 127`, `id = 1 / d` (0 for `d == 0`): IEEE f32 divisions,
///   eight blocks per vector; `d` to F16 by `vcvtps2ph` (round to nearest
///   even, as numpy; the only NaN `d` can be is `f32::NAN`, which it
///   writes as 0x7E00, as `f16_numpy` does);
/// - `q = roundf(x * id)`: the magnitude clamped to 256 (`vminps` gives 256
///   for NaN), truncated (`vroundps` toward zero), plus one when the
///   fraction is at least a half, the sign of `x * id` put back; NaN and inf
///   give 0 and the saturating packs clamp to -128..=127, as the portable
///   code's cast does.
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn q8_0(from: Floats, src: &[u8], out: &mut [u8]) {
    let w = 32 * from.bytes();
    // Eight blocks at a time: their largest magnitudes first (independent
    // chains the core overlaps), then `d` and `1 / d` of all eight in one
    // vector division each and one F16 conversion, then the codes.
    let mut s8 = src.chunks_exact(8 * w);
    let mut o8 = out.chunks_exact_mut(8 * 34);
    for (s, o) in (&mut s8).zip(&mut o8) {
        let mut amax = [0f32; 8];
        for (m, b) in amax.iter_mut().zip(s.chunks_exact(w)) {
            *m = block_amax(load_block(from, b));
        }
        // SAFETY: `amax` has 32 readable bytes (an unaligned load).
        let (d, id) = scales(unsafe { _mm256_loadu_ps(amax.as_ptr()) });
        let mut dh = [0u16; 8];
        let mut ids = [0f32; 8];
        // SAFETY: `dh` has 16 writable bytes and `ids` 32 (unaligned stores).
        unsafe {
            _mm_storeu_si128(
                dh.as_mut_ptr().cast(),
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(d),
            );
            _mm256_storeu_ps(ids.as_mut_ptr(), id);
        }
        for (k, (b, o)) in s.chunks_exact(w).zip(o.chunks_exact_mut(34)).enumerate() {
            o[..2].copy_from_slice(&dh[k].to_le_bytes());
            store32(&mut o[2..], block_codes(load_block(from, b), ids[k]));
        }
    }
    for (b, o) in s8
        .remainder()
        .chunks_exact(w)
        .zip(o8.into_remainder().chunks_exact_mut(34))
    {
        let x = load_block(from, b);
        let (d, id) = scales(_mm256_set1_ps(block_amax(x)));
        let dh = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(d);
        o[..2].copy_from_slice(&(_mm_cvtsi128_si32(dh) as u16).to_le_bytes());
        store32(&mut o[2..], block_codes(x, _mm256_cvtss_f32(id)));
    }
}

/// The 32 values of a block of `from` values (the start of `s`) as f32.
/// (No closures here or below: a closure does not get the function's
/// target features, and its intrinsics would not be inlined.)
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn load_block(from: Floats, s: &[u8]) -> [__m256; 4] {
    match from {
        Floats::F32 => [
            _mm256_castsi256_ps(load32(s)),
            _mm256_castsi256_ps(load32(&s[32..])),
            _mm256_castsi256_ps(load32(&s[64..])),
            _mm256_castsi256_ps(load32(&s[96..])),
        ],
        Floats::BF16 => [
            bf16x8_f32(load16(s)),
            bf16x8_f32(load16(&s[16..])),
            bf16x8_f32(load16(&s[32..])),
            bf16x8_f32(load16(&s[48..])),
        ],
        Floats::F16 => [
            _mm256_cvtph_ps(load16(s)),
            _mm256_cvtph_ps(load16(&s[16..])),
            _mm256_cvtph_ps(load16(&s[32..])),
            _mm256_cvtph_ps(load16(&s[48..])),
        ],
    }
}

/// 8 BF16 as f32 (exact: the bits shifted up).
#[inline]
#[target_feature(enable = "avx2")]
fn bf16x8_f32(h: __m128i) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
}

/// The largest magnitude of a block; NaN if the block holds one.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn block_amax(x: [__m256; 4]) -> f32 {
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_setzero_ps();
    let mut nan = _mm256_setzero_ps();
    for v in x {
        m = _mm256_max_ps(_mm256_andnot_ps(sign, v), m);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
    }
    if _mm256_movemask_ps(nan) != 0 {
        return f32::NAN;
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let m1 = _mm_max_ss(m2, _mm_shuffle_ps::<0b01>(m2, m2));
    _mm_cvtss_f32(m1)
}

/// `d = amax / 127` and `id = 1 / d` (0 where `d` is 0), per lane.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn scales(amax: __m256) -> (__m256, __m256) {
    let d = _mm256_div_ps(amax, _mm256_set1_ps(127.0));
    let zero = _mm256_cmp_ps::<_CMP_EQ_OQ>(d, _mm256_setzero_ps());
    let id = _mm256_andnot_ps(zero, _mm256_div_ps(_mm256_set1_ps(1.0), d));
    (d, id)
}

/// The 32 codes `roundf(x * id)` of a block, in order.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn block_codes(x: [__m256; 4], id: f32) -> __m256i {
    let idv = _mm256_set1_ps(id);
    let (q0, q1) = (codes8(x[0], idv), codes8(x[1], idv));
    let (q2, q3) = (codes8(x[2], idv), codes8(x[3], idv));
    // The packs work per 128-bit lane: 32-bit groups come out as
    // q0[0..4] q1[0..4] q2[0..4] q3[0..4] q0[4..8] ..; put them in order.
    let p = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// `roundf(v * id)` of 8 values as i32: 0 for NaN and inf, the magnitude
/// at most 256 (the packs then saturate as the portable cast does).
#[inline]
#[target_feature(enable = "avx2")]
fn codes8(v: __m256, idv: __m256) -> __m256i {
    let sign = _mm256_set1_ps(-0.0);
    let y = _mm256_mul_ps(v, idv);
    let a = _mm256_andnot_ps(sign, y);
    let c = _mm256_min_ps(a, _mm256_set1_ps(256.0));
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(c);
    let half = _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_sub_ps(c, t), _mm256_set1_ps(0.5));
    let up = _mm256_and_ps(half, _mm256_set1_ps(1.0));
    let r = _mm256_or_ps(_mm256_add_ps(t, up), _mm256_and_ps(y, sign));
    let finite = _mm256_cmp_ps::<_CMP_LT_OQ>(a, _mm256_set1_ps(f32::INFINITY));
    _mm256_and_si256(_mm256_cvttps_epi32(r), _mm256_castps_si256(finite))
}

// ---- INT4 codes (GPTQ, AWQ, compressed-tensors, MLX) -------------------

/// 8 f32 of `s` (from its start).
#[inline]
#[target_feature(enable = "avx2")]
fn load8_ps(s: &[f32]) -> __m256 {
    let s = &s[..8];
    // SAFETY: `s` has 8 readable f32; the load is unaligned.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

/// Store 8 f32 into the start of `d`.
#[inline]
#[target_feature(enable = "avx2")]
fn store8_ps(d: &mut [f32], v: __m256) {
    let d = &mut d[..8];
    // SAFETY: `d` has 8 writable f32; the store is unaligned.
    unsafe { _mm256_storeu_ps(d.as_mut_ptr(), v) }
}

/// Little-endian u32 at byte `at` of `b`.
#[inline(always)]
fn word_at(b: &[u8], at: usize) -> i32 {
    let c = &b[at..at + 4];
    i32::from_le_bytes([c[0], c[1], c[2], c[3]])
}

/// Nibbles through a 16-entry f32 table, 8 codes (4 bytes) at a time: the
/// word's nibbles shifted into 8 lanes (byte 0's low or high nibble first), two
/// `vpermps` lookups (entries 0..7, 8..15) and a blend on bit 3.
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn nibbles(codes: &[u8], lut: &[f32; 16], high_first: bool, out: &mut [f32]) {
    let lo = load8_ps(&lut[..8]);
    let hi = load8_ps(&lut[8..]);
    let shifts = if high_first {
        _mm256_setr_epi32(4, 0, 12, 8, 20, 16, 28, 24)
    } else {
        _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)
    };
    let m = _mm256_set1_epi32(15);
    let whole = codes.len() / 4 * 4;
    for (c, o) in codes[..whole].chunks_exact(4).zip(out.chunks_exact_mut(8)) {
        let v = _mm256_set1_epi32(word_at(c, 0));
        let idx = _mm256_and_si256(_mm256_srlv_epi32(v, shifts), m);
        let a = _mm256_permutevar8x32_ps(lo, idx);
        let b = _mm256_permutevar8x32_ps(hi, idx);
        let sel = _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx));
        store8_ps(o, _mm256_blendv_ps(a, b, sel));
    }
    crate::quant::nibbles::portable_nibbles(
        &codes[whole..],
        lut,
        high_first,
        &mut out[2 * whole..],
    );
}

/// Transpose 8 x 8 16-bit values: `h[j]` lane `r` goes to lane `j` of
/// result `r`.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8x16(h: &[__m128i; 8]) -> [__m128i; 8] {
    let a0 = _mm_unpacklo_epi16(h[0], h[1]);
    let a1 = _mm_unpackhi_epi16(h[0], h[1]);
    let a2 = _mm_unpacklo_epi16(h[2], h[3]);
    let a3 = _mm_unpackhi_epi16(h[2], h[3]);
    let a4 = _mm_unpacklo_epi16(h[4], h[5]);
    let a5 = _mm_unpackhi_epi16(h[4], h[5]);
    let a6 = _mm_unpacklo_epi16(h[6], h[7]);
    let a7 = _mm_unpackhi_epi16(h[6], h[7]);
    let b0 = _mm_unpacklo_epi32(a0, a2);
    let b1 = _mm_unpackhi_epi32(a0, a2);
    let b2 = _mm_unpacklo_epi32(a1, a3);
    let b3 = _mm_unpackhi_epi32(a1, a3);
    let b4 = _mm_unpacklo_epi32(a4, a6);
    let b5 = _mm_unpackhi_epi32(a4, a6);
    let b6 = _mm_unpacklo_epi32(a5, a7);
    let b7 = _mm_unpackhi_epi32(a5, a7);
    [
        _mm_unpacklo_epi64(b0, b4),
        _mm_unpackhi_epi64(b0, b4),
        _mm_unpacklo_epi64(b1, b5),
        _mm_unpackhi_epi64(b1, b5),
        _mm_unpacklo_epi64(b2, b6),
        _mm_unpackhi_epi64(b2, b6),
        _mm_unpacklo_epi64(b3, b7),
        _mm_unpackhi_epi64(b3, b7),
    ]
}

/// `f16(s * (q - z))` of one input for the eight rows (lanes), as F16 bits:
/// `q - z` and the product are exact in f32 (an F16 scale times an integer
/// of at most 5 bits), and `vcvtps2ph` rounds to nearest even, as
/// `gptq::round_to_f16` does (finite scales only: `Rows8::new` checks).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn int4_f16(q: __m256i, sz: &[f32]) -> __m128i {
    let s = load8_ps(&sz[..8]);
    let z = load8_ps(&sz[8..16]);
    let v = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(q), z), s);
    _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)
}

/// How many steps of 8 inputs ahead `int4_rows8` prefetches `qweight`.
const PREFETCH_INT4: usize = 4;

/// The tiles of eight GPTQ or AWQ output rows, 8 inputs at a time, every
/// tile of a step of inputs before the next (so that a `qweight` line is
/// read once for both): each input's codes for the eight rows of a tile in
/// the lanes of one vector (GPTQ: the eight columns' words, shifted; AWQ:
/// one word's nibbles in `AWQ_ORDER`), scaled in f32, rounded to F16 by
/// `vcvtps2ph`, transposed as 8 x 8 F16 so that each row's 8 inputs are one
/// vector, widened back to f32 and stored.
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn int4_rows8(x: &Rows8, out: &mut [f32]) -> bool {
    let n = x.inputs();
    let (q, words, col, sz, group) = (x.qweight(), x.words(), x.col(), x.sz(), x.group());
    let per_tile = x.groups() * 16;
    let m = _mm256_set1_epi32(15);
    let order = _mm256_setr_epi32(0, 16, 4, 20, 8, 24, 12, 28);
    for (b, grp) in group.chunks_exact(8).enumerate() {
        match x.packing() {
            Packing::Gptq => {
                // `qweight` rows are a row of the output apart: too far
                // for the hardware's prefetcher
                let ahead = ((b + PREFETCH_INT4) * words + col) * 4;
                mxfp4::prefetch(q, ahead);
                mxfp4::prefetch(q, ahead + 32 * x.tile_count() - 1);
            }
            Packing::Awq => {
                for j in 0..8 {
                    mxfp4::prefetch(q, ((8 * (b + PREFETCH_INT4) + j) * words + col) * 4);
                }
            }
        }
        for t in 0..x.tile_count() {
            let szt = &sz[t * per_tile..(t + 1) * per_tile];
            let mut h = [_mm_setzero_si128(); 8];
            match x.packing() {
                Packing::Gptq => {
                    let mut v = load32(&q[(b * words + col + 8 * t) * 4..]);
                    for (j, &g) in grp.iter().enumerate() {
                        let g = g as usize * 16;
                        h[j] = int4_f16(_mm256_and_si256(v, m), &szt[g..g + 16]);
                        v = _mm256_srli_epi32::<4>(v);
                    }
                }
                Packing::Awq => {
                    for (j, &g) in grp.iter().enumerate() {
                        let at = ((8 * b + j) * words + col + t) * 4;
                        let w = _mm256_set1_epi32(word_at(q, at));
                        let codes = _mm256_and_si256(_mm256_srlv_epi32(w, order), m);
                        let g = g as usize * 16;
                        h[j] = int4_f16(codes, &szt[g..g + 16]);
                    }
                }
            }
            let rows = transpose8x16(&h);
            for (r, &v) in rows.iter().enumerate() {
                store8_ps(&mut out[(8 * t + r) * n + 8 * b..], _mm256_cvtph_ps(v));
            }
        }
    }
    true
}
