//! `config.json` from GGUF metadata, as transformers' GGUF loader derives it.
//!
//! This follows `load_gguf_checkpoint` (transformers 5.24,
//! `modeling_gguf_pytorch_utils.py`) and its table `GGUF_CONFIG_MAPPING`
//! (`integrations/ggml.py`), quirks included, then adds what the Hugging
//! Face class needs and the loader leaves out (each listed in docs/GGUF.md,
//! "As a Hugging Face model"):
//! - `architectures` (the loader sets none; `AutoModelForCausalLM` does not
//!   need it, pipelines and other loaders do);
//! - qwen3: `head_dim` from `attention.key_length` (the loader's table has
//!   no such entry, so Qwen3Config's default 128 applies and any model whose
//!   head_dim is not 128 gets modules of the wrong size);
//! - qwen3_moe, qwen2_moe: `moe_intermediate_size` (and qwen2_moe's
//!   `shared_expert_intermediate_size`) from `expert_feed_forward_length`
//!   (`expert_shared_feed_forward_length`), which the loader's tables lack;
//! - gpt2: `n_positions` and `n_inner` (the loader writes `n_ctx` and
//!   `feed_forward_length`, which GPT2Config does not read).
//!
//! `_model_name_or_path` (from `general.name`) is left out: it names where a
//! model was loaded from, not what it is.

use serde_json::{Map, Value};

use super::GgufHfError;
use crate::catalog::gguf::{GgufMetadata, GgufValue};

/// One architecture: its name after the loader's renames, the HF class, and
/// `(GGUF key under "<arch>.", HF config key)` pairs (`None`: read and
/// dropped, as the loader does).
pub struct Family {
    pub arch: &'static str,
    pub class: &'static str,
    pub keys: &'static [(&'static str, Option<&'static str>)],
}

const DECODER: &[(&str, Option<&str>)] = &[
    ("context_length", Some("max_position_embeddings")),
    ("block_count", Some("num_hidden_layers")),
    ("feed_forward_length", Some("intermediate_size")),
    ("embedding_length", Some("hidden_size")),
    ("rope.dimension_count", None),
    ("rope.freq_base", Some("rope_theta")),
    ("attention.head_count", Some("num_attention_heads")),
    ("attention.head_count_kv", Some("num_key_value_heads")),
    ("attention.layer_norm_rms_epsilon", Some("rms_norm_eps")),
    ("vocab_size", Some("vocab_size")),
];

const LLAMA: &[(&str, Option<&str>)] = &[
    ("context_length", Some("max_position_embeddings")),
    ("block_count", Some("num_hidden_layers")),
    ("feed_forward_length", Some("intermediate_size")),
    ("embedding_length", Some("hidden_size")),
    ("rope.dimension_count", Some("head_dim")),
    ("rope.freq_base", Some("rope_theta")),
    ("attention.head_count", Some("num_attention_heads")),
    ("attention.head_count_kv", Some("num_key_value_heads")),
    ("attention.layer_norm_rms_epsilon", Some("rms_norm_eps")),
    ("vocab_size", Some("vocab_size")),
];

const MOE: &[(&str, Option<&str>)] = &[
    ("context_length", Some("max_position_embeddings")),
    ("block_count", Some("num_hidden_layers")),
    ("feed_forward_length", Some("intermediate_size")),
    ("embedding_length", Some("hidden_size")),
    ("rope.dimension_count", None),
    ("rope.freq_base", Some("rope_theta")),
    ("attention.head_count", Some("num_attention_heads")),
    ("attention.head_count_kv", Some("num_key_value_heads")),
    ("attention.layer_norm_rms_epsilon", Some("rms_norm_eps")),
    ("vocab_size", Some("vocab_size")),
    ("expert_count", Some("num_experts")),
    ("expert_used_count", Some("num_experts_per_tok")),
];

const QWEN3_MOE: &[(&str, Option<&str>)] = &[
    ("context_length", Some("max_position_embeddings")),
    ("block_count", Some("num_hidden_layers")),
    ("feed_forward_length", Some("intermediate_size")),
    ("embedding_length", Some("hidden_size")),
    ("rope.dimension_count", None),
    ("rope.freq_base", Some("rope_theta")),
    ("attention.key_length", Some("head_dim")),
    ("attention.head_count", Some("num_attention_heads")),
    ("attention.head_count_kv", Some("num_key_value_heads")),
    ("attention.layer_norm_rms_epsilon", Some("rms_norm_eps")),
    ("vocab_size", Some("vocab_size")),
    ("expert_count", Some("num_experts")),
    ("expert_used_count", Some("num_experts_per_tok")),
];

