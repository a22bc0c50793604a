//! One source file, memory-mapped read-only, and how gyrofs notices that it
//! changed.
//!
//! Every file gyrofs serves bytes from (tensor files and side files such as
//! `config.json`) is opened read-only and mapped once. Reads borrow slices of
//! the map, each through a call that first makes its bytes local (a remote
//! file's [`Fetcher`] fetches what its cache lacks; a local file has them
//! all), so no caller can read a hole of a sparse cache file as zeros.
//!
//! A source file must not change while mounted; when it does, gyrofs stops
//! serving it rather than serve a mix of old and new bytes:
//!
//! - every borrow ([`SourceFile::read_at`]) first compares the open file's
//!   length, modification time and status-change time (`fstat`) with those at
//!   open. `ctime` cannot be set by users, so an in-place rewrite that
//!   restores the mtime (`cp -p`, `rsync --inplace -t`) is caught too;
//! - [`SourceFile::check_path`] (run by the mount's watcher, about once a
//!   second) also compares the device and inode that the *path* names now:
//!   a file deleted, or replaced by a rename over it, is caught even though
//!   the open file itself is unchanged;
//! - a SIGBUS recovered while reading the map (`store::fault`) marks the
//!   file changed too.
//!
//! Once a file is found changed it stays changed ([`SourceFile::is_changed`]):
//! every later read of it answers [`ReadError::SourceChanged`] (EIO at the
//! mount), even if the file is later restored.
//!
//! A remote file's change is what the server reports (its ETag no longer
//! matches, [`Fetcher::is_changed`]), not what `fstat` sees (the cache file
//! grows as blocks arrive).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::Mmap;

use super::{Backing, Fetcher, ReadEpochs};
use crate::access::{self, Access};
use crate::error::{Problem, ReadError, SourceError};

/// What identifies a file's contents at open: if any of it moves, the
/// contents may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub len: u64,
    /// Modification and status-change times, in nanoseconds since the epoch.
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            len: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }
}

/// One read-only, memory-mapped source file.
#[derive(Debug)]
pub struct SourceFile {
    /// Name relative to the source (e.g. `model-00001-of-00002.safetensors`):
    /// what headers and manifests record. Never an absolute path.
    pub name: String,
    /// Where it was opened from (for messages, and to notice replacement).
    pub path: PathBuf,
    pub len: u64,
    stamp: Stamp,
    /// Device and inode of the open file.
    dev_ino: (u64, u64),
    /// Set once a change is seen; never cleared.
    changed: AtomicBool,
    file: File,
    map: Option<Mmap>,
    /// Set for a file of a remote source: where its bytes come from.
    remote: Option<Arc<dyn Fetcher>>,
    /// Who could read it directly: the file and every folder on the way
    /// (`access`); a remote file's is the mounting user's.
    pub access: Access,
}

impl SourceFile {
    /// Open and map `path` (following symlinks, as Hugging Face cache
    /// snapshots need), its bytes coming from `backing`. `name` is the
    /// relative name to record. (Sources open their files through an
    /// [`Opener`](super::Opener), which knows each file's backing.)
    pub fn open(path: &Path, name: String, backing: Backing) -> Result<SourceFile, SourceError> {
        Self::open_checked(path, name, backing, |_| Ok(()))
    }

