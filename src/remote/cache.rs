//! The local block cache of remote objects (docs/REMOTE.md, "Cache").
//!
//! Each remote object version has two files in `<cache-dir>/objects/`,
//! named `NAME-HASH` where HASH is the SHA-256 of the object's identity
//! (endpoint, bucket and key; URL; Hub repository, commit and path) and
//! version (ETag, or the Hub's file hash), and NAME the object's base name
//! for humans ([`names::hashed`](super::names::hashed)):
//!
//! - `.data`: a sparse file of the object's full length. Fetched bytes
//!   are written at their own offsets, so the file is mapped and read like a
//!   local source file; bytes not fetched are holes.
//! - `.idx`: a header ([`index_header`]: `GYROIDX2`, block size, object
//!   length, the SHA-256 above, and the identity (URL query strings left
//!   out) and version as text) then one little-endian `u64` per [`BLOCK`]:
//!   0 while the block is not cached, `1 << 63 | crc32` once it is. An
//!   index whose header is not exactly the one expected is not used: its
//!   blocks are dropped and fetched again. A [`SEAL_LEN`]-byte seal ends
//!   the index (an index without one, from an older gyrofs, is read as
//!   unsealed): all zero, or [`seal`](Entry::seal) of an object whose
//!   blocks were all present, written once its data file was synced.
//!
//! So a changed object never meets the blocks of the old one, and two
//! objects never share blocks. A block is written with
//! `pwrite` before its index entry, and its checksum is verified the first
//! time a later process uses it: a crash between the two, or a torn write,
//! costs a refetch and never serves wrong bytes. A sealed object whose data
//! file still has the inode, size, modification and change times the seal
//! recorded is trusted without that pass (its blocks were on disk when it
//! was sealed, and any write since, ours or anyone's, changed those times;
//! gyrofs also clears the seal before it changes a sealed object).
//!
//! The cache holds at most `--cache-size` bytes. Past it, an evictor thread
//! frees the least recently used space: first whole objects no running mount
//! has open (oldest index first), then 16 MiB groups of the open objects'
//! blocks, least recently touched first. An evicted group's blocks become
//! "not cached" at once (new reads fetch them again), but its hole is only
//! punched once every read that started before the eviction has finished
//! ([`ReadEpochs`]), so no read ever sees a block vanish under it. A
//! [`Pin`]ned entry (a file the kernel reads directly, by FUSE passthrough)
//! loses no group until it is let go.
//!
//! The converted-bytes cache (`crate::converted_cache`, docs/CACHE.md)
//! keeps the computed bytes of virtual files in a cache of this same kind,
//! in its own folder: an object there is one virtual file of one version of
//! a source.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak, mpsc};
use std::time::{Duration, Instant};

use memmap2::MmapMut;

use crate::store::ReadEpochs;

/// Cache unit: fetched, checksummed and tracked per 64 KiB block.
pub const BLOCK: u64 = 64 << 10;
/// Blocks per eviction group (16 MiB).
const GROUP_BLOCKS: usize = 256;
const MAGIC: &[u8; 8] = b"GYROIDX2";
/// The fixed part of an index header (the text follows it).
const HEADER_FIXED: usize = 64;
const STORED_BIT: u64 = 1 << 63;
/// Bytes of the seal that ends an index: `GYROSEAL`, then the data file's
/// device, inode, size, modification and change times (ns), u64s
/// little-endian; all zero while unsealed.
pub const SEAL_LEN: usize = 48;
const SEAL_MAGIC: &[u8; 8] = b"GYROSEAL";
/// Largest object the cache takes (16 TiB): its per-block state is then
/// 256 MiB at most.
pub const MAX_OBJECT: u64 = 1 << 44;

/// State of one block in this process.
pub(crate) mod state {
    /// Not in the cache.
    pub const ABSENT: u8 = 0;
    /// In the cache file from an earlier run; checksum not verified yet.
    pub const STORED: u8 = 1;
    /// In the cache file and good.
    pub const PRESENT: u8 = 2;
    /// Being fetched (or verified) by some thread.
    pub const BUSY: u8 = 3;
}

/// The cache directory: accounting and eviction across objects.
#[derive(Debug)]
pub struct Cache {
    objects: PathBuf,
    /// The byte cap (`--cache-size`).
    cap: AtomicU64,
    used: AtomicU64,
    open: Mutex<Vec<Weak<Entry>>>,
    evict: Mutex<Option<mpsc::Sender<()>>>,
    tick: AtomicU64,
    /// The tick when the previous eviction pass began: groups used since
    /// are in use by reads in progress, and are not evicted.
    last_pass: AtomicU64,
    /// Groups dropped by a pass whose holes wait for the reads older than
    /// it (the reader parity to drain).
    pending: Mutex<Option<Pending>>,
    /// Reads in progress of this cache's files: holes are punched only
    /// once the reads older than the eviction have finished.
    epochs: Arc<ReadEpochs>,
}

/// Dropped groups whose holes wait: the reader parity to drain, and the
/// groups (object, group index).
type Pending = (usize, Vec<(Weak<Entry>, usize)>);

/// Ticks start here: tick 1 marks groups stored by an earlier run.
const FIRST_TICK: u64 = 2;
/// Eviction passes are at least this far apart.
const PASS_EVERY: Duration = Duration::from_millis(200);

impl Cache {
    /// Open (create) the cache at `dir`, holding at most `cap` bytes.
    pub fn open(dir: &Path, cap: u64) -> std::io::Result<Arc<Cache>> {
        let objects = dir.join("objects");
        std::fs::create_dir_all(&objects)?;
        let mut used = 0;
        for e in std::fs::read_dir(&objects)?.flatten() {
            if e.path().extension().is_some_and(|x| x == "data") {
                used += allocated(&e.path());
            }
        }
        let cache = Arc::new(Cache {
            objects,
            cap: AtomicU64::new(cap),
            used: AtomicU64::new(used),
            open: Mutex::new(Vec::new()),
            evict: Mutex::new(None),
            tick: AtomicU64::new(FIRST_TICK),
            last_pass: AtomicU64::new(0),
            pending: Mutex::new(None),
            epochs: ReadEpochs::new(),
        });
        let (tx, rx) = mpsc::channel::<()>();
        *cache.evict.lock().unwrap() = Some(tx);
        let weak = Arc::downgrade(&cache);
        std::thread::Builder::new()
            .name("gyrofs-evict".into())
            .spawn(move || {
                // Passes at most every PASS_EVERY; while over the cap (or
                // with holes to punch) they repeat without being woken
                // (groups in use by reads become evictable once those
                // reads move on).
                let mut again = false;
                loop {
                    let got = match again {
                        false => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                        true => rx.recv_timeout(PASS_EVERY),
                    };
                    if got == Err(mpsc::RecvTimeoutError::Disconnected) {
                        return;
                    }
                    let started = Instant::now();
                    match weak.upgrade() {
                        Some(c) => again = c.evict(),
                        None => return,
                    }
                    std::thread::sleep(PASS_EVERY.saturating_sub(started.elapsed()));
                    while rx.try_recv().is_ok() {}
                }
            })?;
        if used > cap {
            cache.wake_evictor();
        }
        Ok(cache)
    }

