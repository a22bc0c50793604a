//! Bad sources are refused at `ls` and at `mount` with one clear line naming
//! the file and the problem, a non-zero exit, no panic, and nothing mounted.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A raw safetensors file from a header string and a data buffer.
fn st(dir: &Path, name: &str, header: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    std::fs::write(&p, b).unwrap();
    p
}

/// `ls` and `mount` both refuse `src` with exactly one stderr line holding
/// every string in `expect`.
fn refused(src: &Path, expect: &[&str]) {
    let src_s = src.display().to_string();
    let ls = gyrofs(&["ls", &src_s]);
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mount = gyrofs(&["mount", &src_s, &mnt.display().to_string()]);
    let mounted = is_mounted(&mnt);
    if mounted {
        force_unmount(&mnt);
    }
    assert!(!mounted, "a bad source was mounted: {src_s}");
    for (what, out) in [("ls", ls), ("mount", mount)] {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{what} accepted {src_s}");
        assert!(
            out.stdout.is_empty() || what == "mount",
            "{what} printed to stdout"
        );
        assert!(!err.contains("panicked"), "{what} panicked: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{what}: not one line: {err}"
        );
        for e in expect {
            assert!(err.contains(e), "{what}: {err:?} does not mention {e:?}");
        }
    }
}

const T: &str = r#""a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}"#;

#[test]
fn truncated_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("t.safetensors");
    std::fs::write(&p, [7u8, 0, 0]).unwrap();
    refused(&p, &["t.safetensors", "too short"]);
}

#[test]
fn header_length_past_end_of_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("t.safetensors");
    let mut b = 1000u64.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    std::fs::write(&p, b).unwrap();
    refused(
        &p,
        &["t.safetensors", "header length 1000 runs past the end"],
    );
}

#[test]
fn header_too_large() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("t.safetensors");
    std::fs::write(&p, 200_000_000u64.to_le_bytes()).unwrap();
    refused(&p, &["t.safetensors", "exceeds"]);
}

#[test]
fn header_not_json() {
    let d = tempfile::tempdir().unwrap();
    refused(
        &st(d.path(), "t.safetensors", "{\"a\": ", &[]),
        &["t.safetensors", "not valid JSON"],
    );
}

#[test]
fn header_not_an_object() {
    let d = tempfile::tempdir().unwrap();
    refused(
        &st(d.path(), "t.safetensors", "[1, 2]", &[]),
        &["t.safetensors", "not a JSON object"],
    );
}

#[test]
fn overlapping_offsets() {
    let d = tempfile::tempdir().unwrap();
    let h = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#;
    refused(
        &st(d.path(), "t.safetensors", h, &[0; 6]),
        &["t.safetensors", "'a' and 'b' overlap"],
    );
}

#[test]
fn offsets_out_of_range() {
    let d = tempfile::tempdir().unwrap();
    refused(
        &st(d.path(), "t.safetensors", &format!("{{{T}}}"), &[0; 2]),
        &["t.safetensors", "'a'", "outside the 2-byte data buffer"],
    );
}

#[test]
fn offsets_not_tiling_the_buffer() {
    let d = tempfile::tempdir().unwrap();
    let h = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#;
    refused(
        &st(d.path(), "gap.safetensors", h, &[0; 6]),
        &["gap.safetensors", "bytes 0..2", "belong to no tensor"],
    );
    refused(
        &st(d.path(), "tail.safetensors", &format!("{{{T}}}"), &[0; 9]),
        &["tail.safetensors", "bytes 4..9"],
    );
}

#[test]
fn unknown_dtype() {
    let d = tempfile::tempdir().unwrap();
    let h = r#"{"a":{"dtype":"Q4_K","shape":[4],"data_offsets":[0,4]}}"#;
    refused(
        &st(d.path(), "t.safetensors", h, &[0; 4]),
        &["t.safetensors", "unknown dtype 'Q4_K'", "'a'"],
    );
}

#[test]
fn shape_and_bytes_disagree() {
    let d = tempfile::tempdir().unwrap();
    let h = r#"{"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,4]}}"#;
    refused(
        &st(d.path(), "t.safetensors", h, &[0; 4]),
        &["t.safetensors", "'a'", "needs 6 bytes", "span 4"],
    );
}

