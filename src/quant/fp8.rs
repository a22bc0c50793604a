//! 8-bit floats to BF16: F8_E4M3 and F8_E5M2 decoding, and DeepSeek-V3 style
//! block-scaled F8_E4M3 weights.
//!
//! - F8_E4M3 is the "FN" variant (safetensors `F8_E4M3`, torch
//!   `float8_e4m3fn`): bias 7, no infinities, `0x7F` / `0xFF` are NaN, max 448,
//!   subnormals `m * 2^-9`.
//! - F8_E5M2 (`float8_e5m2`) is IEEE-like: bias 15, infinities, NaNs; its
//!   code `c` is exactly the F16 whose high byte is `c`.
//!
//! Every F8 value is exact in f32 and in BF16, so plain decoding never
//! rounds. The f32 tables reproduce torch's `.float()` bit for bit, NaN
//! payloads included; BF16 output uses the canonical NaN `0x7FC0`.
//!
//! Block-scaled dequantization ([`BlockScaled`]): weight F8_E4M3 `[R, C]`
//! with an F32 `weight_scale_inv` grid `[ceil(R/bm), ceil(C/bn)]` (DeepSeek-V3
//! uses `bm = bn = 128`):
//! `out[r][c] = bf16(f32(w[r][c]) * scale_inv[r / bm][c / bn])`,
//! the product an IEEE f32 multiplication (rounded to nearest even) and then
//! rounded to BF16, exactly as DeepSeek's `weight_dequant` and
//! `(w.to(torch.float32) * s).to(torch.bfloat16)` do. Any contiguous range of
//! the flattened output can be computed on its own.

use super::simd::{self, Kernels};
use super::{KernelError, bf16, check_elementwise, float};

/// f32 bits of an F8_E4M3 (FN) code, as torch's `.float()` gives them.
const fn e4m3_f32_bits(c: u8) -> u32 {
    let sign = ((c & 0x80) as u32) << 24;
    let e = ((c >> 3) & 15) as u32;
    let m = (c & 7) as u32;
    let magnitude = if e == 15 && m == 7 {
        0x7FF0_0000 // NaN; torch's encoding
    } else if e == 0 {
        (m as f32 * (1.0 / 512.0)).to_bits() // subnormal m * 2^-9, exact
    } else {
        ((e + 120) << 23) | (m << 20) // rebias 7 -> 127
    };
    sign | magnitude
}

const fn build_f32(e4m3: bool) -> [f32; 256] {
    let mut t = [0f32; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = if e4m3 {
            f32::from_bits(e4m3_f32_bits(c as u8))
        } else {
            float::f16_to_f32((c as u16) << 8)
        };
        c += 1;
    }
    t
}

const fn build_bf16(f: &[f32; 256]) -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = bf16::from_f32(f[c]);
        c += 1;
    }
    t
}

/// F8_E4M3 (FN) code -> f32.
pub static E4M3_F32: [f32; 256] = build_f32(true);
/// F8_E5M2 code -> f32.
pub static E5M2_F32: [f32; 256] = build_f32(false);
/// F8_E4M3 (FN) code -> BF16 bits (exact; NaN -> `0x7FC0`).
pub static E4M3_BF16: [u16; 256] = build_bf16(&build_f32(true));
/// F8_E5M2 code -> BF16 bits (exact; NaN -> `0x7FC0`).
pub static E5M2_BF16: [u16; 256] = build_bf16(&build_f32(false));

/// F8_E4M3 (`n` bytes) to BF16 (`2n` bytes), unscaled.
pub fn e4m3_to_bf16(src: &[u8], dst: &mut [u8]) -> Result<(), KernelError> {
    simd::active().e4m3_to_bf16(src, dst)
}

/// F8_E5M2 (`n` bytes) to BF16 (`2n` bytes), unscaled.
pub fn e5m2_to_bf16(src: &[u8], dst: &mut [u8]) -> Result<(), KernelError> {
    simd::active().e5m2_to_bf16(src, dst)
}

