//! Quantized Hugging Face checkpoints: which quantization library wrote a
//! safetensors source, and which of its stored tensors make each weight
//! (`catalog::packed`).
//!
//! The format is named by the checkpoint's own config: `config.json`'s
//! `quantization_config.quant_method` (transformers' convention), MLX's
//! `quantization` object, or a side file (`hf_quant_config.json` of NVIDIA
//! ModelOpt, `quantize_config.json` of AutoGPTQ). One module per format
//! checks the config and the stored tensors together (every part present,
//! every shape what the geometry says) and returns the packed weights.
//!
//! A format gyrofs does not dequantize, or a checkpoint of a known format
//! that does not check out, leaves the converted views out with one line
//! (`Catalog::unconverted`): they would serve packed integers as if they
//! were weights. `raw/` keeps every stored tensor either way.

mod awq;
mod bnb;
mod compressed_tensors;
mod gptq;
mod mlx;
mod modelopt;

use std::collections::BTreeMap;

use serde_json::Value;

pub use crate::catalog::packed::SIDE_FILES;
use crate::catalog::packed::{Packed, PackedId};
use crate::catalog::{Catalog, index_by_name};

/// A format's recogniser: the quantization config (the object that names
/// the format) and the catalog in, the packed weights out, or why not (one
/// line).
pub type Recognize = fn(&Catalog, &Value) -> Result<Vec<Packed>, String>;

/// Formats by `quant_method` (or by the name this module gives a format
/// without one: `mlx`, `modelopt`).
const FORMATS: &[(&str, Recognize)] = &[
    // one line per format, sorted by name
    ("awq", awq::recognize),
    ("bitsandbytes", bnb::recognize),
    ("compressed-tensors", compressed_tensors::recognize),
    ("gptq", gptq::recognize),
    ("mlx", mlx::recognize),
    ("modelopt", modelopt::recognize),
];

/// `quant_method`s whose tensors other code handles: MXFP4 and block-scaled
/// FP8 pairs (`catalog::pair_mxfp4`, `catalog::pair_fp8_block`).
const PAIRED: &[&str] = &["mxfp4", "fp8"];

/// Recognise the quantization of `catalog` (its `config.json` and the
/// parsed side files `side`, by name) and record its packed weights, or
/// why the converted views cannot be built.
pub fn recognize(catalog: &mut Catalog, side: &BTreeMap<String, Value>) {
    let Some((method, qc)) = method(catalog.config.as_ref(), side) else {
        return;
    };
    if PAIRED.contains(&method.as_str()) {
        return;
    }
    let Some((_, recognize)) = FORMATS.iter().find(|(m, _)| *m == method) else {
        catalog.unconverted = Some(format!(
            "the weights are quantized by '{method}', which gyrofs does not dequantize \
             (raw/ holds the stored tensors)"
        ));
        return;
    };
    match recognize(catalog, &qc).and_then(|packed| link(catalog, packed)) {
        Ok(()) => {}
        Err(why) => catalog.unconverted = Some(format!("{method} checkpoint: {why}")),
    }
}

/// The quantization method and its config, if the source names one.
fn method(config: Option<&Value>, side: &BTreeMap<String, Value>) -> Option<(String, Value)> {
    let mlx = config
        .and_then(|c| c.get("quantization"))
        .filter(|q| q.is_object());
    if let Some(qc) = config.and_then(|c| c.get("quantization_config")) {
        let m = qc.get("quant_method").and_then(Value::as_str);
        // mlx-lm writes its `quantization` object again as
        // `quantization_config`, without a quant_method
        if let (None, Some(q)) = (m, mlx) {
            return Some(("mlx".into(), q.clone()));
        }
        return Some((m.unwrap_or("unnamed").to_string(), qc.clone()));
    }
    if let Some(q) = mlx {
        return Some(("mlx".into(), q.clone()));
    }
    if let Some(q) = side.get("hf_quant_config.json") {
        return Some(("modelopt".into(), q.clone()));
    }
    if let Some(q) = side.get("quantize_config.json") {
        let m = q
            .get("quant_method")
            .and_then(Value::as_str)
            .unwrap_or("gptq");
        return Some((m.to_string(), q.clone()));
    }
    None
}