#[test]
fn index_names_a_missing_shard() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("m");
    write_sharded(
        &src,
        &[
            vec![common::T::new("a", "U8", &[4], 1)],
            vec![common::T::new("b", "U8", &[4], 2)],
        ],
    );
    std::fs::remove_file(src.join("model-00002-of-00002.safetensors")).unwrap();
    refused(
        &src,
        &[
            "model-00002-of-00002.safetensors",
            "missing",
            "model.safetensors.index.json",
        ],
    );
}

#[test]
fn index_puts_a_tensor_in_the_wrong_shard() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("m");
    write_sharded(
        &src,
        &[
            vec![common::T::new("a", "U8", &[4], 1)],
            vec![common::T::new("b", "U8", &[4], 2)],
        ],
    );
    let idx = src.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&idx).unwrap();
    std::fs::write(
        &idx,
        text.replace("\"b\": \"model-00002", "\"b\": \"model-00001"),
    )
    .unwrap();
    refused(
        &src,
        &["model.safetensors.index.json", "'b'", "does not hold it"],
    );
}

#[test]
fn tensor_in_two_shards() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("m");
    std::fs::create_dir(&src).unwrap();
    write_safetensors(
        &src.join("a.safetensors"),
        &[common::T::new("w", "U8", &[4], 1)],
    );
    write_safetensors(
        &src.join("b.safetensors"),
        &[common::T::new("w", "U8", &[4], 2)],
    );
    refused(
        &src,
        &[
            "b.safetensors",
            "'w'",
            "appears in both a.safetensors and b.safetensors",
        ],
    );
}

#[test]
fn folder_without_a_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("config.json"), "{}").unwrap();
    refused(d.path(), &["no checkpoint found"]);
}

#[test]
fn missing_source() {
    let d = tempfile::tempdir().unwrap();
    refused(&d.path().join("nope"), &["nope", "source not found"]);
}

#[test]
fn missing_mount_point_suggests_mkdir() {
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("missing").display().to_string();
    let o = gyrofs(&["mount", &sample_hf().display().to_string(), &mnt]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("mount point not found"), "{err}");
    assert!(err.contains(&format!("mkdir -p {mnt}")), "{err}");
}

/// A file that is not safetensors (random bytes, text, a truncated
/// download) is called that, with its first bytes escaped.
#[test]
fn not_a_safetensors_file_shows_its_first_bytes() {
    let d = tempfile::tempdir().unwrap();
    // Random bytes in a model folder: a huge "header length".
    let src = d.path().join("m");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("config.json"), "{}").unwrap();
    std::fs::write(src.join("model.safetensors"), bytes(7, 4096)).unwrap();
    let head = bytes(7, 16).escape_ascii().to_string();
    refused(
        &src,
        &[
            "model.safetensors",
            "not a safetensors file",
            &format!("it begins \"{head}...\""),
        ],
    );
    // An HTML error page saved under the name.
    let p = d.path().join("page.safetensors");
    std::fs::write(&p, "<html>\n<body>Not Found</body></html>\n").unwrap();
    refused(
        &p,
        &[
            "page.safetensors",
            "not a safetensors file",
            "it begins \"<html>\\n<body>Not...\"",
        ],
    );
    // The first bytes of a real file cut short after its header length.
    let p = d.path().join("cut.safetensors");
    std::fs::write(&p, [0x80, 0, 0, 0, 0, 0, 0, 0, b'{', b'"']).unwrap();
    refused(
        &p,
        &[
            "not a safetensors file",
            "header length 128 runs past the end",
            "it begins \"\\x80\\x00\\x00\\x00\\x00\\x00\\x00\\x00{\\\"\"",
        ],
    );
}

/// A Git LFS pointer where a checkpoint file should be (a clone without
/// `git lfs`) says so and what to run, whatever the format.
#[test]
fn git_lfs_pointer_says_run_git_lfs_pull() {
    let pointer = "version https://git-lfs.github.com/spec/v1\n\
                   oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n\
                   size 4967215360\n";
    let d = tempfile::tempdir().unwrap();
    for name in ["model.safetensors", "model.gguf", "pytorch_model.bin"] {
        // Alone, and in a model folder.
        let file = d.path().join(name);
        std::fs::write(&file, pointer).unwrap();
        let want = [
            name,
            "a Git LFS pointer to a 4967215360-byte file",
            "git lfs pull",
        ];
        refused(&file, &want);
        let src = d.path().join(format!("{name}-folder"));
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("config.json"), "{}").unwrap();
        std::fs::write(src.join(name), pointer).unwrap();
        refused(&src, &want);
    }
}

