//! GGUF sources: one `.gguf` file or a split set, into a catalog.
//!
//! A split set is `NAME-00001-of-0000N.gguf` ... `NAME-0000N-of-0000N.gguf`
//! (llama.cpp's `gguf-split`); naming any of its files, or the folder that
//! holds it, mounts the whole set as one model. Every file must be present,
//! and when a file carries `split.no` / `split.count` they must agree with
//! its name. Tensor names are unique across the set.
//!
//! GGUF tensors enter the catalog with their numpy-order shape. Types stored
//! one value per element (F32, F16, BF16, F64, I8..I64) keep their dtype;
//! block-quantized types are stored as U8 rows of whole blocks (the logical
//! shape with its last axis in bytes), their ggml type and logical shape
//! recorded beside (`Tensor::ggml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::catalog::{Catalog, Extent, FileId, FileRole, Files, Ggml, SourceFormat, Tensor};
use crate::error::SourceError;
use crate::naming::{gguf_split, gguf_split_part};
use crate::source::gguf::{self, GgufTensor};
use crate::source::{check_unique_names, file_name};
use crate::store::Opener;

/// Open a `.gguf` file (and the rest of its split set, if it is one).
pub fn open_file(opener: &Opener, path: &Path) -> Result<Catalog, SourceError> {
    let name = file_name(path);
    match gguf_split(&name) {
        Some((prefix, _, count)) => {
            let dir = path.parent().unwrap_or(Path::new("."));
            open_set(opener, set_files(dir, prefix, count))
        }
        None => open_set(opener, vec![(path.to_path_buf(), name)]),
    }
}

/// Open the GGUF model in a folder whose `.gguf` files are `ggufs`: one
/// file, or one split set.
pub fn open_dir(opener: &Opener, dir: &Path, ggufs: &[&String]) -> Result<Catalog, SourceError> {
    let sets: BTreeMap<(&str, u32), usize> =
        ggufs
            .iter()
            .filter_map(|n| gguf_split(n))
            .fold(BTreeMap::new(), |mut m, (p, _, c)| {
                *m.entry((p, c)).or_default() += 1;
                m
            });
    let singles: Vec<&&String> = ggufs.iter().filter(|n| gguf_split(n).is_none()).collect();
    match (sets.len(), singles.len()) {
        (0, 1) => open_set(opener, vec![(dir.join(singles[0]), singles[0].to_string())]),
        (1, 0) => {
            let (&(prefix, count), _) = sets.iter().next().expect("one set");
            open_set(opener, set_files(dir, prefix, count))
        }
        _ => {
            let list: Vec<&str> = ggufs.iter().map(|s| s.as_str()).collect();
            Err(SourceError::invalid(
                dir,
                format!(
                    "holds several GGUF models ({}); name the one to mount",
                    list.join(", ")
                ),
            ))
        }
    }
}

fn set_files(dir: &Path, prefix: &str, count: u32) -> Vec<(PathBuf, String)> {
    (1..=count)
        .map(|i| {
            let n = gguf_split_part(prefix, i, count);
            (dir.join(&n), n)
        })
        .collect()
}

fn open_set(opener: &Opener, paths: Vec<(PathBuf, String)>) -> Result<Catalog, SourceError> {
    let count = paths.len() as u64;
    let mut files = Files::default();
    let mut tensors = Vec::new();
    let mut metadata = None;
    for (i, (path, name)) in paths.iter().enumerate() {
        if !path.exists() {
            return Err(SourceError::invalid(
                path,
                format!("missing: part {} of the {count}-file GGUF split set", i + 1),
            ));
        }
        let file = opener.open(path, name.clone())?;
        let header = gguf::parse(&file)?;
        if count > 1 {
            let check = |key: &str, want: u64| match header.get(key).and_then(|v| v.as_u64()) {
                Some(v) if v != want => Err(SourceError::invalid(
                    path,
                    format!("{key} is {v}, but the file name says {want}"),
                )),
                _ => Ok(()),
            };
            check("split.count", count)?;
            check("split.no", i as u64)?;
        }
        if metadata.is_none() {
            metadata = Some(header.metadata);
        }
        let id = files.push(file, BTreeMap::new(), FileRole::Tensors);
        tensors.extend(header.tensors.iter().map(|t| tensor(t, id)));
    }
    check_unique_names(&files, &tensors)?;
    Ok(Catalog {
        format: SourceFormat::Gguf,
        files,
        tensors,
        config: None,
        gguf_metadata: metadata,
        pickle: None,
        notes: Vec::new(),
        packed: Vec::new(),
        unconverted: None,
    })
}

/// A GGUF tensor info as a catalog tensor (its extent was validated by the
/// parser: whole blocks per row, inside the file, no overlap).
fn tensor(t: &GgufTensor, file: FileId) -> Tensor {
    let logical = t.shape();
    let (dtype, shape) = match t.ggml_type.plain_dtype() {
        Some(d) => (d, logical.clone()),
        None => {
            let mut s = logical.clone();
            if let Some(last) = s.last_mut() {
                *last = *last / t.ggml_type.block_size() * t.ggml_type.type_size();
            }
            (crate::dtype::Dtype::U8, s)
        }
    };
    let extent = Extent {
        file,
        offset: t.offset,
        len: t.n_bytes,
    };
    Tensor {
        logical: t.ggml_type.name().to_string(),
        ggml: Some(Ggml {
            ty: t.ggml_type,
            shape: logical,
        }),
        ..Tensor::new(t.name.clone(), dtype, shape, extent)
    }
}
