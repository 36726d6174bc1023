//! The fused kernels on burn's Flex CPU backend, in safe Rust over the tensors' storage.
//!
//! Every kernel reads its input once per pass and keeps per-position statistics (the
//! log-sum-exp over the classes) instead of whole intermediate tensors. Two layouts of the
//! `[N, C, S]` logits are handled apart, so that the loops over classes and positions run over
//! contiguous memory without division or branches and vectorise (the one exception is the
//! gather of each position's target logit):
//! - rows (`S = 1`, classification): each position's classes are contiguous;
//! - tiles (`S > 1`, segmentation): each class of a tile of [`TILE`] consecutive positions is
//!   contiguous, and a tile's per-position accumulators stay in L1.
//!
//! Work is split with rayon, as Flex itself does: over groups of rows, or over tiles.

use burn::tensor::{DType, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{fast_exp, fast_ln};

/// Runs `kernel` compiled for the widest vector instructions this CPU has (AVX2 and FMA on
/// x86-64 when present; baseline SSE2 otherwise), through pulp's safe runtime dispatch. The
/// closures passed here and the kernels they call are `#[inline(always)]`: code that is not
/// inlined into the dispatched function is compiled for the baseline only.
#[inline(always)]
pub(super) fn simd<R>(kernel: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(kernel)
}

/// Positions per tile.
const TILE: usize = 256;
/// Rows per parallel task and elements per task for the flat kernels: enough work to pay for
/// a rayon task.
const ROWS_PER_TASK: usize = 64;
const ELEMENTS_PER_TASK: usize = 1 << 15;

/// `tensor`, contiguous (a copy only for a strided view).
pub(super) fn contiguous(tensor: FlexTensor) -> FlexTensor {
    if tensor.layout().contiguous_offsets().is_some() {
        tensor
    } else {
        tensor.to_contiguous()
    }
}

pub(super) fn floats(tensor: &FlexTensor) -> &[f32] {
    tensor
        .as_slice::<f32>()
        .expect("the fused losses run on contiguous f32 tensors (checked before dispatch)")
}

pub(super) fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// A stored class index. The losses check the indices (and replace ignored ones) before the
/// kernels run, so every index is in `0..C`.
trait ClassIndex: Copy + Send + Sync {
    fn class(self) -> usize;
}

impl ClassIndex for i64 {
    #[inline(always)]
    fn class(self) -> usize {
        self as usize
    }
}

impl ClassIndex for i32 {
    #[inline(always)]
    fn class(self) -> usize {
        self as usize
    }
}

/// Runs `$body` with `$t` bound to the index tensor's values, `&[i64]` or `&[i32]` (the two
/// integer types Flex stores; the caller checks the dtype before dispatch).
macro_rules! with_classes {
    ($target:expr, |$t:ident| $body:expr) => {
        match $target.dtype() {
            DType::I32 => {
                let $t = $target
                    .as_slice::<i32>()
                    .expect("contiguous i32 class indices");
                $body
            }
            _ => {
                let $t = $target
                    .as_slice::<i64>()
                    .expect("contiguous i64 class indices");
                $body
            }
        }
    };
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

    /// The first element of position `start` of `sample`, class 0.
    fn base(self, sample: usize, start: usize) -> usize {
        sample * self.c * self.s + start
    }
}

/// The sum of `values` in eight independent lanes: a strict left-to-right float sum does not
/// vectorise.
#[inline(always)]
pub(super) fn lane_sum(values: &[f32]) -> f32 {
    lane_sum_of(values, |v| v)
}

/// `Σ f(v)` over `values` in eight independent lanes.
#[inline(always)]
pub(super) fn lane_sum_of(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = values.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().sum::<f32>() + rest
}

/// Log-sum-exp over one contiguous row of classes.
#[inline(always)]
fn log_sum_exp_row(row: &[f32]) -> f32 {
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
    let sum = sums.iter().sum::<f32>() + rest.iter().map(|&v| fast_exp(v - max)).sum::<f32>();
    max + sum.ln()
}

/// Log-sum-exp over the classes of the `out.len()` positions of a tile.
#[inline(always)]
fn log_sum_exp_tile(x: &[f32], dims: Dims, sample: usize, start: usize, out: &mut [f32]) {
    let len = out.len();
    let base = dims.base(sample, start);
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
        *o = m + fast_ln(z);
    }
}

