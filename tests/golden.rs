//! Golden Gyro files: the bytes of some virtual files of the sample, written
//! by scripts/make_golden.py from docs/FORMAT.md alone, must equal what
//! gyrofs produces, through the read path and through a real mount.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use gyrofs::volume::Volume;

fn golden_dir(layout: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/golden")
        .join(layout)
}

fn read_all(v: &Volume, path: &str) -> Vec<u8> {
    let id = v
        .resolve(path)
        .unwrap_or_else(|| panic!("{path} not in the tree"));
    let size = v.file(id).unwrap().size;
    v.read(id, 0, size as usize).unwrap().to_vec()
}

/// (virtual path, golden bytes, whole file or header prefix only)
fn goldens(layout: &str) -> Vec<(String, Vec<u8>, bool)> {
    let root = golden_dir(layout);
    let files = walk(&root);
    assert!(
        files.len() >= 4,
        "golden files missing under {}",
        root.display()
    );
    files
        .into_iter()
        .map(|rel| {
            let bytes = std::fs::read(root.join(&rel)).unwrap();
            match rel.strip_suffix(".header") {
                Some(v) => (v.to_string(), bytes, false),
                None => (rel, bytes, true),
            }
        })
        .collect()
}

fn check(layout: &str, src: &Path) {
    let volume = Volume::open(src).unwrap();
    let mnt = Mount::new(src);
    for (path, want, whole) in goldens(layout) {
        let ours = read_all(&volume, &path);
        let mounted = std::fs::read(mnt.join(&path)).unwrap();
        assert_eq!(ours, mounted, "{path}: read path and mount disagree");
        let got = if whole {
            &ours[..]
        } else {
            &ours[..want.len()]
        };
        if got != &want[..] {
            let show = |b: &[u8]| String::from_utf8_lossy(&b[8..b.len().min(600)]).into_owned();
            panic!(
                "{layout}/{path} differs from golden\n ours: {}\n want: {}",
                show(got),
                show(&want)
            );
        }
    }
}

#[test]
fn hf_layout_matches_golden_files() {
    check("hf", &sample_hf());
}

#[test]
fn original_layout_matches_golden_files() {
    check("original", &sample_original());
}

#[test]
fn headers_are_deterministic_across_opens_and_copies() {
    // Same source in another place (another path, fresh mtime): same bytes.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("elsewhere");
    std::fs::create_dir(&copy).unwrap();
    for f in walk(&sample_original()) {
        std::fs::copy(sample_original().join(&f), copy.join(&f)).unwrap();
    }
    let a = Volume::open(&sample_original()).unwrap();
    let b = Volume::open(&copy).unwrap();
    for path in [
        "manifest.json",
        "raw/model.safetensors",
        "raw/tensors/norm.scale.safetensors",
    ] {
        assert_eq!(read_all(&a, path), read_all(&b, path), "{path}");
    }
}
