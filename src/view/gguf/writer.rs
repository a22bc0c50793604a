//! The bytes of a GGUF header as gguf-py's `GGUFWriter` writes them
//! (docs/GGUF_OUT.md, "File"): magic, version 3, tensor and key/value
//! counts, the key/value pairs in insertion order, the tensor infos, zero
//! padding to the alignment; each tensor's data then follows at its offset,
//! padded to the alignment too.

use crate::catalog::gguf::{GgufArray, GgufMetadata, GgufValue};
use crate::quant::ggml::GgmlType;

/// Alignment of tensor data (gguf-py's default; the converter never writes
/// `general.alignment`).
pub const ALIGNMENT: u64 = 32;

/// `n` rounded up to the alignment.
pub fn pad(n: u64) -> u64 {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// Key/value pairs in the order they are added, as `GGUFWriter` keeps them:
/// a key added again keeps its first position and takes the new value;
/// empty strings and empty arrays are not added at all.
#[derive(Debug, Clone, Default)]
pub struct Kv {
    entries: Vec<(String, GgufValue)>,
}

impl Kv {
    pub fn new() -> Kv {
        Kv::default()
    }

    /// Add `key` (see the type comment for repeats and empty values).
    pub fn set(&mut self, key: &str, value: GgufValue) {
        let empty = match &value {
            GgufValue::String(s) => s.is_empty(),
            GgufValue::Array(a) => a.is_empty(),
            _ => false,
        };
        if empty {
            return;
        }
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    pub fn str(&mut self, key: &str, v: &str) {
        self.set(key, GgufValue::String(v.to_string()));
    }

    pub fn u32(&mut self, key: &str, v: u32) {
        self.set(key, GgufValue::U32(v));
    }

    pub fn f32(&mut self, key: &str, v: f32) {
        self.set(key, GgufValue::F32(v));
    }

    pub fn bool(&mut self, key: &str, v: bool) {
        self.set(key, GgufValue::Bool(v));
    }

    /// Add every pair of `other`, in its order.
    pub fn extend(&mut self, other: &Kv) {
        for (k, v) in &other.entries {
            self.set(k, v.clone());
        }
    }

    /// Take `key` out (the pairs after it move up).
    pub fn remove(&mut self, key: &str) {
        self.entries.retain(|(k, _)| k != key);
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// As typed metadata (what a GGUF reader would find).
    pub fn to_metadata(&self) -> GgufMetadata {
        GgufMetadata::new(self.entries.clone())
    }

    /// The encoded pairs.
    fn encode(&self, out: &mut Vec<u8>) {
        for (k, v) in &self.entries {
            string(out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            value(out, v);
        }
    }
}

/// One tensor info: name, numpy-order shape, type, and data size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Numpy order (the file stores it reversed: `ne[0]` is the row).
    pub shape: Vec<u64>,
    pub ty: GgmlType,
    /// Bytes of data (unpadded).
    pub bytes: u64,
}

/// A whole GGUF header: the bytes up to the data, and each tensor's data
/// offset from the start of the file.
#[derive(Debug, Clone)]
pub struct Header {
    pub bytes: Vec<u8>,
    pub offsets: Vec<u64>,
    /// The file's length: header, then every tensor padded.
    pub file_len: u64,
}

/// The header of a GGUF file with metadata `kv` and tensors `tensors`.
pub fn header(kv: &Kv, tensors: &[TensorInfo]) -> Header {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    kv.encode(&mut out);
    let mut rel = Vec::with_capacity(tensors.len());
    let mut at = 0u64;
    for t in tensors {
        string(&mut out, &t.name);
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in t.shape.iter().rev() {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ty.id().to_le_bytes());
        out.extend_from_slice(&at.to_le_bytes());
        rel.push(at);
        at += pad(t.bytes);
    }
    let start = pad(out.len() as u64);
    out.resize(start as usize, 0);
    Header {
        offsets: rel.iter().map(|r| start + r).collect(),
        file_len: start + at,
        bytes: out,
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => string(out, s),
        GgufValue::Array(a) => array(out, a),
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn array(out: &mut Vec<u8>, a: &GgufArray) {
    out.extend_from_slice(&a.elem_type_id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr, $f:expr) => {
            for x in $v {
                $f(out, x)
            }
        };
    }
    match a {
        GgufArray::U8(v) => out.extend_from_slice(v),
        GgufArray::I8(v) => each!(v, |o: &mut Vec<u8>, x: &i8| o.push(*x as u8)),
        GgufArray::U16(v) => each!(v, |o: &mut Vec<u8>, x: &u16| o
            .extend_from_slice(&x.to_le_bytes())),
        GgufArray::I16(v) => each!(v, |o: &mut Vec<u8>, x: &i16| o
            .extend_from_slice(&x.to_le_bytes())),
        GgufArray::U32(v) => each!(v, |o: &mut Vec<u8>, x: &u32| o
            .extend_from_slice(&x.to_le_bytes())),
        GgufArray::I32(v) => each!(v, |o: &mut Vec<u8>, x: &i32| o
            .extend_from_slice(&x.to_le_bytes())),
        GgufArray::F32(v) => each!(v, |o: &mut Vec<u8>, x: &f32| o
            .extend_from_slice(&x.to_le_bytes())),
        GgufArray::Bool(v) => each!(v, |o: &mut Vec<u8>, x: &bool| o.push(u8::from(*x))),
        GgufArray::String(v) => each!(v.iter(), |o: &mut Vec<u8>, x: &str| string(o, x)),
        GgufArray::Array(v) => each!(v, |o: &mut Vec<u8>, x: &GgufArray| array(o, x)),
        GgufArray::U64(v) => each!(v, |o: &mut Vec<u8>, x: &u64| o
            .extend_from_slice(&x.to_le_bytes())),
        GgufArray::I64(v) => each!(v, |o: &mut Vec<u8>, x: &i64| o
            .extend_from_slice(&x.to_le_bytes())),
        GgufArray::F64(v) => each!(v, |o: &mut Vec<u8>, x: &f64| o
            .extend_from_slice(&x.to_le_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let mut kv = Kv::new();
        kv.str("general.architecture", "llama");
        kv.u32("llama.block_count", 2);
        kv.str("general.name", "");
        kv.set(
            "tokenizer.ggml.tokens",
            GgufValue::Array(GgufArray::String(["a", "b"].into_iter().collect())),
        );
        // A repeat keeps its first position with the last value.
        kv.u32("llama.block_count", 3);
        assert_eq!(kv.len(), 3);
        assert_eq!(
            kv.entries[1],
            ("llama.block_count".into(), GgufValue::U32(3))
        );
        let tensors = vec![
            TensorInfo {
                name: "a".into(),
                shape: vec![2, 3],
                ty: GgmlType::F32,
                bytes: 24,
            },
            TensorInfo {
                name: "b".into(),
                shape: vec![64],
                ty: GgmlType::Q8_0,
                bytes: 68,
            },
        ];
        let h = header(&kv, &tensors);
        let b = &h.bytes;
        assert_eq!(&b[..4], b"GGUF");
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 2);
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 3);
        // The first key: length, bytes, type STRING, value.
        assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 20);
        assert_eq!(&b[32..52], b"general.architecture");
        assert_eq!(
            u32::from_le_bytes(b[52..56].try_into().unwrap()),
            crate::catalog::gguf::vt::STRING
        );
        assert_eq!(b.len() % 32, 0);
        assert_eq!(h.offsets, vec![b.len() as u64, b.len() as u64 + 32]);
        assert_eq!(h.file_len, h.offsets[1] + 96);
    }
}
