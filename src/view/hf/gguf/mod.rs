//! GGUF models as Hugging Face model folders: the mapping.
//!
//! The third family mapping beside `gpt_oss` and `nanogpt`: pure functions
//! from a GGUF source's metadata and tensor list to the Hugging Face model it
//! is ([`HfModel`]: `config.json`, tokenizer files, state-dict names, shapes
//! and the [`Op`] that computes each tensor from GGUF tensors), the way
//! transformers' own GGUF loader (`from_pretrained(dir, gguf_file=...)`,
//! transformers 5.24) reads it. Where that loader is wrong for an
//! architecture, the result is what the Hugging Face model class expects
//! (docs/GGUF.md, "As a Hugging Face model", lists each place).
//!
//! A GGUF that is not a complete model of its architecture (`complete`) is
//! not mapped; one that is, with tensors the tables do not place
//! (`rope_freqs.weight`, ...), keeps those under their GGUF names
//! ([`HfModel::kept`]), beside the model.
//!
//! Data, not code per architecture: `config` holds the metadata-key tables,
//! `tensors` the name tables with a [`tensors::Rule`] per row, `tokenizer`
//! the tokenizer families. No I/O, no tensor bytes: the view decides what to
//! compute, [`Op::apply`] is the reference for how.

pub mod complete;
pub mod config;
pub mod error;
pub mod ops;
pub mod tensors;
pub mod tokenizer;

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::catalog::gguf::GgufMetadata;
use crate::quant::ggml::{GgmlType, can_dequantize};
use crate::view::compute::MAX_TRANSPOSED_ROW;
pub use error::{GgufHfError, OpError};
pub use ops::{Input, Op};
use tensors::{Rule, Table};

/// One GGUF tensor as the mapping needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// Logical shape, numpy order (the reverse of ggml's `ne`).
    pub shape: Vec<u64>,
    pub ty: GgmlType,
}

/// The Hugging Face model a GGUF source is.
#[derive(Debug, Clone, PartialEq)]
pub struct HfModel {
    /// `config.json` without dtype keys (the view adds them).
    pub config: Value,
    /// `generation_config.json`, where the metadata gives token ids.
    pub generation_config: Option<Value>,
    /// The names of the tokenizer files (`tokenizer.json`,
    /// `tokenizer_config.json`, `chat_template.jinja` where there is a
    /// template): each is built from the metadata when asked for
    /// ([`HfModel::build_file`]), not at mount.
    pub files: Vec<&'static str>,
    /// The architecture after the loader's renames, and the GGUF one (what
    /// the tokenizer files are built for).
    pub arch: (String, String),
    /// The state dict: GGUF order, a concatenation at its first source.
    pub tensors: Vec<HfTensor>,
    /// GGUF tensors with no Hugging Face counterpart, in GGUF order: not in
    /// the model (transformers leaves them out), kept under their GGUF
    /// names beside it.
    pub kept: Vec<String>,
    /// What was left out or decided, one line each.
    pub notes: Vec<String>,
}

impl HfModel {
    /// Tokenizer file `name` (one of [`HfModel::files`]) of the model made
    /// from `meta`, allocating at most [`tokenizer::budget`] on the way.
    pub fn build_file(&self, meta: &GgufMetadata, name: &str) -> Result<String, GgufHfError> {
        let (updated, arch) = &self.arch;
        tokenizer::build(meta, updated, arch, name, tokenizer::budget(meta))
    }

    /// Every tokenizer file, built (tests compare them).
    pub fn built_files(&self, meta: &GgufMetadata) -> Result<Vec<(String, String)>, GgufHfError> {
        self.files
            .iter()
            .map(|n| Ok((n.to_string(), self.build_file(meta, n)?)))
            .collect()
    }
}

/// One tensor of the state dict.
#[derive(Debug, Clone, PartialEq)]
pub struct HfTensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub op: Op,
}

/// The Hugging Face model a GGUF source is, or why not (among the reasons:
/// it is not a complete model of its architecture, `complete`).
pub fn map(meta: &GgufMetadata, tensors: &[GgufTensorInfo]) -> Result<HfModel, GgufHfError> {
    let model = map_tensors(meta, tensors)?;
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    let (arch, _) = config::architecture(meta)?;
    complete::check(meta, &arch, &names)?;
    Ok(model)
}