/// A tile's class indices as `i32`: compared with a class in 32-bit lanes, the inner loops
/// vectorise even with SSE2 alone, which has no 64-bit lane compare.
#[inline(always)]
fn tile_classes<I: ClassIndex>(classes: &[I]) -> [i32; TILE] {
    let mut out = [0i32; TILE];
    for (o, c) in out.iter_mut().zip(classes) {
        *o = c.class() as i32;
    }
    out
}

/// One tile of positions of a `[N, C, S]` output: its sample, first position, and the
/// tile's segment of each class row.
type TileSegments<'a> = (usize, usize, Vec<&'a mut [f32]>);

/// Splits `out` (`[N, C, S]`, `S > 1`) into tiles, each holding its `C` class segments, so
/// that tiles can be written in parallel.
fn tile_segments(out: &mut [f32], dims: Dims) -> Vec<TileSegments<'_>> {
    let tiles_per_sample = dims.s.div_ceil(TILE);
    let mut tiles = Vec::with_capacity(dims.n * tiles_per_sample);
    for (sample, block) in out.chunks_mut(dims.c * dims.s).enumerate() {
        let mut per_tile: Vec<Vec<&mut [f32]>> = (0..tiles_per_sample)
            .map(|_| Vec::with_capacity(dims.c))
            .collect();
        for row in block.chunks_mut(dims.s) {
            for (tile, segment) in per_tile.iter_mut().zip(row.chunks_mut(TILE)) {
                tile.push(segment);
            }
        }
        for (k, segments) in per_tile.into_iter().enumerate() {
            tiles.push((sample, k * TILE, segments));
        }
    }
    tiles
}

/// The log-sum-exp over the classes at every position, `[N * S]`.
fn log_sum_exp(x: &[f32], dims: Dims) -> Vec<f32> {
    let mut lse = vec![0f32; dims.n * dims.s];
    if dims.s == 1 {
        lse.par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(task, out)| {
                simd(
                    #[inline(always)]
                    || lse_rows(x, dims.c, task * ROWS_PER_TASK, out),
                )
            });
    } else {
        lse.par_chunks_mut(dims.s)
            .enumerate()
            .for_each(|(sample, per_sample)| {
                per_sample
                    .par_chunks_mut(TILE)
                    .enumerate()
                    .for_each(|(k, out)| {
                        simd(
                            #[inline(always)]
                            || log_sum_exp_tile(x, dims, sample, k * TILE, out),
                        )
                    });
            });
    }
    lse
}

/// `-log softmax(logits)[target]` per position, `[N, S]`, and the log-sum-exp it keeps for the
/// backward pass.
pub(super) fn log_softmax_nll(logits: FlexTensor, target: FlexTensor) -> (FlexTensor, FlexTensor) {
    let (logits, target) = (contiguous(logits), contiguous(target));
    let dims = Dims::of(&logits);
    let x = floats(&logits);
    let mut lse = vec![0f32; dims.n * dims.s];
    let mut loss = vec![0f32; dims.n * dims.s];
    with_classes!(target, |t| {
        if dims.s == 1 {
            loss.par_chunks_mut(ROWS_PER_TASK)
                .zip(lse.par_chunks_mut(ROWS_PER_TASK))
                .enumerate()
                .for_each(|(task, (loss, lse))| {
                    simd(
                        #[inline(always)]
                        || nll_rows(x, t, dims.c, task * ROWS_PER_TASK, loss, lse),
                    )
                });
        } else {
            loss.par_chunks_mut(dims.s)
                .zip(lse.par_chunks_mut(dims.s))
                .enumerate()
                .for_each(|(sample, (loss, lse))| {
                    loss.par_chunks_mut(TILE)
                        .zip(lse.par_chunks_mut(TILE))
                        .enumerate()
                        .for_each(|(k, (loss, lse))| {
                            simd(
                                #[inline(always)]
                                || nll_tile(x, t, dims, sample, k * TILE, loss, lse),
                            )
                        });
                });
        }
    });
    let shape = vec![dims.n, dims.s];
    (tensor(loss, shape.clone()), tensor(lse, shape))
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
    let mut out = vec![0f32; x.len()];
    with_classes!(target, |t| {
        if dims.s == 1 {
            out.par_chunks_mut(ROWS_PER_TASK * dims.c)
                .enumerate()
                .for_each(|(task, rows)| {
                    simd(
                        #[inline(always)]
                        || {
                            nll_backward_rows(
                                x,
                                lse,
                                upstream,
                                t,
                                dims.c,
                                task * ROWS_PER_TASK,
                                rows,
                            )
                        },
                    )
                });
        } else {
            tile_segments(&mut out, dims).into_par_iter().for_each(
                |(sample, start, mut segments)| {
                    simd(
                        #[inline(always)]
                        || {
                            nll_backward_tile(
                                x,
                                lse,
                                upstream,
                                t,
                                dims,
                                sample,
                                start,
                                &mut segments,
                            )
                        },
                    )
                },
            );
        }
    });
    tensor(out, vec![dims.n, dims.c, dims.s])
}

