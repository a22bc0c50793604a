//! What each tensor of the Hugging Face folder views is made of: a [`Plan`]
//! per output tensor (a few dozen bytes: which source tensors, which
//! transform), decided once at mount for every dtype's view
//! ([`Conversion`]), and its segments, made when a file holding it is first
//! read.
//!
//! - MXFP4 pairs (`X_blocks` + `X_scales`, gpt-oss `X.blocks` + `X.scales`)
//!   become one tensor `X`; gpt-oss experts are transposed the way
//!   transformers' dense `GptOssExperts` holds them (`gate_up_proj`
//!   `[E, H, 2I]`, `down_proj` `[E, I, H]`);
//! - block-scaled FP8 pairs (`weight` F8_E4M3 + `weight_scale_inv` F32)
//!   become the `weight`;
//! - weights a quantization library stored as several tensors (GPTQ, AWQ,
//!   compressed-tensors, bitsandbytes, MLX, ModelOpt: `catalog::packed`)
//!   become one tensor, dequantized by their format's `quant::packed::Unpack`;
//! - floats are cast to the view's dtype (the view's own dtype passes
//!   through); integer, boolean and other tensors are kept as they are;
//! - GGUF block-quantized tensors are dequantized, and a GGUF model of a
//!   known architecture is mapped to its Hugging Face names and layouts
//!   (`gguf`);
//! - a gpt-oss `original/` checkpoint is renamed to the Hugging Face layout
//!   (q/k/v split by rows) with a derived config (`gpt_oss`), and a nanoGPT
//!   training checkpoint becomes GPT-2 (`nanogpt`).

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use crate::catalog::packed::PackedId;
use crate::catalog::{
    Catalog, FileId, Layout, QuantRole, QuantScheme, SourceFormat, TensorId, index_by_name,
};
use crate::dtype::{Dtype, numel};
use crate::error::ViewError;
use crate::json::to_pretty;
use crate::quant::fp8::BlockScaled;
use crate::quant::ggml::GgmlType;
use crate::view::compute::{
    AddScalar, Cast, CastOf, ConcatOf, Fp8Block, Gather, GgmlDequant, GgufMxfp4Transposed,
    InterleaveOf, MAX_TRANSPOSED_ROW, Memory, Mxfp4, Mxfp4Transposed, RowsPermuted, SourceBytes,
    TransposeOf, Unpacked, ValuesOf, Zeros,
};
use crate::view::header::Entry;
use crate::view::hf::gguf::{self, GgufTensorInfo, Op};
use crate::view::hf::gpt_oss::{self, HfName, QkvRows};
use crate::view::hf::nanogpt::{self, Out};
use crate::view::record::{Dequant, Record, Transform};
use crate::view::{Compute, Segment};

/// One output tensor of a converted view: its name and how it is made.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Its name, when not the source tensor's.
    renamed: Option<Box<str>>,
    kind: PlanKind,
}

#[derive(Debug, Clone)]
enum PlanKind {
    /// Passed through (BF16, integers, ...) or cast to BF16 elementwise.
    Elementwise(TensorId),
    /// A GGUF block-quantized tensor, dequantized in its logical shape.
    Ggml(TensorId),
    /// Rows `start..start + len` of axis 0 (gpt-oss fused q|k|v).
    RowSlice { id: TensorId, start: u64, len: u64 },
    /// An MXFP4 pair; `transposed`: gpt-oss experts `[E, R, G, 16]` as
    /// `[E, G*32, R]`.
    Mxfp4 {
        blocks: TensorId,
        scales: TensorId,
        transposed: bool,
    },
    /// A block-scaled FP8 weight with its scale grid.
    Fp8Block {
        weight: TensorId,
        scales: TensorId,
        rows: u64,
        cols: u64,
    },
    /// A 2-D tensor transposed (nanoGPT `nn.Linear` -> HF GPT-2 `Conv1D`).
    Transposed(TensorId),
    /// `len` zeros (a bias the source does not have; no source tensor).
    Zeros { len: u64 },
    /// A GGUF tensor (or several) as a Hugging Face tensor (`gguf_hf`).
    Gguf(Arc<GgufPlan>),
    /// A weight a quantization library stored as several tensors (its
    /// parts, primary first).
    Packed(PackedId, Arc<[TensorId]>),
}

/// A GGUF -> Hugging Face operation (`gguf_hf::Op`) on source tensors, and
/// the Hugging Face shape.
#[derive(Debug)]
struct GgufPlan {
    op: GgufOp,
    shape: Vec<u64>,
}

#[derive(Debug)]
enum GgufOp {
    Same(TensorId),
    UnpermuteRows(TensorId, u64),
    AddScalar(TensorId, f32),
    Transpose(TensorId),
    Concat(Vec<TensorId>, u32),
    /// Interleaved along the last axis; `.1`: each transposed first.
    Interleave(Vec<TensorId>, bool),
}

impl GgufOp {
    fn primary(&self) -> TensorId {
        match self {
            GgufOp::Same(id)
            | GgufOp::UnpermuteRows(id, _)
            | GgufOp::AddScalar(id, _)
            | GgufOp::Transpose(id) => *id,
            GgufOp::Concat(ids, _) | GgufOp::Interleave(ids, _) => ids[0],
        }
    }
}

impl Plan {
    fn of(kind: PlanKind) -> Plan {
        Plan {
            renamed: None,
            kind,
        }
    }