    /// [`open`](Self::open), with `check` run on the open file before
    /// anything else (a confined opener checks that it is the file it
    /// resolved). Opened without blocking (a FIFO swapped in does not hang
    /// the mount) and without taking a terminal; anything but a regular
    /// file is refused.
    pub fn open_checked(
        path: &Path,
        name: String,
        backing: Backing,
        check: impl FnOnce(&File) -> Result<(), SourceError>,
    ) -> Result<SourceFile, SourceError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| SourceError::io(path, e))?;
        check(&file)?;
        let meta = file.metadata().map_err(|e| SourceError::io(path, e))?;
        if !meta.is_file() {
            return Err(SourceError::invalid(path, "not a regular file"));
        }
        let access = match backing {
            Backing::Local => local_access(path, &file, &meta),
            Backing::Remote(_) => Access::mounting_user(),
        };
        let len = meta.len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: `Mmap::map` is unsafe because another process may change
            // the file while it is mapped. What that can and cannot do here:
            // - the map is PROT_READ and gyrofs never writes through it;
            // - every byte read from it is plain `u8` data without validity
            //   invariants: headers are parsed once, at open, into owned
            //   values, and tensor bytes are copied or decoded by kernels that
            //   accept any bit pattern, so a concurrent rewrite changes values,
            //   never memory safety (`bytes` then reports the change as EIO
            //   when the length or mtime moved);
            // - a truncation makes access past the new end raise SIGBUS. The
            //   check in `bytes` narrows that window but cannot close it.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| SourceError::io(path, e))?;
            Some(map)
        };
        let remote = match backing {
            Backing::Local => None,
            Backing::Remote(f) => Some(f),
        };
        Ok(SourceFile {
            name,
            path: match &remote {
                Some(r) => PathBuf::from(r.url()),
                None => path.to_path_buf(),
            },
            len,
            stamp: Stamp::of(&meta),
            dev_ino: (meta.dev(), meta.ino()),
            changed: AtomicBool::new(false),
            file,
            map,
            remote,
            access,
        })
    }

    /// The first `len` bytes of the file (fewer if it is shorter), made
    /// local: for parsers, at open, while the caller is the only reader.
    pub fn read_head(&self, len: u64) -> Result<&[u8], SourceError> {
        self.read_range(0, len.min(self.len))
    }

    /// Bytes `offset..offset + len`, made local: for parsers, at open. A
    /// range past the end is an error naming the file.
    pub fn read_range(&self, offset: u64, len: u64) -> Result<&[u8], SourceError> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                self.error(Problem::Truncated {
                    what: "the bytes asked for",
                    len: self.len,
                    need: offset.saturating_add(len),
                })
            })?;
        self.ensure(offset, len)?;
        Ok(&self.map_bytes()[offset as usize..end as usize])
    }

    /// Let go of the memory pages of bytes `offset..offset + len` that a
    /// parser has read and keeps nothing borrowed of (a header parsed into
    /// owned values): the process's resident set no longer counts them,
    /// the page cache keeps them, and a later read maps them again. A
    /// range past the end is clipped; failure only leaves them resident.
    pub fn release(&self, offset: u64, len: u64) {
        let Some(map) = &self.map else { return };
        let end = offset.saturating_add(len).min(self.len);
        if offset >= end {
            return;
        }
        // SAFETY: MADV_DONTNEED on this map, a read-only MAP_SHARED map of
        // a file (`Mmap::map`), drops only the process's page table
        // entries: a later access of the range (a borrow handed out
        // before or after) faults the same file bytes in again, so no
        // borrowed byte changes (madvise(2): "up-to-date contents of the
        // underlying mapped file"). It is not the private or anonymous map
        // for which DONTNEED zero-fills.
        let _ = unsafe {
            map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                offset as usize,
                (end - offset) as usize,
            )
        };
    }

    /// Make bytes `offset..offset + len` local without borrowing them (a
    /// remote file fetches what its cache lacks; a local file has them all).
    pub fn ensure(&self, offset: u64, len: u64) -> Result<(), SourceError> {
        match &self.remote {
            Some(r) => r
                .ensure(offset, len)
                .map_err(|e| SourceError::invalid(&self.path, e.to_string())),
            None => Ok(()),
        }
    }

    /// [`ensure`](Self::ensure) several ranges, fetched in parallel: what
    /// a parser will read next, in one round trip.
    pub fn ensure_ranges(&self, ranges: &[(u64, u64)]) -> Result<(), SourceError> {
        match &self.remote {
            Some(r) => r
                .ensure_ranges(ranges)
                .map_err(|e| SourceError::invalid(&self.path, e.to_string())),
            None => Ok(()),
        }
    }

    /// Start fetching `offset..offset + len` of a remote file in the
    /// background (read-ahead); nothing for a local file.
    pub fn prefetch(&self, offset: u64, len: u64) {
        if let Some(r) = &self.remote {
            r.prefetch(offset, len);
        }
    }

    /// Is this a file of a remote source?
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// The reads in progress of the cache behind a remote file.
    pub fn epochs(&self) -> Option<&Arc<ReadEpochs>> {
        self.remote.as_ref().map(|r| r.epochs())
    }

    /// The whole map, none of it made local: only for the address range
    /// (SIGBUS recovery) and inside this module after an `ensure`.
    fn map_bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// The address range of the map, `(start, len)`: where `store::fault`
    /// may recover a SIGBUS.
    pub fn map_range(&self) -> super::fault::Range {
        let d = self.map_bytes();
        (d.as_ptr() as usize, d.len())
    }

    /// `len` bytes at `offset`, after checking the file is unchanged, made
    /// local: the read path's borrow.
    pub fn read_at(&self, offset: u64, len: u64) -> Result<&[u8], ReadError> {
        self.check_unchanged()?;
        let end = offset.checked_add(len).filter(|&e| e <= self.len);
        match end {
            Some(end) => {
                if let Some(r) = &self.remote {
                    r.ensure(offset, len)?;
                }
                Ok(&self.map_bytes()[offset as usize..end as usize])
            }
            None => Err(ReadError::OutOfRange {
                file: self.name.clone(),
                offset,
                len,
                size: self.len,
            }),
        }
    }

    /// Copy `dst.len()` bytes at `offset` into `dst` with `pread`. A file
    /// that has become shorter gives `SourceChanged` (and is marked so). The
    /// caller checks afterwards that the file did not change meanwhile.
    pub fn read_into(&self, offset: u64, dst: &mut [u8]) -> Result<(), ReadError> {
        if self.is_changed() {
            return Err(self.changed_error());
        }
        let len = dst.len() as u64;
        if offset.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(ReadError::OutOfRange {
                file: self.name.clone(),
                offset,
                len,
                size: self.len,
            });
        }
        if let Some(r) = &self.remote {
            r.ensure(offset, len)?;
        }
        match std::os::unix::fs::FileExt::read_exact_at(&self.file, dst, offset) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.mark_changed();
                Err(self.changed_error())
            }
            Err(err) => Err(ReadError::Io {
                file: self.name.clone(),
                err,
            }),
        }
    }

    /// Errors with `SourceChanged` if the file has changed since it was
    /// opened (now or before: the state is sticky).
    pub fn check_unchanged(&self) -> Result<(), ReadError> {
        if self.is_changed() {
            return Err(self.changed_error());
        }
        if self.remote.is_some() {
            return Ok(());
        }
        let meta = self.file.metadata().map_err(|err| ReadError::Io {
            file: self.name.clone(),
            err,
        })?;
        if Stamp::of(&meta) != self.stamp {
            self.mark_changed();
            return Err(self.changed_error());
        }
        Ok(())
    }

    /// Also check what the path names now: a deleted file, or another file
    /// renamed over it, counts as changed. Returns true if the file is (now
    /// or already) changed.
    pub fn check_path(&self) -> bool {
        if self.remote.is_some() {
            return self.is_changed();
        }
        let replaced = match std::fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != self.dev_ino,
            Err(_) => true,
        };
        if replaced {
            self.mark_changed();
        }
        replaced || self.check_unchanged().is_err()
    }

    /// Has a change been seen?
    pub fn is_changed(&self) -> bool {
        self.changed.load(Ordering::Relaxed) || self.remote.as_ref().is_some_and(|r| r.is_changed())
    }

    /// Record that the file changed (e.g. a SIGBUS was recovered in its map).
    /// Returns true the first time.
    pub fn mark_changed(&self) -> bool {
        !self.changed.swap(true, Ordering::Relaxed)
    }

    fn changed_error(&self) -> ReadError {
        ReadError::SourceChanged {
            file: self.name.clone(),
        }
    }

    /// Does the map hold address `addr`?
    pub fn maps(&self, addr: usize) -> bool {
        let d = self.map_bytes();
        let start = d.as_ptr() as usize;
        !d.is_empty() && (start..start + d.len()).contains(&addr)
    }

    /// What names this version of the file's contents, as text (a key of
    /// the converted-bytes cache, docs/CACHE.md): where the open file
    /// really is and its length, and for a local file its modification
    /// time (ns) and inode at open. A remote file's cache file is named by
    /// its object's identity and version (ETag), so its path says both.
    pub fn version_stamp(&self) -> String {
        use std::os::unix::io::AsRawFd;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
            .or_else(|_| std::fs::canonicalize(&self.path))
            .unwrap_or_else(|_| self.path.clone());
        match self.remote {
            Some(_) => format!("{} {}", real.display(), self.len),
            None => format!(
                "{} {} {} {}",
                real.display(),
                self.len,
                self.stamp.mtime_ns,
                self.dev_ino.1
            ),
        }
    }

    /// Modification time in whole seconds, for the attributes of the mount.
    pub fn mtime_secs(&self) -> i64 {
        (self.stamp.mtime_ns.div_euclid(1_000_000_000)) as i64
    }

    /// A problem with this file, for parsers.
    pub fn error(&self, problem: Problem) -> SourceError {
        SourceError::new(&self.path, problem)
    }
}