/// [`map`] without the completeness check: the mapping of whatever tensors
/// there are.
fn map_tensors(meta: &GgufMetadata, tensors: &[GgufTensorInfo]) -> Result<HfModel, GgufHfError> {
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    let (config, _) = config::config(meta, &names)?;
    let (arch, updated) = config::architecture(meta)?;
    let table = tensors::table(&updated)
        .ok_or_else(|| GgufHfError::NoTensorTable { arch: arch.clone() })?;
    check_supported(&updated, &config, &names)?;
    let mut notes = Vec::new();
    let mut kept = Vec::new();
    let state_dict =
        StateDict::new(tensors, &config, &arch, &updated).tensors(table, &mut notes, &mut kept)?;
    if let Some(t) = kept
        .iter()
        .find(|k| state_dict.iter().any(|t| &&t.name == k))
    {
        return Err(GgufHfError::KeptNameTaken { tensor: t.clone() });
    }
    if config.get("tie_word_embeddings") == Some(&Value::Bool(true))
        && !names.contains(&"output.weight")
    {
        notes.push(
            "no output.weight: lm_head is tied to the token embedding (tie_word_embeddings)".into(),
        );
    }

    // A model without its tokenizer is still a model (transformers loads
    // one from such a GGUF too): the folder then has no tokenizer files.
    let files = tokenizer::file_names(meta, &arch).unwrap_or_else(|why| {
        notes.push(format!("no tokenizer files: {why}"));
        Vec::new()
    });
    let generation_config = generation_config(&config);
    Ok(HfModel {
        config: Value::Object(config),
        generation_config,
        files,
        arch: (updated, arch),
        tensors: state_dict,
        kept,
        notes,
    })
}

/// Refuse the variants of an architecture (`updated`: after the loader's
/// renames) that transformers cannot load from GGUF (Falcon-40B/180B), or
/// would load without some of their weights (StableLM 2 12B).
fn check_supported(
    updated: &str,
    config: &Map<String, Value>,
    names: &[&str],
) -> Result<(), GgufHfError> {
    if updated == "falcon" {
        falcon_supported(config, names)?;
    }
    if updated == "stablelm"
        && names
            .iter()
            .any(|n| n.contains(".attn_q_norm.") || n.contains(".attn_k_norm."))
    {
        // llama.cpp stacks StableLM 2 12B's per-head q/k LayerNorms into one
        // [n_head, head_dim] tensor; the HF class holds one module per head
        // (`q_layernorm.norms.{h}`) and transformers' loader does not split
        // them: the model would load without them.
        return Err(GgufHfError::StableLmPerHeadNorms);
    }
    Ok(())
}

/// The GGUF tensors and what mapping them to the state dict needs besides
/// the name table.
struct StateDict<'a> {
    /// In GGUF order.
    tensors: &'a [GgufTensorInfo],
    by_name: HashMap<&'a str, &'a GgufTensorInfo>,
    /// The config (head counts).
    config: &'a Map<String, Value>,
    /// The architecture after the loader's renames.
    updated: &'a str,
    /// Undo llama.cpp's Q/K row permutation: for the GGUF architecture
    /// "llama" only, as transformers' TENSOR_PROCESSORS is keyed (mistral
    /// files say "llama").
    unpermute: bool,
}

