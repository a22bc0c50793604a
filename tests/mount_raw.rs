//! The lossless views through a real mount: every virtual file read through
//! the kernel equals (a) the source tensor bytes, read with the reference
//! safetensors crate, and (b) `gyrofs convert` output.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// name -> raw/tensors file, from the mount's manifest.
fn raw_files(mnt: &Mount) -> BTreeMap<String, String> {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(mnt.join("manifest.json")).unwrap()).unwrap();
    m["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["raw_file"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every lossless property of a mounted source.
fn check_lossless(src: &Path, side_files: &[&str]) {
    let mnt = Mount::new(src);
    let expected = source_tensors(src);
    assert!(!expected.is_empty());

    // The pack holds every tensor unchanged.
    let pack = std::fs::read(mnt.join("raw/model.safetensors")).unwrap();
    assert_eq!(read_st(&pack), expected, "raw/model.safetensors");
    let md = read_st_metadata(&pack);
    assert_eq!(md["format"], "pt");
    assert_eq!(md["gyro.version"], "1");
    assert_eq!(md["gyro.view"], "raw");

    // One file per tensor, each holding exactly its tensor.
    let files = raw_files(&mnt);
    assert_eq!(files.len(), expected.len());
    let listed: Vec<String> = std::fs::read_dir(mnt.join("raw/tensors"))
        .unwrap()
        .map(|e| format!("raw/tensors/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    assert_eq!(listed.len(), expected.len(), "one file per tensor");
    for (name, want) in &expected {
        let path = mnt.join(&files[name]);
        let bytes = std::fs::read(&path).unwrap();
        let got = read_st(&bytes);
        assert_eq!(got.len(), 1, "{}", files[name]);
        assert_eq!(got.get(name), Some(want), "{}", files[name]);
        // Sizes are exact before any byte is read (stat came first above? no:
        // check the reported size against what was read).
        assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes.len() as u64);
    }

    // Side files pass through byte for byte.
    for f in side_files {
        assert_eq!(
            std::fs::read(mnt.join(&format!("raw/{f}"))).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "raw/{f}"
        );
    }

    // The whole tree equals `gyrofs convert --view .`, file for file.
    let out = convert(src, ".");
    let conv = out.path().join("out");
    let mounted = walk(&mnt.path);
    assert_eq!(mounted, walk(&conv), "same file list");
    for rel in &mounted {
        assert_eq!(
            std::fs::read(mnt.join(rel)).unwrap(),
            std::fs::read(conv.join(rel)).unwrap(),
            "{rel} differs between the mount and convert"
        );
    }
}

fn multi_shard_tensors() -> Vec<Vec<T>> {
    let long = format!("model.{}.weight", "very_long_component.".repeat(14));
    vec![
        vec![
            T::new("model.embed_tokens.weight", "BF16", &[16, 8], 1),
            T::new("model.norm.weight", "F32", &[8], 2),
            T::new("odd", "U8", &[7], 3),
            T::new("scalar", "F32", &[], 4),
        ],
        vec![
            T::new("w/slash", "BF16", &[3, 5], 5),
            T::new(".hidden", "I64", &[2], 6),
            T::new("empty", "F16", &[0, 4], 7),
            T::new("x.blocks", "U8", &[2, 3, 16], 8),
            T::new("x.scales", "U8", &[2, 3], 9),
            T::new("50%", "I32", &[3], 10),
        ],
        vec![
            T::new("f8", "F8_E4M3", &[5], 11),
            T::new("flags", "BOOL", &[3], 12),
            T::new("c", "F64", &[2, 2], 13),
            T::new("u16", "U16", &[3], 14),
            T::new("i8", "I8", &[9], 15),
            T::new(&long, "F32", &[1], 16),
            T::new("fp4", "F4", &[6], 17),
        ],
    ]
}

fn write_side_files(dir: &Path) {
    std::fs::write(
        dir.join("config.json"),
        br#"{"model_type": "toy", "hidden_size": 8}"#,
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer.json"), b"{\"version\": \"1.0\"}\n").unwrap();
    std::fs::write(dir.join(".gitattributes"), b"*.safetensors filter=lfs\n").unwrap();
}

#[test]
fn sample_hf_layout_is_lossless() {
    check_lossless(&sample_hf(), &["config.json", "generation_config.json"]);
}

#[test]
fn sample_original_layout_is_lossless() {
    check_lossless(&sample_original(), &["config.json", "dtypes.json"]);
}

#[test]
fn generated_multi_shard_checkpoint_is_lossless() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("model");
    write_sharded(&src, &multi_shard_tensors());
    write_side_files(&src);
    check_lossless(&src, &["config.json", "tokenizer.json"]);

    // Hidden files and the index are not passed through.
    let mnt = Mount::new(&src);
    assert!(!mnt.join("raw/.gitattributes").exists());
    assert!(!mnt.join("raw/model.safetensors.index.json").exists());
}

#[test]
fn folder_of_safetensors_without_index() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("model");
    std::fs::create_dir(&src).unwrap();
    for (i, shard) in multi_shard_tensors().iter().enumerate() {
        write_safetensors(&src.join(format!("part{i}.safetensors")), shard);
    }
    check_lossless(&src, &[]);
}

#[test]
fn single_file_source() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("one.safetensors");
    write_safetensors(&src, &multi_shard_tensors()[1]);
    check_lossless(&src, &[]);
}

