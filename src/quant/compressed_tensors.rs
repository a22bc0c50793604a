//! compressed-tensors (llm-compressor) weights, and NVIDIA ModelOpt's
//! NVFP4 / FP8 weights, to the values their libraries dequantize them to.
//!
//! One geometry, [`Dequant`], covers them all: a weight `[rows, cols]` is
//! stored as codes plus a grid of scales (and, asymmetric, zero points):
//!
//! - codes ([`Codes`]): `pack-quantized` INT2/4/8 (`weight_packed` I32
//!   `[rows, ceil(cols * bits / 32)]`: element `c` of a row at bit `c * bits`
//!   of the row's little-endian words, stored as `q + 2^(bits-1)`, as
//!   `compressed_tensors.compressors.pack_quantized.helpers.unpack_from_int32`
//!   reads it); `int-quantized` / `naive-quantized` INT8 (`weight` I8);
//!   `float-quantized` FP8 E4M3 (`weight` F8_E4M3); NVFP4 (`weight_packed` U8
//!   `[rows, cols / 2]`, the low nibble first, FP4 E2M1 values); MXFP6
//!   (`weight_packed` U8 `[rows, cols * 3 / 4]`: four 6-bit FP6 E2M3 codes
//!   in three bytes, little-endian, the sign in bit 5, as
//!   `compressors/mxfp6/helpers.py` `unpack_fp6_from_uint8` reads them).
//! - the grid ([`Grid`]): one scale per tensor, per row (channel), per group
//!   of `g` columns of a row, per column group named by `weight_g_idx`
//!   (activation ordering), or per `[bh, bw]` block.
//! - zero points ([`Zero`]): none (symmetric), INT packed along the rows
//!   (`pack-quantized` group / channel: I32 `[ceil(rows * bits / 32), G]`),
//!   or one I8 per scale.
//!
//! The value of element `(r, c)` with scale `s` and zero point `z` is what
//! `compressed_tensors.quantization.lifecycle.forward_helpers._dequantize`
//! (0.20.1) computes in the scale's dtype:
//! `round_sd((q - z) * s)`, where `q - z` is exact and the product of two
//! values of at most 9 and 11 significant bits is exact in f32, so one
//! rounding to the scale's dtype `sd` (BF16, F16 or F32) gives torch's
//! result. FP8 codes: `round_sd(e4m3(q) * s)`, likewise exact before the
//! rounding. NVFP4 (`nvfp4-pack-quantized`): the scale is F8_E4M3 and the
//! global scale an F32 `[1]`; the library divides first, in f32:
//! `bf16(fp4(q) * (f32(s) / global))` (two f32 roundings, then BF16).
//! ModelOpt NVFP4 multiplies by its `weight_scale_2` instead:
//! `out(fp4(q) * (f32(s) * scale_2))` ([`Global`]), and ModelOpt FP8 rounds
//! its F32 scale to the model's dtype first: `out(e4m3(q) * out(s))`
//! (`modelopt.torch.quantization.qtensor` `NVFP4QTensor.dequantize`,
//! `FP8QTensor.dequantize`, 0.47.0).
//! MX formats (`mxfp4-pack-quantized`: NVFP4's packing; `mxfp8-quantized`:
//! FP8 E4M3 codes; `mxfp6-pack-quantized`: FP6 E2M3 codes) store E8M0 scales, one U8 exponent per group
//! ([`Layout::e8m0`]), which `compressors.mx_utils.decompress_mx_scale`
//! turns into the BF16 `2^(e - 127)` (exact: 2^-127 for 0, +inf for 255),
//! with no global scale: `bf16(code * 2^(e - 127))`, exact but for
//! overflow to inf and `0 * inf = NaN` at 255.
//!
//! Speed: decoding walks a row's run of columns that share one scale (a
//! group, a block, a whole row); for 4-bit codes the run's 16 possible
//! outputs are computed once into a table and each packed byte gives two
//! outputs by lookup (the active path's `nibbles`, `quant::nibbles`), with
//! no per-element division or branch.

use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use super::KernelError;
use super::fp8::E4M3_F32;
use super::mxfp4::{FP4_E2M1, e8m0_f32};
use super::packed::{Unpack, check_parts, check_range};
use super::simd::{self, Kernels};
use crate::dtype::Dtype;

const KERNEL: &str = "compressed_tensors";

/// How the codes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codes {
    /// INT `bits` (2, 4 or 8) packed densely into I32 words, offset by
    /// `2^(bits-1)`.
    Packed { bits: u32 },
    /// One I8 per element.
    Int8,
    /// One F8_E4M3 per element.
    Fp8,
    /// Two FP4 E2M1 per byte, the low nibble first.
    Fp4,
    /// Four FP6 E2M3 per three bytes (a little-endian 24-bit word, code `k`
    /// at bit `6k`).
    Fp6,
}

impl Codes {
    /// Stored bytes of one row of `cols` elements.
    pub fn row_bytes(self, cols: u64) -> Option<u64> {
        match self {
            Codes::Packed { bits } => cols.checked_mul(bits as u64).map(|b| b.div_ceil(32) * 4),
            Codes::Int8 | Codes::Fp8 => Some(cols),
            Codes::Fp4 => cols.is_multiple_of(2).then_some(cols / 2),
            Codes::Fp6 => cols.is_multiple_of(4).then_some(cols / 4 * 3),
        }
    }

