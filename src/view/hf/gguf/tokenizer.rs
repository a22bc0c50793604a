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

use std::collections::HashMap;

use serde_json::{Map, Value, json};

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
struct GgufTokenizer {
    builder: Builder,
    /// `tokenizer.ggml.tokens`, the vocabulary in id order.
    tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`, one per token (0 where not an integer;
    /// empty when absent).
    types: Vec<i64>,
    special_ids: SpecialIds,
    /// The post-processor adds the bos / eos token.
    add_bos: bool,
    add_eos: bool,
}

/// One added token.
struct Added {
    id: u64,
    content: String,
    special: bool,
}

/// The tokenizer files for this metadata: `tokenizer.json`,
/// `tokenizer_config.json`, and `chat_template.jinja` where the file has a
/// template.
pub fn files(
    meta: &GgufMetadata,
    updated_arch: &str,
    arch: &str,
) -> Result<Vec<(String, String)>, GgufHfError> {
    let tok = GgufTokenizer::read(meta, arch)?;
    let spelled = spelled_vocabulary(tok.builder, &tok.tokens);
    // a Python dict: a repeated token keeps its first position, its last id
    let vocab = PyDict::from_iter(
        spelled
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as f64)),
    );
    let merges = merges(meta, tok.builder, &spelled, &vocab)?;
    let class = outer_class(updated_arch);
    let config_tokens = config_tokens(&tok, class);
    let added = added_tokens(&tok, &vocab, &config_tokens);
    let pre = meta.text("tokenizer.ggml.pre");
    let tokenizer = tokenizer_json(&tok, &vocab, &merges, &added, &config_tokens, pre)?;
    let mut files = vec![
        (
            "tokenizer.json".to_string(),
            crate::json::to_pretty(&tokenizer),
        ),
        (
            "tokenizer_config.json".to_string(),
            crate::json::to_pretty(&tokenizer_config(class, &config_tokens)),
        ),
    ];
    if let Some(template) = chat_template(meta)? {
        files.push(("chat_template.jinja".into(), template));
    }
    Ok(files)
}

impl GgufTokenizer {
    /// Read the tokenizer's model, vocabulary, token types, special token
    /// ids and `add_*_token` flags (the GGUF `arch` picks the builder).
    fn read(meta: &GgufMetadata, arch: &str) -> Result<GgufTokenizer, GgufHfError> {
        let model = model(meta)?;
        let builder = builder(model, arch)?;
        let tokens = tokens(meta)?;
        let types: Vec<i64> = match meta.array("tokenizer.ggml.token_type") {
            Some(a) => a.values().map(|t| t.as_i64().unwrap_or(0)).collect(),
            None => Vec::new(),
        };
        let special_ids = [
            ("bos", token_id(meta, "bos_token_id", tokens.len())?),
            ("eos", token_id(meta, "eos_token_id", tokens.len())?),
            ("unk", token_id(meta, "unknown_token_id", tokens.len())?),
            ("pad", token_id(meta, "padding_token_id", tokens.len())?),
        ];
        let flag = |key: &str| meta.bool(&format!("tokenizer.ggml.{key}"));
        Ok(GgufTokenizer {
            builder,
            tokens,
            types,
            special_ids,
            add_bos: flag("add_bos_token").unwrap_or(model == "llama"),
            add_eos: flag("add_eos_token").unwrap_or(false),
        })
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

/// `tokenizer.ggml.tokens`: the vocabulary in id order.
fn tokens(meta: &GgufMetadata) -> Result<Vec<String>, GgufHfError> {
    match meta.array("tokenizer.ggml.tokens") {
        Some(a) => a
            .values()
            .map(|t| t.as_text().map(str::to_string))
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
fn spelled_vocabulary(builder: Builder, tokens: &[String]) -> Vec<String> {
    match builder {
        Builder::Gemma => tokens
            .iter()
            .map(|t| {
                if t.contains(' ') && t.chars().all(py_isspace) {
                    "\u{2581}".repeat(t.chars().count())
                } else {
                    t.clone()
                }
            })
            .collect(),
        Builder::ByteLevel => {
            let alphabet = byte_alphabet();
            tokens
                .iter()
                .map(|t| {
                    if t.chars().all(|c| alphabet.contains(&c)) {
                        t.clone()
                    } else {
                        t.bytes().map(|b| alphabet[b as usize]).collect()
                    }
                })
                .collect()
        }
        _ => tokens.to_vec(),
    }
}

/// The BPE merges: the file's (`tokenizer.ggml.merges`), or, for a
/// SentencePiece tokenizer without them, rebuilt from the vocabulary and
/// the scores (gemma: the token order) as transformers does.
fn merges(
    meta: &GgufMetadata,
    builder: Builder,
    spelled: &[String],
    vocab: &PyDict,
) -> Result<Vec<(String, String)>, GgufHfError> {
    match (builder, meta.get("tokenizer.ggml.merges")) {
        (_, Some(GgufValue::Array(a))) => file_merges(a),
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
                    .map(|(i, t)| (t.as_str(), -(i as f64))),
            );
            Ok(generate_merges(vocab, &scores))
        }
        (_, None) => {
            let scores = sentencepiece_scores(meta, spelled.len())?;
            let scores =
                PyDict::from_iter(spelled.iter().zip(scores).map(|(t, s)| (t.as_str(), s)));
            Ok(generate_merges(vocab, &scores))
        }
    }
}

/// The merges of `tokenizer.ggml.merges`: each `left right`.
fn file_merges(merges: &GgufArray) -> Result<Vec<(String, String)>, GgufHfError> {
    merges
        .values()
        .map(|m| {
            let s = m.as_text().ok_or(GgufHfError::MergeNotString)?;
            let parts: Vec<&str> = s.split(' ').collect();
            match parts[..] {
                [l, r] => Ok((l.to_string(), r.to_string())),
                _ => Err(GgufHfError::BadMerge {
                    merge: s.to_string(),
                }),
            }
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
fn config_tokens(tok: &GgufTokenizer, class: &str) -> ConfigTokens {
    let mut config_tokens: ConfigTokens = tok
        .special_ids
        .iter()
        .map(|(k, id)| (*k, id.map(|i| tok.tokens[i as usize].clone())))
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
/// post-processor adding bos / eos, and the BPE model.
fn tokenizer_json(
    tok: &GgufTokenizer,
    vocab: &PyDict,
    merges: &[(String, String)],
    added: &[Added],
    config_tokens: &ConfigTokens,
    pre: Option<&str>,
) -> Result<Value, GgufHfError> {
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
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added_json,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": post_processor,
        "decoder": decoder, "model": bpe_model(tok.builder, vocab, merges),
    }))
}

/// The builder's BPE `model`: its options, the vocabulary and the merges.
fn bpe_model(builder: Builder, vocab: &PyDict, merges: &[(String, String)]) -> Value {
    let vocab_json: Map<String, Value> = vocab
        .iter()
        .map(|(t, i)| (t.to_string(), json!(i as u64)))
        .collect();
    let merges_json: Vec<Value> = merges.iter().map(|(l, r)| json!([l, r])).collect();
    match builder {
        Builder::Llama => {
            json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab_json, "merges": merges_json})
        }
        Builder::Gemma => {
            json!({"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab_json, "merges": merges_json})
        }
        Builder::ByteLevel => {
            json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab_json, "merges": merges_json})
        }
    }
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
fn generate_merges(vocab: &PyDict, scores: &PyDict) -> Vec<(String, String)> {
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    for (token, score) in scores.iter() {
        let mut local: Vec<(&str, &str, f64)> = Vec::new();
        for (i, _) in token.char_indices().skip(1) {
            let (l, r) = token.split_at(i);
            if vocab.get(l).is_some() && vocab.get(r).is_some() {
                local.push((l, r, score));
            }
        }
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
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect()
}
