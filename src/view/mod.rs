//! Views: the tree of virtual files built from a catalog.
//!
//! A virtual file is a list of [`Segment`]s whose lengths are all known when
//! the tree is built, so sizes are exact before any byte is read:
//! - [`Segment::Bytes`]: bytes held in memory (Gyro headers, generated JSON);
//! - [`Segment::Source`]: an [`Extent`] of a mapped source file, served
//!   zero-copy;
//! - [`Segment::Computed`]: bytes produced on demand by a [`Compute`] (a
//!   dequantization, a slice, a transpose) for exactly the requested range.
//!
//! One module per view kind adds its part of the tree: `manifest`
//! (`manifest.json`), `raw` (lossless files), `bf16` (dequantized/converted,
//! with `gpt_oss` bridging the two gpt-oss layouts), `experts` (one file per
//! MoE expert, in `raw/` and `bf16/`). `compute` holds the
//! computed segments; `header` writes the Gyro safetensors header every
//! virtual safetensors file starts with, and `record` the typed provenance
//! record of each of its tensors; `names` escapes tensor names into file
//! names. Reading is done by `crate::read`.

pub mod bf16;
pub mod compute;
pub mod experts;
pub mod gpt_oss;
pub mod header;
pub mod manifest;
pub mod names;
pub mod raw;
pub mod record;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::catalog::{Catalog, Extent, FileId, Files};
use crate::error::{ReadError, ViewError};

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

    pub fn starts(&self) -> &[u64] {
        &self.starts
    }

    /// Does any byte of this file come from source file `id`?
    pub fn reads(&self, id: FileId) -> bool {
        self.segments.iter().any(|s| match s {
            Segment::Bytes(_) => false,
            Segment::Source(e) => e.file == id,
            Segment::Computed(c) => c.extents().iter().any(|e| e.file == id),
        })
    }
}

pub type NodeId = usize;

/// The root directory's id.
pub const ROOT: NodeId = 0;

#[derive(Debug)]
pub enum NodeKind {
    /// Children, sorted by name once the tree is finished.
    Dir(Vec<NodeId>),
    File(VFile),
}

#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub parent: NodeId,
    pub kind: NodeKind,
}

/// The whole mounted tree. Node ids are dense indices (the FUSE adapter uses
/// id + 1 as the inode number).
#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Node>,
    index: HashMap<(NodeId, String), NodeId>,
    /// Subdirectory count of each directory (for link counts), set by `finish`.
    subdirs: Vec<u32>,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

impl Tree {
    pub fn new() -> Tree {
        Tree {
            nodes: vec![Node {
                name: String::new(),
                parent: ROOT,
                kind: NodeKind::Dir(Vec::new()),
            }],
            index: HashMap::new(),
            subdirs: Vec::new(),
        }
    }

    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn file(&self, id: NodeId) -> Option<&VFile> {
        match &self.nodes.get(id)?.kind {
            NodeKind::File(f) => Some(f),
            NodeKind::Dir(_) => None,
        }
    }

    pub fn children(&self, id: NodeId) -> Option<&[NodeId]> {
        match &self.nodes.get(id)?.kind {
            NodeKind::Dir(c) => Some(c),
            NodeKind::File(_) => None,
        }
    }

    pub fn lookup(&self, parent: NodeId, name: &str) -> Option<NodeId> {
        self.index.get(&(parent, name.to_string())).copied()
    }

    /// Resolve a `/`-separated path relative to the root (`""` is the root).
    pub fn resolve(&self, path: &str) -> Option<NodeId> {
        path.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .try_fold(ROOT, |at, name| self.lookup(at, name))
    }

    /// Path of `id` relative to the root.
    pub fn path(&self, mut id: NodeId) -> String {
        let mut parts = Vec::new();
        while id != ROOT {
            parts.push(self.nodes[id].name.as_str());
            id = self.nodes[id].parent;
        }
        parts.reverse();
        parts.join("/")
    }

    /// The directory `name` under `parent`, created if needed.
    pub fn dir(&mut self, parent: NodeId, name: &str) -> NodeId {
        if let Some(id) = self.lookup(parent, name) {
            return id;
        }
        self.push(parent, name.to_string(), NodeKind::Dir(Vec::new()))
    }

    /// The directory at `path` (created along the way).
    pub fn dir_path(&mut self, path: &str) -> NodeId {
        path.split('/')
            .filter(|c| !c.is_empty())
            .fold(ROOT, |at, name| self.dir(at, name))
    }

