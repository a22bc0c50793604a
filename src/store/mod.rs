//! The storage layer: the bytes of a source's files, local or remote, and
//! nothing of what they mean.
//!
//! Everything above (format readers, the catalog, views, the read path)
//! gets source bytes from a [`SourceFile`], and only through calls that make
//! them local first: [`SourceFile::read_head`] and [`SourceFile::read_range`]
//! for parsers at open, [`SourceFile::read_at`] and
//! [`SourceFile::read_into`] for the read path. A file is
//! - local ([`Backing::Local`]): a read-only memory map of the file itself;
//!   making bytes local costs nothing;
//! - remote ([`Backing::Remote`]): the sparse cache file of a remote object,
//!   mapped the same way, whose [`Fetcher`] fetches the blocks a range lacks
//!   before the range is borrowed. The layer does not know how: `remote/`
//!   implements [`Fetcher`] and hands its objects to an [`Opener`].
//!
//! - `file`: [`SourceFile`], change detection included;
//! - `fault`: surviving a SIGBUS in a map of a file truncated under it;
//! - `epochs`: reads in progress, so that a cache eviction never takes
//!   borrowed bytes away;
//! - `confine`: where a local source's files may resolve to (no symlink
//!   out of the source folder).
//!
//! This module is the bottom of the engine: it imports only `error` (and
//! the leaf `access`).

pub mod confine;
pub mod epochs;
pub mod fault;
mod file;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use confine::{Confinement, Refusal};
pub use epochs::{ReadEpochs, Reading};
pub use file::{SourceFile, Stamp};

use crate::error::{RemoteReadError, SourceError};

/// A file whose bytes arrive on demand: a remote object behind its sparse
/// cache file (implemented by `remote::RemoteObject`).
pub trait Fetcher: Send + Sync + fmt::Debug {
    /// Where the bytes come from, for messages (a URL without its query).
    fn url(&self) -> &str;
    /// Make bytes `offset..offset + len` local (fetching what is missing and
    /// waiting for it). Bytes past the end are not asked for.
    fn ensure(&self, offset: u64, len: u64) -> Result<(), RemoteReadError>;
    /// [`ensure`](Self::ensure) several ranges, fetched in parallel.
    fn ensure_ranges(&self, ranges: &[(u64, u64)]) -> Result<(), RemoteReadError>;
    /// Start fetching `offset..offset + len` in the background (read-ahead).
    fn prefetch(&self, offset: u64, len: u64);
    /// Has the object changed since it was opened (for good)?
    fn is_changed(&self) -> bool;
    /// The reads in progress of the cache that holds its bytes.
    fn epochs(&self) -> &Arc<ReadEpochs>;
}

/// Where a [`SourceFile`]'s bytes come from.
#[derive(Debug, Clone)]
pub enum Backing {
    /// The file is the source: every byte is there.
    Local,
    /// The file is a remote object's cache: bytes arrive through the fetcher.
    Remote(Arc<dyn Fetcher>),
}

/// Opens a source's files with their backing: local files as themselves,
/// the cache files of a remote source (made by `remote::prepare`) with the
/// fetcher of their object. Passed down to `source::open`; there is no
/// process-wide table.
#[derive(Debug, Clone, Default)]
pub struct Opener {
    /// Remote objects by the canonical path of their cache file.
    remote: HashMap<PathBuf, Arc<dyn Fetcher>>,
    /// The reads in progress of the remote objects' cache.
    epochs: Option<Arc<ReadEpochs>>,
    /// Where local files may resolve to (`None`: anywhere).
    confine: Option<Arc<Confinement>>,
}

impl Opener {
    /// An opener of local files only.
    pub fn local() -> Opener {
        Opener::default()
    }

    /// An opener that backs the cache files `objects` (canonical paths) by
    /// their fetchers, whose cache counts reads in `epochs`.
    pub fn remote(objects: HashMap<PathBuf, Arc<dyn Fetcher>>, epochs: Arc<ReadEpochs>) -> Opener {
        Opener {
            remote: objects,
            epochs: Some(epochs),
            confine: None,
        }
    }

    /// The same opener, refusing local files that resolve outside
    /// `confine` (`source::open` confines every local source).
    pub fn confined(&self, confine: Confinement) -> Opener {
        Opener {
            confine: Some(Arc::new(confine)),
            ..self.clone()
        }
    }

    /// Where this opener's local files may resolve to.
    pub fn confinement(&self) -> Option<&Confinement> {
        self.confine.as_deref()
    }

    /// Does this opener serve a remote source?
    pub fn is_remote(&self) -> bool {
        !self.remote.is_empty()
    }

    /// The backing of the file at `path`.
    pub fn backing(&self, path: &Path) -> Backing {
        if self.remote.is_empty() {
            return Backing::Local;
        }
        match std::fs::canonicalize(path)
            .ok()
            .and_then(|real| self.remote.get(&real))
        {
            Some(f) => Backing::Remote(Arc::clone(f)),
            None => Backing::Local,
        }
    }

    /// Open and map the file at `path`, recorded under the relative `name`.
    /// A confined opener first checks where `path` leads, and then that the
    /// file it opened is the one it checked ([`Confinement`]).
    pub fn open(&self, path: &Path, name: String) -> Result<SourceFile, SourceError> {
        let backing = self.backing(path);
        match (&self.confine, &backing) {
            (Some(c), Backing::Local) => {
                let refused =
                    |r: Refusal| SourceError::new(path, crate::error::Problem::Refused(r));
                let checked = c.check(path).map_err(refused)?;
                SourceFile::open_checked(path, name, backing, |file| {
                    c.verify(&checked, file).map_err(refused)
                })
            }
            _ => SourceFile::open(path, name, backing),
        }
    }

    /// Count a parse at open as a read in progress (parsers borrow cached
    /// bytes too); `None` for a local source.
    pub fn reading(&self) -> Option<Reading> {
        self.epochs.as_ref().map(|e| e.enter())
    }
}
