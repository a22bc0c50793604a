//! compressed-tensors checkpoints (llm-compressor; `quant_method:
//! "compressed-tensors"`): which modules are quantized by which config
//! group, and their stored parts (`weight_packed` / `weight`,
//! `weight_scale`, `weight_zero_point`, `weight_g_idx`,
//! `weight_global_scale`, `weight_shape`), checked against the geometry of
//! `quant::compressed_tensors`.
//!
//! A module is quantized when it stores a `weight_scale`; its scheme is the
//! config group whose targets match it as compressed-tensors 0.20 matches
//! them (`utils/match.py`: an exact name first, then a `re:` pattern
//! matched at the start of the name, then a class name such as `Linear`,
//! which a checkpoint cannot show, so it must be the only candidate).
//! Modules on the `ignore` list stay as stored. Anything this module does
//! not dequantize exactly (a format, a bit width, a strategy, dynamic
//! weights) is an `Err` naming it.

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;
use serde_json::{Map, Value};

use crate::catalog::packed::Packed;
use crate::catalog::{Catalog, TensorId, index_by_name};
use crate::dtype::{Dtype, numel};
use crate::quant::compressed_tensors::{Codes, Dequant, Global, Grid, Layout, Out, Zero};

/// A config group's weights, as far as dequantization needs them.
#[derive(Debug, Clone)]
struct Scheme {
    group: String,
    format: String,
    weights: Map<String, Value>,
}

/// One entry of `targets` / `ignore`.
enum Target {
    Name(String),
    Pattern(Regex),
    /// Anything else: a class name (`Linear`).
    Class(String),
}

impl Target {
    fn parse(t: &str, names: &std::collections::HashSet<String>) -> Result<Target, String> {
        if let Some(p) = t.strip_prefix("re:") {
            // Python's re.match: anchored at the start only
            return Regex::new(&format!("^(?:{p})"))
                .map(Target::Pattern)
                .map_err(|e| format!("the target pattern '{t}' is not understood: {e}"));
        }
        Ok(if names.contains(t) {
            Target::Name(t.to_string())
        } else {
            Target::Class(t.to_string())
        })
    }

    fn by_name(&self, module: &str) -> bool {
        match self {
            Target::Name(n) => n == module,
            Target::Pattern(r) => r.is_match(module),
            Target::Class(_) => false,
        }
    }
}

fn str_list(v: Option<&Value>, what: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{what} holds {x}, not a string"))
            })
            .collect(),
        Some(x) => Err(format!("{what} is {x}, not a list")),
    }
}

