//! The kernels' throughput as a table: every kernel, every path this CPU
//! has, GB/s of BF16 output per core, ratio to a memcpy of the same output
//! size and to the portable path (the code before the SIMD paths), all
//! measured in the same run.
//!
//! ```sh
//! cargo bench --bench kernel_table                     # every kernel (~3 min)
//! cargo bench --bench kernel_table -- mxfp4 ggml_Q4_K  # names containing these
//! cargo bench --bench kernel_table -- --markdown       # as a Markdown table
//! ```
//!
//! Made for shared, noisy machines (other builds on the same cores):
//! - time is the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so the time
//!   the thread waits for a core does not count (what is left of the other
//!   load is its use of caches and memory bandwidth);
//! - every round measures memcpy and each path once, back to back (each at
//!   least 30 ms of CPU time, repeated if faster), so load that changes
//!   during the run affects all of them alike; the table shows each one's
//!   median over the rounds. (criterion's `cargo bench --bench kernels`
//!   measures wall time, one path after the other.)

#[path = "workloads/mod.rs"]
mod workloads;

use std::hint::black_box;
use std::time::Duration;

use gyrofs::quant::simd;

const ROUNDS: usize = 9;
const MIN_TIME: Duration = Duration::from_millis(30);

/// This thread's CPU time.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU seconds per call of `f` (called repeatedly for at least
/// [`MIN_TIME`]).
fn time(mut f: impl FnMut()) -> f64 {
    let start = cpu_time();
    let mut calls = 0u32;
    while calls == 0 || cpu_time() - start < MIN_TIME {
        f();
        calls += 1;
    }
    (cpu_time() - start).as_secs_f64() / calls as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let markdown = args.iter().any(|a| a == "--markdown");
    // `cargo bench` passes `--bench`; other dashed arguments are options.
    let filters: Vec<String> = args.into_iter().filter(|a| !a.starts_with("--")).collect();
    let paths = simd::available();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let names: Vec<&str> = paths.iter().map(|k| k.level().name()).collect();
    println!(
        "# {cpu}; paths: {}; thread CPU time, median of {ROUNDS} interleaved rounds",
        names.join(", ")
    );
    if markdown {
        println!("| kernel | path | GB/s | x memcpy | x portable |");
        println!("|---|---|---:|---:|---:|");
    } else {
        println!(
            "{:<24}{:<10}{:>8}{:>10}{:>12}",
            "kernel", "path", "GB/s", "x memcpy", "x portable"
        );
    }
    for wl in workloads::all(&filters) {
        let n = wl.out_bytes;
        let src = vec![0x5Au8; n];
        // 64-byte aligned output, as a large allocation usually is.
        let mut buf = vec![0u8; n + 64];
        let skip = (64 - buf.as_ptr() as usize % 64) % 64;
        let out = &mut buf[skip..skip + n];
        let mut secs = vec![Vec::new(); paths.len() + 1];
        // One untimed warm-up call each (page faults, first touches).
        out.copy_from_slice(&src);
        for k in &paths {
            (wl.run)(k, out);
        }
        for _ in 0..ROUNDS {
            secs[0].push(time(|| {
                black_box(&mut *out).copy_from_slice(black_box(&src))
            }));
            for (i, k) in paths.iter().enumerate() {
                secs[i + 1].push(time(|| (wl.run)(k, black_box(&mut *out))));
            }
        }
        let gbs: Vec<f64> = secs
            .into_iter()
            .map(|s| n as f64 / median(s) / 1e9)
            .collect();
        let rows = std::iter::once("memcpy").chain(names.iter().copied());
        for (i, path) in rows.enumerate() {
            let vs_memcpy = gbs[i] / gbs[0];
            let vs_portable = if i == 0 {
                String::new()
            } else {
                format!("{:.1}", gbs[i] / gbs[1])
            };
            if markdown {
                println!(
                    "| {} | {path} | {:.2} | {vs_memcpy:.2} | {vs_portable} |",
                    wl.name, gbs[i]
                );
            } else {
                println!(
                    "{:<24}{path:<10}{:>8.2}{vs_memcpy:>10.2}{vs_portable:>12}",
                    wl.name, gbs[i]
                );
            }
        }
    }
}
