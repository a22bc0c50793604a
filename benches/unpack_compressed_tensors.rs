//! Criterion benchmark of the `compressed_tensors` dequantizer (`gyrofs::quant::packed::Unpack`)
//! against `memcpy` of the same number of output bytes, one thread.
//! Throughput is BF16 output bytes per second: `Unpack::values` in steps of
//! 32768 elements, then rounded to BF16 bytes on the active path
//! (`float::f32s_to_bf16`), as `view::compute::Unpacked` serves a read.
//!
//! ```sh
//! cargo bench --bench unpack_compressed_tensors
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use gyrofs::dtype::Dtype;
use gyrofs::quant::compressed_tensors::{Codes, Dequant, Global, Grid, Layout, Out, Zero};
use gyrofs::quant::packed::Unpack;
use gyrofs::quant::{bf16, float};

const ROWS: u64 = 4096;
const COLS: u64 = 4096;

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// A weight `[ROWS, COLS]` of `codes` / `grid` with random parts.
fn weight(
    codes: Codes,
    grid: Grid,
    zero: Zero,
    scale: Dtype,
    global: Global,
) -> (Dequant, Vec<Vec<u8>>) {
    let d = Dequant::new(Layout {
        scheme: "compressed-tensors",
        rows: ROWS,
        cols: COLS,
        codes,
        grid,
        zero,
        global,
        scale_dtype: scale,
        // U8 scales: MX E8M0 exponents
        e8m0: scale == Dtype::U8,
        scale_round: None,
        out: if global == Global::None && scale != Dtype::U8 {
            Out::of(scale)
        } else {
            Out::Bf16
        },
        params: serde_json::Value::Null,
        extra: Vec::new(),
    })
    .unwrap();
    let parts = d
        .expected()
        .iter()
        .enumerate()
        .map(|(i, (_, dtype, shape))| {
            let n = shape.iter().product::<u64>() as usize * dtype.bytes_for(1).unwrap() as usize;
            let mut b = bytes(n, i as u64 + 1);
            if *dtype == Dtype::BF16 {
                // finite scales around 0.01
                for c in b.chunks_exact_mut(2) {
                    c.copy_from_slice(&bf16::from_f32(0.01 + c[0] as f32 * 1e-5).to_le_bytes());
                }
            }
            if *dtype == Dtype::U8 && i == 1 {
                // E8M0 scales around 2^-7
                for x in b.iter_mut() {
                    *x = 115 + *x % 10;
                }
            }
            if *dtype == Dtype::F32 {
                for c in b.chunks_exact_mut(4) {
                    c.copy_from_slice(&300.0f32.to_le_bytes());
                }
            }
            b
        })
        .collect();
    (d, parts)
}

fn to_bf16(d: &Dequant, parts: &[&[u8]], out: &mut [u8]) {
    const STEP: usize = 1 << 15;
    let mut vals = vec![0f32; STEP];
    for (k, chunk) in out.chunks_mut(2 * STEP).enumerate() {
        let v = &mut vals[..chunk.len() / 2];
        d.values(parts, (k * STEP) as u64, v).unwrap();
        float::f32s_to_bf16(v, chunk).unwrap();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let out_bytes = (ROWS * COLS * 2) as usize;
    let mut g = c.benchmark_group("unpack_compressed_tensors");
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
        (
            "int4_group128_sym",
            weight(
                Codes::Packed { bits: 4 },
                Grid::Group { size: 128 },
                Zero::None,
                Dtype::BF16,
                Global::None,
            ),
        ),
        (
            "int4_group128_asym",
            weight(
                Codes::Packed { bits: 4 },
                Grid::Group { size: 128 },
                Zero::Packed { bits: 4 },
                Dtype::BF16,
                Global::None,
            ),
        ),
        (
            "int8_channel",
            weight(
                Codes::Packed { bits: 8 },
                Grid::Channel,
                Zero::None,
                Dtype::BF16,
                Global::None,
            ),
        ),
        (
            "fp8_block128",
            weight(
                Codes::Fp8,
                Grid::Block {
                    rows: 128,
                    cols: 128,
                },
                Zero::None,
                Dtype::BF16,
                Global::None,
            ),
        ),
        (
            "nvfp4",
            weight(
                Codes::Fp4,
                Grid::Group { size: 16 },
                Zero::None,
                Dtype::F8_E4M3,
                Global::Divide,
            ),
        ),
        (
            "mxfp4",
            weight(
                Codes::Fp4,
                Grid::Group { size: 32 },
                Zero::None,
                Dtype::U8,
                Global::None,
            ),
        ),
        (
            "mxfp6",
            weight(
                Codes::Fp6,
                Grid::Group { size: 32 },
                Zero::None,
                Dtype::U8,
                Global::None,
            ),
        ),
        (
            "mxfp8",
            weight(
                Codes::Fp8,
                Grid::Group { size: 32 },
                Zero::None,
                Dtype::U8,
                Global::None,
            ),
        ),
    ];
    // the kernel alone (f32 values, no rounding to BF16 bytes)
    {
        let (d, parts) = &cases[0].1;
        let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let mut vals = vec![0f32; 1 << 15];
        g.bench_function("int4_group128_sym_values_only", |b| {
            b.iter(|| {
                for k in 0..(ROWS * COLS) as usize >> 15 {
                    d.values(black_box(&parts), (k << 15) as u64, &mut vals)
                        .unwrap();
                }
            })
        });
    }
    for (name, (d, parts)) in &cases {
        let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        g.bench_function(*name, |b| {
            b.iter(|| to_bf16(d, black_box(&parts), black_box(&mut out[..])))
        });
    }
    g.finish();
    c.final_summary();
}
