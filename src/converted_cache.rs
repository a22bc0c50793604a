//! The converted-bytes cache (`gyrofs mount --cache-converted`,
//! docs/CACHE.md): computed bytes of virtual files kept on disk, so that
//! each byte is converted once.
//!
//! It is a block cache of the remote layer's kind ([`crate::remote::cache`]:
//! 64 KiB blocks, a CRC-32 per block, LRU eviction under `--cache-size`) in
//! `<cache-dir>/converted/`, where an object is one virtual file of one
//! version of a source:
//!
//! - identity ([`identity`]): `converted`, the source (a local source's
//!   canonical path, a remote one's URL) and the file's path in the tree;
//! - version ([`version`]): the layout of this cache and gyrofs's own
//!   version, then a digest of every source file's
//!   [`version_stamp`](crate::store::SourceFile::version_stamp) (path, size,
//!   mtime, inode; a remote file's object version). A changed source file
//!   or a new gyrofs gives another key: the old entries are never read
//!   again, and are removed when a mount of the same source opens the cache
//!   ([`ConvertedCache::open`]) or by LRU eviction.
//!
//! Only files with computed bytes are cached (`bf16/`, `f16/`, `f32/`,
//! `gguf/`, their `tensors/` and `experts/`); lossless files are the source's
//! own bytes. A read ([`ConvertedCache::read_into`]) takes the blocks it
//! covers that are in the cache from the cache file (each block's CRC is
//! checked the first time this process uses it; a bad one is computed
//! again) and computes the others through the one read path
//! ([`crate::read::read_into`]), writing each whole computed block to the
//! cache. A read that covers part of a block computes that whole block (at
//! most 64 KiB more at each end); nothing else is computed, so reading one
//! expert converts that expert only. Computed blocks are written by a
//! [`Writer`] thread, so a read does not wait on the cache disk, unless
//! [`QUEUE_BYTES`] already wait: then it waits for room, at most
//! [`QUEUE_PATIENCE`], and past that leaves its blocks unwritten (computed
//! again when next read). A failed write (full disk, permissions) is logged once
//! and the mount goes on without the cache.
//!
//! A file whose blocks are all cached is checked once, whole
//! ([`ConvertedCache::open_whole`]), before the adapter hands its cache
//! file to the kernel (FUSE passthrough); it is then [`Pin`]ned: no block of
//! it is evicted while the kernel reads it. A complete file is also
//! [sealed](Entry::seal) by a [`Sealer`] thread (its cache file synced,
//! then its identity and times recorded in the index), so that a later
//! mount trusts it without reading it whole to check the checksums: a
//! remount's first open of a complete file then costs no pass over it.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use crate::catalog::Files;
use crate::error::ReadError;
use crate::remote::cache::{self, BLOCK, Cache, Entry, Pin};
use crate::view::{NodeId, Segment, VFile};

/// The layout of the cache's objects; part of every key, with gyrofs's
/// version, so that another gyrofs never reads this one's bytes.
pub const LAYOUT: &str = "gyrofs-converted-1";

/// The cache's folder under `--cache-dir`.
pub const SUBDIR: &str = "converted";

/// How many virtual files keep their cache files open.
const OPEN_ENTRIES: usize = 128;

/// Computed bytes waiting to be written at most. A read whose blocks do
/// not fit waits for room up to [`QUEUE_PATIENCE`] (so a first read runs
/// at the cache disk's write speed if that is slower than computing, and
/// every block gets written), then leaves them unwritten.
pub const QUEUE_BYTES: u64 = 256 << 20;

/// How long a read waits for room in the writer's queue.
pub const QUEUE_PATIENCE: Duration = Duration::from_millis(200);

/// The identity of a virtual file's bytes: the source and its path in the
/// tree. Fields are separated by tabs (the index header's text shows it).
pub fn identity(source: &str, view_path: &str) -> String {
    format!("converted\t{source}\t{view_path}")
}

