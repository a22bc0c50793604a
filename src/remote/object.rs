//! One remote object behind its block cache: [`RemoteObject::ensure`]
//! makes a byte range local before the engine reads it from the map.
//!
//! - Missing blocks are claimed (so concurrent readers of a block make one
//!   fetch and wait for it), merged into runs and fetched as parts of at
//!   most [`MAX_PART`] bytes, all in flight together (up to
//!   [`MAX_IN_FLIGHT`] requests per process).
//! - A read gets its blocks and no more; read-ahead is decided a level up,
//!   per virtual file (`volume`), which knows what the file will need next,
//!   and reaches here as [`RemoteObject::prefetch`].
//! - Every GET is conditional on the ETag seen at mount. A changed object
//!   is marked changed for good: every later read of it fails with EIO.
//! - Each attempt has a stall timeout (no byte for that long); failed
//!   attempts are retried with backoff, resuming after the blocks that
//!   landed. A reader waits as long as blocks of its range keep landing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::cache::{BLOCK, Entry, WaitError};
use super::store::{FetchError, Target};
use crate::error::RemoteReadError;
use crate::store::{Fetcher, ReadEpochs};

/// Largest single ranged GET.
pub const MAX_PART: u64 = 8 << 20;
/// Smallest part a long run is split into (for parallel transfer).
const MIN_PART: u64 = 1 << 20;
/// Ranged GETs in flight at once, per process, for reads waiting on them
/// (read-ahead has a lane of its own, half as wide, so that a reader never
/// queues behind fetches nobody waits for yet).
pub const MAX_IN_FLIGHT: usize = 32;
/// ... and per object: a stalled object cannot take every slot.
pub const MAX_IN_FLIGHT_PER_OBJECT: usize = 8;
/// A progress line is logged (at info) each time this much more of an
/// object has been fetched.
const PROGRESS_EVERY: u64 = 1 << 30;

/// Network behaviour.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// No byte for this long fails an attempt.
    pub stall: Duration,
    /// Attempts after the first.
    pub retries: u32,
}

impl Limits {
    /// How long a reader waits with no block of its range landing: every
    /// attempt stalling, plus the longest waits between them (a
    /// `Retry-After` is honoured up to the stall timeout).
    fn patience(&self) -> Duration {
        self.stall * (self.retries + 1)
            + self.stall.max(backoff(self.retries + 1) * 2) * self.retries
            + Duration::from_secs(1)
    }

    /// The wait before attempt `attempt + 1` after `err`, or `None` when
    /// there is none: `err` is not worth retrying, the retries are used
    /// up, or the server asks for a longer wait than one stall timeout.
    /// Else the longer of a jittered backoff and the server's
    /// `Retry-After`.
    pub fn next_wait(&self, err: &FetchError, attempt: u32) -> Option<Duration> {
        if !err.retryable() || attempt > self.retries {
            return None;
        }
        let backoff = jittered(attempt);
        match err.retry_after() {
            Some(asked) if asked > self.stall => None,
            Some(asked) => Some(asked.max(backoff)),
            None => Some(backoff),
        }
    }

    /// `err`, given up on, as a user reads it.
    pub fn why_not_retried(&self, err: &FetchError) -> String {
        match err.retry_after() {
            Some(asked) if asked > self.stall => format!(
                "{err}: longer than --timeout ({:?}), so gyrofs does not wait",
                self.stall
            ),
            _ => err.to_string(),
        }
    }
}

/// The longest backoff before attempt `attempt + 1`: 200 ms doubling (up
/// to 6.4 s).
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 << attempt.min(6))
}

/// The backoff before attempt `attempt + 1`, jittered: uniform between
/// half of [`backoff`] and all of it, so that the fetches a failure hit
/// together do not come back together.
pub(crate) fn jittered(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Each RandomState has keys of its own: enough randomness for jitter.
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let max = backoff(attempt);
    max / 2 + max.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64 / 2.0)
}

/// The async runtime that runs every fetch (two workers: the transfers
/// are I/O bound).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gyrofs-fetch")
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// The process-wide fetch slots: `[demand, read-ahead]`.
fn in_flight(ahead: bool) -> &'static tokio::sync::Semaphore {
    static S: OnceLock<[tokio::sync::Semaphore; 2]> = OnceLock::new();
    &S.get_or_init(|| {
        [
            tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            tokio::sync::Semaphore::new(MAX_IN_FLIGHT / 2),
        ]
    })[usize::from(ahead)]
}

