//! A volume: an opened source and the tree of views built from it, with the
//! filesystem operations on it.
//!
//! This is the whole filesystem as plain Rust, without FUSE: `fuse` (the
//! mount) only translates kernel requests into these calls and their results
//! into replies, `convert` (the writer) reads through [`Volume::read`], and the
//! tests drive every operation here without root. Inode numbers are node ids
//! plus one (FUSE's root is inode 1); attributes (owners and modes from the
//! source's, `crate::access`), directory offsets and the open-mode check are
//! decided here.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::access::{self, Access, Overrides};
use crate::catalog::{Catalog, FileId};
use crate::converted_cache::{ConvertedCache, Whole};
use crate::dtype::Dtype;
use crate::error::{FsError, ReadError, SourceError};
use crate::store::Opener;
use crate::view::{self, FileRef, NodeId, NodeKind, Tree, VFile, Views};

/// Block size reported in attributes and statfs.
pub const BLOCK: u32 = 4096;

/// Longest file name, reported by statfs.
pub const NAME_MAX: u32 = 255;

/// Memory the cache of built files may hold (headers and generated JSON).
const CACHE_BYTES: u64 = 256 << 20;

#[derive(Debug)]
pub struct Volume {
    pub catalog: Arc<Catalog>,
    pub views: Views,
    pub tree: Tree,
    cache: Mutex<FileCache>,
    /// Source files whose change has been reported by [`Volume::poll_changes`].
    reported: Vec<AtomicBool>,
    /// Sequential readers of files of a remote source (None for a local
    /// one: the kernel's readahead and the page cache serve those).
    streams: Option<Mutex<lru::LruCache<NodeId, Stream>>>,
    /// Who may read what ([`Volume::who_may_read`]).
    access: Permissions,
    /// Computed bytes kept on disk (`--cache-converted`), if asked for.
    converted: Option<ConvertedCache>,
}

/// Who may read the volume's files and folders (`crate::access`).
#[derive(Debug)]
struct Permissions {
    /// Of every folder and of the files made from no source file in
    /// particular (`manifest.json`, generated JSON): the most restrictive
    /// of every source file and the source folder.
    whole: Access,
    /// Every file gets `whole` (the source's files all have one access).
    uniform: bool,
    /// Of files made from some source files, by node, once computed.
    files: Mutex<lru::LruCache<NodeId, Access>>,
    /// `--uid`, `--gid`, `--file-mode`, `--dir-mode`.
    overrides: Overrides,
}

/// How many files' computed access is kept.
const ACCESS_CACHE: usize = 1 << 16;

/// A file being read front to back, and how far ahead of the reader its
/// source bytes are being fetched.
#[derive(Debug, Clone, Copy)]
struct Stream {
    /// End of the last read.
    next: u64,
    /// Read-ahead window: doubles from [`MIN_READ_AHEAD`] to
    /// [`MAX_READ_AHEAD`] while reads follow each other.
    window: u64,
    /// End of what has been asked for.
    ahead: u64,
}

const MIN_READ_AHEAD: u64 = 1 << 20;
const MAX_READ_AHEAD: u64 = 64 << 20;
/// A read this close to the last one's end continues it (FUSE threads
/// deliver the kernel's readahead out of order).
const SEQUENTIAL_SLACK: u64 = 8 << 20;

/// Files built recently, by node, within a byte budget (least recently used
/// first out). A file is rebuilt, identically, when it is needed again.
#[derive(Debug)]
struct FileCache {
    files: lru::LruCache<NodeId, Arc<VFile>>,
    bytes: u64,
}

impl FileCache {
    fn get(&mut self, id: NodeId) -> Option<Arc<VFile>> {
        self.files.get(&id).cloned()
    }

    fn put(&mut self, id: NodeId, f: Arc<VFile>) {
        self.bytes += cost(&f);
        if let Some((_, old)) = self.files.push(id, f) {
            self.bytes -= cost(&old);
        }
        while self.bytes > CACHE_BYTES && self.files.len() > 1 {
            match self.files.pop_lru() {
                Some((_, old)) => self.bytes -= cost(&old),
                None => break,
            }
        }
    }
}

/// What a cached file costs: the bytes it holds, plus its bookkeeping.
fn cost(f: &VFile) -> u64 {
    f.held_bytes() + 256
}

