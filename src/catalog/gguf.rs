//! GGUF key/value metadata as typed values: what `source::gguf` parses, what
//! the catalog carries ([`Catalog::gguf_metadata`](super::Catalog)), and
//! what views read (`view::hf::gguf`, `view::experts`).
//!
//! Values keep the type the file gives them; JSON is only a rendering
//! ([`GgufMetadata::to_json`], [`GgufValue::to_json`]) for the files that
//! are JSON (`gguf_metadata.json`, `manifest.json`, `config.json`). The
//! accessors read a value the way the views always have (they once read the
//! JSON rendering): see [`GgufValue::as_text`] and [`GgufValue::as_json_f64`].

use std::sync::Arc;

use serde_json::{Map, Number, Value};

use crate::json::{write_str, write_value};

/// A metadata value. Variant order follows the GGUF type ids 0..=12.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(GgufArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array: elements of one type, stored as a typed vector. An
/// array of arrays holds arrays that each have their own element type.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(GgufStrings),
    Array(Vec<GgufArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

/// An array of strings, held compactly: their text one after another in
/// one buffer, and where each ends. A vocabulary of 262k tokens is two
/// allocations, not 262k (and a clone shares them).
#[derive(Clone, Default, PartialEq)]
pub struct GgufStrings {
    /// Every string's text, concatenated.
    text: Arc<String>,
    /// Where each string ends in `text` (so string `i` is
    /// `ends[i - 1]..ends[i]`, the first starting at 0).
    ends: Arc<Vec<u64>>,
}

/// A GGUF file's key/value metadata: the pairs in file order, keys unique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufMetadata {
    entries: Vec<(String, GgufValue)>,
}

/// GGUF metadata value type ids.
pub(crate) mod vt {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// The name of value type `id` (`"u32"`, `"string"`, ...), if it is one.
pub fn value_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        vt::U8 => "u8",
        vt::I8 => "i8",
        vt::U16 => "u16",
        vt::I16 => "i16",
        vt::U32 => "u32",
        vt::I32 => "i32",
        vt::F32 => "f32",
        vt::BOOL => "bool",
        vt::STRING => "string",
        vt::ARRAY => "array",
        vt::U64 => "u64",
        vt::I64 => "i64",
        vt::F64 => "f64",
        _ => return None,
    })
}

impl GgufMetadata {
    /// Metadata of these key/value pairs, in this order (the keys must be
    /// unique: the parser refuses a file that repeats one).
    pub fn new(entries: Vec<(String, GgufValue)>) -> GgufMetadata {
        GgufMetadata { entries }
    }

    /// Number of key/value pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The key/value pairs in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, (String, GgufValue)> {
        self.entries.iter()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of `key` as text ([`GgufValue::as_text`]).
    pub fn text(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_text()
    }

    /// The value of `key` as a non-negative integer ([`GgufValue::as_u64`]).
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// The value of `key` if it is an array.
    pub fn array(&self, key: &str) -> Option<&GgufArray> {
        self.get(key)?.as_array()
    }

    /// The value of `key` if it is a bool.
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    /// The bytes these key/value pairs take in a GGUF file (keys, type ids,
    /// lengths and values), without walking string arrays element by
    /// element more than once.
    pub fn encoded_len(&self) -> u64 {
        self.entries
            .iter()
            .map(|(k, v)| 8 + k.len() as u64 + 4 + v.encoded_len())
            .sum()
    }

    /// All metadata as one JSON object: keys sorted (as serde_json maps
    /// are), values as [`GgufValue::to_json`]. `gguf_metadata.json` is this.
    pub fn to_json(&self) -> Value {
        let map: Map<String, Value> = self
            .entries
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        Value::Object(map)
    }

    /// `to_pretty(&self.to_json())` (`crate::json`: indented, keys sorted,
    /// then a newline), written straight into text: no JSON value is made
    /// of an array's elements, so a 262k-token vocabulary costs its text
    /// and not a value tree besides. `gguf_metadata.json` is this.
    pub fn to_pretty_json(&self) -> String {
        let mut entries: Vec<&(String, GgufValue)> = self.entries.iter().collect();
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut out = String::new();
        if entries.is_empty() {
            out.push_str("{}\n");
            return out;
        }
        out.push('{');
        for (i, (k, v)) in entries.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            pretty_newline(&mut out, 1);
            write_str(&mut out, k);
            out.push_str(": ");
            match v {
                GgufValue::Array(a) => a.write_pretty(&mut out, 1),
                v => write_value(&mut out, &v.to_json(), Some(2), 1),
            }
        }
        pretty_newline(&mut out, 0);
        out.push_str("}\n");
        out
    }
}