impl<'a> StateDict<'a> {
    /// The state dict of `tensors` for GGUF architecture `arch` (`updated`
    /// after the loader's renames) with `config`.
    fn new(
        tensors: &'a [GgufTensorInfo],
        config: &'a Map<String, Value>,
        arch: &str,
        updated: &'a str,
    ) -> StateDict<'a> {
        StateDict {
            tensors,
            by_name: tensors.iter().map(|t| (t.name.as_str(), t)).collect(),
            config,
            updated,
            unpermute: arch == "llama",
        }
    }

    /// The Hugging Face tensors, in GGUF order (a concatenation at its first
    /// source); a GGUF tensor without a counterpart goes to `kept`, with a
    /// note.
    fn tensors(
        &self,
        table: Table,
        notes: &mut Vec<String>,
        kept: &mut Vec<String>,
    ) -> Result<Vec<HfTensor>, GgufHfError> {
        let mut out: Vec<HfTensor> = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        for t in self.tensors {
            let Some((hf, rule)) = tensors::lookup(table, &t.name) else {
                notes.push(self.left_out(t)?);
                kept.push(t.name.clone());
                continue;
            };
            let Some((op, shape)) = self.op(t, rule)? else {
                continue;
            };
            let shape = self.checked_shape(&hf, t, &op, shape)?;
            if let Some(prev) = seen.insert(hf.clone(), t.name.clone()) {
                return Err(GgufHfError::DuplicateTarget {
                    first: prev,
                    second: t.name.clone(),
                    hf,
                });
            }
            out.push(HfTensor {
                name: hf,
                shape,
                op,
            });
        }
        Ok(out)
    }

    /// The note for `t`, which has no Hugging Face counterpart; an error if
    /// it holds experts.
    fn left_out(&self, t: &GgufTensorInfo) -> Result<String, GgufHfError> {
        // Leaving out a layer's experts would leave a model without its
        // FFN (llama.cpp writes Mixtral as 'llama' with experts, which
        // transformers cannot load from GGUF).
        if t.name.contains("_exps.") {
            return Err(GgufHfError::UnplacedExperts {
                tensor: t.name.clone(),
                arch: self.updated.to_string(),
            });
        }
        Ok(format!(
            "GGUF tensor '{}' has no Hugging Face counterpart: not in the model files \
             (transformers leaves it out); kept under its GGUF name in tensors/",
            t.name
        ))
    }

    /// The op that makes a Hugging Face tensor from `t` by `rule`, and that
    /// tensor's shape if the op is `Same` (`t`'s, or a reshape of it);
    /// `None` for the up half of a gate|up pair, made with its gate.
    fn op(&self, t: &GgufTensorInfo, rule: Rule) -> Result<Option<(Op, Vec<u64>)>, GgufHfError> {
        let weight = t.name.ends_with(".weight");
        let source = t.name.clone();
        let op = match rule {
            Rule::Same => Op::Same { source },
            Rule::UnpermuteQ | Rule::UnpermuteK if self.unpermute => {
                let n = if rule == Rule::UnpermuteQ {
                    self.n_head()?
                } else {
                    self.n_kv()?
                };
                Op::UnpermuteRows { source, n_head: n }
            }
            Rule::UnpermuteQ | Rule::UnpermuteK => Op::Same { source },
            Rule::MinusOne if weight => Op::AddScalar {
                source,
                value: -1.0,
            },
            Rule::MinusOne => Op::Same { source },
            Rule::TransposeWeight if weight => Op::Transpose { source },
            Rule::TransposeWeight => Op::Same { source },
            // the up half of a gate|up pair: made with its gate, which must
            // exist
            Rule::ExpertsUp | Rule::InterleaveUp => {
                partner(&t.name, ".ffn_up_exps.", ".ffn_gate_exps.", &self.by_name)?;
                return Ok(None);
            }
            Rule::ExpertsGate | Rule::InterleaveGate => {
                let up = partner(&t.name, ".ffn_gate_exps.", ".ffn_up_exps.", &self.by_name)?;
                let sources = vec![source, up];
                match rule {
                    Rule::ExpertsGate => Op::Concat { sources, axis: 1 },
                    _ => Op::Interleave {
                        sources,
                        transpose: weight,
                    },
                }
            }
            Rule::AddLeadingAxis if t.shape.len() == 1 => {
                return Ok(Some((Op::Same { source }, [&[1], &t.shape[..]].concat())));
            }
            Rule::AddLeadingAxis => Op::Same { source },
        };
        Ok(Some((op, t.shape.clone())))
    }

    /// `num_attention_heads`.
    fn n_head(&self) -> Result<u64, GgufHfError> {
        config::get_u64(self.config, "num_attention_heads")
    }

    /// `num_key_value_heads`, or `num_attention_heads` where absent.
    fn n_kv(&self) -> Result<u64, GgufHfError> {
        match self.config.get("num_key_value_heads") {
            Some(_) => config::get_u64(self.config, "num_key_value_heads"),
            None => self.n_head(),
        }
    }

    /// The shape of Hugging Face tensor `hf`, made from `t` by `op`
    /// (`same_shape`: its shape if `op` is `Same`), once checked that every
    /// source is there and convertible, that the shapes fit `op`, and that
    /// the lazy view can compute it.
    fn checked_shape(
        &self,
        hf: &str,
        t: &GgufTensorInfo,
        op: &Op,
        same_shape: Vec<u64>,
    ) -> Result<Vec<u64>, GgufHfError> {
        let mut shapes = Vec::new();
        for s in op.sources() {
            let info = self
                .by_name
                .get(s)
                .ok_or_else(|| GgufHfError::MissingTensor { tensor: s.into() })?;
            if !can_dequantize(info.ty) {
                return Err(GgufHfError::Unconvertible {
                    tensor: s.into(),
                    ty: info.ty,
                });
            }
            shapes.push(info.shape.as_slice());
        }
        let computed = op
            .out_shape(&shapes)
            .map_err(|source| GgufHfError::BadShape {
                hf: hf.into(),
                tensor: t.name.clone(),
                source,
            })?;
        check_op(op, &computed, &self.by_name, hf, &t.name)?;
        Ok(if matches!(op, Op::Same { .. }) {
            same_shape
        } else {
            computed
        })
    }
}

