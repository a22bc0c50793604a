//! The shape of the mounted tree: directories, file names and node ids,
//! without the files' contents.
//!
//! Two kinds of directories:
//! - *static* directories (`/`, `raw/`, `bf16/`, `experts/`, ...) with a
//!   handful of named children each, held as nodes;
//! - *listings*, the per-tensor directories (`raw/tensors/`, `bf16/tensors/`)
//!   that can hold millions of files. A listing holds no node per child: its
//!   children have the consecutive ids `first..first + len`, child `i` is
//!   item `i` of the view (a tensor), its name is computed from the tensor's
//!   name when asked for ([`names::escape`]), and names are found by a
//!   sorted table of name hashes (16 bytes per child).
//!
//! A file is a [`FileRef`]: what it is made from. Its bytes (a [`VFile`]) are
//! built only when the kernel asks for them, by [`Views::file`].
//!
//! Static directories list their children sorted by name; listings list them
//! in source order (the order of the tensors in the source).
//!
//! [`VFile`]: crate::view::VFile
//! [`Views::file`]: crate::view::Views::file

use std::borrow::Cow;
use std::collections::HashMap;

use crate::catalog::Catalog;
use crate::view::names::{escape, fnv1a64};
use crate::view::{FileRef, Listing, Views};

pub type NodeId = usize;

/// The root directory's id.
pub const ROOT: NodeId = 0;

/// Extension of every file in a listing.
pub const EXT: &str = ".safetensors";

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File(FileRef),
}

#[derive(Debug)]
enum StaticKind {
    /// Children, sorted by name once the tree is finished.
    Dir(Vec<NodeId>),
    File(FileRef),
    /// Index into [`Tree::listings`].
    Listing(usize),
}

#[derive(Debug)]
struct StaticNode {
    name: String,
    parent: NodeId,
    kind: StaticKind,
}

/// A directory whose children are the items of a view.
#[derive(Debug)]
struct ListingDir {
    node: NodeId,
    listing: Listing,
    /// Id of child 0 (set by `finish`).
    first: NodeId,
    len: u32,
    /// (hash of the child's file name, child), sorted.
    by_hash: Vec<(u64, u32)>,
    /// Names that differ from `escape(item name) + EXT`: shortened names
    /// whose hashes collide get `%~2`, `%~3`, ... (in source order).
    renamed: HashMap<u32, String>,
}

/// The whole mounted tree.
#[derive(Debug)]
pub struct Tree {
    nodes: Vec<StaticNode>,
    index: HashMap<(NodeId, String), NodeId>,
    listings: Vec<ListingDir>,
    /// Subdirectory count of each static node (for link counts).
    subdirs: Vec<u32>,
    /// Static nodes plus every listing's children.
    total: usize,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

impl Tree {
    pub fn new() -> Tree {
        Tree {
            nodes: vec![StaticNode {
                name: String::new(),
                parent: ROOT,
                kind: StaticKind::Dir(Vec::new()),
            }],
            index: HashMap::new(),
            listings: Vec::new(),
            subdirs: Vec::new(),
            total: 1,
        }
    }

    // ---- building ----

    /// The directory `name` under `parent`, created if needed.
    pub fn dir(&mut self, parent: NodeId, name: &str) -> NodeId {
        if let Some(id) = self.index.get(&(parent, name.to_string())) {
            return *id;
        }
        self.push(parent, name.to_string(), StaticKind::Dir(Vec::new()))
    }

    /// The directory at `path` (created along the way).
    pub fn dir_path(&mut self, path: &str) -> NodeId {
        path.split('/')
            .filter(|c| !c.is_empty())
            .fold(ROOT, |at, name| self.dir(at, name))
    }

    /// Add a file (names are unique within a static directory by
    /// construction; a repeated name is a bug in a view).
    pub fn add_file(&mut self, parent: NodeId, name: &str, file: FileRef) -> NodeId {
        debug_assert!(
            !self.index.contains_key(&(parent, name.to_string())),
            "{name} added twice"
        );
        self.push(parent, name.to_string(), StaticKind::File(file))
    }

