//! GGUF header reader and validator.
//!
//! For: reading the header of one mapped `.gguf` file (never its tensor
//! data): version, metadata key/values, tensor infos, alignment and the start
//! of the data blob, and validating them so that everything downstream can
//! trust the tensor extents. Each failure is one line naming the file and the
//! key, tensor or offset involved.
//!
//! Not for: dequantization (`quant::ggml`), multi-file (split) sets (the
//! caller reads `split.no` / `split.count` from [`GgufHeader::metadata`] and
//! combines files), catalog entries or views.
//!
//! Accepted (docs/GGUF.md has the full list): little-endian GGUF version 2 or
//! 3; all 13 metadata value types including arrays of arrays (nesting depth
//! at most [`MAX_ARRAY_DEPTH`]); keys and tensor names must be UTF-8, string
//! values that are not are decoded lossily (U+FFFD); a bool byte other than 0
//! is true; tensors have 1 to [`MAX_DIMS`] dimensions, a known ggml type
//! whose block size divides the row length, an offset that is a multiple of
//! the alignment, and data inside the file not overlapping another tensor.
//! Every count and length is checked against the bytes left in the file
//! before anything is allocated, and decoded metadata may take at most
//! [`MAX_HEADER_MEMORY`] bytes, so no input makes the parser panic or
//! allocate without bound.
//!
//! The metadata value types ([`GgufValue`], [`GgufArray`], [`GgufMetadata`])
//! live in `catalog::gguf`, below this reader and the views that read them;
//! they are re-exported here.

pub mod set;

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

use crate::catalog::gguf::vt;
pub use crate::catalog::gguf::{
    GgufArray, GgufMetadata, GgufStrings, GgufValue, StringsBuilder, value_type_name,
};
use crate::error::{Problem, SourceError};
use crate::quant::ggml::GgmlType;
use crate::store::SourceFile;

/// The four bytes every GGUF file starts with.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that sets the alignment (a u32 power of two).
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Most dimensions a tensor may have. ggml itself uses 4; gguf-py writes any
/// number, and gyrofs accepts up to 8.
pub const MAX_DIMS: u32 = 8;
/// Deepest nesting of arrays inside arrays (gguf-py writes nested arrays;
/// llama.cpp writes none).
pub const MAX_ARRAY_DEPTH: usize = 16;
/// Most memory the decoded header (metadata and tensor infos) may take. Real
/// headers, with 256k-token vocabularies, take tens of MiB.
pub const MAX_HEADER_MEMORY: u64 = 256 << 20;

/// A parsed, validated GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    /// 2 or 3 (the layouts are the same).
    pub version: u32,
    /// Key/value metadata in file order (keys are unique).
    pub metadata: GgufMetadata,
    /// Tensor infos in file order (names are unique).
    pub tensors: Vec<GgufTensor>,
    /// Alignment of tensor data: `general.alignment` or 32.
    pub alignment: u64,
    /// Absolute offset of the data blob: the end of the tensor infos rounded
    /// up to `alignment`. Tensor offsets in the file are relative to it.
    pub data_start: u64,
}

/// One tensor info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensor {
    pub name: String,
    pub ggml_type: GgmlType,
    /// Dimensions in ggml order: fastest-varying first (`dims[0]` is the row
    /// length). The numpy / safetensors shape is the reverse: [`Self::shape`].
    pub dims: Vec<u64>,
    /// Absolute offset of the tensor's first byte in the file.
    pub offset: u64,
    /// Bytes of tensor data: `n_elements / block_size * type_size`.
    pub n_bytes: u64,
}

impl GgufTensor {
    /// The shape in numpy / safetensors order (slowest first): `dims` reversed.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    /// Number of elements (the product of `dims`; validated not to overflow).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Absolute offset one past the tensor's last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.n_bytes
    }
}

/// Fewest bytes an element of value type `id` takes in the file, and the
/// memory one takes decoded (not counting string bytes or nested contents:
/// an array's string is its end in [`GgufStrings`]).
fn type_sizes(id: u32) -> Option<(u64, u64)> {
    let string = std::mem::size_of::<u64>() as u64;
    let array = std::mem::size_of::<GgufArray>() as u64;
    Some(match id {
        vt::U8 | vt::I8 | vt::BOOL => (1, 1),
        vt::U16 | vt::I16 => (2, 2),
        vt::U32 | vt::I32 | vt::F32 => (4, 4),
        vt::U64 | vt::I64 | vt::F64 => (8, 8),
        vt::STRING => (8, string),
        vt::ARRAY => (12, array),
        _ => return None,
    })
}

impl GgufHeader {
    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// All metadata as one JSON object ([`GgufMetadata::to_json`]).
    pub fn metadata_json(&self) -> Value {
        self.metadata.to_json()
    }
}

/// What is read of a file first. Most headers fit; a longer one (large
/// tokenizers) takes one more read of sixteen times as much, up to 16 MiB.
/// A remote source fetches this much of a GGUF at open
/// (`remote::FIRST_GGUF`), so its header usually costs no request more.
pub const FIRST_READ: u64 = 1 << 20;

/// Parse and validate the header of `file`.
///
/// A GGUF header does not state its length: parse a prefix of the file and,
/// while the parser wants bytes past it, read a longer one (bounded: a
/// header that large would be refused for its memory anyway, so a hostile
/// length cannot make a mount read or fetch more).
pub fn parse(file: &SourceFile) -> Result<GgufHeader, SourceError> {
    let (header, read) = parse_prefix(file);
    // Parsed into owned values: the header's pages (a vocabulary can be
    // over 100 MB) need not stay in the daemon's memory.
    file.release(0, read);
    header
}

