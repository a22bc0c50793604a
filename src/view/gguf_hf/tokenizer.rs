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
//!   phi3: Llama's with a Prepend+Replace normalizer and no pre-tokenizer.
//!   The file has no merges: they are rebuilt from the vocabulary and the
//!   scores (gemma: the token order) exactly as transformers'
//!   `generate_merges` does.
//! - `gpt2` (byte-level BPE): `GPT2Tokenizer`'s backend with the file's
//!   merges; the split regex chosen by `tokenizer.ggml.pre`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::GgufHfError;
use crate::catalog::gguf::{GgufMetadata, GgufValue};

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Builder {
    Llama,
    Gemma,
    Phi3,
    ByteLevel,
}

/// One added token.
struct Added {
    id: u64,
    content: String,
    special: bool,
}

/// The tokenizer files for this metadata.
pub fn files(
    meta: &GgufMetadata,
    updated_arch: &str,
    arch: &str,
) -> Result<Vec<(String, String)>, GgufHfError> {
    let model = match meta.get("tokenizer.ggml.model") {
        Some(v) => match v.as_text() {
            Some(s) => s,
            None => {
                return Err(GgufHfError::NotAString {
                    key: "tokenizer.ggml.model".into(),
                    value: v.clone(),
                });
            }
        },
        None => return Err(GgufHfError::NoTokenizer),
    };
    let builder = match (model, arch) {
        ("llama", "gemma" | "gemma2" | "gemma3") => Builder::Gemma,
        ("llama", "phi3") => Builder::Phi3,
        ("llama", _) => Builder::Llama,
        ("gpt2", _) => Builder::ByteLevel,
        (other, _) => {
            return Err(GgufHfError::UnsupportedTokenizer {
                model: other.to_string(),
            });
        }
    };
    let tokens: Vec<String> = match meta.array("tokenizer.ggml.tokens") {
        Some(a) => a
            .values()
            .map(|t| t.as_text().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or(GgufHfError::TokensNotStrings)?,
        None => return Err(GgufHfError::NoTokens),
    };
    let types: Vec<i64> = match meta.array("tokenizer.ggml.token_type") {
        Some(a) => a.values().map(|t| t.as_i64().unwrap_or(0)).collect(),
        None => Vec::new(),
    };
    let id_of = |key: &str| -> Result<Option<u64>, GgufHfError> {
        let key = format!("tokenizer.ggml.{key}");
        match meta.get(&key) {
            None => Ok(None),
            Some(v) => {
                let Some(id) = v.as_u64() else {
                    return Err(GgufHfError::NotATokenId {
                        key,
                        value: v.clone(),
                    });
                };
                if id as usize >= tokens.len() {
                    return Err(GgufHfError::TokenIdPastEnd {
                        key,
                        id,
                        tokens: tokens.len(),
                    });
                }
                Ok(Some(id))
            }
        }
    };
    let special_ids = [
        ("bos", id_of("bos_token_id")?),
        ("eos", id_of("eos_token_id")?),
        ("unk", id_of("unknown_token_id")?),
        ("pad", id_of("padding_token_id")?),
    ];
    let flag = |key: &str| meta.bool(&format!("tokenizer.ggml.{key}"));
    let add_bos = flag("add_bos_token").unwrap_or(model == "llama");
    let add_eos = flag("add_eos_token").unwrap_or(false);

    // ---- vocabulary (a Python dict: first position, last value)
    let spelled: Vec<String> = match builder {
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
        _ => tokens.clone(),
    };
    let vocab = PyDict::from_iter(
        spelled
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as f64)),
    );

    // ---- merges
    let merges: Vec<(String, String)> = match (builder, meta.get("tokenizer.ggml.merges")) {
        (_, Some(GgufValue::Array(a))) => a
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
            .collect::<Result<_, GgufHfError>>()?,
        (_, Some(v)) => {
            return Err(GgufHfError::NotAnArray {
                key: "tokenizer.ggml.merges".into(),
                value: v.clone(),
            });
        }
        (Builder::ByteLevel, None) => return Err(GgufHfError::ByteLevelWithoutMerges),
        (Builder::Gemma, None) => {
            let scores = PyDict::from_iter(
                spelled
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.as_str(), -(i as f64))),
            );
            generate_merges(&vocab, &scores)
        }
        (_, None) => {
            let scores: Vec<f64> = match meta.get("tokenizer.ggml.scores") {
                Some(GgufValue::Array(a)) if a.len() == tokens.len() => a
                    .values()
                    .map(|s| s.as_json_f64().map(|f| f as f32 as f64))
                    .collect::<Option<_>>()
                    .ok_or(GgufHfError::ScoreNotNumber)?,
                Some(_) => return Err(GgufHfError::ScoresNotPerToken),
                None => return Err(GgufHfError::NoScoresOrMerges),
            };
            let scores =
                PyDict::from_iter(spelled.iter().zip(scores).map(|(t, s)| (t.as_str(), s)));
            generate_merges(&vocab, &scores)
        }
    };

    // ---- added tokens, in the order transformers adds them
    let mut added: Vec<Added> = Vec::new();
    let mut next_id = vocab.len() as u64;
    let mut add = |content: &str, special: bool, added: &mut Vec<Added>| {
        if added.iter().any(|a| a.content == content) {
            return;
        }
        let id = match vocab.get(content) {
            Some(i) => i as u64,
            None => {
                next_id += 1;
                next_id - 1
            }
        };
        added.push(Added {
            id,
            content: content.to_string(),
            special,
        });
    };
    // 1. the builder class's own special tokens
    let builder_specials: &[&str] = match builder {
        Builder::Llama | Builder::Phi3 => &["<s>", "</s>", "<unk>"],
        Builder::Gemma => &["<bos>", "<eos>", "<unk>", "<pad>", "<mask>"],
        Builder::ByteLevel => &["<|endoftext|>"],
    };
    for t in builder_specials {
        add(t, true, &mut added);
    }
    // 2. CONTROL tokens as special (byte-level: only those spelled in the byte alphabet)
    let alphabet = byte_alphabet();
    for (t, ty) in tokens.iter().zip(types.iter()) {
        if *ty == CONTROL
            && (builder != Builder::ByteLevel || t.chars().all(|c| alphabet.contains(&c)))
        {
            add(t, true, &mut added);
        }
    }
    // 3. USER_DEFINED tokens, not special
    for (t, ty) in tokens.iter().zip(types.iter()) {
        if *ty == USER_DEFINED && vocab.get(t).is_some() {
            add(t, false, &mut added);
        }
    }
    // 4. the special tokens the tokenizer config names
    let class = outer_class(updated_arch);
    let mut config_tokens: Vec<(&str, Option<String>)> = special_ids
        .iter()
        .map(|(k, id)| (*k, id.map(|i| tokens[i as usize].clone())))
        .collect();
    if class == "GemmaTokenizer" {
        config_tokens.push(("mask", Some("<mask>".into())));
    }
    for key in SPECIAL_ORDER {
        if let Some((_, Some(t))) = config_tokens.iter().find(|(k, _)| *k == key) {
            add(t, true, &mut added);
        }
    }
    added.sort_by_key(|a| a.id);

    // ---- tokenizer.json
    let token_of = |key: &str| {
        config_tokens
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, t)| t.clone())
    };
    let id_in = |t: &str| {
        added
            .iter()
            .find(|a| a.content == t)
            .map(|a| a.id)
            .or(vocab.get(t).map(|i| i as u64))
    };
    let bos = token_of("bos").filter(|_| add_bos);
    let eos = token_of("eos").filter(|_| add_eos);
    let post_processor = template(bos.as_deref(), eos.as_deref(), &id_in)?;
    let vocab_json: Map<String, Value> = vocab
        .iter()
        .map(|(t, i)| (t.to_string(), json!(i as u64)))
        .collect();
    let merges_json: Vec<Value> = merges.iter().map(|(l, r)| json!([l, r])).collect();
    let added_json: Vec<Value> = added
        .iter()
        .map(|a| {
            json!({"id": a.id, "content": a.content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": a.special})
        })
        .collect();
    let replace = |pattern: &str, content: &str| json!({"type": "Replace", "pattern": {"String": pattern}, "content": content});
    let spm_decoder = |strip: bool| {
        let mut d = vec![
            replace("\u{2581}", " "),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if strip {
            d.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }
        json!({"type": "Sequence", "decoders": d})
    };
    let (normalizer, pre_tokenizer, decoder, model) = match builder {
        Builder::Llama | Builder::Phi3 => {
            let model = json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab_json, "merges": merges_json});
            if builder == Builder::Phi3 {
                let n = json!({"type": "Sequence", "normalizers": [
                    {"type": "Prepend", "prepend": "\u{2581}"}, replace(" ", "\u{2581}")]});
                (n, Value::Null, spm_decoder(true), model)
            } else {
                let p = json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false});
                (Value::Null, p, spm_decoder(true), model)
            }
        }
        Builder::Gemma => {
            let model = json!({"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab_json, "merges": merges_json});
            let p = json!({"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false});
            (replace(" ", "\u{2581}"), p, spm_decoder(false), model)
        }
        Builder::ByteLevel => {
            let model = json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab_json, "merges": merges_json});
            let pre = meta.text("tokenizer.ggml.pre");
            let p = match SPLITS.iter().find(|(k, _)| Some(*k) == pre) {
                Some((_, regex)) => json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}),
                None => {
                    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
                }
            };
            let d = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
            (Value::Null, p, d, model)
        }
    };
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added_json,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": post_processor,
        "decoder": decoder, "model": model,
    });

    // ---- tokenizer_config.json
    let mut tc = Map::new();
    tc.insert("backend".into(), "tokenizers".into());
    tc.insert("tokenizer_class".into(), class.into());
    for key in ["bos", "eos", "unk", "pad"] {
        tc.insert(
            format!("{key}_token"),
            token_of(key).map_or(Value::Null, Value::String),
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

    let mut files = vec![
        (
            "tokenizer.json".to_string(),
            crate::json::to_pretty(&tokenizer),
        ),
        (
            "tokenizer_config.json".to_string(),
            crate::json::to_pretty(&Value::Object(tc)),
        ),
    ];
    if let Some(v) = meta.get("tokenizer.chat_template") {
        match v.as_text() {
            Some(t) => files.push(("chat_template.jinja".into(), t.to_string())),
            None => {
                return Err(GgufHfError::NotAString {
                    key: "tokenizer.chat_template".into(),
                    value: v.clone(),
                });
            }
        }
    }
    Ok(files)
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
