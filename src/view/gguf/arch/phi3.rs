//! `phi3`: Phi-3, Phi-3.5 and Phi-4-mini (`Phi3ForCausalLM`), as the
//! converter's `Phi3MiniModel` writes them: fused `qkv_proj` and
//! `gate_up_proj` kept fused, its own hyperparameter list, and for a
//! long-context (LongRoPE) model the `rope_factors_long` / `_short`
//! tensors first and `phi3.rope.scaling.attn_factor` right after
//! `general.architecture` (both made while the converter prepares tensors).

use serde_json::{Map, Value};

use super::{Arch, Folder, Names, convert, map_name, skipped, text_filter};
use crate::view::gguf::config::{Config, Default as D};
use crate::view::gguf::tensors::{HfTensor, OutTensor, Values};
use crate::view::gguf::vocab;
use crate::view::gguf::writer::Kv;

#[derive(Debug)]
pub struct Phi3;

static PHI3: Phi3 = Phi3;

pub fn arch() -> &'static dyn Arch {
    &PHI3
}

/// gguf-py's `tensor_mapping.py` for `PHI3`.
const NAMES: Names = &[
    ("lm_head", "output"),
    ("model.embed_tokens", "token_embd"),
    ("model.norm", "output_norm"),
    ("model.layers.{}.input_layernorm", "blk.{}.attn_norm"),
    (
        "model.layers.{}.post_attention_layernorm",
        "blk.{}.ffn_norm",
    ),
    ("model.layers.{}.self_attn.qkv_proj", "blk.{}.attn_qkv"),
    ("model.layers.{}.self_attn.q_proj", "blk.{}.attn_q"),
    ("model.layers.{}.self_attn.k_proj", "blk.{}.attn_k"),
    ("model.layers.{}.self_attn.v_proj", "blk.{}.attn_v"),
    ("model.layers.{}.self_attn.o_proj", "blk.{}.attn_output"),
    ("model.layers.{}.mlp.gate_up_proj", "blk.{}.ffn_up"),
    ("model.layers.{}.mlp.up_proj", "blk.{}.ffn_up"),
    ("model.layers.{}.mlp.down_proj", "blk.{}.ffn_down"),
];

/// `Phi3Config`'s defaults (transformers 5.24) for the fields read
/// (`num_key_value_heads` defaults to `num_attention_heads`;
/// `rope_parameters` is made by [`phi3_rope`]).
const DEFAULTS: &[(&str, D)] = &[
    ("vocab_size", D::U64(32064)),
    ("hidden_size", D::U64(3072)),
    ("intermediate_size", D::U64(8192)),
    ("num_hidden_layers", D::U64(32)),
    ("num_attention_heads", D::U64(32)),
    ("max_position_embeddings", D::U64(4096)),
    ("original_max_position_embeddings", D::U64(4096)),
    ("rms_norm_eps", D::F64(1e-5)),
    ("sliding_window", D::Null),
];

