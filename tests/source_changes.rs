//! Source files that change under a live mount: the daemon survives every
//! kind of change, during reads or between them, and readers get either the
//! right bytes or EIO, never stale or mixed bytes (docs/RELIABILITY.md).

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;

const SHARD_A: &str = "model-00001-of-00002.safetensors";
const SHARD_B: &str = "model-00002-of-00002.safetensors";

/// A two-shard checkpoint: shard A holds `a_tensors` F32 tensors of
/// `a_elems` elements (read lossless through `raw/` and computed through
/// `bf16/`), shard B two small ones that stay untouched.
fn pristine(dir: &Path, a_tensors: usize, a_elems: usize) {
    let a: Vec<T> = (0..a_tensors)
        .map(|i| T::new(&format!("a{i}"), "F32", &[a_elems], 10 + i as u64))
        .collect();
    let b = vec![
        T::new("b0", "F32", &[4096], 1),
        T::new("b1", "BF16", &[4096], 2),
    ];
    write_sharded(dir, &[a, b]);
}

/// Copy the checkpoint files of `from` into `to` as new files.
fn copy_source(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        let _ = std::fs::remove_file(&dst);
        std::fs::copy(e.path(), &dst).unwrap();
    }
}

fn drop_caches() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// The files of the mount that read shard A (lossless and computed) and
/// shard B's lossless tensor files.
fn files_of(names: &[String]) -> (Vec<String>, Vec<String>) {
    let a = names
        .iter()
        .filter(|n| {
            n.starts_with("raw/tensors/a")
                || n.starts_with("bf16/tensors/a")
                || *n == "raw/model.safetensors"
        })
        .cloned()
        .collect();
    let b = names
        .iter()
        .filter(|n| n.starts_with("raw/tensors/b"))
        .cloned()
        .collect();
    (a, b)
}

/// Read `path` in 256 KiB chunks; each chunk must equal `want`'s or fail
/// with EIO. Returns (good chunks, EIO chunks).
fn read_checked(path: &Path, want: &[u8]) -> (usize, usize) {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EIO) => return (0, 1),
        Err(e) => panic!("{}: open: {e}", path.display()),
    };
    let (mut good, mut eio) = (0, 0);
    let chunk = 256 << 10;
    let mut buf = vec![0u8; chunk];
    let mut off = 0;
    while off < want.len() {
        let n = chunk.min(want.len() - off);
        match f.read_exact_at(&mut buf[..n], off as u64) {
            Ok(()) => {
                assert!(
                    buf[..n] == want[off..off + n],
                    "{}: wrong bytes at {off}",
                    path.display()
                );
                good += 1;
            }
            Err(e) if e.raw_os_error() == Some(libc::EIO) => eio += 1,
            Err(e) => panic!("{}: read at {off}: {e}", path.display()),
        }
        off += n;
    }
    (good, eio)
}

fn expected(src: &Path) -> (tempfile::TempDir, PathBuf) {
    let out = convert(src, ".");
    let root = out.path().join("out");
    (out, root)
}

