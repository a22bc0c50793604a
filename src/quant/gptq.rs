//! GPTQ weights (`quant_method: gptq`): packed integer codes along the
//! input axis, one scale and zero point per (group, output), and `g_idx`,
//! the group of each input; dequantized as gptqmodel 7.7's
//! `TorchQuantLinear.dequantize_weight` (`nn_modules/qlinear/__init__.py`)
//! does after loading: in float16, `scales[g_idx] * (weight - zeros[g_idx])`,
//! transposed to the model's `[out_features, in_features]`.
//!
//! Storage (all little-endian, int32 words):
//! - `qweight` `[in * bits / 32, out]`: column `o` is a bit stream along
//!   the input axis, code `i` at bits `bits*i ..` (3-bit codes straddle
//!   words: 32 codes in 3 words);
//! - `qzeros` `[groups, out * bits / 32]`: row `g` is the same kind of bit
//!   stream along the output axis;
//! - `scales` F16 `[groups, out]`; `g_idx` I32 `[in]`, each `< groups`.
//!
//! Zero points: checkpoint format `gptq` (v1) stores each zero minus one.
//! gptqmodel corrects it when it loads (`convert_gptq_v1_to_v2_format_module`,
//! `utils/model.py`): for 2, 4 and 8 bits by adding `0x55555555`,
//! `0x11111111` or `0x01010101` to each int32 word, carries included (a
//! stored field of all ones becomes 0 and carries into the next field, the
//! exact inverse of its v2 -> v1 save); for 3 bits field by field,
//! `(field + 1) & 7` (`_correct_gptq_v1_qzeros`). `gptq_v2` stores zeros as
//! they are used.
//!
//! Each value is `f16(f32(scale) * (q - z))`: the product of an F16 scale
//! and an integer of at most 9 bits is exact in f32, so one rounding to F16
//! gives what torch's float16 multiply gives. The portable kernel (the
//! reference) builds, per output row, a table of the `2^bits` values of
//! every group and then maps each code through the table of its input's
//! group: no division, no branch per element. 4-bit weights take the
//! active path's `int4_rows8` (`quant::nibbles`) for whole tiles of eight
//! output rows, which computes the same products and rounding in SIMD.

use serde_json::{Value, json};

use super::KernelError;
use super::float::f16_to_f32;
use super::nibbles::{Packing, Rows8};
use super::packed::{Unpack, by_rows, check_parts, check_range};
use super::simd::{self, Kernels};

const KERNEL: &str = "gptq";

/// The parts of a GPTQ weight, in the order [`Unpack::values`] takes them.
pub const ROLES: &[&str] = &["qweight", "qzeros", "scales", "g_idx"];

/// Bit widths gyrofs dequantizes.
pub const BITS: &[u32] = &[2, 3, 4, 8];

/// How zero points are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zeros {
    /// `checkpoint_format: gptq`: each zero minus one.
    V1,
    /// `checkpoint_format: gptq_v2`: as used.
    V2,
}

impl Zeros {
    pub fn name(self) -> &'static str {
        match self {
            Zeros::V1 => "gptq",
            Zeros::V2 => "gptq_v2",
        }
    }
}

/// One GPTQ linear layer's geometry, built only from checked shapes.
#[derive(Debug, Clone)]
pub struct Gptq {
    bits: u32,
    in_features: usize,
    out_features: usize,
    groups: usize,
    zeros: Zeros,
    /// As configured (recorded; -1 is one group per output).
    group_size: i64,
    desc_act: bool,
    sym: bool,
    shape: [u64; 2],
}

/// What a GPTQ layer is made of, before it is checked.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub bits: u32,
    pub in_features: u64,
    pub out_features: u64,
    pub groups: u64,
    pub zeros: Zeros,
    pub group_size: i64,
    pub desc_act: bool,
    pub sym: bool,
}