#[test]
fn hugging_face_cache_snapshot_of_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("models--org--toy");
    let blobs = repo.join("blobs");
    let snap = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    let staging = dir.path().join("staging");
    write_sharded(&staging, &multi_shard_tensors());
    write_side_files(&staging);
    for e in std::fs::read_dir(&staging).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let blob = format!("{:016x}", gyrofs::view::names::fnv1a64(name.as_bytes()));
        std::fs::rename(e.path(), blobs.join(&blob)).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snap.join(&name)).unwrap();
    }
    check_lossless(&snap, &["config.json", "tokenizer.json"]);
    // Recorded names are the link names, never blob hashes or absolute paths.
    let mnt = Mount::new(&snap);
    let manifest = std::fs::read_to_string(mnt.join("manifest.json")).unwrap();
    assert!(manifest.contains("model-00001-of-00003.safetensors"));
    assert!(!manifest.contains("blobs") && !manifest.contains(&*dir.path().to_string_lossy()));
}

#[test]
fn posix_tools_work_on_the_tree() {
    let mnt = Mount::new(&sample_hf());
    let run = |cmd: &mut Command| {
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let ls = run(Command::new("ls").arg("-l").arg(mnt.join("raw")));
    assert!(ls.contains("model.safetensors") && ls.contains("r--r--r--"));
    let stat = run(Command::new("stat")
        .args(["-c", "%s %F"])
        .arg(mnt.join("raw/model.safetensors")));
    let size = std::fs::metadata(mnt.join("raw/model.safetensors"))
        .unwrap()
        .len();
    assert_eq!(stat.trim(), format!("{size} regular file"));
    let cat = Command::new("cat")
        .arg(mnt.join("raw/model.safetensors"))
        .output()
        .unwrap();
    assert_eq!(cat.stdout.len() as u64, size);
    let find = run(Command::new("find")
        .arg(&mnt.path)
        .args(["-name", "*.safetensors"]));
    assert!(find.lines().count() > 30);
    let du = run(Command::new("du").args(["-sb"]).arg(&mnt.path));
    let du_bytes: u64 = du.split_whitespace().next().unwrap().parse().unwrap();
    assert!(du_bytes >= size);
    let copy = tempfile::tempdir().unwrap();
    run(Command::new("cp")
        .arg("-r")
        .arg(mnt.join("raw/tensors"))
        .arg(copy.path().join("t")));
    let conv = convert(&sample_hf(), "raw/tensors");
    for rel in walk(&copy.path().join("t")) {
        assert_eq!(
            std::fs::read(copy.path().join("t").join(&rel)).unwrap(),
            std::fs::read(conv.path().join("out").join(&rel)).unwrap(),
            "cp -r vs convert: {rel}"
        );
    }
    assert_eq!(walk(&copy.path().join("t")), walk(&conv.path().join("out")));

    // mmap of a virtual file, as loaders do.
    let f = std::fs::File::open(mnt.join("raw/model.safetensors")).unwrap();
    // SAFETY: the mount is read-only and its content never changes.
    let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    assert_eq!(
        &map[..],
        &std::fs::read(mnt.join("raw/model.safetensors")).unwrap()[..]
    );

    // Random access: seek + short read.
    let mut f = std::fs::File::open(mnt.join("raw/model.safetensors")).unwrap();
    f.seek(SeekFrom::Start(size - 5)).unwrap();
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).unwrap();
    assert_eq!(&tail[..], &map[map.len() - 5..]);

    // Directory metadata.
    let root = std::fs::metadata(&mnt.path).unwrap();
    assert!(root.is_dir());
    assert_eq!(root.mode() & 0o777, 0o555);
}

