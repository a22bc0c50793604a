//! `llama`: Llama (1, 2, 3.x), Mistral and Mixtral, which the converter
//! writes as one architecture (`LlamaModel`): Q and K rows permuted into
//! llama.cpp's rotary layout, Mixtral's experts stacked per layer, and for
//! Llama 3's RoPE scaling the generated `rope_freqs`.

use serde_json::Value;

use super::{Arch, Experts, Folder, Names, convert, map_name, skipped, text_model_params};
use crate::view::gguf::config::{Config, Default as D};
use crate::view::gguf::tensors::{HfTensor, OutTensor, Values};
use crate::view::gguf::vocab;
use crate::view::gguf::writer::Kv;

#[derive(Debug)]
pub struct Llama {
    /// The config class: `llama`, `mistral` or `mixtral`.
    class: &'static str,
}

static LLAMA: Llama = Llama { class: "llama" };
static MISTRAL: Llama = Llama { class: "mistral" };
static MIXTRAL: Llama = Llama { class: "mixtral" };

/// The architecture of `model_type`.
pub fn arch(model_type: &str) -> &'static dyn Arch {
    match model_type {
        "mistral" => &MISTRAL,
        "mixtral" => &MIXTRAL,
        _ => &LLAMA,
    }
}

const NAMES: Names = &[
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
    ("model.layers.{}.mlp.gate_proj", "blk.{}.ffn_gate"),
    ("model.layers.{}.mlp.up_proj", "blk.{}.ffn_up"),
    ("model.layers.{}.mlp.down_proj", "blk.{}.ffn_down"),
    (
        "model.layers.{}.block_sparse_moe.gate",
        "blk.{}.ffn_gate_inp",
    ),
];

/// The defaults transformers 5.24's config classes give the fields read.
const LLAMA_DEFAULTS: &[(&str, D)] = &[
    ("max_position_embeddings", D::U64(2048)),
    ("rms_norm_eps", D::F64(1e-6)),
    ("rope_theta", D::F64(10000.0)),
    ("vocab_size", D::U64(32000)),
];
const MISTRAL_DEFAULTS: &[(&str, D)] = &[
    ("max_position_embeddings", D::U64(131072)),
    ("rms_norm_eps", D::F64(1e-6)),
    ("rope_theta", D::F64(10000.0)),
    ("vocab_size", D::U64(32000)),
];
const MIXTRAL_DEFAULTS: &[(&str, D)] = &[
    ("max_position_embeddings", D::U64(131072)),
    ("rms_norm_eps", D::F64(1e-5)),
    ("rope_theta", D::F64(1e6)),
    ("vocab_size", D::U64(32000)),
    ("num_local_experts", D::U64(8)),
    ("num_experts_per_tok", D::U64(2)),
    ("head_dim", D::Null),
];

impl Arch for Llama {
    fn name(&self) -> &'static str {
        "llama"
    }

    fn config(&self, config: &Value) -> Config {
        let defaults = match self.class {
            "mistral" => MISTRAL_DEFAULTS,
            "mixtral" => MIXTRAL_DEFAULTS,
            _ => LLAMA_DEFAULTS,
        };
        let mut cfg = Config::new(config, defaults);
        if let Some(h) = cfg.u64(&["num_attention_heads"]) {
            cfg.default_to("num_key_value_heads", h.into());
            if self.class != "mixtral"
                && let Some(d) = cfg.u64(&["hidden_size"]).and_then(|x| x.checked_div(h))
            {
                cfg.default_to("head_dim", d.into());
            }
        }
        cfg
    }

    fn hparams(&self, cfg: &Config, kv: &mut Kv, file_type: u32) {
        text_model_params("llama", cfg, kv, file_type);
        if let Some(v) = cfg.u64(&["vocab_size"]) {
            kv.u32("llama.vocab_size", v as u32);
        }
        if let Some(d) = rope_dim(cfg) {
            kv.u32("llama.rope.dimension_count", d as u32);
        }
    }

    fn tensors(
        &self,
        cfg: &Config,
        hf: &[HfTensor],
        _: &dyn Folder,
    ) -> Result<Vec<OutTensor>, String> {
        let n_head = cfg.need_u64(&["n_heads", "num_attention_heads"])?;
        let n_kv = cfg.need_u64(&["n_kv_heads", "num_key_value_heads"])?;
        let experts = cfg.u64(&["num_local_experts"]).map(|count| Experts {
            prefix: "model.layers.{}.block_sparse_moe.experts.",
            parts: &[
                ("w1", "blk.{}.ffn_gate_exps"),
                ("w2", "blk.{}.ffn_down_exps"),
                ("w3", "blk.{}.ffn_up_exps"),
            ],
            count,
        });
        let mut out = rope_freqs(cfg).into_iter().collect::<Vec<_>>();
        out.extend(convert(hf, experts.as_ref(), |t| {
            if skipped(&t.name) {
                return Ok(None);
            }
            let (name, _) = map_name(NAMES, &t.name)
                .ok_or_else(|| format!("llama.cpp has no name for tensor '{}'", t.name))?;
            let heads = if t.name.contains(".self_attn.q_proj.") {
                Some(n_head)
            } else if t.name.contains(".self_attn.k_proj.") {
                Some(n_kv)
            } else {
                None
            };
            let values = match heads {
                Some(h) => {
                    let rows = t.shape.first().copied().unwrap_or(0);
                    if h == 0 || rows % (2 * h) != 0 {
                        return Err(format!(
                            "{} has {rows} rows, not a whole number of {h} heads",
                            t.name
                        ));
                    }
                    Values::Permuted {
                        hf: t.index,
                        n_head: h,
                    }
                }
                None => Values::Hf(t.index),
            };
            Ok(Some(OutTensor::values(name, t.shape.clone(), values)))
        })?);
        Ok(out)
    }

    fn vocab(&self) -> vocab::Path {
        vocab::Path::Llama
    }
}

/// `head_dim`, else `hidden_size / num_attention_heads`.
fn rope_dim(cfg: &Config) -> Option<u64> {
    cfg.u64(&["head_dim"]).or_else(|| {
        cfg.u64(&["hidden_size"])?
            .checked_div(cfg.u64(&["num_attention_heads"])?)
    })
}

/// Llama 3's RoPE scaling factors (`rope_type: llama3`), computed as the
/// converter does in float32 (its `base ** x` is torch's float pow; this
/// one is correctly rounded, which can differ in the last place:
/// docs/GGUF_OUT.md).
fn rope_freqs(cfg: &Config) -> Option<OutTensor> {
    let rope = cfg.rope();
    if !rope.kind.as_deref()?.eq_ignore_ascii_case("llama3") {
        return None;
    }
    let base = rope.theta.unwrap_or(10000.0) as f32;
    let dim = rope_dim(cfg)?;
    let f = |k: &str, d: f64| rope.f64(k).unwrap_or(d) as f32;
    let factor = f("factor", 8.0);
    let low = f("low_freq_factor", 1.0);
    let high = f("high_freq_factor", 4.0);
    let old = f("original_max_position_embeddings", 8192.0);
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    let two_pi = std::f32::consts::TAU;
    let values: Vec<f32> = (0..dim)
        .step_by(2)
        .map(|i| {
            let exp = i as f32 / dim as f32;
            let freq = 1.0 / ((base as f64).powf(exp as f64) as f32);
            let wavelen = two_pi / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect();
    let n = values.len() as u64;
    Some(OutTensor::values(
        "rope_freqs.weight",
        vec![n],
        Values::Generated(values.into()),
    ))
}
