//! bitsandbytes weights as transformers saves them (`Params4bit`,
//! `Int8Params`), decoded exactly as the library's CPU dequantization does.
//!
//! - [`Bnb4`]: 4-bit NF4 / FP4. The stored `weight` is the byte stream of
//!   4-bit codes (the first element in the high nibble), one f32 `absmax`
//!   per `blocksize` elements of the flattened weight, or, nested (double
//!   quantization), one uint8 code per block dequantized through
//!   `nested_quant_map` and an f32 `nested_absmax` per 256 blocks, plus
//!   `nested_offset`. Element `i` is
//!   `round_dtype(LUT[code_i] * absmax[i / blocksize])` (f32 product), with
//!   nested `absmax[b] = f32(nested_quant_map[q_b] * nested_absmax[b / 256]) + offset`
//!   (bitsandbytes 0.50 `csrc/cpu_ops.cpp` `dequantizeBlockwise4bitCpu` and
//!   `dequantizeBlockwise8bitCpu`, `functional.dequantize_4bit`). `LUT` is
//!   the library's own table (`nf4_lut` / `fp4_lut`): the kernel ignores the
//!   stored `quant_map` for 4-bit codes, and so does gyrofs. A weight whose
//!   last dimension is odd goes through the library's generic path, whose
//!   FP4 table has +0.0 where the C table has -0.0 (code 8).
//! - [`Bnb8`]: LLM.int8() rows: `weight` int8 `[rows, cols]` and an f32
//!   `SCB` per row; element `[r, c]` is `f32(f32(q * SCB[r]) * f32(1/127))`
//!   (`int8_vectorwise_dequant`: `A * stats.view(-1, 1) * 7.874015718698502e-3`),
//!   in float32.
//!
//! Each block (4-bit) or row (8-bit) is decoded with one table of 16 (or
//! 256) values already rounded to the output dtype: no per-element
//! multiply, division or branch.

use serde_json::{Value, json};

use super::KernelError;
use super::packed::{Unpack, check_parts, check_range};
use super::simd::{self, Kernels};
use crate::dtype::Dtype;

const KERNEL: &str = "bnb";

/// NF4 code values (`nf4_lut` of bitsandbytes' `csrc/cpu_ops.cpp`).
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// FP4 code values (`fp4_lut` of `csrc/cpu_ops.cpp`; code 8 is -0.0).
pub const FP4: [f32; 16] = [
    0.0,
    0.005_208_333_3,
    0.666_666_7,
    1.0,
    0.333_333_34,
    0.5,
    0.166_666_67,
    0.25,
    -0.0,
    -0.005_208_333_3,
    -0.666_666_7,
    -1.0,
    -0.333_333_34,
    -0.5,
    -0.166_666_67,
    -0.25,
];

/// The 4-bit code tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Nf4,
    Fp4,
}

impl Code {
    pub fn name(self) -> &'static str {
        match self {
            Code::Nf4 => "nf4",
            Code::Fp4 => "fp4",
        }
    }

    pub fn parse(s: &str) -> Option<Code> {
        match s {
            "nf4" => Some(Code::Nf4),
            "fp4" => Some(Code::Fp4),
            _ => None,
        }
    }
}

/// Block sizes `dequantize_4bit` accepts.
pub const BLOCKSIZES: [u64; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

/// The library's output dtype (a quant_state's `dtype`), rounding an f32.
fn round_to(dtype: Dtype, x: f32) -> f32 {
    match dtype {
        Dtype::BF16 => f32::from_bits((super::bf16::from_f32(x) as u32) << 16),
        Dtype::F16 => super::float::f16_to_f32(super::wide::f16_from_f32(x)),
        _ => x,
    }
}

/// Double quantization of the absmax values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nested {
    /// Blocks of absmax codes per `nested_absmax` value (256).
    pub blocksize: u64,
    /// Added to every dequantized absmax (`nested_offset`, as f32).
    pub offset: f32,
}

/// A 4-bit weight's geometry, from its validated quant_state.
#[derive(Debug)]
pub struct Bnb4 {
    code: Code,
    table: [f32; 16],
    blocksize: u64,
    shape: Vec<u64>,
    numel: u64,
    /// The library's output dtype: BF16, F16 or F32.
    dtype: Dtype,
    nested: Option<Nested>,
    /// Bytes of the stored quant_state JSON (a part).
    state_len: usize,
}