    /// Bytes cached now (allocated blocks of every object file).
    /// The reads in progress of this cache's files.
    pub fn epochs(&self) -> &Arc<ReadEpochs> {
        &self.epochs
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The byte cap.
    pub fn cap(&self) -> u64 {
        self.cap.load(Ordering::Relaxed)
    }

    /// Change the byte cap (evicting down to it if over).
    pub fn set_cap(&self, cap: u64) {
        self.cap.store(cap, Ordering::Relaxed);
        if self.used() > cap {
            self.wake_evictor();
        }
    }

    fn next_tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed)
    }

    fn added(&self, bytes: u64) {
        if self.used.fetch_add(bytes, Ordering::Relaxed) + bytes > self.cap() {
            self.wake_evictor();
        }
    }

    fn wake_evictor(&self) {
        if let Some(tx) = &*self.evict.lock().unwrap() {
            let _ = tx.send(());
        }
    }

    /// One eviction pass: free space down to 90% of the cap (see the
    /// module comment). Returns whether it is still over the cap, or has
    /// holes waiting to be punched (then another pass follows shortly).
    fn evict(&self) -> bool {
        let open: Vec<Arc<Entry>> = {
            let mut open = self.open.lock().unwrap();
            open.retain(|w| w.strong_count() > 0);
            open.iter().filter_map(Weak::upgrade).collect()
        };
        // Holes of an earlier pass, once the reads older than it are done.
        let mut pending = self.pending.lock().unwrap();
        if let Some((parity, groups)) = pending.take() {
            if self.epochs.drained(parity) {
                for (entry, g) in groups {
                    if let Some(e) = entry.upgrade() {
                        e.punch_group(g);
                    }
                }
            } else {
                *pending = Some((parity, groups));
            }
        }
        // Recount what this process can free: its open objects, and the
        // objects no process has open (another process's locked objects
        // are its to manage).
        let mut idle: Vec<(std::time::SystemTime, PathBuf, u64)> = Vec::new();
        let mut used: u64 = open.iter().map(|o| allocated(&o.data_path)).sum();
        if let Ok(rd) = std::fs::read_dir(&self.objects) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_none_or(|x| x != "data")
                    || open.iter().any(|o| o.data_path == p)
                {
                    continue;
                }
                let Ok(f) = File::open(&p) else { continue };
                if !try_lock(&f) || !is_at(&f, &p) {
                    continue;
                }
                let bytes = allocated(&p);
                used += bytes;
                let t = std::fs::metadata(p.with_extension("idx"))
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                idle.push((t, p, bytes));
            }
        }
        // Holes not punched yet are no longer counted.
        let unpunched: u64 = pending
            .as_ref()
            .map_or(0, |(_, g)| g.len() as u64 * GROUP_BLOCKS as u64 * BLOCK);
        used = used.saturating_sub(unpunched);
        self.used.store(used, Ordering::Relaxed);
        let cap = self.cap();
        let target = cap / 10 * 9;
        if used <= cap {
            return pending.is_some();
        }
        let recent = self
            .last_pass
            .swap(self.tick.load(Ordering::Relaxed), Ordering::Relaxed);
        // Whole idle objects, oldest first.
        idle.sort();
        for (_, p, bytes) in idle {
            if self.used() <= target {
                return pending.is_some();
            }
            let Ok(f) = File::open(&p) else { continue };
            // Locked, and still the file at `p` (not one another evictor
            // unlinked, with a new file of another process at its path).
            if !try_lock(&f) || !is_at(&f, &p) {
                continue;
            }
            let _ = std::fs::remove_file(p.with_extension("idx"));
            let _ = std::fs::remove_file(&p);
            self.used
                .fetch_sub(bytes.min(self.used()), Ordering::Relaxed);
            log::info!("cache: evicted {} ({bytes} bytes)", p.display());
        }
        if pending.is_some() {
            // Holes of the last pass still wait on older reads: no new
            // drops until they are punched.
            return true;
        }
        // Then groups of open objects, least recently used first.
        let mut groups: Vec<(u64, usize, usize)> = Vec::new();
        for (i, o) in open.iter().enumerate() {
            for (g, t) in o.ticks.iter().enumerate() {
                let t = t.load(Ordering::Relaxed);
                // Touched since the previous pass: a read may be waiting
                // for the rest of its range (the cache then runs over its
                // cap for as long as such reads last).
                if t > 0 && t < recent.max(FIRST_TICK) {
                    groups.push((t, i, g));
                }
            }
        }
        groups.sort();
        let mut punch = Vec::new();
        for (_, i, g) in groups {
            if self.used() <= target {
                break;
            }
            let freed = open[i].drop_group(g);
            if freed > 0 {
                self.used
                    .fetch_sub(freed.min(self.used()), Ordering::Relaxed);
                punch.push((Arc::downgrade(&open[i]), g));
            }
        }
        if !punch.is_empty() {
            // Reads that began before the groups were dropped may still
            // hold their bytes: punched by a later pass, once they are done.
            *pending = Some((self.epochs.flip(), punch));
        }
        pending.is_some() || self.used() > cap
    }
}

/// Bytes actually allocated to a (sparse) file.
fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map_or(0, |m| m.blocks() * 512)
}