    fn named(name: String, catalog: &Catalog, kind: PlanKind) -> Plan {
        let same = kind
            .clone()
            .primary()
            .is_some_and(|p| name == catalog.tensor(p).name);
        Plan {
            renamed: (!same).then(|| name.into_boxed_str()),
            kind,
        }
    }

    pub fn name<'a>(&'a self, catalog: &'a Catalog) -> &'a str {
        match (&self.renamed, self.kind.clone().primary()) {
            (Some(n), _) => n,
            (None, Some(p)) => &catalog.tensor(p).name,
            (None, None) => "",
        }
    }

    /// The source tensors it reads (primary first).
    pub fn sources(&self) -> impl Iterator<Item = TensorId> {
        let ids: Vec<TensorId> = match self.kind.clone() {
            PlanKind::Mxfp4 { blocks, scales, .. } => vec![blocks, scales],
            PlanKind::Fp8Block { weight, scales, .. } => vec![weight, scales],
            PlanKind::Packed(_, parts) => parts.to_vec(),
            PlanKind::Gguf(g) => match &g.op {
                GgufOp::Concat(ids, _) | GgufOp::Interleave(ids, _) => ids.clone(),
                op => vec![op.primary()],
            },
            k => k.primary().into_iter().collect(),
        };
        ids.into_iter()
    }

    /// The storage dtype of its primary source tensor (what a converter
    /// reading the source would see), if it has one.
    /// A packed weight has none (its parts are codes, scales, ...).
    pub fn source_dtype(&self, catalog: &Catalog) -> Option<Dtype> {
        if let PlanKind::Packed(..) = self.kind {
            return None;
        }
        self.kind.clone().primary().map(|p| catalog.tensor(p).dtype)
    }

    /// Is it a source tensor as it is, or cast elementwise (so that in its
    /// own dtype its bytes are the source's)?
    pub fn is_elementwise(&self) -> bool {
        matches!(self.kind, PlanKind::Elementwise(_))
    }

    /// An MXFP4 pair as it is stored: its blocks and scales tensors, and
    /// whether the plan transposes them (gpt-oss experts).
    pub fn mxfp4(&self) -> Option<(TensorId, TensorId, bool)> {
        match self.kind {
            PlanKind::Mxfp4 {
                blocks,
                scales,
                transposed,
            } => Some((blocks, scales, transposed)),
            _ => None,
        }
    }

    /// The source files it reads.
    pub fn files(&self, catalog: &Catalog) -> Vec<FileId> {
        self.sources()
            .map(|s| catalog.tensor(s).extent.file)
            .collect()
    }

    /// Its record (what the Gyro header says).
    pub fn record(&self, catalog: &Catalog, to: Dtype) -> Record {
        let bf16 = to;
        let dequant = |scheme, transpose| Transform::Dequant {
            scheme,
            to: bf16,
            transpose,
        };
        let (source, transform) = match self.kind.clone() {
            PlanKind::Elementwise(id) => {
                let t = catalog.tensor(id);
                let tr = if casts(t.dtype, to) {
                    Transform::Cast { to: bf16 }
                } else {
                    Transform::Identity
                };
                (id, tr)
            }
            PlanKind::Ggml(id) => {
                let ty = catalog.tensor(id).ggml.as_ref().expect("a GGUF tensor").ty;
                (id, dequant(Dequant::Ggml(ty), None))
            }
            PlanKind::RowSlice { id, start, len } => {
                let to = casts(catalog.tensor(id).dtype, to).then_some(bf16);
                let tr = Transform::Slice {
                    axis: 0,
                    start,
                    stop: start + len,
                    to,
                };
                (id, tr)
            }
            PlanKind::Mxfp4 {
                blocks, transposed, ..
            } => (
                blocks,
                dequant(Dequant::Mxfp4, transposed.then_some([1, 2])),
            ),
            PlanKind::Fp8Block {
                weight, rows, cols, ..
            } => (weight, dequant(Dequant::Fp8Block { rows, cols }, None)),
            PlanKind::Transposed(id) => {
                let of = Box::new(base_transform(catalog, id, to));
                (
                    id,
                    Transform::Transpose {
                        dims: vec![1, 0],
                        of,
                    },
                )
            }
            PlanKind::Gguf(g) => {
                let id = g.op.primary();
                let of = Box::new(base_transform(catalog, id, to));
                let tr = match &g.op {
                    GgufOp::Same(_) => *of,
                    GgufOp::UnpermuteRows(_, n_head) => Transform::UnpermuteRows {
                        n_head: *n_head,
                        of,
                    },
                    GgufOp::AddScalar(_, v) => Transform::AddScalar {
                        value: format!("{v}"),
                        of,
                    },
                    GgufOp::Transpose(_) => Transform::Transpose {
                        dims: last2_swapped(catalog, id),
                        of,
                    },
                    GgufOp::Interleave(ids, transpose) => {
                        let of = match transpose {
                            true => Box::new(Transform::Transpose {
                                dims: last2_swapped(catalog, id),
                                of,
                            }),
                            false => of,
                        };
                        Transform::Interleave {
                            axis: (g.shape.len() as u32).saturating_sub(1),
                            sources: ids
                                .iter()
                                .map(|&i| catalog.tensor(i).name.clone())
                                .collect(),
                            of,
                        }
                    }
                    GgufOp::Concat(ids, axis) => Transform::Concat {
                        axis: *axis,
                        sources: ids
                            .iter()
                            .map(|&i| catalog.tensor(i).name.clone())
                            .collect(),
                        of,
                    },
                };
                (id, tr)
            }
            PlanKind::Packed(p, _) => {
                let p = catalog.packed(p);
                let tr = Transform::Unpack {
                    scheme: p.unpack.scheme(),
                    params: crate::json::to_canonical(&p.unpack.params()),
                    parts: p
                        .unpack
                        .roles()
                        .iter()
                        .zip(&p.parts)
                        .map(|(role, &id)| (*role, catalog.tensor(id).name.clone()))
                        .collect(),
                    to,
                };
                (p.primary(), tr)
            }
            PlanKind::Zeros { .. } => {
                return Record {
                    source: None,
                    transform: Transform::Synthesized { dtype: bf16 },
                };
            }
        };
        Record::new(source, transform)
    }

