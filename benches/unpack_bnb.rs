//! Criterion benchmark of the `bnb` dequantizer (`gyrofs::quant::packed::Unpack`)
//! against `memcpy` of the same number of output bytes, one thread.
//! Throughput is BF16 output bytes per second: `values` in steps of 32768
//! elements, then rounded to BF16 on the active path
//! (`float::f32s_to_bf16`), as the converted view does
//! (`view::compute::Unpacked`).
//!
//! ```sh
//! cargo bench --bench unpack_bnb
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use gyrofs::dtype::Dtype;
use gyrofs::quant::bnb::{Bnb4, Bnb8, Code, NF4, Nested};
use gyrofs::quant::float;
use gyrofs::quant::packed::Unpack;

const ROWS: usize = 4096;
const COLS: usize = 4096;
const STEP: usize = 1 << 15;

/// Deterministic bytes (xorshift).
fn bytes(n: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn f32s(v: impl Iterator<Item = f32>) -> Vec<u8> {
    v.flat_map(|x| x.to_le_bytes()).collect()
}

/// The whole weight as BF16, as the view computes it.
fn to_bf16(u: &dyn Unpack, parts: &[&[u8]], out: &mut [u8]) {
    let mut vals = vec![0f32; STEP];
    for (i, chunk) in out.chunks_mut(2 * STEP).enumerate() {
        let v = &mut vals[..chunk.len() / 2];
        u.values(parts, (i * STEP) as u64, v).unwrap();
        float::f32s_to_bf16(v, chunk).unwrap();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let n = ROWS * COLS;
    let out_bytes = n * 2;
    let mut g = c.benchmark_group("unpack_bnb");
    g.throughput(Throughput::BytesDecimal(out_bytes as u64));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let src = vec![0x5Au8; out_bytes];
    let mut out = vec![0u8; out_bytes];
    g.bench_function("memcpy", |b| {
        b.iter(|| black_box(&mut out[..]).copy_from_slice(black_box(&src)))
    });

    let shape = vec![ROWS as u64, COLS as u64];
    let blocks = n / 64;
    let codes = bytes(n / 2);
    let qmap = f32s(NF4.into_iter());
    let state = b"{}".to_vec();

    let plain = Bnb4::new(Code::Nf4, 64, shape.clone(), Dtype::BF16, None, 2).unwrap();
    let absmax = f32s((0..blocks).map(|i| 0.01 + (i % 97) as f32 * 1e-3));
    let parts: Vec<&[u8]> = vec![&codes, &absmax, &qmap, &state];
    g.bench_function("nf4_b64", |b| {
        b.iter(|| to_bf16(&plain, black_box(&parts), black_box(&mut out)))
    });

    let nested = Nested {
        blocksize: 256,
        offset: 0.05,
    };
    let g4 = Bnb4::new(Code::Nf4, 64, shape, Dtype::BF16, Some(nested), 2).unwrap();
    let qabs = bytes(blocks);
    let nabs = f32s((0..blocks.div_ceil(256)).map(|i| 0.02 + i as f32 * 1e-4));
    let nmap = f32s((0..256).map(|i| (i as f32 - 128.0) / 128.0));
    let parts: Vec<&[u8]> = vec![&codes, &qabs, &qmap, &nabs, &nmap, &state];
    g.bench_function("nf4_b64_nested", |b| {
        b.iter(|| to_bf16(&g4, black_box(&parts), black_box(&mut out)))
    });

    let g8 = Bnb8::new(ROWS as u64, COLS as u64, true).unwrap();
    let q = bytes(n);
    let scb = f32s((0..ROWS).map(|i| 0.5 + i as f32 * 1e-3));
    let parts: Vec<&[u8]> = vec![&q, &scb, &[0]];
    g.bench_function("int8", |b| {
        b.iter(|| to_bf16(&g8, black_box(&parts), black_box(&mut out)))
    });
    g.finish();
    c.final_summary();
}
