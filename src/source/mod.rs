//! Source readers: turn a checkpoint on disk into a [`Catalog`].
//!
//! [`open`] decides what SOURCE is (a file or a folder, which format) and
//! hands each file to its format's reader. Readers parse headers only; tensor
//! bytes stay in the memory map until a view reads them. Anything that cannot
//! be read is refused here with one [`SourceError`] naming the file, so a mount
//! either happens completely or not at all.
//!
//! - `mapped`: read-only memory maps with change detection; `fault`: SIGBUS
//!   recovery for maps of files truncated while mounted.
//! - `safetensors`: header parser and validator.
//! - `gguf`: GGUF header parser and validator; `gguf_set`: GGUF files and
//!   split sets into a catalog.
//! - `torch`: torch.save files (zip and legacy) read by a restricted
//!   unpickler that runs no code; `torch_set`: PyTorch files and Hugging
//!   Face `pytorch_model*.bin` folders into a catalog.
//! - this module: what SOURCE is (by content, not extension) and folder
//!   layouts (single file, shards with or without
//!   `model.safetensors.index.json`, gpt-oss `original/` with `dtypes.json`,
//!   `pytorch_model*.bin`, Hugging Face cache snapshots of symlinks) and
//!   side files; the JSON side files are parsed from bytes by
//!   [`parse_index`], [`parse_dtypes`] and [`parse_json`] (pure entry
//!   points, fuzzed in tests/fuzz/ like the format readers' `parse_bytes`
//!   and `parse_data`).

pub mod fault;
pub mod gguf;
pub(crate) mod gguf_set;
pub mod mapped;
pub mod safetensors;
pub mod torch;
mod torch_set;

pub use torch_set::row_major;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::catalog::{
    Catalog, Extent, FileRole, Files, SourceFormat, Tensor, index_by_name, pair_fp8_block,
    pair_mxfp4,
};
use crate::error::{Problem, SourceError};
use mapped::SourceFile;

/// Name of the shard index of a sharded safetensors checkpoint.
pub const INDEX_JSON: &str = "model.safetensors.index.json";

/// Extensions of checkpoint data files. A folder's other regular files are
/// side files (config, tokenizer, ...); these are not, so that a folder
/// holding both `model.safetensors` and `pytorch_model.bin` does not pass the
/// second copy through.
const CHECKPOINT_EXTENSIONS: &[&str] = &[
    "safetensors",
    "gguf",
    "bin",
    "pt",
    "pth",
    "ckpt",
    "h5",
    "msgpack",
    "onnx",
    "pkl",
    "npz",
];

/// Open SOURCE (a file or a folder) and read its catalog.
pub fn open(path: &Path) -> Result<Catalog, SourceError> {
    // Parsers borrow bytes of remote files' caches too (remote::cache).
    let _reading = crate::remote::cache::readers().enter();
    let meta = std::fs::metadata(path).map_err(|e| SourceError::io(path, e))?;
    if meta.is_dir() {
        return open_dir(path);
    }
    if !meta.is_file() {
        return Err(SourceError::invalid(path, "not a file or a folder"));
    }
    let ext = extension(&file_name(path)).map(str::to_string);
    let torch_ext = matches!(ext.as_deref(), Some("pt" | "pth" | "bin" | "ckpt"));
    let one = vec![(path.to_path_buf(), file_name(path))];
    match sniff(path) {
        Magic::Gguf => gguf_set::open_file(path),
        _ if ext.as_deref() == Some("gguf") => gguf_set::open_file(path),
        Magic::Torch => torch_set::open(one, &[], Vec::new()),
        Magic::Other if torch_ext => torch_set::open(one, &[], Vec::new()),
        Magic::Other => open_safetensors_set(SourceFormat::Safetensors, one, &[], None),
    }
}

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Magic {
    /// `GGUF`.
    Gguf,
    /// A zip archive (torch.save's format since torch 1.6) or a legacy
    /// torch.save pickle stream.
    Torch,
    /// Anything else (safetensors starts with a length, not a magic).
    Other,
}

