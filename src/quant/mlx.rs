//! MLX quantized weights (`mlx.core.quantize`, as `mlx_lm` saves them):
//! `weight` (uint32 words of packed codes), `scales` and, in the affine mode,
//! `biases`, one of each per group of `group_size` consecutive elements of a
//! row; dequantized bit for bit as `mx.dequantize` computes it on the CPU
//! (mlx 0.32, `mlx/ops.cpp` `affine_dequantize` / `fp_dequantize`, whose
//! CPU path is the op graph written there).
//!
//! Packing: the codes of a row are one little-endian bit stream (the uint32
//! words in order, each from its least significant bit), `bits` bits per
//! code, element 0 first; for 3, 5 and 6 bits a code can straddle two words.
//! A group always fills whole words (`group_size * bits` is a multiple of
//! 32), so group `g` of the whole tensor starts at byte `g * group_size *
//! bits / 8`, and its scale is element `g` of `scales`.
//!
//! Values, with `r()` rounding to the output dtype (each op of mlx's graph
//! rounds to its dtype):
//! - affine (scales and biases of one float dtype, the output's):
//!   `r(r(q * scale) + bias)`: two roundings for BF16 and F16 scales, as mlx's
//!   `multiply` then `add`; plain f32 arithmetic for F32 scales;
//! - `mxfp4` (group 32) and `nvfp4` (group 16): FP4 E2M1 codes times the
//!   group's scale, `2^(s - 127)` of an E8M0 byte (`2^128` is +inf) or the
//!   F8_E4M3 value of the byte; `mxfp8` (group 32): F8_E4M3 codes times
//!   `2^(s - 127)`. mlx's output dtype there is BF16, and the product is
//!   rounded to it once (the codes and scales are exact in BF16).

use serde_json::{Value, json};

use super::KernelError;
use super::bf16;
use super::fp8::E4M3_F32;
use super::packed::{Unpack, check_parts, check_range};
use super::simd::{self, Kernels};
use crate::dtype::Dtype;

const KERNEL: &str = "mlx";

/// How the codes of a group become values (mlx's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `scale * q + bias`, 2-8 bits.
    Affine,
    /// FP4 E2M1 codes, E8M0 scales, groups of 32.
    Mxfp4,
    /// FP4 E2M1 codes, F8_E4M3 scales, groups of 16 (no global scale).
    Nvfp4,
    /// F8_E4M3 codes, E8M0 scales, groups of 32.
    Mxfp8,
}

impl Mode {
    /// The mode as mlx names it (`config.json`'s `quantization.mode`).
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "affine" => Mode::Affine,
            "mxfp4" => Mode::Mxfp4,
            "nvfp4" => Mode::Nvfp4,
            "mxfp8" => Mode::Mxfp8,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Affine => "affine",
            Mode::Mxfp4 => "mxfp4",
            Mode::Nvfp4 => "nvfp4",
            Mode::Mxfp8 => "mxfp8",
        }
    }

    /// mlx's defaults for a mode: (group_size, bits).
    pub fn defaults(self) -> (u64, u64) {
        match self {
            Mode::Affine => (64, 4),
            Mode::Mxfp4 => (32, 4),
            Mode::Nvfp4 => (16, 4),
            Mode::Mxfp8 => (32, 8),
        }
    }

    /// Is (group_size, bits) one mlx quantizes to in this mode? `Err` names
    /// what is supported.
    pub fn check(self, group_size: u64, bits: u64) -> Result<(), String> {
        match self {
            Mode::Affine => {
                if ![2, 3, 4, 5, 6, 8].contains(&bits) {
                    return Err(format!(
                        "{bits}-bit affine quantization is not supported (2, 3, 4, 5, 6 or 8 bits)"
                    ));
                }
                if ![32, 64, 128].contains(&group_size) {
                    return Err(format!(
                        "group size {group_size} is not supported (32, 64 or 128)"
                    ));
                }
                Ok(())
            }
            _ => {
                if (group_size, bits) != self.defaults() {
                    let (g, b) = self.defaults();
                    return Err(format!(
                        "{} with group size {group_size} and {bits} bits is not supported \
                         ({} takes group size {g} and {b} bits)",
                        self.name(),
                        self.name()
                    ));
                }
                Ok(())
            }
        }
    }

    /// The stored dtype of the scales this mode needs, if one only.
    fn fixed_scales(self) -> Option<Dtype> {
        match self {
            Mode::Affine => None,
            _ => Some(Dtype::U8),
        }
    }
}