/// Open `path` to read and write, creating it if missing.
fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn try_lock(f: &File) -> bool {
    // SAFETY: flock on a descriptor we own; no memory is involved.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// How long opening an object waits for another process's lock on it: the
/// daemon of a mount of the same source that was just unmounted may still
/// be exiting (`umount X && gyrofs mount SOURCE X`).
const LOCK_PATIENCE: Duration = Duration::from_secs(3);

/// Open `path` (creating it if missing) and lock it, waiting up to
/// `patience` for another holder to let go; `None` if it did not.
///
/// The lock is only good if the locked file is still the one at `path`:
/// another process's evictor may have unlinked it while this one waited
/// (it locks, then removes), and a lock on an unlinked file guards
/// nothing. Then the path is opened again.
fn lock_live(path: &Path, patience: Duration) -> std::io::Result<Option<File>> {
    let deadline = Instant::now() + patience;
    loop {
        let f = open_rw(path)?;
        loop {
            if try_lock(&f) {
                break;
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if is_at(&f, path) {
            return Ok(Some(f));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
    }
}

/// Is the open file `f` still the file at `path` (same device and inode,
/// and not unlinked)?
fn is_at(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.nlink() > 0 && a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Why a block could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    /// A block being fetched by someone went back to "not cached": its
    /// fetch failed.
    Failed,
    /// A block was evicted before the wait saw it (claim it again).
    Evicted,
    /// No block of the range arrived within the deadline.
    TimedOut,
}

/// One object's blocks in the cache.
#[derive(Debug)]
pub struct Entry {
    pub len: u64,
    /// Bytes of the index file's header (the entries follow).
    header: usize,
    pub data_path: PathBuf,
    /// Read-write, exclusively locked while this process has it open.
    data: File,
    index: Mutex<MmapMut>,
    state: Mutex<Vec<u8>>,
    landed: Condvar,
    /// Per group: last use (a cache-wide counter; 0: nothing cached).
    ticks: Vec<AtomicU64>,
    /// Fetches given up so far (tells a failed block from an evicted one).
    failures: AtomicU64,
    /// [`Pin`]s held: while any is, no group is evicted.
    pins: AtomicUsize,
    /// Blocks present (in the cache file and good).
    present: AtomicUsize,
    /// Bumped, under the index lock, by every change of the cache file or
    /// index (a landed or dropped block): a seal is written only if none
    /// happened while the data file was synced.
    changes: AtomicU64,
    /// The index's seal is set (see [`Entry::seal`]).
    sealed: std::sync::atomic::AtomicBool,
    cache: Arc<Cache>,
}

/// Keeps every cached block of an entry in place (no eviction) until
/// dropped: the kernel reads the data file directly (FUSE passthrough).
#[derive(Debug)]
pub struct Pin(Arc<Entry>);

impl Pin {
    pub fn entry(&self) -> &Arc<Entry> {
        &self.0
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.0.pins.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Entry {
    /// The cache this entry belongs to.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Open the cached blocks of object `identity` at `version` (`len`
    /// bytes), creating the files if needed. Fails if another process
    /// holds them.
    pub fn open(
        cache: &Arc<Cache>,
        identity: &str,
        version: &str,
        len: u64,
    ) -> std::io::Result<Arc<Entry>> {
        if len > MAX_OBJECT {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("an object of {len} bytes is larger than gyrofs serves ({MAX_OBJECT})"),
            ));
        }
        let name = super::names::hashed(identity, &[identity, version]);
        let data_path = cache.objects.join(format!("{name}.data"));
        let idx_path = cache.objects.join(format!("{name}.idx"));
        // Still open in this process (a queued write or seal, a file in
        // passthrough holds it): the same entry, not a second lock on it.
        let live = cache
            .open
            .lock()
            .unwrap()
            .iter()
            .filter_map(Weak::upgrade)
            .find(|e| e.data_path == data_path && e.len == len);
        if let Some(e) = live {
            return Ok(e);
        }
        let Some(data) = lock_live(&data_path, LOCK_PATIENCE)? else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!(
                    "{} is in use by another gyrofs process; give this mount its own --cache-dir",
                    data_path.display()
                ),
            ));
        };
        let blocks = len.div_ceil(BLOCK) as usize;
        let idx = open_rw(&idx_path)?;
        let header = index_header(identity, version, len);
        let want = (header.len() + 8 * blocks + SEAL_LEN) as u64;
        let mut seen = vec![0u8; header.len()];
        let idx_len = idx.metadata()?.len();
        // An index without its seal (an older gyrofs's) is read as unsealed.
        let valid = (idx_len == want || idx_len == want - SEAL_LEN as u64)
            && idx.read_exact_at(&mut seen, 0).is_ok()
            && seen == header
            && data.metadata()?.len() == len;
        if valid && idx_len != want {
            idx.set_len(want)?;
        }
        if !valid {
            // New, or not ours to trust (another object's, or an older
            // format's): start empty.
            idx.set_len(0)?;
            idx.set_len(want)?;
            idx.write_all_at(&header, 0)?;
            let before = allocated(&data_path);
            data.set_len(0)?;
            data.set_len(len)?;
            cache
                .used
                .fetch_sub(before.min(cache.used()), Ordering::Relaxed);
        }
        // The index is written through a map: its blocks are allocated now,
        // so that a full disk fails here, with a message, and never as a
        // SIGBUS on a write to the map.
        allocate(&idx, want).map_err(|e| full_disk(e, &idx_path))?;
        // SAFETY: the index file is ours: created above and exclusively
        // locked through the data file, so no other gyrofs writes it; it is
        // only read and written as plain u64 entries and the seal's bytes.
        let mut index = unsafe { MmapMut::map_mut(&idx)? };
        let seal_at = header.len() + 8 * blocks;
        // A seal that still describes the data file, over an index whose
        // blocks are all stored (as when it was sealed): the blocks need
        // no check. Any other seal is stale: cleared.
        let sealed = index[seal_at..] == seal_of(&data.metadata()?)
            && (0..blocks).all(|b| entry_at(&index, header.len(), b) & STORED_BIT != 0);
        if !sealed && index[seal_at..].iter().any(|&b| b != 0) {
            index[seal_at..].fill(0);
        }
        let stored = match sealed {
            true => state::PRESENT,
            false => state::STORED,
        };
        let mut state = vec![state::ABSENT; blocks];
        let mut present = 0;
        let groups = blocks.div_ceil(GROUP_BLOCKS);
        let ticks: Vec<AtomicU64> = (0..groups).map(|_| AtomicU64::new(0)).collect();
        for (b, s) in state.iter_mut().enumerate() {
            if entry_at(&index, header.len(), b) & STORED_BIT != 0 {
                *s = stored;
                present += usize::from(sealed);
                ticks[b / GROUP_BLOCKS].store(1, Ordering::Relaxed);
            }
        }
        if sealed {
            log::debug!(
                "cache: {} is sealed: its {present} stored blocks are used without a check",
                data_path.display()
            );
        }
        // Touch the index: its modification time orders idle objects.
        let _ = idx.set_modified(std::time::SystemTime::now());
        let entry = Arc::new(Entry {
            len,
            header: header.len(),
            data_path,
            data,
            index: Mutex::new(index),
            state: Mutex::new(state),
            landed: Condvar::new(),
            ticks,
            failures: AtomicU64::new(0),
            pins: AtomicUsize::new(0),
            present: AtomicUsize::new(present),
            changes: AtomicU64::new(0),
            sealed: std::sync::atomic::AtomicBool::new(sealed),
            cache: Arc::clone(cache),
        });
        cache.open.lock().unwrap().push(Arc::downgrade(&entry));
        Ok(entry)
    }

    pub fn blocks(&self) -> usize {
        self.len.div_ceil(BLOCK) as usize
    }

    /// Keep every block in place until the pin is dropped (no eviction).
    pub fn pin(self: &Arc<Self>) -> Pin {
        self.pins.fetch_add(1, Ordering::AcqRel);
        Pin(Arc::clone(self))
    }

    /// Which of blocks `b0..b1` are present (in the cache file and good)
    /// now.
    pub fn present(&self, b0: usize, b1: usize) -> Vec<bool> {
        let st = self.state.lock().unwrap();
        st[b0..b1].iter().map(|&s| s == state::PRESENT).collect()
    }

    /// Is every block in the cache file (present, or stored by an earlier
    /// run and not verified yet)?
    pub fn is_whole(&self) -> bool {
        let st = self.state.lock().unwrap();
        st.iter()
            .all(|&s| s == state::PRESENT || s == state::STORED)
    }

    /// Read cached bytes from the data file (the caller holds a
    /// [`ReadEpochs`] reading of the cache, and saw the blocks present).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.data.read_exact_at(buf, offset)
    }

    /// The byte range of blocks `b0..b1`.
    pub fn span(&self, b0: usize, b1: usize) -> (u64, u64) {
        let start = (b0 as u64 * BLOCK).min(self.len);
        let end = (b1 as u64 * BLOCK).min(self.len);
        (start, end.saturating_sub(start))
    }

    /// Claim blocks `b0..b1` for the caller: absent blocks become busy and
    /// are returned in `fetch` (as runs), blocks stored by an earlier run
    /// become busy and are returned in `verify`. Touches their groups.
    pub fn claim(&self, b0: usize, b1: usize, verify_stored: bool) -> Claim {
        let tick = self.cache.next_tick();
        let mut st = self.state.lock().unwrap();
        let mut claim = Claim::default();
        for b in b0..b1 {
            match st[b] {
                state::ABSENT => {
                    st[b] = state::BUSY;
                    match claim.fetch.last_mut() {
                        Some(r) if r.1 == b => r.1 = b + 1,
                        _ => claim.fetch.push((b, b + 1)),
                    }
                }
                state::STORED if verify_stored => {
                    st[b] = state::BUSY;
                    claim.verify.push(b);
                }
                _ => {}
            }
        }
        drop(st);
        for g in b0 / GROUP_BLOCKS..b1.div_ceil(GROUP_BLOCKS) {
            self.ticks[g].store(tick, Ordering::Relaxed);
        }
        claim
    }

    /// Check a block stored by an earlier run against its checksum; it
    /// becomes present if good, else it stays busy for the caller to fetch.
    pub fn verify(&self, b: usize) -> bool {
        let (start, len) = self.span(b, b + 1);
        let mut buf = vec![0u8; len as usize];
        let want = entry_at(&self.index.lock().unwrap(), self.header, b);
        let good = self.data.read_exact_at(&mut buf, start).is_ok()
            && want == STORED_BIT | u64::from(crc32fast::hash(&buf));
        if good {
            self.set(b, state::PRESENT);
        } else {
            log::warn!(
                "cache: block {b} of {} fails its checksum; fetching it again",
                self.data_path.display()
            );
        }
        good
    }

    /// Write fetched block `b` (whole: `BLOCK` bytes, less at the end) and
    /// mark it present.
    pub fn land(&self, b: usize, bytes: &[u8]) -> std::io::Result<()> {
        let (start, len) = self.span(b, b + 1);
        debug_assert_eq!(len, bytes.len() as u64);
        // Unsealed before the cache file changes.
        self.changed(&mut self.index.lock().unwrap());
        self.data.write_all_at(bytes, start)?;
        let crc = crc32fast::hash(bytes);
        set_entry(
            &mut self.index.lock().unwrap(),
            self.header,
            b,
            STORED_BIT | u64::from(crc),
        );
        self.set(b, state::PRESENT);
        self.ticks[b / GROUP_BLOCKS].store(self.cache.next_tick(), Ordering::Relaxed);
        self.cache.added(len);
        Ok(())
    }

    /// Give busy blocks `b0..b1` up (a failed fetch): waiters see them absent.
    pub fn abandon(&self, b0: usize, b1: usize) {
        let mut st = self.state.lock().unwrap();
        self.failures.fetch_add(1, Ordering::Relaxed);
        for s in &mut st[b0..b1] {
            if *s == state::BUSY {
                *s = state::ABSENT;
            }
        }
        drop(st);
        self.landed.notify_all();
    }

    fn set(&self, b: usize, s: u8) {
        let mut st = self.state.lock().unwrap();
        match (st[b] == state::PRESENT, s == state::PRESENT) {
            (false, true) => _ = self.present.fetch_add(1, Ordering::AcqRel),
            (true, false) => _ = self.present.fetch_sub(1, Ordering::AcqRel),
            _ => {}
        }
        st[b] = s;
        drop(st);
        self.landed.notify_all();
    }

    /// Is every block present (in the cache file and good)?
    pub fn is_complete(&self) -> bool {
        self.present.load(Ordering::Acquire) == self.blocks()
    }

    /// Is the index sealed ([`seal`](Self::seal))?
    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// The cache file or index is about to change (the caller holds the
    /// index): the seal no longer holds.
    fn changed(&self, index: &mut MmapMut) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        if self.sealed.swap(false, Ordering::AcqRel) {
            let at = self.header + 8 * self.blocks();
            index[at..at + SEAL_LEN].fill(0);
            // On disk before the change it announces (once per unsealing):
            // a crash must not leave a seal over changed bytes.
            if let Err(e) = index.flush_range(at, SEAL_LEN) {
                log::warn!("cache: cannot unseal {}: {e}", self.data_path.display());
            }
        }
    }

    /// Seal a complete object: sync its data file, then record the file's
    /// identity and times at the end of the index, so that a later process
    /// trusts its blocks without checking every checksum (see the module
    /// comment). False if some block is not present, or the object changed
    /// meanwhile (nothing is written then). Slow (a sync): for a
    /// background thread.
    pub fn seal(&self) -> std::io::Result<bool> {
        if self.is_sealed() {
            return Ok(true);
        }
        let changes = self.changes.load(Ordering::Acquire);
        if !self.is_complete() {
            return Ok(false);
        }
        self.data.sync_data()?;
        let meta = self.data.metadata()?;
        let mut index = self.index.lock().unwrap();
        if self.changes.load(Ordering::Acquire) != changes || !self.is_complete() {
            return Ok(false);
        }
        // The entries reach the disk no later than the seal.
        index.flush()?;
        let at = self.header + 8 * self.blocks();
        index[at..at + SEAL_LEN].copy_from_slice(&seal_of(&meta));
        index.flush_range(at, SEAL_LEN)?;
        self.sealed.store(true, Ordering::Release);
        Ok(true)
    }

    /// Fetches given up so far: read before claiming, and handed to
    /// [`wait`](Self::wait).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Wait until blocks `b0..b1` are all present. A block back to absent
    /// fails the wait with `Failed` if some fetch was given up since
    /// `failures` was read (before claiming), else with `Evicted`.
    pub fn wait(
        &self,
        b0: usize,
        b1: usize,
        patience: Duration,
        failures: u64,
    ) -> Result<(), WaitError> {
        let mut st = self.state.lock().unwrap();
        let mut last_progress = Instant::now();
        let mut pending = usize::MAX;
        loop {
            let mut busy = 0;
            for &s in &st[b0..b1] {
                match s {
                    state::PRESENT => {}
                    state::BUSY => busy += 1,
                    _ if self.failures.load(Ordering::Relaxed) != failures => {
                        return Err(WaitError::Failed);
                    }
                    _ => return Err(WaitError::Evicted),
                }
            }
            if busy == 0 {
                return Ok(());
            }
            if busy < pending {
                pending = busy;
                last_progress = Instant::now();
            }
            let left = patience.saturating_sub(last_progress.elapsed());
            if left.is_zero() {
                return Err(WaitError::TimedOut);
            }
            st = self.landed.wait_timeout(st, left).unwrap().0;
        }
    }

    /// Drop the cached blocks of group `g` (eviction): they read as absent
    /// from now on. Returns the bytes freed; the hole is punched later.
    fn drop_group(&self, g: usize) -> u64 {
        let b0 = g * GROUP_BLOCKS;
        let b1 = (b0 + GROUP_BLOCKS).min(self.blocks());
        let mut st = self.state.lock().unwrap();
        if st[b0..b1].contains(&state::BUSY) || self.pins.load(Ordering::Acquire) > 0 {
            return 0;
        }
        let mut index = self.index.lock().unwrap();
        self.changed(&mut index);
        let mut freed = 0;
        for b in b0..b1 {
            if st[b] != state::ABSENT {
                if st[b] == state::PRESENT {
                    self.present.fetch_sub(1, Ordering::AcqRel);
                }
                st[b] = state::ABSENT;
                set_entry(&mut index, self.header, b, 0);
                freed += self.span(b, b + 1).1;
            }
        }
        self.ticks[g].store(0, Ordering::Relaxed);
        freed
    }

    /// Punch the holes of group `g`'s blocks that are still absent.
    fn punch_group(&self, g: usize) {
        let b0 = g * GROUP_BLOCKS;
        let b1 = (b0 + GROUP_BLOCKS).min(self.blocks());
        let st = self.state.lock().unwrap();
        let mut b = b0;
        while b < b1 {
            if st[b] != state::ABSENT {
                b += 1;
                continue;
            }
            let mut e = b;
            while e < b1 && st[e] == state::ABSENT {
                e += 1;
            }
            let (start, len) = self.span(b, e);
            // SAFETY: fallocate on our own descriptor; the range is inside
            // the file and no read in progress uses it (module comment).
            let rc = unsafe {
                libc::fallocate(
                    self.data.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    start as libc::off_t,
                    len as libc::off_t,
                )
            };
            if rc != 0 {
                log::warn!(
                    "cache: cannot free bytes of {}: {}",
                    self.data_path.display(),
                    std::io::Error::last_os_error()
                );
            }
            b = e;
        }
    }

    /// Bytes of this object cached now.
    #[cfg(test)]
    fn cached_bytes(&self) -> u64 {
        let st = self.state.lock().unwrap();
        (0..st.len())
            .filter(|&b| st[b] == state::PRESENT || st[b] == state::STORED)
            .map(|b| self.span(b, b + 1).1)
            .sum()
    }
}

