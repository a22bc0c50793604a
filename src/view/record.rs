//! Tensor records: where a tensor of a virtual file comes from and how it is
//! made, as typed values.
//!
//! A [`Record`] names its source tensor by id and says what was done to it
//! ([`Transform`]); everything else in the record (stored dtype, shape, file
//! and byte range, strides of a strided PyTorch view, logical dtype,
//! quantization pairing, ggml type) is read from the catalog when it is
//! written. A synthesized tensor (no source) records only its transform. [`Record::write`] is the only writer
//! of the `gyro.tensors` record JSON (docs/FORMAT.md, "The Gyro header"),
//! compact and canonical, keys in byte order:
//!
//! ```text
//! {["ggml":{...},]"logical_dtype":L,["quant":{...},]"source":{...},"transform":T}
//! ```

use crate::catalog::{Catalog, Quant, TensorId};
use crate::dtype::Dtype;
use crate::json::{ObjectWriter, Sink};
use crate::quant::ggml::GgmlType;

/// One tensor's provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The source tensor (for pairs, the quantized data; its peer is named
    /// in the record's `quant`); `None` for a synthesized tensor.
    pub source: Option<TensorId>,
    pub transform: Transform,
}

/// How a tensor is made from its source tensor(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    /// The source bytes, unchanged.
    Identity,
    /// The elements of a strided or big-endian source view in row-major
    /// order, little-endian (what `t.contiguous()` holds).
    Contiguous,
    /// Axes permuted (`dims`, as `Tensor.permute`) of the tensor made by `of`.
    Transpose { dims: Vec<u32>, of: Box<Transform> },
    /// llama.cpp's Q/K row permutation undone (`n_head` heads) on the tensor
    /// made by `of` (GGUF -> Hugging Face, docs/GGUF.md).
    UnpermuteRows { n_head: u64, of: Box<Transform> },
    /// `value` (a decimal float32, as text) added to every element of the
    /// tensor made by `of`, in float32, before the one rounding.
    AddScalar { value: String, of: Box<Transform> },
    /// The tensors `sources` (this record's source first), each made by
    /// `of`, concatenated along `axis`.
    Concat {
        axis: u32,
        sources: Vec<String>,
        of: Box<Transform>,
    },
    /// The tensors `sources` (this record's source first), each made by
    /// `of`, interleaved element by element along `axis` (the last):
    /// `out[..., k * n + j]` is element `k` of source `j`.
    Interleave {
        axis: u32,
        sources: Vec<String>,
        of: Box<Transform>,
    },
    /// Made, not read: every element `fill` (zero), of dtype `dtype`.
    Synthesized { dtype: Dtype },
    /// Each element converted to `to` (NUMERICS.md).
    Cast { to: Dtype },
    /// Rows `start..stop` of axis `axis`, converted to `to` when given.
    Slice {
        axis: u32,
        start: u64,
        stop: u64,
        to: Option<Dtype>,
    },
    /// A quantized tensor (and its scales) decoded to `to`; `transpose`
    /// swaps two axes of the decoded tensor.
    Dequant {
        scheme: Dequant,
        to: Dtype,
        transpose: Option<[u32; 2]>,
    },
    /// Slice `index` of axis 0 (the axis removed) of the tensor made by `of`.
    ExpertSlice { index: u64, of: Box<Transform> },
    /// A weight a quantization library stored as several tensors, decoded
    /// to `to`: `scheme` (`"gptq"`, ...), its `params` (canonical JSON
    /// object) and its parts (role, stored name; this record's source first).
    Unpack {
        scheme: &'static str,
        params: String,
        parts: Vec<(&'static str, String)>,
        to: Dtype,
    },
}

/// A dequantization scheme, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dequant {
    Mxfp4,
    Fp8Block { rows: u64, cols: u64 },
    Ggml(GgmlType),
}

impl Record {
    pub fn new(source: TensorId, transform: Transform) -> Record {
        Record {
            source: Some(source),
            transform,
        }
    }

    /// Expert `index`'s slice of this record's tensor.
    pub fn expert_slice(&self, index: u64) -> Record {
        Record {
            source: self.source,
            transform: Transform::ExpertSlice {
                index,
                of: Box::new(self.transform.clone()),
            },
        }
    }