    /// Dtype, shape and byte length of the output, without building it.
    pub fn info<'a>(&self, catalog: &'a Catalog, to: Dtype) -> (Dtype, Cow<'a, [u64]>, u64) {
        let bf16_of = |shape: Cow<'a, [u64]>| {
            let n = numel(&shape).unwrap_or(0);
            (to, shape, n * (to.bits() / 8))
        };
        match self.kind.clone() {
            PlanKind::Elementwise(id) => {
                let t = catalog.tensor(id);
                if casts(t.dtype, to) {
                    bf16_of(Cow::Borrowed(&t.shape))
                } else {
                    (t.dtype, Cow::Borrowed(&t.shape), t.len())
                }
            }
            PlanKind::Ggml(id) => {
                let g = catalog.tensor(id).ggml.as_ref().expect("a GGUF tensor");
                bf16_of(Cow::Borrowed(&g.shape))
            }
            PlanKind::RowSlice { id, len, .. } => {
                let t = catalog.tensor(id);
                let mut shape = t.shape.clone();
                shape[0] = len;
                if casts(t.dtype, to) {
                    bf16_of(Cow::Owned(shape))
                } else {
                    let n = numel(&shape).and_then(|n| t.dtype.bytes_for(n));
                    (t.dtype, Cow::Owned(shape), n.unwrap_or(0))
                }
            }
            PlanKind::Mxfp4 {
                blocks,
                scales,
                transposed,
            } => {
                let b = catalog.tensor(blocks);
                if transposed {
                    let (e, r, g) = (b.shape[0], b.shape[1], b.shape[2]);
                    bf16_of(Cow::Owned(vec![e, g * 32, r]))
                } else {
                    let mut natural = catalog.tensor(scales).shape.clone();
                    if let Some(last) = natural.last_mut() {
                        *last *= 32;
                    }
                    bf16_of(Cow::Owned(natural))
                }
            }
            PlanKind::Fp8Block { weight, .. } => {
                bf16_of(Cow::Borrowed(&catalog.tensor(weight).shape))
            }
            PlanKind::Transposed(id) => {
                let t = catalog.tensor(id);
                let shape: Vec<u64> = t.shape.iter().rev().copied().collect();
                if casts(t.dtype, to) {
                    bf16_of(Cow::Owned(shape))
                } else {
                    (t.dtype, Cow::Owned(shape), t.len())
                }
            }
            PlanKind::Zeros { len } => bf16_of(Cow::Owned(vec![len])),
            PlanKind::Packed(p, _) => bf16_of(Cow::Borrowed(catalog.packed(p).unpack.shape())),
            PlanKind::Gguf(g) => {
                let dtype = base_dtype(catalog, g.op.primary(), to);
                let n = numel(&g.shape).unwrap_or(0);
                (dtype, Cow::Owned(g.shape.clone()), n * (dtype.bits() / 8))
            }
        }
    }

    /// The output tensor with its bytes (computed segments made here).
    pub fn entry(&self, catalog: &Catalog, to: Dtype) -> Entry {
        let (dtype, shape, _) = self.info(catalog, to);
        let data: Segment = match self.kind.clone() {
            PlanKind::Elementwise(id) => {
                let t = catalog.tensor(id);
                match &t.layout {
                    None => match Cast::new(t.extent, t.dtype, to) {
                        Some(c) => computed(c),
                        None => Segment::Source(t.extent),
                    },
                    Some(l) => {
                        let g: Arc<dyn Compute> =
                            Arc::new(Gather::of(l, t.dtype.bits() / 8, &t.shape, None));
                        match CastOf::new(Arc::clone(&g), t.dtype, to) {
                            Some(c) => computed(c),
                            None => Segment::Computed(g),
                        }
                    }
                }
            }
            PlanKind::Ggml(id) => {
                let t = catalog.tensor(id);
                let ty = t.ggml.as_ref().expect("a GGUF tensor").ty;
                computed(GgmlDequant {
                    src: t.extent,
                    ty,
                    to,
                })
            }
            PlanKind::RowSlice { id, start, len } => {
                let t = catalog.tensor(id);
                let row_bytes = t.len() / t.shape[0].max(1);
                let src = t.extent.sub(start * row_bytes, len * row_bytes);
                match Cast::new(src, t.dtype, to) {
                    Some(c) => computed(c),
                    None => Segment::Source(src),
                }
            }
            PlanKind::Mxfp4 {
                blocks,
                scales,
                transposed,
            } => {
                let (b, s) = (catalog.tensor(blocks), catalog.tensor(scales));
                if transposed {
                    computed(Mxfp4Transposed {
                        blocks: b.extent,
                        scales: s.extent,
                        experts: b.shape[0],
                        rows: b.shape[1],
                        groups: b.shape[2],
                        to,
                    })
                } else {
                    computed(Mxfp4 {
                        blocks: b.extent,
                        scales: s.extent,
                        to,
                    })
                }
            }
            PlanKind::Fp8Block {
                weight,
                scales,
                rows,
                cols,
            } => {
                let (w, s) = (catalog.tensor(weight), catalog.tensor(scales));
                let geometry = BlockScaled::new(
                    w.shape[0] as usize,
                    w.shape[1] as usize,
                    (rows as usize, cols as usize),
                )
                .expect("checked when the plan was made");
                computed(Fp8Block {
                    weight: w.extent,
                    scale_inv: s.extent,
                    geometry,
                    to,
                })
            }
            PlanKind::Transposed(id) => {
                let t = catalog.tensor(id);
                let elem = t.dtype.bits() / 8;
                let layout = t.layout.as_deref().cloned().unwrap_or_else(|| Layout {
                    storage: t.extent,
                    offset: 0,
                    strides: crate::source::row_major(&t.shape),
                    big_endian: false,
                });
                let g: Arc<dyn Compute> =
                    Arc::new(Gather::of(&layout, elem, &t.shape, Some(&[1, 0])));
                match CastOf::new(Arc::clone(&g), t.dtype, to) {
                    Some(c) => computed(c),
                    None => Segment::Computed(g),
                }
            }
            PlanKind::Zeros { len } => computed(Zeros {
                len: len * (to.bits() / 8),
            }),
            PlanKind::Gguf(g) => gguf_segment(catalog, &g, to),
            PlanKind::Packed(p, _) => {
                let p = catalog.packed(p);
                computed(Unpacked {
                    parts: p
                        .parts
                        .iter()
                        .map(|&id| catalog.tensor(id).extent)
                        .collect(),
                    unpack: Arc::clone(&p.unpack),
                    to,
                })
            }
        };
        Entry {
            name: self.name(catalog).to_string(),
            dtype,
            shape: shape.into_owned(),
            record: self.record(catalog, to),
            data: vec![data],
        }
    }
}