/// The name of `name`'s partner tensor (`from` replaced by `to`), which the
/// file must have.
fn partner(
    name: &str,
    from: &str,
    to: &str,
    by_name: &HashMap<&str, &GgufTensorInfo>,
) -> Result<String, GgufHfError> {
    let other = name.replace(from, to);
    match by_name.contains_key(other.as_str()) {
        true => Ok(other),
        false => Err(GgufHfError::NoPartner {
            tensor: name.into(),
            partner: other,
        }),
    }
}

/// What the lazy implementation of `op` needs beyond its shapes: sources of
/// one ggml type when there are several (a Gyro record names one
/// dequantization for all), and transposed rows of bounded length. `op`
/// makes Hugging Face tensor `hf` from GGUF tensor `tensor` (for errors).
fn check_op(
    op: &Op,
    out: &[u64],
    by_name: &HashMap<&str, &GgufTensorInfo>,
    hf: &str,
    tensor: &str,
) -> Result<(), GgufHfError> {
    let types: Vec<GgmlType> = op
        .sources()
        .iter()
        .filter_map(|s| by_name.get(s).map(|i| i.ty))
        .collect();
    if types.windows(2).any(|w| w[0] != w[1]) {
        return Err(GgufHfError::MixedTypes {
            hf: hf.into(),
            tensor: tensor.into(),
            types,
        });
    }
    let transposes = matches!(
        op,
        Op::Transpose { .. }
            | Op::Interleave {
                transpose: true,
                ..
            }
    );
    if let Some(&len) = out
        .last()
        .filter(|&&n| transposes && n > MAX_TRANSPOSED_ROW)
    {
        return Err(GgufHfError::RowTooLong {
            hf: hf.into(),
            tensor: tensor.into(),
            len,
        });
    }
    Ok(())
}

/// Falcon-40B/180B's "new decoder architecture" (several KV heads, a second
/// LayerNorm per block): llama.cpp rearranges its fused QKV into q | k | v
/// (`tensor_data_layout: jploski`), and transformers' GGUF loader neither
/// undoes that nor sets `new_decoder_architecture` and `num_kv_heads`, so it
/// cannot load these files; they keep their GGUF names.
fn falcon_supported(config: &Map<String, Value>, names: &[&str]) -> Result<(), GgufHfError> {
    let kv = match config.get("num_key_value_heads") {
        None => 1,
        // a per-layer array, or anything else, is not Falcon-7B's layout
        Some(v) => v.as_u64().unwrap_or(u64::MAX),
    };
    if kv > 1 || names.iter().any(|n| n.contains(".attn_norm_2.")) {
        return Err(GgufHfError::FalconNewDecoder { kv_heads: kv });
    }
    Ok(())
}

