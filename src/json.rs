//! Canonical JSON serialization.
//!
//! Gyro headers and generated JSON files must be the same bytes on every
//! machine and with every build, so they are written here rather than left to
//! serde_json's serializer: serde_json's object order is a *feature* of the
//! crate (`preserve_order`, which any crate in a dependency graph can switch
//! on for everyone through Cargo feature unification), and its escaping and
//! pretty-printing are not specified for byte-stability. This module is the
//! specification in code (docs/FORMAT.md, "Canonical JSON"); serde_json is
//! used only to parse and to hold values.
//!
//! The canonical form:
//! - object keys sorted by their UTF-8 bytes;
//! - compact: `,` and `:` with no whitespace (or, for files meant for humans,
//!   [`to_pretty`]: two-space indentation, `": "` after keys, `\n` line ends);
//! - strings escape only `"`, `\` and U+0000..U+001F (`\b \f \n \r \t`, else
//!   `\u00xx` with lowercase hex); everything else is raw UTF-8;
//! - numbers as serde_json prints them (integers in decimal).

use serde_json::Value;

/// Where JSON text goes: a `String`, or a [`Count`] of its bytes (to size a
/// file without building it), or [`Escaped`] (as the content of a JSON
/// string, for JSON nested in a string value).
pub trait Sink {
    fn push_str(&mut self, s: &str);
    fn push(&mut self, c: char) {
        let mut b = [0u8; 4];
        self.push_str(c.encode_utf8(&mut b));
    }
}

impl Sink for String {
    fn push_str(&mut self, s: &str) {
        String::push_str(self, s);
    }
    fn push(&mut self, c: char) {
        String::push(self, c);
    }
}

/// Counts the bytes that would be written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub u64);

impl Sink for Count {
    fn push_str(&mut self, s: &str) {
        self.0 += s.len() as u64;
    }
    fn push(&mut self, c: char) {
        self.0 += c.len_utf8() as u64;
    }
}

/// Writes into the inner sink escaped as the content of a JSON string.
pub struct Escaped<'a, S: Sink + ?Sized>(pub &'a mut S);

impl<S: Sink + ?Sized> Sink for Escaped<'_, S> {
    fn push_str(&mut self, s: &str) {
        escape_into(self.0, s);
    }
}

/// Compact canonical JSON.
pub fn to_canonical(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v, None, 0);
    out
}

/// Indented canonical JSON followed by a newline, for files people read.
pub fn to_pretty(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v, Some(2), 0);
    out.push('\n');
    out
}

/// Append `s` as a JSON string literal.
pub fn write_str<S: Sink + ?Sized>(out: &mut S, s: &str) {
    out.push('"');
    escape_into(out, s);
    out.push('"');
}

/// Append `s` escaped as JSON string content (without the quotes).
fn escape_into<S: Sink + ?Sized>(out: &mut S, s: &str) {
    let bytes = s.as_bytes();
    let mut run = 0; // start of the current run of bytes needing no escape
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        // Escaped bytes are ASCII, so `run..i` are whole characters.
        out.push_str(&s[run..i]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
}

/// Append `v` in decimal.
pub fn write_u64<S: Sink + ?Sized>(out: &mut S, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).expect("ASCII digits"));
}

/// Append `[a,b,...]`.
pub fn write_u64s<S: Sink + ?Sized>(out: &mut S, v: &[u64]) {
    out.push('[');
    for (i, &d) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_u64(out, d);
    }
    out.push(']');
}

/// Writes one compact canonical JSON object straight into a string, member
/// by member. Keys must be given in canonical (byte) order; debug builds
/// check it. For records written by the hundred thousand at mount time,
/// where building a `serde_json::Value` first would cost more than the JSON.
pub struct ObjectWriter<'a, S: Sink + ?Sized> {
    out: &'a mut S,
    last: Option<&'static str>,
}

impl<'a, S: Sink + ?Sized> ObjectWriter<'a, S> {
    pub fn new(out: &'a mut S) -> Self {
        out.push('{');
        ObjectWriter { out, last: None }
    }

