//! The bytes of a GGUF tensor, computed on read: float32 values made from
//! the Hugging Face folder view's tensors (each in float32: exact for every
//! float source) by the tensor's transform, then written in its type one
//! row at a time ([`Encoded`]), so a partial read computes only its rows.
//! Raw tensors skip the floats: gpt-oss's MXFP4 experts are their stored
//! blocks and scales repacked to ggml MXFP4 ([`Mxfp4Repack`]), a byte
//! shuffle of only the rows a read asks for.

use std::sync::Arc;

use crate::catalog::{Extent, Files};
use crate::dtype::Dtype;
use crate::error::ReadError;
use crate::quant::float::f16_to_f32;
use crate::quant::ggml::GgmlType;
use crate::quant::ggml_encode::{self, Floats};
use crate::quant::ggml_quantize;
use crate::quant::wide::f16_from_f32;
use crate::view::compute::{
    ConcatOf, Memory, RowsPermuted, SourceBytes, TransposeOf, Window, by_units, units_at,
};
use crate::view::gguf::tensors::{Raw, Values};
use crate::view::hf::HfView;
use crate::view::{Compute, Segment};

/// The float32 values (little-endian bytes) of `v`, from the tensors of
/// `hf` (a Hugging Face folder view).
pub fn values(catalog: &crate::catalog::Catalog, hf: &HfView, v: &Values) -> Arc<dyn Compute> {
    let f32_of = |i: u32| -> Arc<dyn Compute> {
        joined(hf.plans[i as usize].entry(catalog, Dtype::F32).data)
    };
    let shape = |i: u32| {
        hf.plans[i as usize]
            .info(catalog, Dtype::F32)
            .1
            .into_owned()
    };
    match v {
        Values::PlusOne { hf: i, f16 } => Arc::new(PlusOne {
            inner: f32_of(*i),
            f16: *f16,
        }),
        Values::Generated(vals) => {
            let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            Arc::new(Memory(bytes.into()))
        }
        _ => moves(v, f32_of, shape, 4).expect("every other transform moves values"),
    }
}

/// A transform that only moves values (every one but [`Values::PlusOne`]
/// and [`Values::Generated`], which give `None`), of `elem`-byte values:
/// `of(i)` the bytes of Hugging Face tensor `i`, `shape(i)` its shape.
fn moves(
    v: &Values,
    of: impl Fn(u32) -> Arc<dyn Compute>,
    shape: impl Fn(u32) -> Vec<u64>,
    elem: u64,
) -> Option<Arc<dyn Compute>> {
    Some(match *v {
        Values::Hf(i) => of(i),
        Values::Permuted { hf: i, n_head } => {
            let s = shape(i);
            Arc::new(RowsPermuted {
                inner: of(i),
                rows: s.first().copied().unwrap_or(1),
                row_bytes: s.iter().skip(1).product::<u64>() * elem,
                n_head,
                forward: true,
            })
        }
        Values::Transposed(i) => {
            let (batch, rows, cols) = matrices(&shape(i));
            Arc::new(TransposeOf {
                inner: of(i),
                batch,
                rows,
                cols,
                elem,
            })
        }
        Values::Strided {
            hf: i,
            first,
            step,
            transposed,
        } => {
            let s = shape(i);
            let (batch, rows, cols) = if transposed {
                matrices(&s)
            } else {
                let cols = s.last().copied().unwrap_or(1);
                (s.iter().product::<u64>() / cols.max(1), 1, cols)
            };
            Arc::new(StridedTranspose {
                inner: of(i),
                batch,
                rows,
                cols,
                first,
                step,
                elem,
            })
        }
        Values::Stacked(ref ids) => Arc::new(ConcatOf {
            parts: ids
                .iter()
                .map(|&i| {
                    let c = of(i);
                    let n = c.len();
                    (c, n)
                })
                .collect(),
            outer: 1,
        }),
        Values::Rows {
            hf: i,
            start,
            count,
        } => rows(of(i), &shape(i), start, count, elem),
        Values::PlusOne { .. } | Values::Generated(_) => return None,
    })
}