/// The packed weights of a compressed-tensors checkpoint.
pub fn recognize(catalog: &Catalog, qc: &Value) -> Result<Vec<Packed>, String> {
    let status = qc.get("quantization_status").and_then(Value::as_str);
    let global_format = qc
        .get("format")
        .and_then(Value::as_str)
        .unwrap_or("dense")
        .to_string();
    let index = index_by_name(&catalog.tensors);
    // module names: every tensor's name without its last component
    let modules: std::collections::HashSet<String> = catalog
        .tensors
        .iter()
        .filter_map(|t| t.name.rsplit_once('.').map(|(m, _)| m.to_string()))
        .collect();

    // target -> scheme, later groups taking a target over (as the library's
    // OrderedDict does)
    let groups = match qc.get("config_groups") {
        Some(Value::Object(g)) => g.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(x) => return Err(format!("config_groups is {x}, not an object")),
    };
    let mut by_target: BTreeMap<String, Scheme> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (gname, g) in &groups {
        let weights = match g.get("weights") {
            Some(Value::Object(w)) => w.clone(),
            None | Some(Value::Null) => continue, // activations only
            Some(x) => return Err(format!("config group {gname}: weights is {x}")),
        };
        let format = g
            .get("format")
            .and_then(Value::as_str)
            .unwrap_or(&global_format)
            .to_string();
        let scheme = Scheme {
            group: gname.clone(),
            format,
            weights,
        };
        for t in str_list(g.get("targets"), &format!("config group {gname}: targets"))? {
            if !by_target.contains_key(&t) {
                order.push(t.clone());
            }
            by_target.insert(t, scheme.clone());
        }
    }
    // the library sorts targets by (is a pattern, text)
    let mut sorted = order.clone();
    sorted.sort_by_key(|t| (t.starts_with("re:"), t.clone()));
    let targets: Vec<(Target, &Scheme)> = sorted
        .iter()
        .map(|t| Ok((Target::parse(t, &modules)?, &by_target[t])))
        .collect::<Result<_, String>>()?;
    let ignore: Vec<Target> = str_list(qc.get("ignore"), "ignore")?
        .iter()
        .map(|t| Target::parse(t, &modules))
        .collect::<Result<_, String>>()?;

    let mut packed = Vec::new();
    let mut owned: std::collections::HashSet<TensorId> = Default::default();
    for t in &catalog.tensors {
        let Some(module) = t.name.strip_suffix(".weight_scale") else {
            continue;
        };
        if ignore.iter().any(|i| i.by_name(module)) {
            return Err(format!(
                "{module} is on the ignore list but stored quantized ({})",
                t.name
            ));
        }
        let scheme = scheme_of(module, &targets)?;
        if status.is_some_and(|s| s != "compressed") && scheme.format != "dense" {
            return Err(format!(
                "quantization_status is '{}', not 'compressed'",
                status.unwrap_or("")
            ));
        }
        if scheme.format == "dense" {
            continue;
        }
        let p = module_weight(catalog, &index, module, scheme)?;
        owned.extend(p.parts.iter().copied());
        packed.push(p);
    }
    // a part that no quantized module owns would be served as a weight
    for (i, t) in catalog.tensors.iter().enumerate() {
        let stray = [
            ".weight_packed",
            ".weight_zero_point",
            ".weight_g_idx",
            ".weight_global_scale",
            ".weight_shape",
        ]
        .iter()
        .any(|s| t.name.ends_with(s));
        if stray && !owned.contains(&TensorId(i as u32)) {
            return Err(format!("{} belongs to no quantized weight", t.name));
        }
    }
    Ok(packed)
}

/// The scheme of `module`: exact names, then patterns, then class names.
fn scheme_of<'a>(module: &str, targets: &[(Target, &'a Scheme)]) -> Result<&'a Scheme, String> {
    if let Some((_, s)) = targets.iter().find(|(t, _)| t.by_name(module)) {
        return Ok(s);
    }
    let classes: Vec<(&str, &Scheme)> = targets
        .iter()
        .filter_map(|(t, s)| match t {
            Target::Class(c) => Some((c.as_str(), *s)),
            _ => None,
        })
        .collect();
    match classes.as_slice() {
        [] => Err(format!(
            "{module} is stored quantized but no config group targets it"
        )),
        [(_, s)] => Ok(s),
        [(a, s), rest @ ..] => {
            if rest.iter().all(|(_, r)| r.group == s.group) {
                Ok(s)
            } else {
                Err(format!(
                    "{module} may be a {a} or a {} (config groups by class name), \
                     which a checkpoint does not tell",
                    rest[0].0
                ))
            }
        }
    }
}

fn get_u64(w: &Map<String, Value>, k: &str) -> Option<u64> {
    w.get(k).and_then(Value::as_u64)
}

