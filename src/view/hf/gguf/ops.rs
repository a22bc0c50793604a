//! The operations that turn GGUF tensors into Hugging Face tensors, with
//! their reference implementations.
//!
//! Every [`Op`] works on the float32 values of its GGUF source tensors, as
//! `crate::quant::ggml::dequantize_f32` gives them (gguf-py's
//! `gguf.quants.dequantize`, which is what transformers' GGUF loader calls),
//! laid out in numpy order (row-major over the logical shape, the reverse of
//! ggml's `ne`). Each result value is then rounded **once** to BF16
//! (`crate::quant::bf16::from_f32`): transformers computes the transform in
//! float32 numpy (or torch) and calls `.to(torch.bfloat16)` on the result
//! (`load_gguf_checkpoint(..., torch_dtype=bfloat16)`), and every op below is
//! either a pure movement of values or one f32 addition, so there is nothing
//! else to round.
//!
//! [`Op::apply`] is the reference: simple, allocation-happy, used by the tests
//! and meant to check a lazy implementation against.

use super::error::OpError;

/// How one Hugging Face tensor is computed from GGUF tensors (named by their
/// GGUF names). Shapes are numpy order; `out` is the Hugging Face tensor's
/// shape ([`super::HfTensor::shape`]), whose element count always equals the
/// op's output count.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `out[i] = src[i]`: the values as they are, in the same order (the
    /// shape may differ by a reshape, e.g. an added axis of 1).
    Same { source: String },
    /// llama.cpp's Q/K row permutation undone, exactly as transformers'
    /// `LlamaTensorProcessor._reverse_permute_weights`:
    /// `w.reshape(n_head, dim, 2, *rest).swapaxes(2, 1).reshape(w.shape)`
    /// with `dim = rows / n_head / 2`. The source is `[rows, cols]` (or a
    /// bias `[rows]`, `cols = 1`); output row `h*2*dim + j*dim + i` is
    /// input row `h*2*dim + i*2 + j` (`h < n_head, i < dim, j < 2`). Whole
    /// rows move: a quantized row stays one run of blocks.
    UnpermuteRows { source: String, n_head: u64 },
    /// `out[i] = src[i] + value`, one IEEE f32 addition, round to nearest
    /// even (numpy `w - 1` on a float32 array is `w + (-1.0f32)`: Gemma and
    /// Nemotron norms, stored by llama.cpp as `w + 1`).
    AddScalar { source: String, value: f32 },
    /// The last two axes swapped: a `[rows, cols]` source gives
    /// `out[c][r] = src[r][c]`, shape `[cols, rows]` (GPT-2's Conv1D
    /// weights, which llama.cpp stores as `nn.Linear` `[out, in]`); a
    /// `[B, rows, cols]` one does that for each of its `B` matrices
    /// (gpt-oss's `ffn_down_exps` `[E, H, I]` into `down_proj` `[E, I, H]`).
    Transpose { source: String },
    /// Sources of equal shape except along `axis`, concatenated along it
    /// (numpy `np.concatenate(sources, axis)`), e.g. an MoE layer's
    /// `ffn_gate_exps` `[E, I, H]` and `ffn_up_exps` `[E, I, H]` into
    /// `gate_up_proj` `[E, 2I, H]` (`axis = 1`).
    Concat { sources: Vec<String>, axis: usize },
    /// Sources of one shape (each with its last two axes swapped first when
    /// `transpose`), interleaved element by element along the last axis:
    /// `out[..., k * n + j] = src_j[..., k]` for `n` sources. gpt-oss's
    /// `gate_up_proj` `[E, H, 2I]` holds gate and up alternately
    /// (`gate_up[..., ::2]` is gate); llama.cpp stores them apart as
    /// `ffn_gate_exps` / `ffn_up_exps` `[E, I, H]` (and the biases `[E, I]`,
    /// not transposed).
    Interleave {
        sources: Vec<String>,
        transpose: bool,
    },
}

/// One source tensor's values for [`Op::apply`]: its numpy shape and f32
/// values (row-major).
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub shape: &'a [u64],
    pub values: &'a [f32],
}