/// A shape as matrices `(batch, rows, cols)`: its last two axes, the rest
/// multiplied into `batch` (a 1-D shape is one row).
fn matrices(s: &[u64]) -> (u64, u64, u64) {
    match s {
        [] => (1, 1, 1),
        [c] => (1, 1, *c),
        [lead @ .., r, c] => (lead.iter().product(), *r, *c),
    }
}

/// The bytes of a raw tensor, from the tensors of `hf`.
pub fn raw(catalog: &crate::catalog::Catalog, hf: &HfView, r: &Raw) -> Arc<dyn Compute> {
    match *r {
        Raw::Mxfp4 { hf: i, first, step } => {
            let (blocks, scales, _) = hf.plans[i as usize]
                .mxfp4()
                .expect("an MXFP4 raw tensor is made of an MXFP4 pair");
            let (b, s) = (catalog.tensor(blocks), catalog.tensor(scales));
            Arc::new(Mxfp4Repack {
                blocks: b.extent,
                scales: s.extent,
                experts: b.shape[0],
                rows: b.shape[1],
                groups: b.shape[2],
                first,
                step,
            })
        }
    }
}

/// The bytes of `v` in `dtype` (F32, F16 or BF16) without going through
/// float32, when that gives the same bytes: every tensor it reads is stored
/// in `dtype` and passed through by the folder view, and the transform only
/// moves values (a permutation, a stack, a transpose, a run of rows, a
/// strided split). `None` otherwise. (BF16 to BF16 this keeps a signaling
/// NaN as it is, where the converter, through float32, makes it quiet.)
pub fn moved(
    catalog: &crate::catalog::Catalog,
    hf: &HfView,
    v: &Values,
    dtype: Dtype,
) -> Option<Arc<dyn Compute>> {
    let lossless = |i: u32| {
        let p = &hf.plans[i as usize];
        p.is_elementwise() && p.source_dtype(catalog) == Some(dtype)
    };
    if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) || !v.reads().all(lossless) {
        return None;
    }
    moves(
        v,
        |i| joined(hf.plans[i as usize].entry(catalog, dtype).data),
        |i| hf.plans[i as usize].info(catalog, dtype).1.into_owned(),
        dtype.bits() / 8,
    )
}

/// Rows `start..start + count` of every matrix (the last two axes) of the
/// tensor `inner` of `shape` (`elem`-byte values); of axis 0 for 1-D and
/// 2-D tensors.
fn rows(
    inner: Arc<dyn Compute>,
    shape: &[u64],
    start: u64,
    count: u64,
    elem: u64,
) -> Arc<dyn Compute> {
    if shape.len() < 3 {
        let row = shape.iter().skip(1).product::<u64>() * elem;
        return Arc::new(Window {
            inner,
            offset: start * row,
            len: count * row,
        });
    }
    let n = shape.len();
    let row = shape[n - 1] * elem;
    let matrix = shape[n - 2] * row;
    let parts = (0..shape[..n - 2].iter().product::<u64>())
        .map(|m| {
            let w: Arc<dyn Compute> = Arc::new(Window {
                inner: Arc::clone(&inner),
                offset: m * matrix + start * row,
                len: count * row,
            });
            (w, count * row)
        })
        .collect();
    Arc::new(ConcatOf { parts, outer: 1 })
}

/// Segments laid end to end, as one computation.
fn joined(mut data: Vec<Segment>) -> Arc<dyn Compute> {
    if data.len() == 1 {
        return as_compute(data.remove(0));
    }
    Arc::new(ConcatOf {
        parts: data
            .into_iter()
            .map(|s| {
                let n = s.len();
                (as_compute(s), n)
            })
            .collect(),
        outer: 1,
    })
}

fn as_compute(seg: Segment) -> Arc<dyn Compute> {
    match seg {
        Segment::Computed(c) => c,
        Segment::Source(e) => Arc::new(SourceBytes(e)),
        Segment::Bytes(b) => Arc::new(Memory(b)),
    }
}

