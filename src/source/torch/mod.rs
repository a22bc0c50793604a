//! PyTorch `torch.save` checkpoints, read without running any pickle code.
//!
//! For: turning the bytes of a `.pt`/`.pth`/`.bin`/`.ckpt` file (a memory
//! map) into a [`Checkpoint`]: where every storage's bytes lie in the file,
//! every tensor as a strided view of a storage, and the rest of the pickled
//! object tree as JSON. [`parse`] takes the whole file as `&[u8]` and does no
//! I/O, so a fuzzer can call it directly. The format is detected by content:
//! a zip (`PK\x03\x04`, torch >= 1.6) or a legacy pickle stream starting with
//! torch's magic number.
//!
//! Not for: tensor bytes (the caller gathers `t.contiguous()` from the map
//! using [`TensorRef`]), byte swapping of big-endian files, naming files,
//! catalogs or views.
//!
//! Modules: `zip` (central directory, ZIP64, stored entries), `pickle` (the
//! restricted unpickler), `globals` (the allowlist, refused names, dtypes),
//! `legacy` (the pre-1.6 stream), `rebuild` (the value graph -> tensors,
//! JSON values and notes).
//!
//! # What a checkpoint becomes
//!
//! **Paths.** The root object is walked depth first, in pickle order. A dict
//! (plain, `OrderedDict`, `Counter`, `defaultdict`) contributes its keys, a
//! list, tuple or set its indices (decimal, from 0); a path is its segments
//! joined with `.` (`model.transformer.h.0.attn.c_attn.weight`,
//! `optimizer.state.0.exp_avg`). Keys are used as they are, never escaped,
//! so a flat state dict's own keys are its paths. A string key is itself;
//! an integer key is its decimal digits; any other key (bool, None, float,
//! tuple, ...) is the compact JSON text of its value as below (`true`,
//! `null`, `[0,"a"]`; floats as serde_json writes them, the shortest
//! decimal that reads back: `0.5`, `1e-5`). A key repeated in one dict is
//! one key, as in the dict `torch.load` builds: keys equal in Python (`1`,
//! `1.0`, `True`; strings by text, tuples and frozensets by items, globals
//! by name; NaN, bytes and other objects only themselves) keep the first
//! key's place and the last value, with a note. Two keys that are distinct
//! in Python but give the same text (`1` and `"1"`): the later one gets
//! `#2` appended (`#3`, ... if that is taken too; found in linear time).
//! A tensor whose path equals an earlier tensor's path (a key `"a.b"` next
//! to a dict `"a"` holding `"b"`) gets the first free `#2`, `#3`, ...
//! suffix. A tensor at the root (`torch.save(t)`) is named `tensor`, as is a
//! tensor whose path would be empty. Each such renaming adds a note. A tensor
//! (or container) reachable by several paths (tied weights, memoized
//! objects) appears under each path, all referring to the same storage.
//! A file keeps at most `rebuild::MAX_NOTES` notes, then one counting the
//! rest.
//!
//! **Values** ([`Checkpoint::values`]) mirror the object tree: `None` ->
//! `null`; bools; integers -> numbers (beyond 64 bits: a string of decimal
//! digits); floats -> numbers, non-finite ones -> `"NaN"`, `"inf"`,
//! `"-inf"`; strings; bytes/bytearray -> `{"gyro_bytes": <length>}`; lists,
//! tuples, sets, `torch.Size` -> arrays; dicts -> objects (keys as above;
//! JSON objects are key-sorted); a tensor -> `{"gyro_tensor": "<path>"}`; a
//! tensor left out -> `{"gyro_omitted": "<why>"}`; a bare storage ->
//! `{"gyro_storage": "<key>"}`; `torch.float32` etc. -> `"torch.float32"`;
//! `torch.device("cuda", 0)` -> `"cuda:0"`; a layout or qscheme -> its name;
//! `complex(a, b)` -> `{"gyro_complex": [a, b]}`; a global that is named but
//! not called -> `{"gyro_global": "module.name"}`; an object of a class not
//! on the allowlist -> `{"gyro_opaque": "module.Name"}` plus, when present,
//! `"args"` (its constructor arguments), `"state"` (its `BUILD` state, e.g.
//! an `argparse.Namespace`'s fields), `"items"` (dict items) and `"list"`
//! (list items); a container that contains itself -> `{"gyro_cycle":
//! "<path of the enclosing copy>"}`. `OrderedDict` attributes (the state
//! dict's `_metadata`) and tensor attributes are not items and are dropped.
//!
//! **Allowlist.** Only names are resolved, never imported. Interpreted:
//! `collections.OrderedDict`, `collections.Counter`, `collections.defaultdict`
//! (dicts); `torch._utils._rebuild_tensor`, `_rebuild_tensor_v2`,
//! `_rebuild_tensor_v3`, `_rebuild_parameter`, `_rebuild_parameter_with_state`,
//! `_rebuild_device_tensor_from_cpu_tensor`, `torch._tensor._rebuild_from_type_v2`,
//! `torch.nn.parameter.Parameter` (tensors); storage classes
//! (`torch.FloatStorage`, ..., `torch.cuda.*Storage`,
//! `torch.storage.UntypedStorage`) in persistent ids; torch dtypes,
//! `torch.Size`, `torch.device`, `torch.serialization._get_layout`, qschemes;
//! `_codecs.encode`, `builtins.bytes` and `builtins.bytearray` (bytes), `builtins.set`,
//! `builtins.frozenset`, `builtins.complex`; `copyreg._reconstructor` (names
//! the class of a placeholder). Recognised and left out with a note:
//! `_rebuild_qtensor`, `_rebuild_sparse_tensor`, `_rebuild_nested_tensor`,
//! `_rebuild_meta_tensor_no_storage`, `_rebuild_wrapper_subclass`,
//! `_rebuild_device_tensor_from_numpy`, tensors whose conj/neg bit is set and
//! tensors of dtypes with no safetensors equivalent (complex, quantized,
//! `float4_e2m1fn_x2`, `bits*`, sub-byte `uintN`/`intN`). Any other global
//! becomes a placeholder when called (`REDUCE`, `NEWOBJ`, `INST`, `OBJ`),
//! which is fine unless a tensor is built from it or held inside it: then
//! the file is refused. Globals from modules that exist to run code (`os`,
//! `subprocess`, `builtins.eval`, ...: `globals::is_refused`) refuse the file
//! as soon as they are named.
//!
//! **Dtypes.** `float64 float32 float16 bfloat16 int64 int32 int16 int8
//! uint8 bool uint16 uint32 uint64 float8_e4m3fn float8_e5m2 float8_e4m3fnuz
//! float8_e5m2fnuz float8_e8m0fnu` -> `F64 F32 F16 BF16 I64 I32 I16 I8 U8
//! BOOL U16 U32 U64 F8_E4M3 F8_E5M2 F8_E4M3FNUZ F8_E5M2FNUZ F8_E8M0`.
//!
//! **Limits** (each refused with one line): at most `pickle::MAX_VALUES`
//! values per pickle taking at most `pickle::MEMORY_PER_BYTE` bytes of
//! memory per byte of pickle plus `pickle::MEMORY_FLOOR`, `MARK`s and containers nested at most
//! `pickle::MAX_DEPTH` deep, integers of at most `pickle::MAX_LONG_BYTES`
//! bytes, tensors of at most [`MAX_DIMS`] dimensions, paths of at most
//! [`MAX_PATH_LEN`] bytes, and a walk of the object tree that visits at most
//! twice the pickle's values plus a million and copies at most twice the
//! pickle's length plus 64 MiB of text (shared references could otherwise
//! expand a small pickle exponentially).

