//! `gpt2`: GPT-2 (`GPT2LMHeadModel`, `GPT2Model`), as the converter's
//! `GPT2Model` writes it: its own short key list (`context_length` from
//! `n_ctx`, `feed_forward_length` always `4 * n_embd`), the Conv1D weights
//! (`[in, out]`) transposed to `[out, in]`, names with or without the
//! `transformer.` prefix.
//!
//! Two deviations, both where the converter fails:
//! - the causal-mask buffers `h.N.attn.bias` / `h.N.attn.masked_bias` of
//!   older checkpoints are skipped (the converter forwards them to its name
//!   map and aborts: "Can not map tensor 'h.0.attn.bias'"; earlier
//!   converters skipped them);
//! - a config without `n_ctx` gets no `gguf/` (the converter reads
//!   `hparams["n_ctx"]`, which transformers' `GPT2Config` does not create,
//!   and fails with a `KeyError`).

use serde_json::Value;

use super::{Arch, Folder, Names, convert, map_name};
use crate::view::gguf::config::{Config, Default as D};
use crate::view::gguf::tensors::{HfTensor, OutTensor, Values};
use crate::view::gguf::vocab;
use crate::view::gguf::writer::Kv;

#[derive(Debug)]
pub struct Gpt2;

pub static GPT2: Gpt2 = Gpt2;

/// Names after the `transformer.` prefix is dropped (gguf-py's
/// `tensor_mapping.py` lists both spellings).
const NAMES: Names = &[
    ("lm_head", "output"),
    ("wte", "token_embd"),
    ("wpe", "position_embd"),
    ("ln_f", "output_norm"),
    ("h.{}.ln_1", "blk.{}.attn_norm"),
    ("h.{}.attn.c_attn", "blk.{}.attn_qkv"),
    ("h.{}.attn.c_proj", "blk.{}.attn_output"),
    ("h.{}.ln_2", "blk.{}.ffn_norm"),
    ("h.{}.mlp.c_fc", "blk.{}.ffn_up"),
    ("h.{}.mlp.c_proj", "blk.{}.ffn_down"),
];

/// The defaults transformers 5.24's `GPT2Config` gives the fields read
/// (`n_ctx` is not a field of the class: it has no default).
const DEFAULTS: &[(&str, D)] = &[
    ("n_layer", D::U64(12)),
    ("n_embd", D::U64(768)),
    ("n_head", D::U64(12)),
    ("layer_norm_epsilon", D::F64(1e-5)),
    ("vocab_size", D::U64(50257)),
];

/// Conv1D weights, stored `[in, out]`: the converter transposes them.
const CONV1D: &[&str] = &[".c_attn.weight", ".c_proj.weight", ".c_fc.weight"];

/// The GGUF name of a GPT-2 tensor, with or without `transformer.`.
fn gguf_name(hf: &str) -> Option<String> {
    let bare = hf.strip_prefix("transformer.").unwrap_or(hf);
    map_name(NAMES, bare).map(|(n, _)| n)
}