/// A remote object, its version, and its cached blocks.
#[derive(Debug)]
pub struct RemoteObject {
    /// For messages: `s3://bucket/key`, the Hub resolve URL, ...
    pub url: String,
    pub len: u64,
    target: Target,
    /// Sent as If-Match on every GET (None: the version is pinned by the
    /// address itself, as a Hub commit is).
    etag: Option<String>,
    pub(crate) entry: Arc<Entry>,
    limits: Limits,
    changed: AtomicBool,
    last_error: Mutex<String>,
    /// GETs of this object in flight: `[demand, read-ahead]`.
    slots: [tokio::sync::Semaphore; 2],
    /// Bytes fetched so far (for progress lines).
    fetched: AtomicU64,
    started: std::time::Instant,
    /// This object's own `Arc` (the fetch tasks it spawns hold one).
    this: std::sync::Weak<RemoteObject>,
}

impl RemoteObject {
    pub fn new(
        url: String,
        target: Target,
        etag: Option<String>,
        entry: Arc<Entry>,
        limits: Limits,
    ) -> Arc<RemoteObject> {
        Arc::new_cyclic(|this| RemoteObject {
            this: this.clone(),
            url,
            len: entry.len,
            target,
            etag,
            entry,
            limits,
            changed: AtomicBool::new(false),
            last_error: Mutex::new(String::new()),
            slots: [
                tokio::sync::Semaphore::new(MAX_IN_FLIGHT_PER_OBJECT),
                tokio::sync::Semaphore::new(MAX_IN_FLIGHT_PER_OBJECT / 2),
            ],
            fetched: AtomicU64::new(0),
            started: std::time::Instant::now(),
        })
    }

    pub fn is_changed(&self) -> bool {
        self.changed.load(Ordering::Relaxed)
    }

    /// This object as an `Arc` (objects only exist inside one).
    fn arc(&self) -> Arc<RemoteObject> {
        self.this.upgrade().expect("a RemoteObject lives in an Arc")
    }

    /// Make bytes `offset..offset + len` local (fetching what the cache
    /// lacks, and no more), then return. Bytes past the end are not asked
    /// for.
    pub fn ensure(self: &Arc<Self>, offset: u64, len: u64) -> Result<(), RemoteReadError> {
        self.ensure_since(offset, len, None)
    }

    /// [`ensure`](Self::ensure), for bytes whose fetch the caller started
    /// when `since` fetches of this object had been given up: if one was
    /// given up since, blocks still absent are not fetched a second time
    /// (the failure is the answer, with its reason).
    pub(crate) fn ensure_since(
        self: &Arc<Self>,
        offset: u64,
        len: u64,
        mut since: Option<u64>,
    ) -> Result<(), RemoteReadError> {
        let end = offset.saturating_add(len).min(self.len);
        if offset >= end {
            return Ok(());
        }
        if self.is_changed() {
            return Err(self.changed_error());
        }
        let (b0, b1) = ((offset / BLOCK) as usize, end.div_ceil(BLOCK) as usize);
        // A block evicted while this read waited for the rest is claimed
        // again (a few times: a cache far smaller than one read cannot
        // serve it).
        for _ in 0..4 {
            let batch = since.take();
            let failures = batch.unwrap_or_else(|| self.entry.failures());
            let mut claim = self.entry.claim(b0, b1, true);
            if batch.is_some() && self.entry.failures() != failures && !claim.fetch.is_empty() {
                for &(a, b) in &claim.fetch {
                    self.entry.abandon(a, b);
                }
                return Err(self.failed_error());
            }
            for &b in &claim.verify {
                if !self.entry.verify(b) {
                    claim.fetch.push((b, b + 1));
                }
            }
            self.spawn_runs(&claim.fetch, false);
            match self.entry.wait(b0, b1, self.limits.patience(), failures) {
                Ok(()) => return Ok(()),
                Err(_) if self.is_changed() => return Err(self.changed_error()),
                Err(WaitError::Evicted) => continue,
                Err(WaitError::Failed) => return Err(self.failed_error()),
                Err(WaitError::TimedOut) => {
                    return Err(RemoteReadError::Failed {
                        url: self.url.clone(),
                        why: format!(
                            "no data for bytes {offset}..{end} within {:?}",
                            self.limits.patience()
                        ),
                    });
                }
            }
        }
        Err(RemoteReadError::Failed {
            url: self.url.clone(),
            why: format!(
                "bytes {offset}..{end} were evicted while being read: the cache (--cache-size) is too small for this read"
            ),
        })
    }