impl Kernels {
    /// [`e4m3_to_bf16`] on this path.
    pub fn e4m3_to_bf16(&self, src: &[u8], dst: &mut [u8]) -> Result<(), KernelError> {
        check_elementwise("fp8::e4m3_to_bf16", src, 1, dst)?;
        // SAFETY: a `Kernels` exists only for a path this CPU supports.
        unsafe { (self.fns.e4m3)(src, dst) };
        Ok(())
    }

    /// [`e5m2_to_bf16`] on this path.
    pub fn e5m2_to_bf16(&self, src: &[u8], dst: &mut [u8]) -> Result<(), KernelError> {
        check_elementwise("fp8::e5m2_to_bf16", src, 1, dst)?;
        // SAFETY: a `Kernels` exists only for a path this CPU supports.
        unsafe { (self.fns.e5m2)(src, dst) };
        Ok(())
    }

    /// [`BlockScaledSlice::dequant_le`] on this path.
    pub fn fp8_block_le(&self, x: &BlockScaledSlice, out: &mut [u8]) -> Result<(), KernelError> {
        x.dequant_with(self, out)
    }
}

fn decode(table: &[u16; 256], src: &[u8], dst: &mut [u8]) {
    for (&c, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
        d.copy_from_slice(&table[c as usize].to_le_bytes());
    }
}

/// The portable F8_E4M3 kernel (lengths checked by the caller).
pub(crate) fn portable_e4m3(src: &[u8], dst: &mut [u8]) {
    decode(&E4M3_BF16, src, dst)
}

/// The portable F8_E5M2 kernel.
pub(crate) fn portable_e5m2(src: &[u8], dst: &mut [u8]) {
    decode(&E5M2_BF16, src, dst)
}

/// The portable scaled F8_E4M3 kernel: `bf16(f32(code) * scale)`.
pub(crate) fn portable_e4m3_scaled(src: &[u8], scale: f32, dst: &mut [u8]) {
    for (&code, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
        d.copy_from_slice(&bf16::from_f32(E4M3_F32[code as usize] * scale).to_le_bytes());
    }
}

/// The geometry of a block-scaled F8_E4M3 weight: `[rows, cols]` values,
/// one f32 `scale_inv` per `block.0 x block.1` tile (row-major grid of
/// `ceil(rows / block.0) x ceil(cols / block.1)`, partial tiles at the edges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockScaled {
    rows: usize,
    cols: usize,
    block: (usize, usize),
    grid: (usize, usize),
}

impl BlockScaled {
    /// DeepSeek-V3's tile.
    pub const DEEPSEEK_BLOCK: (usize, usize) = (128, 128);

    const KERNEL: &'static str = "fp8::BlockScaled";

