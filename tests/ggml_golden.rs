//! The ggml dequantizers against gguf-py: every tensor of
//! tests/data/gguf/quants.gguf dequantizes to exactly the float32 values
//! `gguf.quants.dequantize` gave (tests/data/gguf/quants_ref.gguf, written
//! by scripts/make_gguf_golden.py), on every kernel path this CPU has.

use std::collections::BTreeSet;
use std::path::Path;

use gyrofs::quant::bf16;
use gyrofs::quant::ggml::{DequantError, GgmlType, can_dequantize, dequantize, dequantize_f32};
use gyrofs::quant::simd;
use gyrofs::source::gguf;

/// Every tensor of tests/data/gguf/quants.gguf dequantizes to exactly
/// the float32 values `gguf.quants.dequantize` gave
/// (tests/data/gguf/quants_ref.gguf, written by
/// scripts/make_gguf_golden.py), and to their BF16 rounding; whole
/// tensors and block by block. Every dequantizable type is covered.
#[test]
fn golden_matches_gguf_py() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf");
    let q = std::fs::read(dir.join("quants.gguf")).unwrap();
    let r = std::fs::read(dir.join("quants_ref.gguf")).unwrap();
    let hq = gguf::parse_data(Path::new("quants.gguf"), &q).unwrap();
    let hr = gguf::parse_data(Path::new("quants_ref.gguf"), &r).unwrap();
    let mut covered = BTreeSet::new();
    let (mut values, mut nans, mut infs, mut subnormals) = (0, 0, 0, 0);
    for t in &hq.tensors {
        let raw = &q[t.offset as usize..t.end() as usize];
        let reft = hr.tensors.iter().find(|x| x.name == t.name);
        let n = t.n_elements() as usize;
        if !can_dequantize(t.ggml_type) {
            assert!(reft.is_none(), "{}", t.name);
            let mut out = vec![0u8; 2 * n];
            assert_eq!(
                dequantize(t.ggml_type, raw, &mut out),
                Err(DequantError::Unsupported(t.ggml_type))
            );
            continue;
        }
        let reft = reft.unwrap_or_else(|| panic!("no reference for {}", t.name));
        assert_eq!((reft.ggml_type, reft.shape()), (GgmlType::F32, t.shape()));
        let reference: Vec<f32> = r[reft.offset as usize..reft.end() as usize]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(reference.len(), n);

        let mut got = vec![0f32; n];
        dequantize_f32(t.ggml_type, raw, &mut got).unwrap();
        let mut bf = vec![0u8; 2 * n];
        dequantize(t.ggml_type, raw, &mut bf).unwrap();
        // Every path gives the same BF16 bytes (checked against the
        // reference below through `bf`).
        for k in simd::available() {
            let mut other = vec![0u8; 2 * n + 1];
            k.ggml_dequantize(t.ggml_type, raw, &mut other[1..])
                .unwrap();
            assert!(
                other[1..] == bf[..],
                "{} on {}: {}",
                t.ggml_type,
                k.level(),
                t.name
            );
        }
        for (i, (&want, &have)) in reference.iter().zip(&got).enumerate() {
            let same = if want.is_nan() {
                have.is_nan()
            } else {
                want.to_bits() == have.to_bits()
            };
            assert!(
                same,
                "{} ({}) value {i}: reference {want:e} ({:#010x}), got {have:e} ({:#010x})",
                t.name,
                t.ggml_type,
                want.to_bits(),
                have.to_bits()
            );
            let b = u16::from_le_bytes([bf[2 * i], bf[2 * i + 1]]);
            assert_eq!(b, bf16::from_f32(want), "{} value {i} as BF16", t.name);
            nans += want.is_nan() as usize;
            infs += want.is_infinite() as usize;
            subnormals += want.is_subnormal() as usize;
        }
        values += n;

        // Block by block (as a view computes ranges) gives the same bytes.
        let ts = t.ggml_type.type_size() as usize;
        let bs = t.ggml_type.block_size() as usize;
        for (k, block) in raw.chunks_exact(ts).enumerate() {
            let mut one = vec![0u8; 2 * bs];
            dequantize(t.ggml_type, block, &mut one).unwrap();
            assert_eq!(
                one,
                bf[2 * bs * k..2 * bs * (k + 1)],
                "{} block {k}",
                t.name
            );
        }
        covered.insert(t.ggml_type);
    }
    let missing: Vec<GgmlType> = GgmlType::ALL
        .into_iter()
        .filter(|&t| can_dequantize(t) && !covered.contains(&t))
        .collect();
    assert!(missing.is_empty(), "no golden tensor for {missing:?}");
    // The fixtures exercise the special values they are meant to.
    assert!(values > 60_000 && nans > 100 && infs > 100 && subnormals > 10);
}
