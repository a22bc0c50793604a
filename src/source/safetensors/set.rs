//! Safetensors sources into a catalog: one file, shards named by
//! `model.safetensors.index.json`, or several `.safetensors` files without
//! an index (a gpt-oss `original/` folder with `dtypes.json` included).
//!
//! Each shard's header is read by [`super::parse`]; this module checks the
//! set as a whole (tensor names unique across shards, the index's
//! `weight_map` agreeing with what each shard holds), reads `config.json`
//! and `dtypes.json`, pairs quantized tensors (MXFP4 blocks/scales,
//! block-scaled FP8), and recognises the weights of quantization libraries
//! (`source::quantized`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::catalog::{
    Catalog, Extent, FileRole, Files, SourceFormat, Tensor, pair_fp8_block, pair_mxfp4,
};
use crate::error::SourceError;
use crate::source::check_unique_names;
use crate::source::quantized;
use crate::source::side::{self, ShardIndex};
use crate::store::Opener;

/// Name of the shard index of a sharded safetensors checkpoint.
pub const INDEX_JSON: &str = "model.safetensors.index.json";

/// Open tensor files `shards` (path, relative name) and side files `side`,
/// validate them together and build the catalog.
pub(crate) fn open(
    opener: &Opener,
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
        let file = opener.open(path, name.clone())?;
        let header = super::parse(&file)?;
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
    let mut notes = Vec::new();
    let mut quant_side = BTreeMap::new();
    for (path, name) in side {
        let Some(file) = side::open_side(opener, path, name, &mut notes)? else {
            continue;
        };
        if name == "config.json" {
            config = Some(side::parse_json_file(&file)?);
        }
        if name == "dtypes.json" {
            side::apply_dtypes_json(&file, &mut tensors)?;
        }
        if quantized::SIDE_FILES.contains(&name.as_str()) {
            // unreadable: recognised as the format with an unusable config
            let v = side::parse_json_file(&file).unwrap_or(serde_json::Value::Null);
            quant_side.insert(name.clone(), v);
        }
        files.push(file, BTreeMap::new(), FileRole::Side);
    }

    pair_mxfp4(&mut tensors);
    pair_fp8_block(&mut tensors, config.as_ref());
    let mut catalog = Catalog {
        format,
        files,
        tensors,
        config,
        gguf_metadata: None,
        pickle: None,
        notes,
        packed: Vec::new(),
        unconverted: None,
    };
    quantized::recognize(&mut catalog, &quant_side);
    Ok(catalog)
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
