//! The lossless view, `raw/`: source tensor bytes unchanged.
//!
//! - `raw/model.safetensors`: every tensor in one Gyro pack. Tensors are laid
//!   out by dtype alignment (descending), then source order, so each starts at
//!   a multiple of its element size and a source written by the reference
//!   writer keeps its own data order (its pack data equals its data buffer).
//!   A pack whose header would pass the safetensors limit (100,000,000
//!   bytes: sources with hundreds of thousands of tensors) is left out with a
//!   note; no reader could open it.
//! - beside it, the source's side files (config.json, tokenizer files, ...),
//!   byte for byte, so a loader pointed at `raw/` loads the same model;
//! - `raw/tensors/<name>.safetensors`: one tensor per file (a listing).
//!
//! Every tensor byte is a [`Segment::Source`] extent of the source.

use crate::catalog::{Catalog, FileRole, TensorId};
use crate::view::header::{Entry, MAX_HEADER_LEN, header_len, safetensors_file, source_json};
use crate::view::record::{Record, Transform};
use crate::view::tree::Tree;
use crate::view::{FileRef, Listing, Segment, VFile};

/// What `raw/` holds for a source.
#[derive(Debug)]
pub struct RawView {
    /// The pack's tensors in pack order; `None` when the pack is left out.
    pack: Option<Vec<TensorId>>,
    /// `gyro.source` of a file drawing on one source file, by file.
    per_file_source: Vec<String>,
}

/// The lossless entry for source tensor `id`.
pub fn entry(catalog: &Catalog, id: TensorId) -> Entry {
    let t = catalog.tensor(id);
    Entry {
        name: t.name.clone(),
        dtype: t.dtype,
        shape: t.shape.clone(),
        record: Record::new(id, Transform::Identity),
        data: vec![Segment::Source(t.extent)],
    }
}

/// Tensor ids in pack order: alignment descending, then source order.
fn pack_order(catalog: &Catalog) -> Vec<TensorId> {
    let mut order: Vec<TensorId> = catalog.tensor_ids().map(|(id, _)| id).collect();
    order.sort_by_key(|&id| {
        let t = catalog.tensor(id);
        (
            std::cmp::Reverse(t.dtype.alignment()),
            t.extent.file,
            t.extent.offset,
        )
    });
    order
}

fn pack_source(catalog: &Catalog) -> String {
    let tensor_files = catalog.files.with_role(FileRole::Tensors).map(|(id, _)| id);
    source_json(catalog, tensor_files)
}

impl RawView {
    pub fn new(catalog: &Catalog, notes: &mut Vec<String>) -> RawView {
        let records: Vec<Record> = catalog
            .tensor_ids()
            .map(|(id, _)| Record::new(id, Transform::Identity))
            .collect();
        let heads = catalog.tensors.iter().zip(&records).map(|(t, record)| {
            crate::view::header::EntryHead {
                name: &t.name,
                dtype: t.dtype,
                shape: &t.shape,
                record,
                len: t.len(),
            }
        });
        let len = header_len(catalog, "raw", &pack_source(catalog), heads);
        let pack = if len - 8 <= MAX_HEADER_LEN {
            Some(pack_order(catalog))
        } else {
            notes.push(format!(
                "raw/model.safetensors is left out: its header would take {len} bytes, over the \
                 {MAX_HEADER_LEN}-byte safetensors limit ({} tensors); raw/tensors/ has every tensor",
                catalog.tensors.len()
            ));
            None
        };
        let per_file_source = catalog
            .files
            .iter()
            .map(|(id, _)| source_json(catalog, [id]))
            .collect();
        RawView {
            pack,
            per_file_source,
        }
    }

    /// Is there a `raw/model.safetensors`?
    pub fn has_pack(&self) -> bool {
        self.pack.is_some()
    }

    /// Lay out `raw/` in the tree.
    pub fn add(&self, tree: &mut Tree, catalog: &Catalog) {
        let raw = tree.dir_path("raw");
        if self.pack.is_some() {
            tree.add_file(raw, "model.safetensors", FileRef::RawPack);
        }
        for (id, f) in catalog.files.with_role(FileRole::Side) {
            tree.add_file(raw, &f.file.name, FileRef::Side(id));
        }
        let n = catalog.tensors.len() as u32;
        tree.add_listing(raw, "tensors", Listing::RawTensors, n, |i| {
            &catalog.tensor(TensorId(i)).name
        });
    }

    /// `raw/model.safetensors`.
    pub fn pack_file(&self, catalog: &Catalog) -> VFile {
        let order = self.pack.as_deref().unwrap_or(&[]);
        let entries = order.iter().map(|&id| entry(catalog, id)).collect();
        safetensors_file(catalog, "raw", &pack_source(catalog), entries)
    }

    /// `raw/tensors/<name>.safetensors` of tensor `id`.
    pub fn tensor_file(&self, catalog: &Catalog, id: TensorId) -> VFile {
        let source = &self.per_file_source[catalog.tensor(id).extent.file.index()];
        safetensors_file(catalog, "raw/tensors", source, vec![entry(catalog, id)])
    }
}
