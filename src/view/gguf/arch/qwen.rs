//! The Qwen family: `qwen2` (Qwen1.5, Qwen2, Qwen2.5: `Qwen2ForCausalLM`),
//! `qwen3` (`Qwen3ForCausalLM`), `qwen2moe` (Qwen1.5-MoE, Qwen2-57B-A14B:
//! `Qwen2MoeForCausalLM`) and `qwen3moe` (`Qwen3MoeForCausalLM`), as the
//! converter's `Qwen2Model`, `Qwen3Model`, `Qwen2MoeModel` and
//! `Qwen3MoeModel` write them (`conversion/qwen.py`).
//!
//! No permutes: tensors are renamed and, for the MoE models, the
//! per-expert tensors of a layer stacked in the order down, gate, up (or,
//! from the fused layout, `gate_up_proj` cut in halves). qwen2 has q/k/v
//! biases, qwen3 `q_norm`/`k_norm`; qwen2moe has a shared expert with its
//! own gate (`ffn_gate_inp_shexp`, F32 like the router).

use serde_json::Value;

use super::{Arch, Experts, Folder, Names, convert_many, map_name, skipped, text_model_params};
use crate::view::gguf::config::{Config, Default as D};
use crate::view::gguf::tensors::{HfTensor, OutTensor, Values};
use crate::view::gguf::vocab;
use crate::view::gguf::writer::Kv;

/// One of the family's architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Qwen2,
    Qwen3,
    Qwen2Moe,
    Qwen3Moe,
}

#[derive(Debug)]
pub struct Qwen {
    kind: Kind,
}

static QWEN2: Qwen = Qwen { kind: Kind::Qwen2 };
static QWEN3: Qwen = Qwen { kind: Kind::Qwen3 };
static QWEN2_MOE: Qwen = Qwen {
    kind: Kind::Qwen2Moe,
};
static QWEN3_MOE: Qwen = Qwen {
    kind: Kind::Qwen3Moe,
};

/// The architecture of config class `class` (the converter chooses by
/// class, transformers' `AutoConfig` by `model_type`: they must agree, or
/// the class defaults would be another class's).
pub fn arch(model_type: &str, class: &str) -> Result<&'static dyn Arch, String> {
    let (arch, expected): (&'static Qwen, &str) = match class {
        "Qwen2ForCausalLM" => (&QWEN2, "qwen2"),
        "Qwen3ForCausalLM" => (&QWEN3, "qwen3"),
        "Qwen2MoeForCausalLM" => (&QWEN2_MOE, "qwen2_moe"),
        "Qwen3MoeForCausalLM" => (&QWEN3_MOE, "qwen3_moe"),
        _ => return Err(format!("{class} is not a Qwen causal language model")),
    };
    if model_type != expected {
        return Err(format!(
            "config.json says {class} with model_type '{model_type}', not '{expected}'"
        ));
    }
    Ok(arch)
}

/// Every architecture's names (gguf-py's `tensor_mapping.py`, for the names
/// Qwen checkpoints use).
const BASE: Names = &[
    ("lm_head", "output"),
    ("model.embed_tokens", "token_embd"),
    ("model.norm", "output_norm"),
    ("model.layers.{}.input_layernorm", "blk.{}.attn_norm"),
    (
        "model.layers.{}.post_attention_layernorm",
        "blk.{}.ffn_norm",
    ),
    ("model.layers.{}.self_attn.q_proj", "blk.{}.attn_q"),
    ("model.layers.{}.self_attn.k_proj", "blk.{}.attn_k"),
    ("model.layers.{}.self_attn.v_proj", "blk.{}.attn_v"),
    ("model.layers.{}.self_attn.o_proj", "blk.{}.attn_output"),
];

/// Qwen3's per-head norms of Q and K.
const QK_NORM: Names = &[
    ("model.layers.{}.self_attn.q_norm", "blk.{}.attn_q_norm"),
    ("model.layers.{}.self_attn.k_norm", "blk.{}.attn_k_norm"),
];