    /// Append the record's canonical JSON.
    pub fn write<S: Sink + ?Sized>(&self, catalog: &Catalog, out: &mut S) {
        let Some(source) = self.source else {
            let mut o = ObjectWriter::new(out);
            if let Transform::Synthesized { dtype } = &self.transform {
                o.str("logical_dtype", dtype.name());
            }
            self.transform.write(o.key("transform"));
            o.finish();
            return;
        };
        let t = catalog.tensor(source);
        let mut o = ObjectWriter::new(out);
        if let Some(g) = &t.ggml {
            let mut w = ObjectWriter::new(o.key("ggml"));
            w.u64("block_size", g.ty.block_size())
                .u64s("shape", &g.shape)
                .str("type", g.ty.name())
                .u64("type_id", g.ty.id().into())
                .u64("type_size", g.ty.type_size());
            w.finish();
        }
        o.str("logical_dtype", &t.logical);
        if let Some(q) = &t.quant {
            let fields = QuantFields::of(catalog, q);
            let mut w = ObjectWriter::new(o.key("quant"));
            w.str("peer", fields.peer)
                .str("role", fields.role)
                .str("scheme", fields.scheme)
                .u64("values_per_block", fields.values_per_block);
            w.finish();
        }
        {
            let mut w = ObjectWriter::new(o.key("source"));
            if t.layout.as_ref().is_some_and(|l| l.big_endian) {
                w.str("byteorder", "big");
            }
            w.str("dtype", t.dtype.name())
                .str("file", catalog.file_name(t))
                .str("name", &t.name)
                .u64s("offsets", &[t.extent.offset, t.extent.end()])
                .u64s("shape", &t.shape);
            if let Some(l) = &t.layout {
                w.u64("storage_offset", l.offset)
                    .u64s("strides", &l.strides);
            }
            w.finish();
        }
        self.transform.write(o.key("transform"));
        o.finish();
    }

    /// The record's canonical JSON on its own.
    pub fn to_json(&self, catalog: &Catalog) -> String {
        let mut s = String::with_capacity(256);
        self.write(catalog, &mut s);
        s
    }
}

impl Transform {
    /// Append the transform's canonical JSON.
    pub fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        let mut o = ObjectWriter::new(out);
        match self {
            Transform::Identity => {
                o.str("kind", "identity");
            }
            Transform::Contiguous => {
                o.str("kind", "contiguous");
            }
            Transform::Transpose { dims, of } => {
                let dims: Vec<u64> = dims.iter().map(|&d| d.into()).collect();
                o.u64s("dims", &dims).str("kind", "transpose");
                of.write(o.key("of"));
            }
            Transform::UnpermuteRows { n_head, of } => {
                o.str("kind", "unpermute_rows").u64("n_head", *n_head);
                of.write(o.key("of"));
            }
            Transform::AddScalar { value, of } => {
                o.str("kind", "add_scalar");
                of.write(o.key("of"));
                o.str("value", value);
            }
            Transform::Concat { axis, sources, of }
            | Transform::Interleave { axis, sources, of } => {
                let kind = match self {
                    Transform::Concat { .. } => "concat",
                    _ => "interleave",
                };
                o.u64("axis", (*axis).into()).str("kind", kind);
                of.write(o.key("of"));
                let list = o.key("sources");
                list.push('[');
                for (i, s) in sources.iter().enumerate() {
                    if i > 0 {
                        list.push(',');
                    }
                    crate::json::write_str(list, s);
                }
                list.push(']');
            }
            Transform::Synthesized { .. } => {
                o.str("fill", "zeros").str("kind", "synthesized");
            }
            Transform::Cast { to } => {
                o.str("kind", "cast").str("to", to.name());
            }
            Transform::Slice {
                axis,
                start,
                stop,
                to,
            } => {
                o.u64("axis", (*axis).into())
                    .str("kind", "slice")
                    .u64("start", *start)
                    .u64("stop", *stop);
                if let Some(to) = to {
                    o.str("to", to.name());
                }
            }
            Transform::Dequant {
                scheme,
                to,
                transpose,
            } => {
                if let Dequant::Fp8Block { rows, cols } = scheme {
                    o.u64s("block", &[*rows, *cols]);
                }
                o.str("kind", "dequant");
                let name = match scheme {
                    Dequant::Mxfp4 => "mxfp4",
                    Dequant::Fp8Block { .. } => "fp8_block",
                    Dequant::Ggml(_) => "ggml",
                };
                o.str("scheme", name).str("to", to.name());
                if let Some([a, b]) = transpose {
                    o.u64s("transpose", &[(*a).into(), (*b).into()]);
                }
                if let Dequant::Ggml(ty) = scheme {
                    o.str("type", ty.name());
                }
            }
            Transform::Unpack {
                scheme,
                params,
                parts,
                to,
            } => {
                o.str("kind", "dequant");
                o.key("params").push_str(params);
                {
                    let mut w = ObjectWriter::new(o.key("parts"));
                    let mut sorted: Vec<&(&'static str, String)> = parts.iter().collect();
                    sorted.sort();
                    for (role, name) in sorted {
                        w.str(role, name);
                    }
                    w.finish();
                }
                o.str("scheme", scheme).str("to", to.name());
            }
            Transform::ExpertSlice { index, of } => {
                o.u64("axis", 0)
                    .u64("index", *index)
                    .str("kind", "expert_slice");
                of.write(o.key("of"));
            }
        }
        o.finish();
    }
}

