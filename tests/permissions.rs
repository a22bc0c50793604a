//! Who may read a mount (docs/RELIABILITY.md, "Who may read"): with
//! `--allow-other`, a user reads through the mount only what they could
//! read directly. Each virtual file and folder has the owner, group and
//! read permission of the source files it is made from (the most
//! restrictive; folders on the way count), the kernel enforces them
//! (`default_permissions`), and `--uid`, `--gid`, `--file-mode`,
//! `--dir-mode` override them. Tried for real as users `nobody` (65534,
//! group 65534) and 65533 (no group of ours).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;

/// Can user `uid` (group `uid`, no other groups) read `path` in full?
fn reads_as(uid: u32, path: &Path) -> bool {
    let o = Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
            "--".into(),
            "cat".into(),
        ])
        .arg(path)
        .output()
        .expect("run setpriv (util-linux)");
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("Permission denied"),
            "{}: {err}",
            path.display()
        );
    }
    o.status.success()
}

const NOBODY: u32 = 65534;
const STRANGER: u32 = 65533;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A copy of the sample in a world-searchable folder: `(tempdir, source)`.
fn source(files: u32, folder: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    chmod(d.path(), 0o755);
    let src = d.path().join("m");
    std::fs::create_dir(&src).unwrap();
    for e in std::fs::read_dir(sample_hf()).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            let dst = src.join(e.file_name());
            std::fs::copy(e.path(), &dst).unwrap();
            chmod(&dst, files);
        }
    }
    chmod(&src, folder);
    (d, src)
}

fn mode(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(p).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

const FILES: &[&str] = &[
    "manifest.json",
    "raw/config.json",
    "raw/model.safetensors",
    "bf16/model-00001-of-00001.safetensors",
];

/// The case: one shard readable by its owner only (0600). Before,
/// every virtual file was `-r--r--r--` and `nobody` read it all.
#[test]
fn a_private_source_stays_private() {
    let (_d, src) = source(0o644, 0o755);
    // A world-readable source: everyone reads, as before.
    let m = Mount::with_args(&src, &["--allow-other"]);
    assert_eq!(mode(&m.path), (0, 0, 0o555));
    assert_eq!(mode(&m.join("raw/model.safetensors")), (0, 0, 0o444));
    for f in FILES {
        assert!(reads_as(NOBODY, &m.join(f)), "{f}");
    }
    drop(m);

    chmod(&src.join("model-00002-of-00002.safetensors"), 0o600);
    let m = Mount::with_args(&src, &["--allow-other"]);
    // The files made from the private shard, and every folder (their
    // listings name its tensors), are root's alone.
    assert_eq!(mode(&m.path), (0, 0, 0o500));
    assert_eq!(mode(&m.join("raw")), (0, 0, 0o500));
    assert_eq!(mode(&m.join("raw/model.safetensors")), (0, 0, 0o400));
    assert_eq!(mode(&m.join("manifest.json")), (0, 0, 0o400));
    // A file of the public shard alone, or a side file: their own.
    let tensors = std::fs::read_dir(m.join("raw/tensors")).unwrap();
    let modes: std::collections::BTreeSet<u32> =
        tensors.map(|e| mode(&e.unwrap().path()).2).collect();
    assert_eq!(modes, [0o400, 0o444].into());
    assert_eq!(mode(&m.join("raw/config.json")), (0, 0, 0o444));
    for f in FILES {
        assert!(!reads_as(NOBODY, &m.join(f)), "{f}");
        assert!(std::fs::read(m.join(f)).is_ok(), "root reads {f}");
    }
    drop(m);

    // Overrides, as mountpoint-s3's: everyone again (write bits dropped).
    let m = Mount::with_args(
        &src,
        &["--allow-other", "--file-mode", "0644", "--dir-mode", "0755"],
    );
    assert_eq!(mode(&m.join("raw")), (0, 0, 0o555));
    assert_eq!(mode(&m.join("raw/model.safetensors")), (0, 0, 0o444));
    for f in FILES {
        assert!(reads_as(NOBODY, &m.join(f)), "{f}");
    }
    drop(m);
    // Or one user.
    let m = Mount::with_args(
        &src,
        &[
            "--allow-other",
            "--uid",
            "65534",
            "--gid",
            "65534",
            "--file-mode",
            "0400",
            "--dir-mode",
            "0500",
        ],
    );
    assert_eq!(mode(&m.join("raw/config.json")), (NOBODY, NOBODY, 0o400));
    for f in FILES {
        assert!(reads_as(NOBODY, &m.join(f)), "{f}");
        assert!(!reads_as(STRANGER, &m.join(f)), "{f}");
    }
}

/// Group permission carries over: a source readable by group 65534 only is
/// readable through the mount by `nobody` (in it), not by a stranger.
#[test]
fn group_readable_source() {
    let (_d, src) = source(0o640, 0o750);
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        std::os::unix::fs::chown(e.path(), Some(0), Some(NOBODY)).unwrap();
    }
    std::os::unix::fs::chown(&src, Some(0), Some(NOBODY)).unwrap();
    let m = Mount::with_args(&src, &["--allow-other"]);
    assert_eq!(mode(&m.join("raw")), (0, NOBODY, 0o550));
    assert_eq!(mode(&m.join("raw/model.safetensors")), (0, NOBODY, 0o440));
    for f in FILES {
        assert!(reads_as(NOBODY, &m.join(f)), "{f}");
        assert!(!reads_as(STRANGER, &m.join(f)), "{f}");
    }
}

/// World-readable files in a folder others cannot enter (a 0700 home) are
/// not readable through the mount either; a source folder others may enter
/// but not list hides the listings.
#[test]
fn folders_on_the_way_count() {
    let (d, src) = source(0o644, 0o755);
    chmod(d.path(), 0o700);
    let m = Mount::with_args(&src, &["--allow-other"]);
    assert_eq!(mode(&m.join("raw/model.safetensors")), (0, 0, 0o400));
    for f in FILES {
        assert!(!reads_as(NOBODY, &m.join(f)), "{f}");
    }
    drop(m);
    chmod(d.path(), 0o755);
    chmod(&src, 0o711);
    let m = Mount::with_args(&src, &["--allow-other"]);
    assert_eq!(mode(&m.path), (0, 0, 0o500));
    assert_eq!(mode(&m.join("raw/model.safetensors")), (0, 0, 0o444));
}
