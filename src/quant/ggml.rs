//! ggml tensor types (the `ggml_type` of a GGUF tensor) and their
//! dequantization to BF16.
//!
//! For: the type vocabulary of GGUF files ([`GgmlType`]: id, name as
//! llama.cpp and gguf-py spell it, elements per block, bytes per block) and
//! pure kernels from whole blocks of stored bytes to BF16 ([`dequantize`]) or
//! to the exact f32 intermediate ([`dequantize_f32`]).
//!
//! Not for: files, offsets or tensor shapes (the GGUF header parser in
//! `source::gguf` sizes tensors with [`GgmlType::bytes_for`]; views choose
//! which blocks to compute).
//!
//! Semantics (docs/GGUF.md): every kernel computes exactly what
//! `gguf.quants.dequantize(raw, type)` of the `gguf` Python package (0.19)
//! computes, float32 value for float32 value, with the same order of float32
//! operations (no fused multiply-add, f16 scale fields widened exactly to f32,
//! subnormal/inf/NaN scales propagated by IEEE rules), and then rounds each
//! value once to BF16 with [`bf16::from_f32`] (nearest-even, NaN -> 0x7FC0).
//! Golden files under `tests/data/gguf/` pin this bit for bit.

use std::fmt;

use crate::dtype::Dtype;
use crate::quant::bf16;
use crate::quant::simd::{self, Kernels};

#[path = "ggml_tables.rs"]
pub(crate) mod tables;

/// A ggml tensor type, with its GGUF id as discriminant.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
}

/// Type ids ggml once had and has since removed; files using them cannot be
/// read by current llama.cpp either.
const REMOVED: [(u32, &str); 8] = [
    (4, "Q4_2"),
    (5, "Q4_3"),
    (31, "Q4_0_4_4"),
    (32, "Q4_0_4_8"),
    (33, "Q4_0_8_8"),
    (36, "IQ4_NL_4_4"),
    (37, "IQ4_NL_4_8"),
    (38, "IQ4_NL_8_8"),
];

impl GgmlType {
    /// Every known type, in id order.
    pub const ALL: [GgmlType; 34] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ3_XXS,
        GgmlType::IQ1_S,
        GgmlType::IQ4_NL,
        GgmlType::IQ3_S,
        GgmlType::IQ2_S,
        GgmlType::IQ4_XS,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::IQ1_M,
        GgmlType::BF16,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::MXFP4,
        GgmlType::NVFP4,
        GgmlType::Q1_0,
    ];

    /// The type with GGUF id `id`, if ggml (as of gguf-py 0.19) has one.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Self::ALL.iter().copied().find(|t| t.id() == id)
    }

    /// The type named `name` (`"Q4_K"`, case-sensitive, as [`GgmlType::name`]).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        Self::ALL.iter().copied().find(|t| t.name() == name)
    }

    /// The name of a type id ggml has removed (`4` -> `"Q4_2"`), for messages.
    pub fn removed_name(id: u32) -> Option<&'static str> {
        REMOVED.iter().find(|e| e.0 == id).map(|e| e.1)
    }

    /// The GGUF id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The name as llama.cpp and gguf-py spell it: `"F32"`, `"Q4_K"`, `"IQ4_NL"`.
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2_K => "Q2_K",
            Q3_K => "Q3_K",
            Q4_K => "Q4_K",
            Q5_K => "Q5_K",
            Q6_K => "Q6_K",
            Q8_K => "Q8_K",
            IQ2_XXS => "IQ2_XXS",
            IQ2_XS => "IQ2_XS",
            IQ3_XXS => "IQ3_XXS",
            IQ1_S => "IQ1_S",
            IQ4_NL => "IQ4_NL",
            IQ3_S => "IQ3_S",
            IQ2_S => "IQ2_S",
            IQ4_XS => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            IQ1_M => "IQ1_M",
            BF16 => "BF16",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            MXFP4 => "MXFP4",
            NVFP4 => "NVFP4",
            Q1_0 => "Q1_0",
        }
    }

    /// (elements per block, bytes per block), as in gguf-py's
    /// `GGML_QUANT_SIZES`.
    fn sizes(self) -> (u64, u64) {
        use GgmlType::*;
        match self {
            F32 => (1, 4),
            F16 => (1, 2),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 40),
            Q2_K => (256, 84),
            Q3_K => (256, 110),
            Q4_K => (256, 144),
            Q5_K => (256, 176),
            Q6_K => (256, 210),
            Q8_K => (256, 292),
            IQ2_XXS => (256, 66),
            IQ2_XS => (256, 74),
            IQ3_XXS => (256, 98),
            IQ1_S => (256, 50),
            IQ4_NL => (32, 18),
            IQ3_S => (256, 110),
            IQ2_S => (256, 82),
            IQ4_XS => (256, 136),
            I8 => (1, 1),
            I16 => (1, 2),
            I32 => (1, 4),
            I64 => (1, 8),
            F64 => (1, 8),
            IQ1_M => (256, 56),
            BF16 => (1, 2),
            TQ1_0 => (256, 54),
            TQ2_0 => (256, 66),
            MXFP4 => (32, 17),
            NVFP4 => (64, 36),
            Q1_0 => (128, 18),
        }
    }

    /// Elements per block (1 for plain types).
    pub fn block_size(self) -> u64 {
        self.sizes().0
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.sizes().1
    }

    /// Whether values are stored in multi-element blocks with shared scales.
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes of `n_elements` values, or `None` if `n_elements` is not a whole
    /// number of blocks or the size overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let bs = self.block_size();
        if !n_elements.is_multiple_of(bs) {
            return None;
        }
        (n_elements / bs).checked_mul(self.type_size())
    }

    /// The safetensors dtype with the same bytes, for types stored one value
    /// per element (F32, F16, BF16, F64, I8..I64): their raw bytes are a
    /// valid tensor of that dtype. `None` for block-quantized types.
    pub fn plain_dtype(self) -> Option<Dtype> {
        Some(match self {
            GgmlType::F32 => Dtype::F32,
            GgmlType::F16 => Dtype::F16,
            GgmlType::BF16 => Dtype::BF16,
            GgmlType::F64 => Dtype::F64,
            GgmlType::I8 => Dtype::I8,
            GgmlType::I16 => Dtype::I16,
            GgmlType::I32 => Dtype::I32,
            GgmlType::I64 => Dtype::I64,
            _ => return None,
        })
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether [`dequantize`] handles `ty`: every type `gguf.quants.dequantize`
/// handles. Not: the integer types I8..I64 (data such as ids, not weights:
/// keep them raw), F64 (the reference does not convert it), Q8_1 and Q8_K
/// (ggml's activation-side types, never stored in model files; the reference
/// cannot dequantize them) and Q1_0 (no reference implementation in gguf-py).
pub fn can_dequantize(ty: GgmlType) -> bool {
    !matches!(
        ty,
        GgmlType::I8
            | GgmlType::I16
            | GgmlType::I32
            | GgmlType::I64
            | GgmlType::F64
            | GgmlType::Q8_1
            | GgmlType::Q8_K
            | GgmlType::Q1_0
    )
}

/// Why a dequantization was not done. Never caused by the values of the
/// input bytes: every bit pattern dequantizes (to NaN or inf if need be).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DequantError {
    #[error("dequantizing ggml type {0} is not supported")]
    Unsupported(GgmlType),
    #[error("{ty}: {len} input bytes are not a whole number of {type_size}-byte blocks")]
    PartialBlock {
        ty: GgmlType,
        len: usize,
        type_size: u64,
    },
    #[error("{ty}: the input holds {need} values but the output has room for {have}")]
    OutputLength {
        ty: GgmlType,
        need: usize,
        have: usize,
    },
}