#[test]
fn writes_answer_erofs() {
    let mnt = Mount::new(&sample_hf());
    let erofs = |r: std::io::Result<()>| {
        let e = r.expect_err("write succeeded on a read-only mount");
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    };
    erofs(
        std::fs::OpenOptions::new()
            .write(true)
            .open(mnt.join("manifest.json"))
            .map(drop),
    );
    erofs(std::fs::File::create(mnt.join("new")).map(drop));
    erofs(std::fs::create_dir(mnt.join("d")));
    erofs(std::fs::remove_file(mnt.join("manifest.json")));
    erofs(std::fs::rename(mnt.join("manifest.json"), mnt.join("m2")));
    erofs(std::fs::set_permissions(
        mnt.join("manifest.json"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    ));
}

#[test]
fn source_that_shrinks_gives_eio_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m");
    write_sharded(&src, &multi_shard_tensors());
    let mnt = Mount::new(&src);
    let shard = src.join("model-00003-of-00003.safetensors");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = std::fs::read(mnt.join("raw/tensors/c.safetensors")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // The daemon is still alive and serving what it can.
    assert!(std::fs::read(mnt.join("manifest.json")).is_ok());
    assert!(std::fs::read(mnt.join("raw/tensors/odd.safetensors")).is_ok());
}

#[test]
fn gyrofs_umount_unmounts() {
    let mnt = Mount::new(&sample_hf());
    let o = gyrofs(&["umount", &mnt.path.display().to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_until("unmount", Duration::from_secs(10), || {
        !is_mounted(&mnt.path)
    });
    assert!(!mnt.join("manifest.json").exists());
}

/// A foreground mount, killed and unmounted by its guard on every path.
struct Foreground {
    child: std::process::Child,
    path: std::path::PathBuf,
}

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = self.child.kill();
        force_unmount(&self.path);
        let _ = self.child.wait();
    }
}

#[test]
fn foreground_mount_unmounts_on_sigterm_and_sigint() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let child = Command::new(GYROFS)
            .args(["mount", "-f"])
            .arg(sample_hf())
            .arg(&path)
            .spawn()
            .unwrap();
        let mut fg = Foreground { child, path };
        wait_until("foreground mount", Duration::from_secs(20), || {
            fg.path.join("manifest.json").exists()
        });
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(fg.child.id() as i32, sig) };
        wait_until("daemon exit", Duration::from_secs(20), || {
            fg.child.try_wait().unwrap().is_some()
        });
        let status = fg.child.wait().unwrap();
        assert!(status.success(), "exit status after signal {sig}: {status}");
        assert!(!is_mounted(&fg.path));
    }
}