/// The version part of every key of a source: [`LAYOUT`], gyrofs's
/// version and the Gyro header version, then the SHA-256 of the stamps of
/// the source's files (in catalog order, with their names).
pub fn version(stamps: &[(String, String)]) -> String {
    let parts: Vec<&str> = stamps
        .iter()
        .flat_map(|(name, stamp)| [name.as_str(), stamp.as_str()])
        .collect();
    let digest = crate::remote::names::digest(&parts);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{LAYOUT} gyrofs-{} gyro-{}\t{hex}",
        env!("CARGO_PKG_VERSION"),
        crate::view::header::GYRO_VERSION
    )
}

/// The version of the source whose files are `files`.
pub fn version_of(files: &Files) -> String {
    let stamps: Vec<(String, String)> = files
        .iter()
        .map(|(_, f)| (f.file.name.clone(), f.file.version_stamp()))
        .collect();
    version(&stamps)
}

/// What a local SOURCE is called in keys: its canonical path (a remote
/// source: the URL as given).
pub fn source_label(source: &Path) -> String {
    match crate::remote::is_remote(source) {
        true => source.to_string_lossy().into_owned(),
        false => std::fs::canonicalize(source)
            .unwrap_or_else(|_| source.to_path_buf())
            .to_string_lossy()
            .into_owned(),
    }
}

/// Does `file` have computed bytes (the files this cache keeps)?
pub fn is_computed(file: &VFile) -> bool {
    file.failed.is_none()
        && file.size > 0
        && file
            .segments()
            .iter()
            .any(|s| matches!(s, Segment::Computed(_)))
}

/// The converted-bytes cache of one volume.
#[derive(Debug)]
pub struct ConvertedCache {
    cache: Arc<Cache>,
    source: String,
    version: String,
    /// Open cache files by node (`None`: could not be opened; not retried
    /// until the node leaves this list).
    entries: Mutex<lru::LruCache<NodeId, Option<Arc<Entry>>>>,
    /// Set by the first failed write: the mount goes on without the cache.
    off: Arc<AtomicBool>,
    /// Warned once that another process holds a cache file.
    warned_busy: AtomicBool,
    writer: Writer,
    sealer: Arc<Sealer>,
}

/// The thread that seals complete cache files ([`Entry::seal`]: a sync of
/// the file, so not on a read's path).
#[derive(Debug)]
struct Sealer {
    jobs: Mutex<Option<mpsc::Sender<Arc<Entry>>>>,
    /// Files handed over and not sealed (or given up) yet.
    pending: AtomicU64,
}

impl Sealer {
    fn start() -> std::io::Result<Arc<Sealer>> {
        let (tx, rx) = mpsc::channel::<Arc<Entry>>();
        let sealer = Arc::new(Sealer {
            jobs: Mutex::new(Some(tx)),
            pending: AtomicU64::new(0),
        });
        let me = Arc::downgrade(&sealer);
        std::thread::Builder::new()
            .name("gyrofs-cache-sealer".into())
            .spawn(move || {
                for entry in rx {
                    match entry.seal() {
                        Ok(true) => log::debug!("cache: sealed {}", entry.data_path.display()),
                        Ok(false) => {}
                        Err(e) => {
                            log::warn!("cache: cannot seal {}: {e}", entry.data_path.display())
                        }
                    }
                    drop(entry);
                    match me.upgrade() {
                        Some(s) => _ = s.pending.fetch_sub(1, Ordering::AcqRel),
                        None => return,
                    }
                }
            })?;
        Ok(sealer)
    }

