//! 4-bit integer codes to f32: the inner loops GPTQ, AWQ, compressed-tensors
//! and MLX share, dispatched through [`simd`](super::simd) like every kernel.
//!
//! For: the part of an INT4 format's decoding that runs per element, so that
//! one SIMD implementation per path serves several formats:
//! - [`Kernels::nibbles`]: nibbles of a row of bytes (low nibble first;
//!   [`Kernels::nibbles_high_first`]: high first) through a 16-entry f32
//!   table (compressed-tensors INT4 and MLX 4-bit build one table per group
//!   of a row, bitsandbytes 4-bit one per block);
//! - [`Kernels::int4_rows8`]: eight whole output rows of a weight whose
//!   codes are packed across the output axis (GPTQ's `qweight` `[in / 8,
//!   out]`, AWQ's `[in, out / 8]`): `f16(s * (q - z))` per element, with `s`
//!   and `z` those of the element's row and its input's group.
//!
//! Not for: checking a format's parts or choosing its groups (the format
//! modules do that, then call these with checked slices), or the values of
//! anything but finite scales (the formats take their own portable code for
//! a block with a non-finite scale).
//!
//! The portable path of `nibbles` is the plain loop; `int4_rows8` has none
//! (it answers `false`, and the format runs its own table-driven code, the
//! reference). Every path gives the same bits (tests below and in the format
//! modules).

use super::KernelError;
use super::simd::Kernels;

/// How the codes of eight consecutive output rows sit in `qweight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// GPTQ: `qweight` `[inputs / 8, words]`, output row `o`'s codes in
    /// column `o`, input `i` at bits `4 * (i % 8)` of row `i / 8`; the eight
    /// rows are columns `col .. col + 8`.
    Gptq,
    /// AWQ GEMM: `qweight` `[inputs, words]`, output `8 * col + j` of input
    /// `i` at bits `4 * ORDER[j]` of word `(i, col)`
    /// (`ORDER = [0, 4, 1, 5, 2, 6, 3, 7]`).
    Awq,
}

/// The nibble of an AWQ word that holds output `8c + j`.
pub const AWQ_ORDER: [u32; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

/// Tiles of eight output rows of a 4-bit weight packed across the output
/// axis: [`Rows8::new`] checks the weight once (every `qweight` row there,
/// every input's group a group), [`Rows8::tiles`] the tiles of one call
/// (their columns in `qweight`, their scales), so that every index the
/// kernels make is in bounds.
#[derive(Debug, Clone, Copy)]
pub struct Rows8<'a> {
    packing: Packing,
    qweight: &'a [u8],
    /// Int32 words per row of `qweight`.
    words: usize,
    /// The group of each input (each `< groups`).
    group: &'a [u32],
    groups: usize,
    /// GPTQ: the first column of the first tile; AWQ: its word column.
    col: usize,
    /// Tiles of eight rows decoded together (1 or 2; the second one's
    /// columns follow the first's).
    tiles: usize,
    /// Per tile, per group: the eight rows' scales, then their zero points
    /// (16 f32).
    sz: &'a [f32],
}

impl<'a> Rows8<'a> {
    /// `None` unless the parts fit: a positive multiple of 8 inputs, each
    /// with a group `< groups`, and `qweight` whole rows of `words` words,
    /// one per 8 inputs (GPTQ) or per input (AWQ).
    pub fn new(
        packing: Packing,
        qweight: &'a [u8],
        words: usize,
        group: &'a [u32],
        groups: usize,
    ) -> Option<Rows8<'a>> {
        let inputs = group.len();
        if inputs == 0 || !inputs.is_multiple_of(8) {
            return None;
        }
        let rows = match packing {
            Packing::Gptq => inputs / 8,
            Packing::Awq => inputs,
        };
        if rows.checked_mul(words)?.checked_mul(4)? != qweight.len() {
            return None;
        }
        if group.iter().any(|&g| g as usize >= groups) {
            return None;
        }
        Some(Rows8 {
            packing,
            qweight,
            words,
            group,
            groups,
            col: 0,
            tiles: 0,
            sz: &[],
        })
    }

    /// `tiles` (1 or 2) tiles from column `col` with their scales and zero
    /// points `sz`; `None` if they do not fit or a scale is not finite.
    pub fn tiles<'b>(&self, col: usize, tiles: usize, sz: &'b [f32]) -> Option<Rows8<'b>>
    where
        'a: 'b,
    {
        let width = match self.packing {
            Packing::Gptq => 8 * tiles,
            Packing::Awq => tiles,
        };
        if !(1..=2).contains(&tiles)
            || col.checked_add(width)? > self.words
            || sz.len() != tiles * self.groups * 16
            || sz
                .chunks_exact(16)
                .any(|c| c[..8].iter().any(|s| !s.is_finite()))
        {
            return None;
        }
        Some(Rows8 {
            packing: self.packing,
            qweight: self.qweight,
            words: self.words,
            group: self.group,
            groups: self.groups,
            col,
            tiles,
            sz,
        })
    }

    pub fn packing(&self) -> Packing {
        self.packing
    }

    pub fn qweight(&self) -> &'a [u8] {
        self.qweight
    }

    pub fn words(&self) -> usize {
        self.words
    }

    pub fn col(&self) -> usize {
        self.col
    }

    pub fn tile_count(&self) -> usize {
        self.tiles
    }

    pub fn inputs(&self) -> usize {
        self.group.len()
    }

    pub fn groups(&self) -> usize {
        self.groups
    }

    pub fn sz(&self) -> &'a [f32] {
        self.sz
    }

    pub fn group(&self) -> &'a [u32] {
        self.group
    }
}