#[test]
fn convert_onto_a_file_says_out_must_be_a_folder() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out.safetensors");
    std::fs::write(&out, "keep me").unwrap();
    let src = sample_hf().display().to_string();
    let o = gyrofs(&["convert", &src, &out.display().to_string(), "--quiet"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("out.safetensors"), "{err}");
    assert!(err.contains("OUTDIR must be a folder"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
}

#[test]
fn invalid_config_json() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("m");
    std::fs::create_dir(&src).unwrap();
    write_safetensors(
        &src.join("model.safetensors"),
        &[common::T::new("w", "U8", &[4], 1)],
    );
    std::fs::write(src.join("config.json"), "{oops").unwrap();
    refused(&src, &["config.json", "not valid JSON"]);
}

#[test]
fn mount_point_problems_are_one_line() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("file");
    std::fs::write(&f, "x").unwrap();
    let src = sample_hf().display().to_string();
    for mnt in [f.clone(), d.path().join("missing")] {
        let o = gyrofs(&["mount", &src, &mnt.display().to_string()]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(&*mnt.display().to_string()), "{err}");
    }
}

#[test]
fn broken_pytorch_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("model.pt");
    std::fs::write(&p, b"PK\x03\x04 a zip archive").unwrap();
    refused(&p, &["model.pt", "zip", "truncated"]);
    // By content, not by extension: a .bin that is not a torch file.
    let q = d.path().join("pytorch_model.bin");
    std::fs::write(&q, b"hello, world").unwrap();
    refused(&q, &["pytorch_model.bin", "not a torch.save checkpoint"]);
}

/// Pickle pieces for the hostile torch files below (pickletools names).
mod pk {
    /// BINUNICODE.
    pub fn str(s: &str) -> Vec<u8> {
        let mut b = vec![b'X'];
        b.extend_from_slice(&(s.len() as u32).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
        b
    }
    /// BINPUT / BINGET of memo slot `k`.
    pub fn put(k: u8) -> Vec<u8> {
        vec![b'q', k]
    }
    pub fn get(k: u8) -> Vec<u8> {
        vec![b'h', k]
    }
    /// A float32 tensor of 4 elements on storage "0" (torch.save's
    /// `_rebuild_tensor_v2` call).
    pub fn tensor() -> Vec<u8> {
        let mut b = b"ctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
        b.extend(b"(");
        b.extend(str("storage"));
        b.extend(b"ctorch\nFloatStorage\n");
        b.extend(str("0"));
        b.extend(str("cpu"));
        b.extend(b"K\x04tQK\x00(K\x04t(K\x01t\x89ccollections\nOrderedDict\n)RtR");
        b
    }
    /// A whole torch.save file holding `body` (protocol 2).
    pub fn file(body: &[u8]) -> Vec<u8> {
        let mut pkl = b"\x80\x02".to_vec();
        pkl.extend_from_slice(body);
        pkl.push(b'.');
        let data: Vec<u8> = [1f32, 2., 3., 4.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        super::torch_zip("hostile", &pkl, &[("0", &data)])
    }
}

/// A pickle that builds a node per byte (a `NONE` flood, 6 MB) is refused
/// for the memory its values would take (16 bytes per byte of pickle plus
/// 64 MiB), not after building 16M values (0.75 GB).
#[test]
fn pickle_memory_is_budgeted_against_its_length() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("flood.pt");
    let mut body = b"(".to_vec();
    body.resize(6_000_000, b'N');
    body.push(b'l');
    std::fs::write(&p, pk::file(&body)).unwrap();
    refused(
        &p,
        &["flood.pt", "hostile/data.pkl", "MiB of memory", "NONE"],
    );
}

/// Names that must be made unique, repeated many times: 100,000 dict keys
/// that are distinct in Python but print the same (each NaN is its own
/// key), and one tensor path reached 28,657 ways (D(k) = {"x": D(k+1),
/// "x.x": D(k+2)}). Each suffix search was quadratic (hours); `ls` now takes
/// well under a few seconds and prints a bounded number of notes.
#[test]
fn repeated_names_cost_linear_time() {
    let d = tempfile::tempdir().unwrap();
    let nan_keys = d.path().join("nan-keys.pt");
    let mut body = b"}(".to_vec();
    body.extend(pk::str("w"));
    body.extend(pk::tensor());
    for _ in 0..100_000 {
        body.push(b'G');
        body.extend_from_slice(&f64::NAN.to_be_bytes());
        body.push(b'N');
    }
    body.push(b'u');
    std::fs::write(&nan_keys, pk::file(&body)).unwrap();

    let paths = d.path().join("paths.pt");
    let n = 21u8;
    let mut body = pk::tensor();
    body.extend(pk::put(n));
    body.extend(pk::get(n));
    body.extend(pk::put(n + 1));
    for k in (0..n).rev() {
        body.extend(b"}(");
        body.extend(pk::str("x"));
        body.extend(pk::get(k + 1));
        body.extend(pk::str("x.x"));
        body.extend(pk::get(k + 2));
        body.push(b'u');
        body.extend(pk::put(k));
    }
    std::fs::write(&paths, pk::file(&body)).unwrap();

    for (src, tensors) in [(&nan_keys, 1usize), (&paths, 28_657)] {
        let s = src.display().to_string();
        let t = std::time::Instant::now();
        let out = gyrofs_within(&["ls", "--json", &s], std::time::Duration::from_secs(60));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{s}: {err}");
        let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            manifest["tensors"].as_array().unwrap().len(),
            tensors,
            "{s}"
        );
        let notes = manifest["notes"].as_array().unwrap();
        assert!(notes.len() <= 300, "{s}: {} notes", notes.len());
        assert!(
            notes
                .iter()
                .any(|n| n.as_str().unwrap().contains("more notes like these")),
            "{s}"
        );
        eprintln!("{s}: ls in {:?}", t.elapsed());
    }
}

