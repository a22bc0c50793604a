//! ggml blocks unpacked into runs of `a * q`, `a * q + m` or `a * q - m`,
//! the form the SIMD paths compute.
//!
//! For: the accelerated ggml types. Each function here unpacks one block's
//! integers into `q` (one i8 per value) and computes each run's f32 `a` (and
//! `m`) with exactly the scalar operations, in exactly the order, of the
//! portable kernel of the same name in `quant::ggml`; the SIMD path then
//! computes `a * f32(q)` (and adds or subtracts `m`) per value with IEEE f32
//! vector arithmetic and rounds to BF16. Because every step is the same
//! IEEE operation on the same operands, the result is the portable one bit
//! for bit (tests compare every path against the golden files and against
//! the portable code on random blocks).
//!
//! Two rewrites are exact and used here: `x * a == a * x` (IEEE
//! multiplication commutes; only NaN payloads could differ, and every NaN
//! becomes 0x7FC0), and `(a * g) * s == a * (g * s)` for a sign `s = +-1`
//! (negation is exact and commutes with rounding): the IQ types'
//! `db * grid * sign` is `db * q` with `q = +-grid`.
//!
//! A third, for IQ1_S / IQ1_M: their `dl * (v + delta)`, with a grid value
//! `v` in {-1, 0, 1} and `delta = +-1/8`, is `(dl / 8) * q` with the integer
//! `q = 8 v +- 1`. Both compute the one real number `dl * q / 8` and round it
//! once: `v + delta` and `dl / 8` are exact in f32 (`dl`, an f16 times an
//! odd integer up to 15, is at least 2^-24, far from f32's subnormals), and
//! the signs of zeros, infinities and NaNs follow `q` as they follow
//! `v + delta`.
//!
//! The plain types (F32, F16, BF16, F64) keep the portable code.
//!
//! The functions are `#[inline(always)]` so that they are compiled into (and
//! auto-vectorized with the features of) each SIMD path's block loop.

// Index loops mirror the portable kernels' formulas line for line.
#![allow(clippy::needless_range_loop)]

use crate::quant::ggml::tables;
use crate::quant::ggml::{f16, f16_at, u16_at, u32_at, ue4m3_half};

/// How a run's values are computed from `a`, `m` and `q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `a * q`
    Mul = 0,
    /// `a * q + m`
    MulAdd = 1,
    /// `a * q - m`
    MulSub = 2,
}

/// How a type's blocks are computed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// Values per run: 16, 32 or the block (always a multiple of 16).
    pub run: usize,
    pub op: Op,
    /// A 16-entry value table the codes index (the IQ4_NL / FP4 values),
    /// looked up by the SIMD path (`pshufb`).
    pub kv: Option<&'static [i8; 16]>,
    /// Subtracted from every code (after the lookup, if any): the integer
    /// is `code - bias`.
    pub bias: i8,
}

/// One block of `BS` values as runs of `run` values sharing `a[t]`, `m[t]`.
pub(crate) struct Runs<const BS: usize> {
    /// The codes: the integer of value `i` is `kv[q[i]] - bias` (or
    /// `q[i] - bias` without a table; as i8, wrapping), with `kv` and
    /// `bias` the type's [`Shape`].
    pub q: [u8; BS],
    /// Values per run: 16, 32 or `BS`.
    pub run: usize,
    pub a: [f32; 16],
    pub m: [f32; 16],
}

impl<const BS: usize> Runs<BS> {
    pub(crate) fn new(shape: Shape) -> Self {
        Runs {
            q: [0; BS],
            run: shape.run,
            a: [0.0; 16],
            m: [0.0; 16],
        }
    }
}