/// Per sample and class, `[N, C]` each: the sums over positions of `p · onehot`, of `p`, and
/// of `onehot`, with `p = softmax(logits)` over the classes; and the log-sum-exp `[N, S]` the
/// backward pass reuses.
pub(super) fn softmax_overlap_sums(
    logits: FlexTensor,
    target: FlexTensor,
) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
    let (logits, target) = (contiguous(logits), contiguous(target));
    let dims = Dims::of(&logits);
    let x = floats(&logits);
    let c = dims.c;
    let lse = log_sum_exp(x, dims);
    let mut intersection = vec![0f32; dims.n * c];
    let mut prediction = vec![0f32; dims.n * c];
    let mut truth = vec![0f32; dims.n * c];
    with_classes!(target, |t| {
        if dims.s == 1 {
            intersection
                .par_chunks_mut(c)
                .zip(prediction.par_chunks_mut(c))
                .zip(truth.par_chunks_mut(c))
                .enumerate()
                .with_min_len(ROWS_PER_TASK)
                .for_each(|(sample, ((i, p), truth))| {
                    simd(
                        #[inline(always)]
                        || {
                            overlap_row(
                                &x[sample * c..][..c],
                                lse[sample],
                                t[sample].class(),
                                i,
                                p,
                                truth,
                            )
                        },
                    )
                });
        } else {
            let tiles = dims.s.div_ceil(TILE);
            let per_sample: Vec<Vec<f64>> = (0..dims.n)
                .into_par_iter()
                .map(|sample| {
                    (0..tiles)
                        .into_par_iter()
                        .map(|k| {
                            simd(
                                #[inline(always)]
                                || overlap_tile(x, &lse, t, dims, sample, k * TILE),
                            )
                        })
                        .reduce(
                            || vec![0f64; 3 * c],
                            |mut a, b| {
                                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                                a
                            },
                        )
                })
                .collect();
            for (sample, sums) in per_sample.iter().enumerate() {
                for class in 0..c {
                    intersection[sample * c + class] = sums[class] as f32;
                    prediction[sample * c + class] = sums[c + class] as f32;
                    truth[sample * c + class] = sums[2 * c + class] as f32;
                }
            }
        }
    });
    let shape = vec![dims.n, c];
    (
        tensor(intersection, shape.clone()),
        tensor(prediction, shape.clone()),
        tensor(truth, shape),
        tensor(lse, vec![dims.n, dims.s]),
    )
}

/// One tile's contribution to [`softmax_overlap_sums`]: `[3 * C]`, intersection, prediction
/// and truth per class.
#[inline(always)]
fn overlap_tile<I: ClassIndex>(
    x: &[f32],
    lse: &[f32],
    t: &[I],
    dims: Dims,
    sample: usize,
    start: usize,
) -> Vec<f64> {
    let len = TILE.min(dims.s - start);
    let first = sample * dims.s + start;
    let lse = &lse[first..][..len];
    let classes = tile_classes(&t[first..][..len]);
    let base = dims.base(sample, start);
    let (mut p, mut hit_p, mut hit) = ([0f32; TILE], [0f32; TILE], [0f32; TILE]);
    let mut sums = vec![0f64; 3 * dims.c];
    for class in 0..dims.c {
        let column = &x[base + class * dims.s..][..len];
        let index = class as i32;
        let terms = column.iter().zip(lse).zip(&classes[..len]);
        let outputs = p[..len]
            .iter_mut()
            .zip(&mut hit[..len])
            .zip(&mut hit_p[..len]);
        for (((p, hit), hit_p), ((&v, &l), &k)) in outputs.zip(terms) {
            *p = fast_exp(v - l);
            *hit = if k == index { 1.0 } else { 0.0 };
            *hit_p = *hit * *p;
        }
        sums[class] = lane_sum(&hit_p[..len]).into();
        sums[dims.c + class] = lane_sum(&p[..len]).into();
        sums[2 * dims.c + class] = lane_sum(&hit[..len]).into();
    }
    sums
}