const GEMMA: &[(&str, Option<&str>)] = &[
    ("context_length", Some("max_position_embeddings")),
    ("block_count", Some("num_hidden_layers")),
    ("feed_forward_length", Some("intermediate_size")),
    ("embedding_length", Some("hidden_size")),
    ("rope.dimension_count", None),
    ("rope.freq_base", Some("rope_theta")),
    ("attention.key_length", Some("head_dim")),
    ("attention.head_count", Some("num_attention_heads")),
    ("attention.head_count_kv", Some("num_key_value_heads")),
    ("attention.layer_norm_rms_epsilon", Some("rms_norm_eps")),
    ("attention.sliding_window", Some("sliding_window")),
    ("vocab_size", Some("vocab_size")),
];

const GPT_OSS: &[(&str, Option<&str>)] = &[
    ("context_length", Some("max_position_embeddings")),
    ("block_count", Some("num_hidden_layers")),
    ("feed_forward_length", Some("intermediate_size")),
    ("embedding_length", Some("hidden_size")),
    ("rope.dimension_count", None),
    ("rope.freq_base", Some("rope_theta")),
    ("attention.head_count", Some("num_attention_heads")),
    ("attention.head_count_kv", Some("num_key_value_heads")),
    ("attention.layer_norm_rms_epsilon", Some("rms_norm_eps")),
    ("vocab_size", Some("vocab_size")),
    ("expert_count", Some("num_local_experts")),
    ("expert_used_count", Some("num_experts_per_tok")),
    ("sliding_window", Some("sliding_window")),
];

const STABLELM: &[(&str, Option<&str>)] = &[
    ("context_length", Some("max_position_embeddings")),
    ("block_count", Some("num_hidden_layers")),
    ("feed_forward_length", Some("intermediate_size")),
    ("embedding_length", Some("hidden_size")),
    ("rope.dimension_count", None),
    ("attention.head_count", Some("num_attention_heads")),
    ("attention.head_count_kv", Some("num_key_value_heads")),
    ("attention.layer_norm_epsilon", Some("layer_norm_eps")),
    ("vocab_size", Some("vocab_size")),
];

const GPT2: &[(&str, Option<&str>)] = &[
    ("block_count", Some("n_layer")),
    ("context_length", Some("n_ctx")),
    ("embedding_length", Some("n_embd")),
    ("feed_forward_length", Some("feed_forward_length")),
    ("attention.head_count", Some("n_head")),
    ("attention.layer_norm_epsilon", Some("layer_norm_epsilon")),
];

const STARCODER2: &[(&str, Option<&str>)] = &[
    ("block_count", Some("num_hidden_layers")),
    ("context_length", Some("max_position_embeddings")),
    ("embedding_length", Some("hidden_size")),
    ("feed_forward_length", Some("intermediate_size")),
    ("attention.head_count", Some("num_attention_heads")),
    ("attention.head_count_kv", Some("num_key_value_heads")),
    ("attention.layer_norm_epsilon", Some("norm_epsilon")),
];

const NEMOTRON: &[(&str, Option<&str>)] = &[
    ("context_length", Some("max_position_embeddings")),
    ("block_count", Some("num_hidden_layers")),
    ("feed_forward_length", Some("intermediate_size")),
    ("embedding_length", Some("hidden_size")),
    ("rope.dimension_count", None),
    ("rope.freq_base", Some("rope_theta")),
    ("attention.head_count", Some("num_attention_heads")),
    ("attention.head_count_kv", Some("num_key_value_heads")),
    ("attention.layer_norm_rms_epsilon", Some("norm_eps")),
    ("vocab_size", Some("vocab_size")),
];