/// A newline and two spaces a level for `depth` levels.
fn pretty_newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..2 * depth {
        out.push(' ');
    }
}

impl GgufValue {
    /// The GGUF value type id (0..=12).
    pub fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => vt::U8,
            GgufValue::I8(_) => vt::I8,
            GgufValue::U16(_) => vt::U16,
            GgufValue::I16(_) => vt::I16,
            GgufValue::U32(_) => vt::U32,
            GgufValue::I32(_) => vt::I32,
            GgufValue::F32(_) => vt::F32,
            GgufValue::Bool(_) => vt::BOOL,
            GgufValue::String(_) => vt::STRING,
            GgufValue::Array(_) => vt::ARRAY,
            GgufValue::U64(_) => vt::U64,
            GgufValue::I64(_) => vt::I64,
            GgufValue::F64(_) => vt::F64,
        }
    }

    /// The value type's name: `"u32"`, `"string"`, `"array"`, ...
    pub fn type_name(&self) -> &'static str {
        value_type_name(self.type_id()).unwrap_or("?")
    }

    /// An integer value of any width that is non-negative, as u64 (for
    /// counts such as `split.count`, which writers store as u16, u32 or i32).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// An integer value of any width that fits an i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => i64::try_from(v).ok(),
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The number the value's JSON rendering holds, as f64: an integer
    /// converted to the nearest f64, an f32 as the shortest decimal that
    /// reads back as it (`1e-5`, see [`GgufValue::to_json`]), an f64
    /// itself; `None` for a non-finite float (rendered as a string) and for
    /// anything but a number.
    pub fn as_json_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => f32_json(v).as_f64(),
            GgufValue::F64(v) => v.is_finite().then_some(v),
            _ => match self.as_u64() {
                Some(u) => Some(u as f64),
                None => self.as_i64().map(|i| i as f64),
            },
        }
    }

    /// The bytes this value takes in a GGUF file (after its type id).
    pub fn encoded_len(&self) -> u64 {
        match self {
            GgufValue::U8(_) | GgufValue::I8(_) | GgufValue::Bool(_) => 1,
            GgufValue::U16(_) | GgufValue::I16(_) => 2,
            GgufValue::U32(_) | GgufValue::I32(_) | GgufValue::F32(_) => 4,
            GgufValue::U64(_) | GgufValue::I64(_) | GgufValue::F64(_) => 8,
            GgufValue::String(s) => 8 + s.len() as u64,
            GgufValue::Array(a) => a.encoded_len(),
        }
    }

    /// A string value (strictly: the String type only).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// A value read as text: a string, or a non-finite float as the string
    /// its JSON rendering is (`"NaN"`, `"inf"`, `"-inf"`). The views read
    /// text this way because they read the JSON rendering before the
    /// metadata was typed; gyrofs keeps their behaviour exactly.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            GgufValue::F32(v) => nonfinite_name((*v).into()),
            GgufValue::F64(v) => nonfinite_name(*v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            GgufValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// JSON for manifests: integers exact (u64 and i64 included), bools,
    /// strings, arrays as JSON arrays. Finite f32 values become the shortest
    /// decimal that reads back as the same f32 (`1e-5`, not
    /// `9.999999747378752e-6`); finite f64 values are exact; non-finite
    /// floats become the strings `"NaN"`, `"inf"`, `"-inf"`.
    pub fn to_json(&self) -> Value {
        match self {
            GgufValue::U8(v) => Value::from(*v),
            GgufValue::I8(v) => Value::from(*v),
            GgufValue::U16(v) => Value::from(*v),
            GgufValue::I16(v) => Value::from(*v),
            GgufValue::U32(v) => Value::from(*v),
            GgufValue::I32(v) => Value::from(*v),
            GgufValue::F32(v) => f32_json(*v),
            GgufValue::Bool(v) => Value::from(*v),
            GgufValue::String(v) => Value::from(v.as_str()),
            GgufValue::Array(a) => a.to_json(),
            GgufValue::U64(v) => Value::from(*v),
            GgufValue::I64(v) => Value::from(*v),
            GgufValue::F64(v) => f64_json(*v),
        }
    }

    /// The value a JSON value renders, in the widest types: bools and
    /// strings as themselves, integers as U64 (I64 when negative), other
    /// numbers as F64, arrays as [`GgufArray::from_json`]. `None` for null
    /// and objects, which no GGUF value renders as. For metadata written as
    /// JSON (tests, tools); `from_json(v.to_json())` reads the same as `v`
    /// through every accessor.
    pub fn from_json(json: &Value) -> Option<GgufValue> {
        Some(match json {
            Value::Bool(b) => GgufValue::Bool(*b),
            Value::String(s) => GgufValue::String(s.clone()),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => GgufValue::U64(u),
                (None, Some(i)) => GgufValue::I64(i),
                (None, None) => GgufValue::F64(n.as_f64()?),
            },
            Value::Array(items) => GgufValue::Array(GgufArray::from_json(items)?),
            Value::Null | Value::Object(_) => return None,
        })
    }
}

