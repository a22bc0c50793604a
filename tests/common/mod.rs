//! Shared test harness: real mounts with guaranteed unmount, checkpoint
//! writers, comparisons through an independent safetensors reader, and the
//! proptest configuration of the property tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const GYROFS: &str = env!("CARGO_BIN_EXE_gyrofs");

/// The bundled sample, Hugging Face layout.
pub fn sample_hf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gpt-oss-tiny")
}

/// The bundled sample, gpt-oss original layout.
pub fn sample_original() -> PathBuf {
    sample_hf().join("original")
}

pub fn gyrofs(args: &[&str]) -> Output {
    Command::new(GYROFS)
        .args(args)
        .output()
        .expect("run gyrofs")
}

/// `gyrofs ARGS`, killed (and the test failed) if it has not ended within
/// `timeout`.
pub fn gyrofs_within(args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(GYROFS)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run gyrofs");
    // Drain the pipes while waiting, so a long output cannot block the child.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut b).ok();
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut b).ok();
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for gyrofs") {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("gyrofs {args:?} did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// A torch.save-shaped zip (`NAME/data.pkl`, `NAME/byteorder`, `NAME/data/KEY`
/// per storage, `NAME/version`; stored, no CRCs, which torch does not check
/// either).
pub fn torch_zip(name: &str, data_pkl: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let mut entries: Vec<(String, &[u8])> = vec![
        (format!("{name}/data.pkl"), data_pkl),
        (format!("{name}/byteorder"), b"little"),
    ];
    for (k, v) in storages {
        entries.push((format!("{name}/data/{k}"), v));
    }
    entries.push((format!("{name}/version"), b"3\n"));
    let (mut out, mut central) = (Vec::new(), Vec::new());
    let u16le = |v: usize| (v as u16).to_le_bytes();
    let u32le = |v: usize| (v as u32).to_le_bytes();
    for (n, data) in &entries {
        let at = out.len();
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0]); // version, flags, method
        out.extend_from_slice(&[0; 8]); // time, date, crc
        out.extend_from_slice(&u32le(data.len()));
        out.extend_from_slice(&u32le(data.len()));
        out.extend_from_slice(&u16le(n.len()));
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&[0; 8]);
        central.extend_from_slice(&u32le(data.len()));
        central.extend_from_slice(&u32le(data.len()));
        central.extend_from_slice(&u16le(n.len()));
        central.extend_from_slice(&[0; 12]); // extra, comment, disk, attrs
        central.extend_from_slice(&u32le(at));
        central.extend_from_slice(n.as_bytes());
    }
    let cd = out.len();
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&u16le(entries.len()));
    out.extend_from_slice(&u16le(entries.len()));
    out.extend_from_slice(&u32le(central.len()));
    out.extend_from_slice(&u32le(cd));
    out.extend_from_slice(&[0, 0]);
    out
}