impl Op {
    /// The GGUF tensors it reads, in the order [`Op::apply`] takes them.
    pub fn sources(&self) -> Vec<&str> {
        match self {
            Op::Same { source }
            | Op::UnpermuteRows { source, .. }
            | Op::AddScalar { source, .. }
            | Op::Transpose { source } => vec![source.as_str()],
            Op::Concat { sources, .. } | Op::Interleave { sources, .. } => {
                sources.iter().map(String::as_str).collect()
            }
        }
    }

    /// A short name for the op, as a Gyro header's transform could record it.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Same { .. } => "same",
            Op::UnpermuteRows { .. } => "unpermute_rows",
            Op::AddScalar { .. } => "add_scalar",
            Op::Transpose { .. } => "transpose",
            Op::Concat { .. } => "concat",
            Op::Interleave { .. } => "interleave",
        }
    }

    /// The output shape for sources of these shapes, or why they do not fit.
    pub fn out_shape(&self, shapes: &[&[u64]]) -> Result<Vec<u64>, OpError> {
        let one = |shapes: &[&[u64]]| -> Result<Vec<u64>, OpError> {
            match shapes {
                [s] => Ok(s.to_vec()),
                _ => Err(OpError::SourceCount {
                    op: self.kind(),
                    got: shapes.len(),
                }),
            }
        };
        match self {
            Op::Same { .. } | Op::AddScalar { .. } => one(shapes),
            Op::UnpermuteRows { n_head, .. } => {
                let s = one(shapes)?;
                let rows = *s.first().ok_or(OpError::UnpermuteRank { rank: 0 })?;
                if s.len() > 2 {
                    return Err(OpError::UnpermuteRank { rank: s.len() });
                }
                if *n_head == 0 || rows % (2 * n_head) != 0 {
                    return Err(OpError::UnpermuteRows {
                        rows,
                        n_head: *n_head,
                    });
                }
                Ok(s)
            }
            Op::Transpose { .. } => swap_last2(&one(shapes)?),
            Op::Interleave { transpose, .. } => {
                let first = shapes
                    .first()
                    .ok_or(OpError::NoSources { op: "interleave" })?;
                if let Some(s) = shapes.iter().find(|s| s != &first) {
                    return Err(OpError::InterleaveShapes {
                        first: first.to_vec(),
                        other: s.to_vec(),
                    });
                }
                let mut out = if *transpose {
                    swap_last2(first)?
                } else {
                    first.to_vec()
                };
                let last = out.last_mut().ok_or(OpError::InterleaveScalars)?;
                *last = last
                    .checked_mul(shapes.len() as u64)
                    .ok_or(OpError::Overflow { op: "interleave" })?;
                Ok(out)
            }
            Op::Concat { axis, .. } => {
                let first = shapes.first().ok_or(OpError::NoSources { op: "concat" })?;
                if *axis >= first.len() {
                    return Err(OpError::ConcatAxis {
                        axis: *axis,
                        rank: first.len(),
                    });
                }
                let mut out = first.to_vec();
                out[*axis] = 0;
                for s in shapes {
                    let same_rank = s.len() == first.len();
                    if !same_rank
                        || s.iter()
                            .zip(first.iter())
                            .enumerate()
                            .any(|(d, (a, b))| d != *axis && a != b)
                    {
                        return Err(OpError::ConcatShapes {
                            axis: *axis,
                            first: first.to_vec(),
                            other: s.to_vec(),
                        });
                    }
                    out[*axis] = out[*axis]
                        .checked_add(s[*axis])
                        .ok_or(OpError::Overflow { op: "concat" })?;
                }
                Ok(out)
            }
        }
    }

    /// The reference: the op's f32 output (row-major over the output shape)
    /// for these inputs, in [`Op::sources`] order. Round each value with
    /// `bf16::from_f32` to get the Hugging Face tensor.
    pub fn apply(&self, inputs: &[Input]) -> Result<Vec<f32>, OpError> {
        let shapes: Vec<&[u64]> = inputs.iter().map(|i| i.shape).collect();
        self.out_shape(&shapes)?;
        for i in inputs {
            let n = i.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            if n != Some(i.values.len() as u64) {
                return Err(OpError::InputLength {
                    shape: i.shape.to_vec(),
                    values: i.values.len(),
                });
            }
        }
        Ok(match self {
            Op::Same { .. } => inputs[0].values.to_vec(),
            Op::AddScalar { value, .. } => inputs[0].values.iter().map(|&x| x + value).collect(),
            Op::UnpermuteRows { n_head, .. } => {
                let Input { shape, values } = inputs[0];
                let rows = shape[0] as usize;
                let cols = values.len().checked_div(rows).unwrap_or(0);
                let n_head = *n_head as usize;
                let dim = rows / n_head / 2;
                let mut out = Vec::with_capacity(values.len());
                for r_out in 0..rows {
                    let r_in = unpermuted_source_row(r_out, dim);
                    out.extend_from_slice(&values[r_in * cols..(r_in + 1) * cols]);
                }
                out
            }
            Op::Transpose { .. } => transposed(inputs[0]),
            Op::Interleave { transpose, .. } => {
                let parts: Vec<Vec<f32>> = inputs
                    .iter()
                    .map(|&i| {
                        if *transpose {
                            transposed(i)
                        } else {
                            i.values.to_vec()
                        }
                    })
                    .collect();
                let len = parts[0].len();
                let mut out = Vec::with_capacity(len * parts.len());
                for k in 0..len {
                    out.extend(parts.iter().map(|p| p[k]));
                }
                out
            }
            Op::Concat { axis, .. } => {
                // outer = product of dims before axis; each source contributes
                // a run of shape[axis] * inner values per outer index.
                let outer: u64 = inputs[0].shape[..*axis].iter().product();
                let mut out = Vec::new();
                for o in 0..outer as usize {
                    for i in inputs {
                        let run = i.shape[*axis..].iter().product::<u64>() as usize;
                        out.extend_from_slice(&i.values[o * run..(o + 1) * run]);
                    }
                }
                out
            }
        })
    }
}