impl PlanKind {
    /// The source tensor it is made from (for pairs, the quantized data).
    fn primary(self) -> Option<TensorId> {
        Some(match self {
            PlanKind::Elementwise(id)
            | PlanKind::Ggml(id)
            | PlanKind::RowSlice { id, .. }
            | PlanKind::Transposed(id) => id,
            PlanKind::Mxfp4 { blocks, .. } => blocks,
            PlanKind::Fp8Block { weight, .. } => weight,
            PlanKind::Zeros { .. } => return None,
            PlanKind::Gguf(g) => g.op.primary(),
            PlanKind::Packed(_, parts) => parts[0],
        })
    }
}

/// The dtype of source tensor `id` converted as a whole to `to` (a GGUF
/// block-quantized tensor or a float is `to`; anything else keeps its dtype).
fn base_dtype(catalog: &Catalog, id: TensorId, to: Dtype) -> Dtype {
    let t = catalog.tensor(id);
    if t.ggml.as_ref().is_some_and(|g| g.ty.is_quantized()) || casts(t.dtype, to) {
        to
    } else {
        t.dtype
    }
}

/// How source tensor `id` is converted as a whole to `to`, as recorded.
fn base_transform(catalog: &Catalog, id: TensorId, to: Dtype) -> Transform {
    let t = catalog.tensor(id);
    match &t.ggml {
        Some(g) if g.ty.is_quantized() => Transform::Dequant {
            scheme: Dequant::Ggml(g.ty),
            to,
            transpose: None,
        },
        _ if casts(t.dtype, to) => Transform::Cast { to },
        _ => Transform::Identity,
    }
}

/// Source tensor `id` converted as a whole to `to`: its bytes in row-major
/// order (a strided PyTorch view gathered, a GGUF quant dequantized, a
/// float cast, anything else as it is).
fn base_segment(catalog: &Catalog, id: TensorId, to: Dtype) -> Segment {
    let t = catalog.tensor(id);
    if let Some(g) = t.ggml.as_ref().filter(|g| g.ty.is_quantized()) {
        return computed(GgmlDequant {
            src: t.extent,
            ty: g.ty,
            to,
        });
    }
    match &t.layout {
        None => match Cast::new(t.extent, t.dtype, to) {
            Some(c) => computed(c),
            None => Segment::Source(t.extent),
        },
        Some(l) => {
            let g: Arc<dyn Compute> = Arc::new(Gather::of(l, t.dtype.bits() / 8, &t.shape, None));
            match CastOf::new(Arc::clone(&g), t.dtype, to) {
                Some(c) => computed(c),
                None => Segment::Computed(g),
            }
        }
    }
}

/// A segment as a computation (a source range is read as it is).
fn as_compute(seg: Segment) -> Arc<dyn Compute> {
    match seg {
        Segment::Computed(c) => c,
        Segment::Source(e) => Arc::new(SourceBytes(e)),
        Segment::Bytes(b) => Arc::new(Memory(b)),
    }
}

