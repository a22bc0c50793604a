//! gpt-oss layout bridging: original names and config -> Hugging Face.
//!
//! The gpt-oss `original/` checkpoint and the Hugging Face one hold the same
//! weights under different names, with q/k/v fused in the original, and with
//! different config keys. This module is the mapping (documented in
//! docs/VIEWS.md); the bf16 view uses it to present an original checkpoint
//! exactly as transformers expects a BF16 gpt-oss. It follows
//! transformers' `convert_gpt_oss_weights_to_hf.py`.

use serde_json::{Map, Value, json};

use crate::error::ViewError;

/// How one original tensor appears in the Hugging Face layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HfName {
    /// Renamed, unchanged.
    One(String),
    /// Fused q|k|v split by rows (axis 0) into three tensors:
    /// (name, first row, row count).
    Split(Vec<(String, u64, u64)>),
    /// An MXFP4 `.blocks` tensor: its pair becomes this one BF16 tensor.
    Dequant(String),
    /// An MXFP4 `.scales` tensor: folded into its blocks' tensor.
    Absorbed,
}

/// q/k/v row counts from the config: (num_attention_heads * head_dim,
/// num_key_value_heads * head_dim).
#[derive(Debug, Clone, Copy)]
pub struct QkvRows {
    pub q: u64,
    pub kv: u64,
}

impl QkvRows {
    pub fn from_config(config: &Value) -> Result<QkvRows, ViewError> {
        let get = |k: &str| {
            config
                .get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| ViewError::Config(format!("has no integer '{k}'")))
        };
        let head_dim = get("head_dim")?;
        let rows = |k: &str| {
            get(k)?.checked_mul(head_dim).ok_or_else(|| {
                ViewError::Config(format!("'{k}' x 'head_dim' ({head_dim}) overflows 64 bits"))
            })
        };
        let (q, kv) = (rows("num_attention_heads")?, rows("num_key_value_heads")?);
        // The fused tensor holds q, k and v rows: q + 2 kv must be countable.
        q.checked_add(kv)
            .and_then(|n| n.checked_add(kv))
            .ok_or_else(|| ViewError::Config("q/k/v row counts overflow 64 bits".into()))?;
        Ok(QkvRows { q, kv })
    }
}