impl Arch for Phi3 {
    fn name(&self) -> &'static str {
        "phi3"
    }

    fn config(&self, config: &Value) -> Config {
        let mut cfg = Config::new(config, DEFAULTS);
        if let Some(h) = cfg.u64(&["num_attention_heads"]) {
            cfg.default_to("num_key_value_heads", h.into());
        }
        let rope = phi3_rope(&cfg);
        cfg.set("rope_parameters", Value::Object(rope));
        cfg
    }

    fn early_kv(&self, cfg: &Config, kv: &mut Kv) {
        if let Some(Ok(f)) = long_rope(cfg).map(|l| l.map(|l| l.attn_factor)) {
            kv.f32("phi3.rope.scaling.attn_factor", f as f32);
        }
    }

    fn hparams(&self, cfg: &Config, kv: &mut Kv, file_type: u32) {
        let u = |kv: &mut Kv, key: &str, v: Option<u64>| {
            if let Some(v) = v {
                kv.u32(&format!("phi3.{key}"), v as u32);
            }
        };
        let rope = cfg.rope();
        u(kv, "context_length", context(cfg));
        u(
            kv,
            "rope.scaling.original_context_length",
            original_context(cfg),
        );
        u(kv, "embedding_length", cfg.u64(&["hidden_size", "n_embd"]));
        u(kv, "feed_forward_length", cfg.u64(&["intermediate_size"]));
        u(
            kv,
            "block_count",
            cfg.u64(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"]),
        );
        u(
            kv,
            "attention.head_count",
            cfg.u64(&["num_attention_heads", "n_head"]),
        );
        u(
            kv,
            "attention.head_count_kv",
            cfg.u64(&["num_key_value_heads", "n_head_kv"]),
        );
        if let Some(e) = cfg.f64(&["rms_norm_eps"]) {
            kv.f32("phi3.attention.layer_norm_rms_epsilon", e as f32);
        }
        u(kv, "rope.dimension_count", rope_dims(cfg));
        if let Some(t) = rope.theta {
            kv.f32("phi3.rope.freq_base", t as f32);
        }
        kv.u32("general.file_type", file_type);
        // None is written as 0 (Phi-4 has no sliding window).
        kv.u32(
            "phi3.attention.sliding_window",
            cfg.u64(&["sliding_window"]).unwrap_or(0) as u32,
        );
    }

    fn tensors(
        &self,
        cfg: &Config,
        hf: &[HfTensor],
        _: &dyn Folder,
    ) -> Result<Vec<OutTensor>, String> {
        let mut out = Vec::new();
        if let Some(long) = long_rope(cfg) {
            let long = long?;
            for (name, values) in [
                ("rope_factors_long.weight", long.long),
                ("rope_factors_short.weight", long.short),
            ] {
                let n = values.len() as u64;
                out.push(OutTensor::values(
                    name,
                    vec![n],
                    Values::Generated(values.into()),
                ));
            }
        }
        out.extend(convert(hf, None, |t| {
            let Some(name) = text_filter(&t.name) else {
                return Ok(None);
            };
            if skipped(&name) {
                return Ok(None);
            }
            let (out, _) = map_name(NAMES, &name)
                .ok_or_else(|| format!("llama.cpp has no phi3 name for tensor '{}'", t.name))?;
            Ok(Some(OutTensor::values(
                out,
                t.shape.clone(),
                Values::Hf(t.index),
            )))
        })?);
        Ok(out)
    }

    fn vocab(&self) -> vocab::Path {
        vocab::Path::Phi3
    }
}

