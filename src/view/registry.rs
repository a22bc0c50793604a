//! The views of a source: which exist, how each lays out its files in the
//! tree, and how a file of the tree is turned into bytes.
//!
//! A view is a module with a `build` function and a type implementing
//! [`View`]. [`BUILDERS`] lists the builders in the order they run: a view
//! may build on the ones before it (the expert split on `raw/` and `bf16/`,
//! through their [`Tensors`]). Adding a view is one new module plus one line
//! in [`BUILDERS`].
//!
//! A file of the tree is a [`FileRef`]: a source side file passed through,
//! or file `(kind, index)` of view `view`, where the kinds are the view's
//! own (`raw/model.safetensors`, `raw/tensors/<name>`, ...). It is small and
//! `Copy`: the tree holds one per static file, listings make theirs on the
//! fly, and [`Views::file`] builds the bytes when the kernel first asks.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use crate::catalog::{Catalog, FileId};
use crate::dtype::Dtype;
use crate::view::header::Entry;
use crate::view::tree::Tree;
use crate::view::{Segment, VFile, experts, gguf, hf, manifest, raw};

/// Every view's builder, in the order they run (a view may use the views
/// built before it).
#[rustfmt::skip]
pub const BUILDERS: &[fn(&mut Builder)] = &[
    raw::build,
    hf::build,
    gguf::build,
    experts::build,
    manifest::build,
];

/// Index of a view in [`Views`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViewId(pub u8);

/// What a file of the tree is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileRef {
    /// A source side file (config, tokenizer, ...), passed through.
    Side(FileId),
    /// File `index` of kind `kind` of view `view` (the kinds are the view's).
    Of { view: ViewId, kind: u8, index: u32 },
}

/// A listing directory (`raw/tensors/`, `bf16/tensors/`): item `i` is file
/// `(kind, i)` of view `view`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing {
    pub view: ViewId,
    pub kind: u8,
}

impl Listing {
    /// The file of item `i`.
    pub fn file(self, i: u32) -> FileRef {
        FileRef::Of {
            view: self.view,
            kind: self.kind,
            index: i,
        }
    }
}

/// What a view needs to build a file: the catalog, the other views, the tree.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub catalog: &'a Arc<Catalog>,
    pub views: &'a Views,
    pub tree: &'a Tree,
}

/// One view: the files it laid out in the tree, built on demand. (`Any`:
/// a view built on another may look at it as its own type.)
pub trait View: Any + Send + Sync + fmt::Debug {
    /// Build file `(kind, index)` of this view.
    fn file(&self, cx: &Context, kind: u8, index: u32) -> VFile;
    /// Does any byte of file `(kind, index)` come from source file `source`?
    /// (Without building it.)
    fn reads(&self, cx: &Context, kind: u8, index: u32, source: FileId) -> bool;
    /// The name of item `index` of this view's listing `kind` (before
    /// escaping). Only views that add listings are asked.
    fn item_name<'a>(&'a self, catalog: &'a Catalog, kind: u8, index: u32) -> &'a str {
        let _ = (catalog, kind, index);
        ""
    }
    /// Bytes of tensor data in this view's files, for statfs.
    fn data_bytes(&self, catalog: &Catalog) -> u64 {
        let _ = catalog;
        0
    }
    /// The view's tensors, when views built on it may use them.
    fn tensors(&self) -> Option<&dyn Tensors> {
        None
    }
}

/// A view's tensors as the views built on it see them (the expert split).
pub trait Tensors {
    /// The view's directory (`raw`, `bf16`, ...).
    fn dir(&self) -> &str;
    /// How many tensors.
    fn count(&self) -> u32;
    /// Name, dtype, shape and bytes of tensor `i`.
    fn info<'a>(&'a self, catalog: &'a Catalog, i: u32) -> TensorInfo<'a>;
    /// Tensor `i` as an entry of a safetensors file.
    fn entry(&self, catalog: &Catalog, i: u32) -> Entry;
    /// The source files tensor `i` reads.
    fn source_files(&self, catalog: &Catalog, i: u32) -> Vec<FileId>;
}

/// What a view's tensor is: name, dtype, shape, bytes.
#[derive(Debug, Clone)]
pub struct TensorInfo<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: Cow<'a, [u64]>,
    pub len: u64,
}

