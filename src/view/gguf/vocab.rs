//! `tokenizer.ggml.*`: the vocabulary as llama.cpp's converter writes it
//! (docs/GGUF_OUT.md, "Tokenizer"):
//! - SentencePiece (`tokenizer.model`, a protobuf): tokens, scores and token
//!   types from its pieces, then `added_tokens.json` and the tokenizer
//!   config's `added_tokens_decoder`; model `llama`, pre `default`;
//! - byte-level BPE (`tokenizer.json`): tokens in id order (missing ids are
//!   `[PADn]`), types from the added tokens, merges; model `gpt2`, pre the
//!   llama.cpp pre-tokenizer whose split rules are the tokenizer's own;
//! - then the special tokens, flags and chat template (`special`).

use std::collections::HashMap;

use serde_json::Value;

use crate::catalog::gguf::{GgufArray, GgufValue};
use crate::view::gguf::special::{Files, SpecialVocab};
use crate::view::gguf::writer::Kv;

/// llama.cpp token types.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}
use token_type::*;

/// Which vocabulary path an architecture takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Llama's: `add_space_prefix` first when the tokenizer config says,
    /// then as [`Path::SentencePieceOrBpe`].
    Llama,
    /// `tokenizer.model` if there is one, else `tokenizer.json` as BPE.
    SentencePieceOrBpe,
    /// `tokenizer.model` (required), then `add_space_prefix = false` at
    /// the end (gemma2).
    GemmaSentencePiece,
    /// [`Path::GemmaSentencePiece`] if there is a `tokenizer.model`, else
    /// `tokenizer.json` as BPE (gemma3).
    GemmaOrBpe,
    /// Phi-3's own SentencePiece loop (or BPE for a GPT-2 tokenizer class).
    Phi3,
    /// `tokenizer.json` as BPE.
    Bpe,
}

/// A tokenizer's files, parsed.
pub struct Inputs<'a> {
    pub files: Files<'a>,
    pub tokenizer_model: Option<&'a [u8]>,
    pub added_tokens_json: Option<&'a Value>,
    /// `vocab_size` from the config (the model's), if any.
    pub vocab_size: Option<u64>,
}

/// Write the vocabulary keys for `path`.
pub fn write(path: Path, inputs: &Inputs, kv: &mut Kv) -> Result<(), String> {
    match path {
        Path::Llama => {
            let prefix = inputs
                .files
                .tokenizer_config
                .and_then(|c| c.get("add_prefix_space"))
                .and_then(Value::as_bool);
            if let Some(p) = prefix {
                kv.bool("tokenizer.ggml.add_space_prefix", p);
            }
            write(Path::SentencePieceOrBpe, inputs, kv)
        }
        Path::Bpe => bpe(inputs, kv),
        Path::SentencePieceOrBpe => match inputs.tokenizer_model {
            Some(_) => sentencepiece(inputs, kv, false),
            None => bpe(inputs, kv),
        },
        Path::GemmaSentencePiece => {
            sentencepiece(inputs, kv, false)?;
            kv.bool("tokenizer.ggml.add_space_prefix", false);
            Ok(())
        }
        Path::GemmaOrBpe => match inputs.tokenizer_model {
            Some(_) => write(Path::GemmaSentencePiece, inputs, kv),
            None => bpe(inputs, kv),
        },
        Path::Phi3 => {
            let class = inputs
                .files
                .tokenizer_config
                .and_then(|c| c.get("tokenizer_class"))
                .and_then(Value::as_str);
            match class {
                Some("GPT2Tokenizer") => bpe(inputs, kv),
                _ => sentencepiece(inputs, kv, true),
            }
        }
    }
}

/// One SentencePiece piece: text, score, protobuf type.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub text: String,
    pub score: f32,
    pub kind: i32,
}

/// The pieces of a SentencePiece `ModelProto` (field 1, each a message
/// with `piece` 1, `score` 2, `type` 3); everything else is skipped.
pub fn pieces(model: &[u8]) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut r = Reader { b: model, at: 0 };
    while !r.done() {
        let (field, wire) = r.key()?;
        if field == 1 && wire == 2 {
            let msg = r.bytes()?;
            out.push(piece(msg)?);
        } else {
            r.skip(wire)?;
        }
    }
    Ok(out)
}

