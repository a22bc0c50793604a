//! Criterion benchmark of the `gptq` and `awq` dequantizers
//! (`gyrofs::quant::packed::Unpack`) against `memcpy` of the same number of
//! output bytes, one thread. Throughput is BF16 output bytes per second:
//! each step is what `view::compute::Unpacked` does for a read, `values`
//! over 65536 elements (16 rows of this layer: `UNPACK_STEP`, a whole
//! number of the format's 8-row units), then one rounding to BF16 on the
//! active path (`float::f32s_to_bf16`).
//!
//! A 4096 x 4096 layer (an 8B model's q_proj), 4-bit, groups of 128: GPTQ
//! in input order and with act-order `g_idx`, and AWQ GEMM.
//!
//! ```sh
//! cargo bench --bench unpack_gptq
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use gyrofs::quant::awq::Awq;
use gyrofs::quant::float;
use gyrofs::quant::gptq::{Geometry, Gptq, Zeros};
use gyrofs::quant::packed::Unpack;

const N: usize = 4096;
const STEP: usize = 1 << 16;

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn scales(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (0x2000u16 + (i % 0x1000) as u16).to_le_bytes())
        .collect()
}

/// The whole layer as BF16, step by step.
fn run(u: &dyn Unpack, parts: &[&[u8]], vals: &mut [f32], out: &mut [u8]) {
    for (k, chunk) in out.chunks_mut(STEP * 2).enumerate() {
        let v = &mut vals[..chunk.len() / 2];
        u.values(parts, (k * STEP) as u64, v).unwrap();
        float::f32s_to_bf16(v, chunk).unwrap();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let out_bytes = N * N * 2;
    let mut g = c.benchmark_group("unpack_gptq");
    g.throughput(Throughput::BytesDecimal(out_bytes as u64));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let src = vec![0x5Au8; out_bytes];
    let mut out = vec![0u8; out_bytes];
    g.bench_function("memcpy", |b| {
        b.iter(|| black_box(&mut out[..]).copy_from_slice(black_box(&src)))
    });

    let groups = N / 128;
    let mut vals = vec![0f32; STEP];
    for act in [false, true] {
        let gptq = Gptq::new(Geometry {
            bits: 4,
            in_features: N as u64,
            out_features: N as u64,
            groups: groups as u64,
            zeros: Zeros::V1,
            group_size: 128,
            desc_act: act,
            sym: false,
        })
        .unwrap();
        let g_idx: Vec<u8> = (0..N)
            .flat_map(|i| {
                let grp = if act { (i * 7919) % groups } else { i / 128 };
                (grp as u32).to_le_bytes()
            })
            .collect();
        let qweight = random(N / 8 * N * 4, 1);
        let qzeros = random(groups * N / 8 * 4, 2);
        let sc = scales(groups * N);
        let parts: [&[u8]; 4] = [&qweight, &qzeros, &sc, &g_idx];
        let name = if act {
            "gptq_4bit_g128_act_order"
        } else {
            "gptq_4bit_g128"
        };
        g.bench_function(name, |b| {
            b.iter(|| run(&gptq, &parts, &mut vals, black_box(&mut out)))
        });
    }

    let awq = Awq::new(N as u64, N as u64, 128).unwrap();
    let qweight = random(N * N / 2, 3);
    let qzeros = random(groups * N / 2, 4);
    let sc = scales(groups * N);
    let parts: [&[u8]; 3] = [&qweight, &qzeros, &sc];
    g.bench_function("awq_4bit_g128", |b| {
        b.iter(|| run(&awq, &parts, &mut vals, black_box(&mut out)))
    });
    g.finish();
    c.final_summary();
}
