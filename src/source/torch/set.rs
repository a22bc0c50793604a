//! PyTorch sources into a catalog: one `torch.save` file, or a Hugging Face
//! folder of `pytorch_model.bin` / `pytorch_model-0000i-of-0000n.bin` shards
//! (with `pytorch_model.bin.index.json`).
//!
//! Each file is read by `source::torch` (no pickle code ever runs). Every
//! tensor enters the catalog under its path in the pickled object; a tensor
//! that is a plain little-endian run of its storage is an exact extent of the
//! file (served as is), any other (a transposed or stepped view, an expanded
//! one, a big-endian file) carries its [`Layout`] and is gathered on demand.
//! The pickled values that are not tensors go to the manifest (`pickle`),
//! the reader's notes to its notes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::catalog::{
    Catalog, Extent, FileId, FileRole, Files, Layout, SourceFormat, Tensor, pair_fp8_block,
    pair_mxfp4,
};
use crate::dtype::numel;
use crate::error::SourceError;
use crate::source::check_unique_names;
use crate::source::side::{open_side, parse_json_file};
use crate::source::torch::{self, Checkpoint, TensorRef, TorchError};
use crate::store::{Opener, SourceFile};

/// Name of the shard index of a sharded PyTorch checkpoint.
pub const INDEX_JSON: &str = "pytorch_model.bin.index.json";

/// Is `data` (a file's first bytes or all of it) a torch.save file?
pub fn sniff(data: &[u8]) -> bool {
    torch::is_torch(data)
}

/// Open tensor files `shards` (path, relative name) and side files `side`.
pub fn open(
    opener: &Opener,
    shards: Vec<(PathBuf, String)>,
    side: &[(PathBuf, String)],
    notes: Vec<String>,
) -> Result<Catalog, SourceError> {
    let mut files = Files::default();
    let mut tensors = Vec::new();
    let mut pickles = Map::new();
    let mut notes = notes;
    for (path, name) in &shards {
        if !path.exists() {
            return Err(SourceError::invalid(path, "missing"));
        }
        let file = opener.open(path, name.clone())?;
        prefetch_zip(&file)?;
        let ckpt = torch::read(&Ranged(&file))
            .map_err(|e| SourceError::invalid(&file.path, e.to_string()))?;
        let id = files.push(file, BTreeMap::new(), FileRole::Tensors);
        for t in &ckpt.tensors {
            tensors.push(tensor(&ckpt, t, id));
        }
        let prefix = if shards.len() > 1 {
            format!("{name}: ")
        } else {
            String::new()
        };
        notes.extend(ckpt.notes.iter().map(|n| format!("{prefix}{n}")));
        if let Some(v) = prune(&ckpt.values) {
            pickles.insert(name.clone(), v);
        }
    }
    check_unique_names(&files, &tensors)?;
    let mut config = None;
    for (path, name) in side {
        let Some(file) = open_side(opener, path, name, &mut notes)? else {
            continue;
        };
        if name == "config.json" {
            config = Some(parse_json_file(&file)?);
        }
        files.push(file, BTreeMap::new(), FileRole::Side);
    }
    pair_mxfp4(&mut tensors);
    pair_fp8_block(&mut tensors, config.as_ref());
    let pickle = match pickles.len() {
        0 => None,
        1 if shards.len() == 1 => pickles.into_iter().next().map(|(_, v)| v),
        _ => Some(Value::Object(pickles)),
    };
    Ok(Catalog {
        format: SourceFormat::Pytorch,
        files,
        tensors,
        config,
        gguf_metadata: None,
        pickle,
        notes,
        packed: Vec::new(),
        unconverted: None,
    })
}

/// A tensor of a checkpoint as a catalog tensor.
fn tensor(ckpt: &Checkpoint, t: &TensorRef, file: FileId) -> Tensor {
    let s = &ckpt.storages[t.storage];
    let elem = t.dtype.bits() / 8;
    let n = numel(&t.shape).unwrap_or(0);
    let contiguous_strides = row_major(&t.shape);
    let plain = !ckpt.big_endian
        && (n <= 1
            || t.shape
                .iter()
                .zip(&t.strides)
                .zip(&contiguous_strides)
                .all(|((&d, &st), &c)| d == 1 || st == c));
    let start = s.offset + t.storage_offset * elem;
    if plain {
        let extent = Extent {
            file,
            offset: start.min(s.offset + s.len),
            len: n * elem,
        };
        return Tensor::new(t.path.clone(), t.dtype, t.shape.clone(), extent);
    }
    // The part of the storage the view spans (validated by the reader to
    // lie inside it).
    let last: u64 = t
        .shape
        .iter()
        .zip(&t.strides)
        .map(|(&d, &st)| d.saturating_sub(1) * st)
        .sum();
    let span = if n == 0 { 0 } else { (last + 1) * elem };
    let extent = Extent {
        file,
        offset: start,
        len: span,
    };
    Tensor {
        layout: Some(Box::new(Layout {
            storage: Extent {
                file,
                offset: s.offset,
                len: s.len,
            },
            offset: t.storage_offset,
            strides: t.strides.clone(),
            big_endian: ckpt.big_endian,
        })),
        ..Tensor::new(t.path.clone(), t.dtype, t.shape.clone(), extent)
    }
}