/// [`parse`], reading longer prefixes as needed; with the length read.
fn parse_prefix(file: &SourceFile) -> (Result<GgufHeader, SourceError>, u64) {
    let mut avail = FIRST_READ.min(file.len);
    loop {
        let data = match file.read_head(avail) {
            Ok(d) => d,
            Err(e) => return (Err(e), avail),
        };
        let mut parser = Parser {
            path: &file.path,
            data,
            len: file.len as usize,
            pos: 0,
            budget: MAX_HEADER_MEMORY,
            wanted: 0,
        };
        match parser.header() {
            Err(_) if parser.wanted > 0 && avail < file.len && avail < 2 * MAX_HEADER_MEMORY => {
                avail = (parser.wanted as u64)
                    .max(avail * 16)
                    .min(file.len)
                    .min(2 * MAX_HEADER_MEMORY);
            }
            other => return (other, avail),
        }
    }
}

/// Parse the header of the file at `path` whose bytes are `data` (the whole
/// file; `path` is only for messages). The entry point for fuzzing.
pub fn parse_data(path: &Path, data: &[u8]) -> Result<GgufHeader, SourceError> {
    Parser {
        path,
        data,
        len: data.len(),
        pos: 0,
        budget: MAX_HEADER_MEMORY,
        wanted: 0,
    }
    .header()
}

struct Parser<'a> {
    path: &'a Path,
    /// The bytes read: a prefix of the file (all of it, or enough for the
    /// header).
    data: &'a [u8],
    /// The file's length.
    len: usize,
    pos: usize,
    /// Memory the decoded header may still take.
    budget: u64,
    /// Set when a read went past `data`: how many bytes it needed.
    wanted: usize,
}

/// What is being read, for messages: `key 'general.name'`, `tensor 'x'`.
type Ctx<'c> = &'c dyn Fn() -> String;

/// A tensor info as stored: name, type, dims, offset in the data blob.
type TensorInfo = (String, GgmlType, Vec<u64>, u64);

