//! GGUF tensor names -> Hugging Face state-dict names, one table per family.
//!
//! The tables are the inverse of what transformers' GGUF loader looks up
//! (`get_gguf_hf_weights_map`: gguf-py's `get_tensor_name_map(arch)` run over
//! the HF model's own state dict) for the modules each family has. Rows name
//! a module without its `.weight` / `.bias` leaf, which carries over.
//! `{N}` is the block number; an HF name ending in `$` is a parameter
//! without a leaf (the fused MoE experts: `mlp.experts.gate_up_proj`), taken
//! from the GGUF `.weight` tensor; one ending in `$+` is such a parameter
//! whose bias is the parameter named with `_bias` appended (gpt-oss:
//! `mlp.experts.down_proj` and `mlp.experts.down_proj_bias`). What a row's
//! tensor undergoes besides the rename is its [`Rule`].

/// What happens to a matched tensor besides the rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Values as they are.
    Same,
    /// llama.cpp's Q permutation undone with `num_attention_heads` (llama).
    UnpermuteQ,
    /// llama.cpp's K permutation undone with `num_key_value_heads` (llama).
    UnpermuteK,
    /// `w - 1` (norms llama.cpp stores as `w + 1`: gemma2, gemma3, nemotron).
    MinusOne,
    /// `.weight`'s last two axes swapped (GPT-2 Conv1D; gpt-oss's
    /// `ffn_down_exps`); `.bias` as it is.
    TransposeWeight,
    /// First half of `gate_up_proj`: concatenated with the matching
    /// `ffn_up_exps` along axis 1 (qwen2_moe, qwen3_moe).
    ExpertsGate,
    /// Second half of `gate_up_proj` (consumed by [`Rule::ExpertsGate`]).
    ExpertsUp,
    /// A `[n]` vector as `[1, n]` (qwen2_moe's `shared_expert_gate`).
    AddLeadingAxis,
    /// gpt-oss `gate_up_proj`: interleaved with the matching `ffn_up_exps`
    /// along the last axis (gate first), `.weight`s transposed first.
    InterleaveGate,
    /// The up half of gpt-oss's `gate_up_proj` (consumed by
    /// [`Rule::InterleaveGate`]).
    InterleaveUp,
}

type Row = (&'static str, &'static str, Rule);

/// A family's table: pieces of rows, searched in order.
pub type Table = &'static [&'static [Row]];

use Rule::*;

// Pieces most families share.

#[rustfmt::skip]
const EMBED_HEAD: &[Row] = &[
    ("token_embd", "model.embed_tokens", Same),
    ("output_norm", "model.norm", Same),
    ("output", "lm_head", Same),
];

#[rustfmt::skip]
const NORMS: &[Row] = &[
    ("blk.{N}.attn_norm", "model.layers.{N}.input_layernorm", Same),
    ("blk.{N}.ffn_norm", "model.layers.{N}.post_attention_layernorm", Same),
];

#[rustfmt::skip]
const ATTN: &[Row] = &[
    ("blk.{N}.attn_q", "model.layers.{N}.self_attn.q_proj", Same),
    ("blk.{N}.attn_k", "model.layers.{N}.self_attn.k_proj", Same),
    ("blk.{N}.attn_v", "model.layers.{N}.self_attn.v_proj", Same),
    ("blk.{N}.attn_output", "model.layers.{N}.self_attn.o_proj", Same),
];

#[rustfmt::skip]
const QK_NORM: &[Row] = &[
    ("blk.{N}.attn_q_norm", "model.layers.{N}.self_attn.q_norm", Same),
    ("blk.{N}.attn_k_norm", "model.layers.{N}.self_attn.k_norm", Same),
];

/// The gated MLP (also the dense layers of a partly-MoE model:
/// `mlp_only_layers`, `decoder_sparse_step`).
#[rustfmt::skip]
const MLP: &[Row] = &[
    ("blk.{N}.ffn_gate", "model.layers.{N}.mlp.gate_proj", Same),
    ("blk.{N}.ffn_up", "model.layers.{N}.mlp.up_proj", Same),
    ("blk.{N}.ffn_down", "model.layers.{N}.mlp.down_proj", Same),
];