/// `w + 1` for every float32 `w` of `inner` (Gemma's norms), rounded to
/// float16 first when the source is F16 (the converter adds in the
/// checkpoint's dtype when it is float16).
#[derive(Debug)]
pub struct PlusOne {
    pub inner: Arc<dyn Compute>,
    pub f16: bool,
}

impl Compute for PlusOne {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn extents(&self) -> Vec<Extent> {
        self.inner.extents()
    }

    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        self.inner.extents_at(within, len)
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        by_units(offset, out, 4, |first, buf| {
            self.inner.read_at(files, first * 4, buf)?;
            for c in buf.chunks_exact_mut(4) {
                let w = f32::from_le_bytes(c.try_into().expect("4 bytes"));
                let v = if self.f16 {
                    f16_to_f32(f16_from_f32(w + 1.0))
                } else {
                    w + 1.0
                };
                c.copy_from_slice(&v.to_le_bytes());
            }
            Ok(())
        })
    }
}

/// Values (of type `from`) written as ggml type `ty`, row by row (`row`
/// values per row; whole blocks); with `via_bf16`, each value rounded to
/// BF16 first (as the BF16 file holds it: llama-quantize's input).
#[derive(Debug)]
pub struct Encoded {
    values: Arc<dyn Compute>,
    from: Floats,
    ty: GgmlType,
    row: u64,
    via_bf16: bool,
}

impl Encoded {
    /// The values of `v` written as `ty` in rows of `row` values. When `v`
    /// only moves values of source tensors that are all F16, or all BF16,
    /// the encoder reads those bytes (exactly the float32 values, widened
    /// as they are encoded); otherwise the float32 values of [`values`].
    pub fn new(
        catalog: &crate::catalog::Catalog,
        hf: &HfView,
        v: &Values,
        ty: GgmlType,
        row: u64,
        via_bf16: bool,
    ) -> Encoded {
        let native = [(Dtype::BF16, Floats::BF16), (Dtype::F16, Floats::F16)]
            .into_iter()
            .find_map(|(d, from)| moved(catalog, hf, v, d).map(|c| (c, from)));
        let (values, from) = native.unwrap_or_else(|| (values(catalog, hf, v), Floats::F32));
        Encoded {
            values,
            from,
            ty,
            row,
            via_bf16,
        }
    }

    fn row_bytes(&self) -> u64 {
        ggml_encode::encoded_len(self.ty, self.row).unwrap_or(0)
    }

    /// Whole rows of values `raw` into `out`: `ggml_encode`'s types (F32,
    /// F16, BF16, Q8_0) straight from the values' bytes; llama-quantize's
    /// types, and values to round to BF16 first (unless they are BF16),
    /// through one row of float32 at a time.
    fn encode(&self, raw: &[u8], out: &mut [u8]) -> Result<(), ReadError> {
        let rounded = self.via_bf16 && self.from != Floats::BF16;
        if ggml_encode::can_encode(self.ty) {
            if !rounded {
                return Ok(ggml_encode::encode(self.ty, self.from, raw, out)?);
            }
            // Rounded to BF16, the values are exactly BF16 ones: encode
            // those bytes.
            let mut vals = vec![0f32; raw.len() / self.from.bytes()];
            self.from.widen(raw, &mut vals);
            let bf16: Vec<u8> = (vals.iter())
                .flat_map(|v| ggml_encode::bf16_ggml(*v).to_le_bytes())
                .collect();
            return Ok(ggml_encode::encode(self.ty, Floats::BF16, &bf16, out)?);
        }
        let row = self.row as usize;
        let mut vals = vec![0f32; row];
        for (r, o) in raw
            .chunks_exact(row * self.from.bytes())
            .zip(out.chunks_exact_mut(self.row_bytes() as usize))
        {
            self.from.widen(r, &mut vals);
            if rounded {
                for v in vals.iter_mut() {
                    *v = f32::from_bits(u32::from(ggml_encode::bf16_ggml(*v)) << 16);
                }
            }
            ggml_quantize::encode(self.ty, &vals, o)?;
        }
        Ok(())
    }
}