/// The gradient of [`softmax_overlap_sums`] given the upstream gradients `[N, C]` of the
/// intersection and of the prediction (`None`: zero): with `dp = g_I · onehot + g_P`, the
/// softmax backward `p · (dp - Σ_c p · dp)`.
pub(super) fn softmax_overlap_sums_backward(
    logits: FlexTensor,
    lse: FlexTensor,
    target: FlexTensor,
    grad_intersection: Option<FlexTensor>,
    grad_prediction: Option<FlexTensor>,
) -> FlexTensor {
    let (logits, target) = (contiguous(logits), contiguous(target));
    let dims = Dims::of(&logits);
    let (x, lse) = (floats(&logits), floats(&lse));
    let c = dims.c;
    let (grad_intersection, grad_prediction) = (
        grad_intersection.map(contiguous),
        grad_prediction.map(contiguous),
    );
    let zeros = vec![
        0f32;
        if grad_intersection.is_none() || grad_prediction.is_none() {
            c
        } else {
            0
        }
    ];
    // Per sample: a zero row stands for a missing gradient.
    let g_i = |sample: usize| -> &[f32] {
        grad_intersection
            .as_ref()
            .map_or(&zeros[..], |g| &floats(g)[sample * c..][..c])
    };
    let g_p = |sample: usize| -> &[f32] {
        grad_prediction
            .as_ref()
            .map_or(&zeros[..], |g| &floats(g)[sample * c..][..c])
    };
    let mut out = vec![0f32; x.len()];
    with_classes!(target, |t| {
        if dims.s == 1 {
            out.par_chunks_mut(c)
                .enumerate()
                .with_min_len(ROWS_PER_TASK)
                .for_each(|(sample, row)| {
                    simd(
                        #[inline(always)]
                        || {
                            overlap_backward_row(
                                &x[sample * c..][..c],
                                lse[sample],
                                t[sample].class(),
                                g_i(sample),
                                g_p(sample),
                                row,
                            )
                        },
                    )
                });
        } else {
            tile_segments(&mut out, dims).into_par_iter().for_each(
                |(sample, start, mut segments)| {
                    simd(
                        #[inline(always)]
                        || {
                            overlap_backward_tile(
                                x,
                                lse,
                                t,
                                dims,
                                sample,
                                start,
                                g_i(sample),
                                g_p(sample),
                                &mut segments,
                            )
                        },
                    )
                },
            );
        }
    });
    tensor(out, vec![dims.n, dims.c, dims.s])
}

/// Runs `kernel(sample, row)` on each row of `C` values of `out`, rows in parallel (in groups
/// of [`ROWS_PER_TASK`]), each task compiled for the CPU's widest vectors ([`simd`]).
#[inline(always)]
fn for_each_row(out: &mut [f32], c: usize, kernel: impl Fn(usize, &mut [f32]) + Send + Sync) {
    out.par_chunks_mut(c)
        .enumerate()
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(sample, row)| {
            simd(
                #[inline(always)]
                || kernel(sample, row),
            )
        });
}

/// The soft Dice ratio's constants, read from the `[3]` parameter tensor: `smooth_nr`,
/// `smooth_dr`, and the denominator's factor `k` (1: Dice, `p + t`; 2: Jaccard,
/// `2·(p + t − p·t)`).
#[derive(Clone, Copy)]
struct DiceRatio {
    nr: f32,
    dr: f32,
    k: f32,
}

impl DiceRatio {
    fn of(params: &FlexTensor) -> Self {
        let params = floats(params);
        Self {
            nr: params[0],
            dr: params[1],
            k: params[2],
        }
    }

    /// `1 − r` where the target is 0: `r = nr / (k·p + dr)`.
    #[inline(always)]
    fn loss_off(self, p: f32) -> f32 {
        1.0 - self.nr / (self.k * p + self.dr)
    }

    /// `1 − r` where the target is 1: `r = (2p + nr) / (p + 1 + dr)` (Dice) or
    /// `(2p + nr) / (2 + dr)` (Jaccard).
    #[inline(always)]
    fn loss_on(self, p: f32) -> f32 {
        let denominator = if self.k == 1.0 { p + 1.0 } else { 2.0 };
        1.0 - (2.0 * p + self.nr) / (denominator + self.dr)
    }

