//! The local block cache of remote objects (docs/REMOTE.md, "Cache").
//!
//! Each remote object version has two files in `<cache-dir>/objects/`:
//!
//! - `KEY.data`: a sparse file of the object's full length. Fetched bytes
//!   are written at their own offsets, so the file is mapped and read like a
//!   local source file; bytes not fetched are holes.
//! - `KEY.idx`: a 64-byte header (`GYROIDX1`, block size, object length)
//!   then one little-endian `u64` per [`BLOCK`]: 0 while the block is not
//!   cached, `1 << 63 | crc32` once it is.
//!
//! `KEY` names the object and its version (ETag or commit), so a changed
//! object never meets the blocks of the old one. A block is written with
//! `pwrite` before its index entry, and its checksum is verified the first
//! time a later process uses it: a crash between the two, or a torn write,
//! costs a refetch and never serves wrong bytes.
//!
//! The cache holds at most `--cache-size` bytes. Past it, an evictor thread
//! frees the least recently used space: first whole objects no running mount
//! has open (oldest index first), then 16 MiB groups of the open objects'
//! blocks, least recently touched first. An evicted group's blocks become
//! "not cached" at once (new reads fetch them again), but its hole is only
//! punched once every read that started before the eviction has finished
//! ([`ReadEpochs`]), so no read ever sees a block vanish under it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak, mpsc};
use std::time::{Duration, Instant};

use memmap2::MmapMut;

use crate::store::ReadEpochs;

