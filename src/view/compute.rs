//! Computed segments: converted bytes produced on demand from source bytes.
//!
//! The conversions write BF16 (with the fast kernels of `quant`), or F16 /
//! F32 (`quant::wide`: each value's exact f32, then written or rounded once)
//! for the `f16/` and `f32/` views.
//!
//! Each type here is a [`Compute`] whose output length is known when the
//! tree is built and whose `read_at` produces exactly the requested byte
//! range, computing only the units (elements, blocks or output rows) that
//! cover it. Source bytes are borrowed from the memory map (never copied
//! first); the number crunching is in `crate::quant`.
//!
//! Nothing is cached here: every unit is at most one output row, so a read
//! computes at most two partial units more than it returns, and what it
//! returns is kept by the kernel's page cache (files open with keep-cache).
//! Memory use is bounded by the requests in flight.

use std::sync::Arc;

use crate::catalog::{Extent, Files, Layout};
use crate::dtype::{Dtype, numel};
use crate::error::ReadError;
use crate::quant::{self, KernelError};
use crate::view::Compute;

/// Fill `out` with output bytes `[offset, offset + out.len())` of an output
/// made of `unit`-byte units, where `fill(first, buf)` computes the whole
/// units `first..first + buf.len() / unit`. Whole units are computed straight
/// into `out`; a partial unit at either end goes through a one-unit buffer.
/// The experts `e0..e1` that output bytes `within..within + len` of a
/// per-expert layout (`per` output bytes each, `experts` of them) lie in.
fn experts_at(within: u64, len: u64, per: u64, experts: u64) -> (u64, u64) {
    let (first, n) = units_at(within, len, per.max(1), experts);
    (first, first + n)
}

/// The source units `(first, count)` that output bytes `within..within +
/// len` come from, `unit` output bytes per source unit (as `by_units`
/// reads them), clamped to the `units` there are.
pub(crate) fn units_at(within: u64, len: u64, unit: u64, units: u64) -> (u64, u64) {
    let first = (within / unit).min(units);
    let end = within.saturating_add(len).div_ceil(unit).min(units);
    (first, end.saturating_sub(first))
}

/// Fill `out` (bytes `offset..` of an output made of `unit`-byte units)
/// by calling `fill(first unit, buffer of whole units)`: whole units
/// straight into `out`, a partial one through a scratch unit.
pub(crate) fn by_units(
    offset: u64,
    out: &mut [u8],
    unit: u64,
    mut fill: impl FnMut(u64, &mut [u8]) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let unit_us = unit as usize;
    let mut at = offset;
    let mut rest = out;
    while !rest.is_empty() {
        let u = at / unit;
        let within = (at % unit) as usize;
        if within == 0 && rest.len() >= unit_us {
            let whole = rest.len() / unit_us * unit_us;
            let (body, tail) = rest.split_at_mut(whole);
            fill(u, body)?;
            at += whole as u64;
            rest = tail;
        } else {
            let mut tmp = vec![0u8; unit_us];
            fill(u, &mut tmp)?;
            let n = (unit_us - within).min(rest.len());
            let (head, tail) = rest.split_at_mut(n);
            head.copy_from_slice(&tmp[within..within + n]);
            at += n as u64;
            rest = tail;
        }
    }
    Ok(())
}

/// Bytes per element of an output dtype.
fn width(to: Dtype) -> u64 {
    to.bits() / 8
}

/// Fill `buf` (whole elements of `to`: F16 or F32) with the f32 values `f`
/// computes, written as `to`.
fn wide(
    to: Dtype,
    buf: &mut [u8],
    f: impl FnOnce(&mut [f32]) -> Result<(), KernelError>,
) -> Result<(), ReadError> {
    let mut vals = vec![0f32; buf.len() / width(to) as usize];
    f(&mut vals)?;
    Ok(quant::wide::encode(&vals, to, buf)?)
}

/// Elementwise conversion of a float source tensor (F16, BF16, F32, F64,
/// F8_E4M3, F8_E5M2) to another float dtype (BF16, F16 or F32).
#[derive(Debug)]
pub struct Cast {
    src: Extent,
    from: Dtype,
    to: Dtype,
}

type CastKernel = fn(&[u8], &mut [u8]) -> Result<(), KernelError>;

/// The BF16 kernel for elements of `from`.
fn bf16_kernel(from: Dtype) -> Option<CastKernel> {
    Some(match from {
        Dtype::F16 => quant::float::f16_to_bf16,
        Dtype::F32 => quant::float::f32_to_bf16,
        Dtype::F64 => quant::float::f64_to_bf16,
        Dtype::F8_E4M3 => quant::fp8::e4m3_to_bf16,
        Dtype::F8_E5M2 => quant::fp8::e5m2_to_bf16,
        _ => return None,
    })
}

/// Convert elements of `from` in `src` to `to` into `dst`.
fn convert(from: Dtype, to: Dtype, src: &[u8], dst: &mut [u8]) -> Result<(), ReadError> {
    match (to, bf16_kernel(from)) {
        (Dtype::BF16, Some(k)) => Ok(k(src, dst)?),
        _ => wide(to, dst, |v| quant::wide::float_to_f32(from, src, v)),
    }
}

impl Cast {
    /// Does gyrofs convert elements of `from` to `to`? (A dtype converts to
    /// itself by passing through; integers and the rest always do.)
    pub fn converts(from: Dtype, to: Dtype) -> bool {
        from != to
            && quant::wide::is_float(from)
            && matches!(to, Dtype::BF16 | Dtype::F16 | Dtype::F32)
    }

    /// The conversion of `src`, elements of dtype `from`, to `to`; `None`
    /// if there is none to make.
    pub fn new(src: Extent, from: Dtype, to: Dtype) -> Option<Cast> {
        Cast::converts(from, to).then_some(Cast { src, from, to })
    }
}

impl Compute for Cast {
    fn extents(&self) -> Vec<Extent> {
        vec![self.src]
    }

    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        let w = width(self.from);
        let (first, n) = units_at(within, len, width(self.to), self.src.len / w);
        Some(vec![self.src.sub(first * w, n * w)])
    }

    fn len(&self) -> u64 {
        self.src.len / width(self.from) * width(self.to)
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let (w, u) = (width(self.from), width(self.to));
        by_units(offset, out, u, |first, buf| {
            let n = buf.len() as u64 / u;
            let src = files.bytes(self.src.sub(first * w, n * w))?;
            convert(self.from, self.to, src, buf)
        })
    }
}

