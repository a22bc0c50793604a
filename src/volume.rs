//! A volume: an opened source and the tree of views built from it.
//!
//! This is the whole filesystem as plain Rust, without FUSE: `fuse` (the
//! mount), `convert` (the writer) and the tests all go through it.

use std::path::Path;

use crate::catalog::Catalog;
use crate::error::{ReadError, SourceError};
use crate::read::{Data, read};
use crate::view::{self, NodeId, Tree};

#[derive(Debug)]
pub struct Volume {
    pub catalog: Catalog,
    pub tree: Tree,
    /// Views left out for this source, and why (one line each).
    pub notes: Vec<String>,
}

impl Volume {
    /// Open SOURCE, read its headers and build every view.
    pub fn open(source: &Path) -> Result<Volume, SourceError> {
        let catalog = crate::source::open(source)?;
        let (tree, notes) = view::build(&catalog);
        Ok(Volume {
            catalog,
            tree,
            notes,
        })
    }

    /// Read from the file `id` (see [`crate::read::read`]). Reading a
    /// directory or an unknown id gives no bytes.
    pub fn read(&self, id: NodeId, offset: u64, size: usize) -> Result<Data<'_>, ReadError> {
        match self.tree.file(id) {
            Some(f) => read(&self.catalog.files, f, offset, size),
            None => Ok(Data::Borrowed(&[])),
        }
    }

    /// Newest modification time of the source files, in seconds: the time
    /// every entry of the mount reports.
    pub fn mtime_secs(&self) -> i64 {
        self.catalog
            .files
            .iter()
            .map(|f| f.mtime_secs())
            .max()
            .unwrap_or(0)
    }
}
