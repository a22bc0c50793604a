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

use crate::catalog::{Catalog, QuantRole, QuantScheme, SourceFormat};
use crate::dtype::Dtype;
use crate::json::{to_canonical, to_pretty};
use crate::quant::fp8::BlockScaled;
use crate::view::compute::{Cast, Extent, Fp8Block, GgmlDequant, Mxfp4, Mxfp4Transposed};
use crate::view::gpt_oss::{self, HfName, QkvRows};
use crate::view::header::{Entry, IDENTITY, safetensors_file, source_json, tensor_record};
use crate::view::names::escape;
use crate::view::raw::EXT;
use crate::view::{Segment, Tree, VFile};

/// Largest shard written (the Hugging Face default, "5GB").
pub const MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// One tensor of the BF16 view.
#[derive(Debug, Clone)]
pub struct Bf16Tensor {
    pub entry: Entry,
    /// Source tensor indices it is computed from (primary first).
    pub sources: Vec<usize>,
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
pub fn tensors(catalog: &Catalog, notes: &mut Vec<String>) -> Result<Vec<Bf16Tensor>, String> {
    let gpt_oss = is_gpt_oss(catalog);
    let original = catalog.format == SourceFormat::GptOssOriginal;
    let qkv = if original {
        let config = catalog
            .config
            .as_ref()
            .ok_or("a gpt-oss original checkpoint needs its config.json")?;
        Some(QkvRows::from_config(config)?)
    } else {
        None
    };
    let mut out = Vec::new();
    for (i, t) in catalog.tensors.iter().enumerate() {
        let mapped = qkv.and_then(|q| gpt_oss::hf_name(&t.name, q));
        if matches!(mapped, Some(HfName::Absorbed)) {
            continue;
        }
        if let Some(HfName::Split(parts)) = &mapped {
            let rows = t.shape.first().copied().unwrap_or(0);
            let needed = parts.last().map_or(0, |p| p.1 + p.2);
            if rows != needed {
                return Err(format!(
                    "{}: {rows} rows, but config.json's heads and head_dim make {needed}",
                    t.name
                ));
            }
            for (name, start, len) in parts {
                out.push(row_slice(catalog, i, name, *start, *len)?);
            }
            continue;
        }
        let name = match mapped {
            Some(HfName::One(n)) | Some(HfName::Dequant(n)) => n,
            _ => t.name.clone(),
        };
        match &t.quant {
            Some(q) if q.role == QuantRole::Scales => continue,
            Some(q) if q.scheme == QuantScheme::Mxfp4 => {
                let name = name
                    .strip_suffix("_blocks")
                    .or_else(|| name.strip_suffix(".blocks"))
                    .map(str::to_string)
                    .unwrap_or(name);
                out.push(mxfp4(catalog, i, q.peer, name, gpt_oss)?);
            }
            Some(q) => {
                let QuantScheme::Fp8Block { rows, cols } = q.scheme else {
                    unreachable!("only two schemes")
                };
                out.push(fp8_block(catalog, i, q.peer, name, (rows, cols))?);
            }
            None if t.ggml.as_ref().is_some_and(|g| g.ty.is_quantized()) => {
                match ggml(catalog, i) {
                    Some(b) => out.push(b),
                    None => notes.push(format!(
                        "bf16/ leaves out tensor '{}': gyrofs cannot dequantize ggml type {} (it is in raw/)",
                        t.name,
                        t.logical
                    )),
                }
            }
            None => out.push(elementwise(catalog, i, name)),
        }
    }
    Ok(out)
}

fn record(catalog: &Catalog, idx: usize, transform: serde_json::Value) -> String {
    tensor_record(catalog, idx, &to_canonical(&transform))
}

/// A tensor passed through (BF16, integers, ...) or cast to BF16.
fn elementwise(catalog: &Catalog, idx: usize, name: String) -> Bf16Tensor {
    let t = &catalog.tensors[idx];
    let (dtype, transform, data) = if Cast::supports(t.dtype) {
        let cast = Cast {
            src: Extent::of(t),
            from: t.dtype,
        };
        (
            Dtype::BF16,
            json!({"kind": "cast", "to": "BF16"}),
            Segment::Computed(Arc::new(cast)),
        )
    } else {
        let seg = Segment::Source {
            file: t.file,
            offset: t.start,
            len: t.len(),
        };
        (t.dtype, serde_json::from_str(IDENTITY).expect("valid"), seg)
    };
    Bf16Tensor {
        entry: Entry {
            name,
            dtype,
            shape: t.shape.clone(),
            record: record(catalog, idx, transform),
            data: vec![data],
        },
        sources: vec![idx],
    }
}

/// A GGUF block-quantized tensor dequantized to BF16 in its logical shape,
/// or `None` if its type has no dequantizer.
fn ggml(catalog: &Catalog, idx: usize) -> Option<Bf16Tensor> {
    let t = &catalog.tensors[idx];
    let g = t.ggml.as_ref()?;
    if !crate::quant::ggml::can_dequantize(g.ty) {
        return None;
    }
    let c = GgmlDequant {
        src: Extent::of(t),
        ty: g.ty,
    };
    let transform = json!({"kind": "dequant", "scheme": "ggml", "type": g.ty.name(), "to": "BF16"});
    Some(Bf16Tensor {
        entry: Entry {
            name: t.name.clone(),
            dtype: Dtype::BF16,
            shape: g.shape.clone(),
            record: record(catalog, idx, transform),
            data: vec![Segment::Computed(Arc::new(c))],
        },
        sources: vec![idx],
    })
}

/// Rows `start..start + len` (axis 0) of tensor `idx`, as BF16.
fn row_slice(
    catalog: &Catalog,
    idx: usize,
    name: &str,
    start: u64,
    len: u64,
) -> Result<Bf16Tensor, String> {
    let t = &catalog.tensors[idx];
    let row_elems: u64 = t.shape[1..].iter().product();
    let row_bytes = t
        .dtype
        .bytes_for(row_elems)
        .ok_or_else(|| format!("{}: rows are not whole bytes", t.name))?;
    let src = Extent::of(t).sub(start * row_bytes, len * row_bytes);
    let mut shape = t.shape.clone();
    shape[0] = len;
    let mut transform = json!({"kind": "slice", "axis": 0, "start": start, "stop": start + len});
    let (dtype, data) = if t.dtype == Dtype::BF16 || !Cast::supports(t.dtype) {
        (
            t.dtype,
            Segment::Source {
                file: src.file,
                offset: src.offset,
                len: src.len,
            },
        )
    } else {
        transform["to"] = json!("BF16");
        let cast = Cast { src, from: t.dtype };
        (Dtype::BF16, Segment::Computed(Arc::new(cast)))
    };
    Ok(Bf16Tensor {
        entry: Entry {
            name: name.to_string(),
            dtype,
            shape,
            record: record(catalog, idx, transform),
            data: vec![data],
        },
        sources: vec![idx],
    })
}

/// An MXFP4 pair as one BF16 tensor.
fn mxfp4(
    catalog: &Catalog,
    blocks: usize,
    scales: usize,
    name: String,
    gpt_oss: bool,
) -> Result<Bf16Tensor, String> {
    let b = &catalog.tensors[blocks];
    let s = &catalog.tensors[scales];
    let mut natural = s.shape.clone();
    let last = natural
        .last_mut()
        .ok_or_else(|| format!("{}: scales have no axes", s.name))?;
    *last *= 32;
    let (shape, data, transform): (Vec<u64>, Arc<dyn crate::view::Compute>, Value) = if gpt_oss
        && b.shape.len() == 4
    {
        let (e, r, g) = (b.shape[0], b.shape[1], b.shape[2]);
        let c = Mxfp4Transposed {
            blocks: Extent::of(b),
            scales: Extent::of(s),
            experts: e,
            rows: r,
            groups: g,
        };
        let t = json!({"kind": "dequant", "scheme": "mxfp4", "to": "BF16", "transpose": [1, 2]});
        (vec![e, g * 32, r], Arc::new(c), t)
    } else {
        let c = Mxfp4 {
            blocks: Extent::of(b),
            scales: Extent::of(s),
        };
        let t = json!({"kind": "dequant", "scheme": "mxfp4", "to": "BF16"});
        (natural, Arc::new(c), t)
    };
    Ok(Bf16Tensor {
        entry: Entry {
            name,
            dtype: Dtype::BF16,
            shape,
            record: record(catalog, blocks, transform),
            data: vec![Segment::Computed(data)],
        },
        sources: vec![blocks, scales],
    })
}

/// A block-scaled FP8 pair as its BF16 weight.
fn fp8_block(
    catalog: &Catalog,
    weight: usize,
    scale_inv: usize,
    name: String,
    block: (u64, u64),
) -> Result<Bf16Tensor, String> {
    let w = &catalog.tensors[weight];
    let s = &catalog.tensors[scale_inv];
    let geometry = BlockScaled::new(
        w.shape[0] as usize,
        w.shape[1] as usize,
        (block.0 as usize, block.1 as usize),
    )
    .map_err(|e| format!("{}: {e}", w.name))?;
    let c = Fp8Block {
        weight: Extent::of(w),
        scale_inv: Extent::of(s),
        geometry,
    };
    let t = json!({"kind": "dequant", "scheme": "fp8_block", "to": "BF16", "block": [block.0, block.1]});
    Ok(Bf16Tensor {
        entry: Entry {
            name,
            dtype: Dtype::BF16,
            shape: w.shape.clone(),
            record: record(catalog, weight, t),
            data: vec![Segment::Computed(Arc::new(c))],
        },
        sources: vec![weight, scale_inv],
    })
}

/// The BF16 view's config.json, or `None` when the source has no config.
pub fn config(catalog: &Catalog) -> Result<Option<Value>, String> {
    let Some(src) = &catalog.config else {
        return Ok(None);
    };
    let mut c = if catalog.format == SourceFormat::GptOssOriginal {
        gpt_oss::hf_config(src)?
    } else {
        src.clone()
    };
    let Value::Object(o) = &mut c else {
        return Err("config.json is not a JSON object".into());
    };
    o.remove("quantization_config");
    o.insert("torch_dtype".into(), json!("bfloat16"));
    o.insert("dtype".into(), json!("bfloat16"));
    Ok(Some(c))
}

/// Source files a set of BF16 tensors draws on.
fn files_of(catalog: &Catalog, ts: &[&Bf16Tensor]) -> Vec<usize> {
    ts.iter()
        .flat_map(|t| t.sources.iter().map(|&s| catalog.tensors[s].file))
        .collect()
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
pub fn add(tree: &mut Tree, catalog: &Catalog, tensors: &[Bf16Tensor]) -> Result<(), String> {
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
            safetensors_file("bf16", &source, entries),
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
    for &f in &catalog.side_files {
        let name = &catalog.files[f].name;
        if name == "config.json" || name == "dtypes.json" {
            continue;
        }
        tree.add_file(
            dir,
            name,
            "",
            VFile::new([Segment::whole(&catalog.files, f)]),
        );
    }

    let tdir = tree.dir(dir, "tensors");
    for t in tensors {
        let source = source_json(catalog, files_of(catalog, &[t]));
        let file = safetensors_file("bf16/tensors", &source, vec![t.entry.clone()]);
        tree.add_file(tdir, &escape(&t.entry.name, EXT), EXT, file);
    }
    Ok(())
}