    /// The stored tensor's dtype and shape for a `[rows, cols]` weight.
    pub fn stored(self, rows: u64, cols: u64) -> Option<(Dtype, Vec<u64>)> {
        Some(match self {
            Codes::Packed { .. } => (Dtype::I32, vec![rows, self.row_bytes(cols)? / 4]),
            Codes::Int8 => (Dtype::I8, vec![rows, cols]),
            Codes::Fp8 => (Dtype::F8_E4M3, vec![rows, cols]),
            Codes::Fp4 | Codes::Fp6 => (Dtype::U8, vec![rows, self.row_bytes(cols)?]),
        })
    }
}

/// Which scale an element uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grid {
    /// One scale (shape `[1]`, or `[]`).
    Tensor,
    /// One per row: `[rows, 1]`.
    Channel,
    /// One per `size` columns of a row: `[rows, cols / size]`.
    Group { size: u64 },
    /// Column `c` of row `r` uses `scale[r][g_idx[c]]`: `[rows, groups]`
    /// with an I32 `weight_g_idx` `[cols]`.
    Indexed { groups: u64 },
    /// One per `[rows, cols]` block: `[ceil(rows / rows_b), ceil(cols / cols_b)]`.
    Block { rows: u64, cols: u64 },
}

impl Grid {
    /// In words, for messages.
    pub fn describe(&self) -> String {
        match *self {
            Grid::Tensor => "one scale per tensor".into(),
            Grid::Channel => "one scale per row".into(),
            Grid::Group { size } => format!("groups of {size}"),
            Grid::Indexed { groups } => format!("{groups} groups by weight_g_idx"),
            Grid::Block { rows, cols } => format!("blocks of [{rows}, {cols}]"),
        }
    }

    /// The scale tensor's shape for a `[rows, cols]` weight.
    pub fn scale_shape(&self, rows: u64, cols: u64) -> Option<Vec<u64>> {
        match *self {
            Grid::Tensor => Some(vec![1]),
            Grid::Channel => Some(vec![rows, 1]),
            Grid::Group { size } => {
                (size > 0 && cols.is_multiple_of(size)).then(|| vec![rows, cols / size])
            }
            Grid::Indexed { groups } => (groups > 0).then(|| vec![rows, groups]),
            Grid::Block { rows: bh, cols: bw } => {
                (bh > 0 && bw > 0).then(|| vec![rows.div_ceil(bh), cols.div_ceil(bw)])
            }
        }
    }
}

/// Zero points (asymmetric quantization).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zero {
    None,
    /// INT `bits` packed along the rows: I32 `[ceil(rows * bits / 32), G]`,
    /// the zero point of `(r, g)` at bit `r * bits` of column `g`'s words.
    Packed {
        bits: u32,
    },
    /// One I8 per scale, in the scale's shape.
    Int8,
}

/// A second, per-tensor scale (NVFP4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    None,
    /// compressed-tensors: an F32 `weight_global_scale` `[1]`; the scale is
    /// `f32(s) / global`.
    Divide,
    /// ModelOpt: an F32 `weight_scale_2` `[]`; the scale is `f32(s) * scale_2`.
    Multiply,
}

/// Output rounding: the dtype the library's dequantization returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    Bf16,
    F16,
    F32,
}

impl Out {
    /// The rounding of the scale's dtype (`F32` for anything else).
    pub fn of(d: Dtype) -> Out {
        match d {
            Dtype::BF16 => Out::Bf16,
            Dtype::F16 => Out::F16,
            _ => Out::F32,
        }
    }

    #[inline(always)]
    fn round(self, x: f32) -> f32 {
        match self {
            Out::Bf16 => super::bf16::to_f32(super::bf16::from_f32(x)),
            Out::F16 => super::float::f16_to_f32(super::wide::f16_from_f32(x)),
            Out::F32 => x,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Out::Bf16 => "BF16",
            Out::F16 => "F16",
            Out::F32 => "F32",
        }
    }
}

/// What a format module found: every choice made, every part's shape.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `"compressed-tensors"` or `"modelopt"`.
    pub scheme: &'static str,
    pub rows: u64,
    pub cols: u64,
    pub codes: Codes,
    pub grid: Grid,
    pub zero: Zero,
    pub global: Global,
    /// The scale's stored dtype (BF16, F16, F32, F8_E4M3 with a global
    /// scale, or U8 E8M0 exponents with `e8m0`).
    pub scale_dtype: Dtype,
    /// The scale is an E8M0 exponent byte `e` (MX formats, `scale_dtype`
    /// U8), worth `2^(e - 127)`.
    pub e8m0: bool,
    /// The scale rounded to this dtype before use (ModelOpt FP8 casts its
    /// F32 scale to the model's dtype: `q.to(dtype) * scale.to(dtype)`).
    pub scale_round: Option<Out>,
    pub out: Out,
    /// Recorded parameters (the config's own words).
    pub params: Value,
    /// Parts the kernel does not read but the weight owns (`weight_shape`,
    /// `input_scale`, ...): role and stored bytes.
    pub extra: Vec<(&'static str, u64)>,
}

/// A part's role, stored dtype and shape.
pub type Part = (&'static str, Dtype, Vec<u64>);

/// A validated geometry: the dequantizer of one weight.
#[derive(Debug)]
pub struct Dequant {
    l: Layout,
    shape: [u64; 2],
    roles: &'static [&'static str],
    /// Expected bytes of each part, in `roles` order.
    bytes: Vec<usize>,
    zero_at: Option<usize>,
    g_idx_at: Option<usize>,
    global_at: Option<usize>,
    /// Scale grid columns (`[.., G]`).
    scale_cols: u64,
    /// FP4 E2M1 values by nibble.
    fp4: &'static [f32; 16],
}