fn piece(msg: &[u8]) -> Result<Piece, String> {
    let mut p = Piece {
        text: String::new(),
        score: 0.0,
        kind: 1,
    };
    let mut r = Reader { b: msg, at: 0 };
    while !r.done() {
        match r.key()? {
            (1, 2) => {
                p.text = String::from_utf8(r.bytes()?.to_vec())
                    .map_err(|_| "a piece is not UTF-8".to_string())?
            }
            (2, 5) => p.score = f32::from_le_bytes(r.fixed::<4>()?),
            (3, 0) => p.kind = r.varint()? as i32,
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok(p)
}

/// A protobuf wire-format reader (no allocation, every length checked).
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at >= self.b.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.at).ok_or("tokenizer.model is truncated")?;
            self.at += 1;
            v |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("tokenizer.model has a varint over 64 bits".into())
    }

    fn key(&mut self) -> Result<(u64, u8), String> {
        let k = self.varint()?;
        Ok((k >> 3, (k & 7) as u8))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or("tokenizer.model is truncated")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| "tokenizer.model: length too large")?)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.take(8).map(|_| ()),
            2 => self.bytes().map(|_| ()),
            5 => self.take(4).map(|_| ()),
            w => Err(format!("tokenizer.model: unsupported wire type {w}")),
        }
    }
}

/// Does an added token look like a control token though not marked special
/// (`does_token_look_special`)?
pub fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// The SentencePiece vocabulary (`phi3`: Phi-3's variant).
fn sentencepiece(inputs: &Inputs, kv: &mut Kv, phi3: bool) -> Result<(), String> {
    let model = inputs.tokenizer_model.ok_or("no tokenizer.model")?;
    let sp = pieces(model)?;
    let n = inputs.vocab_size.unwrap_or(sp.len() as u64) as usize;
    let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000f32; n];
    let mut types = vec![UNUSED; n];
    for (id, p) in sp.iter().enumerate() {
        if id >= n {
            if phi3 {
                return Err(format!(
                    "tokenizer.model has piece {id}, past vocab_size {n}"
                ));
            }
            break;
        }
        tokens[id] = p.text.clone();
        scores[id] = p.score;
        types[id] = match p.kind {
            2 => UNKNOWN,
            3 => CONTROL,
            5 => UNUSED,
            6 => BYTE,
            _ => NORMAL,
        };
    }
    if let Some(Value::Object(added)) = inputs.added_tokens_json {
        for (text, id) in added {
            let Some(id) = id.as_u64().map(|i| i as usize).filter(|&i| i < n) else {
                continue;
            };
            tokens[id] = text.clone();
            scores[id] = -1000.0;
            types[id] = USER_DEFINED;
        }
    }
    let decoder = inputs
        .files
        .tokenizer_config
        .and_then(|c| c.get("added_tokens_decoder"))
        .and_then(Value::as_object);
    let mut apply = |id: usize, content: &str, special: bool| {
        if id >= n {
            return;
        }
        let (text, ty) = if phi3 {
            let ty = if special { CONTROL } else { USER_DEFINED };
            (content.to_string(), ty)
        } else if special || looks_special(content) {
            (content.to_string(), CONTROL)
        } else {
            (content.replace('\u{2581}', " "), USER_DEFINED)
        };
        tokens[id] = text;
        scores[id] = -1000.0;
        types[id] = ty;
    };
    for (id, data) in decoder.into_iter().flatten() {
        let (Ok(id), Some(content)) = (
            id.parse::<usize>(),
            data.get("content").and_then(Value::as_str),
        ) else {
            continue;
        };
        let special = data.get("special").and_then(Value::as_bool) == Some(true);
        apply(id, content, special);
    }
    if phi3 {
        let added = inputs
            .files
            .tokenizer_json
            .and_then(|t| t.get("added_tokens"))
            .and_then(Value::as_array);
        for a in added.into_iter().flatten() {
            let (Some(id), Some(content)) = (
                a.get("id").and_then(Value::as_u64),
                a.get("content").and_then(Value::as_str),
            ) else {
                continue;
            };
            let special = a.get("special").and_then(Value::as_bool) == Some(true);
            apply(id as usize, content, special);
        }
    }
    kv.str("tokenizer.ggml.model", "llama");
    kv.str("tokenizer.ggml.pre", "default");
    kv.set(
        "tokenizer.ggml.tokens",
        GgufValue::Array(GgufArray::String(tokens.into_iter().collect())),
    );
    kv.set(
        "tokenizer.ggml.scores",
        GgufValue::Array(GgufArray::F32(scores)),
    );
    kv.set(
        "tokenizer.ggml.token_type",
        GgufValue::Array(GgufArray::I32(types)),
    );
    SpecialVocab::load(&inputs.files, Some(n as u64), false).write(kv);
    Ok(())
}

