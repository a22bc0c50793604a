//! AWQ weights (`quant_method: awq`, version `gemm`): 4-bit codes packed
//! eight to an int32 along the output axis in AutoAWQ's order, one scale
//! and zero point per (group of inputs, output); dequantized as AutoAWQ's
//! `dequantize_gemm` (`awq/utils/packing_utils.py`; the copy gptqmodel 7.7
//! ships as `gptqmodel/quantization/awq/utils/packing_utils.py`) does:
//! in float16, `(iweight - izeros) * scales`, transposed to the model's
//! `[out_features, in_features]`.
//!
//! Storage (little-endian int32 words):
//! - `qweight` `[in, out / 8]`: output `8c + j` of input `i` is the nibble
//!   at bits `4 * ORDER[j]` of word `(i, c)`, `ORDER = [0, 4, 1, 5, 2, 6, 3, 7]`
//!   (`AWQ_REVERSE_ORDER`: AutoAWQ packs outputs in the order
//!   `[0, 2, 4, 6, 1, 3, 5, 7]`);
//! - `qzeros` `[in / group, out / 8]`, the same packing;
//! - `scales` F16 `[in / group, out]`.
//!
//! Each value is `f16(f32(scale) * (q - z))`, exact in f32 before its one
//! rounding (`gptq::round_to_f16`), through a per-row table of the 16 values
//! of each group (the portable reference), or, for the eight rows of a word
//! column, by the active path's `int4_rows8` (`quant::nibbles`).

use serde_json::{Value, json};

use super::KernelError;
use super::gptq::{f16_at, round_to_f16, word};
use super::nibbles::{AWQ_ORDER as ORDER, Packing, Rows8};
use super::packed::{Unpack, by_rows, check_parts, check_range};
use super::simd::{self, Kernels};

const KERNEL: &str = "awq";

/// The parts of an AWQ weight, in the order [`Unpack::values`] takes them.
pub const ROLES: &[&str] = &["qweight", "qzeros", "scales"];

/// One AWQ GEMM linear layer's geometry, built only from checked shapes.
#[derive(Debug, Clone)]
pub struct Awq {
    in_features: usize,
    out_features: usize,
    group_size: usize,
    shape: [u64; 2],
}

impl Awq {
    /// 4-bit codes; `group_size` divides `in_features`; whole words along
    /// the output axis.
    pub fn new(in_features: u64, out_features: u64, group_size: u64) -> Result<Awq, String> {
        if out_features == 0 || !out_features.is_multiple_of(8) {
            return Err(format!(
                "out_features {out_features} is not a positive multiple of 8"
            ));
        }
        if group_size == 0 || in_features == 0 || !in_features.is_multiple_of(group_size) {
            return Err(format!(
                "group_size {group_size} does not divide in_features {in_features}"
            ));
        }
        let limit = (isize::MAX as u64) / 8;
        if in_features
            .checked_mul(out_features)
            .is_none_or(|n| n > limit)
        {
            return Err(format!("{out_features}x{in_features} is too large"));
        }
        Ok(Awq {
            in_features: in_features as usize,
            out_features: out_features as usize,
            group_size: group_size as usize,
            shape: [out_features, in_features],
        })
    }

    /// The shapes the stored parts must have, in [`ROLES`] order.
    pub fn part_shapes(&self) -> [Vec<u64>; 3] {
        let (i, o, g) = (
            self.in_features as u64,
            self.out_features as u64,
            (self.in_features / self.group_size) as u64,
        );
        [vec![i, o / 8], vec![g, o / 8], vec![g, o]]
    }

    fn groups(&self) -> usize {
        self.in_features / self.group_size
    }

    fn part_bytes(&self) -> [usize; 3] {
        let (i, o, g) = (self.in_features, self.out_features, self.groups());
        [i * o / 2, g * o / 2, g * o * 2]
    }