    /// Add a listing directory `name` under `parent` whose children are the
    /// items of `listing`, named by `item_name` (escaped, with [`EXT`]).
    pub fn add_listing<'n>(
        &mut self,
        parent: NodeId,
        name: &str,
        listing: Listing,
        len: u32,
        item_name: impl Fn(u32) -> &'n str,
    ) -> NodeId {
        let mut by_hash = Vec::with_capacity(len as usize);
        let mut renamed = HashMap::new();
        for i in 0..len {
            let file = child_name(item_name(i), None);
            by_hash.push((fnv1a64(file.as_bytes()), i));
        }
        by_hash.sort_unstable();
        // Equal hashes: different names (a true hash collision, resolved at
        // lookup by comparing names), or the same shortened name (two long
        // tensor names cut to the same prefix and hash): rename the later.
        let mut k = 0;
        while k < by_hash.len() {
            let mut end = k + 1;
            while end < by_hash.len() && by_hash[end].0 == by_hash[k].0 {
                end += 1;
            }
            if end - k > 1 {
                let mut group: Vec<u32> = by_hash[k..end].iter().map(|e| e.1).collect();
                group.sort_unstable();
                let mut seen: HashMap<String, u32> = HashMap::new();
                for i in group {
                    let base = child_name(item_name(i), None).into_owned();
                    let n = seen.entry(base.clone()).or_insert(0);
                    *n += 1;
                    if *n > 1 {
                        let stem = base.strip_suffix(EXT).unwrap_or(&base);
                        renamed.insert(i, format!("{stem}%~{n}{EXT}"));
                    }
                }
            }
            k = end;
        }
        for (&i, name) in &renamed {
            by_hash.push((fnv1a64(name.as_bytes()), i));
        }
        by_hash.sort_unstable();
        let node = self.push(
            parent,
            name.to_string(),
            StaticKind::Listing(self.listings.len()),
        );
        self.listings.push(ListingDir {
            node,
            listing,
            first: 0,
            len,
            by_hash,
            renamed,
        });
        node
    }

    fn push(&mut self, parent: NodeId, name: String, kind: StaticKind) -> NodeId {
        let id = self.nodes.len();
        self.index.insert((parent, name.clone()), id);
        self.nodes.push(StaticNode { name, parent, kind });
        match &mut self.nodes[parent].kind {
            StaticKind::Dir(c) => c.push(id),
            _ => panic!("tree builder added a child to a file or listing"),
        }
        id
    }

