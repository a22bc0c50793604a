//! `manifest.json`: the whole catalog, for people and scripts (and, for a
//! GGUF source, `gguf_metadata.json`: its key/value metadata in full).
//!
//! Pretty, canonical JSON (sorted keys, two-space indent) with the source's
//! format and files, its parsed `config.json`, and every tensor: name, stored
//! and logical dtype, shape, bytes, source file and byte offset, quantization
//! pairing, and the file that holds it in `raw/tensors/`. Specified in
//! docs/FORMAT.md; the same source always gives the same bytes.
//!
//! A model with a million tensors has a manifest of hundreds of megabytes,
//! so it is never held: its text is a head (everything but the tensors), one
//! item per tensor and a tail, and a read generates only the items it covers
//! ([`Stream`], starting from the nearest of a checkpoint every
//! [`CHECKPOINT`] items). `gyrofs ls --json` writes the same text ([`write`]).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::catalog::gguf::{GgufMetadata, GgufValue};
use crate::catalog::{Catalog, Extent, FileId, Files, TensorId};
use crate::error::ReadError;
use crate::json::{Count, Sink, to_pretty, write_value};
use crate::view::header::GYRO_VERSION;
use crate::view::names::escape;
use crate::view::record::QuantFields;
use crate::view::tree::{EXT, ROOT};
use crate::view::{Builder, Compute, Context, FileRef, Segment, VFile, View};

pub const NAME: &str = "manifest.json";

/// Name of the file holding a GGUF source's whole key/value metadata.
pub const GGUF_METADATA: &str = "gguf_metadata.json";

/// Items between two checkpoints of a [`Stream`].
pub const CHECKPOINT: usize = 256;

/// The kinds of files of the root's JSON (see [`FileRef::Of`]).
mod kind {
    /// `manifest.json`.
    pub const MANIFEST: u8 = 0;
    /// `gguf_metadata.json`.
    pub const GGUF_METADATA: u8 = 1;
}

/// The root's JSON files: `manifest.json` (and `gguf_metadata.json`).
#[derive(Debug)]
pub struct ManifestView;

/// Add the root's JSON files to the tree (built last: the manifest holds
/// every view's notes).
pub fn build(b: &mut Builder) {
    let me = b.next_id();
    let file = |kind| FileRef::Of {
        view: me,
        kind,
        index: 0,
    };
    b.tree.add_file(ROOT, NAME, file(kind::MANIFEST));
    if b.catalog.gguf_metadata.is_some() {
        b.tree
            .add_file(ROOT, GGUF_METADATA, file(kind::GGUF_METADATA));
    }
    b.add(Box::new(ManifestView));
}

impl View for ManifestView {
    fn file(&self, cx: &Context, kind: u8, _: u32) -> VFile {
        match kind {
            kind::MANIFEST => {
                let renamed = cx
                    .views
                    .raw_tensors()
                    .map(|l| cx.tree.renamed(l))
                    .unwrap_or_default();
                file(cx.catalog, &cx.views.notes, renamed)
            }
            _ => gguf_metadata(cx.catalog),
        }
    }

    fn reads(&self, _: &Context, _: u8, _: u32, _: FileId) -> bool {
        false
    }
}

/// `gguf_metadata.json`.
pub fn gguf_metadata(catalog: &Catalog) -> VFile {
    let text = catalog
        .gguf_metadata
        .as_ref()
        .map(GgufMetadata::to_pretty_json)
        .unwrap_or_default();
    VFile::from_bytes(text.into_bytes())
}

/// The manifest's text parts (see the module comment).
#[derive(Debug)]
struct Parts {
    catalog: Arc<Catalog>,
    /// Everything before the first item (`..."tensors": [`).
    head: String,
    /// Raw tensor files whose names are not `escape(name) + EXT`.
    renamed: HashMap<u32, String>,
}

