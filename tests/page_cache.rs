//! Files open with keep-cache: once a virtual file's pages are in the
//! kernel's page cache, opening it again (a second `from_pretrained`, `cat`,
//! an mmap loader) is served from there and sends the daemon no `READ`.
//! A changed source still never serves stale bytes: its virtual files' pages
//! are dropped when the change is seen (`tests/source_changes.rs`,
//! `every_kind_of_change_gives_eio_not_stale_bytes`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// How many requests named `op` the daemon has logged (RUST_LOG=debug logs
/// every request as `... ino 0x... OP ...`).
fn requests(log: &Path, op: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let needle = format!(" {op} ");
    text.lines()
        .filter(|l| l.contains("fuser::request") && l.contains(&needle))
        .count()
}

/// The count of `op` once it has stopped moving (the log is written by
/// the daemon's threads; a bounded wait, never a hang).
fn settled(log: &Path, op: &str) -> usize {
    let mut last = requests(log, op);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        let now = requests(log, op);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

fn read_by_mmap(path: &Path) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: a read-only map of a file of the read-only mount, read and
    // dropped here; nothing writes to it.
    let m = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    m.to_vec()
}

#[test]
fn reopening_an_unchanged_file_requests_no_page_again() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("model");
    std::fs::create_dir(&src).unwrap();
    // A lossless file and a computed one (F32 -> BF16), a few hundred KiB.
    write_safetensors(
        &src.join("model.safetensors"),
        &[
            T::new("a", "BF16", &[256, 512], 1),
            T::new("s", "F32", &[128, 512], 2),
        ],
    );
    let mnt = Mount::with_env(&src, &[], &[("RUST_LOG", "debug".to_string())]);
    let files: Vec<String> = walk(&mnt.path)
        .into_iter()
        .filter(|f| {
            f.ends_with(".safetensors") && (f.starts_with("raw/") || f.starts_with("bf16/"))
        })
        .collect();
    assert!(files.iter().any(|f| f.starts_with("bf16/")), "{files:?}");

    let first: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(mnt.join(f)).unwrap())
        .collect();
    let reads = settled(&mnt.log, "READ");
    let opens = settled(&mnt.log, "OPEN");
    assert!(reads > 0, "no READ logged: {}", mnt.log.display());

    // Open again, with read(2) and with a map: same bytes, no READ.
    for (f, want) in files.iter().zip(&first) {
        assert_eq!(&std::fs::read(mnt.join(f)).unwrap(), want, "{f}");
        assert_eq!(&read_by_mmap(&mnt.join(f)), want, "{f}");
    }
    assert!(
        settled(&mnt.log, "OPEN") >= opens + 2 * files.len(),
        "the reopens did not reach the daemon"
    );
    assert_eq!(
        settled(&mnt.log, "READ"),
        reads,
        "pages were requested again after a reopen (keep-cache lost?)"
    );
}
