//! Views: the virtual files built from a catalog.
//!
//! A virtual file is a list of [`Segment`]s whose lengths are known before
//! any byte is read:
//! - [`Segment::Bytes`]: bytes held in memory (Gyro headers, generated JSON);
//! - [`Segment::Source`]: an [`Extent`] of a source file, copied as is;
//! - [`Segment::Computed`]: bytes produced on demand by a [`Compute`] (a
//!   dequantization, a slice, a transpose, a stream of JSON) for exactly the
//!   requested range.
//!
//! Nothing per tensor is built at mount. [`build`] decides, from the catalog,
//! what each view holds, in compact form ([`Views`]: the raw view's pack
//! order, the converted views' per-tensor [`converted::Plan`]s and shards, the
//! expert split), and lays out the [`Tree`] of names, where every file is a
//! [`FileRef`]. [`Views::file`] turns a `FileRef` into a [`VFile`] when the
//! kernel first asks for it (the volume caches the result).
//!
//! One module per view kind: `raw` (lossless files), `converted` (`bf16/`:
//! dequantized/converted, with `gpt_oss` bridging the two gpt-oss layouts),
//! `experts` (one file per MoE expert, in `raw/` and `bf16/`), `manifest`
//! (`manifest.json`, streamed). `tree` holds the names; `compute` the
//! computed segments; `header` writes the Gyro safetensors header every
//! virtual safetensors file starts with, and `record` the typed provenance
//! record of each of its tensors; `names` escapes tensor names into file
//! names. Reading is done by `crate::read`.

pub mod compute;
pub mod converted;
pub mod experts;
pub mod gguf_hf;
pub mod gpt_oss;
pub mod header;
pub mod manifest;
pub mod names;
pub mod nanogpt;
pub mod raw;
pub mod record;
pub mod tree;

use std::fmt;
use std::sync::Arc;

use crate::catalog::{Catalog, Extent, FileId, Files, TensorId};
use crate::dtype::Dtype;
use crate::error::{ReadError, ViewError};
pub use tree::{NodeId, NodeKind, ROOT, Tree};

/// Bytes computed on demand. `read_at` must fill `out` with bytes
/// `[offset, offset + out.len())` of its output, which is `len()` bytes long,
/// and must give the same bytes every time.
pub trait Compute: Send + Sync + fmt::Debug {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError>;
    /// The source ranges it reads (to know which files depend on which
    /// source file).
    fn extents(&self) -> Vec<Extent>;
    /// The source ranges that reading output bytes `within..within + len`
    /// touches: what read-ahead of a remote source fetches ahead of a
    /// reader. `None` (the default) when not worked out: such a range gets
    /// no read-ahead. Only a hint: the read itself fetches what its kernel
    /// borrows, whatever this says.
    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        let _ = (within, len);
        None
    }
}

/// A contiguous piece of a virtual file.
#[derive(Debug, Clone)]
pub enum Segment {
    Bytes(Arc<[u8]>),
    Source(Extent),
    Computed(Arc<dyn Compute>),
}