impl Parts {
    fn new(catalog: &Arc<Catalog>, notes: &[String], renamed: HashMap<u32, String>) -> Parts {
        let mut head = to_pretty(&head_value(catalog, notes));
        // `{ ... "tensor_count": N\n}\n` -> `{ ... "tensor_count": N,\n  "tensors": [`
        // ("tensors" is the last key in byte order).
        head.truncate(head.len() - "\n}\n".len());
        head.push_str(",\n  \"tensors\": [");
        Parts {
            catalog: Arc::clone(catalog),
            head,
            renamed,
        }
    }

    fn count(&self) -> usize {
        self.catalog.tensors.len()
    }

    /// The text after the last item.
    fn tail(&self) -> &'static str {
        if self.count() == 0 {
            "]\n}\n"
        } else {
            "\n  ]\n}\n"
        }
    }

    /// Item `i` with its leading separator.
    fn item<S: Sink + ?Sized>(&self, out: &mut S, i: usize) {
        if i > 0 {
            out.push(',');
        }
        out.push_str("\n    ");
        let v = tensor_value(&self.catalog, TensorId(i as u32), &self.renamed);
        write_value(out, &v, Some(2), 2);
    }
}

/// `manifest.json` as a file.
pub fn file(catalog: &Arc<Catalog>, notes: &[String], renamed: HashMap<u32, String>) -> VFile {
    VFile::new([Segment::Computed(Arc::new(Stream::new(Parts::new(
        catalog, notes, renamed,
    ))))])
}

/// Write the manifest to `out` (what `gyrofs ls --json` prints).
pub fn write(
    catalog: &Arc<Catalog>,
    notes: &[String],
    renamed: HashMap<u32, String>,
    out: &mut impl io::Write,
) -> io::Result<()> {
    let parts = Parts::new(catalog, notes, renamed);
    let mut buf = parts.head.clone();
    for i in 0..parts.count() {
        parts.item(&mut buf, i);
        if buf.len() > 1 << 20 {
            out.write_all(buf.as_bytes())?;
            buf.clear();
        }
    }
    buf.push_str(parts.tail());
    out.write_all(buf.as_bytes())
}

/// The manifest text, generated on demand.
#[derive(Debug)]
struct Stream {
    parts: Parts,
    /// Offset of item `k * CHECKPOINT` (with its separator), for every `k`.
    checkpoints: Vec<u64>,
    /// Offset just past the last item.
    items_end: u64,
}

impl Stream {
    fn new(parts: Parts) -> Stream {
        let mut at = parts.head.len() as u64;
        let mut checkpoints = Vec::with_capacity(parts.count() / CHECKPOINT + 1);
        for i in 0..parts.count() {
            if i % CHECKPOINT == 0 {
                checkpoints.push(at);
            }
            let mut n = Count::default();
            parts.item(&mut n, i);
            at += n.0;
        }
        Stream {
            parts,
            checkpoints,
            items_end: at,
        }
    }
}

impl Compute for Stream {
    fn len(&self) -> u64 {
        self.items_end + self.parts.tail().len() as u64
    }

    fn extents(&self) -> Vec<Extent> {
        Vec::new()
    }

    fn read_at(&self, _: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let head = self.parts.head.as_bytes();
        let end = offset + out.len() as u64;
        let mut filled = 0usize;
        // Head.
        if offset < head.len() as u64 {
            let n = (head.len() as u64).min(end) - offset;
            out[..n as usize].copy_from_slice(&head[offset as usize..(offset + n) as usize]);
            filled = n as usize;
        }
        // Items, from the checkpoint at or before the first byte needed.
        let from = offset + filled as u64;
        if from < end && from < self.items_end {
            let k = self.checkpoints.partition_point(|&c| c <= from).max(1) - 1;
            let mut at = self.checkpoints[k];
            let mut text = String::new();
            let mut i = k * CHECKPOINT;
            while at + (text.len() as u64) < end.min(self.items_end) && i < self.parts.count() {
                self.parts.item(&mut text, i);
                i += 1;
            }
            let skip = (from - at) as usize;
            let n = (text.len() - skip).min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&text.as_bytes()[skip..skip + n]);
            filled += n;
            at += text.len() as u64;
            debug_assert!(filled == out.len() || at == self.items_end);
        }
        // Tail.
        if filled < out.len() {
            let tail = self.parts.tail().as_bytes();
            let within = (offset + filled as u64 - self.items_end) as usize;
            let n = out.len() - filled;
            out[filled..].copy_from_slice(&tail[within..within + n]);
        }
        Ok(())
    }
}

