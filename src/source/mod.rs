//! Source readers: turn a checkpoint on disk into a [`Catalog`].
//!
//! [`open`] decides what SOURCE is (a file or a folder, which format) and
//! hands each file to its format's reader. Readers parse headers only; tensor
//! bytes stay in the memory map until a view reads them. Anything that cannot
//! be read is refused here with one [`SourceError`] naming the file, so a mount
//! either happens completely or not at all.
//!
//! - `mapped`: read-only memory maps with change detection.
//! - `safetensors`: header parser and validator.
//! - `gguf`: GGUF header parser and validator; `gguf_set`: GGUF files and
//!   split sets into a catalog.
//! - this module: folder layouts (single file, shards with or without
//!   `model.safetensors.index.json`, gpt-oss `original/` with `dtypes.json`,
//!   Hugging Face cache snapshots of symlinks) and side files.

pub mod gguf;
mod gguf_set;
pub mod mapped;
pub mod safetensors;
pub mod torch;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::catalog::{Catalog, SourceFormat, Tensor, index_by_name, pair_fp8_block, pair_mxfp4};
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
    let meta = std::fs::metadata(path).map_err(|e| SourceError::io(path, e))?;
    if meta.is_dir() {
        open_dir(path)
    } else if meta.is_file() {
        if is_gguf(path) {
            return gguf_set::open_file(path);
        }
        if is_pytorch(path) {
            return Err(SourceError::invalid(
                path,
                "PyTorch checkpoints (torch.save zip, .pt/.pth/.bin) are not supported yet; \
                 mount a safetensors or GGUF copy",
            ));
        }
        let name = file_name(path);
        open_safetensors_set(
            SourceFormat::Safetensors,
            vec![(path.to_path_buf(), name)],
            &[],
            None,
        )
    } else {
        Err(SourceError::invalid(path, "not a file or a folder"))
    }
}

/// A `.gguf` file, by extension or by its magic.
fn is_gguf(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "gguf") {
        return true;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == b"GGUF"
}