/// Is `path` a mount point right now?
pub fn is_mounted(path: &Path) -> bool {
    let want = path.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

/// Wait (bounded) until `cond` holds.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Detach the mount at `path` (lazy: never blocks on open files).
pub fn force_unmount(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// A live `gyrofs mount` of a source, unmounted when dropped (on every path,
/// including a failing assertion).
pub struct Mount {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub log: PathBuf,
}

impl Mount {
    pub fn new(source: &Path) -> Mount {
        Self::with_args(source, &[])
    }

    pub fn with_args(source: &Path, extra: &[&str]) -> Mount {
        Self::run(None, source, extra, &[])
    }

    /// With extra arguments and environment variables for `gyrofs`.
    pub fn with_env(source: &Path, extra: &[&str], env: &[(&str, String)]) -> Mount {
        Self::run(None, source, extra, env)
    }

    /// Mounted by a `gyrofs` started in `cwd` (`source` may be relative to it).
    pub fn from_dir(cwd: &Path, source: &Path) -> Mount {
        Self::run(Some(cwd), source, &[], &[])
    }

    fn run(cwd: Option<&Path>, source: &Path, extra: &[&str], env: &[(&str, String)]) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        let log = dir.path().join("gyrofs.log");
        std::fs::create_dir(&path).unwrap();
        let mut args = vec![
            "mount".to_string(),
            source.display().to_string(),
            path.display().to_string(),
            "--log-file".into(),
            log.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(GYROFS);
        cmd.args(&args);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let out = cmd.output().expect("run gyrofs");
        let m = Mount { dir, path, log };
        assert!(
            out.status.success(),
            "gyrofs mount failed: {}\nlog: {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&m.log).unwrap_or_default()
        );
        assert!(
            is_mounted(&m.path),
            "mount returned before the mount exists"
        );
        m
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        force_unmount(&self.path);
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_mounted(&self.path) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Every regular file under `root`, as paths relative to it, sorted.
pub fn walk(root: &Path) -> Vec<String> {
    fn go(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                go(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    go(root, root, &mut out);
    out.sort();
    out
}

/// A tensor to write: name, safetensors dtype, shape, bytes.
#[derive(Clone, Debug)]
pub struct T {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

pub fn elem_bits(dtype: &str) -> usize {
    match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        _ => 64,
    }
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no rng crate.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

impl T {
    pub fn new(name: &str, dtype: &'static str, shape: &[usize], seed: u64) -> T {
        let n: usize = shape.iter().product();
        T {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            data: bytes(seed, n * elem_bits(dtype) / 8),
        }
    }
}

/// Write a safetensors file the way the reference writer does (alignment
/// descending, then name; `{"format":"pt"}`; padded with spaces).
pub fn write_safetensors(path: &Path, tensors: &[T]) {
    let mut ts: Vec<&T> = tensors.iter().collect();
    ts.sort_by_key(|t| (std::cmp::Reverse(elem_bits(t.dtype).max(8)), t.name.clone()));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut off = 0;
    for t in &ts {
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [off, off + t.data.len()]}),
        );
        off += t.data.len();
    }
    let mut text = serde_json::to_string(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    for t in ts {
        out.extend_from_slice(&t.data);
    }
    std::fs::write(path, out).unwrap();
}

/// Write a sharded checkpoint with `model.safetensors.index.json`.
pub fn write_sharded(dir: &Path, shards: &[Vec<T>]) {
    std::fs::create_dir_all(dir).unwrap();
    let n = shards.len();
    let mut map = serde_json::Map::new();
    let mut total = 0;
    for (i, shard) in shards.iter().enumerate() {
        let name = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
        write_safetensors(&dir.join(&name), shard);
        for t in shard {
            map.insert(t.name.clone(), name.clone().into());
            total += t.data.len();
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
}

/// Every tensor of a safetensors file, read with the reference crate:
/// name -> (dtype, shape, bytes).
pub fn read_st(bytes: &[u8]) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let st = safetensors::SafeTensors::deserialize(bytes).expect("valid safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            (
                name,
                (
                    format!("{:?}", v.dtype()),
                    v.shape().to_vec(),
                    v.data().to_vec(),
                ),
            )
        })
        .collect()
}

/// `__metadata__` of a safetensors file, via the reference crate.
pub fn read_st_metadata(bytes: &[u8]) -> BTreeMap<String, String> {
    let (_, md) = safetensors::SafeTensors::read_metadata(bytes).expect("valid safetensors");
    md.metadata()
        .clone()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default()
}

/// Every tensor of a source checkpoint folder or file (all its .safetensors).
pub fn source_tensors(src: &Path) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let files: Vec<PathBuf> = if src.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(src)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        v.sort();
        v
    } else {
        vec![src.to_path_buf()]
    };
    let mut all = BTreeMap::new();
    for f in files {
        all.extend(read_st(&std::fs::read(f).unwrap()));
    }
    all
}

/// Run `gyrofs convert SRC OUT --view VIEW` and return OUT's temp dir.
pub fn convert(src: &Path, view: &str) -> tempfile::TempDir {
    convert_with(src, view, &[])
}

/// [`convert`] with more options.
pub fn convert_with(src: &Path, view: &str, options: &[&str]) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("out");
    let (src, target) = (src.display().to_string(), target.display().to_string());
    let mut args = vec!["convert", &src, &target, "--view", view, "--quiet"];
    args.extend_from_slice(options);
    let o = gyrofs(&args);
    assert!(
        o.status.success(),
        "convert failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// A GGUF key/value for [`write_gguf`].
pub enum Kv {
    U16(u16),
    I32(i32),
    U32(u32),
    Str(&'static str),
}

/// A GGUF tensor for [`write_gguf`]: name, ggml type id, ggml dims (fastest
/// first), raw bytes.
pub struct GT {
    pub name: String,
    pub ty: u32,
    pub dims: Vec<u64>,
    pub data: Vec<u8>,
}

/// Write a little-endian GGUF v3 file (alignment 32), the way llama.cpp does.
pub fn write_gguf(path: &Path, kvs: &[(&str, Kv)], tensors: &[GT]) {
    let mut b = Vec::new();
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend_from_slice(&(x.len() as u64).to_le_bytes());
        b.extend_from_slice(x.as_bytes());
    };
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    b.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        s(&mut b, k);
        match v {
            Kv::U16(x) => {
                b.extend_from_slice(&2u32.to_le_bytes());
                b.extend_from_slice(&x.to_le_bytes());
            }
            Kv::U32(x) => {
                b.extend_from_slice(&4u32.to_le_bytes());
                b.extend_from_slice(&x.to_le_bytes());
            }
            Kv::I32(x) => {
                b.extend_from_slice(&5u32.to_le_bytes());
                b.extend_from_slice(&x.to_le_bytes());
            }
            Kv::Str(x) => {
                b.extend_from_slice(&8u32.to_le_bytes());
                s(&mut b, x);
            }
        }
    }
    let mut off = 0u64;
    let mut offsets = Vec::new();
    for t in tensors {
        offsets.push(off);
        off += (t.data.len() as u64).div_ceil(32) * 32;
    }
    for (t, o) in tensors.iter().zip(&offsets) {
        s(&mut b, &t.name);
        b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&t.ty.to_le_bytes());
        b.extend_from_slice(&o.to_le_bytes());
    }
    while b.len() % 32 != 0 {
        b.push(0);
    }
    for t in tensors {
        b.extend_from_slice(&t.data);
        while b.len() % 32 != 0 {
            b.push(0);
        }
    }
    std::fs::write(path, b).unwrap();
}

/// The proptest configuration of a property: `default` cases, or
/// `PROPTEST_CASES` when set (to run more: `PROPTEST_CASES=5000 cargo test
/// --test robustness`); failing cases are shrunk and their seeds kept in
/// `regressions` (a path from the repository root, committed), which every
/// run replays first.
pub fn proptest_config(default: u32, regressions: &'static str) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    proptest::test_runner::Config {
        cases,
        max_shrink_iters: 4096,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(regressions),
        )),
        ..proptest::test_runner::Config::default()
    }
}