const ROLES4: &[&str] = &["weight", "absmax", "quant_map", "quant_state"];
const ROLES4_NESTED: &[&str] = &[
    "weight",
    "absmax",
    "quant_map",
    "nested_absmax",
    "nested_quant_map",
    "quant_state",
];

impl Bnb4 {
    /// A geometry, or why not: `blocksize` one of [`BLOCKSIZES`], `dtype`
    /// BF16/F16/F32, a non-empty shape whose elements fit memory, a nested
    /// block size from 1 to 2^20 and a finite offset.
    pub fn new(
        code: Code,
        blocksize: u64,
        shape: Vec<u64>,
        dtype: Dtype,
        nested: Option<Nested>,
        state_len: usize,
    ) -> Result<Bnb4, String> {
        if !BLOCKSIZES.contains(&blocksize) {
            return Err(format!(
                "blocksize {blocksize} is not one of {BLOCKSIZES:?}"
            ));
        }
        if !matches!(dtype, Dtype::BF16 | Dtype::F16 | Dtype::F32) {
            return Err(format!(
                "dtype {} is not bfloat16, float16 or float32",
                dtype.name()
            ));
        }
        let numel = crate::dtype::numel(&shape)
            .filter(|&n| n > 0 && n <= isize::MAX as u64 / 8)
            .ok_or_else(|| format!("shape {shape:?} is empty or too large"))?;
        if shape.is_empty() {
            return Err("shape [] is not a weight".into());
        }
        if let Some(n) = nested {
            if !(1..=1 << 20).contains(&n.blocksize) {
                return Err(format!("nested_blocksize {} is out of range", n.blocksize));
            }
            if !n.offset.is_finite() {
                return Err(format!("nested_offset {} is not finite", n.offset));
            }
        }
        let mut table = match code {
            Code::Nf4 => NF4,
            Code::Fp4 => FP4,
        };
        // An odd last dimension takes the library's generic path, whose FP4
        // code 8 is +0.0 (`_get_4bit_code`).
        if shape[shape.len() - 1] % 2 == 1 {
            table[8] = 0.0;
        }
        Ok(Bnb4 {
            code,
            table,
            blocksize,
            shape,
            numel,
            dtype,
            nested,
            state_len,
        })
    }

    /// Blocks of `blocksize` elements (the last may be partial).
    pub fn blocks(&self) -> u64 {
        self.numel.div_ceil(self.blocksize)
    }

    /// Bytes of the packed codes.
    pub fn weight_bytes(&self) -> u64 {
        self.numel.div_ceil(2)
    }

    /// Values of `nested_absmax`.
    pub fn nested_blocks(&self) -> Option<u64> {
        self.nested.map(|n| self.blocks().div_ceil(n.blocksize))
    }

    /// The library's output dtype.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Block `b`'s scale.
    fn absmax(&self, parts: &[&[u8]], b: usize) -> f32 {
        match self.nested {
            None => f32_at(parts[1], b),
            Some(n) => {
                let q = parts[1][b] as usize;
                let code = f32_at(parts[4], q);
                let scale = f32_at(parts[3], b / n.blocksize as usize);
                (code * scale) + n.offset
            }
        }
    }
}

fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

impl Unpack for Bnb4 {
    fn scheme(&self) -> &'static str {
        "bitsandbytes"
    }

    fn params(&self) -> Value {
        let mut p = json!({
            "quant_type": self.code.name(),
            "blocksize": self.blocksize,
            "dtype": dtype_name(self.dtype),
        });
        if let Some(n) = self.nested {
            p["nested_blocksize"] = json!(n.blocksize);
            p["nested_offset"] = json!(n.offset);
        }
        p
    }

    fn roles(&self) -> &'static [&'static str] {
        if self.nested.is_some() {
            ROLES4_NESTED
        } else {
            ROLES4
        }
    }

    fn shape(&self) -> &[u64] {
        &self.shape
    }

    fn unit(&self) -> u64 {
        self.blocksize
    }

    fn values(&self, parts: &[&[u8]], first: u64, out: &mut [f32]) -> Result<(), KernelError> {
        self.values_with(simd::active(), parts, first, out)
    }
}

