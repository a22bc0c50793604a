//! Whether a GGUF file is a complete model of the architecture it declares:
//! only then is `bf16/` laid out as a Hugging Face model folder (otherwise
//! it keeps the GGUF names, and no `config.json` claims a model that no
//! loader could use). docs/GGUF.md, "Complete models", is the rule:
//!
//! - the token embedding (`token_embd.weight`) and the final norm
//!   (`output_norm.weight`) are there;
//! - the metadata gives `<arch>.block_count` = N, and the blocks the
//!   tensors name (`blk.K.*`) are exactly 0..N;
//! - every block has its attention input (`attn_q`, `attn_k` and `attn_v`,
//!   or the fused `attn_qkv`), its attention output (`attn_output`) and its
//!   FFN output (`ffn_down`, or the experts' `ffn_down_exps`) weights.
//!
//! Every architecture gyrofs maps names these tensors so (llama.cpp's
//! `gguf-py` names). A tensor the mapping does not place does not make a
//! model incomplete: it is kept under its GGUF name (`super::map`).

use std::collections::{BTreeMap, HashSet};

use super::GgufHfError;
use crate::catalog::gguf::GgufMetadata;

/// Ok if `names` (the GGUF tensor names) are a complete model of GGUF
/// architecture `arch` with metadata `meta`; else what is missing.
pub fn check(meta: &GgufMetadata, arch: &str, names: &[&str]) -> Result<(), GgufHfError> {
    let incomplete = |what: String| GgufHfError::Incomplete {
        arch: arch.to_string(),
        what,
    };
    let all: HashSet<&str> = names.iter().copied().collect();
    for t in ["token_embd.weight", "output_norm.weight"] {
        if !all.contains(t) {
            return Err(incomplete(format!("no {t}")));
        }
    }
    let key = format!("{arch}.block_count");
    let Some(count) = meta.u64(&key) else {
        return Err(incomplete(format!("no {key} in the metadata")));
    };
    let mut blocks: BTreeMap<u64, HashSet<&str>> = BTreeMap::new();
    for name in names {
        if let Some((k, leaf)) = block_of(name) {
            blocks.entry(k).or_default().insert(leaf);
        }
    }
    if let Some((&last, _)) = blocks.last_key_value()
        && last >= count
    {
        return Err(incomplete(format!(
            "{key} is {count}, but there are tensors of block {last}"
        )));
    }
    if (blocks.len() as u64) < count {
        let missing = (0..count)
            .find(|k| !blocks.contains_key(k))
            .expect("fewer blocks than the count");
        return Err(incomplete(format!(
            "{key} is {count}, but block {missing} has no tensors"
        )));
    }
    for (k, leaves) in &blocks {
        let has = |leaf: &str| leaves.contains(leaf);
        let split_qkv = has("attn_q.weight") && has("attn_k.weight") && has("attn_v.weight");
        let missing = if !split_qkv && !has("attn_qkv.weight") {
            "attn_q, attn_k and attn_v (or attn_qkv) weights"
        } else if !has("attn_output.weight") {
            "attn_output.weight"
        } else if !has("ffn_down.weight") && !has("ffn_down_exps.weight") {
            "ffn_down.weight (or ffn_down_exps.weight)"
        } else {
            continue;
        };
        return Err(incomplete(format!("blk.{k} has no {missing}")));
    }
    Ok(())
}

/// `blk.K.rest` -> `(K, rest)`, for a block number written as llama.cpp
/// writes it (decimal, no leading zero).
fn block_of(name: &str) -> Option<(u64, &str)> {
    let (k, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    let canonical =
        !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) && (k == "0" || !k.starts_with('0'));
    Some((k.parse().ok().filter(|_| canonical)?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::gguf::GgufValue;

    fn meta(blocks: Option<u64>) -> GgufMetadata {
        let mut e = vec![(
            "general.architecture".to_string(),
            GgufValue::String("llama".into()),
        )];
        if let Some(n) = blocks {
            e.push(("llama.block_count".into(), GgufValue::U32(n as u32)));
        }
        GgufMetadata::new(e)
    }

    /// A complete `n`-block llama's tensor names.
    fn llama(n: u64) -> Vec<String> {
        let mut v = vec!["token_embd.weight".to_string(), "output_norm.weight".into()];
        for k in 0..n {
            for leaf in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_down"] {
                v.push(format!("blk.{k}.{leaf}.weight"));
            }
        }
        v
    }

    fn check_names(meta: &GgufMetadata, names: &[String]) -> Result<(), String> {
        let n: Vec<&str> = names.iter().map(String::as_str).collect();
        check(meta, "llama", &n).map_err(|e| e.to_string())
    }

    #[test]
    fn complete_models_pass_and_incomplete_ones_say_what_is_missing() {
        assert_eq!(check_names(&meta(Some(2)), &llama(2)), Ok(()));
        let mut extra = llama(2);
        extra.push("rope_freqs.weight".into());
        extra.push("blk.01.attn_q.weight".into());
        assert_eq!(check_names(&meta(Some(2)), &extra), Ok(()));
        let cases: Vec<(Option<u64>, Vec<String>, &str)> = vec![
            (Some(2), llama(2)[1..].to_vec(), "no token_embd.weight"),
            (None, llama(2), "no llama.block_count in the metadata"),
            (
                Some(1),
                llama(2),
                "llama.block_count is 1, but there are tensors of block 1",
            ),
            (
                Some(3),
                llama(2),
                "llama.block_count is 3, but block 2 has no tensors",
            ),
            (
                Some(2),
                llama(2)
                    .into_iter()
                    .filter(|n| n != "blk.1.attn_k.weight")
                    .collect(),
                "blk.1 has no attn_q, attn_k and attn_v (or attn_qkv) weights",
            ),
            (
                Some(2),
                llama(2)
                    .into_iter()
                    .filter(|n| n != "blk.0.ffn_down.weight")
                    .collect(),
                "blk.0 has no ffn_down.weight (or ffn_down_exps.weight)",
            ),
        ];
        for (blocks, names, want) in cases {
            let err = check_names(&meta(blocks), &names).unwrap_err();
            assert_eq!(err, format!("not a complete 'llama' model: {want}"));
        }
        // A hostile block count costs nothing.
        let err = check_names(&meta(Some(u32::MAX as u64)), &llama(1)).unwrap_err();
        assert!(err.contains("block 1 has no tensors"), "{err}");
    }
}
