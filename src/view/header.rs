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

use crate::catalog::{Catalog, FileId};
use crate::dtype::Dtype;
use crate::json::{Count, Escaped, Sink, to_canonical, write_str, write_u64s};
use crate::view::record::Record;
use crate::view::{Segment, VFile};

/// Version of the Gyro header format written by this build.
pub const GYRO_VERSION: &str = "1";

/// The largest header the reference safetensors reader accepts (its
/// `MAX_HEADER_SIZE`); views never write a larger one.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// What a header says about one tensor: everything but its bytes.
#[derive(Debug, Clone, Copy)]
pub struct EntryHead<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [u64],
    pub record: &'a Record,
    /// Bytes of data.
    pub len: u64,
}

/// One tensor of a virtual safetensors file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Its record in `gyro.tensors`.
    pub record: Record,
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

    pub fn head(&self) -> EntryHead<'_> {
        EntryHead {
            name: &self.name,
            dtype: self.dtype,
            shape: &self.shape,
            record: &self.record,
            len: self.len(),
        }
    }
}

/// A complete virtual safetensors file: Gyro header, then the entries' data
/// in the order given. `source` is the canonical `gyro.source` JSON.
pub fn safetensors_file(catalog: &Catalog, view: &str, source: &str, entries: Vec<Entry>) -> VFile {
    let heads: Vec<EntryHead> = entries.iter().map(Entry::head).collect();
    let header = header_bytes(catalog, view, source, &heads);
    let mut segments = Vec::with_capacity(1 + entries.len());
    segments.push(Segment::Bytes(Arc::from(header)));
    for e in entries {
        segments.extend(e.data);
    }
    VFile::new(segments)
}

/// The 8-byte length, JSON and padding of a Gyro header for `entries` (in
/// data order).
pub fn header_bytes(catalog: &Catalog, view: &str, source: &str, entries: &[EntryHead]) -> Vec<u8> {
    let mut by_name: Vec<&EntryHead> = entries.iter().collect();
    by_name.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let mut json = String::with_capacity(entries.iter().map(|e| 400 + 3 * e.name.len()).sum());
    let records = by_name.into_iter().copied();
    write_json(
        &mut json,
        catalog,
        view,
        source,
        records,
        entries.iter().copied(),
    );
    while !json.len().is_multiple_of(8) {
        json.push(' ');
    }
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    out
}

/// The length [`header_bytes`] would have (8-byte length and padding
/// included), without building it. `entries` may come in any order.
pub fn header_len<'a>(
    catalog: &Catalog,
    view: &str,
    source: &str,
    entries: impl Iterator<Item = EntryHead<'a>> + Clone,
) -> u64 {
    let mut n = Count::default();
    // Counting does not depend on the order of the records.
    write_json(&mut n, catalog, view, source, entries.clone(), entries);
    8 + n.0.next_multiple_of(8)
}

/// What one more entry adds to a header (its record, its tensor entry and
/// their separators), for deciding where a shard ends; `offset` is about
/// where its data will start (the digits of its `data_offsets` count).
pub fn entry_cost(catalog: &Catalog, e: &EntryHead, offset: u64) -> u64 {
    let mut n = Count::default();
    {
        let mut esc = Escaped(&mut n);
        esc.push(',');
        write_str(&mut esc, e.name);
        esc.push(':');
        e.record.write(catalog, &mut esc);
    }
    write_entry(&mut n, e, offset);
    n.0
}

