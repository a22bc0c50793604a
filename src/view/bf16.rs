//! The BF16 view, `bf16/`: the model dequantized / converted to BF16, laid
//! out for the usual loader of its family.
//!
//! - MXFP4 pairs (`X_blocks` + `X_scales`, gpt-oss `X.blocks` + `X.scales`)
//!   become one BF16 tensor `X`; gpt-oss experts are transposed the way
//!   transformers' dense `GptOssExperts` holds them (`gate_up_proj`
//!   `[E, H, 2I]`, `down_proj` `[E, I, H]`);
//! - block-scaled FP8 pairs (`weight` F8_E4M3 + `weight_scale_inv` F32)
//!   become the BF16 `weight`;
//! - BF16 tensors pass through zero-copy; F16, F32, F64, F8 are rounded to
//!   BF16; integer, boolean and other tensors are kept as they are;
//! - a gpt-oss `original/` checkpoint is renamed to the Hugging Face layout
//!   (q/k/v split by rows, `gpt_oss` module) with a derived HF config.json.
//!
//! Files: `bf16/model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`,
//! `bf16/config.json` (without `quantization_config`, dtype bfloat16), the
//! source's other side files, and `bf16/tensors/<name>.safetensors`.
//! Rules and names are specified in docs/VIEWS.md.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::catalog::{Catalog, FileId, FileRole, QuantRole, QuantScheme, SourceFormat, TensorId};
use crate::dtype::Dtype;
use crate::error::ViewError;
use crate::json::to_pretty;
use crate::quant::fp8::BlockScaled;
use crate::view::compute::{Cast, Fp8Block, GgmlDequant, Mxfp4, Mxfp4Transposed};
use crate::view::gpt_oss::{self, HfName, QkvRows};
use crate::view::header::{Entry, safetensors_file, source_json};
use crate::view::names::escape;
use crate::view::raw::EXT;
use crate::view::record::{Dequant, Record, Transform};
use crate::view::{Compute, Segment, Tree, VFile};

/// Largest shard written (the Hugging Face default, "5GB").
pub const MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// One tensor of the BF16 view.
#[derive(Debug, Clone)]
pub struct Bf16Tensor {
    pub entry: Entry,
    /// Source tensors it is computed from (primary first).
    pub sources: Vec<TensorId>,
}

impl Bf16Tensor {
    fn new(name: String, dtype: Dtype, shape: Vec<u64>, record: Record, data: Segment) -> Self {
        let sources = vec![record.source];
        Bf16Tensor {
            entry: Entry {
                name,
                dtype,
                shape,
                record,
                data: vec![data],
            },
            sources,
        }
    }

    fn computed(name: String, shape: Vec<u64>, record: Record, c: impl Compute + 'static) -> Self {
        let data = Segment::Computed(Arc::new(c));
        Bf16Tensor::new(name, Dtype::BF16, shape, record, data)
    }

    /// The source files it reads.
    pub fn files(&self, catalog: &Catalog) -> Vec<FileId> {
        self.sources
            .iter()
            .map(|&s| catalog.tensor(s).extent.file)
            .collect()
    }
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

/// Every tensor of the BF16 view, in source order. Tensors that cannot be
/// converted (GGUF types without a dequantizer) are left out, each with a
/// line in `notes`.
pub fn tensors(catalog: &Catalog, notes: &mut Vec<String>) -> Result<Vec<Bf16Tensor>, ViewError> {
    let gpt_oss = is_gpt_oss(catalog);
    let qkv = if catalog.format == SourceFormat::GptOssOriginal {
        let config = catalog.config.as_ref().ok_or(ViewError::MissingConfig)?;
        Some(QkvRows::from_config(config)?)
    } else {
        None
    };
    let mut out = Vec::new();
    for (id, t) in catalog.tensor_ids() {
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
                for (name, start, len) in parts {
                    out.push(row_slice(catalog, id, name, start, len)?);
                }
                continue;
            }
            Some(HfName::One(n)) | Some(HfName::Dequant(n)) => n,
            None => t.name.clone(),
        };
        match &t.quant {
            Some(q) if q.role == QuantRole::Scales => continue,
            Some(q) => match q.scheme {
                QuantScheme::Mxfp4 => {
                    let name = name
                        .strip_suffix("_blocks")
                        .or_else(|| name.strip_suffix(".blocks"))
                        .map(str::to_string)
                        .unwrap_or(name);
                    out.push(mxfp4(catalog, id, q.peer, name, gpt_oss)?);
                }
                QuantScheme::Fp8Block { rows, cols } => {
                    out.push(fp8_block(catalog, id, q.peer, name, (rows, cols))?);
                }
            },
            None if t.ggml.as_ref().is_some_and(|g| g.ty.is_quantized()) => {
                match ggml(catalog, id) {
                    Some(b) => out.push(b),
                    None => notes.push(format!(
                        "bf16/ leaves out tensor '{}': gyrofs cannot dequantize ggml type {} (it is in raw/)",
                        t.name, t.logical
                    )),
                }
            }
            None => out.push(elementwise(catalog, id, name)),
        }
    }
    Ok(out)
}