/// The dtype in which the affine values are computed and output: the
/// scales' and biases' one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Float {
    Bf16,
    F16,
    F32,
}

/// One MLX quantized weight: its mode, bits, group size and shape, checked
/// against the shapes of its stored parts by [`Mlx::new`].
#[derive(Debug, Clone)]
pub struct Mlx {
    mode: Mode,
    bits: u32,
    group: u32,
    /// Affine: the scales' (and biases', and the output's) dtype.
    float: Float,
    /// The output's shape: the weight's, its last axis in elements.
    shape: Vec<u64>,
    /// Elements of the output.
    numel: u64,
}

/// The FP4 E2M1 values mlx's lookup table holds (code = sign << 3 | magnitude).
const FP4: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// The largest group size (the kernel's scratch buffers).
const MAX_GROUP: usize = 128;

impl Mlx {
    /// The geometry of a weight stored as `weight` (U32, shape `weight`),
    /// `scales` (dtype `scales_dtype`, shape `scales`) and, for the affine
    /// mode, `biases` (`biases_dtype`, shape `biases`), or why they do not
    /// fit together (one line).
    pub fn new(
        mode: Mode,
        group_size: u64,
        bits: u64,
        weight: (Dtype, &[u64]),
        scales: (Dtype, &[u64]),
        biases: Option<(Dtype, &[u64])>,
    ) -> Result<Mlx, String> {
        mode.check(group_size, bits)?;
        let (wd, ws) = weight;
        let (sd, ss) = scales;
        if wd != Dtype::U32 {
            return Err(format!("the weight is {}, not U32", wd.name()));
        }
        if ws.len() < 2 {
            return Err(format!("the weight has {} axes, fewer than 2", ws.len()));
        }
        let words = *ws.last().unwrap_or(&0);
        let codes = words
            .checked_mul(32)
            .ok_or_else(|| format!("a row of {words} words is too large"))?;
        if !codes.is_multiple_of(bits) {
            return Err(format!(
                "a row of {words} words does not hold whole {bits}-bit codes"
            ));
        }
        let cols = codes / bits;
        if !cols.is_multiple_of(group_size) {
            return Err(format!(
                "rows of {cols} elements are not whole groups of {group_size}"
            ));
        }
        let mut shape = ws.to_vec();
        *shape.last_mut().unwrap_or(&mut 0) = cols;
        let mut want = ws.to_vec();
        *want.last_mut().unwrap_or(&mut 0) = cols / group_size;
        if ss != want.as_slice() {
            return Err(format!(
                "the scales have shape {ss:?}, expected {want:?} for weight {ws:?} \
                 ({bits} bits, group size {group_size})"
            ));
        }
        let float = match (mode.fixed_scales(), biases) {
            (Some(fixed), None) => {
                if sd != fixed {
                    return Err(format!(
                        "the {} scales are {}, not {}",
                        mode.name(),
                        sd.name(),
                        fixed.name()
                    ));
                }
                Float::Bf16
            }
            (Some(_), Some(_)) => {
                return Err(format!("{} weights have no biases", mode.name()));
            }
            (None, None) => return Err("the biases are missing".into()),
            (None, Some((bd, bs))) => {
                if bs != want.as_slice() {
                    return Err(format!("the biases have shape {bs:?}, expected {want:?}"));
                }
                if bd != sd {
                    return Err(format!(
                        "the scales are {} but the biases {}",
                        sd.name(),
                        bd.name()
                    ));
                }
                match sd {
                    Dtype::BF16 => Float::Bf16,
                    Dtype::F16 => Float::F16,
                    Dtype::F32 => Float::F32,
                    d => return Err(format!("the scales are {}, not a float dtype", d.name())),
                }
            }
        };
        let numel = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|n| n.checked_mul(4).is_some_and(|b| b <= usize::MAX as u64))
            .ok_or_else(|| format!("the shape {shape:?} is too large"))?;
        Ok(Mlx {
            mode,
            bits: bits as u32,
            group: group_size as u32,
            float,
            shape,
            numel,
        })
    }

    /// The output dtype of mlx's dequantization (the values are exact in it).
    pub fn output_dtype(&self) -> Dtype {
        match self.float {
            Float::Bf16 => Dtype::BF16,
            Float::F16 => Dtype::F16,
            Float::F32 => Dtype::F32,
        }
    }

    fn groups(&self) -> usize {
        (self.numel / self.group as u64) as usize
    }

    fn scale_width(&self) -> usize {
        match (self.mode, self.float) {
            (Mode::Affine, Float::Bf16 | Float::F16) => 2,
            (Mode::Affine, Float::F32) => 4,
            _ => 1,
        }
    }

    /// Bytes of the stored parts, in role order (`new` checked that they
    /// fit in `usize`: at most 4 bytes per element each).
    fn part_lengths(&self) -> Vec<usize> {
        let weight = self.numel as usize / 8 * self.bits as usize;
        let scales = self.groups() * self.scale_width();
        match self.mode {
            Mode::Affine => vec![weight, scales, scales],
            _ => vec![weight, scales],
        }
    }
}

