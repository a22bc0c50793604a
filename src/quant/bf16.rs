//! Rounding to BF16.
//!
//! Every computed value in gyrofs is produced in f32 (exactly, where the
//! format allows) and rounded once to BF16 here: round to nearest, ties to
//! even, which is what torch's `Tensor.to(torch.bfloat16)` does. Overflow
//! rounds to +/-inf as IEEE rounding says; NaN becomes the canonical quiet
//! NaN `0x7FC0` (docs/FORMAT.md, "Numerics").

/// The canonical BF16 NaN gyrofs writes.
pub const NAN: u16 = 0x7FC0;

/// Round an f32 to BF16 bits (nearest, ties to even).
#[inline]
pub fn from_f32(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return NAN;
    }
    let bias = 0x7FFF + ((bits >> 16) & 1);
    ((bits + bias) >> 16) as u16
}

/// BF16 bits to f32 (exact).
#[inline]
pub fn to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even() {
        assert_eq!(from_f32(1.0), 0x3F80);
        // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties to even (1.0).
        assert_eq!(from_f32(f32::from_bits(0x3F80_8000)), 0x3F80);
        // 1 + 3*2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up.
        assert_eq!(from_f32(f32::from_bits(0x3F81_8000)), 0x3F82);
        assert_eq!(from_f32(f32::from_bits(0x3F80_8001)), 0x3F81);
        assert_eq!(from_f32(-0.0), 0x8000);
        assert_eq!(from_f32(f32::INFINITY), 0x7F80);
        assert_eq!(from_f32(f32::MAX), 0x7F80);
        assert_eq!(from_f32(f32::NAN), NAN);
        assert_eq!(from_f32(f32::from_bits(0x0000_0001)), 0x0000);
        assert_eq!(from_f32(f32::from_bits(0x0000_8001)), 0x0001);
        assert_eq!(to_f32(0x3F80), 1.0);
    }
}