/// Row-major strides (in elements) of `shape`.
pub fn row_major(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1].saturating_mul(shape[a + 1]);
    }
    strides
}

/// A source file as the torch reader reads it: each range it asks for is
/// made local first (fetched, for a remote file).
struct Ranged<'a>(&'a SourceFile);

impl torch::Bytes for Ranged<'_> {
    fn size(&self) -> u64 {
        self.0.len
    }

    fn read(&self, at: u64, len: u64) -> Result<&[u8], TorchError> {
        self.0
            .read_range(at, len)
            .map_err(|e| TorchError::Unavailable(e.problem.to_string()))
    }

    fn prefetch(&self, ranges: &[(u64, u64)]) {
        let _ = self.0.ensure_ranges(ranges);
    }
}

/// Make local, in two rounds of parallel fetches, what the reader reads of
/// a zip after its directory: every entry's local header, then the small
/// entries (`data.pkl`, `byteorder`, ...); storages stay where they are.
/// (A local file has every byte already: this only reads its directory
/// once more.) Anything wrong with the zip is left to the reader to report.
fn prefetch_zip(file: &SourceFile) -> Result<(), SourceError> {
    if !file.read_head(4)?.starts_with(b"PK") {
        return Ok(());
    }
    let bytes = Ranged(file);
    let Ok(archive) = torch::zip::Archive::read(&bytes) else {
        return Ok(());
    };
    let headers: Vec<(u64, u64)> = archive
        .entries()
        .iter()
        .map(|e| (e.local_header, 30 + e.name.len() as u64 + 128))
        .collect();
    file.ensure_ranges(&headers)?;
    let small: Vec<(u64, u64)> = archive
        .entries()
        .iter()
        .filter(|e| !is_storage(&e.name))
        .filter_map(|e| archive.stored_payload(e).ok())
        .collect();
    file.ensure_ranges(&small)
}

/// `<archive>/data/<key>`: a storage's bytes.
fn is_storage(name: &str) -> bool {
    name.rsplit_once("/data/")
        .is_some_and(|(_, key)| !key.is_empty() && !key.contains('/'))
}

/// The pickled values without the tensors (which are in `raw/`): object
/// members that are tensors, or containers of nothing but tensors, are
/// dropped; `None` if nothing is left.
fn prune(v: &Value) -> Option<Value> {
    match v {
        Value::Object(o) if o.contains_key("gyro_tensor") && o.len() == 1 => None,
        Value::Object(o) => {
            let kept: Map<String, Value> = o
                .iter()
                .filter_map(|(k, v)| prune(v).map(|v| (k.clone(), v)))
                .collect();
            (!kept.is_empty() || o.is_empty()).then_some(Value::Object(kept))
        }
        Value::Array(a) => {
            let kept: Vec<Value> = a.iter().map(|v| prune(v).unwrap_or(Value::Null)).collect();
            let all_tensors =
                !a.is_empty() && kept.iter().all(Value::is_null) && a.iter().all(|v| !v.is_null());
            (!all_tensors).then_some(Value::Array(kept))
        }
        other => Some(other.clone()),
    }
}

/// The shard file names of `pytorch_model.bin.index.json` at `path`.
pub fn shards_from_index(opener: &Opener, path: &Path) -> Result<Vec<String>, SourceError> {
    let index = crate::source::side::read_index(opener, path)?;
    Ok(index.shards())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prunes_tensors_keeps_values() {
        let v = json!({
            "model": {"w": {"gyro_tensor": "model.w"}},
            "optimizer": {"state": {"0": {"exp_avg": {"gyro_tensor": "x"}}}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
            "iter_num": 3,
            "empty": {},
            "list": [{"gyro_tensor": "a"}, 2],
        });
        assert_eq!(
            prune(&v).unwrap(),
            json!({
                "optimizer": {"param_groups": [{"lr": 0.1, "params": [0, 1]}]},
                "iter_num": 3,
                "empty": {},
                "list": [null, 2],
            })
        );
        assert_eq!(prune(&json!({"w": {"gyro_tensor": "w"}})), None);
    }

    #[test]
    fn row_major_strides() {
        assert_eq!(row_major(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(row_major(&[]), Vec::<u64>::new());
    }
}