// Family-specific pieces.

/// llama.cpp permutes llama's Q and K rows (transformers undoes it).
#[rustfmt::skip]
const LLAMA_ATTN: &[Row] = &[
    ("blk.{N}.attn_q", "model.layers.{N}.self_attn.q_proj", UnpermuteQ),
    ("blk.{N}.attn_k", "model.layers.{N}.self_attn.k_proj", UnpermuteK),
    ("blk.{N}.attn_v", "model.layers.{N}.self_attn.v_proj", Same),
    ("blk.{N}.attn_output", "model.layers.{N}.self_attn.o_proj", Same),
];

#[rustfmt::skip]
const MOE_EXPERTS: &[Row] = &[
    ("blk.{N}.ffn_gate_inp", "model.layers.{N}.mlp.gate", Same),
    ("blk.{N}.ffn_gate_exps", "model.layers.{N}.mlp.experts.gate_up_proj$", ExpertsGate),
    ("blk.{N}.ffn_up_exps", "model.layers.{N}.mlp.experts.gate_up_proj$", ExpertsUp),
    ("blk.{N}.ffn_down_exps", "model.layers.{N}.mlp.experts.down_proj$", Same),
    ("blk.{N}.ffn_gate_shexp", "model.layers.{N}.mlp.shared_expert.gate_proj", Same),
    ("blk.{N}.ffn_up_shexp", "model.layers.{N}.mlp.shared_expert.up_proj", Same),
    ("blk.{N}.ffn_down_shexp", "model.layers.{N}.mlp.shared_expert.down_proj", Same),
    ("blk.{N}.ffn_gate_inp_shexp", "model.layers.{N}.mlp.shared_expert_gate", AddLeadingAxis),
];

/// Gemma: every norm stored as `w + 1`, and four norms per block.
#[rustfmt::skip]
const GEMMA_NORMS: &[Row] = &[
    ("token_embd", "model.embed_tokens", Same),
    ("output_norm", "model.norm", MinusOne),
    ("output", "lm_head", Same),
    ("blk.{N}.attn_norm", "model.layers.{N}.input_layernorm", MinusOne),
    ("blk.{N}.attn_q_norm", "model.layers.{N}.self_attn.q_norm", MinusOne),
    ("blk.{N}.attn_k_norm", "model.layers.{N}.self_attn.k_norm", MinusOne),
    ("blk.{N}.post_attention_norm", "model.layers.{N}.post_attention_layernorm", MinusOne),
    ("blk.{N}.ffn_norm", "model.layers.{N}.pre_feedforward_layernorm", MinusOne),
    ("blk.{N}.post_ffw_norm", "model.layers.{N}.post_feedforward_layernorm", MinusOne),
];

/// Phi-3: fused QKV and gate|up, as the HF class holds them.
#[rustfmt::skip]
const PHI3_BLOCK: &[Row] = &[
    ("blk.{N}.attn_qkv", "model.layers.{N}.self_attn.qkv_proj", Same),
    ("blk.{N}.attn_output", "model.layers.{N}.self_attn.o_proj", Same),
    ("blk.{N}.ffn_up", "model.layers.{N}.mlp.gate_up_proj", Same),
    ("blk.{N}.ffn_down", "model.layers.{N}.mlp.down_proj", Same),
];

/// GPT-2: `transformer.*` names, Conv1D weights `[in, out]`.
#[rustfmt::skip]
const GPT2: &[Row] = &[
    ("token_embd", "transformer.wte", Same),
    ("position_embd", "transformer.wpe", Same),
    ("output_norm", "transformer.ln_f", Same),
    ("output", "lm_head", Same),
    ("blk.{N}.attn_norm", "transformer.h.{N}.ln_1", Same),
    ("blk.{N}.attn_qkv", "transformer.h.{N}.attn.c_attn", TransposeWeight),
    ("blk.{N}.attn_output", "transformer.h.{N}.attn.c_proj", TransposeWeight),
    ("blk.{N}.ffn_norm", "transformer.h.{N}.ln_2", Same),
    ("blk.{N}.ffn_up", "transformer.h.{N}.mlp.c_fc", TransposeWeight),
    ("blk.{N}.ffn_down", "transformer.h.{N}.mlp.c_proj", TransposeWeight),
];

