//! Reference-model property test of the filesystem, without FUSE, in the
//! spirit of mountpoint-s3's reftests: proptest generates a random source (1
//! to 3 safetensors shards of random names, dtypes, shapes, bytes and
//! `__metadata__`, an optional shard index, side files, an optional
//! `dtypes.json`) and a random sequence of operations on [`Volume`] (lookup
//! of existing, missing and non-UTF-8 names, getattr of real and bogus
//! inodes, readdir with random page sizes and resume offsets, open and
//! access with random flags, reads at random offsets and lengths including
//! past the end), and compares every result with a model built from the
//! source bytes alone.
//!
//! The model ([`Model`]) knows, independently of gyrofs's code, what
//! docs/FORMAT.md specifies: the whole of `raw/` (the pack
//! `raw/model.safetensors` and every `raw/tensors/<name>.safetensors`,
//! byte for byte: Gyro header, records, file-name escaping, pack order;
//! side files passed through) and the tensors listed in `manifest.json`.
//! For the rest (`bf16/`, the manifest's other bytes) it checks invariants:
//! sizes from getattr equal the bytes readable, every range reads the same
//! bytes as the whole, readdir pages concatenate to the full sorted listing,
//! link counts match subdirectories, and each failure has the errno the
//! volume's contract gives (ENOENT, EISDIR, ENOTDIR, EROFS). Raw payloads
//! are also read back with the reference `safetensors` crate.
//!
//! Failing cases shrink to a small source and a short operation sequence;
//! seeds are kept in tests/proptest-regressions/reftest.txt.
//! `PROPTEST_CASES=N` runs more cases than the default.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::proptest_config;
use gyrofs::error::{FsError, ToErrno};
use gyrofs::volume::{Attr, DirSink, Kind, Volume};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// The source

/// Storage bits per element of every safetensors dtype (docs/FORMAT.md and
/// scripts/make_golden.py).
const DTYPES: &[(&str, usize)] = &[
    ("BOOL", 8),
    ("F4", 4),
    ("F6_E2M3", 6),
    ("F6_E3M2", 6),
    ("U8", 8),
    ("I8", 8),
    ("F8_E5M2", 8),
    ("F8_E4M3", 8),
    ("F8_E8M0", 8),
    ("F8_E4M3FNUZ", 8),
    ("F8_E5M2FNUZ", 8),
    ("I16", 16),
    ("U16", 16),
    ("F16", 16),
    ("BF16", 16),
    ("I32", 32),
    ("U32", 32),
    ("F32", 32),
    ("C64", 64),
    ("F64", 64),
    ("I64", 64),
    ("U64", 64),
];

fn bits(dtype: &str) -> usize {
    DTYPES.iter().find(|d| d.0 == dtype).expect("known dtype").1
}

/// Pack alignment: 8 for 64-bit types, then 4, 2, and 1 for byte and
/// sub-byte types.
fn alignment(dtype: &str) -> usize {
    (bits(dtype) / 8).max(1)
}

#[derive(Debug, Clone)]
struct Tensor {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    data: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Shard {
    /// `__metadata__`, when the file has one (possibly empty).
    metadata: Option<BTreeMap<String, String>>,
    /// In data order.
    tensors: Vec<Tensor>,
}

#[derive(Debug, Clone)]
struct Source {
    shards: Vec<Shard>,
    /// Write `model.safetensors.index.json` (naming every tensor's shard).
    index: bool,
    /// Other files in the folder: name, bytes.
    side: Vec<(String, Vec<u8>)>,
}

impl Source {
    fn shard_name(&self, i: usize) -> String {
        match self.shards.len() {
            1 => "model.safetensors".to_string(),
            n => format!("model-{:05}-of-{n:05}.safetensors", i + 1),
        }
    }