/// An MXFP4 pair dequantized in its natural layout: blocks `[.., R, G, 16]`
/// and scales `[.., R, G]` become `to` `[.., R, G * 32]`.
#[derive(Debug)]
pub struct Mxfp4 {
    pub blocks: Extent,
    pub scales: Extent,
    pub to: Dtype,
}

impl Mxfp4 {
    /// The groups (32 values: 16 block bytes, 1 scale) that values
    /// `first..first + n` lie in.
    fn groups(&self, first: u64, n: u64) -> (u64, u64) {
        let g0 = (first / 32).min(self.scales.len);
        let g1 = (first + n).div_ceil(32).min(self.scales.len);
        (g0, g1.saturating_sub(g0))
    }
}

impl Compute for Mxfp4 {
    fn extents(&self) -> Vec<Extent> {
        vec![self.blocks, self.scales]
    }

    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        let u = width(self.to);
        let (first, n) = units_at(within, len, u, self.scales.len * 32);
        let (g0, g) = self.groups(first, n);
        Some(vec![
            self.blocks.sub(g0 * 16, g * 16),
            self.scales.sub(g0, g),
        ])
    }

    fn len(&self) -> u64 {
        self.scales.len * 32 * width(self.to)
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        by_units(offset, out, width(self.to), |first, buf| {
            // Only the groups this range covers (a remote source then
            // fetches no more than them).
            let n = buf.len() as u64 / width(self.to);
            let (g0, g) = self.groups(first, n);
            let blocks = files.bytes(self.blocks.sub(g0 * 16, g * 16))?;
            let scales = files.bytes(self.scales.sub(g0, g))?;
            let first = (first - g0 * 32) as usize;
            let pair = quant::mxfp4::Pair::new(blocks, scales)?;
            match self.to {
                Dtype::BF16 => Ok(quant::mxfp4::dequant_range_le(&pair, first, buf)?),
                to => wide(to, buf, |v| quant::wide::mxfp4_to_f32(&pair, first, v)),
            }
        })
    }
}

/// A gpt-oss MXFP4 expert pair dequantized and transposed the way
/// transformers lays out dense experts: blocks `[E, R, G, 16]` and scales
/// `[E, R, G]` become BF16 `[E, G * 32, R]` (`gate_up_proj` `[E, H, 2I]`,
/// `down_proj` `[E, I, H]`).
///
/// The unit of computation is one output row (`R` values): a read computes
/// exactly the rows it covers, reading for every source row the few blocks
/// of the block columns involved (prefetched, since they are a stride
/// apart). Caching whole experts instead was measured slower (docs/PERFORMANCE.md).
#[derive(Debug)]
pub struct Mxfp4Transposed {
    pub blocks: Extent,
    pub scales: Extent,
    pub experts: u64,
    pub rows: u64,
    pub groups: u64,
    pub to: Dtype,
}

impl Mxfp4Transposed {
    fn cols(&self) -> u64 {
        self.groups * 32
    }

    /// The source blocks and scales of expert `e`.
    fn expert_source<'a>(
        &self,
        files: &'a Files,
        e: u64,
    ) -> Result<(&'a [u8], &'a [u8]), ReadError> {
        let n = self.rows * self.groups;
        let blocks = files.bytes(self.blocks.sub(e * n * 16, n * 16))?;
        let scales = files.bytes(self.scales.sub(e * n, n))?;
        Ok((blocks, scales))
    }
}

impl Compute for Mxfp4Transposed {
    fn extents(&self) -> Vec<Extent> {
        vec![self.blocks, self.scales]
    }

    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        let per = self.cols() * self.rows * width(self.to);
        let (e0, e1) = experts_at(within, len, per, self.experts);
        let n = self.rows * self.groups;
        Some(vec![
            self.blocks.sub(e0 * n * 16, (e1 - e0) * n * 16),
            self.scales.sub(e0 * n, (e1 - e0) * n),
        ])
    }

    fn len(&self) -> u64 {
        self.experts * self.cols() * self.rows * width(self.to)
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let (r, g) = (self.rows as usize, self.groups as usize);
        let cols = self.cols();
        let w = width(self.to);
        let row_bytes = self.rows * w;
        by_units(offset, out, row_bytes, |first, buf| {
            let mut row = first;
            let end = first + buf.len() as u64 / row_bytes;
            let mut dst = buf;
            while row < end {
                let e = row / cols;
                let c0 = (row % cols) as usize;
                let c1 = ((end - e * cols).min(cols)) as usize;
                let (blocks, scales) = self.expert_source(files, e)?;
                let x = quant::mxfp4::Expert::new(blocks, scales, r, g)?.transposed(c0..c1)?;
                let (now, later) = dst.split_at_mut((c1 - c0) * r * w as usize);
                match self.to {
                    Dtype::BF16 => quant::mxfp4::dequant_transposed_le(&x, now)?,
                    to => wide(to, now, |v| quant::wide::mxfp4_transposed_to_f32(&x, v))?,
                }
                dst = later;
                row += (c1 - c0) as u64;
            }
            Ok(())
        })
    }
}

/// Longest output row of a transposing computation, in values: a read of
/// part of a row computes the whole row. Real models' are thousands (gpt-oss
/// `gate_up_proj`: 5760); a crafted shape could ask for gigabytes per read,
/// so plans with longer rows are not made (the tensor stays in `raw/`).
pub const MAX_TRANSPOSED_ROW: u64 = 1 << 20;

/// GGUF MXFP4 expert tensors `[E, R, C]` (ggml's 17-byte blocks: the E8M0
/// scale byte, then 16 bytes whose low nibbles are values 0..16 and high
/// nibbles values 16..32), one or more of one shape, dequantized with their
/// last two axes swapped and, for several, interleaved along the last axis:
/// output `[E, C, parts * R]`, element `(e, c, j)` being value `c` of row
/// `j / parts` of part `j % parts` (gpt-oss's `gate_up_proj` from
/// `ffn_gate_exps` and `ffn_up_exps`; `down_proj` from `ffn_down_exps`).
///
/// The blocks a request needs are transcoded into the Hugging Face layout
/// (16-byte blocks of value pairs, scales apart, rows already interleaved)
/// and handed to the transposed MXFP4 kernel of `Mxfp4Transposed`. Both
/// compute the exact product `v * 2^(s - 127)` rounded once, so their values
/// agree for every scale byte, except the sign of zero: ggml's table has no
/// -0 (FP4 code 8 is +0), so code 8 is transcoded to code 0 (the unit test
/// checks all 256 scale bytes against the generic transposes of ggml's
/// dequantization).
#[derive(Debug)]
pub struct GgufMxfp4Transposed {
    pub parts: Vec<Extent>,
    pub experts: u64,
    /// Source rows per part and expert.
    pub rows: u64,
    /// Blocks per source row.
    pub groups: u64,
    pub to: Dtype,
}

