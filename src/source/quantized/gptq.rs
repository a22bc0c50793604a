//! GPTQ checkpoints (`quant_method: gptq`, from `config.json`'s
//! `quantization_config` or AutoGPTQ's `quantize_config.json`): each
//! quantized linear layer `<module>` is stored as `<module>.qweight`,
//! `.qzeros`, `.scales` and `.g_idx`, and becomes `<module>.weight`
//! (`quant::gptq`). Layers the quantizer left alone (`lm_head`, modules a
//! `dynamic` rule skipped) are stored as plain `<module>.weight` and pass
//! through.
//!
//! Checked: `bits` (2, 3, 4, 8), `group_size` (-1 or positive),
//! `checkpoint_format` (`gptq`, `gptq_v2`), `pack_dtype` (int32); every
//! part present with its dtype and the shape the geometry gives. With
//! gptqmodel's per-module `dynamic` overrides, each layer's bit width and
//! group count are read from its shapes (`g_idx` gives the inputs) and must
//! still be one gyrofs dequantizes.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::catalog::packed::Packed;
use crate::catalog::{Catalog, Tensor, TensorId, index_by_name};
use crate::dtype::Dtype;
use crate::quant::gptq::{Geometry, Gptq, ROLES, Zeros};

/// The parts of the quantized layer `module`, in `roles` order, with the
/// dtype each must have; the first must exist (it names the layer).
pub(super) fn parts<'a>(
    catalog: &'a Catalog,
    index: &HashMap<&str, TensorId>,
    module: &str,
    roles: &[&str],
    dtypes: &[Dtype],
) -> Result<Vec<(TensorId, &'a Tensor)>, String> {
    let mut found = Vec::with_capacity(roles.len());
    for (role, &dtype) in roles.iter().zip(dtypes) {
        let name = format!("{module}.{role}");
        let Some(&id) = index.get(name.as_str()) else {
            return Err(format!("{name} is missing"));
        };
        let t = &catalog.tensors[id.index()];
        if t.dtype != dtype {
            return Err(format!("{name} is {}, expected {dtype}", t.dtype));
        }
        if t.layout.is_some() || t.quant.is_some() {
            return Err(format!("{name} is not a plain little-endian tensor"));
        }
        found.push((id, t));
    }
    Ok(found)
}

/// Refuse a part whose shape is not the geometry's.
pub(super) fn check_shapes(
    parts: &[(TensorId, &Tensor)],
    want: &[Vec<u64>],
    what: &str,
) -> Result<(), String> {
    for ((_, t), w) in parts.iter().zip(want) {
        if &t.shape != w {
            return Err(format!(
                "{} has shape {:?}, expected {w:?} for {what}",
                t.name, t.shape
            ));
        }
    }
    Ok(())
}

/// The checked quantization config.
#[derive(Debug)]
struct Config {
    bits: u32,
    group_size: i64,
    desc_act: bool,
    sym: bool,
    zeros: Zeros,
    /// gptqmodel's per-module overrides are present: shapes decide.
    dynamic: bool,
}

fn config(qc: &Value) -> Result<Config, String> {
    let int = |k: &str| -> Result<i64, String> {
        qc.get(k)
            .ok_or_else(|| format!("the quantization config has no '{k}'"))?
            .as_i64()
            .ok_or_else(|| format!("'{k}' is not an integer: {}", qc[k]))
    };
    let flag = |k: &str, default: bool| -> Result<bool, String> {
        match qc.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("'{k}' is not true or false: {v}")),
        }
    };
    let bits = int("bits")?;
    if !(0..=8).contains(&bits) || !crate::quant::gptq::BITS.contains(&(bits as u32)) {
        return Err(format!(
            "{bits}-bit GPTQ is not supported (2, 3, 4 or 8 bits)"
        ));
    }
    let group_size = int("group_size")?;
    if group_size != -1 && group_size <= 0 {
        return Err(format!(
            "group_size {group_size} is neither -1 nor positive"
        ));
    }
    let format = ["checkpoint_format", "format"]
        .iter()
        .find_map(|k| qc.get(*k).filter(|v| !v.is_null()));
    let zeros = match format.map(|v| v.as_str().map(str::to_ascii_lowercase)) {
        None => Zeros::V1,
        Some(Some(f)) if f == "gptq" => Zeros::V1,
        Some(Some(f)) if f == "gptq_v2" => Zeros::V2,
        Some(f) => {
            return Err(format!(
                "checkpoint_format {} is not supported (gptq or gptq_v2)",
                f.map_or_else(|| format.unwrap().to_string(), |s| format!("'{s}'"))
            ));
        }
    };
    if flag("is_marlin_format", false)? {
        return Err("Marlin-packed GPTQ (is_marlin_format) is not supported".into());
    }
    match qc.get("pack_dtype") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "int32" || s == "torch.int32" => {}
        Some(v) => return Err(format!("pack_dtype {v} is not supported (int32)")),
    }
    let dynamic = match qc.get("dynamic") {
        None | Some(Value::Null) => false,
        Some(Value::Object(m)) => !m.is_empty(),
        Some(v) => return Err(format!("'dynamic' is not an object: {v}")),
    };
    Ok(Config {
        bits: bits as u32,
        group_size,
        desc_act: flag("desc_act", false)?,
        sym: flag("sym", true)?,
        zeros,
        dynamic,
    })
}