/// The dense feed-forward (qwen2, qwen3; the MoE architectures have none).
const DENSE: Names = &[
    ("model.layers.{}.mlp.gate_proj", "blk.{}.ffn_gate"),
    ("model.layers.{}.mlp.up_proj", "blk.{}.ffn_up"),
    ("model.layers.{}.mlp.down_proj", "blk.{}.ffn_down"),
];

/// The router and the stacked experts (the names the converter gives
/// stacked or fused experts before mapping them).
const MOE: Names = &[
    ("model.layers.{}.mlp.gate", "blk.{}.ffn_gate_inp"),
    (
        "model.layers.{}.mlp.experts.down_proj",
        "blk.{}.ffn_down_exps",
    ),
    (
        "model.layers.{}.mlp.experts.gate_proj",
        "blk.{}.ffn_gate_exps",
    ),
    ("model.layers.{}.mlp.experts.up_proj", "blk.{}.ffn_up_exps"),
];

/// Qwen2-MoE's shared expert and its gate.
const SHARED: Names = &[
    (
        "model.layers.{}.mlp.shared_expert.gate_proj",
        "blk.{}.ffn_gate_shexp",
    ),
    (
        "model.layers.{}.mlp.shared_expert.up_proj",
        "blk.{}.ffn_up_shexp",
    ),
    (
        "model.layers.{}.mlp.shared_expert.down_proj",
        "blk.{}.ffn_down_shexp",
    ),
    (
        "model.layers.{}.mlp.shared_expert_gate",
        "blk.{}.ffn_gate_inp_shexp",
    ),
];

/// Per-expert tensors, stacked as `Qwen2MoeModel.modify_tensors` does.
const EXPERT_PARTS: &[(&str, &str)] = &[
    ("down_proj", "blk.{}.ffn_down_exps"),
    ("gate_proj", "blk.{}.ffn_gate_exps"),
    ("up_proj", "blk.{}.ffn_up_exps"),
];

/// The defaults transformers 5.24's config classes give the fields read
/// (`Qwen2Config`, `Qwen3Config`, `Qwen2MoeConfig`, `Qwen3MoeConfig`).
const QWEN2_DEFAULTS: &[(&str, D)] = &[
    ("vocab_size", D::U64(151936)),
    ("hidden_size", D::U64(4096)),
    ("intermediate_size", D::U64(22016)),
    ("num_hidden_layers", D::U64(32)),
    ("num_attention_heads", D::U64(32)),
    ("num_key_value_heads", D::U64(32)),
    ("max_position_embeddings", D::U64(32768)),
    ("rms_norm_eps", D::F64(1e-6)),
    ("rope_theta", D::F64(10000.0)),
];
const QWEN3_DEFAULTS: &[(&str, D)] = &[
    ("vocab_size", D::U64(151936)),
    ("hidden_size", D::U64(4096)),
    ("intermediate_size", D::U64(22016)),
    ("num_hidden_layers", D::U64(32)),
    ("num_attention_heads", D::U64(32)),
    ("num_key_value_heads", D::U64(32)),
    ("head_dim", D::U64(128)),
    ("max_position_embeddings", D::U64(32768)),
    ("rms_norm_eps", D::F64(1e-6)),
    ("rope_theta", D::F64(10000.0)),
];
const QWEN2_MOE_DEFAULTS: &[(&str, D)] = &[
    ("vocab_size", D::U64(151936)),
    ("hidden_size", D::U64(2048)),
    ("intermediate_size", D::U64(5632)),
    ("num_hidden_layers", D::U64(24)),
    ("num_attention_heads", D::U64(16)),
    ("num_key_value_heads", D::U64(16)),
    ("max_position_embeddings", D::U64(32768)),
    ("rms_norm_eps", D::F64(1e-6)),
    ("rope_theta", D::F64(10000.0)),
    ("num_experts", D::U64(60)),
    ("num_experts_per_tok", D::U64(4)),
    ("moe_intermediate_size", D::U64(1408)),
    ("shared_expert_intermediate_size", D::U64(5632)),
];
const QWEN3_MOE_DEFAULTS: &[(&str, D)] = &[
    ("vocab_size", D::U64(151936)),
    ("hidden_size", D::U64(2048)),
    ("intermediate_size", D::U64(6144)),
    ("num_hidden_layers", D::U64(24)),
    ("num_attention_heads", D::U64(32)),
    ("num_key_value_heads", D::U64(4)),
    ("max_position_embeddings", D::U64(32768)),
    ("rms_norm_eps", D::F64(1e-6)),
    ("rope_theta", D::F64(10000.0)),
    ("num_local_experts", D::U64(128)),
    ("num_experts_per_tok", D::U64(8)),
    ("moe_intermediate_size", D::U64(768)),
];

