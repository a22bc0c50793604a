//! The Hugging Face folder views, `bf16/` (and `f16/`, `f32/` with
//! `--dtype`): the model dequantized / converted to one dtype, laid out for
//! the usual loader of its family.
//!
//! Files: `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`,
//! `config.json` (without `quantization_config`, with the view's dtype), the
//! source's other side files (and the tokenizer files a GGUF mapping makes),
//! and `tensors/<name>.safetensors`. GGUF tensors the Hugging Face mapping
//! leaves out are in `tensors/` only, under their GGUF names (docs/GGUF.md).
//! What each tensor is made of is decided
//! in `plan`; the mappings from other layouts are `gguf` (GGUF models),
//! `gpt_oss` (the gpt-oss `original/` layout) and `nanogpt` (nanoGPT
//! training checkpoints). Rules and names are specified in docs/VIEWS.md.

pub mod gguf;
pub mod gpt_oss;
pub mod nanogpt;
pub mod plan;

pub use plan::{Conversion, Made, Plan, is_gpt_oss};

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::catalog::{Catalog, FileId, FileRole, TensorId};
use crate::dtype::Dtype;
use crate::json::to_pretty;
use crate::view::header::{
    Entry, EntryHead, MAX_HEADER_LEN, entry_cost, safetensors_file, source_json,
};
use crate::view::tree::Tree;
use crate::view::{Builder, Context, FileRef, Listing, TensorInfo, Tensors, VFile, View, ViewId};

/// The kinds of files of a converted view (see [`FileRef::Of`]).
mod kind {
    /// `model-0000k-of-0000n.safetensors`, by shard.
    pub const SHARD: u8 = 0;
    /// `model.safetensors.index.json`.
    pub const INDEX: u8 = 1;
    /// `config.json`.
    pub const CONFIG: u8 = 2;
    /// A file the mapping makes (a GGUF model's tokenizer files, ...).
    pub const EXTRA: u8 = 3;
    /// `<dir>/tensors/<name>.safetensors`, by plan.
    pub const TENSOR: u8 = 4;
}

/// Build one converted view per dtype asked for (`bf16/`, `f16/`, `f32/`),
/// or a note saying why there are none.
pub fn build(b: &mut Builder) {
    let conversion = match Conversion::new(b.catalog, &mut b.notes) {
        Ok(c) => c,
        Err(why) => {
            let dirs: Vec<String> = b
                .dtypes
                .iter()
                .filter_map(|&d| dtype_names(d))
                .map(|(dir, _)| format!("{dir}/"))
                .collect();
            b.notes.push(format!(
                "{} is not available for this source: {why}",
                dirs.join(", ")
            ));
            return;
        }
    };
    for &dtype in b.dtypes {
        let view = HfView::new(b.catalog, &conversion, dtype);
        let id = b.next_id();
        view.add(b.tree, b.catalog, id);
        b.add(Box::new(view));
    }
}

/// Largest shard written (the Hugging Face default, "5GB").
pub const MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// What one converted view (`bf16/`, `f16/` or `f32/`) holds for a source.
#[derive(Debug)]
pub struct HfView {
    /// Its directory (`bf16`, `f16`, `f32`).
    pub dir: &'static str,
    /// The dtype floating tensors are converted to.
    pub dtype: Dtype,
    /// Every output tensor: the model's, then those kept beside it.
    pub plans: Arc<[Plan]>,
    /// How many of `plans` are the model (in the shards, the index, the
    /// expert split and `gguf/`); the others are in `tensors/` only.
    pub model: usize,
    /// Each shard's plans, in data order (alignment descending, then source order).
    pub shards: Vec<Vec<u32>>,
    config: Option<Value>,
    /// Files the mapping makes (tokenizer files, ...), by name.
    pub extra: Arc<[(String, Made)]>,
}

/// A file beside the tensors of a Hugging Face folder view.
#[derive(Debug, Clone)]
pub enum SideFile {
    /// A source side file, passed through.
    Source(FileId),
    /// A file the mapping makes (a GGUF model's tokenizer files), by name.
    Made(String, Made),
}

impl SideFile {
    /// Its bytes, if it can be had (a made file is built now).
    pub fn read(&self, catalog: &Catalog) -> Option<Vec<u8>> {
        match self {
            SideFile::Made(name, m) => m.build(name, catalog).ok().map(|b| b.to_vec()),
            SideFile::Source(id) => {
                let e = catalog.files.whole(*id);
                catalog
                    .files
                    .guarded(|| catalog.files.bytes(e).map(<[u8]>::to_vec))
                    .ok()
            }
        }
    }
}

/// The directory and `config.json` dtype name of a converted view's dtype.
pub fn dtype_names(dtype: Dtype) -> Option<(&'static str, &'static str)> {
    match dtype {
        Dtype::BF16 => Some(("bf16", "bfloat16")),
        Dtype::F16 => Some(("f16", "float16")),
        Dtype::F32 => Some(("f32", "float32")),
        _ => None,
    }
}