fn sniff(path: &Path) -> Magic {
    if let Some(r) = crate::remote::lookup(path) {
        // Already fetched at open (the first block of every remote file).
        let _ = r.ensure(0, 64);
    }
    let mut head = [0u8; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| {
            let mut n = 0;
            while n < head.len() {
                match f.read(&mut head[n..])? {
                    0 => break,
                    k => n += k,
                }
            }
            Ok(n)
        })
        .unwrap_or(0);
    let head = &head[..n];
    if head.starts_with(b"GGUF") {
        Magic::Gguf
    } else if torch_set::sniff(head) {
        Magic::Torch
    } else {
        Magic::Other
    }
}

/// The last component of `path`, as recorded in headers (never the whole path).
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn extension(name: &str) -> Option<&str> {
    Path::new(name).extension().and_then(|e| e.to_str())
}

/// Refuse a tensor name that appears in two files of a set. `tensors` are
/// in file order; the error names the file that repeats the name.
pub(crate) fn check_unique_names(files: &Files, tensors: &[Tensor]) -> Result<(), SourceError> {
    let mut seen: HashMap<&str, &Tensor> = HashMap::with_capacity(tensors.len());
    for t in tensors {
        if let Some(first) = seen.insert(&t.name, t) {
            let second = &files[t.extent.file].file;
            return Err(SourceError::new(
                &second.path,
                Problem::DuplicateTensor {
                    tensor: t.name.clone(),
                    first: files[first.extent.file].file.name.clone(),
                    second: second.name.clone(),
                },
            ));
        }
    }
    Ok(())
}

/// Regular files (after following symlinks) directly inside `dir`, by name.
fn list_files(dir: &Path) -> Result<Vec<String>, SourceError> {
    let rd = std::fs::read_dir(dir).map_err(|e| SourceError::io(dir, e))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| SourceError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        // Follows symlinks: Hugging Face cache snapshots are links into blobs/.
        match std::fs::metadata(entry.path()) {
            Ok(m) if m.is_file() => names.push(name),
            Ok(_) => {}
            Err(e) => return Err(SourceError::io(entry.path(), e)),
        }
    }
    names.sort();
    Ok(names)
}

/// A parsed `model.safetensors.index.json`.
#[derive(Debug, Clone)]
pub struct ShardIndex {
    pub path: PathBuf,
    /// Tensor -> shard file name.
    pub weight_map: BTreeMap<String, String>,
}

impl ShardIndex {
    /// The shard names (sorted, unique).
    pub(crate) fn shards(&self) -> Vec<String> {
        let mut shards: Vec<String> = self.weight_map.values().cloned().collect();
        shards.sort();
        shards.dedup();
        shards
    }
}

fn open_dir(dir: &Path) -> Result<Catalog, SourceError> {
    let names = list_files(dir)?;
    let has = |n: &str| names.iter().any(|x| x == n);
    let side = |skip: &str| -> Vec<(PathBuf, String)> {
        names
            .iter()
            .filter(|n| n.as_str() != skip && n.as_str() != torch_set::INDEX_JSON)
            .filter(|n| extension(n).is_none_or(|e| !CHECKPOINT_EXTENSIONS.contains(&e)))
            .map(|n| (dir.join(n), n.clone()))
            .collect()
    };
    let torch_files: Vec<String> = if has(torch_set::INDEX_JSON) {
        torch_set::shards_from_index(&dir.join(torch_set::INDEX_JSON))?
    } else {
        names
            .iter()
            .filter(|n| matches!(extension(n), Some("bin" | "pt" | "pth" | "ckpt")))
            .filter(|n| sniff(&dir.join(n)) == Magic::Torch)
            .cloned()
            .collect()
    };

    // Safetensors first, as transformers prefers them.
    let index = if has(INDEX_JSON) {
        Some(read_index(&dir.join(INDEX_JSON))?)
    } else {
        None
    };
    let shard_names: Vec<String> = match &index {
        Some(index) => index.shards(),
        None => names
            .iter()
            .filter(|n| extension(n) == Some("safetensors"))
            .cloned()
            .collect(),
    };
    if !shard_names.is_empty() {
        let format = if has("dtypes.json") {
            SourceFormat::GptOssOriginal
        } else {
            SourceFormat::Safetensors
        };
        let shards = shard_names
            .iter()
            .map(|n| (dir.join(n), n.clone()))
            .collect();
        let mut catalog = open_safetensors_set(format, shards, &side(INDEX_JSON), index.as_ref())?;
        if !torch_files.is_empty() {
            catalog.notes.push(format!(
                "the folder also holds PyTorch weights ({}); as transformers does, the safetensors weights are used",
                torch_files.join(", ")
            ));
        }
        return Ok(catalog);
    }
    if !torch_files.is_empty() {
        let is_shard = |n: &str| n.starts_with("pytorch_model-") || has(torch_set::INDEX_JSON);
        if torch_files.len() > 1 && !torch_files.iter().all(|n| is_shard(n)) {
            return Err(SourceError::invalid(
                dir,
                format!(
                    "holds several PyTorch checkpoints ({}); name the one to mount",
                    torch_files.join(", ")
                ),
            ));
        }
        let shards = torch_files
            .iter()
            .map(|n| (dir.join(n), n.clone()))
            .collect();
        return torch_set::open(shards, &side(INDEX_JSON), Vec::new());
    }
    let ggufs: Vec<&String> = names
        .iter()
        .filter(|n| extension(n) == Some("gguf"))
        .collect();
    if !ggufs.is_empty() {
        return gguf_set::open_dir(dir, &ggufs);
    }
    Err(SourceError::invalid(
        dir,
        "no checkpoint found (looked for *.safetensors, model.safetensors.index.json, \
         pytorch_model*.bin, *.pt, *.pth, *.ckpt and *.gguf)",
    ))
}