impl Parser<'_> {
    fn err(&self, why: String) -> SourceError {
        self.problem(Problem::Invalid(why))
    }

    fn problem(&self, problem: Problem) -> SourceError {
        SourceError::new(self.path, problem)
    }

    fn remaining(&self) -> u64 {
        (self.len - self.pos) as u64
    }

    /// The next `n` bytes, or an error naming `what` and where.
    fn take(&mut self, n: u64, what: Ctx<'_>) -> Result<&[u8], SourceError> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "{} at offset {} needs {n} bytes but the file ends after {} (file is {} bytes)",
                what(),
                self.pos,
                self.remaining(),
                self.len
            )));
        }
        let start = self.pos;
        if start + n as usize > self.data.len() {
            self.wanted = start + n as usize;
            return Err(self.err(format!(
                "{} at offset {start} is past the {} bytes read",
                what(),
                self.data.len()
            )));
        }
        self.pos += n as usize;
        Ok(&self.data[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: Ctx<'_>) -> Result<[u8; N], SourceError> {
        let b = self.take(N as u64, what)?;
        Ok(b.try_into().expect("take returns exactly N bytes"))
    }

    fn u32(&mut self, what: Ctx<'_>) -> Result<u32, SourceError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: Ctx<'_>) -> Result<u64, SourceError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Account for `bytes` of decoded memory.
    fn charge(&mut self, bytes: u64, what: Ctx<'_>) -> Result<(), SourceError> {
        match self.budget.checked_sub(bytes) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => Err(self.err(format!(
                "{} at offset {}: the header would take more than {} MiB of memory",
                what(),
                self.pos,
                MAX_HEADER_MEMORY >> 20
            ))),
        }
    }

    /// Check that `count` items of at least `min_size` bytes each fit in the
    /// rest of the file.
    fn check_count(&self, count: u64, min_size: u64, what: Ctx<'_>) -> Result<(), SourceError> {
        let fits = count
            .checked_mul(min_size)
            .is_some_and(|n| n <= self.remaining());
        if !fits {
            return Err(self.err(format!(
                "{}: count {count} at offset {} cannot fit: {count} x {min_size} bytes exceed the {} bytes left in the file",
                what(),
                self.pos.saturating_sub(8),
                self.remaining()
            )));
        }
        Ok(())
    }

    /// A GGUF string's raw bytes (u64 length, then the bytes).
    fn string_bytes(&mut self, what: Ctx<'_>) -> Result<&[u8], SourceError> {
        let at = self.pos;
        let len = self.u64(&|| format!("{} (string length)", what()))?;
        if len > self.remaining() {
            return Err(self.err(format!(
                "{}: string length {len} at offset {at} runs past the end of the file ({} bytes left)",
                what(),
                self.remaining()
            )));
        }
        self.take(len, what)
    }

    /// A string that must be UTF-8 (keys, tensor names).
    fn strict_string(&mut self, what: Ctx<'_>) -> Result<String, SourceError> {
        let at = self.pos;
        let b = self.string_bytes(what)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => {
                let why = format!(
                    "{} at offset {at} is not valid UTF-8 (bad byte at {})",
                    what(),
                    at as u64 + 8 + e.valid_up_to() as u64
                );
                Err(self.err(why))
            }
        }
    }

    /// A string value (invalid UTF-8 replaced with U+FFFD).
    fn value_string(&mut self, what: Ctx<'_>) -> Result<String, SourceError> {
        let b = self.string_bytes(what)?;
        let s = String::from_utf8_lossy(b).into_owned();
        // The String itself was charged with its key/value or array.
        self.charge(s.len() as u64, what)?;
        Ok(s)
    }

    /// `n` string values of an array, into one buffer (each charged with
    /// the array; their text is charged here).
    fn strings(&mut self, n: usize, ctx: Ctx<'_>) -> Result<GgufStrings, SourceError> {
        let mut v = StringsBuilder::with_capacity(n);
        for i in 0..n {
            let what = || format!("{}[{i}]", ctx());
            let b = self.string_bytes(&what)?;
            let len = match std::str::from_utf8(b) {
                Ok(s) => {
                    v.push(s);
                    s.len()
                }
                Err(_) => {
                    let s = String::from_utf8_lossy(b);
                    v.push(&s);
                    s.len()
                }
            };
            self.charge(len as u64, &what)?;
        }
        Ok(v.finish())
    }

    fn header(&mut self) -> Result<GgufHeader, SourceError> {
        let (version, tensor_count, kv_count) = self.preamble()?;
        let metadata = self.metadata(kv_count)?;
        let infos = self.tensor_infos(tensor_count)?;
        let header_end = self.pos as u64;
        let alignment = self.alignment(&metadata)?;
        let len = self.len as u64;
        let data_start = header_end
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| self.err("data start overflows".into()))?;
        if !infos.is_empty() && data_start > len {
            return Err(self.err(format!(
                "tensor data would start at offset {data_start}, past the end of the file ({len} bytes)"
            )));
        }

        let mut tensors = Vec::with_capacity(infos.len());
        for (name, ggml_type, dims, rel) in infos {
            tensors.push(self.tensor(name, ggml_type, dims, rel, alignment, data_start)?);
        }
        self.check_overlap(&tensors, data_start)?;

        Ok(GgufHeader {
            version,
            metadata,
            tensors,
            alignment,
            data_start,
        })
    }

    /// Magic, version and the two counts: (version, tensor count, key/value count).
    fn preamble(&mut self) -> Result<(u32, u64, u64), SourceError> {
        let len = self.len as u64;
        if len < 4 {
            return Err(self.problem(Problem::Truncated {
                what: "the GGUF magic",
                len,
                need: 4,
            }));
        }
        if &self.data[..4] != MAGIC {
            return Err(self.err(format!(
                "not a GGUF file: starts with {:02x} {:02x} {:02x} {:02x}, not 'GGUF'",
                self.data[0], self.data[1], self.data[2], self.data[3]
            )));
        }
        if len < 24 {
            return Err(self.problem(Problem::Truncated {
                what: "the GGUF header (magic, version, tensor and key/value counts)",
                len,
                need: 24,
            }));
        }
        self.pos = 4;
        let version = self.u32(&|| "version".into())?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(self.err(
                    "GGUF version 1 is not supported (only versions 2 and 3); re-convert the model with a current llama.cpp".into(),
                ));
            }
            v if v & 0xFFFF == 0 && matches!(v.swap_bytes(), 2 | 3) => {
                return Err(self.err(format!(
                    "big-endian GGUF (version {}) is not supported",
                    v.swap_bytes()
                )));
            }
            v => {
                return Err(self.err(format!("unsupported GGUF version {v} (supported: 2 and 3)")));
            }
        }
        let tensor_count = self.u64(&|| "tensor count".into())?;
        let kv_count = self.u64(&|| "key/value count".into())?;
        // Smallest key/value: empty key (8), type (4), one-byte value (1).
        // Smallest tensor info: empty name (8), n_dims (4), one dim (8),
        // type (4), offset (8).
        let fits = kv_count
            .checked_mul(13)
            .zip(tensor_count.checked_mul(32))
            .and_then(|(a, b)| a.checked_add(b))
            .is_some_and(|n| n <= self.remaining());
        if !fits {
            return Err(self.err(format!(
                "{kv_count} key/values and {tensor_count} tensor infos cannot fit in the {} bytes after the counts",
                self.remaining()
            )));
        }
        Ok((version, tensor_count, kv_count))
    }

    /// The key/value list, keys unique.
    fn metadata(&mut self, kv_count: u64) -> Result<GgufMetadata, SourceError> {
        let what = || "key/value list".to_string();
        self.charge(
            kv_count.saturating_mul(std::mem::size_of::<(String, GgufValue)>() as u64),
            &what,
        )?;
        let mut metadata = Vec::with_capacity(kv_count as usize);
        let mut keys = HashSet::new();
        for i in 0..kv_count {
            let at = self.pos;
            let key = self.strict_string(&|| format!("key #{i}"))?;
            if !keys.insert(key.clone()) {
                return Err(self.err(format!(
                    "key '{key}' appears twice (second time at offset {at})"
                )));
            }
            self.charge(key.len() as u64, &|| format!("key '{key}'"))?;
            let ctx = || format!("key '{key}'");
            let ty = self.u32(&|| format!("key '{key}' (value type)"))?;
            let value = self.value(ty, &ctx, 0)?;
            metadata.push((key, value));
        }
        Ok(GgufMetadata::new(metadata))
    }

    /// The tensor infos as stored: (name, type, dims, offset in the data
    /// blob); names unique, dimension counts and types checked.
    fn tensor_infos(&mut self, tensor_count: u64) -> Result<Vec<TensorInfo>, SourceError> {
        let what = || "tensor info list".to_string();
        self.charge(
            tensor_count.saturating_mul(std::mem::size_of::<GgufTensor>() as u64),
            &what,
        )?;
        let mut infos = Vec::with_capacity(tensor_count as usize);
        let mut names = HashSet::new();
        for i in 0..tensor_count {
            let at = self.pos;
            let name = self.strict_string(&|| format!("name of tensor #{i}"))?;
            if !names.insert(name.clone()) {
                return Err(self.err(format!(
                    "tensor '{name}' appears twice (second time at offset {at})"
                )));
            }
            let ctx = || format!("tensor '{name}'");
            let n_dims = self.u32(&|| format!("tensor '{name}' (n_dims)"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(self.err(format!(
                    "tensor '{name}' has {n_dims} dimensions (1 to {MAX_DIMS} are supported)"
                )));
            }
            self.charge(name.len() as u64 + 8 * n_dims as u64, &ctx)?;
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(self.u64(&|| format!("tensor '{name}' (dims)"))?);
            }
            let type_at = self.pos;
            let type_id = self.u32(&|| format!("tensor '{name}' (type)"))?;
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
                self.err(match GgmlType::removed_name(type_id) {
                    Some(old) => format!(
                        "tensor '{name}' has ggml type {type_id} ({old}), which ggml has removed"
                    ),
                    None => format!(
                        "tensor '{name}' has unknown ggml type id {type_id} (at offset {type_at})"
                    ),
                })
            })?;
            let offset = self.u64(&|| format!("tensor '{name}' (offset)"))?;
            infos.push((name, ggml_type, dims, offset));
        }
        Ok(infos)
    }

    /// `general.alignment` (a non-zero power of two, u32) or the default.
    fn alignment(&self, metadata: &GgufMetadata) -> Result<u64, SourceError> {
        match metadata.get(ALIGNMENT_KEY) {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(GgufValue::U32(a)) if *a != 0 && a.is_power_of_two() => Ok(u64::from(*a)),
            Some(GgufValue::U32(a)) => Err(self.err(format!(
                "{ALIGNMENT_KEY} is {a}, not a non-zero power of two"
            ))),
            Some(v) => Err(self.err(format!(
                "{ALIGNMENT_KEY} has type {}, expected u32",
                v.type_name()
            ))),
        }
    }

    fn tensor(
        &self,
        name: String,
        ggml_type: GgmlType,
        dims: Vec<u64>,
        rel: u64,
        alignment: u64,
        data_start: u64,
    ) -> Result<GgufTensor, SourceError> {
        let len = self.len as u64;
        let bad = |why: String| {
            self.problem(Problem::Tensor {
                tensor: name.clone(),
                why,
            })
        };
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("dims {dims:?} overflow a 64-bit element count")))?;
        let bs = ggml_type.block_size();
        if !dims[0].is_multiple_of(bs) {
            return Err(bad(format!(
                "row length {} (dims[0]) is not a multiple of the {} block size {bs}",
                dims[0], ggml_type
            )));
        }
        let n_bytes = ggml_type.bytes_for(n_elements).ok_or_else(|| {
            bad(format!(
                "{ggml_type} data of dims {dims:?} overflows 64 bits"
            ))
        })?;
        if !rel.is_multiple_of(alignment) {
            return Err(bad(format!(
                "data offset {rel} is not a multiple of the alignment {alignment}"
            )));
        }
        let start = data_start.checked_add(rel);
        let end = start.and_then(|s| s.checked_add(n_bytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= len => Ok(GgufTensor {
                name,
                ggml_type,
                dims,
                offset: start,
                n_bytes,
            }),
            _ => Err(bad(format!(
                "{n_bytes} bytes of {ggml_type} data at data offset {rel} (file offset {}) run past the end of the file ({len} bytes)",
                data_start as u128 + rel as u128
            ))),
        }
    }

    fn check_overlap(&self, tensors: &[GgufTensor], data_start: u64) -> Result<(), SourceError> {
        let mut order: Vec<&GgufTensor> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
        order.sort_by_key(|t| (t.offset, t.end()));
        let mut prev: Option<&GgufTensor> = None;
        for t in order {
            if let Some(p) = prev {
                if t.offset < p.end() {
                    return Err(self.problem(Problem::Overlap {
                        first: p.name.clone(),
                        second: t.name.clone(),
                        begin: t.offset - data_start,
                        end: p.end().min(t.end()) - data_start,
                    }));
                }
                if t.end() <= p.end() {
                    continue;
                }
            }
            prev = Some(t);
        }
        Ok(())
    }

    /// A value of type `ty` (the type id was read already).
    fn value(&mut self, ty: u32, ctx: Ctx<'_>, depth: usize) -> Result<GgufValue, SourceError> {
        Ok(match ty {
            vt::U8 => GgufValue::U8(u8::from_le_bytes(self.array(ctx)?)),
            vt::I8 => GgufValue::I8(i8::from_le_bytes(self.array(ctx)?)),
            vt::U16 => GgufValue::U16(u16::from_le_bytes(self.array(ctx)?)),
            vt::I16 => GgufValue::I16(i16::from_le_bytes(self.array(ctx)?)),
            vt::U32 => GgufValue::U32(u32::from_le_bytes(self.array(ctx)?)),
            vt::I32 => GgufValue::I32(i32::from_le_bytes(self.array(ctx)?)),
            vt::F32 => GgufValue::F32(f32::from_le_bytes(self.array(ctx)?)),
            vt::BOOL => GgufValue::Bool(self.array::<1>(ctx)?[0] != 0),
            vt::STRING => GgufValue::String(self.value_string(ctx)?),
            vt::ARRAY => GgufValue::Array(self.array_value(ctx, depth + 1)?),
            vt::U64 => GgufValue::U64(u64::from_le_bytes(self.array(ctx)?)),
            vt::I64 => GgufValue::I64(i64::from_le_bytes(self.array(ctx)?)),
            vt::F64 => GgufValue::F64(f64::from_le_bytes(self.array(ctx)?)),
            other => {
                return Err(self.err(format!(
                    "{}: unknown value type {other} at offset {}",
                    ctx(),
                    self.pos - 4
                )));
            }
        })
    }

    /// An array (element type, count, elements) at nesting depth `depth`.
    fn array_value(&mut self, ctx: Ctx<'_>, depth: usize) -> Result<GgufArray, SourceError> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(self.err(format!(
                "{}: arrays nested deeper than {MAX_ARRAY_DEPTH} levels at offset {}",
                ctx(),
                self.pos
            )));
        }
        let ty_at = self.pos;
        let ty = self.u32(&|| format!("{} (array element type)", ctx()))?;
        let count = self.u64(&|| format!("{} (array length)", ctx()))?;
        let Some((min_size, mem_size)) = type_sizes(ty) else {
            return Err(self.err(format!(
                "{}: unknown array element type {ty} at offset {ty_at}",
                ctx()
            )));
        };
        self.check_count(count, min_size, &|| {
            format!(
                "{} (array of {})",
                ctx(),
                value_type_name(ty).unwrap_or("?")
            )
        })?;
        // Charged before allocating: a count the budget cannot hold fails here.
        self.charge(count.saturating_mul(mem_size), ctx)?;
        let n = count as usize;

        fn fixed<const N: usize, T>(
            p: &mut Parser<'_>,
            n: usize,
            ctx: Ctx<'_>,
            f: impl Fn([u8; N]) -> T,
        ) -> Result<Vec<T>, SourceError> {
            let bytes = p.take((n * N) as u64, ctx)?;
            Ok(bytes
                .chunks_exact(N)
                .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
                .collect())
        }

        Ok(match ty {
            vt::U8 => GgufArray::U8(fixed(self, n, ctx, u8::from_le_bytes)?),
            vt::I8 => GgufArray::I8(fixed(self, n, ctx, i8::from_le_bytes)?),
            vt::U16 => GgufArray::U16(fixed(self, n, ctx, u16::from_le_bytes)?),
            vt::I16 => GgufArray::I16(fixed(self, n, ctx, i16::from_le_bytes)?),
            vt::U32 => GgufArray::U32(fixed(self, n, ctx, u32::from_le_bytes)?),
            vt::I32 => GgufArray::I32(fixed(self, n, ctx, i32::from_le_bytes)?),
            vt::F32 => GgufArray::F32(fixed(self, n, ctx, f32::from_le_bytes)?),
            vt::BOOL => GgufArray::Bool(fixed(self, n, ctx, |[b]: [u8; 1]| b != 0)?),
            vt::U64 => GgufArray::U64(fixed(self, n, ctx, u64::from_le_bytes)?),
            vt::I64 => GgufArray::I64(fixed(self, n, ctx, i64::from_le_bytes)?),
            vt::F64 => GgufArray::F64(fixed(self, n, ctx, f64::from_le_bytes)?),
            vt::STRING => GgufArray::String(self.strings(n, ctx)?),
            _ => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.array_value(&|| format!("{}[{i}]", ctx()), depth + 1)?);
                }
                GgufArray::Array(v)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF byte builder for tests.
    #[derive(Clone)]
    struct B(Vec<u8>);

    impl B {
        fn new(version: u32, tensors: u64, kvs: u64) -> B {
            let mut b = B(MAGIC.to_vec());
            b.u32(version).u64(tensors).u64(kvs);
            b
        }
        fn u32(&mut self, v: u32) -> &mut Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn u64(&mut self, v: u64) -> &mut Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn raw(&mut self, b: &[u8]) -> &mut Self {
            self.0.extend_from_slice(b);
            self
        }
        fn str(&mut self, s: &[u8]) -> &mut Self {
            self.u64(s.len() as u64).raw(s)
        }
        fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
            self.str(key.as_bytes()).u32(vt::U32).u32(v)
        }
        /// Tensor info: name, dims (ggml order), type id, relative offset.
        fn ti(&mut self, name: &str, dims: &[u64], ty: u32, off: u64) -> &mut Self {
            self.str(name.as_bytes()).u32(dims.len() as u32);
            for &d in dims {
                self.u64(d);
            }
            self.u32(ty).u64(off)
        }
        /// Zero padding to `align`, then `n` data bytes.
        fn data(&mut self, align: usize, n: usize) -> &mut Self {
            while !self.0.len().is_multiple_of(align) {
                self.0.push(0);
            }
            self.0.extend(std::iter::repeat_n(0xAB, n));
            self
        }
    }

    fn parse_b(b: &B) -> Result<GgufHeader, SourceError> {
        parse_data(Path::new("t.gguf"), &b.0)
    }

    #[track_caller]
    fn err(b: &B, want: &str) {
        match parse_b(b) {
            Ok(h) => panic!("expected an error containing {want:?}, parsed {h:?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("t.gguf: "), "{msg}");
                assert!(msg.contains(want), "{msg:?} does not contain {want:?}");
                assert!(!msg.contains('\n'), "{msg}");
            }
        }
    }

    /// Two F32 tensors and one Q4_0 tensor, alignment 32.
    fn valid() -> B {
        let mut b = B::new(3, 3, 2);
        b.kv_u32("general.alignment", 32);
        b.str(b"general.name").u32(vt::STRING).str(b"tiny");
        b.ti("a", &[4, 2], 0, 0);
        b.ti("b", &[3], 0, 32);
        b.ti("q", &[64], 2, 64);
        b.data(32, 64 + 36);
        b
    }

    #[test]
    fn parses_valid() {
        let h = parse_b(&valid()).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.alignment, 32);
        assert_eq!(h.data_start % 32, 0);
        assert_eq!(h.get("general.name").unwrap().as_str(), Some("tiny"));
        assert_eq!(h.tensors.len(), 3);
        let a = &h.tensors[0];
        assert_eq!((a.dims.clone(), a.shape()), (vec![4, 2], vec![2, 4]));
        assert_eq!((a.offset, a.n_bytes), (h.data_start, 32));
        let q = &h.tensors[2];
        assert_eq!(q.ggml_type, GgmlType::Q4_0);
        assert_eq!((q.offset, q.n_bytes), (h.data_start + 64, 36));

        // Version 2 has the same layout.
        let mut v2 = valid();
        v2.0[4] = 2;
        assert_eq!(parse_b(&v2).unwrap().version, 2);
    }

    #[test]
    fn refuses_bad_magic_and_versions() {
        err(&B(b"GGU".to_vec()), "too short for the GGUF magic");
        err(
            &B(b"GGUF\x03\0\0\0".to_vec()),
            "too short for the GGUF header",
        );
        let mut b = valid();
        b.0[..4].copy_from_slice(b"GGML");
        err(&b, "not a GGUF file: starts with 47 47 4d 4c");
        for (v, want) in [
            (1, "GGUF version 1 is not supported"),
            (4, "unsupported GGUF version 4"),
            (0, "unsupported GGUF version 0"),
            (0x0300_0000, "big-endian GGUF (version 3) is not supported"),
        ] {
            let mut b = valid();
            b.0[4..8].copy_from_slice(&u32::to_le_bytes(v));
            err(&b, want);
        }
    }

    #[test]
    fn refuses_impossible_counts() {
        err(
            &B::new(3, 0, 1 << 63),
            "key/values and 0 tensor infos cannot fit",
        );
        err(&B::new(3, u64::MAX, 0), "cannot fit");
        err(&B::new(3, 1 << 59, 1 << 59), "cannot fit");
        // A key whose length runs past the end.
        let mut b = B::new(3, 0, 1);
        b.u64(u64::MAX).raw(&[0; 16]);
        err(
            &b,
            "key #0: string length 18446744073709551615 at offset 24 runs past the end",
        );
        // Arrays whose count cannot fit.
        for (ty, count) in [
            (vt::U64, 1u64 << 62),
            (vt::STRING, 1 << 61),
            (vt::ARRAY, 1 << 60),
            (vt::U8, 1 << 63),
        ] {
            let mut b = B::new(3, 0, 1);
            b.str(b"arr")
                .u32(vt::ARRAY)
                .u32(ty)
                .u64(count)
                .raw(&[0; 64]);
            err(
                &b,
                &format!(
                    "key 'arr' (array of {}): count {count}",
                    value_type_name(ty).unwrap()
                ),
            );
        }
        // A string value cut short.
        let mut b = B::new(3, 0, 1);
        b.str(b"s").u32(vt::STRING).u64(10).raw(b"abc");
        err(&b, "key 's': string length 10 at offset");
        // A scalar cut short.
        let mut b = B::new(3, 0, 1);
        b.str(b"x").u32(vt::U64).raw(&[1, 2, 3]);
        err(&b, "key 'x' at offset");
    }

    #[test]
    fn refuses_bad_keys_and_values() {
        let mut b = B::new(3, 0, 1);
        b.str(b"t").u32(13).u64(0);
        err(&b, "key 't': unknown value type 13 at offset");
        let mut b = B::new(3, 0, 1);
        b.str(b"t").u32(vt::ARRAY).u32(77).u64(1).u64(0);
        err(&b, "key 't': unknown array element type 77");
        let mut b = B::new(3, 0, 1);
        b.str(b"bad\xffkey").u32(vt::U8).raw(&[1]);
        err(
            &b,
            "key #0 at offset 24 is not valid UTF-8 (bad byte at 35)",
        );
        let mut b = B::new(3, 0, 2);
        b.kv_u32("k", 1).kv_u32("k", 2);
        err(&b, "key 'k' appears twice");
        // Arrays nested too deep.
        let mut b = B::new(3, 0, 1);
        b.str(b"deep").u32(vt::ARRAY);
        for _ in 0..20 {
            b.u32(vt::ARRAY).u64(1);
        }
        b.u32(vt::U8).u64(0);
        err(&b, "key 'deep'[0][0]");
        err(&b, "arrays nested deeper than 16 levels");
    }

    #[test]
    fn reads_every_value_type() {
        let mut b = B::new(3, 0, 17);
        b.str(b"u8").u32(vt::U8).raw(&[200]);
        b.str(b"i8").u32(vt::I8).raw(&[0x80]);
        b.str(b"u16").u32(vt::U16).raw(&[0xFF, 0xFF]);
        b.str(b"i16").u32(vt::I16).raw(&[0x00, 0x80]);
        b.str(b"u32").u32(vt::U32).u32(u32::MAX);
        b.str(b"i32").u32(vt::I32).u32(0x8000_0000);
        b.str(b"f32").u32(vt::F32).raw(&1e-5f32.to_le_bytes());
        b.str(b"bool").u32(vt::BOOL).raw(&[1]);
        b.str(b"bool2").u32(vt::BOOL).raw(&[2]);
        b.str(b"str").u32(vt::STRING).str(b"h\xffi");
        b.str(b"u64").u32(vt::U64).u64(u64::MAX);
        b.str(b"i64").u32(vt::I64).u64(1 << 63);
        b.str(b"f64").u32(vt::F64).raw(&0.1f64.to_le_bytes());
        b.str(b"nan").u32(vt::F32).raw(&f32::NAN.to_le_bytes());
        b.str(b"inf")
            .u32(vt::F64)
            .raw(&f64::NEG_INFINITY.to_le_bytes());
        b.str(b"arr").u32(vt::ARRAY).u32(vt::ARRAY).u64(3);
        b.u32(vt::I16).u64(2).raw(&[1, 0, 0xFF, 0xFF]);
        b.u32(vt::STRING).u64(2).str(b"a").str(b"");
        b.u32(vt::F32).u64(0);
        b.str(b"empty").u32(vt::ARRAY).u32(vt::BOOL).u64(0);
        let h = parse_b(&b).unwrap();
        let keys: Vec<&str> = h.metadata.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys[..3], ["u8", "i8", "u16"]);
        let types: Vec<u32> = h.metadata.iter().map(|(_, v)| v.type_id()).collect();
        assert_eq!(
            types,
            [0, 1, 2, 3, 4, 5, 6, 7, 7, 8, 10, 11, 12, 6, 12, 9, 9]
        );
        let json = serde_json::to_string(&h.metadata_json()).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"arr":[[1,-1],["a",""],[]],"bool":true,"bool2":true,"empty":[],"f32":0.00001,"#,
                r#""f64":0.1,"i16":-32768,"i32":-2147483648,"i64":-9223372036854775808,"#,
                r#""i8":-128,"inf":"-inf","nan":"NaN","str":"h\ufffdi","u16":65535,"#,
                r#""u32":4294967295,"u64":18446744073709551615,"u8":200}"#
            )
            .replace("\\ufffd", "\u{fffd}")
        );
        assert_eq!(h.get("u16").unwrap().as_u64(), Some(65535));
        assert_eq!(h.get("i64").unwrap().as_u64(), None);
        match h.get("arr") {
            Some(GgufValue::Array(GgufArray::Array(a))) => {
                assert_eq!(a.len(), 3);
                assert_eq!(a[1], GgufArray::String(["a", ""].into_iter().collect()));
                assert!(a[2].is_empty());
                assert_eq!(a[2].elem_type_id(), vt::F32);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_bad_tensor_infos() {
        let one = |name: &str, dims: &[u64], ty: u32, off: u64, data: usize| {
            let mut b = B::new(3, 1, 0);
            b.ti(name, dims, ty, off).data(32, data);
            b
        };
        err(
            &one("t", &[1], 99, 0, 4),
            "tensor 't' has unknown ggml type id 99 (at offset",
        );
        err(
            &one("t", &[32], 4, 0, 20),
            "tensor 't' has ggml type 4 (Q4_2), which ggml has removed",
        );
        err(
            &one("t", &[], 0, 0, 4),
            "tensor 't' has 0 dimensions (1 to 8 are supported)",
        );
        err(&one("t", &[1; 9], 0, 0, 4), "tensor 't' has 9 dimensions");
        err(
            &one("t", &[1 << 32, 1 << 32, 1 << 32], 0, 0, 4),
            "tensor 't': dims [4294967296, 4294967296, 4294967296] overflow",
        );
        err(
            &one("t", &[1 << 62], 0, 0, 4),
            "tensor 't': F32 data of dims [4611686018427387904] overflows 64 bits",
        );
        err(
            &one("t", &[48], 12, 0, 4096),
            "tensor 't': row length 48 (dims[0]) is not a multiple of the Q4_K block size 256",
        );
        err(
            &one("t", &[1], 0, 16, 64),
            "tensor 't': data offset 16 is not a multiple of the alignment 32",
        );
        err(
            &one("t", &[8], 0, 0, 31),
            "tensor 't': 32 bytes of F32 data at data offset 0 (file offset 64) run past the end of the file (95 bytes)",
        );
        err(
            &one("t", &[8], 0, u64::MAX - 31, 64),
            "run past the end of the file",
        );
        err(&one("t\u{0}\u{7f}", &[8], 0, 64, 64), "run past the end");
        let mut b = B::new(3, 1, 0);
        b.str(b"\xc3").u32(1).u64(1).u32(0).u64(0).data(32, 4);
        err(&b, "name of tensor #0 at offset 24 is not valid UTF-8");
        // Tensor count larger than the infos present.
        let mut b = B::new(3, 2, 0);
        b.ti("t", &[1], 0, 0).data(32, 64);
        err(
            &b,
            "name of tensor #1: string length 12321848580485677056 at offset 57 runs past the end",
        );
        // Zero-size tensors are fine and overlap nothing.
        let h = parse_b(&one("t", &[0, 5], 12, 0, 0)).unwrap();
        assert_eq!(h.tensors[0].n_bytes, 0);
    }

    #[test]
    fn refuses_duplicates_and_overlaps() {
        let mut b = B::new(3, 2, 0);
        b.ti("t", &[8], 0, 0).ti("t", &[8], 0, 32).data(32, 64);
        err(&b, "tensor 't' appears twice (second time at offset");
        let mut b = B::new(3, 3, 0);
        b.ti("a", &[8], 0, 0)
            .ti("b", &[16], 0, 64)
            .ti("c", &[16], 0, 32)
            .data(32, 128);
        err(
            &b,
            "tensors 'c' and 'b' overlap (bytes 64..96 of the data buffer)",
        );
        // Contained in a larger tensor.
        let mut b = B::new(3, 2, 0);
        b.ti("big", &[64], 0, 0)
            .ti("small", &[8], 0, 64)
            .data(32, 256);
        err(&b, "tensors 'big' and 'small' overlap");
        // Same bytes twice.
        let mut b = B::new(3, 2, 0);
        b.ti("x", &[8], 0, 32).ti("y", &[8], 0, 32).data(32, 64);
        err(&b, "tensors 'x' and 'y' overlap (bytes 32..64");
    }

    #[test]
    fn alignment() {
        let with = |align: &mut dyn FnMut(&mut B)| {
            let mut b = B::new(3, 1, 1);
            align(&mut b);
            b.ti("t", &[16], 0, 64).data(64, 128);
            b
        };
        let h = parse_b(&with(&mut |b| {
            b.kv_u32(ALIGNMENT_KEY, 64);
        }))
        .unwrap();
        assert_eq!((h.alignment, h.data_start % 64), (64, 0));
        assert_eq!(h.tensors[0].offset, h.data_start + 64);
        err(
            &with(&mut |b| {
                b.kv_u32(ALIGNMENT_KEY, 0);
            }),
            "general.alignment is 0, not a non-zero power of two",
        );
        err(
            &with(&mut |b| {
                b.kv_u32(ALIGNMENT_KEY, 48);
            }),
            "general.alignment is 48",
        );
        err(
            &with(&mut |b| {
                b.str(ALIGNMENT_KEY.as_bytes()).u32(vt::U64).u64(64);
            }),
            "general.alignment has type u64, expected u32",
        );
        // A huge alignment pushes the data past the end of the file.
        err(
            &with(&mut |b| {
                b.kv_u32(ALIGNMENT_KEY, 1 << 31);
            }),
            "tensor data would start at offset 2147483648, past the end of the file",
        );
    }

    /// Every prefix and thousands of single-byte corruptions of a valid file
    /// parse or fail cleanly: never a panic.
    #[test]
    fn never_panics_on_corruption() {
        let mut b = valid();
        // Add an array of arrays and strings so corruption reaches them too.
        b = {
            let mut c = B::new(3, 3, 3);
            c.kv_u32("general.alignment", 32);
            c.str(b"general.name").u32(vt::STRING).str(b"tiny");
            c.str(b"arr").u32(vt::ARRAY).u32(vt::ARRAY).u64(2);
            c.u32(vt::STRING).u64(2).str(b"ab").str(b"c");
            c.u32(vt::U32).u64(2).u32(1).u32(2);
            c.ti("a", &[4, 2], 0, 0)
                .ti("b", &[3], 0, 32)
                .ti("q", &[64], 2, 64);
            c.data(32, 100);
            drop(b);
            c
        };
        assert!(parse_b(&b).is_ok());
        let data_start = parse_b(&b).unwrap().data_start as usize;
        for n in 0..b.0.len() {
            let _ = parse_b(&B(b.0[..n].to_vec()));
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let specials = [0u8, 1, 0x7F, 0x80, 0xFF, 9, 8, 12, 13];
        for _ in 0..20_000 {
            let mut c = b.clone();
            for _ in 0..1 + next() % 3 {
                let i = (next() % data_start as u64) as usize;
                let r = next();
                c.0[i] = if r % 2 == 0 {
                    specials[(r / 2 % specials.len() as u64) as usize]
                } else {
                    (r >> 8) as u8
                };
            }
            let _ = parse_b(&c);
        }
    }

    /// The fixtures written by gguf.GGUFWriter (scripts/make_gguf_golden.py)
    /// parse to what gguf.GGUFReader reads from them.
    #[test]
    fn golden_files_match_gguf_py_reader() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf");
        let expected: Value =
            serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
        let expected = expected.as_object().unwrap();
        assert_eq!(expected.len(), 2);
        for (file, exp) in expected {
            let f = crate::store::Opener::local()
                .open(&dir.join(file), file.clone())
                .unwrap();
            let h = parse(&f).unwrap();
            assert_eq!(Value::from(h.version), exp["version"], "{file}");
            assert_eq!(Value::from(h.alignment), exp["alignment"], "{file}");
            assert_eq!(Value::from(h.data_start), exp["data_start"], "{file}");
            let tensors = exp["tensors"].as_array().unwrap();
            assert_eq!(h.tensors.len(), tensors.len(), "{file}");
            for (t, e) in h.tensors.iter().zip(tensors) {
                let got = serde_json::json!({
                    "name": t.name,
                    "type": t.ggml_type.name(),
                    "type_id": t.ggml_type.id(),
                    "shape": t.shape(),
                    "offset": t.offset,
                    "n_bytes": t.n_bytes,
                });
                assert_eq!(&got, e, "{file}");
                assert_eq!(t.n_elements(), t.shape().iter().product::<u64>());
            }
            assert_eq!(h.metadata_json(), exp["metadata"], "{file}");
        }
    }

    #[test]
    fn parses_through_source_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, &valid().0).unwrap();
        let f = crate::store::Opener::local()
            .open(&p, "m.gguf".into())
            .unwrap();
        assert_eq!(parse(&f).unwrap().tensors.len(), 3);
        std::fs::write(&p, b"GGUF\x01\0\0\0").unwrap();
        let f = crate::store::Opener::local()
            .open(&p, "m.gguf".into())
            .unwrap();
        let e = parse(&f).unwrap_err().to_string();
        assert!(e.starts_with(&p.display().to_string()), "{e}");
    }
}
