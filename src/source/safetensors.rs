//! Safetensors header reader and validator.
//!
//! Reads only the header of a mapped file (never tensor data) and applies the
//! reference implementation's rules, so that everything downstream can trust
//! the extents: header length within the file and under 100,000,000 bytes,
//! a JSON object beginning with `{`, string-only `__metadata__`, known dtypes,
//! byte length = numel x bits / 8, and tensors tiling the data buffer exactly
//! (first at 0, no gap, no overlap, last ending at end of file). Each failure
//! names the file and the tensor or byte range involved.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::dtype::{Dtype, numel};
use crate::error::{Problem, SourceError};
use crate::source::mapped::SourceFile;

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

/// Parse and validate the header of `file`.
pub fn parse(file: &SourceFile) -> Result<Header, SourceError> {
    parse_bytes(&file.path, file.data())
}

/// Parse and validate the safetensors header of `data`, the whole file
/// (`path` is only for messages). The entry point for fuzzing.
pub fn parse_bytes(path: &Path, data: &[u8]) -> Result<Header, SourceError> {
    let len = data.len() as u64;
    let error = |p: Problem| SourceError::new(path, p);
    if len < 8 {
        return Err(error(Problem::Truncated {
            what: "the 8-byte header length",
            len,
            need: 8,
        }));
    }
    let n = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER_LEN {
        return Err(error(Problem::HeaderTooLarge(n)));
    }
    if n > len - 8 {
        return Err(error(Problem::HeaderPastEnd { header_len: n, len }));
    }
    let json = &data[8..8 + n as usize];
    if json.first() != Some(&b'{') {
        return Err(error(Problem::HeaderNotObject));
    }
    let value: Value =
        serde_json::from_slice(json).map_err(|e| error(Problem::HeaderJson(e.to_string())))?;
    let Value::Object(map) = value else {
        return Err(error(Problem::HeaderNotObject));
    };
    let data_start = 8 + n;
    let buffer = len - data_start;

    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(map.len());
    for (name, entry) in map {
        if name == "__metadata__" {
            let Value::Object(md) = entry else {
                return Err(error(Problem::Invalid(
                    "__metadata__ is not an object of strings".into(),
                )));
            };
            for (k, v) in md {
                let Value::String(s) = v else {
                    return Err(error(Problem::Invalid(format!(
                        "__metadata__ value for '{k}' is not a string"
                    ))));
                };
                metadata.insert(k, s);
            }
            continue;
        }
        tensors.push(tensor_info(path, name, &entry, data_start, buffer)?);
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

fn tensor_info(
    path: &Path,
    name: String,
    entry: &Value,
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
    let Value::Object(obj) = entry else {
        return Err(bad("entry is not an object"));
    };
    let dtype_name = obj
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing or non-string 'dtype'"))?;
    let dtype = Dtype::from_name(dtype_name).ok_or_else(|| {
        error(Problem::UnknownDtype {
            tensor: name.clone(),
            dtype: dtype_name.to_string(),
        })
    })?;
    let shape = obj
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing or non-array 'shape'"))?
        .iter()
        .map(Value::as_u64)
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| bad("'shape' holds a value that is not a non-negative integer"))?;
    let offsets = obj
        .get("data_offsets")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing or non-array 'data_offsets'"))?;
    let (begin, end) = match offsets.as_slice() {
        [b, e] => match (b.as_u64(), e.as_u64()) {
            (Some(b), Some(e)) => (b, e),
            _ => return Err(bad("'data_offsets' are not non-negative integers")),
        },
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
        let f = SourceFile::open(&p, "t.safetensors".into()).unwrap();
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
    }

    #[test]
    fn refuses_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        std::fs::write(&p, [1, 2, 3]).unwrap();
        let f = SourceFile::open(&p, "t".into()).unwrap();
        assert!(parse(&f).unwrap_err().to_string().contains("too short"));
        std::fs::write(&p, 100u64.to_le_bytes()).unwrap();
        let f = SourceFile::open(&p, "t".into()).unwrap();
        assert!(
            parse(&f)
                .unwrap_err()
                .to_string()
                .contains("runs past the end")
        );
    }
}
