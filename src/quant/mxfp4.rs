//! gpt-oss MXFP4 to BF16: FP4 E2M1 values in blocks of 32 sharing one E8M0
//! scale byte (the `*.blocks` / `*.scales` tensor pairs of gpt-oss).
//!
//! A block is 16 bytes holding 32 values; in byte `j` of a block the LOW
//! nibble is value `2j` and the HIGH nibble is value `2j+1`. A nibble indexes
//! [`FP4_E2M1`]; the scale byte `s` multiplies by 2^(s - 127). So value `i`
//! of block `k` is `FP4_E2M1[nibble] * 2^(scales[k] - 127)`.
//!
//! The product is computed exactly and rounded once to BF16, which is what
//! transformers' `_convert_moe_packed_tensors` produces with torch 2.15's
//! eager `torch.ldexp` (exact scaling, not `x * 2.0**e`). Every such product
//! is exactly representable in BF16 except those of magnitude >= 2^128,
//! which become +/-inf; zero nibbles stay +/-0 under every scale, 255
//! included; nothing is NaN. So the whole format is the 256 x 16 [`TABLE`],
//! built at compile time and pinned against transformers bit for bit.
//!
//! Two orientations:
//! - storage order ([`dequant_blocks_le`], [`dequant_range_le`] of a
//!   [`Pair`]): blocks `[.., R, G, 16]` become BF16 `[.., R, G * 32]`;
//! - transposed gpt-oss experts ([`dequant_transposed_le`] of an
//!   [`Expert`]'s [`Transposed`] rows): one expert's blocks `[R, G, 16]`
//!   become BF16 `[G * 32, R]`, the layout transformers holds dense experts
//!   in (`[E, rows, G*32] -> [E, G*32, rows]`); a view asks for any range of
//!   output rows.
//!
//! The source of a kernel is one of those structs, its lengths checked once
//! when it is built ([`Pair::new`], [`Expert::new`], [`Expert::transposed`])
//! and passed by reference down to the path's function pointer; the kernels
//! then only check the output's length.
//!
//! The functions here run the path [`simd::active`] chose; the same methods
//! on a [`Kernels`] run a given path. The portable code below is the
//! reference every SIMD path is tested against.

use super::simd::{self, Kernels};
use super::{KernelError, bf16};

/// Bytes per block.
pub const BLOCK_BYTES: usize = 16;
/// Values per block (and per scale byte).
pub const BLOCK_VALUES: usize = 32;

/// FP4 E2M1 values by nibble (sign bit 3, two exponent bits, one mantissa bit).
pub const FP4_E2M1: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// BF16 bits of `FP4_E2M1[nibble] * 2^(scale - 127)`, rounded to nearest even
/// (only overflow to +/-inf actually rounds).
pub const fn value_bits(scale: u8, nibble: u8) -> u16 {
    // 2^(scale - 127) is a normal f64 for every scale byte, and the product
    // with a 2-significant-bit FP4 value is exact in f64. The cast to f32 is
    // exact too (values are at least 2^-128, a multiple of the f32 subnormal
    // step) or overflows to inf exactly when the product is >= 2^128, where
    // BF16 overflows as well.
    let pow2 = f64::from_bits((scale as u64 + 1023 - 127) << 52);
    let v = FP4_E2M1[(nibble & 15) as usize] as f64 * pow2;
    bf16::from_f32(v as f32)
}

/// The E8M0 scale byte `s` as the f32 `2^(s - 127)`, exactly: 2^-127 (a
/// subnormal) for 0, +inf for 255 (2^128 overflows). Every one of these is
/// also a BF16 (the top half of its bits).
pub const fn e8m0_f32(scale: u8) -> f32 {
    if scale == 0 {
        f32::from_bits(0x0040_0000)
    } else {
        f32::from_bits((scale as u32) << 23)
    }
}

const fn build_table() -> [[u16; 16]; 256] {
    let mut t = [[0u16; 16]; 256];
    let mut s = 0;
    while s < 256 {
        let mut n = 0;
        while n < 16 {
            t[s][n] = value_bits(s as u8, n as u8);
            n += 1;
        }
        s += 1;
    }
    t
}

/// BF16 bits of every (scale byte, nibble) pair: `TABLE[s][n] == value_bits(s, n)`.
pub static TABLE: [[u16; 16]; 256] = build_table();

const fn build_split() -> [[u8; 32]; 256] {
    let mut t = [[0u8; 32]; 256];
    let mut s = 0;
    while s < 256 {
        let mut n = 0;
        while n < 16 {
            let v = value_bits(s as u8, n as u8);
            t[s][n] = v as u8;
            t[s][16 + n] = (v >> 8) as u8;
            n += 1;
        }
        s += 1;
    }
    t
}