    /// Sort static directories by name (byte order), count subdirectories
    /// and give listings their id ranges.
    pub fn finish(&mut self) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        let is_dir: Vec<bool> = self
            .nodes
            .iter()
            .map(|n| !matches!(n.kind, StaticKind::File(_)))
            .collect();
        self.subdirs = vec![0; self.nodes.len()];
        for (id, node) in self.nodes.iter_mut().enumerate() {
            if let StaticKind::Dir(c) = &mut node.kind {
                c.sort_by(|a, b| names[*a].as_bytes().cmp(names[*b].as_bytes()));
                self.subdirs[id] = c.iter().filter(|&&k| is_dir[k]).count() as u32;
            }
        }
        let mut next = self.nodes.len();
        for l in &mut self.listings {
            l.first = next;
            next += l.len as usize;
        }
        self.total = next;
    }

    // ---- reading ----

    /// Every node, static and listed.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The listing holding child `id`, and the child's item index.
    fn listed(&self, id: NodeId) -> Option<(&ListingDir, u32)> {
        if id < self.nodes.len() || id >= self.total {
            return None;
        }
        let k = self.listings.partition_point(|l| l.first <= id) - 1;
        let l = &self.listings[k];
        Some((l, (id - l.first) as u32))
    }

    pub fn kind(&self, id: NodeId) -> Option<NodeKind> {
        if let Some(n) = self.nodes.get(id) {
            return Some(match n.kind {
                StaticKind::File(f) => NodeKind::File(f),
                _ => NodeKind::Dir,
            });
        }
        let (l, i) = self.listed(id)?;
        Some(NodeKind::File(l.listing.file(i)))
    }

    pub fn parent(&self, id: NodeId) -> Option<NodeId> {
        match self.nodes.get(id) {
            Some(n) => Some(n.parent),
            None => self.listed(id).map(|(l, _)| l.node),
        }
    }

    /// The name of node `id`.
    pub fn name<'a>(&'a self, catalog: &'a Catalog, views: &'a Views, id: NodeId) -> Cow<'a, str> {
        if let Some(n) = self.nodes.get(id) {
            return Cow::Borrowed(&n.name);
        }
        match self.listed(id) {
            Some((l, i)) => match l.renamed.get(&i) {
                Some(n) => Cow::Borrowed(n),
                None => child_name(views.item_name(catalog, l.listing, i), None),
            },
            None => Cow::Borrowed(""),
        }
    }

    /// The child `name` of directory `parent`.
    pub fn lookup(
        &self,
        catalog: &Catalog,
        views: &Views,
        parent: NodeId,
        name: &str,
    ) -> Option<NodeId> {
        let node = self.nodes.get(parent)?;
        match node.kind {
            StaticKind::Dir(_) => self.index.get(&(parent, name.to_string())).copied(),
            StaticKind::Listing(k) => {
                let l = &self.listings[k];
                let h = fnv1a64(name.as_bytes());
                let from = l.by_hash.partition_point(|e| e.0 < h);
                l.by_hash[from..]
                    .iter()
                    .take_while(|e| e.0 == h)
                    .map(|e| l.first + e.1 as usize)
                    .find(|&id| self.name(catalog, views, id) == name)
            }
            StaticKind::File(_) => None,
        }
    }

    /// Number of children of directory `id` (`None` if it is not one).
    pub fn child_count(&self, id: NodeId) -> Option<usize> {
        match &self.nodes.get(id)?.kind {
            StaticKind::Dir(c) => Some(c.len()),
            StaticKind::Listing(k) => Some(self.listings[*k].len as usize),
            StaticKind::File(_) => None,
        }
    }

    /// Child number `k` of directory `id`, in listing order.
    pub fn child(&self, id: NodeId, k: usize) -> Option<NodeId> {
        match &self.nodes.get(id)?.kind {
            StaticKind::Dir(c) => c.get(k).copied(),
            StaticKind::Listing(n) => {
                let l = &self.listings[*n];
                (k < l.len as usize).then_some(l.first + k)
            }
            StaticKind::File(_) => None,
        }
    }

    /// Number of subdirectories of directory `id`.
    pub fn subdirs(&self, id: NodeId) -> u32 {
        self.subdirs.get(id).copied().unwrap_or(0)
    }

    /// Resolve a `/`-separated path relative to the root (`""` is the root).
    pub fn resolve(&self, catalog: &Catalog, views: &Views, path: &str) -> Option<NodeId> {
        path.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .try_fold(ROOT, |at, name| self.lookup(catalog, views, at, name))
    }

    /// Path of `id` relative to the root.
    pub fn path(&self, catalog: &Catalog, views: &Views, mut id: NodeId) -> String {
        let mut parts = Vec::new();
        while id != ROOT {
            parts.push(self.name(catalog, views, id).into_owned());
            match self.parent(id) {
                Some(p) => id = p,
                None => break,
            }
        }
        parts.reverse();
        parts.join("/")
    }

    /// The items of `listing` whose file names are not `escape(name) + EXT`.
    pub fn renamed(&self, listing: Listing) -> HashMap<u32, String> {
        self.listings
            .iter()
            .find(|l| l.listing == listing)
            .map(|l| l.renamed.clone())
            .unwrap_or_default()
    }

    /// Every file, with its id: static files, then each listing's children.
    pub fn files(&self) -> impl Iterator<Item = (NodeId, FileRef)> + '_ {
        let statics = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(id, n)| match n.kind {
                StaticKind::File(f) => Some((id, f)),
                _ => None,
            });
        let listed = self
            .listings
            .iter()
            .flat_map(|l| (0..l.len).map(move |i| (l.first + i as usize, l.listing.file(i))));
        statics.chain(listed)
    }
}

/// The file name of a listing item named `item` (`renamed`: its `%~N` name).
fn child_name<'a>(item: &'a str, renamed: Option<&'a str>) -> Cow<'a, str> {
    if let Some(r) = renamed {
        return Cow::Borrowed(r);
    }
    let stem = escape(item, EXT);
    Cow::Owned(format!("{stem}{EXT}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_names_escape() {
        assert_eq!(child_name("a/b", None), "a%2Fb.safetensors");
        assert_eq!(
            child_name("x", Some("x%~2.safetensors")),
            "x%~2.safetensors"
        );
    }
}
