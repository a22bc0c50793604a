//! Memory-mapped source files.
//!
//! Every file gyrofs serves bytes from (tensor files and side files such as
//! `config.json`) is opened read-only and mapped once. Reads borrow slices of
//! the map. A file that is truncated while mapped would turn a read into a
//! SIGBUS, so every borrow first checks that the file still has the length and
//! modification time it had when it was opened and answers
//! [`ReadError::SourceChanged`] (EIO at the mount) when it does not.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Problem, ReadError, SourceError};

/// One read-only, memory-mapped source file.
#[derive(Debug)]
pub struct SourceFile {
    /// Name relative to the source (e.g. `model-00001-of-00002.safetensors`):
    /// what headers and manifests record. Never an absolute path.
    pub name: String,
    /// Where it was opened from (for messages).
    pub path: PathBuf,
    pub len: u64,
    /// Modification time at open, in nanoseconds since the epoch.
    mtime_ns: i128,
    file: File,
    map: Option<Mmap>,
}

impl SourceFile {
    /// Open and map `path` (following symlinks, as Hugging Face cache
    /// snapshots need). `name` is the relative name to record.
    pub fn open(path: &Path, name: String) -> Result<SourceFile, SourceError> {
        let file = File::open(path).map_err(|e| SourceError::io(path, e))?;
        let meta = file.metadata().map_err(|e| SourceError::io(path, e))?;
        if !meta.is_file() {
            return Err(SourceError::invalid(path, "not a regular file"));
        }
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
        Ok(SourceFile {
            name,
            path: path.to_path_buf(),
            len,
            mtime_ns: mtime_ns(&meta),
            file,
            map,
        })
    }

    /// The whole mapped file, without the change check: for parsing headers
    /// at open time, while the caller is the only reader.
    pub fn data(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// `len` bytes at `offset`, after checking the file is unchanged.
    pub fn bytes(&self, offset: u64, len: u64) -> Result<&[u8], ReadError> {
        self.check_unchanged()?;
        let end = offset.checked_add(len).filter(|&e| e <= self.len);
        match end {
            Some(end) => Ok(&self.data()[offset as usize..end as usize]),
            None => Err(ReadError::OutOfRange {
                file: self.name.clone(),
                offset,
                len,
                size: self.len,
            }),
        }
    }

    /// Errors with `SourceChanged` if the file's length or mtime moved.
    pub fn check_unchanged(&self) -> Result<(), ReadError> {
        let meta = self.file.metadata().map_err(|err| ReadError::Io {
            file: self.name.clone(),
            err,
        })?;
        if meta.len() != self.len || mtime_ns(&meta) != self.mtime_ns {
            return Err(ReadError::SourceChanged {
                file: self.name.clone(),
            });
        }
        Ok(())
    }

    /// Modification time in whole seconds, for the attributes of the mount.
    pub fn mtime_secs(&self) -> i64 {
        (self.mtime_ns.div_euclid(1_000_000_000)) as i64
    }

    /// A problem with this file, for parsers.
    pub fn error(&self, problem: Problem) -> SourceError {
        SourceError::new(&self.path, problem)
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
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
        let f = SourceFile::open(&p, "f".into()).unwrap();
        assert_eq!(f.bytes(2, 3).unwrap(), b"234");
        assert!(f.bytes(8, 3).is_err());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(4)
            .unwrap();
        assert!(matches!(
            f.bytes(0, 2),
            Err(ReadError::SourceChanged { .. })
        ));
    }

    #[test]
    fn detects_rewrite_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let f = SourceFile::open(&p, "f".into()).unwrap();
        // Same length, new mtime.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut w = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        w.write_all(b"x").unwrap();
        drop(w);
        assert!(matches!(
            f.bytes(0, 2),
            Err(ReadError::SourceChanged { .. })
        ));
    }
}