/// The packed weight `module.weight`, its parts checked.
fn module_weight(
    catalog: &Catalog,
    index: &std::collections::HashMap<&str, TensorId>,
    module: &str,
    scheme: &Scheme,
) -> Result<Packed, String> {
    let w = &scheme.weights;
    let ctx = |why: String| format!("{module} (config group {}): {why}", scheme.group);
    let part = |role: &str| index.get(format!("{module}.{role}").as_str()).copied();
    let tensor = |id: TensorId| &catalog.tensors[id.index()];
    let bits = get_u64(w, "num_bits").ok_or_else(|| ctx("no num_bits".into()))?;
    let ty = w.get("type").and_then(Value::as_str).unwrap_or("int");
    let symmetric = w.get("symmetric").and_then(Value::as_bool).unwrap_or(true);
    let strategy = w
        .get("strategy")
        .and_then(Value::as_str)
        .unwrap_or("tensor");
    if w.get("dynamic").is_some_and(|d| d != &Value::Bool(false)) {
        return Err(ctx(format!("dynamic weights ({})", w["dynamic"])));
    }
    let fmt = scheme.format.as_str();
    let codes = match (fmt, ty, bits) {
        ("pack-quantized", "int", 2 | 4 | 8) => Codes::Packed { bits: bits as u32 },
        ("int-quantized" | "naive-quantized", "int", 8) => Codes::Int8,
        ("float-quantized" | "naive-quantized", "float", 8) => Codes::Fp8,
        ("nvfp4-pack-quantized" | "mxfp4-pack-quantized", "float", 4) => Codes::Fp4,
        ("mxfp8-quantized", "float", 8) => Codes::Fp8,
        ("mxfp6-pack-quantized", "float", 6) => Codes::Fp6,
        (
            "pack-quantized"
            | "int-quantized"
            | "naive-quantized"
            | "float-quantized"
            | "nvfp4-pack-quantized"
            | "mxfp4-pack-quantized"
            | "mxfp8-quantized"
            | "mxfp6-pack-quantized",
            _,
            _,
        ) => {
            return Err(ctx(format!(
                "{bits}-bit {ty} weights in format {fmt} are not supported"
            )));
        }
        _ => return Err(ctx(format!("format '{fmt}' is not supported"))),
    };
    // MX formats: E8M0 scales (U8 exponents) per group, no global scale
    let mx = matches!(
        fmt,
        "mxfp4-pack-quantized" | "mxfp8-quantized" | "mxfp6-pack-quantized"
    );
    let nvfp4 = fmt == "nvfp4-pack-quantized";
    let codes_role = if matches!(codes, Codes::Packed { .. } | Codes::Fp4 | Codes::Fp6) {
        "weight_packed"
    } else {
        "weight"
    };
    let codes_id = part(codes_role).ok_or_else(|| ctx(format!("no {module}.{codes_role}")))?;
    let scale_id = part("weight_scale").ok_or_else(|| ctx("no weight_scale".into()))?;
    let ct = tensor(codes_id);
    if ct.shape.len() != 2 {
        return Err(ctx(format!(
            "{} has shape {:?}, not 2-D",
            ct.name, ct.shape
        )));
    }
    // the output's shape: weight_shape's values for packed INT (the packed
    // columns do not tell), else the stored shape
    let mut extra_ids = Vec::new();
    let (rows, cols) = match codes {
        Codes::Packed { .. } => {
            let id = part("weight_shape").ok_or_else(|| ctx("no weight_shape".into()))?;
            extra_ids.push(("weight_shape", id));
            let s = read_shape(catalog, id).map_err(ctx)?;
            (s[0], s[1])
        }
        Codes::Fp4 => (ct.shape[0], ct.shape[1].saturating_mul(2)),
        // four codes in three bytes
        Codes::Fp6 if ct.shape[1] % 3 == 0 => (ct.shape[0], ct.shape[1] / 3 * 4),
        Codes::Fp6 => {
            return Err(ctx(format!(
                "{} has {} bytes per row, not a multiple of 3",
                ct.name, ct.shape[1]
            )));
        }
        _ => (ct.shape[0], ct.shape[1]),
    };
    let grid = match strategy {
        "tensor" => Grid::Tensor,
        "channel" => Grid::Channel,
        "group" | "tensor_group" => {
            let size = get_u64(w, "group_size").ok_or_else(|| ctx("no group_size".into()))?;
            if (strategy == "tensor_group") != nvfp4 {
                return Err(ctx(format!("strategy {strategy} with {fmt}")));
            }
            let actorder = w.get("actorder").and_then(Value::as_str);
            if part("weight_g_idx").is_some() {
                if size == 0 {
                    return Err(ctx("group_size 0".into()));
                }
                Grid::Indexed {
                    groups: cols.div_ceil(size),
                }
            } else if actorder == Some("group") {
                return Err(ctx("actorder 'group' without a weight_g_idx".into()));
            } else {
                Grid::Group { size }
            }
        }
        "block" => match w.get("block_structure").and_then(Value::as_array) {
            Some(b) if b.len() == 2 && b.iter().all(|x| x.as_u64().is_some_and(|x| x > 0)) => {
                Grid::Block {
                    rows: b[0].as_u64().unwrap_or(1),
                    cols: b[1].as_u64().unwrap_or(1),
                }
            }
            _ => {
                return Err(ctx(format!(
                    "block_structure {:?}",
                    w.get("block_structure")
                )));
            }
        },
        s => return Err(ctx(format!("strategy '{s}' is not supported"))),
    };
    let zero = match (symmetric, codes) {
        (true, _) => Zero::None,
        (false, Codes::Packed { bits })
            if matches!(
                grid,
                Grid::Group { .. } | Grid::Channel | Grid::Indexed { .. }
            ) =>
        {
            Zero::Packed { bits }
        }
        (false, _) => Zero::Int8,
    };
    if mx && !matches!(grid, Grid::Group { .. }) {
        return Err(ctx(format!(
            "strategy {strategy} with {fmt} (groups without weight_g_idx are supported)"
        )));
    }
    // MX scales are U8 exponents whatever dtype the checkpoint claims
    // (check_part refuses another); the library decodes them to BF16 and
    // returns BF16 (mx_utils.decompress_mx_scale). A U8 scale in another
    // format is refused by Dequant::new.
    let stored_scale = tensor(scale_id).dtype;
    let scale_dtype = if mx { Dtype::U8 } else { stored_scale };
    let (global, out) = if nvfp4 {
        (Global::Divide, Out::Bf16)
    } else if mx {
        (Global::None, Out::Bf16)
    } else {
        (Global::None, Out::of(scale_dtype))
    };
    // the activations' parameters belong to the module too
    for role in ["input_scale", "input_zero_point", "input_global_scale"] {
        if let Some(id) = part(role) {
            extra_ids.push((role, id));
        }
    }
    let mut params = w.clone();
    params.insert("format".into(), Value::String(fmt.to_string()));
    params.retain(|k, _| {
        matches!(
            k.as_str(),
            "format"
                | "num_bits"
                | "type"
                | "symmetric"
                | "strategy"
                | "group_size"
                | "block_structure"
                | "actorder"
        )
    });
    let layout = Layout {
        scheme: "compressed-tensors",
        rows,
        cols,
        codes,
        grid,
        zero,
        global,
        scale_dtype,
        e8m0: mx,
        scale_round: None,
        out,
        params: Value::Object(params),
        extra: extra_ids
            .iter()
            .map(|&(r, id)| (r, tensor(id).len()))
            .collect(),
    };
    let d = Dequant::new(layout).map_err(ctx)?;
    let mut parts = Vec::new();
    for (role, dtype, shape) in d.expected() {
        let id = part(role).ok_or_else(|| ctx(format!("no {module}.{role}")))?;
        check_part(tensor(id), dtype, &shape).map_err(ctx)?;
        parts.push(id);
    }
    parts.extend(extra_ids.iter().map(|&(_, id)| id));
    Ok(Packed {
        name: format!("{module}.weight"),
        unpack: Arc::new(d),
        parts,
    })
}