/// What a non-root user's `gyrofs mount` of the sample says, run as user
/// `nobody` in a private mount namespace (`unshare`) where each `(from,
/// onto)` is bind-mounted first, with `env` set: what the namespace hides
/// or replaces stays as it is on the host. Bounded by `timeout`.
fn mount_as_nobody_in_namespace(binds: &[(PathBuf, PathBuf)], env: &[(&str, &str)]) -> String {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = d.path().join("gyrofs");
    std::fs::copy(GYROFS, &exe).unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for e in std::fs::read_dir(sample_hf()).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), src.join(e.file_name())).unwrap();
        }
    }
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::os::unix::fs::chown(&mnt, Some(65534), Some(65534)).unwrap();
    let script = r#"set -e
n=$1; shift
while [ "$n" -gt 0 ]; do mount --bind "$1" "$2"; shift 2; n=$((n-1)); done
exec setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@""#;
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["60", "unshare", "--mount", "--propagation", "private", "--"])
        .args(["sh", "-c", script, "sh"])
        .arg(binds.len().to_string());
    for (from, onto) in binds {
        cmd.arg(from).arg(onto);
    }
    cmd.arg("env");
    for (k, v) in env {
        cmd.arg(format!("{k}={v}"));
    }
    cmd.arg(&exe).arg("mount").arg(&src).arg(&mnt);
    let o = cmd.output().expect("run unshare (util-linux)");
    let mounted = is_mounted(&mnt);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!mounted, "mounted: {err}");
    assert!(!o.status.success(), "mount succeeded: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(&*mnt.display().to_string()), "{err}");
    err
}

/// Without fuse3 (no `fusermount3` in PATH nor where fuser also looks), a
/// non-root mount says what is missing and which package has it, not "No
/// such file or directory".
#[test]
fn non_root_mount_without_fusermount3_says_install_fuse3() {
    // Hide every installed fusermount: /dev/null bound over it.
    let mut hide: Vec<PathBuf> = Vec::new();
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"] {
        for name in ["fusermount3", "fusermount"] {
            if let Ok(p) = std::fs::canonicalize(Path::new(dir).join(name))
                && !hide.contains(&p)
            {
                hide.push(p);
            }
        }
    }
    let binds: Vec<(PathBuf, PathBuf)> = hide
        .into_iter()
        .map(|p| (PathBuf::from("/dev/null"), p))
        .collect();
    let err = mount_as_nobody_in_namespace(&binds, &[("PATH", "/nonexistent")]);
    assert!(err.contains("fusermount3 not found"), "{err}");
    assert!(err.contains("install the fuse3 package"), "{err}");
}