/// StarCoder2: a two-matrix MLP (LayerNorms and biases everywhere: the
/// `.bias` leaves carry over).
#[rustfmt::skip]
const STARCODER2_MLP: &[Row] = &[
    ("blk.{N}.ffn_up", "model.layers.{N}.mlp.c_fc", Same),
    ("blk.{N}.ffn_down", "model.layers.{N}.mlp.c_proj", Same),
];

/// Nemotron: LayerNorm1P weights, stored by llama.cpp as `w + 1`; a
/// two-matrix MLP.
#[rustfmt::skip]
const NEMOTRON_NORMS_MLP: &[Row] = &[
    ("token_embd", "model.embed_tokens", Same),
    ("output_norm", "model.norm", MinusOne),
    ("output", "lm_head", Same),
    ("blk.{N}.attn_norm", "model.layers.{N}.input_layernorm", MinusOne),
    ("blk.{N}.ffn_norm", "model.layers.{N}.post_attention_layernorm", MinusOne),
    ("blk.{N}.ffn_up", "model.layers.{N}.mlp.up_proj", Same),
    ("blk.{N}.ffn_down", "model.layers.{N}.mlp.down_proj", Same),
];

/// gpt-oss (llama.cpp's `gpt-oss`): attention sinks, a router with a bias,
/// and the experts fused and interleaved as the Hugging Face class holds
/// them (biases as `*_bias` parameters: `$+`).
#[rustfmt::skip]
const GPT_OSS_BLOCK: &[Row] = &[
    ("blk.{N}.attn_norm", "model.layers.{N}.input_layernorm", Same),
    ("blk.{N}.post_attention_norm", "model.layers.{N}.post_attention_layernorm", Same),
    ("blk.{N}.attn_sinks", "model.layers.{N}.self_attn.sinks$", Same),
    ("blk.{N}.ffn_gate_inp", "model.layers.{N}.mlp.router", Same),
    ("blk.{N}.ffn_gate_exps", "model.layers.{N}.mlp.experts.gate_up_proj$+", InterleaveGate),
    ("blk.{N}.ffn_up_exps", "model.layers.{N}.mlp.experts.gate_up_proj$+", InterleaveUp),
    ("blk.{N}.ffn_down_exps", "model.layers.{N}.mlp.experts.down_proj$+", TransposeWeight),
];

/// Falcon (Falcon-7B's layout: one LayerNorm per block, fused QKV, which
/// llama.cpp leaves as it is for one KV head).
#[rustfmt::skip]
const FALCON: &[Row] = &[
    ("token_embd", "transformer.word_embeddings", Same),
    ("output_norm", "transformer.ln_f", Same),
    ("output", "lm_head", Same),
    ("blk.{N}.attn_norm", "transformer.h.{N}.input_layernorm", Same),
    ("blk.{N}.attn_qkv", "transformer.h.{N}.self_attention.query_key_value", Same),
    ("blk.{N}.attn_output", "transformer.h.{N}.self_attention.dense", Same),
    ("blk.{N}.ffn_up", "transformer.h.{N}.mlp.dense_h_to_4h", Same),
    ("blk.{N}.ffn_down", "transformer.h.{N}.mlp.dense_4h_to_h", Same),
];

