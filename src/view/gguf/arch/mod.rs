//! The architectures the `gguf/` view writes, as llama.cpp's converter
//! does (docs/GGUF_OUT.md): each says which Hugging Face models it takes,
//! its hyperparameter keys, and how the Hugging Face tensors become GGUF
//! tensors (names from gguf-py's `tensor_mapping.py`, transforms, order).
//!
//! Shared here: the name tables ([`Names`]), the converter's tensor order
//! (source file, then name; experts stacked when a layer's last expert
//! tensor is read) and the keys every text model writes
//! ([`text_model_params`]).

mod gemma;
mod gpt2;
mod gpt_oss;
mod llama;
mod phi3;
mod qwen;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::view::gguf::config::Config;
use crate::view::gguf::tensors::{HfTensor, OutTensor, Values};
use crate::view::gguf::vocab;
use crate::view::gguf::writer::Kv;

/// One architecture of the converter.
pub trait Arch: Send + Sync + fmt::Debug {
    /// `general.architecture` (and the prefix of its keys).
    fn name(&self) -> &'static str;
    /// The config with its class's defaults (`model_type` picks the class).
    fn config(&self, config: &Value) -> Config;
    /// Hugging Face tensors it never reads (the converter's skip list, and
    /// buffers an architecture drops): left out before anything else, so
    /// they need not be float tensors.
    fn skipped(&self, name: &str) -> bool {
        skipped(name)
    }
    /// The output tensors in file order, from the Hugging Face tensors in
    /// the converter's reading order (`folder`: the other files, which a
    /// few architectures look at while preparing tensors).
    fn tensors(
        &self,
        cfg: &Config,
        hf: &[HfTensor],
        folder: &dyn Folder,
    ) -> Result<Vec<OutTensor>, String>;
    /// Keys the converter adds while it prepares tensors (they come right
    /// after `general.architecture`).
    fn early_kv(&self, cfg: &Config, kv: &mut Kv) {
        let _ = (cfg, kv);
    }
    /// The hyperparameter keys, `general.file_type` among them.
    fn hparams(&self, cfg: &Config, kv: &mut Kv, file_type: u32);
    /// Which vocabulary path it takes.
    fn vocab(&self) -> vocab::Path;
}

/// The folder's files other than the tensors, as the converter may read
/// them while it prepares tensors (Gemma 3 trims its embedding to the
/// tokenizer's vocabulary).
pub trait Folder {
    /// Is there a file `name`?
    fn has(&self, name: &str) -> bool;
    /// Its bytes, if there is one and it can be read.
    fn read(&self, name: &str) -> Option<Vec<u8>>;
    /// The entries of `tokenizer.json`'s vocabulary plus its added tokens,
    /// if it has one that can be read. A folder that makes its
    /// `tokenizer.json` (a GGUF source's) counts them without making it.
    fn tokenizer_rows(&self) -> Option<u64> {
        json_tokenizer_rows(&self.read("tokenizer.json")?)
    }
}

/// The entries of a `tokenizer.json`'s vocabulary plus its added tokens.
pub fn json_tokenizer_rows(text: &[u8]) -> Option<u64> {
    let t: serde_json::Value = serde_json::from_slice(text).ok()?;
    let count = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::Object(o)) => Some(o.len() as u64),
        Some(serde_json::Value::Array(a)) => Some(a.len() as u64),
        _ => None,
    };
    let vocab = count(t.get("model").and_then(|m| m.get("vocab")))?;
    let added = count(t.get("added_tokens"))?;
    Some(vocab + added)
}

/// A folder without side files (tests).
#[cfg(test)]
pub struct NoFiles;

#[cfg(test)]
impl Folder for NoFiles {
    fn has(&self, _: &str) -> bool {
        false
    }
    fn read(&self, _: &str) -> Option<Vec<u8>> {
        None
    }
}