/// A torch.save checkpoint: a zip (or, for old pickles, a `.pt`/`.pth`/`.bin`
/// that is not safetensors).
fn is_pytorch(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    let zip = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == b"PK\x03\x04";
    zip || path
        .extension()
        .is_some_and(|e| e == "pt" || e == "pth" || e == "bin" || e == "ckpt")
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn extension(name: &str) -> Option<&str> {
    Path::new(name).extension().and_then(|e| e.to_str())
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

fn open_dir(dir: &Path) -> Result<Catalog, SourceError> {
    let names = list_files(dir)?;
    let has = |n: &str| names.iter().any(|x| x == n);

    let shard_names: Vec<String> = if has(INDEX_JSON) {
        shards_from_index(&dir.join(INDEX_JSON))?.0
    } else {
        names
            .iter()
            .filter(|n| extension(n) == Some("safetensors"))
            .cloned()
            .collect()
    };
    if shard_names.is_empty() {
        let ggufs: Vec<&String> = names
            .iter()
            .filter(|n| extension(n) == Some("gguf"))
            .collect();
        if !ggufs.is_empty() {
            return gguf_set::open_dir(dir, &ggufs);
        }
        return Err(SourceError::invalid(
            dir,
            "no checkpoint found (looked for *.safetensors, model.safetensors.index.json and *.gguf)",
        ));
    }
    let side: Vec<String> = names
        .iter()
        .filter(|n| n.as_str() != INDEX_JSON)
        .filter(|n| extension(n).is_none_or(|e| !CHECKPOINT_EXTENSIONS.contains(&e)))
        .cloned()
        .collect();
    let format = if has("dtypes.json") {
        SourceFormat::GptOssOriginal
    } else {
        SourceFormat::Safetensors
    };
    let shards = shard_names
        .iter()
        .map(|n| (dir.join(n), n.clone()))
        .collect();
    let index = has(INDEX_JSON).then(|| dir.join(INDEX_JSON));
    let side: Vec<(PathBuf, String)> = side.iter().map(|n| (dir.join(n), n.clone())).collect();
    open_safetensors_set(format, shards, &side, index.as_deref())
}

/// Parse `model.safetensors.index.json`: the shard names (sorted, unique) and
/// the weight map.
fn shards_from_index(path: &Path) -> Result<(Vec<String>, BTreeMap<String, String>), SourceError> {
    let text = std::fs::read(path).map_err(|e| SourceError::io(path, e))?;
    let v: Value = serde_json::from_slice(&text)
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
    let mut shards: Vec<String> = weight_map.values().cloned().collect();
    shards.sort();
    shards.dedup();
    Ok((shards, weight_map))
}

/// Open tensor files `shards` (path, relative name) and side files `side`,
/// validate them together and build the catalog.
fn open_safetensors_set(
    format: SourceFormat,
    shards: Vec<(PathBuf, String)>,
    side: &[(PathBuf, String)],
    index: Option<&Path>,
) -> Result<Catalog, SourceError> {
    let mut files = Vec::new();
    let mut file_metadata = Vec::new();
    let mut tensors: Vec<Tensor> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();

    for (path, name) in &shards {
        if !path.exists() {
            let from = index.map(|i| i.display().to_string());
            return Err(SourceError::invalid(
                path,
                match from {
                    Some(i) => format!("shard named by {i} is missing"),
                    None => "missing".to_string(),
                },
            ));
        }
        let file = SourceFile::open(path, name.clone())?;
        let header = safetensors::parse(&file)?;
        let fi = files.len();
        for t in header.tensors {
            if let Some(&other) = seen.get(&t.name) {
                return Err(SourceError::new(
                    path,
                    Problem::DuplicateTensor {
                        tensor: t.name,
                        first: shards[other].1.clone(),
                        second: name.clone(),
                    },
                ));
            }
            seen.insert(t.name.clone(), fi);
            tensors.push(Tensor {
                logical: t.dtype.name().to_string(),
                name: t.name,
                dtype: t.dtype,
                shape: t.shape,
                file: fi,
                start: t.start,
                end: t.end,
                quant: None,
                ggml: None,
            });
        }
        files.push(file);
        file_metadata.push(header.metadata);
    }

    if let Some(index) = index {
        let (_, weight_map) = shards_from_index(index)?;
        for (tensor, shard) in &weight_map {
            let holder = seen.get(tensor).map(|&fi| files[fi].name.as_str());
            if holder != Some(shard.as_str()) {
                return Err(SourceError::invalid(
                    index,
                    format!("weight_map puts tensor '{tensor}' in {shard}, which does not hold it"),
                ));
            }
        }
        for t in &tensors {
            if !weight_map.contains_key(&t.name) {
                log::warn!(
                    "{}: tensor '{}' in {} is not in the weight_map; serving it anyway",
                    index.display(),
                    t.name,
                    files[t.file].name
                );
            }
        }
    }

    let mut config = None;
    let mut side_files = Vec::new();
    for (path, name) in side {
        let file = SourceFile::open(path, name.clone())?;
        if name == "config.json" {
            config = Some(parse_json_file(&file)?);
        }
        if name == "dtypes.json" {
            apply_dtypes_json(&file, &mut tensors)?;
        }
        side_files.push(files.len());
        files.push(file);
        file_metadata.push(BTreeMap::new());
    }

    pair_mxfp4(&mut tensors);
    pair_fp8_block(&mut tensors, config.as_ref());
    Ok(Catalog {
        format,
        files,
        file_metadata,
        tensors,
        side_files,
        config,
        gguf_metadata: None,
    })
}

fn parse_json_file(file: &SourceFile) -> Result<Value, SourceError> {
    serde_json::from_slice(file.data())
        .map_err(|e| SourceError::invalid(&file.path, format!("not valid JSON: {e}")))
}

/// Apply gpt-oss `dtypes.json` (tensor name -> "BF16" | "FP4" | "UE8" | ...)
/// as logical dtypes.
fn apply_dtypes_json(file: &SourceFile, tensors: &mut [Tensor]) -> Result<(), SourceError> {
    let v = parse_json_file(file)?;
    let Value::Object(map) = v else {
        return Err(SourceError::invalid(&file.path, "not a JSON object"));
    };
    let index = index_by_name(tensors);
    let mut updates = Vec::new();
    for (name, dt) in &map {
        let dt = dt.as_str().ok_or_else(|| {
            SourceError::invalid(&file.path, format!("entry '{name}' is not a string"))
        })?;
        match index.get(name.as_str()) {
            Some(&i) => updates.push((i, dt.to_string())),
            None => log::warn!(
                "{}: names tensor '{name}', which the checkpoint does not have",
                file.path.display()
            ),
        }
    }
    for (i, dt) in updates {
        tensors[i].logical = dt;
    }
    Ok(())
}