impl HfView {
    /// The view of `conversion` in `dtype` (BF16, F16 or F32).
    pub fn new(catalog: &Catalog, conversion: &Conversion, dtype: Dtype) -> HfView {
        let (dir, name) = dtype_names(dtype).expect("a converted view's dtype");
        let shards = shard(
            catalog,
            &conversion.plans[..conversion.model],
            MAX_SHARD_BYTES,
            dtype,
        );
        HfView {
            dir,
            dtype,
            plans: Arc::clone(&conversion.plans),
            model: conversion.model,
            shards,
            config: conversion.config.clone().map(|c| with_dtype(c, name)),
            extra: Arc::clone(&conversion.extra),
        }
    }

    /// The model's plans (without the tensors kept beside it).
    pub fn model_plans(&self) -> &[Plan] {
        &self.plans[..self.model]
    }

    /// Its `config.json` (with the view's dtype, without a quantization
    /// config).
    pub fn config(&self) -> Option<&Value> {
        self.config.as_ref()
    }

    /// The files beside the tensors, by name: the source's side files the
    /// folder passes through, and the files the mapping makes.
    pub fn side_files(&self, catalog: &Catalog) -> Vec<(String, SideFile)> {
        let mut out: Vec<(String, SideFile)> = catalog
            .files
            .with_role(FileRole::Side)
            .filter(|(_, f)| self.passes_through(&f.file.name))
            .map(|(id, f)| (f.file.name.clone(), SideFile::Source(id)))
            .collect();
        out.extend(
            self.extra
                .iter()
                .map(|(name, m)| (name.clone(), SideFile::Made(name.clone(), m.clone()))),
        );
        out
    }

    /// Is source side file `name` passed through as it is? Not the config
    /// (made here), gpt-oss `dtypes.json`, a quantization's own side files,
    /// or a file the mapping makes.
    fn passes_through(&self, name: &str) -> bool {
        name != "config.json"
            && name != "dtypes.json"
            && !crate::catalog::packed::SIDE_FILES.contains(&name)
            && !self.extra.iter().any(|e| e.0 == name)
    }

    fn shard_name(&self, k: usize) -> String {
        format!(
            "model-{:05}-of-{:05}.safetensors",
            k + 1,
            self.shards.len().max(1)
        )
    }

    /// Lay out the view's directory (as view `me`).
    pub fn add(&self, tree: &mut Tree, catalog: &Catalog, me: ViewId) {
        let file = |kind, index| FileRef::Of {
            view: me,
            kind,
            index,
        };
        let dir = tree.dir_path(self.dir);
        for k in 0..self.shards.len() {
            tree.add_file(dir, &self.shard_name(k), file(kind::SHARD, k as u32));
        }
        tree.add_file(dir, crate::source::INDEX_JSON, file(kind::INDEX, 0));
        if self.config.is_some() {
            tree.add_file(dir, "config.json", file(kind::CONFIG, 0));
        }
        for (id, f) in catalog.files.with_role(FileRole::Side) {
            if self.passes_through(&f.file.name) {
                tree.add_file(dir, &f.file.name, FileRef::Side(id));
            }
        }
        for (k, (name, _)) in self.extra.iter().enumerate() {
            tree.add_file(dir, name, file(kind::EXTRA, k as u32));
        }
        let n = self.plans.len() as u32;
        let listing = Listing {
            view: me,
            kind: kind::TENSOR,
        };
        tree.add_listing(dir, "tensors", listing, n, |i| {
            self.plans[i as usize].name(catalog)
        });
    }

    fn source_of(&self, catalog: &Catalog, plans: &[u32]) -> String {
        let files = plans
            .iter()
            .flat_map(|&i| self.plans[i as usize].files(catalog));
        source_json(catalog, files)
    }

    /// Shard `k`.
    pub fn shard_file(&self, catalog: &Catalog, k: u32) -> VFile {
        let members = &self.shards[k as usize];
        let entries = members
            .iter()
            .map(|&i| self.plans[i as usize].entry(catalog, self.dtype))
            .collect();
        let source = self.source_of(catalog, members);
        safetensors_file(catalog, self.dir, &source, entries)
    }

    /// `<dir>/tensors/<name>.safetensors` of plan `i`.
    pub fn tensor_file(&self, catalog: &Catalog, i: u32) -> VFile {
        let source = self.source_of(catalog, &[i]);
        let view = format!("{}/tensors", self.dir);
        let entry = self.plans[i as usize].entry(catalog, self.dtype);
        safetensors_file(catalog, &view, &source, vec![entry])
    }

    /// `model.safetensors.index.json`.
    pub fn index_file(&self, catalog: &Catalog) -> VFile {
        let mut weight_map = BTreeMap::new();
        let mut total = 0u64;
        for (k, members) in self.shards.iter().enumerate() {
            let file = self.shard_name(k);
            for &i in members {
                let p = &self.plans[i as usize];
                weight_map.insert(p.name(catalog).to_string(), json!(file));
                total += p.info(catalog, self.dtype).2;
            }
        }
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        VFile::from_bytes(to_pretty(&index).into_bytes())
    }

