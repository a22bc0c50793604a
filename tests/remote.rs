//! Remote sources through real mounts, against an offline fake of S3, the
//! Hugging Face Hub and plain HTTP range servers (`scripts/fake_remote.py`,
//! Python standard library only). The server counts requests and bytes and
//! injects stalls, failures and a missing range support; the tests assert
//! on bytes and request counts, never on wall time (docs/REMOTE.md).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A running fake server, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    /// `ROOT/<bucket>/...`: S3 objects and plain files.
    root: PathBuf,
    /// `HUB/<org>/<name>/commits/<sha>/...` and `refs/<rev>`.
    hub: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let hub = dir.path().join("hub");
        std::fs::create_dir_all(root.join("bucket")).unwrap();
        std::fs::create_dir_all(&hub).unwrap();
        let port_file = dir.path().join("port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fake_remote.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--root", root.to_str().unwrap()])
            .args(["--hub-root", hub.to_str().unwrap()])
            .args(["--port-file", port_file.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs the fake server");
        let mut s = Server {
            child,
            port: 0,
            root,
            hub,
            _dir: dir,
        };
        wait_until("the fake server", Duration::from_secs(20), || {
            std::fs::read_to_string(&port_file).is_ok_and(|p| p.ends_with('\n'))
        });
        s.port = std::fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        s
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One request to the control API.
    fn call(&self, method: &str, path: &str, body: &str) -> Value {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    fn stats(&self) -> Value {
        self.call("GET", "/__stats", "")
    }

    fn reset(&self) {
        self.call("POST", "/__reset", "");
    }

    fn control(&self, settings: Value) {
        self.call("POST", "/__control", &settings.to_string());
    }

    /// The environment a gyrofs process needs to reach this server.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.url()),
            ("HF_ENDPOINT", self.url()),
            ("HF_TOKEN", String::new()),
            ("HOME", "/nonexistent".into()),
        ]
    }

    /// `gyrofs ARGS --cache-dir CACHE` with this server's environment.
    fn run(&self, args: &[&str], cache: &Path) -> std::process::Output {
        Command::new(GYROFS)
            .args(args)
            .arg("--cache-dir")
            .arg(cache)
            .envs(self.env())
            .output()
            .unwrap()
    }

    /// Publish `src` (a file or folder) as Hub repository `org/name` at
    /// commit `sha`, branch `main`.
    fn publish_hub(&self, repo: &str, sha: &str, src: &Path) {
        let r = self.hub.join(repo);
        copy(src, &r.join("commits").join(sha));
        std::fs::create_dir_all(r.join("refs")).unwrap();
        std::fs::write(r.join("refs/main"), format!("{sha}\n")).unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copy a file or a folder (recursively) to `dst`.
fn copy(src: &Path, dst: &Path) {
    if src.is_dir() {
        std::fs::create_dir_all(dst).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            copy(&e.path(), &dst.join(e.file_name()));
        }
    } else {
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(src, dst).unwrap();
    }
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Mount `url` with a cache in `cache` and these extra arguments.
fn mount_remote(server: &Server, url: &str, cache: &Path, extra: &[&str]) -> Mount {
    let mut args = vec!["--cache-dir", cache.to_str().unwrap()];
    args.extend_from_slice(extra);
    Mount::with_env(Path::new(url), &args, &server.env())
}

/// Every file of both mounts is present in the other with the same bytes.
fn assert_same_tree(local: &Mount, remote: &Mount, what: &str) {
    let (a, b) = (walk(&local.path), walk(&remote.path));
    assert_eq!(a, b, "{what}: trees differ");
    assert!(!a.is_empty());
    for f in &a {
        let x = std::fs::read(local.join(f)).unwrap();
        let y = std::fs::read(remote.join(f)).unwrap_or_else(|e| panic!("{what}: {f}: {e}"));
        assert!(x == y, "{what}: {f} differs");
    }
}

#[test]
fn every_format_and_protocol_matches_a_local_mount() {
    let server = Server::start(&[]);
    let bucket = server.root.join("bucket");
    copy(&data("gpt-oss-tiny"), &bucket.join("gpt-oss-tiny"));
    copy(
        &data("torch-models/hf-gpt2-sharded"),
        &bucket.join("gpt2-bin"),
    );
    copy(&data("torch/nanogpt.pt"), &bucket.join("nanogpt.pt"));
    copy(
        &data("torch/dtypes-legacy.pt"),
        &bucket.join("legacy/dtypes-legacy.pt"),
    );
    copy(
        &data("gguf-models/llama-q4_k.gguf"),
        &bucket.join("gguf/llama-q4_k.gguf"),
    );
    // A file at the server's root, and a URL with a query string (the local
    // twin has the same name: headers record it).
    copy(&data("torch/nanogpt.pt"), &server.root.join("ckpt.pt"));
    let twin = tempfile::tempdir().unwrap();
    copy(&data("torch/nanogpt.pt"), &twin.path().join("ckpt.pt"));
    let split = tempfile::tempdir().unwrap();
    write_split_gguf(split.path());
    copy(split.path(), &bucket.join("split"));
    let sha = "1111111111111111111111111111111111111111";
    server.publish_hub("org/tiny", sha, &data("gpt-oss-tiny"));
    let cache = tempfile::tempdir().unwrap();
    let u = server.url();
    let cases: Vec<(String, PathBuf)> = vec![
        ("s3://bucket/gpt-oss-tiny".into(), data("gpt-oss-tiny")),
        (
            "s3://bucket/gpt-oss-tiny/original".into(),
            data("gpt-oss-tiny/original"),
        ),
        (
            "s3://bucket/gpt2-bin/".into(),
            data("torch-models/hf-gpt2-sharded"),
        ),
        ("s3://bucket/nanogpt.pt".into(), data("torch/nanogpt.pt")),
        (
            format!("{u}/bucket/legacy/dtypes-legacy.pt"),
            data("torch/dtypes-legacy.pt"),
        ),
        (
            format!("{u}/bucket/gguf/llama-q4_k.gguf"),
            data("gguf-models/llama-q4_k.gguf"),
        ),
        (
            format!("{u}/ckpt.pt?download=1"),
            twin.path().join("ckpt.pt"),
        ),
        ("hf://org/tiny".into(), data("gpt-oss-tiny")),
        (
            format!("hf://org/tiny@{sha}/original"),
            data("gpt-oss-tiny/original"),
        ),
        (
            "hf://org/tiny/model-00002-of-00002.safetensors".into(),
            data("gpt-oss-tiny/model-00002-of-00002.safetensors"),
        ),
        ("s3://bucket/split".into(), split.path().to_path_buf()),
        (
            "s3://bucket/split/toy-00002-of-00002.gguf".into(),
            split.path().join("toy-00002-of-00002.gguf"),
        ),
    ];
    for (url, local) in &cases {
        let l = Mount::new(local);
        let r = mount_remote(&server, url, cache.path(), &[]);
        assert_same_tree(&l, &r, url);
    }
    // `ls` and `convert` take the same sources.
    let remote = server.run(&["ls", "s3://bucket/gpt-oss-tiny"], cache.path());
    assert!(
        remote.status.success(),
        "{}",
        String::from_utf8_lossy(&remote.stderr)
    );
    let local = gyrofs(&["ls", data("gpt-oss-tiny").to_str().unwrap()]);
    assert_eq!(remote.stdout, local.stdout);
    let out = tempfile::tempdir().unwrap();
    let dst = out.path().join("bf16");
    let st = server.run(
        &["convert", "hf://org/tiny", dst.to_str().unwrap(), "--quiet"],
        cache.path(),
    );
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let local = convert(&data("gpt-oss-tiny"), "bf16");
    let local = local.path().join("out");
    assert_eq!(walk(out.path().join("bf16").as_path()), walk(&local));
    for f in walk(&local) {
        assert_eq!(
            std::fs::read(out.path().join("bf16").join(&f)).unwrap(),
            std::fs::read(local.join(&f)).unwrap(),
            "convert {f}"
        );
    }
}

/// A GGUF split set of two parts in `dir`.
fn write_split_gguf(dir: &Path) {
    for i in 0..2u16 {
        let t = vec![GT {
            name: format!("blk.{i}.ffn_up.weight"),
            ty: 0,
            dims: vec![64, 4],
            data: bytes(i as u64 + 1, 64 * 4 * 4),
        }];
        let mut kvs = vec![
            ("split.no", Kv::U16(i)),
            ("split.count", Kv::U16(2)),
            ("split.tensors.count", Kv::I32(2)),
        ];
        if i == 0 {
            kvs.insert(0, ("general.architecture", Kv::Str("llama")));
        }
        write_gguf(
            &dir.join(format!("toy-{:05}-of-00002.gguf", i + 1)),
            &kvs,
            &t,
        );
    }
}

/// A gpt-oss-shaped MoE layer (experts the size of gpt-oss-20b's: hidden
/// and intermediate 2880) with the sample's config.
fn gpt_oss_shaped(dir: &Path, experts: usize) -> Vec<T> {
    let (h, i) = (2880usize, 2880usize);
    let p = "model.layers.0.mlp.experts";
    let ts = vec![
        T::new("model.embed_tokens.weight", "BF16", &[32, h], 1),
        T::new(
            &format!("{p}.gate_up_proj_blocks"),
            "U8",
            &[experts, 2 * i, h / 32, 16],
            2,
        ),
        T::new(
            &format!("{p}.gate_up_proj_scales"),
            "U8",
            &[experts, 2 * i, h / 32],
            3,
        ),
        T::new(
            &format!("{p}.gate_up_proj_bias"),
            "BF16",
            &[experts, 2 * i],
            4,
        ),
        T::new(
            &format!("{p}.down_proj_blocks"),
            "U8",
            &[experts, h, i / 32, 16],
            5,
        ),
        T::new(
            &format!("{p}.down_proj_scales"),
            "U8",
            &[experts, h, i / 32],
            6,
        ),
        T::new(&format!("{p}.down_proj_bias"), "BF16", &[experts, h], 7),
    ];
    std::fs::create_dir_all(dir).unwrap();
    write_safetensors(&dir.join("model.safetensors"), &ts);
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(data("gpt-oss-tiny/config.json")).unwrap()).unwrap();
    config["hidden_size"] = json!(h);
    config["intermediate_size"] = json!(i);
    config["num_hidden_layers"] = json!(1);
    config["num_local_experts"] = json!(experts);
    config["layer_types"] = json!(["full_attention"]);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    ts
}

#[test]
fn mount_fetches_headers_and_one_expert_fetches_its_bytes() {
    let server = Server::start(&[]);
    let src = server.root.join("bucket/moe");
    let experts = 4;
    let ts = gpt_oss_shaped(&src, experts);
    // A second file, to count requests per file.
    copy(
        &data("gpt-oss-tiny/generation_config.json"),
        &src.join("generation_config.json"),
    );
    let cache = tempfile::tempdir().unwrap();
    let mnt = mount_remote(&server, "s3://bucket/moe", cache.path(), &[]);
    let st = server.stats();
    let files = 3u64;
    // One listing (after a HEAD that finds no such object), then at most two
    // data requests per file: the first block, and the rest of a header.
    assert!(
        st["requests"].as_u64().unwrap() <= 2 + 2 * files,
        "mount: {st}"
    );
    let header = {
        let f = std::fs::read(src.join("model.safetensors")).unwrap();
        8 + u64::from_le_bytes(f[..8].try_into().unwrap())
    };
    let mount_bytes = st["bytes"].as_u64().unwrap();
    assert!(
        mount_bytes <= header.max(64 << 10) + 2 * (64 << 10),
        "mount fetched {mount_bytes} bytes (header {header})"
    );

    // One expert's file: its slice of every expert tensor, and little more.
    let local = Mount::new(&src);
    let expert = 2usize;
    let share: u64 = ts
        .iter()
        .filter(|t| t.name.contains(".experts."))
        .map(|t| t.data.len() as u64 / experts as u64)
        .sum();
    for view in ["bf16", "raw"] {
        server.reset();
        let f = format!("{view}/experts/layer_00_expert_{expert:03}.safetensors");
        let got = std::fs::read(mnt.join(&f)).unwrap();
        assert!(got == std::fs::read(local.join(&f)).unwrap(), "{f}");
        let st = server.stats();
        let fetched = st["bytes"].as_u64().unwrap();
        // The bf16 file was read first, so raw finds its bytes cached.
        if view == "bf16" {
            assert!(
                fetched as f64 <= 1.1 * share as f64,
                "{f}: fetched {fetched} bytes for an expert of {share}"
            );
            assert!(fetched >= share, "{f}: fetched {fetched} < {share}");
        } else {
            assert_eq!(fetched, 0, "{f}: cached already");
        }
    }
    // A cold raw read of another expert: also its own bytes only.
    server.reset();
    let f = "raw/experts/layer_00_expert_000.safetensors";
    assert!(std::fs::read(mnt.join(f)).unwrap() == std::fs::read(local.join(f)).unwrap());
    let fetched = server.stats()["bytes"].as_u64().unwrap();
    assert!(
        fetched as f64 <= 1.1 * share as f64,
        "{f}: fetched {fetched} bytes for an expert of {share}"
    );
}

#[test]
fn concurrent_readers_of_a_block_make_one_fetch() {
    let server = Server::start(&[]);
    let dir = server.root.join("bucket/one");
    std::fs::create_dir_all(&dir).unwrap();
    let t = T::new("w", "BF16", &[2048, 1024], 9);
    write_safetensors(&dir.join("model.safetensors"), std::slice::from_ref(&t));
    let cache = tempfile::tempdir().unwrap();
    let mnt = mount_remote(&server, "s3://bucket/one", cache.path(), &[]);
    server.control(json!({"latency_ms": 200}));
    server.reset();
    let readers: Vec<_> = (0..4)
        .map(|k| {
            // Different files over the same source bytes.
            let p = mnt.join(["raw/model.safetensors", "raw/tensors/w.safetensors"][k % 2]);
            std::thread::spawn(move || std::fs::read(p).unwrap())
        })
        .collect();
    for r in readers {
        assert!(read_st(&r.join().unwrap())["w"].2 == t.data);
    }
    let fetched = server.stats()["bytes"].as_u64().unwrap();
    let size = t.data.len() as u64;
    assert!(
        fetched <= size + (128 << 10),
        "4 readers fetched {fetched} bytes of a {size}-byte tensor"
    );
}

#[test]
fn warm_remount_of_a_pinned_revision_makes_no_request() {
    let server = Server::start(&[]);
    let sha = "2222222222222222222222222222222222222222";
    server.publish_hub("org/tiny", sha, &data("gpt-oss-tiny"));
    let cache = tempfile::tempdir().unwrap();
    let pinned = format!("hf://org/tiny@{sha}");
    {
        let m = mount_remote(&server, "hf://org/tiny", cache.path(), &[]);
        for f in walk(&m.path) {
            std::fs::read(m.join(&f)).unwrap();
        }
    }
    server.reset();
    {
        let m = mount_remote(&server, &pinned, cache.path(), &[]);
        for f in walk(&m.path) {
            std::fs::read(m.join(&f)).unwrap();
        }
    }
    let st = server.stats();
    assert_eq!(st["requests"], 0, "pinned warm remount: {st}");
    // A branch costs one API call (branch -> commit), and still no data.
    server.reset();
    {
        let m = mount_remote(&server, "hf://org/tiny@main", cache.path(), &[]);
        for f in walk(&m.path) {
            std::fs::read(m.join(&f)).unwrap();
        }
    }
    let st = server.stats();
    assert_eq!(st["requests"], 1, "{st}");
    assert_eq!(st["data_requests"], 0, "{st}");
}

#[test]
fn a_changed_object_reads_as_eio_never_mixed() {
    let server = Server::start(&[]);
    let dir = server.root.join("bucket/m");
    std::fs::create_dir_all(&dir).unwrap();
    let ts = vec![T::new("w", "BF16", &[1024, 1024], 1)];
    write_safetensors(&dir.join("model.safetensors"), &ts);
    let cache = tempfile::tempdir().unwrap();
    let mnt = mount_remote(&server, "s3://bucket/m", cache.path(), &[]);
    // Rewrite the object (same size, other bytes): a new ETag.
    let changed = vec![T::new("w", "BF16", &[1024, 1024], 2)];
    std::thread::sleep(Duration::from_millis(20));
    write_safetensors(&dir.join("model.safetensors"), &changed);
    let err = std::fs::read(mnt.join("raw/model.safetensors")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // And it stays so.
    let err = std::fs::read(mnt.join("raw/tensors/w.safetensors")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let log = std::fs::read_to_string(&mnt.log).unwrap();
    assert!(log.contains("changed since it was mounted"), "{log}");
}

#[test]
fn a_stalled_server_gives_eio_in_time_while_other_files_read() {
    let server = Server::start(&[]);
    let dir = server.root.join("bucket/two");
    std::fs::create_dir_all(&dir).unwrap();
    write_safetensors(
        &dir.join("model-00001-of-00002.safetensors"),
        &[T::new("a", "BF16", &[512, 1024], 1)],
    );
    write_safetensors(
        &dir.join("model-00002-of-00002.safetensors"),
        &[T::new("b", "BF16", &[512, 1024], 2)],
    );
    let cache = tempfile::tempdir().unwrap();
    let mnt = mount_remote(
        &server,
        "s3://bucket/two",
        cache.path(),
        &["--timeout", "1", "--retries", "1"],
    );
    server.control(json!({"stall": ["00001-of"]}));
    let started = Instant::now();
    // Several readers of the stalled shard (each with the kernel's
    // readahead in flight too) ...
    let stalled: Vec<_> = [
        "raw/tensors/a.safetensors",
        "bf16/tensors/a.safetensors",
        "raw/model.safetensors",
        "bf16/model-00001-of-00001.safetensors",
    ]
    .iter()
    .map(|f| {
        let p = mnt.join(f);
        std::thread::spawn(move || std::fs::read(p).map_err(|e| e.raw_os_error()))
    })
    .collect();
    // ... and meanwhile the other shard reads, and gives its bytes.
    std::thread::sleep(Duration::from_millis(200));
    let b = std::fs::read(mnt.join("raw/tensors/b.safetensors")).unwrap();
    assert_eq!(
        read_st(&b)["b"].2,
        T::new("b", "BF16", &[512, 1024], 2).data
    );
    assert!(
        stalled.iter().all(|t| !t.is_finished()),
        "the stalled reads were not stalled"
    );
    for t in stalled {
        assert_eq!(t.join().unwrap().unwrap_err(), Some(libc::EIO));
    }
    // Two attempts of 1 s plus backoff: well under the bound.
    assert!(started.elapsed() < Duration::from_secs(20));
    // The server recovers: the read succeeds again (nothing was cached wrong).
    server.control(json!({"stall": []}));
    let a = std::fs::read(mnt.join("raw/tensors/a.safetensors")).unwrap();
    assert_eq!(
        read_st(&a)["a"].2,
        T::new("a", "BF16", &[512, 1024], 1).data
    );
}

#[test]
fn failures_are_retried_and_a_server_without_ranges_is_refused() {
    let server = Server::start(&[]);
    copy(
        &data("torch/nanogpt.pt"),
        &server.root.join("bucket/nanogpt.pt"),
    );
    let cache = tempfile::tempdir().unwrap();
    let url = format!("{}/bucket/nanogpt.pt", server.url());
    server.control(json!({"fail": {"nanogpt": 2}}));
    {
        let m = mount_remote(&server, &url, cache.path(), &["--retries", "3"]);
        let l = Mount::new(&data("torch/nanogpt.pt"));
        assert_same_tree(&l, &m, "after injected 503s");
    }
    server.control(json!({"no_range": true}));
    let out = server.run(&["ls", &url], tempfile::tempdir().unwrap().path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("range requests"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn private_hub_repository_needs_the_token() {
    let server = Server::start(&["--hub-token", "sekret"]);
    let sha = "3333333333333333333333333333333333333333";
    server.publish_hub("org/private", sha, &data("gpt-oss-tiny/original"));
    let cache = tempfile::tempdir().unwrap();
    let out = server.run(&["ls", "hf://org/private"], cache.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HF_TOKEN"), "{err}");
    let mut env = server.env();
    env.retain(|(k, _)| *k != "HF_TOKEN");
    env.push(("HF_TOKEN", "sekret".into()));
    let m = Mount::with_env(
        Path::new("hf://org/private"),
        &["--cache-dir", cache.path().to_str().unwrap()],
        &env,
    );
    let l = Mount::new(&data("gpt-oss-tiny/original"));
    assert_same_tree(&l, &m, "private repository");
}

#[test]
fn the_cache_stays_within_its_size_and_serves_right_bytes() {
    let server = Server::start(&[]);
    let dir = server.root.join("bucket/big");
    std::fs::create_dir_all(&dir).unwrap();
    let ts: Vec<T> = (0..6)
        .map(|k| T::new(&format!("t{k}"), "BF16", &[4096, 1024], k as u64))
        .collect();
    write_safetensors(&dir.join("model.safetensors"), &ts);
    let cache = tempfile::tempdir().unwrap();
    // 48 MiB of tensors through a 20 MiB cache.
    let mnt = mount_remote(
        &server,
        "s3://bucket/big",
        cache.path(),
        &["--cache-size", "20M"],
    );
    for round in 0..2 {
        for t in &ts {
            let got =
                std::fs::read(mnt.join(&format!("raw/tensors/{}.safetensors", t.name))).unwrap();
            assert!(
                read_st(&got)[&t.name].2 == t.data,
                "round {round}: {}",
                t.name
            );
        }
    }
    let used = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir(cache.path().join("objects"))
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().blocks() * 512)
            .sum::<u64>()
    };
    // Eviction runs in the background: bounded wait for it to catch up.
    wait_until(
        "the cache to shrink under its cap",
        Duration::from_secs(20),
        || used() <= (20 << 20) + (1 << 20),
    );
}

#[test]
fn hostile_remote_files_are_refused_like_local_ones() {
    // Every malicious or broken PyTorch file of the local tests, plus
    // truncated and lying safetensors and GGUF headers, served over HTTP:
    // refused with one line (as the local file is), no crash, and never
    // more fetched than the file holds.
    let server = Server::start(&[]);
    let bad = server.root.join("bucket/bad");
    copy(&data("torch/bad"), &bad);
    let mut st = 1_000_000u64.to_le_bytes().to_vec();
    st.extend_from_slice(b"{\"w\":");
    std::fs::write(bad.join("header-past-end.safetensors"), &st).unwrap();
    let mut gguf = b"GGUF".to_vec();
    gguf.extend_from_slice(&3u32.to_le_bytes());
    gguf.extend_from_slice(&0u64.to_le_bytes());
    gguf.extend_from_slice(&1u64.to_le_bytes());
    gguf.extend_from_slice(&4u64.to_le_bytes());
    gguf.extend_from_slice(b"name");
    gguf.extend_from_slice(&8u32.to_le_bytes());
    gguf.extend_from_slice(&(1u64 << 40).to_le_bytes());
    gguf.resize(300 << 10, b'x');
    std::fs::write(bad.join("string-past-end.gguf"), &gguf).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&bad)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let local = gyrofs(&["ls", bad.join(&name).to_str().unwrap()]);
        server.reset();
        let url = format!("{}/bucket/bad/{name}", server.url());
        let out = server.run(&["ls", &url], cache.path());
        assert_eq!(
            out.status.success(),
            local.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.code().is_some(), "{name}: killed by a signal");
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
        }
        let size = std::fs::metadata(bad.join(&name)).unwrap().len();
        let fetched = server.stats()["bytes"].as_u64().unwrap();
        assert!(fetched <= size, "{name}: fetched {fetched} of {size} bytes");
    }
}

#[test]
fn a_long_gguf_header_takes_two_requests() {
    // 3 MiB of metadata (a large tokenizer's worth) before the tensor infos.
    let server = Server::start(&[]);
    let path = server.root.join("bucket/big-header.gguf");
    let text: &'static str = Box::leak("t".repeat(3 << 20).into_boxed_str());
    let t = vec![GT {
        name: "w".into(),
        ty: 0,
        dims: vec![1024, 1024],
        data: bytes(5, 4 << 20),
    }];
    write_gguf(
        &path,
        &[
            ("general.architecture", Kv::Str("llama")),
            ("tokenizer.blob", Kv::Str(text)),
        ],
        &t,
    );
    let url = format!("{}/bucket/big-header.gguf", server.url());
    let cache = tempfile::tempdir().unwrap();
    let out = server.run(&["ls", &url], cache.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, gyrofs(&["ls", path.to_str().unwrap()]).stdout);
    // Two rounds: the first MiB (with the size and ETag), then one
    // fetch of the rest of the header, in parallel parts.
    let st = server.stats();
    let log = st["log"].as_array().unwrap();
    assert_eq!(log[0]["range"], "bytes=0-1048575", "{st}");
    assert!(
        log[1..]
            .iter()
            .all(|l| l["range"].as_str().unwrap().starts_with("bytes=")
                && l["path"] == log[0]["path"]),
        "{st}"
    );
    let starts: Vec<u64> = log[1..]
        .iter()
        .map(|l| {
            let r = l["range"].as_str().unwrap();
            r["bytes=".len()..r.find('-').unwrap()].parse().unwrap()
        })
        .collect();
    assert!(starts.iter().all(|&s| s >= 1 << 20), "{st}");
    assert!(!log[0]["path"].as_str().unwrap().contains("//"), "{st}");
}

/// `gyrofs ARGS --cache-dir CACHE` with the server's environment, killed
/// if it has not finished within `limit` (no test waits for ever).
fn run_within(
    server: &Server,
    args: &[&str],
    cache: &Path,
    limit: Duration,
) -> std::process::Output {
    let mut child = Command::new(GYROFS)
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .envs(server.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "gyrofs {args:?} still running after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The server's request log.
fn requests(server: &Server) -> Vec<Value> {
    server.stats()["log"].as_array().unwrap().clone()
}

#[test]
fn weak_etags_are_not_sent_in_if_match_and_changes_are_still_seen() {
    // A server (as nginx with gzip) that gives weak ETags and compares
    // If-Match strongly, as RFC 9110 says: an If-Match with a weak ETag
    // never matches.
    let server = Server::start(&[]);
    server.control(json!({"weak_etag": true}));
    let dir = server.root.join("bucket/weak");
    std::fs::create_dir_all(&dir).unwrap();
    let ts = vec![T::new("w", "BF16", &[256, 1024], 1)];
    write_safetensors(&dir.join("model.safetensors"), &ts);
    let url = format!("{}/bucket/weak/model.safetensors", server.url());
    let cache = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    copy(
        &dir.join("model.safetensors"),
        &local.path().join("model.safetensors"),
    );
    {
        let m = mount_remote(&server, &url, cache.path(), &[]);
        let l = Mount::new(&local.path().join("model.safetensors"));
        assert_same_tree(&l, &m, "weak ETag");
    }
    // A change is still seen (the answer's ETag and Last-Modified are
    // compared): EIO, never mixed bytes.
    let m = mount_remote(&server, &url, tempfile::tempdir().unwrap().path(), &[]);
    std::thread::sleep(Duration::from_millis(1100));
    write_safetensors(
        &dir.join("model.safetensors"),
        &[T::new("w", "BF16", &[256, 1024], 2)],
    );
    let err = std::fs::read(m.join("raw/tensors/w.safetensors")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
}

#[test]
fn refused_credentials_fail_at_once_with_a_message_about_them() {
    let server = Server::start(&[]);
    let dir = server.root.join("bucket/m");
    std::fs::create_dir_all(&dir).unwrap();
    write_safetensors(
        &dir.join("model.safetensors"),
        &[T::new("w", "BF16", &[64, 64], 1)],
    );
    let sha = "4444444444444444444444444444444444444444";
    server.publish_hub("org/gated", sha, &data("gpt-oss-tiny/original"));
    let cases = [
        (
            format!("{}/bucket/m/model.safetensors", server.url()),
            401,
            "model.safetensors",
            "signed URL",
        ),
        (
            "s3://bucket/m".to_string(),
            403,
            "model.safetensors",
            "AWS_ACCESS_KEY_ID",
        ),
        ("hf://org/gated".to_string(), 403, "/resolve/", "HF_TOKEN"),
    ];
    for (url, status, path, hint) in cases {
        server.reset();
        server.control(json!({"fail": {path: {"count": 100, "status": status}}}));
        let cache = tempfile::tempdir().unwrap();
        let out = run_within(
            &server,
            &["ls", &url],
            cache.path(),
            Duration::from_secs(60),
        );
        server.control(json!({"fail": null}));
        assert!(!out.status.success(), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.trim().lines().last().unwrap_or("");
        assert!(last.starts_with("gyrofs: "), "{url}: {err}");
        assert!(
            last.contains("credentials") && last.contains(hint),
            "{url}: {err}"
        );
        assert!(!err.contains("retrying"), "{url}: {err}");
        // Refused once per file, never retried.
        let denied: Vec<String> = requests(&server)
            .iter()
            .filter(|r| r["status"] == status)
            .map(|r| format!("{} {}", r["path"], r["range"]))
            .collect();
        let mut distinct = denied.clone();
        distinct.sort();
        distinct.dedup();
        assert!(!denied.is_empty(), "{url}");
        assert_eq!(denied.len(), distinct.len(), "{url}: retried: {denied:?}");
    }
}

#[test]
fn a_hub_cdn_link_that_went_away_is_resolved_again() {
    let server = Server::start(&[]);
    let sha = "5555555555555555555555555555555555555555";
    server.publish_hub("org/cdn", sha, &data("gpt-oss-tiny/original"));
    let l = Mount::new(&data("gpt-oss-tiny/original"));
    for status in [404, 410] {
        let cache = tempfile::tempdir().unwrap();
        let m = mount_remote(&server, "hf://org/cdn", cache.path(), &[]);
        // Every file's CDN link is known by now; the next one answers 404
        // or 410 (an expired or moved link), then the resolve URL gives a
        // new one.
        server.reset();
        server.control(json!({"fail": {"/cdn/": {"count": 1, "status": status}}}));
        assert_same_tree(&l, &m, &format!("after a CDN link answered {status}"));
        let log = requests(&server);
        assert_eq!(
            log.iter().filter(|r| r["status"] == status).count(),
            1,
            "{log:?}"
        );
    }
}

#[test]
fn retry_after_is_honoured_and_a_long_one_is_not_waited_for() {
    let server = Server::start(&[]);
    copy(
        &data("torch/nanogpt.pt"),
        &server.root.join("bucket/nanogpt.pt"),
    );
    let url = format!("{}/bucket/nanogpt.pt", server.url());
    server.control(json!({"fail": {"nanogpt": {"count": 1, "status": 503, "retry_after": "2"}}}));
    let out = run_within(
        &server,
        &["ls", &url],
        tempfile::tempdir().unwrap().path(),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = requests(&server);
    let (t0, t1) = (log[0]["t"].as_f64().unwrap(), log[1]["t"].as_f64().unwrap());
    assert_eq!(log[0]["status"], 503);
    assert!(t1 - t0 >= 1.9, "retried after {:.2} s: {log:?}", t1 - t0);
    // A wait longer than --timeout: given up at once, with the reason.
    server.reset();
    server.control(json!({"fail": {"nanogpt": {"count": 9, "status": 429, "retry_after": "120"}}}));
    let out = run_within(
        &server,
        &["ls", &url, "--timeout", "5"],
        tempfile::tempdir().unwrap().path(),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retry after 120 s"), "{err}");
    assert_eq!(server.stats()["requests"], 1, "{err}");
}

#[test]
fn signed_url_credentials_stay_out_of_logs_errors_and_the_cache() {
    let server = Server::start(&[]);
    let dir = server.root.join("bucket/signed");
    std::fs::create_dir_all(&dir).unwrap();
    write_safetensors(
        &dir.join("m.safetensors"),
        &[T::new("w", "BF16", &[512, 1024], 1)],
    );
    let u = server.url();
    let cache = tempfile::tempdir().unwrap();
    // A retried failure at mount (a warning with the URL) ...
    let signed =
        format!("{u}/bucket/signed/m.safetensors?X-Amz-Signature=sekret&X-Amz-Credential=AKIA");
    server.control(json!({"fail": {"m.safetensors": 1}}));
    let out = run_within(
        &server,
        &["ls", &signed],
        cache.path(),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retrying"), "{err}");
    // ... a refusal ...
    let missing = format!("{u}/bucket/signed/gone.safetensors?X-Amz-Signature=sekret");
    let out = run_within(
        &server,
        &["ls", &missing],
        cache.path(),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    let err2 = String::from_utf8_lossy(&out.stderr);
    assert!(err2.contains("gone.safetensors?..."), "{err2}");
    // ... and a change after mounting, in the mount's log.
    let m = mount_remote(&server, &signed, cache.path(), &[]);
    std::thread::sleep(Duration::from_millis(20));
    write_safetensors(
        &dir.join("m.safetensors"),
        &[T::new("w", "BF16", &[512, 1024], 2)],
    );
    assert!(std::fs::read(m.join("raw/tensors/w.safetensors")).is_err());
    let log = std::fs::read_to_string(&m.log).unwrap();
    assert!(log.contains("changed since it was mounted"), "{log}");
    // /proc/mounts (readable by every user) names the source without it.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.contains(m.path.to_str().unwrap()))
        .unwrap()
        .to_string();
    assert!(line.contains("m.safetensors?..."), "{line}");
    drop(m);
    for text in [err.as_ref(), err2.as_ref(), log.as_str(), line.as_str()] {
        assert!(!text.contains("sekret") && !text.contains("AKIA"), "{text}");
    }
    // Nor the cache's file names and index headers.
    let mut stack = vec![cache.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.contains("sekret"), "{name}");
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if name.ends_with(".idx") {
                let b = std::fs::read(e.path()).unwrap();
                assert!(!b.windows(6).any(|w| w == b"sekret"), "{name}");
            }
        }
    }
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs (the tests run as root)");
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        force_unmount(self.dir.path());
    }
}

#[test]
fn a_full_cache_disk_is_an_error_that_says_so_not_a_retry() {
    let server = Server::start(&[]);
    let dir = server.root.join("bucket/full");
    std::fs::create_dir_all(&dir).unwrap();
    write_safetensors(
        &dir.join("model.safetensors"),
        &[T::new("w", "BF16", &[1536, 1024], 1)],
    );
    let url = format!("{}/bucket/full/model.safetensors", server.url());
    let disk = SmallDisk::new("1m");
    let out = tempfile::tempdir().unwrap();
    let got = run_within(
        &server,
        &[
            "convert",
            &url,
            out.path().join("raw").to_str().unwrap(),
            "--view",
            "raw",
            "--quiet",
            "--cache-size",
            "64M",
        ],
        disk.path(),
        Duration::from_secs(120),
    );
    assert!(!got.status.success());
    let err = String::from_utf8_lossy(&got.stderr);
    // Warned at mount: the cache may grow past the disk's free space.
    assert!(
        err.lines()
            .any(|l| l.contains("warning") && l.contains("--cache-size 64.0M")),
        "{err}"
    );
    // And the failure says the disk is full.
    assert!(err.contains("cache disk is full"), "{err}");
    // Not retried: no range asked twice.
    let mut ranges: Vec<String> = requests(&server)
        .iter()
        .map(|r| r["range"].to_string())
        .collect();
    let n = ranges.len();
    ranges.sort();
    ranges.dedup();
    assert_eq!(ranges.len(), n, "a range was fetched again: {ranges:?}");
}

/// A legacy (pre-zip) torch.save file by hand: `{name: int16 tensor}`, one
/// storage per tensor (key, element count), then the storages (count as 8
/// bytes little-endian, then the elements), as torch's `_legacy_save`
/// writes them.
fn legacy_pt(tensors: &[(&str, &str, u32)]) -> Vec<u8> {
    fn s(x: &str) -> Vec<u8> {
        let mut v = vec![b'X'];
        v.extend_from_slice(&(x.len() as u32).to_le_bytes());
        v.extend_from_slice(x.as_bytes());
        v
    }
    let mut f = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.".to_vec();
    f.extend(b"\x80\x02M\xe9\x03.");
    f.extend(b"\x80\x02}(");
    f.extend(s("little_endian"));
    f.extend(b"\x88u.");
    f.extend(b"\x80\x02}(");
    for (name, key, numel) in tensors {
        f.extend(s(name));
        f.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        f.extend(s("storage"));
        f.extend(b"ctorch\nShortStorage\n");
        f.extend(s(key));
        f.extend(s("cpu"));
        f.push(b'J');
        f.extend(numel.to_le_bytes());
        f.extend(b"NtQK\x00J");
        f.extend(numel.to_le_bytes());
        f.extend(b"\x85K\x01\x85\x89ccollections\nOrderedDict\n)Rt");
        f.extend(b"R");
    }
    f.extend(b"u.");
    f.extend(b"\x80\x02](");
    for (_, key, _) in tensors {
        f.extend(s(key));
    }
    f.extend(b"e.");
    for (k, (_, _, numel)) in tensors.iter().enumerate() {
        f.extend(u64::from(*numel).to_le_bytes());
        f.extend(bytes(k as u64, 2 * *numel as usize));
    }
    f
}

#[test]
fn a_remote_legacy_torch_file_is_read_at_its_pickles_and_counts_only() {
    // 2 MiB of storages behind a few hundred bytes of pickles.
    let server = Server::start(&[]);
    let path = server.root.join("bucket/legacy.pt");
    std::fs::write(
        &path,
        legacy_pt(&[("a", "0", 1 << 19), ("b", "1", 1 << 19), ("c", "2", 8)]),
    )
    .unwrap();
    let url = format!("{}/bucket/legacy.pt", server.url());
    let out = server.run(&["ls", &url], tempfile::tempdir().unwrap().path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local = gyrofs(&["ls", path.to_str().unwrap()]);
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );
    assert_eq!(out.stdout, local.stdout);
    // The first block (the pickles and the first count) and one block for
    // each later count; never the storages.
    let st = server.stats();
    let fetched = st["bytes"].as_u64().unwrap();
    assert!(fetched <= 3 * (64 << 10), "fetched {fetched} bytes: {st}");
    // And the bytes are right.
    let cache = tempfile::tempdir().unwrap();
    let m = mount_remote(&server, &url, cache.path(), &[]);
    let l = Mount::new(&path);
    assert_same_tree(&l, &m, "legacy torch file");
    // Pickles longer than the first prefix (about 500 KiB of them): it
    // doubles until they parse, and stops short of most of the storage.
    let names: Vec<(String, String)> = (0..2000)
        .map(|i| (format!("layer.{i}.some_long_parameter_name"), i.to_string()))
        .collect();
    let mut ts: Vec<(&str, &str, u32)> = names
        .iter()
        .map(|(n, k)| (n.as_str(), k.as_str(), 4))
        .collect();
    ts.push(("big", "big", 1 << 20));
    let path = server.root.join("bucket/legacy-long.pt");
    std::fs::write(&path, legacy_pt(&ts)).unwrap();
    server.reset();
    let url = format!("{}/bucket/legacy-long.pt", server.url());
    let out = server.run(&["ls", &url], tempfile::tempdir().unwrap().path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, gyrofs(&["ls", path.to_str().unwrap()]).stdout);
    let fetched = server.stats()["bytes"].as_u64().unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    let pickles = size - (2 << 20) - 8;
    assert!(
        fetched <= 2 * pickles + (64 << 10),
        "fetched {fetched} of {size} bytes ({pickles} of pickles)"
    );
}

/// A bitsandbytes checkpoint over S3: the mount fetches the header and the
/// small quant_state tensors (in one round), never the packed weights, and
/// bf16/ equals a local mount's.
#[test]
fn a_bitsandbytes_checkpoint_fetches_its_quant_states_not_its_weights() {
    let server = Server::start(&[]);
    let src = server.root.join("bucket/bnb");
    std::fs::create_dir_all(&src).unwrap();
    let (rows, cols) = (512usize, 1024usize);
    let n = rows * cols;
    let mut ts = Vec::new();
    for i in 0..6 {
        let w = format!("model.layers.{i}.mlp.up_proj.weight");
        let state = format!(
            r#"{{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [{rows}, {cols}]}}"#
        );
        ts.push(T::new(&w, "U8", &[n / 2, 1], i));
        let absmax: Vec<u8> = (0..n / 64)
            .flat_map(|b| (0.01f32 + b as f32 * 1e-5).to_le_bytes())
            .collect();
        ts.push(T {
            name: format!("{w}.absmax"),
            dtype: "F32",
            shape: vec![n / 64],
            data: absmax,
        });
        ts.push(T {
            name: format!("{w}.quant_map"),
            dtype: "F32",
            shape: vec![16],
            data: vec![0; 64],
        });
        ts.push(T {
            name: format!("{w}.quant_state.bitsandbytes__nf4"),
            dtype: "U8",
            shape: vec![state.len()],
            data: state.into_bytes(),
        });
    }
    write_safetensors(&src.join("model.safetensors"), &ts);
    std::fs::write(
        src.join("config.json"),
        r#"{"model_type":"llama","quantization_config":{"quant_method":"bitsandbytes","load_in_4bit":true}}"#,
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mnt = mount_remote(&server, "s3://bucket/bnb", cache.path(), &[]);
    let fetched = server.stats()["bytes"].as_u64().unwrap();
    let weights = 6 * n as u64 / 2;
    assert!(
        fetched < weights / 2,
        "mount fetched {fetched} bytes of a checkpoint with {weights} bytes of packed weights"
    );
    let local = Mount::new(&src);
    let f = "bf16/tensors/model.layers.3.mlp.up_proj.weight.safetensors";
    assert!(mnt.join("bf16/model.safetensors.index.json").exists());
    assert!(std::fs::read(mnt.join(f)).unwrap() == std::fs::read(local.join(f)).unwrap());
}