pub mod globals;
mod legacy;
pub mod pickle;
mod rebuild;
pub mod set;
pub mod zip;

use serde_json::Value;

use crate::dtype::Dtype;
pub use pickle::PickleError;

/// Most dimensions a tensor may have (torch's own limit is 64 too).
pub const MAX_DIMS: usize = 64;
/// Longest path of a tensor or value, in bytes.
pub const MAX_PATH_LEN: usize = 64 * 1024;

/// A parsed, validated torch.save checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub format: Format,
    /// The storages' bytes are big-endian (zip `byteorder` entry says
    /// `big`). Legacy files are always little-endian: torch converts when it
    /// writes them.
    pub big_endian: bool,
    /// Every storage named by a persistent id, in key order: keys that are
    /// decimal integers first, numerically, then the others by bytes.
    pub storages: Vec<Storage>,
    /// Every tensor reachable from the root, in traversal order; a tensor
    /// reachable by several paths appears once per path.
    pub tensors: Vec<TensorRef>,
    /// The object tree as JSON (see the module documentation).
    pub values: Value,
    /// One line per thing left out, renamed or kept as a placeholder, and why.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// A zip archive (torch >= 1.6) whose entries sit under `archive_name/`.
    Zip { archive_name: String },
    /// The pre-1.6 stream of pickles followed by raw storages.
    Legacy,
}