/// Who could read the open `file` at `path` directly: its owner, group and
/// read bits, and those of every folder on the way to where it really is
/// (`/proc/self/fd` says where; else the path resolved).
fn local_access(path: &Path, file: &File, meta: &std::fs::Metadata) -> Access {
    use std::os::unix::io::AsRawFd;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ok()
        .filter(|p| p.is_absolute())
        .or_else(|| std::fs::canonicalize(path).ok());
    let mut all = vec![Access::of_file(meta)];
    if let Some(real) = real {
        all.extend(access::passages(&real));
    }
    access::combine(all, access::mounting_user())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let f = SourceFile::open(&p, "f".into(), Backing::Local).unwrap();
        assert_eq!(f.read_at(2, 3).unwrap(), b"234");
        assert!(f.read_at(8, 3).is_err());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(4)
            .unwrap();
        assert!(matches!(
            f.read_at(0, 2),
            Err(ReadError::SourceChanged { .. })
        ));
    }

    #[test]
    fn detects_rewrite_with_mtime_restored_and_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        let f = SourceFile::open(&p, "f".into(), Backing::Local).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let w = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        std::os::unix::fs::FileExt::write_at(&w, b"X", 3).unwrap();
        w.set_modified(mtime).unwrap();
        drop(w);
        assert!(f.check_unchanged().is_err(), "ctime moved");
        // Sticky, even once the file is back as it was.
        assert!(f.is_changed());

        let g = SourceFile::open(&p, "f".into(), Backing::Local).unwrap();
        assert!(!g.check_path());
        let q = dir.path().join("g");
        std::fs::write(&q, b"0123456789").unwrap();
        std::fs::rename(&q, &p).unwrap();
        // (Losing its last link also moves the old file's ctime.)
        assert!(g.check_path(), "the path names another file now");
        assert!(g.read_at(0, 1).is_err());
        let h = SourceFile::open(&p, "f".into(), Backing::Local).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert!(h.check_path(), "deleted");
    }

    #[test]
    fn detects_rewrite_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let f = SourceFile::open(&p, "f".into(), Backing::Local).unwrap();
        // Same length, new mtime.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut w = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        w.write_all(b"x").unwrap();
        drop(w);
        assert!(matches!(
            f.read_at(0, 2),
            Err(ReadError::SourceChanged { .. })
        ));
    }
}
