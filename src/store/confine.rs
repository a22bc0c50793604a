//! Where a local source's files may be: symlinks must not lead out of it.
//!
//! A downloaded repository is untrusted input: a `tokenizer.json` that is a
//! symlink to `/etc/shadow` must not be served. A [`Confinement`] holds the
//! places a source's files may resolve to (canonical paths, no symlinks):
//! the source folder; for a Hugging Face cache snapshot
//! (`.../models--ORG--NAME/snapshots/REV/...`) also the cache's own
//! `blobs/`, where the snapshot's links point; for a file named on the
//! command line, that file itself (the user chose it).
//!
//! [`Confinement::check`] runs before a file is opened: it resolves the path
//! and refuses what resolves elsewhere (and what is not a regular file, so
//! that no device or FIFO is ever opened). [`Confinement::verify`] runs on
//! the open file: it asks the kernel where the file it opened lives
//! (`/proc/self/fd`) and compares its device and inode with what `check`
//! saw, so a path changed between the two (a symlink swapped in) is caught.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

pub use crate::error::Refusal;

/// The places a source's files may resolve to.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// Canonical folders (or files) the source's files must be inside.
    roots: Vec<PathBuf>,
}

/// What [`Confinement::check`] found: the resolved path and its identity.
#[derive(Debug, Clone)]
pub struct Checked {
    pub real: PathBuf,
    dev_ino: (u64, u64),
}

impl Confinement {
    /// The confinement of a local SOURCE: a folder, or a file named on the
    /// command line (with its folder, where the rest of a split set is).
    pub fn of_source(source: &Path) -> io::Result<Confinement> {
        let real = std::fs::canonicalize(source)?;
        let mut roots = Vec::new();
        let folder = if real.is_dir() {
            real.clone()
        } else {
            roots.push(real.clone());
            let parent = source.parent().filter(|p| !p.as_os_str().is_empty());
            std::fs::canonicalize(parent.unwrap_or(Path::new(".")))?
        };
        if let Some(blobs) = hf_blobs(&folder) {
            roots.push(blobs);
        }
        roots.push(folder);
        Ok(Confinement { roots })
    }

    fn inside(&self, real: &Path) -> bool {
        self.roots.iter().any(|r| real.starts_with(r))
    }

    /// Resolve `path` and check that it is a regular file inside the
    /// confinement (before opening it).
    pub fn check(&self, path: &Path) -> Result<Checked, Refusal> {
        let real = std::fs::canonicalize(path).map_err(|e| resolve_error(path, e))?;
        if !self.inside(&real) {
            return Err(Refusal::Outside { real });
        }
        let meta = std::fs::metadata(&real).map_err(Refusal::Io)?;
        if !meta.is_file() {
            return Err(Refusal::NotAFile);
        }
        Ok(Checked {
            real,
            dev_ino: (meta.dev(), meta.ino()),
        })
    }

    /// Check the file opened after `checked`: the very file `check` saw
    /// (device and inode), and, where `/proc` tells, inside the
    /// confinement.
    pub fn verify(&self, checked: &Checked, file: &File) -> Result<(), Refusal> {
        let meta = file.metadata().map_err(Refusal::Io)?;
        if (meta.dev(), meta.ino()) != checked.dev_ino {
            return Err(Refusal::Moved);
        }
        if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            && real.is_absolute()
            && !self.inside(&real)
        {
            return Err(Refusal::Outside { real });
        }
        Ok(())
    }
}

/// Why `path` does not resolve: a broken link, a loop, or another error.
fn resolve_error(path: &Path, e: io::Error) -> Refusal {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return Refusal::Loop;
    }
    if e.kind() == io::ErrorKind::NotFound
        && let Ok(target) = std::fs::read_link(path)
    {
        return Refusal::Broken { target };
    }
    Refusal::Io(e)
}

/// For a folder inside a Hugging Face cache snapshot
/// (`ROOT/models--ORG--NAME/snapshots/REV[/SUB...]`, canonical), the
/// cache's `ROOT/models--ORG--NAME/blobs`.
fn hf_blobs(folder: &Path) -> Option<PathBuf> {
    let snapshots = folder
        .ancestors()
        .skip(1)
        .find(|a| a.file_name().is_some_and(|n| n == "snapshots"))?;
    let repo = snapshots.parent()?;
    let name = repo.file_name()?.to_string_lossy();
    if !["models--", "datasets--", "spaces--"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        return None;
    }
    std::fs::canonicalize(repo.join("blobs"))
        .ok()
        .filter(|b| b.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_the_source_or_the_cache_blobs() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("hub/models--org--m");
        let snap = repo.join("snapshots/abc");
        std::fs::create_dir_all(snap.join("original")).unwrap();
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::write(repo.join("blobs/h1"), b"x").unwrap();
        std::fs::write(d.path().join("secret"), b"s").unwrap();
        symlink("../../blobs/h1", snap.join("config.json")).unwrap();
        symlink("../../../blobs/h1", snap.join("original/config.json")).unwrap();
        symlink(d.path().join("secret"), snap.join("evil")).unwrap();
        symlink("../../blobs/missing", snap.join("README.md")).unwrap();
        symlink("loop", snap.join("loop")).unwrap();
        symlink("original", snap.join("dir")).unwrap();

        let c = Confinement::of_source(&snap).unwrap();
        let ok = c.check(&snap.join("config.json")).unwrap();
        let f = File::open(snap.join("config.json")).unwrap();
        c.verify(&ok, &f).unwrap();
        let other = File::open(d.path().join("secret")).unwrap();
        assert!(matches!(c.verify(&ok, &other), Err(Refusal::Moved)));
        assert!(matches!(
            c.check(&snap.join("evil")),
            Err(Refusal::Outside { .. })
        ));
        let broken = c.check(&snap.join("README.md")).unwrap_err();
        assert!(matches!(broken, Refusal::Broken { .. }), "{broken}");
        assert!(broken.to_string().contains("blobs/missing"));
        assert!(matches!(c.check(&snap.join("loop")), Err(Refusal::Loop)));
        assert!(matches!(c.check(&snap.join("dir")), Err(Refusal::NotAFile)));

        // original/ of the snapshot: the blobs too.
        let o = Confinement::of_source(&snap.join("original")).unwrap();
        o.check(&snap.join("original/config.json")).unwrap();
        // Not a snapshot: blobs/ is outside.
        let plain = d.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        symlink(repo.join("blobs/h1"), plain.join("config.json")).unwrap();
        let p = Confinement::of_source(&plain).unwrap();
        assert!(p.check(&plain.join("config.json")).is_err());
        // A file named on the command line is served wherever it leads; its
        // neighbours stay confined to its folder.
        let named = Confinement::of_source(&snap.join("evil")).unwrap();
        named.check(&snap.join("evil")).unwrap();
        named.check(&snap.join("config.json")).unwrap();
        let secret2 = d.path().join("secret2");
        std::fs::write(&secret2, b"t").unwrap();
        symlink(&secret2, snap.join("evil2")).unwrap();
        assert!(named.check(&snap.join("evil2")).is_err());
    }
}