/// A storage: a contiguous byte range of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// The key in the pickle (`"0"`, `"1"`, ... in zips; `str(cdata)` in
    /// legacy files).
    pub key: String,
    /// The dtype the first persistent id naming it gives (typed storages:
    /// `FloatStorage` -> F32; untyped: U8); U8 if that has no safetensors
    /// equivalent. Tensors carry their own dtype.
    pub dtype: Dtype,
    /// Absolute byte offset of the payload in the file.
    pub offset: u64,
    /// Bytes of payload.
    pub len: u64,
}

/// A tensor: a strided view of a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    pub path: String,
    /// Index into [`Checkpoint::storages`].
    pub storage: usize,
    pub dtype: Dtype,
    /// Offset of element [0, 0, ...] in the storage, in elements of `dtype`.
    pub storage_offset: u64,
    pub shape: Vec<u64>,
    /// In elements; any non-negative values (transposed, sliced, expanded
    /// with stride 0). Validated: every element lies inside the storage, and
    /// the contiguous bytes (numel x element size) fit in 2^63. A zero-size
    /// tensor has no elements; only `storage_offset <= storage elements` is
    /// checked for it.
    pub strides: Vec<u64>,
    pub requires_grad: bool,
}

impl TensorRef {
    /// Number of elements (validated by [`parse`] to need at most 2^63
    /// bytes; saturates rather than overflow for a hand-made value).
    pub fn numel(&self) -> u64 {
        self.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }
}

/// Why a file is not a readable torch.save checkpoint. `Display` is one line
/// naming what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TorchError {
    #[error("not a torch.save checkpoint: {0}")]
    NotTorch(String),
    /// The zip structure (end of central directory, central directory).
    #[error("zip: {0}")]
    Zip(String),
    #[error("zip entry '{name}': {why}")]
    Entry { name: String, why: String },
    #[error("{0}")]
    Legacy(String),
    /// Bytes of the file that cannot be had (a remote fetch failed).
    #[error("{0}")]
    Unavailable(String),
    /// A pickle that cannot be decoded: `what` is `archive/data.pkl`, or
    /// `legacy main pickle` (whose offsets are file offsets).
    #[error("{what}: {err}")]
    Pickle { what: String, err: PickleError },
    /// A call the pickle asks for that cannot be interpreted safely.
    #[error("{what}: byte {offset}: {global}: {why}")]
    Rebuild {
        what: String,
        offset: u64,
        global: String,
        why: String,
    },
    #[error("storage '{key}': {why}")]
    Storage { key: String, why: String },
    #[error("tensor '{path}': {why}")]
    Tensor { path: String, why: String },
    /// Something wrong at a path of the object tree (depth, size).
    #[error("'{path}': {why}")]
    Value { path: String, why: String },
}

/// Does `data` (a file's first 64 bytes or more) look like a torch.save
/// file: a zip archive, or torch's legacy magic-number pickle?
pub fn is_torch(data: &[u8]) -> bool {
    data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") || legacy::is_legacy(data)
}

/// A file the reader reads by range: all of it in memory (`[u8]`: tests,
/// fuzzing), or a source file whose ranges are made local on demand (`set`),
/// so that a remote file is fetched only where the reader looks.
pub trait Bytes {
    /// The file's length.
    fn size(&self) -> u64;
    /// Bytes `at..at + len`, which the caller has checked lie inside the
    /// file; an error only when they cannot be had (a failed fetch).
    fn read(&self, at: u64, len: u64) -> Result<&[u8], TorchError>;
    /// Ranges (offset, length) about to be read: a remote file fetches
    /// them all at once. Only a hint: a failure shows at the read.
    fn prefetch(&self, _ranges: &[(u64, u64)]) {}
}