    /// `d(1 − r)/dp` where the target is 0.
    #[inline(always)]
    fn slope_off(self, p: f32) -> f32 {
        let d = self.k * p + self.dr;
        self.k * self.nr / (d * d)
    }

    /// `d(1 − r)/dp` where the target is 1.
    #[inline(always)]
    fn slope_on(self, p: f32) -> f32 {
        if self.k == 1.0 {
            let d = p + 1.0 + self.dr;
            -(2.0 + 2.0 * self.dr - self.nr) / (d * d)
        } else {
            -2.0 / (2.0 + self.dr)
        }
    }
}

/// The soft Dice (or Jaccard) loss `1 − r` per (sample, class) with the softmax over the
/// classes of rows (`S = 1`: one position per sample), where each (sample, class) sum is a
/// single element, so the ratio is computed in the same pass as the probabilities; and the
/// log-sum-exp per row, kept for the backward pass. `params`: see [`DiceRatio`].
pub(super) fn softmax_dice_rows(
    logits: FlexTensor,
    target: FlexTensor,
    params: &FlexTensor,
) -> (FlexTensor, FlexTensor) {
    let (logits, target) = (contiguous(logits), contiguous(target));
    let dims = Dims::of(&logits);
    debug_assert_eq!(dims.s, 1, "rows only");
    let x = floats(&logits);
    let c = dims.c;
    let ratio = DiceRatio::of(params);
    let lse = log_sum_exp(x, dims);
    let mut out = vec![0f32; dims.n * c];
    with_classes!(target, |t| {
        for_each_row(
            &mut out,
            c,
            #[inline(always)]
            |sample, row| {
                dice_row(
                    &x[sample * c..][..c],
                    lse[sample],
                    t[sample].class(),
                    ratio,
                    row,
                )
            },
        )
    });
    (tensor(out, vec![dims.n, c]), tensor(lse, vec![dims.n, 1]))
}

/// The logits' gradient of [`softmax_dice_rows`] given the upstream gradient `[N, C]`: with
/// `G = g · d(1 − r)/dp`, the softmax backward `p · (G − Σ_c p · G)`.
pub(super) fn softmax_dice_rows_backward(
    logits: FlexTensor,
    lse: FlexTensor,
    target: FlexTensor,
    params: &FlexTensor,
    grad: FlexTensor,
) -> FlexTensor {
    let (logits, target, grad) = (contiguous(logits), contiguous(target), contiguous(grad));
    let dims = Dims::of(&logits);
    let (x, lse, g) = (floats(&logits), floats(&lse), floats(&grad));
    let c = dims.c;
    let ratio = DiceRatio::of(params);
    let mut out = vec![0f32; x.len()];
    with_classes!(target, |t| {
        for_each_row(
            &mut out,
            c,
            #[inline(always)]
            |sample, row| {
                dice_backward_row(
                    &x[sample * c..][..c],
                    lse[sample],
                    t[sample].class(),
                    &g[sample * c..][..c],
                    ratio,
                    row,
                )
            },
        )
    });
    tensor(out, vec![dims.n, c, 1])
}

/// One row of [`softmax_dice_rows`].
#[inline(always)]
fn dice_row(input: &[f32], lse: f32, class: usize, ratio: DiceRatio, row: &mut [f32]) {
    for (o, &v) in row.iter_mut().zip(input) {
        *o = ratio.loss_off(fast_exp(v - lse));
    }
    row[class] = ratio.loss_on(fast_exp(input[class] - lse));
}

/// One row of [`softmax_dice_rows_backward`].
#[inline(always)]
fn dice_backward_row(
    input: &[f32],
    lse: f32,
    class: usize,
    g: &[f32],
    ratio: DiceRatio,
    row: &mut [f32],
) {
    softmax_backward_row(
        input,
        lse,
        class,
        g,
        #[inline(always)]
        |p, g| g * ratio.slope_off(p),
        #[inline(always)]
        |p| g[class] * ratio.slope_on(p),
        row,
    );
}