/// A byte of two FP4 codes with code 8 (-0) replaced by 0 in each nibble.
static POSITIVE_ZERO: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let (lo, hi) = (b & 0x0F, b >> 4);
        let lo = if lo == 8 { 0 } else { lo };
        let hi = if hi == 8 { 0 } else { hi };
        t[b] = (lo | hi << 4) as u8;
        b += 1;
    }
    t
};

/// One ggml MXFP4 block's 16 code bytes (byte `i`: value `i` low, value
/// `i + 16` high) in the Hugging Face order (byte `k`: value `2k` low,
/// `2k + 1` high), code 8 (-0) as 0.
fn hf_mxfp4_codes(qs: &[u8], dst: &mut [u8]) {
    for k in 0..8 {
        let (a, b) = (qs[2 * k], qs[2 * k + 1]);
        dst[k] = POSITIVE_ZERO[((a & 0x0F) | (b << 4)) as usize];
        dst[k + 8] = POSITIVE_ZERO[((a >> 4) | (b & 0xF0)) as usize];
    }
}

/// MXFP4 blocks in the Hugging Face layout: code bytes `[rows, groups,
/// 16]` and scale bytes `[rows, groups]`.
type HfBlocks = (Vec<u8>, Vec<u8>);

impl GgufMxfp4Transposed {
    /// Blocks `g0..g1` of every source row of expert `e`, in the Hugging
    /// Face layout (rows interleaved across parts).
    fn transcode(&self, files: &Files, e: u64, g0: u64, g1: u64) -> Result<HfBlocks, ReadError> {
        let (n, ng) = (self.parts.len(), (g1 - g0) as usize);
        let total = n * self.rows as usize;
        let mut blocks = vec![0u8; total * ng * 16];
        let mut scales = vec![0u8; total * ng];
        let per_expert = self.rows * self.groups * 17;
        for (p, part) in self.parts.iter().enumerate() {
            let src = files.bytes(part.sub(e * per_expert, per_expert))?;
            let row_bytes = self.groups as usize * 17;
            for r in 0..self.rows as usize {
                let j = r * n + p;
                // rows are a stride apart: fetch ahead, as the kernel does
                let ahead = (r + quant::mxfp4::PREFETCH_ROWS) * row_bytes + g0 as usize * 17;
                quant::mxfp4::prefetch(src, ahead);
                quant::mxfp4::prefetch(src, ahead + ng * 17 - 1);
                let row = &src[(r * self.groups as usize + g0 as usize) * 17..][..ng * 17];
                for (g, b) in row.chunks_exact(17).enumerate() {
                    scales[j * ng + g] = b[0];
                    hf_mxfp4_codes(&b[1..], &mut blocks[(j * ng + g) * 16..][..16]);
                }
            }
        }
        Ok((blocks, scales))
    }
}

impl Compute for GgufMxfp4Transposed {
    fn extents(&self) -> Vec<Extent> {
        self.parts.clone()
    }

    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        let per = self.len() / self.experts.max(1);
        let (e0, e1) = experts_at(within, len, per, self.experts);
        let per_expert = self.rows * self.groups * 17;
        Some(
            self.parts
                .iter()
                .map(|p| p.sub(e0 * per_expert, (e1 - e0) * per_expert))
                .collect(),
        )
    }

    fn len(&self) -> u64 {
        self.experts * self.groups * 32 * self.rows * self.parts.len() as u64 * width(self.to)
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let total = self.rows as usize * self.parts.len();
        let cols = self.groups * 32;
        let w = width(self.to);
        let row_bytes = total as u64 * w;
        by_units(offset, out, row_bytes, |first, buf| {
            let mut row = first;
            let end = first + buf.len() as u64 / row_bytes;
            let mut dst = buf;
            while row < end {
                let e = row / cols;
                let c0 = row % cols;
                let c1 = (end - e * cols).min(cols);
                let (g0, g1) = (c0 / 32, c1.div_ceil(32));
                let (now, later) = dst.split_at_mut(((c1 - c0) * row_bytes) as usize);
                let (a, b) = ((c0 - g0 * 32) as usize, (c1 - g0 * 32) as usize);
                let ng = (g1 - g0) as usize;
                let (blocks, scales) = self.transcode(files, e, g0, g1)?;
                let x = quant::mxfp4::Expert::new(&blocks, &scales, total, ng)?.transposed(a..b)?;
                match self.to {
                    Dtype::BF16 => quant::mxfp4::dequant_transposed_le(&x, now)?,
                    to => wide(to, now, |v| quant::wide::mxfp4_transposed_to_f32(&x, v))?,
                }
                dst = later;
                row = e * cols + c1;
            }
            Ok(())
        })
    }
}

/// A block-scaled F8_E4M3 weight `[R, C]` with its F32 `weight_scale_inv`
/// grid, dequantized to BF16 `[R, C]`.
#[derive(Debug)]
pub struct Fp8Block {
    pub weight: Extent,
    pub scale_inv: Extent,
    pub geometry: quant::fp8::BlockScaled,
    pub to: Dtype,
}

impl Compute for Fp8Block {
    fn extents(&self) -> Vec<Extent> {
        vec![self.weight, self.scale_inv]
    }

    fn len(&self) -> u64 {
        self.weight.len * width(self.to)
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let scale_inv = files.bytes(self.scale_inv)?;
        let u = width(self.to);
        by_units(offset, out, u, |first, buf| {
            let n = buf.len() as u64 / u;
            let weight = files.bytes(self.weight.sub(first, n))?;
            let x = self.geometry.slice(weight, first as usize, scale_inv)?;
            match self.to {
                Dtype::BF16 => Ok(x.dequant_le(buf)?),
                to => wide(to, buf, |v| quant::wide::fp8_block_to_f32(&x, v)),
            }
        })
    }
}

