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
//! Not here: IQ1_S / IQ1_M (`d * (v + 0.125)`, not an integer times a scale);
//! those, and the plain types, keep the portable code.
//!
//! The functions are `#[inline(always)]` so that they are compiled into (and
//! auto-vectorized with the features of) each SIMD path's block loop.

// Index loops mirror the portable kernels' formulas line for line.
#![allow(clippy::needless_range_loop)]

use crate::quant::ggml::tables;
use crate::quant::ggml::{f16_at, u16_at, u32_at, ue4m3_half};

/// How a run's values are computed from `a`, `m` and `q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `a * q`
    Mul,
    /// `a * q + m`
    MulAdd,
    /// `a * q - m`
    MulSub,
}

/// One block of `BS` values as runs of `run` values sharing `a[t]`, `m[t]`.
pub(crate) struct Runs<const BS: usize> {
    pub q: [i8; BS],
    /// Values per run: 16, 32 or `BS` (always a multiple of 16).
    pub run: usize,
    pub a: [f32; 16],
    pub m: [f32; 16],
    pub op: Op,
}

impl<const BS: usize> Runs<BS> {
    pub(crate) fn new(run: usize, op: Op) -> Self {
        Runs {
            q: [0; BS],
            run,
            a: [0.0; 16],
            m: [0.0; 16],
            op,
        }
    }
}

/// The run shape of each accelerated type: (values per run, op).
pub(crate) fn shape(ty: crate::quant::ggml::GgmlType) -> Option<(usize, Op)> {
    use crate::quant::ggml::GgmlType as T;
    Some(match ty {
        T::Q4_0 | T::Q5_0 | T::Q8_0 | T::IQ4_NL | T::MXFP4 => (32, Op::Mul),
        T::Q4_1 | T::Q5_1 => (32, Op::MulAdd),
        T::Q2_K => (16, Op::MulSub),
        T::Q4_K | T::Q5_K => (32, Op::MulSub),
        T::Q3_K | T::Q6_K | T::IQ2_XS | T::IQ2_S | T::NVFP4 => (16, Op::Mul),
        T::IQ4_XS | T::IQ2_XXS | T::IQ3_XXS | T::IQ3_S => (32, Op::Mul),
        T::TQ1_0 | T::TQ2_0 => (256, Op::Mul),
        _ => return None,
    })
}

#[inline(always)]
fn nibbles(src: &[u8], lo: &mut [i8], hi: &mut [i8], sub: i8) {
    for ((&q, l), h) in src.iter().zip(lo.iter_mut()).zip(hi.iter_mut()) {
        *l = (q & 0xF) as i8 - sub;
        *h = (q >> 4) as i8 - sub;
    }
}

#[inline(always)]
fn lookup(src: &[u8], lo: &mut [i8], hi: &mut [i8], kv: &[i8; 16]) {
    for ((&q, l), h) in src.iter().zip(lo.iter_mut()).zip(hi.iter_mut()) {
        *l = kv[(q & 0xF) as usize];
        *h = kv[(q >> 4) as usize];
    }
}

#[inline(always)]
pub(crate) fn q4_0(b: &[u8; 18], r: &mut Runs<32>) {
    r.a[0] = f16_at(b, 0);
    let (lo, hi) = r.q.split_at_mut(16);
    nibbles(&b[2..18], lo, hi, 8);
}

#[inline(always)]
pub(crate) fn q4_1(b: &[u8; 20], r: &mut Runs<32>) {
    r.a[0] = f16_at(b, 0);
    r.m[0] = f16_at(b, 2);
    let (lo, hi) = r.q.split_at_mut(16);
    nibbles(&b[4..20], lo, hi, 0);
}

#[inline(always)]
fn fifth_bits(qs: &[u8], qh: u32, q: &mut [i8; 32], sub: i8) {
    for j in 0..16 {
        let lo = (qs[j] & 0xF) | ((((qh >> j) & 1) as u8) << 4);
        let hi = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        q[j] = lo as i8 - sub;
        q[j + 16] = hi as i8 - sub;
    }
}

#[inline(always)]
pub(crate) fn q5_0(b: &[u8; 22], r: &mut Runs<32>) {
    r.a[0] = f16_at(b, 0);
    fifth_bits(&b[6..22], u32_at(b, 2), &mut r.q, 16);
}

#[inline(always)]
pub(crate) fn q5_1(b: &[u8; 24], r: &mut Runs<32>) {
    r.a[0] = f16_at(b, 0);
    r.m[0] = f16_at(b, 2);
    fifth_bits(&b[8..24], u32_at(b, 4), &mut r.q, 0);
}

#[inline(always)]
pub(crate) fn q8_0(b: &[u8; 34], r: &mut Runs<32>) {
    r.a[0] = f16_at(b, 0);
    for (q, &x) in r.q.iter_mut().zip(&b[2..34]) {
        *q = x as i8;
    }
}