/// The shape of each accelerated type.
pub(crate) fn shape(ty: crate::quant::ggml::GgmlType) -> Option<Shape> {
    use crate::quant::ggml::GgmlType as T;
    let (iq4, fp4) = (Some(&tables::IQ4NL_VALUES), Some(&tables::FP4_VALUES_X2));
    let (run, op, kv, bias) = match ty {
        T::Q4_0 => (32, Op::Mul, None, 8),
        T::Q5_0 => (32, Op::Mul, None, 16),
        T::Q8_0 => (32, Op::Mul, None, 0),
        T::IQ4_NL | T::IQ4_XS => (32, Op::Mul, iq4, 0),
        T::MXFP4 => (32, Op::Mul, fp4, 0),
        T::NVFP4 => (16, Op::Mul, fp4, 0),
        T::Q4_1 | T::Q5_1 => (32, Op::MulAdd, None, 0),
        T::Q2_K => (16, Op::MulSub, None, 0),
        T::Q4_K | T::Q5_K => (32, Op::MulSub, None, 0),
        T::Q3_K => (16, Op::Mul, None, 4),
        T::Q6_K => (16, Op::Mul, None, 32),
        T::IQ2_XS | T::IQ2_S => (16, Op::Mul, None, 0),
        T::IQ2_XXS | T::IQ3_XXS | T::IQ3_S => (32, Op::Mul, None, 0),
        T::TQ1_0 | T::TQ2_0 => (256, Op::Mul, None, 1),
        T::IQ1_S => (32, Op::Mul, None, 0),
        T::IQ1_M => (16, Op::Mul, None, 0),
        _ => return None,
    };
    Some(Shape { run, op, kv, bias })
}

/// Bytes 0x0F of a little-endian word.
const LOW4: u64 = 0x0F0F_0F0F_0F0F_0F0F;
/// Bytes 0x03.
const LOW2: u64 = 0x0303_0303_0303_0303;
/// Bytes 0x01.
const ONES: u64 = 0x0101_0101_0101_0101;

/// 8 bytes of `b` from `i` as a little-endian word.
#[inline(always)]
fn word(b: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(w)
}

/// Store the 8 bytes of `w` as codes `q[..8]`.
#[inline(always)]
fn put(q: &mut [u8], w: u64) {
    q[..8].copy_from_slice(&w.to_le_bytes());
}

/// Low nibbles of `src` (8k bytes) into `lo`, high nibbles into `hi`.
#[inline(always)]
fn nibbles(src: &[u8], lo: &mut [u8], hi: &mut [u8]) {
    for ((s, l), h) in src
        .chunks_exact(8)
        .zip(lo.chunks_exact_mut(8))
        .zip(hi.chunks_exact_mut(8))
    {
        let w = word(s, 0);
        put(l, w & LOW4);
        put(h, (w >> 4) & LOW4);
    }
}

#[inline(always)]
pub(crate) fn q4_0(b: &[u8; 18], r: &mut Runs<32>) {
    r.a[0] = f16_at(b, 0);
    let (lo, hi) = r.q.split_at_mut(16);
    nibbles(&b[2..18], lo, hi);
}

#[inline(always)]
pub(crate) fn q4_1(b: &[u8; 20], r: &mut Runs<32>) {
    r.a[0] = f16_at(b, 0);
    r.m[0] = f16_at(b, 2);
    let (lo, hi) = r.q.split_at_mut(16);
    nibbles(&b[4..20], lo, hi);
}

/// Byte `i` of `spread(m, v)[x]` is `v` if bit `i` of `x` is set, else 0.
const fn spread(v: u8) -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut x = 0;
    while x < 256 {
        let mut i = 0;
        while i < 8 {
            if (x >> i) & 1 == 1 {
                t[x] |= (v as u64) << (8 * i);
            }
            i += 1;
        }
        x += 1;
    }
    t
}

/// Bit `i` of a byte as the 5th bit (0x10) of byte `i`.
static FIFTH_BIT: [u64; 256] = spread(0x10);
/// Bit `i` of a byte as 0xFF in byte `i` (a sign mask).
static SIGN_MASK: [u64; 256] = spread(0xFF);

/// Q5_0 / Q5_1 codes: nibbles of `qs` (16 bytes) with bit j of `qh` as
/// the 5th bit of value j.
#[inline(always)]
fn fifth_bits(qs: &[u8], qh: u32, q: &mut [u8; 32]) {
    let h = qh.to_le_bytes().map(|b| FIFTH_BIT[b as usize]);
    for i in [0, 8] {
        let w = word(qs, i);
        put(&mut q[i..], (w & LOW4) | h[i / 8]);
        put(&mut q[16 + i..], ((w >> 4) & LOW4) | h[2 + i / 8]);
    }
}