impl Bytes for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read(&self, at: u64, len: u64) -> Result<&[u8], TorchError> {
        Ok(&self[at as usize..(at + len) as usize])
    }
}

/// What is read of a file to tell what it is: the zip and pickle magics,
/// a tar header's `ustar` at 257.
const HEAD: u64 = 512;

/// Parse the whole file `data` held in memory. The entry point for fuzzing.
pub fn parse(data: &[u8]) -> Result<Checkpoint, TorchError> {
    read(data)
}

/// Parse the file `data`, read by range: of a zip, only its directory, the
/// entries' local headers and the small entries (`data.pkl`, `byteorder`)
/// are read; of a legacy file, a prefix that holds its pickles and the
/// 8-byte element count before each storage.
pub fn read<B: Bytes + ?Sized>(data: &B) -> Result<Checkpoint, TorchError> {
    let head = data.read(0, data.size().min(HEAD))?;
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return parse_zip(data);
    }
    if legacy::is_legacy(head) {
        return legacy::read(data);
    }
    let data = head;
    Err(TorchError::NotTorch(
        if data.get(257..262) == Some(b"ustar") {
            "a tar archive (the torch.save format before torch 0.4 is not supported)".to_string()
        } else if data.first() == Some(&0x80) {
            "a pickle without torch.save's magic number (plain pickle.dump output?)".to_string()
        } else {
            format!(
                "neither a zip archive nor a legacy torch.save pickle (starts with {})",
                hex_prefix(data)
            )
        },
    ))
}

fn hex_prefix(data: &[u8]) -> String {
    if data.is_empty() {
        return "nothing: the file is empty".to_string();
    }
    let n = data.len().min(8);
    let hex: Vec<String> = data[..n].iter().map(|b| format!("{b:02x}")).collect();
    hex.join(" ")
}

/// A torch.save zip: `<archive>/data.pkl`, `<archive>/data/<key>`,
/// `<archive>/byteorder`.
fn parse_zip<B: Bytes + ?Sized>(data: &B) -> Result<Checkpoint, TorchError> {
    let archive = zip::Archive::read(data)?;
    // torch's reader takes the folder of the first entry as the archive name.
    let first = archive
        .entries()
        .first()
        .ok_or_else(|| TorchError::Zip("the archive is empty (no data.pkl)".to_string()))?;
    let Some((archive_name, _)) = first.name.split_once('/') else {
        return Err(TorchError::Zip(format!(
            "first entry '{}' is not inside a folder (torch.save puts every entry under one)",
            pickle::esc(&first.name)
        )));
    };
    let archive_name = archive_name.to_string();
    let entry_name = |rel: &str| format!("{archive_name}/{rel}");
    let pkl_name = entry_name("data.pkl");
    let Some(pkl) = archive.find(&pkl_name) else {
        if archive.find(&entry_name("constants.pkl")).is_some() {
            return Err(TorchError::NotTorch(
                "a TorchScript archive (torch.jit.save), not a torch.save checkpoint".to_string(),
            ));
        }
        return Err(TorchError::Zip(format!(
            "no entry '{}' (not a torch.save archive?)",
            pickle::esc(&pkl_name)
        )));
    };
    let (pkl_off, pkl_len) = archive.stored_payload(pkl)?;
    let pkl_data = data.read(pkl_off, pkl_len)?;

    let big_endian = match archive.find(&entry_name("byteorder")) {
        None => false,
        Some(e) => {
            let (o, n) = archive.stored_payload(e)?;
            match data.read(o, n)? {
                b"little" => false,
                b"big" => true,
                other => {
                    return Err(TorchError::Entry {
                        name: pickle::esc(&e.name),
                        why: format!(
                            "holds '{}', expected 'little' or 'big'",
                            pickle::esc(&String::from_utf8_lossy(&other[..other.len().min(32)]))
                        ),
                    });
                }
            }
        }
    };

    let what = pickle::esc(&pkl_name);
    let p = pickle::parse(pkl_data, 0).map_err(|err| TorchError::Pickle {
        what: what.clone(),
        err,
    })?;
    let pids = rebuild::persistent_ids(&p, &what)?;
    let mut payloads = rebuild::Payloads::new();
    for pid in &pids {
        let Some(key) = pid.key() else { continue };
        if payloads.contains_key(key) {
            continue;
        }
        let name = entry_name(&format!("data/{key}"));
        let e = archive.find(&name).ok_or_else(|| TorchError::Storage {
            key: pickle::esc(key),
            why: format!("the archive has no entry '{}'", pickle::esc(&name)),
        })?;
        let (offset, len) = archive.stored_payload(e)?;
        payloads.insert(key.to_string(), rebuild::Payload { offset, len });
    }
    let out = rebuild::build(&p, &what, &pids, &payloads, pkl_data.len())?;
    Ok(Checkpoint {
        format: Format::Zip { archive_name },
        big_endian,
        storages: out.storages,
        tensors: out.tensors,
        values: out.values,
        notes: out.notes,
    })
}