/// The Hugging Face name(s) of original tensor `name`, or `None` for a name
/// outside the gpt-oss scheme (kept under its own name).
pub fn hf_name(name: &str, qkv: QkvRows) -> Option<HfName> {
    let one = |s: String| Some(HfName::One(s));
    match name {
        "embedding.weight" => return one("model.embed_tokens.weight".into()),
        "unembedding.weight" => return one("lm_head.weight".into()),
        "norm.scale" => return one("model.norm.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("block.")?;
    let (layer, part) = rest.split_once('.')?;
    layer.parse::<u64>().ok()?;
    let p = format!("model.layers.{layer}.");
    let hf = match part {
        "attn.norm.scale" => format!("{p}input_layernorm.weight"),
        "mlp.norm.scale" => format!("{p}post_attention_layernorm.weight"),
        "attn.out.weight" => format!("{p}self_attn.o_proj.weight"),
        "attn.out.bias" => format!("{p}self_attn.o_proj.bias"),
        "attn.sinks" => format!("{p}self_attn.sinks"),
        "mlp.gate.weight" => format!("{p}mlp.router.weight"),
        "mlp.gate.bias" => format!("{p}mlp.router.bias"),
        "mlp.mlp1_bias" => format!("{p}mlp.experts.gate_up_proj_bias"),
        "mlp.mlp2_bias" => format!("{p}mlp.experts.down_proj_bias"),
        "mlp.mlp1_weight.blocks" => {
            return Some(HfName::Dequant(format!("{p}mlp.experts.gate_up_proj")));
        }
        "mlp.mlp2_weight.blocks" => {
            return Some(HfName::Dequant(format!("{p}mlp.experts.down_proj")));
        }
        "mlp.mlp1_weight.scales" | "mlp.mlp2_weight.scales" => return Some(HfName::Absorbed),
        "attn.qkv.weight" | "attn.qkv.bias" => {
            let kind = part.rsplit('.').next().expect("has a dot");
            return Some(HfName::Split(vec![
                (format!("{p}self_attn.q_proj.{kind}"), 0, qkv.q),
                (format!("{p}self_attn.k_proj.{kind}"), qkv.q, qkv.kv),
                (
                    format!("{p}self_attn.v_proj.{kind}"),
                    qkv.q + qkv.kv,
                    qkv.kv,
                ),
            ]));
        }
        _ => return None,
    };
    one(hf)
}

/// Most layers a derived config may list. `layer_types` has one entry per
/// layer, so `num_hidden_layers` sizes an allocation; no model comes near.
pub const MAX_LAYERS: u64 = 1 << 20;

/// The Hugging Face `config.json` of an unquantized BF16 gpt-oss, derived
/// from the original one (keys: num_hidden_layers, num_experts,
/// experts_per_token, vocab_size, hidden_size, intermediate_size,
/// swiglu_limit, head_dim, num_attention_heads, num_key_value_heads,
/// sliding_window, initial_context_length, rope_theta, rope_scaling_factor,
/// rope_ntk_alpha, rope_ntk_beta).
pub fn hf_config(original: &Value) -> Result<Value, ViewError> {
    let bad = |why: String| ViewError::Config(why);
    let Value::Object(o) = original else {
        return Err(bad("is not an object".into()));
    };
    let need = |k: &str| {
        o.get(k)
            .cloned()
            .ok_or_else(|| bad(format!("has no '{k}'")))
    };
    let num = |k: &str| {
        o.get(k)
            .and_then(Value::as_f64)
            .ok_or_else(|| bad(format!("has no number '{k}'")))
    };
    let layers = need("num_hidden_layers")?
        .as_u64()
        .ok_or_else(|| bad("has a num_hidden_layers that is not an integer".into()))?;
    if layers > MAX_LAYERS {
        return Err(bad(format!(
            "has num_hidden_layers {layers}, more than {MAX_LAYERS}"
        )));
    }
    let context = need("initial_context_length")?;
    let factor = num("rope_scaling_factor")?;
    let max_pos = context
        .as_f64()
        .map(|c| (c * factor).round() as u64)
        .ok_or_else(|| bad("has an initial_context_length that is not a number".into()))?;
    let mut c = Map::new();
    for k in [
        "num_hidden_layers",
        "experts_per_token",
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "swiglu_limit",
        "head_dim",
        "num_attention_heads",
        "num_key_value_heads",
        "sliding_window",
        "initial_context_length",
        "rope_theta",
    ] {
        c.insert(k.into(), need(k)?);
    }
    c.insert("num_local_experts".into(), need("num_experts")?);
    c.insert("num_experts_per_tok".into(), need("experts_per_token")?);
    c.insert(
        "rope_scaling".into(),
        json!({
            "beta_fast": num("rope_ntk_beta")?,
            "beta_slow": num("rope_ntk_alpha")?,
            "factor": factor,
            "original_max_position_embeddings": context,
            "rope_type": "yarn",
            "truncate": false,
        }),
    );
    c.insert("max_position_embeddings".into(), json!(max_pos));
    let layer_types: Vec<&str> = (0..layers)
        .map(|i| {
            if i % 2 == 0 {
                "sliding_attention"
            } else {
                "full_attention"
            }
        })
        .collect();
    c.insert("layer_types".into(), json!(layer_types));
    for (k, v) in [
        ("architectures", json!(["GptOssForCausalLM"])),
        ("model_type", json!("gpt_oss")),
        ("attention_bias", json!(true)),
        ("attention_dropout", json!(0.0)),
        ("hidden_act", json!("silu")),
        ("initializer_range", json!(0.02)),
        ("rms_norm_eps", json!(1e-5)),
        ("tie_word_embeddings", json!(false)),
        ("use_cache", json!(true)),
    ] {
        c.insert(k.into(), v);
    }
    Ok(Value::Object(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const QKV: QkvRows = QkvRows { q: 64, kv: 32 };

    #[test]
    fn names() {
        let n = |s| hf_name(s, QKV);
        assert_eq!(
            n("embedding.weight"),
            Some(HfName::One("model.embed_tokens.weight".into()))
        );
        assert_eq!(
            n("unembedding.weight"),
            Some(HfName::One("lm_head.weight".into()))
        );
        assert_eq!(
            n("block.3.mlp.gate.bias"),
            Some(HfName::One("model.layers.3.mlp.router.bias".into()))
        );
        assert_eq!(
            n("block.0.mlp.mlp2_weight.blocks"),
            Some(HfName::Dequant(
                "model.layers.0.mlp.experts.down_proj".into()
            ))
        );
        assert_eq!(n("block.0.mlp.mlp2_weight.scales"), Some(HfName::Absorbed));
        assert_eq!(
            n("block.1.attn.qkv.bias"),
            Some(HfName::Split(vec![
                ("model.layers.1.self_attn.q_proj.bias".into(), 0, 64),
                ("model.layers.1.self_attn.k_proj.bias".into(), 64, 32),
                ("model.layers.1.self_attn.v_proj.bias".into(), 96, 32),
            ]))
        );
        assert_eq!(n("block.x.attn.sinks"), None);
        assert_eq!(n("something.else"), None);
    }

    #[test]
    fn config() {
        let o = json!({"num_hidden_layers": 3, "num_experts": 4, "experts_per_token": 2, "vocab_size": 32,
            "hidden_size": 64, "intermediate_size": 64, "swiglu_limit": 7.0, "head_dim": 16,
            "num_attention_heads": 4, "num_key_value_heads": 2, "sliding_window": 8,
            "initial_context_length": 64, "rope_theta": 150000, "rope_scaling_factor": 4.0,
            "rope_ntk_alpha": 1, "rope_ntk_beta": 32});
        let c = hf_config(&o).unwrap();
        assert_eq!(c["num_local_experts"], 4);
        assert_eq!(c["num_experts_per_tok"], 2);
        assert_eq!(c["max_position_embeddings"], 256);
        assert_eq!(c["rope_scaling"]["beta_slow"], 1.0);
        assert_eq!(c["layer_types"][2], "sliding_attention");
        assert!(hf_config(&json!({})).is_err());
        // One layer type per layer: a huge count was a huge allocation.
        let mut huge = o.clone();
        huge["num_hidden_layers"] = json!(1u64 << 40);
        let err = hf_config(&huge).unwrap_err().to_string();
        assert!(
            err.contains("num_hidden_layers 1099511627776, more than 1048576"),
            "{err}"
        );
    }

    #[test]
    fn qkv_rows_that_overflow_are_refused() {
        let rows = |heads: u64, kv: u64, head_dim: u64| {
            let c = json!({"num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": head_dim});
            QkvRows::from_config(&c)
                .map(|r| (r.q, r.kv))
                .map_err(|e| e.to_string())
        };
        assert_eq!(rows(4, 2, 16), Ok((64, 32)));
        let big = 1u64 << 32;
        assert!(
            rows(big, 1, big)
                .unwrap_err()
                .contains("'num_attention_heads' x 'head_dim'")
        );
        assert!(
            rows(1, big, big)
                .unwrap_err()
                .contains("'num_key_value_heads' x 'head_dim'")
        );
        assert!(
            rows(1, 1 << 62, 2)
                .unwrap_err()
                .contains("q/k/v row counts overflow")
        );
    }
}