impl Qwen {
    fn moe(&self) -> bool {
        matches!(self.kind, Kind::Qwen2Moe | Kind::Qwen3Moe)
    }

    /// The name tables of the architecture (gguf-py maps only the tensors
    /// its `MODEL_TENSORS` lists: a dense MLP in a MoE model, or Q/K norms
    /// in qwen2, have no name).
    fn names(&self) -> &'static [Names] {
        match self.kind {
            Kind::Qwen2 => &[BASE, DENSE],
            Kind::Qwen3 => &[BASE, QK_NORM, DENSE],
            Kind::Qwen2Moe => &[BASE, MOE, SHARED],
            Kind::Qwen3Moe => &[BASE, QK_NORM, MOE],
        }
    }

    /// The GGUF name of a Hugging Face tensor name.
    fn gguf_name(&self, hf: &str) -> Result<String, String> {
        self.names()
            .iter()
            .find_map(|names| map_name(names, hf))
            .map(|(name, _)| name)
            .ok_or_else(|| format!("llama.cpp has no {} name for tensor '{hf}'", self.name()))
    }

    /// One Hugging Face tensor as the converter writes it (the per-expert
    /// tensors are stacked by `convert_many` before this).
    fn one(&self, t: &HfTensor) -> Result<Vec<OutTensor>, String> {
        if skipped(&t.name) {
            return Ok(Vec::new());
        }
        if self.moe() {
            let stem = t.name.strip_suffix(".weight").unwrap_or(&t.name);
            if stem.ends_with("mlp.experts.down_proj") {
                let name = self.gguf_name(&format!("{stem}.weight"))?;
                return Ok(vec![OutTensor::values(
                    name,
                    t.shape.clone(),
                    Values::Hf(t.index),
                )]);
            }
            if let Some(base) = stem.strip_suffix(".gate_up_proj")
                && stem.ends_with("mlp.experts.gate_up_proj")
            {
                return self.gate_up(t, base);
            }
        }
        let name = self.gguf_name(&t.name)?;
        Ok(vec![OutTensor::values(
            name,
            t.shape.clone(),
            Values::Hf(t.index),
        )])
    }

    /// Fused experts `gate_up_proj` `[E, 2I, H]`: the gate is the first
    /// half of each expert's rows, the up projection the second (halves,
    /// not interleaved).
    fn gate_up(&self, t: &HfTensor, base: &str) -> Result<Vec<OutTensor>, String> {
        let n = t.shape.len();
        if n < 3 || !t.shape[n - 2].is_multiple_of(2) {
            return Err(format!(
                "{} has shape {:?}, not [experts, 2 x rows, columns]",
                t.name, t.shape
            ));
        }
        let half = t.shape[n - 2] / 2;
        let mut shape = t.shape.clone();
        shape[n - 2] = half;
        [("gate_proj", 0), ("up_proj", half)]
            .into_iter()
            .map(|(part, start)| {
                let name = self.gguf_name(&format!("{base}.{part}.weight"))?;
                let values = Values::Rows {
                    hf: t.index,
                    start,
                    count: half,
                };
                Ok(OutTensor::values(name, shape.clone(), values))
            })
            .collect()
    }
}

