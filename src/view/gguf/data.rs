//! The bytes of a GGUF tensor, computed on read: float32 values made from
//! the Hugging Face folder view's tensors (each in float32: exact for every
//! float source) by the tensor's transform, then written in its type one
//! row at a time ([`Encoded`]), so a partial read computes only its rows.

use std::sync::Arc;

use crate::catalog::{Extent, Files};
use crate::dtype::Dtype;
use crate::error::ReadError;
use crate::quant::float::f16_to_f32;
use crate::quant::ggml::GgmlType;
use crate::quant::ggml_encode;
use crate::quant::wide::f16_from_f32;
use crate::view::compute::{
    ConcatOf, Memory, RowsPermuted, SourceBytes, TransposeOf, Window, by_units,
};
use crate::view::gguf::model::Values;
use crate::view::hf::HfView;
use crate::view::{Compute, Segment};

/// The float32 values (little-endian bytes) of `v`, from the tensors of
/// `hf` (a Hugging Face folder view), with `shape` the output's.
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
        Values::Hf(i) => f32_of(*i),
        Values::Permuted { hf: i, n_head } => {
            let s = shape(*i);
            let rows = s.first().copied().unwrap_or(1);
            let row_bytes = s[1..].iter().product::<u64>() * 4;
            Arc::new(RowsPermuted {
                inner: f32_of(*i),
                rows,
                row_bytes,
                n_head: *n_head,
                forward: true,
            })
        }
        Values::PlusOne { hf: i, f16 } => Arc::new(PlusOne {
            inner: f32_of(*i),
            f16: *f16,
        }),
        Values::Transposed(i) => {
            let s = shape(*i);
            Arc::new(TransposeOf {
                inner: f32_of(*i),
                batch: 1,
                rows: s[0],
                cols: s.get(1).copied().unwrap_or(1),
                elem: 4,
            })
        }
        Values::Stacked(ids) => Arc::new(ConcatOf {
            parts: ids
                .iter()
                .map(|&i| {
                    let c = f32_of(i);
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
        } => rows(f32_of(*i), &shape(*i), *start, *count, 4),
        Values::Generated(vals) => {
            let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            Arc::new(Memory(bytes.into()))
        }
    }
}

/// The bytes of `v` in `dtype` (F32, F16 or BF16) without going through
/// float32, when that gives the same bytes: every tensor it reads is stored
/// in `dtype` and passed through by the folder view, and the transform only
/// moves values (a permutation, a stack, a transpose, a run of rows). `None`
/// otherwise. (BF16 to BF16 this keeps a signaling NaN as it is, where the
/// converter, through float32, makes it quiet.)
pub fn moved(
    catalog: &crate::catalog::Catalog,
    hf: &HfView,
    v: &Values,
    dtype: Dtype,
) -> Option<Arc<dyn Compute>> {
    let ids: Vec<u32> = match v {
        Values::Hf(i) | Values::Permuted { hf: i, .. } | Values::Transposed(i) => vec![*i],
        Values::Rows { hf: i, .. } => vec![*i],
        Values::Stacked(ids) => ids.clone(),
        Values::PlusOne { .. } | Values::Generated(_) => return None,
    };
    let lossless = |i: u32| {
        let p = &hf.plans[i as usize];
        p.is_elementwise() && p.source_dtype(catalog) == Some(dtype)
    };
    if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) || !ids.iter().all(|&i| lossless(i))
    {
        return None;
    }
    let elem = dtype.bits() / 8;
    let of = |i: u32| joined(hf.plans[i as usize].entry(catalog, dtype).data);
    let shape = |i: u32| hf.plans[i as usize].info(catalog, dtype).1.into_owned();
    Some(match v {
        Values::Hf(i) => of(*i),
        Values::Permuted { hf: i, n_head } => {
            let s = shape(*i);
            Arc::new(RowsPermuted {
                inner: of(*i),
                rows: s.first().copied().unwrap_or(1),
                row_bytes: s[1..].iter().product::<u64>() * elem,
                n_head: *n_head,
                forward: true,
            })
        }
        Values::Transposed(i) => {
            let s = shape(*i);
            Arc::new(TransposeOf {
                inner: of(*i),
                batch: 1,
                rows: s[0],
                cols: s.get(1).copied().unwrap_or(1),
                elem,
            })
        }
        Values::Stacked(ids) => Arc::new(ConcatOf {
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
        } => rows(of(*i), &shape(*i), *start, *count, elem),
        Values::PlusOne { .. } | Values::Generated(_) => return None,
    })
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

/// Float32 values written as ggml type `ty`, row by row (`row` values per
/// row; whole blocks).
#[derive(Debug)]
pub struct Encoded {
    pub values: Arc<dyn Compute>,
    pub ty: GgmlType,
    pub row: u64,
}

impl Encoded {
    fn row_bytes(&self) -> u64 {
        ggml_encode::encoded_len(self.ty, self.row).unwrap_or(0)
    }
}

impl Compute for Encoded {
    fn len(&self) -> u64 {
        let rows = self.values.len() / 4 / self.row.max(1);
        rows * self.row_bytes()
    }

    fn extents(&self) -> Vec<Extent> {
        self.values.extents()
    }

    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        let rb = self.row_bytes().max(1);
        let first = within / rb;
        let end = within.saturating_add(len).div_ceil(rb);
        let vb = self.row * 4;
        self.values.extents_at(first * vb, (end - first) * vb)
    }

    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let rb = self.row_bytes();
        by_units(offset, out, rb, |first, buf| {
            let rows = buf.len() / rb as usize;
            let mut raw = vec![0u8; rows * self.row as usize * 4];
            self.values.read_at(files, first * self.row * 4, &mut raw)?;
            let vals: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            for (v, o) in vals
                .chunks_exact(self.row as usize)
                .zip(buf.chunks_exact_mut(rb as usize))
            {
                ggml_encode::encode(self.ty, v, o)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