/// ModelOpt's E2M1 table (`nvfp4_tensor.e2m1_values`): nibble 8 is +0,
/// where compressed-tensors (`kE2M1ToFloat[abs] * -1.0`) and the MXFP4
/// table give -0.
const FP4_MODELOPT: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// FP6 E2M3 values by 6-bit code, as compressed-tensors' `kE2M3ToFloat`
/// (`m / 8` for exponent field 0, `(1 + m / 8) * 2^(e - 1)` otherwise) with
/// bit 5 negating (code 0x20 is -0).
pub const FP6_E2M3: [f32; 64] = {
    let mut t = [0f32; 64];
    let mut c = 0;
    while c < 64 {
        let (e, m) = ((c >> 3) & 3, (c & 7) as f32);
        let v = if e == 0 {
            m / 8.0
        } else {
            (1.0 + m / 8.0) * (1 << (e - 1)) as f32
        };
        t[c] = if c & 0x20 != 0 { -v } else { v };
        c += 1;
    }
    t
};

/// Role names, interned: a weight's parts differ by format (zero point or
/// not, ...), and `Unpack::roles` is `'static`. At most a few dozen distinct
/// lists exist.
fn intern(roles: Vec<&'static str>) -> &'static [&'static str] {
    static SEEN: OnceLock<Mutex<Vec<&'static [&'static str]>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(r) = seen.iter().find(|r| **r == roles.as_slice()) {
        return r;
    }
    let r: &'static [&'static str] = Vec::leak(roles);
    seen.push(r);
    r
}