impl Arch for Qwen {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Qwen2 => "qwen2",
            Kind::Qwen3 => "qwen3",
            Kind::Qwen2Moe => "qwen2moe",
            Kind::Qwen3Moe => "qwen3moe",
        }
    }

    fn config(&self, config: &Value) -> Config {
        let defaults = match self.kind {
            Kind::Qwen2 => QWEN2_DEFAULTS,
            Kind::Qwen3 => QWEN3_DEFAULTS,
            Kind::Qwen2Moe => QWEN2_MOE_DEFAULTS,
            Kind::Qwen3Moe => QWEN3_MOE_DEFAULTS,
        };
        let mut cfg = Config::new(config, defaults);
        let explicit_null = |cfg: &Config, k: &str| cfg.map().get(k).is_some_and(Value::is_null);
        match self.kind {
            // `num_key_value_heads: None` becomes the head count (a missing
            // one is the class default).
            Kind::Qwen2 | Kind::Qwen3 => {
                if explicit_null(&cfg, "num_key_value_heads")
                    && let Some(h) = cfg.get("num_attention_heads")
                {
                    cfg.default_to("num_key_value_heads", h);
                }
            }
            // `num_experts` is an alias of `num_local_experts` (which wins
            // when both are given); `to_dict` has only the latter.
            Kind::Qwen3Moe => {
                let alias = cfg.map().get("num_experts").filter(|v| !v.is_null());
                if let Some(n) = alias.cloned() {
                    cfg.default_to("num_local_experts", n);
                }
            }
            Kind::Qwen2Moe => {}
        }
        cfg
    }

    fn tensors(
        &self,
        cfg: &Config,
        hf: &[HfTensor],
        _: &dyn Folder,
    ) -> Result<Vec<OutTensor>, String> {
        let experts = if self.moe() {
            let count = cfg.need_u64(&["num_local_experts", "num_experts"])?;
            Some(Experts {
                prefix: "model.layers.{}.mlp.experts.",
                parts: EXPERT_PARTS,
                count,
            })
        } else {
            None
        };
        convert_many(hf, experts.as_ref(), |t| self.one(t))
    }

    fn hparams(&self, cfg: &Config, kv: &mut Kv, file_type: u32) {
        let arch = self.name();
        text_model_params(arch, cfg, kv, file_type);
        if self.moe() {
            if let Some(n) = cfg.u64(&["moe_intermediate_size"]) {
                kv.u32(&format!("{arch}.expert_feed_forward_length"), n as u32);
            }
            if let Some(n) = cfg.u64(&["shared_expert_intermediate_size"]) {
                kv.u32(
                    &format!("{arch}.expert_shared_feed_forward_length"),
                    n as u32,
                );
            }
        }
    }

    fn vocab(&self) -> vocab::Path {
        match self.kind {
            // `Qwen2Model.set_vocab`: SentencePiece if there is a
            // tokenizer.model, else BPE.
            Kind::Qwen2 | Kind::Qwen3 => vocab::Path::SentencePieceOrBpe,
            // `TextModel.set_vocab`: BPE only.
            Kind::Qwen2Moe | Kind::Qwen3Moe => vocab::Path::Bpe,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::gguf::GgufValue;
    use crate::dtype::Dtype;
    use crate::view::gguf::tensors::Data;
    use serde_json::json;

    fn arch_of(config: &Value) -> &'static dyn Arch {
        super::super::of(config).unwrap()
    }

    /// The key/value pairs `hparams` writes, as `(key, value)` strings.
    fn hparams(config: Value) -> Vec<(String, String)> {
        let arch = arch_of(&config);
        let cfg = arch.config(&config);
        let mut kv = Kv::new();
        arch.hparams(&cfg, &mut kv, 1);
        kv.to_metadata()
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    GgufValue::U32(x) => format!("u32 {x}"),
                    GgufValue::F32(x) => format!("f32 {x}"),
                    other => format!("{other:?}"),
                };
                (k.clone(), v)
            })
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A sorted list of tensors, as the converter reads one file.
    fn hf(tensors: &[(&str, &[u64])]) -> Vec<HfTensor> {
        let mut out: Vec<HfTensor> = tensors
            .iter()
            .enumerate()
            .map(|(i, (name, shape))| HfTensor {
                index: i as u32,
                name: name.to_string(),
                shape: shape.to_vec(),
                dtype: Dtype::BF16,
                file: "model.safetensors".into(),
                mxfp4: None,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn names(out: &[OutTensor]) -> Vec<&str> {
        out.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn dispatch_by_class_and_model_type() {
        let of = |mt: &str, class: &str| {
            super::super::of(&json!({"model_type": mt, "architectures": [class]})).map(|a| a.name())
        };
        assert_eq!(of("qwen2", "Qwen2ForCausalLM"), Ok("qwen2"));
        assert_eq!(of("qwen3", "Qwen3ForCausalLM"), Ok("qwen3"));
        assert_eq!(of("qwen2_moe", "Qwen2MoeForCausalLM"), Ok("qwen2moe"));
        assert_eq!(of("qwen3_moe", "Qwen3MoeForCausalLM"), Ok("qwen3moe"));
        assert!(of("qwen3", "Qwen2ForCausalLM").is_err());
        // Embedding models (pooling from sentence-transformers files) are
        // not written.
        assert!(of("qwen2", "Qwen2Model").is_err());
        assert!(of("qwen3", "").is_err());
    }

    #[test]
    fn qwen2_names() {
        let q = &QWEN2;
        let n = |s: &str| q.gguf_name(s);
        assert_eq!(n("lm_head.weight").unwrap(), "output.weight");
        assert_eq!(n("model.embed_tokens.weight").unwrap(), "token_embd.weight");
        assert_eq!(n("model.norm.weight").unwrap(), "output_norm.weight");
        assert_eq!(
            n("model.layers.3.input_layernorm.weight").unwrap(),
            "blk.3.attn_norm.weight"
        );
        assert_eq!(
            n("model.layers.3.post_attention_layernorm.weight").unwrap(),
            "blk.3.ffn_norm.weight"
        );
        assert_eq!(
            n("model.layers.12.self_attn.q_proj.bias").unwrap(),
            "blk.12.attn_q.bias"
        );
        assert_eq!(
            n("model.layers.0.self_attn.v_proj.weight").unwrap(),
            "blk.0.attn_v.weight"
        );
        assert_eq!(
            n("model.layers.0.self_attn.o_proj.weight").unwrap(),
            "blk.0.attn_output.weight"
        );
        assert_eq!(
            n("model.layers.0.mlp.down_proj.weight").unwrap(),
            "blk.0.ffn_down.weight"
        );
        // qwen2 has no Q/K norms, nor experts.
        assert!(n("model.layers.0.self_attn.q_norm.weight").is_err());
        assert!(n("model.layers.0.mlp.gate.weight").is_err());
    }

    #[test]
    fn qwen3_and_moe_names() {
        assert_eq!(
            QWEN3
                .gguf_name("model.layers.1.self_attn.k_norm.weight")
                .unwrap(),
            "blk.1.attn_k_norm.weight"
        );
        assert_eq!(
            QWEN3_MOE
                .gguf_name("model.layers.1.self_attn.q_norm.weight")
                .unwrap(),
            "blk.1.attn_q_norm.weight"
        );
        assert_eq!(
            QWEN3_MOE
                .gguf_name("model.layers.1.mlp.gate.weight")
                .unwrap(),
            "blk.1.ffn_gate_inp.weight"
        );
        assert_eq!(
            QWEN2_MOE
                .gguf_name("model.layers.2.mlp.shared_expert.up_proj.weight")
                .unwrap(),
            "blk.2.ffn_up_shexp.weight"
        );
        assert_eq!(
            QWEN2_MOE
                .gguf_name("model.layers.2.mlp.shared_expert_gate.weight")
                .unwrap(),
            "blk.2.ffn_gate_inp_shexp.weight"
        );
        // No dense MLP in the MoE architectures, no shared expert in
        // qwen3moe, no Q/K norms in qwen2moe.
        assert!(
            QWEN2_MOE
                .gguf_name("model.layers.0.mlp.up_proj.weight")
                .is_err()
        );
        assert!(
            QWEN3_MOE
                .gguf_name("model.layers.0.mlp.shared_expert.up_proj.weight")
                .is_err()
        );
        assert!(
            QWEN2_MOE
                .gguf_name("model.layers.0.self_attn.q_norm.weight")
                .is_err()
        );
    }

    #[test]
    fn qwen2_hparams_with_class_defaults() {
        // Qwen2.5-0.5B's config, less the fields the class defaults.
        let config = json!({
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
            "num_attention_heads": 14, "num_key_value_heads": 2,
            "rope_theta": 1000000.0, "tie_word_embeddings": true,
        });
        assert_eq!(
            hparams(config),
            pairs(&[
                ("qwen2.block_count", "u32 24"),
                ("qwen2.context_length", "u32 32768"),
                ("qwen2.embedding_length", "u32 896"),
                ("qwen2.feed_forward_length", "u32 4864"),
                ("qwen2.attention.head_count", "u32 14"),
                ("qwen2.attention.head_count_kv", "u32 2"),
                ("qwen2.rope.freq_base", "f32 1000000"),
                ("qwen2.attention.layer_norm_rms_epsilon", "f32 0.000001"),
                ("general.file_type", "u32 1"),
            ])
        );
        // A missing KV head count is the class's 32, a null one the head
        // count; yarn scaling (Qwen2.5 long context) is written.
        let kv = hparams(json!({
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "num_attention_heads": 4, "num_key_value_heads": null,
            "rope_scaling": {"type": "yarn", "factor": 4.0,
                             "original_max_position_embeddings": 32768},
        }));
        let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("qwen2.attention.head_count_kv"), Some("u32 4"));
        assert_eq!(get("qwen2.rope.scaling.type"), Some("String(\"yarn\")"));
        assert_eq!(get("qwen2.rope.scaling.factor"), Some("f32 4"));
        assert_eq!(
            get("qwen2.rope.scaling.original_context_length"),
            Some("u32 32768")
        );
        assert_eq!(get("qwen2.rope.freq_base"), Some("f32 10000"));
        let kv = hparams(json!({
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "num_attention_heads": 4,
        }));
        assert!(kv.contains(&("qwen2.attention.head_count_kv".into(), "u32 32".into())));
        // No head_dim in Qwen2Config: no key/value lengths.
        assert!(!kv.iter().any(|(k, _)| k.contains("key_length")));
    }

    #[test]
    fn qwen3_hparams() {
        // Qwen3-0.6B.
        let config = json!({
            "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
            "head_dim": 128, "hidden_size": 1024, "intermediate_size": 3072,
            "max_position_embeddings": 40960, "num_attention_heads": 16,
            "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
            "rope_scaling": null, "rope_theta": 1000000,
        });
        assert_eq!(
            hparams(config),
            pairs(&[
                ("qwen3.block_count", "u32 28"),
                ("qwen3.context_length", "u32 40960"),
                ("qwen3.embedding_length", "u32 1024"),
                ("qwen3.feed_forward_length", "u32 3072"),
                ("qwen3.attention.head_count", "u32 16"),
                ("qwen3.attention.head_count_kv", "u32 8"),
                ("qwen3.rope.freq_base", "f32 1000000"),
                ("qwen3.attention.layer_norm_rms_epsilon", "f32 0.000001"),
                ("qwen3.attention.key_length", "u32 128"),
                ("qwen3.attention.value_length", "u32 128"),
                ("general.file_type", "u32 1"),
            ])
        );
        // Qwen3Config's head_dim is 128 whatever the sizes.
        let kv = hparams(json!({
            "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
            "hidden_size": 64, "num_attention_heads": 4,
        }));
        assert!(kv.contains(&("qwen3.attention.key_length".into(), "u32 128".into())));
    }

    #[test]
    fn moe_hparams() {
        // Qwen1.5-MoE-A2.7B.
        let config = json!({
            "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe",
            "hidden_size": 2048, "intermediate_size": 5632, "max_position_embeddings": 8192,
            "moe_intermediate_size": 1408, "num_attention_heads": 16, "num_experts": 60,
            "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 16,
            "rope_theta": 1000000.0, "shared_expert_intermediate_size": 5632,
        });
        assert_eq!(
            hparams(config),
            pairs(&[
                ("qwen2moe.block_count", "u32 24"),
                ("qwen2moe.context_length", "u32 8192"),
                ("qwen2moe.embedding_length", "u32 2048"),
                ("qwen2moe.feed_forward_length", "u32 5632"),
                ("qwen2moe.attention.head_count", "u32 16"),
                ("qwen2moe.attention.head_count_kv", "u32 16"),
                ("qwen2moe.rope.freq_base", "f32 1000000"),
                ("qwen2moe.attention.layer_norm_rms_epsilon", "f32 0.000001"),
                ("qwen2moe.expert_count", "u32 60"),
                ("qwen2moe.expert_used_count", "u32 4"),
                ("general.file_type", "u32 1"),
                ("qwen2moe.expert_feed_forward_length", "u32 1408"),
                ("qwen2moe.expert_shared_feed_forward_length", "u32 5632"),
            ])
        );
        // Qwen3-30B-A3B (its `num_experts` is `num_local_experts`).
        let config = json!({
            "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
            "head_dim": 128, "hidden_size": 2048, "intermediate_size": 6144,
            "max_position_embeddings": 40960, "moe_intermediate_size": 768,
            "num_attention_heads": 32, "num_experts": 128, "num_experts_per_tok": 8,
            "num_hidden_layers": 48, "num_key_value_heads": 4, "rope_theta": 1000000.0,
        });
        assert_eq!(
            hparams(config),
            pairs(&[
                ("qwen3moe.block_count", "u32 48"),
                ("qwen3moe.context_length", "u32 40960"),
                ("qwen3moe.embedding_length", "u32 2048"),
                ("qwen3moe.feed_forward_length", "u32 6144"),
                ("qwen3moe.attention.head_count", "u32 32"),
                ("qwen3moe.attention.head_count_kv", "u32 4"),
                ("qwen3moe.rope.freq_base", "f32 1000000"),
                ("qwen3moe.attention.layer_norm_rms_epsilon", "f32 0.000001"),
                ("qwen3moe.expert_count", "u32 128"),
                ("qwen3moe.expert_used_count", "u32 8"),
                ("qwen3moe.attention.key_length", "u32 128"),
                ("qwen3moe.attention.value_length", "u32 128"),
                ("general.file_type", "u32 1"),
                ("qwen3moe.expert_feed_forward_length", "u32 768"),
            ])
        );
        // The alias: num_local_experts wins; the class default is 128.
        let count = |extra: Value| {
            let mut config = json!({"architectures": ["Qwen3MoeForCausalLM"],
                                    "model_type": "qwen3_moe"});
            config
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let kv = hparams(config);
            kv.into_iter()
                .find(|(k, _)| k == "qwen3moe.expert_count")
                .map(|(_, v)| v)
        };
        assert_eq!(count(json!({"num_experts": 8})), Some("u32 8".into()));
        assert_eq!(
            count(json!({"num_experts": 8, "num_local_experts": 6})),
            Some("u32 6".into())
        );
        assert_eq!(count(json!({})), Some("u32 128".into()));
    }

    #[test]
    fn qwen2_moe_tensors_stacked() {
        let config = json!({"architectures": ["Qwen2MoeForCausalLM"],
                            "model_type": "qwen2_moe", "num_experts": 2});
        let arch = arch_of(&config);
        let cfg = arch.config(&config);
        let mut list: Vec<(String, Vec<u64>)> = vec![
            ("model.layers.0.mlp.gate.weight".into(), vec![2, 8]),
            (
                "model.layers.0.mlp.shared_expert.down_proj.weight".into(),
                vec![8, 6],
            ),
            (
                "model.layers.0.mlp.shared_expert_gate.weight".into(),
                vec![1, 8],
            ),
            ("model.layers.0.self_attn.q_proj.bias".into(), vec![8]),
            (
                "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
                vec![2],
            ),
        ];
        for e in 0..2 {
            for (p, s) in [
                ("down_proj", [8, 4]),
                ("gate_proj", [4, 8]),
                ("up_proj", [4, 8]),
            ] {
                list.push((
                    format!("model.layers.0.mlp.experts.{e}.{p}.weight"),
                    s.to_vec(),
                ));
            }
        }
        let refs: Vec<(&str, &[u64])> = list.iter().map(|(n, s)| (n.as_str(), &s[..])).collect();
        let tensors = hf(&refs);
        let out = arch
            .tensors(&cfg, &tensors, &crate::view::gguf::arch::NoFiles)
            .unwrap();
        assert_eq!(
            names(&out),
            [
                "blk.0.ffn_down_exps.weight",
                "blk.0.ffn_gate_exps.weight",
                "blk.0.ffn_up_exps.weight",
                "blk.0.ffn_gate_inp.weight",
                "blk.0.ffn_down_shexp.weight",
                "blk.0.ffn_gate_inp_shexp.weight",
                "blk.0.attn_q.bias",
            ]
        );
        assert_eq!(out[0].shape, [2, 8, 4]);
        assert_eq!(out[1].shape, [2, 4, 8]);
        // Experts 0 then 1.
        let id = |n: &str| tensors.iter().find(|t| t.name == n).unwrap().index;
        match &out[1].data {
            Data::Values(Values::Stacked(ids)) => assert_eq!(
                ids,
                &[
                    id("model.layers.0.mlp.experts.0.gate_proj.weight"),
                    id("model.layers.0.mlp.experts.1.gate_proj.weight")
                ]
            ),
            other => panic!("{other:?}"),
        }
        // A missing expert is an error.
        let partial: Vec<HfTensor> = tensors
            .iter()
            .filter(|t| t.name != "model.layers.0.mlp.experts.1.up_proj.weight")
            .cloned()
            .collect();
        assert!(
            arch.tensors(&cfg, &partial, &crate::view::gguf::arch::NoFiles)
                .is_err()
        );
    }

    #[test]
    fn fused_experts_cut_in_halves() {
        let config = json!({"architectures": ["Qwen3MoeForCausalLM"],
                            "model_type": "qwen3_moe", "num_experts": 4});
        let arch = arch_of(&config);
        let cfg = arch.config(&config);
        let tensors = hf(&[
            ("model.layers.0.mlp.experts.gate_up_proj", &[4, 64, 16]),
            ("model.layers.0.mlp.experts.down_proj", &[4, 16, 32]),
            ("model.layers.0.mlp.gate.weight", &[4, 16]),
        ]);
        let out = arch
            .tensors(&cfg, &tensors, &crate::view::gguf::arch::NoFiles)
            .unwrap();
        assert_eq!(
            names(&out),
            [
                "blk.0.ffn_down_exps.weight",
                "blk.0.ffn_gate_exps.weight",
                "blk.0.ffn_up_exps.weight",
                "blk.0.ffn_gate_inp.weight",
            ]
        );
        assert_eq!(out[0].shape, [4, 16, 32]);
        assert_eq!(out[1].shape, [4, 32, 16]);
        assert_eq!(out[2].shape, [4, 32, 16]);
        let fused = tensors[1].index;
        assert!(matches!(
            out[2].data,
            Data::Values(Values::Rows { hf, start: 32, count: 32 }) if hf == fused
        ));
        // An odd row count cannot be halved.
        let odd = hf(&[(
            "model.layers.0.mlp.experts.gate_up_proj.weight",
            &[4, 63, 16],
        )]);
        assert!(
            arch.tensors(&cfg, &odd, &crate::view::gguf::arch::NoFiles)
                .is_err()
        );
    }
}