/// The architectures transformers' GGUF loader takes, by name after its
/// renames (`qwen2moe` -> `qwen2_moe`, ...).
pub const FAMILIES: &[Family] = &[
    Family {
        arch: "llama",
        class: "LlamaForCausalLM",
        keys: LLAMA,
    },
    Family {
        arch: "mistral",
        class: "MistralForCausalLM",
        keys: LLAMA,
    },
    Family {
        arch: "qwen2",
        class: "Qwen2ForCausalLM",
        keys: DECODER,
    },
    Family {
        arch: "qwen2_moe",
        class: "Qwen2MoeForCausalLM",
        keys: MOE,
    },
    Family {
        arch: "qwen3",
        class: "Qwen3ForCausalLM",
        keys: DECODER,
    },
    Family {
        arch: "qwen3_moe",
        class: "Qwen3MoeForCausalLM",
        keys: QWEN3_MOE,
    },
    Family {
        arch: "falcon",
        class: "FalconForCausalLM",
        keys: DECODER,
    },
    Family {
        arch: "phi3",
        class: "Phi3ForCausalLM",
        keys: DECODER,
    },
    Family {
        arch: "stablelm",
        class: "StableLmForCausalLM",
        keys: STABLELM,
    },
    Family {
        arch: "gpt2",
        class: "GPT2LMHeadModel",
        keys: GPT2,
    },
    Family {
        arch: "starcoder2",
        class: "Starcoder2ForCausalLM",
        keys: STARCODER2,
    },
    Family {
        arch: "nemotron",
        class: "NemotronForCausalLM",
        keys: NEMOTRON,
    },
    Family {
        arch: "gemma2",
        class: "Gemma2ForCausalLM",
        keys: GEMMA,
    },
    Family {
        arch: "gemma3",
        class: "Gemma3ForCausalLM",
        keys: GEMMA,
    },
    Family {
        arch: "gpt_oss",
        class: "GptOssForCausalLM",
        keys: GPT_OSS,
    },
];

/// `tokenizer.` keys that go into the config.
const TOKENIZER_KEYS: &[(&str, &str)] = &[
    ("ggml.bos_token_id", "bos_token_id"),
    ("ggml.eos_token_id", "eos_token_id"),
    ("ggml.unknown_token_id", "unk_token_id"),
    ("ggml.padding_token_id", "pad_token_id"),
];

/// The GGUF `general.architecture` and the loader's name for it.
pub fn architecture(meta: &GgufMetadata) -> Result<(String, String), GgufHfError> {
    const KEY: &str = "general.architecture";
    let arch = match meta.get(KEY) {
        Some(v) => match v.as_text() {
            Some(s) => s.to_string(),
            None => {
                return Err(GgufHfError::NotAString {
                    key: KEY.into(),
                    value: v.clone(),
                });
            }
        },
        None => return Err(GgufHfError::MissingKey { key: KEY }),
    };
    // The loader tests `"mistral" in model_name` where model_name is the
    // one-element list [general.name]: list membership, so only a name of
    // exactly "mistral" counts.
    let name_is_mistral = meta.text("general.name") == Some("mistral");
    let updated = if arch.contains("llama") && name_is_mistral {
        "mistral".to_string()
    } else if arch.contains("qwen2moe") {
        "qwen2_moe".to_string()
    } else if arch.contains("gpt_oss") || arch.contains("gpt-oss") {
        "gpt_oss".to_string()
    } else if arch.contains("qwen3moe") {
        "qwen3_moe".to_string()
    } else {
        arch.clone()
    };
    Ok((arch, updated))
}

pub fn family(updated: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.arch == updated)
}

/// A metadata value as the loader reads it, as a `config.json` value: its
/// JSON rendering ([`GgufValue::to_json`]) read as [`loader_json`] does.
fn loader_value(v: &GgufValue, arch: &str, updated: &str) -> Value {
    loader_json(&v.to_json(), arch, updated)
}

/// A metadata value's JSON as the loader reads it: a one-element array
/// becomes its element; floats are GGUF f32 widened to f64 (llama.cpp writes
/// every float key as f32, and the JSON rendering holds the shortest decimal
/// of the f32); strings get the architecture renamed.
fn loader_json(v: &Value, arch: &str, updated: &str) -> Value {
    match v {
        Value::Array(a) if a.len() == 1 => loader_json(&a[0], arch, updated),
        Value::Array(a) => Value::Array(a.iter().map(|x| loader_json(x, arch, updated)).collect()),
        Value::String(s) => Value::String(s.replace(arch, updated)),
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => match n.as_f64() {
            Some(f) => {
                serde_json::Number::from_f64(f as f32 as f64).map_or(Value::Null, Value::Number)
            }
            None => v.clone(),
        },
        _ => v.clone(),
    }
}