    /// The bytes of shard `i`: header JSON (keys in any order), padded with
    /// spaces, then the tensors' data in order.
    fn shard_bytes(&self, i: usize) -> Vec<u8> {
        let shard = &self.shards[i];
        let mut header = serde_json::Map::new();
        if let Some(md) = &shard.metadata {
            header.insert("__metadata__".into(), json!(md));
        }
        let mut off = 0;
        for t in &shard.tensors {
            let entry = json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [off, off + t.data.len()]});
            header.insert(t.name.clone(), entry);
            off += t.data.len();
        }
        let mut text = serde_json::to_string(&header).unwrap().into_bytes();
        while !text.len().is_multiple_of(8) {
            text.push(b' ');
        }
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&text);
        for t in &shard.tensors {
            out.extend_from_slice(&t.data);
        }
        out
    }

    fn write(&self, dir: &Path) {
        for i in 0..self.shards.len() {
            std::fs::write(dir.join(self.shard_name(i)), self.shard_bytes(i)).unwrap();
        }
        if self.index {
            let mut map = serde_json::Map::new();
            for (i, s) in self.shards.iter().enumerate() {
                for t in &s.tensors {
                    map.insert(t.name.clone(), json!(self.shard_name(i)));
                }
            }
            let index = json!({"metadata": {}, "weight_map": map});
            std::fs::write(
                dir.join("model.safetensors.index.json"),
                serde_json::to_vec_pretty(&index).unwrap(),
            )
            .unwrap();
        }
        for (name, bytes) in &self.side {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

/// Characters of tensor names: escapes (`%`, `/`, controls, DEL, a leading
/// `.`), non-ASCII, JSON escapes. No name can end in `blocks`, `scales` or
/// `_scale_inv`, so no quantization pair forms, and none names an expert.
const NAME_CHARS: &[char] = &[
    'a', 'b', 'Z', '0', '.', '/', '%', '_', '-', ' ', '"', '\\', '\0', '\u{1}', '\n', '\u{7f}',
    'é', '名', '~',
];

fn tensor_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(select(NAME_CHARS), 0..10).prop_map(|c| c.into_iter().collect()),
        // Long enough to be shortened with a hash (escaped + ".safetensors" > 255 bytes).
        1 => (select(NAME_CHARS), 90..140usize).prop_map(|(c, n)| {
            std::iter::repeat_n(c, n).chain("ab".chars()).collect::<String>()
        }),
    ]
}

/// A shape of rank 0 to 3 with at most 64 elements and whole bytes.
fn tensor() -> impl Strategy<Value = Tensor> {
    (
        tensor_name(),
        select(DTYPES),
        prop::collection::vec(0..6usize, 0..4),
        any::<u64>(),
    )
        .prop_map(|(name, (dtype, b), mut shape, seed)| {
            let n: usize = shape.iter().product();
            if !(n * b).is_multiple_of(8) {
                shape.push(4);
            }
            let len = shape.iter().product::<usize>() * b / 8;
            Tensor {
                name,
                dtype,
                shape,
                data: common::bytes(seed, len),
            }
        })
}

fn metadata() -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    let text = || prop::collection::vec(select(NAME_CHARS), 0..5).prop_map(String::from_iter);
    prop::option::of(prop::collection::btree_map(text(), text(), 0..3))
}

/// Candidate side files: regular ones are passed through to `raw/`;
/// `.hidden` and `extra.bin` (a checkpoint extension) are not.
fn side_files() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..300);
    (
        prop::option::of((1..100u64).prop_map(|h| {
            format!(r#"{{"hidden_size": {h}, "model_type": "reftest"}}"#).into_bytes()
        })),
        prop::option::of(bytes()),
        prop::option::of(bytes()),
        prop::option::of(bytes()),
        prop::option::of(bytes()),
    )
        .prop_map(|(config, tokenizer, readme, hidden, bin)| {
            let named = [
                ("config.json", config),
                ("tokenizer.json", tokenizer),
                ("README.md", readme),
                (".hidden", hidden),
                ("extra.bin", bin),
            ];
            named
                .into_iter()
                .filter_map(|(n, b)| Some((n.to_string(), b?)))
                .collect()
        })
}

fn source() -> impl Strategy<Value = Source> {
    (
        prop::collection::vec((metadata(), prop::collection::vec(tensor(), 0..4)), 1..4),
        any::<bool>(),
        side_files(),
        prop::option::of(prop::collection::vec(
            (
                any::<Index>(),
                select(&["BF16", "FP4", "UE8", "q\"4/\u{1}"][..]),
            ),
            1..4,
        )),
    )
        .prop_map(|(shards, index, mut side, dtypes)| {
            // Tensor names are unique across the source.
            let mut seen = BTreeSet::new();
            let shards: Vec<Shard> = shards
                .into_iter()
                .map(|(metadata, ts)| Shard {
                    metadata,
                    tensors: ts
                        .into_iter()
                        .filter(|t| seen.insert(t.name.clone()))
                        .collect(),
                })
                .collect();
            let names: Vec<&String> = seen.iter().collect();
            if let Some(d) = dtypes {
                let mut map = serde_json::Map::new();
                for (i, logical) in d {
                    let name = match names.is_empty() {
                        true => "no such tensor".to_string(),
                        false => i.get(&names).to_string(),
                    };
                    map.insert(name, json!(logical));
                }
                side.push(("dtypes.json".into(), serde_json::to_vec(&map).unwrap()));
            }
            Source {
                shards,
                index,
                side,
            }
        })
}