impl Unpack for Mlx {
    fn scheme(&self) -> &'static str {
        "mlx"
    }

    fn params(&self) -> Value {
        json!({"bits": self.bits, "group_size": self.group, "mode": self.mode.name()})
    }

    fn roles(&self) -> &'static [&'static str] {
        match self.mode {
            Mode::Affine => &["weight", "scales", "biases"],
            _ => &["weight", "scales"],
        }
    }

    fn shape(&self) -> &[u64] {
        &self.shape
    }

    fn unit(&self) -> u64 {
        self.group as u64
    }

    fn values(&self, parts: &[&[u8]], first: u64, out: &mut [f32]) -> Result<(), KernelError> {
        self.values_with(simd::active(), parts, first, out)
    }
}

impl Mlx {
    /// [`Unpack::values`] on the kernels of path `k`.
    pub fn values_with(
        &self,
        k: &Kernels,
        parts: &[&[u8]],
        first: u64,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        check_parts(KERNEL, self.roles(), parts, &self.part_lengths())?;
        check_range(KERNEL, first, out.len(), self.numel)?;
        let kernel: GroupFn = match (self.mode, self.float, self.bits) {
            (Mode::Affine, Float::Bf16, b) => affine_fn::<Bf16>(b),
            (Mode::Affine, Float::F16, b) => affine_fn::<F16>(b),
            (Mode::Affine, Float::F32, b) => affine_fn::<F32>(b),
            (Mode::Mxfp4, ..) => Some(fp_group::<4, E8m0, Fp4> as GroupFn),
            (Mode::Nvfp4, ..) => Some(fp_group::<4, E4m3Scale, Fp4> as GroupFn),
            (Mode::Mxfp8, ..) => Some(fp_group::<8, E8m0, Fp8> as GroupFn),
        }
        .ok_or_else(|| KernelError::Shape {
            kernel: KERNEL,
            why: format!("{} bits", self.bits),
        })?;
        let g = Groups {
            kernels: k,
            weight: parts[0],
            scales: parts[1],
            biases: parts.get(2).copied().unwrap_or(&[]),
            group: self.group as usize,
            group_bytes: self.group as usize * self.bits as usize / 8,
        };
        let gs = g.group;
        let mut tmp = [0f32; MAX_GROUP];
        let mut e = first as usize;
        let mut o = 0;
        while o < out.len() {
            let gi = e / gs;
            let within = e - gi * gs;
            let take = (gs - within).min(out.len() - o);
            if within == 0 && take == gs {
                kernel(&g, gi, &mut out[o..o + gs]);
            } else {
                kernel(&g, gi, &mut tmp[..gs]);
                out[o..o + take].copy_from_slice(&tmp[within..within + take]);
            }
            e += take;
            o += take;
        }
        Ok(())
    }
}

