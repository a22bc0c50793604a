//! Fuzz target: whole sources through `Volume`, past the headers. The input
//! becomes files on disk, the source is opened as a mount would open it, and
//! every virtual file is read whole and again in odd chunkings: this runs the
//! views (raw, bf16, experts, manifest) and the kernels (MXFP4, FP8, ggml,
//! casts) on hostile headers and side files. Opening may fail; nothing may
//! panic, and every read must succeed with the same bytes in any chunking.
//!
//! Input: parts separated by [`SEP`] (scripts/make_fuzz_corpus.py writes the
//! seeds). One part: a single file, `model.gguf` if it starts with `GGUF`,
//! else `model.safetensors`, opened by its path. Several parts: a folder of
//! `config.json`, `dtypes.json`, `model.safetensors.index.json` (each absent
//! when its part is empty), then the tensor files: `model.safetensors` alone,
//! or `model-0000i-of-0000n.safetensors` (`.gguf` for GGUF parts, a split set).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gyrofs::volume::{DirSink, Kind, Volume};
use libfuzzer_sys::fuzz_target;

/// Separates the parts of an input.
const SEP: &[u8] = b"\n%%gyrofs-fuzz-part%%\n";

/// Read sizes cycled through when reading a file in chunks.
const CHUNKS: [usize; 6] = [1, 7, 61, 509, 4093, 65521];

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(SEP.len()).position(|w| w == SEP) {
        parts.push(&rest[..at]);
        rest = &rest[at + SEP.len()..];
    }
    parts.push(rest);
    parts
}

fn is_gguf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"GGUF")
}

/// Write the input's files under `dir`; returns the path to open.
fn lay_out(dir: &Path, parts: &[&[u8]]) -> std::path::PathBuf {
    if let [one] = parts {
        let name = if is_gguf(one) {
            "model.gguf"
        } else {
            "model.safetensors"
        };
        let p = dir.join(name);
        std::fs::write(&p, one).unwrap();
        return p;
    }
    let side = ["config.json", "dtypes.json", "model.safetensors.index.json"];
    for (name, bytes) in side.iter().zip(parts) {
        if !bytes.is_empty() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let tensors = parts.get(side.len()..).unwrap_or_default();
    let n = tensors.len();
    for (i, bytes) in tensors.iter().enumerate() {
        let ext = if is_gguf(bytes) {
            "gguf"
        } else {
            "safetensors"
        };
        let name = if n == 1 {
            format!("model.{ext}")
        } else {
            format!("model-{:05}-of-{n:05}.{ext}", i + 1)
        };
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    dir.to_path_buf()
}

/// Counts entries; never full.
struct Count(usize);

impl DirSink for Count {
    fn add(&mut self, _ino: u64, _next: u64, _kind: Kind, _name: &str) -> bool {
        self.0 += 1;
        false
    }
}

fn exercise(v: &Volume) {
    for id in 0..v.tree.len() {
        let ino = id as u64 + 1;
        let attr = v.getattr(ino).expect("getattr of a node");
        if attr.kind == Kind::Dir {
            let mut c = Count(0);
            v.readdir(ino, 0, &mut c).expect("readdir of a directory");
            let children = v.children(id).map_or(0, |c| c.count());
            assert_eq!(c.0, 2 + children);
            continue;
        }
        let whole = v
            .read(id, 0, attr.size as usize + 1)
            .expect("read whole")
            .to_vec();
        assert_eq!(whole.len() as u64, attr.size, "{}", v.path(id));
        let mut at = 0usize;
        let mut k = id;
        while at < whole.len() {
            let n = CHUNKS[k % CHUNKS.len()];
            k += 1;
            let part = v.read(id, at as u64, n).expect("read chunk");
            let end = (at + n).min(whole.len());
            assert!(
                part[..] == whole[at..end],
                "{} at {at}+{n}",
                v.path(id)
            );
            at = end;
        }
        assert!(v.read(id, attr.size, 10).expect("read at EOF").is_empty());
        assert!(
            v.read(id, u64::MAX, usize::MAX)
                .expect("read far past EOF")
                .is_empty()
        );
    }
}

/// Where inputs are written: memory (/dev/shm) when there is one.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        match shm.is_dir() {
            true => shm.to_path_buf(),
            false => std::env::temp_dir(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let parts = split(data);
    if parts.len() > 12 {
        return;
    }
    // Removed after each input (left behind only by a crash).
    let dir = tempfile::Builder::new()
        .prefix("gyrofs-fuzz-")
        .tempdir_in(scratch())
        .unwrap();
    let source = lay_out(dir.path(), &parts);
    if let Ok(v) = Volume::open(&source) {
        exercise(&v);
    }
});