/// A tensor passed through (BF16, integers, ...) or cast to BF16.
fn elementwise(catalog: &Catalog, id: TensorId, name: String) -> Bf16Tensor {
    let t = catalog.tensor(id);
    match Cast::new(t.extent, t.dtype) {
        Some(cast) => {
            let record = Record::new(id, Transform::Cast { to: Dtype::BF16 });
            Bf16Tensor::computed(name, t.shape.clone(), record, cast)
        }
        None => {
            let record = Record::new(id, Transform::Identity);
            let data = Segment::Source(t.extent);
            Bf16Tensor::new(name, t.dtype, t.shape.clone(), record, data)
        }
    }
}

/// A GGUF block-quantized tensor dequantized to BF16 in its logical shape,
/// or `None` if its type has no dequantizer.
fn ggml(catalog: &Catalog, id: TensorId) -> Option<Bf16Tensor> {
    let t = catalog.tensor(id);
    let g = t.ggml.as_ref()?;
    if !crate::quant::ggml::can_dequantize(g.ty) {
        return None;
    }
    let c = GgmlDequant {
        src: t.extent,
        ty: g.ty,
    };
    let record = Record::new(id, dequant(Dequant::Ggml(g.ty), None));
    Some(Bf16Tensor::computed(
        t.name.clone(),
        g.shape.clone(),
        record,
        c,
    ))
}

fn dequant(scheme: Dequant, transpose: Option<[u32; 2]>) -> Transform {
    Transform::Dequant {
        scheme,
        to: Dtype::BF16,
        transpose,
    }
}

/// Rows `start..start + len` (axis 0) of tensor `id`, as BF16.
fn row_slice(
    catalog: &Catalog,
    id: TensorId,
    name: String,
    start: u64,
    len: u64,
) -> Result<Bf16Tensor, ViewError> {
    let t = catalog.tensor(id);
    let row_elems: u64 = t.shape[1..].iter().product();
    let row_bytes = t
        .dtype
        .bytes_for(row_elems)
        .ok_or_else(|| ViewError::Tensor {
            tensor: t.name.clone(),
            why: "rows are not whole bytes".into(),
        })?;
    let src = t.extent.sub(start * row_bytes, len * row_bytes);
    let mut shape = t.shape.clone();
    shape[0] = len;
    let slice = |to| Transform::Slice {
        axis: 0,
        start,
        stop: start + len,
        to,
    };
    let cast = (t.dtype != Dtype::BF16)
        .then(|| Cast::new(src, t.dtype))
        .flatten();
    Ok(match cast {
        Some(cast) => {
            let record = Record::new(id, slice(Some(Dtype::BF16)));
            Bf16Tensor::computed(name, shape, record, cast)
        }
        None => {
            let record = Record::new(id, slice(None));
            Bf16Tensor::new(name, t.dtype, shape, record, Segment::Source(src))
        }
    })
}

/// An MXFP4 pair as one BF16 tensor.
fn mxfp4(
    catalog: &Catalog,
    blocks: TensorId,
    scales: TensorId,
    name: String,
    gpt_oss: bool,
) -> Result<Bf16Tensor, ViewError> {
    let b = catalog.tensor(blocks);
    let s = catalog.tensor(scales);
    let mut natural = s.shape.clone();
    let last = natural.last_mut().ok_or_else(|| ViewError::Tensor {
        tensor: s.name.clone(),
        why: "scales have no axes".into(),
    })?;
    *last *= 32;
    let mut t = if gpt_oss && b.shape.len() == 4 {
        let (e, r, g) = (b.shape[0], b.shape[1], b.shape[2]);
        let c = Mxfp4Transposed {
            blocks: b.extent,
            scales: s.extent,
            experts: e,
            rows: r,
            groups: g,
        };
        let record = Record::new(blocks, dequant(Dequant::Mxfp4, Some([1, 2])));
        Bf16Tensor::computed(name, vec![e, g * 32, r], record, c)
    } else {
        let c = Mxfp4 {
            blocks: b.extent,
            scales: s.extent,
        };
        let record = Record::new(blocks, dequant(Dequant::Mxfp4, None));
        Bf16Tensor::computed(name, natural, record, c)
    };
    t.sources.push(scales);
    Ok(t)
}