#[cfg(test)]
mod tests {
    use super::zip::tests::{W, write_zip};
    use super::*;
    use serde_json::json;

    fn s(x: &str) -> Vec<u8> {
        let mut v = vec![b'X'];
        v.extend_from_slice(&(x.len() as u32).to_le_bytes());
        v.extend_from_slice(x.as_bytes());
        v
    }

    fn global(m: &str, n: &str) -> Vec<u8> {
        format!("c{m}\n{n}\n").into_bytes()
    }

    /// `{"w": _rebuild_tensor_v2(storage '0' of 4 floats, 0, (2, 2), (1, 2))}`
    fn tensor_pickle() -> Vec<u8> {
        view_pickle(0, &[2, 2], &[1, 2])
    }

    fn int(v: u64) -> Vec<u8> {
        let mut p = vec![0x8a, 8];
        p.extend(v.to_le_bytes());
        p
    }

    fn view_pickle(offset: u64, shape: &[u64], stride: &[u64]) -> Vec<u8> {
        let mut p = b"\x80\x02}(".to_vec();
        p.extend(s("w"));
        p.extend(global("torch._utils", "_rebuild_tensor_v2"));
        p.extend(b"((");
        p.extend(s("storage"));
        p.extend(global("torch", "FloatStorage"));
        p.extend(s("0"));
        p.extend(s("cpu"));
        p.extend(b"K\x04tQ");
        p.extend(int(offset));
        for v in [shape, stride] {
            p.push(b'(');
            for &d in v {
                p.extend(int(d));
            }
            p.push(b't');
        }
        p.extend(b"\x89");
        p.extend(global("collections", "OrderedDict"));
        p.extend(b")RtRu.");
        p
    }

    #[test]
    fn view_validation() {
        let ok = |o, sh: &[u64], st: &[u64]| parse(&zip_with(&view_pickle(o, sh, st), false));
        let err = |o, sh: &[u64], st: &[u64]| ok(o, sh, st).unwrap_err().to_string();
        // Expanded (stride 0), transposed, zero-size views are fine.
        assert!(ok(0, &[1000, 1000], &[0, 0]).is_ok());
        assert!(ok(3, &[5, 0], &[7, 9]).is_ok());
        assert!(ok(4, &[0], &[1]).is_ok());
        assert_eq!(ok(1, &[3], &[1]).unwrap().tensors[0].storage_offset, 1);
        assert_eq!(
            err(1, &[2, 2], &[2, 1]),
            "tensor 'w': view needs 5 elements but storage '0' has 4"
        );
        assert_eq!(
            err(5, &[0], &[1]),
            "tensor 'w': empty view starts at element 5 but storage '0' has 4"
        );
        assert_eq!(
            err(0, &[1 << 40, 1 << 40], &[0, 0]),
            "tensor 'w': shape [1099511627776, 1099511627776] holds more than 2^63 bytes"
        );
        assert_eq!(
            err(0, &[3, 3], &[1 << 62, 1 << 62]),
            "tensor 'w': view needs more than 2^64 elements but storage '0' has 4"
        );
        assert_eq!(
            err(u64::MAX, &[1], &[1]),
            "ck/data.pkl: byte 158: torch._utils._rebuild_tensor_v2: storage_offset is negative (-1)"
        );
    }