/// Dequantize whole blocks of type `ty` to BF16.
///
/// `blocks.len()` must be `n * ty.type_size()`; `out` receives the
/// `n * ty.block_size()` values as little-endian BF16 (2 bytes each, so
/// `out.len() == 2 * n * block_size`). A byte output rather than `&mut [u16]`
/// so that callers can write straight into a reply buffer of any alignment.
/// Each value is the reference float32 value rounded once with
/// [`bf16::from_f32`].
pub fn dequantize(ty: GgmlType, blocks: &[u8], out: &mut [u8]) -> Result<(), DequantError> {
    simd::active().ggml_dequantize(ty, blocks, out)
}

impl Kernels {
    /// [`dequantize`] on this path. Types the path does not accelerate (and
    /// every type on the portable path) run the portable code.
    pub fn ggml_dequantize(
        &self,
        ty: GgmlType,
        blocks: &[u8],
        out: &mut [u8],
    ) -> Result<(), DequantError> {
        let n = check(ty, blocks, out.len() / 2, out.len().is_multiple_of(2))?;
        let out = &mut out[..2 * n];
        // The plain float types are the elementwise kernels, with the same
        // function (`bf16::from_f32` of the exact value); other types this
        // path does not accelerate run the portable code.
        let f = match ty {
            GgmlType::F16 => self.fns.f16,
            GgmlType::F32 => self.fns.f32,
            _ => {
                // SAFETY: a `Kernels` exists only for a path this CPU supports.
                if !unsafe { (self.fns.ggml)(ty, blocks, out) } {
                    run(ty, blocks, Sink::Bf16(out))?;
                }
                return Ok(());
            }
        };
        // SAFETY: as above.
        unsafe { f(blocks, out) };
        Ok(())
    }
}

/// Dequantize whole blocks of type `ty` to the reference float32 values
/// (what `gguf.quants.dequantize` returns), before rounding to BF16. NaNs
/// are NaN but their bits may differ (F16 NaNs come out quiet).
/// `out.len()` must be `n * ty.block_size()`.
pub fn dequantize_f32(ty: GgmlType, blocks: &[u8], out: &mut [f32]) -> Result<(), DequantError> {
    let n = check(ty, blocks, out.len(), true)?;
    run(ty, blocks, Sink::F32(&mut out[..n]))
}