/// The softmax backward of one row (`S = 1`), `p · (dp − Σ_c p · dp)`, where `dp` is
/// `off(p, g)` for every class but `class` and `on(p)` for it; `row` holds p first, then the
/// gradient.
#[inline(always)]
fn softmax_backward_row(
    input: &[f32],
    lse: f32,
    class: usize,
    g: &[f32],
    off: impl Fn(f32, f32) -> f32,
    on: impl Fn(f32) -> f32,
    row: &mut [f32],
) {
    let mut lanes = [0f32; 8];
    for (chunk, (values, g)) in row.chunks_mut(8).zip(input.chunks(8).zip(g.chunks(8))) {
        for ((o, &v), (&g, lane)) in chunk
            .iter_mut()
            .zip(values)
            .zip(g.iter().zip(lanes.iter_mut()))
        {
            *o = fast_exp(v - lse);
            *lane += *o * off(*o, g);
        }
    }
    let p_class = row[class];
    let on = on(p_class);
    let dot = lanes.iter().sum::<f32>() + p_class * (on - off(p_class, g[class]));
    for (o, &g) in row.iter_mut().zip(g) {
        *o *= off(*o, g) - dot;
    }
    row[class] = p_class * (on - dot);
}

/// `Σ (output - target)²`, `[1]`, accumulated per task in `f32` lanes and across tasks in
/// `f64`.
pub(super) fn squared_error_sum(output: FlexTensor, target: FlexTensor) -> FlexTensor {
    let (output, target) = (contiguous(output), contiguous(target));
    let (x, y) = (floats(&output), floats(&target));
    let sum: f64 = x
        .par_chunks(ELEMENTS_PER_TASK)
        .zip(y.par_chunks(ELEMENTS_PER_TASK))
        .map(|(x, y)| {
            simd(
                #[inline(always)]
                || squared_error_chunk(x, y),
            )
        })
        .sum();
    tensor(vec![sum as f32], vec![1])
}

/// `sign · 2 · (output - target) · grad`: the gradient of [`squared_error_sum`] with respect
/// to the output (`sign = 1`) or the target (`-1`).
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
        .zip(
            x.par_chunks(ELEMENTS_PER_TASK)
                .zip(y.par_chunks(ELEMENTS_PER_TASK)),
        )
        .for_each(|(out, (x, y))| {
            simd(
                #[inline(always)]
                || scaled_difference(out, x, y, scale),
            )
        });
    tensor(out, output.layout().shape().to_vec())
}

/// [`log_sum_exp_row`] of consecutive rows from `first`.
#[inline(always)]
fn lse_rows(x: &[f32], c: usize, first: usize, out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = log_sum_exp_row(&x[(first + i) * c..][..c]);
    }
}

/// The loss and log-sum-exp of consecutive rows from `first`.
#[inline(always)]
fn nll_rows<I: ClassIndex>(
    x: &[f32],
    t: &[I],
    c: usize,
    first: usize,
    loss: &mut [f32],
    lse: &mut [f32],
) {
    for (i, (l, e)) in loss.iter_mut().zip(lse).enumerate() {
        let row = first + i;
        let input = &x[row * c..][..c];
        *e = log_sum_exp_row(input);
        *l = *e - input[t[row].class()];
    }
}

/// The loss and log-sum-exp of one tile.
#[inline(always)]
fn nll_tile<I: ClassIndex>(
    x: &[f32],
    t: &[I],
    dims: Dims,
    sample: usize,
    start: usize,
    loss: &mut [f32],
    lse: &mut [f32],
) {
    log_sum_exp_tile(x, dims, sample, start, lse);
    let base = dims.base(sample, start);
    let classes = &t[sample * dims.s + start..][..loss.len()];
    let terms = lse.iter().zip(classes);
    for (j, (l, (&e, &k))) in loss.iter_mut().zip(terms).enumerate() {
        *l = e - x[base + k.class() * dims.s + j];
    }
}

/// The logits' gradient of consecutive rows from `first`.
#[inline(always)]
fn nll_backward_rows<I: ClassIndex>(
    x: &[f32],
    lse: &[f32],
    upstream: &[f32],
    t: &[I],
    c: usize,
    first: usize,
    rows: &mut [f32],
) {
    for (i, row) in rows.chunks_mut(c).enumerate() {
        let position = first + i;
        let (l, g) = (lse[position], upstream[position]);
        let input = &x[position * c..][..c];
        for (o, &v) in row.iter_mut().zip(input) {
            *o = g * fast_exp(v - l);
        }
        row[t[position].class()] -= g;
    }
}