/// Cache unit: fetched, checksummed and tracked per 64 KiB block.
pub const BLOCK: u64 = 64 << 10;
/// Blocks per eviction group (16 MiB).
const GROUP_BLOCKS: usize = 256;
const MAGIC: &[u8; 8] = b"GYROIDX1";
const HEADER: usize = 64;
const STORED_BIT: u64 = 1 << 63;
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
    cap: u64,
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
            cap,
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

    fn next_tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed)
    }

    fn added(&self, bytes: u64) {
        if self.used.fetch_add(bytes, Ordering::Relaxed) + bytes > self.cap {
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
                if !try_lock(&f) {
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
        let target = self.cap / 10 * 9;
        if used <= self.cap {
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
            if !try_lock(&f) {
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
        pending.is_some() || self.used() > self.cap
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

/// Lock `f`, waiting up to `patience` for another holder to let go.
fn lock_within(f: &File, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if try_lock(f) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
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
    cache: Arc<Cache>,
}

impl Entry {
    /// The cache this entry belongs to.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Open the cached blocks of object `key` (`len` bytes), creating the
    /// files if needed. Fails if another process holds them.
    pub fn open(cache: &Arc<Cache>, key: &str, len: u64) -> std::io::Result<Arc<Entry>> {
        if len > MAX_OBJECT {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("an object of {len} bytes is larger than gyrofs serves ({MAX_OBJECT})"),
            ));
        }
        let data_path = cache.objects.join(format!("{key}.data"));
        let idx_path = cache.objects.join(format!("{key}.idx"));
        let data = open_rw(&data_path)?;
        if !lock_within(&data, LOCK_PATIENCE) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!(
                    "{} is in use by another gyrofs process; give this mount its own --cache-dir",
                    data_path.display()
                ),
            ));
        }
        let blocks = len.div_ceil(BLOCK) as usize;
        let idx = open_rw(&idx_path)?;
        let want = (HEADER + 8 * blocks) as u64;
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&BLOCK.to_le_bytes());
        header[16..24].copy_from_slice(&len.to_le_bytes());
        let mut seen = [0u8; HEADER];
        let valid = idx.metadata()?.len() == want
            && idx.read_exact_at(&mut seen, 0).is_ok()
            && seen == header
            && data.metadata()?.len() == len;
        if !valid {
            // New, or not ours to trust: start empty.
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
        // SAFETY: the index file is ours: created above and exclusively
        // locked through the data file, so no other gyrofs writes it; it is
        // only read and written as plain u64 entries.
        let index = unsafe { MmapMut::map_mut(&idx)? };
        let mut state = vec![state::ABSENT; blocks];
        let groups = blocks.div_ceil(GROUP_BLOCKS);
        let ticks: Vec<AtomicU64> = (0..groups).map(|_| AtomicU64::new(0)).collect();
        for (b, s) in state.iter_mut().enumerate() {
            if entry_at(&index, b) & STORED_BIT != 0 {
                *s = state::STORED;
                ticks[b / GROUP_BLOCKS].store(1, Ordering::Relaxed);
            }
        }
        // Touch the index: its modification time orders idle objects.
        let _ = idx.set_modified(std::time::SystemTime::now());
        let entry = Arc::new(Entry {
            len,
            data_path,
            data,
            index: Mutex::new(index),
            state: Mutex::new(state),
            landed: Condvar::new(),
            ticks,
            failures: AtomicU64::new(0),
            cache: Arc::clone(cache),
        });
        cache.open.lock().unwrap().push(Arc::downgrade(&entry));
        Ok(entry)
    }

    pub fn blocks(&self) -> usize {
        self.len.div_ceil(BLOCK) as usize
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
        let want = entry_at(&self.index.lock().unwrap(), b);
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
        self.data.write_all_at(bytes, start)?;
        let crc = crc32fast::hash(bytes);
        set_entry(
            &mut self.index.lock().unwrap(),
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
        self.state.lock().unwrap()[b] = s;
        self.landed.notify_all();
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
        if st[b0..b1].contains(&state::BUSY) {
            return 0;
        }
        let mut index = self.index.lock().unwrap();
        let mut freed = 0;
        for b in b0..b1 {
            if st[b] != state::ABSENT {
                st[b] = state::ABSENT;
                set_entry(&mut index, b, 0);
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

fn entry_at(index: &MmapMut, b: usize) -> u64 {
    let at = HEADER + 8 * b;
    u64::from_le_bytes(index[at..at + 8].try_into().expect("8 bytes"))
}

fn set_entry(index: &mut MmapMut, b: usize, v: u64) {
    let at = HEADER + 8 * b;
    index[at..at + 8].copy_from_slice(&v.to_le_bytes());
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
            let e = Entry::open(&cache, "obj", len).unwrap();
            let c = e.claim(0, 4, true);
            assert_eq!(c.fetch, vec![(0, 4)]);
            for b in 0..4 {
                let (s, l) = e.span(b, b + 1);
                e.land(b, &data[s as usize..(s + l) as usize]).unwrap();
            }
            e.wait(0, 4, Duration::from_secs(1), 0).unwrap();
            assert_eq!(e.cached_bytes(), len);
            // A second open in the same process is refused while held.
            assert!(Entry::open(&cache, "obj", len).is_err());
        }
        // Corrupt block 2 on disk.
        let p = dir.path().join("objects/obj.data");
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(b"XX", 2 * BLOCK + 5).unwrap();
        let e = Entry::open(&cache, "obj", len).unwrap();
        let c = e.claim(0, 4, true);
        assert!(c.fetch.is_empty());
        assert_eq!(c.verify, vec![0, 1, 2, 3]);
        let good: Vec<bool> = c.verify.iter().map(|&b| e.verify(b)).collect();
        assert_eq!(good, vec![true, true, false, true]);
        // A length change starts over.
        drop(e);
        let e = Entry::open(&cache, "obj", len + 1).unwrap();
        assert_eq!(e.cached_bytes(), 0);
    }

    #[test]
    fn failed_fetch_fails_waiters_and_eviction_frees_lru_groups() {
        let dir = tempfile::tempdir().unwrap();
        let group = GROUP_BLOCKS as u64 * BLOCK;
        let cache = Cache::open(dir.path(), 2 * group).unwrap();
        let e = Entry::open(&cache, "o", 4 * group).unwrap();
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