/// The architecture of a Hugging Face config, if the view writes it (or why
/// not).
pub fn of(config: &Value) -> Result<&'static dyn Arch, String> {
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    // The converter's `get_model_architecture`: the text config's class if
    // it names one, else the first of `architectures`.
    fn first(c: Option<&Value>) -> Option<&str> {
        c.and_then(|c| c.get("architectures"))
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
    }
    let class = first(config.get("text_config"))
        .or_else(|| first(Some(config)))
        .unwrap_or("");
    match (model_type, class) {
        ("llama" | "mistral" | "mixtral", _) => Ok(llama::arch(model_type)),
        (_, "LlamaForCausalLM" | "MistralForCausalLM" | "MixtralForCausalLM") => {
            Ok(llama::arch(model_type))
        }
        (_, "Gemma2ForCausalLM") | ("gemma2", "") => Ok(gemma::gemma2()),
        (_, "Gemma3ForCausalLM" | "Gemma3ForConditionalGeneration")
        | ("gemma3" | "gemma3_text", "") => Ok(gemma::gemma3()),
        (_, "Phi3ForCausalLM") | ("phi3", "") => Ok(phi3::arch()),
        (
            _,
            "Qwen2ForCausalLM" | "Qwen3ForCausalLM" | "Qwen2MoeForCausalLM" | "Qwen3MoeForCausalLM",
        ) => qwen::arch(model_type, class),
        ("gpt2", _) | (_, "GPT2LMHeadModel") => Ok(&gpt2::GPT2),
        ("gpt_oss", _) | (_, "GptOssForCausalLM") => Ok(&gpt_oss::GPT_OSS),
        ("", "") => Err("config.json names no model_type".into()),
        _ => Err(format!(
            "llama.cpp's converter has no mapping gyrofs writes for model_type '{model_type}' ({class})"
        )),
    }
}

/// How Hugging Face tensor names become GGUF names: `(HF stem, GGUF stem)`
/// pairs, where `{}` stands for the layer number; the `.weight` / `.bias`
/// suffix is kept.
pub type Names = &'static [(&'static str, &'static str)];

/// The GGUF name of `hf` by `names`, with its layer (if any).
pub fn map_name(names: Names, hf: &str) -> Option<(String, Option<u64>)> {
    let (stem, suffix) = hf
        .rsplit_once('.')
        .filter(|(_, s)| *s == "weight" || *s == "bias")?;
    for (from, to) in names {
        if let Some(layer) = match_stem(from, stem) {
            let out = match layer {
                Some(l) => to.replace("{}", &l.to_string()),
                None => to.to_string(),
            };
            return Some((format!("{out}.{suffix}"), layer));
        }
    }
    None
}

/// Does `stem` match `pattern` (with `{}` a layer number)? `Some(layer)`.
fn match_stem(pattern: &str, stem: &str) -> Option<Option<u64>> {
    match pattern.split_once("{}") {
        None => (pattern == stem).then_some(None),
        Some((head, tail)) => {
            let rest = stem.strip_prefix(head)?.strip_suffix(tail)?;
            let ok = !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
            ok.then(|| rest.parse().ok()).flatten().map(Some)
        }
    }
}

/// Per-expert tensors stacked into one per layer: `prefix` (with `{}` the
/// layer) then the expert number, then one of `parts` (`(HF part name,
/// GGUF name with {} the layer)`, in the order the converter writes them).
#[derive(Debug, Clone, Copy)]
pub struct Experts {
    pub prefix: &'static str,
    pub parts: &'static [(&'static str, &'static str)],
    /// Experts per layer.
    pub count: u64,
}

/// An expert tensor's (layer, expert, part index), if `name` is one.
fn expert_of(x: &Experts, name: &str) -> Option<(u64, u64, usize)> {
    let (head, tail) = x.prefix.split_once("{}")?;
    let rest = name.strip_prefix(head)?;
    let (layer, rest) = rest.split_once(tail)?;
    let layer = layer.parse().ok()?;
    let (expert, part) = rest.split_once('.')?;
    let expert = expert.parse().ok()?;
    let k = x
        .parts
        .iter()
        .position(|(p, _)| format!("{p}.weight") == part)?;
    Some((layer, expert, k))
}

/// The converter's tensor loop: Hugging Face tensors in reading order,
/// each mapped by `one` (which may also skip it), and per-expert tensors
/// buffered and written stacked when their layer is complete.
pub fn convert(
    hf: &[HfTensor],
    experts: Option<&Experts>,
    mut one: impl FnMut(&HfTensor) -> Result<Option<OutTensor>, String>,
) -> Result<Vec<OutTensor>, String> {
    convert_many(hf, experts, |t| Ok(one(t)?.into_iter().collect()))
}

