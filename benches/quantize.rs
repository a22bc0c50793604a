//! Criterion benchmark of llama-quantize's quantizers as gyrofs runs them
//! (`quant::ggml_quantize`, issue 21): Q4_K, Q5_K, Q6_K and Q4_0 of
//! BF16-valued float32 rows (64 rows of 4096, random normal: a weight
//! matrix's slice), one thread. Throughput is float32 input bytes per
//! second.
//!
//! In the same run, where llama-cpp-python is installed (`GYROFS_PYTHON`,
//! default /opt/pyref/bin/python), the reference itself on the same rows:
//! `ggml_quantize_chunk` of its libggml-base.so, one thread
//! (scripts/bench_ggml_quantize.py), printed as `reference <type>: N MB/s`
//! next to criterion's figures.
//!
//! ```sh
//! cargo bench --bench quantize
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use gyrofs::quant::ggml::GgmlType;
use gyrofs::quant::ggml_encode::encoded_len;
use gyrofs::quant::ggml_quantize::encode;

const ROW: usize = 4096;
const ROWS: usize = 64;

/// BF16-valued normal floats (Box-Muller over a splitmix64 stream).
fn rows() -> Vec<f32> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..ROW * ROWS)
        .map(|_| {
            let (u, v) = (next().max(1e-300), next());
            let x = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos() * 0.02;
            f32::from_bits((x as f32).to_bits() & 0xFFFF_0000)
        })
        .collect()
}

/// The reference's throughput on `x` (MB/s), if it can be run.
fn reference(x: &[f32], ty: GgmlType) -> Option<String> {
    let python = std::env::var("GYROFS_PYTHON").unwrap_or_else(|_| "/opt/pyref/bin/python".into());
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join("rows.f32");
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&path, bytes).ok()?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/bench_ggml_quantize.py"
    );
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&path)
        .arg(ROW.to_string())
        .arg(ty.id().to_string())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let x = rows();
    let types = [
        ("q4_k", GgmlType::Q4_K),
        ("q5_k", GgmlType::Q5_K),
        ("q6_k", GgmlType::Q6_K),
        ("q4_0", GgmlType::Q4_0),
    ];
    let mut refs = Vec::new();
    for (name, ty) in types {
        let mut g = c.benchmark_group(format!("quantize_{name}"));
        g.throughput(Throughput::BytesDecimal((x.len() * 4) as u64));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        let mut out = vec![0u8; encoded_len(ty, x.len() as u64).unwrap() as usize];
        g.bench_function("gyrofs", |b| {
            b.iter(|| encode(ty, black_box(&x), black_box(&mut out[..])).unwrap())
        });
        g.finish();
        refs.push((name, reference(&x, ty)));
    }
    c.final_summary();
    for (name, r) in refs {
        match r {
            Some(mbs) => println!("reference {name}: {mbs} MB/s (ggml_quantize_chunk, one thread)"),
            None => println!("reference {name}: not measured (no llama-cpp-python)"),
        }
    }
}
