//! Tokenizer files from GGUF `tokenizer.ggml.*` metadata, as transformers
//! builds them.
//!
//! Follows `integrations/gguf/gguf_tokenizer_mapping.py` (transformers
//! 5.24: `get_gguf_tokenizer`, `convert_gguf_tokenizer`, the builders, and
//! `add_gguf_special_tokens`, `set_split_regex`) and what
//! `save_pretrained` then writes: `tokenizer.json`, `tokenizer_config.json`,
//! and `chat_template.jinja` where the file has a template. Loading the
//! folder with `AutoTokenizer.from_pretrained` gives the tokenizer that
//! `AutoTokenizer.from_pretrained(dir, gguf_file=...)` gives.
//!
//! Families, by `tokenizer.ggml.model` and architecture:
//! - `llama` (SentencePiece BPE with byte fallback): `LlamaTokenizer`'s
//!   backend (Metaspace pre-tokenizer, `prepend_scheme: first`); gemma2 /
//!   gemma3: `GemmaTokenizer`'s (space -> `▁` normalizer, split on spaces);
//!   phi3: Llama's. (transformers' GGUF loader gives phi3 a
//!   Prepend+Replace normalizer instead, which puts an extra `▁` before
//!   text that starts with a space; the model's own tokenizer,
//!   `LlamaTokenizer`, does not: gyrofs follows the original.)
//!   The file has no merges: they are rebuilt from the vocabulary and the
//!   scores (gemma: the token order) exactly as transformers'
//!   `generate_merges` does.
//! - `gpt2` (byte-level BPE): `GPT2Tokenizer`'s backend with the file's
//!   merges; the split regex chosen by `tokenizer.ggml.pre`.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::json::{write_str, write_u64, write_value};

use super::GgufHfError;
use crate::catalog::gguf::{GgufArray, GgufMetadata, GgufValue};

/// Special-token attributes in transformers' order (`SPECIAL_TOKENS_ATTRIBUTES`).
const SPECIAL_ORDER: [&str; 5] = ["bos", "eos", "unk", "pad", "mask"];