    /// Whole output rows `oa .. ob`: the rows of one or two `qweight` word
    /// columns (8 each) at once by the path's `int4_rows8` where it has one,
    /// the rest by [`Awq::rows_tables`].
    fn rows(&self, k: &Kernels, parts: &[&[u8]], oa: usize, ob: usize, out: &mut [f32]) {
        let [qweight, qzeros, scales] = [parts[0], parts[1], parts[2]];
        let (inf, cols) = (self.in_features, self.out_features / 8);
        // rows before the first whole word column
        let mut o = oa.next_multiple_of(8).min(ob);
        self.rows_tables(parts, oa, o, &mut out[..(o - oa) * inf]);
        let groups: Vec<u32> = (0..self.groups() as u32)
            .flat_map(|g| std::iter::repeat_n(g, self.group_size))
            .collect();
        let per_tile = self.groups() * 16;
        let mut sz = vec![0f32; 2 * per_tile];
        if let Some(w) = Rows8::new(Packing::Awq, qweight, cols, &groups, self.groups()) {
            while o + 8 <= ob {
                let tiles = if o + 16 <= ob { 2 } else { 1 };
                let sz = &mut sz[..tiles * per_tile];
                for (t, s) in sz.chunks_exact_mut(per_tile).enumerate() {
                    let c = o / 8 + t;
                    for (g, s) in s.chunks_exact_mut(16).enumerate() {
                        let z = word(qzeros, g * cols + c);
                        for r in 0..8 {
                            s[r] = f16_at(scales, g * self.out_features + 8 * c + r);
                            s[8 + r] = ((z >> (4 * ORDER[r])) & 15) as f32;
                        }
                    }
                }
                let rows = 8 * tiles;
                let dst = &mut out[(o - oa) * inf..(o - oa + rows) * inf];
                match w.tiles(o / 8, tiles, sz) {
                    Some(x) if k.int4_rows8(&x, dst) => {}
                    // a non-finite scale: these rows by the tables
                    None => self.rows_tables(parts, o, o + rows, dst),
                    Some(_) => break,
                }
                o += rows;
            }
        }
        self.rows_tables(parts, o, ob, &mut out[(o - oa) * inf..]);
    }

    /// Whole output rows `oa .. ob` through per-row tables, 64 inputs at a
    /// time for all of them, so that the `qweight` words of those inputs
    /// are read from cache.
    fn rows_tables(&self, parts: &[&[u8]], oa: usize, ob: usize, out: &mut [f32]) {
        if oa == ob {
            return;
        }
        let [qweight, qzeros, scales] = [parts[0], parts[1], parts[2]];
        let (inf, cols, gs) = (self.in_features, self.out_features / 8, self.group_size);
        let per_row = self.groups() * 16;
        let mut tables = vec![0f32; (ob - oa) * per_row];
        for (o, t) in (oa..ob).zip(tables.chunks_exact_mut(per_row)) {
            let (c, sh) = (o / 8, 4 * ORDER[o % 8]);
            for (g, t) in t.chunks_exact_mut(16).enumerate() {
                let s = f16_at(scales, g * self.out_features + o);
                let z = ((word(qzeros, g * cols + c) >> sh) & 15) as f32;
                for (q, v) in t.iter_mut().enumerate() {
                    *v = round_to_f16(s * (q as f32 - z));
                }
            }
        }
        let goff: Vec<u32> = (0..(inf / gs) as u32)
            .flat_map(|g| std::iter::repeat_n(g * 16, gs))
            .collect();
        for ib in (0..inf).step_by(64) {
            let ie = (ib + 64).min(inf);
            for ((o, t), row) in (oa..ob)
                .zip(tables.chunks_exact(per_row))
                .zip(out.chunks_exact_mut(inf))
            {
                let (c, sh) = (o / 8, 4 * ORDER[o % 8]);
                for i in ib..ie {
                    let q = (word(qweight, i * cols + c) >> sh) & 15;
                    row[i] = t[(goff[i] + q) as usize];
                }
            }
        }
    }

