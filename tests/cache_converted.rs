//! `gyrofs mount --cache-converted` through real mounts (docs/CACHE.md):
//! the bytes equal a plain mount's; after a remount they come from the
//! cache (never computed again) and, for complete files, through FUSE
//! passthrough; a corrupt block is computed again; a changed source
//! invalidates; `--cache-size` evicts the least recently used; a partial
//! read leaves a partial file; `gyrofs cache clear` frees.
//!
//! The daemon logs at debug level (RUST_LOG) what each read took from the
//! cache and what it computed, and each file opened in passthrough:
//! the tests read those lines.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const MODEL: &str = "bf16/model-00001-of-00001.safetensors";

/// A mount with the converted cache in `cache`, logging at debug level;
/// passthrough off unless `passthrough`.
fn cached_mount(source: &Path, cache: &Path, passthrough: bool, extra: &[&str]) -> Mount {
    let mut args = vec!["--cache-converted", "--cache-dir", cache.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut env = vec![("RUST_LOG", "gyrofs=debug".to_string())];
    if !passthrough {
        env.push(("GYROFS_NO_PASSTHROUGH", "1".to_string()));
    }
    Mount::with_env(source, &args, &env)
}

/// Every file under `dir` of `m`, by path.
fn files_under(m: &Mount, dir: &str) -> Vec<(String, Vec<u8>)> {
    walk(&m.join(dir))
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(m.join(&format!("{dir}/{f}"))).unwrap();
            (format!("{dir}/{f}"), bytes)
        })
        .collect()
}

fn log_of(m: &Mount) -> String {
    std::fs::read_to_string(&m.log).unwrap_or_default()
}

/// The daemon's per-read lines for `path`: (bytes from the cache,
/// bytes computed).
fn reads_of(log: &str, path: &str) -> Vec<(u64, u64)> {
    let head = format!("cache: {path} ");
    log.lines()
        .filter_map(|l| l.split_once(&head).map(|(_, rest)| rest))
        .map(|rest| {
            let num = |s: &str| s.trim().parse::<u64>().unwrap();
            let (_, counts) = rest.split_once(": ").unwrap();
            let (cached, computed) = counts.split_once(" bytes from the cache, ").unwrap();
            (num(cached), num(computed.trim_end_matches(" computed")))
        })
        .collect()
}

/// `gyrofs cache ls` rows: (source, path, cached, size, state).
fn cache_ls(cache: &Path) -> Vec<(String, String, u64, u64, String)> {
    let out = gyrofs_within(
        &["cache", "ls", "--cache-dir", cache.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("SOURCE\tPATH\tCACHED/SIZE\tSTATE\tLAST USE")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let (c, s) = f[2].split_once('/').unwrap();
            (
                f[0].to_string(),
                f[1].to_string(),
                c.parse().unwrap(),
                s.parse().unwrap(),
                f[3].to_string(),
            )
        })
        .collect()
}

fn row<'a>(
    rows: &'a [(String, String, u64, u64, String)],
    path: &str,
) -> Option<&'a (String, String, u64, u64, String)> {
    rows.iter().find(|r| r.1 == path)
}