    /// Add a file. If `stem + ext` is taken (possible only for shortened
    /// names whose hashes collide), `%~2`, `%~3`, ... is inserted before
    /// `ext`, so two entries never share a name.
    pub fn add_file(&mut self, parent: NodeId, stem: &str, ext: &str, file: VFile) -> NodeId {
        let mut name = format!("{stem}{ext}");
        let mut n = 2;
        while self.lookup(parent, &name).is_some() {
            name = format!("{stem}%~{n}{ext}");
            n += 1;
        }
        self.push(parent, name, NodeKind::File(file))
    }

    fn push(&mut self, parent: NodeId, name: String, kind: NodeKind) -> NodeId {
        let id = self.nodes.len();
        self.index.insert((parent, name.clone()), id);
        self.nodes.push(Node { name, parent, kind });
        match &mut self.nodes[parent].kind {
            NodeKind::Dir(c) => c.push(id),
            NodeKind::File(_) => panic!("tree builder added a child to a file"),
        }
        id
    }

    /// Sort every directory's children by name (byte order) and count
    /// subdirectories.
    fn finish(&mut self) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        let is_dir: Vec<bool> = self
            .nodes
            .iter()
            .map(|n| matches!(n.kind, NodeKind::Dir(_)))
            .collect();
        self.subdirs = vec![0; self.nodes.len()];
        for (id, node) in self.nodes.iter_mut().enumerate() {
            if let NodeKind::Dir(c) = &mut node.kind {
                c.sort_by(|a, b| names[*a].as_bytes().cmp(names[*b].as_bytes()));
                self.subdirs[id] = c.iter().filter(|&&k| is_dir[k]).count() as u32;
            }
        }
    }

    /// Number of subdirectories of directory `id`.
    pub fn subdirs(&self, id: NodeId) -> u32 {
        self.subdirs.get(id).copied().unwrap_or(0)
    }

    /// Every file, with its id.
    pub fn files(&self) -> impl Iterator<Item = (NodeId, &VFile)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(id, n)| match &n.kind {
                NodeKind::File(f) => Some((id, f)),
                NodeKind::Dir(_) => None,
            })
    }

    /// Total bytes of all files.
    pub fn total_size(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| match &n.kind {
                NodeKind::File(f) => f.size,
                NodeKind::Dir(_) => 0,
            })
            .sum()
    }
}

/// Build the whole tree for a catalog. Views that cannot be built for this
/// source are left out; the returned notes say which and why (they also go
/// into `manifest.json`).
pub fn build(catalog: &Catalog) -> (Tree, Vec<String>) {
    let mut tree = Tree::new();
    let mut notes = Vec::new();
    raw::add(&mut tree, catalog);
    let moe = experts::moe(catalog);
    if let Some(moe) = moe {
        let items: Vec<_> = catalog
            .tensor_ids()
            .map(|(id, t)| experts::Item {
                entry: raw::entry(catalog, id),
                files: vec![t.extent.file],
            })
            .collect();
        experts::add(&mut tree, catalog, "raw", &items, moe);
    }
    let built = bf16::tensors(catalog, &mut notes)
        .and_then(|ts| bf16::add(&mut tree, catalog, &ts).map(|()| ts));
    match built {
        Ok(ts) => {
            if let Some(moe) = moe {
                let items: Vec<_> = ts
                    .into_iter()
                    .map(|t| experts::Item {
                        files: t.files(catalog),
                        entry: t.entry,
                    })
                    .collect();
                experts::add(&mut tree, catalog, "bf16", &items, moe);
            }
        }
        Err(why) => notes.push(unavailable("bf16/", &why)),
    }
    manifest::add(&mut tree, catalog, &notes);
    tree.finish();
    (tree, notes)
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

    #[test]
    fn tree_paths_and_collisions() {
        let mut t = Tree::new();
        let d = t.dir_path("raw/tensors");
        let a = t.add_file(d, "x", ".st", VFile::from_bytes(vec![1u8]));
        let b = t.add_file(d, "x", ".st", VFile::from_bytes(vec![2u8]));
        t.finish();
        assert_eq!(t.path(a), "raw/tensors/x.st");
        assert_eq!(t.path(b), "raw/tensors/x%~2.st");
        assert_eq!(t.resolve("raw/tensors/x.st"), Some(a));
        assert_eq!(t.resolve("raw//tensors/"), Some(d));
        assert_eq!(t.resolve("nope"), None);
    }
}
