//! Special tokens, add-BOS/EOS flags, merges and the chat template, found as
//! gguf-py's `SpecialVocab` finds them (`gguf/vocab.py`; docs/GGUF_OUT.md,
//! "Tokenizer"): from `tokenizer.json` (merges, normalizer, post-processor,
//! added tokens) and `tokenizer_config.json` (flags, token contents, chat
//! template), then the ids in `config.json`.

use serde_json::{Map, Value};

use crate::catalog::gguf::{GgufArray, GgufValue};
use crate::view::gguf::writer::Kv;

/// What `SpecialVocab` found.
#[derive(Debug, Default)]
pub struct SpecialVocab {
    /// Token type -> id, in the order they were first set.
    ids: Vec<(String, u64)>,
    /// `bos`, `eos`, `sep` -> whether to add it, in the order first set.
    add: Vec<(String, bool)>,
    pub merges: Vec<String>,
    chat_template: Option<Value>,
    lowercase: Option<bool>,
    strip_accents: Option<bool>,
    types: Vec<String>,
    n_vocab: Option<u64>,
}

/// The files `SpecialVocab` reads (parsed; `None` when absent).
#[derive(Debug, Default)]
pub struct Files<'a> {
    pub tokenizer_json: Option<&'a Value>,
    pub tokenizer_config: Option<&'a Value>,
    pub config: Option<&'a Value>,
    /// `chat_template.jinja`, as text.
    pub chat_template_jinja: Option<&'a str>,
    /// `chat_template.json`.
    pub chat_template_json: Option<&'a Value>,
    /// `merges.txt`, as text.
    pub merges_txt: Option<&'a str>,
}

impl SpecialVocab {
    /// Load what the files say (`n_vocab`: ids at or past it are skipped;
    /// `merges`: read merges too, as BPE vocabularies do).
    pub fn load(files: &Files, n_vocab: Option<u64>, merges: bool) -> SpecialVocab {
        let mut s = SpecialVocab {
            types: ["bos", "eos", "unk", "sep", "pad", "cls", "mask"]
                .map(String::from)
                .to_vec(),
            n_vocab,
            ..SpecialVocab::default()
        };
        s.read_tokenizer_json(files, merges);
        s.read_config_json(files.config);
        if merges && s.merges.is_empty() {
            s.merges_txt(files.merges_txt);
        }
        s
    }

    /// Write the keys (`add_to_gguf`): merges, ids, add flags, chat
    /// template, normalizer flags.
    pub fn write(&self, kv: &mut Kv) {
        if !self.merges.is_empty() {
            kv.set(
                "tokenizer.ggml.merges",
                GgufValue::Array(GgufArray::String(self.merges.iter().collect())),
            );
        }
        for (typ, id) in &self.ids {
            let key = match typ.as_str() {
                "bos" => "bos_token_id",
                "eos" => "eos_token_id",
                "unk" => "unknown_token_id",
                "sep" => "seperator_token_id",
                "pad" => "padding_token_id",
                "mask" => "mask_token_id",
                "eot" => "eot_token_id",
                "eom" => "eom_token_id",
                _ => continue,
            };
            kv.u32(&format!("tokenizer.ggml.{key}"), *id as u32);
        }
        for (typ, v) in &self.add {
            if matches!(typ.as_str(), "bos" | "eos" | "sep") {
                kv.bool(&format!("tokenizer.ggml.add_{typ}_token"), *v);
            }
        }
        match &self.chat_template {
            Some(Value::String(t)) => kv.str("tokenizer.chat_template", t),
            Some(Value::Array(list)) => chat_templates(kv, list),
            _ => {}
        }
        if let Some(v) = self.lowercase {
            kv.bool("tokenizer.ggml.normalizer.lowercase", v);
        }
        if let Some(v) = self.strip_accents {
            kv.bool("tokenizer.ggml.normalizer.strip_accents", v);
        }
    }

    fn set_add(&mut self, typ: &str, v: bool, overwrite: bool) {
        match self.add.iter_mut().find(|(t, _)| t == typ) {
            Some(e) if overwrite => e.1 = v,
            Some(_) => {}
            None => self.add.push((typ.to_string(), v)),
        }
    }

    fn has_add(&self, typ: &str) -> bool {
        self.add.iter().any(|(t, _)| t == typ)
    }

