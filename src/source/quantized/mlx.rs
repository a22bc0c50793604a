//! MLX quantized checkpoints as `mlx_lm` saves them: `config.json`'s
//! `quantization` object (`group_size`, `bits`, optional `mode`, and
//! per-module overrides keyed by module path: an object of its own
//! parameters, `true` for the top-level ones, `false` for unquantized), and
//! for each quantized module `<module>.weight` (U32 words), `<module>.scales`
//! and, in the affine mode, `<module>.biases`.
//!
//! A module is quantized when `<module>.scales` is stored beside a
//! `<module>.weight`, as mlx-lm decides when it loads a model. Its output is
//! `<module>.weight` (the model's own name), dequantized by
//! `quant::mlx::Mlx`. A U32 `.weight` left without scales, a module the
//! config calls unquantized that has them, or parameters mlx does not
//! quantize with is refused with the module's name.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::catalog::packed::Packed;
use crate::catalog::{Catalog, TensorId, index_by_name};
use crate::dtype::Dtype;
use crate::quant::mlx::{Mlx, Mode};

/// One module's quantization parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Params {
    mode: Mode,
    group_size: u64,
    bits: u64,
}

/// What the config says of one module.
#[derive(Debug, Clone, Copy)]
enum Entry {
    Quantized(Params),
    Unquantized,
}

/// The keys of the `quantization` object that are parameters, not modules.
const PARAM_KEYS: &[&str] = &["group_size", "bits", "mode"];

pub fn recognize(catalog: &Catalog, qc: &Value) -> Result<Vec<Packed>, String> {
    let q = qc
        .as_object()
        .ok_or("the quantization config is not an object")?;
    let top = params(q, None).map_err(|e| format!("quantization: {e}"))?;
    let mut modules: BTreeMap<&str, Entry> = BTreeMap::new();
    for (key, v) in q {
        if PARAM_KEYS.contains(&key.as_str()) {
            continue;
        }
        let entry = match v {
            Value::Bool(true) => Entry::Quantized(top),
            Value::Bool(false) => Entry::Unquantized,
            Value::Object(o) => {
                Entry::Quantized(params(o, Some(top)).map_err(|e| format!("{key}: {e}"))?)
            }
            other => {
                return Err(format!(
                    "{key}: the quantization entry is {other}, not an object or a boolean"
                ));
            }
        };
        modules.insert(key.as_str(), entry);
    }

    let index = index_by_name(&catalog.tensors);
    let tensor = |id: TensorId| &catalog.tensors[id.index()];
    let mut out = Vec::new();
    for t in &catalog.tensors {
        let Some(module) = t.name.strip_suffix(".scales") else {
            continue;
        };
        let weight_name = format!("{module}.weight");
        let Some(&weight) = index.get(weight_name.as_str()) else {
            // a parameter called `scales`, not a quantized module's
            continue;
        };
        let p = match modules.get(module) {
            Some(Entry::Unquantized) => {
                return Err(format!(
                    "{module}: the config says unquantized, but {module}.scales is stored"
                ));
            }
            Some(Entry::Quantized(p)) => *p,
            None => top,
        };
        let scales = index[t.name.as_str()];
        let biases = index.get(format!("{module}.biases").as_str()).copied();
        let biases = match p.mode {
            Mode::Affine => Some(biases.ok_or_else(|| {
                format!("{module}: {module}.biases is missing (affine quantization)")
            })?),
            _ if biases.is_some() => {
                return Err(format!(
                    "{module}: {module}.biases is stored, but {} weights have no biases",
                    p.mode.name()
                ));
            }
            _ => None,
        };
        if index.contains_key(format!("{module}.global_scale").as_str()) {
            return Err(format!(
                "{module}: a global scale is stored, which gyrofs does not apply"
            ));
        }
        let w = tensor(weight);
        let s = tensor(scales);
        let b = biases.map(|id| (tensor(id).dtype, tensor(id).shape.as_slice()));
        let geometry = Mlx::new(
            p.mode,
            p.group_size,
            p.bits,
            (w.dtype, &w.shape),
            (s.dtype, &s.shape),
            b,
        )
        .map_err(|e| format!("{weight_name}: {e}"))?;
        let mut parts = vec![weight, scales];
        parts.extend(biases);
        out.push(Packed {
            name: weight_name,
            unpack: Arc::new(geometry),
            parts,
        });
    }

    // every packed weight found its scales; every module the config
    // quantizes is
    let claimed: std::collections::HashSet<&str> = out.iter().map(|p| p.name.as_str()).collect();
    for t in &catalog.tensors {
        if t.dtype == Dtype::U32
            && let Some(module) = t.name.strip_suffix(".weight")
            && !claimed.contains(t.name.as_str())
        {
            return Err(format!(
                "{}: a packed U32 weight without {module}.scales",
                t.name
            ));
        }
    }
    for (module, entry) in &modules {
        let weight = format!("{module}.weight");
        if matches!(entry, Entry::Quantized(_))
            && index.contains_key(weight.as_str())
            && !claimed.contains(weight.as_str())
        {
            return Err(format!(
                "{module}: quantized in the config, but {module}.scales is not stored"
            ));
        }
    }
    if out.is_empty() {
        return Err("the config says quantized, but no weight has scales".into());
    }
    Ok(out)
}