/// Check sizes; the number of values.
fn check(ty: GgmlType, blocks: &[u8], have: usize, whole: bool) -> Result<usize, DequantError> {
    if !can_dequantize(ty) {
        return Err(DequantError::Unsupported(ty));
    }
    let ts = ty.type_size() as usize;
    let bs = ty.block_size() as usize;
    if !blocks.len().is_multiple_of(ts) {
        return Err(DequantError::PartialBlock {
            ty,
            len: blocks.len(),
            type_size: ty.type_size(),
        });
    }
    let need = (blocks.len() / ts).saturating_mul(bs);
    if need != have || !whole {
        return Err(DequantError::OutputLength { ty, need, have });
    }
    Ok(need)
}

enum Sink<'a> {
    Bf16(&'a mut [u8]),
    F32(&'a mut [f32]),
}

fn run(ty: GgmlType, b: &[u8], sink: Sink<'_>) -> Result<(), DequantError> {
    use GgmlType as T;
    match ty {
        T::F32 => plain::<4>(b, sink, f32::from_le_bytes),
        T::F16 => plain::<2>(b, sink, |x| f16(u16::from_le_bytes(x))),
        T::BF16 => plain::<2>(b, sink, |x| bf16::to_f32(u16::from_le_bytes(x))),
        T::Q4_0 => blocks::<18, 32>(b, sink, q4_0),
        T::Q4_1 => blocks::<20, 32>(b, sink, q4_1),
        T::Q5_0 => blocks::<22, 32>(b, sink, q5_0),
        T::Q5_1 => blocks::<24, 32>(b, sink, q5_1),
        T::Q8_0 => blocks::<34, 32>(b, sink, q8_0),
        T::Q2_K => blocks::<84, 256>(b, sink, q2_k),
        T::Q3_K => blocks::<110, 256>(b, sink, q3_k),
        T::Q4_K => blocks::<144, 256>(b, sink, q4_k),
        T::Q5_K => blocks::<176, 256>(b, sink, q5_k),
        T::Q6_K => blocks::<210, 256>(b, sink, q6_k),
        T::IQ2_XXS => blocks::<66, 256>(b, sink, iq2_xxs),
        T::IQ2_XS => blocks::<74, 256>(b, sink, iq2_xs),
        T::IQ2_S => blocks::<82, 256>(b, sink, iq2_s),
        T::IQ3_XXS => blocks::<98, 256>(b, sink, iq3_xxs),
        T::IQ3_S => blocks::<110, 256>(b, sink, iq3_s),
        T::IQ1_S => blocks::<50, 256>(b, sink, iq1_s),
        T::IQ1_M => blocks::<56, 256>(b, sink, iq1_m),
        T::IQ4_NL => blocks::<18, 32>(b, sink, iq4_nl),
        T::IQ4_XS => blocks::<136, 256>(b, sink, iq4_xs),
        T::TQ1_0 => blocks::<54, 256>(b, sink, tq1_0),
        T::TQ2_0 => blocks::<66, 256>(b, sink, tq2_0),
        T::MXFP4 => blocks::<17, 32>(b, sink, mxfp4),
        T::NVFP4 => blocks::<36, 64>(b, sink, nvfp4),
        T::Q8_1 | T::Q8_K | T::I8 | T::I16 | T::I32 | T::I64 | T::F64 | T::Q1_0 => {
            return Err(DequantError::Unsupported(ty));
        }
    }
    Ok(())
}

/// One value per `N` bytes.
fn plain<const N: usize>(b: &[u8], sink: Sink<'_>, f: impl Fn([u8; N]) -> f32) {
    let get = |c: &[u8]| f(c.try_into().expect("chunks_exact yields N bytes"));
    match sink {
        Sink::Bf16(out) => {
            for (c, o) in b.chunks_exact(N).zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&bf16::from_f32(get(c)).to_le_bytes());
            }
        }
        Sink::F32(out) => {
            for (c, o) in b.chunks_exact(N).zip(out.iter_mut()) {
                *o = get(c);
            }
        }
    }
}

/// Blocks of `TS` bytes holding `BS` values each.
fn blocks<const TS: usize, const BS: usize>(
    b: &[u8],
    sink: Sink<'_>,
    kernel: fn(&[u8; TS], &mut [f32; BS]),
) {
    let block = |c: &[u8]| -> [u8; TS] { c.try_into().expect("chunks_exact yields TS bytes") };
    match sink {
        Sink::Bf16(out) => {
            let mut tmp = [0f32; BS];
            for (c, o) in b.chunks_exact(TS).zip(out.chunks_exact_mut(2 * BS)) {
                kernel(&block(c), &mut tmp);
                for (d, &v) in o.chunks_exact_mut(2).zip(tmp.iter()) {
                    d.copy_from_slice(&bf16::from_f32(v).to_le_bytes());
                }
            }
        }
        Sink::F32(out) => {
            for (c, o) in b.chunks_exact(TS).zip(out.chunks_exact_mut(BS)) {
                let o: &mut [f32; BS] = o.try_into().expect("chunks_exact yields BS values");
                kernel(&block(c), o);
            }
        }
    }
}

// ---- field readers -------------------------------------------------------