/// [`TABLE`] split into bytes for byte shuffles (`pshufb`, `tbl`): row `s`
/// holds the low bytes of `TABLE[s]`, then their high bytes.
pub(crate) static TABLE_SPLIT: [[u8; 32]; 256] = build_split();

/// Scale bytes for which `TABLE[s][n]` is `TABLE[127][n]` with `s - 127`
/// added to its BF16 exponent field whenever `n` is not a zero (`n & 7 != 0`):
/// every non-zero product `FP4[n] * 2^(s - 127)` is then a normal BF16
/// (magnitudes 2^(s-128) to 1.5 * 2^(s-125)), so scaling is exact exponent
/// arithmetic. Below 2 the smallest values are subnormal, above 252 the
/// largest overflow; SIMD paths use the table there. (Tested for every scale.)
pub(crate) const EXPONENT_SCALES: std::ops::RangeInclusive<u8> = 2..=252;

fn check(kernel: &'static str, blocks: &[u8], scales: &[u8]) -> Result<(), KernelError> {
    let expected = scales.len().checked_mul(BLOCK_BYTES);
    if expected != Some(blocks.len()) {
        return Err(KernelError::Length {
            kernel,
            what: "blocks",
            got: blocks.len(),
            expected: expected.unwrap_or(usize::MAX),
        });
    }
    Ok(())
}

fn check_out(
    kernel: &'static str,
    got: usize,
    pair: &Pair,
    width: usize,
) -> Result<(), KernelError> {
    let expected = pair.len().checked_mul(BLOCK_VALUES * width);
    if expected != Some(got) {
        return Err(KernelError::Length {
            kernel,
            what: "output",
            got,
            expected: expected.unwrap_or(usize::MAX),
        });
    }
    Ok(())
}

/// An MXFP4 tensor in storage order, its lengths checked: `blocks` holds 16
/// bytes per byte of `scales` (`[.., G, 16]` and `[.., G]`, value `i` in
/// block `i / 32`). The argument of the storage-order kernels
/// ([`dequant_blocks_le`], [`dequant_range_le`], `wide::mxfp4_to_f32`):
/// built once by [`Pair::new`], then passed by reference down to the
/// kernels, which rely on its lengths.
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    blocks: &'a [u8],
    scales: &'a [u8],
}

impl<'a> Pair<'a> {
    /// The pair of `blocks` and `scales`, if `blocks.len() == 16 * scales.len()`.
    pub fn new(blocks: &'a [u8], scales: &'a [u8]) -> Result<Self, KernelError> {
        check("mxfp4::Pair", blocks, scales)?;
        Ok(Pair { blocks, scales })
    }

    /// The block bytes, 16 per block.
    #[inline]
    pub fn blocks(&self) -> &'a [u8] {
        self.blocks
    }

    /// The scale bytes, one per block.
    #[inline]
    pub fn scales(&self) -> &'a [u8] {
        self.scales
    }

    /// The number of blocks.
    #[inline]
    pub fn len(&self) -> usize {
        self.scales.len()
    }

    /// Whether the pair has no blocks.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    /// The number of values, 32 per block.
    #[inline]
    pub fn values(&self) -> usize {
        self.len().saturating_mul(BLOCK_VALUES)
    }

    /// Blocks `range` of the pair (panics past its end, as slicing does).
    fn sub(&self, range: std::ops::Range<usize>) -> Pair<'a> {
        Pair {
            blocks: &self.blocks[range.start * BLOCK_BYTES..range.end * BLOCK_BYTES],
            scales: &self.scales[range],
        }
    }
}

/// One gpt-oss expert's MXFP4 pair with its shape, the lengths checked:
/// `blocks` `[rows, groups, 16]` and `scales` `[rows, groups]`. Built once
/// by [`Expert::new`]; [`Expert::transposed`] then picks the output rows a
/// transposed kernel computes.
#[derive(Debug, Clone, Copy)]
pub struct Expert<'a> {
    blocks: &'a [u8],
    scales: &'a [u8],
    rows: usize,
    groups: usize,
}

impl<'a> Expert<'a> {
    /// The expert of `rows` source rows of `groups` blocks each, if
    /// `scales.len() == rows * groups` and `blocks.len() == 16 * scales.len()`.
    pub fn new(
        blocks: &'a [u8],
        scales: &'a [u8],
        rows: usize,
        groups: usize,
    ) -> Result<Self, KernelError> {
        const K: &str = "mxfp4::Expert";
        let n = rows.checked_mul(groups);
        if n != Some(scales.len()) {
            return Err(KernelError::Length {
                kernel: K,
                what: "scales",
                got: scales.len(),
                expected: n.unwrap_or(usize::MAX),
            });
        }
        check(K, blocks, scales)?;
        Ok(Expert {
            blocks,
            scales,
            rows,
            groups,
        })
    }