#[inline(always)]
pub(crate) fn q5_0(b: &[u8; 22], r: &mut Runs<32>) {
    r.a[0] = f16_at(b, 0);
    fifth_bits(&b[6..22], u32_at(b, 2), &mut r.q);
}

#[inline(always)]
pub(crate) fn q5_1(b: &[u8; 24], r: &mut Runs<32>) {
    r.a[0] = f16_at(b, 0);
    r.m[0] = f16_at(b, 2);
    fifth_bits(&b[8..24], u32_at(b, 4), &mut r.q);
}

#[inline(always)]
pub(crate) fn q8_0(b: &[u8; 34], r: &mut Runs<32>) {
    r.a[0] = f16_at(b, 0);
    r.q.copy_from_slice(&b[2..34]);
}

#[inline(always)]
pub(crate) fn iq4_nl(b: &[u8; 18], r: &mut Runs<32>) {
    r.a[0] = f16_at(b, 0);
    let (lo, hi) = r.q.split_at_mut(16);
    nibbles(&b[2..18], lo, hi);
}

#[inline(always)]
pub(crate) fn mxfp4(b: &[u8; 17], r: &mut Runs<32>) {
    let e = b[0] as u32;
    let bits = if e < 2 {
        0x0020_0000 << e
    } else {
        (e - 1) << 23
    };
    r.a[0] = f32::from_bits(bits);
    let (lo, hi) = r.q.split_at_mut(16);
    nibbles(&b[1..17], lo, hi);
}

#[inline(always)]
pub(crate) fn nvfp4(b: &[u8; 36], r: &mut Runs<64>) {
    for s in 0..4 {
        r.a[s] = ue4m3_half(b[s]);
        let (lo, hi) = r.q[16 * s..16 * s + 16].split_at_mut(8);
        nibbles(&b[4 + 8 * s..12 + 8 * s], lo, hi);
    }
}

#[inline(always)]
pub(crate) fn q2_k(b: &[u8; 84], r: &mut Runs<256>) {
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    for i in 0..16 {
        r.a[i] = d * (b[i] & 0xF) as f32;
        r.m[i] = dmin * (b[i] >> 4) as f32;
    }
    for half in 0..2 {
        for i in (0..32).step_by(8) {
            let w = word(b, 16 + 32 * half + i);
            for j in 0..4 {
                put(&mut r.q[128 * half + 32 * j + i..], (w >> (2 * j)) & LOW2);
            }
        }
    }
}

#[inline(always)]
pub(crate) fn q3_k(b: &[u8; 110], r: &mut Runs<256>) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let sc = &b[96..108];
    let d = f16_at(b, 108);
    for i in 0..16 {
        let lo = (sc[i % 8] >> (4 * (i / 8))) & 0xF;
        let hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        let s = (lo | (hi << 4)) as i32 - 32;
        r.a[i] = d * s as f32;
    }
    // Code ql | hbit << 2 (0..7); the integer is code - 4 (bias).
    for half in 0..2 {
        for i in (0..32).step_by(8) {
            let w = word(qs, 32 * half + i);
            let h = word(hmask, i);
            for j in 0..4 {
                let ql = (w >> (2 * j)) & LOW2;
                let qh = (h >> (4 * half + j)) & ONES;
                put(&mut r.q[128 * half + 32 * j + i..], ql | (qh << 2));
            }
        }
    }
}

/// Q4_K / Q5_K scales and mins, as the portable kernels compute them.
#[inline(always)]
fn k4_scales(b: &[u8], r: &mut Runs<256>) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let s = &b[4..16];
    for i in 0..4 {
        let sc = [s[i] & 0x3F, (s[8 + i] & 0x0F) | ((s[i] >> 2) & 0x30)];
        let mn = [s[4 + i] & 0x3F, (s[8 + i] >> 4) | ((s[4 + i] >> 2) & 0x30)];
        r.a[i] = d * sc[0] as f32;
        r.m[i] = dmin * mn[0] as f32;
        r.a[4 + i] = d * sc[1] as f32;
        r.m[4 + i] = dmin * mn[1] as f32;
    }
}