    /// Make several ranges local at once (all fetched in parallel, then
    /// waited for): parsers' scattered reads at open.
    /// A fetch that fails fails them all, and is not made again.
    pub fn ensure_ranges(self: &Arc<Self>, ranges: &[(u64, u64)]) -> Result<(), RemoteReadError> {
        let since = self.entry.failures();
        for &(offset, len) in ranges {
            self.start(offset, len);
        }
        ranges
            .iter()
            .try_for_each(|&(offset, len)| self.ensure_since(offset, len, Some(since)))
    }

    /// The last fetch given up, as a read error.
    fn failed_error(&self) -> RemoteReadError {
        let why = self.last_error.lock().unwrap().clone();
        RemoteReadError::Failed {
            url: self.url.clone(),
            why: if why.is_empty() {
                "the fetch failed (see the log)".into()
            } else {
                why
            },
        }
    }

    fn changed_error(&self) -> RemoteReadError {
        RemoteReadError::Changed {
            url: self.url.clone(),
        }
    }

    /// Start fetching what the cache lacks of `offset..offset + len`, and
    /// return at once (read-ahead: the reader that needs them waits).
    pub fn prefetch(self: &Arc<Self>, offset: u64, len: u64) {
        self.start_with(offset, len, true);
    }

    /// As [`prefetch`](Self::prefetch), in the demand lane: for bytes a
    /// caller is about to wait for (headers at open, all files at once).
    pub fn start(self: &Arc<Self>, offset: u64, len: u64) {
        self.start_with(offset, len, false);
    }

    fn start_with(self: &Arc<Self>, offset: u64, len: u64, ahead: bool) {
        let end = offset.saturating_add(len).min(self.len);
        if offset >= end || self.is_changed() {
            return;
        }
        let (b0, b1) = ((offset / BLOCK) as usize, end.div_ceil(BLOCK) as usize);
        let claim = self.entry.claim(b0, b1, false);
        self.spawn_runs(&claim.fetch, ahead);
    }

    /// Fetch claimed runs of blocks, each split into parts, in the demand
    /// or the read-ahead lane. A part whose task panics gives its blocks
    /// up (readers get EIO, not a wait for ever).
    fn spawn_runs(self: &Arc<Self>, runs: &[(usize, usize)], ahead: bool) {
        use futures::FutureExt;
        for &(b0, b1) in runs {
            let bytes = (b1 - b0) as u64 * BLOCK;
            let part = (bytes / 8).clamp(MIN_PART, MAX_PART).div_ceil(BLOCK) as usize;
            let mut b = b0;
            while b < b1 {
                let e = (b + part).min(b1);
                let me = Arc::clone(self);
                runtime().spawn(async move {
                    // Blocks from `next` on are still this task's.
                    let next = Arc::new(std::sync::atomic::AtomicUsize::new(b));
                    let task = Arc::clone(&me).fetch(b, e, ahead, Arc::clone(&next));
                    let task = std::panic::AssertUnwindSafe(task);
                    if task.catch_unwind().await.is_err() {
                        *me.last_error.lock().unwrap() = "internal error (see the log)".into();
                        me.entry.abandon(next.load(Ordering::Relaxed), e);
                    }
                });
                b = e;
            }
        }
    }

    /// Count `bytes` more fetched; log a line every [`PROGRESS_EVERY`].
    fn progress(&self, bytes: u64) {
        let before = self.fetched.fetch_add(bytes, Ordering::Relaxed);
        let after = before + bytes;
        if after / PROGRESS_EVERY > before / PROGRESS_EVERY {
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            log::info!(
                "{}: {} MiB of {} MiB fetched ({:.0} MB/s since mount)",
                self.url,
                after >> 20,
                self.len >> 20,
                after as f64 / secs / 1e6
            );
        }
    }