/// F16 bits to f32, exactly (the conversion `quant::float` uses; NaNs
/// come out quiet, which the rounding to BF16 makes canonical anyway).
#[inline]
pub(crate) fn f16(bits: u16) -> f32 {
    super::float::f16_to_f32(bits)
}

#[inline]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16(u16_at(b, i))
}

#[inline]
pub(crate) fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

#[inline]
pub(crate) fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// +1.0 or -1.0 by bit `i` of `bits` (set = negative), as the IQ types' sign
/// masks; applied by multiplication, as the reference does.
#[inline]
fn sign(bits: u8, i: usize) -> f32 {
    const PM: [f32; 2] = [1.0, -1.0];
    PM[((bits >> i) & 1) as usize]
}

/// Value `j` of a packed grid row.
#[inline]
fn grid_u8(row: u64, j: usize) -> f32 {
    ((row >> (8 * j)) as u8) as f32
}

// ---- 32-element legacy types --------------------------------------------

/// d (f16) | 16 bytes: value j = low nibble of byte j, value j+16 = high nibble.
/// `d * (q - 8)`.
fn q4_0(b: &[u8; 18], out: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        out[j] = d * ((q & 0xF) as i32 - 8) as f32;
        out[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
    }
}

/// d, m (f16) | 16 bytes of nibbles. `(d * q) + m`.
fn q4_1(b: &[u8; 20], out: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    for j in 0..16 {
        let q = b[4 + j];
        out[j] = d * (q & 0xF) as f32 + m;
        out[j + 16] = d * (q >> 4) as f32 + m;
    }
}

