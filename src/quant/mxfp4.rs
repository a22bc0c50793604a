//! gpt-oss MXFP4 to BF16: FP4 E2M1 values in blocks of 32 sharing one E8M0
//! scale byte (the `*.blocks` / `*.scales` tensor pairs of gpt-oss).
//!
//! A block is 16 bytes holding 32 values; in byte `j` of a block the LOW
//! nibble is value `2j` and the HIGH nibble is value `2j+1`. A nibble indexes
//! [`FP4_E2M1`]; the scale byte `s` multiplies by 2^(s - 127). So value `i`
//! of block `k` is `FP4_E2M1[nibble] * 2^(scales[k] - 127)`.
//!
//! The product is computed exactly and rounded once to BF16, which is what
//! transformers' `_convert_moe_packed_tensors` produces with torch 2.15's
//! eager `torch.ldexp` (exact scaling, not `x * 2.0**e`). Every such product
//! is exactly representable in BF16 except those of magnitude >= 2^128,
//! which become +/-inf; zero nibbles stay +/-0 under every scale, 255
//! included; nothing is NaN. So the whole format is the 256 x 16 [`TABLE`],
//! built at compile time and pinned against transformers bit for bit.
//!
//! This module dequantizes blocks in storage order; the transpose transformers
//! applies afterwards ([E, rows, G*32] -> [E, G*32, rows]) is the view's job.

use super::{KernelError, bf16};

/// Bytes per block.
pub const BLOCK_BYTES: usize = 16;
/// Values per block (and per scale byte).
pub const BLOCK_VALUES: usize = 32;

/// FP4 E2M1 values by nibble (sign bit 3, two exponent bits, one mantissa bit).
pub const FP4_E2M1: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// BF16 bits of `FP4_E2M1[nibble] * 2^(scale - 127)`, rounded to nearest even
/// (only overflow to +/-inf actually rounds).
pub const fn value_bits(scale: u8, nibble: u8) -> u16 {
    // 2^(scale - 127) is a normal f64 for every scale byte, and the product
    // with a 2-significant-bit FP4 value is exact in f64. The cast to f32 is
    // exact too (values are at least 2^-128, a multiple of the f32 subnormal
    // step) or overflows to inf exactly when the product is >= 2^128, where
    // BF16 overflows as well.
    let pow2 = f64::from_bits((scale as u64 + 1023 - 127) << 52);
    let v = FP4_E2M1[(nibble & 15) as usize] as f64 * pow2;
    bf16::from_f32(v as f32)
}

const fn build_table() -> [[u16; 16]; 256] {
    let mut t = [[0u16; 16]; 256];
    let mut s = 0;
    while s < 256 {
        let mut n = 0;
        while n < 16 {
            t[s][n] = value_bits(s as u8, n as u8);
            n += 1;
        }
        s += 1;
    }
    t
}

/// BF16 bits of every (scale byte, nibble) pair: `TABLE[s][n] == value_bits(s, n)`.
pub static TABLE: [[u16; 16]; 256] = build_table();

fn check(kernel: &'static str, blocks: &[u8], scales: &[u8]) -> Result<(), KernelError> {
    let expected = scales.len().checked_mul(BLOCK_BYTES);
    if expected != Some(blocks.len()) {
        return Err(KernelError::Length {
            kernel,
            what: "blocks",
            got: blocks.len(),
            expected: expected.unwrap_or(usize::MAX),
        });
    }
    Ok(())
}

fn check_out(
    kernel: &'static str,
    got: usize,
    scales: &[u8],
    width: usize,
) -> Result<(), KernelError> {
    let expected = scales.len().checked_mul(BLOCK_VALUES * width);
    if expected != Some(got) {
        return Err(KernelError::Length {
            kernel,
            what: "output",
            got,
            expected: expected.unwrap_or(usize::MAX),
        });
    }
    Ok(())
}