/// A weight a quantization library stored as several tensors
/// (`catalog::packed`), decoded by its format's [`quant::packed::Unpack`]
/// to f32 and rounded once to `to` (BF16, F16 or F32).
#[derive(Debug)]
pub struct Unpacked {
    /// Its stored parts, in `unpack.roles()` order.
    pub parts: Vec<Extent>,
    pub unpack: Arc<dyn quant::packed::Unpack>,
    pub to: Dtype,
}

/// Output elements decoded per call of `Unpack::values` (a bounded f32
/// scratch buffer per thread), unless the format's unit is larger.
const UNPACK_STEP: usize = 1 << 16;

/// The largest unit of a format honoured (1 MiB of f32 scratch).
const UNPACK_MAX_UNIT: u64 = 1 << 18;

/// Elements of the step of `Unpacked::read_at` that starts at element `at`
/// with `left` to go: up to the next multiple of `step` (a whole number of
/// the format's units), so that every step after a read's first one starts
/// on a unit (a read starts anywhere: 8-row SIMD tiles need whole units).
fn step_len(at: u64, left: usize, step: usize) -> usize {
    let step = step.max(1);
    (step - (at % step as u64) as usize).min(left)
}

thread_local! {
    /// The f32 values of one step of `Unpacked::read_at`, kept between
    /// reads (a fresh allocation per read costs page faults).
    static UNPACK_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The last unit `Unpacked::read_at` computed for a part of it (the
    /// next sequential read's first elements are usually its rest).
    static LAST_UNIT: std::cell::RefCell<LastUnit> = const {
        std::cell::RefCell::new(LastUnit { key: None, vals: Vec::new() })
    };
}

/// A whole unit's values, and which weight and unit they are: the
/// dequantizer (held, so its address cannot be another's), the stored
/// parts it read, the unit's first element.
struct LastUnit {
    key: Option<(Arc<dyn quant::packed::Unpack>, Vec<Extent>, u64)>,
    vals: Vec<f32>,
}

impl Unpacked {
    /// Round `v` to `self.to` into `bytes`.
    fn encode(&self, v: &[f32], bytes: &mut [u8]) -> Result<(), ReadError> {
        match self.to {
            Dtype::BF16 => quant::float::f32s_to_bf16(v, bytes)?,
            to => quant::wide::encode(v, to, bytes)?,
        }
        Ok(())
    }

    /// Elements `at .. at + k` of the unit of `len` elements that starts at
    /// `u0`, encoded into `bytes`: the whole unit is computed (the formats'
    /// SIMD paths work on whole units) and kept for the next read.
    fn part_of_unit(
        &self,
        parts: &[&[u8]],
        (u0, len): (u64, usize),
        (at, k): (u64, usize),
        bytes: &mut [u8],
    ) -> Result<(), ReadError> {
        LAST_UNIT.with_borrow_mut(|c| {
            let hit = c.key.as_ref().is_some_and(|(w, p, first)| {
                Arc::ptr_eq(w, &self.unpack) && *p == self.parts && *first == u0
            });
            if !hit {
                c.key = None;
                c.vals.resize(len, 0.0);
                self.unpack.values(parts, u0, &mut c.vals[..len])?;
                c.key = Some((self.unpack.clone(), self.parts.clone(), u0));
            }
            let i = (at - u0) as usize;
            self.encode(&c.vals[i..i + k], bytes)
        })
    }
}

impl Compute for Unpacked {
    fn extents(&self) -> Vec<Extent> {
        self.parts.clone()
    }

    fn len(&self) -> u64 {
        numel(self.unpack.shape()).unwrap_or(0) * width(self.to)
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let parts = self
            .parts
            .iter()
            .map(|&e| files.bytes(e))
            .collect::<Result<Vec<&[u8]>, _>>()?;
        let u = width(self.to) as usize;
        let total = numel(self.unpack.shape()).unwrap_or(0);
        // whole units of the format: a part of one at either end of the
        // read is computed whole (and kept for the next read)
        let unit = self.unpack.unit().clamp(1, UNPACK_MAX_UNIT) as usize;
        let step = (UNPACK_STEP / unit).max(1) * unit;
        UNPACK_SCRATCH.with_borrow_mut(|vals| {
            by_units(offset, out, u as u64, |first, buf| {
                let n = buf.len() / u;
                let mut done = 0;
                while done < n {
                    let at = first + done as u64;
                    let within = (at % unit as u64) as usize;
                    let u0 = at - within as u64;
                    let unit_len = (total.saturating_sub(u0)).min(unit as u64) as usize;
                    let bytes = &mut buf[done * u..];
                    if within != 0 || n - done < unit_len {
                        let k = (unit_len.saturating_sub(within)).min(n - done).max(1);
                        self.part_of_unit(&parts, (u0, unit_len), (at, k), &mut bytes[..k * u])?;
                        done += k;
                        continue;
                    }
                    let k = step_len(at, n - done, step);
                    let k = (k / unit).max(1) * unit;
                    let k = k.min(n - done);
                    if vals.len() < k {
                        vals.resize(k, 0.0);
                    }
                    let v = &mut vals[..k];
                    self.unpack.values(&parts, at, v)?;
                    self.encode(v, &mut bytes[..k * u])?;
                    done += k;
                }
                Ok(())
            })
        })
    }
}

/// A GGUF block-quantized tensor dequantized to BF16 (same element order):
/// block `i` of the source (`type_size` bytes) gives output elements
/// `i * block_size ..`, exactly `gguf.quants.dequantize` rounded to BF16.
#[derive(Debug)]
pub struct GgmlDequant {
    pub src: Extent,
    pub ty: quant::ggml::GgmlType,
    pub to: Dtype,
}

impl Compute for GgmlDequant {
    fn extents(&self) -> Vec<Extent> {
        vec![self.src]
    }

    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        let (bs, ts) = (self.ty.block_size(), self.ty.type_size());
        let (first, n) = units_at(within, len, bs * width(self.to), self.src.len / ts);
        Some(vec![self.src.sub(first * ts, n * ts)])
    }

    fn len(&self) -> u64 {
        self.src.len / self.ty.type_size() * self.ty.block_size() * width(self.to)
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let (bs, ts) = (self.ty.block_size(), self.ty.type_size());
        let unit = bs * width(self.to);
        by_units(offset, out, unit, |first, buf| {
            let n = buf.len() as u64 / unit;
            let blocks = files.bytes(self.src.sub(first * ts, n * ts))?;
            match self.to {
                Dtype::BF16 => Ok(quant::ggml::dequantize(self.ty, blocks, buf)?),
                to => {
                    let mut vals = vec![0f32; (n * bs) as usize];
                    quant::ggml::dequantize_f32(self.ty, blocks, &mut vals)?;
                    Ok(quant::wide::encode(&vals, to, buf)?)
                }
            }
        })
    }
}

