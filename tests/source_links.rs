//! Symlinks and unreadable files in a source folder (docs/RELIABILITY.md,
//! "Who may read"): a link that leads out of the source is never served; a
//! file the model does not need that cannot be served (a link out, a
//! broken link, a loop) is left out with a warning and a note in
//! `manifest.json`; one the model needs refuses the mount with one line
//! naming it and why. A Hugging Face cache snapshot (links into the cache's
//! `blobs/`) is served, `original/` included.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::*;

/// A copy of the sample's files (not `original/`) in `dir`.
fn copy_sample(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(sample_hf()).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
}

/// A file outside every source, standing for `/etc/shadow`.
fn secret(d: &Path) -> PathBuf {
    let p = d.join("secret");
    std::fs::write(&p, b"root:$6$secret-hash:19000:0:99999:7:::\n").unwrap();
    p
}

/// `gyrofs ls --json SOURCE`: the manifest, or the one-line error.
fn manifest(src: &Path) -> Result<serde_json::Value, String> {
    let o = gyrofs(&["ls", "--json", &src.display().to_string()]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    match o.status.success() {
        true => Ok(serde_json::from_slice(&o.stdout).unwrap()),
        false => Err(err),
    }
}

fn notes(m: &serde_json::Value) -> Vec<String> {
    m["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

/// `ls` and `mount` refuse `src` with one line holding every one of `expect`.
fn refused(src: &Path, expect: &[&str]) {
    let err = manifest(src).unwrap_err();
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let o = gyrofs(&[
        "mount",
        &src.display().to_string(),
        &mnt.display().to_string(),
    ]);
    let mounted = is_mounted(&mnt);
    if mounted {
        force_unmount(&mnt);
    }
    assert!(!mounted && !o.status.success(), "mounted {}", src.display());
    for err in [err, String::from_utf8_lossy(&o.stderr).into_owned()] {
        assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
        for e in expect {
            assert!(err.contains(e), "{err:?} does not mention {e:?}");
        }
    }
}

/// The case: `README.md` (not needed) linking out is left out of
/// `raw/` and `bf16/`, with a note and a warning, and its target is never
/// read; `tokenizer.json` or a shard (needed) linking out refuses the mount.
#[test]
fn links_out_of_the_source_are_not_served() {
    let d = tempfile::tempdir().unwrap();
    let secret = secret(d.path());
    let src = d.path().join("m");
    copy_sample(&src);
    symlink(&secret, src.join("README.md")).unwrap();
    // The absolute path of a file inside the source is fine.
    std::fs::rename(src.join("generation_config.json"), src.join("gen.real")).unwrap();
    symlink(src.join("gen.real"), src.join("generation_config.json")).unwrap();

    let m = Mount::new(&src);
    for view in ["raw", "bf16"] {
        assert!(!m.join(view).join("README.md").exists(), "{view}/README.md");
        let served = std::fs::read(m.join(view).join("generation_config.json")).unwrap();
        assert_eq!(served, std::fs::read(src.join("gen.real")).unwrap());
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.join("manifest.json")).unwrap()).unwrap();
    let notes = notes(&manifest);
    assert!(
        notes.contains(
            &"README.md is left out: a symlink that leads outside the source folder".into()
        ),
        "{notes:?}"
    );
    assert!(!notes.iter().any(|n| n.contains(&*secret.to_string_lossy())));
    drop(m);
    // The warning, at mount.
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let o = gyrofs(&[
        "mount",
        &src.display().to_string(),
        &mnt.display().to_string(),
    ]);
    force_unmount(&mnt);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("warning: README.md is left out"), "{err}");

    symlink(&secret, src.join("tokenizer.json")).unwrap();
    refused(
        &src,
        &[
            "m/tokenizer.json: a symlink to",
            "outside the source folder",
            "nothing is mounted",
        ],
    );
    std::fs::remove_file(src.join("tokenizer.json")).unwrap();

    let shard = src.join("model-00002-of-00002.safetensors");
    let outside = d.path().join("elsewhere.safetensors");
    std::fs::rename(&shard, &outside).unwrap();
    symlink(&outside, &shard).unwrap();
    refused(
        &src,
        &[
            "model-00002-of-00002.safetensors",
            "outside the source folder",
        ],
    );
}

/// A Hugging Face cache snapshot is served through its links into blobs/;
/// a broken link (an unfinished download) or a loop is left out when the
/// model does not need the file, and refuses the mount, naming it, when it
/// does. The same in `original/`.
#[test]
fn cache_snapshot_links_broken_links_and_loops() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("hub/models--org--tiny");
    let blobs = repo.join("blobs");
    let snap = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(snap.join("original")).unwrap();
    let link_all = |from: &Path, to: &Path, up: &str| {
        for e in std::fs::read_dir(from).unwrap().flatten() {
            if e.file_type().unwrap().is_file() {
                let name = e.file_name().to_string_lossy().into_owned();
                let blob = format!("{}-{name}", from.file_name().unwrap().to_string_lossy());
                std::fs::copy(e.path(), blobs.join(&blob)).unwrap();
                symlink(format!("{up}blobs/{blob}"), to.join(&name)).unwrap();
            }
        }
    };
    link_all(&sample_hf(), &snap, "../../");
    link_all(&sample_original(), &snap.join("original"), "../../../");
    let secret = secret(d.path());

    let m = manifest(&snap).unwrap();
    assert!(notes(&m).iter().all(|n| !n.contains("left out")), "{m}");
    let o = manifest(&snap.join("original")).unwrap();
    assert!(notes(&o).iter().all(|n| !n.contains("left out")), "{o}");

    symlink("../../blobs/never-finished", snap.join("README.md")).unwrap();
    symlink("LICENSE", snap.join("LICENSE")).unwrap();
    symlink(&secret, snap.join("original/README.md")).unwrap();
    let m = manifest(&snap).unwrap();
    let n = notes(&m);
    assert!(
        n.contains(&"README.md is left out: a broken symlink (an unfinished download?)".into()),
        "{n:?}"
    );
    assert!(
        n.iter()
            .any(|n| n.starts_with("LICENSE is left out: a symlink loop")),
        "{n:?}"
    );
    let o = manifest(&snap.join("original")).unwrap();
    assert!(
        notes(&o)
            .iter()
            .any(|n| n.starts_with("README.md is left out: a symlink that leads outside")),
        "{o}"
    );
    // Mounted: the rest is served, the left-out files are not there.
    let mnt = Mount::new(&snap);
    assert!(!mnt.join("raw/README.md").exists());
    assert_eq!(
        std::fs::read(mnt.join("raw/config.json")).unwrap(),
        std::fs::read(sample_hf().join("config.json")).unwrap()
    );
    drop(mnt);

    // Needed files: refused, naming the file and why.
    std::fs::remove_file(snap.join("config.json")).unwrap();
    symlink("../../blobs/never-finished", snap.join("config.json")).unwrap();
    refused(
        &snap,
        &[
            "0123abcd/config.json: a broken symlink",
            "blobs/never-finished",
        ],
    );
    std::fs::remove_file(snap.join("config.json")).unwrap();
    symlink("config.json", snap.join("config.json")).unwrap();
    refused(&snap, &["config.json: a symlink loop"]);
    std::fs::remove_file(snap.join("config.json")).unwrap();
    symlink(
        "../../blobs/gpt-oss-tiny-config.json",
        snap.join("config.json"),
    )
    .unwrap();
    let shard = snap.join("model-00001-of-00002.safetensors");
    std::fs::remove_file(&shard).unwrap();
    symlink("../../blobs/never-finished", &shard).unwrap();
    refused(
        &snap,
        &["model-00001-of-00002.safetensors: a broken symlink"],
    );
}

/// A side file gyrofs cannot open (here: a FIFO, which must not hang the
/// mount either) is left out; the same named `tokenizer.json` refuses.
#[test]
fn unreadable_side_files() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("m");
    copy_sample(&src);
    let fifo = std::ffi::CString::new(src.join("notes.txt").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let m = manifest(&src).unwrap();
    assert!(
        notes(&m).contains(&"notes.txt is left out: not a regular file".into()),
        "{m}"
    );
    std::fs::rename(src.join("notes.txt"), src.join("tokenizer.json")).unwrap();
    refused(&src, &["m/tokenizer.json: not a regular file"]);
}
