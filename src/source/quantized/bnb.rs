//! bitsandbytes checkpoints (`quant_method: bitsandbytes`) as transformers
//! saves them: which stored tensors make each weight, checked against the
//! geometry their quant_state gives (`quant::bnb`).
//!
//! - 4-bit (`load_in_4bit`): `<m>.weight` (uint8 `[ceil(n/2), 1]`, or
//!   those bytes as `bnb_4bit_quant_storage` elements),
//!   `<m>.weight.absmax`, `<m>.weight.quant_map`, with double quantization
//!   `<m>.weight.nested_absmax` and `<m>.weight.nested_quant_map`, and
//!   `<m>.weight.quant_state.bitsandbytes__nf4|fp4`: a uint8 tensor holding
//!   JSON (`quant_type`, `blocksize`, `dtype`, `shape`, `nested_*`), read
//!   here (it is small) and checked key by key.
//! - 8-bit (`load_in_8bit`): `<m>.weight` int8 `[rows, cols]`, `<m>.SCB`
//!   f32 `[rows]`, and `<m>.weight_format` (0: row-major) when stored.
//!
//! A module is quantized when its quant_state (4-bit) or `SCB` (8-bit) is
//! stored; the modules `llm_int8_skip_modules` names were saved unquantized
//! and pass through as they are. Any part without its weight, or a weight
//! without a part, refuses the checkpoint.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use crate::catalog::packed::Packed;
use crate::catalog::{Catalog, FileId, TensorId, index_by_name};
use crate::dtype::Dtype;
use crate::quant::bnb::{Bnb4, Bnb8, Code, Nested, parse_dtype};
use std::sync::Arc;

/// The quant_state tensor's name after the weight's.
const STATE: &str = ".quant_state.bitsandbytes__";

/// A quant_state larger than this is not one the library wrote.
const MAX_STATE: u64 = 1 << 16;

/// Keys a quant_state may hold (`QuantState.valid_qs_keys`, less the tensors).
const STATE_KEYS: &[&str] = &[
    "quant_type",
    "blocksize",
    "dtype",
    "shape",
    "nested_blocksize",
    "nested_dtype",
    "nested_offset",
];

/// Name endings of the parts other than the weight.
const PART_ENDINGS: &[&str] = &[
    ".weight.absmax",
    ".weight.quant_map",
    ".weight.nested_absmax",
    ".weight.nested_quant_map",
    ".weight_format",
];

pub fn recognize(catalog: &Catalog, qc: &Value) -> Result<Vec<Packed>, String> {
    let (bits, storage) = check_config(qc)?;
    fetch_small(catalog);
    let index = index_by_name(&catalog.tensors);
    let mut out = Vec::new();
    for (id, t) in catalog.tensor_ids() {
        if let Some(at) = t.name.find(STATE) {
            if bits == 8 {
                return Err(format!(
                    "{}: a 4-bit quant_state in an 8-bit (load_in_8bit) checkpoint",
                    t.name
                ));
            }
            let code = &t.name[at + STATE.len()..];
            let code = Code::parse(code)
                .ok_or_else(|| format!("{}: quant type '{code}' is not nf4 or fp4", t.name))?;
            let weight = &t.name[..at];
            out.push(four_bit(catalog, &index, id, weight, code, storage)?);
        } else if let Some(module) = t.name.strip_suffix(".SCB") {
            if bits == 4 {
                return Err(format!(
                    "{}: an 8-bit scale in a 4-bit (load_in_4bit) checkpoint",
                    t.name
                ));
            }
            out.push(eight_bit(catalog, &index, id, module)?);
        }
    }
    if out.is_empty() {
        return Err(format!(
            "no quantized weight is stored (no {} tensor)",
            if bits == 4 { "quant_state" } else { "SCB" }
        ));
    }
    let mut claimed = vec![false; catalog.tensors.len()];
    for p in &out {
        for &id in &p.parts {
            claimed[id.index()] = true;
        }
    }
    for (id, t) in catalog.tensor_ids() {
        if !claimed[id.index()] && PART_ENDINGS.iter().any(|e| t.name.ends_with(e)) {
            return Err(format!(
                "{} is stored without the rest of its weight (no quant_state or SCB)",
                t.name
            ));
        }
    }
    Ok(out)
}

/// Fetch every quant_state and weight_format of a remote source in one
/// round (they are read one by one below); nothing for a local one. A
/// failure shows again, naming its tensor, when that tensor is read.
fn fetch_small(catalog: &Catalog) {
    let mut by_file: BTreeMap<FileId, Vec<(u64, u64)>> = BTreeMap::new();
    for t in &catalog.tensors {
        if (t.name.contains(STATE) || t.name.ends_with(".weight_format"))
            && t.layout.is_none()
            && t.extent.len <= MAX_STATE
        {
            let e = t.extent;
            by_file.entry(e.file).or_default().push((e.offset, e.len));
        }
    }
    for (file, ranges) in by_file {
        let _ = catalog.files[file].file.ensure_ranges(&ranges);
    }
}

