//! Rounding to BF16.
//!
//! Every computed value in gyrofs is produced in f32 (exactly, where the
//! format allows) and rounded once to BF16 here: round to nearest, ties to
//! even, which is what torch's `Tensor.to(torch.bfloat16)` does. Overflow
//! rounds to +/-inf as IEEE rounding says; subnormals are kept (no flushing).
//!
//! NaN becomes the canonical quiet NaN `0x7FC0`. torch has no single NaN
//! encoding to match: on the same CPU its scalar path (`c10::BFloat16`, also
//! every path under `ATEN_CPU_CAPABILITY=default`) gives `0x7FC0`, while its
//! AVX2/AVX512 f32 kernel gives `0xFFFF`, and which one a given element takes
//! depends on the tensor's length and the thread split. gyrofs output must not
//! depend on such things, so it always writes `0x7FC0` (docs/NUMERICS.md).

/// The canonical BF16 NaN gyrofs writes.
pub const NAN: u16 = 0x7FC0;

/// Round an f32 to BF16 bits (nearest, ties to even; NaN -> [`NAN`]).
#[inline]
pub const fn from_f32(x: f32) -> u16 {
    let bits = x.to_bits();
    // Adding 0x7FFF plus the lowest kept bit carries into the kept half
    // exactly when the dropped half is above the tie, or at the tie with an
    // odd kept half. Only NaN patterns can wrap (the largest non-NaN one is
    // 0xFF80_0000), and their result is discarded below.
    let rounded = (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16;
    if x.is_nan() { NAN } else { rounded }
}

/// BF16 bits to f32 (exact).
#[inline]
pub const fn to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Write BF16 values as little-endian bytes; `dst.len()` must be
/// `2 * src.len()`.
pub fn write_le(src: &[u16], dst: &mut [u8]) -> Result<(), super::KernelError> {
    if dst.len() != src.len().saturating_mul(2) {
        return Err(super::KernelError::Length {
            kernel: "bf16::write_le",
            what: "output",
            got: dst.len(),
            expected: src.len().saturating_mul(2),
        });
    }
    for (d, &v) in dst.chunks_exact_mut(2).zip(src) {
        d.copy_from_slice(&v.to_le_bytes());
    }
    Ok(())
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
        assert_eq!(from_f32(f32::NEG_INFINITY), 0xFF80);
        assert_eq!(from_f32(f32::MAX), 0x7F80);
        assert_eq!(from_f32(f32::NAN), NAN);
        assert_eq!(from_f32(f32::from_bits(0xFFFF_FFFF)), NAN);
        assert_eq!(from_f32(f32::from_bits(0x7F80_0001)), NAN);
        assert_eq!(from_f32(f32::from_bits(0x0000_0001)), 0x0000);
        assert_eq!(from_f32(f32::from_bits(0x0000_8001)), 0x0001);
        assert_eq!(to_f32(0x3F80), 1.0);
    }

    #[test]
    fn write_le_checks_length() {
        let mut out = [0u8; 4];
        write_le(&[0x3F80, 0x1234], &mut out).unwrap();
        assert_eq!(out, [0x80, 0x3F, 0x34, 0x12]);
        assert!(write_le(&[1], &mut out).is_err());
    }
}