/// A `/dev/fuse` the user cannot open says so and how to fix it.
#[test]
fn unusable_dev_fuse_says_how_to_fix_it() {
    let d = tempfile::tempdir().unwrap();
    // A root-only stand-in for the device.
    let dev = d.path().join("fuse");
    std::fs::write(&dev, "").unwrap();
    std::fs::set_permissions(&dev, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let binds = [(dev, PathBuf::from("/dev/fuse"))];
    // A fusermount3 found (it is not run), whether fuse3 is installed or not.
    let err = mount_as_nobody_in_namespace(&binds, &[("FUSERMOUNT_PATH", "/bin/true")]);
    assert!(err.contains("/dev/fuse: Permission denied"), "{err}");
    assert!(err.contains("chmod 666 /dev/fuse"), "{err}");
}

/// A bitsandbytes 4-bit weight whose quant_state tensor (JSON in a uint8
/// tensor, read at mount) is hostile: the source is listed, the converted
/// views are left out with one line naming the tensor, nothing panics.
#[test]
fn hostile_bitsandbytes_quant_state() {
    let nested = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let huge = format!("{{\"x\": \"{}\"}}", "a".repeat(70_000));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("U8", nested.into_bytes(), "does not hold JSON"),
        ("U8", huge.into_bytes(), "not a small uint8 tensor"),
        ("U8", vec![0xFF, 0xFE, 0x00, 0x7B], "does not hold JSON"),
        ("F32", b"{}  ".to_vec(), "not a small uint8 tensor"),
        (
            "U8",
            br#"{"quant_type":"nf4","blocksize":64,"dtype":"bfloat16","shape":[1099511627776,1099511627776]}"#.to_vec(),
            "empty or too large",
        ),
        (
            "U8",
            br#"{"quant_type":"nf4","blocksize":0,"dtype":"bfloat16","shape":[2,2]}"#.to_vec(),
            "blocksize 0 is not one of",
        ),
        (
            "U8",
            br#"{"quant_type":"nf4","blocksize":64,"dtype":"bfloat16","shape":[2,2],"nested_blocksize":256,"nested_dtype":"float32","nested_offset":1e999}"#.to_vec(),
            "does not hold JSON",
        ),
    ];
    for (dtype, state, why) in cases {
        let d = tempfile::tempdir().unwrap();
        let name = "m.weight.quant_state.bitsandbytes__nf4";
        let n = state.len();
        let shape = if dtype == "F32" { n / 4 } else { n };
        let header = format!(
            r#"{{"m.weight":{{"dtype":"U8","shape":[2,1],"data_offsets":[0,2]}},"m.weight.absmax":{{"dtype":"F32","shape":[1],"data_offsets":[2,6]}},"m.weight.quant_map":{{"dtype":"F32","shape":[16],"data_offsets":[6,70]}},"{name}":{{"dtype":"{dtype}","shape":[{shape}],"data_offsets":[70,{}]}}}}"#,
            70 + n
        );
        let mut data = vec![0u8; 70];
        data.extend_from_slice(&state);
        st(d.path(), "model.safetensors", &header, &data);
        std::fs::write(
            d.path().join("config.json"),
            r#"{"model_type":"llama","quantization_config":{"quant_method":"bitsandbytes","load_in_4bit":true}}"#,
        )
        .unwrap();
        let s = d.path().display().to_string();
        let out = gyrofs_within(&["ls", "--json", &s], std::time::Duration::from_secs(60));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{why}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let notes: Vec<&str> = manifest["notes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n.as_str())
            .filter(|n| n.contains("bitsandbytes checkpoint"))
            .collect();
        assert_eq!(notes.len(), 1, "{why}: {notes:?}");
        assert!(
            notes[0].contains(why) && notes[0].contains(name) && !notes[0].contains('\n'),
            "{why} in {notes:?}"
        );
    }
}