/// The elements of a strided view of a storage, in row-major order and
/// little-endian: the bytes of `t.contiguous()` for a PyTorch tensor saved
/// as a view (transposed, sliced with a step, expanded), or saved big-endian
/// (`swap`). Runs along a contiguous last axis are copied whole.
#[derive(Debug)]
pub struct Gather {
    pub storage: Extent,
    /// Bytes per element.
    pub elem: u64,
    /// Offset of element `[0, 0, ...]` in the storage, in elements.
    pub offset: u64,
    pub shape: Vec<u64>,
    /// In elements.
    pub strides: Vec<u64>,
    /// Reverse the bytes of every element (big-endian storage).
    pub swap: bool,
}

impl Gather {
    /// The view `layout` of a tensor of `shape` and element size `elem`,
    /// with its axes permuted by `perm` (identity: `None`).
    pub fn of(layout: &Layout, elem: u64, shape: &[u64], perm: Option<&[usize]>) -> Gather {
        let (shape, strides) = match perm {
            None => (shape.to_vec(), layout.strides.clone()),
            Some(p) => (
                p.iter().map(|&a| shape[a]).collect(),
                p.iter().map(|&a| layout.strides[a]).collect(),
            ),
        };
        Gather {
            storage: layout.storage,
            elem,
            offset: layout.offset,
            shape,
            strides,
            swap: layout.big_endian,
        }
    }

    fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

impl Compute for Gather {
    fn extents(&self) -> Vec<Extent> {
        vec![self.storage]
    }

    fn len(&self) -> u64 {
        self.numel() * self.elem
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let storage = files.bytes(self.storage)?;
        let e = self.elem as usize;
        let dims = self.shape.len();
        by_units(offset, out, self.elem, |first, buf| {
            // Multi-index of element `first`, and its storage element.
            let mut idx = vec![0u64; dims];
            let mut rest = first;
            for a in (0..dims).rev() {
                idx[a] = rest % self.shape[a].max(1);
                rest /= self.shape[a].max(1);
            }
            let mut src: u64 = self.offset
                + idx
                    .iter()
                    .zip(&self.strides)
                    .map(|(i, s)| i * s)
                    .sum::<u64>();
            let mut done = 0usize;
            let n = buf.len() / e;
            while done < n {
                // A run along the last axis (the whole tensor for a 0-d one).
                let (run, step) = match dims {
                    0 => (1, 0),
                    _ => (
                        ((self.shape[dims - 1] - idx[dims - 1]) as usize).min(n - done),
                        self.strides[dims - 1],
                    ),
                };
                let dst = &mut buf[done * e..(done + run) * e];
                if step == 1 {
                    let at = src as usize * e;
                    let bytes = storage
                        .get(at..at + run * e)
                        .ok_or_else(|| self.outside(files))?;
                    dst.copy_from_slice(bytes);
                } else {
                    for (k, d) in dst.chunks_exact_mut(e).enumerate() {
                        let at = (src + k as u64 * step) as usize * e;
                        let bytes = storage.get(at..at + e).ok_or_else(|| self.outside(files))?;
                        d.copy_from_slice(bytes);
                    }
                }
                if self.swap {
                    dst.chunks_exact_mut(e).for_each(|c| c.reverse());
                }
                done += run;
                if dims == 0 {
                    break;
                }
                // Next run: carry into the outer axes.
                src += run as u64 * step;
                idx[dims - 1] += run as u64;
                let mut a = dims - 1;
                while a > 0 && idx[a] == self.shape[a] {
                    src -= idx[a] * self.strides[a];
                    idx[a] = 0;
                    idx[a - 1] += 1;
                    src += self.strides[a - 1];
                    a -= 1;
                }
            }
            Ok(())
        })
    }
}

impl Gather {
    fn outside(&self, files: &Files) -> ReadError {
        ReadError::OutOfRange {
            file: files[self.storage.file].file.name.clone(),
            offset: self.storage.offset,
            len: self.storage.len,
            size: files[self.storage.file].file.len,
        }
    }
}

/// A computed tensor (a [`Gather`]) converted elementwise to another float
/// dtype, as [`Cast`] converts a source range.
#[derive(Debug)]
pub struct CastOf {
    inner: Arc<dyn Compute>,
    from: Dtype,
    to: Dtype,
}

impl CastOf {
    /// `inner` (elements of dtype `from`) as `to`; `None` if there is no
    /// conversion to make.
    pub fn new(inner: Arc<dyn Compute>, from: Dtype, to: Dtype) -> Option<CastOf> {
        Cast::converts(from, to).then_some(CastOf { inner, from, to })
    }
}

impl Compute for CastOf {
    fn extents(&self) -> Vec<Extent> {
        self.inner.extents()
    }

    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        let (w, u) = (width(self.from), width(self.to));
        let (first, n) = units_at(within, len, u, self.inner.len() / w);
        self.inner.extents_at(first * w, n * w)
    }

    fn len(&self) -> u64 {
        self.inner.len() / width(self.from) * width(self.to)
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let (w, u) = (width(self.from), width(self.to));
        by_units(offset, out, u, |first, buf| {
            let n = buf.len() as u64 / u;
            let mut src = vec![0u8; (n * w) as usize];
            self.inner.read_at(files, first * w, &mut src)?;
            convert(self.from, self.to, &src, buf)
        })
    }
}

/// A source range as a computation (the base of a transform that reads a
/// tensor passed through unchanged).
#[derive(Debug)]
pub struct SourceBytes(pub Extent);

impl Compute for SourceBytes {
    fn extents(&self) -> Vec<Extent> {
        vec![self.0]
    }

    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        let within = within.min(self.0.len);
        Some(vec![self.0.sub(within, len.min(self.0.len - within))])
    }

    fn len(&self) -> u64 {
        self.0.len
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        files.read_into(self.0.sub(offset, out.len() as u64), out)
    }

    fn as_source(&self) -> Option<Extent> {
        Some(self.0)
    }
}