    fn zip_with(pkl: &[u8], zip64: bool) -> Vec<u8> {
        let floats: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        write_zip(
            &[
                W {
                    name: "ck/data.pkl",
                    data: pkl,
                    method: 0,
                    local_extra: b"\x42\x46\x03\x00ZZZ",
                },
                W {
                    name: "ck/data/0",
                    data: &floats,
                    method: 0,
                    local_extra: &[],
                },
            ],
            zip64,
            b"comment",
        )
    }

    #[test]
    fn hand_built_zip64_archive() {
        for zip64 in [false, true] {
            let z = zip_with(&tensor_pickle(), zip64);
            let ck = parse(&z).unwrap();
            assert_eq!(
                ck.format,
                Format::Zip {
                    archive_name: "ck".to_string()
                }
            );
            assert_eq!(ck.storages.len(), 1);
            let st = &ck.storages[0];
            assert_eq!(
                &z[st.offset as usize..(st.offset + st.len) as usize],
                &1.0f32
                    .to_le_bytes()
                    .iter()
                    .chain(&2.0f32.to_le_bytes())
                    .chain(&3.0f32.to_le_bytes())
                    .chain(&4.0f32.to_le_bytes())
                    .copied()
                    .collect::<Vec<u8>>()[..]
            );
            let t = &ck.tensors[0];
            assert_eq!((t.path.as_str(), t.dtype), ("w", Dtype::F32));
            assert_eq!(
                (t.shape.clone(), t.strides.clone()),
                (vec![2, 2], vec![1, 2])
            );
            assert_eq!(ck.values, json!({"w": {"gyro_tensor": "w"}}));
        }
    }

    #[test]
    fn rare_opcodes() {
        let mut p = b"\x80\x04}(".to_vec();
        p.extend(b"U\x01aT\x03\x00\x00\x00abc"); // py2 str keys and values
        p.extend(b"S'b'\nB\x02\x00\x00\x00xy");
        p.extend(b"\x8c\x01c\x8e\x03\x00\x00\x00\x00\x00\x00\x00xyz");
        p.extend(b"\x8d\x01\x00\x00\x00\x00\x00\x00\x00d\x8b\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01");
        p.extend(b"\x8c\x01eK\x0520"); // DUP POP
        p.extend(b"\x8c\x01f(K\x011K\x02"); // MARK POP_MARK
        p.extend(b"\x8c\x01g");
        p.extend(global("mod", "Cls"));
        p.extend(b")}\x92"); // NEWOBJ_EX
        p.extend(b"\x8c\x01hC\x01z\x98"); // READONLY_BUFFER
        p.extend(b"\x8c\x01i");
        p.extend(global("copy_reg", "_reconstructor"));
        p.extend(b"(");
        p.extend(global("argparse", "Namespace"));
        p.extend(global("__builtin__", "object"));
        p.extend(b"NtR}\x8c\x01xK\x01sb"); // protocol 0/1 object pickling
        p.extend(b"\x8c\x01j");
        p.extend(global("__builtin__", "frozenset"));
        p.extend(b"]K\x07a\x85R");
        p.extend(b"u.");
        let ck = parse(&zip_with(&p, false)).unwrap();
        assert_eq!(
            ck.values,
            json!({
                "a": "abc",
                "b": {"gyro_bytes": 2},
                "c": {"gyro_bytes": 3},
                "d": "18446744073709551616",
                "e": 5,
                "f": 2,
                "g": {"gyro_opaque": "mod.Cls"},
                "h": {"gyro_bytes": 1},
                "i": {"gyro_opaque": "argparse.Namespace", "state": {"x": 1}},
                "j": [7],
            })
        );
        assert!(ck.tensors.is_empty());

        for (pkl, want) in [
            (
                &b"\x80\x02Pabc\n."[..],
                "BINPERSID: persistent id is a string, not a ('storage', ...) tuple",
            ),
            (
                b"\x80\x02\x82\x01.",
                "EXT1: extension registry codes are not supported",
            ),
            (
                b"\x80\x05\x97.",
                "NEXT_BUFFER: out-of-band buffers are not supported",
            ),
        ] {
            let e = parse(&zip_with(pkl, false)).unwrap_err().to_string();
            assert!(
                e.starts_with("ck/data.pkl: byte ") && e.ends_with(want),
                "{e}"
            );
        }
    }