    /// Start member `key`; write its value into the returned sink next.
    pub fn key(&mut self, key: &'static str) -> &mut S {
        debug_assert!(
            self.last.is_none_or(|l| l.as_bytes() < key.as_bytes()),
            "key {key:?} after {:?}: not in canonical order",
            self.last
        );
        if self.last.is_some() {
            self.out.push(',');
        }
        self.last = Some(key);
        write_str(self.out, key);
        self.out.push(':');
        self.out
    }

    pub fn str(&mut self, key: &'static str, v: &str) -> &mut Self {
        write_str(self.key(key), v);
        self
    }

    pub fn u64(&mut self, key: &'static str, v: u64) -> &mut Self {
        write_u64(self.key(key), v);
        self
    }

    pub fn u64s(&mut self, key: &'static str, v: &[u64]) -> &mut Self {
        write_u64s(self.key(key), v);
        self
    }

    pub fn finish(self) {
        self.out.push('}');
    }
}

fn newline<S: Sink + ?Sized>(out: &mut S, indent: Option<usize>, depth: usize) {
    if let Some(n) = indent {
        out.push('\n');
        for _ in 0..n * depth {
            out.push(' ');
        }
    }
}

/// Append `v` canonically: compact, or indented by `indent` spaces per level
/// starting at `depth` (no final newline).
pub fn write_value<S: Sink + ?Sized>(out: &mut S, v: &Value, indent: Option<usize>, depth: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_u64() {
            Some(u) => write_u64(out, u),
            None => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, depth + 1);
                write_value(out, item, indent, depth + 1);
            }
            newline(out, indent, depth);
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, depth + 1);
                write_str(out, k);
                out.push(':');
                if indent.is_some() {
                    out.push(' ');
                }
                write_value(out, item, indent, depth + 1);
            }
            newline(out, indent, depth);
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compact_sorted_and_escaped() {
        let v = json!({"b": [1, 2], "a": {"z": null, "y": true}, "s": "q\"\\\n\u{1}é/"});
        assert_eq!(
            to_canonical(&v),
            r#"{"a":{"y":true,"z":null},"b":[1,2],"s":"q\"\\\n\u0001é/"}"#
        );
    }

    #[test]
    fn pretty() {
        let v = json!({"b": [], "a": [1, {"c": 2}]});
        assert_eq!(
            to_pretty(&v),
            "{\n  \"a\": [\n    1,\n    {\n      \"c\": 2\n    }\n  ],\n  \"b\": []\n}\n"
        );
    }

    #[test]
    fn object_writer_is_canonical() {
        let mut s = String::new();
        let mut o = ObjectWriter::new(&mut s);
        o.u64s("a", &[1, 2]).str("b", "x\"y").u64("c", 7);
        write_str(o.key("d"), "z");
        o.finish();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(to_canonical(&v), s);
    }

    #[test]
    fn sinks_agree() {
        let v =
            json!({"a\"b": [1, 2, {"c": "d\n"}], "e": 18446744073709551615u64, "f": -3, "g": 1.5});
        let mut s = String::new();
        write_value(&mut s, &v, Some(2), 1);
        let mut c = Count::default();
        write_value(&mut c, &v, Some(2), 1);
        assert_eq!(c.0, s.len() as u64);
        let mut e = String::new();
        write_value(&mut Escaped(&mut e), &v, None, 0);
        let mut quoted = String::new();
        write_str(&mut quoted, &to_canonical(&v));
        assert_eq!(format!("\"{e}\""), quoted);
    }

    #[test]
    fn agrees_with_serde_json_on_strings() {
        for s in ["plain", "tab\there", "\u{7f}\u{1f}\u{0}", "ünï\u{2028}"] {
            let mut ours = String::new();
            write_str(&mut ours, s);
            assert_eq!(ours, serde_json::to_string(s).unwrap());
        }
    }
}