/// The byte-level BPE vocabulary of `tokenizer.json`.
fn bpe(inputs: &Inputs, kv: &mut Kv) -> Result<(), String> {
    let t = inputs.files.tokenizer_json.ok_or("no tokenizer.json")?;
    let model = t.get("model").ok_or("tokenizer.json has no model")?;
    if model.get("type").and_then(Value::as_str) != Some("BPE") {
        return Err("tokenizer.json is not a BPE model".into());
    }
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or("tokenizer.json has no vocab")?;
    let mut by_id: HashMap<u64, (String, i32)> = HashMap::new();
    for (tok, id) in vocab {
        if let Some(id) = id.as_u64() {
            by_id.insert(id, (tok.clone(), NORMAL));
        }
    }
    for a in t
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(content)) = (
            a.get("id").and_then(Value::as_u64),
            a.get("content").and_then(Value::as_str),
        ) else {
            continue;
        };
        let special = a.get("special").and_then(Value::as_bool) == Some(true);
        let (text, ty) = if special || looks_special(content) {
            (content.to_string(), CONTROL)
        } else {
            (content.replace('\u{2581}', " "), USER_DEFINED)
        };
        by_id.insert(id, (text, ty));
    }
    let max = by_id.keys().max().copied();
    let n = inputs.vocab_size.unwrap_or(by_id.len() as u64);
    if max.is_some_and(|m| m >= n) {
        return Err(format!(
            "tokenizer.json has token id {} but vocab_size is {n}",
            max.unwrap_or(0)
        ));
    }
    let (mut tokens, mut types) = (
        Vec::with_capacity(n as usize),
        Vec::with_capacity(n as usize),
    );
    for i in 0..n {
        match by_id.remove(&i) {
            Some((tok, ty)) => {
                tokens.push(tok);
                types.push(ty);
            }
            None => {
                tokens.push(format!("[PAD{i}]"));
                types.push(UNUSED);
            }
        }
    }
    let pre = pre_tokenizer(t)?;
    kv.str("tokenizer.ggml.model", "gpt2");
    kv.str("tokenizer.ggml.pre", pre);
    kv.set(
        "tokenizer.ggml.tokens",
        GgufValue::Array(GgufArray::String(tokens.into_iter().collect())),
    );
    kv.set(
        "tokenizer.ggml.token_type",
        GgufValue::Array(GgufArray::I32(types)),
    );
    let special = SpecialVocab::load(&inputs.files, None, true);
    special.write(kv);
    Ok(())
}