/// The cache file of virtual file `name` (its base name).
fn data_file(cache: &Path, name: &str) -> PathBuf {
    let dir = cache.join("converted/objects");
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(&format!("{name}-")) && n.ends_with(".data")
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// Wait (bounded) until no process holds the lock of cache file `data`:
/// the daemon of a mount just unmounted may still be exiting.
fn wait_unlocked(data: &Path) {
    use std::os::fd::AsRawFd;
    wait_until("the cache file's lock", Duration::from_secs(20), || {
        let f = std::fs::File::open(data).unwrap();
        // SAFETY: flock on our own descriptor.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    });
}

fn copy_source(to: &Path) -> PathBuf {
    let src = sample_hf();
    let dst = to.join("model");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    dst
}

#[test]
fn bytes_equal_a_plain_mount_and_a_remount_serves_them_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let plain = Mount::new(&sample_hf());
    let want = files_under(&plain, "bf16");
    assert!(want.iter().any(|(p, _)| p.starts_with("bf16/experts/")));
    {
        let m = cached_mount(&sample_hf(), cache.path(), false, &[]);
        assert_eq!(files_under(&m, "bf16"), want, "first mount");
        let log = log_of(&m);
        assert!(reads_of(&log, MODEL).iter().any(|r| r.1 > 0), "{log}");
    }
    let rows = cache_ls(cache.path());
    let source = std::fs::canonicalize(sample_hf()).unwrap();
    for p in [MODEL, "bf16/experts/layer_01_expert_002.safetensors"] {
        let r = row(&rows, p).unwrap_or_else(|| panic!("{p} not listed: {rows:?}"));
        assert_eq!(r.0, source.to_string_lossy());
        assert_eq!((r.2, r.4.as_str()), (r.3, "complete"), "{r:?}");
    }
    // Lossless files are not cached.
    assert!(rows.iter().all(|r| r.1.starts_with("bf16/")), "{rows:?}");
    // Complete files were sealed before the daemon exited: the index ends
    // with the seal, so a remount does not read them whole to check them.
    let data = data_file(cache.path(), "model-00001-of-00001.safetensors");
    wait_unlocked(&data);
    let idx = std::fs::read(data.with_extension("idx")).unwrap();
    assert_eq!(&idx[idx.len() - 48..idx.len() - 40], b"GYROSEAL");

    // Remounted, passthrough off: every read comes from the cache file.
    {
        let m = cached_mount(&sample_hf(), cache.path(), false, &[]);
        assert_eq!(files_under(&m, "bf16"), want, "remount");
        let log = log_of(&m);
        let reads = reads_of(&log, MODEL);
        assert!(!reads.is_empty(), "{log}");
        assert!(reads.iter().all(|r| r.1 == 0 && r.0 > 0), "{reads:?}");
        assert!(!log.contains("passthrough: "), "{log}");
        assert!(
            log.contains(&format!("{} is sealed", data.display())),
            "{log}"
        );
        // Nothing computed, for any file.
        let reads = log
            .lines()
            .filter(|l| l.contains("] cache: ") && l.ends_with(" computed"));
        assert!(
            reads.clone().count() > 0 && reads.clone().all(|l| l.ends_with(" 0 computed")),
            "{log}"
        );
    }

    // Remounted with passthrough: the kernel reads the cache file itself
    // (no read of the model reaches the daemon), by read and by mmap.
    {
        let m = cached_mount(&sample_hf(), cache.path(), true, &[]);
        assert_eq!(files_under(&m, "bf16"), want, "passthrough");
        let f = std::fs::File::open(m.join(MODEL)).unwrap();
        // SAFETY: a read-only map of a file of the read-only mount.
        let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
        let model = &want.iter().find(|w| w.0 == MODEL).unwrap().1;
        assert_eq!(&map[..], &model[..]);
        let log = log_of(&m);
        assert!(
            log.contains(&format!("passthrough: /{MODEL} is read from ")),
            "{log}"
        );
        assert!(reads_of(&log, MODEL).is_empty(), "{log}");
        // The pages the kernel cached of it (none here: nothing was read
        // through the daemon in this mount) are dropped, in the background.
        wait_until("the pages dropped", Duration::from_secs(20), || {
            log_of(&m).contains(&format!(
                "passthrough: /{MODEL}: its pages read through gyrofs dropped"
            ))
        });
    }
}

#[test]
fn a_corrupt_block_is_computed_again_never_served() {
    let cache = tempfile::tempdir().unwrap();
    let plain = Mount::new(&sample_hf());
    let want = std::fs::read(plain.join(MODEL)).unwrap();
    assert!(want.len() > 70_000);
    {
        let m = cached_mount(&sample_hf(), cache.path(), false, &[]);
        assert_eq!(std::fs::read(m.join(MODEL)).unwrap(), want);
    }
    let data = data_file(cache.path(), "model-00001-of-00001.safetensors");
    wait_unlocked(&data);
    let corrupt = || {
        let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
        f.write_all_at(b"\xff\x00\xff\x00", 70_000).unwrap();
    };
    corrupt();
    {
        let m = cached_mount(&sample_hf(), cache.path(), false, &[]);
        assert_eq!(std::fs::read(m.join(MODEL)).unwrap(), want);
        let log = log_of(&m);
        assert!(log.contains("fails its checksum"), "{log}");
        // The bad block, and only it (twice at most: two reads of it at
        // once both compute it).
        let computed: u64 = reads_of(&log, MODEL).iter().map(|r| r.1).sum();
        assert!((65536..=2 * 65536).contains(&computed), "{computed}: {log}");
    }
    // Repaired in the cache file.
    wait_unlocked(&data);
    assert_eq!(std::fs::read(&data).unwrap(), want);

    // With passthrough: checked at open, so the corrupt file is not handed
    // to the kernel; read through the daemon instead, repaired, and passed
    // through at the next open.
    corrupt();
    let m = cached_mount(&sample_hf(), cache.path(), true, &[]);
    assert_eq!(std::fs::read(m.join(MODEL)).unwrap(), want);
    let log = log_of(&m);
    assert!(log.contains("fails its checksum"), "{log}");
    assert!(!log.contains(&format!("passthrough: /{MODEL}")), "{log}");
    // Once the kernel has released the first open (asynchronously).
    wait_until("passthrough", Duration::from_secs(20), || {
        assert_eq!(std::fs::read(m.join(MODEL)).unwrap(), want);
        log_of(&m).contains(&format!("passthrough: /{MODEL}"))
    });
}

#[test]
fn a_partial_read_leaves_the_file_partial() {
    use std::os::fd::AsRawFd;
    let cache = tempfile::tempdir().unwrap();
    let plain = Mount::new(&sample_hf());
    let want = std::fs::read(plain.join(MODEL)).unwrap();
    let m = cached_mount(&sample_hf(), cache.path(), false, &["--read-ahead-kb", "0"]);
    let f = std::fs::File::open(m.join(MODEL)).unwrap();
    // SAFETY: fadvise on our own descriptor: no readahead for it.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    let mut buf = [0u8; 100];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..], &want[..100]);
    drop(f);
    // Written by the cache's writer thread, shortly.
    wait_until("the block written", Duration::from_secs(20), || {
        row(&cache_ls(cache.path()), MODEL).is_some_and(|r| r.2 > 0)
    });
    std::thread::sleep(Duration::from_millis(300));
    let rows = cache_ls(cache.path());
    let r = row(&rows, MODEL).unwrap();
    assert_eq!(
        (r.2, r.3, r.4.as_str()),
        (65536, want.len() as u64, "partial"),
        "{r:?}"
    );
}

#[test]
fn a_changed_source_invalidates_its_entries_at_remount() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let src = copy_source(tmp.path());
    let before = {
        let m = cached_mount(&src, cache.path(), false, &[]);
        std::fs::read(m.join(MODEL)).unwrap()
    };
    wait_unlocked(&data_file(cache.path(), "model-00001-of-00001.safetensors"));
    // Change tensor bytes in place (same size and inode; new mtime).
    let shard = src.join("model-00002-of-00002.safetensors");
    let len = std::fs::metadata(&shard).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap();
    f.write_all_at(&[0x3f; 64], len - 64).unwrap();
    drop(f);
    let want = std::fs::read(Mount::new(&src).join(MODEL)).unwrap();
    assert_ne!(want, before, "the change shows in bf16/");
    let m = cached_mount(&src, cache.path(), false, &[]);
    assert_eq!(std::fs::read(m.join(MODEL)).unwrap(), want);
    let log = log_of(&m);
    assert!(
        reads_of(&log, MODEL).iter().all(|r| r.0 == 0),
        "nothing of the old version served: {log}"
    );
    assert!(
        log.contains("removed ") && log.contains("older version"),
        "{log}"
    );
    drop(m);
    let rows = cache_ls(cache.path());
    let model_rows = rows.iter().filter(|r| r.1 == MODEL).count();
    assert_eq!(model_rows, 1, "{rows:?}");
}

#[test]
fn cache_size_evicts_the_least_recently_used() {
    let cache = tempfile::tempdir().unwrap();
    let m = cached_mount(&sample_hf(), cache.path(), false, &["--cache-size", "100K"]);
    let experts: Vec<String> = (0..2)
        .flat_map(|l| {
            (0..4).map(move |e| format!("bf16/experts/layer_{l:02}_expert_{e:03}.safetensors"))
        })
        .collect();
    for e in &experts {
        std::fs::read(m.join(e)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    // 8 files of 27 KiB: evicted down to 90% of 100 KiB.
    let cached =
        |rows: &[(String, String, u64, u64, String)]| -> u64 { rows.iter().map(|r| r.2).sum() };
    let newest = experts[7].clone();
    wait_until("eviction", Duration::from_secs(20), || {
        let rows = cache_ls(cache.path());
        cached(&rows) <= 100 << 10 && row(&rows, &newest).is_some_and(|r| r.2 == r.3)
    });
    let rows = cache_ls(cache.path());
    let state = |p: &str| row(&rows, p).map_or(0, |r| r.2);
    assert_eq!(state(&experts[0]), 0, "the oldest went: {rows:?}");
    assert_eq!(state(&experts[7]), 27400, "the newest stayed: {rows:?}");
}

#[test]
fn cache_clear_frees_what_no_mount_holds() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().to_str().unwrap();
    let source = sample_hf();
    let m = cached_mount(&source, cache.path(), false, &[]);
    std::fs::read(m.join(MODEL)).unwrap();
    assert!(row(&cache_ls(cache.path()), MODEL).is_some());
    // Open by the mount: kept.
    let src = source.to_str().unwrap();
    let out = gyrofs_within(
        &["cache", "clear", "--source", src, "--cache-dir", dir],
        Duration::from_secs(30),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("kept"), "{said}");
    assert!(row(&cache_ls(cache.path()), MODEL).is_some());
    drop(m);
    wait_unlocked(&data_file(cache.path(), "model-00001-of-00001.safetensors"));
    // Another source's entries are not touched; this one's are freed.
    let other = gyrofs_within(
        &[
            "cache",
            "clear",
            "--source",
            "/no/such/model",
            "--cache-dir",
            dir,
        ],
        Duration::from_secs(30),
    );
    assert!(String::from_utf8_lossy(&other.stdout).contains("removed 0 "));
    let out = gyrofs_within(
        &["cache", "clear", "--source", src, "--cache-dir", dir],
        Duration::from_secs(30),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.starts_with("removed 1"),
        "{said}"
    );
    assert!(cache_ls(cache.path()).is_empty());
    let left = std::fs::read_dir(cache.path().join("converted/objects"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
}

#[test]
fn the_o_option_turns_it_on() {
    let cache = tempfile::tempdir().unwrap();
    let list = format!("cache_converted,cache_dir={}", cache.path().display());
    let env = [("RUST_LOG", "gyrofs=debug".to_string())];
    let m = Mount::with_env(&sample_hf(), &["-o", &list], &env);
    std::fs::read(m.join(MODEL)).unwrap();
    wait_until("the cache file", Duration::from_secs(20), || {
        row(&cache_ls(cache.path()), MODEL).is_some_and(|r| r.2 == r.3)
    });
}

/// A cache disk that fills up: logged once, and the mount goes on (same
/// bytes) without the cache.
#[test]
fn a_full_cache_disk_turns_the_cache_off_not_the_mount() {
    let disk = tempfile::tempdir().unwrap();
    let c = std::ffi::CString::new(disk.path().to_str().unwrap()).unwrap();
    let opts = std::ffi::CString::new("size=160k").unwrap();
    // SAFETY: NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            opts.as_ptr().cast(),
        )
    };
    if rc != 0 {
        eprintln!("skipped: cannot mount a small tmpfs (not root?)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            force_unmount(self.0);
        }
    }
    let _tmpfs = Unmount(disk.path());
    let plain = Mount::new(&sample_hf());
    let want = files_under(&plain, "bf16");
    let m = cached_mount(&sample_hf(), disk.path(), false, &[]);
    assert_eq!(files_under(&m, "bf16"), want);
    // Once more: the cache is off, the plain path serves.
    assert_eq!(files_under(&m, "bf16"), want);
    let log = log_of(&m);
    let said = log
        .matches("the mount goes on without --cache-converted")
        .count();
    assert_eq!(said, 1, "{log}");
    assert!(log.contains("the cache disk is full"), "{log}");
}