/// The stored parts, checked to hold `groups()` groups.
struct Groups<'a> {
    kernels: &'a Kernels,
    weight: &'a [u8],
    scales: &'a [u8],
    biases: &'a [u8],
    group: usize,
    group_bytes: usize,
}

/// Decode group `g` into `dst` (`group` values).
type GroupFn = fn(&Groups, usize, &mut [f32]);

fn affine_fn<R: Round>(bits: u32) -> Option<GroupFn> {
    Some(match bits {
        2 => affine_group::<2, R>,
        3 => affine_group::<3, R>,
        4 => affine_group::<4, R>,
        5 => affine_group::<5, R>,
        6 => affine_group::<6, R>,
        8 => affine_group::<8, R>,
        _ => return None,
    })
}

/// Write `value(code)` of each of group `gi`'s codes into `dst`. A group's
/// codes are `BITS` bytes per 8 codes, low bits first; for 2, 4 and 8 bits
/// no code crosses a byte.
#[inline(always)]
fn decode<const BITS: usize>(g: &Groups, gi: usize, dst: &mut [f32], value: impl Fn(usize) -> f32) {
    let bytes = &g.weight[gi * g.group_bytes..(gi + 1) * g.group_bytes];
    match BITS {
        2 => {
            for (d, &c) in dst.chunks_exact_mut(4).zip(bytes) {
                let c = c as usize;
                d[0] = value(c & 3);
                d[1] = value((c >> 2) & 3);
                d[2] = value((c >> 4) & 3);
                d[3] = value(c >> 6);
            }
        }
        4 => {
            for (d, &c) in dst.chunks_exact_mut(2).zip(bytes) {
                d[0] = value((c & 15) as usize);
                d[1] = value((c >> 4) as usize);
            }
        }
        8 => {
            for (d, &c) in dst.iter_mut().zip(bytes) {
                *d = value(c as usize);
            }
        }
        _ => {
            let mask = (1u64 << BITS) - 1;
            for (d, src) in dst.chunks_exact_mut(8).zip(bytes.chunks_exact(BITS)) {
                let mut word = [0u8; 8];
                word[..BITS].copy_from_slice(src);
                let v = u64::from_le_bytes(word);
                for (j, x) in d.iter_mut().enumerate() {
                    *x = value(((v >> (j * BITS)) & mask) as usize);
                }
            }
        }
    }
}

/// Group `gi`'s codes through `table` (the value of every code): 4-bit
/// codes by the path's `nibbles`.
#[inline(always)]
fn lookup<const BITS: usize>(g: &Groups, gi: usize, dst: &mut [f32], table: &[f32]) {
    if BITS == 4
        && let Some(t) = table.first_chunk::<16>()
    {
        let bytes = &g.weight[gi * g.group_bytes..(gi + 1) * g.group_bytes];
        if g.kernels.nibbles(bytes, t, dst).is_ok() {
            return;
        }
    }
    let mask = table.len() - 1;
    decode::<BITS>(g, gi, dst, |q| table[q & mask]);
}