impl Compute for Encoded {
    fn len(&self) -> u64 {
        let rows = self.values.len() / self.from.bytes() as u64 / self.row.max(1);
        rows * self.row_bytes()
    }

    fn extents(&self) -> Vec<Extent> {
        self.values.extents()
    }

    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        let rb = self.row_bytes().max(1);
        let first = within / rb;
        let end = within.saturating_add(len).div_ceil(rb);
        let vb = self.row * self.from.bytes() as u64;
        self.values.extents_at(first * vb, (end - first) * vb)
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let rb = self.row_bytes();
        let vb = self.row * self.from.bytes() as u64;
        // Rows per step: the values of a step fit in a buffer that stays
        // in the core's cache; one row at least.
        let step = (ENCODE_STEP / vb.max(1)).max(1);
        if let Some(source) = self.values.as_source() {
            // The values are a source tensor's bytes: encoded straight
            // from the map, no copy.
            return by_units(offset, out, rb, |first, buf| {
                for (k, o) in buf.chunks_mut((step * rb) as usize).enumerate() {
                    let rows = o.len() as u64 / rb;
                    let at = (first + k as u64 * step) * vb;
                    self.encode(files.bytes(source.sub(at, rows * vb))?, o)?;
                }
                Ok(())
            });
        }
        by_units(offset, out, rb, |first, buf| {
            SCRATCH.with(|cell| {
                // Taken out of the cell, so a nested read cannot find it
                // borrowed; put back for the next read on this thread.
                let mut raw = cell.take();
                let mut done = Ok(());
                for (k, o) in buf.chunks_mut((step * rb) as usize).enumerate() {
                    let rows = o.len() as u64 / rb;
                    raw.resize((rows * vb) as usize, 0);
                    let at = (first + k as u64 * step) * vb;
                    done = self
                        .values
                        .read_at(files, at, &mut raw)
                        .and_then(|()| self.encode(&raw, o));
                    if done.is_err() {
                        break;
                    }
                }
                // A step is at least one row: keep no more than two steps'
                // worth between reads.
                raw.shrink_to(2 * ENCODE_STEP as usize);
                cell.set(raw);
                done
            })
        })
    }
}

/// Source bytes an [`Encoded`] read turns into output at a time, per thread.
const ENCODE_STEP: u64 = 128 << 10;

thread_local! {
    /// The values buffer of [`Encoded`] reads, kept per thread between reads.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Matrices `[batch, rows, cols]` of `elem`-byte elements transposed, of
/// whose columns every `step`-th from `first` is kept: output `[batch,
/// cols', rows]` with output row `c` input column `first + step * c`
/// (`x.transpose(-1, -2)[.., first::step, :]`; with `rows` 1, the strided
/// columns `x[.., first::step]`).
#[derive(Debug)]
pub struct StridedTranspose {
    pub inner: Arc<dyn Compute>,
    pub batch: u64,
    pub rows: u64,
    pub cols: u64,
    pub first: u64,
    pub step: u64,
    pub elem: u64,
}

impl StridedTranspose {
    /// Output rows per matrix (`len(range(first, cols, step))`).
    fn out_rows(&self) -> u64 {
        self.cols
            .saturating_sub(self.first)
            .div_ceil(self.step.max(1))
    }
}

impl Compute for StridedTranspose {
    fn len(&self) -> u64 {
        self.batch * self.out_rows() * self.rows * self.elem
    }

    fn extents(&self) -> Vec<Extent> {
        self.inner.extents()
    }

    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        let per = self.out_rows() * self.rows * self.elem;
        let (b0, n) = units_at(within, len, per.max(1), self.batch);
        let matrix = self.rows * self.cols * self.elem;
        self.inner.extents_at(b0 * matrix, n * matrix)
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let (e, n_out) = (self.elem as usize, self.out_rows());
        let out_row = self.rows * self.elem;
        by_units(offset, out, out_row, |first, buf| {
            // Output rows first.. are input columns of matrix first / n_out:
            // per matrix, read the span of those columns from every input
            // row, then scatter every step-th element.
            let n = buf.len() as u64 / out_row;
            let mut g = first;
            while g < first + n {
                let (b, c0) = (g / n_out, g % n_out);
                let m = (n_out - c0).min(first + n - g);
                let span = (self.step * (m - 1) + 1) as usize;
                let mut run = vec![0u8; span * e];
                for r in 0..self.rows {
                    let col = self.first + self.step * c0;
                    let at = ((b * self.rows + r) * self.cols + col) * self.elem;
                    self.inner.read_at(files, at, &mut run)?;
                    for c in 0..m as usize {
                        let dst = ((g - first) as usize + c) * self.rows as usize + r as usize;
                        let src = c * self.step as usize;
                        buf[dst * e..(dst + 1) * e].copy_from_slice(&run[src * e..(src + 1) * e]);
                    }
                }
                g += m;
            }
            Ok(())
        })
    }
}

