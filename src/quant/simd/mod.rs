//! Runtime choice of the kernels' instruction set: one table of kernel
//! function pointers per path (portable, AVX2, AVX-512, NEON), the best one
//! the CPU supports chosen once and cached.
//!
//! For: making every kernel of `quant` fast on the CPU it runs on while
//! keeping one binary for all x86-64 (or aarch64) machines. The pattern is
//! BurntSushi/memchr's: detect CPU features at run time
//! (`is_x86_feature_detected!`), keep the portable code as the fallback, and
//! cache the choice so a kernel call costs one atomic load and an indirect
//! call. The SIMD paths compute exactly the same bytes as the portable code
//! (docs/NUMERICS.md); the tests run every path this machine has against the
//! same golden files ([`available`]).
//!
//! Not for: the kernels' arguments and semantics. Those are the format
//! modules' (`mxfp4`, `float`, `fp8`, `ggml`): each checks lengths, then
//! calls the chosen path through the [`Kernels`] methods it defines.
//!
//! Paths:
//! - `portable`: the plain Rust kernels in the format modules (the reference);
//! - `avx2` (x86-64 with AVX2 + F16C): `simd/avx2.rs`;
//! - `avx512` (x86-64 with AVX-512 F/BW/VL, plus AVX2 + F16C):
//!   `simd/avx512.rs`;
//! - `neon` (aarch64, always present there): `simd/neon.rs`;
//! - `quant::nibbles`: the INT4 inner loops of GPTQ, AWQ,
//!   compressed-tensors and MLX (their portable code and entry points);
//! - `simd/ggml_runs.rs`: ggml blocks unpacked into integers and per-run
//!   scales, shared by the SIMD paths.
//!
//! The environment variable `GYROFS_KERNELS=portable|avx2|avx512|neon`
//! forces a path (for benchmarks and for testing a fallback; `auto` or unset:
//! the best one); a path the CPU lacks, or any other value, falls back to the
//! best available one with a warning in the log. It is read once, at the
//! first kernel call.

use std::sync::OnceLock;

use super::ggml::GgmlType;
use super::ggml_encode::Floats;
use super::mxfp4;
use super::nibbles::{self, Rows8};

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod ggml_runs;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;

/// An instruction-set path of the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Plain Rust, any CPU.
    Portable,
    /// x86-64 AVX2 with F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL (with AVX2 and F16C).
    Avx512,
    /// aarch64 Advanced SIMD.
    Neon,
}

impl Level {
    /// Every path, in the order [`available`] lists them.
    pub const ALL: [Level; 4] = [Level::Portable, Level::Avx2, Level::Avx512, Level::Neon];

