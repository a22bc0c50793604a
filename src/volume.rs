//! A volume: an opened source and the tree of views built from it, with the
//! filesystem operations on it.
//!
//! This is the whole filesystem as plain Rust, without FUSE: `fuse` (the
//! mount) only translates kernel requests into these calls and their results
//! into replies, `convert` (the writer) reads through [`Volume::read`], and the
//! tests drive every operation here without root. Inode numbers are node ids
//! plus one (FUSE's root is inode 1); attributes, directory offsets and the
//! open-mode check are decided here.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::catalog::{Catalog, FileId};
use crate::error::{FsError, ReadError, SourceError};
use crate::read::{Data, read};
use crate::view::{self, NodeId, NodeKind, Tree};

/// Block size reported in attributes and statfs.
pub const BLOCK: u32 = 4096;

/// Longest file name, reported by statfs.
pub const NAME_MAX: u32 = 255;

#[derive(Debug)]
pub struct Volume {
    pub catalog: Catalog,
    pub tree: Tree,
    /// Views left out for this source, and why (one line each).
    pub notes: Vec<String>,
    /// Source files whose change has been reported by [`Volume::poll_changes`].
    reported: Vec<AtomicBool>,
}

/// A source file found changed, and the virtual files that read it.
#[derive(Debug)]
pub struct Changed {
    pub file: FileId,
    /// Inode numbers of the files whose reads now answer EIO.
    pub affected: Vec<u64>,
}

/// A directory entry's or a node's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// The attributes of a node. Everything is read-only; every node has the
/// newest modification time of the source files ([`Volume::mtime_secs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    /// Permission bits: `0o555` for directories, `0o444` for files.
    pub perm: u16,
    pub nlink: u32,
}

impl Attr {
    /// 512-byte blocks, as `st_blocks` counts them.
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(512)
    }
}

/// What `statfs` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub files: u64,
    pub block_size: u32,
    pub name_max: u32,
}

/// Receives the entries of a `readdir`, as a FUSE reply buffer does.
pub trait DirSink {
    /// Add one entry; `next` is the offset that resumes after it. Returns
    /// true when the buffer is full (the entry was not added; stop).
    fn add(&mut self, ino: u64, next: u64, kind: Kind, name: &str) -> bool;
}

/// The inode number of node `id`.
pub fn ino(id: NodeId) -> u64 {
    id as u64 + 1
}

/// The node id of inode `ino` (inode 0 maps to no node).
pub fn node_id(ino: u64) -> NodeId {
    (ino as usize).wrapping_sub(1)
}

impl Volume {
    /// Open SOURCE, read its headers and build every view.
    pub fn open(source: &Path) -> Result<Volume, SourceError> {
        let catalog = crate::source::open(source)?;
        let (tree, notes) = view::build(&catalog);
        let reported = (0..catalog.files.len())
            .map(|_| AtomicBool::new(false))
            .collect();
        Ok(Volume {
            catalog,
            tree,
            notes,
            reported,
        })
    }

    /// Check every source file for a change (its contents, or what its path
    /// names: `SourceFile::check_path`), including changes already seen by a
    /// read. Each changed file is returned once, with the virtual files that
    /// read it, so that the mount can log them and drop their cached pages.
    pub fn poll_changes(&self) -> Vec<Changed> {
        let mut out = Vec::new();
        for (id, f) in self.catalog.files.iter() {
            if !f.file.check_path() || self.reported[id.index()].swap(true, Ordering::Relaxed) {
                continue;
            }
            let affected = self
                .tree
                .files()
                .filter(|(_, vf)| vf.reads(id))
                .map(|(n, _)| ino(n))
                .collect();
            out.push(Changed { file: id, affected });
        }
        out
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
            .map(|(_, f)| f.file.mtime_secs())
            .max()
            .unwrap_or(0)
    }

