//! What a GGUF's vocabulary costs when the source is opened (issue 24): no
//! allocation per token, and a few bytes per token (its text and where it
//! ends), whatever the size of the vocabulary. Counted by this test
//! binary's allocator, on the opening thread: opening the same model with
//! 20,000 and with 40,000 more tokens must differ by a handful of
//! allocations and well under 100 bytes a token. (Before: one `String` per
//! token in the catalog, and Gemma 3's vocabulary copied and de-duplicated
//! at mount to count the embedding rows the `gguf/` view keeps.)

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::gemma3_with_tokens;
use gyrofs::volume::Volume;

/// The system allocator, counting the allocations (and the bytes asked
/// for) of each thread.
struct Counting;

thread_local! {
    static COUNTS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

fn note(bytes: usize) {
    let _ = COUNTS.try_with(|c| {
        let (n, b) = c.get();
        c.set((n + 1, b + bytes as u64));
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the counting
// touches only a const-initialised thread-local `Cell`, which allocates
// nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations and bytes allocated by this thread while opening the
/// gemma3 test model with `extra` more tokens (all its views laid out).
fn open_counting(extra: usize) -> (u64, u64) {
    let tokens: Vec<String> = (0..extra).map(|i| format!("\u{2581}t{i:06}")).collect();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("vocab.gguf");
    std::fs::write(&src, gemma3_with_tokens(&tokens)).unwrap();
    drop(tokens);
    COUNTS.with(|c| c.set((0, 0)));
    let volume = Volume::open(&src).unwrap();
    let counts = COUNTS.with(Cell::get);
    assert!(volume.resolve("gguf/model-F16.gguf").is_some());
    counts
}

#[test]
fn a_vocabulary_costs_no_allocation_per_token_when_opened() {
    let (n1, b1) = open_counting(20_000);
    let (n2, b2) = open_counting(40_000);
    let (more_allocs, more_bytes) = (n2.saturating_sub(n1), b2.saturating_sub(b1));
    eprintln!("opening: {n1} allocations, {b1} bytes; with 20,000 more tokens: {n2}, {b2}");
    assert!(
        more_allocs < 100,
        "20,000 more tokens took {more_allocs} more allocations ({n1} -> {n2})"
    );
    assert!(
        more_bytes < 100 * 20_000,
        "20,000 more tokens took {more_bytes} more bytes ({} a token)",
        more_bytes / 20_000
    );
}