    fn set_special(&mut self, typ: &str, id: Option<&Value>) {
        // Python's `isinstance(tid, int)`: a JSON integer (negatives refused
        // by the converter with an error; left out here).
        let Some(id) = id.and_then(Value::as_u64) else {
            return;
        };
        if self.n_vocab.is_some_and(|n| id >= n) || self.ids.iter().any(|(t, _)| t == typ) {
            return;
        }
        self.ids.push((typ.to_string(), id));
    }

    fn merges_txt(&mut self, text: Option<&str>) {
        let Some(text) = text else { return };
        let mut lines = text.lines().peekable();
        if lines.peek().is_some_and(|l| l.trim().starts_with('#')) {
            lines.next();
        }
        for line in lines {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() == 2 {
                self.merges.push(format!("{} {}", parts[0], parts[1]));
            }
        }
    }

    fn normalizer(&mut self, n: &Value) {
        match n.get("type").and_then(Value::as_str) {
            Some("Lowercase") => self.lowercase = Some(true),
            Some("StripAccents") => self.strip_accents = Some(true),
            Some("BertNormalizer") => {
                if let Some(v) = n.get("lowercase").and_then(Value::as_bool) {
                    self.lowercase = Some(v);
                }
                if let Some(v) = n.get("strip_accents").and_then(Value::as_bool) {
                    self.strip_accents = Some(v);
                }
            }
            Some("Sequence") => {
                for m in n
                    .get("normalizers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.normalizer(m);
                }
            }
            _ => {}
        }
    }

