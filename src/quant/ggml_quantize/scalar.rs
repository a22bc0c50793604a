//! The scalar steps ggml's quantizers share, bit for bit as the reference
//! build computes them.

use crate::quant::float::f16_to_f32;

/// ggml's `nearest_int`: round to nearest (ties to even) through the
/// float32 magic number 1.5 * 2^23. Exact for `|x| <= 4194303`; outside
/// that it returns what the reference's bit trick returns.
#[inline(always)]
pub fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007F_FFFF) as i32 - 0x0040_0000
}

/// C's `(int)x` as x86-64's `cvttss2si` computes it: truncation toward
/// zero; NaN and values out of the `int` range give `INT_MIN`.
#[inline(always)]
pub fn trunc_i32(x: f32) -> i32 {
    let ok = (-2_147_483_648.0..2_147_483_648.0).contains(&x);
    let c = if ok { x } else { 0.0 };
    // SAFETY: `c` is finite and in the i32 range (NaN and out-of-range
    // values were replaced by 0), so the unchecked conversion is a plain
    // truncation; it vectorizes where the saturating `as` does not.
    let t: i32 = unsafe { c.to_int_unchecked() };
    if ok { t } else { i32::MIN }
}

/// ggml's `GGML_FP32_TO_FP16` (`ggml_compute_fp32_to_fp16`, the portable
/// path of the reference build): round to nearest even, overflow to inf,
/// every NaN `0x7E00` with its sign.
#[inline(always)]
pub fn fp16(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xFF00_0000).max(0x7100_0000);
    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    ((sign >> 16)
        | if shl1_w > 0xFF00_0000 {
            0x7E00
        } else {
            nonsign
        }) as u16
}

/// `fp16(f)` read back as float32 (`GGML_FP16_TO_FP32`, exact).
#[inline(always)]
pub fn fp16_round(f: f32) -> (u16, f32) {
    let h = fp16(f);
    (h, f16_to_f32(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even_in_range() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-0.7), -1);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
    }

    #[test]
    fn fp16_is_round_to_nearest_even() {
        // Every finite f32 on a stride against the crate's own F16 rounding.
        for bits in (0..=u32::MAX).step_by(7_919) {
            let f = f32::from_bits(bits);
            if f.is_nan() {
                assert_eq!(fp16(f) & 0x7FFF, 0x7E00);
                continue;
            }
            assert_eq!(fp16(f), crate::quant::wide::f16_from_f32(f), "{f:e}");
        }
    }

    #[test]
    fn truncation_is_cvttss2si() {
        assert_eq!(trunc_i32(2.9), 2);
        assert_eq!(trunc_i32(-2.9), -2);
        assert_eq!(trunc_i32(f32::NAN), i32::MIN);
        assert_eq!(trunc_i32(3e9), i32::MIN);
        assert_eq!(trunc_i32(-3e9), i32::MIN);
    }
}
