//! ggml's k-quant super-blocks (256 values) as `quantize_row_q4_K_ref`,
//! `quantize_row_q5_K_ref` and `quantize_row_q6_K_ref` write them, with the
//! scale searches they use (`make_qkx2_quants`, `make_qx_quants`): every
//! float32 operation in the reference's order.

use super::scalar::{fp16, fp16_round, nearest_int};
use crate::quant::float::f16_to_f32;

/// Values per super-block.
pub const QK_K: usize = 256;

/// ggml's `GROUP_MAX_EPS`: a group whose largest magnitude is below it is
/// all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// `make_qkx2_quants`: levels `0..=nmax` of `x` (`n` values, `weights`) as
/// `scale * l - min`, the scale and min searched over `nstep + 1`
/// candidates; returns the scale, `*the_min` the min (non-negative),
/// `l` the levels (`laux` is scratch).
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    the_min: &mut f32,
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> f32 {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        *the_min = -min;
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min));
        l[i] = q.clamp(0, nmax) as u8;
        let diff = scale * f32::from(l[i]) + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    if nstep < 1 {
        *the_min = -min;
        return scale;
    }
    // The per-value steps (levels, errors) in their own loops, which
    // vectorize; the sums stay sequential, in the reference's order.
    let mut xm = [0f32; 32];
    let mut lf = [0f32; 32];
    let mut err = [0f32; 32];
    let (xm, lf, err) = (&mut xm[..n], &mut lf[..n], &mut err[..n]);
    for (d, &v) in xm.iter_mut().zip(x) {
        *d = v - min;
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        for (q, &d) in lf.iter_mut().zip(xm.iter()) {
            *q = nearest_int(iscale * d).clamp(0, nmax) as f32;
        }
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let w = weights[i];
            let q = lf[i];
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            for ((e, &q), (&v, &w)) in err.iter_mut().zip(lf.iter()).zip(x.iter().zip(weights)) {
                let diff = this_scale * q + this_min - v;
                *e = w * (diff * diff);
            }
            let mut cur_error = 0f32;
            for &e in err.iter() {
                cur_error += e;
            }
            if cur_error < best_error {
                for (o, &q) in laux[..n].iter_mut().zip(lf.iter()) {
                    *o = q as u8;
                }
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
                for (d, &v) in xm.iter_mut().zip(x) {
                    *d = v - min;
                }
            }
        }
    }
    *the_min = -min;
    scale
}

/// `make_qx_quants` with `rmse_type` 1 and no weights (each value weighted
/// by its square): signed levels `-nmax..nmax` stored as `l + nmax` in
/// `l`; returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32; 16], l: &mut [u8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..x.len()].fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    // Per value, once: the weight `v * v` and `w * v`; the levels in their
    // own loop (it vectorizes), the sums in the reference's order.
    const N: usize = 16;
    let n = N;
    let (mut w, mut wv, mut qf) = ([0f32; N], [0f32; N], [0f32; N]);
    let l: &mut [u8; N] = (&mut l[..N]).try_into().expect("16 levels");
    for ((w, wv), &v) in w.iter_mut().zip(wv.iter_mut()).zip(x) {
        *w = v * v;
        *wv = *w * v;
    }
    let mut iscale = -nmaxf / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (i, &v) in x.iter().enumerate() {
        let q = level(iscale, v);
        l[i] = (q + nmax) as u8;
        let qf = q as f32;
        sumlx += wv[i] * qf;
        suml2 += w[i] * qf * qf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1 * is as f32) / max;
        for (q, &v) in qf.iter_mut().zip(x) {
            *q = level(iscale, v) as f32;
        }
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..n {
            sumlx += wv[i] * qf[i];
            suml2 += w[i] * qf[i] * qf[i];
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (i, &v) in x.iter().enumerate() {
                l[i] = (level(iscale, v) + nmax) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Scale `j` and min `j` (6 bits each) of a Q4_K / Q5_K block's 12 scale
/// bytes (`get_scale_min_k4`).
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The part Q4_K and Q5_K share: eight groups of 32, each `scale * l -
/// min` with `l` in `0..=nmax` (searched by `make_qkx2_quants` with `rmin`,
/// 0.1 and `nstep`), the scales and mins quantized to 6 bits against the
/// super-block's F16 `d` and `dmin`, then the levels recomputed from them.
/// Writes `d`, `dmin` and the 12 scale bytes into `head` (16 bytes) and
/// returns the levels.
fn scaled_mins(x: &[f32], nmax: i32, rmin: f32, nstep: i32, head: &mut [u8]) -> [u8; QK_K] {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let g = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in g {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(g) {
            *w = av_x + v.abs();
        }
        scales[j] = make_qkx2_quants(
            nmax,
            g,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut mins[j],
            &mut laux,
            rmin,
            0.1,
            nstep,
        );
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut sc = [0u8; 12];
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    let (dh, d_all) = fp16_round(max_scale / 63.0);
    let (mh, m_all) = fp16_round(max_min / 63.0);
    head[0..2].copy_from_slice(&dh.to_le_bytes());
    head[2..4].copy_from_slice(&mh.to_le_bytes());
    head[4..16].copy_from_slice(&sc);
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, &sc);
        let d = d_all * f32::from(s);
        if d == 0.0 {
            continue;
        }
        let dm = m_all * f32::from(m);
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / d);
            l[32 * j + ii] = q.clamp(0, nmax) as u8;
        }
    }
    l
}