    /// Seal `entry` soon if it is complete and not sealed.
    fn offer(&self, entry: &Arc<Entry>) {
        if entry.is_sealed() || !entry.is_complete() {
            return;
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let sent = jobs
            .as_ref()
            .is_some_and(|tx| tx.send(Arc::clone(entry)).is_ok());
        if !sent {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Wait until every file handed over is sealed, at most until
    /// `deadline`.
    fn wait(&self, deadline: std::time::Instant) -> bool {
        while self.pending.load(Ordering::Acquire) > 0 {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

/// The thread that writes computed blocks to the cache, and what waits
/// for it.
#[derive(Debug)]
struct Writer {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    queue: Arc<Queue>,
}

/// Bytes handed to the writer and not written yet.
#[derive(Debug, Default)]
struct Queue {
    bytes: AtomicU64,
    lock: Mutex<()>,
    /// Notified after every block written.
    written: Condvar,
}

/// One block to write.
struct Job {
    entry: Arc<Entry>,
    block: usize,
    bytes: Vec<u8>,
}

impl Writer {
    fn start(off: Arc<AtomicBool>, sealer: Arc<Sealer>) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let queue = Arc::new(Queue::default());
        let q = Arc::clone(&queue);
        std::thread::Builder::new()
            .name("gyrofs-cache-writer".into())
            .spawn(move || {
                for job in rx {
                    let len = job.bytes.len() as u64;
                    if off.load(Ordering::Relaxed) {
                        job.entry.abandon(job.block, job.block + 1);
                    } else if let Err(e) = job.entry.land(job.block, &job.bytes) {
                        job.entry.abandon(job.block, job.block + 1);
                        fail(
                            &off,
                            &format!("cannot write {}", cache::full_disk(e, &job.entry.data_path)),
                        );
                    } else {
                        sealer.offer(&job.entry);
                    }
                    q.bytes.fetch_sub(len, Ordering::AcqRel);
                    let _held = q.lock.lock().unwrap_or_else(|e| e.into_inner());
                    q.written.notify_all();
                }
            })?;
        Ok(Writer {
            jobs: Mutex::new(Some(tx)),
            queue,
        })
    }

    /// Hand block `block` of `entry` (owned by the caller) to the writer;
    /// false if the queue stayed full for [`QUEUE_PATIENCE`] (the caller
    /// keeps the block).
    fn send(&self, entry: &Arc<Entry>, block: usize, bytes: &[u8]) -> bool {
        let len = bytes.len() as u64;
        if !self.reserve(len) {
            return false;
        }
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let sent = jobs.as_ref().is_some_and(|tx| {
            tx.send(Job {
                entry: Arc::clone(entry),
                block,
                bytes: bytes.to_vec(),
            })
            .is_ok()
        });
        if !sent {
            self.queue.bytes.fetch_sub(len, Ordering::AcqRel);
        }
        sent
    }

    /// Count `len` bytes into the queue, waiting for room (at most
    /// [`QUEUE_PATIENCE`]).
    fn reserve(&self, len: u64) -> bool {
        let q = &self.queue;
        let fits = || {
            q.bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                    (b + len <= QUEUE_BYTES).then_some(b + len)
                })
                .is_ok()
        };
        if fits() {
            return true;
        }
        let deadline = std::time::Instant::now() + QUEUE_PATIENCE;
        let mut held = q.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if fits() {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            held = q
                .written
                .wait_timeout(held, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wait (at most `patience`) until every block handed over is written.
    fn flush(&self, patience: Duration) -> bool {
        let deadline = std::time::Instant::now() + patience;
        let mut held = self.queue.lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.queue.bytes.load(Ordering::Acquire) > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            held = self
                .queue
                .written
                .wait_timeout(held, left.min(Duration::from_millis(50)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// A write failed: say so once; the mount goes on without the cache.
fn fail(off: &AtomicBool, why: &str) {
    if !off.swap(true, Ordering::Relaxed) {
        log::error!("cache: {why}; the mount goes on without --cache-converted");
    }
}

/// A file whose bytes are all in the cache and good: its cache file, to
/// hand to the kernel, kept in place while this lives.
#[derive(Debug)]
pub struct Whole {
    pub file: std::fs::File,
    pub path: PathBuf,
    _pin: Pin,
}

/// Bytes of one read: from the cache, computed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub cached: u64,
    pub computed: u64,
}

impl ConvertedCache {
    /// Open the cache in `<dir>/converted` (at most `cap` bytes) for the
    /// source called `source` whose files are `files`, and remove the
    /// entries of older versions of that source that no process has open.
    pub fn open(
        dir: &Path,
        cap: u64,
        source: &str,
        files: &Files,
    ) -> std::io::Result<ConvertedCache> {
        let root = dir.join(SUBDIR);
        let cache = Cache::open(&root, cap)?;
        let version = version_of(files);
        let mut stale = 0u64;
        for e in list(dir)? {
            if e.source == source && e.version != version {
                stale += cache::remove_if_idle(&e.data).map_or(0, |_| 1);
            }
        }
        if stale > 0 {
            log::info!("cache: removed {stale} converted files of an older version of {source}");
        }
        let off = Arc::new(AtomicBool::new(false));
        let sealer = Sealer::start()?;
        Ok(ConvertedCache {
            cache,
            source: source.to_string(),
            version,
            entries: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(OPEN_ENTRIES).expect("nonzero"),
            )),
            writer: Writer::start(Arc::clone(&off), Arc::clone(&sealer))?,
            off,
            warned_busy: AtomicBool::new(false),
            sealer,
        })
    }

    /// Wait (at most `patience`) until every computed block handed to the
    /// writer is in the cache, and every file it completed is sealed (the
    /// mount does, once unmounted); false if some were not in time.
    pub fn flush(&self, patience: Duration) -> bool {
        let deadline = std::time::Instant::now() + patience;
        self.writer.flush(patience) && self.sealer.wait(deadline)
    }

    /// Is the cache in use (no write has failed)?
    pub fn is_on(&self) -> bool {
        !self.off.load(Ordering::Relaxed)
    }

    /// Does the cache keep `file`'s bytes?
    pub fn keeps(&self, file: &VFile) -> bool {
        self.is_on() && is_computed(file)
    }

    /// The open cache file of node `id` (`file`, at `path` in the tree).
    fn entry(&self, id: NodeId, file: &VFile, path: impl FnOnce() -> String) -> Option<Arc<Entry>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get(&id) {
            return e.clone();
        }
        let path = path();
        let opened = Entry::open(
            &self.cache,
            &identity(&self.source, &path),
            &self.version,
            file.size,
        );
        let e = match opened {
            Ok(e) => Some(e),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if !self.warned_busy.swap(true, Ordering::Relaxed) {
                    log::warn!("cache: {e}; such files are converted without the cache");
                }
                None
            }
            Err(e) if cache::is_full(&e) => {
                self.fail(&format!(
                    "the cache disk is full ({e}) opening the cache file of {path}: free space there, or give --cache-size less than its free space"
                ));
                None
            }
            Err(e) => {
                self.fail(&format!("cannot open the cache file of {path}: {e}"));
                None
            }
        };
        entries.put(id, e.clone());
        e
    }

    fn fail(&self, why: &str) {
        fail(&self.off, why)
    }

    /// Fill `out` with bytes of `file` (node `id`, at `path` in the tree)
    /// from `offset`, from the cache where it has them and computed
    /// otherwise (then written to it); the number of bytes, as
    /// [`crate::read::read_into`].
    pub fn read_into(
        &self,
        files: &Files,
        id: NodeId,
        file: &VFile,
        offset: u64,
        out: &mut [u8],
        path: impl Fn() -> String,
    ) -> Result<usize, ReadError> {
        let Some(entry) = self.entry(id, file, &path) else {
            return crate::read::read_into(files, file, offset, out);
        };
        let n = file.size.saturating_sub(offset).min(out.len() as u64) as usize;
        let served = self.read_blocks(files, &entry, file, offset, &mut out[..n])?;
        if log::log_enabled!(log::Level::Debug) {
            log::debug!(
                "cache: {} {offset}+{n}: {} bytes from the cache, {} computed",
                path(),
                served.cached,
                served.computed
            );
        }
        Ok(n)
    }

    fn read_blocks(
        &self,
        files: &Files,
        entry: &Arc<Entry>,
        file: &VFile,
        offset: u64,
        out: &mut [u8],
    ) -> Result<Served, ReadError> {
        let mut served = Served::default();
        if out.is_empty() {
            return Ok(served);
        }
        let end = offset + out.len() as u64;
        let (b0, b1) = ((offset / BLOCK) as usize, end.div_ceil(BLOCK) as usize);
        // Blocks this read now owns (were absent, or failed their check):
        // it computes them and writes them, or gives them up.
        let mut owned = Owned::new(entry, b0, b1 - b0);
        let claim = entry.claim(b0, b1, true);
        for (s, e) in &claim.fetch {
            owned.set(*s..*e);
        }
        for &b in &claim.verify {
            if !entry.verify(b) {
                owned.set(b..b + 1);
            }
        }
        // No hole is punched under this read (as for remote blocks).
        let _reading = self.cache.epochs().enter();
        let present = entry.present(b0, b1);
        let mut b = b0;
        while b < b1 {
            let cached = present[b - b0];
            let mut e = b + 1;
            while e < b1 && present[e - b0] == cached {
                e += 1;
            }
            let (rs, rl) = entry.span(b, e);
            let (lo, hi) = (rs.max(offset), (rs + rl).min(end));
            let dst = &mut out[(lo - offset) as usize..(hi - offset) as usize];
            if cached && entry.read_at(dst, lo).is_ok() {
                served.cached += dst.len() as u64;
            } else {
                served.computed += self.compute(files, entry, file, &mut owned, (b, e), lo, dst)?;
            }
            b = e;
        }
        Ok(served)
    }

    /// Compute blocks `run` of `file` and write those this read owns to
    /// the cache; copy bytes `lo..lo + dst.len()` to `dst`. Returns the
    /// bytes computed.
    #[allow(clippy::too_many_arguments)]
    fn compute(
        &self,
        files: &Files,
        entry: &Arc<Entry>,
        file: &VFile,
        owned: &mut Owned,
        run: (usize, usize),
        lo: u64,
        dst: &mut [u8],
    ) -> Result<u64, ReadError> {
        let (rs, rl) = entry.span(run.0, run.1);
        if lo == rs && dst.len() as u64 == rl {
            crate::read::read_into(files, file, rs, dst)?;
            self.store(entry, owned, run, rs, dst);
        } else {
            let mut whole = vec![0u8; rl as usize];
            crate::read::read_into(files, file, rs, &mut whole)?;
            self.store(entry, owned, run, rs, &whole);
            let at = (lo - rs) as usize;
            dst.copy_from_slice(&whole[at..at + dst.len()]);
        }
        Ok(rl)
    }

    /// Hand the blocks of `run` this read owns to the writer; `bytes` are
    /// the run's, from `rs`. Blocks the writer cannot take (a full queue)
    /// stay the read's, given up when it ends.
    fn store(
        &self,
        entry: &Arc<Entry>,
        owned: &mut Owned,
        run: (usize, usize),
        rs: u64,
        bytes: &[u8],
    ) {
        for b in run.0..run.1 {
            if !owned.has(b) || !self.is_on() {
                continue;
            }
            let (s, l) = entry.span(b, b + 1);
            if self
                .writer
                .send(entry, b, &bytes[(s - rs) as usize..(s - rs + l) as usize])
            {
                owned.clear(b);
            }
        }
    }

    /// If every byte of `file` (node `id`) is in the cache: check every
    /// block not checked yet by this process against its CRC, and return
    /// the cache file, pinned. `None` if some block is missing or bad (a
    /// bad one is computed again by the next read that covers it).
    pub fn open_whole(&self, id: NodeId, file: &VFile, path: impl Fn() -> String) -> Option<Whole> {
        if !self.keeps(file) {
            return None;
        }
        let entry = self.entry(id, file, &path)?;
        let pin = entry.pin();
        if !entry.is_whole() {
            return None;
        }
        let blocks = entry.blocks();
        let mut owned = Owned::new(&entry, 0, blocks);
        let claim = entry.claim(0, blocks, true);
        for (s, e) in &claim.fetch {
            owned.set(*s..*e);
        }
        for &b in &claim.verify {
            if !entry.verify(b) {
                owned.set(b..b + 1);
            }
        }
        // Every block checked, by this open or an earlier one (another
        // open checking them at the same time has them busy: not yet).
        if owned.any() || !entry.is_complete() {
            return None;
        }
        self.sealer.offer(&entry);
        let opened = std::fs::File::open(&entry.data_path);
        match opened {
            Ok(f) => Some(Whole {
                file: f,
                path: entry.data_path.clone(),
                _pin: pin,
            }),
            Err(e) => {
                log::warn!("cache: {}: {e}", entry.data_path.display());
                None
            }
        }
    }
}

/// Blocks a read owns, given up (back to "not cached") when it ends
/// without writing them.
struct Owned<'a> {
    entry: &'a Entry,
    b0: usize,
    owned: Vec<bool>,
}

impl<'a> Owned<'a> {
    fn new(entry: &'a Entry, b0: usize, n: usize) -> Owned<'a> {
        Owned {
            entry,
            b0,
            owned: vec![false; n],
        }
    }
    fn set(&mut self, r: std::ops::Range<usize>) {
        for b in r {
            self.owned[b - self.b0] = true;
        }
    }
    fn has(&self, b: usize) -> bool {
        self.owned[b - self.b0]
    }
    fn clear(&mut self, b: usize) {
        self.owned[b - self.b0] = false;
    }
    fn any(&self) -> bool {
        self.owned.contains(&true)
    }
}

impl Drop for Owned<'_> {
    fn drop(&mut self) {
        let mut b = 0;
        while b < self.owned.len() {
            if !self.owned[b] {
                b += 1;
                continue;
            }
            let mut e = b;
            while e < self.owned.len() && self.owned[e] {
                e += 1;
            }
            self.entry.abandon(self.b0 + b, self.b0 + e);
            b = e;
        }
    }
}

/// One cached virtual file, as `gyrofs cache ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub source: String,
    pub view_path: String,
    pub version: String,
    /// Bytes cached, of `len`.
    pub cached: u64,
    pub len: u64,
    /// When its index was last written (opened by a mount, or blocks
    /// added).
    pub last_use: std::time::SystemTime,
    /// Its data file.
    pub data: PathBuf,
}

impl Listed {
    pub fn is_complete(&self) -> bool {
        self.cached == self.len
    }
}

/// The cached files under `--cache-dir` `dir`, least recently used first.
pub fn list(dir: &Path) -> std::io::Result<Vec<Listed>> {
    let objects = dir.join(SUBDIR).join("objects");
    let rd = match std::fs::read_dir(&objects) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "idx") {
            continue;
        }
        let Some(summary) = cache::read_index(&p) else {
            continue;
        };
        let mut fields = summary.identity.splitn(3, '\t');
        let (Some("converted"), Some(source), Some(view_path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let last_use = e
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        out.push(Listed {
            source: source.to_string(),
            view_path: view_path.to_string(),
            version: summary.version,
            cached: summary.stored,
            len: summary.len,
            last_use,
            data: p.with_extension("data"),
        });
    }
    out.sort_by(|a, b| (a.last_use, &a.data).cmp(&(b.last_use, &b.data)));
    Ok(out)
}

/// Print `listed` as `gyrofs cache ls` does: one line per file, tab
/// separated: source, path in the mount, bytes cached/size, `complete` or
/// `partial`, last use (UTC).
pub fn print_list(listed: &[Listed], out: &mut impl std::io::Write) -> std::io::Result<()> {
    writeln!(out, "SOURCE\tPATH\tCACHED/SIZE\tSTATE\tLAST USE")?;
    for l in listed {
        let state = match l.is_complete() {
            true => "complete",
            false => "partial",
        };
        writeln!(
            out,
            "{}\t{}\t{}/{}\t{state}\t{}",
            l.source,
            l.view_path,
            l.cached,
            l.len,
            utc(l.last_use)
        )?;
    }
    Ok(())
}

/// `t` as `2026-12-06 12:03:15` (UTC).
fn utc(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// What [`clear`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cleared {
    pub removed: u64,
    pub bytes: u64,
    /// Files left because a running mount has them open.
    pub in_use: u64,
}

/// Remove the cached files under `--cache-dir` `dir` (only those of
/// `source`, as [`source_label`] names it, if given) that no running mount
/// has open.
pub fn clear(dir: &Path, source: Option<&str>) -> std::io::Result<Cleared> {
    let mut c = Cleared::default();
    for e in list(dir)? {
        if source.is_some_and(|s| s != e.source) {
            continue;
        }
        match cache::remove_if_idle(&e.data) {
            Some(bytes) => {
                c.removed += 1;
                c.bytes += bytes;
            }
            None if e.data.exists() => c.in_use += 1,
            None => {
                // Its data file is gone already: the index alone.
                let _ = std::fs::remove_file(e.data.with_extension("idx"));
            }
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc() {
        let t = |s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(utc(t(0)), "1970-01-01 00:00:00");
        assert_eq!(utc(t(1_796_555_000)), "2026-12-06 11:03:20");
        assert_eq!(utc(t(951_782_400)), "2000-02-29 00:00:00");
    }

    #[test]
    fn keys_change_with_every_part() {
        let s = |a: &str, b: &str| vec![(a.to_string(), b.to_string())];
        let v = version(&s("model.safetensors", "/m/model.safetensors 10 5 7"));
        assert!(v.starts_with(LAYOUT), "{v}");
        assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
        // Size, mtime, inode, path, name: each changes the version.
        for other in [
            s("model.safetensors", "/m/model.safetensors 11 5 7"),
            s("model.safetensors", "/m/model.safetensors 10 6 7"),
            s("model.safetensors", "/m/model.safetensors 10 5 8"),
            s("model.safetensors", "/n/model.safetensors 10 5 7"),
            s("other.safetensors", "/m/model.safetensors 10 5 7"),
        ] {
            assert_ne!(version(&other), v, "{other:?}");
        }
        // Boundaries between parts do not blur.
        assert_ne!(
            version(&[("ab".into(), "c".into())]),
            version(&[("a".into(), "bc".into())])
        );
        assert_eq!(
            identity("/m", "bf16/model.safetensors"),
            "converted\t/m\tbf16/model.safetensors"
        );
    }

    #[test]
    fn a_local_stamp_names_path_size_mtime_and_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        std::fs::write(&p, b"0123456789").unwrap();
        let f = crate::store::Opener::local()
            .open(&p, "a.bin".into())
            .unwrap();
        let m = std::fs::metadata(&p).unwrap();
        let real = std::fs::canonicalize(&p).unwrap();
        let mtime = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
        assert_eq!(
            f.version_stamp(),
            format!("{} 10 {mtime} {}", real.display(), m.ino())
        );
    }

    /// A cache of one 3-block object, through the index as `ls` reads it.
    #[test]
    fn the_index_lists_sources_views_and_cached_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join(SUBDIR), 1 << 30).unwrap();
        let len = 2 * BLOCK + 10;
        let id = identity("/src/m", "bf16/model.safetensors");
        let e = Entry::open(&cache, &id, "v1", len).unwrap();
        e.claim(0, 3, true);
        e.land(0, &vec![1u8; BLOCK as usize]).unwrap();
        e.land(2, &[2u8; 10]).unwrap();
        e.abandon(1, 2);
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed.len(), 1);
        let l = &listed[0];
        assert_eq!(
            (l.source.as_str(), l.view_path.as_str(), l.version.as_str()),
            ("/src/m", "bf16/model.safetensors", "v1")
        );
        assert_eq!((l.cached, l.len, l.is_complete()), (BLOCK + 10, len, false));
        e.claim(1, 2, true);
        e.land(1, &vec![3u8; BLOCK as usize]).unwrap();
        assert!(list(dir.path()).unwrap()[0].is_complete());
        // In use: not cleared; once let go: cleared, of that source only.
        assert_eq!(clear(dir.path(), None).unwrap().in_use, 1);
        drop(e);
        let other = Entry::open(&cache, &identity("/src/n", "bf16/x"), "v1", 5).unwrap();
        drop(other);
        let c = clear(dir.path(), Some("/src/m")).unwrap();
        assert_eq!((c.removed, c.in_use), (1, 0));
        let left = list(dir.path()).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].source, "/src/n");
    }
}