/// Dequantize whole blocks to BF16 values: `blocks.len() == 16 * scales.len()`,
/// `out.len() == 32 * scales.len()`.
pub fn dequant_blocks(blocks: &[u8], scales: &[u8], out: &mut [u16]) -> Result<(), KernelError> {
    check("mxfp4::dequant_blocks", blocks, scales)?;
    check_out("mxfp4::dequant_blocks", out.len(), scales, 1)?;
    for ((blk, &s), o) in blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(scales)
        .zip(out.chunks_exact_mut(BLOCK_VALUES))
    {
        let t = &TABLE[s as usize];
        for (pair, &b) in o.chunks_exact_mut(2).zip(blk) {
            pair[0] = t[(b & 15) as usize];
            pair[1] = t[(b >> 4) as usize];
        }
    }
    Ok(())
}

/// Dequantize whole blocks to BF16 little-endian bytes:
/// `blocks.len() == 16 * scales.len()`, `out.len() == 64 * scales.len()`.
pub fn dequant_blocks_le(blocks: &[u8], scales: &[u8], out: &mut [u8]) -> Result<(), KernelError> {
    check("mxfp4::dequant_blocks_le", blocks, scales)?;
    check_out("mxfp4::dequant_blocks_le", out.len(), scales, 2)?;
    for ((blk, &s), o) in blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(scales)
        .zip(out.chunks_exact_mut(2 * BLOCK_VALUES))
    {
        let t = &TABLE[s as usize];
        for (quad, &b) in o.chunks_exact_mut(4).zip(blk) {
            let [l0, l1] = t[(b & 15) as usize].to_le_bytes();
            let [h0, h1] = t[(b >> 4) as usize].to_le_bytes();
            quad.copy_from_slice(&[l0, l1, h0, h1]);
        }
    }
    Ok(())
}