impl Gptq {
    /// Check `g`: a supported bit width, whole words along both axes,
    /// sizes that fit in memory.
    pub fn new(g: Geometry) -> Result<Gptq, String> {
        if !BITS.contains(&g.bits) {
            return Err(format!(
                "{}-bit GPTQ is not supported (2, 3, 4 or 8 bits)",
                g.bits
            ));
        }
        if g.in_features == 0 || !g.in_features.is_multiple_of(32) {
            return Err(format!(
                "in_features {} is not a positive multiple of 32",
                g.in_features
            ));
        }
        let out_unit = if g.bits == 3 { 32 } else { 32 / g.bits as u64 };
        if g.out_features == 0 || !g.out_features.is_multiple_of(out_unit) {
            return Err(format!(
                "out_features {} is not a positive multiple of {out_unit} ({}-bit zeros are packed in 32-bit words)",
                g.out_features, g.bits
            ));
        }
        if g.groups == 0 || g.groups > g.in_features {
            return Err(format!("{} groups for {} inputs", g.groups, g.in_features));
        }
        // every part's byte size must fit a usize with room to spare
        let limit = (isize::MAX as u64) / 8;
        if g.in_features
            .checked_mul(g.out_features)
            .is_none_or(|n| n > limit)
            || g.groups
                .checked_mul(g.out_features)
                .is_none_or(|n| n > limit)
        {
            return Err(format!("{}x{} is too large", g.out_features, g.in_features));
        }
        Ok(Gptq {
            bits: g.bits,
            in_features: g.in_features as usize,
            out_features: g.out_features as usize,
            groups: g.groups as usize,
            zeros: g.zeros,
            group_size: g.group_size,
            desc_act: g.desc_act,
            sym: g.sym,
            shape: [g.out_features, g.in_features],
        })
    }

    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The shapes the stored parts must have, in [`ROLES`] order.
    pub fn part_shapes(&self) -> [Vec<u64>; 4] {
        let (i, o, g, b) = (
            self.in_features as u64,
            self.out_features as u64,
            self.groups as u64,
            self.bits as u64,
        );
        [
            vec![i * b / 32, o],
            vec![g, o * b / 32],
            vec![g, o],
            vec![i],
        ]
    }

    fn part_bytes(&self) -> [usize; 4] {
        let (i, o, g, b) = (
            self.in_features,
            self.out_features,
            self.groups,
            self.bits as usize,
        );
        [i * b / 32 * o * 4, g * (o * b / 32) * 4, g * o * 2, i * 4]
    }

    /// Zero point of group `g`, output `o`, as gptqmodel uses it.
    fn zero(&self, qzeros: &[u8], g: usize, o: usize) -> u32 {
        let bits = self.bits as usize;
        let row = g * (self.out_features * bits / 32);
        let pos = o * bits;
        let (w, sh) = (row + pos / 32, (pos % 32) as u32);
        let mask = (1u32 << bits) - 1;
        if bits == 3 {
            let mut v = word(qzeros, w) >> sh;
            if sh > 29 {
                v |= word(qzeros, w + 1) << (32 - sh);
            }
            let field = v & mask;
            match self.zeros {
                Zeros::V1 => (field + 1) & mask,
                Zeros::V2 => field,
            }
        } else {
            let add = match (self.zeros, bits) {
                (Zeros::V2, _) => 0,
                (Zeros::V1, 2) => 0x5555_5555,
                (Zeros::V1, 4) => 0x1111_1111,
                (Zeros::V1, _) => 0x0101_0101,
            };
            (word(qzeros, w).wrapping_add(add) >> sh) & mask
        }
    }

    /// `table[(g << bits) + q]` for output row `o` (`groups << bits` values).
    fn fill_table(&self, qzeros: &[u8], scales: &[u8], o: usize, table: &mut [f32]) {
        let levels = 1usize << self.bits;
        for (g, t) in table.chunks_exact_mut(levels).enumerate() {
            let s = f16_at(scales, g * self.out_features + o);
            let z = self.zero(qzeros, g, o) as f32;
            for (q, v) in t.iter_mut().enumerate() {
                *v = round_to_f16(s * (q as f32 - z));
            }
        }
    }

    /// The group of each of inputs `i0 .. i1`, or an error if one is not a
    /// group.
    fn group_offsets(&self, g_idx: &[u8], i0: usize, i1: usize) -> Result<Vec<u32>, KernelError> {
        let g: Vec<u32> = g_idx[i0 * 4..i1 * 4]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let max = g.iter().copied().max().unwrap_or(0);
        if max as usize >= self.groups {
            return Err(KernelError::Shape {
                kernel: KERNEL,
                why: format!(
                    "g_idx holds {} in inputs {i0}..{i1}, outside the {} groups",
                    max as i32, self.groups
                ),
            });
        }
        Ok(g)
    }

