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
//! Every tensor byte is a [`Segment::Source`] extent of the source, but for
//! PyTorch tensors saved as strided views (or big-endian), which are
//! gathered into row-major, little-endian order (`t.contiguous()`).

use std::sync::Arc;

use crate::catalog::{Catalog, FileId, FileRole, TensorId};
use crate::view::compute::Gather;
use crate::view::header::{Entry, MAX_HEADER_LEN, header_len, safetensors_file, source_json};
use crate::view::record::{Record, Transform};
use crate::view::tree::Tree;
use crate::view::{
    Builder, Context, FileRef, Listing, Segment, TensorInfo, Tensors, VFile, View, ViewId,
};

/// The kinds of files of `raw/` (see [`FileRef::Of`]).
mod kind {
    /// `raw/model.safetensors`.
    pub const PACK: u8 = 0;
    /// `raw/tensors/<name>.safetensors`, by tensor id.
    pub const TENSOR: u8 = 1;
}

/// Build `raw/` (always there).
pub fn build(b: &mut Builder) {
    let view = RawView::new(b.catalog, &mut b.notes);
    let id = b.next_id();
    let listing = view.add(b.tree, b.catalog, id);
    b.set_raw_tensors(listing);
    b.add(Box::new(view));
}

/// What `raw/` holds for a source.
#[derive(Debug)]
pub struct RawView {
    /// The pack's tensors in pack order; `None` when the pack is left out.
    pack: Option<Vec<TensorId>>,
    /// `gyro.source` of a file drawing on one source file, by file.
    per_file_source: Vec<String>,
    /// How many source tensors.
    tensor_count: u32,
}

/// The lossless entry for source tensor `id`: its bytes, or for a strided or
/// big-endian PyTorch view, its elements gathered in row-major order.
pub fn entry(catalog: &Catalog, id: TensorId) -> Entry {
    let t = catalog.tensor(id);
    let (transform, data) = match &t.layout {
        None => (Transform::Identity, Segment::Source(t.extent)),
        Some(l) => {
            let gather = Gather::of(l, t.dtype.bits() / 8, &t.shape, None);
            (Transform::Contiguous, Segment::Computed(Arc::new(gather)))
        }
    };
    Entry {
        name: t.name.clone(),
        dtype: t.dtype,
        shape: t.shape.clone(),
        record: Record::new(id, transform),
        data: vec![data],
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
            .map(|(id, t)| {
                let tr = match t.layout {
                    None => Transform::Identity,
                    Some(_) => Transform::Contiguous,
                };
                Record::new(id, tr)
            })
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
            tensor_count: catalog.tensors.len() as u32,
        }
    }

    /// Is there a `raw/model.safetensors`?
    pub fn has_pack(&self) -> bool {
        self.pack.is_some()
    }

    /// Lay out `raw/` in the tree (as view `me`); returns `raw/tensors/`.
    pub fn add(&self, tree: &mut Tree, catalog: &Catalog, me: ViewId) -> Listing {
        let raw = tree.dir_path("raw");
        if self.pack.is_some() {
            let pack = FileRef::Of {
                view: me,
                kind: kind::PACK,
                index: 0,
            };
            tree.add_file(raw, "model.safetensors", pack);
        }
        for (id, f) in catalog.files.with_role(FileRole::Side) {
            tree.add_file(raw, &f.file.name, FileRef::Side(id));
        }
        let n = catalog.tensors.len() as u32;
        let listing = Listing {
            view: me,
            kind: kind::TENSOR,
        };
        tree.add_listing(raw, "tensors", listing, n, |i| {
            &catalog.tensor(TensorId(i)).name
        });
        listing
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

impl View for RawView {
    fn file(&self, cx: &Context, kind: u8, index: u32) -> VFile {
        match kind {
            kind::PACK => self.pack_file(cx.catalog),
            _ => self.tensor_file(cx.catalog, TensorId(index)),
        }
    }

    fn reads(&self, cx: &Context, kind: u8, index: u32, source: FileId) -> bool {
        let catalog = cx.catalog;
        match kind {
            kind::PACK => catalog.tensors.iter().any(|t| t.extent.file == source),
            _ => catalog.tensor(TensorId(index)).extent.file == source,
        }
    }

    fn item_name<'a>(&'a self, catalog: &'a Catalog, _: u8, index: u32) -> &'a str {
        &catalog.tensor(TensorId(index)).name
    }

    fn data_bytes(&self, catalog: &Catalog) -> u64 {
        let packs = if self.has_pack() { 2 } else { 1 };
        catalog.tensor_bytes() * packs
    }

    fn tensors(&self) -> Option<&dyn Tensors> {
        Some(self)
    }
}

/// The source tensors, as the expert split sees them.
impl Tensors for RawView {
    fn dir(&self) -> &str {
        "raw"
    }

    fn count(&self) -> u32 {
        self.tensor_count
    }

    fn info<'a>(&'a self, catalog: &'a Catalog, i: u32) -> TensorInfo<'a> {
        let t = catalog.tensor(TensorId(i));
        TensorInfo {
            name: &t.name,
            dtype: t.dtype,
            shape: std::borrow::Cow::Borrowed(&t.shape),
            len: t.len(),
        }
    }

    fn entry(&self, catalog: &Catalog, i: u32) -> Entry {
        entry(catalog, TensorId(i))
    }

    fn source_files(&self, catalog: &Catalog, i: u32) -> Vec<FileId> {
        vec![catalog.tensor(TensorId(i)).extent.file]
    }
}
