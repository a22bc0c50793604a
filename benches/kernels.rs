//! Criterion micro-benchmarks of every number-format kernel on every
//! instruction-set path this CPU has (issue 12).
//!
//! Each group is one kernel on realistic data (`workloads.rs`); its
//! functions are `memcpy` (a copy of the same number of OUTPUT bytes, the
//! baseline measured in the same run) and one per path (`portable`, `avx2`,
//! `avx512`, `neon`: `gyrofs::quant::simd::available()`). Throughput is BF16
//! output bytes per second, one thread.
//!
//! ```sh
//! cargo bench --bench kernels                 # everything
//! cargo bench --bench kernels -- mxfp4        # groups matching a regex
//! ```
//!
//! For the summary table (ratios measured interleaved, robust to load on
//! shared machines) see `cargo bench --bench kernel_table`.

#[path = "workloads/mod.rs"]
mod workloads;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use gyrofs::quant::simd;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    for wl in workloads::all(&[]) {
        let mut g = c.benchmark_group(&wl.name);
        g.throughput(Throughput::BytesDecimal(wl.out_bytes as u64));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        let src = vec![0x5Au8; wl.out_bytes];
        let mut out = vec![0u8; wl.out_bytes];
        g.bench_function("memcpy", |b| {
            b.iter(|| black_box(&mut out[..]).copy_from_slice(black_box(&src)))
        });
        for k in simd::available() {
            g.bench_function(k.level().name(), |b| {
                b.iter(|| (wl.run)(k, black_box(&mut out[..])))
            });
        }
        g.finish();
    }
    c.final_summary();
}
