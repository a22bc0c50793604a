//! Float32 rows quantized as llama-quantize writes them (no importance
//! matrix): ports of ggml's reference quantizers (`ggml-quants.c` of the
//! llama.cpp vendored by llama-cpp-python 0.3.36) with the same float32
//! operations in the same order, so that every block is bit for bit the
//! reference's (docs/GGUF_OUT.md, "K-quant files").
//!
//! - `legacy`: the 32-value types `Q4_0`, `Q5_0`, `Q5_1` (`quantize_row_*_ref`);
//! - `kquants`: the 256-value super-blocks `Q4_K`, `Q5_K`, `Q6_K`
//!   (`quantize_row_q{4,5,6}_K_ref` and their searches `make_qkx2_quants`,
//!   `make_qx_quants`);
//! - `scalar`: what they share (`nearest_int`, ggml's float16 rounding, C's
//!   float-to-integer truncation as x86-64 computes it).
//!
//! The reference library (`libggml-base.so` of llama-cpp-python's default
//! build: GCC, x86-64 baseline, no FMA) contracts no multiply-add, and Rust
//! never does, so the plain port is exact. F32, F16, BF16 and Q8_0 (a type
//! llama-quantize falls back to) are `ggml_encode`'s.

pub mod kquants;
pub mod legacy;
pub mod scalar;

use super::KernelError;
use super::ggml::GgmlType;
use super::ggml_encode;

/// Can rows of `ty` be written here (by this module or `ggml_encode`)?
pub fn can_encode(ty: GgmlType) -> bool {
    is_ours(ty) || ggml_encode::can_encode(ty)
}

/// The types this module quantizes.
fn is_ours(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
    )
}

/// Encode `values` (whole blocks of `ty`) into `out` (exactly
/// `ggml_encode::encoded_len` bytes), as `ggml_quantize_chunk` does without
/// an importance matrix.
pub fn encode(ty: GgmlType, values: &[f32], out: &mut [u8]) -> Result<(), KernelError> {
    const KERNEL: &str = "ggml_quantize::encode";
    if !is_ours(ty) {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        return ggml_encode::encode(ty, ggml_encode::Floats::F32, &bytes, out);
    }
    ggml_encode::check_out(KERNEL, ty, values.len(), out)?;
    let (bs, ts) = (ty.block_size() as usize, ty.type_size() as usize);
    let blocks = values.chunks_exact(bs).zip(out.chunks_exact_mut(ts));
    match ty {
        GgmlType::Q4_0 => blocks.for_each(|(x, o)| legacy::q4_0_block(x, o)),
        GgmlType::Q5_0 => blocks.for_each(|(x, o)| legacy::q5_0_block(x, o)),
        GgmlType::Q5_1 => blocks.for_each(|(x, o)| legacy::q5_1_block(x, o)),
        GgmlType::Q4_K => blocks.for_each(|(x, o)| kquants::q4_k_block(x, o)),
        GgmlType::Q5_K => blocks.for_each(|(x, o)| kquants::q5_k_block(x, o)),
        _ => blocks.for_each(|(x, o)| kquants::q6_k_block(x, o)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::golden;

    /// Every block of `tests/data/quant/kquant.in` (55 rows of 256: zeros,
    /// one huge value, denormals, values below ggml's group epsilon,
    /// constants, near-F16-overflow, +-3e38, BF16-rounded, random at many
    /// scales, and rows on which a port with one fused multiply-add differs) against what the reference library's `ggml_quantize_chunk`
    /// wrote (scripts/make_kquant_golden.py), block by block.
    #[test]
    fn every_block_is_the_reference_quantizers() {
        let input: Vec<f32> = golden::u32s(&golden::read("kquant.in"))
            .into_iter()
            .map(f32::from_bits)
            .collect();
        let types = [
            ("q4_0", GgmlType::Q4_0),
            ("q5_0", GgmlType::Q5_0),
            ("q5_1", GgmlType::Q5_1),
            ("q4_k", GgmlType::Q4_K),
            ("q5_k", GgmlType::Q5_K),
            ("q6_k", GgmlType::Q6_K),
        ];
        let mut bad = Vec::new();
        for (name, ty) in types {
            let want = golden::read(&format!("kquant.{name}"));
            let (bs, ts) = (ty.block_size() as usize, ty.type_size() as usize);
            let mut got = vec![0u8; want.len()];
            encode(ty, &input, &mut got).unwrap();
            for (b, (g, w)) in got.chunks(ts).zip(want.chunks(ts)).enumerate() {
                if g != w {
                    bad.push(format!("{name} block {b} (row {})", b * bs / 256));
                }
            }
        }
        assert!(bad.is_empty(), "{} blocks differ: {bad:?}", bad.len());
    }

    /// Many random rows (`make_kquant_golden.py --stress DIR`, not
    /// committed: 8000 rows of 256 are 16 MB) against the reference, when
    /// `KQUANT_STRESS_DIR` names such a folder; skipped otherwise.
    #[test]
    fn many_random_rows_are_the_reference_quantizers_when_asked() {
        let Some(dir) = std::env::var_os("KQUANT_STRESS_DIR") else {
            eprintln!("skipped: KQUANT_STRESS_DIR is not set (make_kquant_golden.py --stress DIR)");
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        let input: Vec<f32> = golden::u32s(&std::fs::read(dir.join("in")).unwrap())
            .into_iter()
            .map(f32::from_bits)
            .collect();
        let types = [
            ("q4_0", GgmlType::Q4_0),
            ("q5_0", GgmlType::Q5_0),
            ("q5_1", GgmlType::Q5_1),
            ("q4_k", GgmlType::Q4_K),
            ("q5_k", GgmlType::Q5_K),
            ("q6_k", GgmlType::Q6_K),
        ];
        for (name, ty) in types {
            let want = std::fs::read(dir.join(name)).unwrap();
            let ts = ty.type_size() as usize;
            let mut got = vec![0u8; want.len()];
            encode(ty, &input, &mut got).unwrap();
            let bad = got
                .chunks(ts)
                .zip(want.chunks(ts))
                .filter(|(g, w)| g != w)
                .count();
            assert_eq!(bad, 0, "{name}: {bad} of {} blocks differ", want.len() / ts);
        }
    }

    #[test]
    fn refuses_partial_blocks_and_wrong_lengths() {
        let x = [0f32; 255];
        assert!(encode(GgmlType::Q4_K, &x, &mut [0u8; 144]).is_err());
        assert!(encode(GgmlType::Q4_K, &[0f32; 256], &mut [0u8; 143]).is_err());
        assert!(encode(GgmlType::Q4_0, &[0f32; 32], &mut [0u8; 18]).is_ok());
    }
}