impl Kernels {
    /// `out[2k]` and `out[2k + 1]` are `lut` of the low and the high nibble
    /// of `codes[k]`.
    pub fn nibbles(
        &self,
        codes: &[u8],
        lut: &[f32; 16],
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        self.nibbles_in(codes, lut, false, out)
    }

    /// [`Kernels::nibbles`] with the high nibble of each byte first
    /// (bitsandbytes' order).
    pub fn nibbles_high_first(
        &self,
        codes: &[u8],
        lut: &[f32; 16],
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        self.nibbles_in(codes, lut, true, out)
    }

    fn nibbles_in(
        &self,
        codes: &[u8],
        lut: &[f32; 16],
        high_first: bool,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        if out.len() != codes.len().saturating_mul(2) {
            return Err(KernelError::Length {
                kernel: "nibbles",
                what: "output",
                got: out.len(),
                expected: codes.len().saturating_mul(2),
            });
        }
        // SAFETY: a `Kernels` exists only for a path this CPU supports.
        unsafe { (self.fns.nibbles)(codes, lut, high_first, out) };
        Ok(())
    }

    /// The rows of `x`'s tiles (`8 * tiles * inputs` values, row-major)
    /// into `out`: `f16(s * (q - z))` as f32. `false` (nothing written) when
    /// this path does not accelerate it, `x` has no tiles or `out` is not
    /// that long: the caller then runs its own code.
    pub fn int4_rows8(&self, x: &Rows8, out: &mut [f32]) -> bool {
        if x.tiles == 0 || out.len() != 8 * x.tiles * x.inputs() {
            return false;
        }
        // SAFETY: a `Kernels` exists only for a path this CPU supports.
        unsafe { (self.fns.int4_rows8)(x, out) }
    }
}

/// The portable `nibbles`: one lookup per element.
pub(crate) fn portable_nibbles(codes: &[u8], lut: &[f32; 16], high_first: bool, out: &mut [f32]) {
    let (first, second) = if high_first { (4, 0) } else { (0, 4) };
    for (d, &b) in out.chunks_exact_mut(2).zip(codes) {
        d[0] = lut[((b >> first) & 15) as usize];
        d[1] = lut[((b >> second) & 15) as usize];
    }
}

/// The portable path leaves `int4_rows8` to the formats' own code.
pub(crate) fn portable_int4_rows8(_: &Rows8, _: &mut [f32]) -> bool {
    false
}