/// Parse a shard index (`model.safetensors.index.json`,
/// `pytorch_model.bin.index.json`).
pub(crate) fn read_index(path: &Path) -> Result<ShardIndex, SourceError> {
    if let Some(r) = crate::remote::lookup(path) {
        r.ensure(0, r.len)
            .map_err(|e| SourceError::invalid(path, e.to_string()))?;
    }
    let text = std::fs::read(path).map_err(|e| SourceError::io(path, e))?;
    parse_index(path, &text)
}

/// Parse the bytes of `model.safetensors.index.json` (`path` is only for
/// messages). The entry point for fuzzing.
pub fn parse_index(path: &Path, bytes: &[u8]) -> Result<ShardIndex, SourceError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| SourceError::new(path, Problem::HeaderJson(e.to_string())))?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| SourceError::invalid(path, "no 'weight_map' object"))?;
    let mut weight_map = BTreeMap::new();
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| {
            SourceError::invalid(
                path,
                format!("weight_map entry '{tensor}' is not a file name"),
            )
        })?;
        if shard.contains('/') || shard.starts_with('.') {
            return Err(SourceError::invalid(
                path,
                format!(
                    "weight_map entry '{tensor}' names '{shard}', which is not a file in this folder"
                ),
            ));
        }
        weight_map.insert(tensor.clone(), shard.to_string());
    }
    Ok(ShardIndex {
        path: path.to_path_buf(),
        weight_map,
    })
}

/// Open tensor files `shards` (path, relative name) and side files `side`,
/// validate them together and build the catalog.
fn open_safetensors_set(
    format: SourceFormat,
    shards: Vec<(PathBuf, String)>,
    side: &[(PathBuf, String)],
    index: Option<&ShardIndex>,
) -> Result<Catalog, SourceError> {
    let mut files = Files::default();
    let mut tensors: Vec<Tensor> = Vec::new();

    for (path, name) in &shards {
        if !path.exists() {
            return Err(SourceError::invalid(
                path,
                match index {
                    Some(i) => format!("shard named by {} is missing", i.path.display()),
                    None => "missing".to_string(),
                },
            ));
        }
        let file = SourceFile::open(path, name.clone())?;
        let header = safetensors::parse(&file)?;
        let id = files.push(file, header.metadata, FileRole::Tensors);
        tensors.extend(header.tensors.into_iter().map(|t| {
            let extent = Extent {
                file: id,
                offset: t.start,
                len: t.end - t.start,
            };
            Tensor::new(t.name, t.dtype, t.shape, extent)
        }));
    }
    check_unique_names(&files, &tensors)?;
    if let Some(index) = index {
        check_weight_map(index, &files, &tensors)?;
    }

    let mut config = None;
    for (path, name) in side {
        let file = SourceFile::open(path, name.clone())?;
        if name == "config.json" {
            config = Some(parse_json_file(&file)?);
        }
        if name == "dtypes.json" {
            apply_dtypes_json(&file, &mut tensors)?;
        }
        files.push(file, BTreeMap::new(), FileRole::Side);
    }

    pair_mxfp4(&mut tensors);
    pair_fp8_block(&mut tensors, config.as_ref());
    Ok(Catalog {
        format,
        files,
        tensors,
        config,
        gguf_metadata: None,
        pickle: None,
        notes: Vec::new(),
    })
}