/// `rope_parameters` as `Phi3Config` and the converter's `TextModel` leave
/// them: a legacy `rope_scaling` (if any) else `rope_parameters`, with
/// `rope_theta` (10000), `partial_rotary_factor` (1.0) and `rope_type`
/// filled in; for `yarn` / `longrope` the top-level
/// `original_max_position_embeddings` (over the dict's own), `su` and
/// `yarn` renamed `longrope`; then the top-level
/// `original_max_position_embeddings` when the dict still has none.
fn phi3_rope(cfg: &Config) -> Map<String, Value> {
    let raw = cfg.map();
    let truthy = |v: &&Value| v.as_object().is_some_and(|o| !o.is_empty());
    let mut rope = raw
        .get("rope_scaling")
        .filter(truthy)
        .or_else(|| raw.get("rope_parameters"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let given = |k: &str| raw.get(k).filter(|v| v.is_number()).cloned();
    rope.entry("rope_theta")
        .or_insert_with(|| given("rope_theta").unwrap_or(10000.0.into()));
    rope.entry("partial_rotary_factor")
        .or_insert_with(|| given("partial_rotary_factor").unwrap_or(1.0.into()));
    if !rope.contains_key("rope_type") {
        let t = rope.get("type").cloned().unwrap_or("default".into());
        rope.insert("rope_type".into(), t);
    }
    let kind = rope
        .get("rope_type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let original = cfg.get("original_max_position_embeddings");
    if matches!(kind.as_str(), "llama3" | "yarn" | "longrope")
        && let Some(o) = &original
    {
        rope.insert("original_max_position_embeddings".into(), o.clone());
    }
    if matches!(kind.as_str(), "su" | "yarn") {
        rope.insert("rope_type".into(), "longrope".into());
    }
    if !rope.contains_key("original_max_position_embeddings")
        && let Some(o) = original
    {
        rope.insert("original_max_position_embeddings".into(), o);
    }
    rope
}

fn context(cfg: &Config) -> Option<u64> {
    cfg.u64(&["n_positions", "max_position_embeddings"])
}

fn original_context(cfg: &Config) -> Option<u64> {
    let v = cfg
        .rope()
        .params
        .get("original_max_position_embeddings")?
        .clone();
    v.as_u64().or_else(|| v.as_f64().map(|f| f as u64))
}

/// `int(partial_rotary_factor * n_embd) // n_head`.
fn rope_dims(cfg: &Config) -> Option<u64> {
    let rot = cfg.rope().f64("partial_rotary_factor").unwrap_or(1.0);
    let n_embd = cfg.u64(&["hidden_size", "n_embd"])?;
    let n_head = cfg.u64(&["num_attention_heads", "n_head"])?;
    ((rot * n_embd as f64) as u64).checked_div(n_head)
}

/// A LongRoPE model's factors and attention factor.
struct LongRope {
    long: Vec<f32>,
    short: Vec<f32>,
    attn_factor: f64,
}

/// The LongRoPE settings, when `rope_parameters` has a (non-empty)
/// `long_factor`: `Err` where the converter stops.
fn long_rope(cfg: &Config) -> Option<Result<LongRope, String>> {
    let rope = cfg.rope();
    let long = rope
        .params
        .get("long_factor")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())?;
    Some((|| {
        let max = context(cfg).ok_or("config.json has no max_position_embeddings")? as f64;
        let orig = original_context(cfg)
            .ok_or("config.json has no original_max_position_embeddings")?
            as f64;
        let scale = max / orig;
        let kind = rope.kind.as_deref().unwrap_or("").to_lowercase();
        let attn_factor = match kind.as_str() {
            "su" | "longrope" if scale > 1.0 => (1.0 + scale.ln() / orig.ln()).sqrt(),
            "yarn" if scale > 1.0 => 0.1 * scale.ln() + 1.0,
            "su" | "longrope" | "yarn" => 1.0,
            k => {
                return Err(format!(
                    "llama.cpp's converter has no phi3 rope scaling '{k}'"
                ));
            }
        };
        let floats = |a: &[Value]| -> Result<Vec<f32>, String> {
            a.iter()
                .map(|v| v.as_f64().map(|f| f as f32))
                .collect::<Option<Vec<f32>>>()
                .ok_or_else(|| "a rope factor is not a number".to_string())
        };
        let long = floats(long)?;
        let short = rope
            .params
            .get("short_factor")
            .and_then(Value::as_array)
            .ok_or("rope_parameters has long_factor but no short_factor")?;
        let short = floats(short)?;
        let dims = rope_dims(cfg).ok_or("config.json has no hidden_size / heads")?;
        if long.len() != short.len() || (long.len() as u64) * 2 != dims {
            return Err(format!(
                "the rope long and short factors must have {} values (they have {} and {})",
                dims as f64 / 2.0,
                long.len(),
                short.len()
            ));
        }
        Ok(LongRope {
            long,
            short,
            attn_factor,
        })
    })())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::gguf::GgufValue;
    use crate::dtype::Dtype;
    use crate::view::gguf::arch::NoFiles;
    use serde_json::json;

    fn keys(kv: &Kv) -> Vec<String> {
        kv.to_metadata().iter().map(|(k, _)| k.clone()).collect()
    }

    fn long_config() -> Value {
        // Phi-3-mini-128k-instruct's legacy config.json (abridged factors).
        let long: Vec<f64> = (0..48).map(|i| 1.0 + 0.1 * i as f64).collect();
        let short: Vec<f64> = (0..48).map(|i| 1.0 + 0.01 * i as f64).collect();
        json!({"model_type": "phi3", "architectures": ["Phi3ForCausalLM"],
            "hidden_size": 3072, "num_attention_heads": 32, "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096, "rope_theta": 10000.0,
            "rope_scaling": {"type": "longrope", "long_factor": long, "short_factor": short},
            "sliding_window": 262144, "vocab_size": 32064})
    }

    #[test]
    fn phi3_hparams_in_order() {
        let a = arch();
        let cfg = a.config(&json!({"model_type": "phi3", "sliding_window": 2047}));
        let mut kv = Kv::new();
        a.hparams(&cfg, &mut kv, 1);
        assert_eq!(
            keys(&kv),
            [
                "phi3.context_length",
                "phi3.rope.scaling.original_context_length",
                "phi3.embedding_length",
                "phi3.feed_forward_length",
                "phi3.block_count",
                "phi3.attention.head_count",
                "phi3.attention.head_count_kv",
                "phi3.attention.layer_norm_rms_epsilon",
                "phi3.rope.dimension_count",
                "phi3.rope.freq_base",
                "general.file_type",
                "phi3.attention.sliding_window",
            ]
        );
        let u = |k: &str| kv.get(k).cloned();
        assert_eq!(u("phi3.context_length"), Some(GgufValue::U32(4096)));
        assert_eq!(
            u("phi3.rope.scaling.original_context_length"),
            Some(GgufValue::U32(4096))
        );
        assert_eq!(u("phi3.attention.head_count_kv"), Some(GgufValue::U32(32)));
        assert_eq!(u("phi3.rope.dimension_count"), Some(GgufValue::U32(96)));
        assert_eq!(
            u("phi3.attention.sliding_window"),
            Some(GgufValue::U32(2047))
        );
        // No sliding window: 0; a partial rotary factor (Phi-4-mini).
        let cfg = a.config(&json!({"model_type": "phi3", "partial_rotary_factor": 0.75,
            "hidden_size": 3072, "num_attention_heads": 24}));
        let mut kv = Kv::new();
        a.hparams(&cfg, &mut kv, 1);
        assert_eq!(
            kv.get("phi3.attention.sliding_window"),
            Some(&GgufValue::U32(0))
        );
        assert_eq!(
            kv.get("phi3.rope.dimension_count"),
            Some(&GgufValue::U32(96))
        );
        let mut early = Kv::new();
        a.early_kv(&cfg, &mut early);
        assert!(early.is_empty());
    }

    #[test]
    fn phi3_long_rope_attn_factor_and_factors_first() {
        let a = arch();
        let cfg = a.config(&long_config());
        let mut kv = Kv::new();
        a.early_kv(&cfg, &mut kv);
        let want = (1.0 + 32f64.ln() / 4096f64.ln()).sqrt() as f32;
        assert_eq!(
            kv.get("phi3.rope.scaling.attn_factor"),
            Some(&GgufValue::F32(want))
        );
        let t = vec![HfTensor {
            index: 0,
            name: "model.layers.0.self_attn.qkv_proj.weight".into(),
            shape: vec![9216, 3072],
            dtype: Dtype::BF16,
            file: "model.safetensors".into(),
            mxfp4: None,
        }];
        let out = a.tensors(&cfg, &t, &NoFiles).unwrap();
        let names: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "rope_factors_long.weight",
                "rope_factors_short.weight",
                "blk.0.attn_qkv.weight"
            ]
        );
        assert_eq!(out[0].shape, [48]);
        assert_eq!(out[2].shape, [9216, 3072]);
        let mut h = Kv::new();
        a.hparams(&cfg, &mut h, 1);
        assert_eq!(
            h.get("phi3.rope.scaling.original_context_length"),
            Some(&GgufValue::U32(4096))
        );
        assert!(h.get("phi3.rope.scaling.type").is_none());
        // Factors of the wrong length stop the converter.
        let mut c = long_config();
        c["rope_scaling"]["short_factor"] = json!([1.0]);
        assert!(a.tensors(&a.config(&c), &t, &NoFiles).is_err());
    }

    #[test]
    fn phi3_names_keep_fused_tensors() {
        let a = arch();
        let cfg = a.config(&json!({"model_type": "phi3"}));
        let t: Vec<HfTensor> = [
            "lm_head.weight",
            "model.layers.1.mlp.gate_up_proj.weight",
            "model.layers.1.post_attention_layernorm.weight",
        ]
        .iter()
        .enumerate()
        .map(|(i, n)| HfTensor {
            index: i as u32,
            name: n.to_string(),
            shape: vec![4, 4],
            dtype: Dtype::BF16,
            file: "model.safetensors".into(),
            mxfp4: None,
        })
        .collect();
        let out = a.tensors(&cfg, &t, &NoFiles).unwrap();
        let names: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "output.weight",
                "blk.1.ffn_up.weight",
                "blk.1.ffn_norm.weight"
            ]
        );
    }
}