/// A block-scaled FP8 pair as its BF16 weight.
fn fp8_block(
    catalog: &Catalog,
    weight: TensorId,
    scale_inv: TensorId,
    name: String,
    (rows, cols): (u64, u64),
) -> Result<Bf16Tensor, ViewError> {
    let w = catalog.tensor(weight);
    let s = catalog.tensor(scale_inv);
    let geometry = BlockScaled::new(
        w.shape[0] as usize,
        w.shape[1] as usize,
        (rows as usize, cols as usize),
    )
    .map_err(|e| ViewError::Tensor {
        tensor: w.name.clone(),
        why: e.to_string(),
    })?;
    let c = Fp8Block {
        weight: w.extent,
        scale_inv: s.extent,
        geometry,
    };
    let record = Record::new(weight, dequant(Dequant::Fp8Block { rows, cols }, None));
    let mut t = Bf16Tensor::computed(name, w.shape.clone(), record, c);
    t.sources.push(scale_inv);
    Ok(t)
}

/// The BF16 view's config.json, or `None` when the source has no config.
pub fn config(catalog: &Catalog) -> Result<Option<Value>, ViewError> {
    let Some(src) = &catalog.config else {
        return Ok(None);
    };
    let mut c = if catalog.format == SourceFormat::GptOssOriginal {
        gpt_oss::hf_config(src)?
    } else {
        src.clone()
    };
    let Value::Object(o) = &mut c else {
        return Err(ViewError::Config("is not a JSON object".into()));
    };
    o.remove("quantization_config");
    o.insert("torch_dtype".into(), json!("bfloat16"));
    o.insert("dtype".into(), json!("bfloat16"));
    Ok(Some(c))
}

/// Source files a set of BF16 tensors draws on.
fn files_of(catalog: &Catalog, ts: &[&Bf16Tensor]) -> Vec<FileId> {
    ts.iter().flat_map(|t| t.files(catalog)).collect()
}

/// Split `tensors` into shards of at most `max` bytes (a bigger tensor gets
/// a shard of its own), in order.
pub fn shard(tensors: &[Bf16Tensor], max: u64) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = Vec::new();
    let mut size = 0;
    for (i, t) in tensors.iter().enumerate() {
        let n = t.entry.len();
        if shards.is_empty() || (size + n > max && size > 0) {
            shards.push(Vec::new());
            size = 0;
        }
        shards.last_mut().expect("pushed").push(i);
        size += n;
    }
    shards
}

/// Add `bf16/` (made of `tensors`) to the tree. On a source the view cannot
/// be built for, the reason is returned and nothing is added.
pub fn add(tree: &mut Tree, catalog: &Catalog, tensors: &[Bf16Tensor]) -> Result<(), ViewError> {
    let config = config(catalog)?;
    let dir = tree.dir_path("bf16");

    let shards = shard(tensors, MAX_SHARD_BYTES);
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    let mut total = 0u64;
    for (k, members) in shards.iter().enumerate() {
        let file_name = format!("model-{:05}-of-{:05}.safetensors", k + 1, n.max(1));
        let mut ts: Vec<&Bf16Tensor> = members.iter().map(|&i| &tensors[i]).collect();
        ts.sort_by_key(|t| std::cmp::Reverse(t.entry.dtype.alignment()));
        for t in &ts {
            weight_map.insert(t.entry.name.clone(), json!(file_name));
            total += t.entry.len();
        }
        let source = source_json(catalog, files_of(catalog, &ts));
        let entries = ts.iter().map(|t| t.entry.clone()).collect();
        tree.add_file(
            dir,
            &file_name,
            "",
            safetensors_file(catalog, "bf16", &source, entries),
        );
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    tree.add_file(
        dir,
        crate::source::INDEX_JSON,
        "",
        VFile::from_bytes(to_pretty(&index).into_bytes()),
    );
    if let Some(c) = config {
        tree.add_file(
            dir,
            "config.json",
            "",
            VFile::from_bytes(to_pretty(&c).into_bytes()),
        );
    }
    for (id, f) in catalog.files.with_role(FileRole::Side) {
        let name = &f.file.name;
        if name == "config.json" || name == "dtypes.json" {
            continue;
        }
        let whole = VFile::new([Segment::Source(catalog.files.whole(id))]);
        tree.add_file(dir, name, "", whole);
    }

    let tdir = tree.dir(dir, "tensors");
    for t in tensors {
        let source = source_json(catalog, t.files(catalog));
        let file = safetensors_file(catalog, "bf16/tensors", &source, vec![t.entry.clone()]);
        tree.add_file(tdir, &escape(&t.entry.name, EXT), EXT, file);
    }
    Ok(())
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
        let catalog = crate::source::open(dir.path()).unwrap();
        (dir, catalog)
    }

    #[test]
    fn refuses_a_scalar_fused_qkv() {
        // head_dim 0 makes q|k|v need 0 rows, which a scalar "has".
        let config = r#"{"head_dim": 0, "num_attention_heads": 2, "num_key_value_heads": 1}"#;
        let qkv = r#""block.0.attn.qkv.weight":{"dtype":"U8","shape":[],"data_offsets":[0,1]}"#;
        let (_dir, catalog) = original(qkv, &[64], config);
        let err = tensors(&catalog, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("is a scalar"), "{err}");
    }
}