#[inline(always)]
pub(crate) fn q4_k(b: &[u8; 144], r: &mut Runs<256>) {
    k4_scales(b, r);
    let qs = &b[16..144];
    for p in 0..4 {
        let (lo, hi) = r.q[64 * p..64 * p + 64].split_at_mut(32);
        nibbles(&qs[32 * p..32 * p + 32], lo, hi);
    }
}

#[inline(always)]
pub(crate) fn q5_k(b: &[u8; 176], r: &mut Runs<256>) {
    k4_scales(b, r);
    for p in 0..4 {
        for i in (0..32).step_by(8) {
            let w = word(b, 48 + 32 * p + i);
            let h = word(b, 16 + i) >> (2 * p);
            put(&mut r.q[64 * p + i..], (w & LOW4) | ((h & ONES) << 4));
            put(
                &mut r.q[64 * p + 32 + i..],
                ((w >> 4) & LOW4) | (((h >> 1) & ONES) << 4),
            );
        }
    }
}

#[inline(always)]
pub(crate) fn q6_k(b: &[u8; 210], r: &mut Runs<256>) {
    let d = f16_at(b, 208);
    for i in 0..16 {
        r.a[i] = d * (b[192 + i] as i8) as f32;
    }
    // Code (6 bits) - 32 (bias).
    for h in 0..2 {
        for l in (0..32).step_by(8) {
            let (ql0, ql1) = (word(b, 64 * h + l), word(b, 64 * h + 32 + l));
            let qh = word(b, 128 + 32 * h + l);
            let o = 128 * h + l;
            put(&mut r.q[o..], (ql0 & LOW4) | ((qh & LOW2) << 4));
            put(&mut r.q[o + 32..], (ql1 & LOW4) | (((qh >> 2) & LOW2) << 4));
            put(
                &mut r.q[o + 64..],
                ((ql0 >> 4) & LOW4) | (((qh >> 4) & LOW2) << 4),
            );
            put(
                &mut r.q[o + 96..],
                ((ql1 >> 4) & LOW4) | (((qh >> 6) & LOW2) << 4),
            );
        }
    }
}

#[inline(always)]
pub(crate) fn tq1_0(b: &[u8; 54], r: &mut Runs<256>) {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    r.a[0] = f16_at(b, 52);
    // Code: the base-3 digit (0..2); the integer is code - 1 (bias).
    let trit = |x: u8, k: usize| ((x.wrapping_mul(POW3[k]) as u32 * 3) >> 8) as u8;
    for k in 0..5 {
        for l in 0..32 {
            r.q[32 * k + l] = trit(b[l], k);
        }
        for l in 0..16 {
            r.q[160 + 16 * k + l] = trit(b[32 + l], k);
        }
    }
    for k in 0..4 {
        for l in 0..4 {
            r.q[240 + 4 * k + l] = trit(b[48 + l], k);
        }
    }
}

#[inline(always)]
pub(crate) fn tq2_0(b: &[u8; 66], r: &mut Runs<256>) {
    r.a[0] = f16_at(b, 64);
    // Code: 2 bits (0..3); the integer is code - 1 (bias).
    for half in 0..2 {
        for i in (0..32).step_by(8) {
            let w = word(b, 32 * half + i);
            for j in 0..4 {
                put(&mut r.q[128 * half + 32 * j + i..], (w >> (2 * j)) & LOW2);
            }
        }
    }
}

#[inline(always)]
pub(crate) fn iq4_xs(b: &[u8; 136], r: &mut Runs<256>) {
    let d = f16_at(b, 0);
    let sh = u16_at(b, 2);
    for s in 0..8 {
        let lo = (b[4 + s / 2] >> (4 * (s % 2))) & 0xF;
        let hi = ((sh >> (2 * s)) & 3) as u8;
        r.a[s] = d * ((lo | (hi << 4)) as i32 - 32) as f32;
        let (l, h) = r.q[32 * s..32 * s + 32].split_at_mut(16);
        nibbles(&b[8 + 16 * s..24 + 16 * s], l, h);
    }
}