/// Bytes in memory as a computation.
#[derive(Debug)]
pub struct Memory(pub Arc<[u8]>);

impl Compute for Memory {
    fn extents(&self) -> Vec<Extent> {
        Vec::new()
    }

    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, _: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        out.copy_from_slice(&self.0[offset as usize..offset as usize + out.len()]);
        Ok(())
    }
}

/// The rows of `inner` (`rows` rows of `row_bytes`) in the order that undoes
/// llama.cpp's Q/K permutation (`n_head` heads; transformers'
/// `reverse_permute_weights`): output row `h*2d + j*d + i` is input row
/// `h*2d + 2i + j`, with `d = rows / n_head / 2`. Whole rows move. With
/// `forward`, the permutation itself (llama.cpp's converter's `permute`):
/// output row `h*2d + 2i + j` is input row `h*2d + j*d + i`.
#[derive(Debug)]
pub struct RowsPermuted {
    pub inner: Arc<dyn Compute>,
    pub rows: u64,
    pub row_bytes: u64,
    pub n_head: u64,
    pub forward: bool,
}

impl RowsPermuted {
    fn source_row(&self, o: u64) -> u64 {
        let d = self.rows / self.n_head.max(1) / 2;
        if d == 0 {
            return o;
        }
        let (h, rest) = (o / (2 * d), o % (2 * d));
        if self.forward {
            let (i, j) = (rest / 2, rest % 2);
            return h * 2 * d + j * d + i;
        }
        let (j, i) = (rest / d, rest % d);
        h * 2 * d + 2 * i + j
    }
}

impl Compute for RowsPermuted {
    fn extents(&self) -> Vec<Extent> {
        self.inner.extents()
    }

    fn len(&self) -> u64 {
        self.rows * self.row_bytes
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let rb = self.row_bytes;
        by_units(offset, out, rb, |first, buf| {
            for (k, row) in buf.chunks_exact_mut(rb as usize).enumerate() {
                let src = self.source_row(first + k as u64);
                self.inner.read_at(files, src * rb, row)?;
            }
            Ok(())
        })
    }
}

/// A 2-D `[rows, cols]` computation transposed to `[cols, rows]`
/// (`elem`-byte elements).
#[derive(Debug)]
pub struct TransposeOf {
    pub inner: Arc<dyn Compute>,
    /// Matrices, one after another (1 for a 2-D tensor).
    pub batch: u64,
    pub rows: u64,
    pub cols: u64,
    pub elem: u64,
}

impl Compute for TransposeOf {
    fn extents(&self) -> Vec<Extent> {
        self.inner.extents()
    }

    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        let per = self.rows * self.cols * self.elem;
        let (b0, b1) = experts_at(within, len, per, self.batch);
        self.inner.extents_at(b0 * per, (b1 - b0) * per)
    }

    fn len(&self) -> u64 {
        self.batch * self.rows * self.cols * self.elem
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let (e, out_row) = (self.elem, self.rows * self.elem);
        by_units(offset, out, out_row, |first, buf| {
            // Output rows first.. are input columns of matrix first / cols:
            // per matrix, read that run of columns from every input row, then
            // scatter.
            let n = buf.len() as u64 / out_row;
            let mut g = first;
            while g < first + n {
                let (b, c0) = (g / self.cols, g % self.cols);
                let m = (self.cols - c0).min(first + n - g);
                let mut run = vec![0u8; (m * e) as usize];
                for r in 0..self.rows {
                    let at = ((b * self.rows + r) * self.cols + c0) * e;
                    self.inner.read_at(files, at, &mut run)?;
                    for c in 0..m {
                        let dst = (((g - first + c) * self.rows + r) * e) as usize;
                        buf[dst..dst + e as usize]
                            .copy_from_slice(&run[(c * e) as usize..((c + 1) * e) as usize]);
                    }
                }
                g += m;
            }
            Ok(())
        })
    }
}

/// Computations of one length interleaved element by element: element `k`
/// of every part in turn (`elem` bytes each).
#[derive(Debug)]
pub struct InterleaveOf {
    pub parts: Vec<Arc<dyn Compute>>,
    pub elem: u64,
}

impl Compute for InterleaveOf {
    fn extents(&self) -> Vec<Extent> {
        self.parts.iter().flat_map(|p| p.extents()).collect()
    }

    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        let (e, n) = (self.elem, self.parts.len() as u64);
        let units = self.parts.first().map_or(0, |p| p.len() / e.max(1));
        let (first, count) = units_at(within, len, n * e, units);
        let mut out = Vec::new();
        for part in &self.parts {
            out.extend(part.extents_at(first * e, count * e)?);
        }
        Some(out)
    }

    fn len(&self) -> u64 {
        self.parts.iter().map(|p| p.len()).sum()
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let (e, n) = (self.elem as usize, self.parts.len());
        by_units(offset, out, (n * e) as u64, |first, buf| {
            let m = buf.len() / (n * e);
            let mut run = vec![0u8; m * e];
            for (j, part) in self.parts.iter().enumerate() {
                part.read_at(files, first * e as u64, &mut run)?;
                for k in 0..m {
                    let dst = (k * n + j) * e;
                    buf[dst..dst + e].copy_from_slice(&run[k * e..(k + 1) * e]);
                }
            }
            Ok(())
        })
    }
}

/// Computations concatenated along an axis: `outer` slices, slice `o` being
/// slice `o` of every part in turn (part `k`'s slices are `parts[k].1`
/// bytes).
#[derive(Debug)]
pub struct ConcatOf {
    pub parts: Vec<(Arc<dyn Compute>, u64)>,
    pub outer: u64,
}

impl Compute for ConcatOf {
    fn extents(&self) -> Vec<Extent> {
        self.parts.iter().flat_map(|p| p.0.extents()).collect()
    }

    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        // Whole outer rows: a superset, exact for reads of whole rows.
        let slice: u64 = self.parts.iter().map(|p| p.1).sum();
        let (o0, o1) = experts_at(within, len, slice, self.outer);
        let mut out = Vec::new();
        for (part, n) in &self.parts {
            out.extend(part.extents_at(o0 * n, (o1 - o0) * n)?);
        }
        Some(out)
    }

    fn len(&self) -> u64 {
        self.outer * self.parts.iter().map(|p| p.1).sum::<u64>()
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let slice: u64 = self.parts.iter().map(|p| p.1).sum();
        let mut at = offset;
        let mut done = 0usize;
        while done < out.len() {
            let (o, mut within) = (at / slice, at % slice);
            for (part, n) in &self.parts {
                if within >= *n {
                    within -= n;
                    continue;
                }
                let take = ((n - within) as usize).min(out.len() - done);
                part.read_at(files, o * n + within, &mut out[done..done + take])?;
                done += take;
                at += take as u64;
                break;
            }
        }
        Ok(())
    }
}