    /// The block bytes, `[rows, groups, 16]`.
    #[inline]
    pub fn blocks(&self) -> &'a [u8] {
        self.blocks
    }

    /// The scale bytes, `[rows, groups]`.
    #[inline]
    pub fn scales(&self) -> &'a [u8] {
        self.scales
    }

    /// Source rows.
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Blocks per source row.
    #[inline]
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Values per source row, `groups * 32`: the number of rows of the
    /// transposed output.
    #[inline]
    pub fn cols(&self) -> usize {
        self.groups.saturating_mul(BLOCK_VALUES)
    }

    /// Output rows `out_rows` of this expert transposed, if
    /// `out_rows.start <= out_rows.end <= self.cols()`.
    pub fn transposed(
        self,
        out_rows: std::ops::Range<usize>,
    ) -> Result<Transposed<'a>, KernelError> {
        let (c0, c1) = (out_rows.start, out_rows.end);
        let cols = self.cols();
        if c0 > c1 || c1 > cols {
            return Err(KernelError::Shape {
                kernel: "mxfp4::Expert::transposed",
                why: format!("output rows [{c0}, {c1}) are not within the {cols} rows"),
            });
        }
        Ok(Transposed {
            expert: self,
            c0,
            c1,
        })
    }
}

/// Output rows `c0..c1` of one gpt-oss expert, dequantized and transposed
/// as transformers holds it: output row `c` (one per value column,
/// `c < groups * 32`) holds value `c % 32` of block `(j, c / 32)` for every
/// source row `j`, so value `((c - c0) * rows + j)` of the output. The
/// argument of the transposed kernels ([`dequant_transposed_le`],
/// `wide::mxfp4_transposed_to_f32`), checked by [`Expert::transposed`]
/// (`c0 <= c1 <= groups * 32`) and passed by reference down to them.
#[derive(Debug, Clone, Copy)]
pub struct Transposed<'a> {
    expert: Expert<'a>,
    c0: usize,
    c1: usize,
}

impl<'a> Transposed<'a> {
    /// The expert.
    #[inline]
    pub fn expert(&self) -> &Expert<'a> {
        &self.expert
    }

    /// The output rows `c0..c1`.
    #[inline]
    pub fn out_rows(&self) -> std::ops::Range<usize> {
        self.c0..self.c1
    }

    /// The number of output values, `(c1 - c0) * rows`.
    #[inline]
    pub fn len(&self) -> usize {
        // (c1 - c0) * rows <= blocks.len() * 2 (c1 <= groups * 32): no
        // overflow.
        (self.c1 - self.c0) * self.expert.rows
    }

    /// Whether there are no output values.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value columns `k0..k1` of block column `gi` that are output rows.
    #[inline]
    pub(crate) fn ks(&self, gi: usize) -> (usize, usize) {
        (
            self.c0.max(gi * 32) - gi * 32,
            self.c1.min(gi * 32 + 32) - gi * 32,
        )
    }

    /// Byte offset in the BF16 output of output row `gi * 32 + k`, source
    /// row `j`.
    #[inline]
    pub(crate) fn at(&self, gi: usize, k: usize, j: usize) -> usize {
        ((gi * 32 + k - self.c0) * self.expert.rows + j) * 2
    }
}

/// Dequantize whole blocks to BF16 values: `out.len() == 32 * pair.len()`.
/// (Portable code: views use the byte forms below, which run the SIMD
/// paths.)
pub fn dequant_blocks(pair: &Pair, out: &mut [u16]) -> Result<(), KernelError> {
    check_out("mxfp4::dequant_blocks", out.len(), pair, 1)?;
    for ((blk, &s), o) in pair
        .blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(pair.scales)
        .zip(out.chunks_exact_mut(BLOCK_VALUES))
    {
        let t = &TABLE[s as usize];
        for (pair, &b) in o.chunks_exact_mut(2).zip(blk) {
            pair[0] = t[(b & 15) as usize];
            pair[1] = t[(b >> 4) as usize];
        }
    }
    Ok(())
}

/// Dequantize whole blocks to BF16 little-endian bytes:
/// `out.len() == 64 * pair.len()`.
pub fn dequant_blocks_le(pair: &Pair, out: &mut [u8]) -> Result<(), KernelError> {
    simd::active().mxfp4_blocks_le(pair, out)
}

/// The portable whole-block kernel (output length checked by the caller).
pub(crate) fn portable_blocks(pair: &Pair, out: &mut [u8]) {
    for ((blk, &s), o) in pair
        .blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(pair.scales)
        .zip(out.chunks_exact_mut(2 * BLOCK_VALUES))
    {
        let t = &TABLE[s as usize];
        for (quad, &b) in o.chunks_exact_mut(4).zip(blk) {
            let [l0, l1] = t[(b & 15) as usize].to_le_bytes();
            let [h0, h1] = t[(b >> 4) as usize].to_le_bytes();
            quad.copy_from_slice(&[l0, l1, h0, h1]);
        }
    }
}