impl Bnb4 {
    /// [`Unpack::values`] on the kernels of path `k`.
    pub fn values_with(
        &self,
        k: &Kernels,
        parts: &[&[u8]],
        first: u64,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let blocks = self.blocks() as usize;
        let mut expected = vec![self.weight_bytes() as usize];
        match self.nested_blocks() {
            None => expected.extend([4 * blocks, 64, self.state_len]),
            Some(nb) => expected.extend([blocks, 64, 4 * nb as usize, 1024, self.state_len]),
        }
        check_parts(KERNEL, self.roles(), parts, &expected)?;
        check_range(KERNEL, first, out.len(), self.numel)?;
        let codes = parts[0];
        let bs = self.blocksize as usize;
        let mut at = first as usize;
        let mut done = 0;
        while done < out.len() {
            let b = at / bs;
            let end = ((b + 1) * bs).min(at + out.len() - done);
            let scale = self.absmax(parts, b);
            let mut tab = [0f32; 16];
            for (t, &c) in tab.iter_mut().zip(&self.table) {
                *t = round_to(self.dtype, c * scale);
            }
            let dst = &mut out[done..done + (end - at)];
            decode_run(k, codes, at, dst, &tab)?;
            done += end - at;
            at = end;
        }
        Ok(())
    }
}

/// Elements `at .. at + dst.len()` of the nibble stream `codes` (high
/// nibble first) through `tab`, the whole bytes by the path's `nibbles`.
#[inline]
fn decode_run(
    k: &Kernels,
    codes: &[u8],
    at: usize,
    dst: &mut [f32],
    tab: &[f32; 16],
) -> Result<(), KernelError> {
    let mut dst = dst;
    let mut at = at;
    if at % 2 == 1 && !dst.is_empty() {
        dst[0] = tab[(codes[at / 2] & 15) as usize];
        dst = &mut dst[1..];
        at += 1;
    }
    let pairs = dst.len() / 2;
    let src = &codes[at / 2..at / 2 + pairs];
    let (body, tail) = dst.split_at_mut(pairs * 2);
    k.nibbles_high_first(src, tab, body)?;
    if let Some(t) = tail.first_mut() {
        *t = tab[(codes[at / 2 + pairs] >> 4) as usize];
    }
    Ok(())
}

/// How a quant_state names a dtype.
pub fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::BF16 => "bfloat16",
        Dtype::F16 => "float16",
        _ => "float32",
    }
}

/// The dtype a quant_state names (`"bfloat16"`, `"float16"`, `"float32"`).
pub fn parse_dtype(s: &str) -> Option<Dtype> {
    match s {
        "bfloat16" => Some(Dtype::BF16),
        "float16" => Some(Dtype::F16),
        "float32" => Some(Dtype::F32),
        _ => None,
    }
}

/// 1/127 as the library multiplies by it (`7.874015718698502e-3`, an f32
/// scalar in torch's float32 multiply).
const INV127: f32 = 7.874_015_718_698_502e-3_f64 as f32;

/// An LLM.int8() weight: int8 `[rows, cols]` with an f32 scale per row.
#[derive(Debug)]
pub struct Bnb8 {
    shape: [u64; 2],
    /// `weight_format` is stored (transformers 4.4x and later).
    with_format: bool,
}

const ROLES8: &[&str] = &["weight", "SCB"];
const ROLES8_FORMAT: &[&str] = &["weight", "SCB", "weight_format"];

impl Bnb8 {
    pub fn new(rows: u64, cols: u64, with_format: bool) -> Result<Bnb8, String> {
        match rows.checked_mul(cols) {
            Some(n) if n > 0 && n <= isize::MAX as u64 / 8 => Ok(Bnb8 {
                shape: [rows, cols],
                with_format,
            }),
            _ => Err(format!("shape [{rows}, {cols}] is empty or too large")),
        }
    }
}