/// `gemma3-f16.gguf` with `extra` appended to `tokenizer.ggml.tokens` (the
/// rest of the file rewritten around the longer metadata).
pub fn gemma3_with_tokens(extra: &[String]) -> Vec<u8> {
    let gguf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf-models/gemma3-f16.gguf");
    let b = std::fs::read(gguf).unwrap();
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    // The bytes a value of type `ty` at `at` takes.
    fn skip(b: &[u8], ty: u32, at: usize) -> usize {
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => 8 + u64_at(at) as usize,
            9 => {
                let (elem, n) = (u32_at(at), u64_at(at + 4) as usize);
                let mut len = 12;
                for _ in 0..n {
                    len += skip(b, elem, at + len);
                }
                len
            }
            _ => panic!("type {ty}"),
        }
    }
    let (n_tensors, n_kv) = (u64_at(8) as usize, u64_at(16) as usize);
    let mut out = b[..24].to_vec();
    let mut at = 24;
    for _ in 0..n_kv {
        let key_len = u64_at(at) as usize;
        let key = std::str::from_utf8(&b[at + 8..at + 8 + key_len]).unwrap();
        let ty = u32_at(at + 8 + key_len);
        let value = at + 12 + key_len;
        let end = value + skip(&b, ty, value);
        out.extend_from_slice(&b[at..end]);
        if key == "tokenizer.ggml.tokens" {
            // Patch the count, append the strings.
            let count_at = out.len() - (end - value) + 4;
            let n = u64_at(value + 4) + extra.len() as u64;
            out[count_at..count_at + 8].copy_from_slice(&n.to_le_bytes());
            for t in extra {
                out.extend_from_slice(&(t.len() as u64).to_le_bytes());
                out.extend_from_slice(t.as_bytes());
            }
        }
        at = end;
    }
    let infos = at;
    for _ in 0..n_tensors {
        let name_len = u64_at(at) as usize;
        let dims = u32_at(at + 8 + name_len) as usize;
        at += 8 + name_len + 4 + 8 * dims + 4 + 8;
    }
    out.extend_from_slice(&b[infos..at]);
    let data = at.div_ceil(32) * 32;
    out.resize(out.len().div_ceil(32) * 32, 0);
    out.extend_from_slice(&b[data..]);
    out
}