impl Dequant {
    /// The geometry of `l`, or why it is not one (a bit width, a shape that
    /// does not fit). The expected part shapes are [`Dequant::expected`].
    pub fn new(l: Layout) -> Result<Dequant, String> {
        let (rows, cols) = (l.rows, l.cols);
        if rows == 0 || cols == 0 {
            return Err(format!("an empty weight [{rows}, {cols}]"));
        }
        // every element's index, and its f32, fit (so no count overflows)
        if rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(4))
            .is_none()
        {
            return Err(format!("a weight [{rows}, {cols}] is too large"));
        }
        if let Codes::Packed { bits } = l.codes
            && !matches!(bits, 2 | 4 | 8)
        {
            return Err(format!(
                "{bits}-bit packed weights are not supported (2, 4, 8 are)"
            ));
        }
        if let Zero::Packed { bits } = l.zero
            && l.codes != (Codes::Packed { bits })
        {
            return Err("packed zero points of another width than the weight".into());
        }
        if l.zero != Zero::None && matches!(l.codes, Codes::Fp8 | Codes::Fp4 | Codes::Fp6) {
            return Err("asymmetric float quantization is not supported".into());
        }
        if (l.global != Global::None) != (l.scale_dtype == Dtype::F8_E4M3) {
            return Err(format!(
                "{} scales {} a global scale",
                l.scale_dtype.name(),
                if l.global == Global::None {
                    "without"
                } else {
                    "with"
                }
            ));
        }
        if l.e8m0 != (l.scale_dtype == Dtype::U8) {
            return Err(format!(
                "{} scales {} E8M0 exponents",
                l.scale_dtype.name(),
                if l.e8m0 { "as" } else { "that are not" }
            ));
        }
        if !matches!(
            l.scale_dtype,
            Dtype::BF16 | Dtype::F16 | Dtype::F32 | Dtype::F8_E4M3 | Dtype::U8
        ) {
            return Err(format!("{} scales are not supported", l.scale_dtype.name()));
        }
        let scale = l.grid.scale_shape(rows, cols).ok_or_else(|| {
            format!(
                "{} does not fit a weight [{rows}, {cols}]",
                l.grid.describe()
            )
        })?;
        let scale_cols = *scale.last().unwrap_or(&1);
        // ModelOpt calls its packed FP4 codes `weight`
        let mut roles = vec![if l.scheme != "modelopt"
            && matches!(l.codes, Codes::Packed { .. } | Codes::Fp4 | Codes::Fp6)
        {
            "weight_packed"
        } else {
            "weight"
        }];
        roles.push("weight_scale");
        let mut d = Dequant {
            shape: [rows, cols],
            roles: &[],
            bytes: Vec::new(),
            zero_at: None,
            g_idx_at: None,
            global_at: None,
            scale_cols,
            fp4: if l.scheme == "modelopt" {
                &FP4_MODELOPT
            } else {
                &FP4_E2M1
            },
            l,
        };
        if d.l.zero != Zero::None {
            d.zero_at = Some(roles.len());
            roles.push("weight_zero_point");
        }
        if matches!(d.l.grid, Grid::Indexed { .. }) {
            d.g_idx_at = Some(roles.len());
            roles.push("weight_g_idx");
        }
        match d.l.global {
            Global::None => {}
            Global::Divide => {
                d.global_at = Some(roles.len());
                roles.push("weight_global_scale");
            }
            Global::Multiply => {
                d.global_at = Some(roles.len());
                roles.push("weight_scale_2");
            }
        }
        let expected = d.expected_for(&roles)?;
        let mut bytes = Vec::new();
        for (_, dtype, shape) in &expected {
            let n = crate::dtype::numel(shape)
                .and_then(|n| dtype.bytes_for(n))
                .and_then(|b| usize::try_from(b).ok())
                .ok_or_else(|| format!("a part of shape {shape:?} is too large"))?;
            bytes.push(n);
        }
        for &(role, b) in &d.l.extra {
            roles.push(role);
            bytes.push(usize::try_from(b).map_err(|_| "a part is too large".to_string())?);
        }
        d.roles = intern(roles);
        d.bytes = bytes;
        Ok(d)
    }

    fn expected_for(&self, roles: &[&'static str]) -> Result<Vec<Part>, String> {
        let [rows, cols] = self.shape;
        let too_large = || format!("a weight [{rows}, {cols}] is too large");
        let (cd, cs) = self.l.codes.stored(rows, cols).ok_or_else(too_large)?;
        let scale = self.l.grid.scale_shape(rows, cols).ok_or_else(too_large)?;
        let mut out = vec![
            (roles[0], cd, cs),
            ("weight_scale", self.l.scale_dtype, scale.clone()),
        ];
        match self.l.zero {
            Zero::None => {}
            Zero::Packed { bits } => {
                let r = rows
                    .checked_mul(bits as u64)
                    .ok_or_else(too_large)?
                    .div_ceil(32);
                out.push(("weight_zero_point", Dtype::I32, vec![r, self.scale_cols]));
            }
            Zero::Int8 => out.push(("weight_zero_point", Dtype::I8, scale)),
        }
        if self.g_idx_at.is_some() {
            out.push(("weight_g_idx", Dtype::I32, vec![cols]));
        }
        match self.l.global {
            Global::None => {}
            Global::Divide => out.push(("weight_global_scale", Dtype::F32, vec![1])),
            Global::Multiply => out.push(("weight_scale_2", Dtype::F32, vec![])),
        }
        Ok(out)
    }

    /// Every part the kernel reads: role, stored dtype and shape, in role
    /// order (the extra parts follow them).
    pub fn expected(&self) -> Vec<Part> {
        self.expected_for(self.roles).unwrap_or_default()
    }

    fn scale_at(&self, scales: &[u8], i: usize) -> f32 {
        match self.l.scale_dtype {
            Dtype::BF16 => {
                super::bf16::to_f32(u16::from_le_bytes([scales[2 * i], scales[2 * i + 1]]))
            }
            Dtype::F16 => {
                super::float::f16_to_f32(u16::from_le_bytes([scales[2 * i], scales[2 * i + 1]]))
            }
            Dtype::F8_E4M3 => E4M3_F32[scales[i] as usize],
            Dtype::U8 => e8m0_f32(scales[i]),
            _ => f32::from_le_bytes([
                scales[4 * i],
                scales[4 * i + 1],
                scales[4 * i + 2],
                scales[4 * i + 3],
            ]),
        }
    }

    /// The zero point of scale `(sr, sc)` (scale row, scale column).
    fn zero_at(&self, zeros: &[u8], sr: u64, sc: u64) -> f32 {
        match self.l.zero {
            Zero::None => 0.0,
            Zero::Int8 => zeros[(sr * self.scale_cols + sc) as usize] as i8 as f32,
            Zero::Packed { bits } => {
                // column `sc`'s words, element `sr` at bit `sr * bits`
                let bit = sr * bits as u64;
                let word = (bit / 32) * self.scale_cols + sc;
                let w = &zeros[4 * word as usize..4 * word as usize + 4];
                let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                let u = (w >> (bit % 32)) & ((1u32 << bits) - 1);
                u as f32 - (1u32 << (bits - 1)) as f32
            }
        }
    }

    /// Code `c` of a row's stored bytes, as the value before scaling.
    #[inline(always)]
    fn code(&self, row: &[u8], c: usize) -> f32 {
        match self.l.codes {
            Codes::Packed { bits: 8 } => row[c] as f32 - 128.0,
            Codes::Packed { bits: 4 } => ((row[c / 2] >> ((c & 1) * 4)) & 15) as f32 - 8.0,
            Codes::Packed { bits } => {
                let bit = c * bits as usize;
                let u = (row[bit / 8] >> (bit % 8)) & ((1u8 << bits) - 1);
                u as f32 - (1u32 << (bits - 1)) as f32
            }
            Codes::Int8 => row[c] as i8 as f32,
            Codes::Fp8 => E4M3_F32[row[c] as usize],
            Codes::Fp4 => self.fp4[((row[c / 2] >> ((c & 1) * 4)) & 15) as usize],
            Codes::Fp6 => {
                let b = &row[c / 4 * 3..c / 4 * 3 + 3];
                let word = b[0] as u32 | (b[1] as u32) << 8 | (b[2] as u32) << 16;
                FP6_E2M3[((word >> (6 * (c % 4))) & 63) as usize]
            }
        }
    }

    /// Elements `c0 .. c0 + out.len()` of row `r`.
    fn row(
        &self,
        k: &Kernels,
        parts: &[&[u8]],
        r: u64,
        c0: u64,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let rb = self.l.codes.row_bytes(self.shape[1]).unwrap_or(0) as usize;
        let row = &parts[0][r as usize * rb..(r as usize + 1) * rb];
        let scales = parts[1];
        let zeros = self.zero_at.map_or(&[][..], |i| parts[i]);
        let global = match self.global_at {
            None => 1.0,
            Some(i) => {
                let g = parts[i];
                f32::from_le_bytes([g[0], g[1], g[2], g[3]])
            }
        };
        let out_r = self.l.out;
        let scale_of = |sr: u64, sc: u64| -> (f32, f32) {
            let s = self.scale_at(scales, (sr * self.scale_cols + sc) as usize);
            let s = self.l.scale_round.map_or(s, |r| r.round(s));
            let s = match self.l.global {
                Global::None => s,
                Global::Divide => s / global,
                Global::Multiply => s * global,
            };
            (s, self.zero_at(zeros, sr, sc))
        };
        if let Grid::Indexed { groups } = self.l.grid {
            let g_idx = parts[self.g_idx_at.unwrap_or(0)];
            for (k, o) in out.iter_mut().enumerate() {
                let c = c0 as usize + k;
                let g = i32::from_le_bytes([
                    g_idx[4 * c],
                    g_idx[4 * c + 1],
                    g_idx[4 * c + 2],
                    g_idx[4 * c + 3],
                ]);
                if g < 0 || g as u64 >= groups {
                    return Err(KernelError::Shape {
                        kernel: KERNEL,
                        why: format!("weight_g_idx[{c}] = {g} is outside the {groups} groups"),
                    });
                }
                let (s, z) = scale_of(r, g as u64);
                *o = out_r.round((self.code(row, c) - z) * s);
            }
            return Ok(());
        }
        // runs of columns sharing one scale
        let (run, sr) = match self.l.grid {
            Grid::Tensor => (self.shape[1], 0),
            Grid::Channel => (self.shape[1], r),
            Grid::Group { size } => (size, r),
            Grid::Block { rows, cols } => (cols, r / rows),
            Grid::Indexed { .. } => unreachable!("handled above"),
        };
        let nibbles = matches!(self.l.codes, Codes::Packed { bits: 4 } | Codes::Fp4);
        let mut c = c0;
        let mut o = 0usize;
        while o < out.len() {
            let sc = c / run;
            let end = ((sc + 1) * run).min(c + (out.len() - o) as u64);
            let n = (end - c) as usize;
            let (s, z) = scale_of(sr, sc);
            let dst = &mut out[o..o + n];
            if nibbles && n >= 16 {
                let mut lut = [0f32; 16];
                for (q, l) in lut.iter_mut().enumerate() {
                    let v = match self.l.codes {
                        Codes::Fp4 => self.fp4[q],
                        _ => q as f32 - 8.0,
                    };
                    *l = out_r.round((v - z) * s);
                }
                nibble_run(k, row, c as usize, &lut, dst)?;
            } else {
                for (k, d) in dst.iter_mut().enumerate() {
                    *d = out_r.round((self.code(row, c as usize + k) - z) * s);
                }
            }
            c = end;
            o += n;
        }
        Ok(())
    }
}