/// Dequantize the values `first .. first + out.len() / 2` of the flattened
/// tensor (value `i` is in block `i / 32`) to BF16 little-endian bytes.
/// `pair` is the whole tensor (or a whole-block prefix of it; `first`
/// counts from its start), so a caller can serve an arbitrary value range
/// of a non-transposed view without decoding the blocks around it.
pub fn dequant_range_le(pair: &Pair, first: usize, out: &mut [u8]) -> Result<(), KernelError> {
    simd::active().mxfp4_range_le(pair, first, out)
}

/// The output rows `x` of one gpt-oss expert (see [`Transposed`]) as BF16
/// little-endian: output row `c`, source row `j` at
/// `out[((c - c0) * rows + j) * 2 ..]`. `out.len()` must be `2 * x.len()`.
pub fn dequant_transposed_le(x: &Transposed, out: &mut [u8]) -> Result<(), KernelError> {
    simd::active().mxfp4_transposed_le(x, out)
}

impl Kernels {
    /// [`dequant_blocks_le`] on this path.
    pub fn mxfp4_blocks_le(&self, pair: &Pair, out: &mut [u8]) -> Result<(), KernelError> {
        check_out("mxfp4::dequant_blocks_le", out.len(), pair, 2)?;
        // SAFETY: a `Kernels` exists only for a path this CPU supports.
        unsafe { (self.fns.mxfp4_blocks)(pair, out) };
        Ok(())
    }

    /// [`dequant_range_le`] on this path.
    pub fn mxfp4_range_le(
        &self,
        pair: &Pair,
        first: usize,
        out: &mut [u8],
    ) -> Result<(), KernelError> {
        const K: &str = "mxfp4::dequant_range_le";
        if !out.len().is_multiple_of(2) {
            return Err(KernelError::Length {
                kernel: K,
                what: "output",
                got: out.len(),
                expected: out.len() - 1,
            });
        }
        let n = out.len() / 2;
        let total = pair.values();
        let end = match first.checked_add(n) {
            Some(end) if end <= total => end,
            _ => {
                return Err(KernelError::Shape {
                    kernel: K,
                    why: format!(
                        "values [{first}, {first} + {n}) exceed the {total} values of the blocks"
                    ),
                });
            }
        };
        // Ragged head and tail one value at a time, whole blocks in between.
        let head_end = first
            .checked_next_multiple_of(BLOCK_VALUES)
            .map_or(end, |h| h.min(end));
        let body_end = head_end.max(end - end % BLOCK_VALUES);
        let (blocks, scales) = (pair.blocks, pair.scales);
        let one = |i: usize| -> [u8; 2] {
            let b = blocks[i / 2];
            let nibble = (b >> ((i & 1) * 4)) & 15;
            TABLE[scales[i / BLOCK_VALUES] as usize][nibble as usize].to_le_bytes()
        };
        let (head, rest) = out.split_at_mut(2 * (head_end - first));
        for (d, i) in head.chunks_exact_mut(2).zip(first..head_end) {
            d.copy_from_slice(&one(i));
        }
        let (body, tail) = rest.split_at_mut(2 * (body_end - head_end));
        let (b0, b1) = (head_end / BLOCK_VALUES, body_end / BLOCK_VALUES);
        self.mxfp4_blocks_le(&pair.sub(b0..b1), body)?;
        for (d, i) in tail.chunks_exact_mut(2).zip(body_end..end) {
            d.copy_from_slice(&one(i));
        }
        Ok(())
    }

    /// [`dequant_transposed_le`] on this path.
    pub fn mxfp4_transposed_le(&self, x: &Transposed, out: &mut [u8]) -> Result<(), KernelError> {
        let expected = x.len() * 2;
        if out.len() != expected {
            return Err(KernelError::Length {
                kernel: "mxfp4::dequant_transposed_le",
                what: "output",
                got: out.len(),
                expected,
            });
        }
        if x.is_empty() {
            return Ok(());
        }
        // SAFETY: a `Kernels` exists only for a path this CPU supports.
        unsafe { (self.fns.mxfp4_transposed)(x, out) };
        Ok(())
    }
}

/// Source rows per tile of the transposed kernels.
pub(crate) const TILE_ROWS: usize = 32;

