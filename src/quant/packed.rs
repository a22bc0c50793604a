//! Weights that a quantization library stores as several tensors (packed
//! integer codes, scales, zero points, group indices, ...), and the one
//! interface their dequantizers implement: [`Unpack`].
//!
//! A format module (`gptq`, `mlx`, ...) implements [`Unpack`] for its
//! geometry (bits, group size, the shapes of its parts), validated when the
//! source is recognised (`source::quantized`), so that every part has exactly
//! the bytes the geometry says. `Unpack::values` then decodes any run of the
//! output's elements (row-major) as the f32 values the library's own
//! dequantization gives (each exactly representable in the library's output
//! dtype); the view rounds them once to its dtype (`wide::encode`,
//! `bf16::from_f32`).

use std::fmt;

use serde_json::Value;

use super::KernelError;

/// A packed weight's dequantizer.
pub trait Unpack: Send + Sync + fmt::Debug {
    /// The scheme's name in Gyro headers and the manifest (`"gptq"`).
    fn scheme(&self) -> &'static str;

    /// Its parameters as recorded (a JSON object: bits, group size, ...).
    fn params(&self) -> Value;

    /// The role of each part, in the order the parts are given to
    /// [`Unpack::values`] (`["qweight", "qzeros", "scales", "g_idx"]`).
    fn roles(&self) -> &'static [&'static str];

    /// The output's shape (row-major).
    fn shape(&self) -> &[u64];

    /// Output elements a call of [`Unpack::values`] is cheapest at a
    /// multiple of (a row, a group of 64); `values` accepts any range.
    fn unit(&self) -> u64 {
        1
    }

    /// Output elements `first .. first + out.len()`, decoded from `parts`
    /// (whole stored tensors, in [`Unpack::roles`] order) as f32. Refuses,
    /// never panics, when a part's length or the range does not fit.
    fn values(&self, parts: &[&[u8]], first: u64, out: &mut [f32]) -> Result<(), KernelError>;
}

/// Check that `parts` has one slice per role, each of `expected` bytes.
pub fn check_parts(
    kernel: &'static str,
    roles: &'static [&'static str],
    parts: &[&[u8]],
    expected: &[usize],
) -> Result<(), KernelError> {
    if parts.len() != roles.len() || expected.len() != roles.len() {
        return Err(KernelError::Shape {
            kernel,
            why: format!("{} parts given, {} expected", parts.len(), roles.len()),
        });
    }
    for ((p, &e), &what) in parts.iter().zip(expected).zip(roles) {
        if p.len() != e {
            return Err(KernelError::Length {
                kernel,
                what,
                got: p.len(),
                expected: e,
            });
        }
    }
    Ok(())
}

/// Check that elements `first .. first + n` lie within `total`.
pub fn check_range(
    kernel: &'static str,
    first: u64,
    n: usize,
    total: u64,
) -> Result<(), KernelError> {
    match first.checked_add(n as u64) {
        Some(end) if end <= total => Ok(()),
        _ => Err(KernelError::Shape {
            kernel,
            why: format!("elements {first}..+{n} are outside the {total} of the tensor"),
        }),
    }
}

/// Split output elements `first .. first + out.len()` of a row-major
/// `[rows, cols]` output into runs of whole rows (`whole(row0, row1, out)`)
/// and parts of one row (`part(row, col0, out)`), in order.
pub fn by_rows(
    first: u64,
    out: &mut [f32],
    cols: usize,
    mut whole: impl FnMut(usize, usize, &mut [f32]) -> Result<(), KernelError>,
    mut part: impl FnMut(usize, usize, &mut [f32]) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    if cols == 0 && !out.is_empty() {
        return Err(KernelError::Shape {
            kernel: "packed::by_rows",
            why: "rows of no elements".into(),
        });
    }
    let n = cols as u64;
    let mut done = 0usize;
    while done < out.len() {
        let e = first + done as u64;
        let (row, col) = ((e / n) as usize, (e % n) as usize);
        let left = out.len() - done;
        if col == 0 && left >= cols {
            let k = left / cols * cols;
            whole(row, row + left / cols, &mut out[done..done + k])?;
            done += k;
        } else {
            let k = (cols - col).min(left);
            part(row, col, &mut out[done..done + k])?;
            done += k;
        }
    }
    Ok(())
}
