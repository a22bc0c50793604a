//! Reads in progress, so that bytes borrowed from a cache file are never
//! taken away under a reader.
//!
//! A remote source's bytes live in sparse cache files that an evictor may
//! punch holes into (`remote::cache`). A reader first makes its range local
//! ([`Fetcher::ensure`](super::Fetcher::ensure)), then borrows it from the
//! map; between the two, and for as long as the borrow lives, the range must
//! stay. [`ReadEpochs`] is a small grace-period scheme by epoch parity: every
//! read is counted under the current epoch ([`ReadEpochs::enter`]); an
//! eviction flips the epoch ([`ReadEpochs::flip`]) and punches its holes only
//! once every read of the previous epoch has finished
//! ([`ReadEpochs::drained`]). The evictor never waits on a read.
//!
//! One `ReadEpochs` belongs to one block cache; the files it backs carry it
//! (through their [`Backing`](super::Backing)), and the read path holds a
//! [`Reading`] guard per read (`catalog::Files::reading`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Reads in progress, by epoch parity.
#[derive(Debug, Default)]
pub struct ReadEpochs {
    epoch: AtomicU64,
    counts: [AtomicU64; 2],
}

/// Held for the duration of one read of cached bytes.
#[derive(Debug)]
pub struct Reading {
    epochs: Arc<ReadEpochs>,
    parity: usize,
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.epochs.counts[self.parity].fetch_sub(1, Ordering::SeqCst);
    }
}

impl ReadEpochs {
    pub fn new() -> Arc<ReadEpochs> {
        Arc::new(ReadEpochs::default())
    }

    /// Count a read under the current epoch until the guard drops.
    pub fn enter(self: &Arc<Self>) -> Reading {
        loop {
            let epoch = self.epoch.load(Ordering::SeqCst);
            let parity = (epoch & 1) as usize;
            self.counts[parity].fetch_add(1, Ordering::SeqCst);
            // Counted under the epoch it read? (An eviction may have
            // flipped it in between and stopped waiting for this parity.)
            if self.epoch.load(Ordering::SeqCst) == epoch {
                return Reading {
                    epochs: Arc::clone(self),
                    parity,
                };
            }
            self.counts[parity].fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Start a new epoch; returns the parity of the old one.
    pub fn flip(&self) -> usize {
        (self.epoch.fetch_add(1, Ordering::SeqCst) & 1) as usize
    }

    /// Have all reads of the epoch of `parity` finished?
    pub fn drained(&self, parity: usize) -> bool {
        self.counts[parity].load(Ordering::SeqCst) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flip_waits_for_the_reads_before_it_only() {
        let e = ReadEpochs::new();
        let old = e.enter();
        let parity = e.flip();
        assert!(!e.drained(parity));
        let new = e.enter();
        drop(old);
        assert!(e.drained(parity), "a read after the flip does not count");
        drop(new);
        assert!(e.drained(1 - parity));
    }
}
