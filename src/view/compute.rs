//! Computed segments: BF16 bytes produced on demand from source bytes.
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

use crate::catalog::{Extent, Files};
use crate::dtype::Dtype;
use crate::error::ReadError;
use crate::quant::{self, KernelError};
use crate::view::Compute;

/// Fill `out` with output bytes `[offset, offset + out.len())` of an output
/// made of `unit`-byte units, where `fill(first, buf)` computes the whole
/// units `first..first + buf.len() / unit`. Whole units are computed straight
/// into `out`; a partial unit at either end goes through a one-unit buffer.
fn by_units(
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

/// Elementwise conversion of a source tensor (F16, F32, F64, F8_E4M3,
/// F8_E5M2) to BF16.
#[derive(Debug)]
pub struct Cast {
    src: Extent,
    /// Bytes per source element.
    width: u64,
    kernel: CastKernel,
}

type CastKernel = fn(&[u8], &mut [u8]) -> Result<(), KernelError>;

/// The BF16 kernel for elements of `from`, if gyrofs converts them.
fn cast_kernel(from: Dtype) -> Option<CastKernel> {
    Some(match from {
        Dtype::F16 => quant::float::f16_to_bf16,
        Dtype::F32 => quant::float::f32_to_bf16,
        Dtype::F64 => quant::float::f64_to_bf16,
        Dtype::F8_E4M3 => quant::fp8::e4m3_to_bf16,
        Dtype::F8_E5M2 => quant::fp8::e5m2_to_bf16,
        _ => return None,
    })
}

impl Cast {
    /// Does gyrofs convert elements of `from` to BF16? (BF16 itself, integers
    /// and the rest pass through unchanged.)
    pub fn converts(from: Dtype) -> bool {
        cast_kernel(from).is_some()
    }

    /// The cast of `src`, elements of dtype `from`; `None` if gyrofs does
    /// not convert `from` to BF16.
    pub fn new(src: Extent, from: Dtype) -> Option<Cast> {
        Some(Cast {
            src,
            width: from.bits() / 8,
            kernel: cast_kernel(from)?,
        })
    }
}

impl Compute for Cast {
    fn extents(&self) -> Vec<Extent> {
        vec![self.src]
    }

    fn len(&self) -> u64 {
        self.src.len / self.width * 2
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let w = self.width;
        by_units(offset, out, 2, |first, buf| {
            let n = buf.len() as u64 / 2;
            let src = files.bytes(self.src.sub(first * w, n * w))?;
            Ok((self.kernel)(src, buf)?)
        })
    }
}

/// An MXFP4 pair dequantized in its natural layout: blocks `[.., R, G, 16]`
/// and scales `[.., R, G]` become BF16 `[.., R, G * 32]`.
#[derive(Debug)]
pub struct Mxfp4 {
    pub blocks: Extent,
    pub scales: Extent,
}

impl Compute for Mxfp4 {
    fn extents(&self) -> Vec<Extent> {
        vec![self.blocks, self.scales]
    }

    fn len(&self) -> u64 {
        self.scales.len * 32 * 2
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let blocks = files.bytes(self.blocks)?;
        let scales = files.bytes(self.scales)?;
        by_units(offset, out, 2, |first, buf| {
            Ok(quant::mxfp4::dequant_range_le(
                blocks,
                scales,
                first as usize,
                buf,
            )?)
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

    fn len(&self) -> u64 {
        self.experts * self.cols() * self.rows * 2
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let (r, g) = (self.rows as usize, self.groups as usize);
        let cols = self.cols();
        let row_bytes = self.rows * 2;
        by_units(offset, out, row_bytes, |first, buf| {
            let mut row = first;
            let end = first + buf.len() as u64 / row_bytes;
            let mut dst = buf;
            while row < end {
                let e = row / cols;
                let c0 = (row % cols) as usize;
                let c1 = ((end - e * cols).min(cols)) as usize;
                let (blocks, scales) = self.expert_source(files, e)?;
                let (now, later) = dst.split_at_mut((c1 - c0) * r * 2);
                quant::mxfp4::dequant_transposed_le(blocks, scales, r, g, c0, c1, now)?;
                dst = later;
                row += (c1 - c0) as u64;
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
}

impl Compute for Fp8Block {
    fn extents(&self) -> Vec<Extent> {
        vec![self.weight, self.scale_inv]
    }

    fn len(&self) -> u64 {
        self.weight.len * 2
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let scale_inv = files.bytes(self.scale_inv)?;
        by_units(offset, out, 2, |first, buf| {
            let n = buf.len() as u64 / 2;
            let weight = files.bytes(self.weight.sub(first, n))?;
            Ok(self
                .geometry
                .dequant_le(weight, first as usize, scale_inv, buf)?)
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
}

impl Compute for GgmlDequant {
    fn extents(&self) -> Vec<Extent> {
        vec![self.src]
    }

    fn len(&self) -> u64 {
        self.src.len / self.ty.type_size() * self.ty.block_size() * 2
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let (bs, ts) = (self.ty.block_size(), self.ty.type_size());
        by_units(offset, out, bs * 2, |first, buf| {
            let n = buf.len() as u64 / (bs * 2);
            let blocks = files.bytes(self.src.sub(first * ts, n * ts))?;
            Ok(quant::ggml::dequantize(self.ty, blocks, buf)?)
        })
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

    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        self.inner.read_at(files, self.offset + offset, out)
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
}