/// `generation_config.json` from the token ids the config has, if any.
fn generation_config(config: &Map<String, Value>) -> Option<Value> {
    let mut g = Map::new();
    for key in ["bos_token_id", "eos_token_id", "pad_token_id"] {
        if let Some(v) = config.get(key) {
            g.insert(key.into(), v.clone());
        }
    }
    (!g.is_empty()).then_some(Value::Object(g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::gguf::GgufValue;

    /// Metadata written as JSON, typed.
    fn typed(json: &Value) -> GgufMetadata {
        let entries = json
            .as_object()
            .expect("an object")
            .iter()
            .map(|(k, v)| (k.clone(), GgufValue::from_json(v).expect("a GGUF value")))
            .collect();
        GgufMetadata::new(entries)
    }
    use serde_json::json;

    fn t(name: &str, shape: &[u64]) -> GgufTensorInfo {
        GgufTensorInfo {
            name: name.into(),
            shape: shape.to_vec(),
            ty: GgmlType::F32,
        }
    }

    fn llama_meta() -> Value {
        json!({
            "general.architecture": "llama",
            "llama.attention.head_count": 2, "llama.attention.head_count_kv": 1,
            "llama.embedding_length": 8, "llama.block_count": 1,
            "llama.attention.layer_norm_rms_epsilon": 0.00001,
            "tokenizer.ggml.model": "llama",
            "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>", "a", "b", "ab"],
            "tokenizer.ggml.scores": [0.0, 0.0, 0.0, -1.0, -2.0, -0.5],
            "tokenizer.ggml.token_type": [2, 3, 3, 1, 1, 1],
            "tokenizer.ggml.bos_token_id": 1,
        })
    }

    #[test]
    fn ops_the_view_cannot_serve_are_refused() {
        let moe = |up: GgmlType, i: u64| {
            let meta = json!({
                "general.architecture": "qwen3moe",
                "qwen3moe.attention.head_count": 2, "qwen3moe.embedding_length": 8,
                "qwen3moe.block_count": 1,
            });
            let mut up_t = t("blk.0.ffn_up_exps.weight", &[2, i, 8]);
            up_t.ty = up;
            map_tensors(
                &typed(&meta),
                &[t("blk.0.ffn_gate_exps.weight", &[2, i, 8]), up_t],
            )
        };
        assert!(moe(GgmlType::F32, 4).is_ok());
        let err = moe(GgmlType::F16, 4).unwrap_err().to_string();
        assert!(err.contains("different ggml types"), "{err}");
        // gpt2's Conv1D transposes: a row of 2^20 + 1 elements is refused
        let gpt2 = json!({
            "general.architecture": "gpt2", "gpt2.attention.head_count": 1,
            "gpt2.embedding_length": 8, "gpt2.block_count": 1,
        });
        let ok = [t("blk.0.ffn_up.weight", &[MAX_TRANSPOSED_ROW, 8])];
        assert!(map_tensors(&typed(&gpt2), &ok).is_ok());
        let long = [t("blk.0.ffn_up.weight", &[MAX_TRANSPOSED_ROW + 1, 8])];
        let err = map_tensors(&typed(&gpt2), &long).unwrap_err().to_string();
        assert!(err.contains("transposed rows"), "{err}");
        // StableLM 2 12B's stacked per-head q/k norms
        let stablelm = json!({
            "general.architecture": "stablelm", "stablelm.attention.head_count": 2,
            "stablelm.embedding_length": 8, "stablelm.block_count": 1,
        });
        let err = map_tensors(&typed(&stablelm), &[t("blk.0.attn_q_norm.weight", &[2, 4])])
            .unwrap_err()
            .to_string();
        assert!(err.contains("per-head q/k LayerNorms"), "{err}");
    }

    #[test]
    fn falcon_new_decoder_architecture_is_not_mapped() {
        let meta = |kv: u64| {
            json!({
                "general.architecture": "falcon",
                "falcon.attention.head_count": 4, "falcon.attention.head_count_kv": kv,
                "falcon.embedding_length": 8, "falcon.block_count": 1,
            })
        };
        let one = [
            t("token_embd.weight", &[6, 8]),
            t("blk.0.attn_norm.weight", &[8]),
            t("blk.0.attn_qkv.weight", &[12, 8]),
        ];
        let m = map_tensors(&typed(&meta(1)), &one).unwrap();
        assert_eq!(
            m.tensors[2].name,
            "transformer.h.0.self_attention.query_key_value.weight"
        );
        let err = map_tensors(&typed(&meta(2)), &one).unwrap_err().to_string();
        assert!(err.contains("new decoder architecture"), "{err}");
        let two_norms = [t("blk.0.attn_norm_2.weight", &[8])];
        assert!(map_tensors(&typed(&meta(1)), &two_norms).is_err());
    }

    #[test]
    fn small_llama() {
        let tensors = [
            t("token_embd.weight", &[6, 8]),
            t("blk.0.attn_q.weight", &[8, 8]),
            t("blk.0.attn_k.weight", &[4, 8]),
            t("rope_freqs.weight", &[4]),
        ];
        let meta = typed(&llama_meta());
        let m = map_tensors(&meta, &tensors).unwrap();
        assert_eq!(m.config["rms_norm_eps"], json!(0.00001f32 as f64));
        assert_eq!(m.config["tie_word_embeddings"], json!(true));
        assert_eq!(
            m.tensors[1].op,
            Op::UnpermuteRows {
                source: "blk.0.attn_q.weight".into(),
                n_head: 2
            }
        );
        assert_eq!(
            m.tensors[2].op,
            Op::UnpermuteRows {
                source: "blk.0.attn_k.weight".into(),
                n_head: 1
            }
        );
        assert_eq!(m.tensors.len(), 3);
        assert!(m.notes.iter().any(|n| n.contains("rope_freqs")));
        let tok: Value = serde_json::from_str(&m.build_file(&meta, m.files[0]).unwrap()).unwrap();
        assert_eq!(tok["model"]["merges"], json!([["a", "b"]]));
    }

    /// `map` of a complete 1-block llama plus `extra`, with the metadata's
    /// block count `blocks`.
    fn llama_with(blocks: u64, extra: &[GgufTensorInfo]) -> Result<HfModel, GgufHfError> {
        let mut meta = llama_meta();
        meta["llama.block_count"] = json!(blocks);
        let mut tensors = vec![
            t("token_embd.weight", &[6, 8]),
            t("output_norm.weight", &[8]),
            t("blk.0.attn_q.weight", &[8, 8]),
            t("blk.0.attn_k.weight", &[4, 8]),
            t("blk.0.attn_v.weight", &[4, 8]),
            t("blk.0.attn_output.weight", &[8, 8]),
            t("blk.0.ffn_down.weight", &[8, 16]),
        ];
        tensors.extend_from_slice(extra);
        map(&typed(&meta), &tensors)
    }

    #[test]
    fn unplaced_tensors_are_kept_and_incomplete_models_not_mapped() {
        let m = llama_with(1, &[t("rope_freqs.weight", &[4])]).unwrap();
        assert_eq!(m.kept, ["rope_freqs.weight"]);
        assert_eq!(m.tensors.len(), 7);
        assert!(
            m.notes
                .iter()
                .any(|n| n.contains("kept under its GGUF name"))
        );
        let err = llama_with(2, &[]).unwrap_err().to_string();
        assert_eq!(
            err,
            "not a complete 'llama' model: llama.block_count is 2, but block 1 has no tensors"
        );
        // A kept tensor whose name is a mapped one's would be two tensors
        // under one name.
        let err = llama_with(
            1,
            &[t("lm_head.weight", &[6, 8]), t("output.weight", &[6, 8])],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("'lm_head.weight'"), "{err}");
    }

    /// A vocabulary of every prefix of one long token (a few KB of
    /// metadata) has merges whose text grows with the cube of its length:
    /// building `tokenizer.json` stops at the budget with one line, and the
    /// mapping itself (at mount) does not build it.
    #[test]
    fn a_tokenizer_beyond_its_budget_is_refused_when_built() {
        const L: usize = 400;
        let tokens: Vec<String> = (1..=L).map(|k| "\u{1}".repeat(k)).collect();
        let mut meta = llama_meta();
        meta["tokenizer.ggml.tokens"] = json!(tokens);
        meta["tokenizer.ggml.scores"] = json!(vec![0.0; L]);
        meta["tokenizer.ggml.token_type"] = json!(vec![1; L]);
        let meta = typed(&meta);
        assert!(meta.encoded_len() < 100_000);
        let started = std::time::Instant::now();
        let m = map_tensors(&meta, &[t("token_embd.weight", &[6, 8])]).unwrap();
        assert_eq!(m.files, ["tokenizer.json", "tokenizer_config.json"]);
        let e = m.build_file(&meta, "tokenizer.json").unwrap_err();
        assert!(
            matches!(e, GgufHfError::TokenizerTooBig { limit, .. } if limit == tokenizer::BUDGET_FLOOR),
            "{e}"
        );
        assert!(
            e.to_string().starts_with("tokenizer.json: not built"),
            "{e}"
        );
        // The small file is still made.
        assert!(m.build_file(&meta, "tokenizer_config.json").is_ok());
        assert!(started.elapsed().as_secs() < 30);
    }

    #[test]
    fn hostile_metadata_is_an_error_not_a_panic() {
        let ok = [t("token_embd.weight", &[6, 8])];
        let cases: Vec<(Value, &str)> = vec![
            (json!({}), "no general.architecture"),
            (json!({"general.architecture": 7}), "not a string"),
            (json!({"general.architecture": "mamba9"}), "cannot load it"),
            (json!({"general.architecture": "t5"}), "cannot load it"),
        ];
        for (meta, want) in cases {
            let e = map_tensors(&typed(&meta), &ok).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        // A broken or missing tokenizer leaves the tokenizer files out.
        let mut bad = llama_meta();
        bad["tokenizer.ggml.tokens"] = json!([1, 2]);
        let m = map_tensors(&typed(&bad), &ok).unwrap();
        assert!(m.files.is_empty());
        assert!(
            m.notes.iter().any(|n| n.contains("tokens")),
            "{:?}",
            m.notes
        );
        let mut none = llama_meta();
        none.as_object_mut()
            .unwrap()
            .retain(|k, _| !k.starts_with("tokenizer."));
        let m = map_tensors(&typed(&none), &ok).unwrap();
        assert!(m.files.is_empty() && m.generation_config.is_none());
        assert!(
            m.notes
                .iter()
                .any(|n| n.contains("no tokenizer.ggml.model"))
        );
        let mut bad = llama_meta();
        bad["tokenizer.ggml.bos_token_id"] = json!(1u64 << 40);
        let m = map_tensors(&typed(&bad), &ok).unwrap();
        assert!(
            m.notes.iter().any(|n| n.contains("past the")),
            "{:?}",
            m.notes
        );
        // llama with experts (Mixtral as llama.cpp writes it) is no llama.
        let exps = [t("blk.0.ffn_up_exps.weight", &[2, 8, 8])];
        assert!(
            map_tensors(&typed(&llama_meta()), &exps)
                .unwrap_err()
                .to_string()
                .contains("experts")
        );
        let mut bad = llama_meta();
        bad["llama.attention.head_count"] = json!("many");
        let q = [t("blk.0.attn_q.weight", &[8, 8])];
        assert!(
            map_tensors(&typed(&bad), &q)
                .unwrap_err()
                .to_string()
                .contains("num_attention_heads")
        );
        let mut bad = llama_meta();
        bad["llama.attention.head_count"] = json!(3);
        assert!(
            map_tensors(&typed(&bad), &q)
                .unwrap_err()
                .to_string()
                .contains("not a multiple")
        );
        let mut bad = llama_meta();
        bad["llama.attention.head_count"] = json!(0);
        assert!(map_tensors(&typed(&bad), &q).is_err());
        let int = [GgufTensorInfo {
            name: "token_embd.weight".into(),
            shape: vec![6, 8],
            ty: GgmlType::I32,
        }];
        assert!(
            map_tensors(&typed(&llama_meta()), &int)
                .unwrap_err()
                .to_string()
                .contains("I32")
        );
        let moe = json!({"general.architecture": "qwen3moe", "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.merges": []});
        let lone = [t("blk.0.ffn_gate_exps.weight", &[2, 4, 8])];
        assert!(
            map_tensors(&typed(&moe), &lone)
                .unwrap_err()
                .to_string()
                .contains("no matching")
        );
        let dup = [
            t("blk.0.ffn_gate.weight", &[2, 4]),
            t("blk.0.ffn_gate.weight", &[2, 4]),
        ];
        assert!(
            map_tensors(&typed(&moe), &dup)
                .unwrap_err()
                .to_string()
                .contains("both map")
        );
    }
}
