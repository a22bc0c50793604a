//! A model's hyperparameters as llama.cpp's converter reads them: through
//! transformers' `AutoConfig`, so a field the `config.json` leaves out has
//! its config class's default (each architecture lists the defaults it
//! reads), and `text_config` is merged over the top level.

use serde_json::{Map, Value};

/// The config, merged, with the defaults of its class.
#[derive(Debug, Clone)]
pub struct Config {
    map: Map<String, Value>,
    defaults: &'static [(&'static str, Default)],
}

/// A config class's default for a field.
#[derive(Debug, Clone, Copy)]
pub enum Default {
    U64(u64),
    F64(f64),
    /// The field is `None` in the class (present, but null).
    Null,
}

impl Config {
    /// `config` (an object) with `text_config` merged over it, and the
    /// defaults of its class.
    pub fn new(config: &Value, defaults: &'static [(&'static str, Default)]) -> Config {
        let mut map = config.as_object().cloned().unwrap_or_default();
        if let Some(Value::Object(text)) = config.get("text_config") {
            for (k, v) in text {
                map.insert(k.clone(), v.clone());
            }
        }
        Config { map, defaults }
    }

    /// Give `key` the value `v` when the config leaves it out or null (a
    /// class default computed from other fields, as `head_dim =
    /// hidden_size / num_attention_heads`).
    pub fn default_to(&mut self, key: &str, v: Value) {
        if self.map.get(key).is_none_or(Value::is_null) {
            self.map.insert(key.to_string(), v);
        }
    }

    /// Give `key` the value `v` (a field the config class computes, as
    /// Gemma 3's nested `rope_parameters`).
    pub fn set(&mut self, key: &str, v: Value) {
        self.map.insert(key.to_string(), v);
    }

    /// The class default of `key`, as the config would give it.
    pub fn default_of(&self, key: &str) -> Option<Value> {
        match self.defaults.iter().find(|(k, _)| *k == key)?.1 {
            Default::U64(v) => Some(Value::from(v)),
            Default::F64(v) => Some(Value::from(v)),
            Default::Null => Some(Value::Null),
        }
    }

    /// The value of `key`: the config's, else the class default (`None`
    /// for a null or absent one).
    pub fn get(&self, key: &str) -> Option<Value> {
        match self.map.get(key) {
            Some(Value::Null) => None,
            Some(v) => Some(v.clone()),
            None => self.default_of(key).filter(|v| !v.is_null()),
        }
    }

    /// Does the config (or its class) have `key` at all (even as null)?
    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key) || self.defaults.iter().any(|(k, _)| *k == key)
    }

    /// The first of `keys` present, as an integer (`find_hparam`).
    pub fn u64(&self, keys: &[&str]) -> Option<u64> {
        keys.iter().find_map(|k| {
            let v = self.get(k)?;
            v.as_u64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
        })
    }

    /// The first of `keys` present, as a float.
    pub fn f64(&self, keys: &[&str]) -> Option<f64> {
        keys.iter().find_map(|k| self.get(k)?.as_f64())
    }

    /// Like [`u64`](Self::u64), or an error naming the keys.
    pub fn need_u64(&self, keys: &[&str]) -> Result<u64, String> {
        self.u64(keys)
            .ok_or_else(|| format!("config.json has no {}", keys.join(" / ")))
    }

    /// The raw merged map.
    pub fn map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// The RoPE parameters (`rope_parameters`, or the legacy
    /// `rope_scaling`), and `rope_theta` where transformers folds it in.
    pub fn rope(&self) -> Rope {
        let params = self
            .map
            .get("rope_parameters")
            .or_else(|| self.map.get("rope_scaling"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        // Gemma 3 style: per attention kind.
        let full = params
            .get("full_attention")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(|| params.clone());
        let text =
            |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        let theta = full
            .get("rope_theta")
            .and_then(Value::as_f64)
            .or_else(|| self.f64(&["rope_theta", "rotary_emb_base"]));
        Rope {
            kind: text(&full, "rope_type").or_else(|| text(&full, "type")),
            theta,
            params: full,
            all: params,
        }
    }
}

/// RoPE settings.
#[derive(Debug, Clone)]
pub struct Rope {
    /// `rope_type` (`linear`, `yarn`, `llama3`, ...), if any.
    pub kind: Option<String>,
    pub theta: Option<f64>,
    /// The full-attention parameters.
    pub params: Map<String, Value>,
    /// All of `rope_parameters` (with `sliding_attention` for Gemma 3).
    pub all: Map<String, Value>,
}

impl Rope {
    pub fn f64(&self, key: &str) -> Option<f64> {
        self.params.get(key).and_then(Value::as_f64)
    }
}