/// An MXFP4 pair in the Hugging Face layout (blocks `[E, R, G, 16]`, scales
/// `[E, R, G]`) as ggml MXFP4 `[E, R', G * 17]`: of each expert, rows
/// `first, first + step, ..`, each block its scale byte then its codes
/// repacked ([`repack_block`]), as the converter's `repack_mxfp4` does. A
/// read borrows only the source rows of the output rows it asks for.
#[derive(Debug)]
pub struct Mxfp4Repack {
    pub blocks: Extent,
    pub scales: Extent,
    pub experts: u64,
    /// Source rows per expert.
    pub rows: u64,
    /// Blocks per row.
    pub groups: u64,
    pub first: u64,
    pub step: u64,
}

impl Mxfp4Repack {
    /// Output rows per expert.
    fn out_rows(&self) -> u64 {
        self.rows
            .saturating_sub(self.first)
            .div_ceil(self.step.max(1))
    }

    fn row_bytes(&self) -> u64 {
        self.groups * 17
    }

    /// The source rows `(first, count)` output rows `k..k + m` (of one
    /// expert) read.
    fn source_rows(&self, k: u64, m: u64) -> (u64, u64) {
        let (e, r) = (k / self.out_rows(), k % self.out_rows());
        let s0 = e * self.rows + self.first + self.step * r;
        (s0, self.step * (m - 1) + 1)
    }
}

impl Compute for Mxfp4Repack {
    fn len(&self) -> u64 {
        self.experts * self.out_rows() * self.row_bytes()
    }

    fn extents(&self) -> Vec<Extent> {
        vec![self.blocks, self.scales]
    }

    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        let total = self.experts * self.out_rows();
        let (k, m) = units_at(within, len, self.row_bytes().max(1), total);
        if m == 0 {
            return Some(Vec::new());
        }
        // The source rows from the first output row's to the last's.
        let (s0, _) = self.source_rows(k, 1);
        let (s1, n) = self.source_rows(k + m - 1, 1);
        let rows = s1 + n - s0;
        let g = self.groups;
        Some(vec![
            self.blocks.sub(s0 * g * 16, rows * g * 16),
            self.scales.sub(s0 * g, rows * g),
        ])
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let (rb, n_out, g) = (self.row_bytes(), self.out_rows(), self.groups);
        by_units(offset, out, rb, |first, buf| {
            let end = first + buf.len() as u64 / rb;
            let (mut k, mut dst) = (first, buf);
            while k < end {
                // Rows k.. of one expert.
                let m = (n_out - k % n_out).min(end - k);
                let (s0, span) = self.source_rows(k, m);
                let blocks = files.bytes(self.blocks.sub(s0 * g * 16, span * g * 16))?;
                let scales = files.bytes(self.scales.sub(s0 * g, span * g))?;
                let (now, later) = dst.split_at_mut((m * rb) as usize);
                let src_step = (self.step * g) as usize;
                for (i, row) in now.chunks_exact_mut(rb as usize).enumerate() {
                    let at = i * src_step;
                    repack_row(
                        &blocks[at * 16..(at + g as usize) * 16],
                        &scales[at..at + g as usize],
                        row,
                    );
                }
                dst = later;
                k += m;
            }
            Ok(())
        })
    }
}