impl GgufArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            GgufArray::U8(v) => v.len(),
            GgufArray::I8(v) => v.len(),
            GgufArray::U16(v) => v.len(),
            GgufArray::I16(v) => v.len(),
            GgufArray::U32(v) => v.len(),
            GgufArray::I32(v) => v.len(),
            GgufArray::F32(v) => v.len(),
            GgufArray::Bool(v) => v.len(),
            GgufArray::String(v) => v.len(),
            GgufArray::Array(v) => v.len(),
            GgufArray::U64(v) => v.len(),
            GgufArray::I64(v) => v.len(),
            GgufArray::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes this array takes in a GGUF file: element type, count,
    /// elements.
    pub fn encoded_len(&self) -> u64 {
        let n = self.len() as u64;
        12 + match self {
            GgufArray::U8(_) | GgufArray::I8(_) | GgufArray::Bool(_) => n,
            GgufArray::U16(_) | GgufArray::I16(_) => 2 * n,
            GgufArray::U32(_) | GgufArray::I32(_) | GgufArray::F32(_) => 4 * n,
            GgufArray::U64(_) | GgufArray::I64(_) | GgufArray::F64(_) => 8 * n,
            GgufArray::String(v) => 8 * n + v.text_len(),
            GgufArray::Array(v) => v.iter().map(GgufArray::encoded_len).sum(),
        }
    }

    /// The elements, if this is an array of strings.
    pub fn strings(&self) -> Option<&GgufStrings> {
        match self {
            GgufArray::String(v) => Some(v),
            _ => None,
        }
    }

    /// Whether every element reads as a number ([`GgufValue::as_json_f64`]),
    /// without making a value of each: integers do, floats when finite.
    pub fn all_numbers(&self) -> bool {
        match self {
            GgufArray::String(_) | GgufArray::Array(_) | GgufArray::Bool(_) => false,
            GgufArray::F32(v) => v.iter().all(|x| x.is_finite()),
            GgufArray::F64(v) => v.iter().all(|x| x.is_finite()),
            _ => true,
        }
    }

    /// The element value type id.
    pub fn elem_type_id(&self) -> u32 {
        match self {
            GgufArray::U8(_) => vt::U8,
            GgufArray::I8(_) => vt::I8,
            GgufArray::U16(_) => vt::U16,
            GgufArray::I16(_) => vt::I16,
            GgufArray::U32(_) => vt::U32,
            GgufArray::I32(_) => vt::I32,
            GgufArray::F32(_) => vt::F32,
            GgufArray::Bool(_) => vt::BOOL,
            GgufArray::String(_) => vt::STRING,
            GgufArray::Array(_) => vt::ARRAY,
            GgufArray::U64(_) => vt::U64,
            GgufArray::I64(_) => vt::I64,
            GgufArray::F64(_) => vt::F64,
        }
    }

    /// Each element as a value (strings and arrays cloned), in order.
    pub fn values(&self) -> impl Iterator<Item = GgufValue> + '_ {
        (0..self.len()).map(|i| self.value_at(i))
    }

    /// Element `i` (`i < len`) as a value.
    fn value_at(&self, i: usize) -> GgufValue {
        match self {
            GgufArray::U8(v) => GgufValue::U8(v[i]),
            GgufArray::I8(v) => GgufValue::I8(v[i]),
            GgufArray::U16(v) => GgufValue::U16(v[i]),
            GgufArray::I16(v) => GgufValue::I16(v[i]),
            GgufArray::U32(v) => GgufValue::U32(v[i]),
            GgufArray::I32(v) => GgufValue::I32(v[i]),
            GgufArray::F32(v) => GgufValue::F32(v[i]),
            GgufArray::Bool(v) => GgufValue::Bool(v[i]),
            GgufArray::String(v) => GgufValue::String(v.get(i).unwrap_or_default().to_string()),
            GgufArray::Array(v) => GgufValue::Array(v[i].clone()),
            GgufArray::U64(v) => GgufValue::U64(v[i]),
            GgufArray::I64(v) => GgufValue::I64(v[i]),
            GgufArray::F64(v) => GgufValue::F64(v[i]),
        }
    }

    /// [`GgufArray::to_json`] written indented at `depth` (as
    /// `crate::json::write_value` writes it), one element at a time.
    fn write_pretty(&self, out: &mut String, depth: usize) {
        if self.is_empty() {
            out.push_str("[]");
            return;
        }
        out.push('[');
        for i in 0..self.len() {
            if i > 0 {
                out.push(',');
            }
            pretty_newline(out, depth + 1);
            match self {
                GgufArray::String(v) => write_str(out, v.get(i).unwrap_or_default()),
                GgufArray::Array(v) => v[i].write_pretty(out, depth + 1),
                _ => write_value(out, &self.value_at(i).to_json(), Some(2), depth + 1),
            }
        }
        pretty_newline(out, depth);
        out.push(']');
    }

    /// A JSON array, elements as [`GgufValue::to_json`].
    pub fn to_json(&self) -> Value {
        fn list<T: Copy>(v: &[T], f: impl Fn(T) -> Value) -> Value {
            Value::Array(v.iter().map(|&x| f(x)).collect())
        }
        match self {
            GgufArray::U8(v) => list(v, Value::from),
            GgufArray::I8(v) => list(v, Value::from),
            GgufArray::U16(v) => list(v, Value::from),
            GgufArray::I16(v) => list(v, Value::from),
            GgufArray::U32(v) => list(v, Value::from),
            GgufArray::I32(v) => list(v, Value::from),
            GgufArray::F32(v) => list(v, f32_json),
            GgufArray::Bool(v) => list(v, Value::from),
            GgufArray::String(v) => Value::Array(v.iter().map(Value::from).collect()),
            GgufArray::Array(v) => Value::Array(v.iter().map(GgufArray::to_json).collect()),
            GgufArray::U64(v) => list(v, Value::from),
            GgufArray::I64(v) => list(v, Value::from),
            GgufArray::F64(v) => list(v, f64_json),
        }
    }

    /// The array a JSON array renders (see [`GgufValue::from_json`]): all
    /// bools, all strings (also when empty), all arrays; integers as U64, or
    /// I64 when one is negative; numbers with a fraction, or with the
    /// strings `"NaN"`, `"inf"`, `"-inf"` among them, as F64. `None` for
    /// any other mix.
    pub fn from_json(items: &[Value]) -> Option<GgufArray> {
        fn all<T>(items: &[Value], f: impl Fn(&Value) -> Option<T>) -> Option<Vec<T>> {
            items.iter().map(f).collect()
        }
        if items.iter().all(Value::is_string) {
            return Some(GgufArray::String(
                items.iter().filter_map(Value::as_str).collect(),
            ));
        }
        if let Some(v) = all(items, Value::as_bool) {
            return Some(GgufArray::Bool(v));
        }
        if let Some(v) = all(items, |x| GgufArray::from_json(x.as_array()?)) {
            return Some(GgufArray::Array(v));
        }
        if let Some(v) = all(items, Value::as_u64) {
            return Some(GgufArray::U64(v));
        }
        if let Some(v) = all(items, Value::as_i64) {
            return Some(GgufArray::I64(v));
        }
        all(items, |x| match x {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => match s.as_str() {
                "NaN" => Some(f64::NAN),
                "inf" => Some(f64::INFINITY),
                "-inf" => Some(f64::NEG_INFINITY),
                _ => None,
            },
            _ => None,
        })
        .map(GgufArray::F64)
    }
}