    /// Elements `i0 .. i0 + out.len()` of output row `o`.
    fn row(&self, parts: &[&[u8]], o: usize, i0: usize, out: &mut [f32], table: &mut Vec<f32>) {
        let [qweight, qzeros, scales] = [parts[0], parts[1], parts[2]];
        let cols = self.out_features / 8;
        let (c, sh) = (o / 8, 4 * ORDER[o % 8]);
        let gs = self.group_size;
        let (g0, g1) = (i0 / gs, (i0 + out.len()).div_ceil(gs));
        table.clear();
        table.resize((g1 - g0) * 16, 0.0);
        for (g, t) in (g0..g1).zip(table.chunks_exact_mut(16)) {
            let s = f16_at(scales, g * self.out_features + o);
            let z = ((word(qzeros, g * cols + c) >> sh) & 15) as f32;
            for (q, v) in t.iter_mut().enumerate() {
                *v = round_to_f16(s * (q as f32 - z));
            }
        }
        let i1 = i0 + out.len();
        let mut i = i0;
        for (g, t) in (g0..g1).zip(table.chunks_exact(16)) {
            let end = ((g + 1) * gs).min(i1);
            for (k, d) in (i..end).zip(out[i - i0..end - i0].iter_mut()) {
                let q = (word(qweight, k * cols + c) >> sh) & 15;
                *d = t[q as usize];
            }
            i = end;
        }
    }
}

impl Unpack for Awq {
    fn scheme(&self) -> &'static str {
        "awq"
    }

    fn params(&self) -> Value {
        json!({"bits": 4, "group_size": self.group_size, "version": "gemm"})
    }

    fn roles(&self) -> &'static [&'static str] {
        ROLES
    }

    fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Eight rows: one `qweight` word column.
    fn unit(&self) -> u64 {
        8 * self.in_features as u64
    }

    fn values(&self, parts: &[&[u8]], first: u64, out: &mut [f32]) -> Result<(), KernelError> {
        self.values_with(simd::active(), parts, first, out)
    }
}