/// The bytes of a GGUF -> Hugging Face tensor.
fn gguf_segment(catalog: &Catalog, g: &GgufPlan, to: Dtype) -> Segment {
    let id = g.op.primary();
    let t = catalog.tensor(id);
    let elem = base_dtype(catalog, id, to).bits() / 8;
    match &g.op {
        GgufOp::Same(_) => base_segment(catalog, id, to),
        GgufOp::UnpermuteRows(_, n_head) => {
            let rows = t.logical_shape().first().copied().unwrap_or(1).max(1);
            let inner = as_compute(base_segment(catalog, id, to));
            let row_bytes = inner.len() / rows;
            computed(RowsPermuted {
                inner,
                rows,
                row_bytes,
                n_head: *n_head,
                forward: false,
            })
        }
        GgufOp::AddScalar(_, value) => {
            let source = match &t.ggml {
                Some(gg) if gg.ty.is_quantized() => ValuesOf::Ggml(gg.ty),
                _ => ValuesOf::Float(t.dtype),
            };
            computed(AddScalar {
                src: t.extent,
                source,
                value: *value,
                to,
            })
        }
        GgufOp::Transpose(_) => match mxfp4_experts(catalog, &[id], to) {
            Some(fast) => computed(fast),
            None => computed(transposed(catalog, id, to)),
        },
        GgufOp::Interleave(ids, transpose) => {
            if *transpose && let Some(fast) = mxfp4_experts(catalog, ids, to) {
                return computed(fast);
            }
            let parts = ids
                .iter()
                .map(|&i| match transpose {
                    true => Arc::new(transposed(catalog, i, to)) as Arc<dyn Compute>,
                    false => as_compute(base_segment(catalog, i, to)),
                })
                .collect();
            computed(InterleaveOf { parts, elem })
        }
        GgufOp::Concat(ids, axis) => {
            let outer: u64 = g.shape[..*axis as usize].iter().product();
            let parts = ids
                .iter()
                .map(|&i| {
                    let c = as_compute(base_segment(catalog, i, to));
                    let slice = c.len() / outer.max(1);
                    (c, slice)
                })
                .collect();
            computed(ConcatOf { parts, outer })
        }
    }
}

/// Tensor `id` with its last two axes swapped (mapped shapes have at least
/// two: `gguf_hf` checks).
fn transposed(catalog: &Catalog, id: TensorId, to: Dtype) -> TransposeOf {
    let shape = catalog.tensor(id).logical_shape();
    let n = shape.len();
    TransposeOf {
        inner: as_compute(base_segment(catalog, id, to)),
        batch: shape[..n.saturating_sub(2)].iter().product(),
        rows: shape[n.saturating_sub(2)],
        cols: shape[n.saturating_sub(1)],
        elem: base_dtype(catalog, id, to).bits() / 8,
    }
}

/// For GGUF MXFP4 tensors of one 2- or 3-D shape `[E, R, C]` (whole
/// blocks per row): their fast transposed (and, for several, interleaved)
/// dequantization.
fn mxfp4_experts(catalog: &Catalog, ids: &[TensorId], to: Dtype) -> Option<GgufMxfp4Transposed> {
    let first = catalog.tensor(*ids.first()?);
    let shape = first.logical_shape();
    let mxfp4 = |i: &TensorId| {
        let t = catalog.tensor(*i);
        t.ggml.as_ref().is_some_and(|g| g.ty == GgmlType::MXFP4) && t.logical_shape() == shape
    };
    if !ids.iter().all(mxfp4) || !(2..=3).contains(&shape.len()) {
        return None;
    }
    let n = shape.len();
    let (rows, cols) = (shape[n - 2], shape[n - 1]);
    let experts: u64 = shape[..n - 2].iter().product();
    let bytes = experts.checked_mul(rows)?.checked_mul(cols / 32 * 17)?;
    let whole = |i: &TensorId| catalog.tensor(*i).extent.len == bytes;
    if cols % 32 != 0 || !ids.iter().all(whole) {
        return None;
    }
    Some(GgufMxfp4Transposed {
        parts: ids.iter().map(|&i| catalog.tensor(i).extent).collect(),
        experts,
        rows,
        groups: cols / 32,
        to,
    })
}

/// The permutation that swaps the last two of tensor `id`'s axes.
fn last2_swapped(catalog: &Catalog, id: TensorId) -> Vec<u32> {
    let n = catalog.tensor(id).logical_shape().len() as u32;
    let mut dims: Vec<u32> = (0..n).collect();
    if n >= 2 {
        dims.swap(n as usize - 2, n as usize - 1);
    }
    dims
}

fn computed(c: impl Compute + 'static) -> Segment {
    Segment::Computed(Arc::new(c))
}

/// Whether elements of `d` are converted to `to` (the others pass through).
fn casts(d: Dtype, to: Dtype) -> bool {
    Cast::converts(d, to)
}

/// Is this a gpt-oss checkpoint (either layout)?
pub fn is_gpt_oss(catalog: &Catalog) -> bool {
    catalog.format == SourceFormat::GptOssOriginal
        || catalog
            .config
            .as_ref()
            .and_then(|c| c.get("model_type"))
            .and_then(Value::as_str)
            == Some("gpt_oss")
}

