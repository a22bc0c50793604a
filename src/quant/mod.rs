//! Number-format kernels: pure functions from stored bytes to BF16 bytes.
//!
//! Views call these on exactly the blocks that cover a requested range; they
//! never see files or offsets. Each kernel is table-driven with no
//! per-element branches, and is tested bit for bit against an independent
//! reference (torch / transformers / the `gguf` Python package) through
//! golden files under `tests/data/`. The exact function each kernel computes
//! (rounding, overflow, subnormals, NaN) is specified in `docs/NUMERICS.md`.
//!
//! - `bf16`: rounding to BF16 (the one rounding step every kernel ends with).
//! - `float`: F16 / F32 / F64 to BF16.
//! - `mxfp4`: gpt-oss MXFP4 (FP4 E2M1 values, one E8M0 scale per 32) to BF16.
//! - `fp8`: F8_E4M3 / F8_E5M2 decoding, and DeepSeek-V3 style block-scaled
//!   F8_E4M3 (with an F32 `weight_scale_inv` grid) to BF16.
//! - `ggml`: the ggml / GGUF tensor types (ids, names, block sizes) and their
//!   dequantization to BF16, bit-exact against `gguf.quants.dequantize`.
//! - `ggml_encode` and `ggml_quantize`: float32 rows written as ggml types
//!   (the other direction: the `gguf/` view's files), bit for bit as
//!   llama.cpp's converter and llama-quantize write them.
//! - `packed`: the interface of weights a quantization library stores as
//!   several tensors (GPTQ, AWQ, compressed-tensors, bitsandbytes, MLX, ...):
//!   [`packed::Unpack`], one implementation per format.
//! - `gptq` and `awq`: GPTQ (v1/v2, 2/3/4/8 bits, act-order `g_idx`) and
//!   AWQ GEMM weights, as gptqmodel's / AutoAWQ's float16 dequantization.
//! - `bnb`: bitsandbytes 4-bit (NF4 / FP4, nested absmax) and LLM.int8()
//!   weights, as the library's CPU dequantization computes them.
//! - `compressed_tensors`: compressed-tensors' weights (pack-quantized INT,
//!   int-/naive-quantized, FP8, NVFP4) and NVIDIA ModelOpt's (NVFP4, FP8), as
//!   each library's decompression.
//! - `mlx`: MLX's packed weights (affine 2-8 bits, mxfp4, nvfp4, mxfp8),
//!   bit for bit as `mx.dequantize`.
//! - `simd`: which instruction set the kernels run with (portable, AVX2,
//!   AVX-512, NEON), detected once at run time (`GYROFS_KERNELS` forces one);
//!   every path gives the same bytes.
//!
//! Conventions shared by all kernels:
//! - inputs are little-endian byte slices at any alignment (straight from a
//!   memory map);
//! - the output is BF16 written as little-endian bytes into a caller's
//!   `&mut [u8]` (2 bytes per element, any alignment), because the caller is
//!   filling a region of a read reply. (`mxfp4` also has a `&mut [u16]` form.)
//! - a kernel never panics: slices of the wrong length are answered with a
//!   [`KernelError`] before anything is written.

pub mod awq;
pub mod bf16;
pub mod bnb;
pub mod compressed_tensors;
pub mod float;
pub mod fp8;
pub mod ggml;
pub mod ggml_encode;
pub mod ggml_quantize;
pub mod gptq;
pub mod mlx;
pub mod mxfp4;
pub mod nibbles;
pub mod packed;
pub mod simd;
pub mod wide;

/// Why a kernel refused its arguments. These are caller bugs (the view
/// computed a wrong extent), reported instead of panicking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// A slice has the wrong number of bytes for the others.
    #[error("{kernel}: {what} is {got} bytes, expected {expected}")]
    Length {
        kernel: &'static str,
        what: &'static str,
        got: usize,
        expected: usize,
    },
    /// A shape or range that cannot be served (out of bounds, zero-sized
    /// blocks, a size that overflows `usize`).
    #[error("{kernel}: {why}")]
    Shape { kernel: &'static str, why: String },
}

