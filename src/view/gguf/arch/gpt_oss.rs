//! `gpt-oss`: gpt-oss (`GptOssForCausalLM`), as the converter's
//! `GptOssModel` writes it: TextModel's keys, then `sliding_window` and
//! `expert_feed_forward_length`.
//!
//! The experts, by checkpoint layout:
//! - MXFP4 (the Hugging Face release, `*_blocks` / `*_scales`; and the
//!   `original/` checkpoint, which gyrofs renames to Hugging Face names and
//!   whose blocks and scales are the same bytes): written as they are
//!   stored, repacked to ggml MXFP4 ([`Raw::Mxfp4`]), type MXFP4 whatever
//!   the output type, before every other tensor (the converter writes them
//!   from `generate_extra_tensors`, straight to the file), per layer
//!   `ffn_down_exps`, `ffn_gate_exps` (rows `0::2` of `gate_up`),
//!   `ffn_up_exps` (rows `1::2`);
//! - dense (`gate_up_proj [E, H, 2I]`, `down_proj [E, I, H]`, no
//!   quantization): transposed (`transpose(-1, -2)`) and split the same
//!   way, written in the output type in the tensor loop.
//!
//! The biases of `gate_up` are split the same way (`[..., 0::2]`,
//! `[..., 1::2]`), `sinks` becomes `attn_sinks.weight`, the router is
//! `ffn_gate_inp`.
//!
//! An `original/` checkpoint gives the GGUF of the release with the same
//! weights, but for the tensor order when the release is sharded: the
//! converter reads shard by shard, and which tensor a release puts in which
//! shard is not in the original checkpoint (one file: name order).

use serde_json::{Value, json};

use super::{Arch, Folder, Names, map_name, text_model_params};
use crate::quant::ggml::GgmlType;
use crate::view::gguf::config::{Config, Default as D};
use crate::view::gguf::tensors::{Data, HfTensor, OutTensor, Raw, Values};
use crate::view::gguf::vocab;
use crate::view::gguf::writer::Kv;

#[derive(Debug)]
pub struct GptOss;

pub static GPT_OSS: GptOss = GptOss;

const NAMES: Names = &[
    ("lm_head", "output"),
    ("model.embed_tokens", "token_embd"),
    ("model.norm", "output_norm"),
    ("model.layers.{}.input_layernorm", "blk.{}.attn_norm"),
    (
        "model.layers.{}.post_attention_layernorm",
        "blk.{}.post_attention_norm",
    ),
    ("model.layers.{}.self_attn.q_proj", "blk.{}.attn_q"),
    ("model.layers.{}.self_attn.k_proj", "blk.{}.attn_k"),
    ("model.layers.{}.self_attn.v_proj", "blk.{}.attn_v"),
    ("model.layers.{}.self_attn.o_proj", "blk.{}.attn_output"),
    ("model.layers.{}.self_attn.sinks", "blk.{}.attn_sinks"),
    ("model.layers.{}.mlp.router", "blk.{}.ffn_gate_inp"),
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

/// The defaults transformers 5.24's `GptOssConfig` gives the fields read.
const DEFAULTS: &[(&str, D)] = &[
    ("num_hidden_layers", D::U64(36)),
    ("num_local_experts", D::U64(128)),
    ("vocab_size", D::U64(201088)),
    ("hidden_size", D::U64(2880)),
    ("intermediate_size", D::U64(2880)),
    ("head_dim", D::U64(64)),
    ("num_attention_heads", D::U64(64)),
    ("num_key_value_heads", D::U64(8)),
    ("sliding_window", D::U64(128)),
    ("max_position_embeddings", D::U64(131072)),
    ("rms_norm_eps", D::F64(1e-5)),
    ("num_experts_per_tok", D::U64(4)),
    ("rope_theta", D::F64(150000.0)),
];

/// What one Hugging Face expert tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Down,
    GateUp,
}

/// The layer and part of `...mlp.experts.down_proj` / `gate_up_proj` (the
/// weights, without a suffix: the MXFP4 pair's or the dense tensor's name).
fn expert_weight(name: &str) -> Option<(u64, Part)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer = layer.parse().ok()?;
    match part {
        "mlp.experts.down_proj" => Some((layer, Part::Down)),
        "mlp.experts.gate_up_proj" => Some((layer, Part::GateUp)),
        _ => None,
    }
}