/// Every view of a source, decided at mount, in compact form.
#[derive(Debug)]
pub struct Views {
    views: Vec<Box<dyn View>>,
    /// One line per view or tensor left out, and why.
    pub notes: Vec<String>,
    /// `raw/tensors/`, whose file names the manifest records.
    raw_tensors: Option<Listing>,
}

impl Views {
    /// View `id`.
    pub fn get(&self, id: ViewId) -> &dyn View {
        self.views[id.0 as usize].as_ref()
    }

    /// The first view of type `T`.
    pub fn find<T: View>(&self) -> Option<&T> {
        self.views.iter().find_map(|v| {
            let any: &dyn Any = v.as_ref();
            any.downcast_ref::<T>()
        })
    }

    /// The listing `raw/tensors/`.
    pub fn raw_tensors(&self) -> Option<Listing> {
        self.raw_tensors
    }

    /// Build the bytes of `f`.
    pub fn file(&self, catalog: &Arc<Catalog>, tree: &Tree, f: FileRef) -> VFile {
        match f {
            FileRef::Side(id) => VFile::new([Segment::Source(catalog.files.whole(id))]),
            FileRef::Of { view, kind, index } => {
                let cx = Context {
                    catalog,
                    views: self,
                    tree,
                };
                self.get(view).file(&cx, kind, index)
            }
        }
    }

    /// Does any byte of `f` come from source file `id`? (Without building it.)
    pub fn reads(&self, catalog: &Arc<Catalog>, tree: &Tree, f: FileRef, id: FileId) -> bool {
        match f {
            FileRef::Side(s) => s == id,
            FileRef::Of { view, kind, index } => {
                let cx = Context {
                    catalog,
                    views: self,
                    tree,
                };
                self.get(view).reads(&cx, kind, index, id)
            }
        }
    }

    /// The name of item `i` of `listing` (before escaping).
    pub fn item_name<'a>(&'a self, catalog: &'a Catalog, listing: Listing, i: u32) -> &'a str {
        self.get(listing.view).item_name(catalog, listing.kind, i)
    }

    /// Bytes of tensor data in all views (each tensor counted once per file
    /// holding it), for statfs.
    pub fn data_bytes(&self, catalog: &Catalog) -> u64 {
        self.views.iter().map(|v| v.data_bytes(catalog)).sum()
    }
}

/// What a view's `build` function works with: the catalog, the tree to lay
/// its files out in, the notes, and the views built before it.
pub struct Builder<'a> {
    pub catalog: &'a Catalog,
    pub tree: &'a mut Tree,
    /// One line per view or tensor left out, and why.
    pub notes: Vec<String>,
    /// The converted views asked for (`--dtype`).
    pub dtypes: &'a [Dtype],
    views: Vec<Box<dyn View>>,
    raw_tensors: Option<Listing>,
}

impl Builder<'_> {
    /// The id the next view added gets (its files' [`FileRef`]s name it).
    pub fn next_id(&self) -> ViewId {
        ViewId(u8::try_from(self.views.len()).expect("at most 256 views"))
    }

    /// Register `view` as [`next_id`](Self::next_id).
    pub fn add(&mut self, view: Box<dyn View>) -> ViewId {
        let id = self.next_id();
        self.views.push(view);
        id
    }

    /// Record `raw/tensors/` (for the manifest's file names).
    pub fn set_raw_tensors(&mut self, listing: Listing) {
        self.raw_tensors = Some(listing);
    }

    /// The views built so far.
    pub fn views(&self) -> impl Iterator<Item = (ViewId, &dyn View)> {
        self.views
            .iter()
            .enumerate()
            .map(|(i, v)| (ViewId(i as u8), v.as_ref()))
    }
}

/// Decide every view of `catalog` and lay out the tree, with one converted
/// view per dtype of `dtypes` (BF16, F16, F32: `bf16/`, `f16/`, `f32/`).
/// Views that cannot be built for this source are left out;
/// [`Views::notes`] says which and why (they also go into `manifest.json`).
pub fn build(catalog: &Catalog, dtypes: &[Dtype]) -> (Views, Tree) {
    let mut tree = Tree::new();
    let mut b = Builder {
        catalog,
        tree: &mut tree,
        notes: catalog.notes.clone(),
        dtypes,
        views: Vec::new(),
        raw_tensors: None,
    };
    for build in BUILDERS {
        build(&mut b);
    }
    let views = Views {
        views: b.views,
        notes: b.notes,
        raw_tensors: b.raw_tensors,
    };
    tree.finish();
    (views, tree)
}
