//! NVIDIA ModelOpt checkpoints (`export_hf_checkpoint`): NVFP4 and FP8
//! weights, named by `hf_quant_config.json` (`{"producer": ..,
//! "quantization": {"quant_algo", "group_size", "exclude_modules"}}`) or,
//! in newer exports, by config.json's `quantization_config` with
//! `quant_method: "modelopt"` (`quant_algo`, `ignore`, `config_groups`).
//!
//! A quantized linear stores `weight` (NVFP4: U8 `[out, in / 2]`, two FP4
//! E2M1 per byte, the low nibble first; FP8: F8_E4M3 `[out, in]`),
//! `weight_scale` (NVFP4: F8_E4M3 `[out, in / 16]`; FP8: F32 `[]`),
//! `weight_scale_2` (NVFP4: F32 `[]`) and `input_scale` (F32 `[]`); the
//! dequantized weight takes `weight`'s name. Dequantization is ModelOpt's
//! own (`quant::compressed_tensors`, `Global::Multiply`), in the model's
//! dtype (config.json `dtype` / `torch_dtype`).
//!
//! Refused: other `quant_algo`s (`MIXED_PRECISION`, `W4A8_AWQ`, ...), group
//! sizes other than 16, a module on `exclude_modules` stored quantized.

use std::sync::Arc;

use serde_json::Value;

use super::compressed_tensors::check_part;
use crate::catalog::packed::Packed;
use crate::catalog::{Catalog, index_by_name};
use crate::dtype::Dtype;
use crate::quant::compressed_tensors::{Codes, Dequant, Global, Grid, Layout, Out, Zero};

/// ModelOpt's `exclude_modules` patterns: `*` matches any run of
/// characters (fnmatch, as ModelOpt's exporter writes them).
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut i, mut j) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == b'?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == b'*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

/// The packed weights of a ModelOpt checkpoint. `qc` is either
/// hf_quant_config.json or config.json's `quantization_config`.
pub fn recognize(catalog: &Catalog, qc: &Value) -> Result<Vec<Packed>, String> {
    let q = qc
        .get("quantization")
        .filter(|q| q.is_object())
        .unwrap_or(qc);
    let algo = q
        .get("quant_algo")
        .and_then(Value::as_str)
        .ok_or("no quant_algo")?;
    let excluded: Vec<&str> = q
        .get("exclude_modules")
        .or_else(|| q.get("ignore"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let group_size = q.get("group_size").and_then(Value::as_u64).or_else(|| {
        q.pointer("/config_groups/group_0/weights/group_size")
            .and_then(Value::as_u64)
    });
    let nvfp4 = match algo {
        "NVFP4" | "W4A16_NVFP4" => true,
        "FP8" => false,
        other => return Err(format!("quant_algo '{other}' is not supported")),
    };
    if nvfp4 && group_size.unwrap_or(16) != 16 {
        return Err(format!(
            "NVFP4 group_size {} is not supported (16 is)",
            group_size.unwrap_or(0)
        ));
    }
    let config = catalog.config.as_ref();
    let model_dtype = config
        .and_then(|c| c.get("dtype").or_else(|| c.get("torch_dtype")))
        .and_then(Value::as_str)
        .unwrap_or("bfloat16");
    let out = match model_dtype {
        "bfloat16" => Out::Bf16,
        "float16" => Out::F16,
        "float32" => Out::F32,
        other => return Err(format!("model dtype '{other}' is not supported")),
    };
    let index = index_by_name(&catalog.tensors);
    let mut packed = Vec::new();
    for t in &catalog.tensors {
        let Some(module) = t.name.strip_suffix(".weight_scale") else {
            continue;
        };
        let ctx = |why: String| format!("{module}: {why}");
        if excluded.iter().any(|p| glob(p, module)) {
            return Err(ctx("is on exclude_modules but stored quantized".into()));
        }
        let part = |role: &str| index.get(format!("{module}.{role}").as_str()).copied();
        let w = part("weight").ok_or_else(|| ctx("no weight".into()))?;
        let wt = &catalog.tensors[w.index()];
        if wt.shape.len() != 2 {
            return Err(ctx(format!(
                "{} has shape {:?}, not 2-D",
                wt.name, wt.shape
            )));
        }
        let (rows, cols) = if nvfp4 {
            (wt.shape[0], wt.shape[1].saturating_mul(2))
        } else {
            (wt.shape[0], wt.shape[1])
        };
        let mut extra = Vec::new();
        if let Some(id) = part("input_scale") {
            extra.push(("input_scale", id));
        }
        let layout = Layout {
            scheme: "modelopt",
            rows,
            cols,
            codes: if nvfp4 { Codes::Fp4 } else { Codes::Fp8 },
            grid: if nvfp4 {
                Grid::Group { size: 16 }
            } else {
                Grid::Tensor
            },
            zero: Zero::None,
            global: if nvfp4 {
                Global::Multiply
            } else {
                Global::None
            },
            scale_dtype: if nvfp4 { Dtype::F8_E4M3 } else { Dtype::F32 },
            e8m0: false,
            scale_round: if nvfp4 { None } else { Some(out) },
            out,
            params: serde_json::json!({
                "quant_algo": algo,
                "group_size": if nvfp4 { Value::from(16) } else { Value::Null },
                "dtype": out.name(),
            }),
            extra: extra
                .iter()
                .map(|&(r, id)| (r, catalog.tensors[id.index()].len()))
                .collect(),
        };
        let d = Dequant::new(layout).map_err(ctx)?;
        let mut parts = Vec::new();
        for (role, dtype, shape) in d.expected() {
            let id = part(role).ok_or_else(|| ctx(format!("no {module}.{role}")))?;
            check_part(&catalog.tensors[id.index()], dtype, &shape).map_err(ctx)?;
            parts.push(id);
        }
        parts.extend(extra.iter().map(|&(_, id)| id));
        packed.push(Packed {
            name: format!("{module}.weight"),
            unpack: Arc::new(d),
            parts,
        });
    }
    if packed.is_empty() {
        return Err(format!(
            "no {algo} weights (no tensor named *.weight_scale)"
        ));
    }
    Ok(packed)
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn exclude_patterns() {
        assert!(glob("lm_head", "lm_head"));
        assert!(!glob("lm_head", "lm_head2"));
        assert!(glob("model.layers.*.mlp.gate", "model.layers.3.mlp.gate"));
        assert!(glob("*self_attn*", "model.layers.0.self_attn.q_proj"));
        assert!(!glob("model.layers.1*", "model.layers.0.mlp"));
        assert!(glob("*", ""));
    }
}