/// The GGUF name of a Hugging Face tensor name as the converter renames it
/// (`sinks` gets `.weight`; `down_proj_bias` is `down_proj.bias`).
fn gguf_name(hf: &str) -> Option<String> {
    let name = if hf.contains("sinks") {
        format!("{hf}.weight")
    } else {
        hf.replace("down_proj_bias", "down_proj.bias")
    };
    map_name(NAMES, &name).map(|(n, _)| n)
}

impl Arch for GptOss {
    fn name(&self) -> &'static str {
        "gpt-oss"
    }

    fn config(&self, config: &Value) -> Config {
        let mut cfg = Config::new(config, DEFAULTS);
        let null = |cfg: &Config, k: &str| cfg.map().get(k).is_some_and(Value::is_null);
        if null(&cfg, "num_key_value_heads")
            && let Some(h) = cfg.u64(&["num_attention_heads"])
        {
            cfg.default_to("num_key_value_heads", h.into());
        }
        if null(&cfg, "head_dim")
            && let Some(d) = cfg
                .u64(&["hidden_size"])
                .zip(cfg.u64(&["num_attention_heads"]))
                .and_then(|(h, n)| h.checked_div(n))
        {
            cfg.default_to("head_dim", d.into());
        }
        let rope = ["rope_parameters", "rope_scaling"];
        if rope
            .iter()
            .all(|k| cfg.map().get(*k).is_none_or(Value::is_null))
        {
            cfg.default_to(
                "rope_parameters",
                json!({
                    "rope_type": "yarn",
                    "factor": 32.0,
                    "beta_fast": 32.0,
                    "beta_slow": 1.0,
                    "truncate": false,
                    "original_max_position_embeddings": 4096,
                }),
            );
        }
        cfg
    }

    fn tensors(
        &self,
        _: &Config,
        hf: &[HfTensor],
        _: &dyn Folder,
    ) -> Result<Vec<OutTensor>, String> {
        let mut out = Vec::new();
        // The MXFP4 experts first, in reading order.
        for t in hf {
            let (Some((layer, part)), Some(m)) = (expert_weight(&t.name), t.mxfp4) else {
                continue;
            };
            let raw = |name: &str, first: u64, step: u64| OutTensor {
                name: format!("blk.{layer}.{name}.weight"),
                shape: vec![m.experts, (m.rows - first).div_ceil(step), m.groups * 32],
                data: Data::Raw(
                    Raw::Mxfp4 {
                        hf: t.index,
                        first,
                        step,
                    },
                    GgmlType::MXFP4,
                ),
            };
            match part {
                Part::Down => out.push(raw("ffn_down_exps", 0, 1)),
                Part::GateUp => {
                    if m.rows % 2 != 0 {
                        return Err(format!("{} has an odd number of rows", t.name));
                    }
                    out.push(raw("ffn_gate_exps", 0, 2));
                    out.push(raw("ffn_up_exps", 1, 2));
                }
            }
        }
        for t in hf {
            if self.skipped(&t.name) {
                continue;
            }
            if let Some((layer, part)) = expert_weight(&t.name) {
                if t.mxfp4.is_some() {
                    continue;
                }
                let &[e, a, b] = &t.shape[..] else {
                    return Err(format!("{} is not 3-D", t.name));
                };
                let name = |n: &str| format!("blk.{layer}.{n}.weight");
                match part {
                    Part::Down => out.push(OutTensor::values(
                        name("ffn_down_exps"),
                        vec![e, b, a],
                        Values::Transposed(t.index),
                    )),
                    Part::GateUp => {
                        if b % 2 != 0 {
                            return Err(format!("{} has an odd last axis", t.name));
                        }
                        for (n, first) in [("ffn_gate_exps", 0), ("ffn_up_exps", 1)] {
                            out.push(OutTensor::values(
                                name(n),
                                vec![e, b / 2, a],
                                Values::Strided {
                                    hf: t.index,
                                    first,
                                    step: 2,
                                    transposed: true,
                                },
                            ));
                        }
                    }
                }
                continue;
            }
            if let Some(stem) = t.name.strip_suffix("gate_up_proj_bias") {
                let Some((&last, lead)) = t.shape.split_last().filter(|(l, _)| *l % 2 == 0) else {
                    return Err(format!("{} has an odd last axis", t.name));
                };
                let mut shape = lead.to_vec();
                shape.push(last / 2);
                for (n, first) in [("gate_proj.bias", 0), ("up_proj.bias", 1)] {
                    let hf_name = format!("{stem}{n}");
                    let name = gguf_name(&hf_name)
                        .ok_or_else(|| format!("llama.cpp has no name for tensor '{hf_name}'"))?;
                    out.push(OutTensor::values(
                        name,
                        shape.clone(),
                        Values::Strided {
                            hf: t.index,
                            first,
                            step: 2,
                            transposed: false,
                        },
                    ));
                }
                continue;
            }
            let name = gguf_name(&t.name)
                .ok_or_else(|| format!("llama.cpp has no name for tensor '{}'", t.name))?;
            out.push(OutTensor::values(
                name,
                t.shape.clone(),
                Values::Hf(t.index),
            ));
        }
        Ok(out)
    }

    fn hparams(&self, cfg: &Config, kv: &mut Kv, file_type: u32) {
        text_model_params("gpt-oss", cfg, kv, file_type);
        if let Some(w) = cfg.u64(&["sliding_window"]) {
            kv.u32("gpt-oss.attention.sliding_window", w as u32);
        }
        if let Some(i) = cfg.u64(&["intermediate_size"]) {
            kv.u32("gpt-oss.expert_feed_forward_length", i as u32);
        }
    }

    fn vocab(&self) -> vocab::Path {
        vocab::Path::Bpe
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::gguf::GgufValue;
    use crate::dtype::Dtype;
    use crate::view::gguf::arch::NoFiles;
    use crate::view::gguf::tensors::Mxfp4Stored;

    fn t(i: u32, name: &str, shape: &[u64], mxfp4: Option<Mxfp4Stored>) -> HfTensor {
        HfTensor {
            index: i,
            name: name.into(),
            shape: shape.to_vec(),
            dtype: Dtype::BF16,
            file: "model.safetensors".into(),
            mxfp4,
        }
    }

    #[test]
    fn names() {
        let n = |s: &str| gguf_name(s);
        let l = "model.layers.7.";
        assert_eq!(
            n(&format!("{l}self_attn.sinks")).as_deref(),
            Some("blk.7.attn_sinks.weight")
        );
        assert_eq!(
            n(&format!("{l}mlp.router.bias")).as_deref(),
            Some("blk.7.ffn_gate_inp.bias")
        );
        assert_eq!(
            n(&format!("{l}mlp.experts.down_proj_bias")).as_deref(),
            Some("blk.7.ffn_down_exps.bias")
        );
        assert_eq!(
            n(&format!("{l}post_attention_layernorm.weight")).as_deref(),
            Some("blk.7.post_attention_norm.weight")
        );
        assert_eq!(
            n(&format!("{l}self_attn.o_proj.bias")).as_deref(),
            Some("blk.7.attn_output.bias")
        );
        assert_eq!(n("lm_head.weight").as_deref(), Some("output.weight"));
        assert_eq!(
            n("model.norm.weight").as_deref(),
            Some("output_norm.weight")
        );
        assert_eq!(
            expert_weight("model.layers.12.mlp.experts.gate_up_proj"),
            Some((12, Part::GateUp))
        );
        assert_eq!(
            expert_weight("model.layers.12.mlp.experts.gate_up_proj_bias"),
            None
        );
    }

    /// The MXFP4 layout: experts first (down, gate, up per layer, in
    /// reading order), then the loop, biases split.
    #[test]
    fn mxfp4_experts_first() {
        let m = Mxfp4Stored {
            experts: 4,
            rows: 128,
            groups: 2,
        };
        let d = Mxfp4Stored { rows: 64, ..m };
        let hf = [
            t(0, "model.layers.0.input_layernorm.weight", &[64], None),
            t(
                1,
                "model.layers.0.mlp.experts.down_proj",
                &[4, 64, 64],
                Some(d),
            ),
            t(
                2,
                "model.layers.0.mlp.experts.down_proj_bias",
                &[4, 64],
                None,
            ),
            t(
                3,
                "model.layers.0.mlp.experts.gate_up_proj",
                &[4, 64, 128],
                Some(m),
            ),
            t(
                4,
                "model.layers.0.mlp.experts.gate_up_proj_bias",
                &[4, 128],
                None,
            ),
            t(5, "model.layers.0.self_attn.sinks", &[4], None),
        ];
        let out = GPT_OSS
            .tensors(&GPT_OSS.config(&json!({})), &hf, &NoFiles)
            .unwrap();
        let names: Vec<_> = out.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "blk.0.ffn_down_exps.weight",
                "blk.0.ffn_gate_exps.weight",
                "blk.0.ffn_up_exps.weight",
                "blk.0.attn_norm.weight",
                "blk.0.ffn_down_exps.bias",
                "blk.0.ffn_gate_exps.bias",
                "blk.0.ffn_up_exps.bias",
                "blk.0.attn_sinks.weight",
            ]
        );
        assert_eq!(out[0].shape, [4, 64, 64]);
        assert_eq!(out[2].shape, [4, 64, 64]);
        assert!(matches!(
            out[2].data,
            Data::Raw(
                Raw::Mxfp4 {
                    hf: 3,
                    first: 1,
                    step: 2
                },
                GgmlType::MXFP4
            )
        ));
        assert_eq!(out[6].shape, [4, 64]);
        assert!(matches!(
            out[6].data,
            Data::Values(Values::Strided {
                hf: 4,
                first: 1,
                step: 2,
                transposed: false
            })
        ));
    }

    /// The dense layout: experts transposed in the loop.
    #[test]
    fn dense_experts() {
        let hf = [
            t(
                0,
                "model.layers.0.mlp.experts.down_proj",
                &[4, 32, 64],
                None,
            ),
            t(
                1,
                "model.layers.0.mlp.experts.gate_up_proj",
                &[4, 64, 64],
                None,
            ),
        ];
        let out = GPT_OSS
            .tensors(&GPT_OSS.config(&json!({})), &hf, &NoFiles)
            .unwrap();
        let got: Vec<_> = out
            .iter()
            .map(|t| (t.name.as_str(), t.shape.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("blk.0.ffn_down_exps.weight", vec![4, 64, 32]),
                ("blk.0.ffn_gate_exps.weight", vec![4, 32, 64]),
                ("blk.0.ffn_up_exps.weight", vec![4, 32, 64]),
            ]
        );
        assert!(matches!(out[0].data, Data::Values(Values::Transposed(0))));
    }

    #[test]
    fn keys() {
        let cfg = GPT_OSS.config(&json!({"num_hidden_layers": 2, "hidden_size": 64,
            "intermediate_size": 48, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "sliding_window": 8, "max_position_embeddings": 256,
            "num_local_experts": 4, "num_experts_per_tok": 2,
            "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0,
                "beta_slow": 1.0, "original_max_position_embeddings": 64, "truncate": false},
            "rope_theta": 150000}));
        let mut kv = Kv::new();
        GPT_OSS.hparams(&cfg, &mut kv, 38);
        let keys: Vec<_> = kv
            .to_metadata()
            .iter()
            .map(|(k, _)| k.to_string())
            .collect();
        let p = |k: &str| format!("gpt-oss.{k}");
        let want: Vec<String> = [
            p("block_count"),
            p("context_length"),
            p("embedding_length"),
            p("feed_forward_length"),
            p("attention.head_count"),
            p("attention.head_count_kv"),
            p("rope.scaling.type"),
            p("rope.scaling.factor"),
            p("rope.scaling.original_context_length"),
            p("rope.scaling.yarn_beta_fast"),
            p("rope.scaling.yarn_beta_slow"),
            p("rope.freq_base"),
            p("attention.layer_norm_rms_epsilon"),
            p("expert_count"),
            p("expert_used_count"),
            p("attention.key_length"),
            p("attention.value_length"),
            "general.file_type".into(),
            p("attention.sliding_window"),
            p("expert_feed_forward_length"),
        ]
        .into();
        assert_eq!(keys, want);
        assert_eq!(
            kv.get("gpt-oss.expert_feed_forward_length"),
            Some(&GgufValue::U32(48))
        );
        // Class defaults: gpt-oss-20b's RoPE and window.
        let mut kv = Kv::new();
        GPT_OSS.hparams(&GPT_OSS.config(&json!({})), &mut kv, 1);
        assert_eq!(
            kv.get("gpt-oss.rope.scaling.factor"),
            Some(&GgufValue::F32(32.0))
        );
        assert_eq!(
            kv.get("gpt-oss.rope.freq_base"),
            Some(&GgufValue::F32(150000.0))
        );
        assert_eq!(
            kv.get("gpt-oss.attention.sliding_window"),
            Some(&GgufValue::U32(128))
        );
    }
}