/// What a volume presents beyond the lossless view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// One converted view per dtype (BF16, F16, F32: `bf16/`, `f16/`, `f32/`).
    pub dtypes: Vec<Dtype>,
    /// Owner, group and modes that replace the source's (`--uid`, ...).
    pub access: Overrides,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dtypes: vec![Dtype::BF16],
            access: Overrides::default(),
        }
    }
}

/// Parse a `--dtype` list: `bf16,f16,f32` (also `bfloat16`, `float16`,
/// `fp16`, `float32`, `fp32`), in order, without repeats.
pub fn parse_dtypes(s: &str) -> Result<Vec<Dtype>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let d = match part.to_ascii_lowercase().as_str() {
            "bf16" | "bfloat16" => Dtype::BF16,
            "f16" | "fp16" | "float16" | "half" => Dtype::F16,
            "f32" | "fp32" | "float32" | "float" => Dtype::F32,
            _ => {
                return Err(format!(
                    "unknown dtype '{part}' (choose from bf16, f16, f32)"
                ));
            }
        };
        if !out.contains(&d) {
            out.push(d);
        }
    }
    if out.is_empty() {
        return Err("no dtype given (choose from bf16, f16, f32)".into());
    }
    Ok(out)
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
    /// Permission bits: at most `0o555` for directories and `0o444` for
    /// files, as the source's allow ([`Volume::who_may_read`]).
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
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
    /// Open the local SOURCE with the default views (`bf16/` as the
    /// converted view).
    pub fn open(source: &Path) -> Result<Volume, SourceError> {
        Volume::open_with(source, &Opener::local(), &Options::default())
    }

    /// Open SOURCE, its files opened by `opener` (`Opener::local()`, or a
    /// remote source's from `remote::locate`), read its headers and decide
    /// every view (no file is built until it is asked for).
    pub fn open_with(
        source: &Path,
        opener: &Opener,
        options: &Options,
    ) -> Result<Volume, SourceError> {
        let catalog = Arc::new(crate::source::open(source, opener)?);
        let (views, tree) = view::build(&catalog, &options.dtypes);
        let folder = match opener.is_remote() {
            true => None,
            false => listed_folder(source),
        };
        let access = Permissions::new(&catalog, folder, options.access);
        let reported = (0..catalog.files.len())
            .map(|_| AtomicBool::new(false))
            .collect();
        let files = lru::LruCache::unbounded();
        let remote = catalog.files.iter().any(|(_, f)| f.file.is_remote());
        let streams = remote.then(|| {
            Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(256).expect("nonzero"),
            ))
        });
        Ok(Volume {
            catalog,
            views,
            tree,
            cache: Mutex::new(FileCache { files, bytes: 0 }),
            reported,
            streams,
            access,
            converted: None,
        })
    }

    /// Views left out for this source, and why (one line each).
    pub fn notes(&self) -> &[String] {
        &self.views.notes
    }

    /// The bytes of file `id` (built now, or from the cache); `None` for a
    /// directory or an unknown id.
    pub fn file(&self, id: NodeId) -> Option<Arc<VFile>> {
        let NodeKind::File(f) = self.tree.kind(id)? else {
            return None;
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = cache.get(id) {
            return Some(v);
        }
        drop(cache);
        let built = Arc::new(self.views.file(&self.catalog, &self.tree, f));
        if let Some(why) = &built.failed {
            // Once per build: the failure is cached like a file.
            log::error!("{}: {why}", self.path(id));
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.put(id, Arc::clone(&built));
        Some(built)
    }

    /// Keep computed bytes in `cache` from now on (`--cache-converted`).
    pub fn set_converted_cache(&mut self, cache: ConvertedCache) {
        self.converted = Some(cache);
    }

    /// Wait (at most `patience`) until computed bytes handed to the
    /// converted cache's writer are written; false if some were not.
    pub fn flush_converted(&self, patience: std::time::Duration) -> bool {
        self.converted.as_ref().is_none_or(|c| c.flush(patience))
    }

    /// Does this volume keep computed bytes on disk (and no write has
    /// failed)?
    pub fn caches_converted(&self) -> bool {
        self.converted.as_ref().is_some_and(|c| c.is_on())
    }

    /// Read from the file `id` (see [`crate::read::read`]). Reading a
    /// directory or an unknown id gives no bytes.
    pub fn read(&self, id: NodeId, offset: u64, size: usize) -> Result<Vec<u8>, ReadError> {
        let Some(f) = self.file(id) else {
            return Ok(Vec::new());
        };
        let mut out = vec![0u8; f.size.saturating_sub(offset).min(size as u64) as usize];
        let n = self.read_into(id, offset, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// Fill `out` from file `id` at `offset` (see [`crate::read::read_into`]);
    /// the number of bytes (0 for a directory or an unknown id). With
    /// `--cache-converted`, computed files go through the cache
    /// ([`ConvertedCache::read_into`]).
    pub fn read_into(&self, id: NodeId, offset: u64, out: &mut [u8]) -> Result<usize, ReadError> {
        let Some(f) = self.file(id) else {
            return Ok(0);
        };
        self.read_ahead(id, &f, offset, out.len() as u64);
        match &self.converted {
            Some(c) if c.keeps(&f) && !self.source_changed() => {
                c.read_into(&self.catalog.files, id, &f, offset, out, || self.path(id))
            }
            _ => crate::read::read_into(&self.catalog.files, &f, offset, out),
        }
    }

    /// Has a change of a source file been seen (by a read, or the watcher)?
    /// Reads then take the plain path, which answers EIO.
    fn source_changed(&self) -> bool {
        self.catalog.files.iter().any(|(_, s)| s.file.is_changed())
    }

    /// With `--cache-converted`: the cache file of inode `ino` if all its
    /// bytes are cached and good (checked now), for the kernel to read
    /// directly; `None` otherwise, or once a source file has changed.
    pub fn open_whole(&self, ino: u64) -> Option<Whole> {
        let c = self.converted.as_ref()?;
        let id = node_id(ino);
        let f = self.file(id)?;
        if self.source_changed() {
            return None;
        }
        c.open_whole(id, &f, || self.path(id))
    }

    /// Remote sources: when this read of `f` continues the previous one,
    /// start fetching the source bytes of the next window of `f` (exactly
    /// those `f` needs: read-ahead never strays into bytes of other files).
    fn read_ahead(&self, id: NodeId, f: &VFile, offset: u64, len: u64) {
        let Some(streams) = &self.streams else { return };
        let end = offset.saturating_add(len).min(f.size);
        let fetch = {
            let mut streams = streams.lock().unwrap();
            match streams.get_mut(&id) {
                Some(s) if offset.abs_diff(s.next) <= SEQUENTIAL_SLACK => {
                    s.window = (s.window * 2)
                        .max(2 * len)
                        .clamp(MIN_READ_AHEAD, MAX_READ_AHEAD);
                    s.next = s.next.max(end);
                    let (from, to) = (s.ahead.max(end), (end + s.window).min(f.size));
                    if s.ahead < end + s.window / 2 && from < to {
                        s.ahead = to;
                        Some((from, to))
                    } else {
                        None
                    }
                }
                _ => {
                    streams.put(
                        id,
                        Stream {
                            next: end,
                            window: 0,
                            ahead: end,
                        },
                    );
                    None
                }
            }
        };
        if let Some((from, to)) = fetch {
            crate::read::prefetch(&self.catalog.files, f, from, to - from);
        }
    }

    /// The node at `path` (`/`-separated, relative to the root).
    pub fn resolve(&self, path: &str) -> Option<NodeId> {
        self.tree.resolve(&self.catalog, &self.views, path)
    }

    /// The path of node `id` relative to the root.
    pub fn path(&self, id: NodeId) -> String {
        self.tree.path(&self.catalog, &self.views, id)
    }

    /// The name of node `id`.
    pub fn name(&self, id: NodeId) -> String {
        self.tree.name(&self.catalog, &self.views, id).into_owned()
    }

    /// The children of directory `id`, in listing order.
    pub fn children(&self, id: NodeId) -> Option<impl Iterator<Item = NodeId> + '_> {
        let n = self.tree.child_count(id)?;
        Some((0..n).filter_map(move |k| self.tree.child(id, k)))
    }

    pub fn is_dir(&self, id: NodeId) -> bool {
        self.tree.kind(id) == Some(NodeKind::Dir)
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
                .filter(|&(_, vf)| self.views.reads(&self.catalog, &self.tree, vf, id))
                .map(|(n, _)| ino(n))
                .collect();
            out.push(Changed { file: id, affected });
        }
        out
    }

    /// Who may read node `id`, before `--uid` and friends: a folder, or a
    /// file made from no source file in particular, the whole source's; a
    /// file made from source files, the most restrictive of theirs
    /// (`crate::access`).
    pub fn who_may_read(&self, id: NodeId) -> Access {
        let p = &self.access;
        let f = match self.tree.kind(id) {
            Some(NodeKind::File(f)) if !p.uniform => f,
            _ => return p.whole,
        };
        if let Some(a) = p.files.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return *a;
        }
        let files = &self.catalog.files;
        let sources: Vec<Access> = match f {
            FileRef::Side(s) => vec![files[s].file.access],
            f => files
                .iter()
                .filter(|&(s, _)| self.views.reads(&self.catalog, &self.tree, f, s))
                .map(|(_, sf)| sf.file.access)
                .collect(),
        };
        let a = match sources.is_empty() {
            true => p.whole,
            false => access::combine(sources, access::mounting_user()),
        };
        p.files.lock().unwrap_or_else(|e| e.into_inner()).put(id, a);
        a
    }

    /// The attributes of inode `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let id = node_id(ino);
        let kind = self.tree.kind(id).ok_or(FsError::NotFound)?;
        let a = self.who_may_read(id);
        let o = &self.access.overrides;
        let (uid, gid) = (o.uid.unwrap_or(a.uid), o.gid.unwrap_or(a.gid));
        Ok(match kind {
            NodeKind::Dir => Attr {
                ino,
                kind: Kind::Dir,
                size: 0,
                perm: o.dir_mode.unwrap_or(a.dir_mode()),
                nlink: 2 + self.tree.subdirs(id),
                uid,
                gid,
            },
            NodeKind::File(_) => {
                let file = self.file(id);
                if let Some(why) = file.as_ref().and_then(|f| f.failed.as_ref()) {
                    return Err(FsError::Read(ReadError::NotBuilt(why.to_string())));
                }
                Attr {
                    ino,
                    kind: Kind::File,
                    size: file.map_or(0, |f| f.size),
                    perm: o.file_mode.unwrap_or(a.file_mode()),
                    nlink: 1,
                    uid,
                    gid,
                }
            }
        })
    }

    /// The entry `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        match self.tree.kind(node_id(parent)).ok_or(FsError::NotFound)? {
            NodeKind::Dir => {}
            NodeKind::File(_) => return Err(FsError::NotADirectory),
        }
        let name = name.to_str().ok_or(FsError::NotFound)?;
        let id = self
            .tree
            .lookup(&self.catalog, &self.views, node_id(parent), name)
            .ok_or(FsError::NotFound)?;
        self.getattr(ino(id))
    }

    /// Open a file with `open(2)` flags: reading only.
    pub fn open_file(&self, ino: u64, flags: i32) -> Result<(), FsError> {
        match self.tree.kind(node_id(ino)).ok_or(FsError::NotFound)? {
            NodeKind::Dir => return Err(FsError::IsADirectory),
            NodeKind::File(_) => {}
        }
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    pub fn opendir(&self, ino: u64) -> Result<(), FsError> {
        self.child_count(ino).map(|_| ())
    }

    fn child_count(&self, ino: u64) -> Result<usize, FsError> {
        let id = node_id(ino);
        match self.tree.kind(id) {
            Some(NodeKind::Dir) => Ok(self.tree.child_count(id).unwrap_or(0)),
            Some(NodeKind::File(_)) => Err(FsError::NotADirectory),
            None => Err(FsError::NotFound),
        }
    }

    /// List directory `ino` from `offset` into `sink` until it is full.
    /// Offsets: 0 is the start, 1 resumes after `.`, 2 after `..`, `2 + k`
    /// after child `k` (in listing order), so a listing resumes where the
    /// previous reply stopped however large the directory.
    pub fn readdir(&self, ino: u64, offset: u64, sink: &mut dyn DirSink) -> Result<(), FsError> {
        let count = self.child_count(ino)?;
        let id = node_id(ino);
        let parent = self.tree.parent(id).unwrap_or(id);
        let dots = [(id, "."), (parent, "..")];
        let mut at = offset;
        for (nid, name) in dots.iter().skip(at as usize) {
            if sink.add(self::ino(*nid), at + 1, Kind::Dir, name) {
                return Ok(());
            }
            at += 1;
        }
        for k in (at - 2) as usize..count {
            let Some(c) = self.tree.child(id, k) else {
                break;
            };
            let kind = match self.tree.kind(c) {
                Some(NodeKind::Dir) => Kind::Dir,
                _ => Kind::File,
            };
            let name = self.tree.name(&self.catalog, &self.views, c);
            if sink.add(self::ino(c), at + 1, kind, &name) {
                break;
            }
            at += 1;
        }
        Ok(())
    }

    /// `access(2)`: nothing may be written. (Who may read is the kernel's
    /// check of [`Volume::getattr`]'s owner, group and mode: the mount has
    /// `default_permissions`, so the kernel does not ask.)
    pub fn access(&self, ino: u64, mask: i32) -> Result<(), FsError> {
        self.tree.kind(node_id(ino)).ok_or(FsError::NotFound)?;
        if mask & libc::W_OK != 0 {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    /// `statfs(2)`. The block count is the tensor data of every view
    /// (headers and generated JSON are not counted: counting them would
    /// mean building every file).
    pub fn statfs(&self) -> StatFs {
        StatFs {
            blocks: self.views.data_bytes(&self.catalog).div_ceil(BLOCK as u64),
            files: self.tree.len() as u64,
            block_size: BLOCK,
            name_max: NAME_MAX,
        }
    }

    /// `read(2)` of inode `ino` into `out`: the number of bytes read.
    pub fn read_ino(&self, ino: u64, offset: u64, out: &mut [u8]) -> Result<usize, FsError> {
        let id = node_id(ino);
        match self.tree.kind(id) {
            None => Err(FsError::NotFound),
            Some(NodeKind::Dir) => Err(FsError::IsADirectory),
            Some(NodeKind::File(_)) => Ok(self.read_into(id, offset, out)?),
        }
    }

    /// The path of inode `ino` inside the mount, for log lines.
    pub fn path_of(&self, ino: u64) -> String {
        let id = node_id(ino);
        match self.tree.kind(id) {
            Some(_) => format!("/{}", self.path(id)),
            None => format!("<inode {ino}>"),
        }
    }
}

impl Permissions {
    fn new(catalog: &Catalog, folder: Option<Access>, overrides: Overrides) -> Permissions {
        let files: Vec<Access> = catalog.files.iter().map(|(_, f)| f.file.access).collect();
        let me = access::mounting_user();
        let whole = access::combine(files.iter().copied().chain(folder), me);
        let uniform = files.iter().all(|a| access::combine([*a], me) == whole);
        Permissions {
            whole,
            uniform,
            files: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(ACCESS_CACHE).expect("nonzero"),
            )),
            overrides,
        }
    }
}