impl Segment {
    pub fn len(&self) -> u64 {
        match self {
            Segment::Bytes(b) => b.len() as u64,
            Segment::Source(e) => e.len,
            Segment::Computed(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes `[offset, offset + len)` of this segment, as a segment (a
    /// computed one becomes a window on the same computation).
    pub fn slice(&self, offset: u64, len: u64) -> Segment {
        debug_assert!(offset + len <= self.len());
        match self {
            Segment::Bytes(b) => {
                Segment::Bytes(Arc::from(&b[offset as usize..(offset + len) as usize]))
            }
            Segment::Source(e) => Segment::Source(e.sub(offset, len)),
            Segment::Computed(c) => Segment::Computed(Arc::new(compute::Window {
                inner: c.clone(),
                offset,
                len,
            })),
        }
    }
}

/// A virtual file: segments laid end to end.
#[derive(Debug, Clone)]
pub struct VFile {
    pub size: u64,
    segments: Vec<Segment>,
    /// Offset of each segment in the file (same length as `segments`).
    starts: Vec<u64>,
}

impl VFile {
    /// Build a file from segments, dropping empty ones and merging source
    /// ranges that continue each other (a lossless pack of a whole shard
    /// becomes one segment, so large reads borrow straight from the map).
    pub fn new(segments: impl IntoIterator<Item = Segment>) -> VFile {
        let mut merged: Vec<Segment> = Vec::new();
        for seg in segments {
            if seg.is_empty() {
                continue;
            }
            if let (Some(Segment::Source(a)), Segment::Source(b)) = (merged.last_mut(), &seg)
                && a.file == b.file
                && a.end() == b.offset
            {
                a.len += b.len;
                continue;
            }
            merged.push(seg);
        }
        let mut starts = Vec::with_capacity(merged.len());
        let mut size = 0;
        for s in &merged {
            starts.push(size);
            size += s.len();
        }
        VFile {
            size,
            segments: merged,
            starts,
        }
    }

    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> VFile {
        VFile::new([Segment::Bytes(bytes.into())])
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Bytes this file holds in memory (headers, generated JSON).
    pub fn held_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Bytes(b) => b.len() as u64,
                _ => 0,
            })
            .sum()
    }

    pub fn starts(&self) -> &[u64] {
        &self.starts
    }
}

/// What a file of the tree is made from. Small and `Copy`: the tree holds
/// one per static file, and listings make theirs on the fly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileRef {
    /// A source side file (config, tokenizer, ...), passed through.
    Side(FileId),
    Manifest,
    /// A GGUF source's whole key/value metadata.
    GgufMetadata,
    /// `raw/model.safetensors`.
    RawPack,
    /// `raw/tensors/<name>.safetensors`.
    RawTensor(TensorId),
    /// Shard `shard` of converted view `view` (`bf16/model-0000k-of-...`).
    Shard {
        view: u8,
        shard: u32,
    },
    /// `model.safetensors.index.json` of converted view `view`.
    ShardIndex {
        view: u8,
    },
    /// `config.json` of converted view `view`.
    Config {
        view: u8,
    },
    /// File `index` the mapping of converted view `view` makes (a GGUF
    /// model's tokenizer files, ...).
    Extra {
        view: u8,
        index: u32,
    },
    /// `<view>/tensors/<name>.safetensors`: tensor `index` of converted view `view`.
    ViewTensor {
        view: u8,
        index: u32,
    },
    /// `base.safetensors` of expert split `experts`.
    ExpertBase {
        experts: u8,
    },
    /// Expert file `index` of expert split `experts`.
    Expert {
        experts: u8,
        index: u32,
    },
    /// `registry.json` of expert split `experts`.
    Registry {
        experts: u8,
    },
}

/// The items of a listing directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// `raw/tensors/`: the source tensors.
    RawTensors,
    /// `<view>/tensors/`: the tensors of converted view `view`.
    ViewTensors(u8),
}

impl Listing {
    /// The file of item `i`.
    pub fn file(self, i: u32) -> FileRef {
        match self {
            Listing::RawTensors => FileRef::RawTensor(TensorId(i)),
            Listing::ViewTensors(view) => FileRef::ViewTensor { view, index: i },
        }
    }
}

/// A view's tensors as the expert split sees them: the raw view's (source
/// tensors) or a converted view's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    Raw,
    Converted(u8),
}

/// What every view holds for a source, decided at mount, in compact form.
#[derive(Debug)]
pub struct Views {
    pub raw: raw::RawView,
    pub converted: Vec<converted::ConvertedView>,
    pub experts: Vec<experts::ExpertsView>,
    /// One line per view or tensor left out, and why.
    pub notes: Vec<String>,
}

impl Views {
    /// The name of item `i` of `listing` (before escaping).
    pub fn item_name<'a>(&'a self, catalog: &'a Catalog, listing: Listing, i: u32) -> &'a str {
        match listing {
            Listing::RawTensors => &catalog.tensor(TensorId(i)).name,
            Listing::ViewTensors(v) => self.converted[v as usize].plans[i as usize].name(catalog),
        }
    }