/// Every weight_map entry must name the shard that holds the tensor; tensors
/// the map does not list are served anyway (with a warning).
fn check_weight_map(
    index: &ShardIndex,
    files: &Files,
    tensors: &[Tensor],
) -> Result<(), SourceError> {
    let holder: HashMap<&str, &str> = tensors
        .iter()
        .map(|t| (t.name.as_str(), files[t.extent.file].file.name.as_str()))
        .collect();
    for (tensor, shard) in &index.weight_map {
        if holder.get(tensor.as_str()) != Some(&shard.as_str()) {
            return Err(SourceError::invalid(
                &index.path,
                format!("weight_map puts tensor '{tensor}' in {shard}, which does not hold it"),
            ));
        }
    }
    for t in tensors {
        if !index.weight_map.contains_key(&t.name) {
            log::warn!(
                "{}: tensor '{}' in {} is not in the weight_map; serving it anyway",
                index.path.display(),
                t.name,
                files[t.extent.file].file.name
            );
        }
    }
    Ok(())
}

pub(crate) fn parse_json_file(file: &SourceFile) -> Result<Value, SourceError> {
    file.load(0, file.len)?;
    parse_json(&file.path, file.data())
}

/// Parse a side JSON file such as `config.json` (`path` is only for
/// messages). The entry point for fuzzing.
pub fn parse_json(path: &Path, bytes: &[u8]) -> Result<Value, SourceError> {
    serde_json::from_slice(bytes)
        .map_err(|e| SourceError::invalid(path, format!("not valid JSON: {e}")))
}

/// Parse gpt-oss `dtypes.json` (tensor name -> "BF16" | "FP4" | "UE8" | ...;
/// `path` is only for messages). The entry point for fuzzing.
pub fn parse_dtypes(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, String>, SourceError> {
    let Value::Object(map) = parse_json(path, bytes)? else {
        return Err(SourceError::invalid(path, "not a JSON object"));
    };
    map.into_iter()
        .map(|(name, dt)| match dt {
            Value::String(dt) => Ok((name, dt)),
            _ => Err(SourceError::invalid(
                path,
                format!("entry '{name}' is not a string"),
            )),
        })
        .collect()
}

/// Apply gpt-oss `dtypes.json` as logical dtypes.
fn apply_dtypes_json(file: &SourceFile, tensors: &mut [Tensor]) -> Result<(), SourceError> {
    file.load(0, file.len)?;
    let map = parse_dtypes(&file.path, file.data())?;
    let index = index_by_name(tensors);
    let mut updates = Vec::new();
    for (name, dt) in map {
        match index.get(name.as_str()) {
            Some(&i) => updates.push((i, dt)),
            None => log::warn!(
                "{}: names tensor '{name}', which the checkpoint does not have",
                file.path.display()
            ),
        }
    }
    for (i, dt) in updates {
        tensors[i.index()].logical = dt;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_json_entry_points() {
        let p = Path::new("m/model.safetensors.index.json");
        let index = parse_index(
            p,
            br#"{"weight_map":{"a":"s1.safetensors","b":"s1.safetensors"}}"#,
        );
        assert_eq!(index.unwrap().shards(), ["s1.safetensors"]);
        let err = |r: Result<ShardIndex, SourceError>| r.unwrap_err().to_string();
        assert!(err(parse_index(p, b"{")).starts_with("m/model.safetensors.index.json: "));
        assert!(err(parse_index(p, br#"{"weight_map":[]}"#)).contains("no 'weight_map'"));
        assert!(err(parse_index(p, br#"{"weight_map":{"a":"../x"}}"#)).contains("not a file"));

        let d = Path::new("dtypes.json");
        let dtypes = parse_dtypes(d, br#"{"a":"FP4","b":"UE8"}"#).unwrap();
        assert_eq!(dtypes["b"], "UE8");
        assert!(
            parse_dtypes(d, br#"{"a":1}"#)
                .unwrap_err()
                .to_string()
                .contains("'a' is not a string")
        );
        assert!(
            parse_dtypes(d, b"[]")
                .unwrap_err()
                .to_string()
                .contains("not a JSON object")
        );
        assert!(
            parse_json(d, b"{")
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
    }
}