/// `shape` with its last two axes swapped.
fn swap_last2(shape: &[u64]) -> Result<Vec<u64>, OpError> {
    if shape.len() < 2 {
        return Err(OpError::TransposeRank { rank: shape.len() });
    }
    let mut out = shape.to_vec();
    out.swap(shape.len() - 2, shape.len() - 1);
    Ok(out)
}

/// The values of `input` with its last two axes swapped (shape checked).
fn transposed(input: Input) -> Vec<f32> {
    let Input { shape, values } = input;
    let (rows, cols) = (
        shape[shape.len() - 2] as usize,
        shape[shape.len() - 1] as usize,
    );
    let mut out = Vec::with_capacity(values.len());
    if rows * cols == 0 {
        return out;
    }
    for m in values.chunks(rows * cols) {
        for c in 0..cols {
            for r in 0..rows {
                out.push(m[r * cols + c]);
            }
        }
    }
    out
}

/// For [`Op::UnpermuteRows`] with `dim = rows / n_head / 2`: the input row
/// that output row `r_out` comes from.
pub fn unpermuted_source_row(r_out: usize, dim: usize) -> usize {
    let per_head = 2 * dim;
    let (h, within) = (r_out / per_head, r_out % per_head);
    let (j, i) = (within / dim, within % dim);
    h * per_head + i * 2 + j
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(shape: &'a [u64], values: &'a [f32]) -> Input<'a> {
        Input { shape, values }
    }

    #[test]
    fn unpermute_matches_numpy() {
        // numpy: np.arange(8).reshape(2 heads, dim 2, 2).swapaxes(2, 1).reshape(8)
        // = [0, 2, 1, 3, 4, 6, 5, 7]
        let v: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let op = Op::UnpermuteRows {
            source: "q".into(),
            n_head: 2,
        };
        let out = op.apply(&[input(&[8], &v)]).unwrap();
        assert_eq!(out, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        // rows of 2 columns move whole
        let v: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let op = Op::UnpermuteRows {
            source: "q".into(),
            n_head: 1,
        };
        let out = op.apply(&[input(&[4, 2], &v)]).unwrap();
        assert_eq!(out, vec![0., 1., 4., 5., 2., 3., 6., 7.]);
        assert!(op.apply(&[input(&[3, 2], &v[..6])]).is_err());
        let zero = Op::UnpermuteRows {
            source: "q".into(),
            n_head: 0,
        };
        assert!(zero.apply(&[input(&[4, 2], &v)]).is_err());
    }

    #[test]
    fn transpose_concat_add() {
        let v: Vec<f32> = (0..6).map(|x| x as f32).collect();
        let t = Op::Transpose { source: "a".into() };
        assert_eq!(
            t.apply(&[input(&[2, 3], &v)]).unwrap(),
            vec![0., 3., 1., 4., 2., 5.]
        );
        assert_eq!(t.out_shape(&[&[2, 3]]).unwrap(), vec![3, 2]);
        let c = Op::Concat {
            sources: vec!["a".into(), "b".into()],
            axis: 1,
        };
        let w: Vec<f32> = (10..16).map(|x| x as f32).collect();
        // [2, 1, 3] + [2, 1, 3] along 1 -> [2, 2, 3]
        let out = c
            .apply(&[input(&[2, 1, 3], &v), input(&[2, 1, 3], &w)])
            .unwrap();
        assert_eq!(
            out,
            vec![0., 1., 2., 10., 11., 12., 3., 4., 5., 13., 14., 15.]
        );
        assert_eq!(
            c.out_shape(&[&[2, 1, 3], &[2, 1, 3]]).unwrap(),
            vec![2, 2, 3]
        );
        assert!(c.out_shape(&[&[2, 1, 3], &[2, 1, 4]]).is_err());
        let a = Op::AddScalar {
            source: "n".into(),
            value: -1.0,
        };
        assert_eq!(
            a.apply(&[input(&[2], &[1.5, 0.25])]).unwrap(),
            vec![0.5, -0.75]
        );
        assert!(a.apply(&[input(&[3], &[1.5, 0.25])]).is_err());
    }

    #[test]
    fn batched_transpose_and_interleave() {
        // numpy: np.arange(12).reshape(2, 2, 3).swapaxes(1, 2).ravel()
        let v: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let t = Op::Transpose { source: "a".into() };
        assert_eq!(t.out_shape(&[&[2, 2, 3]]).unwrap(), vec![2, 3, 2]);
        assert_eq!(
            t.apply(&[input(&[2, 2, 3], &v)]).unwrap(),
            vec![0., 3., 1., 4., 2., 5., 6., 9., 7., 10., 8., 11.]
        );
        assert!(t.out_shape(&[&[5]]).is_err());
        // gate_up[..., ::2] = gate.swapaxes(1, 2), gate_up[..., 1::2] = up.swapaxes(1, 2)
        let w: Vec<f32> = (100..112).map(|x| x as f32).collect();
        let i = Op::Interleave {
            sources: vec!["g".into(), "u".into()],
            transpose: true,
        };
        assert_eq!(
            i.out_shape(&[&[2, 2, 3], &[2, 2, 3]]).unwrap(),
            vec![2, 3, 4]
        );
        let out = i
            .apply(&[input(&[2, 2, 3], &v), input(&[2, 2, 3], &w)])
            .unwrap();
        assert_eq!(&out[..8], &[0., 100., 3., 103., 1., 101., 4., 104.]);
        assert_eq!(out.len(), 24);
        let b = Op::Interleave {
            sources: vec!["g".into(), "u".into()],
            transpose: false,
        };
        assert_eq!(
            b.apply(&[input(&[2, 2], &v[..4]), input(&[2, 2], &w[..4])])
                .unwrap(),
            vec![0., 100., 1., 101., 2., 102., 3., 103.]
        );
        assert!(b.out_shape(&[&[2, 2], &[2, 3]]).is_err());
    }
}
