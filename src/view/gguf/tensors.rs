//! The tensors of the `gguf/` view's model: the Hugging Face tensors the
//! converter reads ([`HfTensor`]) and the output tensors it writes
//! ([`OutTensor`]: a name, a shape and how the bytes are made, [`Data`]).
//! Each architecture (`arch/`) maps the first to the second.

use std::sync::Arc;

use crate::dtype::Dtype;
use crate::quant::ggml::GgmlType;

/// A tensor of the Hugging Face folder view, as the converter reads it.
#[derive(Debug, Clone)]
pub struct HfTensor {
    /// Its index in the view.
    pub index: u32,
    pub name: String,
    /// Numpy order.
    pub shape: Vec<u64>,
    /// The dtype the converter would read (the source's storage dtype).
    pub dtype: Dtype,
    /// The file the converter would read it from (tensors come in file
    /// order, then name order).
    pub file: String,
    /// For an MXFP4 pair (gpt-oss experts, which the view presents
    /// dequantized): the pair as it is stored.
    pub mxfp4: Option<Mxfp4Stored>,
}

/// An MXFP4 pair in the Hugging Face layout: blocks `[experts, rows,
/// groups, 16]` and scales `[experts, rows, groups]` (gpt-oss's
/// `*_blocks` / `*_scales`, and its `original/` `.blocks` / `.scales`,
/// which hold the same bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mxfp4Stored {
    pub experts: u64,
    pub rows: u64,
    pub groups: u64,
}

/// How an output tensor's float32 values are made (row-major, numpy order).
#[derive(Debug, Clone)]
pub enum Values {
    /// A Hugging Face tensor as it is.
    Hf(u32),
    /// Llama's Q/K rows permuted (`permute(W, n_head)`): within each of
    /// `n_head` heads, the two halves of the rotary dimensions interleaved.
    Permuted { hf: u32, n_head: u64 },
    /// `w + 1` (Gemma's norms), in float16 when `f16` (an F16 checkpoint),
    /// else in float32.
    PlusOne { hf: u32, f16: bool },
    /// The last two axes swapped (`[.., R, C] -> [.., C, R]`): GPT-2's
    /// Conv1D weights (2-D), gpt-oss's dense `down_proj` experts (3-D).
    Transposed(u32),
    /// Every `step`-th value of the last axis from `first` (gpt-oss's
    /// interleaved gate/up: gate `0::2`, up `1::2`); with `transposed`, the
    /// last two axes swapped first and every `step`-th row of each matrix
    /// taken (`transpose(-1, -2)[.., first::step, :]`).
    Strided {
        hf: u32,
        first: u64,
        step: u64,
        transposed: bool,
    },
    /// Tensors stacked along a new first axis (MoE experts).
    Stacked(Vec<u32>),
    /// `count` rows from row `start` of every matrix (the last two axes):
    /// of axis 0 for a 1-D or 2-D tensor, of axis 1 of every expert for
    /// stacked experts `[E, R, C]` (Gemma 3's embedding trimmed to the
    /// vocabulary; halves of fused tensors, as MoE `gate_up_proj`).
    Rows { hf: u32, start: u64, count: u64 },
    /// Values the converter computes (RoPE factors).
    Generated(Arc<[f32]>),
}

impl Values {
    /// The Hugging Face tensors it reads.
    pub fn reads(&self) -> impl Iterator<Item = u32> + '_ {
        let one = match *self {
            Values::Hf(i)
            | Values::Permuted { hf: i, .. }
            | Values::PlusOne { hf: i, .. }
            | Values::Transposed(i)
            | Values::Strided { hf: i, .. }
            | Values::Rows { hf: i, .. } => Some(i),
            Values::Stacked(_) | Values::Generated(_) => None,
        };
        let many = match self {
            Values::Stacked(ids) => &ids[..],
            _ => &[],
        };
        one.into_iter().chain(many.iter().copied())
    }
}

/// Bytes of a type of their own, made from stored bytes without going
/// through float32 (gpt-oss MXFP4 experts stay MXFP4).
#[derive(Debug, Clone)]
pub enum Raw {
    /// The MXFP4 pair of Hugging Face tensor `hf` ([`HfTensor::mxfp4`]) as
    /// ggml MXFP4 blocks `[experts, rows / step, groups * 17]`: of each
    /// expert, rows `first, first + step, ..` (the gate/up split takes
    /// every other row).
    Mxfp4 { hf: u32, first: u64, step: u64 },
}

/// What an output tensor's data is.
#[derive(Debug, Clone)]
pub enum Data {
    /// Float32 values, written in the output type.
    Values(Values),
    /// Bytes of a fixed type.
    Raw(Raw, GgmlType),
}

/// One tensor of the GGUF file.
#[derive(Debug, Clone)]
pub struct OutTensor {
    pub name: String,
    /// Numpy order: the file stores it reversed.
    pub shape: Vec<u64>,
    pub data: Data,
}

impl OutTensor {
    pub fn values(name: impl Into<String>, shape: Vec<u64>, v: Values) -> OutTensor {
        OutTensor {
            name: name.into(),
            shape,
            data: Data::Values(v),
        }
    }
}
