//! AWQ checkpoints (`quant_method: awq`, AutoAWQ's GEMM packing): each
//! quantized linear layer `<module>` is stored as `<module>.qweight`,
//! `.qzeros` and `.scales`, and becomes `<module>.weight` (`quant::awq`).
//! Layers in `modules_to_not_convert` (and `lm_head`) are stored as plain
//! `<module>.weight` and pass through.
//!
//! Checked: `bits` (or AutoAWQ's `w_bit`) 4, `group_size` (`q_group_size`)
//! positive, `zero_point` true, `version` `gemm` (GEMV, GEMV-fast, Marlin
//! and ExLlama packings are refused: their words hold other codes); every
//! part present with its dtype and the shape the geometry gives.

use std::sync::Arc;

use serde_json::Value;

use super::gptq::{check_shapes, parts};
use crate::catalog::packed::Packed;
use crate::catalog::{Catalog, index_by_name};
use crate::dtype::Dtype;
use crate::quant::awq::{Awq, ROLES};

/// The checked group size of an AWQ GEMM config.
fn config(qc: &Value) -> Result<u64, String> {
    let get = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| qc.get(*k).filter(|v| !v.is_null()))
    };
    let bits = get(&["bits", "w_bit"]).ok_or("the quantization config has no 'bits'")?;
    if bits.as_i64() != Some(4) {
        return Err(format!("{bits}-bit AWQ is not supported (4 bits)"));
    }
    let gs = get(&["group_size", "q_group_size"])
        .ok_or("the quantization config has no 'group_size'")?;
    let group_size = gs
        .as_u64()
        .filter(|&g| g > 0)
        .ok_or_else(|| format!("group_size {gs} is not supported (a positive group size)"))?;
    match get(&["zero_point"]) {
        None | Some(Value::Bool(true)) => {}
        Some(v) => return Err(format!("zero_point {v} is not supported (true)")),
    }
    match get(&["version"]) {
        None => {}
        Some(Value::String(v)) if v.eq_ignore_ascii_case("gemm") => {}
        Some(v) => return Err(format!("AWQ version {v} is not supported (gemm)")),
    }
    Ok(group_size)
}

/// The packed weights of an AWQ checkpoint, or why it does not check out.
pub fn recognize(catalog: &Catalog, qc: &Value) -> Result<Vec<Packed>, String> {
    let group_size = config(qc)?;
    let index = index_by_name(&catalog.tensors);
    let dtypes = [Dtype::I32, Dtype::I32, Dtype::F16];
    let mut packed = Vec::new();
    for t in &catalog.tensors {
        if let Some(module) = t.name.strip_suffix(".qzeros")
            && !index.contains_key(format!("{module}.qweight").as_str())
        {
            return Err(format!("{} has no {module}.qweight", t.name));
        }
        let Some(module) = t.name.strip_suffix(".qweight") else {
            continue;
        };
        let parts = parts(catalog, &index, module, ROLES, &dtypes)?;
        let [(_, qweight), (_, scales)] = [parts[0], parts[2]];
        if qweight.shape.len() != 2 || scales.shape.len() != 2 {
            return Err(format!(
                "{} {:?} and {} {:?} are not both matrices",
                qweight.name, qweight.shape, scales.name, scales.shape
            ));
        }
        let a = Awq::new(qweight.shape[0], scales.shape[1], group_size)
            .map_err(|e| format!("{module}: {e}"))?;
        check_shapes(&parts, &a.part_shapes(), "4-bit AWQ GEMM")?;
        packed.push(Packed {
            name: format!("{module}.weight"),
            unpack: Arc::new(a),
            parts: parts.iter().map(|(id, _)| *id).collect(),
        });
    }
    if packed.is_empty() {
        return Err("no quantized layer (no tensor named *.qweight)".into());
    }
    Ok(packed)
}