    /// The name `GYROFS_KERNELS` takes: `portable`, `avx2`, `avx512`, `neon`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Neon => "neon",
        }
    }

    pub fn from_name(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == name)
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            Level::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c"),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                Level::Avx2.is_supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "aarch64")]
            Level::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The kernels of one path. Its methods (defined next to each format, e.g.
/// `Kernels::f16_to_bf16` in `quant::float`) check their arguments and run
/// this path's code; the module-level functions (`quant::float::f16_to_bf16`)
/// are the same methods on [`active`].
///
/// A `Kernels` value exists only for a path the CPU supports: the only ways
/// to get one are [`active`], [`available`] and [`get`], which check. That is
/// what makes calling its `unsafe fn` pointers sound.
#[derive(Debug)]
pub struct Kernels {
    level: Level,
    pub(in crate::quant) fns: Fns,
}

impl Kernels {
    /// The path these kernels take.
    pub fn level(&self) -> Level {
        self.level
    }
}

/// The function pointers of one path.
///
/// Safety contract of every pointer: the CPU supports the path's features
/// (guaranteed by [`Kernels`] existing). The MXFP4 kernels take their
/// source as a struct whose lengths its constructor checked
/// ([`mxfp4::Pair`], [`mxfp4::Transposed`]; the INT4 rows: [`Rows8`]); the
/// format modules check the output length before calling. Each function derives its loop counts from
/// its slices with bounds-checked chunking, so inconsistent lengths could at
/// worst leave output bytes unwritten or panic, never read or write out of
/// bounds.
#[derive(Debug)]
pub(in crate::quant) struct Fns {
    /// Whole MXFP4 blocks to BF16 LE: 16 bytes + 1 scale -> 64 bytes each
    /// (`out` is `64 * pair.len()` bytes).
    pub mxfp4_blocks: unsafe fn(pair: &mxfp4::Pair, out: &mut [u8]),
    /// Transposed gpt-oss expert rows (see `mxfp4::dequant_transposed_le`):
    /// `rows` is not empty, `out` is `2 * rows.len()` bytes.
    pub mxfp4_transposed: unsafe fn(rows: &mxfp4::Transposed, out: &mut [u8]),
    /// F16 (2 bytes each) to BF16.
    pub f16: unsafe fn(src: &[u8], dst: &mut [u8]),
    /// F32 (4 bytes each) to BF16.
    pub f32: unsafe fn(src: &[u8], dst: &mut [u8]),
    /// F64 (8 bytes each) to BF16, through f32.
    pub f64: unsafe fn(src: &[u8], dst: &mut [u8]),
    /// F8_E4M3 codes to BF16.
    pub e4m3: unsafe fn(src: &[u8], dst: &mut [u8]),
    /// F8_E5M2 codes to BF16.
    pub e5m2: unsafe fn(src: &[u8], dst: &mut [u8]),
    /// F8_E4M3 codes times one f32 scale, to BF16.
    pub e4m3_scaled: unsafe fn(src: &[u8], scale: f32, dst: &mut [u8]),
    /// Whole ggml blocks of a type this path accelerates to BF16; `false`
    /// (nothing written) for the others, which take the portable code.
    pub ggml: unsafe fn(ty: GgmlType, blocks: &[u8], out: &mut [u8]) -> bool,
    /// Whole blocks of 32 values of type `from` (`src`) to Q8_0 (`out`,
    /// 34 bytes per block).
    pub q8_0: unsafe fn(from: Floats, src: &[u8], out: &mut [u8]),
    /// Nibbles (low first, or high first) through a 16-entry table: `out`
    /// is `2 * codes.len()` f32 ([`nibbles`]).
    pub nibbles: unsafe fn(codes: &[u8], lut: &[f32; 16], high_first: bool, out: &mut [f32]),
    /// Eight output rows of a GPTQ / AWQ 4-bit weight (`out` is
    /// `8 * inputs` f32); `false` (nothing written) on a path that leaves
    /// them to the format's own code.
    pub int4_rows8: unsafe fn(x: &Rows8, out: &mut [f32]) -> bool,
}

/// The portable path: the reference kernels of the format modules.
static PORTABLE: Kernels = Kernels {
    level: Level::Portable,
    fns: Fns {
        mxfp4_blocks: super::mxfp4::portable_blocks,
        mxfp4_transposed: super::mxfp4::portable_transposed,
        f16: super::float::portable_f16,
        f32: super::float::portable_f32,
        f64: super::float::portable_f64,
        e4m3: super::fp8::portable_e4m3,
        e5m2: super::fp8::portable_e5m2,
        e4m3_scaled: super::fp8::portable_e4m3_scaled,
        ggml: portable_ggml,
        q8_0: super::ggml_encode::portable_q8_0,
        nibbles: nibbles::portable_nibbles,
        int4_rows8: nibbles::portable_int4_rows8,
    },
};

/// The portable path has no accelerated ggml types: `ggml::dequantize` then
/// runs its own code.
fn portable_ggml(_: GgmlType, _: &[u8], _: &mut [u8]) -> bool {
    false
}

/// The kernels of `level`, if this CPU supports it.
pub fn get(level: Level) -> Option<&'static Kernels> {
    if !level.is_supported() {
        return None;
    }
    match level {
        Level::Portable => Some(&PORTABLE),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => Some(&avx2::KERNELS),
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => Some(&avx512::KERNELS),
        #[cfg(target_arch = "aarch64")]
        Level::Neon => Some(&neon::KERNELS),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Every path this CPU supports, portable first, then by increasing width.
/// Tests run each of them against the same expectations.
pub fn available() -> Vec<&'static Kernels> {
    Level::ALL.into_iter().filter_map(get).collect()
}

/// The best path this CPU supports (the last of [`available`]).
pub fn best() -> &'static Kernels {
    available().pop().unwrap_or(&PORTABLE)
}

/// The path the kernels use: `GYROFS_KERNELS` if set and supported, else
/// [`best`]. Chosen at the first call and cached.
pub fn active() -> &'static Kernels {
    static ACTIVE: OnceLock<&'static Kernels> = OnceLock::new();
    ACTIVE.get_or_init(|| choose(std::env::var("GYROFS_KERNELS").ok().as_deref()))
}

/// The kernels for a `GYROFS_KERNELS` value (`None`: unset).
fn choose(forced: Option<&str>) -> &'static Kernels {
    let Some(name) = forced
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty() && s != "auto")
    else {
        return best();
    };
    match Level::from_name(&name) {
        Some(level) => get(level).unwrap_or_else(|| {
            let b = best();
            log::warn!(
                "GYROFS_KERNELS={name}: this CPU does not support it; using {}",
                b.level
            );
            b
        }),
        None => {
            let b = best();
            log::warn!(
                "GYROFS_KERNELS={name}: not one of portable, avx2, avx512, neon; using {}",
                b.level
            );
            b
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_forcing() {
        let all = available();
        assert_eq!(all[0].level(), Level::Portable);
        assert!(all.windows(2).all(|w| w[0].level() < w[1].level()));
        assert_eq!(best().level(), all.last().unwrap().level());
        for l in Level::ALL {
            assert_eq!(Level::from_name(l.name()), Some(l));
            assert_eq!(get(l).is_some(), l.is_supported());
            if l.is_supported() {
                assert_eq!(choose(Some(l.name())).level(), l);
            } else {
                assert_eq!(choose(Some(l.name())).level(), best().level());
            }
        }
        assert_eq!(choose(None).level(), best().level());
        assert_eq!(choose(Some("auto")).level(), best().level());
        assert_eq!(choose(Some(" Portable ")).level(), Level::Portable);
        assert_eq!(choose(Some("sse9")).level(), best().level());
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("f16c") {
            assert!(Level::Avx512.is_supported() && Level::Avx2.is_supported());
        }
        // NEON is part of every aarch64 CPU: its tests always run there.
        #[cfg(target_arch = "aarch64")]
        assert_eq!(best().level(), Level::Neon);
    }
}