/// 8 grid values (bytes of `row`, each 1..=127) negated where `signs` has
/// a bit set: per byte `(v ^ m) + (m & 1)` with `m` 0 or 0xFF, which is
/// `v` or `-v` and never carries into the next byte (`!v <= 0xFE`).
#[inline(always)]
fn signed_row(row: u64, signs: u8, q: &mut [u8]) {
    let m = SIGN_MASK[signs as usize];
    put(q, (row ^ m).wrapping_add(m & ONES));
}

#[inline(always)]
pub(crate) fn iq2_xxs(b: &[u8; 66], r: &mut Runs<256>) {
    let d = f16_at(b, 0);
    for g in 0..8 {
        let base = 2 + 8 * g;
        let aux = u32_at(b, base + 4);
        r.a[g] = d * (0.5 + (aux >> 28) as f32) * 0.25;
        for k in 0..4 {
            let row = tables::IQ2XXS_GRID[b[base + k] as usize];
            let signs = tables::KSIGNS[((aux >> (7 * k)) & 0x7F) as usize];
            signed_row(row, signs, &mut r.q[32 * g + 8 * k..]);
        }
    }
}

#[inline(always)]
pub(crate) fn iq2_xs(b: &[u8; 74], r: &mut Runs<256>) {
    let d = f16_at(b, 0);
    for i in 0..16 {
        let s = (b[66 + i / 2] >> (4 * (i % 2))) & 0xF;
        r.a[i] = d * (0.5 + s as f32) * 0.25;
    }
    for e in 0..32 {
        let q = u16_at(b, 2 + 2 * e);
        let row = tables::IQ2XS_GRID[(q & 511) as usize];
        let signs = tables::KSIGNS[(q >> 9) as usize];
        signed_row(row, signs, &mut r.q[8 * e..]);
    }
}

#[inline(always)]
pub(crate) fn iq2_s(b: &[u8; 82], r: &mut Runs<256>) {
    let d = f16_at(b, 0);
    for i in 0..16 {
        let s = (b[74 + i / 2] >> (4 * (i % 2))) & 0xF;
        r.a[i] = d * (0.5 + s as f32) * 0.25;
    }
    for e in 0..32 {
        let hi = ((b[66 + e / 4] >> (2 * (e % 4))) & 3) as usize;
        let row = tables::IQ2S_GRID[b[2 + e] as usize | (hi << 8)];
        signed_row(row, b[34 + e], &mut r.q[8 * e..]);
    }
}

#[inline(always)]
pub(crate) fn iq3_xxs(b: &[u8; 98], r: &mut Runs<256>) {
    let d = f16_at(b, 0);
    for g in 0..8 {
        let aux = u32_at(b, 66 + 4 * g);
        r.a[g] = d * (0.5 + (aux >> 28) as f32) * 0.5;
        for k in 0..4 {
            let signs = tables::KSIGNS[((aux >> (7 * k)) & 0x7F) as usize];
            let r0 = tables::IQ3XXS_GRID[b[2 + 8 * g + 2 * k] as usize] as u64;
            let r1 = tables::IQ3XXS_GRID[b[2 + 8 * g + 2 * k + 1] as usize] as u64;
            signed_row(r0 | (r1 << 32), signs, &mut r.q[32 * g + 8 * k..]);
        }
    }
}

#[inline(always)]
pub(crate) fn iq3_s(b: &[u8; 110], r: &mut Runs<256>) {
    let d = f16_at(b, 0);
    for i in 0..8 {
        let s = (b[106 + i / 2] >> (4 * (i % 2))) & 0xF;
        r.a[i] = d * (1 + 2 * s) as f32;
    }
    for e in (0..64).step_by(2) {
        // Values 4e..4e+8: two grid rows of 4, signs from byte 74 + e / 2.
        let row = |e: usize| {
            let hi = ((b[66 + e / 8] >> (e % 8)) & 1) as usize;
            tables::IQ3S_GRID[b[2 + e] as usize | (hi << 8)] as u64
        };
        signed_row(
            row(e) | (row(e + 1) << 32),
            b[74 + e / 2],
            &mut r.q[4 * e..],
        );
    }
}