/// Blocks claimed by one caller.
#[derive(Debug, Default)]
pub struct Claim {
    /// Runs `[b0, b1)` to fetch.
    pub fetch: Vec<(usize, usize)>,
    /// Stored blocks to verify.
    pub verify: Vec<usize>,
}

/// The seal of a data file whose metadata is `m`: its device and inode,
/// then its [`Stamp`](crate::store::Stamp) (the one a source file is
/// watched by).
fn seal_of(m: &std::fs::Metadata) -> [u8; SEAL_LEN] {
    use std::os::unix::fs::MetadataExt;
    let stamp = crate::store::Stamp::of(m);
    let mut seal = [0u8; SEAL_LEN];
    seal[..8].copy_from_slice(SEAL_MAGIC);
    let fields = [
        m.dev(),
        m.ino(),
        stamp.len,
        stamp.mtime_ns as u64,
        stamp.ctime_ns as u64,
    ];
    for (i, v) in fields.iter().enumerate() {
        seal[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    seal
}

fn entry_at(index: &MmapMut, header: usize, b: usize) -> u64 {
    let at = header + 8 * b;
    u64::from_le_bytes(index[at..at + 8].try_into().expect("8 bytes"))
}

fn set_entry(index: &mut MmapMut, header: usize, b: usize, v: u64) {
    let at = header + 8 * b;
    index[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The header of the index of object `identity` at `version`, `len`
/// bytes: `GYROIDX2`, block size, object length, the SHA-256 of identity
/// and version (u64s little-endian), the length of the text (u64), then
/// the text: identity (query strings left out) and version, each followed
/// by a newline, zero-padded to a multiple of 8 bytes. A cache whose
/// header differs in any byte is not used.
pub fn index_header(identity: &str, version: &str, len: u64) -> Vec<u8> {
    let text = format!("{}\n{version}\n", super::names::redact(identity));
    let mut h = Vec::with_capacity(HEADER_FIXED + text.len() + 8);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&BLOCK.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&super::names::digest(&[identity, version]));
    h.extend_from_slice(&(text.len() as u64).to_le_bytes());
    debug_assert_eq!(h.len(), HEADER_FIXED);
    h.extend_from_slice(text.as_bytes());
    h.resize(h.len().next_multiple_of(8), 0);
    h
}

/// What an index file says (for listings: `gyrofs cache ls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSummary {
    /// The identity as the header's text has it (query strings left out).
    pub identity: String,
    pub version: String,
    /// The object's length.
    pub len: u64,
    /// Bytes of the blocks the index says are cached.
    pub stored: u64,
}

/// Read the index file at `path`; `None` if it is not one of this
/// format (or not whole).
pub fn read_index(path: &Path) -> Option<IndexSummary> {
    let bytes = std::fs::read(path).ok()?;
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    if bytes.get(..8)? != MAGIC || u64_at(8)? != BLOCK {
        return None;
    }
    let len = u64_at(16)?;
    let text_len = usize::try_from(u64_at(56)?).ok()?;
    let text = bytes.get(HEADER_FIXED..HEADER_FIXED.checked_add(text_len)?)?;
    let text = std::str::from_utf8(text).ok()?;
    let (identity, rest) = text.split_once('\n')?;
    let version = rest.strip_suffix('\n')?;
    let header = (HEADER_FIXED + text_len).next_multiple_of(8);
    let blocks = len.div_ceil(BLOCK) as usize;
    let entries = header.checked_add(blocks.checked_mul(8)?)?;
    if bytes.len() != entries && bytes.len() != entries.checked_add(SEAL_LEN)? {
        return None;
    }
    let stored = (0..blocks)
        .filter(|&b| u64_at(header + 8 * b).is_some_and(|v| v & STORED_BIT != 0))
        .map(|b| ((b as u64 + 1) * BLOCK).min(len) - b as u64 * BLOCK)
        .sum();
    Some(IndexSummary {
        identity: identity.to_string(),
        version: version.to_string(),
        len,
        stored,
    })
}

/// Remove the object whose data file is `data` (and its index) if no
/// process has it open; the bytes freed, or `None` if it is in use.
pub fn remove_if_idle(data: &Path) -> Option<u64> {
    let f = File::open(data).ok()?;
    if !try_lock(&f) || !is_at(&f, data) {
        return None;
    }
    let bytes = allocated(data) + allocated(&data.with_extension("idx"));
    let _ = std::fs::remove_file(data.with_extension("idx"));
    std::fs::remove_file(data).ok()?;
    Some(bytes)
}

/// Allocate the first `len` bytes of `f` (no holes left).
fn allocate(f: &File, len: u64) -> std::io::Result<()> {
    // SAFETY: posix_fallocate on a descriptor we own; no memory involved.
    let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len as libc::off_t) };
    match rc {
        0 => Ok(()),
        // Filesystems without fallocate: the map's pages are then written
        // in place (the file is small).
        libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

/// Is `e` a full disk (or quota)?
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// `e` writing `path`, said plainly when the disk is full.
pub fn full_disk(e: std::io::Error, path: &Path) -> std::io::Error {
    match is_full(&e) {
        true => std::io::Error::new(
            e.kind(),
            format!(
                "the cache disk is full ({e}) writing {}: free space there, or give --cache-size less than its free space",
                path.display()
            ),
        ),
        false => std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_survive_a_reopen_and_corruption_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 30).unwrap();
        let len = 3 * BLOCK + 100;
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        {
            let e = Entry::open(&cache, "obj", "v1", len).unwrap();
            let c = e.claim(0, 4, true);
            assert_eq!(c.fetch, vec![(0, 4)]);
            for b in 0..4 {
                let (s, l) = e.span(b, b + 1);
                e.land(b, &data[s as usize..(s + l) as usize]).unwrap();
            }
            e.wait(0, 4, Duration::from_secs(1), 0).unwrap();
            assert_eq!(e.cached_bytes(), len);
            // A second open in the same process while held is the same
            // entry (another process's is refused: its lock).
            assert!(Arc::ptr_eq(
                &e,
                &Entry::open(&cache, "obj", "v1", len).unwrap()
            ));
        }
        // Corrupt block 2 on disk.
        let p = object_path(&cache, "obj", "v1");
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(b"XX", 2 * BLOCK + 5).unwrap();
        let e = Entry::open(&cache, "obj", "v1", len).unwrap();
        let c = e.claim(0, 4, true);
        assert!(c.fetch.is_empty());
        assert_eq!(c.verify, vec![0, 1, 2, 3]);
        let good: Vec<bool> = c.verify.iter().map(|&b| e.verify(b)).collect();
        assert_eq!(good, vec![true, true, false, true]);
        // A length change starts over.
        drop(e);
        let e = Entry::open(&cache, "obj", "v1", len + 1).unwrap();
        assert_eq!(e.cached_bytes(), 0);
    }

    fn object_path(cache: &Cache, identity: &str, version: &str) -> PathBuf {
        let name = crate::remote::names::hashed(identity, &[identity, version]);
        cache.objects.join(format!("{name}.data"))
    }

    /// Fill every block of `e` with `byte`.
    fn fill(e: &Entry, byte: u8) {
        e.claim(0, e.blocks(), true);
        for b in 0..e.blocks() {
            let len = e.span(b, b + 1).1 as usize;
            e.land(b, &vec![byte; len]).unwrap();
        }
    }

    /// `prefix` then 48 characters, each '`' or 'a', whose CRC-32 is
    /// `want` (the CRC is affine over GF(2): flipping bit 0 of byte i
    /// xors a fixed delta into it; solve for the flips).
    fn forge_crc(prefix: &str, want: u32) -> String {
        let base = format!("{prefix}{}", "`".repeat(48));
        let crc0 = crc32fast::hash(base.as_bytes());
        let deltas: Vec<u32> = (0..48)
            .map(|i| {
                let mut b = base.clone().into_bytes();
                b[prefix.len() + i] ^= 1;
                crc32fast::hash(&b) ^ crc0
            })
            .collect();
        // Gaussian elimination: rows (delta, set of flips as a bit mask).
        let mut rows: Vec<(u32, u64)> = deltas
            .iter()
            .enumerate()
            .map(|(i, &d)| (d, 1 << i))
            .collect();
        let mut pivots: Vec<(u32, u64)> = Vec::new();
        for bit in (0..32).rev() {
            let Some(at) = rows.iter().position(|r| r.0 >> bit & 1 == 1) else {
                continue;
            };
            let p = rows.swap_remove(at);
            for r in rows.iter_mut().chain(pivots.iter_mut()) {
                if r.0 >> bit & 1 == 1 {
                    r.0 ^= p.0;
                    r.1 ^= p.1;
                }
            }
            pivots.push(p);
        }
        let mut need = want ^ crc0;
        let mut flips = 0u64;
        for p in &pivots {
            let top = 31 - p.0.leading_zeros();
            if need >> top & 1 == 1 {
                need ^= p.0;
                flips ^= p.1;
            }
        }
        assert_eq!(need, 0, "no solution");
        let mut b = base.into_bytes();
        for i in 0..48 {
            if flips >> i & 1 == 1 {
                b[prefix.len() + i] ^= 1;
            }
        }
        String::from_utf8(b).unwrap()
    }

    /// The cache file name before SHA-256 names: 100 cleaned characters
    /// and a CRC-32 of the whole.
    fn old_name(s: &str) -> String {
        let clean: String = s
            .chars()
            .map(|c| match c.is_ascii_alphanumeric() || "-_.".contains(c) {
                true => c,
                false => '_',
            })
            .take(100)
            .collect();
        format!("{clean}-{:08x}", crc32fast::hash(s.as_bytes()))
    }

    #[test]
    fn objects_whose_old_names_collide_never_share_blocks() {
        // Two S3 keys with the same first 100 characters and the same
        // CRC-32: the old naming gave them one pair of cache files.
        let common = format!("s3 aws bucket/{}", "k".repeat(100));
        let a = format!("{common}/one.safetensors");
        let b = forge_crc(&format!("{common}/two"), crc32fast::hash(a.as_bytes()));
        assert_eq!(old_name(&a), old_name(&b), "the forged pair collides");
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 30).unwrap();
        let len = 2 * BLOCK;
        let ea = Entry::open(&cache, &a, "\"e\"", len).unwrap();
        fill(&ea, 1);
        let eb = Entry::open(&cache, &b, "\"e\"", len).unwrap();
        assert_ne!(ea.data_path, eb.data_path);
        assert_eq!(eb.cached_bytes(), 0);
    }

    #[test]
    fn an_index_of_another_object_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 30).unwrap();
        let len = 3 * BLOCK;
        {
            let e = Entry::open(&cache, "https://h/a.bin", "\"1\"", len).unwrap();
            fill(&e, 7);
        }
        // Another object's (or version's) files under this one's name (a
        // collision, or a cache copied around): its header says whose
        // they are, and they are not used.
        for (identity, version) in [("https://h/b.bin", "\"1\""), ("https://h/a.bin", "\"2\"")] {
            let from = object_path(&cache, "https://h/a.bin", "\"1\"");
            let to = object_path(&cache, identity, version);
            std::fs::copy(&from, &to).unwrap();
            std::fs::copy(from.with_extension("idx"), to.with_extension("idx")).unwrap();
            let e = Entry::open(&cache, identity, version, len).unwrap();
            assert_eq!(e.cached_bytes(), 0, "{identity} {version}");
        }
        // The object's own files are.
        let e = Entry::open(&cache, "https://h/a.bin", "\"1\"", len).unwrap();
        assert_eq!(e.cached_bytes(), len);
        // And the header says what the files hold, without a query string.
        let h = index_header("https://h/a.bin?sig=sekret", "\"1\"", len);
        let text = String::from_utf8_lossy(&h[HEADER_FIXED..]);
        assert!(text.starts_with("https://h/a.bin?...\n\"1\"\n"), "{text}");
    }

    /// Blocks a new process would verify before use.
    fn to_verify(e: &Entry) -> usize {
        let st = e.state.lock().unwrap();
        st.iter().filter(|&&s| s == state::STORED).count()
    }

    #[test]
    fn a_sealed_object_is_trusted_until_its_data_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 30).unwrap();
        let len = 3 * BLOCK + 5;
        let path = object_path(&cache, "o", "v");
        {
            let e = Entry::open(&cache, "o", "v", len).unwrap();
            fill(&e, 7);
            assert!(e.is_complete());
            assert!(e.seal().unwrap());
            assert!(e.is_sealed());
        }
        // Reopened: every block present, none to check.
        {
            let e = Entry::open(&cache, "o", "v", len).unwrap();
            assert!(e.is_sealed() && e.is_complete());
            assert_eq!(to_verify(&e), 0);
            assert!(e.claim(0, e.blocks(), true).verify.is_empty());
        }
        // Someone writes to the data file: its times change, the seal is
        // stale, every block is checked again (and the bad one fails).
        std::thread::sleep(Duration::from_millis(20));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(b"x", BLOCK + 1)
            .unwrap();
        let e = Entry::open(&cache, "o", "v", len).unwrap();
        assert!(!e.is_sealed() && !e.is_complete());
        assert_eq!(to_verify(&e), 4);
        let claim = e.claim(0, e.blocks(), true);
        let good: Vec<bool> = claim.verify.iter().map(|&b| e.verify(b)).collect();
        assert_eq!(good, [true, false, true, true]);
        // The stale seal was cleared in the index.
        let idx = std::fs::read(path.with_extension("idx")).unwrap();
        assert!(idx[idx.len() - SEAL_LEN..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_change_unseals_and_an_incomplete_object_is_not_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 30).unwrap();
        let len = 2 * BLOCK;
        {
            let e = Entry::open(&cache, "o", "v", len).unwrap();
            e.claim(0, 1, true);
            e.land(0, &vec![1; BLOCK as usize]).unwrap();
            assert!(!e.seal().unwrap(), "one block of two");
            e.claim(1, 2, true);
            e.land(1, &vec![2; BLOCK as usize]).unwrap();
            assert!(e.seal().unwrap());
            // A block written again (after a drop, say) unseals it.
            e.land(1, &vec![2; BLOCK as usize]).unwrap();
            assert!(!e.is_sealed());
        }
        let e = Entry::open(&cache, "o", "v", len).unwrap();
        assert!(!e.is_sealed());
        assert_eq!(to_verify(&e), 2);
    }

    #[test]
    fn an_object_still_open_in_this_process_is_the_same_entry() {
        // A queued seal or write keeps an entry alive after the caller let
        // it go: opening it again gives that entry, not a wait on our own
        // lock.
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 30).unwrap();
        let held = Entry::open(&cache, "o", "v", 2 * BLOCK).unwrap();
        let t0 = Instant::now();
        let again = Entry::open(&cache, "o", "v", 2 * BLOCK).unwrap();
        assert!(Arc::ptr_eq(&held, &again));
        assert!(t0.elapsed() < LOCK_PATIENCE / 2);
    }

    #[test]
    fn a_seal_over_an_index_with_missing_blocks_is_not_trusted() {
        // A crash that kept the seal but lost blocks' entries (or a drop
        // whose unsealing never reached the disk): the seal vouches for
        // every block, so it is not used.
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 30).unwrap();
        let len = 3 * BLOCK;
        let idx = object_path(&cache, "o", "v").with_extension("idx");
        {
            let e = Entry::open(&cache, "o", "v", len).unwrap();
            fill(&e, 5);
            assert!(e.seal().unwrap());
        }
        // Block 1's entry lost; the data file untouched (its times match).
        let mut bytes = std::fs::read(&idx).unwrap();
        let at = bytes.len() - SEAL_LEN - 3 * 8 + 8;
        bytes[at..at + 8].fill(0);
        std::fs::write(&idx, &bytes).unwrap();
        let e = Entry::open(&cache, "o", "v", len).unwrap();
        assert!(!e.is_sealed());
        assert_eq!(to_verify(&e), 2);
    }

    #[test]
    fn an_index_without_a_seal_is_read_as_unsealed() {
        // An index written before seals existed: no trailer.
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 30).unwrap();
        let len = 2 * BLOCK;
        let idx = object_path(&cache, "o", "v").with_extension("idx");
        {
            let e = Entry::open(&cache, "o", "v", len).unwrap();
            fill(&e, 9);
        }
        let full = std::fs::metadata(&idx).unwrap().len();
        File::options()
            .write(true)
            .open(&idx)
            .unwrap()
            .set_len(full - SEAL_LEN as u64)
            .unwrap();
        let listed = read_index(&idx).unwrap();
        assert_eq!(listed.stored, len);
        let e = Entry::open(&cache, "o", "v", len).unwrap();
        assert_eq!(e.cached_bytes(), len);
        assert_eq!(to_verify(&e), 2);
        assert_eq!(std::fs::metadata(&idx).unwrap().len(), full);
    }

    #[test]
    fn a_lock_on_a_file_evicted_meanwhile_is_taken_again() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 30).unwrap();
        let len = 2 * BLOCK;
        let path = object_path(&cache, "o", "v");
        {
            let e = Entry::open(&cache, "o", "v", len).unwrap();
            fill(&e, 3);
        }
        // An evictor (of another process) holds the lock ...
        let evictor = File::open(&path).unwrap();
        assert!(try_lock(&evictor));
        let opener = {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || Entry::open(&cache, "o", "v", len))
        };
        // ... while this process has opened the file and waits for it ...
        let opened = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .flatten()
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == path))
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while opened() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(opened(), 2, "the opener never opened the file");
        // ... then evicts it: unlinks both files and lets go.
        std::fs::remove_file(path.with_extension("idx")).unwrap();
        std::fs::remove_file(&path).unwrap();
        drop(evictor);
        let e = opener.join().unwrap().unwrap();
        // The lock is on the file at the path, not on the unlinked one.
        let held = e.data.metadata().unwrap();
        let at = std::fs::metadata(&path).unwrap();
        assert!(held.nlink() > 0);
        assert_eq!((held.dev(), held.ino()), (at.dev(), at.ino()));
        assert_eq!(e.cached_bytes(), 0);
    }

    #[test]
    fn failed_fetch_fails_waiters_and_eviction_frees_lru_groups() {
        let dir = tempfile::tempdir().unwrap();
        let group = GROUP_BLOCKS as u64 * BLOCK;
        let cache = Cache::open(dir.path(), 2 * group).unwrap();
        let e = Entry::open(&cache, "o", "v", 4 * group).unwrap();
        let f0 = e.failures();
        let c = e.claim(0, 1, true);
        assert_eq!(c.fetch, vec![(0, 1)]);
        e.abandon(0, 1);
        assert_eq!(
            e.wait(0, 1, Duration::from_secs(1), f0),
            Err(WaitError::Failed)
        );
        // Absent with no fetch given up since: evicted, claim again.
        assert_eq!(
            e.wait(0, 1, Duration::from_secs(1), e.failures()),
            Err(WaitError::Evicted)
        );
        let block = vec![7u8; BLOCK as usize];
        for g in 0..4 {
            let b0 = g * GROUP_BLOCKS;
            e.claim(b0, b0 + GROUP_BLOCKS, true);
            for b in b0..b0 + GROUP_BLOCKS {
                e.land(b, &block).unwrap();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.used() > 2 * group && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(cache.used() <= 2 * group, "used {}", cache.used());
        // The oldest groups went; the newest stayed.
        let st = e.state.lock().unwrap();
        assert_eq!(st[0], state::ABSENT);
        assert_eq!(st[4 * GROUP_BLOCKS - 1], state::PRESENT);
    }
}