/// `dst[k] = lut[nibble c + k]` of a row of nibbles (low nibble first),
/// the whole bytes by the path's `nibbles`.
#[inline(always)]
fn nibble_run(
    kern: &Kernels,
    row: &[u8],
    c: usize,
    lut: &[f32; 16],
    dst: &mut [f32],
) -> Result<(), KernelError> {
    let mut k = 0;
    let n = dst.len();
    if c % 2 == 1 && n > 0 {
        dst[0] = lut[(row[c / 2] >> 4) as usize];
        k = 1;
    }
    let pairs = (n - k) / 2;
    let bytes = &row[(c + k) / 2..(c + k) / 2 + pairs];
    kern.nibbles(bytes, lut, &mut dst[k..k + 2 * pairs])?;
    k += 2 * pairs;
    if k < n {
        dst[k] = lut[(row[(c + k) / 2] & 15) as usize];
    }
    Ok(())
}

impl Unpack for Dequant {
    fn scheme(&self) -> &'static str {
        self.l.scheme
    }

    fn params(&self) -> Value {
        self.l.params.clone()
    }

    fn roles(&self) -> &'static [&'static str] {
        self.roles
    }

    fn shape(&self) -> &[u64] {
        &self.shape
    }

    fn unit(&self) -> u64 {
        self.shape[1]
    }

    fn values(&self, parts: &[&[u8]], first: u64, out: &mut [f32]) -> Result<(), KernelError> {
        self.values_with(simd::active(), parts, first, out)
    }
}