/// d (f16) | qh (u32: bit j = 5th bit of value j) | 16 bytes of nibbles.
/// `d * (q - 16)`.
fn q5_0(b: &[u8; 22], out: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let qh = u32_at(b, 2);
    for j in 0..16 {
        let q = b[6 + j];
        let lo = (q & 0xF) as u32 | ((qh >> j) & 1) << 4;
        let hi = (q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        out[j] = d * (lo as i32 - 16) as f32;
        out[j + 16] = d * (hi as i32 - 16) as f32;
    }
}

/// d, m (f16) | qh (u32) | 16 bytes of nibbles. `(d * q) + m`.
fn q5_1(b: &[u8; 24], out: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32_at(b, 4);
    for j in 0..16 {
        let q = b[8 + j];
        let lo = (q & 0xF) as u32 | ((qh >> j) & 1) << 4;
        let hi = (q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        out[j] = d * lo as f32 + m;
        out[j + 16] = d * hi as f32 + m;
    }
}

/// d (f16) | 32 i8. `q * d`.
fn q8_0(b: &[u8; 34], out: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for j in 0..32 {
        out[j] = (b[2 + j] as i8) as f32 * d;
    }
}

/// d (f16) | 16 bytes of nibbles mapped through the IQ4_NL table. `d * v`.
fn iq4_nl(b: &[u8; 18], out: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let kv = &tables::IQ4NL_VALUES;
    for j in 0..16 {
        let q = b[2 + j];
        out[j] = d * kv[(q & 0xF) as usize] as f32;
        out[j + 16] = d * kv[(q >> 4) as usize] as f32;
    }
}

/// e (E8M0) | 16 bytes: value j = low nibble of byte j, value j+16 = high.
/// `d * v` with d = 2^(e-128) (ggml's `e8m0_to_fp32_half`) and v the doubled
/// E2M1 values.
fn mxfp4(b: &[u8; 17], out: &mut [f32; 32]) {
    let e = b[0] as u32;
    // e < 2: subnormal 2^(e-128); else exponent field e - 1.
    let bits = if e < 2 {
        0x0020_0000 << e
    } else {
        (e - 1) << 23
    };
    let d = f32::from_bits(bits);
    let kv = &tables::FP4_VALUES_X2;
    for j in 0..16 {
        let q = b[1 + j];
        out[j] = d * kv[(q & 0xF) as usize] as f32;
        out[j + 16] = d * kv[(q >> 4) as usize] as f32;
    }
}

/// Unsigned E4M3 scale (bias 7) times 0.5, as gguf-py's `ue4m3_to_fp32`:
/// 0x00 and 0x7F decode to 0; bit 7 is ignored. Exact in f32.
pub(crate) fn ue4m3_half(x: u8) -> f32 {
    if x == 0 || x == 0x7F {
        return 0.0;
    }
    let exp = ((x >> 3) & 0xF) as i32;
    let man = (x & 7) as f32;
    let raw = if exp == 0 {
        man * f32::from_bits((127 - 9) << 23)
    } else {
        (1.0 + man / 8.0) * f32::from_bits(((exp - 7 + 127) as u32) << 23)
    };
    raw * 0.5
}

/// 4 UE4M3 scales | 4 x 8 bytes: sub-block s holds values s*16..s*16+16, the
/// low nibbles of its 8 bytes then the high nibbles. `d_s * v`.
fn nvfp4(b: &[u8; 36], out: &mut [f32; 64]) {
    let kv = &tables::FP4_VALUES_X2;
    for s in 0..4 {
        let d = ue4m3_half(b[s]);
        for j in 0..8 {
            let q = b[4 + 8 * s + j];
            out[16 * s + j] = d * kv[(q & 0xF) as usize] as f32;
            out[16 * s + 8 + j] = d * kv[(q >> 4) as usize] as f32;
        }
    }
}

// ---- K-quants (256-element super-blocks) ---------------------------------

/// scales (16: low nibble scale, high nibble min) | qs (64) | d, dmin (f16).
/// Value i: 2-bit q from byte 32*(i/128) + i%32 at shift 2*((i%128)/32);
/// `(d*sc) * q - (dmin*m)` for sub-block i/16.
fn q2_k(b: &[u8; 84], out: &mut [f32; 256]) {
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    let mut dl = [0f32; 16];
    let mut ml = [0f32; 16];
    for i in 0..16 {
        dl[i] = d * (b[i] & 0xF) as f32;
        ml[i] = dmin * (b[i] >> 4) as f32;
    }
    let qs = &b[16..80];
    for half in 0..2 {
        for j in 0..4 {
            for l in 0..32 {
                let i = 128 * half + 32 * j + l;
                let q = ((qs[32 * half + l] >> (2 * j)) & 3) as f32;
                out[i] = dl[i / 16] * q - ml[i / 16];
            }
        }
    }
}

/// hmask (32) | qs (64) | scales (12, 6-bit packed) | d (f16).
/// `(d * (sc - 32)) * (q2 - 4 * !hbit)` for sub-block i/16.
fn q3_k(b: &[u8; 110], out: &mut [f32; 256]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let sc = &b[96..108];
    let d = f16_at(b, 108);
    let mut dl = [0f32; 16];
    for (i, dl) in dl.iter_mut().enumerate() {
        let lo = (sc[i % 8] >> (4 * (i / 8))) & 0xF;
        let hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        let s = (lo | (hi << 4)) as i32 - 32;
        *dl = d * s as f32;
    }
    for half in 0..2 {
        for j in 0..4 {
            for l in 0..32 {
                let i = 128 * half + 32 * j + l;
                let ql = ((qs[32 * half + l] >> (2 * j)) & 3) as i32;
                let qh = ((hmask[i % 32] >> (i / 32)) & 1) as i32;
                let q = ql - ((qh ^ 1) << 2);
                out[i] = dl[i / 16] * q as f32;
            }
        }
    }
}

/// The 8 six-bit scales and mins of Q4_K / Q5_K.
fn scale_min_k4(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for i in 0..4 {
        sc[i] = s[i] & 0x3F;
        mn[i] = s[4 + i] & 0x3F;
        sc[4 + i] = (s[8 + i] & 0x0F) | ((s[i] >> 2) & 0x30);
        mn[4 + i] = (s[8 + i] >> 4) | ((s[4 + i] >> 2) & 0x30);
    }
    (sc, mn)
}

/// d, dmin (f16) | scales (12) | qs (128). Sub-block s (32 values) takes the
/// low (s even) or high (s odd) nibbles of bytes 32*(s/2)..+32.
/// `(d*sc) * q - (dmin*m)`.
fn q4_k(b: &[u8; 144], out: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let qs = &b[16..144];
    for s in 0..8 {
        let dl = d * sc[s] as f32;
        let ml = dmin * mn[s] as f32;
        let shift = 4 * (s % 2);
        for l in 0..32 {
            let q = ((qs[32 * (s / 2) + l] >> shift) & 0xF) as f32;
            out[32 * s + l] = dl * q - ml;
        }
    }
}

/// d, dmin (f16) | scales (12) | qh (32: bit s of byte l = 5th bit of value
/// 32*s + l) | qs (128, as Q4_K).
fn q5_k(b: &[u8; 176], out: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let qh = &b[16..48];
    let qs = &b[48..176];
    for s in 0..8 {
        let dl = d * sc[s] as f32;
        let ml = dmin * mn[s] as f32;
        let shift = 4 * (s % 2);
        for l in 0..32 {
            let q = ((qs[32 * (s / 2) + l] >> shift) & 0xF) | (((qh[l] >> s) & 1) << 4);
            out[32 * s + l] = dl * q as f32 - ml;
        }
    }
}

/// ql (128) | qh (64) | scales (16 x i8) | d (f16).
/// `(d*sc) * (q - 32)` for sub-block i/16.
fn q6_k(b: &[u8; 210], out: &mut [f32; 256]) {
    let d = f16_at(b, 208);
    let mut dl = [0f32; 16];
    for (i, dl) in dl.iter_mut().enumerate() {
        *dl = d * (b[192 + i] as i8) as f32;
    }
    // Value 128*h + 32*k + l: low 4 bits from ql[64*h + 32*(k%2) + l] at
    // shift 4*(k/2), high 2 bits from qh[32*h + l] at shift 2*k.
    for h in 0..2 {
        let ql = &b[64 * h..64 * h + 64];
        let qh = &b[128 + 32 * h..128 + 32 * h + 32];
        let o = &mut out[128 * h..128 * h + 128];
        let dl = &dl[8 * h..8 * h + 8];
        for l in 0..32 {
            let q = [
                (ql[l] & 0xF) | ((qh[l] & 3) << 4),
                (ql[32 + l] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[32 + l] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, &q) in q.iter().enumerate() {
                let i = 32 * k + l;
                o[i] = dl[i / 16] * (q as i32 - 32) as f32;
            }
        }
    }
}

/// qs (48, five base-3 digits per byte) | qh (4, four digits) | d (f16).
/// Digit k of byte x is `((x * 3^k mod 256) * 3) >> 8`; `d * (digit - 1)`.
fn tq1_0(b: &[u8; 54], out: &mut [f32; 256]) {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    let d = f16_at(b, 52);
    let trit = |x: u8, k: usize| ((x.wrapping_mul(POW3[k]) as u32 * 3) >> 8) as i32 - 1;
    for k in 0..5 {
        for l in 0..32 {
            out[32 * k + l] = d * trit(b[l], k) as f32;
        }
        for l in 0..16 {
            out[160 + 16 * k + l] = d * trit(b[32 + l], k) as f32;
        }
    }
    for k in 0..4 {
        for l in 0..4 {
            out[240 + 4 * k + l] = d * trit(b[48 + l], k) as f32;
        }
    }
}

/// qs (64, 2 bits per value, as Q2_K's qs) | d (f16). `d * (q - 1)`.
fn tq2_0(b: &[u8; 66], out: &mut [f32; 256]) {
    let d = f16_at(b, 64);
    for half in 0..2 {
        for j in 0..4 {
            for l in 0..32 {
                let q = ((b[32 * half + l] >> (2 * j)) & 3) as i32 - 1;
                out[128 * half + 32 * j + l] = d * q as f32;
            }
        }
    }
}

/// d (f16) | scales_h (u16: 2 bits per sub-block) | scales_l (4: nibbles) |
/// qs (128: sub-block s = bytes 16*s..+16, low nibbles then high nibbles).
/// `(d * (sc - 32)) * IQ4_NL[q]`.
fn iq4_xs(b: &[u8; 136], out: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let sh = u16_at(b, 2);
    let kv = &tables::IQ4NL_VALUES;
    for s in 0..8 {
        let lo = (b[4 + s / 2] >> (4 * (s % 2))) & 0xF;
        let hi = ((sh >> (2 * s)) & 3) as u8;
        let dl = d * ((lo | (hi << 4)) as i32 - 32) as f32;
        for j in 0..16 {
            let q = b[8 + 16 * s + j];
            out[32 * s + j] = dl * kv[(q & 0xF) as usize] as f32;
            out[32 * s + 16 + j] = dl * kv[(q >> 4) as usize] as f32;
        }
    }
}

// ---- i-quants -------------------------------------------------------------

/// d (f16) | 8 groups of (4 grid bytes, u32 aux). Group g: db = d * (0.5 +
/// aux>>28) * 0.25; 4 rows of 8 from IQ2XXS_GRID, signs KSIGNS[7-bit fields
/// of aux]. `db * grid * sign`.
fn iq2_xxs(b: &[u8; 66], out: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    for g in 0..8 {
        let base = 2 + 8 * g;
        let aux = u32_at(b, base + 4);
        let db = d * (0.5 + (aux >> 28) as f32) * 0.25;
        for k in 0..4 {
            let row = tables::IQ2XXS_GRID[b[base + k] as usize];
            let signs = tables::KSIGNS[((aux >> (7 * k)) & 0x7F) as usize];
            for e in 0..8 {
                out[32 * g + 8 * k + e] = db * grid_u8(row, e) * sign(signs, e);
            }
        }
    }
}

/// d (f16) | 32 x u16 (9-bit grid index, 7-bit sign index) | 8 bytes of
/// 4-bit scales (one per 16 values). `db * grid * sign`.
fn iq2_xs(b: &[u8; 74], out: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let mut db = [0f32; 16];
    for (i, db) in db.iter_mut().enumerate() {
        let s = (b[66 + i / 2] >> (4 * (i % 2))) & 0xF;
        *db = d * (0.5 + s as f32) * 0.25;
    }
    for e in 0..32 {
        let q = u16_at(b, 2 + 2 * e);
        let row = tables::IQ2XS_GRID[(q & 511) as usize];
        let signs = tables::KSIGNS[(q >> 9) as usize];
        for k in 0..8 {
            out[8 * e + k] = db[e / 2] * grid_u8(row, k) * sign(signs, k);
        }
    }
}

/// d (f16) | qs (32: low 8 index bits) | signs (32: one bit per value) |
/// qh (8: 2 high index bits per row) | scales (8: 4-bit, one per 16 values).
fn iq2_s(b: &[u8; 82], out: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let mut db = [0f32; 16];
    for (i, db) in db.iter_mut().enumerate() {
        let s = (b[74 + i / 2] >> (4 * (i % 2))) & 0xF;
        *db = d * (0.5 + s as f32) * 0.25;
    }
    for e in 0..32 {
        let hi = ((b[66 + e / 4] >> (2 * (e % 4))) & 3) as usize;
        let row = tables::IQ2S_GRID[b[2 + e] as usize | (hi << 8)];
        let signs = b[34 + e];
        for k in 0..8 {
            out[8 * e + k] = db[e / 2] * grid_u8(row, k) * sign(signs, k);
        }
    }
}

/// d (f16) | qs (64 grid bytes, rows of 4) | 8 x u32 (4-bit scale, four
/// 7-bit sign indices). Group g: db = d * (0.5 + aux>>28) * 0.5.
fn iq3_xxs(b: &[u8; 98], out: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    for g in 0..8 {
        let aux = u32_at(b, 66 + 4 * g);
        let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
        for k in 0..4 {
            let signs = tables::KSIGNS[((aux >> (7 * k)) & 0x7F) as usize];
            let r0 = tables::IQ3XXS_GRID[b[2 + 8 * g + 2 * k] as usize] as u64;
            let r1 = tables::IQ3XXS_GRID[b[2 + 8 * g + 2 * k + 1] as usize] as u64;
            let row = r0 | (r1 << 32);
            for e in 0..8 {
                out[32 * g + 8 * k + e] = db * grid_u8(row, e) * sign(signs, e);
            }
        }
    }
}

/// d (f16) | qs (64: low 8 index bits) | qh (8: 9th bit per row) | signs
/// (32: one bit per value) | scales (4: 4-bit, one per 32 values).
/// `(d * (1 + 2*sc)) * grid * sign`.
fn iq3_s(b: &[u8; 110], out: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let mut db = [0f32; 8];
    for (i, db) in db.iter_mut().enumerate() {
        let s = (b[106 + i / 2] >> (4 * (i % 2))) & 0xF;
        *db = d * (1 + 2 * s) as f32;
    }
    for e in 0..64 {
        let hi = ((b[66 + e / 8] >> (e % 8)) & 1) as usize;
        let row = tables::IQ3S_GRID[b[2 + e] as usize | (hi << 8)] as u64;
        for t in 0..4 {
            let i = 4 * e + t;
            out[i] = db[i / 32] * grid_u8(row, t) * sign(b[74 + i / 8], i % 8);
        }
    }
}

/// d (f16) | qs (32: low 8 index bits) | 8 x u16 qh (3 high bits per row,
/// 3-bit scale at bit 12, delta sign at bit 15).
/// `(d * (2*sc + 1)) * (grid + delta)`, delta = +-0.125.
fn iq1_s(b: &[u8; 50], out: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    for g in 0..8 {
        let qh = u16_at(b, 34 + 2 * g);
        let dl = d * (2 * ((qh >> 12) & 7) + 1) as f32;
        let delta = if qh & 0x8000 == 0 { 0.125f32 } else { -0.125 };
        for k in 0..4 {
            let idx = b[2 + 4 * g + k] as usize | (((qh >> (3 * k)) & 7) as usize) << 8;
            let row = tables::IQ1S_GRID[idx];
            for e in 0..8 {
                let v = ((row >> (8 * e)) as u8 as i8) as f32;
                out[32 * g + 8 * k + e] = dl * (v + delta);
            }
        }
    }
}

/// qs (32) | qh (16: a nibble per row: 3 high index bits + delta sign) |
/// 4 x u16 scales (3-bit scales; the f16 d is spread over their top nibbles).
fn iq1_m(b: &[u8; 56], out: &mut [f32; 256]) {
    let s = [u16_at(b, 48), u16_at(b, 50), u16_at(b, 52), u16_at(b, 54)];
    let dbits =
        ((s[0] & 0xF000) >> 12) | ((s[1] & 0xF000) >> 8) | ((s[2] & 0xF000) >> 4) | (s[3] & 0xF000);
    let d = f16(dbits);
    let mut dl = [0f32; 16];
    for (i, dl) in dl.iter_mut().enumerate() {
        *dl = d * (2 * ((s[i / 4] >> (3 * (i % 4))) & 7) + 1) as f32;
    }
    for e in 0..32 {
        let nib = (b[32 + e / 2] >> (4 * (e % 2))) & 0xF;
        let idx = b[e] as usize | ((nib & 7) as usize) << 8;
        let delta = if nib & 8 == 0 { 0.125f32 } else { -0.125 };
        let row = tables::IQ1S_GRID[idx];
        for k in 0..8 {
            let v = ((row >> (8 * k)) as u8 as i8) as f32;
            out[8 * e + k] = dl[e / 2] * (v + delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gguf-py 0.19 `GGML_QUANT_SIZES`, copied by hand as a cross-check of
    /// the type properties (ids and sizes).
    #[test]
    fn sizes_match_gguf_py() {
        let expect: [(u32, u64, u64); 34] = [
            (0, 1, 4),
            (1, 1, 2),
            (2, 32, 18),
            (3, 32, 20),
            (6, 32, 22),
            (7, 32, 24),
            (8, 32, 34),
            (9, 32, 40),
            (10, 256, 84),
            (11, 256, 110),
            (12, 256, 144),
            (13, 256, 176),
            (14, 256, 210),
            (15, 256, 292),
            (16, 256, 66),
            (17, 256, 74),
            (18, 256, 98),
            (19, 256, 50),
            (20, 32, 18),
            (21, 256, 110),
            (22, 256, 82),
            (23, 256, 136),
            (24, 1, 1),
            (25, 1, 2),
            (26, 1, 4),
            (27, 1, 8),
            (28, 1, 8),
            (29, 256, 56),
            (30, 1, 2),
            (34, 256, 54),
            (35, 256, 66),
            (39, 32, 17),
            (40, 64, 36),
            (41, 128, 18),
        ];
        for (id, bs, ts) in expect {
            let t = GgmlType::from_id(id).unwrap();
            assert_eq!((t.id(), t.block_size(), t.type_size()), (id, bs, ts), "{t}");
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
        }
        for (i, t) in GgmlType::ALL.iter().enumerate() {
            assert_eq!(t.id(), expect[i].0);
        }
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 42, u32::MAX] {
            assert_eq!(GgmlType::from_id(id), None);
        }
        assert_eq!(GgmlType::removed_name(31), Some("Q4_0_4_4"));
        assert_eq!(GgmlType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(GgmlType::Q4_K.bytes_for(100), None);
        assert_eq!(GgmlType::F64.bytes_for(u64::MAX / 4), None);
    }

    #[test]
    fn refuses_bad_lengths_and_unsupported_types() {
        let mut out = [0u8; 64];
        assert_eq!(
            dequantize(GgmlType::I32, &[0; 4], &mut out[..2]),
            Err(DequantError::Unsupported(GgmlType::I32))
        );
        assert!(matches!(
            dequantize(GgmlType::Q4_0, &[0; 17], &mut out),
            Err(DequantError::PartialBlock { .. })
        ));
        assert!(matches!(
            dequantize(GgmlType::Q4_0, &[0; 18], &mut out[..63]),
            Err(DequantError::OutputLength { .. })
        ));
        assert!(dequantize(GgmlType::Q4_0, &[0; 18], &mut out).is_ok());
        let mut f = [0f32; 31];
        assert!(dequantize_f32(GgmlType::Q4_0, &[0; 18], &mut f).is_err());
        for t in GgmlType::ALL {
            let n = t.block_size() as usize;
            let blocks = vec![0xFFu8; 3 * t.type_size() as usize];
            let mut out = vec![0u8; 6 * n];
            let r = dequantize(t, &blocks, &mut out);
            assert_eq!(r.is_ok(), can_dequantize(t), "{t}");
        }
    }

    /// Every path equals the portable code on random blocks of every type
    /// (random f16 scales include NaN, inf, subnormals), one to 9 blocks,
    /// misaligned input and output.
    #[test]
    fn every_path_equals_portable_on_random_blocks() {
        let mut rng = crate::quant::golden::Rng(13);
        let portable = simd::get(simd::Level::Portable).unwrap();
        for ty in GgmlType::ALL.into_iter().filter(|&t| can_dequantize(t)) {
            let (ts, bs) = (ty.type_size() as usize, ty.block_size() as usize);
            for round in 0..40 {
                let n = 1 + round % 9;
                let raw = rng.bytes(n * ts + 1);
                let raw = &raw[1..];
                let mut want = vec![0u8; 2 * n * bs];
                portable.ggml_dequantize(ty, raw, &mut want).unwrap();
                for k in simd::available() {
                    let mut out = vec![0u8; 2 * n * bs + 1];
                    k.ggml_dequantize(ty, raw, &mut out[1..]).unwrap();
                    assert!(out[1..] == want[..], "{ty} on {} round {round}", k.level());
                }
            }
        }
    }

    #[test]
    fn f16_conversion_is_exact() {
        for bits in 0..=u16::MAX {
            let want = half::f16::from_bits(bits).to_f32();
            let got = f16(bits);
            if want.is_nan() {
                assert!(got.is_nan(), "{bits:#06x}");
                // Sign and payload kept, made quiet (as vcvtph2ps and torch do).
                let sign_payload = |x: u32| (x >> 31, x & 0x3F_FFFF);
                let f16_sign_payload = ((bits >> 15) as u32, (((bits & 0x1FF) as u32) << 13));
                assert_eq!(sign_payload(got.to_bits()), f16_sign_payload, "{bits:#06x}");
                assert_ne!(got.to_bits() & 0x40_0000, 0, "{bits:#06x} is quiet");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#06x}");
            }
        }
    }

    #[test]
    fn mxfp4_scale_is_exact() {
        // e = 127 -> d = 0.5, doubled table: nibble 2 (value 2) -> 1.0.
        let mut b = [0u8; 17];
        b[0] = 127;
        b[1] = 0x72; // value 0: nibble 2 -> 1.0; value 16: nibble 7 -> 6.0
        let mut out = [0f32; 32];
        dequantize_f32(GgmlType::MXFP4, &b, &mut out).unwrap();
        assert_eq!(out[0], 1.0);
        assert_eq!(out[16], 6.0);
        b[0] = 255;
        dequantize_f32(GgmlType::MXFP4, &b, &mut out).unwrap();
        assert_eq!(out[16], f32::INFINITY);
        b[0] = 0;
        dequantize_f32(GgmlType::MXFP4, &b, &mut out).unwrap();
        assert_eq!(out[0], f32::from_bits(0x0020_0000) * 2.0);
    }
}