/// [`convert`] where a tensor may become several (or none): `many` gives
/// them in the order the converter writes them (a fused tensor's parts).
pub fn convert_many(
    hf: &[HfTensor],
    experts: Option<&Experts>,
    mut many: impl FnMut(&HfTensor) -> Result<Vec<OutTensor>, String>,
) -> Result<Vec<OutTensor>, String> {
    let mut out = Vec::new();
    let mut buffers: BTreeMap<u64, BTreeMap<(usize, u64), &HfTensor>> = BTreeMap::new();
    for t in hf {
        if let Some(x) = experts
            && let Some((layer, e, k)) = expert_of(x, &t.name)
        {
            if e >= x.count {
                return Err(format!("{} is past the {} experts", t.name, x.count));
            }
            let buf = buffers.entry(layer).or_default();
            buf.insert((k, e), t);
            if buf.len() as u64 == x.count * x.parts.len() as u64 {
                let buf = buffers.remove(&layer).expect("present");
                for (k, (_, gguf)) in x.parts.iter().enumerate() {
                    let members: Vec<&HfTensor> = (0..x.count).map(|e| buf[&(k, e)]).collect();
                    let shape0 = &members[0].shape;
                    if members.iter().any(|m| &m.shape != shape0) {
                        return Err(format!("the experts of layer {layer} differ in shape"));
                    }
                    let mut shape = vec![x.count];
                    shape.extend_from_slice(shape0);
                    let ids = members.iter().map(|m| m.index).collect();
                    let name = format!("{}.weight", gguf.replace("{}", &layer.to_string()));
                    out.push(OutTensor::values(name, shape, Values::Stacked(ids)));
                }
            }
            continue;
        }
        out.extend(many(t)?);
    }
    if let Some((layer, _)) = buffers.into_iter().next() {
        return Err(format!("layer {layer} lacks some of its experts"));
    }
    Ok(out)
}

/// A tensor name as `TextModel.filter_tensors` leaves it: `None` for the
/// multimodal towers and projectors it drops, else the name with
/// `language_model.` removed (a multimodal model's text part).
pub fn text_filter(name: &str) -> Option<String> {
    const STARTS: [&str; 10] = [
        "mlp",
        "vit.",
        "vpm.",
        "siglip2.",
        "conformer.",
        "merger.",
        "resampler.",
        "sound_encoder.",
        "sound_projection.",
        "speech_embeddings.",
    ];
    const CONTAINS: [&str; 17] = [
        "visual.",
        "vision.",
        "audio.",
        "talker.",
        "vision_",
        "audio_",
        "token2wav.",
        "code2wav.",
        "projector.",
        "pre_mm_projector_norm",
        "image_newline",
        "view_seperator",
        "patch_embed",
        "patch_embedding",
        "patch_merger.",
        "patch_merge_mlp.",
        "model.connector.",
    ];
    if STARTS.iter().any(|s| name.starts_with(s)) || CONTAINS.iter().any(|c| name.contains(c)) {
        return None;
    }
    let mut name = name.to_string();
    if name.ends_with("e_score_correction_bias") {
        name = name.replace("e_score_correction_bias", "e_score_correction.bias");
    }
    Some(name.replace("language_model.", ""))
}

/// Names the converter never maps (causal-mask buffers, rotary caches).
pub fn skipped(name: &str) -> bool {
    name.ends_with(".attention.masked_bias")
        || name.ends_with(".attention.bias")
        || name.ends_with(".rotary_emb.inv_freq")
}