    fn read_tokenizer_json(&mut self, files: &Files, merges: bool) {
        let tokenizer = files.tokenizer_json;
        let mut added: &[Value] = &[];
        if let Some(t) = tokenizer {
            if merges && let Some(Value::Array(m)) = t.get("model").and_then(|m| m.get("merges")) {
                self.merges = merge_strings(m);
            }
            if let Some(n) = t.get("normalizer").filter(|n| !n.is_null()) {
                self.normalizer(n);
            }
            added = t
                .get("added_tokens")
                .and_then(Value::as_array)
                .map_or(&[], Vec::as_slice);
        }
        let mut config: Option<Map<String, Value>> =
            files.tokenizer_config.and_then(Value::as_object).cloned();
        if let Some(t) = tokenizer {
            self.post_processor(t, &mut config);
        }
        // `if not tokenizer_config: return` (an empty one too).
        let Some(config) = config.filter(|c| !c.is_empty()) else {
            return;
        };
        let alt = match (files.chat_template_jinja, files.chat_template_json) {
            (Some(j), _) => Some(Value::String(j.to_string())),
            (None, Some(j)) => j.get("chat_template").cloned(),
            _ => None,
        };
        let template = config.get("chat_template").cloned().or(alt);
        if matches!(template, Some(Value::String(_) | Value::Array(_))) {
            self.chat_template = template;
        }
        for typ in self.types.clone() {
            if let Some(v) = config
                .get(&format!("add_{typ}_token"))
                .and_then(Value::as_bool)
                && !self.has_add(&typ)
            {
                self.set_add(&typ, v, false);
            }
            let content = match config.get(&format!("{typ}_token")) {
                Some(Value::String(s)) => s.as_str(),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => s.as_str(),
                    _ => continue,
                },
                _ => continue,
            };
            let id = added
                .iter()
                .find(|a| a.get("content").and_then(Value::as_str) == Some(content))
                .and_then(|a| a.get("id"));
            self.set_special(&typ, id);
        }
    }

    /// What the post-processor says about add-BOS/EOS/SEP (and, for a
    /// template ending in another token than the EOS, which is the EOS).
    fn post_processor(&mut self, t: &Value, config: &mut Option<Map<String, Value>>) {
        // The tokenizer config's entries as Python sees them: truthy values
        // (a string, or an AddedToken dict), compared by equality.
        let entry = |c: &Option<Map<String, Value>>, k: &str| -> Option<Value> {
            c.as_ref()?.get(k).filter(|v| truthy(v)).cloned()
        };
        let s = |v: &str| Some(Value::String(v.to_string()));
        let mut bos = entry(config, "bos_token");
        let mut cls = entry(config, "cls_token");
        let mut eos = entry(config, "eos_token");
        let mut sep = entry(config, "sep_token");
        let has_config = config.as_ref().is_some_and(|c| !c.is_empty());
        let set = |c: &mut Option<Map<String, Value>>, k: &str, v: &Value| {
            if let Some(c) = c.as_mut() {
                c.insert(k.to_string(), v.clone());
            }
        };
        if bos.is_none()
            && has_config
            && let Some(c) = cls.clone()
        {
            set(config, "bos_token", &c);
            bos = Some(c);
        }
        if eos.is_none()
            && has_config
            && let Some(v) = sep.clone()
        {
            set(config, "eos_token", &v);
            eos = Some(v);
        }
        let Some(pp) = t.get("post_processor").filter(|p| !p.is_null()) else {
            return;
        };
        let list: Vec<&Value> = match pp.get("processors").and_then(Value::as_array) {
            Some(l) => l.iter().collect(),
            None => vec![pp],
        };
        let special = |v: &Value| -> Option<String> {
            v.get("SpecialToken")?
                .get("id")?
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        for p in list {
            match p.get("type").and_then(Value::as_str) {
                Some("ByteLevel") => {
                    self.set_add("bos", false, false);
                    self.set_add("eos", false, false);
                }
                Some("RobertaProcessing") => {
                    for typ in ["bos", "eos", "sep"] {
                        self.set_add(typ, true, true);
                    }
                    let first = |k: &str| {
                        p.get(k)
                            .and_then(Value::as_array)
                            .and_then(|a| a.first())
                            .cloned()
                    };
                    if cls.is_none() && has_config {
                        let c = first("cls").or(bos.clone()).unwrap_or(Value::Null);
                        set(config, "cls_token", &c);
                        cls = Some(c).filter(truthy);
                    }
                    if sep.is_none() && has_config {
                        let v = first("sep").or(eos.clone()).unwrap_or(Value::Null);
                        set(config, "sep_token", &v);
                        sep = Some(v).filter(truthy);
                    }
                }
                Some("TemplateProcessing") => {
                    let single: &[Value] = p
                        .get("single")
                        .and_then(Value::as_array)
                        .map_or(&[], Vec::as_slice);
                    let pair: &[Value] = p
                        .get("pair")
                        .and_then(Value::as_array)
                        .map_or(&[], Vec::as_slice);
                    let mut first = None;
                    let mut last = None;
                    if single.len() > 1 {
                        first = special(&single[0]);
                        if let Some(f) = &first {
                            let fv = s(f);
                            if !has_config {
                                bos = fv.clone();
                            } else if fv != bos && fv != cls {
                                if bos.is_none() {
                                    set(config, "bos_token", &Value::String(f.clone()));
                                    bos = fv.clone();
                                }
                                if cls.is_none() {
                                    set(config, "cls_token", &Value::String(f.clone()));
                                    cls = fv.clone();
                                }
                            }
                            self.set_add("bos", fv == bos || fv == cls, true);
                        }
                        last = special(&single[single.len() - 1]);
                        if let Some(l) = &last {
                            let lv = s(l);
                            if !has_config {
                                eos = lv.clone();
                            } else if lv != eos {
                                let old = eos.clone().unwrap_or(Value::Null);
                                if !self.types.iter().any(|t| t == "eot") {
                                    self.types.push("eot".into());
                                    set(config, "eot_token", &old);
                                } else if !self.types.iter().any(|t| t == "eom") {
                                    self.types.push("eom".into());
                                    set(config, "eom_token", &old);
                                }
                                set(config, "eos_token", &Value::String(l.clone()));
                                eos = lv.clone();
                            }
                            self.set_add("eos", lv == eos, true);
                        }
                    }
                    if !pair.is_empty() {
                        let ends = (first.map(Value::String), last.map(Value::String));
                        self.pair_template(pair, &ends, &sep, &eos, config, has_config);
                    }
                }
                _ => {}
            }
        }
    }

    /// `add_sep_token` from the pair template `A [sep] [eos] B` (`ends`:
    /// the single template's leading and trailing special tokens).
    fn pair_template(
        &mut self,
        pair: &[Value],
        ends: &(Option<Value>, Option<Value>),
        sep: &Option<Value>,
        eos: &Option<Value>,
        config: &mut Option<Map<String, Value>>,
        has_config: bool,
    ) {
        let (first, last) = ends;
        let special = |v: &Value| -> Option<Value> {
            v.get("SpecialToken")?
                .get("id")?
                .as_str()
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
        };
        let seq = |v: &Value| -> Option<String> {
            v.get("Sequence")?.get("id")?.as_str().map(str::to_string)
        };
        let start = usize::from(first.is_some() && special(&pair[0]) == *first);
        let stop = if last.is_some() && special(&pair[pair.len() - 1]) == *last {
            pair.len() - 1
        } else {
            pair.len()
        };
        if start >= stop {
            return;
        }
        let inner = &pair[start..stop];
        let (a, b) = (seq(&inner[0]), seq(&inner[inner.len() - 1]));
        if a.as_deref() != Some("A") || b.as_deref() != Some("B") || inner.len() < 3 {
            return;
        }
        let mid = &inner[1..inner.len() - 1];
        let is_sep = |t: &Option<Value>| t.is_some() && (t == sep || t == eos);
        let mut add_sep = false;
        if is_sep(&special(&mid[0])) && last.is_none() {
            add_sep = true;
        }
        if mid.len() == 2 && is_sep(&special(&mid[1])) {
            add_sep = true;
        }
        self.set_add("sep", add_sep, true);
        if add_sep
            && sep.is_none()
            && has_config
            && let Some(e) = eos
            && let Some(c) = config.as_mut()
        {
            c.insert("sep_token".into(), e.clone());
        }
    }

    fn read_config_json(&mut self, config: Option<&Value>) {
        let Some(c) = config else { return };
        for typ in self.types.clone() {
            let key = format!("{typ}_token_id");
            let id = match c.get(&key) {
                Some(v) if !v.is_null() => Some(v),
                _ => c.get("text_config").and_then(|t| t.get(&key)),
            };
            self.set_special(&typ, id);
        }
    }
}