/// The config's bit width (4 or 8) and the packed codes' storage dtype
/// (`bnb_4bit_quant_storage`), every field relied on checked.
fn check_config(qc: &Value) -> Result<(u32, Dtype), String> {
    let flag = |k: &str| -> Result<bool, String> {
        match qc.get(k).or_else(|| qc.get(format!("_{k}"))) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(format!("{k} is {v}, not a boolean")),
        }
    };
    let bits = match (flag("load_in_4bit")?, flag("load_in_8bit")?) {
        (true, false) => 4,
        (false, true) => 8,
        (true, true) => return Err("both load_in_4bit and load_in_8bit are set".into()),
        (false, false) => return Err("neither load_in_4bit nor load_in_8bit is set".into()),
    };
    let mut storage = Dtype::U8;
    if bits == 4 {
        match qc.get("bnb_4bit_quant_storage") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if storage_dtype(s).is_some() => {
                storage = storage_dtype(s).unwrap_or(Dtype::U8);
            }
            Some(v) => {
                return Err(format!(
                    "bnb_4bit_quant_storage {v} is not supported \
                     (uint8, int8, bfloat16, float16 or float32)"
                ));
            }
        }
        match qc.get("bnb_4bit_quant_type") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if Code::parse(s).is_some() => {}
            Some(v) => return Err(format!("bnb_4bit_quant_type {v} is not nf4 or fp4")),
        }
    }
    match qc.get("llm_int8_skip_modules") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        Some(v) => return Err(format!("llm_int8_skip_modules {v} is not a list of names")),
    }
    Ok((bits, storage))
}

/// A `bnb_4bit_quant_storage` dtype: the packed bytes viewed as it.
fn storage_dtype(name: &str) -> Option<Dtype> {
    match name {
        "uint8" => Some(Dtype::U8),
        "int8" => Some(Dtype::I8),
        "bfloat16" => Some(Dtype::BF16),
        "float16" => Some(Dtype::F16),
        "float32" => Some(Dtype::F32),
        _ => None,
    }
}

/// The stored tensor called `name`, of `dtype` and `shape`.
fn part(
    catalog: &Catalog,
    index: &HashMap<&str, TensorId>,
    name: &str,
    dtype: Dtype,
    shape: &[u64],
) -> Result<TensorId, String> {
    let &id = index
        .get(name)
        .ok_or_else(|| format!("{name} is missing"))?;
    let t = catalog.tensor(id);
    if t.dtype != dtype || t.shape != shape || t.layout.is_some() {
        return Err(format!(
            "{name} is {} {:?}, expected {} {shape:?}",
            t.dtype.name(),
            t.shape,
            dtype.name()
        ));
    }
    Ok(id)
}

/// The stored bytes of a small tensor (a quant_state, a weight_format).
fn small_bytes(catalog: &Catalog, id: TensorId) -> Result<&[u8], String> {
    let t = catalog.tensor(id);
    if t.dtype != Dtype::U8 || t.layout.is_some() || t.extent.len > MAX_STATE {
        return Err(format!(
            "{} is {} {:?}, not a small uint8 tensor",
            t.name,
            t.dtype.name(),
            t.shape
        ));
    }
    catalog
        .files
        .bytes(t.extent)
        .map_err(|e| format!("{}: {e}", t.name))
}