/// The keys `TextModel.set_gguf_parameters` writes, in order, under
/// `prefix`, `general.file_type` among them.
pub fn text_model_params(prefix: &str, cfg: &Config, kv: &mut Kv, file_type: u32) {
    let key = |k: &str| format!("{prefix}.{k}");
    if let Some(v) = cfg.u64(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"]) {
        kv.u32(&key("block_count"), v as u32);
    }
    let ctx = [
        "max_position_embeddings",
        "n_ctx",
        "n_positions",
        "max_length",
        "max_sequence_length",
        "model_max_length",
    ];
    let ints: [(&str, &[&str]); 5] = [
        ("context_length", &ctx),
        ("embedding_length", &["hidden_size", "n_embd", "dim"]),
        (
            "feed_forward_length",
            &[
                "prefix_dense_intermediate_size",
                "dense_intermediate_size",
                "intermediate_size",
                "n_inner",
                "hidden_dim",
            ],
        ),
        (
            "attention.head_count",
            &["num_attention_heads", "n_head", "n_heads"],
        ),
        (
            "attention.head_count_kv",
            &["num_key_value_heads", "n_kv_heads"],
        ),
    ];
    for (k, keys) in ints {
        if let Some(v) = cfg.u64(keys) {
            kv.u32(&key(k), v as u32);
        }
    }
    if cfg.get("is_causal") == Some(Value::Bool(false)) {
        kv.bool(&key("attention.causal"), false);
    }
    let rope = cfg.rope();
    let factor = rope.f64("factor");
    match (rope.kind.as_deref(), factor) {
        (Some("linear"), Some(f)) => {
            kv.str(&key("rope.scaling.type"), "linear");
            kv.f32(&key("rope.scaling.factor"), f as f32);
        }
        (Some("yarn"), Some(f)) => {
            kv.str(&key("rope.scaling.type"), "yarn");
            kv.f32(&key("rope.scaling.factor"), f as f32);
            if let Some(o) = rope
                .params
                .get("original_max_position_embeddings")
                .and_then(Value::as_u64)
                .or_else(|| cfg.u64(&["original_max_position_embeddings"]))
            {
                kv.u32(&key("rope.scaling.original_context_length"), o as u32);
            }
            for (k, from) in [
                ("rope.scaling.yarn_ext_factor", "extrapolation_factor"),
                ("rope.scaling.yarn_attn_factor", "attention_factor"),
                ("rope.scaling.yarn_beta_fast", "beta_fast"),
                ("rope.scaling.yarn_beta_slow", "beta_slow"),
            ] {
                let v = rope.f64(from).or_else(|| match from {
                    "attention_factor" => rope.f64("attn_factor"),
                    _ => None,
                });
                if let Some(v) = v {
                    kv.f32(&key(k), v as f32);
                }
            }
        }
        (Some("su" | "longrope"), _) => kv.str(&key("rope.scaling.type"), "longrope"),
        _ => {}
    }
    if let Some(t) = rope.theta {
        kv.f32(&key("rope.freq_base"), t as f32);
    }
    let swa = rope
        .all
        .get("sliding_attention")
        .and_then(|s| s.get("rope_theta"))
        .and_then(Value::as_f64);
    if let Some(t) = swa {
        kv.f32(&key("rope.freq_base_swa"), t as f32);
    }
    if let Some(e) = cfg.f64(&["rms_norm_eps", "norm_eps"]) {
        kv.f32(&key("attention.layer_norm_rms_epsilon"), e as f32);
    }
    if let Some(e) = cfg.f64(&["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"]) {
        kv.f32(&key("attention.layer_norm_epsilon"), e as f32);
    }
    if let Some(n) = cfg.u64(&["num_local_experts", "num_experts", "n_routed_experts"]) {
        kv.u32(&key("expert_count"), n as u32);
    }
    if let Some(n) = cfg.u64(&[
        "num_experts_per_tok",
        "num_experts_per_token",
        "top_k_experts",
    ]) {
        kv.u32(&key("expert_used_count"), n as u32);
    }
    if let Some(d) = cfg.u64(&["head_dim"]) {
        kv.u32(&key("attention.key_length"), d as u32);
        kv.u32(&key("attention.value_length"), d as u32);
    }
    kv.u32("general.file_type", file_type);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_with_layers() {
        let names: Names = &[
            ("model.embed_tokens", "token_embd"),
            ("model.layers.{}.self_attn.q_proj", "blk.{}.attn_q"),
        ];
        assert_eq!(
            map_name(names, "model.layers.12.self_attn.q_proj.bias"),
            Some(("blk.12.attn_q.bias".into(), Some(12)))
        );
        assert_eq!(
            map_name(names, "model.embed_tokens.weight"),
            Some(("token_embd.weight".into(), None))
        );
        assert_eq!(
            map_name(names, "model.layers.x.self_attn.q_proj.weight"),
            None
        );
        assert_eq!(map_name(names, "model.embed_tokens.scale"), None);
    }

    #[test]
    fn text_filter_drops_towers_and_strips_language_model() {
        assert_eq!(
            text_filter("language_model.model.layers.0.mlp.up_proj.weight").as_deref(),
            Some("model.layers.0.mlp.up_proj.weight")
        );
        assert_eq!(
            text_filter("model.language_model.norm.weight").as_deref(),
            Some("model.norm.weight")
        );
        assert_eq!(text_filter("vision_tower.head.probe"), None);
        assert_eq!(
            text_filter("multi_modal_projector.mm_input_projection_weight"),
            None
        );
        assert_eq!(
            text_filter("model.norm.weight").as_deref(),
            Some("model.norm.weight")
        );
    }

    #[test]
    fn classes_pick_architectures() {
        let name = |c: Value| of(&c).map(|a| a.name());
        let c = serde_json::json!({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"]});
        assert_eq!(name(c), Ok("gemma3"));
        let c = serde_json::json!({"model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"]});
        assert_eq!(name(c), Ok("gemma3"));
        let c = serde_json::json!({"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"]});
        assert_eq!(name(c), Ok("gemma2"));
        let c = serde_json::json!({"model_type": "phi3", "architectures": ["Phi3ForCausalLM"]});
        assert_eq!(name(c), Ok("phi3"));
        // EmbeddingGemma is another architecture of the converter.
        let c =
            serde_json::json!({"model_type": "gemma3_text", "architectures": ["Gemma3TextModel"]});
        assert!(of(&c).is_err());
        let c = serde_json::json!({"model_type": "llama", "architectures": ["LlamaForCausalLM"]});
        assert_eq!(name(c), Ok("llama"));
    }
}