impl Awq {
    /// [`Unpack::values`] on the kernels of path `k`.
    pub fn values_with(
        &self,
        k: &Kernels,
        parts: &[&[u8]],
        first: u64,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        check_parts(KERNEL, ROLES, parts, &self.part_bytes())?;
        let n = self.in_features as u64;
        check_range(KERNEL, first, out.len(), n * self.out_features as u64)?;
        let mut table = Vec::new();
        by_rows(
            first,
            out,
            self.in_features,
            |o0, o1, out| {
                self.rows(k, parts, o0, o1, out);
                Ok(())
            },
            |o, i0, out| {
                self.row(parts, o, i0, out, &mut table);
                Ok(())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::float::f16_to_f32;
    use crate::quant::golden::Rng;
    use crate::quant::wide::f16_from_f32;

    /// AutoAWQ's `dequantize_gemm`, transcribed element by element: unpack
    /// nibbles in storage order, then reorder columns by
    /// `AWQ_REVERSE_ORDER`.
    fn reference(a: &Awq, parts: &[Vec<u8>]) -> Vec<f32> {
        const REVERSE: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];
        let (inf, outf) = (a.in_features, a.out_features);
        let unpack = |words: &[u8], r: usize| -> Vec<u32> {
            // storage order: column 8c + p is nibble p of word c
            let raw: Vec<u32> = (0..outf)
                .map(|k| (word(words, r * outf / 8 + k / 8) >> (4 * (k % 8))) & 15)
                .collect();
            (0..outf)
                .map(|k| raw[(k / 8) * 8 + REVERSE[k % 8]])
                .collect()
        };
        let mut out = vec![0f32; inf * outf];
        for i in 0..inf {
            let g = i / a.group_size;
            let q = unpack(&parts[0], i);
            let z = unpack(&parts[1], g);
            for o in 0..outf {
                let s = f16_at(&parts[2], g * outf + o);
                out[o * inf + i] = f16_to_f32(f16_from_f32(s * (q[o] as f32 - z[o] as f32)));
            }
        }
        out
    }

    fn random_parts(a: &Awq, rng: &mut Rng) -> Vec<Vec<u8>> {
        let mut parts: Vec<Vec<u8>> = a
            .part_bytes()
            .iter()
            .map(|&n| (0..n).map(|_| rng.next() as u8).collect())
            .collect();
        for c in parts[2].chunks_exact_mut(2) {
            let h = 0x1000 + (rng.next() % 0x3000) as u16;
            c.copy_from_slice(&h.to_le_bytes());
        }
        parts
    }

    #[test]
    fn matches_autoawq_on_any_range() {
        let mut rng = Rng(3);
        for gs in [16, 32, 64] {
            let a = Awq::new(64, 48, gs).unwrap();
            let parts = random_parts(&a, &mut rng);
            let want = reference(&a, &parts);
            let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
            for (first, n) in [
                (0usize, 64 * 48),
                (17, 100),
                (64 * 47 + 5, 59),
                (31, 1),
                (64 * 3, 64 * 30),
                (64 * 5 + 3, 64 * 40),
            ] {
                for kern in simd::available() {
                    let mut got = vec![0f32; n];
                    a.values_with(kern, &refs, first as u64, &mut got).unwrap();
                    for (k, (x, y)) in got.iter().zip(&want[first..first + n]).enumerate() {
                        assert_eq!(
                            x.to_bits(),
                            y.to_bits(),
                            "{} group {gs}: element {}",
                            kern.level(),
                            first + k
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_path_gives_the_portable_bits_with_any_scale() {
        // scales of every F16 pattern (subnormal, huge, inf, NaN): the SIMD
        // paths take the tables for a block of rows with a non-finite scale
        let portable = simd::get(simd::Level::Portable).unwrap();
        let a = Awq::new(128, 48, 32).unwrap();
        let mut rng = Rng(19);
        let mut parts = random_parts(&a, &mut rng);
        for (k, c) in parts[2].chunks_exact_mut(2).enumerate() {
            let h = match k % 97 {
                5 => 0xFC00,
                50 => 0x7E01,
                _ => rng.next() as u16 & 0x7BFF | (rng.next() as u16 & 0x8000),
            };
            c.copy_from_slice(&h.to_le_bytes());
        }
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let n = 128 * 48;
        let mut want = vec![0f32; n];
        a.values_with(portable, &refs, 0, &mut want).unwrap();
        for kern in simd::available() {
            for first in [0usize, 128 * 3 + 1] {
                let mut got = vec![0f32; n - first];
                a.values_with(kern, &refs, first as u64, &mut got).unwrap();
                for (k, (x, y)) in got.iter().zip(&want[first..]).enumerate() {
                    assert_eq!(
                        x.to_bits(),
                        y.to_bits(),
                        "{} element {}",
                        kern.level(),
                        first + k
                    );
                }
            }
        }
    }

    #[test]
    fn refuses_bad_geometry_and_bad_input() {
        assert!(Awq::new(64, 12, 32).is_err());
        assert!(Awq::new(64, 16, 48).is_err());
        assert!(Awq::new(64, 16, 0).is_err());
        assert!(Awq::new(1 << 40, 1 << 40, 64).is_err());
        let a = Awq::new(64, 16, 32).unwrap();
        let parts = random_parts(&a, &mut Rng(2));
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let mut out = vec![0f32; 16];
        assert!(a.values(&refs[..2], 0, &mut out).is_err());
        assert!(a.values(&refs, 64 * 16 - 8, &mut out).is_err());
        let short = [refs[0], refs[1], &refs[2][2..]];
        assert!(a.values(&short, 0, &mut out).is_err());
    }
}