/// The packed weights of a GPTQ checkpoint, or why it does not check out.
pub fn recognize(catalog: &Catalog, qc: &Value) -> Result<Vec<Packed>, String> {
    let cfg = config(qc)?;
    let index = index_by_name(&catalog.tensors);
    let dtypes = [Dtype::I32, Dtype::I32, Dtype::F16, Dtype::I32];
    let mut packed = Vec::new();
    for t in &catalog.tensors {
        for role in &ROLES[1..] {
            if let Some(module) = t.name.strip_suffix(&format!(".{role}"))
                && (*role != "scales")
                && !index.contains_key(format!("{module}.qweight").as_str())
            {
                return Err(format!("{} has no {module}.qweight", t.name));
            }
        }
        let Some(module) = t.name.strip_suffix(".qweight") else {
            continue;
        };
        let parts = parts(catalog, &index, module, ROLES, &dtypes)?;
        let [(_, qweight), (_, qzeros), (_, scales), (_, g_idx)] =
            [parts[0], parts[1], parts[2], parts[3]];
        for (t, rank) in [(qweight, 2), (qzeros, 2), (scales, 2), (g_idx, 1)] {
            if t.shape.len() != rank {
                return Err(format!(
                    "{} has shape {:?}, expected {rank} axes",
                    t.name, t.shape
                ));
            }
        }
        let (in_f, out_f, groups) = (g_idx.shape[0], scales.shape[1], scales.shape[0]);
        let (bits, group_size) = if cfg.dynamic {
            // per-module overrides: the shapes say what this layer is
            let rows = qweight.shape[0].saturating_mul(32);
            if in_f == 0 || rows % in_f != 0 {
                return Err(format!(
                    "{}: {} rows do not make whole codes of {in_f} inputs",
                    qweight.name, qweight.shape[0]
                ));
            }
            let gs = if groups == 1 {
                -1
            } else {
                in_f.div_ceil(groups) as i64
            };
            ((rows / in_f).min(u32::MAX as u64) as u32, gs)
        } else {
            let want = if cfg.group_size == -1 {
                1
            } else {
                in_f.div_ceil(cfg.group_size as u64)
            };
            if groups != want {
                return Err(format!(
                    "{} has {groups} groups, expected {want} for {in_f} inputs in groups of {}",
                    scales.name, cfg.group_size
                ));
            }
            (cfg.bits, cfg.group_size)
        };
        let g = Gptq::new(Geometry {
            bits,
            in_features: in_f,
            out_features: out_f,
            groups,
            zeros: cfg.zeros,
            group_size,
            desc_act: cfg.desc_act,
            sym: cfg.sym,
        })
        .map_err(|e| format!("{module}: {e}"))?;
        check_shapes(&parts, &g.part_shapes(), &format!("{}-bit GPTQ", g.bits()))?;
        packed.push(Packed {
            name: format!("{module}.weight"),
            unpack: Arc::new(g),
            parts: parts.iter().map(|(id, _)| *id).collect(),
        });
    }
    if packed.is_empty() {
        return Err("no quantized layer (no tensor named *.qweight)".into());
    }
    Ok(packed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_refuses_what_it_does_not_read() {
        let ok =
            config(&json!({"bits": 3, "group_size": -1, "checkpoint_format": "gptq_v2"})).unwrap();
        assert_eq!((ok.bits, ok.group_size, ok.zeros), (3, -1, Zeros::V2));
        assert!(ok.sym && !ok.desc_act && !ok.dynamic);
        for (qc, why) in [
            // a width that only truncates to a supported one
            (
                json!({"bits": 4 - (1i64 << 32), "group_size": 32}),
                "-4294967292-bit",
            ),
            (json!({"bits": 6, "group_size": 32}), "6-bit"),
            (
                json!({"bits": "4", "group_size": 32}),
                "'bits' is not an integer",
            ),
            (json!({"bits": 4, "group_size": -2}), "group_size -2"),
            (json!({"bits": 4}), "no 'group_size'"),
            (
                json!({"bits": 4, "group_size": 32, "format": 7}),
                "checkpoint_format 7",
            ),
            (
                json!({"bits": 4, "group_size": 32, "pack_dtype": "int64"}),
                "pack_dtype",
            ),
            (
                json!({"bits": 4, "group_size": 32, "is_marlin_format": true}),
                "Marlin",
            ),
            (
                json!({"bits": 4, "group_size": 32, "desc_act": 1}),
                "'desc_act'",
            ),
            (
                json!({"bits": 4, "group_size": 32, "dynamic": []}),
                "'dynamic'",
            ),
        ] {
            let e = config(&qc).unwrap_err();
            assert!(e.contains(why), "{qc}: {e}");
        }
    }
}
