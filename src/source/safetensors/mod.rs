//! Safetensors header reader and validator.
//!
//! Reads only the header of a mapped file (never tensor data) and applies the
//! reference implementation's rules, so that everything downstream can trust
//! the extents: header length within the file and under 100,000,000 bytes,
//! a JSON object beginning with `{`, string-only `__metadata__`, known dtypes,
//! byte length = numel x bits / 8, and tensors tiling the data buffer exactly
//! (first at 0, no gap, no overlap, last ending at end of file). Each failure
//! names the file and the tensor or byte range involved.

pub mod set;

use std::collections::BTreeMap;
use std::path::Path;

use crate::dtype::{Dtype, numel};
use crate::error::{Problem, SourceError};
use crate::store::SourceFile;

/// Largest header the reference reader accepts.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// A parsed, validated safetensors header.
#[derive(Debug, Clone)]
pub struct Header {
    /// The file's own `__metadata__` (empty if absent).
    pub metadata: BTreeMap<String, String>,
    /// Tensors in data-offset order.
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data buffer in the file (8 + header length).
    pub data_start: u64,
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Absolute byte range in the file.
    pub start: u64,
    pub end: u64,
}

/// Parse and validate the header of `file`: only the header is read (its
/// length, then the JSON).
pub fn parse(file: &SourceFile) -> Result<Header, SourceError> {
    let n = match file.read_head(8)? {
        b if b.len() == 8 => u64::from_le_bytes(b.try_into().expect("8 bytes")),
        _ => 0,
    };
    // An implausible length is refused after the first bytes (shown in
    // the message), without reading up to 100 MB of a file that is not
    // safetensors.
    let plausible = n <= MAX_HEADER_LEN && n <= file.len.saturating_sub(8);
    let head = match plausible {
        true => file.read_head((8 + n).max(HEAD_SHOWN as u64))?,
        false => file.read_head(HEAD_SHOWN as u64 + 1)?,
    };
    parse_head(&file.path, head, file.len)
}

/// Parse and validate the safetensors header of `data`, the whole file
/// (`path` is only for messages). The entry point for fuzzing.
pub fn parse_bytes(path: &Path, data: &[u8]) -> Result<Header, SourceError> {
    parse_head(path, data, data.len() as u64)
}

/// Parse and validate the header of a file of `len` bytes whose first bytes
/// are `data` (at least the length and the JSON it announces, when the
/// file holds them).
fn parse_head(path: &Path, data: &[u8], len: u64) -> Result<Header, SourceError> {
    let error = |p: Problem| SourceError::new(path, p);
    // What a file that is not safetensors at all (random bytes, an HTML
    // error page, a truncated download) is refused with: what is off, and
    // its first bytes.
    let not_safetensors = |why: Problem| {
        error(Problem::NotSafetensors {
            why: Box::new(why),
            head: escaped_head(data),
        })
    };
    if len < 8 {
        return Err(not_safetensors(Problem::Truncated {
            what: "the 8-byte header length",
            len,
            need: 8,
        }));
    }
    let n = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER_LEN {
        return Err(not_safetensors(Problem::HeaderTooLarge(n)));
    }
    if n > len - 8 {
        return Err(not_safetensors(Problem::HeaderPastEnd {
            header_len: n,
            len,
        }));
    }
    let json = &data[8..8 + n as usize];
    if json.first() != Some(&b'{') {
        return Err(not_safetensors(Problem::HeaderNotObject));
    }
    let data_start = 8 + n;
    let buffer = len - data_start;
    let parsed = read_json(json).map_err(|e| error(Problem::HeaderJson(e.to_string())))?;
    let Parsed::Object(fields) = parsed else {
        return Err(error(Problem::HeaderNotObject));
    };

    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(fields.len());
    let mut seen_metadata = false;
    for (name, entry) in fields {
        if name == "__metadata__" {
            if seen_metadata {
                return Err(error(Problem::Invalid("__metadata__ appears twice".into())));
            }
            seen_metadata = true;
            let Entry::Object(md) = entry else {
                return Err(error(Problem::Invalid(
                    "__metadata__ is not an object of strings".into(),
                )));
            };
            for (k, v) in md {
                let Val::Str(s) = v else {
                    return Err(error(Problem::Invalid(format!(
                        "__metadata__ value for '{k}' is not a string"
                    ))));
                };
                metadata.insert(k, s);
            }
            continue;
        }
        tensors.push(tensor_info(path, name, entry, data_start, buffer)?);
    }
    let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(error(Problem::Tensor {
            tensor: w[0].to_string(),
            why: "appears twice in the header".into(),
        }));
    }

    tensors.sort_by(|a, b| (a.start, a.end, &a.name).cmp(&(b.start, b.end, &b.name)));
    let mut cursor = data_start;
    let mut prev: Option<&TensorInfo> = None;
    for t in &tensors {
        if t.start < cursor {
            let p = prev.expect("cursor only moves past data_start after a tensor");
            return Err(error(Problem::Overlap {
                first: p.name.clone(),
                second: t.name.clone(),
                begin: t.start - data_start,
                end: cursor.min(t.end).max(t.start) - data_start,
            }));
        }
        if t.start > cursor {
            return Err(error(Problem::Gap {
                begin: cursor - data_start,
                end: t.start - data_start,
            }));
        }
        cursor = t.end;
        prev = Some(t);
    }
    if cursor != len {
        return Err(error(Problem::Gap {
            begin: cursor - data_start,
            end: buffer,
        }));
    }
    Ok(Header {
        metadata,
        tensors,
        data_start,
    })
}