/// The header JSON: metadata with the records of `by_name` (sorted by name),
/// then the tensor entries in data order.
fn write_json<'e, S: Sink>(
    out: &mut S,
    catalog: &Catalog,
    view: &str,
    source: &str,
    by_name: impl Iterator<Item = EntryHead<'e>>,
    in_order: impl Iterator<Item = EntryHead<'e>>,
) {
    out.push_str("{\"__metadata__\":{\"format\":\"pt\",\"gyro.source\":");
    write_str(out, source);
    out.push_str(",\"gyro.tensors\":\"");
    {
        // gyro.tensors: a JSON object (records keyed by name) inside a string.
        let mut esc = Escaped(out);
        esc.push('{');
        for (i, e) in by_name.enumerate() {
            if i > 0 {
                esc.push(',');
            }
            write_str(&mut esc, e.name);
            esc.push(':');
            e.record.write(catalog, &mut esc);
        }
        esc.push('}');
    }
    out.push_str("\",\"gyro.version\":");
    write_str(out, GYRO_VERSION);
    out.push_str(",\"gyro.view\":");
    write_str(out, view);
    out.push('}');
    let mut offset = 0u64;
    for e in in_order {
        debug_assert_eq!(
            crate::dtype::numel(e.shape).and_then(|n| e.dtype.bytes_for(n)),
            Some(e.len),
            "entry {} has the wrong byte length",
            e.name
        );
        write_entry(out, &e, offset);
        offset += e.len;
    }
    out.push('}');
}

/// `,"name":{"dtype":..,"shape":[..],"data_offsets":[b,e]}`
fn write_entry<S: Sink + ?Sized>(out: &mut S, e: &EntryHead, offset: u64) {
    out.push(',');
    write_str(out, e.name);
    out.push_str(":{\"dtype\":");
    write_str(out, e.dtype.name());
    out.push_str(",\"shape\":");
    write_u64s(out, e.shape);
    out.push_str(",\"data_offsets\":");
    write_u64s(out, &[offset, offset + e.len]);
    out.push('}');
}

/// Canonical `gyro.source` for a virtual file drawing on source files `files`.
pub fn source_json(catalog: &Catalog, files: impl IntoIterator<Item = FileId>) -> String {
    let files: BTreeSet<FileId> = files.into_iter().collect();
    let list: Vec<Value> = files
        .into_iter()
        .map(|id| {
            let f = &catalog.files[id];
            let mut o = Map::new();
            o.insert("name".into(), json!(f.file.name));
            o.insert("size".into(), json!(f.file.len));
            if !f.metadata.is_empty() {
                o.insert("metadata".into(), json!(f.metadata));
            }
            Value::Object(o)
        })
        .collect();
    to_canonical(&json!({"format": catalog.format.name(), "files": list}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        use crate::catalog::{Extent, Files, SourceFormat, Tensor, TensorId};
        let extent = Extent {
            file: FileId(0),
            offset: 8,
            len: 4,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [0u8; 12]).unwrap();
        let mut files = Files::default();
        let file = crate::store::Opener::local()
            .open(&path, "f".into())
            .unwrap();
        files.push(file, Default::default(), crate::catalog::FileRole::Tensors);
        let catalog = Catalog {
            format: SourceFormat::Safetensors,
            files,
            tensors: vec![Tensor::new("w".into(), Dtype::BF16, vec![2], extent)],
            config: None,
            gguf_metadata: None,
            pickle: None,
            notes: Vec::new(),
            packed: Vec::new(),
            unconverted: None,
        };
        let e = Entry {
            name: "w".into(),
            dtype: Dtype::BF16,
            shape: vec![2],
            record: Record::new(TensorId(0), crate::view::record::Transform::Identity),
            data: vec![Segment::Bytes(Arc::from(&[1u8, 2, 3, 4][..]))],
        };
        let source = r#"{"files":[],"format":"x"}"#;
        let h = header_bytes(&catalog, "raw/tensors", source, &[e.head()]);
        let counted = header_len(&catalog, "raw/tensors", source, [e.head()].into_iter());
        assert_eq!(counted, h.len() as u64);
        let n = u64::from_le_bytes(h[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        assert_eq!(h.len(), 8 + n);
        let text = std::str::from_utf8(&h[8..]).unwrap().trim_end_matches(' ');
        assert_eq!(
            text,
            r#"{"__metadata__":{"format":"pt","gyro.source":"{\"files\":[],\"format\":\"x\"}","gyro.tensors":"{\"w\":{\"logical_dtype\":\"BF16\",\"source\":{\"dtype\":\"BF16\",\"file\":\"f\",\"name\":\"w\",\"offsets\":[8,12],\"shape\":[2]},\"transform\":{\"kind\":\"identity\"}}}","gyro.version":"1","gyro.view":"raw/tensors"},"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#
        );
    }
}