/// The daemon still answers, and files that do not read the changed shard
/// still read right.
fn assert_alive(m: &Mount, want: &Path, untouched: &[String]) {
    assert!(is_mounted(&m.path), "the mount is gone");
    let manifest = std::fs::read(m.join("manifest.json")).expect("manifest.json readable");
    assert_eq!(manifest, std::fs::read(want.join("manifest.json")).unwrap());
    for f in untouched {
        assert_eq!(
            std::fs::read(m.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")),
            std::fs::read(want.join(f)).unwrap(),
            "{f}"
        );
    }
}

/// About a dozen concurrent readers of files made from shard A (lossless
/// and BF16-computed), page cache dropped, and one `truncate` of shard A
/// during the reads; 20 times. Without SIGBUS recovery the daemon dies in
/// several iterations (every open file then fails with ENOTCONN).
#[test]
fn truncate_during_reads_never_kills_the_daemon() {
    let work = tempfile::tempdir().unwrap();
    let clean = work.path().join("clean");
    pristine(&clean, 12, 1 << 20); // 48 MiB in shard A
    let (_keep, want) = expected(&clean);
    let names = walk(&want);
    let (a_files, b_files) = files_of(&names);
    let src = work.path().join("src");
    let (mut total_good, mut total_eio) = (0, 0);
    for iteration in 0..20 {
        copy_source(&clean, &src);
        drop_caches();
        let m = Mount::new(&src);
        let readers = 12;
        let barrier = Arc::new(Barrier::new(readers + 1));
        let handles: Vec<_> = (0..readers)
            .map(|r| {
                let barrier = Arc::clone(&barrier);
                let mine: Vec<(PathBuf, Vec<u8>)> = a_files
                    .iter()
                    .skip(r % a_files.len())
                    .step_by(readers.min(a_files.len()))
                    .chain(a_files.iter().skip((r * 7) % a_files.len()).take(1))
                    .map(|f| (m.join(f), std::fs::read(want.join(f)).unwrap()))
                    .collect();
                std::thread::spawn(move || {
                    barrier.wait();
                    mine.iter()
                        .map(|(p, w)| read_checked(p, w))
                        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
                })
            })
            .collect();
        barrier.wait();
        std::thread::sleep(Duration::from_millis(2 + 3 * (iteration % 5)));
        let shard = std::fs::OpenOptions::new()
            .write(true)
            .open(src.join(SHARD_A))
            .unwrap();
        shard.set_len(3 << 20).unwrap();
        drop(shard);
        for h in handles {
            let (g, e) = h.join().expect("a reader saw wrong bytes");
            total_good += g;
            total_eio += e;
        }
        assert_alive(&m, &want, &b_files);
        let log = std::fs::read_to_string(&m.log).unwrap_or_default();
        assert!(
            !log.contains("fatal signal"),
            "iteration {iteration}: {log}"
        );
    }
    eprintln!("20 iterations survived: {total_good} chunks read right, {total_eio} EIO");
    assert!(total_eio > 0, "the truncation never hit a read");
}

/// Every kind of change, made between reads while the changed files are in
/// the kernel's page cache: within a few seconds their reads answer EIO
/// (their cached pages were dropped), the log names each of them, and the
/// rest of the mount is untouched.
#[test]
fn every_kind_of_change_gives_eio_not_stale_bytes() {
    let work = tempfile::tempdir().unwrap();
    let clean = work.path().join("clean");
    pristine(&clean, 2, 1 << 16);
    let (_keep, want) = expected(&clean);
    let names = walk(&want);
    let (a_files, b_files) = files_of(&names);
    type Change = fn(&Path);
    let changes: [(&str, Change); 5] = [
        ("truncate", |p| {
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(1000).unwrap();
        }),
        ("extend", |p| {
            let f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
            f.write_all_at(&[0u8; 64], f.metadata().unwrap().len())
                .unwrap();
        }),
        ("rewrite in place, mtime restored", |p| {
            let mtime = std::fs::metadata(p).unwrap().modified().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            let len = f.metadata().unwrap().len();
            f.write_all_at(&[0x55u8; 4096], len - 4096).unwrap();
            f.set_modified(mtime).unwrap();
        }),
        ("delete", |p| std::fs::remove_file(p).unwrap()),
        ("rename over", |p| {
            let tmp = p.with_extension("new");
            std::fs::copy(p, &tmp).unwrap();
            std::fs::rename(&tmp, p).unwrap();
        }),
    ];
    for (what, change) in changes {
        let src = work.path().join(what.replace(' ', "_").replace(',', ""));
        copy_source(&clean, &src);
        let m = Mount::new(&src);
        // Read everything once: it is now in the kernel's page cache.
        for f in &a_files {
            assert_eq!(
                std::fs::read(m.join(f)).unwrap(),
                std::fs::read(want.join(f)).unwrap()
            );
        }
        change(&src.join(SHARD_A));
        for f in &a_files {
            wait_until(
                &format!("{what}: {f} to answer EIO"),
                Duration::from_secs(10),
                || {
                    let got = std::fs::read(m.join(f));
                    match &got {
                        Err(e) if e.raw_os_error() == Some(libc::EIO) => true,
                        Ok(b) => {
                            assert!(
                                *b == std::fs::read(want.join(f)).unwrap(),
                                "{what}: {f} gave bytes that are not the original's"
                            );
                            false
                        }
                        Err(e) => panic!("{what}: {f}: {e}"),
                    }
                },
            );
        }
        assert_alive(&m, &want, &b_files);
        // A read may see the change before the watcher does; the watcher's
        // report follows within its interval.
        let logged = |f: &String| {
            let log = std::fs::read_to_string(&m.log).unwrap();
            log.contains(&format!("/{f}: source file {SHARD_A} changed"))
        };
        for f in &a_files {
            wait_until(
                &format!("{what}: a log line for {f}"),
                Duration::from_secs(10),
                || logged(f),
            );
        }
        let log = std::fs::read_to_string(&m.log).unwrap();
        assert!(!log.contains(SHARD_B), "{what}: shard B reported:\n{log}");
    }
}

/// A source named by a relative path stays the same file after the daemon
/// has left its starting directory: the watcher (which re-resolves source
/// paths every second) must not take it for a deleted source.
#[test]
fn relative_source_path_is_not_a_change() {
    let work = tempfile::tempdir().unwrap();
    let clean = work.path().join("clean");
    pristine(&clean, 2, 1 << 12);
    let (_keep, want) = expected(&clean);
    let names = walk(&want);
    let m = Mount::from_dir(work.path(), Path::new("clean"));
    // past two watcher rounds
    std::thread::sleep(Duration::from_millis(2500));
    assert_alive(&m, &want, &names);
    let log = std::fs::read_to_string(&m.log).unwrap_or_default();
    assert!(!log.contains("changed since it was mounted"), "log: {log}");
}