/// Record `packed` in the catalog: each part names its weight; no tensor is
/// a part of two weights, and no output name is taken twice.
fn link(catalog: &mut Catalog, packed: Vec<Packed>) -> Result<(), String> {
    let mut outputs: BTreeMap<&str, ()> = BTreeMap::new();
    for p in &packed {
        if p.parts.is_empty() || p.parts.len() != p.unpack.roles().len() {
            return Err(format!(
                "{}: {} parts for {} roles",
                p.name,
                p.parts.len(),
                p.unpack.roles().len()
            ));
        }
        if outputs.insert(p.name.as_str(), ()).is_some() {
            return Err(format!("two quantized weights are called {}", p.name));
        }
    }
    let index = index_by_name(&catalog.tensors);
    for p in &packed {
        // an unquantized tensor of the output's name (other than a part)
        if let Some(&id) = index.get(p.name.as_str())
            && !p.parts.contains(&id)
        {
            return Err(format!("{} is both stored and quantized", p.name));
        }
    }
    for (i, p) in packed.iter().enumerate() {
        for &part in &p.parts {
            let t = &mut catalog.tensors[part.index()];
            if t.packed.is_some() || t.quant.is_some() {
                return Err(format!("{} is a part of two weights", t.name));
            }
            t.packed = Some(PackedId(i as u32));
        }
    }
    catalog.packed = packed;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Files, SourceFormat};

    fn catalog(config: Value) -> Catalog {
        Catalog {
            format: SourceFormat::Safetensors,
            files: Files::default(),
            tensors: Vec::new(),
            config: Some(config),
            gguf_metadata: None,
            pickle: None,
            notes: Vec::new(),
            packed: Vec::new(),
            unconverted: None,
        }
    }

    #[test]
    fn an_unknown_method_leaves_the_converted_views_out() {
        let mut c = catalog(serde_json::json!({"quantization_config": {"quant_method": "hqq"}}));
        recognize(&mut c, &BTreeMap::new());
        let why = c.unconverted.unwrap();
        assert!(why.contains("'hqq'") && why.contains("raw/"), "{why}");
        for known in ["fp8", "mxfp4"] {
            let mut c =
                catalog(serde_json::json!({"quantization_config": {"quant_method": known}}));
            recognize(&mut c, &BTreeMap::new());
            assert!(c.unconverted.is_none(), "{known}");
        }
        let mut c = catalog(serde_json::json!({"model_type": "llama"}));
        recognize(&mut c, &BTreeMap::new());
        assert!(c.unconverted.is_none());
    }

    #[test]
    fn names_the_method() {
        let none = BTreeMap::new();
        let c = serde_json::json!({"quantization_config": {"quant_method": "gptq", "bits": 4}});
        assert_eq!(method(Some(&c), &none).unwrap().0, "gptq");
        let c = serde_json::json!({"quantization": {"group_size": 64, "bits": 4}});
        assert_eq!(method(Some(&c), &none).unwrap().0, "mlx");
        let c = serde_json::json!({"quantization": {"group_size": 64, "bits": 4},
            "quantization_config": {"group_size": 64, "bits": 4}});
        assert_eq!(method(Some(&c), &none).unwrap().0, "mlx");
        let c = serde_json::json!({"model_type": "llama"});
        assert!(method(Some(&c), &none).is_none());
        let mut side = BTreeMap::new();
        side.insert(
            "quantize_config.json".to_string(),
            serde_json::json!({"bits": 4}),
        );
        assert_eq!(method(Some(&c), &side).unwrap().0, "gptq");
        side.insert("hf_quant_config.json".to_string(), serde_json::json!({}));
        assert_eq!(method(None, &side).unwrap().0, "modelopt");
    }
}