/// The split regex of GPT-2's byte-level pre-tokenizer.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Qwen2's split regex.
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split regex.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// o200k's (GPT-4o, gpt-oss).
const O200K: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The llama.cpp pre-tokenizer whose split rules are the tokenizer's own
/// (the converter names a tokenizer by a hash of how it tokenizes a fixed
/// text; for the tokenizers of these families the rules decide the same
/// name: docs/GGUF_OUT.md).
pub fn pre_tokenizer(t: &Value) -> Result<&'static str, String> {
    let pre = t
        .get("pre_tokenizer")
        .ok_or("tokenizer.json has no pre_tokenizer")?;
    let parts: Vec<&Value> = match pre.get("type").and_then(Value::as_str) {
        Some("Sequence") => pre
            .get("pretokenizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ => vec![pre],
    };
    fn kind(v: &Value) -> &str {
        v.get("type").and_then(Value::as_str).unwrap_or("")
    }
    let regex = parts.iter().find(|p| kind(p) == "Split").and_then(|p| {
        p.get("pattern")
            .and_then(|pat| pat.get("Regex"))
            .and_then(Value::as_str)
    });
    let byte_level = parts.iter().find(|p| kind(p) == "ByteLevel");
    let uses_regex = byte_level
        .and_then(|b| b.get("use_regex"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    match (regex, byte_level) {
        (None, Some(_)) if uses_regex && parts.len() == 1 => Ok("gpt-2"),
        (Some(r), Some(_)) if !uses_regex => match r {
            r if r == QWEN2 => Ok(qwen2_variant(t)),
            r if r == LLAMA3 => Ok("llama-bpe"),
            r if r == O200K => Ok("gpt-4o"),
            r if r == GPT2 => Ok("gpt-2"),
            r => Err(format!(
                "its tokenizer.json splits with a regex llama.cpp has no pre-tokenizer for: {r}"
            )),
        },
        _ => Err(format!(
            "its tokenizer.json pre_tokenizer ({pre}) is not one llama.cpp's converter knows"
        )),
    }
}

/// DeepSeek-R1-Distill-Qwen's id of `<｜begin▁of▁sentence｜>`.
const R1_QWEN_BOS: u64 = 151646;

/// The name the converter gives a tokenizer with Qwen2's split rules: its
/// hash is of the Qwen ids of its check text and of what the post-processor
/// adds, so a template that puts DeepSeek-R1-Distill-Qwen's BOS (id 151646)
/// first hashes to `deepseek-r1-qwen` (`b3f499bb...`); none, or Qwen3
/// Embedding's EOS last, to `qwen2`. (llama.cpp reads both names alike.)
fn qwen2_variant(t: &Value) -> &'static str {
    let Some(pp) = t.get("post_processor").filter(|p| !p.is_null()) else {
        return "qwen2";
    };
    let list: Vec<&Value> = match pp.get("processors").and_then(Value::as_array) {
        Some(l) => l.iter().collect(),
        None => vec![pp],
    };
    let leading = |p: &Value| -> Option<Vec<u64>> {
        if p.get("type").and_then(Value::as_str) != Some("TemplateProcessing") {
            return None;
        }
        let name = p
            .get("single")?
            .as_array()?
            .first()?
            .get("SpecialToken")?
            .get("id")?;
        let ids = p.get("special_tokens")?.get(name.as_str()?)?.get("ids")?;
        ids.as_array()?.iter().map(Value::as_u64).collect()
    };
    if list
        .iter()
        .any(|p| leading(p).as_deref() == Some(&[R1_QWEN_BOS]))
    {
        "deepseek-r1-qwen"
    } else {
        "qwen2"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn protobuf_pieces() {
        // ModelProto { pieces: [{piece: "▁a", score: -1.5, type: 3}, {piece: "b"}] }
        let mut msg = Vec::new();
        let p1 = [
            &[0x0A, 4][..],
            "▁a".as_bytes(),
            &[0x15],
            &(-1.5f32).to_le_bytes(),
            &[0x18, 3],
        ]
        .concat();
        msg.extend_from_slice(&[0x0A, p1.len() as u8]);
        msg.extend_from_slice(&p1);
        msg.extend_from_slice(&[0x0A, 3, 0x0A, 1, b'b']);
        // A trainer spec (field 2) is skipped.
        msg.extend_from_slice(&[0x12, 2, 0x08, 1]);
        let ps = pieces(&msg).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].text, "▁a");
        assert_eq!(ps[0].score, -1.5);
        assert_eq!(ps[0].kind, 3);
        assert_eq!(ps[1].kind, 1);
        assert!(pieces(&[0x0A, 9, 1]).is_err());
    }

    #[test]
    fn pre_tokenizers_by_split_rules() {
        let seq = |re: &str| {
            json!({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated"},
                {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]}})
        };
        assert_eq!(pre_tokenizer(&seq(QWEN2)).unwrap(), "qwen2");
        // DeepSeek-R1-Distill-Qwen: the Qwen rules, its BOS put first.
        let mut r1 = seq(QWEN2);
        let bos = "<\u{ff5c}begin\u{2581}of\u{2581}sentence\u{ff5c}>";
        r1["post_processor"] = json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "special_tokens": {bos: {"id": bos, "ids": [151646], "tokens": [bos]}}});
        assert_eq!(pre_tokenizer(&r1).unwrap(), "deepseek-r1-qwen");
        r1["post_processor"]["special_tokens"][bos]["ids"] = json!([151643]);
        assert_eq!(pre_tokenizer(&r1).unwrap(), "qwen2");
        assert_eq!(pre_tokenizer(&seq(LLAMA3)).unwrap(), "llama-bpe");
        assert_eq!(pre_tokenizer(&seq(O200K)).unwrap(), "gpt-4o");
        assert!(pre_tokenizer(&seq("x+")).is_err());
        let gpt2 = json!({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}});
        assert_eq!(pre_tokenizer(&gpt2).unwrap(), "gpt-2");
    }
}
