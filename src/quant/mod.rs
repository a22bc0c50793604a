//! Number-format kernels: pure functions from stored bytes to BF16 bytes.
//!
//! Views call these on exactly the blocks that cover a requested range; they
//! never see files or offsets. Each kernel is table-driven with no
//! per-element branches, and is tested bit for bit against an independent
//! reference (torch / transformers / the `gguf` Python package) through
//! golden files under `tests/data/`.
//!
//! - `bf16`: rounding to BF16 (the one rounding step every kernel ends with).
//! - `ggml`: the ggml / GGUF tensor types (ids, names, block sizes) and their
//!   dequantization to BF16, bit-exact against `gguf.quants.dequantize`.

pub mod bf16;
pub mod ggml;