    /// The attributes of inode `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let id = node_id(ino);
        let node = self.tree.node(id).ok_or(FsError::NotFound)?;
        Ok(match &node.kind {
            NodeKind::Dir(_) => Attr {
                ino,
                kind: Kind::Dir,
                size: 0,
                perm: 0o555,
                nlink: 2 + self.tree.subdirs(id),
            },
            NodeKind::File(f) => Attr {
                ino,
                kind: Kind::File,
                size: f.size,
                perm: 0o444,
                nlink: 1,
            },
        })
    }

    /// The entry `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        let name = name.to_str().ok_or(FsError::NotFound)?;
        let id = self
            .tree
            .lookup(node_id(parent), name)
            .ok_or(FsError::NotFound)?;
        self.getattr(ino(id))
    }

    /// Open a file with `open(2)` flags: reading only.
    pub fn open_file(&self, ino: u64, flags: i32) -> Result<(), FsError> {
        let node = self.tree.node(node_id(ino)).ok_or(FsError::NotFound)?;
        if matches!(node.kind, NodeKind::Dir(_)) {
            return Err(FsError::IsADirectory);
        }
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    pub fn opendir(&self, ino: u64) -> Result<(), FsError> {
        self.children(ino).map(|_| ())
    }

    fn children(&self, ino: u64) -> Result<&[NodeId], FsError> {
        let id = node_id(ino);
        match self.tree.node(id).map(|n| &n.kind) {
            Some(NodeKind::Dir(c)) => Ok(c),
            Some(NodeKind::File(_)) => Err(FsError::NotADirectory),
            None => Err(FsError::NotFound),
        }
    }

    /// List directory `ino` from `offset` into `sink` until it is full.
    /// Offsets: 0 is the start, 1 resumes after `.`, 2 after `..`, `2 + k`
    /// after child `k` (children sorted by name), so a listing resumes where
    /// the previous reply stopped however large the directory.
    pub fn readdir(&self, ino: u64, offset: u64, sink: &mut dyn DirSink) -> Result<(), FsError> {
        let children = self.children(ino)?;
        let id = node_id(ino);
        let parent = self.tree.node(id).map_or(id, |n| n.parent);
        let dots = [(id, "."), (parent, "..")];
        let mut at = offset;
        for (nid, name) in dots.iter().skip(at as usize) {
            if sink.add(self::ino(*nid), at + 1, Kind::Dir, name) {
                return Ok(());
            }
            at += 1;
        }
        let first = (at - 2) as usize;
        for &c in children.iter().skip(first) {
            let node = self.tree.node(c).expect("child ids are valid");
            let kind = match node.kind {
                NodeKind::Dir(_) => Kind::Dir,
                NodeKind::File(_) => Kind::File,
            };
            if sink.add(self::ino(c), at + 1, kind, &node.name) {
                break;
            }
            at += 1;
        }
        Ok(())
    }

    /// `access(2)`: anything may be read or searched, nothing written.
    pub fn access(&self, ino: u64, mask: i32) -> Result<(), FsError> {
        self.tree.node(node_id(ino)).ok_or(FsError::NotFound)?;
        if mask & libc::W_OK != 0 {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    pub fn statfs(&self) -> StatFs {
        StatFs {
            blocks: self.tree.total_size().div_ceil(BLOCK as u64),
            files: self.tree.len() as u64,
            block_size: BLOCK,
            name_max: NAME_MAX,
        }
    }

    /// `read(2)` of inode `ino`.
    pub fn read_ino(&self, ino: u64, offset: u64, size: usize) -> Result<Data<'_>, FsError> {
        let id = node_id(ino);
        if self.tree.file(id).is_none() {
            return Err(match self.tree.node(id) {
                Some(_) => FsError::IsADirectory,
                None => FsError::NotFound,
            });
        }
        Ok(self.read(id, offset, size)?)
    }

    /// The path of inode `ino` inside the mount, for log lines.
    pub fn path_of(&self, ino: u64) -> String {
        let id = node_id(ino);
        match self.tree.node(id) {
            Some(_) => format!("/{}", self.tree.path(id)),
            None => format!("<inode {ino}>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ToErrno;

    fn sample() -> Volume {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gpt-oss-tiny");
        Volume::open(&dir).unwrap()
    }

    /// Collects entries, full after `room` of them.
    struct Collect {
        room: usize,
        got: Vec<(u64, u64, Kind, String)>,
    }

    impl DirSink for Collect {
        fn add(&mut self, ino: u64, next: u64, kind: Kind, name: &str) -> bool {
            if self.got.len() == self.room {
                return true;
            }
            self.got.push((ino, next, kind, name.to_string()));
            false
        }
    }

    fn list(v: &Volume, ino: u64, room: usize) -> Vec<(u64, u64, Kind, String)> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let mut c = Collect {
                room,
                got: Vec::new(),
            };
            v.readdir(ino, offset, &mut c).unwrap();
            let Some(last) = c.got.last() else {
                return all;
            };
            offset = last.1;
            all.extend(c.got);
        }
    }

    #[test]
    fn readdir_resumes_at_every_page_size() {
        let v = sample();
        let tensors = v.lookup(1, OsStr::new("raw")).unwrap();
        let tensors = v.lookup(tensors.ino, OsStr::new("tensors")).unwrap();
        let whole = list(&v, tensors.ino, usize::MAX);
        let names: Vec<&str> = whole.iter().map(|e| e.3.as_str()).collect();
        assert_eq!(&names[..2], &[".", ".."]);
        let mut sorted = names[2..].to_vec();
        sorted.sort();
        assert_eq!(sorted, names[2..], "children sorted by name");
        assert!(names.len() > 10);
        for room in [1, 2, 3, 7] {
            assert_eq!(list(&v, tensors.ino, room), whole, "page size {room}");
        }
        // Every entry's inode answers getattr with its kind.
        for (ino, _, kind, _) in &whole[2..] {
            assert_eq!(v.getattr(*ino).unwrap().kind, *kind);
        }
    }

    #[test]
    fn attributes_and_errors() {
        let v = sample();
        let root = v.getattr(1).unwrap();
        assert_eq!((root.kind, root.perm), (Kind::Dir, 0o555));
        // manifest.json, raw, bf16 (+ experts dirs below them).
        assert_eq!(root.nlink, 2 + 2);
        let m = v.lookup(1, OsStr::new("manifest.json")).unwrap();
        assert_eq!((m.kind, m.perm, m.nlink), (Kind::File, 0o444, 1));
        assert_eq!(m.size, v.read_ino(m.ino, 0, 1 << 30).unwrap().len() as u64);
        let errno = |r: Result<(), FsError>| r.unwrap_err().to_errno();
        assert_eq!(
            v.lookup(1, OsStr::new("nope")).unwrap_err().to_errno(),
            libc::ENOENT
        );
        assert_eq!(v.getattr(0).unwrap_err().to_errno(), libc::ENOENT);
        assert_eq!(errno(v.open_file(m.ino, libc::O_RDWR)), libc::EROFS);
        assert_eq!(errno(v.open_file(m.ino, libc::O_WRONLY)), libc::EROFS);
        assert!(v.open_file(m.ino, libc::O_RDONLY | libc::O_NOATIME).is_ok());
        assert_eq!(errno(v.open_file(1, libc::O_RDONLY)), libc::EISDIR);
        assert_eq!(errno(v.opendir(m.ino)), libc::ENOTDIR);
        assert_eq!(errno(v.access(m.ino, libc::W_OK)), libc::EROFS);
        assert!(v.access(m.ino, libc::R_OK).is_ok());
        assert_eq!(
            v.read_ino(1, 0, 10).map(|_| ()).unwrap_err().to_errno(),
            libc::EISDIR
        );
        assert_eq!(v.path_of(m.ino), "/manifest.json");
        let s = v.statfs();
        assert_eq!(s.files, v.tree.len() as u64);
    }

    #[test]
    fn reports_a_changed_source_once_with_its_readers() {
        let dir = tempfile::tempdir().unwrap();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gpt-oss-tiny");
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
            }
        }
        let v = Volume::open(dir.path()).unwrap();
        assert!(v.poll_changes().is_empty());
        let shard = dir.path().join("model-00002-of-00002.safetensors");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&shard)
            .unwrap()
            .set_len(100)
            .unwrap();
        let changed = v.poll_changes();
        assert_eq!(changed.len(), 1);
        let name = &v.catalog.files[changed[0].file].file.name;
        assert_eq!(name, "model-00002-of-00002.safetensors");
        let paths: Vec<String> = changed[0].affected.iter().map(|&i| v.path_of(i)).collect();
        assert!(paths.contains(&"/raw/model.safetensors".to_string()));
        assert!(!paths.contains(&"/manifest.json".to_string()));
        assert!(v.poll_changes().is_empty(), "reported once");
        let pack = v.tree.resolve("raw/model.safetensors").unwrap();
        let err = v.read(pack, 0, 1 << 30).unwrap_err();
        assert_eq!(err.to_errno(), libc::EIO);
    }
}