    /// Validates that the tile is non-empty and that the element and scale
    /// counts fit in `usize`.
    pub fn new(rows: usize, cols: usize, block: (usize, usize)) -> Result<Self, KernelError> {
        let shape = |why: String| KernelError::Shape {
            kernel: Self::KERNEL,
            why,
        };
        if block.0 == 0 || block.1 == 0 {
            return Err(shape(format!("empty block {block:?}")));
        }
        let grid = (rows.div_ceil(block.0), cols.div_ceil(block.1));
        let fits = rows.checked_mul(cols).is_some()
            && grid
                .0
                .checked_mul(grid.1)
                .and_then(|g| g.checked_mul(4))
                .is_some();
        if !fits {
            return Err(shape(format!("shape [{rows}, {cols}] is too large")));
        }
        Ok(BlockScaled {
            rows,
            cols,
            block,
            grid,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn block(&self) -> (usize, usize) {
        self.block
    }

    /// Shape of the `scale_inv` grid: `(ceil(rows / bm), ceil(cols / bn))`.
    pub fn scale_shape(&self) -> (usize, usize) {
        self.grid
    }

    /// Number of weight elements, `rows * cols`.
    pub fn numel(&self) -> usize {
        self.rows * self.cols
    }

    /// The flattened elements `first .. first + weight.len()` of this
    /// weight, as the argument of the block-scaled kernels.
    ///
    /// `weight` holds exactly those elements' F8_E4M3 bytes (one per element),
    /// `scale_inv` the WHOLE F32 little-endian scale grid
    /// (`4 * grid.0 * grid.1` bytes). A row range `r0..r1` is
    /// `first = r0 * cols` with `weight` the bytes of those rows.
    pub fn slice<'a>(
        &'a self,
        weight: &'a [u8],
        first: usize,
        scale_inv: &'a [u8],
    ) -> Result<BlockScaledSlice<'a>, KernelError> {
        const K: &str = "fp8::BlockScaled::slice";
        let scale_bytes = 4 * self.grid.0 * self.grid.1;
        if scale_inv.len() != scale_bytes {
            return Err(KernelError::Length {
                kernel: K,
                what: "scale_inv",
                got: scale_inv.len(),
                expected: scale_bytes,
            });
        }
        match first.checked_add(weight.len()) {
            Some(end) if end <= self.numel() => {}
            _ => {
                return Err(KernelError::Shape {
                    kernel: K,
                    why: format!(
                        "elements [{first}, {first} + {}) exceed [{}, {}]",
                        weight.len(),
                        self.rows,
                        self.cols
                    ),
                });
            }
        }
        Ok(BlockScaledSlice {
            layout: self,
            weight,
            first,
            scale_inv,
        })
    }
}

/// Elements `first .. first + weight.len()` of a block-scaled F8_E4M3
/// weight (flattened, row-major) with the weight's whole `scale_inv` grid:
/// the argument of the block-scaled kernels ([`BlockScaledSlice::dequant_le`],
/// [`Kernels::fp8_block_le`], `wide::fp8_block_to_f32`). Its lengths are
/// checked once, by [`BlockScaled::slice`], which builds it.
#[derive(Debug, Clone, Copy)]
pub struct BlockScaledSlice<'a> {
    layout: &'a BlockScaled,
    weight: &'a [u8],
    first: usize,
    scale_inv: &'a [u8],
}