    /// Per group, the scales of output rows `o .. o + 8`, then their zero
    /// points (the layout `nibbles::Rows8` takes).
    fn fill_sz(&self, qzeros: &[u8], scales: &[u8], o: usize, sz: &mut [f32]) {
        for (g, c) in sz.chunks_exact_mut(16).enumerate() {
            for r in 0..8 {
                c[r] = f16_at(scales, g * self.out_features + o + r);
                c[8 + r] = self.zero(qzeros, g, o + r) as f32;
            }
        }
    }

    /// The codes of inputs `32b .. 32b + 32` of column `o`.
    #[inline(always)]
    fn codes(&self, qweight: &[u8], b: usize, o: usize, codes: &mut [u8; 32]) {
        match self.bits {
            2 => codes_of::<2>(qweight, self.out_features, b, o, codes),
            3 => codes3(qweight, self.out_features, b, o, codes),
            4 => codes_of::<4>(qweight, self.out_features, b, o, codes),
            _ => codes_of::<8>(qweight, self.out_features, b, o, codes),
        }
    }

    /// Whole output rows `oa .. ob`: 4-bit weights 16 (or 8) rows at a time
    /// by the path's `int4_rows8` where it has one, the rest by
    /// [`Gptq::rows_tables`].
    fn rows(
        &self,
        k: &Kernels,
        parts: &[&[u8]],
        oa: usize,
        ob: usize,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let [qweight, qzeros, scales, g_idx] = [parts[0], parts[1], parts[2], parts[3]];
        let inf = self.in_features;
        let groups = self.group_offsets(g_idx, 0, inf)?;
        let mut o = oa;
        let weight = Rows8::new(
            Packing::Gptq,
            qweight,
            self.out_features,
            &groups,
            self.groups,
        );
        if let (4, Some(w)) = (self.bits, weight) {
            let per_tile = self.groups * 16;
            let mut sz = vec![0f32; 2 * per_tile];
            while o + 8 <= ob {
                let tiles = if o + 16 <= ob { 2 } else { 1 };
                let sz = &mut sz[..tiles * per_tile];
                for (t, s) in sz.chunks_exact_mut(per_tile).enumerate() {
                    self.fill_sz(qzeros, scales, o + 8 * t, s);
                }
                let rows = 8 * tiles;
                let dst = &mut out[(o - oa) * inf..(o - oa + rows) * inf];
                match w.tiles(o, tiles, sz) {
                    Some(x) if k.int4_rows8(&x, dst) => {}
                    // a non-finite scale: these rows by the tables
                    None => self.rows_tables(parts, o, o + rows, dst, &groups),
                    Some(_) => break,
                }
                o += rows;
            }
        }
        self.rows_tables(parts, o, ob, &mut out[(o - oa) * inf..], &groups);
        Ok(())
    }

    /// Whole output rows `oa .. ob` through per-row tables, block by block
    /// of 32 inputs, the rows' words of one block side by side in `qweight`
    /// (`groups`: the checked group of every input).
    fn rows_tables(&self, parts: &[&[u8]], oa: usize, ob: usize, out: &mut [f32], groups: &[u32]) {
        let [qweight, qzeros, scales] = [parts[0], parts[1], parts[2]];
        let inf = self.in_features;
        let per_row = self.groups << self.bits;
        let mut tables = vec![0f32; (ob - oa) * per_row];
        for (r, t) in tables.chunks_exact_mut(per_row).enumerate() {
            self.fill_table(qzeros, scales, oa + r, t);
        }
        let mut codes = [0u8; 32];
        for (b, gb) in groups.chunks_exact(32).enumerate() {
            for ((o, t), row) in (oa..ob)
                .zip(tables.chunks_exact(per_row))
                .zip(out.chunks_exact_mut(inf))
            {
                self.codes(qweight, b, o, &mut codes);
                let dst = &mut row[b * 32..b * 32 + 32];
                for j in 0..32 {
                    dst[j] = t[((gb[j] << self.bits) + codes[j] as u32) as usize];
                }
            }
        }
    }