/// Affine: every code's value for this group's scale and bias (a table of
/// `2^BITS`, when that is no more than the group), then one lookup per
/// element.
fn affine_group<const BITS: usize, R: Round>(g: &Groups, gi: usize, dst: &mut [f32]) {
    let s = R::load(g.scales, gi);
    let b = R::load(g.biases, gi);
    let value = |q: usize| R::round(R::round(q as f32 * s) + b);
    if (1 << BITS) > g.group {
        // more codes than elements: compute each element's value
        return decode::<BITS>(g, gi, dst, value);
    }
    let mut table = [0f32; 64];
    for (q, t) in table[..1 << BITS].iter_mut().enumerate() {
        *t = value(q);
    }
    lookup::<BITS>(g, gi, dst, &table);
}

/// The fp modes: the codes' values times the group's scale, rounded to BF16
/// (a table of the 16 FP4 codes; F8_E4M3 codes are computed per element).
fn fp_group<const BITS: usize, S: Scale, C: Codes>(g: &Groups, gi: usize, dst: &mut [f32]) {
    let s = S::value(g.scales[gi]);
    let value = |q: usize| Bf16::round(C::value(q as u8) * s);
    if (1 << BITS) > g.group {
        return decode::<BITS>(g, gi, dst, value);
    }
    let mut table = [0f32; 16];
    for (q, t) in table.iter_mut().enumerate() {
        *t = value(q);
    }
    lookup::<BITS>(g, gi, dst, &table);
}

/// A float dtype of mlx's arithmetic: loading a scale or bias, and rounding
/// an f32 result to it (kept as the f32 of equal value).
trait Round {
    fn load(bytes: &[u8], i: usize) -> f32;
    fn round(x: f32) -> f32;
}

struct Bf16;
struct F16;
struct F32;

impl Round for Bf16 {
    #[inline(always)]
    fn load(bytes: &[u8], i: usize) -> f32 {
        bf16::to_f32(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]))
    }

    /// Nearest, ties to even; NaN stays NaN. Branch-free (vectorizes).
    #[inline(always)]
    fn round(x: f32) -> f32 {
        let b = x.to_bits();
        let r = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) & 0xFFFF_0000;
        if x.is_nan() { x } else { f32::from_bits(r) }
    }
}

impl Round for F16 {
    #[inline(always)]
    fn load(bytes: &[u8], i: usize) -> f32 {
        super::float::f16_to_f32(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]))
    }

    /// Nearest, ties to even, to F16's precision and range (subnormals
    /// kept, +/-inf from 65520); NaN stays NaN. Branch-free (vectorizes).
    #[inline(always)]
    fn round(x: f32) -> f32 {
        let b = x.to_bits();
        let a = b & 0x7FFF_FFFF;
        let sign = b & 0x8000_0000;
        // normal F16 range: keep 10 of the 23 mantissa bits
        let normal = a.wrapping_add(0xFFF + ((a >> 13) & 1)) & !0x1FFF;
        // below 2^-14: multiples of 2^-24, which 0.5's ulp is
        let sub = ((f32::from_bits(a) + 0.5) - 0.5).to_bits();
        let mut r = if a < 0x3880_0000 { sub } else { normal };
        r = if a >= 0x477F_F000 { 0x7F80_0000 } else { r };
        r = if a > 0x7F80_0000 { a } else { r };
        f32::from_bits(r | sign)
    }
}

impl Round for F32 {
    #[inline(always)]
    fn load(bytes: &[u8], i: usize) -> f32 {
        f32::from_le_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ])
    }

    #[inline(always)]
    fn round(x: f32) -> f32 {
        x
    }
}

/// A group scale byte's value (exact in BF16).
trait Scale {
    fn value(s: u8) -> f32;
}

/// E8M0: `2^(s - 127)`; 255 gives 2^128 = +inf (mlx computes the power).
struct E8m0;
/// F8_E4M3 (FN), times nvfp4's global scale, which mlx-lm does not write (1).
struct E4m3Scale;