impl GgufStrings {
    /// Number of strings.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of all the strings' text together.
    pub fn text_len(&self) -> u64 {
        self.text.len() as u64
    }

    /// String `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1] as usize,
        };
        self.text.get(start..end)
    }

    /// The strings in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + Clone + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }
}

impl<S: AsRef<str>> FromIterator<S> for GgufStrings {
    fn from_iter<I: IntoIterator<Item = S>>(items: I) -> GgufStrings {
        let items = items.into_iter();
        let mut v = StringsBuilder::with_capacity(items.size_hint().0);
        for s in items {
            v.push(s.as_ref());
        }
        v.finish()
    }
}

/// A [`GgufStrings`] being made, a string at a time.
#[derive(Default)]
pub struct StringsBuilder {
    text: String,
    ends: Vec<u64>,
}

impl StringsBuilder {
    /// No strings yet, with room for `n`.
    pub fn with_capacity(n: usize) -> StringsBuilder {
        StringsBuilder {
            text: String::new(),
            ends: Vec::with_capacity(n),
        }
    }

    /// Add `s` at the end.
    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len() as u64);
    }

    /// The strings (the room reserved and not used given back).
    pub fn finish(mut self) -> GgufStrings {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
        GgufStrings {
            text: Arc::new(self.text),
            ends: Arc::new(self.ends),
        }
    }
}