/// The manifest without its tensors.
fn head_value(catalog: &Catalog, notes: &[String]) -> Value {
    let files: Vec<Value> = catalog
        .files
        .iter()
        .map(|(_, f)| json!({"name": f.file.name, "size": f.file.len, "role": f.role.name()}))
        .collect();
    let mut m = json!({
        "gyro_version": GYRO_VERSION,
        "source": {"format": catalog.format.name(), "files": files},
        "config": catalog.config.clone().unwrap_or(Value::Null),
        "tensor_count": catalog.tensors.len(),
        "tensor_bytes": catalog.tensor_bytes(),
        "notes": notes,
    });
    if let Some(g) = &catalog.gguf_metadata {
        m["gguf"] = summarize_metadata(g);
    }
    if let Some(p) = &catalog.pickle {
        m["pickle"] = p.clone();
    }
    m
}

/// One tensor's manifest entry.
fn tensor_value(catalog: &Catalog, id: TensorId, renamed: &HashMap<u32, String>) -> Value {
    let t = catalog.tensor(id);
    let raw_file = match renamed.get(&id.0) {
        Some(n) => format!("raw/tensors/{n}"),
        None => format!("raw/tensors/{}{EXT}", escape(&t.name, EXT)),
    };
    let mut o = Map::new();
    o.insert("name".into(), json!(t.name));
    o.insert("dtype".into(), json!(t.dtype.name()));
    o.insert("logical_dtype".into(), json!(t.logical));
    o.insert("shape".into(), json!(t.shape));
    if let Some(g) = &t.ggml {
        o.insert("logical_shape".into(), json!(g.shape));
    }
    o.insert("bytes".into(), json!(t.len()));
    o.insert("file".into(), json!(catalog.file_name(t)));
    o.insert("offset".into(), json!(t.extent.offset));
    o.insert("raw_file".into(), json!(raw_file));
    if let Some(q) = &t.quant {
        o.insert("quant".into(), QuantFields::of(catalog, q).to_value());
    }
    Value::Object(o)
}

/// Arrays longer than this are summarised in the manifest (the whole
/// metadata is in `gguf_metadata.json`).
const SUMMARY_ITEMS: usize = 16;

/// GGUF metadata as JSON with long arrays (tokenizer vocabularies, merges)
/// replaced by `{"gyro_summary": "array", "len": N, "first": [the first 16]}`
/// (only those 16 are rendered).
fn summarize_metadata(md: &GgufMetadata) -> Value {
    let summarize_value = |v: &GgufValue| match v {
        GgufValue::Array(a) if a.len() > SUMMARY_ITEMS => {
            let first: Vec<Value> = a
                .values()
                .take(SUMMARY_ITEMS)
                .map(|e| summarize(&e.to_json()))
                .collect();
            json!({"gyro_summary": "array", "len": a.len(), "first": first})
        }
        other => summarize(&other.to_json()),
    };
    Value::Object(
        md.iter()
            .map(|(k, v)| (k.clone(), summarize_value(v)))
            .collect(),
    )
}

/// A JSON value with long arrays summarised as [`summarize_metadata`] does.
fn summarize(v: &Value) -> Value {
    match v {
        Value::Array(items) if items.len() > SUMMARY_ITEMS => json!({
            "gyro_summary": "array",
            "len": items.len(),
            "first": items[..SUMMARY_ITEMS].iter().map(summarize).collect::<Vec<_>>(),
        }),
        Value::Array(items) => Value::Array(items.iter().map(summarize).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), summarize(v))).collect())
        }
        other => other.clone(),
    }
}