/// Who may list the local source folder `source` and pass every folder on
/// the way to it; `None` for a file.
fn listed_folder(source: &Path) -> Option<Access> {
    let real = std::fs::canonicalize(source).ok()?;
    let meta = std::fs::metadata(&real).ok().filter(|m| m.is_dir())?;
    let mut all = vec![Access::of_listed_folder(&meta)];
    all.extend(access::passages(&real));
    Some(access::combine(all, access::mounting_user()))
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
        // A listing: the source tensors, in source order.
        let expect: Vec<String> = v
            .catalog
            .tensors
            .iter()
            .map(|t| {
                format!(
                    "{}.safetensors",
                    crate::view::names::escape(&t.name, ".safetensors")
                )
            })
            .collect();
        assert_eq!(names[2..], expect);
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
        // manifest.json, raw, bf16, gguf (+ experts dirs below them).
        assert_eq!(root.nlink, 2 + 3);
        let m = v.lookup(1, OsStr::new("manifest.json")).unwrap();
        assert_eq!((m.kind, m.perm, m.nlink), (Kind::File, 0o444, 1));
        let mut buf = vec![0u8; 1 << 20];
        assert_eq!(m.size, v.read_ino(m.ino, 0, &mut buf).unwrap() as u64);
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
            v.read_ino(1, 0, &mut buf)
                .map(|_| ())
                .unwrap_err()
                .to_errno(),
            libc::EISDIR
        );
        assert_eq!(v.path_of(m.ino), "/manifest.json");
        let s = v.statfs();
        assert_eq!(s.files, v.tree.len() as u64);
    }

    #[test]
    fn dtype_lists() {
        use Dtype::*;
        assert_eq!(parse_dtypes("bf16,f16,f32"), Ok(vec![BF16, F16, F32]));
        assert_eq!(parse_dtypes("float32, BF16,f32"), Ok(vec![F32, BF16]));
        assert!(
            parse_dtypes("f8")
                .unwrap_err()
                .contains("unknown dtype 'f8'")
        );
        assert!(parse_dtypes(",").is_err());
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
        let pack = v.resolve("raw/model.safetensors").unwrap();
        let err = v.read(pack, 0, 1 << 30).unwrap_err();
        assert_eq!(err.to_errno(), libc::EIO);
    }
}