/// One Q4_K super-block (256 values -> 144 bytes: F16 `d`, F16 `dmin`, 12
/// scale bytes, 128 bytes of nibbles: per 64 values, value `l` low and `l +
/// 32` high).
pub fn q4_k_block(x: &[f32], out: &mut [u8]) {
    let (head, qs) = out.split_at_mut(16);
    let l = scaled_mins(x, 15, -1.0, 20, head);
    for (c, q) in qs.chunks_exact_mut(32).enumerate() {
        let j = 64 * c;
        for i in 0..32 {
            q[i] = l[j + i] | (l[j + i + 32] << 4);
        }
    }
}

/// One Q5_K super-block (256 values -> 176 bytes: F16 `d`, F16 `dmin`, 12
/// scale bytes, 32 bytes of fifth bits, 128 bytes of low nibbles).
pub fn q5_k_block(x: &[f32], out: &mut [u8]) {
    let (head, rest) = out.split_at_mut(16);
    let l = scaled_mins(x, 31, -0.5, 15, head);
    let (qh, ql) = rest.split_at_mut(32);
    qh.fill(0);
    let (mut m1, mut m2) = (1u8, 2u8);
    for (c, q) in ql.chunks_exact_mut(32).enumerate() {
        let n = 64 * c;
        for j in 0..32 {
            let mut l1 = l[n + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = l[n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            q[j] = l1 | (l2 << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
    }
}

/// One Q6_K super-block (256 values -> 210 bytes: 128 bytes of low
/// nibbles, 64 bytes of high bit pairs, 16 signed scale bytes, F16 `d`):
/// sixteen groups of 16 by `make_qx_quants` (levels `-32..32`), their
/// scales quantized to 8 bits against `d`.
pub fn q6_k_block(x: &[f32], out: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for ib in 0..16 {
        let group: &[f32; 16] = (&x[16 * ib..16 * ib + 16]).try_into().expect("16 values");
        let s = make_qx_quants(32, group, &mut l[16 * ib..16 * ib + 16]);
        scales[ib] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        out.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    let dh = fp16(1.0 / iscale);
    let d_all = f16_to_f32(dh);
    let mut sc = [0i8; 16];
    for ib in 0..16 {
        sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
    }
    for j in 0..16 {
        let d = d_all * f32::from(sc[j]);
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as u8;
        }
    }
    let (ql, rest) = out.split_at_mut(128);
    let (qh, tail) = rest.split_at_mut(64);
    for c in 0..2 {
        let j = 128 * c;
        let (ql, qh) = (&mut ql[64 * c..64 * c + 64], &mut qh[32 * c..32 * c + 32]);
        for i in 0..32 {
            let q1 = l[j + i] & 0xF;
            let q2 = l[j + i + 32] & 0xF;
            let q3 = l[j + i + 64] & 0xF;
            let q4 = l[j + i + 96] & 0xF;
            ql[i] = q1 | (q3 << 4);
            ql[i + 32] = q2 | (q4 << 4);
            qh[i] = (l[j + i] >> 4)
                | ((l[j + i + 32] >> 4) << 2)
                | ((l[j + i + 64] >> 4) << 4)
                | ((l[j + i + 96] >> 4) << 6);
        }
    }
    for (o, s) in tail[..16].iter_mut().zip(sc) {
        *o = s as u8;
    }
    tail[16..18].copy_from_slice(&dh.to_le_bytes());
}