// ---------------------------------------------------------------------------
// The model: docs/FORMAT.md re-implemented from the source alone.

/// Canonical JSON (docs/FORMAT.md): keys sorted by bytes, no whitespace,
/// strings escaping only `"`, `\` and U+0000..U+001F.
fn canon(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            let items: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", jstr(k), canon(&o[*k])))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canon).collect::<Vec<_>>().join(",")),
        Value::String(s) => jstr(s),
        other => other.to_string(),
    }
}

fn jstr(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// The file name stem of a tensor (docs/FORMAT.md, "File names").
fn escape(name: &str) -> String {
    if name.is_empty() {
        return "%_".into();
    }
    let mut pieces: Vec<String> = Vec::new();
    for (i, c) in name.chars().enumerate() {
        pieces.push(match c {
            '%' => "%25".into(),
            '/' => "%2F".into(),
            '.' if i == 0 => "%2E".into(),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => format!("%{:02X}", c as u32),
            c => c.to_string(),
        });
    }
    let full: String = pieces.concat();
    if full.len() + ".safetensors".len() <= 255 {
        return full;
    }
    // At most 200 bytes, never inside a character or a %XX escape.
    let mut cut = String::new();
    for p in pieces {
        if cut.len() + p.len() > 200 {
            break;
        }
        cut.push_str(&p);
    }
    format!("{cut}%~{:016x}", fnv1a64(name.as_bytes()))
}

/// One tensor as the catalog should hold it.
#[derive(Debug, Clone)]
struct ModelTensor {
    t: Tensor,
    /// Index in `Model::files`.
    file: usize,
    /// Absolute byte range in its file.
    start: usize,
    end: usize,
    logical: String,
}

#[derive(Debug, Clone)]
struct ModelFile {
    name: String,
    size: usize,
    metadata: BTreeMap<String, String>,
}

/// What a path in the mount should be.
#[derive(Debug, Clone)]
enum Expect {
    /// A directory; its children when the model knows them all.
    Dir(Option<Vec<String>>),
    /// A file; its bytes when the model knows them.
    File(Option<Vec<u8>>),
}

#[derive(Debug)]
struct Model {
    /// None: the source must be refused.
    paths: Option<BTreeMap<String, Expect>>,
    tensors: Vec<ModelTensor>,
}

impl Model {
    fn new(src: &Source) -> Model {
        // Tensor files: the index's shards, or every *.safetensors; in name order.
        let mut shard_ids: Vec<usize> = (0..src.shards.len())
            .filter(|&i| !src.index || !src.shards[i].tensors.is_empty())
            .collect();
        shard_ids.sort_by_key(|&i| src.shard_name(i));
        if shard_ids.is_empty() {
            return Model {
                paths: None,
                tensors: Vec::new(),
            };
        }
        let dtypes: BTreeMap<String, String> = src
            .side
            .iter()
            .find(|(n, _)| n == "dtypes.json")
            .map(|(_, b)| serde_json::from_slice(b).unwrap())
            .unwrap_or_default();
        let format = match src.side.iter().any(|(n, _)| n == "dtypes.json") {
            true => "gpt-oss-original",
            false => "safetensors",
        };
        let mut files = Vec::new();
        let mut tensors = Vec::new();
        for (fi, &si) in shard_ids.iter().enumerate() {
            let bytes = src.shard_bytes(si);
            let data_start = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let shard = &src.shards[si];
            files.push(ModelFile {
                name: src.shard_name(si),
                size: bytes.len(),
                metadata: shard.metadata.clone().unwrap_or_default(),
            });
            let mut at = data_start;
            for t in &shard.tensors {
                let logical = dtypes
                    .get(&t.name)
                    .cloned()
                    .unwrap_or_else(|| t.dtype.to_string());
                tensors.push(ModelTensor {
                    t: t.clone(),
                    file: fi,
                    start: at,
                    end: at + t.data.len(),
                    logical,
                });
                at += t.data.len();
            }
        }
        // Source order: file, then offset; empty tensors sharing an offset
        // by name (the parser's order; FORMAT.md leaves ties open).
        tensors.sort_by(|a, b| {
            (a.file, a.start, a.end, &a.t.name).cmp(&(b.file, b.start, b.end, &b.t.name))
        });
        let source_json = |ids: &[usize]| {
            let list: Vec<Value> = ids
                .iter()
                .map(|&i| {
                    let f = &files[i];
                    let mut o = json!({"name": f.name, "size": f.size});
                    if !f.metadata.is_empty() {
                        o["metadata"] = json!(f.metadata);
                    }
                    o
                })
                .collect();
            canon(&json!({"files": list, "format": format}))
        };
        let record = |m: &ModelTensor| {
            json!({
                "logical_dtype": m.logical,
                "source": {"dtype": m.t.dtype, "file": files[m.file].name, "name": m.t.name,
                           "offsets": [m.start, m.end], "shape": m.t.shape},
                "transform": {"kind": "identity"},
            })
        };
        let gyro_file = |view: &str, source: String, entries: &[&ModelTensor]| {
            let records: serde_json::Map<String, Value> = entries
                .iter()
                .map(|m| (m.t.name.clone(), record(m)))
                .collect();
            let md = [
                ("format", "pt".to_string()),
                ("gyro.source", source),
                ("gyro.tensors", canon(&Value::Object(records))),
                ("gyro.version", "1".to_string()),
                ("gyro.view", view.to_string()),
            ];
            let md: Vec<String> = md
                .iter()
                .map(|(k, v)| format!("{}:{}", jstr(k), jstr(v)))
                .collect();
            let mut text = format!("{{\"__metadata__\":{{{}}}", md.join(","));
            let mut off = 0;
            for m in entries {
                let shape: Vec<String> = m.t.shape.iter().map(usize::to_string).collect();
                let n = m.t.data.len();
                text += &format!(
                    ",{}:{{\"dtype\":{},\"shape\":[{}],\"data_offsets\":[{off},{}]}}",
                    jstr(&m.t.name),
                    jstr(m.t.dtype),
                    shape.join(","),
                    off + n
                );
                off += n;
            }
            text.push('}');
            while !text.len().is_multiple_of(8) {
                text.push(' ');
            }
            let mut out = (text.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(text.as_bytes());
            for m in entries {
                out.extend_from_slice(&m.t.data);
            }
            out
        };

        let mut paths = BTreeMap::new();
        let mut raw_children = vec!["model.safetensors".to_string(), "tensors".to_string()];
        // Side files: regular, not hidden, not a checkpoint, not the index.
        for (name, bytes) in &src.side {
            if name.starts_with('.') || name.ends_with(".bin") {
                continue;
            }
            raw_children.push(name.clone());
            paths.insert(format!("raw/{name}"), Expect::File(Some(bytes.clone())));
        }
        let mut pack: Vec<&ModelTensor> = tensors.iter().collect();
        pack.sort_by_key(|m| (std::cmp::Reverse(alignment(m.t.dtype)), m.file, m.start));
        let all: Vec<usize> = (0..files.len()).collect();
        paths.insert(
            "raw/model.safetensors".into(),
            Expect::File(Some(gyro_file("raw", source_json(&all), &pack))),
        );
        let mut tensor_files = Vec::new();
        for m in &tensors {
            let name = format!("{}.safetensors", escape(&m.t.name));
            let bytes = gyro_file("raw/tensors", source_json(&[m.file]), &[m]);
            paths.insert(format!("raw/tensors/{name}"), Expect::File(Some(bytes)));
            tensor_files.push(name);
        }
        // Listed in source order (docs/FORMAT.md, "File names").
        paths.insert("raw/tensors".into(), Expect::Dir(Some(tensor_files)));
        paths.insert("raw".into(), Expect::Dir(Some(sorted(raw_children))));
        paths.insert("".into(), Expect::Dir(None));
        paths.insert("manifest.json".into(), Expect::File(None));
        Model {
            paths: Some(paths),
            tensors,
        }
    }
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    names
}

// ---------------------------------------------------------------------------
// Operations

#[derive(Debug, Clone)]
enum Name {
    /// A child of the directory (if it has any).
    Existing(Index),
    /// A name that is not there.
    Missing(String),
    /// Bytes that are not UTF-8.
    NotUtf8,
}

#[derive(Debug, Clone)]
enum Offset {
    /// A fraction of the file's size, from 0 to the size.
    Within(Index),
    /// `size + k`.
    PastEnd(u64),
    /// `u64::MAX - k`.
    Far(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Lookup(Index, Name),
    Getattr(Index),
    /// An inode number past the last node, or 0.
    GetattrBogus(u64),
    /// Readdir in pages of this many entries, from the entry at this index.
    Readdir(Index, usize, Index),
    Open(Index, i32, i32),
    Access(Index, i32),
    Read(Index, Offset, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let name = prop_oneof![
        4 => any::<Index>().prop_map(Name::Existing),
        2 => "[a-z%.~_]{0,12}".prop_map(Name::Missing),
        1 => Just(Name::NotUtf8),
    ];
    let offset = prop_oneof![
        6 => any::<Index>().prop_map(Offset::Within),
        1 => (0..5000u64).prop_map(Offset::PastEnd),
        1 => (0..5000u64).prop_map(Offset::Far),
    ];
    let access = select(&[libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR][..]);
    let extra = select(
        &[
            0,
            libc::O_NOATIME,
            libc::O_NONBLOCK,
            libc::O_CLOEXEC,
            libc::O_LARGEFILE,
        ][..],
    );
    let mask = select(
        &[
            libc::F_OK,
            libc::R_OK,
            libc::X_OK,
            libc::R_OK | libc::X_OK,
            libc::W_OK,
            libc::R_OK | libc::W_OK,
        ][..],
    );
    prop_oneof![
        3 => (any::<Index>(), name).prop_map(|(d, n)| Op::Lookup(d, n)),
        2 => any::<Index>().prop_map(Op::Getattr),
        1 => (0..3u64).prop_map(Op::GetattrBogus),
        2 => (any::<Index>(), 1..9usize, any::<Index>()).prop_map(|(d, p, s)| Op::Readdir(d, p, s)),
        2 => (any::<Index>(), access, extra).prop_map(|(n, a, e)| Op::Open(n, a, e)),
        1 => (any::<Index>(), mask).prop_map(|(n, m)| Op::Access(n, m)),
        6 => (any::<Index>(), offset, prop_oneof![0..100usize, 0..70000usize]).prop_map(|(f, o, l)| Op::Read(f, o, l)),
    ]
}

// ---------------------------------------------------------------------------
// The harness

/// One node found by walking the volume.
#[derive(Debug, Clone)]
struct Node {
    path: String,
    ino: u64,
    parent: u64,
    kind: Kind,
    /// Directories: children (name, ino, kind) as readdir lists them.
    children: Vec<(String, u64, Kind)>,
    /// Files: the whole contents, read once.
    bytes: Vec<u8>,
}

/// Collects readdir entries, full after `room` of them.
struct Page {
    room: usize,
    got: Vec<(u64, u64, Kind, String)>,
}

impl DirSink for Page {
    fn add(&mut self, ino: u64, next: u64, kind: Kind, name: &str) -> bool {
        if self.got.len() >= self.room {
            return true;
        }
        self.got.push((ino, next, kind, name.to_string()));
        false
    }
}

/// The whole listing of `ino` from offset `start`, in pages of `room`.
fn list(
    v: &Volume,
    ino: u64,
    start: u64,
    room: usize,
) -> Result<Vec<(u64, u64, Kind, String)>, FsError> {
    let mut all = Vec::new();
    let mut offset = start;
    loop {
        let mut page = Page {
            room,
            got: Vec::new(),
        };
        v.readdir(ino, offset, &mut page)?;
        let Some(last) = page.got.last() else {
            return Ok(all);
        };
        assert!(page.got.len() <= room);
        offset = last.1;
        all.extend(page.got);
    }
}

/// `len` bytes of `ino` from `offset`, as the FUSE read reply carries them.
fn read_ino(v: &Volume, ino: u64, offset: u64, len: usize) -> Result<Vec<u8>, FsError> {
    let mut buf = vec![0; len];
    let n = v.read_ino(ino, offset, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn errno<T: std::fmt::Debug>(r: Result<T, FsError>) -> i32 {
    r.expect_err("should fail").to_errno()
}

struct Harness<'a> {
    v: &'a Volume,
    model: &'a BTreeMap<String, Expect>,
    nodes: Vec<Node>,
}

impl<'a> Harness<'a> {
    /// Walk the volume with readdir and lookup, comparing with the model
    /// as it goes.
    fn new(v: &'a Volume, model: &'a BTreeMap<String, Expect>) -> Harness<'a> {
        let mut h = Harness {
            v,
            model,
            nodes: Vec::new(),
        };
        h.walk(String::new(), 1, 1);
        // The root: manifest.json and raw/, and bf16/ unless that view was
        // left out; nothing else for a safetensors source without experts.
        let root: Vec<&str> = h.nodes[0].children.iter().map(|c| c.0.as_str()).collect();
        assert!(
            root == ["bf16", "manifest.json", "raw"] || root == ["manifest.json", "raw"],
            "root holds {root:?}"
        );
        for path in model.keys() {
            assert!(
                h.nodes.iter().any(|n| &n.path == path),
                "model path '{path}' is missing"
            );
        }
        h
    }

    fn walk(&mut self, path: String, ino: u64, parent: u64) {
        let attr = self.v.getattr(ino).unwrap();
        let join = |name: &str| match path.as_str() {
            "" => name.to_string(),
            p => format!("{p}/{name}"),
        };
        match attr.kind {
            Kind::Dir => {
                let whole = list(self.v, ino, 0, usize::MAX).unwrap();
                assert_eq!(whole[0], (ino, 1, Kind::Dir, ".".to_string()), "{path}");
                assert_eq!(whole[1], (parent, 2, Kind::Dir, "..".to_string()), "{path}");
                let children: Vec<(String, u64, Kind)> =
                    whole[2..].iter().map(|e| (e.3.clone(), e.0, e.2)).collect();
                for (k, e) in whole.iter().enumerate() {
                    assert_eq!(e.1, k as u64 + 1, "{path}: next offset of entry {k}");
                }
                let names: Vec<String> = children.iter().map(|c| c.0.clone()).collect();
                // One-file-per-tensor directories list in source order, the
                // others sorted by name (docs/FORMAT.md).
                if !path.ends_with("tensors") {
                    assert_eq!(
                        names,
                        sorted(names.clone()),
                        "{path}: children sorted by name"
                    );
                }
                match self.model.get(&path) {
                    Some(Expect::Dir(Some(expected))) => assert_eq!(&names, expected, "{path}"),
                    Some(Expect::Dir(None)) | None => {}
                    Some(Expect::File(_)) => panic!("{path} should be a file"),
                }
                let subdirs = children.iter().filter(|c| c.2 == Kind::Dir).count() as u32;
                assert_eq!(
                    (attr.perm, attr.size, attr.nlink),
                    (0o555, 0, 2 + subdirs),
                    "{path}"
                );
                self.nodes.push(Node {
                    path: path.clone(),
                    ino,
                    parent,
                    kind: Kind::Dir,
                    children: children.clone(),
                    bytes: Vec::new(),
                });
                for (name, child, _) in children {
                    self.walk(join(&name), child, ino);
                }
            }
            Kind::File => {
                let bytes = read_ino(self.v, ino, 0, attr.size as usize + 1).unwrap();
                assert_eq!(
                    bytes.len() as u64,
                    attr.size,
                    "{path}: size = bytes readable"
                );
                assert_eq!((attr.perm, attr.nlink), (0o444, 1), "{path}");
                match self.model.get(&path) {
                    Some(Expect::File(Some(expected))) => {
                        assert!(
                            &bytes == expected,
                            "{path}: bytes differ from the model\n got {:?}\nwant {:?}",
                            String::from_utf8_lossy(&bytes[..bytes.len().min(600)]),
                            String::from_utf8_lossy(&expected[..expected.len().min(600)])
                        );
                    }
                    Some(Expect::File(None)) | None => {}
                    Some(Expect::Dir(_)) => panic!("{path} should be a directory"),
                }
                self.nodes.push(Node {
                    path,
                    ino,
                    parent,
                    kind: Kind::File,
                    children: Vec::new(),
                    bytes,
                });
            }
        }
    }

    /// The inode of `path`, by lookups from the root.
    fn resolve(&self, path: &str) -> Attr {
        let mut attr = self.v.getattr(1).unwrap();
        for name in path.split('/').filter(|c| !c.is_empty()) {
            attr = self.v.lookup(attr.ino, OsStr::new(name)).unwrap();
        }
        attr
    }

    fn run(&self, op: &Op) {
        let v = self.v;
        match op {
            Op::Lookup(d, name) => {
                let node = d.get(&self.nodes);
                let not_found = match node.kind {
                    Kind::Dir => libc::ENOENT,
                    Kind::File => libc::ENOTDIR,
                };
                let target = match name {
                    Name::Existing(i) if !node.children.is_empty() => {
                        let (n, ino, kind) = i.get(&node.children);
                        let attr = v.lookup(node.ino, OsStr::new(n)).unwrap();
                        assert_eq!((attr.ino, attr.kind), (*ino, *kind), "{}/{n}", node.path);
                        let child = self.nodes.iter().find(|c| c.ino == *ino).unwrap();
                        assert_eq!(attr.size, child.bytes.len() as u64);
                        return;
                    }
                    Name::Existing(_) => "none".to_string(),
                    Name::Missing(n) => n.clone(),
                    Name::NotUtf8 => {
                        let r = v.lookup(node.ino, OsStr::from_bytes(b"a\xff.safetensors"));
                        assert_eq!(errno(r), not_found);
                        return;
                    }
                };
                if node.children.iter().any(|c| c.0 == target) {
                    return;
                }
                // A missing name is ENOENT; any name under a file is ENOTDIR
                // (the kernel never asks).
                assert_eq!(
                    errno(v.lookup(node.ino, OsStr::new(&target))),
                    not_found,
                    "{}/{target}",
                    node.path
                );
            }
            Op::Getattr(n) => {
                let node = n.get(&self.nodes);
                let attr = v.getattr(node.ino).unwrap();
                assert_eq!(attr.kind, node.kind);
                assert_eq!(attr.ino, node.ino);
                assert_eq!(attr.size, node.bytes.len() as u64);
                assert_eq!(attr.ino, self.resolve(&node.path).ino, "{}", node.path);
            }
            Op::GetattrBogus(k) => {
                let ino = if *k == 0 { 0 } else { v.tree.len() as u64 + k };
                assert_eq!(errno(v.getattr(ino)), libc::ENOENT);
                assert_eq!(
                    errno(v.readdir(
                        ino,
                        0,
                        &mut Page {
                            room: 9,
                            got: vec![]
                        }
                    )),
                    libc::ENOENT
                );
                assert_eq!(errno(v.open_file(ino, libc::O_RDONLY)), libc::ENOENT);
                assert_eq!(errno(read_ino(v, ino, 0, 10)), libc::ENOENT);
                assert_eq!(errno(v.access(ino, libc::R_OK)), libc::ENOENT);
            }
            Op::Readdir(d, room, start) => {
                let node = d.get(&self.nodes);
                if node.kind == Kind::File {
                    assert_eq!(
                        errno(v.readdir(
                            node.ino,
                            0,
                            &mut Page {
                                room: *room,
                                got: vec![]
                            }
                        )),
                        libc::ENOTDIR
                    );
                    assert_eq!(errno(v.opendir(node.ino)), libc::ENOTDIR);
                    return;
                }
                v.opendir(node.ino).unwrap();
                let mut whole = vec![(node.ino, ".".to_string()), (node.parent, "..".to_string())];
                whole.extend(node.children.iter().map(|c| (c.1, c.0.clone())));
                let from = start.index(whole.len() + 2);
                let got = list(v, node.ino, from as u64, *room).unwrap();
                let got: Vec<(u64, String)> = got.into_iter().map(|e| (e.0, e.3)).collect();
                assert_eq!(
                    got,
                    whole[from.min(whole.len())..],
                    "{} from {from} in pages of {room}",
                    node.path
                );
            }
            Op::Open(n, access, extra) => {
                let node = n.get(&self.nodes);
                let r = v.open_file(node.ino, access | extra);
                match (node.kind, *access) {
                    (Kind::Dir, _) => assert_eq!(errno(r), libc::EISDIR),
                    (Kind::File, libc::O_RDONLY) => r.unwrap(),
                    (Kind::File, _) => assert_eq!(errno(r), libc::EROFS),
                }
            }
            Op::Access(n, mask) => {
                let node = n.get(&self.nodes);
                let r = v.access(node.ino, *mask);
                if mask & libc::W_OK != 0 {
                    assert_eq!(errno(r), libc::EROFS);
                } else {
                    r.unwrap();
                }
            }
            Op::Read(f, offset, len) => {
                let node = f.get(&self.nodes);
                let size = node.bytes.len() as u64;
                let at = match offset {
                    Offset::Within(i) => i.index(size as usize + 1) as u64,
                    Offset::PastEnd(k) => size + k,
                    Offset::Far(k) => u64::MAX - k,
                };
                let r = read_ino(v, node.ino, at, *len);
                if node.kind == Kind::Dir {
                    assert_eq!(errno(r), libc::EISDIR);
                    return;
                }
                let got = r.unwrap();
                let lo = at.min(size) as usize;
                let hi = (lo + len).min(size as usize);
                assert!(got[..] == node.bytes[lo..hi], "{} at {at}+{len}", node.path);
            }
        }
    }
}

/// `manifest.json` lists the model's tensors, in source order.
fn check_manifest(h: &Harness, model: &Model) {
    let m = h.nodes.iter().find(|n| n.path == "manifest.json").unwrap();
    let m: Value = serde_json::from_slice(&m.bytes).unwrap();
    assert_eq!(m["tensor_count"], json!(model.tensors.len()));
    let listed = m["tensors"].as_array().unwrap();
    for (got, want) in listed.iter().zip(&model.tensors) {
        let raw_file = format!("raw/tensors/{}.safetensors", escape(&want.t.name));
        assert_eq!(got["name"], json!(want.t.name));
        assert_eq!(got["dtype"], json!(want.t.dtype));
        assert_eq!(got["logical_dtype"], json!(want.logical));
        assert_eq!(got["shape"], json!(want.t.shape));
        assert_eq!(got["bytes"], json!(want.t.data.len()));
        assert_eq!(got["offset"], json!(want.start));
        assert_eq!(got["raw_file"], json!(raw_file));
    }
}

/// Raw payloads, in the pack and in each tensor's file, read back with the
/// reference safetensors crate equal the source tensors' bytes.
fn check_with_reference_reader(h: &Harness, model: &Model) {
    let bytes = |path: &str| &h.nodes.iter().find(|n| n.path == path).unwrap().bytes;
    let pack = safetensors::SafeTensors::deserialize(bytes("raw/model.safetensors")).unwrap();
    assert_eq!(pack.len(), model.tensors.len());
    for m in &model.tensors {
        let path = format!("raw/tensors/{}.safetensors", escape(&m.t.name));
        let one = safetensors::SafeTensors::deserialize(bytes(&path)).expect("valid safetensors");
        for (st, what) in [(&one, path.as_str()), (&pack, "raw/model.safetensors")] {
            let view = st.tensor(&m.t.name).unwrap();
            assert_eq!(view.data(), &m.t.data[..], "{what}: {:?}", m.t.name);
            assert_eq!(view.shape(), &m.t.shape[..], "{what}: {:?}", m.t.name);
            assert_eq!(format!("{:?}", view.dtype()), m.t.dtype);
        }
    }
}

/// statfs counts every node, and blocks for the tensor data of every view
/// (at least the raw data twice: the pack and raw/tensors), but not headers
/// or generated JSON (src/volume.rs: counting them would build every file).
fn check_statfs(h: &Harness, model: &Model) {
    let s = h.v.statfs();
    assert_eq!(s.files, h.nodes.len() as u64);
    let bs = s.block_size as u64;
    let total: u64 = h.nodes.iter().map(|n| n.bytes.len() as u64).sum();
    let raw: u64 = model.tensors.iter().map(|m| m.t.data.len() as u64).sum();
    assert!(s.blocks <= total.div_ceil(bs), "{} > all bytes", s.blocks);
    assert!(
        s.blocks >= (2 * raw).div_ceil(bs),
        "{} < raw data",
        s.blocks
    );
}

proptest! {
    #![proptest_config(proptest_config(256, "tests/proptest-regressions/reftest.txt"))]

    #[test]
    fn volume_matches_the_model(src in source(), ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        src.write(dir.path());
        let model = Model::new(&src);
        let opened = Volume::open(dir.path());
        let Some(paths) = &model.paths else {
            prop_assert!(opened.is_err(), "a source without tensors was opened");
            return Ok(());
        };
        let v = opened.map_err(|e| TestCaseError::fail(format!("refused: {e}")))?;
        let h = Harness::new(&v, paths);
        check_manifest(&h, &model);
        check_with_reference_reader(&h, &model);
        check_statfs(&h, &model);
        for op in &ops {
            h.run(op);
        }
    }
}
