//! The fused kernels on burn's Flex CPU backend, in safe Rust over the tensors' `f32` storage.
//!
//! Every kernel reads its input once per pass and keeps per-position statistics (the
//! log-sum-exp over the classes) instead of whole intermediate tensors. Work is split with
//! rayon, which Flex itself uses: over tiles of positions for the per-position passes, and over
//! contiguous rows of the `[N, C, S]` layout for the element-wise gradient.

use burn::tensor::{DType, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::fast_exp;

/// Positions per tile: the per-position accumulators of one tile stay in L1.
const TILE: usize = 256;
/// Rows (positions of a `[N, C, 1]` layout) per parallel task, and elements per task for the
/// flat kernels: enough work to pay for a rayon task.
const ROWS_PER_TASK: usize = 64;
const ELEMENTS_PER_TASK: usize = 1 << 15;

/// A contiguous view of the `f32` values of `tensor`, copying only when it is a strided view.
fn contiguous(tensor: FlexTensor) -> FlexTensor {
    if tensor.layout().contiguous_offsets().is_some() {
        tensor
    } else {
        tensor.to_contiguous()
    }
}

fn floats(tensor: &FlexTensor) -> &[f32] {
    tensor
        .as_slice::<f32>()
        .expect("the fused losses run on contiguous f32 tensors (checked before dispatch)")
}

/// Class indices as stored: Flex keeps integer tensors as `i64` or `i32`.
enum Classes<'a> {
    I64(&'a [i64]),
    I32(&'a [i32]),
}

impl<'a> Classes<'a> {
    fn of(tensor: &'a FlexTensor) -> Self {
        match tensor.dtype() {
            DType::I32 => Self::I32(tensor.as_slice::<i32>().expect("contiguous i32 indices")),
            _ => Self::I64(tensor.as_slice::<i64>().expect("contiguous i64 indices")),
        }
    }

    #[inline]
    fn get(&self, position: usize) -> usize {
        // In range: the losses check the indices (and replace ignored ones) before this.
        match self {
            Self::I64(values) => values[position] as usize,
            Self::I32(values) => values[position] as usize,
        }
    }
}

fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// `[N, C, S]` dimensions of a logits tensor.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    s: usize,
}

impl Dims {
    fn of(tensor: &FlexTensor) -> Self {
        let dims = tensor.layout().shape().to_vec();
        Self {
            n: dims[0],
            c: dims[1],
            s: dims[2],
        }
    }
}

/// Log-sum-exp over the classes of `len` consecutive positions `start..` of sample `sample`,
/// written to `out`.
fn log_sum_exp_tile(x: &[f32], dims: Dims, sample: usize, start: usize, out: &mut [f32]) {
    let len = out.len();
    let base = sample * dims.c * dims.s + start;
    let mut max = [f32::NEG_INFINITY; TILE];
    let mut sum = [0f32; TILE];
    for class in 0..dims.c {
        let column = &x[base + class * dims.s..][..len];
        for (m, &v) in max[..len].iter_mut().zip(column) {
            *m = m.max(v);
        }
    }
    for class in 0..dims.c {
        let column = &x[base + class * dims.s..][..len];
        for ((z, &m), &v) in sum[..len].iter_mut().zip(&max[..len]).zip(column) {
            *z += fast_exp(v - m);
        }
    }
    for ((o, &m), &z) in out.iter_mut().zip(&max[..len]).zip(&sum[..len]) {
        *o = m + z.ln();
    }
}

/// Log-sum-exp over one contiguous row of classes.
fn log_sum_exp_row(row: &[f32]) -> f32 {
    // Eight independent lanes, so that the loops vectorise despite the strict float order.
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks.clone() {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(v);
        }
    }
    let max = rest
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sums = [0f32; 8];
    for chunk in chunks {
        for (z, &v) in sums.iter_mut().zip(chunk) {
            *z += fast_exp(v - max);
        }
    }
    let sum: f32 = sums.iter().sum::<f32>() + rest.iter().map(|&v| fast_exp(v - max)).sum::<f32>();
    max + sum.ln()
}

/// The log-sum-exp over the classes at every position: `[N * S]`.
fn log_sum_exp(x: &[f32], dims: Dims) -> Vec<f32> {
    let mut lse = vec![0f32; dims.n * dims.s];
    if dims.s == 1 {
        lse.par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(task, out)| {
                let first = task * ROWS_PER_TASK;
                for (i, o) in out.iter_mut().enumerate() {
                    let row = first + i;
                    *o = log_sum_exp_row(&x[row * dims.c..][..dims.c]);
                }
            });
    } else {
        lse.par_chunks_mut(dims.s)
            .enumerate()
            .for_each(|(sample, per_sample)| {
                per_sample
                    .par_chunks_mut(TILE)
                    .enumerate()
                    .for_each(|(tile, out)| {
                        log_sum_exp_tile(x, dims, sample, tile * TILE, out)
                    });
            });
    }
    lse
}