/// The config transformers derives, with gyrofs's additions (module doc).
pub fn config(
    meta: &GgufMetadata,
    tensor_names: &[&str],
) -> Result<(Map<String, Value>, &'static Family), GgufHfError> {
    let (arch, updated) = architecture(meta)?;
    let family = family(&updated)
        .ok_or_else(|| GgufHfError::UnsupportedArchitecture { arch: arch.clone() })?;
    let mut c = Map::new();
    if arch.contains("stablelm") {
        let qkv_bias = tensor_names.iter().any(|n| {
            ["attn_q.bias", "attn_k.bias", "attn_v.bias"]
                .iter()
                .any(|b| n.contains(b))
        });
        let ffn_norm = tensor_names.iter().any(|n| n.contains("ffn_norm"));
        c.insert("use_qkv_bias".into(), qkv_bias.into());
        c.insert("use_parallel_residual".into(), (!ffn_norm).into());
    }
    let tied = !tensor_names.contains(&"output.weight") || arch == "falcon" || arch == "bloom";
    c.insert("tie_word_embeddings".into(), tied.into());
    if updated == "qwen3_moe" {
        c.insert("norm_topk_prob".into(), true.into());
    }
    // In key order (the metadata was once a JSON object, keys sorted): where
    // two keys give one config key, the later one wins.
    let mut entries: Vec<&(String, GgufValue)> = meta.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, value) in entries {
        let key = key.replace(&arch, &updated);
        let Some((prefix, rest)) = key.split_once('.') else {
            continue;
        };
        let target = if prefix == "general" {
            match rest {
                "architecture" => Some("model_type"),
                _ => None,
            }
        } else if prefix == "tokenizer" {
            TOKENIZER_KEYS
                .iter()
                .find(|(k, _)| *k == rest)
                .map(|(_, h)| *h)
        } else if prefix == updated {
            family
                .keys
                .iter()
                .find(|(k, _)| *k == rest)
                .and_then(|(_, h)| *h)
        } else {
            None
        };
        if let Some(target) = target {
            c.insert(target.into(), loader_value(value, &arch, &updated));
        }
    }
    if c.get("model_type").and_then(Value::as_str) == Some("gemma3") {
        c.insert("model_type".into(), "gemma3_text".into());
    }
    if !c.contains_key("vocab_size")
        && let Some(tokens) = meta.array("tokenizer.ggml.tokens")
    {
        c.insert("vocab_size".into(), tokens.len().into());
    }
    // gyrofs's additions
    match updated.as_str() {
        "qwen3" => {
            if let Some(v) = meta.get("qwen3.attention.key_length") {
                c.insert("head_dim".into(), loader_value(v, &arch, &updated));
            }
        }
        "qwen3_moe" | "qwen2_moe" => {
            // the loader's tables omit the expert sizes: the class defaults
            // (768, 5632) apply and the experts get the wrong shapes
            let moe = if updated == "qwen3_moe" {
                "qwen3moe"
            } else {
                "qwen2moe"
            };
            let keys = [
                ("expert_feed_forward_length", "moe_intermediate_size"),
                (
                    "expert_shared_feed_forward_length",
                    "shared_expert_intermediate_size",
                ),
            ];
            for (gguf, hf) in keys {
                if let Some(v) = meta.get(&format!("{moe}.{gguf}")) {
                    c.insert(hf.into(), loader_value(v, &arch, &updated));
                }
            }
        }
        "starcoder2" => {
            // the loader's table omits rope.freq_base: the default rope_theta
            // (10000) would apply, where StarCoder2 models use 1e5 to 1e6
            if let Some(v) = meta.get("starcoder2.rope.freq_base") {
                c.insert("rope_theta".into(), loader_value(v, &arch, &updated));
            }
        }
        "gpt_oss" => gpt_oss_fixes(meta, &arch, &updated, &mut c),
        "stablelm" | "nemotron" => {
            // rope.dimension_count is mapped to nothing: the class's default
            // partial_rotary_factor (0.25, 0.5) would apply whatever the
            // model's own
            if let Some(f) = partial_rotary_factor(meta, &arch) {
                c.insert("partial_rotary_factor".into(), f.into());
            }
            // nemotron's table has no attention.key_length either: head_dim
            // would be hidden / heads (Minitron-8B: 4096 / 48, not its 128)
            if updated == "nemotron"
                && let Some(v) = meta.get("nemotron.attention.key_length")
            {
                c.insert("head_dim".into(), loader_value(v, &arch, &updated));
            }
        }
        "gpt2" => {
            if let Some(v) = meta.get("gpt2.context_length") {
                c.insert("n_positions".into(), loader_value(v, &arch, &updated));
            }
            if let Some(v) = meta.get("gpt2.feed_forward_length") {
                c.insert("n_inner".into(), loader_value(v, &arch, &updated));
            }
        }
        _ => {}
    }
    c.insert(
        "architectures".into(),
        Value::Array(vec![family.class.into()]),
    );
    Ok((c, family))
}