#[inline(always)]
pub(crate) fn iq4_nl(b: &[u8; 18], r: &mut Runs<32>) {
    r.a[0] = f16_at(b, 0);
    let (lo, hi) = r.q.split_at_mut(16);
    lookup(&b[2..18], lo, hi, &tables::IQ4NL_VALUES);
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
    lookup(&b[1..17], lo, hi, &tables::FP4_VALUES_X2);
}

#[inline(always)]
pub(crate) fn nvfp4(b: &[u8; 36], r: &mut Runs<64>) {
    for s in 0..4 {
        r.a[s] = ue4m3_half(b[s]);
        let (lo, hi) = r.q[16 * s..16 * s + 16].split_at_mut(8);
        lookup(&b[4 + 8 * s..12 + 8 * s], lo, hi, &tables::FP4_VALUES_X2);
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
    let qs = &b[16..80];
    for half in 0..2 {
        for j in 0..4 {
            let o = &mut r.q[128 * half + 32 * j..128 * half + 32 * j + 32];
            for (q, &x) in o.iter_mut().zip(&qs[32 * half..32 * half + 32]) {
                *q = ((x >> (2 * j)) & 3) as i8;
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
    for half in 0..2 {
        for j in 0..4 {
            let base = 128 * half + 32 * j;
            let shift = (base / 32) as u32;
            for l in 0..32 {
                let ql = ((qs[32 * half + l] >> (2 * j)) & 3) as i8;
                let qh = ((hmask[l] >> shift) & 1) as i8;
                r.q[base + l] = ql - ((qh ^ 1) << 2);
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
        nibbles(&qs[32 * p..32 * p + 32], lo, hi, 0);
    }
}

#[inline(always)]
pub(crate) fn q5_k(b: &[u8; 176], r: &mut Runs<256>) {
    k4_scales(b, r);
    let qh = &b[16..48];
    let qs = &b[48..176];
    for p in 0..4 {
        let (lo, hi) = r.q[64 * p..64 * p + 64].split_at_mut(32);
        for l in 0..32 {
            let x = qs[32 * p + l];
            let h = qh[l] >> (2 * p);
            lo[l] = ((x & 0xF) | ((h & 1) << 4)) as i8;
            hi[l] = ((x >> 4) | ((h & 2) << 3)) as i8;
        }
    }
}

#[inline(always)]
pub(crate) fn q6_k(b: &[u8; 210], r: &mut Runs<256>) {
    let d = f16_at(b, 208);
    for i in 0..16 {
        r.a[i] = d * (b[192 + i] as i8) as f32;
    }
    for h in 0..2 {
        let ql = &b[64 * h..64 * h + 64];
        let qh = &b[128 + 32 * h..128 + 32 * h + 32];
        let o = &mut r.q[128 * h..128 * h + 128];
        for l in 0..32 {
            o[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            o[32 + l] = ((ql[32 + l] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            o[64 + l] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            o[96 + l] = ((ql[32 + l] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
}

#[inline(always)]
pub(crate) fn tq1_0(b: &[u8; 54], r: &mut Runs<256>) {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    r.a[0] = f16_at(b, 52);
    let trit = |x: u8, k: usize| ((x.wrapping_mul(POW3[k]) as u32 * 3) >> 8) as i8 - 1;
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
    for half in 0..2 {
        for j in 0..4 {
            let o = &mut r.q[128 * half + 32 * j..128 * half + 32 * j + 32];
            for (q, &x) in o.iter_mut().zip(&b[32 * half..32 * half + 32]) {
                *q = ((x >> (2 * j)) & 3) as i8 - 1;
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
        lookup(&b[8 + 16 * s..24 + 16 * s], l, h, &tables::IQ4NL_VALUES);
    }
}

/// 8 grid values (bytes of `row`) with the signs of `signs`' bits.
#[inline(always)]
fn signed_row(row: u64, signs: u8, q: &mut [i8]) {
    for (e, q) in q.iter_mut().enumerate().take(8) {
        let v = (row >> (8 * e)) as u8 as i8;
        *q = if (signs >> e) & 1 == 0 { v } else { -v };
    }
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
    for e in 0..64 {
        let hi = ((b[66 + e / 8] >> (e % 8)) & 1) as usize;
        let row = tables::IQ3S_GRID[b[2 + e] as usize | (hi << 8)];
        // Values 4e..4e+4 take sign bits (4e % 8)..+4 of byte 74 + 4e / 8.
        let signs = b[74 + e / 2] >> (4 * (e % 2));
        for t in 0..4 {
            let v = (row >> (8 * t)) as u8 as i8;
            r.q[4 * e + t] = if (signs >> t) & 1 == 0 { v } else { -v };
        }
    }
}
