//! Criterion benchmark of the `mlx` dequantizer (`gyrofs::quant::mlx::Mlx`,
//! through `gyrofs::quant::packed::Unpack`) against `memcpy` of the same
//! number of output bytes, one thread. Throughput is BF16 output bytes per
//! second: `values` in steps of 32768 elements, then rounded to BF16 bytes
//! on the active path (`float::f32s_to_bf16`), as the converted views do
//! (`view::compute::Unpacked`).
//!
//! ```sh
//! cargo bench --bench unpack_mlx
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use gyrofs::dtype::Dtype;
use gyrofs::quant::float;
use gyrofs::quant::mlx::{Mlx, Mode};
use gyrofs::quant::packed::Unpack;

const ROWS: u64 = 4096;
const COLS: u64 = 4096;
const STEP: usize = 1 << 15;

/// Pseudo-random bytes (xorshift), deterministic.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A 4096 x 4096 weight in `mode` and its parts (scales in `scale` dtype).
fn weight(mode: Mode, group: u64, bits: u64, scale: Dtype) -> (Mlx, Vec<Vec<u8>>) {
    let words = COLS * bits / 32;
    let groups = COLS / group;
    let biases = mode == Mode::Affine;
    let sshape = [ROWS, groups];
    let m = Mlx::new(
        mode,
        group,
        bits,
        (Dtype::U32, &[ROWS, words]),
        (if biases { scale } else { Dtype::U8 }, &sshape),
        biases.then_some((scale, &sshape[..])),
    )
    .unwrap();
    let n_scales = (ROWS * groups) as usize;
    let small = |seed| -> Vec<u8> {
        // finite, moderate scales/biases: BF16/F16 0x3C.., F32 bytes
        match scale {
            Dtype::F32 => (0..n_scales)
                .flat_map(|i| (0.01f32 + i as f32 * 1e-6).to_le_bytes())
                .collect(),
            _ => bytes(n_scales * 2, seed)
                .chunks(2)
                .flat_map(|c| [c[0], 0x3C ^ (c[1] & 0x83)])
                .collect(),
        }
    };
    let mut parts = vec![bytes((ROWS * words * 4) as usize, 1)];
    if biases {
        parts.push(small(2));
        parts.push(small(3));
    } else {
        parts.push(bytes(n_scales, 2).iter().map(|b| 120 + b % 16).collect());
    }
    (m, parts)
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let n = (ROWS * COLS) as usize;
    let out_bytes = n * 2;
    let mut g = c.benchmark_group("unpack_mlx");
    g.throughput(Throughput::BytesDecimal(out_bytes as u64));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let src = vec![0x5Au8; out_bytes];
    let mut out = vec![0u8; out_bytes];
    g.bench_function("memcpy", |b| {
        b.iter(|| black_box(&mut out[..]).copy_from_slice(black_box(&src)))
    });
    let cases = [
        ("affine4_g64_bf16", Mode::Affine, 64, 4, Dtype::BF16),
        ("affine3_g64_bf16", Mode::Affine, 64, 3, Dtype::BF16),
        ("affine8_g64_bf16", Mode::Affine, 64, 8, Dtype::BF16),
        ("affine4_g64_f16", Mode::Affine, 64, 4, Dtype::F16),
        ("mxfp4", Mode::Mxfp4, 32, 4, Dtype::U8),
    ];
    for (name, mode, group, bits, scale) in cases {
        let (m, parts) = weight(mode, group, bits, scale);
        let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let mut vals = vec![0f32; STEP];
        g.bench_function(name, |b| {
            b.iter(|| {
                for (k, chunk) in out.chunks_mut(STEP * 2).enumerate() {
                    let v = &mut vals[..chunk.len() / 2];
                    m.values(&parts, (k * STEP) as u64, v).unwrap();
                    float::f32s_to_bf16(v, chunk).unwrap();
                }
                black_box(&out);
            })
        });
    }
    g.finish();
    c.final_summary();
}