/// What transformers' gpt_oss mapping misses or misreads (its own
/// `rope.scaling` reader indexes the wrong part of each GGUF field and fails
/// on every file llama.cpp writes): `head_dim` (`attention.key_length`;
/// hidden / heads is not it: 2880 / 64), `sliding_window` (the table looks
/// for `sliding_window`, llama.cpp writes `attention.sliding_window`), and
/// YaRN's `rope_scaling` in the form the Hugging Face configs of gpt-oss have
/// it, `truncate: false` included (GGUF does not record it; every released
/// gpt-oss model has it false); and `rms_norm_eps` as the original had it.
fn gpt_oss_fixes(meta: &GgufMetadata, arch: &str, updated: &str, c: &mut Map<String, Value>) {
    let get = |k: &str| {
        meta.get(&format!("{arch}.{k}"))
            .map(|v| loader_value(v, arch, updated))
    };
    if let Some(v) = get("attention.key_length") {
        c.insert("head_dim".into(), v);
    }
    if let Some(v) = get("attention.sliding_window") {
        c.insert("sliding_window".into(), v);
    }
    if let Some(Value::String(kind)) = get("rope.scaling.type") {
        let mut r = Map::new();
        r.insert("rope_type".into(), kind.into());
        for (gguf, hf) in [
            ("factor", "factor"),
            (
                "original_context_length",
                "original_max_position_embeddings",
            ),
            ("yarn_beta_fast", "beta_fast"),
            ("yarn_beta_slow", "beta_slow"),
        ] {
            if let Some(v) = get(&format!("rope.scaling.{gguf}")) {
                r.insert(hf.into(), v);
            }
        }
        r.insert("truncate".into(), false.into());
        c.insert("rope_scaling".into(), Value::Object(r));
    }
    // GGUF holds floats as f32; with no transformers reading to follow,
    // each is written as the shortest decimal of its f32 (1e-05, not
    // 9.999999747378752e-06): the value the original config had.
    if let Some(v) = c.get_mut("rms_norm_eps")
        && let Some(f) = v.as_f64()
        && let Ok(d) = (f as f32).to_string().parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(d)
    {
        *v = Value::Number(n);
    }
}

/// `rope.dimension_count / head_dim`, the head dimension being
/// `attention.key_length` or `embedding_length / attention.head_count`.
fn partial_rotary_factor(meta: &GgufMetadata, arch: &str) -> Option<f64> {
    let get = |k: &str| {
        let v = meta.get(&format!("{arch}.{k}"))?;
        match v {
            GgufValue::Array(a) if a.len() == 1 => a.values().next()?.as_u64(),
            _ => v.as_u64(),
        }
    };
    let rotary = get("rope.dimension_count")?;
    let head_dim = match get("attention.key_length") {
        Some(k) => k,
        None => get("embedding_length")?.checked_div(get("attention.head_count")?)?,
    };
    (head_dim > 0).then(|| rotary as f64 / head_dim as f64)
}

/// A non-negative integer config value.
pub fn get_u64(c: &Map<String, Value>, key: &str) -> Result<u64, GgufHfError> {
    match c.get(key) {
        Some(v) => v.as_u64().ok_or_else(|| GgufHfError::ConfigNotCount {
            key: key.into(),
            value: v.clone(),
        }),
        None => Err(GgufHfError::ConfigMissing { key: key.into() }),
    }
}