    #[test]
    fn format_detection() {
        assert_eq!(
            parse(b"").unwrap_err().to_string(),
            "not a torch.save checkpoint: neither a zip archive nor a legacy torch.save pickle (starts with nothing: the file is empty)"
        );
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(parse(&tar).unwrap_err().to_string().contains("tar archive"));
        // A TorchScript archive.
        let z = write_zip(
            &[W {
                name: "m/constants.pkl",
                data: b"\x80\x02).",
                method: 0,
                local_extra: &[],
            }],
            false,
            b"",
        );
        assert_eq!(
            parse(&z).unwrap_err().to_string(),
            "not a torch.save checkpoint: a TorchScript archive (torch.jit.save), not a torch.save checkpoint"
        );
    }
}

#[cfg(test)]
mod limit_tests {
    use super::zip::tests::{W, write_zip};
    use super::*;

    fn zip(pkl: &[u8]) -> Vec<u8> {
        write_zip(
            &[W {
                name: "d/data.pkl",
                data: pkl,
                method: 0,
                local_extra: &[],
            }],
            false,
            b"",
        )
    }

    /// Nesting past the limit, in a thread with half the usual 2 MiB test
    /// stack: refused with an error, never a stack overflow.
    #[test]
    fn deep_nesting_fits_a_small_stack() {
        let n = pickle::MAX_DEPTH + 5;
        // Lists nested by APPEND (no MARKs).
        let mut lists = b"\x80\x02".to_vec();
        lists.extend(std::iter::repeat_n(b']', n));
        lists.extend(std::iter::repeat_n(b'a', n - 1));
        lists.push(b'.');
        // _rebuild_parameter(_rebuild_parameter(...(None)...)).
        let mut params = b"\x80\x02".to_vec();
        for _ in 0..n {
            params.extend(b"ctorch._utils\n_rebuild_parameter\n");
        }
        params.push(b'N');
        for _ in 0..n {
            params.extend(b"\x88N\x87R");
        }
        params.push(b'.');
        // Deep dicts of tensors-to-be inside an opaque object's state.
        let mut opaque = b"\x80\x02cevil\nThing\n)\x81".to_vec();
        opaque.extend(std::iter::repeat_n(&b"}X\x01\x00\x00\x00k"[..], n).flatten());
        opaque.push(b'N');
        opaque.extend(std::iter::repeat_n(b's', n));
        opaque.extend(b"b.");
        for pkl in [lists, params, opaque] {
            let z = zip(&pkl);
            let r = std::thread::Builder::new()
                .stack_size(1 << 20)
                .spawn(move || parse(&z).map(|_| ()).map_err(|e| e.to_string()))
                .unwrap()
                .join()
                .unwrap();
            let e = r.unwrap_err();
            assert!(e.contains("deeper than 256"), "{e}");
        }
    }

    /// Many objects sharing one big argument: interpretation work counts
    /// against the walk's budgets, so it stays linear in the input.
    #[test]
    fn shared_arguments_do_not_multiply_work() {
        let n = 100_000;
        for (callable, arg) in [
            // set(T) for a shared 100k-item tuple T.
            (&b"cbuiltins\nset\nq\x01"[..], {
                let mut t = b"(".to_vec();
                t.extend(std::iter::repeat_n(&b"K\x07"[..], n).flatten());
                t.extend(b"tq\x00");
                t
            }),
            // _codecs.encode(S, 'latin1') for a shared 1 MB string S.
            (&b"c_codecs\nencode\nq\x01"[..], {
                let mut t = b"X\x00\x00\x10\x00".to_vec();
                t.extend(std::iter::repeat_n(b'a', 1 << 20));
                t.extend(b"q\x00");
                t
            }),
        ] {
            let mut p = b"\x80\x02".to_vec();
            p.extend(&arg);
            p.extend(callable);
            p.extend(b"](");
            let call: &[u8] = if callable.starts_with(b"cbuiltins") {
                b"h\x01h\x00\x85R"
            } else {
                b"h\x01h\x00X\x06\x00\x00\x00latin1\x86R"
            };
            p.extend(std::iter::repeat_n(call, 20_000).flatten());
            p.extend(b"e.");
            let t = std::time::Instant::now();
            let e = parse(&zip(&p)).unwrap_err().to_string();
            assert!(e.contains("through shared references"), "{e}");
            assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
        }
    }
}
