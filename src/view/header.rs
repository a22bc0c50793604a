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
    /// Its record in `gyro.tensors`, as canonical JSON (see [`tensor_record`]).
    pub record: String,
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
/// in the order given. `source` is the canonical `gyro.source` JSON.
pub fn safetensors_file(view: &str, source: &str, entries: Vec<Entry>) -> VFile {
    let header = header_bytes(view, source, &entries);
    let mut segments = Vec::with_capacity(1 + entries.len());
    segments.push(Segment::Bytes(Arc::from(header)));
    for e in entries {
        segments.extend(e.data);
    }
    VFile::new(segments)
}

/// The 8-byte length, JSON and padding of a Gyro header.
pub fn header_bytes(view: &str, source: &str, entries: &[Entry]) -> Vec<u8> {
    // gyro.tensors: records keyed by name, in byte order of the names.
    let mut by_name: Vec<&Entry> = entries.iter().collect();
    by_name.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let mut records = String::with_capacity(
        entries
            .iter()
            .map(|e| e.record.len() + e.name.len() + 4)
            .sum(),
    );
    records.push('{');
    for (i, e) in by_name.iter().enumerate() {
        if i > 0 {
            records.push(',');
        }
        write_str(&mut records, &e.name);
        records.push(':');
        records.push_str(&e.record);
    }
    records.push('}');

    let mut json = String::with_capacity(records.len() * 5 / 4 + entries.len() * 64 + 256);
    json.push_str("{\"__metadata__\":{");
    let metadata = [
        ("format", "pt"),
        ("gyro.source", source),
        ("gyro.tensors", records.as_str()),
        ("gyro.version", GYRO_VERSION),
        ("gyro.view", view),
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
        json.push_str(",\"shape\":");
        push_u64s(&mut json, &e.shape);
        json.push_str(",\"data_offsets\":");
        push_u64s(&mut json, &[offset, offset + len]);
        json.push('}');
        offset += len;
    }
    json.push('}');
    while !json.len().is_multiple_of(8) {
        json.push(' ');
    }
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    out
}

/// Append `[a,b,...]`.
fn push_u64s(out: &mut String, v: &[u64]) {
    use std::fmt::Write;
    out.push('[');
    for (i, d) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{d}");
    }
    out.push(']');
}

/// Canonical `gyro.source` for a virtual file drawing on source files `files`.
pub fn source_json(catalog: &Catalog, files: impl IntoIterator<Item = usize>) -> String {
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
    to_canonical(&json!({"format": catalog.format.name(), "files": list}))
}

/// The canonical `gyro.tensors` record of source tensor `idx` under
/// `transform` (itself canonical JSON):
/// `{["ggml": {"block_size","shape","type","type_id","type_size"}],
/// "logical_dtype", ["quant": {"peer","role","scheme","values_per_block"}],
/// "source": {"dtype","file","name","offsets","shape"}, "transform"}`.
/// Written directly, keys already in canonical order: mounts of models with
/// 100k tensors build hundreds of thousands of these.
pub fn tensor_record(catalog: &Catalog, idx: usize, transform: &str) -> String {
    let t = &catalog.tensors[idx];
    let mut o = String::with_capacity(256 + 2 * t.name.len());
    o.push('{');
    if let Some(g) = &t.ggml {
        o.push_str(&format!(
            "\"ggml\":{{\"block_size\":{},\"shape\":",
            g.ty.block_size()
        ));
        push_u64s(&mut o, &g.shape);
        o.push_str(&format!(
            ",\"type\":\"{}\",\"type_id\":{},\"type_size\":{}}},",
            g.ty.name(),
            g.ty.id(),
            g.ty.type_size()
        ));
    }
    o.push_str("\"logical_dtype\":");
    write_str(&mut o, &t.logical);
    if let Some(q) = &t.quant {
        o.push_str(",\"quant\":{\"peer\":");
        write_str(&mut o, &catalog.tensors[q.peer].name);
        o.push_str(",\"role\":");
        write_str(&mut o, q.scheme.role_name(q.role));
        o.push_str(",\"scheme\":");
        write_str(&mut o, q.scheme.name());
        o.push_str(&format!(
            ",\"values_per_block\":{}}}",
            q.scheme.values_per_block()
        ));
    }
    o.push_str(",\"source\":{\"dtype\":");
    write_str(&mut o, t.dtype.name());
    o.push_str(",\"file\":");
    write_str(&mut o, &catalog.files[t.file].name);
    o.push_str(",\"name\":");
    write_str(&mut o, &t.name);
    o.push_str(",\"offsets\":");
    push_u64s(&mut o, &[t.start, t.end]);
    o.push_str(",\"shape\":");
    push_u64s(&mut o, &t.shape);
    o.push_str("},\"transform\":");
    o.push_str(transform);
    o.push('}');
    o
}

/// The identity transform record.
pub const IDENTITY: &str = r#"{"kind":"identity"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let e = Entry {
            name: "w".into(),
            dtype: Dtype::BF16,
            shape: vec![2],
            record: r#"{"k":1}"#.into(),
            data: vec![Segment::Bytes(Arc::from(&[1u8, 2, 3, 4][..]))],
        };
        let h = header_bytes("raw/tensors", r#"{"files":[],"format":"x"}"#, &[e]);
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