/// The tensors of the converted views of a source, and their config:
/// decided once, shared by every dtype's view.
#[derive(Debug)]
pub struct Conversion {
    /// Every output tensor: the model's (in source order), then the tensors
    /// kept beside it.
    pub plans: Arc<[Plan]>,
    /// How many of `plans` are the model (the shards, the index); the rest
    /// (GGUF tensors with no Hugging Face counterpart, under their GGUF
    /// names) are in the view's `tensors/` only.
    pub model: usize,
    /// The views' `config.json` (before the dtype is set).
    pub config: Option<Value>,
    /// Files the mapping makes (a GGUF model's tokenizer files and
    /// generation config), by name.
    pub extra: Arc<[(String, Made)]>,
}

impl Conversion {
    /// Decide the converted tensors of `catalog`. Tensors that cannot be
    /// converted (GGUF types without a dequantizer) are left out, each with a
    /// line in `notes`; a source no converted view can be built for is an
    /// error.
    pub fn new(catalog: &Catalog, notes: &mut Vec<String>) -> Result<Conversion, ViewError> {
        if let Some(why) = &catalog.unconverted {
            return Err(ViewError::Unconverted(why.clone()));
        }
        if catalog.format == SourceFormat::Gguf
            && let Some(c) = Conversion::gguf(catalog, notes)?
        {
            return Ok(c);
        }
        let (plans, config) = match nanogpt::detect(catalog) {
            Ok(Some(g)) => {
                let left = nanogpt::left_out(catalog, &g);
                if left > 0 {
                    notes.push(format!(
                        "the converted views hold the GPT-2 model of this nanoGPT checkpoint as a \
                         Hugging Face GPT2LMHeadModel; the other {left} tensors (optimizer state, ...) \
                         are in raw/ only"
                    ));
                }
                (nanogpt_plans(catalog, &g), Some(g.config))
            }
            Ok(None) => (plans(catalog, notes)?, config(catalog)?),
            Err(why) => {
                notes.push(format!(
                    "the converted views are not mapped to Hugging Face GPT-2: {why}"
                ));
                (plans(catalog, notes)?, config(catalog)?)
            }
        };
        if config.as_ref().is_some_and(|c| !c.is_object()) {
            return Err(ViewError::Config("is not a JSON object".into()));
        }
        Ok(Conversion {
            model: plans.len(),
            plans: plans.into(),
            config,
            extra: Arc::new([]),
        })
    }

    /// A GGUF model as the Hugging Face model it is (`gguf_hf`), or `None`
    /// (with a note) when it is not one gyrofs can map: the views then keep
    /// the GGUF names.
    fn gguf(catalog: &Catalog, notes: &mut Vec<String>) -> Result<Option<Conversion>, ViewError> {
        let Some(md) = &catalog.gguf_metadata else {
            return Ok(None);
        };
        let infos: Vec<GgufTensorInfo> = catalog
            .tensors
            .iter()
            .filter_map(|t| {
                let g = t.ggml.as_ref()?;
                Some(GgufTensorInfo {
                    name: t.name.clone(),
                    shape: g.shape.clone(),
                    ty: g.ty,
                })
            })
            .collect();
        let model = match gguf::map(md, &infos) {
            Ok(m) => m,
            Err(why) => {
                notes.push(format!(
                    "the converted views keep the GGUF tensor names (not a Hugging Face model folder): {why}"
                ));
                return Ok(None);
            }
        };
        notes.extend(model.notes.iter().cloned());
        let index = index_by_name(&catalog.tensors);
        let id = |name: &str| {
            index.get(name).copied().ok_or_else(|| ViewError::Tensor {
                tensor: name.to_string(),
                why: "named by the Hugging Face mapping but not in the source".into(),
            })
        };
        let mut plans = Vec::with_capacity(model.tensors.len());
        for t in &model.tensors {
            let op = match &t.op {
                Op::Same { source } => GgufOp::Same(id(source)?),
                Op::UnpermuteRows { source, n_head } => GgufOp::UnpermuteRows(id(source)?, *n_head),
                Op::AddScalar { source, value } => GgufOp::AddScalar(id(source)?, *value),
                Op::Transpose { source } => GgufOp::Transpose(id(source)?),
                Op::Concat { sources, axis } => GgufOp::Concat(
                    sources.iter().map(|s| id(s)).collect::<Result<_, _>>()?,
                    *axis as u32,
                ),
                Op::Interleave { sources, transpose } => GgufOp::Interleave(
                    sources.iter().map(|s| id(s)).collect::<Result<_, _>>()?,
                    *transpose,
                ),
            };
            let plan = GgufPlan {
                op,
                shape: t.shape.clone(),
            };
            let kind = PlanKind::Gguf(Arc::new(plan));
            plans.push(Plan::named(t.name.clone(), catalog, kind));
        }
        let model_len = plans.len();
        for name in &model.kept {
            if let Some(kind) = gguf_whole(catalog, id(name)?, notes) {
                plans.push(Plan::of(kind));
            }
        }
        // The tokenizer files are built when first asked for.
        let (updated, arch) = &model.arch;
        let tokenizer = Made::GgufTokenizer {
            updated: Arc::from(updated.as_str()),
            arch: Arc::from(arch.as_str()),
        };
        let mut extra: Vec<(String, Made)> = model
            .files
            .iter()
            .map(|name| (name.to_string(), tokenizer.clone()))
            .collect();
        if let Some(g) = &model.generation_config {
            extra.push((
                "generation_config.json".into(),
                Made::Bytes(Arc::from(to_pretty(g).into_bytes())),
            ));
        }
        Ok(Some(Conversion {
            plans: plans.into(),
            model: model_len,
            config: Some(model.config),
            extra: extra.into(),
        }))
    }
}

