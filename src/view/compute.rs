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

use crate::catalog::Tensor;
use crate::dtype::Dtype;
use crate::error::ReadError;
use crate::quant;
use crate::source::mapped::SourceFile;
use crate::view::Compute;

/// A byte range of a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub file: usize,
    pub offset: u64,
    pub len: u64,
}

impl Extent {
    pub fn of(t: &Tensor) -> Extent {
        Extent {
            file: t.file,
            offset: t.start,
            len: t.len(),
        }
    }

    /// `len` bytes starting `offset` bytes in.
    pub fn sub(&self, offset: u64, len: u64) -> Extent {
        debug_assert!(offset + len <= self.len);
        Extent {
            file: self.file,
            offset: self.offset + offset,
            len,
        }
    }

    pub fn bytes<'a>(&self, files: &'a [SourceFile]) -> Result<&'a [u8], ReadError> {
        files[self.file].bytes(self.offset, self.len)
    }
}

fn kernel_err(e: quant::KernelError) -> ReadError {
    ReadError::Compute(e.to_string())
}

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
    pub src: Extent,
    pub from: Dtype,
}

impl Cast {
    /// The dtypes [`Cast`] converts.
    pub fn supports(d: Dtype) -> bool {
        matches!(
            d,
            Dtype::F16 | Dtype::F32 | Dtype::F64 | Dtype::F8_E4M3 | Dtype::F8_E5M2
        )
    }

    fn width(&self) -> u64 {
        self.from.bits() / 8
    }
}

impl Compute for Cast {
    fn len(&self) -> u64 {
        self.src.len / self.width() * 2
    }

    fn read_at(&self, files: &[SourceFile], offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let w = self.width();
        by_units(offset, out, 2, |first, buf| {
            let n = buf.len() as u64 / 2;
            let src = self.src.sub(first * w, n * w).bytes(files)?;
            match self.from {
                Dtype::F16 => quant::float::f16_to_bf16(src, buf),
                Dtype::F32 => quant::float::f32_to_bf16(src, buf),
                Dtype::F64 => quant::float::f64_to_bf16(src, buf),
                Dtype::F8_E4M3 => quant::fp8::e4m3_to_bf16(src, buf),
                Dtype::F8_E5M2 => quant::fp8::e5m2_to_bf16(src, buf),
                other => {
                    return Err(ReadError::Compute(format!("no BF16 cast from {other}")));
                }
            }
            .map_err(kernel_err)
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
    fn len(&self) -> u64 {
        self.scales.len * 32 * 2
    }

    fn read_at(&self, files: &[SourceFile], offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let blocks = self.blocks.bytes(files)?;
        let scales = self.scales.bytes(files)?;
        by_units(offset, out, 2, |first, buf| {
            quant::mxfp4::dequant_range_le(blocks, scales, first as usize, buf).map_err(kernel_err)
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
        files: &'a [SourceFile],
        e: u64,
    ) -> Result<(&'a [u8], &'a [u8]), ReadError> {
        let n = self.rows * self.groups;
        let blocks = self.blocks.sub(e * n * 16, n * 16).bytes(files)?;
        let scales = self.scales.sub(e * n, n).bytes(files)?;
        Ok((blocks, scales))
    }
}

impl Compute for Mxfp4Transposed {
    fn len(&self) -> u64 {
        self.experts * self.cols() * self.rows * 2
    }

    fn read_at(&self, files: &[SourceFile], offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
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
                quant::mxfp4::dequant_transposed_le(blocks, scales, r, g, c0, c1, now)
                    .map_err(kernel_err)?;
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
    fn len(&self) -> u64 {
        self.weight.len * 2
    }

    fn read_at(&self, files: &[SourceFile], offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let scale_inv = self.scale_inv.bytes(files)?;
        by_units(offset, out, 2, |first, buf| {
            let n = buf.len() as u64 / 2;
            let weight = self.weight.sub(first, n).bytes(files)?;
            self.geometry
                .dequant_le(weight, first as usize, scale_inv, buf)
                .map_err(kernel_err)
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
    fn len(&self) -> u64 {
        self.src.len / self.ty.type_size() * self.ty.block_size() * 2
    }

    fn read_at(&self, files: &[SourceFile], offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let (bs, ts) = (self.ty.block_size(), self.ty.type_size());
        by_units(offset, out, bs * 2, |first, buf| {
            let n = buf.len() as u64 / (bs * 2);
            let blocks = self.src.sub(first * ts, n * ts).bytes(files)?;
            quant::ggml::dequantize(self.ty, blocks, buf)
                .map_err(|e| ReadError::Compute(e.to_string()))
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
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, files: &[SourceFile], offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
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