/// Python's truthiness of a JSON value (`None`, `""`, `{}`, `[]`, `0` and
/// `false` are false).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// `tokenizer.json` merges as the converter writes them: strings kept,
/// `[a, b]` pairs joined by a space with spaces inside each part as U+0120.
fn merge_strings(m: &[Value]) -> Vec<String> {
    match m.first() {
        Some(Value::String(_)) => m
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
        Some(Value::Array(_)) => m
            .iter()
            .filter_map(Value::as_array)
            .map(|pair| {
                pair.iter()
                    .map(|p| p.as_str().unwrap_or_default().replace(' ', "\u{0120}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A list of named chat templates: one key per named template (name made
/// of `[A-Za-z0-9_]`), the list of names, and the default.
fn chat_templates(kv: &mut Kv, list: &[Value]) {
    let mut names = Vec::new();
    let mut default = None;
    for t in list {
        let (Some(name), Some(template)) = (
            t.get("name").and_then(Value::as_str),
            t.get("template").and_then(Value::as_str),
        ) else {
            continue;
        };
        if name == "default" {
            default = Some(template.to_string());
            continue;
        }
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        kv.str(&format!("tokenizer.chat_template.{clean}"), template);
        names.push(clean);
    }
    if !names.is_empty() {
        kv.set(
            "tokenizer.chat_templates",
            GgufValue::Array(GgufArray::String(names.into_iter().collect())),
        );
    }
    if let Some(d) = default {
        kv.str("tokenizer.chat_template", &d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(kv: &Kv) -> Vec<String> {
        kv.to_metadata().iter().map(|(k, _)| k.clone()).collect()
    }

    #[test]
    fn qwen_order_eos_pad_then_bos_from_config() {
        let tj = json!({"added_tokens": [
            {"id": 10, "content": "<|endoftext|>"}, {"id": 11, "content": "<|im_end|>"}],
            "post_processor": {"type": "ByteLevel"}});
        let tc = json!({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": null,
            "chat_template": "T"});
        let cfg = json!({"bos_token_id": 10, "eos_token_id": 11});
        let files = Files {
            tokenizer_json: Some(&tj),
            tokenizer_config: Some(&tc),
            config: Some(&cfg),
            ..Files::default()
        };
        let s = SpecialVocab::load(&files, None, false);
        let mut kv = Kv::new();
        s.write(&mut kv);
        assert_eq!(
            keys(&kv),
            [
                "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.padding_token_id",
                "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.add_bos_token",
                "tokenizer.ggml.add_eos_token",
                "tokenizer.chat_template"
            ]
        );
        assert_eq!(
            kv.get("tokenizer.ggml.eos_token_id"),
            Some(&GgufValue::U32(11))
        );
    }

    #[test]
    fn merges_of_pairs_encode_spaces() {
        let m = vec![json!(["a b", "c"]), json!(["d", "e"])];
        assert_eq!(merge_strings(&m), ["a\u{120}b c", "d e"]);
    }
}