/// An IQ1 grid row (8 bytes, each -1, 0 or 1) as codes `8 v + 1` (`neg`
/// false: delta +1/8) or `8 v - 1` (delta -1/8).
#[inline(always)]
fn iq1_row(row: u64, neg: bool, q: &mut [u8]) {
    // 8 v per byte: 0xF8, 0 or 0x08, the low 3 bits clear.
    let x = (row << 3) & 0xF8F8_F8F8_F8F8_F8F8;
    let code = if neg {
        // Per byte x - 1 = x + 0xFF, without carries between bytes.
        const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
        ((x & LOW7) + LOW7) ^ (!x & 0x8080_8080_8080_8080)
    } else {
        x | ONES
    };
    put(q, code);
}

#[inline(always)]
pub(crate) fn iq1_s(b: &[u8; 50], r: &mut Runs<256>) {
    let d = f16_at(b, 0);
    for g in 0..8 {
        let qh = u16_at(b, 34 + 2 * g);
        r.a[g] = d * (2 * ((qh >> 12) & 7) + 1) as f32 * 0.125;
        for k in 0..4 {
            let idx = b[2 + 4 * g + k] as usize | (((qh >> (3 * k)) & 7) as usize) << 8;
            iq1_row(
                tables::IQ1S_GRID[idx],
                qh & 0x8000 != 0,
                &mut r.q[32 * g + 8 * k..],
            );
        }
    }
}

#[inline(always)]
pub(crate) fn iq1_m(b: &[u8; 56], r: &mut Runs<256>) {
    let s = [u16_at(b, 48), u16_at(b, 50), u16_at(b, 52), u16_at(b, 54)];
    let dbits =
        ((s[0] & 0xF000) >> 12) | ((s[1] & 0xF000) >> 8) | ((s[2] & 0xF000) >> 4) | (s[3] & 0xF000);
    let d = f16(dbits);
    for i in 0..16 {
        r.a[i] = d * (2 * ((s[i / 4] >> (3 * (i % 4))) & 7) + 1) as f32 * 0.125;
    }
    for e in 0..32 {
        let nib = (b[32 + e / 2] >> (4 * (e % 2))) & 0xF;
        let idx = b[e] as usize | ((nib & 7) as usize) << 8;
        iq1_row(tables::IQ1S_GRID[idx], nib & 8 != 0, &mut r.q[8 * e..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `signed_row`'s byte arithmetic needs grid values in 1..=127.
    #[test]
    fn grid_values_are_small_positive() {
        let bytes = |r: u64| r.to_le_bytes();
        let all = tables::IQ2XXS_GRID
            .iter()
            .chain(&tables::IQ2XS_GRID)
            .chain(&tables::IQ2S_GRID)
            .flat_map(|&r| bytes(r))
            .chain(
                tables::IQ3XXS_GRID
                    .iter()
                    .chain(&tables::IQ3S_GRID)
                    .flat_map(|&r| r.to_le_bytes()),
            );
        for v in all {
            assert!((1..=127).contains(&v), "{v}");
        }
        // IQ1 rows hold -1, 0 and 1 only (`iq1_row` codes them as 8 v +- 1).
        for r in tables::IQ1S_GRID {
            assert!(r.to_le_bytes().iter().all(|&v| matches!(v, 0 | 1 | 0xFF)));
        }
        let mut q = [0u8; 8];
        iq1_row(0x00FF_0100_0001_FF00, true, &mut q);
        assert_eq!(q.map(|b| b as i8), [-1, -9, 7, -1, -1, 7, -9, -1]);
        iq1_row(0x00FF_0100_0001_FF00, false, &mut q);
        assert_eq!(q.map(|b| b as i8), [1, -7, 9, 1, 1, 9, -7, 1]);
        signed_row(0x7F01_0203_0405_0607, 0b1010_0101, &mut q);
        assert_eq!(q.map(|b| b as i8), [-7, 6, -5, 4, 3, -2, 1, -127]);
    }
}