/// How many first bytes of a file a message shows.
const HEAD_SHOWN: usize = 16;

/// The first [`HEAD_SHOWN`] bytes of `data`, escaped as a Rust byte string
/// (`\x00`, `\"`), with `...` when there are more.
pub(crate) fn escaped_head(data: &[u8]) -> String {
    let shown = &data[..data.len().min(HEAD_SHOWN)];
    let more = if data.len() > HEAD_SHOWN { "..." } else { "" };
    format!("{}{more}", shown.escape_ascii())
}

fn tensor_info(
    path: &Path,
    name: String,
    entry: Entry,
    data_start: u64,
    buffer: u64,
) -> Result<TensorInfo, SourceError> {
    let error = |p: Problem| SourceError::new(path, p);
    let bad = |why: &str| {
        error(Problem::Tensor {
            tensor: name.clone(),
            why: why.to_string(),
        })
    };
    let Entry::Object(fields) = entry else {
        return Err(bad("entry is not an object"));
    };
    let field = |k: &str| fields.iter().find(|f| f.0 == k).map(|f| &f.1);
    let Some(Val::Str(dtype_name)) = field("dtype") else {
        return Err(bad("missing or non-string 'dtype'"));
    };
    let dtype = Dtype::from_name(dtype_name).ok_or_else(|| {
        error(Problem::UnknownDtype {
            tensor: name.clone(),
            dtype: dtype_name.clone(),
        })
    })?;
    let Some(Val::Ints(shape)) = field("shape") else {
        return Err(bad("missing or non-array 'shape'"));
    };
    let shape = shape
        .iter()
        .copied()
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| bad("'shape' holds a value that is not a non-negative integer"))?;
    let Some(Val::Ints(offsets)) = field("data_offsets") else {
        return Err(bad("missing or non-array 'data_offsets'"));
    };
    let (begin, end) = match offsets.as_slice() {
        [Some(b), Some(e)] => (*b, *e),
        [_, _] => return Err(bad("'data_offsets' are not non-negative integers")),
        _ => return Err(bad("'data_offsets' must hold exactly two integers")),
    };
    if begin > end || end > buffer {
        return Err(error(Problem::OffsetsOutOfRange {
            tensor: name,
            begin,
            end,
            buffer,
        }));
    }
    let expected = numel(&shape)
        .and_then(|n| dtype.bytes_for(n))
        .ok_or_else(|| bad("shape overflows or is not a whole number of bytes for its dtype"))?;
    if expected != end - begin {
        return Err(error(Problem::ShapeMismatch {
            tensor: name,
            dtype: dtype.name().to_string(),
            shape,
            expected,
            actual: end - begin,
        }));
    }
    Ok(TensorInfo {
        name,
        dtype,
        shape,
        start: data_start + begin,
        end: data_start + end,
    })
}