/// A parameter object's mode, group size and bits. The top level (`top`
/// None) must name the group size and bits; a module's object takes mlx's
/// defaults for its mode where it leaves them out (`nn.quantize`).
fn params(o: &Map<String, Value>, top: Option<Params>) -> Result<Params, String> {
    let mode = match o.get("mode") {
        None | Some(Value::Null) => Mode::Affine,
        Some(Value::String(s)) => {
            Mode::parse(s).ok_or_else(|| format!("mode '{s}' is not an MLX mode gyrofs knows"))?
        }
        Some(v) => return Err(format!("mode is {v}, not a string")),
    };
    let (dg, db) = mode.defaults();
    let int = |key: &str, default: u64| -> Result<u64, String> {
        match o.get(key) {
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| format!("{key} is {n}, not a positive integer")),
            None if top.is_none() => Err(format!("{key} is missing")),
            None | Some(Value::Null) => Ok(default),
            Some(v) => Err(format!("{key} is {v}, not an integer")),
        }
    };
    let p = Params {
        mode,
        group_size: int("group_size", dg)?,
        bits: int("bits", db)?,
    };
    mode.check(p.group_size, p.bits)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Extent, FileId, Files, SourceFormat, Tensor};
    use serde_json::json;

    fn catalog(tensors: &[(&str, Dtype, &[u64])]) -> Catalog {
        Catalog {
            format: SourceFormat::Safetensors,
            files: Files::default(),
            tensors: tensors
                .iter()
                .map(|(n, d, s)| {
                    Tensor::new(
                        n.to_string(),
                        *d,
                        s.to_vec(),
                        Extent {
                            file: FileId(0),
                            offset: 0,
                            len: 0,
                        },
                    )
                })
                .collect(),
            config: None,
            gguf_metadata: None,
            pickle: None,
            notes: Vec::new(),
            packed: Vec::new(),
            unconverted: None,
        }
    }

    const BF: Dtype = Dtype::BF16;
    const U32: Dtype = Dtype::U32;

    fn linear(c: &mut Vec<(&'static str, Dtype, &'static [u64])>, m: &'static str) {
        // 4 bits, group 64: [8, 128] as [8, 16] words, [8, 2] scales
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        c.push((leak(format!("{m}.weight")), U32, &[8, 16]));
        c.push((leak(format!("{m}.scales")), BF, &[8, 2]));
        c.push((leak(format!("{m}.biases")), BF, &[8, 2]));
    }

    fn base() -> Vec<(&'static str, Dtype, &'static [u64])> {
        let mut c = vec![("norm.weight", BF, &[128u64][..])];
        linear(&mut c, "a");
        linear(&mut c, "b");
        c
    }

    #[test]
    fn groups_each_module_and_takes_its_overrides() {
        let c = catalog(&base());
        let q = json!({"group_size": 64, "bits": 4});
        let p = recognize(&c, &q).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "a.weight");
        assert_eq!(p[0].unpack.shape(), &[8, 128]);
        assert_eq!(p[0].parts.len(), 3);
        // b overridden with parameters its stored shapes do not fit
        let q = json!({"group_size": 64, "bits": 4, "b": {"group_size": 128, "bits": 8}});
        let e = recognize(&c, &q).unwrap_err();
        assert!(e.starts_with("b.weight: rows of 64 elements"), "{e}");
        let q = json!({"group_size": 64, "bits": 4, "b": {"group_size": 32, "bits": 4}});
        let e = recognize(&c, &q).unwrap_err();
        assert!(
            e.starts_with("b.weight: the scales have shape [8, 2]"),
            "{e}"
        );
        let q = json!({"group_size": 64, "bits": 4, "b": true, "a": {"bits": 4}});
        assert_eq!(recognize(&c, &q).unwrap().len(), 2);
    }

    #[test]
    fn refuses_what_mlx_would_not_load() {
        let c = catalog(&base());
        let cases = [
            (json!({"group_size": 64, "bits": 7}), "7-bit"),
            (json!({"group_size": 64}), "bits is missing"),
            (
                json!({"group_size": 64, "bits": 4, "mode": "fp3"}),
                "mode 'fp3'",
            ),
            (json!({"group_size": 64, "bits": "4"}), "not an integer"),
            (
                json!({"group_size": 64, "bits": 4, "a": 3}),
                "a: the quantization entry",
            ),
            (
                json!({"group_size": 64, "bits": 4, "a": false}),
                "a: the config says unquantized",
            ),
            (
                json!({"group_size": 64, "bits": 4, "a": {"bits": 9}}),
                "a: 9-bit",
            ),
            (
                json!({"group_size": 64, "bits": 4, "a": {"mode": "mxfp4"}}),
                "a: a.biases is stored, but mxfp4 weights have no biases",
            ),
            (json!([1]), "not an object"),
        ];
        for (q, want) in cases {
            let e = recognize(&c, &q).unwrap_err();
            assert!(e.contains(want), "{q}: {e}");
        }
        // a part missing
        let mut t = base();
        t.retain(|x| x.0 != "b.biases");
        let e = recognize(&catalog(&t), &json!({"group_size": 64, "bits": 4})).unwrap_err();
        assert!(e.contains("b.biases is missing"), "{e}");
        let mut t = base();
        t.retain(|x| x.0 != "b.scales");
        let e = recognize(&catalog(&t), &json!({"group_size": 64, "bits": 4})).unwrap_err();
        assert!(
            e.contains("b.weight: a packed U32 weight without b.scales"),
            "{e}"
        );
        let e = recognize(
            &catalog(&t),
            &json!({"group_size": 64, "bits": 4, "b": {"bits": 4}}),
        )
        .unwrap_err();
        assert!(e.contains("b.weight: a packed U32"), "{e}");
    }

    #[test]
    fn unquantized_modules_pass_through() {
        let mut t = base();
        t.retain(|x| !x.0.starts_with("b."));
        t.push(("b.weight", BF, &[8, 128]));
        let q = json!({"group_size": 64, "bits": 4, "b": false});
        let p = recognize(&catalog(&t), &q).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "a.weight");
        let e = recognize(&catalog(&[("x.weight", BF, &[2, 64])]), &q).unwrap_err();
        assert!(e.contains("no weight has scales"), "{e}");
    }
}
