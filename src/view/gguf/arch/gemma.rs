//! `gemma2` and `gemma3`: Gemma 2 (`Gemma2ForCausalLM`) and Gemma 3
//! (`Gemma3ForCausalLM`, and the text part of
//! `Gemma3ForConditionalGeneration`), as the converter's `Gemma2Model` and
//! `Gemma3Model` write them: every norm weight `w` stored as `w + 1`
//! (Gemma's RMSNorm scales by `1 + w`), Gemma 2's `lm_head` dropped (the
//! output is tied), Gemma 3's embedding trimmed to the tokenizer's
//! vocabulary and its vision tower and projector left out.

use serde_json::{Map, Value};

use super::{Arch, Folder, Names, convert, map_name, skipped, text_filter, text_model_params};
use crate::dtype::Dtype;
use crate::view::gguf::config::{Config, Default as D};
use crate::view::gguf::tensors::{HfTensor, OutTensor, Values};
use crate::view::gguf::vocab;
use crate::view::gguf::writer::Kv;

#[derive(Debug)]
pub struct Gemma {
    /// Gemma 3 (else Gemma 2).
    three: bool,
}

static GEMMA2: Gemma = Gemma { three: false };
static GEMMA3: Gemma = Gemma { three: true };

pub fn gemma2() -> &'static dyn Arch {
    &GEMMA2
}

pub fn gemma3() -> &'static dyn Arch {
    &GEMMA3
}

/// The names both write (gguf-py's `tensor_mapping.py` for `GEMMA2` and
/// `GEMMA3`).
const NAMES: Names = &[
    ("model.embed_tokens", "token_embd"),
    ("model.norm", "output_norm"),
    ("model.layers.{}.input_layernorm", "blk.{}.attn_norm"),
    (
        "model.layers.{}.post_attention_layernorm",
        "blk.{}.post_attention_norm",
    ),
    (
        "model.layers.{}.pre_feedforward_layernorm",
        "blk.{}.ffn_norm",
    ),
    (
        "model.layers.{}.post_feedforward_layernorm",
        "blk.{}.post_ffw_norm",
    ),
    ("model.layers.{}.self_attn.q_proj", "blk.{}.attn_q"),
    ("model.layers.{}.self_attn.k_proj", "blk.{}.attn_k"),
    ("model.layers.{}.self_attn.v_proj", "blk.{}.attn_v"),
    ("model.layers.{}.self_attn.o_proj", "blk.{}.attn_output"),
    ("model.layers.{}.mlp.gate_proj", "blk.{}.ffn_gate"),
    ("model.layers.{}.mlp.up_proj", "blk.{}.ffn_up"),
    ("model.layers.{}.mlp.down_proj", "blk.{}.ffn_down"),
];

/// Gemma 3's own: QK norms, and an output (an untied `lm_head`).
const GEMMA3_NAMES: Names = &[
    ("lm_head", "output"),
    ("model.layers.{}.self_attn.q_norm", "blk.{}.attn_q_norm"),
    ("model.layers.{}.self_attn.k_norm", "blk.{}.attn_k_norm"),
];

/// `Gemma2Config`'s defaults (transformers 5.24) for the fields read.
const GEMMA2_DEFAULTS: &[(&str, D)] = &[
    ("vocab_size", D::U64(256000)),
    ("hidden_size", D::U64(2304)),
    ("intermediate_size", D::U64(9216)),
    ("num_hidden_layers", D::U64(26)),
    ("num_attention_heads", D::U64(8)),
    ("num_key_value_heads", D::U64(4)),
    ("head_dim", D::U64(256)),
    ("max_position_embeddings", D::U64(8192)),
    ("rms_norm_eps", D::F64(1e-6)),
    ("sliding_window", D::U64(4096)),
    ("final_logit_softcapping", D::F64(30.0)),
    ("attn_logit_softcapping", D::F64(50.0)),
];

