//! The lossless view, `raw/`: source tensor bytes unchanged.
//!
//! - `raw/model.safetensors`: every tensor in one Gyro pack. Tensors are laid
//!   out by dtype alignment (descending), then source order, so each starts at
//!   a multiple of its element size and a source written by the reference
//!   writer keeps its own data order (its pack data equals its data buffer).
//! - beside it, the source's side files (config.json, tokenizer files, ...),
//!   byte for byte, so a loader pointed at `raw/` loads the same model;
//! - `raw/tensors/<name>.safetensors`: one tensor per file.
//!
//! Every tensor byte is a [`Segment::Source`] range of the map.

use crate::catalog::{Catalog, FileRole, TensorId};
use crate::view::header::{Entry, safetensors_file, source_json};
use crate::view::names::escape;
use crate::view::record::{Record, Transform};
use crate::view::{Segment, Tree, VFile};

pub const EXT: &str = ".safetensors";

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
pub fn pack_order(catalog: &Catalog) -> Vec<TensorId> {
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

pub fn add(tree: &mut Tree, catalog: &Catalog) {
    let raw = tree.dir_path("raw");
    let pack: Vec<Entry> = pack_order(catalog)
        .into_iter()
        .map(|id| entry(catalog, id))
        .collect();
    let tensor_files = catalog.files.with_role(FileRole::Tensors).map(|(id, _)| id);
    let source = source_json(catalog, tensor_files);
    tree.add_file(
        raw,
        "model",
        EXT,
        safetensors_file(catalog, "raw", &source, pack),
    );
    for (id, f) in catalog.files.with_role(FileRole::Side) {
        let whole = VFile::new([Segment::Source(catalog.files.whole(id))]);
        tree.add_file(raw, &f.file.name, "", whole);
    }

    let dir = tree.dir(raw, "tensors");
    let per_file: Vec<String> = catalog
        .files
        .iter()
        .map(|(id, _)| source_json(catalog, [id]))
        .collect();
    for (id, t) in catalog.tensor_ids() {
        let source = &per_file[t.extent.file.index()];
        let file = safetensors_file(catalog, "raw/tensors", source, vec![entry(catalog, id)]);
        tree.add_file(dir, &escape(&t.name, EXT), EXT, file);
    }
}