/// The portable transposed kernel (`x` not empty, `out` its length: see
/// `simd::Fns`).
///
/// Works in tiles of 32 source rows x one block column: the tile is decoded
/// in its natural order into a 2 KiB buffer, then written out transposed,
/// 32 consecutive values (one cache line) per output row, instead of one
/// scattered 2-byte store per value. Block column outer: the 32 output rows
/// of a column are written front to back, and the column's blocks (one per
/// source row, 16 bytes at a stride of `groups * 16`) stay in L2 for the next
/// column's pass.
pub(crate) fn portable_transposed(x: &Transposed, out: &mut [u8]) {
    let r = x.expert.rows;
    let mut tile = [[0u16; 32]; TILE_ROWS];
    for gi in x.c0 / 32..=(x.c1 - 1) / 32 {
        for j0 in (0..r).step_by(TILE_ROWS) {
            transposed_tile(x, gi, j0, TILE_ROWS.min(r - j0), &mut tile, out);
        }
    }
}

/// Source rows `j0 .. j0 + jn` (`jn <= 32`) of block column `gi`, by table
/// lookups: the portable kernel's unit, and the SIMD paths' for the tiles
/// they do not handle.
#[inline]
pub(crate) fn transposed_tile(
    x: &Transposed,
    gi: usize,
    j0: usize,
    jn: usize,
    tile: &mut [[u16; 32]; TILE_ROWS],
    out: &mut [u8],
) {
    let (blocks, g) = (x.expert.blocks, x.expert.groups);
    for (jj, row) in tile.iter_mut().enumerate().take(jn) {
        let at = (j0 + jj) * g + gi;
        prefetch(blocks, (at + PREFETCH_ROWS * g) * 16);
        let t = &TABLE[x.expert.scales[at] as usize];
        let blk = &blocks[at * 16..at * 16 + 16];
        for (pair, &b) in row.chunks_exact_mut(2).zip(blk) {
            pair[0] = t[(b & 15) as usize];
            pair[1] = t[(b >> 4) as usize];
        }
    }
    let (k0, k1) = x.ks(gi);
    for k in k0..k1 {
        let o = x.at(gi, k, j0);
        let dst = &mut out[o..o + jn * 2];
        for (d, row) in dst.chunks_exact_mut(2).zip(tile.iter()) {
            d.copy_from_slice(&row[k].to_le_bytes());
        }
    }
}

/// How the SIMD paths walk a transposed call: per block column, a head of
/// `lead` source rows, then full 32-row tiles, then a tail. When `r` is a
/// multiple of 32 every output row starts at the same address modulo 64,
/// and `lead` is chosen so that the full tiles' 64-byte output pieces are
/// cache-line aligned (unaligned ones straddle two lines: measured 10-40%
/// slower). `full(x, gi, j0, out)` computes a full tile, or returns `false`
/// to leave it to [`transposed_tile`]; heads and tails always go there.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
#[inline]
pub(crate) fn walk_tiles(
    x: &Transposed,
    out: &mut [u8],
    mut full: impl FnMut(&Transposed, usize, usize, &mut [u8]) -> bool,
) {
    let r = x.expert.rows;
    let addr = out.as_ptr() as usize;
    let lead = if r.is_multiple_of(32) && addr.is_multiple_of(2) {
        ((64 - addr % 64) % 64 / 2).min(r)
    } else {
        0
    };
    let mut tile = [[0u16; 32]; TILE_ROWS];
    for gi in x.c0 / 32..=(x.c1 - 1) / 32 {
        if lead > 0 {
            transposed_tile(x, gi, 0, lead, &mut tile, out);
        }
        let mut j0 = lead;
        while j0 < r {
            let jn = TILE_ROWS.min(r - j0);
            if jn < TILE_ROWS || !full(x, gi, j0, out) {
                transposed_tile(x, gi, j0, jn, &mut tile, out);
            }
            j0 += jn;
        }
    }
}

/// Exponent-field deltas `(s - 127) << 7` of the scales of the 32 source
/// rows `j0..` of block column `gi`, or `None` if a scale is outside
/// [`EXPONENT_SCALES`] (the SIMD paths' full tiles).
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
#[inline]
pub(crate) fn tile_deltas(scales: &[u8], g: usize, gi: usize, j0: usize) -> Option<[i16; 32]> {
    let mut delta = [0i16; 32];
    let mut ok = true;
    for (jj, d) in delta.iter_mut().enumerate() {
        let s = scales[(j0 + jj) * g + gi];
        ok &= EXPONENT_SCALES.contains(&s);
        *d = (s as i16 - 127) << 7;
    }
    ok.then_some(delta)
}

/// Source rows to prefetch ahead in the transposed kernels: consecutive
/// rows' blocks are `groups * 16` bytes apart, a page apart every few rows,
/// where hardware prefetchers stop.
pub(crate) const PREFETCH_ROWS: usize = 32;