#[test]
fn ls_lists_every_tensor() {
    for src in [sample_hf(), sample_original()] {
        let o = gyrofs(&["ls", &src.display().to_string()]);
        assert!(o.status.success());
        let text = String::from_utf8(o.stdout).unwrap();
        let expected = source_tensors(&src);
        for (name, (_, shape, data)) in &expected {
            let line = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name.as_str()))
                .unwrap_or_else(|| panic!("{name} not listed"));
            assert!(line.ends_with(&format!(" {}", data.len())), "{line}");
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            assert!(line.contains(&format!("[{}]", dims.join(", "))), "{line}");
        }
        let o = gyrofs(&["ls", "--json", &src.display().to_string()]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["tensors"].as_array().unwrap().len(), expected.len());
    }
    // Logical dtypes from dtypes.json and from MXFP4 pairing.
    let o = gyrofs(&["ls", &sample_original().display().to_string()]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("block.0.mlp.mlp1_weight.blocks ")
                && l.contains(" U8 ")
                && l.contains(" FP4 "))
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("block.0.mlp.mlp1_weight.scales ") && l.contains(" UE8 "))
    );
    let o = gyrofs(&["ls", &sample_hf().display().to_string()]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.lines().any(
        |l| l.starts_with("model.layers.1.mlp.experts.down_proj_blocks ") && l.contains(" FP4 ")
    ));
}

#[test]
fn quant_pairs_name_their_peer() {
    for (src, blocks, scales) in [
        (
            sample_hf(),
            "model.layers.0.mlp.experts.gate_up_proj_blocks",
            "model.layers.0.mlp.experts.gate_up_proj_scales",
        ),
        (
            sample_original(),
            "block.0.mlp.mlp1_weight.blocks",
            "block.0.mlp.mlp1_weight.scales",
        ),
    ] {
        let mnt = Mount::new(&src);
        for (me, peer, role, logical) in [
            (blocks, scales, "blocks", "FP4"),
            (scales, blocks, "scales", "UE8"),
        ] {
            let bytes = std::fs::read(mnt.join(&format!("raw/tensors/{me}.safetensors"))).unwrap();
            let md = read_st_metadata(&bytes);
            let tensors: serde_json::Value = serde_json::from_str(&md["gyro.tensors"]).unwrap();
            let rec = &tensors[me];
            assert_eq!(rec["logical_dtype"], logical);
            assert_eq!(rec["quant"]["peer"], peer);
            assert_eq!(rec["quant"]["role"], role);
            assert_eq!(rec["quant"]["scheme"], "mxfp4");
            assert_eq!(rec["quant"]["values_per_block"], 32);
            assert_eq!(rec["source"]["dtype"], "U8");
        }
    }
}

#[test]
fn remounting_at_the_same_path_is_not_undone_by_the_old_daemon() {
    // The old daemon must never unmount by path once the kernel has
    // unmounted it: a new mount may already sit at that path.
    let mnt = Mount::new(&sample_hf());
    let path = mnt.path.display().to_string();
    let src = sample_hf().display().to_string();
    for _ in 0..20 {
        force_unmount(&mnt.path);
        wait_until("unmount", Duration::from_secs(10), || {
            !is_mounted(&mnt.path)
        });
        let o = gyrofs(&["mount", &src, &path]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::thread::sleep(Duration::from_millis(30));
        assert!(is_mounted(&mnt.path), "the new mount was undone");
        assert!(mnt.join("manifest.json").exists());
    }
}

#[test]
fn large_directories_list_completely() {
    // Enough entries that readdir takes many kernel requests.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("many.safetensors");
    let ts: Vec<T> = (0..3000)
        .map(|i| T::new(&format!("layer.{i}.w"), "U8", &[2], i))
        .collect();
    write_safetensors(&src, &ts);
    let mnt = Mount::new(&src);
    let mut names: Vec<String> = std::fs::read_dir(mnt.join("raw/tensors"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = ts
        .iter()
        .map(|t| format!("{}.safetensors", t.name))
        .collect();
    want.sort();
    assert_eq!(names, want);
    let raw = std::fs::metadata(mnt.join("raw")).unwrap();
    assert_eq!(
        raw.nlink(),
        2 + 1,
        "raw/ of a dense model has one subdirectory, tensors/"
    );
}