impl Arch for Gpt2 {
    fn name(&self) -> &'static str {
        "gpt2"
    }

    fn config(&self, config: &Value) -> Config {
        Config::new(config, DEFAULTS)
    }

    fn skipped(&self, name: &str) -> bool {
        super::skipped(name) || name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")
    }

    fn tensors(
        &self,
        cfg: &Config,
        hf: &[HfTensor],
        _: &dyn Folder,
    ) -> Result<Vec<OutTensor>, String> {
        if cfg.u64(&["n_ctx"]).is_none() {
            return Err(
                "config.json has no n_ctx, which llama.cpp's converter needs for \
                 gpt2.context_length (it fails without it)"
                    .into(),
            );
        }
        convert(hf, None, |t| {
            if self.skipped(&t.name) {
                return Ok(None);
            }
            let name = gguf_name(&t.name)
                .ok_or_else(|| format!("llama.cpp has no name for tensor '{}'", t.name))?;
            if CONV1D.iter().any(|s| t.name.ends_with(s)) {
                let [rows, cols] = t.shape[..] else {
                    return Err(format!("{} is not 2-D", t.name));
                };
                let v = Values::Transposed(t.index);
                return Ok(Some(OutTensor::values(name, vec![cols, rows], v)));
            }
            Ok(Some(OutTensor::values(
                name,
                t.shape.clone(),
                Values::Hf(t.index),
            )))
        })
    }

    fn hparams(&self, cfg: &Config, kv: &mut Kv, file_type: u32) {
        let p = |k: &str| format!("gpt2.{k}");
        let n = |keys: &[&str]| cfg.u64(keys).unwrap_or(0) as u32;
        kv.u32(
            &p("block_count"),
            n(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"]),
        );
        kv.u32(&p("context_length"), n(&["n_ctx"]));
        let embd = n(&["n_embd"]);
        kv.u32(&p("embedding_length"), embd);
        kv.u32(&p("feed_forward_length"), 4 * embd);
        kv.u32(&p("attention.head_count"), n(&["n_head"]));
        let eps = cfg.f64(&["layer_norm_epsilon"]).unwrap_or(1e-5);
        kv.f32(&p("attention.layer_norm_epsilon"), eps as f32);
        kv.u32("general.file_type", file_type);
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
    use serde_json::json;

    fn hf(names: &[(&str, &[u64])]) -> Vec<HfTensor> {
        names
            .iter()
            .enumerate()
            .map(|(i, (n, s))| HfTensor {
                index: i as u32,
                name: n.to_string(),
                shape: s.to_vec(),
                dtype: Dtype::F32,
                file: "model.safetensors".into(),
                mxfp4: None,
            })
            .collect()
    }

    #[test]
    fn names_with_and_without_prefix() {
        for p in ["", "transformer."] {
            let n = |s: &str| gguf_name(&format!("{p}{s}"));
            assert_eq!(n("wte.weight").as_deref(), Some("token_embd.weight"));
            assert_eq!(n("wpe.weight").as_deref(), Some("position_embd.weight"));
            assert_eq!(n("ln_f.bias").as_deref(), Some("output_norm.bias"));
            assert_eq!(
                n("h.3.ln_1.weight").as_deref(),
                Some("blk.3.attn_norm.weight")
            );
            assert_eq!(
                n("h.0.attn.c_attn.bias").as_deref(),
                Some("blk.0.attn_qkv.bias")
            );
            assert_eq!(
                n("h.11.attn.c_proj.weight").as_deref(),
                Some("blk.11.attn_output.weight")
            );
            assert_eq!(
                n("h.0.ln_2.weight").as_deref(),
                Some("blk.0.ffn_norm.weight")
            );
            assert_eq!(
                n("h.0.mlp.c_fc.weight").as_deref(),
                Some("blk.0.ffn_up.weight")
            );
            assert_eq!(
                n("h.0.mlp.c_proj.bias").as_deref(),
                Some("blk.0.ffn_down.bias")
            );
            assert_eq!(n("h.0.attn.bias"), None);
        }
        assert_eq!(
            gguf_name("lm_head.weight").as_deref(),
            Some("output.weight")
        );
    }

    #[test]
    fn tensors_transposed_and_masks_skipped() {
        let cfg = GPT2.config(&json!({"model_type": "gpt2", "n_ctx": 256, "n_embd": 64}));
        let t = hf(&[
            ("h.0.attn.bias", &[1, 1, 256, 256]),
            ("h.0.attn.c_attn.weight", &[64, 192]),
            ("h.0.attn.masked_bias", &[]),
            ("h.0.mlp.c_fc.bias", &[256]),
            ("wpe.weight", &[256, 64]),
        ]);
        let out = GPT2.tensors(&cfg, &t, &NoFiles).unwrap();
        let names: Vec<_> = out.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "blk.0.attn_qkv.weight",
                "blk.0.ffn_up.bias",
                "position_embd.weight"
            ]
        );
        assert_eq!(out[0].shape, [192, 64]);
        assert!(matches!(
            out[0].data,
            crate::view::gguf::tensors::Data::Values(Values::Transposed(1))
        ));
        let err = GPT2.tensors(&GPT2.config(&json!({"n_embd": 64})), &t, &NoFiles);
        assert!(err.unwrap_err().contains("n_ctx"));
        let unknown = hf(&[("h.0.attn.rotary.weight", &[4])]);
        assert!(GPT2.tensors(&cfg, &unknown, &NoFiles).is_err());
    }

    #[test]
    fn keys() {
        let cfg = GPT2.config(
            &json!({"n_ctx": 256, "n_embd": 64, "n_head": 4, "n_layer": 2,
            "n_inner": 1000}),
        );
        let mut kv = Kv::new();
        GPT2.hparams(&cfg, &mut kv, 1);
        let u = |k: &str| match kv.get(k) {
            Some(GgufValue::U32(v)) => *v,
            v => panic!("{k}: {v:?}"),
        };
        assert_eq!(u("gpt2.block_count"), 2);
        assert_eq!(u("gpt2.context_length"), 256);
        assert_eq!(u("gpt2.embedding_length"), 64);
        assert_eq!(u("gpt2.feed_forward_length"), 256);
        assert_eq!(u("gpt2.attention.head_count"), 4);
        assert_eq!(u("general.file_type"), 1);
        assert!(matches!(
            kv.get("gpt2.attention.layer_norm_epsilon"),
            Some(GgufValue::F32(e)) if *e == 1e-5f32
        ));
        assert_eq!(kv.len(), 7);
        // Class defaults for what config.json leaves out.
        let mut kv = Kv::new();
        GPT2.hparams(&GPT2.config(&json!({"n_ctx": 1024})), &mut kv, 0);
        assert!(matches!(
            kv.get("gpt2.block_count"),
            Some(GgufValue::U32(12))
        ));
        assert!(matches!(
            kv.get("gpt2.feed_forward_length"),
            Some(GgufValue::U32(3072))
        ));
    }
}