    /// Build the bytes of `f` (`tree`: to name raw tensor files in the manifest).
    pub fn file(&self, catalog: &Arc<Catalog>, tree: &Tree, f: FileRef) -> VFile {
        match f {
            FileRef::Side(id) => VFile::new([Segment::Source(catalog.files.whole(id))]),
            FileRef::Manifest => {
                let renamed = tree.renamed(Listing::RawTensors);
                manifest::file(catalog, &self.notes, renamed)
            }
            FileRef::GgufMetadata => manifest::gguf_metadata(catalog),
            FileRef::RawPack => self.raw.pack_file(catalog),
            FileRef::RawTensor(t) => self.raw.tensor_file(catalog, t),
            FileRef::Shard { view, shard } => {
                self.converted[view as usize].shard_file(catalog, shard)
            }
            FileRef::ShardIndex { view } => self.converted[view as usize].index_file(catalog),
            FileRef::Config { view } => self.converted[view as usize].config_file(),
            FileRef::Extra { view, index } => VFile::from_bytes(Arc::clone(
                &self.converted[view as usize].extra[index as usize].1,
            )),
            FileRef::ViewTensor { view, index } => {
                self.converted[view as usize].tensor_file(catalog, index)
            }
            FileRef::ExpertBase { experts } => {
                self.experts[experts as usize].base_file(catalog, self)
            }
            FileRef::Expert { experts, index } => {
                self.experts[experts as usize].expert_file(catalog, self, index)
            }
            FileRef::Registry { experts } => {
                self.experts[experts as usize].registry_file(catalog, self)
            }
        }
    }

    /// Bytes of tensor data in all views (each tensor counted once per file
    /// holding it), for statfs.
    pub fn data_bytes(&self, catalog: &Catalog) -> u64 {
        let raw = catalog.tensor_bytes();
        let packs = if self.raw.has_pack() { 2 } else { 1 };
        let converted: u64 = self
            .converted
            .iter()
            .map(|v| {
                2 * v
                    .plans
                    .iter()
                    .map(|p| p.info(catalog, v.dtype).2)
                    .sum::<u64>()
            })
            .sum();
        raw * packs + converted
    }

    /// The entry of item `i` of `parent` (a source tensor, or a converted
    /// view's tensor).
    pub fn item_entry(&self, catalog: &Catalog, parent: Parent, i: u32) -> header::Entry {
        match parent {
            Parent::Raw => raw::entry(catalog, TensorId(i)),
            Parent::Converted(v) => {
                let v = &self.converted[v as usize];
                v.plans[i as usize].entry(catalog, v.dtype)
            }
        }
    }

    /// Does any byte of `f` come from source file `id`? (Without building it.)
    pub fn reads(&self, catalog: &Catalog, f: FileRef, id: FileId) -> bool {
        let of = |t: TensorId| catalog.tensor(t).extent.file == id;
        match f {
            FileRef::Side(s) => s == id,
            FileRef::Manifest
            | FileRef::GgufMetadata
            | FileRef::ShardIndex { .. }
            | FileRef::Config { .. }
            | FileRef::Extra { .. }
            | FileRef::Registry { .. } => false,
            FileRef::RawPack => catalog.tensors.iter().any(|t| t.extent.file == id),
            FileRef::RawTensor(t) => of(t),
            FileRef::Shard { view, shard } => {
                let v = &self.converted[view as usize];
                v.shards[shard as usize]
                    .iter()
                    .any(|&i| v.plans[i as usize].sources().any(of))
            }
            FileRef::ViewTensor { view, index } => self.converted[view as usize].plans
                [index as usize]
                .sources()
                .any(of),
            FileRef::ExpertBase { experts } | FileRef::Expert { experts, .. } => {
                let x = &self.experts[experts as usize];
                let index = match f {
                    FileRef::Expert { index, .. } => Some(index),
                    _ => None,
                };
                x.items(index).any(|item| match x.parent {
                    Parent::Raw => of(TensorId(item)),
                    Parent::Converted(v) => self.converted[v as usize].plans[item as usize]
                        .sources()
                        .any(of),
                })
            }
        }
    }
}