/// Dequantize the values `first .. first + out.len() / 2` of the flattened
/// tensor (value `i` is in block `i / 32`) to BF16 little-endian bytes.
/// `blocks` / `scales` are the whole tensor pair (or the same whole-block
/// prefix of both; `first` counts from their start), so a caller can serve an
/// arbitrary value range of a non-transposed view without decoding the
/// blocks around it.
pub fn dequant_range_le(
    blocks: &[u8],
    scales: &[u8],
    first: usize,
    out: &mut [u8],
) -> Result<(), KernelError> {
    const K: &str = "mxfp4::dequant_range_le";
    check(K, blocks, scales)?;
    if out.len() % 2 != 0 {
        return Err(KernelError::Length {
            kernel: K,
            what: "output",
            got: out.len(),
            expected: out.len() - 1,
        });
    }
    let n = out.len() / 2;
    let total = scales.len().saturating_mul(BLOCK_VALUES);
    let end = match first.checked_add(n) {
        Some(end) if end <= total => end,
        _ => {
            return Err(KernelError::Shape {
                kernel: K,
                why: format!(
                    "values [{first}, {first} + {n}) exceed the {total} values of the blocks"
                ),
            });
        }
    };
    // Ragged head and tail one value at a time, whole blocks in between.
    let head_end = first
        .checked_next_multiple_of(BLOCK_VALUES)
        .map_or(end, |h| h.min(end));
    let body_end = head_end.max(end - end % BLOCK_VALUES);
    let one = |i: usize| -> [u8; 2] {
        let b = blocks[i / 2];
        let nibble = (b >> ((i & 1) * 4)) & 15;
        TABLE[scales[i / BLOCK_VALUES] as usize][nibble as usize].to_le_bytes()
    };
    let (head, rest) = out.split_at_mut(2 * (head_end - first));
    for (d, i) in head.chunks_exact_mut(2).zip(first..head_end) {
        d.copy_from_slice(&one(i));
    }
    let (body, tail) = rest.split_at_mut(2 * (body_end - head_end));
    let (b0, b1) = (head_end / BLOCK_VALUES, body_end / BLOCK_VALUES);
    dequant_blocks_le(
        &blocks[b0 * BLOCK_BYTES..b1 * BLOCK_BYTES],
        &scales[b0..b1],
        body,
    )?;
    for (d, i) in tail.chunks_exact_mut(2).zip(body_end..end) {
        d.copy_from_slice(&one(i));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::golden::{assert_bf16_matches, read, u16s};

    #[test]
    fn table_matches_transformers() {
        let want = u16s(&read("mxfp4_table.bf16"));
        let got: Vec<u16> = TABLE.iter().flatten().copied().collect();
        assert_eq!(want.len(), 256 * 16);
        // No NaN anywhere, so this is plain equality.
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "scale {} nibble {}", i / 16, i % 16);
        }
        assert_eq!(TABLE[127][2], 0x3F80); // 1.0 * 2^0
        assert_eq!(TABLE[0][1], 0x0020); // 0.5 * 2^-127 = 2^-128, a BF16 subnormal
        assert_eq!(TABLE[255][1], 0x7F00); // 0.5 * 2^128 = 2^127, finite
        assert_eq!(TABLE[255][2], 0x7F80); // 2^128 overflows
        assert_eq!(TABLE[255][0], 0x0000); // 0 * 2^128 = 0, not NaN
        assert_eq!(TABLE[255][8], 0x8000);
        assert_eq!(TABLE[254][5], 0x7F80); // 3 * 2^127 overflows
        assert_eq!(TABLE[254][3], 0x7F40); // 1.5 * 2^127
    }

    /// The transformers layout example: blocks [E=2, rows=3, G=2, 16],
    /// scales [2, 3, 2], output [E, G*32, rows] (transposed).
    #[test]
    fn layout_example_matches_transformers() {
        let blocks = read("mxfp4_layout.blocks");
        let scales = read("mxfp4_layout.scales");
        let want = u16s(&read("mxfp4_layout.bf16"));
        let (e, rows, g) = (2, 3, 2);
        let mut flat = vec![0u16; e * rows * g * BLOCK_VALUES];
        dequant_blocks(&blocks, &scales, &mut flat).unwrap();
        // flat is [E, rows, G*32]; transformers returns its transpose.
        let inn = g * BLOCK_VALUES;
        let mut transposed = vec![0u16; flat.len()];
        for ei in 0..e {
            for r in 0..rows {
                for k in 0..inn {
                    transposed[(ei * inn + k) * rows + r] = flat[(ei * rows + r) * inn + k];
                }
            }
        }
        assert_bf16_matches("layout", &transposed, &want, |i| i.to_string());

        let mut le = vec![0u8; 2 * flat.len() + 1];
        dequant_blocks_le(&blocks, &scales, &mut le[1..]).unwrap();
        assert_eq!(u16s(&le[1..]), flat);
    }

    #[test]
    fn ranges_agree_with_whole_blocks() {
        // 5 blocks with pseudo-random bytes and scales.
        let blocks: Vec<u8> = (0..80u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let scales = [120u8, 127, 0, 255, 131];
        let mut whole = vec![0u8; 5 * 64];
        dequant_blocks_le(&blocks, &scales, &mut whole).unwrap();
        for a in 0..=160 {
            for b in a..=160 {
                let mut out = vec![0u8; 2 * (b - a) + 1];
                dequant_range_le(&blocks, &scales, a, &mut out[1..]).unwrap();
                assert_eq!(out[1..], whole[2 * a..2 * b], "[{a}, {b})");
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let blocks = [0u8; 32];
        let scales = [127u8; 2];
        assert!(dequant_blocks(&blocks, &scales[..1], &mut [0u16; 32]).is_err());
        assert!(dequant_blocks(&blocks, &scales, &mut [0u16; 63]).is_err());
        assert!(dequant_blocks_le(&blocks, &scales, &mut [0u8; 127]).is_err());
        assert!(dequant_range_le(&blocks, &scales, 60, &mut [0u8; 10]).is_err());
        assert!(dequant_range_le(&blocks, &scales, usize::MAX, &mut [0u8; 2]).is_err());
        assert!(dequant_range_le(&blocks, &scales, 0, &mut [0u8; 3]).is_err());
        assert!(dequant_range_le(&blocks, &scales, 64, &mut []).is_ok());
        assert!(dequant_blocks(&[], &[], &mut []).is_ok());
    }
}