/// GGUF token types (llama.cpp `llama_token_type`).
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` -> split regex (transformers' `GGUF_PRE_TOKENIZER_SPLITS`).
const SPLITS: &[(&str, &str)] = &[
    ("llama3", LLAMA3_SPLIT),
    ("llama-v3", LLAMA3_SPLIT),
    ("llama-bpe", LLAMA3_SPLIT),
    ("falcon3", LLAMA3_SPLIT),
    ("falcon-h1", LLAMA3_SPLIT),
    ("pixtral", LLAMA3_SPLIT),
    ("midm-2.0", LLAMA3_SPLIT),
    ("lfm2", LLAMA3_SPLIT),
    ("jina-v5-nano", LLAMA3_SPLIT),
    ("dbrx", LLAMA3_SPLIT),
    ("smaug-bpe", LLAMA3_SPLIT),
    ("tekken", TEKKEN_SPLIT),
    ("qwen2", QWEN2_SPLIT),
    ("deepseek-r1-qwen", QWEN2_SPLIT),
    ("kormo", QWEN2_SPLIT),
    ("f2llmv2", QWEN2_SPLIT),
    ("megrez", QWEN2_SPLIT),
    ("qwen35", QWEN35_SPLIT),
    ("gpt-4o", GPT4O_SPLIT),
    ("llama4", GPT4O_SPLIT),
    ("kanana2", GPT4O_SPLIT),
    ("talkie", GPT4O_SPLIT),
    ("minimax-m2", GPT4O_SPLIT),
];

/// The tokenizer class `AutoTokenizer` picks for a `model_type` (it is what
/// `tokenizer_config.json` names), and the extra keys that class saves.
fn outer_class(updated_arch: &str) -> &'static str {
    match updated_arch {
        "qwen2" | "qwen2_moe" | "qwen3" | "qwen3_moe" => "Qwen2Tokenizer",
        "gemma2" | "gemma3" => "GemmaTokenizer",
        "gpt2" | "starcoder2" => "GPT2Tokenizer",
        _ => "TokenizersBackend",
    }
}

/// Which transformers builder makes the tokenizer (`convert_gguf_tokenizer`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Builder {
    Llama,
    Gemma,
    ByteLevel,
}

/// The special tokens transformers names by attribute: `bos`, `eos`, `unk`,
/// `pad` (their ids in the metadata), in that order.
type SpecialIds = [(&'static str, Option<u64>); 4];

/// A special token by attribute (`bos`, ..., and gemma's `mask`) and its
/// text, as the tokenizer config names it.
type ConfigTokens = Vec<(&'static str, Option<String>)>;

/// What the `tokenizer.ggml.*` metadata says of the tokenizer, read and
/// checked.
struct GgufTokenizer<'a> {
    builder: Builder,
    /// `tokenizer.ggml.tokens`, the vocabulary in id order (borrowed from
    /// the metadata when it is an array of strings).
    tokens: Vec<Cow<'a, str>>,
    /// `tokenizer.ggml.token_type`, one per token (0 where not an integer;
    /// empty when absent).
    types: Vec<i64>,
    /// The post-processor adds the bos / eos token.
    add_bos: bool,
    add_eos: bool,
}

/// BPE merges, `(left, right)`, borrowed from the metadata where they can be.
type Merges<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// One added token.
struct Added {
    id: u64,
    content: String,
    special: bool,
}

/// Building a tokenizer file may allocate at most this many times the
/// bytes of the GGUF's metadata ...
pub const BUDGET_FACTOR: u64 = 8;
/// ... or this many bytes, if more (a real vocabulary's `tokenizer.json`
/// is a few times its metadata: Gemma 3's, 262k tokens, is 33 MB, and
/// building it takes about three times that).
pub const BUDGET_FLOOR: u64 = 128 << 20;

/// The most building one tokenizer file from `meta` may allocate.
pub fn budget(meta: &GgufMetadata) -> u64 {
    BUDGET_FACTOR
        .saturating_mul(meta.encoded_len())
        .max(BUDGET_FLOOR)
}

/// The names of the tokenizer files this metadata makes: `tokenizer.json`,
/// `tokenizer_config.json`, and `chat_template.jinja` where the file has a
/// template; or why there are none. Cheap: the keys' types and the special
/// token ids are checked, not the vocabulary or the merges one by one (a
/// malformed merge, or a vocabulary that would take too much memory, is
/// found when `tokenizer.json` is built: [`build`]).
pub fn file_names(meta: &GgufMetadata, arch: &str) -> Result<Vec<&'static str>, GgufHfError> {
    let model = model(meta)?;
    let builder = builder(model, arch)?;
    let n = token_count(meta)?;
    for key in [
        "bos_token_id",
        "eos_token_id",
        "unknown_token_id",
        "padding_token_id",
    ] {
        token_id(meta, key, n)?;
    }
    check_merges_or_scores(meta, builder, n)?;
    let mut names = vec!["tokenizer.json", "tokenizer_config.json"];
    if chat_template(meta)?.is_some() {
        names.push("chat_template.jinja");
    }
    Ok(names)
}

/// Tokenizer file `name` (one of [`file_names`]), allocating at most
/// `limit` bytes on the way ([`budget`]).
pub fn build(
    meta: &GgufMetadata,
    updated_arch: &str,
    arch: &str,
    name: &str,
    limit: u64,
) -> Result<String, GgufHfError> {
    match name {
        "tokenizer.json" => {
            let mut budget = Budget {
                used: 0,
                limit,
                file: name,
                metadata: meta.encoded_len(),
            };
            tokenizer_json_file(meta, updated_arch, arch, &mut budget)
        }
        "tokenizer_config.json" => {
            let tok = Specials::read(meta, arch)?;
            let class = outer_class(updated_arch);
            Ok(crate::json::to_pretty(&tokenizer_config(
                class,
                &config_tokens(&tok, meta, class),
            )))
        }
        _ => Ok(chat_template(meta)?.unwrap_or_default()),
    }
}

/// Every tokenizer file, built ([`file_names`], [`build`]).
pub fn files(
    meta: &GgufMetadata,
    updated_arch: &str,
    arch: &str,
) -> Result<Vec<(String, String)>, GgufHfError> {
    let limit = budget(meta);
    file_names(meta, arch)?
        .into_iter()
        .map(|n| Ok((n.to_string(), build(meta, updated_arch, arch, n, limit)?)))
        .collect()
}

/// The entries of the vocabulary of `tokenizer.json` plus its added
/// tokens, without building it (what llama.cpp's converter keeps of the
/// token embedding).
pub fn rows(meta: &GgufMetadata, updated_arch: &str, arch: &str) -> Result<u64, GgufHfError> {
    let specials = Specials::read(meta, arch)?;
    let class = outer_class(updated_arch);
    let config_tokens = config_tokens(&specials, meta, class);
    let tok = GgufTokenizer {
        builder: specials.builder,
        tokens: tokens(meta)?,
        types: specials.types,
        add_bos: specials.add_bos,
        add_eos: specials.add_eos,
    };
    let spelled = spelled_vocabulary(tok.builder, &tok.tokens);
    let vocab = PyDict::from_iter(
        spelled
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_ref(), i as f64)),
    );
    let added = added_tokens(&tok, &vocab, &config_tokens);
    Ok((vocab.len() + added.len()) as u64)
}

/// What building a file has allocated so far, against its limit.
struct Budget<'a> {
    used: u64,
    limit: u64,
    file: &'a str,
    metadata: u64,
}

impl Budget<'_> {
    /// Count `bytes` more, or refuse if that passes the limit.
    fn charge(&mut self, bytes: u64) -> Result<(), GgufHfError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(GgufHfError::TokenizerTooBig {
                file: self.file.to_string(),
                limit: self.limit,
                metadata: self.metadata,
            });
        }
        Ok(())
    }
}

/// Bytes counted per string, dict entry or merge besides its text: what
/// it takes in a vector or hash table and in the allocator.
const PER_ITEM: u64 = 40;

/// `tokenizer.json`, written straight into text (the vocabulary and the
/// merges are never a JSON value tree), within `budget`.
fn tokenizer_json_file(
    meta: &GgufMetadata,
    updated_arch: &str,
    arch: &str,
    budget: &mut Budget,
) -> Result<String, GgufHfError> {
    let specials = Specials::read(meta, arch)?;
    let tok = GgufTokenizer {
        builder: specials.builder,
        tokens: tokens(meta)?,
        types: specials.types.clone(),
        add_bos: specials.add_bos,
        add_eos: specials.add_eos,
    };
    budget.charge(
        tok.tokens
            .iter()
            .map(|t| t.len() as u64 + PER_ITEM)
            .sum::<u64>(),
    )?;
    let spelled = spelled_vocabulary(specials.builder, &tok.tokens);
    budget.charge(
        spelled
            .iter()
            .map(|t| t.len() as u64 + PER_ITEM)
            .sum::<u64>(),
    )?;
    // a Python dict: a repeated token keeps its first position, its last id
    let vocab = PyDict::from_iter(
        spelled
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_ref(), i as f64)),
    );
    budget.charge(2 * PER_ITEM * vocab.len() as u64)?;
    let merges = merges(meta, specials.builder, &spelled, &vocab, budget)?;
    let class = outer_class(updated_arch);
    let config_tokens = config_tokens(&specials, meta, class);
    let added = added_tokens(&tok, &vocab, &config_tokens);
    let pre = meta.text("tokenizer.ggml.pre");
    tokenizer_json(&tok, &vocab, &merges, &added, &config_tokens, pre, budget)
}

/// What the tokenizer files need besides the vocabulary: the builder, the
/// token types, the special token ids and the `add_*_token` flags.
struct Specials {
    builder: Builder,
    types: Vec<i64>,
    special_ids: SpecialIds,
    add_bos: bool,
    add_eos: bool,
}

impl Specials {
    fn read(meta: &GgufMetadata, arch: &str) -> Result<Specials, GgufHfError> {
        let model = model(meta)?;
        let builder = builder(model, arch)?;
        let n = token_count(meta)?;
        let types: Vec<i64> = match meta.array("tokenizer.ggml.token_type") {
            Some(a) => a.values().map(|t| t.as_i64().unwrap_or(0)).collect(),
            None => Vec::new(),
        };
        let special_ids = [
            ("bos", token_id(meta, "bos_token_id", n)?),
            ("eos", token_id(meta, "eos_token_id", n)?),
            ("unk", token_id(meta, "unknown_token_id", n)?),
            ("pad", token_id(meta, "padding_token_id", n)?),
        ];
        let flag = |key: &str| meta.bool(&format!("tokenizer.ggml.{key}"));
        Ok(Specials {
            builder,
            types,
            special_ids,
            add_bos: flag("add_bos_token").unwrap_or(model == "llama"),
            add_eos: flag("add_eos_token").unwrap_or(false),
        })
    }
}

/// The number of tokens, with the check [`tokens`] makes (cheap for an
/// array of strings, the only kind real files have).
fn token_count(meta: &GgufMetadata) -> Result<usize, GgufHfError> {
    match meta.array("tokenizer.ggml.tokens") {
        Some(a) if a.strings().is_some() => Ok(a.len()),
        Some(_) => tokens(meta).map(|t| t.len()),
        None => Err(GgufHfError::NoTokens),
    }
}

/// Token `i`'s text (`i` is below [`token_count`]).
fn token_text(meta: &GgufMetadata, i: usize) -> Option<String> {
    let a = meta.array("tokenizer.ggml.tokens")?;
    match a.strings() {
        Some(v) => v.get(i).map(str::to_string),
        None => tokens(meta).ok()?.get(i).map(|t| t.to_string()),
    }
}

/// The checks [`merges`] makes, but for the merges' form (found when
/// `tokenizer.json` is built): the keys' types and lengths.
fn check_merges_or_scores(
    meta: &GgufMetadata,
    builder: Builder,
    n_tokens: usize,
) -> Result<(), GgufHfError> {
    match (builder, meta.get("tokenizer.ggml.merges")) {
        (_, Some(GgufValue::Array(a))) => match a.strings() {
            Some(_) => Ok(()),
            None => a
                .values()
                .all(|m| m.as_text().is_some())
                .then_some(())
                .ok_or(GgufHfError::MergeNotString),
        },
        (_, Some(v)) => Err(GgufHfError::NotAnArray {
            key: "tokenizer.ggml.merges".into(),
            value: v.clone(),
        }),
        (Builder::ByteLevel, None) => Err(GgufHfError::ByteLevelWithoutMerges),
        (Builder::Gemma, None) => Ok(()),
        (_, None) => match meta.get("tokenizer.ggml.scores") {
            Some(GgufValue::Array(a)) if a.len() == n_tokens => a
                .all_numbers()
                .then_some(())
                .ok_or(GgufHfError::ScoreNotNumber),
            Some(_) => Err(GgufHfError::ScoresNotPerToken),
            None => Err(GgufHfError::NoScoresOrMerges),
        },
    }
}

/// `tokenizer.ggml.model`: `llama`, `gpt2`, ...
fn model(meta: &GgufMetadata) -> Result<&str, GgufHfError> {
    const KEY: &str = "tokenizer.ggml.model";
    match meta.get(KEY) {
        Some(v) => v.as_text().ok_or_else(|| GgufHfError::NotAString {
            key: KEY.into(),
            value: v.clone(),
        }),
        None => Err(GgufHfError::NoTokenizer),
    }
}

/// The builder for tokenizer model `model` of GGUF architecture `arch`.
fn builder(model: &str, arch: &str) -> Result<Builder, GgufHfError> {
    Ok(match (model, arch) {
        ("llama", "gemma" | "gemma2" | "gemma3") => Builder::Gemma,
        ("llama", _) => Builder::Llama,
        ("gpt2", _) => Builder::ByteLevel,
        (other, _) => {
            return Err(GgufHfError::UnsupportedTokenizer {
                model: other.to_string(),
            });
        }
    })
}

/// `tokenizer.ggml.tokens`: the vocabulary in id order, borrowed from the
/// metadata when it is an array of strings (real files' is).
fn tokens(meta: &GgufMetadata) -> Result<Vec<Cow<'_, str>>, GgufHfError> {
    match meta.array("tokenizer.ggml.tokens") {
        Some(GgufArray::String(v)) => Ok(v.iter().map(Cow::Borrowed).collect()),
        Some(a) => a
            .values()
            .map(|t| t.as_text().map(|s| Cow::Owned(s.to_string())))
            .collect::<Option<_>>()
            .ok_or(GgufHfError::TokensNotStrings),
        None => Err(GgufHfError::NoTokens),
    }
}

/// The token id `tokenizer.ggml.<key>`, if the metadata has one; it must be
/// one of the `n_tokens` tokens.
fn token_id(meta: &GgufMetadata, key: &str, n_tokens: usize) -> Result<Option<u64>, GgufHfError> {
    let key = format!("tokenizer.ggml.{key}");
    let Some(v) = meta.get(&key) else {
        return Ok(None);
    };
    let Some(id) = v.as_u64() else {
        return Err(GgufHfError::NotATokenId {
            key,
            value: v.clone(),
        });
    };
    if id as usize >= n_tokens {
        return Err(GgufHfError::TokenIdPastEnd {
            key,
            id,
            tokens: n_tokens,
        });
    }
    Ok(Some(id))
}

/// The tokens as the builder's vocabulary spells them: gemma spells a token
/// of spaces with `▁`; byte-level spells a token in the byte alphabet unless
/// it is spelled so already.
/// (Borrowed from `tokens` where spelled as they are.)
fn spelled_vocabulary<'a>(builder: Builder, tokens: &'a [Cow<'a, str>]) -> Vec<Cow<'a, str>> {
    let same = |t: &'a Cow<'a, str>| Cow::Borrowed(t.as_ref());
    match builder {
        Builder::Gemma => tokens
            .iter()
            .map(|t| {
                if t.contains(' ') && t.chars().all(py_isspace) {
                    Cow::Owned("\u{2581}".repeat(t.chars().count()))
                } else {
                    same(t)
                }
            })
            .collect(),
        Builder::ByteLevel => {
            let alphabet = byte_alphabet();
            tokens
                .iter()
                .map(|t| {
                    if t.chars().all(|c| alphabet.contains(&c)) {
                        same(t)
                    } else {
                        Cow::Owned(t.bytes().map(|b| alphabet[b as usize]).collect())
                    }
                })
                .collect()
        }
        _ => tokens.iter().map(same).collect(),
    }
}

/// The BPE merges: the file's (`tokenizer.ggml.merges`), or, for a
/// SentencePiece tokenizer without them, rebuilt from the vocabulary and
/// the scores (gemma: the token order) as transformers does.
fn merges<'a>(
    meta: &'a GgufMetadata,
    builder: Builder,
    spelled: &'a [Cow<'a, str>],
    vocab: &PyDict,
    budget: &mut Budget,
) -> Result<Merges<'a>, GgufHfError> {
    match (builder, meta.get("tokenizer.ggml.merges")) {
        (_, Some(GgufValue::Array(a))) => file_merges(a, budget),
        (_, Some(v)) => Err(GgufHfError::NotAnArray {
            key: "tokenizer.ggml.merges".into(),
            value: v.clone(),
        }),
        (Builder::ByteLevel, None) => Err(GgufHfError::ByteLevelWithoutMerges),
        (Builder::Gemma, None) => {
            let scores = PyDict::from_iter(
                spelled
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.as_ref(), -(i as f64))),
            );
            generate_merges(vocab, &scores, budget)
        }
        (_, None) => {
            let scores = sentencepiece_scores(meta, spelled.len())?;
            let scores =
                PyDict::from_iter(spelled.iter().zip(scores).map(|(t, s)| (t.as_ref(), s)));
            generate_merges(vocab, &scores, budget)
        }
    }
}

/// The merges of `tokenizer.ggml.merges`: each `left right` (borrowed
/// from the metadata when it is an array of strings).
fn file_merges<'a>(merges: &'a GgufArray, budget: &mut Budget) -> Result<Merges<'a>, GgufHfError> {
    let split = |s: &str| -> Result<(usize, usize), GgufHfError> {
        let mut parts = s.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(l), Some(r), None) => Ok((l.len(), r.len())),
            _ => Err(GgufHfError::BadMerge {
                merge: s.to_string(),
            }),
        }
    };
    budget.charge(PER_ITEM * merges.len() as u64)?;
    if let Some(strings) = merges.strings() {
        return strings
            .iter()
            .map(|s| {
                let (l, _) = split(s)?;
                Ok((Cow::Borrowed(&s[..l]), Cow::Borrowed(&s[l + 1..])))
            })
            .collect();
    }
    merges
        .values()
        .map(|m| {
            let s = m.as_text().ok_or(GgufHfError::MergeNotString)?;
            let (l, _) = split(s)?;
            budget.charge(s.len() as u64)?;
            Ok((
                Cow::Owned(s[..l].to_string()),
                Cow::Owned(s[l + 1..].to_string()),
            ))
        })
        .collect()
}

/// `tokenizer.ggml.scores`, one per token (of `n_tokens`), each read as the
/// f32 it is.
fn sentencepiece_scores(meta: &GgufMetadata, n_tokens: usize) -> Result<Vec<f64>, GgufHfError> {
    match meta.get("tokenizer.ggml.scores") {
        Some(GgufValue::Array(a)) if a.len() == n_tokens => a
            .values()
            .map(|s| s.as_json_f64().map(|f| f as f32 as f64))
            .collect::<Option<_>>()
            .ok_or(GgufHfError::ScoreNotNumber),
        Some(_) => Err(GgufHfError::ScoresNotPerToken),
        None => Err(GgufHfError::NoScoresOrMerges),
    }
}

/// The special tokens the tokenizer config names (`bos`, `eos`, `unk`,
/// `pad` from their ids; `mask` for `GemmaTokenizer`).
fn config_tokens(tok: &Specials, meta: &GgufMetadata, class: &str) -> ConfigTokens {
    let mut config_tokens: ConfigTokens = tok
        .special_ids
        .iter()
        .map(|(k, id)| (*k, id.and_then(|i| token_text(meta, i as usize))))
        .collect();
    if class == "GemmaTokenizer" {
        config_tokens.push(("mask", Some("<mask>".into())));
    }
    config_tokens
}

/// The text of special token `key` (`bos`, ...), if the config names one.
fn token_of(config_tokens: &ConfigTokens, key: &str) -> Option<String> {
    config_tokens
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, t)| t.clone())
}

/// The added tokens, by id, added in the order transformers adds them.
fn added_tokens(tok: &GgufTokenizer, vocab: &PyDict, config_tokens: &ConfigTokens) -> Vec<Added> {
    let mut added = AddedTokens {
        list: Vec::new(),
        next_id: vocab.len() as u64,
        vocab,
    };
    // 1. the builder class's own special tokens
    let builder_specials: &[&str] = match tok.builder {
        Builder::Llama => &["<s>", "</s>", "<unk>"],
        Builder::Gemma => &["<bos>", "<eos>", "<unk>", "<pad>", "<mask>"],
        Builder::ByteLevel => &["<|endoftext|>"],
    };
    for t in builder_specials {
        added.add(t, true);
    }
    // 2. CONTROL tokens as special (byte-level: only those spelled in the byte alphabet)
    let alphabet = byte_alphabet();
    for (t, ty) in tok.tokens.iter().zip(tok.types.iter()) {
        if *ty == CONTROL
            && (tok.builder != Builder::ByteLevel || t.chars().all(|c| alphabet.contains(&c)))
        {
            added.add(t, true);
        }
    }
    // 3. USER_DEFINED tokens, not special
    for (t, ty) in tok.tokens.iter().zip(tok.types.iter()) {
        if *ty == USER_DEFINED && vocab.get(t).is_some() {
            added.add(t, false);
        }
    }
    // 4. the special tokens the tokenizer config names
    for key in SPECIAL_ORDER {
        if let Some((_, Some(t))) = config_tokens.iter().find(|(k, _)| *k == key) {
            added.add(t, true);
        }
    }
    let mut list = added.list;
    list.sort_by_key(|a| a.id);
    list
}

/// Added tokens being collected: a token already in the vocabulary keeps
/// its id, a new one takes the next free id.
struct AddedTokens<'v> {
    list: Vec<Added>,
    next_id: u64,
    vocab: &'v PyDict<'v>,
}

impl AddedTokens<'_> {
    /// Add `content` unless it was added already.
    fn add(&mut self, content: &str, special: bool) {
        if self.list.iter().any(|a| a.content == content) {
            return;
        }
        let id = match self.vocab.get(content) {
            Some(i) => i as u64,
            None => {
                self.next_id += 1;
                self.next_id - 1
            }
        };
        self.list.push(Added {
            id,
            content: content.to_string(),
            special,
        });
    }
}

/// `tokenizer.json`: the added tokens, the builder's normalizer,
/// pre-tokenizer (`pre`: `tokenizer.ggml.pre`) and decoder, the
/// post-processor adding bos / eos, and the BPE model; as
/// `crate::json::to_pretty` writes it, with the model's vocabulary and
/// merges written straight into the text (within `budget`).
fn tokenizer_json(
    tok: &GgufTokenizer,
    vocab: &PyDict,
    merges: &[(Cow<str>, Cow<str>)],
    added: &[Added],
    config_tokens: &ConfigTokens,
    pre: Option<&str>,
    budget: &mut Budget,
) -> Result<String, GgufHfError> {
    let id_in = |t: &str| {
        added
            .iter()
            .find(|a| a.content == t)
            .map(|a| a.id)
            .or(vocab.get(t).map(|i| i as u64))
    };
    let bos = token_of(config_tokens, "bos").filter(|_| tok.add_bos);
    let eos = token_of(config_tokens, "eos").filter(|_| tok.add_eos);
    let post_processor = template(bos.as_deref(), eos.as_deref(), &id_in)?;
    let added_json: Vec<Value> = added
        .iter()
        .map(|a| {
            json!({"id": a.id, "content": a.content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": a.special})
        })
        .collect();
    let (normalizer, pre_tokenizer, decoder) = pipeline(tok.builder, pre);
    let top = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added_json,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": post_processor,
        "decoder": decoder, "model": null,
    });
    let Value::Object(top) = top else {
        unreachable!("an object")
    };
    let mut out = String::new();
    let mut keys: Vec<&String> = top.keys().collect();
    keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    out.push('{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        newline(&mut out, 1);
        write_str(&mut out, k);
        out.push_str(": ");
        match k.as_str() {
            "model" => bpe_model(&mut out, tok.builder, vocab, merges, budget)?,
            _ => write_value(&mut out, &top[k], Some(2), 1),
        }
    }
    newline(&mut out, 0);
    out.push_str("}\n");
    Ok(out)
}

/// A newline and the indentation of `depth` (two spaces a level).
fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..2 * depth {
        out.push(' ');
    }
}

/// The builder's BPE `model` (at depth 1): its options, then the
/// vocabulary and the merges, written one entry at a time with the text
/// counted against `budget`.
fn bpe_model(
    out: &mut String,
    builder: Builder,
    vocab: &PyDict,
    merges: &[(Cow<str>, Cow<str>)],
    budget: &mut Budget,
) -> Result<(), GgufHfError> {
    let options = match builder {
        Builder::Llama => {
            json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false})
        }
        Builder::Gemma => {
            json!({"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false})
        }
        Builder::ByteLevel => {
            json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false})
        }
    };
    let Value::Object(options) = options else {
        unreachable!("an object")
    };
    let mut keys: Vec<&str> = options.keys().map(String::as_str).collect();
    keys.extend(["merges", "vocab"]);
    keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    // Text written is counted as it grows, a chunk at a time.
    let mut counted = out.len();
    let mut count = |out: &String, budget: &mut Budget| {
        let grown = out.len() - counted;
        counted = out.len();
        budget.charge(grown as u64)
    };
    out.push('{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        newline(out, 2);
        write_str(out, k);
        out.push_str(": ");
        match k {
            "merges" if merges.is_empty() => out.push_str("[]"),
            "merges" => {
                out.push('[');
                for (j, (l, r)) in merges.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    newline(out, 3);
                    out.push('[');
                    newline(out, 4);
                    write_str(out, l);
                    out.push(',');
                    newline(out, 4);
                    write_str(out, r);
                    newline(out, 3);
                    out.push(']');
                    if j % 1024 == 0 {
                        count(out, budget)?;
                    }
                }
                newline(out, 2);
                out.push(']');
            }
            "vocab" if vocab.len() == 0 => out.push_str("{}"),
            "vocab" => {
                let mut entries: Vec<(&str, f64)> = vocab.iter().collect();
                budget.charge(PER_ITEM * entries.len() as u64)?;
                entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                out.push('{');
                for (j, (t, id)) in entries.into_iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    newline(out, 3);
                    write_str(out, t);
                    out.push_str(": ");
                    write_u64(out, id as u64);
                    if j % 1024 == 0 {
                        count(out, budget)?;
                    }
                }
                newline(out, 2);
                out.push('}');
            }
            _ => write_value(out, &options[k], Some(2), 2),
        }
        count(out, budget)?;
    }
    newline(out, 1);
    out.push('}');
    Ok(())
}

/// The builder's (normalizer, pre-tokenizer, decoder); a byte-level
/// pre-tokenizer splits with the regex `tokenizer.ggml.pre` (`pre`) names.
fn pipeline(builder: Builder, pre: Option<&str>) -> (Value, Value, Value) {
    match builder {
        // Also Phi-3's: its own tokenizer is `LlamaTokenizer`.
        Builder::Llama => {
            let p = json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false});
            (Value::Null, p, spm_decoder(true))
        }
        Builder::Gemma => {
            let p = json!({"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false});
            (replace(" ", "\u{2581}"), p, spm_decoder(false))
        }
        Builder::ByteLevel => {
            let p = match SPLITS.iter().find(|(k, _)| Some(*k) == pre) {
                Some((_, regex)) => json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}),
                None => {
                    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
                }
            };
            let d = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
            (Value::Null, p, d)
        }
    }
}

/// A `Replace` normalizer / decoder step: `pattern` -> `content`.
fn replace(pattern: &str, content: &str) -> Value {
    json!({"type": "Replace", "pattern": {"String": pattern}, "content": content})
}

/// The SentencePiece decoder: `▁` -> space, byte fallback, fuse, and
/// (`strip`) the leading space dropped.
fn spm_decoder(strip: bool) -> Value {
    let mut d = vec![
        replace("\u{2581}", " "),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if strip {
        d.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    json!({"type": "Sequence", "decoders": d})
}

/// `tokenizer_config.json`: the backend, the tokenizer class and the
/// special tokens, with the keys the class saves.
fn tokenizer_config(class: &str, config_tokens: &ConfigTokens) -> Value {
    let mut tc = Map::new();
    tc.insert("backend".into(), "tokenizers".into());
    tc.insert("tokenizer_class".into(), class.into());
    for key in ["bos", "eos", "unk", "pad"] {
        tc.insert(
            format!("{key}_token"),
            token_of(config_tokens, key).map_or(Value::Null, Value::String),
        );
    }
    match class {
        "Qwen2Tokenizer" => {
            tc.insert("add_prefix_space".into(), Value::Null);
        }
        "GPT2Tokenizer" => {
            tc.insert("add_prefix_space".into(), false.into());
            tc.insert("errors".into(), "replace".into());
        }
        "GemmaTokenizer" => {
            tc.insert("mask_token".into(), "<mask>".into());
        }
        _ => {}
    }
    Value::Object(tc)
}

/// `tokenizer.chat_template`, if the metadata has one.
fn chat_template(meta: &GgufMetadata) -> Result<Option<String>, GgufHfError> {
    const KEY: &str = "tokenizer.chat_template";
    match meta.get(KEY) {
        None => Ok(None),
        Some(v) => match v.as_text() {
            Some(t) => Ok(Some(t.to_string())),
            None => Err(GgufHfError::NotAString {
                key: KEY.into(),
                value: v.clone(),
            }),
        },
    }
}

/// The `TemplateProcessing` post-processor transformers'
/// `update_post_processor` writes.
fn template(
    bos: Option<&str>,
    eos: Option<&str>,
    id_of: &dyn Fn(&str) -> Option<u64>,
) -> Result<Value, GgufHfError> {
    let special = |t: &str, type_id: u64| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let seq = |s: &str, type_id: u64| json!({"Sequence": {"id": s, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    if let Some(b) = bos {
        single.push(special(b, 0));
    }
    single.push(seq("A", 0));
    if let Some(e) = eos {
        single.push(special(e, 0));
    }
    pair.extend(single.iter().cloned());
    if let Some(b) = bos {
        pair.push(special(b, 1));
    }
    pair.push(seq("B", 1));
    if let Some(e) = eos {
        pair.push(special(e, 1));
    }
    let mut tokens = Map::new();
    for t in [bos, eos].into_iter().flatten() {
        let id = id_of(t).ok_or_else(|| GgufHfError::SpecialTokenWithoutId {
            token: t.to_string(),
        })?;
        tokens.insert(t.to_string(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    Ok(
        json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": tokens}),
    )
}

/// Python's `str.isspace` for one character.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// GPT-2's `bytes_to_unicode`: byte -> the character that spells it.
fn byte_alphabet() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut map = vec!['\0'; 256];
    let mut n = 0;
    for b in 0..256u32 {
        if printable.contains(&b) {
            map[b as usize] = char::from_u32(b).unwrap_or('\0');
        } else {
            map[b as usize] = char::from_u32(256 + n).unwrap_or('\0');
            n += 1;
        }
    }
    map
}

/// A Python dict from str to number: keys keep their first position, a
/// repeated key takes the last value.
struct PyDict<'a> {
    keys: Vec<&'a str>,
    values: HashMap<&'a str, f64>,
}

impl<'a> PyDict<'a> {
    fn from_iter(items: impl Iterator<Item = (&'a str, f64)>) -> Self {
        let mut d = PyDict {
            keys: Vec::new(),
            values: HashMap::new(),
        };
        for (k, v) in items {
            if d.values.insert(k, v).is_none() {
                d.keys.push(k);
            }
        }
        d
    }
    fn get(&self, k: &str) -> Option<f64> {
        self.values.get(k).copied()
    }
    fn len(&self) -> usize {
        self.keys.len()
    }
    fn iter(&self) -> impl Iterator<Item = (&'a str, f64)> + '_ {
        self.keys.iter().map(|k| (*k, self.values[k]))
    }
}

/// transformers' `generate_merges(vocab, vocab_scores)` (with scores, so
/// sorted descending): for each token in score-dict order, every split into
/// two vocabulary pieces, ordered by the pieces' ids; then all of them
/// stably sorted by (score, len(left), len(right)) descending. Lengths are
/// in characters.
fn generate_merges<'a>(
    vocab: &PyDict,
    scores: &PyDict<'a>,
    budget: &mut Budget,
) -> Result<Merges<'a>, GgufHfError> {
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    for (token, score) in scores.iter() {
        let mut local: Vec<(&str, &str, f64)> = Vec::new();
        for (i, _) in token.char_indices().skip(1) {
            let (l, r) = token.split_at(i);
            if vocab.get(l).is_some() && vocab.get(r).is_some() {
                local.push((l, r, score));
            }
        }
        // Each merge is written out with its two halves: a long token
        // split many ways costs its length squared.
        budget.charge(
            local
                .iter()
                .map(|m| PER_ITEM + 2 * (m.0.len() + m.1.len()) as u64)
                .sum(),
        )?;
        local.sort_by(|a, b| {
            let ka = (vocab.get(a.0).unwrap_or(0.0), vocab.get(a.1).unwrap_or(0.0));
            let kb = (vocab.get(b.0).unwrap_or(0.0), vocab.get(b.1).unwrap_or(0.0));
            ka.partial_cmp(&kb).unwrap_or(std::cmp::Ordering::Equal)
        });
        merges.extend(local);
    }
    let key = |m: &(&str, &str, f64)| (m.2, m.0.chars().count(), m.1.chars().count());
    merges.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.partial_cmp(&ka).unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(merges
        .into_iter()
        .map(|(l, r, _)| (Cow::Borrowed(l), Cow::Borrowed(r)))
        .collect())
}
