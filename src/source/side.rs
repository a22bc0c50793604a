//! Side files read at open: the shard indexes of sharded Hugging Face
//! checkpoints (`model.safetensors.index.json`,
//! `pytorch_model.bin.index.json`), `config.json` and gpt-oss `dtypes.json`.
//! Each has a pure entry point from bytes ([`parse_index`], [`parse_json`],
//! [`parse_dtypes`]), fuzzed in tests/fuzz/ like the format readers.
//!
//! Which side files the model needs ([`is_needed`]): one of those that
//! cannot be read refuses the mount; any other is left out with a note
//! ([`open_side`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::catalog::{Tensor, index_by_name};
use crate::error::{Problem, SourceError};
use crate::source::file_name;
use crate::store::{Opener, SourceFile};

/// Side files the views need: the config (and gpt-oss `dtypes.json`), and
/// the tokenizer's files. Shards and indexes are needed too, by their
/// format's reader.
const NEEDED: &[&str] = &[
    "config.json",
    "dtypes.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
];

/// Does the model need side file `name` (a problem with it refuses the
/// mount), or may it be left out?
pub fn is_needed(name: &str) -> bool {
    NEEDED.contains(&name)
}

/// Open side file `name` at `path`. One the model needs and cannot be read
/// is an error; any other is left out, with a warning and a note in
/// `notes`.
pub(crate) fn open_side(
    opener: &Opener,
    path: &Path,
    name: &str,
    notes: &mut Vec<String>,
) -> Result<Option<SourceFile>, SourceError> {
    match opener.open(path, name.to_string()) {
        Ok(f) => Ok(Some(f)),
        Err(e) if is_needed(name) => Err(e),
        Err(e) => {
            log::warn!("{e}; left out");
            let why = match &e.problem {
                Problem::Refused(r) => r.short(),
                p => p.to_string(),
            };
            notes.push(format!("{name} is left out: {why}"));
            Ok(None)
        }
    }
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

/// Parse a shard index (`model.safetensors.index.json`,
/// `pytorch_model.bin.index.json`).
pub fn read_index(opener: &Opener, path: &Path) -> Result<ShardIndex, SourceError> {
    let file = opener.open(path, file_name(path))?;
    parse_index(&file.path, file.read_head(file.len)?)
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

/// Parse a side JSON file (all of it).
pub(crate) fn parse_json_file(file: &SourceFile) -> Result<Value, SourceError> {
    parse_json(&file.path, file.read_head(file.len)?)
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
pub(crate) fn apply_dtypes_json(
    file: &SourceFile,
    tensors: &mut [Tensor],
) -> Result<(), SourceError> {
    let map = parse_dtypes(&file.path, file.read_head(file.len)?)?;
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