/// `Gemma3TextConfig`'s defaults (transformers 5.24) for the fields read:
/// what a `Gemma3ForConditionalGeneration` whose `text_config` leaves a
/// field out gets (`rope_parameters` is made by [`gemma3_rope`]).
const GEMMA3_DEFAULTS: &[(&str, D)] = &[
    ("vocab_size", D::U64(262208)),
    ("hidden_size", D::U64(2304)),
    ("intermediate_size", D::U64(9216)),
    ("num_hidden_layers", D::U64(26)),
    ("num_attention_heads", D::U64(8)),
    ("num_key_value_heads", D::U64(4)),
    ("head_dim", D::U64(256)),
    ("max_position_embeddings", D::U64(131072)),
    ("rms_norm_eps", D::F64(1e-6)),
    ("sliding_window", D::U64(4096)),
    ("final_logit_softcapping", D::Null),
    ("attn_logit_softcapping", D::Null),
    ("use_bidirectional_attention", D::Null),
];

impl Arch for Gemma {
    fn name(&self) -> &'static str {
        if self.three { "gemma3" } else { "gemma2" }
    }

    fn config(&self, config: &Value) -> Config {
        if self.three {
            gemma3_config(config)
        } else {
            Config::new(config, GEMMA2_DEFAULTS)
        }
    }

    fn hparams(&self, cfg: &Config, kv: &mut Kv, file_type: u32) {
        if self.three {
            gemma3_hparams(cfg, kv, file_type);
        } else {
            gemma2_hparams(cfg, kv, file_type);
        }
    }

    fn tensors(
        &self,
        cfg: &Config,
        hf: &[HfTensor],
        folder: &dyn Folder,
    ) -> Result<Vec<OutTensor>, String> {
        let vocab_rows = if self.three {
            vocab_rows(cfg, folder)
        } else {
            None
        };
        convert(hf, None, |t| {
            // Gemma2Model.filter_tensors, before TextModel's.
            if !self.three && t.name == "lm_head.weight" {
                return Ok(None);
            }
            let Some(name) = text_filter(&t.name) else {
                return Ok(None);
            };
            if skipped(&name) {
                return Ok(None);
            }
            let mapped = map_name(NAMES, &name)
                .or_else(|| self.three.then(|| map_name(GEMMA3_NAMES, &name)).flatten());
            let (out, _) = mapped.ok_or_else(|| {
                format!(
                    "llama.cpp has no {} name for tensor '{}'",
                    self.name(),
                    t.name
                )
            })?;
            let mut shape = t.shape.clone();
            let values = if name.ends_with("norm.weight") {
                Values::PlusOne {
                    hf: t.index,
                    f16: t.dtype == Dtype::F16,
                }
            } else if let Some(n) = vocab_rows
                && name.contains("embed_tokens.weight")
                && shape.first().is_some_and(|&rows| n < rows)
            {
                shape[0] = n;
                Values::Rows {
                    hf: t.index,
                    start: 0,
                    count: n,
                }
            } else {
                Values::Hf(t.index)
            };
            Ok(Some(OutTensor::values(out, shape, values)))
        })
    }

    fn vocab(&self) -> vocab::Path {
        if self.three {
            vocab::Path::GemmaOrBpe
        } else {
            vocab::Path::GemmaSentencePiece
        }
    }
}