    /// Elements `i0 .. i0 + out.len()` of output row `o`.
    fn row(
        &self,
        parts: &[&[u8]],
        o: usize,
        i0: usize,
        out: &mut [f32],
        table: &mut Vec<f32>,
    ) -> Result<(), KernelError> {
        let [qweight, qzeros, scales, g_idx] = [parts[0], parts[1], parts[2], parts[3]];
        let i1 = i0 + out.len();
        let goff = self.group_offsets(g_idx, i0, i1)?;
        table.clear();
        table.resize(self.groups << self.bits, 0.0);
        self.fill_table(qzeros, scales, o, table);
        let mut codes = [0u8; 32];
        let mut i = i0;
        while i < i1 {
            let b = i / 32;
            self.codes(qweight, b, o, &mut codes);
            let lo = i - b * 32;
            let hi = (i1 - b * 32).min(32);
            let dst = &mut out[i - i0..i - i0 + (hi - lo)];
            let grp = &goff[i - i0..i - i0 + (hi - lo)];
            for ((d, &c), &g) in dst.iter_mut().zip(&codes[lo..hi]).zip(grp) {
                *d = table[((g << self.bits) + c as u32) as usize];
            }
            i += hi - lo;
        }
        Ok(())
    }
}

impl Unpack for Gptq {
    fn scheme(&self) -> &'static str {
        "gptq"
    }

    fn params(&self) -> Value {
        json!({
            "bits": self.bits,
            "checkpoint_format": self.zeros.name(),
            "desc_act": self.desc_act,
            "group_size": self.group_size,
            "sym": self.sym,
        })
    }

    fn roles(&self) -> &'static [&'static str] {
        ROLES
    }

    fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Eight rows: the SIMD paths decode eight output rows at once.
    fn unit(&self) -> u64 {
        8 * self.in_features as u64
    }

    fn values(&self, parts: &[&[u8]], first: u64, out: &mut [f32]) -> Result<(), KernelError> {
        self.values_with(simd::active(), parts, first, out)
    }
}

impl Gptq {
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
            |o0, o1, out| self.rows(k, parts, o0, o1, out),
            |o, i0, out| self.row(parts, o, i0, out, &mut table),
        )
    }
}

/// Int32 word `i` of `b` (the caller has checked the length).
#[inline(always)]
pub(crate) fn word(b: &[u8], i: usize) -> u32 {
    let c = &b[i * 4..i * 4 + 4];
    u32::from_le_bytes([c[0], c[1], c[2], c[3]])
}

/// F16 element `i` of `b` as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i * 2], b[i * 2 + 1]]))
}

/// The 32 codes of inputs `32b ..` of column `o` (B = 2, 4, 8 bits: B
/// words, each whole codes).
#[inline(always)]
fn codes_of<const B: usize>(qweight: &[u8], cols: usize, b: usize, o: usize, codes: &mut [u8; 32]) {
    let per = 32 / B;
    let mask = (1u32 << B) - 1;
    for w in 0..B {
        let x = word(qweight, (b * B + w) * cols + o);
        for j in 0..per {
            codes[w * per + j] = ((x >> (B * j)) & mask) as u8;
        }
    }
}

/// The 32 3-bit codes of inputs `32b ..` of column `o` (3 words read as
/// one 96-bit little-endian stream).
#[inline(always)]
fn codes3(qweight: &[u8], cols: usize, b: usize, o: usize, codes: &mut [u8; 32]) {
    let x = word(qweight, (b * 3) * cols + o) as u128
        | (word(qweight, (b * 3 + 1) * cols + o) as u128) << 32
        | (word(qweight, (b * 3 + 2) * cols + o) as u128) << 64;
    for (j, c) in codes.iter_mut().enumerate() {
        *c = ((x >> (3 * j)) & 7) as u8;
    }
}