/// Check that `dst` holds BF16 for exactly the elements of `src` (`width`
/// bytes each); returns the element count.
pub(crate) fn check_elementwise(
    kernel: &'static str,
    src: &[u8],
    width: usize,
    dst: &[u8],
) -> Result<usize, KernelError> {
    if !dst.len().is_multiple_of(2) {
        return Err(KernelError::Length {
            kernel,
            what: "output",
            got: dst.len(),
            expected: dst.len() - 1,
        });
    }
    let n = dst.len() / 2;
    match n.checked_mul(width) {
        Some(expected) if expected == src.len() => Ok(n),
        expected => Err(KernelError::Length {
            kernel,
            what: "input",
            got: src.len(),
            expected: expected.unwrap_or(usize::MAX),
        }),
    }
}

/// Golden-file helpers shared by the kernels' tests.
#[cfg(test)]
pub(crate) mod golden {
    /// Bytes of `tests/data/quant/<name>` (read at run time so that a missing
    /// fixture is a test failure naming the file, not a build error).
    pub fn read(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/data/quant/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub fn u16s(b: &[u8]) -> Vec<u16> {
        b.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    }

    pub fn u32s(b: &[u8]) -> Vec<u32> {
        b.chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// A small deterministic generator (splitmix64) for randomized
    /// equivalence tests between kernel paths.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        pub fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }

        /// `n` bytes of little-endian floats of `width` bytes (2, 4, 8; a
        /// ragged end is random bytes), drawn to hit every class often:
        /// random bits, NaN and inf patterns, zeros, subnormals, rounding
        /// ties and the values next to them.
        pub fn special_floats(&mut self, width: usize, n: usize) -> Vec<u8> {
            let mut out = Vec::with_capacity(n + 8);
            let (exp_mask, tie): (u64, u64) = match width {
                2 => (0x7C00, 0x0004),
                4 => (0x7F80_0000, 0x8000),
                _ => (0x7FF0_0000_0000_0000, 0x1000_0000_0000),
            };
            let bits = 8 * width as u32;
            let all = if bits == 64 {
                u64::MAX
            } else {
                (1 << bits) - 1
            };
            let sign = 1u64 << (bits - 1);
            let mantissa = (exp_mask & exp_mask.wrapping_neg()) - 1;
            while out.len() < n {
                let r = self.next();
                let tied = ((r >> 8) & !(2 * tie - 1)) | tie;
                let x = match r % 8 {
                    0 => exp_mask | (r >> 8),          // inf / NaN
                    1 => (r >> 8) & (mantissa | sign), // +-0 / subnormal
                    2 => tied,                         // a rounding tie
                    3 => tied.wrapping_add(1),
                    4 => tied.wrapping_sub(1),
                    5 => (r >> 8) & sign, // +-0
                    _ => r,
                } & all;
                out.extend_from_slice(&x.to_le_bytes()[..width]);
            }
            out.truncate(n);
            out
        }
    }

    pub fn is_nan_bf16(b: u16) -> bool {
        b & 0x7F80 == 0x7F80 && b & 0x007F != 0
    }

    /// Compare kernel output with torch's. torch's NaN encoding depends on the
    /// code path (0xFFFF vectorized, 0x7FC0 scalar), so where torch gave any
    /// NaN we require our canonical NaN; everything else must match exactly.
    #[track_caller]
    pub fn assert_bf16_matches(
        what: &str,
        got: &[u16],
        expected: &[u16],
        input: impl Fn(usize) -> String,
    ) {
        assert_eq!(got.len(), expected.len(), "{what}: length");
        let mut bad = Vec::new();
        for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
            let want = if is_nan_bf16(e) { super::bf16::NAN } else { e };
            if g != want {
                bad.push(format!(
                    "[{i}] in {} got {g:#06x} want {want:#06x}",
                    input(i)
                ));
            }
        }
        assert!(
            bad.is_empty(),
            "{what}: {} mismatches, first: {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
    }
}