/// A 4-bit weight: its quant_state `state` (of `code`) and its parts.
fn four_bit(
    catalog: &Catalog,
    index: &HashMap<&str, TensorId>,
    state: TensorId,
    weight: &str,
    code: Code,
    storage: Dtype,
) -> Result<Packed, String> {
    let sname = &catalog.tensor(state).name;
    let raw = small_bytes(catalog, state)?;
    if catalog.tensor(state).shape.len() != 1 {
        return Err(format!("{sname} is not one-dimensional"));
    }
    let qs: Map<String, Value> = match serde_json::from_slice(raw) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(format!("{sname} does not hold a JSON object")),
        Err(e) => return Err(format!("{sname} does not hold JSON: {e}")),
    };
    let bad = |what: &str| format!("{sname}: {what}");
    if let Some(k) = qs.keys().find(|k| !STATE_KEYS.contains(&k.as_str())) {
        return Err(bad(&format!("unknown key '{k}'")));
    }
    match qs.get("quant_type").and_then(Value::as_str) {
        Some(q) if q == code.name() => {}
        q => {
            return Err(bad(&format!(
                "quant_type {q:?} does not match the tensor's name ({})",
                code.name()
            )));
        }
    }
    let blocksize = qs
        .get("blocksize")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("blocksize is not a positive integer"))?;
    let dtype = qs
        .get("dtype")
        .and_then(Value::as_str)
        .and_then(parse_dtype)
        .ok_or_else(|| {
            bad(&format!(
                "dtype {:?} is not bfloat16, float16 or float32",
                qs.get("dtype")
            ))
        })?;
    let shape = qs
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
        .ok_or_else(|| bad("shape is not a list of sizes"))?;
    let nested_keys = ["nested_blocksize", "nested_dtype", "nested_offset"];
    let nested = match nested_keys.iter().filter(|k| qs.contains_key(**k)).count() {
        0 => None,
        3 => {
            if qs["nested_dtype"].as_str() != Some("float32") {
                return Err(bad(&format!(
                    "nested_dtype {} is not supported (only float32)",
                    qs["nested_dtype"]
                )));
            }
            Some(Nested {
                blocksize: qs["nested_blocksize"]
                    .as_u64()
                    .ok_or_else(|| bad("nested_blocksize is not a positive integer"))?,
                offset: qs["nested_offset"]
                    .as_f64()
                    .ok_or_else(|| bad("nested_offset is not a number"))?
                    as f32,
            })
        }
        _ => {
            return Err(bad(
                "nested_blocksize, nested_dtype and nested_offset go together",
            ));
        }
    };
    let g = Bnb4::new(code, blocksize, shape, dtype, nested, raw.len()).map_err(|e| bad(&e))?;
    let blocks = g.blocks();
    let name = |role: &str| format!("{weight}.{role}");
    // the packed bytes viewed as `storage` (`quantize_4bit`: `.view(quant_storage)`)
    let item = storage.bits() / 8;
    if !g.weight_bytes().is_multiple_of(item) {
        return Err(format!(
            "{weight}: {} packed bytes are not whole {} elements",
            g.weight_bytes(),
            storage.name()
        ));
    }
    let mut parts = vec![part(
        catalog,
        index,
        weight,
        storage,
        &[g.weight_bytes() / item, 1],
    )?];
    match g.nested_blocks() {
        None => {
            parts.push(part(
                catalog,
                index,
                &name("absmax"),
                Dtype::F32,
                &[blocks],
            )?);
            parts.push(part(catalog, index, &name("quant_map"), Dtype::F32, &[16])?);
            for role in ["nested_absmax", "nested_quant_map"] {
                if index.contains_key(name(role).as_str()) {
                    return Err(format!(
                        "{} is stored but {sname} has no nested_* keys",
                        name(role)
                    ));
                }
            }
        }
        Some(nb) => {
            parts.push(part(catalog, index, &name("absmax"), Dtype::U8, &[blocks])?);
            parts.push(part(catalog, index, &name("quant_map"), Dtype::F32, &[16])?);
            parts.push(part(
                catalog,
                index,
                &name("nested_absmax"),
                Dtype::F32,
                &[nb],
            )?);
            parts.push(part(
                catalog,
                index,
                &name("nested_quant_map"),
                Dtype::F32,
                &[256],
            )?);
        }
    }
    parts.push(state);
    Ok(Packed {
        name: weight.to_string(),
        unpack: Arc::new(g),
        parts,
    })
}

/// An 8-bit weight of `module`, whose `SCB` is `scb`.
fn eight_bit(
    catalog: &Catalog,
    index: &HashMap<&str, TensorId>,
    scb: TensorId,
    module: &str,
) -> Result<Packed, String> {
    let weight = format!("{module}.weight");
    let &wid = index
        .get(weight.as_str())
        .ok_or_else(|| format!("{weight} is missing (its SCB is stored)"))?;
    let w = catalog.tensor(wid);
    let [rows, cols] = w.shape[..] else {
        return Err(format!("{weight} is {:?}, not [rows, cols]", w.shape));
    };
    let wid = part(catalog, index, &weight, Dtype::I8, &[rows, cols])?;
    let scb = part(
        catalog,
        index,
        &catalog.tensor(scb).name,
        Dtype::F32,
        &[rows],
    )?;
    let fname = format!("{module}.weight_format");
    let mut parts = vec![wid, scb];
    if let Some(&fid) = index.get(fname.as_str()) {
        let f = catalog.tensor(fid);
        let raw = small_bytes(catalog, fid)?;
        if crate::dtype::numel(&f.shape) != Some(1) || raw.len() != 1 {
            return Err(format!("{fname} is {:?}, not one value", f.shape));
        }
        if raw[0] != 0 {
            return Err(format!(
                "{fname} is {} (only 0, row-major, is supported)",
                raw[0]
            ));
        }
        parts.push(fid);
    }
    let g = Bnb8::new(rows, cols, parts.len() == 3).map_err(|e| format!("{weight}: {e}"))?;
    Ok(Packed {
        name: weight,
        unpack: Arc::new(g),
        parts,
    })
}