/// A direct transcription of `int4_rows8`'s definition (for tests of the
/// SIMD paths, and the formats' tests).
#[cfg(test)]
pub(crate) fn reference_rows8(x: &Rows8, round_to_f16: fn(f32) -> f32) -> Vec<f32> {
    let n = x.inputs();
    let word = |i: usize| {
        let c = &x.qweight[i * 4..i * 4 + 4];
        u32::from_le_bytes([c[0], c[1], c[2], c[3]])
    };
    let rows = 8 * x.tiles;
    let mut out = vec![0f32; rows * n];
    for r in 0..rows {
        let (t, r8) = (r / 8, r % 8);
        for i in 0..n {
            let q = match x.packing {
                Packing::Gptq => (word((i / 8) * x.words + x.col + r) >> (4 * (i % 8))) & 15,
                Packing::Awq => (word(i * x.words + x.col + t) >> (4 * AWQ_ORDER[r8])) & 15,
            };
            let g = (t * x.groups + x.group[i] as usize) * 16;
            let (s, z) = (x.sz[g + r8], x.sz[g + 8 + r8]);
            out[r * n + i] = round_to_f16(s * (q as f32 - z));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::golden::Rng;
    use crate::quant::gptq::round_to_f16;
    use crate::quant::simd;

    #[test]
    fn nibbles_every_path_and_length() {
        let mut rng = Rng(11);
        let lut: [f32; 16] = std::array::from_fn(|_| f32::from_bits(rng.next() as u32));
        for n in [0usize, 1, 3, 4, 5, 31, 32, 33, 100] {
            let codes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            let mut want = vec![0f32; 2 * n];
            for (k, &b) in codes.iter().enumerate() {
                want[2 * k] = lut[(b & 15) as usize];
                want[2 * k + 1] = lut[(b >> 4) as usize];
            }
            let swapped: Vec<u8> = codes.iter().map(|b| b.rotate_left(4)).collect();
            for k in simd::available() {
                let mut got = vec![1f32; 2 * n];
                k.nibbles(&codes, &lut, &mut got).unwrap();
                let mut high = vec![1f32; 2 * n];
                k.nibbles_high_first(&swapped, &lut, &mut high).unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
                assert_eq!(bits(&got), bits(&want), "{} n={n}", k.level());
                assert_eq!(bits(&high), bits(&want), "{} high first n={n}", k.level());
            }
        }
        let k = simd::active();
        assert!(k.nibbles(&[1, 2], &lut, &mut [0f32; 3]).is_err());
    }

    #[test]
    fn rows8_every_path_matches_the_definition() {
        let mut rng = Rng(5);
        for packing in [Packing::Gptq, Packing::Awq] {
            for (inputs, groups, words, col) in [
                (8usize, 1usize, 16usize, 0usize),
                (64, 3, 24, 5),
                (256, 8, 17, 1),
            ] {
                for tiles in [1, 2] {
                    let col = match packing {
                        Packing::Gptq => col.min(words - 8 * tiles),
                        Packing::Awq => col.min(words - tiles),
                    };
                    let rows = match packing {
                        Packing::Gptq => inputs / 8,
                        Packing::Awq => inputs,
                    };
                    let qweight: Vec<u8> =
                        (0..rows * words * 4).map(|_| rng.next() as u8).collect();
                    // scales: F16 values of every magnitude, incl. subnormal
                    // and large (products that overflow F16)
                    let sz: Vec<f32> = (0..tiles * groups * 16)
                        .map(|k| {
                            if k % 16 < 8 {
                                let h = (rng.next() as u16) & 0x7BFF | (rng.next() as u16 & 0x8000);
                                crate::quant::float::f16_to_f32(h)
                            } else {
                                (rng.next() % 16) as f32
                            }
                        })
                        .collect();
                    let group: Vec<u32> = (0..inputs)
                        .map(|_| (rng.next() % groups as u64) as u32)
                        .collect();
                    let w = Rows8::new(packing, &qweight, words, &group, groups).unwrap();
                    let x = w.tiles(col, tiles, &sz).unwrap();
                    let want = reference_rows8(&x, round_to_f16);
                    for k in simd::available() {
                        let mut got = vec![0f32; 8 * tiles * inputs];
                        if !k.int4_rows8(&x, &mut got) {
                            continue;
                        }
                        for (e, (a, b)) in got.iter().zip(&want).enumerate() {
                            assert_eq!(
                                a.to_bits(),
                                b.to_bits(),
                                "{} {packing:?} {inputs} x{tiles}: element {e}",
                                k.level()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rows8_refuses_what_does_not_fit() {
        let q = vec![0u8; 8 * 8 * 4];
        let sz = vec![1f32; 16];
        let g = vec![0u32; 8];
        let w = Rows8::new(Packing::Gptq, &q[..8 * 4], 8, &g, 1).unwrap();
        assert!(w.tiles(0, 1, &sz).is_some());
        assert!(w.tiles(1, 1, &sz).is_none());
        assert!(w.tiles(0, 2, &sz).is_none());
        assert!(w.tiles(0, 1, &sz[..8]).is_none());
        assert!(Rows8::new(Packing::Gptq, &q[..8 * 4], 8, &[0u32; 7], 1).is_none());
        assert!(Rows8::new(Packing::Gptq, &q[..8 * 4], 8, &[1u32; 8], 1).is_none());
        assert!(Rows8::new(Packing::Gptq, &q, 8, &g, 1).is_none());
        let a = Rows8::new(Packing::Awq, &q, 8, &g, 1).unwrap();
        assert!(a.tiles(7, 1, &sz).is_some());
        assert!(a.tiles(8, 1, &sz).is_none());
        assert!(a.tiles(6, 2, &[1f32; 32]).is_some());
        assert!(a.tiles(7, 2, &[1f32; 32]).is_none());
        assert!(Rows8::new(Packing::Awq, &q[..100], 8, &g, 1).is_none());
        let mut inf = sz.clone();
        inf[3] = f32::INFINITY;
        assert!(w.tiles(0, 1, &inf).is_none());
        let x = w.tiles(0, 1, &sz).unwrap();
        for k in simd::available() {
            assert!(!k.int4_rows8(&x, &mut [0f32; 63]));
            assert!(!k.int4_rows8(&w, &mut []));
        }
    }
}