/// Applies `f(position, class, value) -> gradient` to every element of `[N, C, S]`, in
/// parallel over contiguous rows.
fn map_elements(x: &[f32], dims: Dims, f: impl Fn(usize, usize, f32) -> f32 + Sync) -> Vec<f32> {
    let mut grad = vec![0f32; x.len()];
    if dims.s == 1 {
        grad.par_chunks_mut(ROWS_PER_TASK * dims.c)
            .enumerate()
            .for_each(|(task, out)| {
                let first = task * ROWS_PER_TASK;
                for (i, row) in out.chunks_mut(dims.c).enumerate() {
                    let position = first + i;
                    let input = &x[position * dims.c..][..dims.c];
                    for (class, (g, &v)) in row.iter_mut().zip(input).enumerate() {
                        *g = f(position, class, v);
                    }
                }
            });
    } else {
        grad.par_chunks_mut(dims.s)
            .enumerate()
            .for_each(|(row, out)| {
                let (sample, class) = (row / dims.c, row % dims.c);
                let input = &x[row * dims.s..][..dims.s];
                let first = sample * dims.s;
                for (j, (g, &v)) in out.iter_mut().zip(input).enumerate() {
                    *g = f(first + j, class, v);
                }
            });
    }
    grad
}

/// `-log softmax(logits)[target]` per position, `[N, S]`, and the log-sum-exp it keeps for the
/// backward pass.
pub(super) fn log_softmax_nll(logits: FlexTensor, target: FlexTensor) -> (FlexTensor, FlexTensor) {
    let (logits, target) = (contiguous(logits), contiguous(target));
    let dims = Dims::of(&logits);
    let x = floats(&logits);
    let classes = Classes::of(&target);
    let lse = log_sum_exp(x, dims);
    let loss: Vec<f32> = lse
        .par_iter()
        .enumerate()
        .with_min_len(ELEMENTS_PER_TASK)
        .map(|(position, &l)| {
            let (sample, s) = (position / dims.s, position % dims.s);
            let class = classes.get(position);
            l - x[(sample * dims.c + class) * dims.s + s]
        })
        .collect();
    (
        tensor(loss, vec![dims.n, dims.s]),
        tensor(lse, vec![dims.n, dims.s]),
    )
}

/// The gradient of [`log_softmax_nll`] given the upstream gradient `[N, S]`:
/// `grad · (softmax(logits) - onehot(target))`.
pub(super) fn log_softmax_nll_backward(
    logits: FlexTensor,
    lse: FlexTensor,
    target: FlexTensor,
    grad: FlexTensor,
) -> FlexTensor {
    let (logits, target, grad) = (contiguous(logits), contiguous(target), contiguous(grad));
    let dims = Dims::of(&logits);
    let (x, lse, upstream) = (floats(&logits), floats(&lse), floats(&grad));
    let classes = Classes::of(&target);
    let out = map_elements(x, dims, |position, class, v| {
        let p = fast_exp(v - lse[position]);
        let onehot = if classes.get(position) == class { 1.0 } else { 0.0 };
        upstream[position] * (p - onehot)
    });
    tensor(out, vec![dims.n, dims.c, dims.s])
}

/// Per sample and class, `[N, 3, C]`: the sums over positions of `p · onehot`, of `p`, and of
/// `onehot`, with `p = softmax(logits)` over the classes.
pub(super) fn softmax_overlap_sums(logits: FlexTensor, target: FlexTensor) -> FlexTensor {
    let (logits, target) = (contiguous(logits), contiguous(target));
    let dims = Dims::of(&logits);
    let x = floats(&logits);
    let classes = Classes::of(&target);
    let c = dims.c;
    let mut sums = vec![0f32; dims.n * 3 * c];
    if dims.s == 1 {
        sums.par_chunks_mut(3 * c)
            .enumerate()
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(sample, out)| {
                let row = &x[sample * c..][..c];
                let lse = log_sum_exp_row(row);
                let (intersection, rest) = out.split_at_mut(c);
                let (prediction, truth) = rest.split_at_mut(c);
                for (p, &v) in prediction.iter_mut().zip(row) {
                    *p = fast_exp(v - lse);
                }
                let class = classes.get(sample);
                intersection[class] = prediction[class];
                truth[class] = 1.0;
            });
    } else {
        let tiles = dims.s.div_ceil(TILE);
        sums.par_chunks_mut(3 * c)
            .enumerate()
            .for_each(|(sample, out)| {
                let totals = (0..tiles)
                    .into_par_iter()
                    .map(|tile| overlap_tile(x, &classes, dims, sample, tile * TILE))
                    .reduce(
                        || vec![0f64; 3 * c],
                        |mut a, b| {
                            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                            a
                        },
                    );
                out.iter_mut()
                    .zip(&totals)
                    .for_each(|(o, &t)| *o = t as f32);
            });
    }
    tensor(sums, vec![dims.n, 3, c])
}