impl<'a> BlockScaledSlice<'a> {
    /// The weight's geometry.
    pub fn layout(&self) -> &'a BlockScaled {
        self.layout
    }

    /// The F8_E4M3 bytes of the elements, one per element.
    pub fn weight(&self) -> &'a [u8] {
        self.weight
    }

    /// The index of the first element in the flattened weight.
    pub fn first(&self) -> usize {
        self.first
    }

    /// The whole F32 little-endian scale grid.
    pub fn scale_inv(&self) -> &'a [u8] {
        self.scale_inv
    }

    /// Dequantize the elements to BF16 little-endian bytes:
    /// `out.len() == 2 * weight.len()`.
    pub fn dequant_le(&self, out: &mut [u8]) -> Result<(), KernelError> {
        self.dequant_with(simd::active(), out)
    }

    fn dequant_with(&self, kernels: &Kernels, out: &mut [u8]) -> Result<(), KernelError> {
        check_elementwise("fp8::BlockScaledSlice::dequant_le", self.weight, 1, out)?;
        // The geometry in locals: loads through `self.layout` could not be
        // kept in registers across the kernel calls.
        let BlockScaled {
            cols,
            block: (bm, bn),
            grid: (_, grid_cols),
            ..
        } = *self.layout;
        let scale_inv = self.scale_inv;
        let (mut i, mut w, mut o) = (self.first, self.weight, out);
        // Walk runs of elements that share a row and a scale tile; each run is
        // at least one element, so this ends after at most
        // `weight.len()` iterations (far fewer: runs are up to bn long).
        while !w.is_empty() {
            let (r, c) = (i / cols, i % cols);
            let tile_col = c / bn;
            let run_end = ((tile_col + 1) * bn).min(cols);
            let run = (run_end - c).min(w.len());
            let k = 4 * ((r / bm) * grid_cols + tile_col);
            let s = f32::from_le_bytes([
                scale_inv[k],
                scale_inv[k + 1],
                scale_inv[k + 2],
                scale_inv[k + 3],
            ]);
            let (ws, w_rest) = w.split_at(run);
            let (os, o_rest) = o.split_at_mut(2 * run);
            // SAFETY: a `Kernels` exists only for a path this CPU supports.
            unsafe { (kernels.fns.e4m3_scaled)(ws, s, os) };
            (i, w, o) = (i + run, w_rest, o_rest);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::golden::{Rng, assert_bf16_matches, read, u16s, u32s};

    #[test]
    fn decode_tables_match_torch() {
        let e4 = u32s(&read("fp8_e4m3.f32"));
        let e5 = u32s(&read("fp8_e5m2.f32"));
        for c in 0..256 {
            assert_eq!(E4M3_F32[c].to_bits(), e4[c], "e4m3 {c:#04x}");
            assert_eq!(E5M2_F32[c].to_bits(), e5[c], "e5m2 {c:#04x}");
        }
        assert_eq!(E4M3_F32[0x7E], 448.0);
        assert_eq!(E4M3_F32[0x01], 2f32.powi(-9));
        assert!(E4M3_F32[0x7F].is_nan() && E4M3_F32[0xFF].is_nan());
        assert_eq!(E5M2_F32[0x7B], 57344.0);
        assert_eq!(E5M2_F32[0x7C], f32::INFINITY);

        // Every code, three times over with shifts, so that SIMD loops and
        // their ragged tails both see each one.
        let e4 = u16s(&read("fp8_e4m3.bf16"));
        let e5 = u16s(&read("fp8_e5m2.bf16"));
        let codes: Vec<u8> = (0..3 * 256 + 5).map(|i| (i * 7 % 256) as u8).collect();
        let want = |t: &[u16]| -> Vec<u16> { codes.iter().map(|&c| t[c as usize]).collect() };
        let (want4, want5) = (want(&e4), want(&e5));
        for k in simd::available() {
            let mut out = vec![0u8; 2 * codes.len() + 1];
            let name = k.level().name();
            k.e4m3_to_bf16(&codes, &mut out[1..]).unwrap();
            assert_bf16_matches(name, &u16s(&out[1..]), &want4, |i| {
                format!("{:#04x}", codes[i])
            });
            k.e5m2_to_bf16(&codes, &mut out[1..]).unwrap();
            assert_bf16_matches(name, &u16s(&out[1..]), &want5, |i| {
                format!("{:#04x}", codes[i])
            });
        }
    }

    /// Decoding equals the portable code at every length and alignment, and
    /// so does scaled decoding with scales of every class (zero, subnormal,
    /// huge, inf, NaN, negative).
    #[test]
    fn every_path_equals_portable() {
        let mut rng = Rng(9);
        let scales = [
            1.0f32,
            0.0,
            -0.0,
            f32::from_bits(1),
            1e-40,
            3.0e38,
            -7.25,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1.0 / 448.0,
            f32::from_bits(rng.next() as u32),
        ];
        for n in (0..70).chain([256, 1000]) {
            let codes = rng.bytes(n + 3);
            let codes = &codes[3 - n % 4..][..n];
            let portable = simd::get(simd::Level::Portable).unwrap();
            for k in simd::available() {
                for f in [Kernels::e4m3_to_bf16, Kernels::e5m2_to_bf16] {
                    let (mut want, mut got) = (vec![0u8; 2 * n], vec![0u8; 2 * n + 1]);
                    f(portable, codes, &mut want).unwrap();
                    f(k, codes, &mut got[1..]).unwrap();
                    assert_eq!(got[1..], want, "{} n {n}", k.level());
                }
            }
            for &scale in &scales {
                let mut want = vec![0u8; 2 * n];
                portable_e4m3_scaled(codes, scale, &mut want);
                for k in simd::available() {
                    let mut out = vec![0u8; 2 * n + 1];
                    // SAFETY: `k` exists, so this CPU supports its path.
                    unsafe { (k.fns.e4m3_scaled)(codes, scale, &mut out[1..]) };
                    assert_eq!(out[1..], want, "{} n {n} scale {scale:e}", k.level());
                }
            }
        }
    }

    fn case(
        tag: &str,
        rows: usize,
        cols: usize,
        block: (usize, usize),
    ) -> (BlockScaled, Vec<u8>, Vec<u8>, Vec<u16>) {
        let layout = BlockScaled::new(rows, cols, block).unwrap();
        let weight = read(&format!("fp8_block_{tag}.weight"));
        let scale = read(&format!("fp8_block_{tag}.scale_inv"));
        let want = u16s(&read(&format!("fp8_block_{tag}.bf16")));
        assert_eq!(weight.len(), rows * cols);
        assert_eq!(
            scale.len(),
            4 * layout.scale_shape().0 * layout.scale_shape().1
        );
        (layout, weight, scale, want)
    }

    #[test]
    fn block_scaled_matches_torch() {
        for (tag, rows, cols, block) in [
            ("a", 130, 260, BlockScaled::DEEPSEEK_BLOCK),
            ("b", 37, 45, (8, 16)),
        ] {
            let (layout, weight, scale, want) = case(tag, rows, cols, block);
            let x = layout.slice(&weight, 0, &scale).unwrap();
            for k in simd::available() {
                let mut out = vec![0u8; 2 * weight.len() + 1];
                k.fp8_block_le(&x, &mut out[1..]).unwrap();
                assert_bf16_matches(tag, &u16s(&out[1..]), &want, |i| {
                    format!(
                        "{}: r{} c{} code {:#04x}",
                        k.level(),
                        i / cols,
                        i % cols,
                        weight[i]
                    )
                });
            }
        }
    }

    #[test]
    fn block_scaled_ranges_match_whole() {
        let (layout, weight, scale, _) = case("b", 37, 45, (8, 16));
        let n = weight.len();
        let mut whole = vec![0u8; 2 * n];
        layout
            .slice(&weight, 0, &scale)
            .unwrap()
            .dequant_le(&mut whole)
            .unwrap();
        let check = |a: usize, b: usize| {
            for k in simd::available() {
                let mut out = vec![0u8; 2 * (b - a)];
                let x = layout.slice(&weight[a..b], a, &scale).unwrap();
                k.fp8_block_le(&x, &mut out).unwrap();
                assert_eq!(out, whole[2 * a..2 * b], "{} [{a}, {b})", k.level());
            }
        };
        for a in 0..=n {
            check(a, n);
            check(0, a);
            check(a, (a + 1).min(n));
        }
        for a in (0..n).step_by(7) {
            for b in (a..=n).step_by(11) {
                check(a, b);
            }
        }
        // Row ranges of the DeepSeek-sized case.
        let (layout, weight, scale, want) = case("a", 130, 260, BlockScaled::DEEPSEEK_BLOCK);
        for (r0, r1) in [(0, 1), (127, 129), (128, 130), (5, 130)] {
            let (a, b) = (r0 * 260, r1 * 260);
            let mut out = vec![0u8; 2 * (b - a)];
            layout
                .slice(&weight[a..b], a, &scale)
                .unwrap()
                .dequant_le(&mut out)
                .unwrap();
            assert_bf16_matches("rows", &u16s(&out), &want[a..b], |i| i.to_string());
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(BlockScaled::new(4, 4, (0, 128)).is_err());
        assert!(BlockScaled::new(usize::MAX, 2, (128, 128)).is_err());
        let l = BlockScaled::new(3, 5, (2, 2)).unwrap();
        assert_eq!(l.scale_shape(), (2, 3));
        let scale = [0u8; 24];
        let w = [0x38u8; 15];
        let mut out = [0u8; 30];
        let f = |l: &BlockScaled, w: &[u8], first, s: &[u8], o: &mut [u8]| {
            l.slice(w, first, s).and_then(|x| x.dequant_le(o)).is_ok()
        };
        assert!(f(&l, &w, 0, &scale, &mut out));
        assert_eq!(&out[..2], &[0, 0]); // 1.0 * 0.0
        assert!(!f(&l, &w, 1, &scale, &mut out)); // past the end
        assert!(!f(&l, &w, 0, &scale[..20], &mut out));
        assert!(!f(&l, &w, 0, &scale, &mut out[..28]));
        assert!(!f(&l, &w[..0], usize::MAX, &scale, &mut []));
        assert!(f(&l, &w[..0], 15, &scale, &mut []));
        let empty = BlockScaled::new(0, 0, (128, 128)).unwrap();
        assert!(f(&empty, &[], 0, &[], &mut []));
        assert!(e4m3_to_bf16(&[0; 3], &mut [0; 4]).is_err());
    }
}