/// Where a computation's float32 values come from.
#[derive(Debug, Clone, Copy)]
pub enum ValuesOf {
    /// A GGUF block-quantized tensor (gguf-py's float32 values).
    Ggml(quant::ggml::GgmlType),
    /// A float tensor of this dtype.
    Float(Dtype),
}

/// `value` added to every element of a source tensor, in float32 (one IEEE
/// addition), then written as `to` with one rounding (GGUF norm offsets:
/// llama.cpp stores Gemma's `w` as `w + 1`; transformers computes `w - 1` in
/// float32 numpy, then casts).
#[derive(Debug)]
pub struct AddScalar {
    pub src: Extent,
    pub source: ValuesOf,
    pub value: f32,
    pub to: Dtype,
}

impl Compute for AddScalar {
    fn extents(&self) -> Vec<Extent> {
        vec![self.src]
    }

    fn len(&self) -> u64 {
        let n = match self.source {
            ValuesOf::Ggml(ty) => self.src.len / ty.type_size() * ty.block_size(),
            ValuesOf::Float(d) => self.src.len / width(d),
        };
        n * width(self.to)
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let (per, src_bytes) = match self.source {
            ValuesOf::Ggml(ty) => (ty.block_size(), ty.type_size()),
            ValuesOf::Float(d) => (1, width(d)),
        };
        let u = width(self.to);
        by_units(offset, out, per * u, |first, buf| {
            let n = buf.len() as u64 / (per * u);
            let src = files.bytes(self.src.sub(first * src_bytes, n * src_bytes))?;
            let mut vals = vec![0f32; (n * per) as usize];
            match self.source {
                ValuesOf::Ggml(ty) => quant::ggml::dequantize_f32(ty, src, &mut vals)?,
                ValuesOf::Float(d) => quant::wide::float_to_f32(d, src, &mut vals)?,
            }
            vals.iter_mut().for_each(|v| *v += self.value);
            match self.to {
                Dtype::BF16 => {
                    for (v, o) in vals.iter().zip(buf.chunks_exact_mut(2)) {
                        o.copy_from_slice(&quant::bf16::from_f32(*v).to_le_bytes());
                    }
                    Ok(())
                }
                to => Ok(quant::wide::encode(&vals, to, buf)?),
            }
        })
    }
}

/// `len` zero bytes (a synthesized tensor).
#[derive(Debug)]
pub struct Zeros {
    pub len: u64,
}

impl Compute for Zeros {
    fn extents(&self) -> Vec<Extent> {
        Vec::new()
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, _: &Files, _: u64, out: &mut [u8]) -> Result<(), ReadError> {
        out.fill(0);
        Ok(())
    }
}

/// A window `[offset, offset + len)` of another computed output (an
/// expert's slice of a dequantized tensor, a row range).
#[derive(Debug)]
pub struct Window {
    pub inner: Arc<dyn Compute>,
    pub offset: u64,
    pub len: u64,
}