/// `x` rounded to the nearest F16 value (ties to even), as f32: what
/// `wide::f16_from_f32` then `f16_to_f32` give, without branches. NaN stays
/// a NaN (the views write one canonical NaN).
#[inline(always)]
pub(crate) fn round_to_f16(x: f32) -> f32 {
    let a = x.abs();
    let b = a.to_bits();
    // normal F16 range: keep 10 fraction bits, nearest even
    let normal = f32::from_bits((b + 0xFFF + ((b >> 13) & 1)) & !0x1FFF);
    // below 2^-14: multiples of 2^-24 (the ulp of f32 at 0.5)
    let sub = (a + 0.5) - 0.5;
    let r = if a < f32::from_bits(0x3880_0000) {
        sub
    } else {
        normal
    };
    let r = if r > 65504.0 { f32::INFINITY } else { r };
    let r = if a.is_nan() { f32::NAN } else { r };
    r.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::golden::Rng;
    use crate::quant::wide::f16_from_f32;

    fn geometry(bits: u32, in_f: u64, out_f: u64, groups: u64, zeros: Zeros) -> Geometry {
        Geometry {
            bits,
            in_features: in_f,
            out_features: out_f,
            groups,
            zeros,
            group_size: in_f.checked_div(groups).unwrap_or(0) as i64,
            desc_act: false,
            sym: false,
        }
    }

    #[test]
    fn round_to_f16_is_the_f16_cast() {
        // every product the kernel makes: an F16 scale times -255..=255
        for h in 0..=u16::MAX {
            let s = f16_to_f32(h);
            for d in -255..=255 {
                let x = s * d as f32;
                let want = f16_to_f32(f16_from_f32(x));
                let got = round_to_f16(x);
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "{h:#06x} * {d}: {got} != {want}"
                );
            }
        }
        for x in [65519.0f32, 65520.0, 1e-9, -1e-9, 2.9802322e-8, f32::MAX] {
            assert_eq!(
                round_to_f16(x).to_bits(),
                f16_to_f32(f16_from_f32(x)).to_bits(),
                "{x}"
            );
        }
    }

    /// A direct, slow transcription of gptqmodel's formula.
    fn reference(g: &Gptq, parts: &[Vec<u8>]) -> Vec<f32> {
        let bits = g.bits as usize;
        let (inf, outf) = (g.in_features, g.out_features);
        let mut out = vec![0f32; inf * outf];
        for o in 0..outf {
            for i in 0..inf {
                // column o of qweight as a bit stream along i
                let q = {
                    let pos = i * bits;
                    let mut v = 0u32;
                    for t in 0..bits {
                        let p = pos + t;
                        v |= ((word(&parts[0], (p / 32) * outf + o) >> (p % 32)) & 1) << t;
                    }
                    v
                };
                let gi = word(&parts[3], i) as usize;
                let z = g.zero(&parts[1], gi, o);
                let s = f16_at(&parts[2], gi * outf + o);
                out[o * inf + i] = f16_to_f32(f16_from_f32(s * (q as f32 - z as f32)));
            }
        }
        out
    }

    fn random_parts(g: &Gptq, rng: &mut Rng, act_order: bool) -> Vec<Vec<u8>> {
        let sizes = g.part_bytes();
        let mut parts: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&n| (0..n).map(|_| rng.next() as u8).collect())
            .collect();
        // finite, modest scales
        for c in parts[2].chunks_exact_mut(2) {
            let h = (0x1000 + (rng.next() % 0x3000) as u16) | (rng.next() as u16 & 0x8000);
            c.copy_from_slice(&h.to_le_bytes());
        }
        let gs = g.in_features / g.groups;
        for (i, c) in parts[3].chunks_exact_mut(4).enumerate() {
            let grp = if act_order {
                rng.next() as usize % g.groups
            } else {
                (i / gs).min(g.groups - 1)
            };
            c.copy_from_slice(&(grp as u32).to_le_bytes());
        }
        parts
    }

    #[test]
    fn every_width_matches_the_formula_on_any_range() {
        let mut rng = Rng(7);
        for bits in [2, 3, 4, 8] {
            for zeros in [Zeros::V1, Zeros::V2] {
                for (groups, act) in [(1, false), (2, false), (4, true)] {
                    let g = Gptq::new(geometry(bits, 64, 64, groups, zeros)).unwrap();
                    let parts = random_parts(&g, &mut rng, act);
                    let want = reference(&g, &parts);
                    let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
                    for (first, n) in [
                        (0usize, 64 * 64),
                        (5, 200),
                        (64 * 63 + 1, 63),
                        (100, 1),
                        (64 * 3, 64 * 17),
                        (64 * 3 + 9, 64 * 20),
                    ] {
                        for kern in simd::available() {
                            let mut got = vec![0f32; n];
                            g.values_with(kern, &refs, first as u64, &mut got).unwrap();
                            for (k, (a, b)) in got.iter().zip(&want[first..first + n]).enumerate() {
                                assert_eq!(
                                    a.to_bits(),
                                    b.to_bits(),
                                    "{} {bits}-bit {zeros:?} groups {groups}: element {}",
                                    kern.level(),
                                    first + k
                                );
                            }
                        }
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
        let mut rng = Rng(17);
        for act in [false, true] {
            let g = Gptq::new(geometry(4, 128, 48, 4, Zeros::V1)).unwrap();
            let mut parts = random_parts(&g, &mut rng, act);
            for (k, c) in parts[2].chunks_exact_mut(2).enumerate() {
                let h = match k % 97 {
                    5 => 0x7C00,
                    50 => 0xFE01,
                    _ => rng.next() as u16 & 0x7BFF | (rng.next() as u16 & 0x8000),
                };
                c.copy_from_slice(&h.to_le_bytes());
            }
            let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
            let n = 128 * 48;
            let mut want = vec![0f32; n];
            g.values_with(portable, &refs, 0, &mut want).unwrap();
            for kern in simd::available() {
                for first in [0usize, 128 * 3 + 1] {
                    let mut got = vec![0f32; n - first];
                    g.values_with(kern, &refs, first as u64, &mut got).unwrap();
                    for (k, (a, b)) in got.iter().zip(&want[first..]).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{} element {}",
                            kern.level(),
                            first + k
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn v1_zeros_carry_as_gptqmodel_adds_words() {
        // 4-bit: fields 0xF, 0x3 in one word; +0x11111111 gives 0x0 and 0x5
        let g = Gptq::new(geometry(4, 32, 8, 1, Zeros::V1)).unwrap();
        let qz = 0x0000_003Fu32.to_le_bytes();
        assert_eq!(g.zero(&qz, 0, 0), 0);
        assert_eq!(g.zero(&qz, 0, 1), 5);
        assert_eq!(g.zero(&qz, 0, 2), 1);
        // the top field's carry leaves the word
        let qz = 0xF000_0000u32.to_le_bytes();
        assert_eq!(g.zero(&qz, 0, 7), 0);
        // 3-bit: field by field, 7 -> 0 without carry
        let g = Gptq::new(geometry(3, 32, 32, 1, Zeros::V1)).unwrap();
        let mut qz = vec![0u8; 12];
        qz[0] = 0b0000_0111;
        assert_eq!(g.zero(&qz, 0, 0), 0);
        assert_eq!(g.zero(&qz, 0, 1), 1);
        // field 10 straddles words 0 and 1
        qz[3] = 0xC0;
        qz[4] = 0x01;
        assert_eq!(g.zero(&qz, 0, 10), 0);
    }

    #[test]
    fn refuses_bad_geometry_and_bad_input() {
        assert!(
            Gptq::new(geometry(5, 64, 64, 1, Zeros::V1))
                .unwrap_err()
                .contains("5-bit")
        );
        assert!(Gptq::new(geometry(4, 48, 64, 1, Zeros::V1)).is_err());
        assert!(Gptq::new(geometry(3, 64, 16, 1, Zeros::V1)).is_err());
        assert!(Gptq::new(geometry(4, 64, 64, 0, Zeros::V1)).is_err());
        assert!(Gptq::new(geometry(4, 1 << 40, 1 << 40, 1, Zeros::V1)).is_err());
        let g = Gptq::new(geometry(4, 64, 64, 2, Zeros::V1)).unwrap();
        let mut rng = Rng(1);
        let mut parts = random_parts(&g, &mut rng, false);
        let mut out = vec![0f32; 64];
        {
            let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
            assert!(g.values(&refs[..3], 0, &mut out).is_err());
            assert!(g.values(&refs, 64 * 64 - 1, &mut out).is_err());
            let short = [refs[0], &refs[1][1..], refs[2], refs[3]];
            assert!(g.values(&short, 0, &mut out).is_err());
        }
        // a group index out of range, or negative
        for bad in [2i32, -1] {
            parts[3][8..12].copy_from_slice(&bad.to_le_bytes());
            let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
            let e = g.values(&refs, 0, &mut out).unwrap_err().to_string();
            assert!(e.contains("g_idx holds"), "{e}");
        }
    }
}