impl Unpack for Bnb8 {
    fn scheme(&self) -> &'static str {
        "bitsandbytes"
    }

    fn params(&self) -> Value {
        json!({"quant_type": "int8", "dtype": "float32"})
    }

    fn roles(&self) -> &'static [&'static str] {
        if self.with_format {
            ROLES8_FORMAT
        } else {
            ROLES8
        }
    }

    fn shape(&self) -> &[u64] {
        &self.shape
    }

    fn unit(&self) -> u64 {
        self.shape[1]
    }

    fn values(&self, parts: &[&[u8]], first: u64, out: &mut [f32]) -> Result<(), KernelError> {
        let [rows, cols] = self.shape.map(|d| d as usize);
        let mut expected = vec![rows * cols, 4 * rows];
        if self.with_format {
            expected.push(1);
        }
        check_parts(KERNEL, self.roles(), parts, &expected)?;
        check_range(KERNEL, first, out.len(), (rows * cols) as u64)?;
        let (q, scb) = (parts[0], parts[1]);
        let mut at = first as usize;
        let mut done = 0;
        while done < out.len() {
            let r = at / cols;
            let end = ((r + 1) * cols).min(at + out.len() - done);
            let s = f32_at(scb, r);
            let dst = &mut out[done..done + (end - at)];
            for (o, &v) in dst.iter_mut().zip(&q[at..end]) {
                *o = (v as i8 as f32 * s) * INV127;
            }
            done += end - at;
            at = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn plain(code: Code, shape: Vec<u64>, dtype: Dtype, bs: u64) -> Bnb4 {
        Bnb4::new(code, bs, shape, dtype, None, 2).unwrap()
    }

    /// The library's formula, element by element (no tables).
    fn reference(g: &Bnb4, parts: &[&[u8]], i: usize) -> f32 {
        let byte = parts[0][i / 2];
        let nib = if i.is_multiple_of(2) {
            byte >> 4
        } else {
            byte & 15
        };
        round_to(
            g.dtype,
            g.table[nib as usize] * g.absmax(parts, i / g.blocksize as usize),
        )
    }

    #[test]
    fn tables_are_the_librarys_f32_values() {
        // bits of torch's _get_4bit_code (and the C tables), from bitsandbytes 0.50.2
        let nf4: [u32; 16] = [
            0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f, 0xbdba7871, 0,
            0x3da2faff, 0x3e24cae3, 0x3e7c04dd, 0x3ead033a, 0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3,
            0x3f800000,
        ];
        assert_eq!(NF4.map(f32::to_bits), nf4);
        let fp4: [u32; 16] = [
            0, 0x3baaaaab, 0x3f2aaaab, 0x3f800000, 0x3eaaaaab, 0x3f000000, 0x3e2aaaab, 0x3e800000,
            0x80000000, 0xbbaaaaab, 0xbf2aaaab, 0xbf800000, 0xbeaaaaab, 0xbf000000, 0xbe2aaaab,
            0xbe800000,
        ];
        assert_eq!(FP4.map(f32::to_bits), fp4);
    }

    #[test]
    fn every_range_equals_the_elementwise_formula() {
        let mut rng = crate::quant::golden::Rng(7);
        for (shape, bs, nested, code, dtype) in [
            (vec![8u64, 64], 64u64, false, Code::Nf4, Dtype::BF16),
            (vec![5, 63], 32, false, Code::Fp4, Dtype::F16), // odd, partial last block
            (vec![3, 100], 128, true, Code::Nf4, Dtype::F32),
            (vec![7, 97], 32, true, Code::Fp4, Dtype::BF16),
        ] {
            let nest = nested.then_some(Nested {
                blocksize: 4,
                offset: 0.0625,
            });
            let g = Bnb4::new(code, bs, shape, dtype, nest, 3).unwrap();
            let nb = g.blocks() as usize;
            let w = rng.bytes(g.weight_bytes() as usize);
            let scales: Vec<f32> = (0..nb).map(|i| 0.5 + i as f32 * 0.37).collect();
            let codes2: Vec<f32> = (0..256).map(|i| (i as f32 - 128.0) / 97.0).collect();
            let qm = bytes(&NF4);
            let st = vec![b'{', b'}', b' '];
            let (a, na, nq);
            let parts: Vec<&[u8]> = if nested {
                a = rng.bytes(nb);
                let nn = g.nested_blocks().unwrap() as usize;
                na = bytes(&(0..nn).map(|i| 1.5 - i as f32 * 0.75).collect::<Vec<_>>());
                nq = bytes(&codes2);
                vec![&w, &a, &qm, &na, &nq, &st]
            } else {
                a = bytes(&scales);
                vec![&w, &a, &qm, &st]
            };
            let n = g.numel as usize;
            let want: Vec<u32> = (0..n).map(|i| reference(&g, &parts, i).to_bits()).collect();
            for (first, len) in [(0, n), (1, n - 1), (0, 1), (n - 1, 1), (33, 70), (64, 129)] {
                for k in simd::available() {
                    let mut out = vec![f32::NAN; len];
                    g.values_with(k, &parts, first as u64, &mut out).unwrap();
                    let got: Vec<u32> = out.iter().map(|x| x.to_bits()).collect();
                    assert_eq!(
                        got,
                        want[first..first + len],
                        "{} {g:?} {first}+{len}",
                        k.level()
                    );
                }
            }
            // refused, never a panic
            let mut out = vec![0f32; 2];
            assert!(g.values(&parts, n as u64 - 1, &mut out).is_err());
            assert!(g.values(&parts[1..], 0, &mut out).is_err());
            let short = &w[..w.len() - 1];
            let mut bad = parts.clone();
            bad[0] = short;
            assert!(g.values(&bad, 0, &mut out).is_err());
        }
    }

    #[test]
    fn fp4_code_8_is_negative_zero_on_the_c_path_and_positive_on_the_generic_one() {
        let even = plain(Code::Fp4, vec![1, 64], Dtype::BF16, 64);
        let odd = plain(Code::Fp4, vec![1, 63], Dtype::BF16, 64);
        let w = vec![0x88u8; 32];
        let a = bytes(&[2.0]);
        let qm = bytes(&FP4);
        let mut out = [1f32; 2];
        even.values(&[&w, &a, &qm, b"{}"], 0, &mut out).unwrap();
        assert_eq!(out.map(f32::to_bits), [0x8000_0000; 2]);
        odd.values(&[&w, &a, &qm, b"{}"], 0, &mut out).unwrap();
        assert_eq!(out.map(f32::to_bits), [0; 2]);
    }

    #[test]
    fn rounds_each_value_to_the_librarys_dtype() {
        // 1.0 * (1 + 2^-9): below BF16's precision, exact in F16 and F32.
        let scale = 1.0 + 2f32.powi(-9);
        let a = bytes(&[scale]);
        let w = vec![0xF0u8; 16]; // NF4 code 15 = 1.0, then code 0 = -1.0
        for (dtype, want) in [(Dtype::BF16, 1.0), (Dtype::F16, scale), (Dtype::F32, scale)] {
            let g = plain(Code::Nf4, vec![32], dtype, 32);
            let mut out = [0f32; 2];
            g.values(&[&w, &a, &bytes(&NF4), b"{}"], 0, &mut out)
                .unwrap();
            assert_eq!(out, [want, -want], "{dtype:?}");
        }
    }

    #[test]
    fn refuses_geometry_the_library_does_not_write() {
        assert!(Bnb4::new(Code::Nf4, 48, vec![4, 4], Dtype::BF16, None, 2).is_err());
        assert!(Bnb4::new(Code::Nf4, 64, vec![], Dtype::BF16, None, 2).is_err());
        assert!(Bnb4::new(Code::Nf4, 64, vec![0, 4], Dtype::BF16, None, 2).is_err());
        assert!(Bnb4::new(Code::Nf4, 64, vec![u64::MAX, 4], Dtype::BF16, None, 2).is_err());
        assert!(Bnb4::new(Code::Nf4, 64, vec![4], Dtype::I8, None, 2).is_err());
        let n = |blocksize, offset| Some(Nested { blocksize, offset });
        assert!(Bnb4::new(Code::Nf4, 64, vec![4], Dtype::BF16, n(0, 0.0), 2).is_err());
        assert!(Bnb4::new(Code::Nf4, 64, vec![4], Dtype::BF16, n(256, f32::NAN), 2).is_err());
        assert!(Bnb8::new(0, 4, true).is_err());
        assert!(Bnb8::new(u64::MAX, 2, true).is_err());
    }

    #[test]
    fn int8_is_q_times_scb_times_one_127th_in_f32() {
        let g = Bnb8::new(2, 3, true).unwrap();
        let q: Vec<u8> = [127i8, -127, 5, -1, 0, 64]
            .iter()
            .map(|&v| v as u8)
            .collect();
        let scb = bytes(&[0.3, 2.5]);
        let mut out = [0f32; 6];
        g.values(&[&q, &scb, &[0]], 0, &mut out).unwrap();
        let want: Vec<f32> = [127i8, -127, 5, -1, 0, 64]
            .iter()
            .enumerate()
            .map(|(i, &v)| (v as f32 * [0.3f32, 2.5][i / 3]) * INV127)
            .collect();
        assert_eq!(out.to_vec(), want);
        let mut two = [0f32; 2];
        g.values(&[&q, &scb, &[0]], 2, &mut two).unwrap();
        assert_eq!(two.to_vec(), want[2..4]);
        assert!(g.values(&[&q, &scb], 0, &mut two).is_err());
        assert!(g.values(&[&q, &scb, &[0]], 5, &mut two).is_err());
    }
}