// The header, read straight from the JSON text into plain values (no
// `serde_json::Value` tree: a million-tensor header would take gigabytes as
// one). Anything of an unexpected type is kept as a marker, not an error, so
// that validation can name the tensor and the field; only malformed JSON is
// an error here.

/// The top-level value.
enum Parsed {
    Object(Vec<(String, Entry)>),
    Other,
}

/// A value of the top-level object: a tensor entry, or `__metadata__`.
enum Entry {
    Object(Vec<(String, Val)>),
    Other,
}

/// A field of an entry: what validation distinguishes.
enum Val {
    Str(String),
    /// An array; each item if it is a non-negative integer.
    Ints(Vec<Option<u64>>),
    Other,
}

fn read_json(json: &[u8]) -> Result<Parsed, serde_json::Error> {
    use serde::Deserialize;
    let mut de = serde_json::Deserializer::from_slice(json);
    let parsed = Parsed::deserialize(&mut de)?;
    de.end()?;
    Ok(parsed)
}

mod de {
    //! `Deserialize` for the header values above.
    use std::fmt;

    use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

    use super::{Entry, Parsed, Val};

    /// Visits anything; `$on_map` builds the value from a map, `$other` is
    /// the value for everything else (consumed and ignored).
    macro_rules! permissive {
        ($t:ty, $v:ident, $other:expr, |$map:ident| $on_map:block) => {
            struct $v;
            impl<'de> Visitor<'de> for $v {
                type Value = $t;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut $map: A) -> Result<$t, A::Error> {
                    $on_map
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$t, A::Error> {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok($other)
                }
                fn visit_bool<E: de::Error>(self, _: bool) -> Result<$t, E> {
                    Ok($other)
                }
                fn visit_i64<E: de::Error>(self, _: i64) -> Result<$t, E> {
                    Ok($other)
                }
                fn visit_u64<E: de::Error>(self, _: u64) -> Result<$t, E> {
                    Ok($other)
                }
                fn visit_f64<E: de::Error>(self, _: f64) -> Result<$t, E> {
                    Ok($other)
                }
                fn visit_str<E: de::Error>(self, _: &str) -> Result<$t, E> {
                    Ok($other)
                }
                fn visit_unit<E: de::Error>(self) -> Result<$t, E> {
                    Ok($other)
                }
            }
            impl<'de> Deserialize<'de> for $t {
                fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                    d.deserialize_any($v)
                }
            }
        };
    }

    permissive!(Parsed, ParsedVisitor, Parsed::Other, |map| {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(k) = map.next_key::<String>()? {
            out.push((k, map.next_value::<Entry>()?));
        }
        Ok(Parsed::Object(out))
    });

    permissive!(Entry, EntryVisitor, Entry::Other, |map| {
        let mut out = Vec::with_capacity(3);
        while let Some(k) = map.next_key::<String>()? {
            out.push((k, map.next_value::<Val>()?));
        }
        Ok(Entry::Object(out))
    });

    struct ValVisitor;

    impl<'de> Visitor<'de> for ValVisitor {
        type Value = Val;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Val, E> {
            Ok(Val::Str(v.to_string()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Val, E> {
            Ok(Val::Str(v))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(item) = seq.next_element::<Int>()? {
                out.push(item.0);
            }
            Ok(Val::Ints(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Val::Other)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Val, E> {
            Ok(Val::Other)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Val, E> {
            Ok(Val::Other)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Val, E> {
            Ok(Val::Other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Val, E> {
            Ok(Val::Other)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Val, E> {
            Ok(Val::Other)
        }
    }

    impl<'de> Deserialize<'de> for Val {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Val, D::Error> {
            d.deserialize_any(ValVisitor)
        }
    }

    /// An array item: `Some` if it is a non-negative integer.
    struct Int(Option<u64>);

    struct IntVisitor;

    impl<'de> Visitor<'de> for IntVisitor {
        type Value = Int;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
            Ok(Int(Some(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
            Ok(Int(u64::try_from(v).ok()))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Int, E> {
            Ok(Int(None))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Int, E> {
            Ok(Int(None))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Int, E> {
            Ok(Int(None))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Int, E> {
            Ok(Int(None))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Int, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Int(None))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Int, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Int(None))
        }
    }

    impl<'de> Deserialize<'de> for Int {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Int, D::Error> {
            d.deserialize_any(IntVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(header: &str, data: &[u8]) -> (tempfile::TempDir, SourceFile) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        std::fs::write(&p, bytes).unwrap();
        let f = crate::store::Opener::local()
            .open(&p, "t.safetensors".into())
            .unwrap();
        (dir, f)
    }

    fn err(header: &str, data: &[u8]) -> String {
        let (_d, f) = file_with(header, data);
        parse(&f).unwrap_err().to_string()
    }

    #[test]
    fn parses_valid() {
        let (_d, f) = file_with(
            r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#,
            &[0; 6],
        );
        let h = parse(&f).unwrap();
        assert_eq!(h.metadata["format"], "pt");
        assert_eq!(h.tensors[0].name, "a");
        assert_eq!(h.tensors[1].start, h.data_start + 4);
    }

    #[test]
    fn refuses_bad_headers() {
        let t = |o: &str| format!(r#"{{"a":{{"dtype":"U8","shape":[2],"data_offsets":{o}}}}}"#);
        assert!(err(&t("[0,2]"), &[0; 3]).contains("belong to no tensor"));
        assert!(err(&t("[1,3]"), &[0; 3]).contains("belong to no tensor"));
        assert!(err(&t("[0,4]"), &[0; 3]).contains("outside the 3-byte data buffer"));
        assert!(err(&t("[0,3]"), &[0; 3]).contains("needs 2 bytes but data_offsets span 3"));
        assert!(err("[1]", &[]).contains("not a JSON object"));
        assert!(err("{oops", &[]).contains("not valid JSON"));
        assert!(
            err(
                r#"{"a":{"dtype":"Q9","shape":[],"data_offsets":[0,1]}}"#,
                &[0]
            )
            .contains("unknown dtype 'Q9'")
        );
        let overlap = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#;
        assert!(err(overlap, &[0; 3]).contains("'a' and 'b' overlap"));
        let md = r#"{"__metadata__":{"x":1}}"#;
        assert!(err(md, &[]).contains("not a string"));
        // A name twice (both entries tile the buffer): refused, not merged.
        let twice = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}"#;
        assert!(err(twice, &[0; 3]).contains("'a': appears twice"));
        let md2 = r#"{"__metadata__":{},"__metadata__":{}}"#;
        assert!(err(md2, &[]).contains("__metadata__ appears twice"));
        let trailing = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}} x"#;
        assert!(err(trailing, &[0]).contains("not valid JSON"));
        let nested =
            r#"{"a":{"dtype":"U8","shape":[[1]],"data_offsets":[0,1],"extra":{"k":[1,{"z":2}]}}}"#;
        assert!(err(nested, &[0]).contains("not a non-negative integer"));
    }

    #[test]
    fn refuses_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        std::fs::write(&p, [1, 2, 3]).unwrap();
        let f = crate::store::Opener::local().open(&p, "t".into()).unwrap();
        assert!(parse(&f).unwrap_err().to_string().contains("too short"));
        std::fs::write(&p, 100u64.to_le_bytes()).unwrap();
        let f = crate::store::Opener::local().open(&p, "t".into()).unwrap();
        assert!(
            parse(&f)
                .unwrap_err()
                .to_string()
                .contains("runs past the end")
        );
    }
}
