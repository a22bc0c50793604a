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

use crate::catalog::Catalog;
use crate::view::header::{Entry, IDENTITY, safetensors_file, source_json, tensor_record};
use crate::view::names::escape;
use crate::view::{Segment, Tree};

pub const EXT: &str = ".safetensors";

/// The lossless entry for source tensor `idx`.
pub fn entry(catalog: &Catalog, idx: usize) -> Entry {
    let t = &catalog.tensors[idx];
    Entry {
        name: t.name.clone(),
        dtype: t.dtype,
        shape: t.shape.clone(),
        record: tensor_record(catalog, idx, IDENTITY),
        data: vec![Segment::Source {
            file: t.file,
            offset: t.start,
            len: t.len(),
        }],
    }
}

/// Tensor indices in pack order: alignment descending, then source order.
pub fn pack_order(catalog: &Catalog) -> Vec<usize> {
    let mut order: Vec<usize> = (0..catalog.tensors.len()).collect();
    order.sort_by_key(|&i| {
        let t = &catalog.tensors[i];
        (std::cmp::Reverse(t.dtype.alignment()), t.file, t.start)
    });
    order
}

pub fn add(tree: &mut Tree, catalog: &Catalog) {
    let raw = tree.dir_path("raw");
    let pack: Vec<Entry> = pack_order(catalog)
        .into_iter()
        .map(|i| entry(catalog, i))
        .collect();
    let source = source_json(catalog, catalog.tensor_files());
    tree.add_file(raw, "model", EXT, safetensors_file("raw", &source, pack));
    for &f in &catalog.side_files {
        let name = catalog.files[f].name.clone();
        tree.add_file(
            raw,
            &name,
            "",
            crate::view::VFile::new([Segment::whole(&catalog.files, f)]),
        );
    }

    let dir = tree.dir(raw, "tensors");
    let per_file: Vec<String> = (0..catalog.files.len())
        .map(|f| source_json(catalog, [f]))
        .collect();
    for (i, t) in catalog.tensors.iter().enumerate() {
        let file = safetensors_file("raw/tensors", &per_file[t.file], vec![entry(catalog, i)]);
        tree.add_file(dir, &escape(&t.name, EXT), EXT, file);
    }
}