/// A file the mapping makes, beside the tensors.
#[derive(Debug, Clone)]
pub enum Made {
    /// Made at mount (small: `generation_config.json`).
    Bytes(Arc<[u8]>),
    /// A tokenizer file of a GGUF model (`updated`: the architecture after
    /// the loader's renames, `arch`: the GGUF one), built from the catalog's
    /// metadata when asked for, within `gguf::tokenizer::budget`, and not
    /// kept (the volume's cache of built files holds it while it is used).
    GgufTokenizer { updated: Arc<str>, arch: Arc<str> },
}

impl Made {
    /// The bytes of file `name`, or why it cannot be built (one line).
    pub fn build(&self, name: &str, catalog: &Catalog) -> Result<Arc<[u8]>, String> {
        match self {
            Made::Bytes(b) => Ok(Arc::clone(b)),
            Made::GgufTokenizer { updated, arch } => {
                let meta = catalog
                    .gguf_metadata
                    .as_ref()
                    .ok_or_else(|| format!("{name}: not built: the source has no GGUF metadata"))?;
                let budget = gguf::tokenizer::budget(meta);
                match gguf::tokenizer::build(meta, updated, arch, name, budget) {
                    Ok(text) => Ok(Arc::from(text.into_bytes())),
                    Err(e @ gguf::GgufHfError::TokenizerTooBig { .. }) => Err(e.to_string()),
                    Err(e) => Err(format!("{name}: not built: {e}")),
                }
            }
        }
    }
}

/// Every output tensor, in source order.
fn plans(catalog: &Catalog, notes: &mut Vec<String>) -> Result<Vec<Plan>, ViewError> {
    let gpt_oss = is_gpt_oss(catalog);
    let qkv = if catalog.format == SourceFormat::GptOssOriginal {
        let config = catalog.config.as_ref().ok_or(ViewError::MissingConfig)?;
        Some(QkvRows::from_config(config)?)
    } else {
        None
    };
    let mut out = Vec::with_capacity(catalog.tensors.len());
    for (id, t) in catalog.tensor_ids() {
        if let Some(p) = t.packed {
            // the weight takes its primary part's place; the others are in it
            let packed = catalog.packed(p);
            if packed.primary() == id {
                let kind = PlanKind::Packed(p, packed.parts.clone().into());
                out.push(Plan::named(packed.name.clone(), catalog, kind));
            }
            continue;
        }
        let mapped = qkv.and_then(|q| gpt_oss::hf_name(&t.name, q));
        let name = match mapped {
            Some(HfName::Absorbed) => continue,
            Some(HfName::Split(parts)) => {
                let Some(&rows) = t.shape.first() else {
                    return Err(ViewError::Tensor {
                        tensor: t.name.clone(),
                        why: "is a scalar, not rows of fused q|k|v".into(),
                    });
                };
                let needed = parts.last().map_or(0, |p| p.1 + p.2);
                if rows != needed {
                    return Err(ViewError::Tensor {
                        tensor: t.name.clone(),
                        why: format!(
                            "{rows} rows, but config.json's heads and head_dim make {needed}"
                        ),
                    });
                }
                let row_elems: u64 = t.shape[1..].iter().product();
                if t.dtype.bytes_for(row_elems).is_none() {
                    return Err(ViewError::Tensor {
                        tensor: t.name.clone(),
                        why: "rows are not whole bytes".into(),
                    });
                }
                for (name, start, len) in parts {
                    out.push(Plan::named(
                        name,
                        catalog,
                        PlanKind::RowSlice { id, start, len },
                    ));
                }
                continue;
            }
            Some(HfName::One(n)) | Some(HfName::Dequant(n)) => n,
            None => t.name.clone(),
        };
        let kind = match &t.quant {
            Some(q) if q.role == QuantRole::Scales => continue,
            Some(q) => match q.scheme {
                QuantScheme::Mxfp4 => {
                    let s = catalog.tensor(q.peer);
                    if s.shape.is_empty() {
                        return Err(ViewError::Tensor {
                            tensor: s.name.clone(),
                            why: "scales have no axes".into(),
                        });
                    }
                    let transposed = gpt_oss && t.shape.len() == 4;
                    if transposed && t.shape[1] > MAX_TRANSPOSED_ROW {
                        // a read of part of an output row computes the row
                        notes.push(format!(
                            "the converted views leave out tensor '{}': its transposed rows \
                             would hold {} values, over gyrofs's limit of {} (it is in raw/)",
                            t.name, t.shape[1], MAX_TRANSPOSED_ROW
                        ));
                        continue;
                    }
                    PlanKind::Mxfp4 {
                        blocks: id,
                        scales: q.peer,
                        transposed,
                    }
                }
                QuantScheme::Fp8Block { rows, cols } => {
                    BlockScaled::new(
                        t.shape[0] as usize,
                        t.shape[1] as usize,
                        (rows as usize, cols as usize),
                    )
                    .map_err(|e| ViewError::Tensor {
                        tensor: t.name.clone(),
                        why: e.to_string(),
                    })?;
                    PlanKind::Fp8Block {
                        weight: id,
                        scales: q.peer,
                        rows,
                        cols,
                    }
                }
            },
            None => match gguf_whole(catalog, id, notes) {
                Some(kind) => kind,
                None => continue,
            },
        };
        let name = match kind {
            PlanKind::Mxfp4 { .. } => name
                .strip_suffix("_blocks")
                .or_else(|| name.strip_suffix(".blocks"))
                .map(str::to_string)
                .unwrap_or(name),
            _ => name,
        };
        out.push(if name == t.name {
            Plan::of(kind)
        } else {
            Plan::named(name, catalog, kind)
        });
    }
    Ok(out)
}

