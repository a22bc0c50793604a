//! ggml's 32-value block types as `quantize_row_q4_0_ref`,
//! `quantize_row_q5_0_ref` and `quantize_row_q5_1_ref` write them (Q5_0
//! and Q5_1 are what llama-quantize falls back to when a row is not whole
//! 256-value super-blocks: Q4_K -> Q5_0, Q5_K -> Q5_1).

use super::scalar::{fp16, trunc_i32};

/// The value of largest magnitude (the first of equals), as the reference
/// finds it: `if (amax < fabsf(v))`.
#[inline(always)]
fn signed_max(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// `d ? 1.0f/d : 0.0f`.
#[inline(always)]
fn inverse(d: f32) -> f32 {
    if d != 0.0 { 1.0 / d } else { 0.0 }
}

/// One Q4_0 block (32 values -> 18 bytes: F16 `d`, 16 bytes of nibbles,
/// value `j` low and `j + 16` high): `d = max / -8`, `q = MIN(15,
/// (int8_t)(x / d + 8.5))`.
pub fn q4_0_block(x: &[f32], out: &mut [u8]) {
    let d = signed_max(x) / -8.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&fp16(d).to_le_bytes());
    for j in 0..16 {
        let x0 = x[j] * id;
        let x1 = x[16 + j] * id;
        let q0 = i32::from(trunc_i32(x0 + 8.5) as i8).min(15) as u8;
        let q1 = i32::from(trunc_i32(x1 + 8.5) as i8).min(15) as u8;
        out[2 + j] = q0 | (q1 << 4);
    }
}

/// One Q5_0 block (32 values -> 22 bytes: F16 `d`, the fifth bits as a
/// little-endian u32, 16 bytes of low nibbles): `d = max / -16`, `q =
/// MIN(31, (int8_t)(x / d + 16.5))`.
pub fn q5_0_block(x: &[f32], out: &mut [u8]) {
    let d = signed_max(x) / -16.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&fp16(d).to_le_bytes());
    let mut qh = 0u32;
    for j in 0..16 {
        let x0 = x[j] * id;
        let x1 = x[16 + j] * id;
        let q0 = i32::from(trunc_i32(x0 + 16.5) as i8).min(31) as u8;
        let q1 = i32::from(trunc_i32(x1 + 16.5) as i8).min(31) as u8;
        out[6 + j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
        qh |= u32::from((q0 & 0x10) >> 4) << j;
        qh |= u32::from((q1 & 0x10) >> 4) << (j + 16);
    }
    out[2..6].copy_from_slice(&qh.to_le_bytes());
}

/// One Q5_1 block (32 values -> 24 bytes: F16 `d`, F16 `m`, the fifth bits
/// as a little-endian u32, 16 bytes of low nibbles): `d = (max - min) /
/// 31`, `m = min`, `q = (uint8_t)((x - min) / d + 0.5)`.
pub fn q5_1_block(x: &[f32], out: &mut [u8]) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 31.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&fp16(d).to_le_bytes());
    out[2..4].copy_from_slice(&fp16(min).to_le_bytes());
    let mut qh = 0u32;
    for j in 0..16 {
        let x0 = (x[j] - min) * id;
        let x1 = (x[16 + j] - min) * id;
        let q0 = trunc_i32(x0 + 0.5) as u8;
        let q1 = trunc_i32(x1 + 0.5) as u8;
        out[8 + j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
        qh |= u32::from((q0 & 0x10) >> 4) << j;
        qh |= u32::from((q1 & 0x10) >> 4) << (j + 16);
    }
    out[4..8].copy_from_slice(&qh.to_le_bytes());
}