    /// `config.json`.
    pub fn config_file(&self) -> VFile {
        let text = self.config.as_ref().map(to_pretty).unwrap_or_default();
        VFile::from_bytes(text.into_bytes())
    }
}

impl View for HfView {
    fn file(&self, cx: &Context, kind: u8, index: u32) -> VFile {
        let catalog = cx.catalog;
        match kind {
            kind::SHARD => self.shard_file(catalog, index),
            kind::INDEX => self.index_file(catalog),
            kind::CONFIG => self.config_file(),
            kind::EXTRA => {
                let (name, made) = &self.extra[index as usize];
                match made.build(name, catalog) {
                    Ok(bytes) => VFile::from_bytes(bytes),
                    Err(why) => VFile::failed(why),
                }
            }
            _ => self.tensor_file(catalog, index),
        }
    }

    fn reads(&self, cx: &Context, kind: u8, index: u32, source: FileId) -> bool {
        let of = |t: TensorId| cx.catalog.tensor(t).extent.file == source;
        match kind {
            kind::SHARD => self.shards[index as usize]
                .iter()
                .any(|&i| self.plans[i as usize].sources().any(of)),
            kind::TENSOR => self.plans[index as usize].sources().any(of),
            _ => false,
        }
    }

    fn item_name<'a>(&'a self, catalog: &'a Catalog, _: u8, index: u32) -> &'a str {
        self.plans[index as usize].name(catalog)
    }

    fn data_bytes(&self, catalog: &Catalog) -> u64 {
        // Each model tensor is in a shard and in `tensors/`, a kept one in
        // `tensors/` only.
        let bytes = |p: &[Plan]| p.iter().map(|p| p.info(catalog, self.dtype).2).sum::<u64>();
        2 * bytes(self.model_plans()) + bytes(&self.plans[self.model..])
    }

    fn tensors(&self) -> Option<&dyn Tensors> {
        Some(self)
    }
}

/// The view's tensors, as the expert split sees them.
impl Tensors for HfView {
    fn dir(&self) -> &str {
        self.dir
    }

    fn count(&self) -> u32 {
        self.model as u32
    }

    fn info<'a>(&'a self, catalog: &'a Catalog, i: u32) -> TensorInfo<'a> {
        let p = &self.plans[i as usize];
        let (dtype, shape, len) = p.info(catalog, self.dtype);
        TensorInfo {
            name: p.name(catalog),
            dtype,
            shape,
            len,
        }
    }

    fn entry(&self, catalog: &Catalog, i: u32) -> Entry {
        self.plans[i as usize].entry(catalog, self.dtype)
    }

    fn source_files(&self, catalog: &Catalog, i: u32) -> Vec<FileId> {
        self.plans[i as usize].files(catalog)
    }
}

/// `config` (an object) without `quantization_config` (nor MLX's
/// `quantization` object), with the view's dtype (`bfloat16`, ...).
fn with_dtype(mut config: Value, dtype: &str) -> Value {
    if let Value::Object(o) = &mut config {
        o.remove("quantization_config");
        if o.get("quantization").is_some_and(Value::is_object) {
            o.remove("quantization");
        }
        o.insert("torch_dtype".into(), json!(dtype));
        o.insert("dtype".into(), json!(dtype));
    }
    config
}

/// Split `plans` into shards, in order: a new shard starts when the next
/// tensor would take the current one past `max` bytes of data (a bigger
/// tensor gets a shard of its own), or its header past the safetensors
/// header limit. Within a shard, tensors are ordered by alignment
/// (descending), then source order.
fn shard(catalog: &Catalog, plans: &[Plan], max: u64, to: Dtype) -> Vec<Vec<u32>> {
    // Headers of ordinary models are far below the limit: count them only
    // when the tensor count makes it possible to reach it.
    let count_headers = plans.len() > 50_000;
    // The order inside a shard (by alignment) moves data offsets a little:
    // keep a margin.
    let header_budget = MAX_HEADER_LEN / 100 * 99;
    let mut shards: Vec<Vec<u32>> = Vec::new();
    let (mut size, mut header) = (0u64, 0u64);
    for (i, p) in plans.iter().enumerate() {
        let (dtype, shape, n) = p.info(catalog, to);
        let cost = if count_headers {
            let record = p.record(catalog, to);
            let head = EntryHead {
                name: p.name(catalog),
                dtype,
                shape: &shape,
                record: &record,
                len: n,
            };
            entry_cost(catalog, &head, size)
        } else {
            0
        };
        let full = size > 0 && (size + n > max || header + cost > header_budget);
        if shards.is_empty() || full {
            shards.push(Vec::new());
            size = 0;
            header = 4096;
        }
        shards.last_mut().expect("pushed").push(i as u32);
        size += n;
        header += cost;
    }
    for s in &mut shards {
        s.sort_by_key(|&i| std::cmp::Reverse(plans[i as usize].info(catalog, to).0.alignment()));
    }
    shards
}