    /// Fetch blocks `b0..b1` (claimed by the caller), retrying and resuming.
    async fn fetch(
        self: Arc<Self>,
        b0: usize,
        b1: usize,
        ahead: bool,
        mine: Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let mut next = b0;
        let mut attempt = 0;
        loop {
            // Slots are held for one attempt, not across a backoff.
            let lane = usize::from(ahead);
            let _mine = self.slots[lane].acquire().await.expect("never closed");
            let _any = in_flight(ahead).acquire().await.expect("never closed");
            if self.is_changed() {
                self.entry.abandon(next, b1);
                return;
            }
            let (start, len) = self.entry.span(next, b1);
            let mut buf: Vec<u8> = Vec::with_capacity(BLOCK as usize);
            let mut landing = next;
            let entry = &self.entry;
            let mut sink = |mut bytes: &[u8]| -> Result<(), FetchError> {
                while !bytes.is_empty() {
                    if landing >= b1 {
                        return Err(FetchError::Other("more bytes than asked for".into()));
                    }
                    let want = entry.span(landing, landing + 1).1 as usize;
                    let take = (want - buf.len()).min(bytes.len());
                    buf.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if buf.len() == want {
                        entry.land(landing, &buf).map_err(|e| {
                            let e = super::cache::full_disk(e, &entry.data_path);
                            FetchError::Local(format!("cannot write the cache: {e}"))
                        })?;
                        landing += 1;
                        mine.store(landing, Ordering::Relaxed);
                        buf.clear();
                    }
                }
                Ok(())
            };
            let got = self
                .target
                .get(
                    start..start + len,
                    self.etag.as_deref(),
                    Some(self.len),
                    self.limits.stall,
                    &mut sink,
                )
                .await;
            let err = match got {
                Ok(_) if landing == b1 => {
                    self.progress(len);
                    return;
                }
                Ok(_) => FetchError::Other(format!(
                    "short body: {} of {len} bytes",
                    self.entry.span(next, landing).1
                )),
                Err(e) => e,
            };
            if landing > next {
                // Progress: the next attempt resumes after it.
                self.progress(self.entry.span(next, landing).1);
                next = landing;
                attempt = 0;
            }
            drop((_mine, _any));
            if next == b1 {
                // Every block landed (the error came after the last one).
                return;
            }
            attempt += 1;
            let why = if let FetchError::Changed(why) = &err {
                if !self.changed.swap(true, Ordering::Relaxed) {
                    log::error!(
                        "{} changed since it was mounted ({why}): its reads now fail with EIO",
                        self.url
                    );
                }
                err.to_string()
            } else if let Some(wait) = self.limits.next_wait(&err, attempt) {
                log::warn!(
                    "{}: bytes {}.. attempt {attempt} failed ({err}); retrying in {wait:.1?}",
                    self.url,
                    self.entry.span(next, b1).0
                );
                tokio::time::sleep(wait).await;
                continue;
            } else {
                let why = self.limits.why_not_retried(&err);
                log::error!(
                    "{}: bytes {}..{}: {why} (after {attempt} attempts)",
                    self.url,
                    self.entry.span(next, b1).0,
                    start + len
                );
                why
            };
            *self.last_error.lock().unwrap() = why;
            self.entry.abandon(next, b1);
            return;
        }
    }
}

impl Fetcher for RemoteObject {
    fn url(&self) -> &str {
        &self.url
    }

    fn ensure(&self, offset: u64, len: u64) -> Result<(), RemoteReadError> {
        RemoteObject::ensure(&self.arc(), offset, len)
    }

    fn ensure_ranges(&self, ranges: &[(u64, u64)]) -> Result<(), RemoteReadError> {
        RemoteObject::ensure_ranges(&self.arc(), ranges)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        RemoteObject::prefetch(&self.arc(), offset, len)
    }

    fn is_changed(&self) -> bool {
        RemoteObject::is_changed(self)
    }

    fn epochs(&self) -> &Arc<ReadEpochs> {
        self.entry.cache().epochs()
    }
}