/// One row of MXFP4 blocks, Hugging Face layout (`blocks`: 16 bytes per
/// block, `scales`: one byte per block) to ggml `block_mxfp4`s (17 bytes:
/// the scale, then the repacked codes).
fn repack_row(blocks: &[u8], scales: &[u8], out: &mut [u8]) {
    for ((b, &s), o) in blocks
        .chunks_exact(16)
        .zip(scales)
        .zip(out.chunks_exact_mut(17))
    {
        let (lo, hi) = b.split_at(8);
        let lo = u64::from_le_bytes(lo.try_into().expect("8 bytes"));
        let hi = u64::from_le_bytes(hi.try_into().expect("8 bytes"));
        let (a, b) = repack_words(lo, hi);
        o[0] = s;
        o[1..9].copy_from_slice(&a.to_le_bytes());
        o[9..].copy_from_slice(&b.to_le_bytes());
    }
}

/// The 16 code bytes of an MXFP4 block from the Hugging Face order (byte
/// `i`: value `2i` low nibble, `2i + 1` high) to ggml's (byte `j`: value
/// `j` low, `j + 16` high). Codes are not remapped: both index the same
/// E2M1 table.
pub fn repack_block(b: &[u8; 16]) -> [u8; 16] {
    let lo = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    let hi = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
    let (a, b) = repack_words(lo, hi);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}

/// [`repack_block`] on the block's two little-endian 8-byte halves, giving
/// the output's. With `lo[k]`/`hi[k]` source bytes `k` and `8 + k`, output
/// byte `2k` is `lo[k] & 15 | (hi[k] & 15) << 4` and byte `2k + 1` is
/// `lo[k] >> 4 | hi[k] & 0xF0`: two words of those, interleaved byte by
/// byte.
#[inline(always)]
fn repack_words(lo: u64, hi: u64) -> (u64, u64) {
    const LOW: u64 = 0x0F0F_0F0F_0F0F_0F0F;
    let even = (lo & LOW) | ((hi & LOW) << 4);
    let odd = ((lo >> 4) & LOW) | (hi & !LOW);
    let first = spread(even as u32) | spread(odd as u32) << 8;
    let last = spread((even >> 32) as u32) | spread((odd >> 32) as u32) << 8;
    (first, last)
}