impl Compute for Window {
    fn extents(&self) -> Vec<Extent> {
        self.inner.extents()
    }

    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        self.inner.extents_at(self.offset + within, len)
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        self.inner.read_at(files, self.offset + offset, out)
    }

    fn as_source(&self) -> Option<Extent> {
        let e = self.inner.as_source()?;
        (self.offset.checked_add(self.len)? <= e.len).then(|| e.sub(self.offset, self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_units_handles_every_alignment() {
        // Output: unit u holds bytes [u*10 .. u*10+9] as (u * 10 + k) % 251.
        let unit = 10u64;
        let whole: Vec<u8> = (0..200u64).map(|i| (i % 251) as u8).collect();
        for off in 0..60u64 {
            for len in 0..45usize {
                let mut out = vec![0u8; len];
                by_units(off, &mut out, unit, |first, buf| {
                    assert_eq!(buf.len() as u64 % unit, 0);
                    for (k, b) in buf.iter_mut().enumerate() {
                        *b = ((first * unit + k as u64) % 251) as u8;
                    }
                    Ok(())
                })
                .unwrap();
                assert_eq!(&out[..], &whole[off as usize..off as usize + len]);
            }
        }
    }

    #[test]
    fn unpacked_steps_start_on_units_after_the_first() {
        // a read from any element: the steps cover it in order, none longer
        // than `step`, every one after the first starting on a multiple
        let step = 96usize;
        for at0 in [0u64, 1, 95, 96, 97, 1000] {
            for n in [0usize, 1, 95, 96, 97, 500] {
                let (mut at, mut left, mut first) = (at0, n, true);
                while left > 0 {
                    let k = step_len(at, left, step);
                    assert!(k > 0 && k <= step.min(left), "{at0}+{n}: {k} at {at}");
                    if !first {
                        assert_eq!(at % step as u64, 0, "{at0}+{n}: a step at {at}");
                    }
                    (at, left, first) = (at + k as u64, left - k, false);
                }
                assert_eq!(at, at0 + n as u64);
            }
        }
    }

    /// A dequantizer whose element `i` is `i + 0.5`, with units of 7 of its
    /// 100 elements; it records the ranges asked of it.
    #[derive(Debug, Default)]
    struct Counting(std::sync::Mutex<Vec<(u64, usize)>>);

    impl quant::packed::Unpack for Counting {
        fn scheme(&self) -> &'static str {
            "counting"
        }
        fn params(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn roles(&self) -> &'static [&'static str] {
            &[]
        }
        fn shape(&self) -> &[u64] {
            &[100]
        }
        fn unit(&self) -> u64 {
            7
        }
        fn values(&self, _: &[&[u8]], first: u64, out: &mut [f32]) -> Result<(), KernelError> {
            self.0.lock().unwrap().push((first, out.len()));
            for (k, v) in out.iter_mut().enumerate() {
                *v = (first + k as u64) as f32 + 0.5;
            }
            Ok(())
        }
    }

    #[test]
    fn unpacked_computes_whole_units_only() {
        let want: Vec<u8> = (0..100)
            .flat_map(|i| quant::bf16::from_f32(i as f32 + 0.5).to_le_bytes())
            .collect();
        let files = Files::default();
        for offset in 0..200u64 {
            for len in [1usize, 2, 13, 14, 15, 50, 199] {
                let len = len.min(200 - offset as usize);
                let c = Arc::new(Counting::default());
                let x = Unpacked {
                    parts: Vec::new(),
                    unpack: c.clone(),
                    to: Dtype::BF16,
                };
                let mut out = vec![0u8; len];
                x.read_at(&files, offset, &mut out).unwrap();
                assert_eq!(
                    out,
                    want[offset as usize..offset as usize + len],
                    "{offset}+{len}"
                );
                for &(first, n) in c.0.lock().unwrap().iter() {
                    assert!(
                        first % 7 == 0 && (n % 7 == 0 || first + n as u64 == 100),
                        "{offset}+{len}: values({first}, {n})"
                    );
                }
            }
        }
    }

    fn files_of(bytes: &[u8]) -> (tempfile::TempDir, Files) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, bytes).unwrap();
        let mut files = Files::default();
        let f = crate::store::Opener::local().open(&p, "s".into()).unwrap();
        files.push(f, Default::default(), crate::catalog::FileRole::Tensors);
        (dir, files)
    }

    /// Every view shape against a naive index computation, at every offset
    /// and length.
    #[test]
    fn gather_matches_naive_indexing() {
        let storage: Vec<u8> = (0..=255u8).collect();
        let (_d, files) = files_of(&storage);
        let cases: &[(&[u64], &[u64], u64, u64)] = &[
            (&[3, 4], &[1, 3], 2, 2),        // transposed
            (&[2, 3, 2], &[12, 1, 5], 1, 2), // mixed
            (&[5], &[3], 7, 4),              // stepped
            (&[2, 3], &[0, 1], 0, 2),        // expanded
            (&[], &[], 9, 4),                // 0-d
            (&[2, 0, 3], &[3, 3, 1], 0, 2),  // empty
        ];
        for &(shape, strides, offset, elem) in cases {
            for swap in [false, true] {
                let g = Gather {
                    storage: Extent {
                        file: crate::catalog::FileId(0),
                        offset: 0,
                        len: 256,
                    },
                    elem,
                    offset,
                    shape: shape.to_vec(),
                    strides: strides.to_vec(),
                    swap,
                };
                let numel: u64 = shape.iter().product();
                let mut want = Vec::new();
                for i in 0..numel {
                    let (mut rest, mut src) = (i, offset);
                    for a in (0..shape.len()).rev() {
                        src += rest % shape[a] * strides[a];
                        rest /= shape[a];
                    }
                    let mut el =
                        storage[(src * elem) as usize..((src + 1) * elem) as usize].to_vec();
                    if swap {
                        el.reverse();
                    }
                    want.extend(el);
                }
                assert_eq!(g.len(), want.len() as u64);
                for off in 0..want.len() {
                    for len in [0, 1, 3, 7, want.len()] {
                        let len = len.min(want.len() - off);
                        let mut out = vec![0u8; len];
                        g.read_at(&files, off as u64, &mut out).unwrap();
                        assert_eq!(
                            out,
                            want[off..off + len],
                            "{shape:?} {strides:?} {off}+{len}"
                        );
                    }
                }
            }
        }
    }

    /// The transcoded fast path for GGUF MXFP4 experts gives the bytes of
    /// the generic transposes (and interleave) of ggml's dequantization, at
    /// every offset, for every scale byte; code 8 (-0 for Hugging Face, +0
    /// for ggml) reads +0.
    #[test]
    fn gguf_mxfp4_experts_match_the_generic_transpose() {
        let (experts, rows, groups) = (2u64, 32u64, 4u64);
        let per = experts * rows * groups * 17;
        let mut bytes = Vec::new();
        let mut x = 0x9E37_79B9u32;
        for part in 0..2 {
            for b in 0..per / 17 {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                // every scale byte, in both parts
                let scale = (b * 7 + part * 3) as u8;
                bytes.push(scale);
                for _ in 0..16 {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    bytes.push(if x >> 31 == 0 { 0x88 } else { (x >> 20) as u8 });
                }
            }
        }
        let (_d, files) = files_of(&bytes);
        let ext = |i: u64| Extent {
            file: crate::catalog::FileId(0),
            offset: i * per,
            len: per,
        };
        for to in [Dtype::BF16, Dtype::F32] {
            let w = width(to);
            let slow = |i: u64| -> Arc<dyn Compute> {
                Arc::new(TransposeOf {
                    inner: Arc::new(GgmlDequant {
                        src: ext(i),
                        ty: quant::ggml::GgmlType::MXFP4,
                        to,
                    }),
                    batch: experts,
                    rows,
                    cols: groups * 32,
                    elem: w,
                })
            };
            for parts in [vec![0], vec![0, 1]] {
                let generic: Arc<dyn Compute> = match parts.len() {
                    1 => slow(0),
                    _ => Arc::new(InterleaveOf {
                        parts: parts.iter().map(|&i| slow(i)).collect(),
                        elem: w,
                    }),
                };
                let fast = GgufMxfp4Transposed {
                    parts: parts.iter().map(|&i| ext(i)).collect(),
                    experts,
                    rows,
                    groups,
                    to,
                };
                let n = generic.len() as usize;
                assert_eq!(fast.len(), n as u64);
                let mut want = vec![0u8; n];
                generic.read_at(&files, 0, &mut want).unwrap();
                for off in (0..n).step_by(5) {
                    for len in [1, 6, 64, 700, n] {
                        let len = len.min(n - off);
                        let mut got = vec![0u8; len];
                        fast.read_at(&files, off as u64, &mut got).unwrap();
                        assert_eq!(got, want[off..off + len], "{to:?} {parts:?} {off}+{len}");
                    }
                }
                // +0 for code 8: no -0 anywhere
                let zero_neg = match to {
                    Dtype::BF16 => want.chunks(2).any(|c| c == [0x00, 0x80]),
                    _ => want.chunks(4).any(|c| c == [0, 0, 0, 0x80]),
                };
                assert!(!zero_neg);
            }
        }
    }
}