/// Source tensor `id` as it is converted by name (a GGUF block-quantized
/// tensor dequantized, anything else elementwise), or `None` with a note
/// when gyrofs cannot dequantize its ggml type.
fn gguf_whole(catalog: &Catalog, id: TensorId, notes: &mut Vec<String>) -> Option<PlanKind> {
    let t = catalog.tensor(id);
    match &t.ggml {
        Some(g) if g.ty.is_quantized() => {
            if !crate::quant::ggml::can_dequantize(g.ty) {
                notes.push(format!(
                    "the converted views leave out tensor '{}': gyrofs cannot dequantize ggml type {} (it is in raw/)",
                    t.name, t.logical
                ));
                return None;
            }
            Some(PlanKind::Ggml(id))
        }
        _ => Some(PlanKind::Elementwise(id)),
    }
}

/// The views' config.json (before the dtype is set), or `None` when the
/// source has no config.
fn config(catalog: &Catalog) -> Result<Option<Value>, ViewError> {
    let Some(src) = &catalog.config else {
        return Ok(None);
    };
    let c = if catalog.format == SourceFormat::GptOssOriginal {
        gpt_oss::hf_config(src)?
    } else {
        src.clone()
    };
    Ok(Some(c))
}

/// The plans of a nanoGPT checkpoint's GPT-2.
fn nanogpt_plans(catalog: &Catalog, g: &nanogpt::NanoGpt) -> Vec<Plan> {
    g.outputs
        .iter()
        .map(|o| match o {
            Out::Keep { name, id } => {
                Plan::named(name.clone(), catalog, PlanKind::Elementwise(*id))
            }
            Out::Transpose { name, id } => {
                Plan::named(name.clone(), catalog, PlanKind::Transposed(*id))
            }
            Out::Zeros { name, shape } => {
                let len = shape.iter().product();
                Plan::named(name.clone(), catalog, PlanKind::Zeros { len })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gpt-oss original checkpoint in a temp folder: one safetensors file
    /// holding `tensor` (a JSON header entry) over `data`, plus `config`.
    fn original(tensor: &str, data: &[u8], config: &str) -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let header = format!("{{{tensor}}}");
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        std::fs::write(dir.path().join("model.safetensors"), b).unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        std::fs::write(dir.path().join("dtypes.json"), "{}").unwrap();
        let catalog = crate::source::open(dir.path(), &crate::store::Opener::local()).unwrap();
        (dir, catalog)
    }

    /// gpt-oss (Hugging Face layout) experts whose transposed rows would
    /// hold more than MAX_TRANSPOSED_ROW values are left out with a note.
    #[test]
    fn leaves_out_experts_with_overlong_transposed_rows() {
        for (rows, kept) in [(64u64, true), (MAX_TRANSPOSED_ROW + 1, false)] {
            let dir = tempfile::tempdir().unwrap();
            let e = "model.layers.0.mlp.experts.gate_up_proj";
            let (nb, ns) = (rows * 16, rows);
            let header = format!(
                r#"{{"{e}_blocks":{{"dtype":"U8","shape":[1,{rows},1,16],"data_offsets":[0,{nb}]}},"{e}_scales":{{"dtype":"U8","shape":[1,{rows},1],"data_offsets":[{nb},{}]}}}}"#,
                nb + ns
            );
            let mut b = (header.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(header.as_bytes());
            let path = dir.path().join("model.safetensors");
            std::fs::write(&path, &b).unwrap();
            // the data: a hole
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(b.len() as u64 + nb + ns).unwrap();
            let config =
                r#"{"model_type": "gpt_oss", "quantization_config": {"quant_method": "mxfp4"}}"#;
            std::fs::write(dir.path().join("config.json"), config).unwrap();
            let catalog = crate::source::open(dir.path(), &crate::store::Opener::local()).unwrap();
            let mut notes = Vec::new();
            let plans = plans(&catalog, &mut notes).unwrap();
            let names: Vec<&str> = plans.iter().map(|p| p.name(&catalog)).collect();
            assert_eq!(names.contains(&e), kept, "{rows} rows: {names:?} {notes:?}");
            assert_eq!(
                notes.iter().any(|n| n.contains("transposed rows")),
                !kept,
                "{notes:?}"
            );
        }
    }

    #[test]
    fn refuses_a_scalar_fused_qkv() {
        // head_dim 0 makes q|k|v need 0 rows, which a scalar "has".
        let config = r#"{"head_dim": 0, "num_attention_heads": 2, "num_key_value_heads": 1}"#;
        let qkv = r#""block.0.attn.qkv.weight":{"dtype":"U8","shape":[],"data_offsets":[0,1]}"#;
        let (_dir, catalog) = original(qkv, &[64], config);
        let err = plans(&catalog, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("is a scalar"), "{err}");
    }
}