/// `Gemma2Model.set_gguf_parameters`: its own list, not TextModel's (a
/// key whose value is null would stop the converter; it is left out).
fn gemma2_hparams(cfg: &Config, kv: &mut Kv, file_type: u32) {
    let u = |kv: &mut Kv, key: &str, v: Option<u64>| {
        if let Some(v) = v {
            kv.u32(&format!("gemma2.{key}"), v as u32);
        }
    };
    let f = |kv: &mut Kv, key: &str, v: Option<f64>| {
        if let Some(v) = v {
            kv.f32(&format!("gemma2.{key}"), v as f32);
        }
    };
    u(kv, "context_length", cfg.u64(&["max_position_embeddings"]));
    u(kv, "embedding_length", cfg.u64(&["hidden_size"]));
    u(kv, "block_count", block_count(cfg));
    u(kv, "feed_forward_length", cfg.u64(&["intermediate_size"]));
    u(
        kv,
        "attention.head_count",
        cfg.u64(&["num_attention_heads"]),
    );
    u(
        kv,
        "attention.head_count_kv",
        cfg.u64(&["num_key_value_heads", "num_attention_heads"]),
    );
    f(
        kv,
        "attention.layer_norm_rms_epsilon",
        cfg.f64(&["rms_norm_eps"]),
    );
    u(kv, "attention.key_length", cfg.u64(&["head_dim"]));
    u(kv, "attention.value_length", cfg.u64(&["head_dim"]));
    kv.u32("general.file_type", file_type);
    f(
        kv,
        "attn_logit_softcapping",
        cfg.f64(&["attn_logit_softcapping"]),
    );
    f(
        kv,
        "final_logit_softcapping",
        cfg.f64(&["final_logit_softcapping"]),
    );
    u(kv, "attention.sliding_window", cfg.u64(&["sliding_window"]));
}

/// `Gemma3Model.set_gguf_parameters`: TextModel's keys, then some of them
/// again (a repeated key keeps its first place) and Gemma 3's own.
fn gemma3_hparams(cfg: &Config, kv: &mut Kv, file_type: u32) {
    text_model_params("gemma3", cfg, kv, file_type);
    let u = |kv: &mut Kv, key: &str, v: Option<u64>| {
        if let Some(v) = v {
            kv.u32(&format!("gemma3.{key}"), v as u32);
        }
    };
    u(kv, "context_length", cfg.u64(&["max_position_embeddings"]));
    u(
        kv,
        "attention.head_count",
        cfg.u64(&["num_attention_heads"]),
    );
    if let Some(e) = cfg.f64(&["rms_norm_eps"]) {
        kv.f32("gemma3.attention.layer_norm_rms_epsilon", e as f32);
    }
    u(kv, "attention.key_length", cfg.u64(&["head_dim"]));
    u(kv, "attention.value_length", cfg.u64(&["head_dim"]));
    let theta = cfg.rope().theta.unwrap_or(1e6);
    kv.f32("gemma3.rope.freq_base", theta as f32);
    // Written only when truthy.
    if let Some(c) = cfg.f64(&["final_logit_softcapping"]).filter(|&c| c != 0.0) {
        kv.f32("gemma3.final_logit_softcapping", c as f32);
    }
    let pattern = cfg.get("sliding_window_pattern").and_then(|v| v.as_f64());
    if pattern != Some(1.0) {
        u(kv, "attention.sliding_window", cfg.u64(&["sliding_window"]));
    }
    u(
        kv,
        "attention.head_count_kv",
        cfg.u64(&["num_key_value_heads"]),
    );
}

fn block_count(cfg: &Config) -> Option<u64> {
    cfg.u64(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])
}

/// The config as AutoConfig gives it for Gemma 3. A
/// `Gemma3ForConditionalGeneration` (`model_type` `gemma3`) holds its text
/// model's fields in `text_config`, a `Gemma3TextConfig` whose fields
/// (given or default) are merged over the top level; a `Gemma3ForCausalLM`
/// (`gemma3_text`) has them at the top. Either way `rope_parameters` is
/// made from the text fields as `Gemma3TextConfig` makes it.
fn gemma3_config(config: &Value) -> Config {
    let text = config.get("text_config").and_then(Value::as_object);
    let nested =
        text.is_some() || config.get("model_type").and_then(Value::as_str) == Some("gemma3");
    let mut cfg = Config::new(config, GEMMA3_DEFAULTS);
    let src: Map<String, Value> = if nested {
        let src = text.cloned().unwrap_or_default();
        for (k, _) in GEMMA3_DEFAULTS {
            if !src.contains_key(*k)
                && let Some(v) = cfg.default_of(k)
            {
                cfg.set(k, v);
            }
        }
        src
    } else {
        config.as_object().cloned().unwrap_or_default()
    };
    cfg.set("rope_parameters", gemma3_rope(&src));
    // `use_bidirectional_attention` halves the window in the config and
    // `to_dict` doubles it back.
    if cfg.get("use_bidirectional_attention") == Some(Value::Bool(true))
        && let Some(w) = cfg.u64(&["sliding_window"])
    {
        cfg.set("sliding_window", (w / 2 * 2).into());
    }
    cfg
}