/// One tile's contribution to [`softmax_overlap_sums`], `[3 * C]`.
fn overlap_tile(x: &[f32], classes: &Classes, dims: Dims, sample: usize, start: usize) -> Vec<f64> {
    let len = TILE.min(dims.s - start);
    let mut lse = [0f32; TILE];
    log_sum_exp_tile(x, dims, sample, start, &mut lse[..len]);
    let base = sample * dims.c * dims.s + start;
    let first = sample * dims.s + start;
    let mut sums = vec![0f64; 3 * dims.c];
    for class in 0..dims.c {
        let column = &x[base + class * dims.s..][..len];
        let (mut prediction, mut intersection, mut truth) = (0f32, 0f32, 0f32);
        for (j, (&v, &l)) in column.iter().zip(&lse[..len]).enumerate() {
            let p = fast_exp(v - l);
            prediction += p;
            if classes.get(first + j) == class {
                intersection += p;
                truth += 1.0;
            }
        }
        sums[class] = intersection.into();
        sums[dims.c + class] = prediction.into();
        sums[2 * dims.c + class] = truth.into();
    }
    sums
}

/// The gradient of [`softmax_overlap_sums`] given the upstream gradient `[N, 3, C]` (the
/// third row, the target counts, has none): with `dp = g_I · onehot + g_P`, the softmax
/// backward `p · (dp - Σ_c p · dp)`.
pub(super) fn softmax_overlap_sums_backward(
    logits: FlexTensor,
    target: FlexTensor,
    grad: FlexTensor,
) -> FlexTensor {
    let (logits, target, grad) = (contiguous(logits), contiguous(target), contiguous(grad));
    let dims = Dims::of(&logits);
    let (x, upstream) = (floats(&logits), floats(&grad));
    let classes = Classes::of(&target);
    let c = dims.c;
    let lse = log_sum_exp(x, dims);
    let g_intersection = |sample: usize, class: usize| upstream[sample * 3 * c + class];
    let g_prediction = |sample: usize, class: usize| upstream[sample * 3 * c + c + class];
    // Σ_c p · dp at every position: p_t · g_I[t] + Σ_c p_c · g_P[c].
    let dot: Vec<f32> = (0..dims.n * dims.s)
        .into_par_iter()
        .with_min_len(ELEMENTS_PER_TASK / c.max(1))
        .map(|position| {
            let (sample, s) = (position / dims.s, position % dims.s);
            let base = sample * c * dims.s + s;
            let l = lse[position];
            let mut dot = 0f32;
            for class in 0..c {
                dot += fast_exp(x[base + class * dims.s] - l) * g_prediction(sample, class);
            }
            let class = classes.get(position);
            dot + fast_exp(x[base + class * dims.s] - l) * g_intersection(sample, class)
        })
        .collect();
    let out = map_elements(x, dims, |position, class, v| {
        let sample = position / dims.s;
        let p = fast_exp(v - lse[position]);
        let mut dp = g_prediction(sample, class);
        if classes.get(position) == class {
            dp += g_intersection(sample, class);
        }
        p * (dp - dot[position])
    });
    tensor(out, vec![dims.n, dims.c, dims.s])
}

/// `Σ (output - target)²`, `[1]`, accumulated in `f64`.
pub(super) fn squared_error_sum(output: FlexTensor, target: FlexTensor) -> FlexTensor {
    let (output, target) = (contiguous(output), contiguous(target));
    let (x, y) = (floats(&output), floats(&target));
    let sum: f64 = x
        .par_chunks(ELEMENTS_PER_TASK)
        .zip(y.par_chunks(ELEMENTS_PER_TASK))
        .map(|(x, y)| {
            let partial: f32 = x.iter().zip(y).map(|(&a, &b)| (a - b) * (a - b)).sum();
            f64::from(partial)
        })
        .sum();
    tensor(vec![sum as f32], vec![1])
}

/// The gradient of [`squared_error_sum`] with respect to the output, `2 · (output - target) ·
/// grad`; the target's is its negative.
pub(super) fn squared_error_backward(
    output: FlexTensor,
    target: FlexTensor,
    grad: FlexTensor,
    sign: f32,
) -> FlexTensor {
    let (output, target, grad) = (contiguous(output), contiguous(target), contiguous(grad));
    let (x, y) = (floats(&output), floats(&target));
    let scale = 2.0 * sign * floats(&grad)[0];
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(x.par_chunks(ELEMENTS_PER_TASK).zip(y.par_chunks(ELEMENTS_PER_TASK)))
        .for_each(|(out, (x, y))| {
            for ((o, &a), &b) in out.iter_mut().zip(x).zip(y) {
                *o = scale * (a - b);
            }
        });
    tensor(out, output.layout().shape().to_vec())
}
