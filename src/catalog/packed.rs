//! Weights stored as several tensors by a quantization library (GPTQ's
//! `qweight` + `qzeros` + `scales` + `g_idx`, MLX's `weight` + `scales` +
//! `biases`, ...): which stored tensors make which output weight, and the
//! dequantizer of their format (`quant::packed::Unpack`).
//!
//! `source::quantized` recognises them; the converted views (`view::hf`)
//! make one output tensor of each, and `raw/` keeps the parts as stored.

use std::sync::Arc;

use crate::catalog::TensorId;
use crate::quant::packed::Unpack;

/// Side files that describe a quantization (NVIDIA ModelOpt's
/// `hf_quant_config.json`, AutoGPTQ's `quantize_config.json`): read by
/// `source::quantized`, and not passed through by the converted views,
/// whose weights are no longer quantized.
pub const SIDE_FILES: &[&str] = &["hf_quant_config.json", "quantize_config.json"];

/// Index of a packed weight in [`super::Catalog::packed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackedId(pub u32);

impl PackedId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One weight made of several stored tensors.
#[derive(Debug, Clone)]
pub struct Packed {
    /// The output tensor's name (the model's own: `...q_proj.weight`).
    pub name: String,
    /// Its dequantizer; its `shape()` is the output's shape.
    pub unpack: Arc<dyn Unpack>,
    /// The stored tensors, in `unpack.roles()` order; the first is the
    /// primary one (the output takes its place in source order).
    pub parts: Vec<TensorId>,
}

impl Packed {
    /// The stored tensor the output is recorded against.
    pub fn primary(&self) -> TensorId {
        self.parts[0]
    }
}
