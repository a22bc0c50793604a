//! The Gyro header: the safetensors header every virtual file starts with.
//!
//! Specified in docs/FORMAT.md and pinned by golden files. In short:
//! `u64 LE N`, then N bytes of JSON, then the tensor data. The JSON is
//! `{"__metadata__":{...},"<tensor>":{"dtype":..,"shape":[..],"data_offsets":[b,e]},...}`
//! with no whitespace, tensors in data order, and then spaces (0x20) so that
//! N is a multiple of 8. `__metadata__` holds, in key order:
//! - `format`: `"pt"` (transformers refuses files without it);
//! - `gyro.source`: canonical JSON of `{"files":[{"name","size"[,"metadata"]}],"format"}`,
//!   the source files this virtual file's bytes come from;
//! - `gyro.tensors`: canonical JSON object, tensor name -> record (see
//!   [`tensor_record`]);
//! - `gyro.version`: `"1"`;
//! - `gyro.view`: the directory of the view the file belongs to (`raw`, `raw/tensors`, ...).
//!
//! Every value is a function of the source's own headers and file sizes, so
//! the same source gives the same bytes everywhere.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::catalog::Catalog;
use crate::dtype::Dtype;
use crate::json::{to_canonical, write_str};
use crate::view::{Segment, VFile};

/// Version of the Gyro header format written by this build.
pub const GYRO_VERSION: &str = "1";

/// One tensor of a virtual safetensors file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Its record in `gyro.tensors`.
    pub record: Value,
    /// Where its bytes come from; their lengths must add up to the tensor's size.
    pub data: Vec<Segment>,
}

impl Entry {
    pub fn len(&self) -> u64 {
        self.data.iter().map(Segment::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A complete virtual safetensors file: Gyro header, then the entries' data
/// in the order given.
pub fn safetensors_file(view: &str, source: &Value, entries: Vec<Entry>) -> VFile {
    let header = header_bytes(view, source, &entries);
    let mut segments = Vec::with_capacity(1 + entries.len());
    segments.push(Segment::Bytes(Arc::from(header)));
    for e in entries {
        segments.extend(e.data);
    }
    VFile::new(segments)
}

/// The 8-byte length, JSON and padding of a Gyro header.
pub fn header_bytes(view: &str, source: &Value, entries: &[Entry]) -> Vec<u8> {
    let mut records = Map::new();
    for e in entries {
        records.insert(e.name.clone(), e.record.clone());
    }
    let mut json = String::new();
    json.push_str("{\"__metadata__\":{");
    let metadata = [
        ("format", "pt".to_string()),
        ("gyro.source", to_canonical(source)),
        ("gyro.tensors", to_canonical(&Value::Object(records))),
        ("gyro.version", GYRO_VERSION.to_string()),
        ("gyro.view", view.to_string()),
    ];
    for (i, (k, v)) in metadata.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        write_str(&mut json, k);
        json.push(':');
        write_str(&mut json, v);
    }
    json.push('}');
    let mut offset = 0u64;
    for e in entries {
        let len = e.len();
        debug_assert_eq!(
            crate::dtype::numel(&e.shape).and_then(|n| e.dtype.bytes_for(n)),
            Some(len),
            "entry {} has the wrong byte length",
            e.name
        );
        json.push(',');
        write_str(&mut json, &e.name);
        json.push_str(":{\"dtype\":");
        write_str(&mut json, e.dtype.name());
        json.push_str(",\"shape\":[");
        for (i, d) in e.shape.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&d.to_string());
        }
        json.push_str(&format!(
            "],\"data_offsets\":[{},{}]}}",
            offset,
            offset + len
        ));
        offset += len;
    }
    json.push('}');
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    out
}

/// `gyro.source` for a virtual file drawing on source files `files`.
pub fn source_json(catalog: &Catalog, files: impl IntoIterator<Item = usize>) -> Value {
    let files: BTreeSet<usize> = files.into_iter().collect();
    let list: Vec<Value> = files
        .into_iter()
        .map(|i| {
            let f = &catalog.files[i];
            let mut o = Map::new();
            o.insert("name".into(), json!(f.name));
            o.insert("size".into(), json!(f.len));
            let md = &catalog.file_metadata[i];
            if !md.is_empty() {
                o.insert("metadata".into(), json!(md));
            }
            Value::Object(o)
        })
        .collect();
    json!({"format": catalog.format.name(), "files": list})
}

/// The `gyro.tensors` record of source tensor `idx` under `transform`:
/// `{"logical_dtype", "source": {"dtype","file","name","offsets","shape"},
/// "transform", ["quant": {"peer","role","scheme","values_per_block"}]}`.
pub fn tensor_record(catalog: &Catalog, idx: usize, transform: Value) -> Value {
    let t = &catalog.tensors[idx];
    let mut o = Map::new();
    o.insert("logical_dtype".into(), json!(t.logical));
    o.insert(
        "source".into(),
        json!({
            "dtype": t.dtype.name(),
            "file": catalog.files[t.file].name,
            "name": t.name,
            "offsets": [t.start, t.end],
            "shape": t.shape,
        }),
    );
    o.insert("transform".into(), transform);
    if let Some(q) = &t.quant {
        o.insert(
            "quant".into(),
            json!({
                "peer": catalog.tensors[q.peer].name,
                "role": q.role.name(),
                "scheme": q.scheme.name(),
                "values_per_block": q.scheme.values_per_block(),
            }),
        );
    }
    Value::Object(o)
}

/// The identity transform record.
pub fn identity() -> Value {
    json!({"kind": "identity"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let e = Entry {
            name: "w".into(),
            dtype: Dtype::BF16,
            shape: vec![2],
            record: json!({"k": 1}),
            data: vec![Segment::Bytes(Arc::from(&[1u8, 2, 3, 4][..]))],
        };
        let h = header_bytes("raw/tensors", &json!({"files": [], "format": "x"}), &[e]);
        let n = u64::from_le_bytes(h[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        assert_eq!(h.len(), 8 + n);
        let text = std::str::from_utf8(&h[8..]).unwrap().trim_end_matches(' ');
        assert_eq!(
            text,
            r#"{"__metadata__":{"format":"pt","gyro.source":"{\"files\":[],\"format\":\"x\"}","gyro.tensors":"{\"w\":{\"k\":1}}","gyro.version":"1","gyro.view":"raw/tensors"},"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#
        );
    }
}