impl Dequant {
    /// [`Unpack::values`] on the kernels of path `k`.
    pub fn values_with(
        &self,
        k: &Kernels,
        parts: &[&[u8]],
        first: u64,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        check_parts(KERNEL, self.roles, parts, &self.bytes)?;
        let [rows, cols] = self.shape;
        check_range(KERNEL, first, out.len(), rows * cols)?;
        let mut idx = first;
        let mut done = 0;
        while done < out.len() {
            let (r, c) = (idx / cols, idx % cols);
            let n = ((cols - c) as usize).min(out.len() - done);
            self.row(k, parts, r, c, &mut out[done..done + n])?;
            done += n;
            idx += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(codes: Codes, grid: Grid, zero: Zero, rows: u64, cols: u64) -> Layout {
        Layout {
            scheme: "compressed-tensors",
            rows,
            cols,
            codes,
            grid,
            zero,
            global: Global::None,
            scale_dtype: Dtype::F32,
            e8m0: false,
            scale_round: None,
            out: Out::F32,
            params: Value::Null,
            extra: Vec::new(),
        }
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Dense packing as `pack_to_int32` writes it.
    fn pack(q: &[i32], bits: u32, cols: usize) -> Vec<u8> {
        let words = (cols * bits as usize).div_ceil(32);
        let rows = q.len() / cols;
        let mut out = vec![0u32; rows * words];
        for r in 0..rows {
            for c in 0..cols {
                let u = (q[r * cols + c] + (1 << (bits - 1))) as u32;
                let bit = c * bits as usize;
                out[r * words + bit / 32] |= u << (bit % 32);
            }
        }
        out.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn int4_groups_match_the_formula_at_any_offset() {
        // groups of 8 (one value at a time) and of 32 (a table, the path's
        // `nibbles`), on every path
        for (cols, size) in [(40u64, 8u64), (96, 32)] {
            let rows = 3u64;
            let groups = cols / size;
            let q: Vec<i32> = (0..rows * cols).map(|i| (i as i32 * 7 % 16) - 8).collect();
            let scales: Vec<f32> = (0..rows * groups).map(|i| 0.25 + i as f32).collect();
            let d = Dequant::new(layout(
                Codes::Packed { bits: 4 },
                Grid::Group { size },
                Zero::None,
                rows,
                cols,
            ))
            .unwrap();
            let packed = pack(&q, 4, cols as usize);
            let s = f32s(&scales);
            let parts: Vec<&[u8]> = vec![&packed, &s];
            let want: Vec<f32> = (0..rows * cols)
                .map(|i| {
                    q[i as usize] as f32
                        * scales[((i / cols) * groups + (i % cols) / size) as usize]
                })
                .collect();
            for first in [0u64, 1, 7, 39, 41, 80, 97] {
                for n in [1usize, 2, 17, 33, 40, 64, 95, 150] {
                    if first + n as u64 > rows * cols {
                        continue;
                    }
                    for k in simd::available() {
                        let mut out = vec![0f32; n];
                        d.values_with(k, &parts, first, &mut out).unwrap();
                        assert_eq!(
                            out,
                            want[first as usize..first as usize + n],
                            "{} {cols}/{size}: {first}+{n}",
                            k.level()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn packed_zero_points_and_two_bits() {
        let (rows, cols) = (5u64, 16u64);
        let q: Vec<i32> = (0..rows * cols).map(|i| (i as i32 % 4) - 2).collect();
        let z = [-2i32, -1, 0, 1, 1];
        let d = Dequant::new(layout(
            Codes::Packed { bits: 2 },
            Grid::Channel,
            Zero::Packed { bits: 2 },
            rows,
            cols,
        ))
        .unwrap();
        assert_eq!(
            d.roles(),
            ["weight_packed", "weight_scale", "weight_zero_point"]
        );
        let packed = pack(&q, 2, cols as usize);
        let zp = pack(&z, 2, rows as usize); // one column: packed along the rows
        let s = f32s(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        let mut out = vec![0f32; (rows * cols) as usize];
        d.values(&[&packed, &s, &zp], 0, &mut out).unwrap();
        for i in 0..(rows * cols) as usize {
            let r = i / cols as usize;
            assert_eq!(out[i], (q[i] - z[r]) as f32 * (r + 1) as f32, "{i}");
        }
    }

    #[test]
    fn bf16_rounding_and_blocks_and_fp8() {
        // 3 x 3 blocks of 2 x 2 over a 5 x 5 weight (edges partial)
        let (rows, cols) = (5u64, 5u64);
        let codes: Vec<u8> = (0..25u8).map(|i| i * 9).collect();
        let scales: Vec<u8> = (0..9u16)
            .flat_map(|i| super::super::bf16::from_f32(1.0 + i as f32 / 3.0).to_le_bytes())
            .collect();
        let mut l = layout(
            Codes::Fp8,
            Grid::Block { rows: 2, cols: 2 },
            Zero::None,
            rows,
            cols,
        );
        l.scale_dtype = Dtype::BF16;
        l.out = Out::Bf16;
        let d = Dequant::new(l).unwrap();
        let mut out = vec![0f32; 25];
        d.values(&[&codes, &scales], 0, &mut out).unwrap();
        for i in 0..25usize {
            let (r, c) = (i / 5, i % 5);
            let s = super::super::bf16::to_f32(super::super::bf16::from_f32(
                1.0 + ((r / 2) * 3 + c / 2) as f32 / 3.0,
            ));
            let want = super::super::bf16::to_f32(super::super::bf16::from_f32(
                E4M3_F32[codes[i] as usize] * s,
            ));
            assert!(out[i] == want || (out[i].is_nan() && want.is_nan()), "{i}");
        }
    }

    #[test]
    fn nvfp4_divides_and_modelopt_multiplies() {
        let (rows, cols) = (1u64, 16u64);
        let packed: Vec<u8> = (0..8u8).map(|i| i * 0x21).collect();
        let scale = [0x38u8]; // 1.0 in E4M3
        let mut l = layout(Codes::Fp4, Grid::Group { size: 16 }, Zero::None, rows, cols);
        l.scale_dtype = Dtype::F8_E4M3;
        l.out = Out::Bf16;
        l.global = Global::Divide;
        let d = Dequant::new(l.clone()).unwrap();
        let g = 3.0f32.to_le_bytes();
        let mut out = vec![0f32; 16];
        d.values(&[&packed, &scale, &g], 0, &mut out).unwrap();
        let s = 1.0f32 / 3.0;
        for (c, o) in out.iter().enumerate() {
            let n = (packed[c / 2] >> ((c & 1) * 4)) & 15;
            assert_eq!(*o, Out::Bf16.round(FP4_E2M1[n as usize] * s), "{c}");
        }
        // nibble 8: -0 for compressed-tensors, +0 for ModelOpt
        assert_eq!(out[9].to_bits(), (-0.0f32).to_bits());
        l.global = Global::Multiply;
        l.scheme = "modelopt";
        let d = Dequant::new(l).unwrap();
        assert_eq!(d.roles(), ["weight", "weight_scale", "weight_scale_2"]);
        d.values(&[&packed, &scale, &g], 0, &mut out).unwrap();
        assert_eq!(out[3], Out::Bf16.round(FP4_E2M1[2] * 3.0));
        assert_eq!(out[9].to_bits(), 0);
    }

    /// MXFP4 (`mxfp4-pack-quantized`): every E8M0 scale byte with every
    /// nibble, at offsets inside and across groups; the edge values pinned
    /// as torch 2.15 computes them (`decompress_mx_scale` then
    /// `unpack_fp4_from_uint8(..) * scale` in BF16).
    #[test]
    fn mxfp4_every_e8m0_scale_and_nibble() {
        let (rows, cols) = (256u64, 64u64);
        // row s: scale bytes s and 255 - s; every nibble low and high
        let packed: Vec<u8> = (0..rows)
            .flat_map(|r| {
                (0..32u8).map(move |j| (j.wrapping_mul(0x11) ^ (j >> 4)).wrapping_add(r as u8))
            })
            .collect();
        let scales: Vec<u8> = (0..=255u8).flat_map(|s| [s, 255 - s]).collect();
        let mut l = layout(Codes::Fp4, Grid::Group { size: 32 }, Zero::None, rows, cols);
        l.scale_dtype = Dtype::U8;
        l.e8m0 = true;
        l.out = Out::Bf16;
        let d = Dequant::new(l).unwrap();
        assert_eq!(d.roles(), ["weight_packed", "weight_scale"]);
        let want: Vec<u16> = (0..(rows * cols) as usize)
            .map(|i| {
                let (r, c) = (i / 64, i % 64);
                let n = (packed[r * 32 + c / 2] >> ((c & 1) * 4)) & 15;
                let s = e8m0_f32(scales[r * 2 + c / 32]);
                super::super::bf16::from_f32(FP4_E2M1[n as usize] * s)
            })
            .collect();
        for (first, n) in [(0u64, 16384usize), (5, 40), (31, 2), (63, 65), (16000, 384)] {
            let mut out = vec![0f32; n];
            d.values(&[&packed, &scales], first, &mut out).unwrap();
            let got: Vec<u16> = out
                .iter()
                .map(|x| super::super::bf16::from_f32(*x))
                .collect();
            assert_eq!(got, want[first as usize..first as usize + n], "{first}+{n}");
        }
        // pinned against torch: 0 and -0 times 2^128 (= bf16 inf) are NaN
        // (0x7FC0), 0.5 * 2^128 is inf, 0.5 * 2^-127 the subnormal 2^-128
        let one = |nibbles: u8, scale: u8| {
            let mut out = [0f32; 2];
            let mut l = layout(Codes::Fp4, Grid::Group { size: 2 }, Zero::None, 1, 2);
            l.scale_dtype = Dtype::U8;
            l.e8m0 = true;
            l.out = Out::Bf16;
            let d = Dequant::new(l).unwrap();
            d.values(&[&[nibbles], &[scale]], 0, &mut out).unwrap();
            out.map(super::super::bf16::from_f32)
        };
        assert_eq!(one(0x80, 255), [0x7FC0, 0x7FC0]);
        assert_eq!(one(0x10, 255), [0x7FC0, 0x7F80]);
        assert_eq!(one(0x10, 0), [0x0000, 0x0020]);
        assert_eq!(one(0x98, 0), [0x8000, 0x8020]);
        assert_eq!(one(0x7F, 127), [0xC0C0, 0x40C0]);
    }

    #[test]
    fn e8m0_is_a_power_of_two_and_refused_without_its_flag() {
        assert_eq!(e8m0_f32(127), 1.0);
        assert_eq!(e8m0_f32(1), f32::MIN_POSITIVE);
        assert_eq!(e8m0_f32(0).to_bits(), 0x0040_0000);
        assert_eq!(e8m0_f32(254), 2f32.powi(127));
        assert_eq!(e8m0_f32(255), f32::INFINITY);
        for s in 0..=255u8 {
            // exact in BF16 (no rounding when torch holds it as BF16)
            assert_eq!(e8m0_f32(s).to_bits() & 0xFFFF, 0, "{s}");
        }
        let mut l = layout(Codes::Fp8, Grid::Group { size: 2 }, Zero::None, 1, 2);
        l.scale_dtype = Dtype::U8;
        assert!(Dequant::new(l.clone()).is_err(), "U8 scales without e8m0");
        l.scale_dtype = Dtype::BF16;
        l.e8m0 = true;
        assert!(Dequant::new(l).is_err(), "e8m0 with BF16 scales");
    }

    /// MXFP8 (`mxfp8-quantized`): FP8 E4M3 codes times E8M0 group scales,
    /// rounded once to BF16; NaN codes stay NaN.
    #[test]
    fn mxfp8_codes_times_e8m0_scales() {
        let (rows, cols) = (4u64, 64u64);
        let codes: Vec<u8> = (0..256u32).map(|i| i as u8).collect();
        let scales: Vec<u8> = vec![127, 100, 0, 1, 254, 255, 130, 120];
        let mut l = layout(Codes::Fp8, Grid::Group { size: 32 }, Zero::None, rows, cols);
        l.scale_dtype = Dtype::U8;
        l.e8m0 = true;
        l.out = Out::Bf16;
        let d = Dequant::new(l).unwrap();
        assert_eq!(d.roles(), ["weight", "weight_scale"]);
        let mut out = vec![0f32; 256];
        d.values(&[&codes, &scales], 0, &mut out).unwrap();
        for (i, o) in out.iter().enumerate() {
            let s = e8m0_f32(scales[i / 32]);
            let want = super::super::bf16::from_f32(E4M3_F32[codes[i] as usize] * s);
            assert_eq!(super::super::bf16::from_f32(*o), want, "{i}");
        }
        assert_eq!(out[1], E4M3_F32[1]); // scale 1.0
        assert!(out[0x7F].is_nan() && out[0xFF].is_nan());
        assert_eq!(out[0xA8], f32::NEG_INFINITY); // -0.25 * 2^128
        assert_eq!(out[0x80].to_bits(), (-0.0f32).to_bits()); // -0 * 2^127
    }

    /// MXFP6 (`mxfp6-pack-quantized`): every 6-bit code, packed as
    /// `pack_fp6_to_uint8` packs them, times E8M0 group scales.
    #[test]
    fn mxfp6_every_code_packed_four_in_three_bytes() {
        // compressed-tensors' kE2M3ToFloat, then its negation
        let mags: Vec<f32> = (0..8)
            .map(|m| m as f32 / 8.0)
            .chain(
                (0..3).flat_map(|e| (0..8).map(move |m| (1.0 + m as f32 / 8.0) * (1 << e) as f32)),
            )
            .collect();
        for c in 0..64 {
            let want = if c & 0x20 != 0 {
                -mags[c & 31]
            } else {
                mags[c & 31]
            };
            assert_eq!(FP6_E2M3[c].to_bits(), want.to_bits(), "{c}");
        }
        let (rows, cols) = (2u64, 64u64);
        let codes: Vec<u32> = (0..128u32).map(|i| (i * 5) % 64).collect();
        let packed: Vec<u8> = codes
            .chunks_exact(4)
            .flat_map(|q| {
                let w = q[0] | q[1] << 6 | q[2] << 12 | q[3] << 18;
                [w as u8, (w >> 8) as u8, (w >> 16) as u8]
            })
            .collect();
        let scales = [127u8, 120, 0, 255];
        let mut l = layout(Codes::Fp6, Grid::Group { size: 32 }, Zero::None, rows, cols);
        l.scale_dtype = Dtype::U8;
        l.e8m0 = true;
        l.out = Out::Bf16;
        let d = Dequant::new(l).unwrap();
        assert_eq!(d.expected()[0], ("weight_packed", Dtype::U8, vec![2, 48]));
        for (first, n) in [(0u64, 128usize), (3, 70), (61, 6)] {
            let mut out = vec![0f32; n];
            d.values(&[&packed, &scales], first, &mut out).unwrap();
            for (k, o) in out.iter().enumerate() {
                let i = first as usize + k;
                let want = super::super::bf16::from_f32(
                    FP6_E2M3[codes[i] as usize] * e8m0_f32(scales[i / 32]),
                );
                assert_eq!(super::super::bf16::from_f32(*o), want, "{i}");
            }
        }
        // columns that are not a multiple of 4: no layout
        let l = layout(Codes::Fp6, Grid::Tensor, Zero::None, 1, 6);
        assert!(Dequant::new(l).is_err());
    }

    #[test]
    fn g_idx_picks_each_columns_group_and_refuses_a_bad_one() {
        let (rows, cols) = (2u64, 4u64);
        let codes: Vec<u8> = vec![1, 2, 3, 4, 5, 6, 7, 8];
        let s = f32s(&[1.0, 10.0, 2.0, 20.0]);
        let g: Vec<u8> = [1i32, 0, 1, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let d = Dequant::new(layout(
            Codes::Int8,
            Grid::Indexed { groups: 2 },
            Zero::None,
            rows,
            cols,
        ))
        .unwrap();
        let mut out = vec![0f32; 8];
        d.values(&[&codes, &s, &g], 0, &mut out).unwrap();
        assert_eq!(out, [10.0, 2.0, 30.0, 4.0, 100.0, 12.0, 140.0, 16.0]);
        let bad: Vec<u8> = [1i32, 0, 2, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert!(d.values(&[&codes, &s, &bad], 0, &mut out).is_err());
    }

    #[test]
    fn refuses_bad_lengths_ranges_and_widths() {
        let d = Dequant::new(layout(Codes::Int8, Grid::Tensor, Zero::None, 2, 2)).unwrap();
        let s = f32s(&[1.0]);
        let mut out = vec![0f32; 4];
        assert!(d.values(&[&[0u8; 3], &s], 0, &mut out).is_err());
        assert!(d.values(&[&[0u8; 4]], 0, &mut out).is_err());
        assert!(d.values(&[&[0u8; 4], &s], 1, &mut out).is_err());
        assert!(d.values(&[&[0u8; 4], &s], 0, &mut out).is_ok());
        for bits in [1, 3, 5, 16] {
            assert!(
                Dequant::new(layout(
                    Codes::Packed { bits },
                    Grid::Tensor,
                    Zero::None,
                    2,
                    2
                ))
                .is_err()
            );
        }
        assert!(
            Dequant::new(layout(
                Codes::Int8,
                Grid::Group { size: 3 },
                Zero::None,
                2,
                4
            ))
            .is_err()
        );
        assert!(Dequant::new(layout(Codes::Int8, Grid::Tensor, Zero::None, 0, 4)).is_err());
        assert!(
            Dequant::new(layout(
                Codes::Fp4,
                Grid::Tensor,
                Zero::None,
                1 << 40,
                u64::MAX - 1
            ))
            .is_err()
        );
    }
}