/// The name table for an architecture (after the loader's renames), or
/// `None` where gyrofs has none yet.
pub fn table(updated_arch: &str) -> Option<Table> {
    Some(match updated_arch {
        "llama" | "mistral" => &[EMBED_HEAD, NORMS, LLAMA_ATTN, MLP],
        // stablelm: its norms are LayerNorms (a `.bias` beside each
        // `.weight`, which the leaf carries over)
        "qwen2" | "qwen3" | "stablelm" => &[EMBED_HEAD, NORMS, ATTN, QK_NORM, MLP],
        "qwen2_moe" | "qwen3_moe" => &[EMBED_HEAD, NORMS, ATTN, QK_NORM, MOE_EXPERTS, MLP],
        "gemma2" | "gemma3" => &[GEMMA_NORMS, ATTN, MLP],
        "phi3" => &[EMBED_HEAD, NORMS, PHI3_BLOCK],
        "gpt2" => &[GPT2],
        "starcoder2" => &[EMBED_HEAD, NORMS, ATTN, STARCODER2_MLP],
        "nemotron" => &[NEMOTRON_NORMS_MLP, ATTN],
        "gpt_oss" => &[EMBED_HEAD, GPT_OSS_BLOCK, ATTN],
        "falcon" => &[FALCON],
        _ => return None,
    })
}

/// Match a GGUF tensor name against a table: the HF name and the rule.
pub fn lookup(table: Table, gguf: &str) -> Option<(String, Rule)> {
    let (module, leaf) = gguf.rsplit_once('.')?;
    if leaf != "weight" && leaf != "bias" {
        return None;
    }
    for &(pattern, hf, rule) in table.iter().copied().flatten() {
        if let Some(block) = match_pattern(pattern, module) {
            let hf = match block {
                Some(n) => hf.replace("{N}", n),
                None => hf.to_string(),
            };
            if let Some(whole) = hf.strip_suffix("$+") {
                let name = match leaf {
                    "weight" => whole.to_string(),
                    _ => format!("{whole}_{leaf}"),
                };
                return Some((name, rule));
            }
            return match hf.strip_suffix('$') {
                Some(whole) if leaf == "weight" => Some((whole.to_string(), rule)),
                Some(_) => None,
                None => Some((format!("{hf}.{leaf}"), rule)),
            };
        }
    }
    None
}

/// `Some(None)`: matched without a block number; `Some(Some(n))`: matched
/// with block `n` (decimal digits).
fn match_pattern<'a>(pattern: &str, name: &'a str) -> Option<Option<&'a str>> {
    match pattern.split_once("{N}") {
        None => (pattern == name).then_some(None),
        Some((pre, post)) => {
            let rest = name.strip_prefix(pre)?;
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || (digits > 1 && rest.starts_with('0')) {
                return None;
            }
            let (n, tail) = rest.split_at(digits);
            (tail == post).then_some(Some(n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_names() {
        let t = table("llama").unwrap();
        assert_eq!(
            lookup(t, "blk.12.attn_q.weight"),
            Some((
                "model.layers.12.self_attn.q_proj.weight".into(),
                Rule::UnpermuteQ
            ))
        );
        assert_eq!(
            lookup(t, "output.weight"),
            Some(("lm_head.weight".into(), Rule::Same))
        );
        assert_eq!(lookup(t, "blk.x.attn_q.weight"), None);
        assert_eq!(lookup(t, "blk.01.attn_q.weight"), None);
        assert_eq!(lookup(t, "blk.1.attn_q.scale"), None);
        assert_eq!(lookup(t, "rope_freqs.weight"), None);
        assert_eq!(lookup(t, "blk.1.attn_qx.weight"), None);
        let g = table("gpt_oss").unwrap();
        assert_eq!(
            lookup(g, "blk.3.ffn_down_exps.bias"),
            Some((
                "model.layers.3.mlp.experts.down_proj_bias".into(),
                Rule::TransposeWeight
            ))
        );
        assert_eq!(
            lookup(g, "blk.3.ffn_gate_exps.weight"),
            Some((
                "model.layers.3.mlp.experts.gate_up_proj".into(),
                Rule::InterleaveGate
            ))
        );
        assert_eq!(
            lookup(g, "blk.0.attn_sinks.weight"),
            Some(("model.layers.0.self_attn.sinks".into(), Rule::Same))
        );
        assert_eq!(lookup(g, "blk.0.attn_sinks.bias"), None);
    }
}