/// Decide every view of `catalog` and lay out the tree, with one converted
/// view per dtype of `dtypes` (BF16, F16, F32: `bf16/`, `f16/`, `f32/`).
/// Views that cannot be built for this source are left out; `Views::notes`
/// says which and why (they also go into `manifest.json`).
pub fn build(catalog: &Catalog, dtypes: &[Dtype]) -> (Views, Tree) {
    let mut tree = Tree::new();
    let mut notes = catalog.notes.clone();
    let raw = raw::RawView::new(catalog, &mut notes);
    raw.add(&mut tree, catalog);
    let moe = experts::moe(catalog).filter(|m| {
        let ok = m.experts <= experts::MAX_EXPERTS;
        if !ok {
            notes.push(format!(
                "experts/ is left out: the config says {} experts per layer, more than {}",
                m.experts,
                experts::MAX_EXPERTS
            ));
        }
        ok
    });
    let mut expert_splits = Vec::new();
    if let Some(moe) = moe
        && let Some(x) = experts::ExpertsView::new(Parent::Raw, raw_items(catalog), moe, &mut notes)
    {
        expert_splits.push(x);
    }
    let mut converted = Vec::new();
    match converted::Conversion::new(catalog, &mut notes) {
        Ok(conversion) => {
            for &dtype in dtypes {
                let k = converted.len() as u8;
                let v = converted::ConvertedView::new(catalog, &conversion, dtype);
                if let Some(moe) = moe
                    && let Some(x) = experts::ExpertsView::new(
                        Parent::Converted(k),
                        v.items(catalog),
                        moe,
                        &mut notes,
                    )
                {
                    expert_splits.push(x);
                }
                converted.push(v);
            }
        }
        Err(why) => {
            let dirs: Vec<String> = dtypes
                .iter()
                .filter_map(|&d| converted::dtype_names(d))
                .map(|(dir, _)| format!("{dir}/"))
                .collect();
            notes.push(unavailable(&dirs.join(", "), &why));
        }
    }
    for (k, v) in converted.iter().enumerate() {
        v.add(&mut tree, catalog, k as u8);
    }
    for (k, x) in expert_splits.iter().enumerate() {
        let dir = match x.parent {
            Parent::Raw => "raw/experts".to_string(),
            Parent::Converted(v) => format!("{}/experts", converted[v as usize].dir),
        };
        x.add(&mut tree, &dir, k as u8);
    }
    manifest::add(&mut tree, catalog);
    tree.finish();
    let views = Views {
        raw,
        converted,
        experts: expert_splits,
        notes,
    };
    (views, tree)
}

/// The source tensors as items of the expert split (name, dtype, shape, bytes).
fn raw_items(catalog: &Catalog) -> Vec<experts::ItemInfo<'_>> {
    catalog
        .tensors
        .iter()
        .map(|t| experts::ItemInfo {
            name: &t.name,
            dtype: t.dtype,
            shape: std::borrow::Cow::Borrowed(&t.shape),
            len: t.len(),
        })
        .collect()
}

/// The note for a view that cannot be built.
fn unavailable(view: &str, why: &ViewError) -> String {
    format!("{view} is not available for this source: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_contiguous_source_ranges() {
        let src = |file, offset, len| {
            Segment::Source(Extent {
                file: crate::catalog::FileId(file),
                offset,
                len,
            })
        };
        let f = VFile::new([
            Segment::Bytes(Arc::from(&b"hd"[..])),
            src(0, 10, 5),
            src(0, 15, 5),
            Segment::Bytes(Arc::from(&b""[..])),
            src(1, 20, 1),
        ]);
        assert_eq!(f.size, 13);
        assert_eq!(f.segments().len(), 3);
        assert_eq!(f.starts(), &[0, 2, 12]);
    }
}
