//! `manifest.json`: the whole catalog, for people and scripts.
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
            o.insert("bytes".into(), json!(t.len()));
            o.insert("file".into(), json!(catalog.files[t.file].name));
            o.insert("offset".into(), json!(t.start));
            o.insert(
                "raw_file".into(),
                json!(format!("raw/tensors/{}{EXT}", escape(&t.name, EXT))),
            );
            if let Some(q) = &t.quant {
                o.insert(
                    "quant".into(),
                    json!({
                        "peer": catalog.tensors[q.peer].name,
                        "role": q.scheme.role_name(q.role),
                        "scheme": q.scheme.name(),
                        "values_per_block": q.scheme.values_per_block(),
                    }),
                );
            }
            Value::Object(o)
        })
        .collect();
    let files: Vec<Value> = catalog
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let role = if catalog.side_files.contains(&i) {
                "side"
            } else {
                "tensors"
            };
            json!({"name": f.name, "size": f.len, "role": role})
        })
        .collect();
    json!({
        "gyro_version": GYRO_VERSION,
        "source": {"format": catalog.format.name(), "files": files},
        "config": catalog.config.clone().unwrap_or(Value::Null),
        "tensor_count": catalog.tensors.len(),
        "tensor_bytes": catalog.tensor_bytes(),
        "tensors": tensors,
        "notes": notes,
    })
}

pub fn add(tree: &mut Tree, catalog: &Catalog, notes: &[String]) {
    let text = to_pretty(&manifest(catalog, notes));
    tree.add_file(ROOT, NAME, "", VFile::from_bytes(text.into_bytes()));
}