/// The bytes of `x` at the even bytes of a word (byte `k` to byte `2k`),
/// zeros between.
#[inline(always)]
fn spread(x: u32) -> u64 {
    let x = x as u64;
    let x = (x | x << 16) & 0x0000_FFFF_0000_FFFF;
    (x | x << 8) & 0x00FF_00FF_00FF_00FF
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{FileId, FileRole};
    use crate::quant::mxfp4::FP4_E2M1;

    /// Value `i` (0..32) of an MXFP4 block in the Hugging Face layout.
    fn hf_code(b: &[u8], i: usize) -> u8 {
        (b[i / 2] >> (4 * (i % 2))) & 15
    }

    /// Value `i` of a ggml `block_mxfp4`'s codes.
    fn ggml_code(qs: &[u8], i: usize) -> u8 {
        (qs[i % 16] >> (4 * (i / 16))) & 15
    }

    /// Every byte value at every position of a block: the 32 codes land
    /// where ggml reads them.
    #[test]
    fn repack_block_moves_every_code() {
        for pos in 0..16 {
            for v in 0..=255u8 {
                let mut b: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5A);
                b[pos] = v;
                let q = repack_block(&b);
                for i in 0..32 {
                    assert_eq!(ggml_code(&q, i), hf_code(&b, i), "pos {pos} v {v} i {i}");
                }
            }
        }
    }

    /// One file holding `bytes`, as source file 0.
    fn files_of(bytes: &[u8]) -> (tempfile::TempDir, Files) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, bytes).unwrap();
        let mut files = Files::default();
        let f = crate::store::Opener::local().open(&p, "s".into()).unwrap();
        files.push(f, Default::default(), FileRole::Tensors);
        (dir, files)
    }

    /// The naive repack of rows `first::step` of every expert.
    fn naive(
        blocks: &[u8],
        scales: &[u8],
        dims: (u64, u64, u64),
        first: u64,
        step: u64,
    ) -> Vec<u8> {
        let (experts, rows, groups) = dims;
        let mut out = Vec::new();
        for e in 0..experts {
            for r in (first..rows).step_by(step as usize) {
                for g in 0..groups {
                    let k = ((e * rows + r) * groups + g) as usize;
                    let b = &blocks[k * 16..k * 16 + 16];
                    out.push(scales[k]);
                    let mut qs = [0u8; 16];
                    for i in 0..32 {
                        qs[i % 16] |= hf_code(b, i) << (4 * (i / 16));
                    }
                    out.extend_from_slice(&qs);
                }
            }
        }
        out
    }

    /// Every scale byte, whole outputs and every partial range, all three
    /// row selections (down, gate, up); the whole output also dequantized
    /// by ggml against the Hugging Face values.
    #[test]
    fn mxfp4_repack_every_range() {
        let (experts, rows, groups) = (3u64, 6u64, 15u64);
        let n = (experts * rows * groups) as usize;
        let blocks: Vec<u8> = (0..n * 16).map(|i| (i * 7919 % 251) as u8).collect();
        // 270 blocks: every scale byte at least once.
        let scales: Vec<u8> = (0..n).map(|i| (i % 256) as u8).collect();
        let mut bytes = blocks.clone();
        bytes.extend_from_slice(&scales);
        let (_d, files) = files_of(&bytes);
        let file = FileId(0);
        let ext = |offset: u64, len: u64| Extent { file, offset, len };
        for (first, step) in [(0, 1), (0, 2), (1, 2)] {
            let c = Mxfp4Repack {
                blocks: ext(0, blocks.len() as u64),
                scales: ext(blocks.len() as u64, scales.len() as u64),
                experts,
                rows,
                groups,
                first,
                step,
            };
            let want = naive(&blocks, &scales, (experts, rows, groups), first, step);
            assert_eq!(c.len(), want.len() as u64);
            let mut all = vec![0u8; want.len()];
            c.read_at(&files, 0, &mut all).unwrap();
            assert_eq!(all, want, "first {first} step {step}");
            let rb = c.row_bytes() as usize;
            for off in (0..want.len()).step_by(97).chain([rb - 1, rb, 2 * rb + 5]) {
                for len in [1, 16, 17, rb - 1, rb, rb + 1, 3 * rb + 2, want.len()] {
                    let len = len.min(want.len() - off);
                    let mut got = vec![0u8; len];
                    c.read_at(&files, off as u64, &mut got).unwrap();
                    assert_eq!(got, want[off..off + len], "{first}/{step} at {off}+{len}");
                }
            }
            // The hint covers the rows read.
            let hint = c.extents_at(rb as u64, rb as u64).unwrap();
            assert_eq!(hint[0].offset, (first + step) * groups * 16);
            assert_eq!(hint[0].len, groups * 16);
            assert_eq!(hint[1].len, groups);
            // ggml's values are the Hugging Face ones (scales that keep
            // them normal floats in both).
            let mut vals = vec![0f32; all.len() / 17 * 32];
            crate::quant::ggml::dequantize_f32(GgmlType::MXFP4, &all, &mut vals).unwrap();
            let mut k = 0;
            for e in 0..experts {
                for r in (first..rows).step_by(step as usize) {
                    for g in 0..groups {
                        let src = ((e * rows + r) * groups + g) as usize;
                        let s = scales[src] as i32;
                        for i in 0..32 {
                            if (2..=250).contains(&s) {
                                let want = FP4_E2M1[hf_code(&blocks[src * 16..], i) as usize]
                                    * 2f32.powi(s - 127);
                                assert_eq!(vals[k], want, "scale {s}");
                            }
                            k += 1;
                        }
                    }
                }
            }
        }
    }

    /// Strided transposes against naive indexing, at every offset.
    #[test]
    fn strided_transpose() {
        let (batch, rows, cols) = (2u64, 3u64, 6u64);
        let vals: Vec<u8> = (0..batch * rows * cols).map(|v| v as u8).collect();
        let files = Files::default();
        for (rows, cols) in [(rows, cols), (1, rows * cols)] {
            for (first, step) in [(0, 1), (0, 2), (1, 2), (2, 3)] {
                let c = StridedTranspose {
                    inner: Arc::new(Memory(vals.clone().into())),
                    batch,
                    rows,
                    cols,
                    first,
                    step,
                    elem: 1,
                };
                let mut want = Vec::new();
                for b in 0..batch {
                    for col in (first..cols).step_by(step as usize) {
                        for r in 0..rows {
                            want.push(vals[((b * rows + r) * cols + col) as usize]);
                        }
                    }
                }
                assert_eq!(c.len(), want.len() as u64);
                for off in 0..want.len() {
                    for len in 0..=want.len() - off {
                        let mut got = vec![0u8; len];
                        c.read_at(&files, off as u64, &mut got).unwrap();
                        assert_eq!(got, want[off..off + len]);
                    }
                }
            }
        }
    }

    /// The repack's throughput on gpt-oss-20b-shaped gate/up experts (8 of
    /// the 32), read in 1 MiB pieces as FUSE asks: `cargo test --release
    /// --lib mxfp4_repack_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement"]
    fn mxfp4_repack_throughput() {
        let (experts, rows, groups) = (8u64, 5760u64, 90u64);
        let n = (experts * rows * groups) as usize;
        let mut bytes: Vec<u8> = (0..n * 17)
            .map(|i| ((i * 2654435761) >> 13) as u8)
            .collect();
        bytes[n * 16..].iter_mut().for_each(|s| *s = 120 + *s % 8);
        let (_d, files) = files_of(&bytes);
        let ext = |offset: u64, len: u64| Extent {
            file: FileId(0),
            offset,
            len,
        };
        let mut buf = vec![0u8; 1 << 20];
        for (first, step) in [(0, 1), (1, 2)] {
            let c = Mxfp4Repack {
                blocks: ext(0, n as u64 * 16),
                scales: ext(n as u64 * 16, n as u64),
                experts,
                rows,
                groups,
                first,
                step,
            };
            for pass in 0..3 {
                let t = std::time::Instant::now();
                let mut at = 0;
                while at < c.len() {
                    let len = (c.len() - at).min(buf.len() as u64) as usize;
                    c.read_at(&files, at, &mut buf[..len]).unwrap();
                    at += len as u64;
                }
                let s = t.elapsed().as_secs_f64();
                println!(
                    "rows {first}::{step}, pass {pass}: {} MB of ggml MXFP4 in {s:.3} s: {:.0} MB/s",
                    c.len() / 1_000_000,
                    c.len() as f64 / s / 1e6
                );
            }
        }
    }

    fn read(c: &dyn Compute) -> Vec<f32> {
        let mut out = vec![0u8; c.len() as usize];
        c.read_at(&Files::default(), 0, &mut out).unwrap();
        out.chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn rows_of_every_matrix() {
        // [2, 4, 3]: values 0..24.
        let bytes: Vec<u8> = (0..24).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let inner: Arc<dyn Compute> = Arc::new(Memory(bytes.into()));
        // The second half of each expert's 4 rows.
        let up = rows(Arc::clone(&inner), &[2, 4, 3], 2, 2, 4);
        let want: Vec<f32> = [6, 7, 8, 9, 10, 11, 18, 19, 20, 21, 22, 23]
            .map(|v| v as f32)
            .to_vec();
        assert_eq!(read(&*up), want);
        // A 2-D tensor: rows of axis 0.
        let rows2 = rows(inner, &[8, 3], 1, 2, 4);
        assert_eq!(read(&*rows2), [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    }
}
