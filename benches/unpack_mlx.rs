//! Criterion benchmark of the `mlx` dequantizer (`gyrofs::quant::packed::Unpack`)
//! against `memcpy` of the same number of output bytes, one thread.
//! Throughput is BF16 output bytes per second.
//!
//! ```sh
//! cargo bench --bench unpack_mlx
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let out_bytes = 4096 * 4096 * 2;
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
    g.finish();
    c.final_summary();
}