/// A part's dtype and shape (a one-element scale may be `[]` or `[1]`).
pub(super) fn check_part(
    t: &crate::catalog::Tensor,
    dtype: Dtype,
    shape: &[u64],
) -> Result<(), String> {
    if t.dtype != dtype {
        return Err(format!(
            "{} is {}, expected {}",
            t.name,
            t.dtype.name(),
            dtype.name()
        ));
    }
    let scalar = |s: &[u64]| s.len() <= 1 && numel(s) == Some(1);
    if t.shape != shape && !(scalar(&t.shape) && scalar(shape)) {
        return Err(format!(
            "{} has shape {:?}, expected {:?}",
            t.name, t.shape, shape
        ));
    }
    if t.layout.is_some() {
        return Err(format!("{} is not stored contiguously", t.name));
    }
    Ok(())
}

/// The two values of an I64 `weight_shape`.
fn read_shape(catalog: &Catalog, id: TensorId) -> Result<[u64; 2], String> {
    let t = &catalog.tensors[id.index()];
    if t.dtype != Dtype::I64 || t.shape != [2] || t.layout.is_some() {
        return Err(format!(
            "{} is {} {:?}, expected I64 [2]",
            t.name,
            t.dtype.name(),
            t.shape
        ));
    }
    let b = catalog
        .files
        .bytes(t.extent)
        .map_err(|e| format!("{}: {e}", t.name))?;
    if b.len() != 16 {
        return Err(format!("{} has {} bytes", t.name, b.len()));
    }
    let v = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[8 * i..8 * i + 8]);
        i64::from_le_bytes(a)
    };
    let (r, c) = (v(0), v(1));
    if r <= 0 || c <= 0 {
        return Err(format!("{} holds [{r}, {c}]", t.name));
    }
    Ok([r as u64, c as u64])
}