/// `Gemma3TextConfig.convert_rope_params_to_dict` and
/// `standardize_rope_params`: `full_attention` and `sliding_attention`
/// dicts, a legacy `rope_scaling` merged into the full one, thetas from
/// `rope_theta` / `rope_local_base_freq` or 1e6 / 1e4.
fn gemma3_rope(src: &Map<String, Value>) -> Value {
    let default = || {
        let mut m = Map::new();
        m.insert("rope_type".into(), "default".into());
        m
    };
    let mut rope = match src.get("rope_parameters") {
        Some(Value::Object(o)) => o.clone(),
        _ => {
            let mut m = Map::new();
            m.insert("sliding_attention".into(), Value::Object(default()));
            m.insert("full_attention".into(), Value::Object(default()));
            m
        }
    };
    let sub = |rope: &Map<String, Value>, key: &str| -> Map<String, Value> {
        match rope.get(key) {
            Some(Value::Object(o)) => o.clone(),
            _ => default(),
        }
    };
    let mut full = sub(&rope, "full_attention");
    if let Some(Value::Object(s)) = src.get("rope_scaling") {
        for (k, v) in s {
            full.insert(k.clone(), v.clone());
        }
    }
    let mut sliding = sub(&rope, "sliding_attention");
    let theta = |key: &str, d: f64| {
        src.get(key)
            .filter(|v| v.is_number())
            .cloned()
            .unwrap_or(d.into())
    };
    full.entry("rope_theta")
        .or_insert_with(|| theta("rope_theta", 1e6));
    sliding
        .entry("rope_theta")
        .or_insert_with(|| theta("rope_local_base_freq", 1e4));
    for m in [&mut full, &mut sliding] {
        if !m.contains_key("rope_type") {
            let t = m.get("type").cloned().unwrap_or("default".into());
            m.insert("rope_type".into(), t);
        }
    }
    rope.insert("full_attention".into(), Value::Object(full));
    rope.insert("sliding_attention".into(), Value::Object(sliding));
    Value::Object(rope)
}