/// A quantization pairing as headers and the manifest record it (written
/// in one place for both).
pub struct QuantFields<'a> {
    pub peer: &'a str,
    pub role: &'static str,
    pub scheme: &'static str,
    pub values_per_block: u64,
}

impl<'a> QuantFields<'a> {
    pub fn of(catalog: &'a Catalog, q: &Quant) -> QuantFields<'a> {
        QuantFields {
            peer: &catalog.tensor(q.peer).name,
            role: q.scheme.role_name(q.role),
            scheme: q.scheme.name(),
            values_per_block: q.scheme.values_per_block(),
        }
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::json!({
            "peer": self.peer,
            "role": self.role,
            "scheme": self.scheme,
            "values_per_block": self.values_per_block,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(t: &Transform) -> String {
        let mut s = String::new();
        t.write(&mut s);
        s
    }

    #[test]
    fn transforms_as_specified() {
        let bf16 = Dtype::BF16;
        let cases = [
            (Transform::Identity, r#"{"kind":"identity"}"#),
            (
                Transform::Cast { to: bf16 },
                r#"{"kind":"cast","to":"BF16"}"#,
            ),
            (
                Transform::Slice {
                    axis: 0,
                    start: 4,
                    stop: 8,
                    to: Some(bf16),
                },
                r#"{"axis":0,"kind":"slice","start":4,"stop":8,"to":"BF16"}"#,
            ),
            (
                Transform::Dequant {
                    scheme: Dequant::Mxfp4,
                    to: bf16,
                    transpose: Some([1, 2]),
                },
                r#"{"kind":"dequant","scheme":"mxfp4","to":"BF16","transpose":[1,2]}"#,
            ),
            (
                Transform::Dequant {
                    scheme: Dequant::Fp8Block {
                        rows: 128,
                        cols: 64,
                    },
                    to: bf16,
                    transpose: None,
                },
                r#"{"block":[128,64],"kind":"dequant","scheme":"fp8_block","to":"BF16"}"#,
            ),
            (
                Transform::Dequant {
                    scheme: Dequant::Ggml(GgmlType::Q4_K),
                    to: bf16,
                    transpose: None,
                },
                r#"{"kind":"dequant","scheme":"ggml","to":"BF16","type":"Q4_K"}"#,
            ),
            (
                Transform::ExpertSlice {
                    index: 3,
                    of: Box::new(Transform::Identity),
                },
                r#"{"axis":0,"index":3,"kind":"expert_slice","of":{"kind":"identity"}}"#,
            ),
            (Transform::Contiguous, r#"{"kind":"contiguous"}"#),
            (
                Transform::Transpose {
                    dims: vec![1, 0],
                    of: Box::new(Transform::Cast { to: bf16 }),
                },
                r#"{"dims":[1,0],"kind":"transpose","of":{"kind":"cast","to":"BF16"}}"#,
            ),
            (
                Transform::UnpermuteRows {
                    n_head: 32,
                    of: Box::new(Transform::Identity),
                },
                r#"{"kind":"unpermute_rows","n_head":32,"of":{"kind":"identity"}}"#,
            ),
            (
                Transform::AddScalar {
                    value: "-1".into(),
                    of: Box::new(Transform::Identity),
                },
                r#"{"kind":"add_scalar","of":{"kind":"identity"},"value":"-1"}"#,
            ),
            (
                Transform::Concat {
                    axis: 1,
                    sources: vec!["a".into(), "b".into()],
                    of: Box::new(Transform::Identity),
                },
                r#"{"axis":1,"kind":"concat","of":{"kind":"identity"},"sources":["a","b"]}"#,
            ),
            (
                Transform::Interleave {
                    axis: 2,
                    sources: vec!["g".into(), "u".into()],
                    of: Box::new(Transform::Identity),
                },
                r#"{"axis":2,"kind":"interleave","of":{"kind":"identity"},"sources":["g","u"]}"#,
            ),
            (
                Transform::Synthesized { dtype: bf16 },
                r#"{"fill":"zeros","kind":"synthesized"}"#,
            ),
        ];
        for (t, want) in cases {
            assert_eq!(json(&t), want);
            let v: serde_json::Value = serde_json::from_str(want).unwrap();
            assert_eq!(crate::json::to_canonical(&v), want, "canonical");
        }
    }
}