/// The logits' gradient of one tile, written to its class segments.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn nll_backward_tile<I: ClassIndex>(
    x: &[f32],
    lse: &[f32],
    upstream: &[f32],
    t: &[I],
    dims: Dims,
    sample: usize,
    start: usize,
    segments: &mut [&mut [f32]],
) {
    let first = sample * dims.s + start;
    let len = segments[0].len();
    let (l, g) = (&lse[first..][..len], &upstream[first..][..len]);
    let classes = tile_classes(&t[first..][..len]);
    let base = dims.base(sample, start);
    for (class, segment) in segments.iter_mut().enumerate() {
        let column = &x[base + class * dims.s..][..len];
        let class = class as i32;
        let terms = column.iter().zip(l).zip(g).zip(&classes[..len]);
        for (o, (((&v, &l), &g), &k)) in segment.iter_mut().zip(terms) {
            let hit = if k == class { 1.0 } else { 0.0 };
            *o = g * (fast_exp(v - l) - hit);
        }
    }
}

/// One row's sums (`S = 1`: the sums are the row's own values).
#[inline(always)]
fn overlap_row(
    row: &[f32],
    lse: f32,
    class: usize,
    intersection: &mut [f32],
    prediction: &mut [f32],
    truth: &mut [f32],
) {
    for (p, &v) in prediction.iter_mut().zip(row) {
        *p = fast_exp(v - lse);
    }
    intersection[class] = prediction[class];
    truth[class] = 1.0;
}

/// One row's gradient (`S = 1`).
#[inline(always)]
fn overlap_backward_row(
    input: &[f32],
    lse: f32,
    class: usize,
    gi: &[f32],
    gp: &[f32],
    row: &mut [f32],
) {
    softmax_backward_row(
        input,
        lse,
        class,
        gp,
        #[inline(always)]
        |_, g| g,
        #[inline(always)]
        |_| gp[class] + gi[class],
        row,
    );
}

/// One tile's gradient, written to its class segments.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn overlap_backward_tile<I: ClassIndex>(
    x: &[f32],
    lse: &[f32],
    t: &[I],
    dims: Dims,
    sample: usize,
    start: usize,
    gi: &[f32],
    gp: &[f32],
    segments: &mut [&mut [f32]],
) {
    let first = sample * dims.s + start;
    let len = segments[0].len();
    let lse = &lse[first..][..len];
    let classes = tile_classes(&t[first..][..len]);
    let base = dims.base(sample, start);
    let mut dot = [0f32; TILE];
    for class in 0..dims.c {
        let column = &x[base + class * dims.s..][..len];
        let (g_hit, g_all, index) = (gi[class], gp[class], class as i32);
        let terms = column.iter().zip(lse).zip(&classes[..len]);
        for (d, ((&v, &l), &k)) in dot[..len].iter_mut().zip(terms) {
            let hit = if k == index { g_hit } else { 0.0 };
            *d += fast_exp(v - l) * (g_all + hit);
        }
    }
    for (class, segment) in segments.iter_mut().enumerate() {
        let column = &x[base + class * dims.s..][..len];
        let (g_hit, g_all, index) = (gi[class], gp[class], class as i32);
        let terms = column.iter().zip(lse).zip(&classes[..len]);
        for (o, (((&v, &l), &k), &d)) in segment.iter_mut().zip(terms.zip(&dot[..len])) {
            let hit = if k == index { g_hit } else { 0.0 };
            *o = fast_exp(v - l) * (g_all + hit - d);
        }
    }
}

/// `Σ (x - y)²` of one chunk, in eight `f32` lanes.
#[inline(always)]
fn squared_error_chunk(x: &[f32], y: &[f32]) -> f64 {
    let mut lanes = [0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let rest: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(&a, &b)| (a - b) * (a - b))
        .sum();
    for (a, b) in xc.zip(yc) {
        for ((lane, &a), &b) in lanes.iter_mut().zip(a).zip(b) {
            *lane += (a - b) * (a - b);
        }
    }
    f64::from(lanes.iter().sum::<f32>() + rest)
}

/// `out = scale · (x - y)`.
#[inline(always)]
fn scaled_difference(out: &mut [f32], x: &[f32], y: &[f32], scale: f32) {
    for ((o, &a), &b) in out.iter_mut().zip(x).zip(y) {
        *o = scale * (a - b);
    }
}