impl Scale for E8m0 {
    #[inline(always)]
    fn value(s: u8) -> f32 {
        if s == 0 {
            // 2^-127: an f32 (and BF16) subnormal
            f32::from_bits(0x0040_0000)
        } else if s == 255 {
            f32::INFINITY
        } else {
            f32::from_bits((s as u32) << 23)
        }
    }
}

impl Scale for E4m3Scale {
    #[inline(always)]
    fn value(s: u8) -> f32 {
        E4M3_F32[s as usize]
    }
}

/// An element code's value.
trait Codes {
    fn value(c: u8) -> f32;
}

struct Fp4;
struct Fp8;

impl Codes for Fp4 {
    #[inline(always)]
    fn value(c: u8) -> f32 {
        FP4[(c & 15) as usize]
    }
}

impl Codes for Fp8 {
    #[inline(always)]
    fn value(c: u8) -> f32 {
        E4M3_F32[c as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affine(bits: u64, group: u64, rows: u64, cols: u64, sd: Dtype) -> Mlx {
        let words = cols * bits / 32;
        Mlx::new(
            Mode::Affine,
            group,
            bits,
            (Dtype::U32, &[rows, words]),
            (sd, &[rows, cols / group]),
            Some((sd, &[rows, cols / group])),
        )
        .unwrap()
    }

    /// Pack codes as mlx does: one little-endian bit stream per row.
    fn pack(codes: &[u32], bits: u32) -> Vec<u8> {
        let mut out = vec![0u8; codes.len() * bits as usize / 8];
        for (i, &c) in codes.iter().enumerate() {
            for k in 0..bits as usize {
                let bit = i * bits as usize + k;
                out[bit / 8] |= (((c >> k) & 1) as u8) << (bit % 8);
            }
        }
        out
    }

    #[test]
    fn every_bit_width_unpacks_its_codes_in_order() {
        for bits in [2u32, 3, 4, 5, 6, 8] {
            let (rows, cols) = (3u64, 256u64);
            let m = affine(bits as u64, 32, rows, cols, Dtype::F32);
            let n = (rows * cols) as usize;
            let codes: Vec<u32> = (0..n as u32)
                .map(|i| (i * 7 + i / 5) % (1 << bits))
                .collect();
            let w = pack(&codes, bits);
            let groups = n / 32;
            // scale 1, bias 0: the values are the codes
            let s: Vec<u8> = (0..groups).flat_map(|_| 1f32.to_le_bytes()).collect();
            let b = vec![0u8; groups * 4];
            for k in simd::available() {
                let mut out = vec![0f32; n];
                m.values_with(k, &[&w, &s, &b], 0, &mut out).unwrap();
                for i in 0..n {
                    assert_eq!(
                        out[i],
                        codes[i] as f32,
                        "{} bits {bits} element {i}",
                        k.level()
                    );
                }
                // any sub-range gives the same values
                for (first, len) in [(1usize, 5usize), (31, 2), (33, 100), (n - 7, 7)] {
                    let mut part = vec![0f32; len];
                    m.values_with(k, &[&w, &s, &b], first as u64, &mut part)
                        .unwrap();
                    assert_eq!(part, out[first..first + len], "bits {bits} {first}+{len}");
                }
            }
        }
    }

    #[test]
    fn affine_rounds_twice_in_the_scales_dtype() {
        // q * s rounds to BF16 before the bias is added: mlx's multiply, then add
        let m = affine(8, 32, 1, 32, Dtype::BF16);
        let codes: Vec<u32> = (0..32).map(|i| 200 + i).collect();
        let w = pack(&codes, 8);
        let s = bf16::from_f32(0.013_671_875 + 0.000_061_035_156).to_le_bytes();
        let b = bf16::from_f32(-1.5).to_le_bytes();
        let mut out = vec![0f32; 32];
        m.values(&[&w, &s, &b], 0, &mut out).unwrap();
        let sv = bf16::to_f32(u16::from_le_bytes(s));
        for (i, &c) in codes.iter().enumerate() {
            let prod = bf16::to_f32(bf16::from_f32(c as f32 * sv));
            let want = bf16::to_f32(bf16::from_f32(prod - 1.5));
            assert_eq!(out[i].to_bits(), want.to_bits(), "{i}");
        }
    }

    #[test]
    fn f16_rounding_matches_the_reference_conversion() {
        let mut x = 0x1234_5678u32;
        let check = |v: f32| {
            let want = super::super::wide::f16_from_f32(v);
            let got = F16::round(v);
            if v.is_nan() {
                assert!(got.is_nan());
            } else {
                assert_eq!(half::f16::from_f32(got).to_bits(), want, "{v:e}");
                assert_eq!(
                    half::f16::from_bits(want).to_f32().to_bits(),
                    got.to_bits(),
                    "{v:e}"
                );
            }
        };
        for special in [
            0.0,
            -0.0,
            65504.0,
            65519.99,
            65520.0,
            -65520.0,
            1e-8,
            2.9802322e-8,
            5.9604645e-8,
            6.1035156e-5,
            6.1e-5,
            f32::INFINITY,
            f32::NAN,
            1.0 + 1.0 / 2048.0,
        ] {
            check(special);
        }
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // magnitudes around F16's range
            let v = f32::from_bits((x & 0x8FFF_FFFF) | 0x3000_0000);
            check(v);
            check(f32::from_bits(x));
        }
    }

    #[test]
    fn fp_modes_use_their_tables() {
        let mx = Mlx::new(
            Mode::Mxfp4,
            32,
            4,
            (Dtype::U32, &[1, 4]),
            (Dtype::U8, &[1, 1]),
            None,
        )
        .unwrap();
        let codes: Vec<u32> = (0..32).map(|i| i % 16).collect();
        let w = pack(&codes, 4);
        for (s, mul) in [
            (127u8, 1.0f32),
            (130, 8.0),
            (0, 2f32.powi(-127)),
            (255, f32::INFINITY),
        ] {
            let mut out = vec![0f32; 32];
            mx.values(&[&w, &[s]], 0, &mut out).unwrap();
            for i in 0..32 {
                let want = FP4[i % 16] * mul;
                if want.is_nan() {
                    assert!(out[i].is_nan());
                } else {
                    assert_eq!(out[i].to_bits(), Bf16::round(want).to_bits(), "{s} {i}");
                }
            }
        }
        let nv = Mlx::new(
            Mode::Nvfp4,
            16,
            4,
            (Dtype::U32, &[1, 2]),
            (Dtype::U8, &[1, 1]),
            None,
        )
        .unwrap();
        let mut out = vec![0f32; 16];
        // 0x40 is 2.0 in F8_E4M3
        nv.values(&[&w[..8], &[0x40]], 0, &mut out).unwrap();
        assert_eq!(out[7], 12.0);
        assert_eq!(out[15], -12.0);
        let m8 = Mlx::new(
            Mode::Mxfp8,
            32,
            8,
            (Dtype::U32, &[1, 8]),
            (Dtype::U8, &[1, 1]),
            None,
        )
        .unwrap();
        let w8: Vec<u8> = (0..32u8).map(|i| i * 3).collect();
        let mut out = vec![0f32; 32];
        m8.values(&[&w8, &[126]], 0, &mut out).unwrap();
        for i in 0..32 {
            assert_eq!(out[i], E4M3_F32[i * 3] / 2.0);
        }
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let w = |s: &'static [u64]| (Dtype::U32, s);
        let sc = |s: &'static [u64]| (Dtype::BF16, s);
        let e = |r: Result<Mlx, String>| r.unwrap_err();
        assert!(
            e(Mlx::new(
                Mode::Affine,
                64,
                7,
                w(&[2, 7]),
                sc(&[2, 1]),
                Some(sc(&[2, 1]))
            ))
            .contains("7-bit")
        );
        assert!(
            e(Mlx::new(
                Mode::Affine,
                16,
                4,
                w(&[2, 2]),
                sc(&[2, 1]),
                Some(sc(&[2, 1]))
            ))
            .contains("group size 16")
        );
        assert!(
            e(Mlx::new(
                Mode::Affine,
                64,
                4,
                w(&[2, 8]),
                sc(&[2, 2]),
                Some(sc(&[2, 1]))
            ))
            .contains("scales")
        );
        assert!(
            e(Mlx::new(
                Mode::Affine,
                64,
                4,
                w(&[2, 8]),
                sc(&[2, 1]),
                Some(sc(&[3, 1]))
            ))
            .contains("biases")
        );
        assert!(e(Mlx::new(Mode::Affine, 64, 4, w(&[2, 8]), sc(&[2, 1]), None)).contains("biases"));
        assert!(
            e(Mlx::new(
                Mode::Affine,
                32,
                3,
                w(&[2, 4]),
                sc(&[2, 1]),
                Some(sc(&[2, 1]))
            ))
            .contains("whole")
        );
        assert!(
            e(Mlx::new(
                Mode::Affine,
                64,
                4,
                w(&[16]),
                sc(&[2]),
                Some(sc(&[2]))
            ))
            .contains("axes")
        );
        assert!(
            e(Mlx::new(
                Mode::Affine,
                64,
                4,
                (Dtype::I32, &[2, 8]),
                sc(&[2, 1]),
                Some(sc(&[2, 1]))
            ))
            .contains("U32")
        );
        assert!(
            e(Mlx::new(
                Mode::Affine,
                64,
                4,
                w(&[2, 8]),
                sc(&[2, 1]),
                Some((Dtype::F16, &[2, 1]))
            ))
            .contains("biases F16")
        );
        assert!(
            e(Mlx::new(
                Mode::Mxfp4,
                64,
                4,
                w(&[2, 8]),
                (Dtype::U8, &[2, 1]),
                None
            ))
            .contains("mxfp4")
        );
        assert!(e(Mlx::new(Mode::Mxfp4, 32, 4, w(&[2, 4]), sc(&[2, 1]), None)).contains("U8"));
        assert!(
            e(Mlx::new(
                Mode::Mxfp4,
                32,
                4,
                w(&[2, 4]),
                (Dtype::U8, &[2, 1]),
                Some(sc(&[2, 1]))
            ))
            .contains("no biases")
        );
        assert!(
            e(Mlx::new(
                Mode::Affine,
                32,
                4,
                w(&[u64::MAX / 2, 4]),
                sc(&[u64::MAX / 2, 1]),
                Some(sc(&[u64::MAX / 2, 1]))
            ))
            .contains("too large")
        );
        let huge = Mlx::new(
            Mode::Affine,
            32,
            4,
            w(&[2, u64::MAX / 4]),
            sc(&[2, 1]),
            Some(sc(&[2, 1])),
        );
        assert!(e(huge).contains("too large"));
    }

    #[test]
    fn refuses_parts_and_ranges_that_do_not_fit() {
        let m = affine(4, 32, 2, 64, Dtype::BF16);
        let w = vec![0u8; 64];
        let s = vec![0u8; 8];
        let mut out = vec![0f32; 128];
        assert!(m.values(&[&w, &s, &s], 0, &mut out).is_ok());
        assert!(m.values(&[&w[..60], &s, &s], 0, &mut out).is_err());
        assert!(m.values(&[&w, &s], 0, &mut out).is_err());
        assert!(m.values(&[&w, &s, &s[..6]], 0, &mut out).is_err());
        assert!(m.values(&[&w, &s, &s], 1, &mut out).is_err());
        assert!(m.values(&[&w, &s, &s], u64::MAX, &mut out[..1]).is_err());
        assert!(m.values(&[&w, &s, &s], 128, &mut []).is_ok());
    }
}
