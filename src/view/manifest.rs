//! `manifest.json`: the whole catalog, for people and scripts (and, for a
//! GGUF source, `gguf_metadata.json`: its key/value metadata in full).
//!
//! Pretty, canonical JSON (sorted keys, two-space indent) with the source's
//! format and files, its parsed `config.json`, and every tensor: name, stored
//! and logical dtype, shape, bytes, source file and byte offset, quantization
//! pairing, and the file that holds it in `raw/tensors/`. Specified in
//! docs/FORMAT.md; the same source always gives the same bytes.

use serde_json::{Map, Value, json};

use crate::catalog::Catalog;
use crate::json::to_pretty;
use crate::view::header::GYRO_VERSION;
use crate::view::names::escape;
use crate::view::raw::EXT;
use crate::view::record::QuantFields;
use crate::view::{ROOT, Tree, VFile};

pub const NAME: &str = "manifest.json";

/// The manifest as a JSON value (also what `gyrofs ls --json` prints).
pub fn manifest(catalog: &Catalog, notes: &[String]) -> Value {
    let tensors: Vec<Value> = catalog
        .tensors
        .iter()
        .map(|t| {
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
            o.insert(
                "raw_file".into(),
                json!(format!("raw/tensors/{}{EXT}", escape(&t.name, EXT))),
            );
            if let Some(q) = &t.quant {
                o.insert("quant".into(), QuantFields::of(catalog, q).to_value());
            }
            Value::Object(o)
        })
        .collect();
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
        "tensors": tensors,
        "notes": notes,
    });
    if let Some(g) = &catalog.gguf_metadata {
        m["gguf"] = summarize(g);
    }
    m
}

/// Arrays longer than this are summarised in the manifest (the whole
/// metadata is in `gguf_metadata.json`).
const SUMMARY_ITEMS: usize = 16;

/// GGUF metadata with long arrays (tokenizer vocabularies, merges) replaced
/// by `{"gyro_summary": "array", "len": N, "first": [the first 16]}`.
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

/// Name of the file holding a GGUF source's whole key/value metadata.
pub const GGUF_METADATA: &str = "gguf_metadata.json";

pub fn add(tree: &mut Tree, catalog: &Catalog, notes: &[String]) {
    let text = to_pretty(&manifest(catalog, notes));
    tree.add_file(ROOT, NAME, "", VFile::from_bytes(text.into_bytes()));
    if let Some(g) = &catalog.gguf_metadata {
        let text = to_pretty(g);
        tree.add_file(
            ROOT,
            GGUF_METADATA,
            "",
            VFile::from_bytes(text.into_bytes()),
        );
    }
}