impl std::fmt::Debug for GgufStrings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The JSON string a non-finite float renders as; `None` for a finite one.
fn nonfinite_name(x: f64) -> Option<&'static str> {
    if x.is_nan() {
        Some("NaN")
    } else if x == f64::INFINITY {
        Some("inf")
    } else if x == f64::NEG_INFINITY {
        Some("-inf")
    } else {
        None
    }
}

fn f32_json(x: f32) -> Value {
    if let Some(name) = nonfinite_name(x.into()) {
        return Value::from(name);
    }
    // Rust prints the shortest decimal that reads back as the same f32; read
    // as f64 it is that decimal's nearest f64, which JSON prints as written.
    let shortest: f64 = x.to_string().parse().unwrap_or(x.into());
    Number::from_f64(shortest).map_or(Value::Null, Value::Number)
}

fn f64_json(x: f64) -> Value {
    match Number::from_f64(x) {
        Some(n) => Value::Number(n),
        None => Value::from(nonfinite_name(x).unwrap_or("NaN")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn every_type() -> Vec<GgufValue> {
        vec![
            GgufValue::U8(200),
            GgufValue::I8(-128),
            GgufValue::U16(65535),
            GgufValue::I16(-3),
            GgufValue::U32(u32::MAX),
            GgufValue::I32(i32::MIN),
            GgufValue::F32(1e-5),
            GgufValue::F32(f32::NAN),
            GgufValue::Bool(true),
            GgufValue::String("h\u{fffd}i".into()),
            GgufValue::U64(u64::MAX),
            GgufValue::I64(i64::MIN),
            GgufValue::F64(0.1),
            GgufValue::F64(f64::NEG_INFINITY),
            GgufValue::Array(GgufArray::F32(vec![1.0, f32::INFINITY, -0.5])),
            GgufValue::Array(GgufArray::I32(vec![1, -1])),
            GgufValue::Array(GgufArray::U32(vec![])),
            GgufValue::Array(GgufArray::Array(vec![
                GgufArray::String(["a"].into_iter().collect()),
                GgufArray::Bool(vec![false]),
            ])),
        ]
    }

    /// What the views read of a value.
    fn readings(v: &GgufValue) -> Value {
        let elems: Vec<Value> = match v.as_array() {
            Some(a) => a
                .values()
                .map(|e| json!([e.as_text(), e.as_u64(), e.as_i64(), e.as_json_f64()]))
                .collect(),
            None => Vec::new(),
        };
        json!([
            v.to_json(),
            v.as_text(),
            v.as_u64(),
            v.as_i64(),
            v.as_json_f64(),
            v.as_bool(),
            v.as_array().map(GgufArray::len),
            elems
        ])
    }

    #[test]
    fn json_round_trip_reads_the_same() {
        for v in every_type() {
            let back = GgufValue::from_json(&v.to_json()).unwrap();
            assert_eq!(
                serde_json::to_string(&readings(&back)).unwrap(),
                serde_json::to_string(&readings(&v)).unwrap(),
                "{v:?}"
            );
        }
        assert_eq!(GgufValue::from_json(&Value::Null), None);
        assert_eq!(GgufValue::from_json(&json!({"a": 1})), None);
        assert_eq!(GgufValue::from_json(&json!([1, "a"])), None);
        assert_eq!(
            GgufValue::from_json(&json!([1, 2.5])),
            Some(GgufValue::Array(GgufArray::F64(vec![1.0, 2.5])))
        );
    }

    #[test]
    fn strings_are_one_buffer_and_their_ends() {
        let v: GgufStrings = ["a", "", "h\u{fffd}i", "\u{2581}x"].into_iter().collect();
        assert_eq!(v.len(), 4);
        assert_eq!(v.get(0), Some("a"));
        assert_eq!(v.get(1), Some(""));
        assert_eq!(v.get(2), Some("h\u{fffd}i"));
        assert_eq!(v.get(4), None);
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            ["a", "", "h\u{fffd}i", "\u{2581}x"]
        );
        assert_eq!(v.text_len(), 1 + 5 + 4);
        let a = GgufArray::String(v.clone());
        assert_eq!(a.encoded_len(), 12 + 4 * 8 + 10);
        assert_eq!(a.to_json(), json!(["a", "", "h\u{fffd}i", "\u{2581}x"]));
        assert_eq!(GgufArray::from_json(&[json!("a"), json!("")]), {
            Some(GgufArray::String(["a", ""].into_iter().collect()))
        });
        // A clone shares the buffers; equal contents compare equal.
        assert_eq!(v.clone(), v);
        assert!(GgufStrings::default().is_empty());
    }

    #[test]
    fn pretty_json_is_the_value_tree_written() {
        let mut entries: Vec<(String, GgufValue)> = every_type()
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("k{:02}", 20 - i), v))
            .collect();
        entries.push((
            "tokens".into(),
            GgufValue::Array(GgufArray::String(
                ["a", "", "\"q\"\n", "\u{2581}x"].into_iter().collect(),
            )),
        ));
        entries.push((
            "nested".into(),
            GgufValue::Array(GgufArray::Array(vec![
                GgufArray::Array(vec![GgufArray::U8(vec![])]),
                GgufArray::F64(vec![0.5, f64::NAN]),
            ])),
        ));
        entries.push((
            "Z".into(),
            GgufValue::Array(GgufArray::String(Default::default())),
        ));
        let md = GgufMetadata::new(entries);
        assert_eq!(md.to_pretty_json(), crate::json::to_pretty(&md.to_json()));
        let empty = GgufMetadata::default();
        assert_eq!(
            empty.to_pretty_json(),
            crate::json::to_pretty(&empty.to_json())
        );
    }

    #[test]
    fn accessors() {
        assert_eq!(GgufValue::F32(1e-5).as_json_f64(), Some(0.00001));
        assert_eq!(GgufValue::F32(f32::INFINITY).as_text(), Some("inf"));
        assert_eq!(GgufValue::F64(1.5).as_text(), None);
        assert_eq!(GgufValue::I8(-1).as_u64(), None);
        assert_eq!(GgufValue::U64(u64::MAX).as_i64(), None);
        let md = GgufMetadata::new(vec![
            ("b".into(), GgufValue::U16(7)),
            ("a".into(), GgufValue::String("x".into())),
        ]);
        assert_eq!(
            (md.u64("b"), md.text("a"), md.u64("a")),
            (Some(7), Some("x"), None)
        );
        let keys: Vec<&str> = md.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a"]);
        assert_eq!(
            serde_json::to_string(&md.to_json()).unwrap(),
            r#"{"a":"x","b":7}"#
        );
    }
}