/// Hint that `data[at]` will be read soon (no-op past the end, or off x86-64).
#[inline(always)]
pub(crate) fn prefetch(data: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(p) = data.get(at) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE is part of the x86-64 baseline, and a prefetch only
        // hints the cache; `p` points into `data` in any case.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const u8 as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::golden::{Rng, assert_bf16_matches, read, u16s};

    fn golden_table() -> Vec<u16> {
        let t = u16s(&read("mxfp4_table.bf16"));
        assert_eq!(t.len(), 256 * 16);
        t
    }

    /// Value `i` of a storage-order tensor, from the golden table.
    fn golden_value(table: &[u16], blocks: &[u8], scales: &[u8], i: usize) -> u16 {
        let nibble = (blocks[i / 2] >> (4 * (i % 2))) & 15;
        table[scales[i / BLOCK_VALUES] as usize * 16 + nibble as usize]
    }

    /// One block per scale byte, each holding every nibble as a low and as a
    /// high nibble (bytes 0x00, 0x11, .., 0xFF, rotated per scale).
    fn every_scale_and_nibble() -> (Vec<u8>, Vec<u8>) {
        let scales: Vec<u8> = (0..=255).collect();
        let blocks = scales
            .iter()
            .flat_map(|&s| (0..16u8).map(move |i| i.wrapping_add(s).wrapping_mul(0x11) ^ (i & 1)))
            .collect();
        (blocks, scales)
    }

    #[test]
    fn every_path_matches_the_golden_table() {
        let table = golden_table();
        let (blocks, scales) = every_scale_and_nibble();
        let pair = Pair::new(&blocks, &scales).unwrap();
        for k in simd::available() {
            let mut out = vec![0u8; 64 * 256 + 1];
            k.mxfp4_blocks_le(&pair, &mut out[1..]).unwrap();
            let got = u16s(&out[1..]);
            for (i, &v) in got.iter().enumerate() {
                let want = golden_value(&table, &blocks, &scales, i);
                assert_eq!(v, want, "{} value {i} (scale {})", k.level(), i / 32);
            }
        }
    }

    #[test]
    fn exponent_arithmetic_is_exact_where_used() {
        for s in 0..=255u8 {
            let exact = (0..16).all(|n| {
                let base = TABLE[127][n];
                let scaled = if n & 7 == 0 {
                    base
                } else {
                    base.wrapping_add(((s as i16 - 127) << 7) as u16)
                };
                TABLE[s as usize][n] == scaled
            });
            assert_eq!(exact, EXPONENT_SCALES.contains(&s), "scale {s}");
        }
    }

    #[test]
    fn every_path_equals_portable_on_random_blocks() {
        let mut rng = Rng(3);
        let portable = simd::get(simd::Level::Portable).unwrap();
        for n in 0..40 {
            let blocks = rng.bytes(16 * n);
            let scales = rng.bytes(n);
            let mut want = vec![0u8; 64 * n];
            let pair = Pair::new(&blocks, &scales).unwrap();
            portable.mxfp4_blocks_le(&pair, &mut want).unwrap();
            for k in simd::available() {
                let mut out = vec![0u8; 64 * n + 3];
                k.mxfp4_blocks_le(&pair, &mut out[3..]).unwrap();
                assert_eq!(out[3..], want, "{} n {n}", k.level());
                for (a, b) in [(0, 32 * n), (n, 32 * n - n.min(32 * n)), (7, 7)] {
                    let b = b.max(a).min(32 * n);
                    let a = a.min(b);
                    let mut out = vec![0u8; 2 * (b - a) + 1];
                    k.mxfp4_range_le(&pair, a, &mut out[1..]).unwrap();
                    assert_eq!(out[1..], want[2 * a..2 * b], "{} [{a}, {b})", k.level());
                }
            }
        }
    }

    /// Transposed output `[c0..c1, rows]` of one expert, value by value from
    /// the golden table.
    fn golden_transposed(
        table: &[u16],
        blocks: &[u8],
        scales: &[u8],
        (r, g): (usize, usize),
        (c0, c1): (usize, usize),
    ) -> Vec<u16> {
        let mut out = Vec::with_capacity((c1 - c0) * r);
        for c in c0..c1 {
            for j in 0..r {
                out.push(golden_value(table, blocks, scales, j * g * 32 + c));
            }
        }
        out
    }

    /// Every path's transposed kernel against the golden table: every scale
    /// byte and nibble, tiles the SIMD paths compute by exponent arithmetic
    /// (all scales in range) and tiles they leave to the table (some scale
    /// out of range, or fewer than 32 rows), all output-row ranges.
    #[test]
    fn transposed_matches_the_golden_table_on_every_path() {
        let table = golden_table();
        let mut rng = Rng(11);
        for (r, g, scale_of) in [
            (
                103usize,
                3usize,
                (|j: usize, gi: usize| ((j * 7 + gi) % 251 + 2) as u8) as fn(usize, usize) -> u8,
            ),
            (103, 3, |j, gi| ((j * 3 + gi * 101 + 7) % 256) as u8),
            (256, 1, |j, _| j as u8),
            (64, 2, |j, gi| if j < 32 { 1 + 252 * gi as u8 } else { 127 }),
            (31, 2, |j, _| (j * 8) as u8),
        ] {
            let blocks = rng.bytes(r * g * 16);
            let scales: Vec<u8> = (0..r * g).map(|i| scale_of(i / g, i % g)).collect();
            let cols = g * 32;
            for (c0, c1) in [
                (0, cols),
                (5, 40.min(cols)),
                (31, 33.min(cols)),
                (cols - 1, cols),
                (3, 3),
            ] {
                let want = golden_transposed(&table, &blocks, &scales, (r, g), (c0, c1));
                let x = Expert::new(&blocks, &scales, r, g)
                    .unwrap()
                    .transposed(c0..c1)
                    .unwrap();
                // Output offsets: odd, and every even phase within a cache
                // line class that the SIMD paths align their stores to.
                for k in simd::available() {
                    for at in [1, 0, 2, 34, 62] {
                        let mut buf = vec![0u8; 2 * want.len() + 128];
                        let skip = (64 - buf.as_ptr() as usize % 64) % 64 + at;
                        let out = &mut buf[skip..skip + 2 * want.len()];
                        k.mxfp4_transposed_le(&x, out).unwrap();
                        assert_eq!(
                            u16s(out),
                            want,
                            "{} r {r} g {g} [{c0}, {c1}) at {at}",
                            k.level()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn transposed_every_path_equals_portable_on_random_experts() {
        let mut rng = Rng(5);
        let portable = simd::get(simd::Level::Portable).unwrap();
        for round in 0..400 {
            // Every other expert has a multiple of 32 rows, as gpt-oss has.
            let r = if round % 2 == 0 {
                32 * (1 + (rng.next() % 4) as usize)
            } else {
                1 + (rng.next() % 100) as usize
            };
            let g = 1 + (rng.next() % 4) as usize;
            let blocks = rng.bytes(r * g * 16);
            let wild = rng.next().is_multiple_of(3);
            let scales: Vec<u8> = (0..r * g)
                .map(|_| {
                    let x = rng.next();
                    if wild && x.is_multiple_of(50) {
                        x as u8
                    } else {
                        100 + (x % 40) as u8
                    }
                })
                .collect();
            let cols = g * 32;
            let c0 = (rng.next() as usize) % cols;
            let c1 = c0 + 1 + (rng.next() as usize) % (cols - c0);
            let x = Expert::new(&blocks, &scales, r, g)
                .unwrap()
                .transposed(c0..c1)
                .unwrap();
            let mut want = vec![0u8; 2 * r * (c1 - c0)];
            portable.mxfp4_transposed_le(&x, &mut want).unwrap();
            let at = (rng.next() % 64) as usize;
            for k in simd::available() {
                let mut out = vec![0u8; want.len() + 64];
                let out = &mut out[at..at + want.len()];
                k.mxfp4_transposed_le(&x, out).unwrap();
                assert_eq!(
                    *out,
                    want[..],
                    "{} r {r} g {g} [{c0}, {c1}) at {at}",
                    k.level()
                );
            }
        }
    }

    #[test]
    fn transposed_bad_arguments_are_errors() {
        let blocks = [0u8; 3 * 2 * 16];
        let scales = [127u8; 6];
        let mut out = vec![0u8; 2 * 3 * 64];
        for k in simd::available() {
            let f = |b: &[u8], s: &[u8], r, g, c0, c1, o: &mut [u8]| {
                Expert::new(b, s, r, g)
                    .and_then(|e| e.transposed(c0..c1))
                    .and_then(|x| k.mxfp4_transposed_le(&x, o))
                    .is_ok()
            };
            assert!(f(&blocks, &scales, 3, 2, 0, 64, &mut out));
            assert!(!f(&blocks, &scales, 3, 2, 0, 64, &mut out[1..]));
            assert!(!f(&blocks, &scales, 2, 2, 0, 64, &mut out));
            assert!(!f(&blocks[1..], &scales, 3, 2, 0, 64, &mut out));
            assert!(!f(&blocks, &scales, 3, 2, 0, 65, &mut out));
            assert!(!f(&blocks, &scales, 3, 2, 9, 8, &mut []));
            assert!(!f(&blocks, &scales, usize::MAX, 2, 0, 1, &mut out));
            assert!(f(&blocks, &scales, 3, 2, 8, 8, &mut []));
            assert!(f(&[], &[], 0, 5, 0, 160, &mut []));
        }
    }

    #[test]
    fn table_matches_transformers() {
        let want = u16s(&read("mxfp4_table.bf16"));
        let got: Vec<u16> = TABLE.iter().flatten().copied().collect();
        assert_eq!(want.len(), 256 * 16);
        // No NaN anywhere, so this is plain equality.
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "scale {} nibble {}", i / 16, i % 16);
        }
        assert_eq!(TABLE[127][2], 0x3F80); // 1.0 * 2^0
        assert_eq!(TABLE[0][1], 0x0020); // 0.5 * 2^-127 = 2^-128, a BF16 subnormal
        assert_eq!(TABLE[255][1], 0x7F00); // 0.5 * 2^128 = 2^127, finite
        assert_eq!(TABLE[255][2], 0x7F80); // 2^128 overflows
        assert_eq!(TABLE[255][0], 0x0000); // 0 * 2^128 = 0, not NaN
        assert_eq!(TABLE[255][8], 0x8000);
        assert_eq!(TABLE[254][5], 0x7F80); // 3 * 2^127 overflows
        assert_eq!(TABLE[254][3], 0x7F40); // 1.5 * 2^127
    }

    /// The transformers layout example: blocks [E=2, rows=3, G=2, 16],
    /// scales [2, 3, 2], output [E, G*32, rows] (transposed).
    #[test]
    fn layout_example_matches_transformers() {
        let blocks = read("mxfp4_layout.blocks");
        let scales = read("mxfp4_layout.scales");
        let want = u16s(&read("mxfp4_layout.bf16"));
        let (e, rows, g) = (2, 3, 2);
        let pair = Pair::new(&blocks, &scales).unwrap();
        let mut flat = vec![0u16; e * rows * g * BLOCK_VALUES];
        dequant_blocks(&pair, &mut flat).unwrap();
        // flat is [E, rows, G*32]; transformers returns its transpose.
        let inn = g * BLOCK_VALUES;
        let mut transposed = vec![0u16; flat.len()];
        for ei in 0..e {
            for r in 0..rows {
                for k in 0..inn {
                    transposed[(ei * inn + k) * rows + r] = flat[(ei * rows + r) * inn + k];
                }
            }
        }
        assert_bf16_matches("layout", &transposed, &want, |i| i.to_string());
        for k in simd::available() {
            let n = rows * g;
            for ei in 0..e {
                let mut out = vec![0u8; 2 * n * BLOCK_VALUES + 1];
                let x = Expert::new(
                    &blocks[ei * n * 16..(ei + 1) * n * 16],
                    &scales[ei * n..(ei + 1) * n],
                    rows,
                    g,
                )
                .unwrap()
                .transposed(0..inn)
                .unwrap();
                k.mxfp4_transposed_le(&x, &mut out[1..]).unwrap();
                let span = ei * n * BLOCK_VALUES..(ei + 1) * n * BLOCK_VALUES;
                assert_bf16_matches(k.level().name(), &u16s(&out[1..]), &want[span], |i| {
                    i.to_string()
                });
            }
        }

        let mut le = vec![0u8; 2 * flat.len() + 1];
        dequant_blocks_le(&pair, &mut le[1..]).unwrap();
        assert_eq!(u16s(&le[1..]), flat);
    }

    #[test]
    fn ranges_agree_with_whole_blocks() {
        // 5 blocks with pseudo-random bytes and scales.
        let blocks: Vec<u8> = (0..80u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let scales = [120u8, 127, 0, 255, 131];
        let pair = Pair::new(&blocks, &scales).unwrap();
        let mut whole = vec![0u8; 5 * 64];
        dequant_blocks_le(&pair, &mut whole).unwrap();
        for k in simd::available() {
            for a in 0..=160 {
                for b in a..=160 {
                    let mut out = vec![0u8; 2 * (b - a) + 1];
                    k.mxfp4_range_le(&pair, a, &mut out[1..]).unwrap();
                    assert_eq!(out[1..], whole[2 * a..2 * b], "{} [{a}, {b})", k.level());
                }
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let blocks = [0u8; 32];
        let scales = [127u8; 2];
        assert!(Pair::new(&blocks, &scales[..1]).is_err());
        assert!(Pair::new(&blocks[1..], &scales).is_err());
        let pair = Pair::new(&blocks, &scales).unwrap();
        assert!(dequant_blocks(&pair, &mut [0u16; 63]).is_err());
        assert!(dequant_blocks_le(&pair, &mut [0u8; 127]).is_err());
        assert!(dequant_range_le(&pair, 60, &mut [0u8; 10]).is_err());
        assert!(dequant_range_le(&pair, usize::MAX, &mut [0u8; 2]).is_err());
        assert!(dequant_range_le(&pair, 0, &mut [0u8; 3]).is_err());
        assert!(dequant_range_le(&pair, 64, &mut []).is_ok());
        assert!(dequant_blocks(&Pair::new(&[], &[]).unwrap(), &mut []).is_ok());
    }
}