/// The rows of the token embedding Gemma 3 keeps: the SentencePiece
/// vocabulary's size (the config's `vocab_size`) with a `tokenizer.model`,
/// else `tokenizer.json`'s vocabulary and added tokens; `None` (all rows)
/// without a tokenizer the converter could read.
fn vocab_rows(cfg: &Config, folder: &dyn Folder) -> Option<u64> {
    if folder.has("tokenizer.model") {
        return match cfg.u64(&["vocab_size_per_layer_input", "vocab_size"]) {
            Some(n) if n > 0 => Some(n),
            _ => {
                let model = folder.read("tokenizer.model")?;
                vocab::pieces(&model).ok().map(|p| p.len() as u64)
            }
        };
    }
    folder.tokenizer_rows()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::gguf::GgufValue;
    use crate::view::gguf::arch::NoFiles;
    use serde_json::json;

    fn keys(kv: &Kv) -> Vec<String> {
        kv.to_metadata().iter().map(|(k, _)| k.clone()).collect()
    }

    fn hf(names: &[(&str, &[u64])], dtype: Dtype) -> Vec<HfTensor> {
        names
            .iter()
            .enumerate()
            .map(|(i, (n, s))| HfTensor {
                index: i as u32,
                name: n.to_string(),
                shape: s.to_vec(),
                dtype,
                file: "model.safetensors".into(),
                mxfp4: None,
            })
            .collect()
    }

    #[test]
    fn gemma2_names_norms_and_dropped_head() {
        let a = gemma2();
        let cfg = a.config(&json!({"model_type": "gemma2"}));
        let t = hf(
            &[
                ("lm_head.weight", &[10, 4]),
                ("model.embed_tokens.weight", &[10, 4]),
                ("model.layers.0.pre_feedforward_layernorm.weight", &[4]),
                ("model.layers.0.post_feedforward_layernorm.weight", &[4]),
                ("model.layers.0.post_attention_layernorm.weight", &[4]),
                ("model.layers.0.self_attn.o_proj.weight", &[4, 4]),
            ],
            Dtype::F16,
        );
        let out = a.tensors(&cfg, &t, &NoFiles).unwrap();
        let names: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "token_embd.weight",
                "blk.0.ffn_norm.weight",
                "blk.0.post_ffw_norm.weight",
                "blk.0.post_attention_norm.weight",
                "blk.0.attn_output.weight",
            ]
        );
        assert!(matches!(
            out[1].data,
            crate::view::gguf::tensors::Data::Values(Values::PlusOne { hf: 2, f16: true })
        ));
        assert!(matches!(
            out[0].data,
            crate::view::gguf::tensors::Data::Values(Values::Hf(1))
        ));
        // Gemma 2 has no QK norms.
        let q = hf(
            &[("model.layers.0.self_attn.q_norm.weight", &[4])],
            Dtype::BF16,
        );
        assert!(a.tensors(&cfg, &q, &NoFiles).is_err());
    }

    #[test]
    fn gemma2_hparams_in_order() {
        let a = gemma2();
        let cfg = a.config(&json!({"model_type": "gemma2", "hidden_size": 64,
            "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "sliding_window": 64}));
        let mut kv = Kv::new();
        a.hparams(&cfg, &mut kv, 1);
        assert_eq!(
            keys(&kv),
            [
                "gemma2.context_length",
                "gemma2.embedding_length",
                "gemma2.block_count",
                "gemma2.feed_forward_length",
                "gemma2.attention.head_count",
                "gemma2.attention.head_count_kv",
                "gemma2.attention.layer_norm_rms_epsilon",
                "gemma2.attention.key_length",
                "gemma2.attention.value_length",
                "general.file_type",
                "gemma2.attn_logit_softcapping",
                "gemma2.final_logit_softcapping",
                "gemma2.attention.sliding_window",
            ]
        );
        assert_eq!(kv.get("gemma2.context_length"), Some(&GgufValue::U32(8192)));
        assert_eq!(
            kv.get("gemma2.attn_logit_softcapping"),
            Some(&GgufValue::F32(50.0))
        );
    }

    #[test]
    fn gemma3_hparams_keep_first_places() {
        let a = gemma3();
        // gemma-3-4b-it's legacy config.json: text_config with few fields.
        let cfg = a.config(&json!({"model_type": "gemma3",
            "architectures": ["Gemma3ForConditionalGeneration"],
            "text_config": {"hidden_size": 2560, "intermediate_size": 10240,
                "model_type": "gemma3_text", "num_hidden_layers": 34,
                "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024}}));
        let mut kv = Kv::new();
        a.hparams(&cfg, &mut kv, 1);
        assert_eq!(
            keys(&kv),
            [
                "gemma3.block_count",
                "gemma3.context_length",
                "gemma3.embedding_length",
                "gemma3.feed_forward_length",
                "gemma3.attention.head_count",
                "gemma3.attention.head_count_kv",
                "gemma3.rope.scaling.type",
                "gemma3.rope.scaling.factor",
                "gemma3.rope.freq_base",
                "gemma3.rope.freq_base_swa",
                "gemma3.attention.layer_norm_rms_epsilon",
                "gemma3.attention.key_length",
                "gemma3.attention.value_length",
                "general.file_type",
                "gemma3.attention.sliding_window",
            ]
        );
        let u = |k: &str| kv.get(k).cloned();
        assert_eq!(u("gemma3.context_length"), Some(GgufValue::U32(131072)));
        assert_eq!(u("gemma3.attention.head_count"), Some(GgufValue::U32(8)));
        assert_eq!(u("gemma3.attention.head_count_kv"), Some(GgufValue::U32(4)));
        assert_eq!(u("gemma3.rope.scaling.factor"), Some(GgufValue::F32(8.0)));
        assert_eq!(u("gemma3.rope.freq_base"), Some(GgufValue::F32(1e6)));
        assert_eq!(u("gemma3.rope.freq_base_swa"), Some(GgufValue::F32(1e4)));
        assert_eq!(u("gemma3.attention.key_length"), Some(GgufValue::U32(256)));
        assert_eq!(
            u("gemma3.attention.sliding_window"),
            Some(GgufValue::U32(1024))
        );
        assert_eq!(cfg.u64(&["vocab_size"]), Some(262208));
    }

    #[test]
    fn gemma3_legacy_thetas_and_window_pattern() {
        let a = gemma3();
        // gemma-3-1b-it style.
        let cfg = a.config(&json!({"model_type": "gemma3_text",
            "architectures": ["Gemma3ForCausalLM"], "rope_theta": 1000000,
            "rope_local_base_freq": 10000, "rope_scaling": null, "sliding_window": 512,
            "sliding_window_pattern": 6, "final_logit_softcapping": 30.0}));
        let mut kv = Kv::new();
        a.hparams(&cfg, &mut kv, 0);
        assert_eq!(
            kv.get("gemma3.rope.freq_base_swa"),
            Some(&GgufValue::F32(1e4))
        );
        assert!(kv.get("gemma3.rope.scaling.type").is_none());
        assert_eq!(
            kv.get("gemma3.final_logit_softcapping"),
            Some(&GgufValue::F32(30.0))
        );
        let cfg = a.config(&json!({"model_type": "gemma3_text", "sliding_window_pattern": 1}));
        let mut kv = Kv::new();
        a.hparams(&cfg, &mut kv, 0);
        assert!(kv.get("gemma3.attention.sliding_window").is_none());
    }

    #[test]
    fn gemma3_text_part_and_trimmed_embedding() {
        struct Spm;
        impl Folder for Spm {
            fn has(&self, name: &str) -> bool {
                name == "tokenizer.model"
            }
            fn read(&self, _: &str) -> Option<Vec<u8>> {
                None
            }
        }
        let a = gemma3();
        let cfg = a.config(&json!({"model_type": "gemma3", "text_config": {"vocab_size": 8}}));
        let t = hf(
            &[
                ("language_model.model.embed_tokens.weight", &[10, 4]),
                (
                    "language_model.model.layers.0.self_attn.k_norm.weight",
                    &[2],
                ),
                ("multi_modal_projector.mm_soft_emb_norm.weight", &[3]),
                ("vision_tower.head.probe", &[1, 1, 3]),
            ],
            Dtype::BF16,
        );
        let out = a.tensors(&cfg, &t, &Spm).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].name, "token_embd.weight");
        assert_eq!(out[0].shape, [8, 4]);
        assert!(matches!(
            out[0].data,
            crate::view::gguf::tensors::Data::Values(Values::Rows {
                hf: 0,
                start: 0,
                count: 8
            })
        ));
        assert_eq!(out[1].name, "blk.0.attn_k_norm.weight");
        assert!(matches!(
            out[1].data,
            crate::view::gguf::tensors::Data::Values(Values::PlusOne { hf: 1, f16: false })
        ));
        // Without a tokenizer the embedding is kept whole.
        let out = a.tensors(&cfg, &t, &NoFiles).unwrap();
        assert_eq!(out[0].shape, [10, 4]);
    }
}
