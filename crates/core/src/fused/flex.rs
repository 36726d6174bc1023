//! The fused kernels on burn's Flex CPU backend, in safe Rust over the tensors' storage.
//!
//! Every kernel reads its input once per pass and keeps per-position statistics (the
//! log-sum-exp over the classes) instead of whole intermediate tensors. Two layouts of the
//! `[N, C, S]` logits are handled apart, so that the loops over classes and positions run over
//! contiguous memory without division or branches and vectorise (the one exception is
//! picking each row's target logit):
//! - rows (`S = 1`, classification): each position's classes are contiguous;
//! - tiles (`S > 1`, segmentation): each class of a tile of [`TILE`] consecutive positions is
//!   contiguous, and a tile's per-position accumulators stay in L1.
//!
//! Outputs that are as large as the logits (the gradients) and the per-position statistics are
//! written chunk by chunk into a buffer that is never cleared first ([`written_in_chunks`]):
//! clearing a gradient-sized buffer costs a whole pass over memory, as much as computing it.
//!
//! Work is split with rayon, as Flex itself does: over chunks, groups of rows, or tiles.

use burn::tensor::{DType, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{fast_exp, fast_ln};

/// Runs `kernel` compiled for the widest vector instructions this CPU has (on x86-64:
/// AVX-512, through burn-flex's `x86-v4` feature, or AVX2 and FMA when present; baseline SSE2
/// otherwise), through pulp's safe runtime dispatch. The
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

/// The sum of `values` in 32 independent lanes: a strict left-to-right float sum does not
/// vectorise, and one vector of lanes is one chain of dependent additions.
#[inline(always)]
pub(super) fn lane_sum(values: &[f32]) -> f32 {
    lane_sum_of(values, |v| v)
}

/// `Σ f(v)` over `values` in 32 independent lanes (two or four vector registers).
#[inline(always)]
pub(super) fn lane_sum_of(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let chunks = values.chunks_exact(32);
    let rest: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    if values.len() < 32 {
        return rest;
    }
    let mut lanes = [0f32; 32];
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    folded_halves(&lanes, |a, b| a + b).iter().sum::<f32>() + rest
}

/// The two halves of 32 lanes combined lane by lane (one vector operation on AVX-512, two on
/// AVX2) before the last 16 are combined one by one.
#[inline(always)]
fn folded_halves(lanes: &[f32; 32], combine: impl Fn(f32, f32) -> f32) -> [f32; 16] {
    let (low, high) = lanes.split_at(16);
    let mut folded = [0f32; 16];
    for ((f, &a), &b) in folded.iter_mut().zip(low).zip(high) {
        *f = combine(a, b);
    }
    folded
}

/// The largest value of a contiguous row, in 32 lanes (two or four vector registers of
/// independent maxima). `if v > m` is one `maxps`; `f32::max`'s NaN handling added a compare
/// and a blend to every step of one dependency chain.
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let chunks = row.chunks_exact(32);
    let rest = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if row.len() < 32 {
        return rest;
    }
    let mut lanes = [f32::NEG_INFINITY; 32];
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    folded_halves(&lanes, f32::max)
        .iter()
        .fold(rest, |m, &v| m.max(v))
}

/// Log-sum-exp over one contiguous row of classes.
#[inline(always)]
fn log_sum_exp_row(row: &[f32]) -> f32 {
    let max = row_max(row);
    // The exponentials a block at a time into a buffer, then summed: a loop over a buffer
    // vectorises with fused multiply-adds, fixed lanes of them did not.
    let mut sum = 0f32;
    let mut terms = [0f32; 64];
    for block in row.chunks(64) {
        let terms = &mut terms[..block.len()];
        for (e, &v) in terms.iter_mut().zip(block) {
            *e = fast_exp(v - max);
        }
        sum += lane_sum(terms);
    }
    max + sum.ln()
}

/// The largest logit over the classes at each of the `len` positions of a tile whose class 0
/// starts at flat index `base` (NaN skipped, as `f32::max` does; `if v > m` is one `maxps`).
/// Written into the caller's array: returned by value, each tile's array was copied once more
/// (a `memcpy` call per tile in the profiles).
#[inline(always)]
fn tile_max(x: &[f32], dims: Dims, base: usize, len: usize, max: &mut [f32; TILE]) {
    let max = &mut max[..len];
    max.fill(f32::NEG_INFINITY);
    for class in 0..dims.c {
        let column = &x[base + class * dims.s..][..len];
        for (m, &v) in max.iter_mut().zip(column) {
            *m = if v > *m { v } else { *m };
        }
    }
}

/// Log-sum-exp over the classes of the `out.len()` positions of a tile.
#[inline(always)]
fn log_sum_exp_tile(x: &[f32], dims: Dims, sample: usize, start: usize, out: &mut [f32]) {
    let len = out.len();
    let base = dims.base(sample, start);
    let mut max = [0f32; TILE];
    tile_max(x, dims, base, len, &mut max);
    let mut sum = [0f32; TILE];
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

/// A tile's class indices as `i32` into the caller's array: compared with a class in 32-bit
/// lanes, the inner loops vectorise even with SSE2 alone, which has no 64-bit lane compare.
#[inline(always)]
fn tile_classes<I: ClassIndex>(classes: &[I], out: &mut [i32; TILE]) {
    for (o, c) in out.iter_mut().zip(classes) {
        *o = c.class() as i32;
    }
}

/// The log-sum-exp over the classes at every position, `[N * S]`.
fn log_sum_exp(x: &[f32], dims: Dims) -> Vec<f32> {
    written_in_runs(
        dims.n * dims.s,
        dims.c,
        dims.s,
        #[inline(always)]
        |sample, first, lse| {
            if dims.s == 1 {
                lse[0] = log_sum_exp_row(&x[sample * dims.c..][..dims.c]);
            } else {
                log_sum_exp_tile(x, dims, sample, first, lse);
            }
        },
    )
}

/// `-log softmax(logits)[target]` per position, `[N, S]`, and the log-sum-exp it keeps for the
/// backward pass.
pub(super) fn log_softmax_nll(logits: FlexTensor, target: FlexTensor) -> (FlexTensor, FlexTensor) {
    let (logits, target) = (contiguous(logits), contiguous(target));
    let dims = Dims::of(&logits);
    let x = floats(&logits);
    let (loss, lse) = with_classes!(target, |t| {
        written_in_chunk_pairs(
            dims.n * dims.s,
            dims.c,
            #[inline(always)]
            |start, loss, lse| {
                for_each_run(
                    start,
                    loss,
                    dims.s,
                    #[inline(always)]
                    |sample, offset, loss| {
                        let lse = &mut lse[sample * dims.s + offset - start..][..loss.len()];
                        if dims.s == 1 {
                            let row = &x[sample * dims.c..][..dims.c];
                            lse[0] = log_sum_exp_row(row);
                            loss[0] = lse[0] - row[t[sample].class()];
                        } else {
                            nll_tile(x, t, dims, sample, offset, loss, lse);
                        }
                    },
                )
            },
        )
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
    let out = nll_gradient(&logits, floats(&lse), &target, Some(floats(&grad)), 1.0);
    tensor(out, vec![dims.n, dims.c, dims.s])
}

/// `scale · g · (softmax(logits) - onehot(target))` with `g` the per-position `upstream`
/// values (1 without them), from the kept log-sum-exp. Each element depends only on its own
/// position's statistics, so the gradient is written chunk by chunk ([`written_in_runs`]).
fn nll_gradient(
    logits: &FlexTensor,
    lse: &[f32],
    target: &FlexTensor,
    upstream: Option<&[f32]>,
    scale: f32,
) -> Vec<f32> {
    let dims = Dims::of(logits);
    let x = floats(logits);
    with_classes!(target, |t| {
        if dims.s == 1 {
            written_in_runs(
                x.len(),
                1,
                dims.c,
                #[inline(always)]
                |row, first, piece| {
                    let g = scale * upstream.map_or(1.0, |u| u[row]);
                    nll_backward_row_piece(x, lse[row], g, t, dims.c, row, first, piece)
                },
            )
        } else {
            written_in_runs(
                x.len(),
                1,
                dims.s,
                #[inline(always)]
                |row, first, piece| {
                    let position = (row / dims.c) * dims.s + first;
                    let upstream = upstream.map(|u| &u[position..][..piece.len()]);
                    nll_backward_class_piece(x, lse, upstream, scale, t, dims, row, first, piece)
                },
            )
        }
    })
}

/// A buffer of `rows · row_len` values, each row written in place by `row(index, values)`,
/// and the sum of what `row` returns, in row order. The buffer is cleared first ([`zeros`]):
/// written chunk by chunk into an uncleared buffer instead (rayon's `collect_into_vec`), each
/// chunk was copied out of a row scratch buffer and then again by rayon, and the clearing pass
/// costs less than the two copies (`ce_4096x1000` 0.67, `dice_4096x1000` 0.76 of that
/// version's time).
#[inline(always)]
fn written_by_rows(
    rows: usize,
    row_len: usize,
    row: impl Fn(usize, &mut [f32]) -> f32 + Send + Sync,
) -> (Vec<f32>, f64) {
    let mut out = zeros(rows * row_len);
    let totals: Vec<f64> = out
        .par_chunks_mut(row_len.max(1))
        .enumerate()
        .with_min_len((ELEMENTS_PER_TASK / row_len.max(1)).max(1))
        .map(|(index, values)| {
            f64::from(simd(
                #[inline(always)]
                || row(index, values),
            ))
        })
        .collect();
    (out, totals.iter().sum())
}

/// `len` zeros, cleared on every thread a chunk at a time: a single-threaded
/// `vec![0.0; len]` was 8% of a tiled loss, and rayon's `repeat_n` collected one value at a
/// time (16-byte stores, compiled outside the vector dispatch), where each chunk here is one
/// `memset`.
fn zeros(len: usize) -> Vec<f32> {
    let mut chunks: Vec<[f32; CHUNK]> = Vec::new();
    (0..len.div_ceil(CHUNK))
        .into_par_iter()
        .with_min_len(chunks_per_task(1))
        .map(|_| [0f32; CHUNK])
        .collect_into_vec(&mut chunks);
    let mut out = chunks.into_flattened();
    out.truncate(len);
    out
}

/// A buffer of `[N, C, S]` values written a tile at a time: `tile(sample, start, pieces)`
/// gets the tile's `C` class pieces (positions `start..` of each class of `sample`, at most
/// [`TILE`] of them), so that a statistic over the classes (a softmax) is computed once per
/// position and its results written where they belong; and the sum of what `tile` returns, in
/// tile order. The pieces of a tile are `C` strided runs of the buffer, which the chunk
/// writers ([`written_in_chunks`], filled in the buffer's own order) cannot give: this buffer
/// is cleared first, one pass of writes, cheaper than the second pass over the logits that
/// the chunk order would cost (each exponential computed twice).
#[inline(always)]
fn written_by_tiles(
    dims: Dims,
    tile: impl Fn(usize, usize, &mut [&mut [f32]]) -> f64 + Send + Sync,
) -> (Vec<f32>, f64) {
    let tiles = dims.s.div_ceil(TILE);
    let mut out = zeros(dims.n * dims.c * dims.s);
    // Each sample gathers its own tiles' class pieces, on its own task: gathered for the whole
    // buffer on the calling thread, they were a serial pass in the profiles.
    let tiles_per_task = (ELEMENTS_PER_TASK / (TILE * dims.c)).max(1);
    let per_sample: Vec<Vec<f64>> = out
        .par_chunks_mut(dims.c * dims.s)
        .enumerate()
        .map(|(sample, region)| {
            // Tile by tile, each tile's class pieces in class order.
            let mut rows: Vec<_> = region
                .chunks_mut(dims.s)
                .map(|row| row.chunks_mut(TILE))
                .collect();
            let mut pieces: Vec<&mut [f32]> = Vec::with_capacity(tiles * dims.c);
            for _ in 0..tiles {
                for row in rows.iter_mut() {
                    pieces.push(row.next().expect("every class row has the sample's tiles"));
                }
            }
            pieces
                .par_chunks_mut(dims.c)
                .enumerate()
                .with_min_len(tiles_per_task)
                .map(|(k, pieces)| {
                    simd(
                        #[inline(always)]
                        || tile(sample, k * TILE, pieces),
                    )
                })
                .collect()
        })
        .collect();
    // Tile by tile in order: the same sum however the tiles were split over threads.
    (out, per_sample.iter().flatten().sum())
}

/// One tile of [`log_softmax_nll_sum_with_gradient`]: writes `scale · w · (softmax −
/// onehot(target))` into the tile's class `pieces` (each exponential once: written, summed,
/// then scaled in place while the tile is in L1) and returns `Σ scale · w · (−log
/// softmax[target])` over its positions. `t` holds the class indices from the tile's first
/// position on; `weights` the tile's own `w` (1 without them).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn nll_sum_tile<I: ClassIndex>(
    x: &[f32],
    t: &[I],
    weights: Option<&[f32]>,
    scale: f32,
    dims: Dims,
    sample: usize,
    start: usize,
    pieces: &mut [&mut [f32]],
) -> f64 {
    let len = pieces[0].len();
    let base = dims.base(sample, start);
    let mut classes = [0i32; TILE];
    tile_classes(&t[..len], &mut classes);
    let classes = &classes[..len];
    let mut max = [0f32; TILE];
    tile_max(x, dims, base, len, &mut max);
    let (mut sum, mut picked) = ([0f32; TILE], [0f32; TILE]);
    for (class, piece) in pieces.iter_mut().enumerate() {
        let column = &x[base + class * dims.s..][..len];
        let class = class as i32;
        let lanes = piece.iter_mut().zip(column).zip(&max[..len]);
        for ((((e, &v), &m), z), (p, &k)) in lanes.zip(&mut sum).zip(picked.iter_mut().zip(classes))
        {
            *e = fast_exp(v - m);
            *z += *e;
            *p += if k == class { v } else { 0.0 };
        }
    }
    let mut w = [scale; TILE];
    if let Some(weights) = weights {
        for (w, &u) in w.iter_mut().zip(weights) {
            *w *= u;
        }
    }
    let (mut inv, mut loss) = ([0f32; TILE], [0f32; TILE]);
    for i in 0..len {
        inv[i] = w[i] / sum[i];
        loss[i] = w[i] * (max[i] + fast_ln(sum[i]) - picked[i]);
    }
    for (class, piece) in pieces.iter_mut().enumerate() {
        let class = class as i32;
        for (((o, &r), &w), &k) in piece.iter_mut().zip(&inv).zip(&w).zip(classes) {
            *o = *o * r - if k == class { w } else { 0.0 };
        }
    }
    f64::from(lane_sum(&loss[..len]))
}

/// `p = exp(row − max)` into `p`; returns `(max, Σ p)`.
#[inline(always)]
fn exp_row(row: &[f32], p: &mut [f32]) -> (f32, f32) {
    let max = row_max(row);
    // Summed after the loop that writes them: with the sum's lanes in the same loop LLVM kept
    // the lanes on the stack, a store-to-load chain (`ce_4096x1000` slower by a tenth).
    for (p, &v) in p.iter_mut().zip(row) {
        *p = fast_exp(v - max);
    }
    (max, lane_sum(p))
}

/// `p = softmax(row)` into `p`; returns `(max, Σ exp(row − max))`.
#[inline(always)]
fn softmax_row(row: &[f32], p: &mut [f32]) -> (f32, f32) {
    let (max, sum) = exp_row(row, p);
    let inv = 1.0 / sum;
    for p in p.iter_mut() {
        *p *= inv;
    }
    (max, sum)
}

/// `scale · Σ w · (−log softmax(logits)[target])` over every position, with `w` the
/// per-position `weights` `[N, S]` (1 when `None`), and its gradient with respect to the
/// logits, `scale · w · (softmax − onehot(target))`, computed together: a loss whose backward
/// pass starts here (a mean or sum of cross-entropy) then only scales this gradient by its
/// upstream value, which is 1 for the loss itself. One pass, each exponential computed once:
/// row by row for rows (`S = 1`, [`written_by_rows`]), tile by tile for positions
/// ([`written_by_tiles`], [`nll_sum_tile`]).
pub(super) fn log_softmax_nll_sum_with_gradient(
    logits: FlexTensor,
    target: FlexTensor,
    weights: Option<FlexTensor>,
    scale: f32,
) -> (f32, FlexTensor) {
    let (logits, target) = (contiguous(logits), contiguous(target));
    let weights = weights.map(contiguous);
    let weights = weights.as_ref().map(floats);
    let dims = Dims::of(&logits);
    let shape = vec![dims.n, dims.c, dims.s];
    let (x, c) = (floats(&logits), dims.c);
    if dims.s > 1 {
        let (gradient, total) = with_classes!(target, |t| {
            written_by_tiles(
                dims,
                #[inline(always)]
                |sample, start, pieces| {
                    let position = sample * dims.s + start;
                    let weights = weights.map(|w| &w[position..][..pieces[0].len()]);
                    nll_sum_tile(
                        x,
                        &t[position..],
                        weights,
                        scale,
                        dims,
                        sample,
                        start,
                        pieces,
                    )
                },
            )
        });
        return (total as f32, tensor(gradient, shape));
    }
    let (gradient, total) = with_classes!(target, |t| {
        written_by_rows(
            dims.n,
            c,
            #[inline(always)]
            |row, out| {
                let (logits, class) = (&x[row * c..][..c], t[row].class());
                let (max, sum) = exp_row(logits, out);
                let w = scale * weights.map_or(1.0, |w| w[row]);
                let w_over_sum = w / sum;
                for o in out.iter_mut() {
                    *o *= w_over_sum;
                }
                out[class] -= w;
                w * (max + fast_ln(sum) - logits[class])
            },
        )
    });
    (total as f32, tensor(gradient, shape))
}

/// `Σ loss · w` (`w` = 1 without `weights`), in lane sums over fixed blocks added in order:
/// the same value however the blocks are split over threads.
fn weighted_total(loss: &[f32], weights: Option<&[f32]>) -> f32 {
    const BLOCK: usize = 1 << 14;
    let blocks: Vec<f64> = loss
        .par_chunks(BLOCK)
        .enumerate()
        .map(|(k, block)| {
            simd(
                #[inline(always)]
                || match weights.map(|w| &w[k * BLOCK..][..block.len()]) {
                    Some(w) => {
                        let mut lanes = [0f32; 8];
                        for (l, w) in block.chunks(8).zip(w.chunks(8)) {
                            for ((lane, &l), &w) in lanes.iter_mut().zip(l).zip(w) {
                                *lane += l * w;
                            }
                        }
                        f64::from(lanes.iter().sum::<f32>())
                    }
                    None => f64::from(lane_sum(block)),
                },
            )
        })
        .collect();
    blocks.iter().sum::<f64>() as f32
}

/// The per-position weights of [`log_softmax_nll_sum_with_gradient`] from the operation's
/// `weights` (`[N·S]`, or `[1]`: one weight everywhere, folded into the scale).
pub(super) fn position_weights(weights: FlexTensor, scale: f32) -> (Option<FlexTensor>, f32) {
    let weights = contiguous(weights);
    match floats(&weights) {
        [w] => (None, scale * w),
        _ => (Some(weights), scale),
    }
}

/// `scale · Σ loss · w` of per-position losses `[N, S]`, `[1]` (`w` = 1 without `weights`).
pub(super) fn weighted_sum(
    loss: FlexTensor,
    weights: Option<FlexTensor>,
    scale: f32,
) -> FlexTensor {
    let (loss, weights) = (contiguous(loss), weights.map(contiguous));
    let total = weighted_total(floats(&loss), weights.as_ref().map(floats));
    tensor(vec![scale * total], vec![1])
}

/// `gradient · g` for the one-element upstream gradient `g` of a reduced loss: `gradient`
/// itself when `g` is 1, as it is for the loss that `backward` starts from.
pub(super) fn scaled_by_upstream(gradient: FlexTensor, upstream: FlexTensor) -> FlexTensor {
    let upstream = contiguous(upstream);
    let g = floats(&upstream)[0];
    if g == 1.0 {
        return gradient;
    }
    let gradient = contiguous(gradient);
    let shape = gradient.layout().shape().to_vec();
    let values = floats(&gradient);
    let scaled = written_in_chunks(
        values.len(),
        1,
        #[inline(always)]
        |start, chunk| {
            for (o, &v) in chunk.iter_mut().zip(&values[start..]) {
                *o = v * g;
            }
        },
    );
    tensor(scaled, shape)
}

/// Elements per chunk of [`written_in_chunks`]: a kilobyte, written in L1 and then moved once.
const CHUNK: usize = 256;

/// A new buffer of `len` values, each chunk of [`CHUNK`] from flat index `start` written by
/// `kernel(start, chunk)`, chunks in parallel and compiled for the CPU's widest vectors
/// ([`simd`]). Unlike writing into `vec![0.0; len]`, the buffer is never cleared first: rayon
/// collects the chunks straight into their places, which saves a pass over the whole buffer.
/// `reads` is how many input values each output value reads (C for a per-position statistic,
/// 1 for a gradient): it sets how many chunks make a parallel task.
#[inline(always)]
fn written_in_chunks(
    len: usize,
    reads: usize,
    kernel: impl Fn(usize, &mut [f32]) + Send + Sync,
) -> Vec<f32> {
    let mut chunks: Vec<[f32; CHUNK]> = Vec::new();
    (0..len.div_ceil(CHUNK))
        .into_par_iter()
        .with_min_len(chunks_per_task(reads))
        .map(|k| {
            let start = k * CHUNK;
            let mut chunk = [0f32; CHUNK];
            let filled = &mut chunk[..CHUNK.min(len - start)];
            simd(
                #[inline(always)]
                || kernel(start, filled),
            );
            chunk
        })
        .collect_into_vec(&mut chunks);
    let mut out = chunks.into_flattened();
    out.truncate(len);
    out
}

/// Chunks per parallel task when each output value reads `reads` input values: about
/// [`ELEMENTS_PER_TASK`] inputs a task.
fn chunks_per_task(reads: usize) -> usize {
    (ELEMENTS_PER_TASK / (CHUNK * reads.max(1))).max(1)
}

/// [`written_in_chunks`] for two buffers of `len` values written together:
/// `kernel(start, first_chunk, second_chunk)`.
#[inline(always)]
fn written_in_chunk_pairs(
    len: usize,
    reads: usize,
    kernel: impl Fn(usize, &mut [f32], &mut [f32]) + Send + Sync,
) -> (Vec<f32>, Vec<f32>) {
    let (mut firsts, mut seconds): (Vec<[f32; CHUNK]>, Vec<[f32; CHUNK]>) =
        (Vec::new(), Vec::new());
    (0..len.div_ceil(CHUNK))
        .into_par_iter()
        .with_min_len(chunks_per_task(reads))
        .map(|k| {
            let start = k * CHUNK;
            let filled = CHUNK.min(len - start);
            let (mut first, mut second) = ([0f32; CHUNK], [0f32; CHUNK]);
            simd(
                #[inline(always)]
                || kernel(start, &mut first[..filled], &mut second[..filled]),
            );
            (first, second)
        })
        .unzip_into_vecs(&mut firsts, &mut seconds);
    let (mut firsts, mut seconds) = (firsts.into_flattened(), seconds.into_flattened());
    firsts.truncate(len);
    seconds.truncate(len);
    (firsts, seconds)
}

/// Splits `chunk`, which starts at flat index `start` of a buffer made of runs of `run_len`
/// contiguous values (a row's classes, or a class's positions), into its pieces within one
/// run, and calls `piece(run, first, values)` with the run's index and the piece's first
/// offset in it.
#[inline(always)]
fn for_each_run(
    start: usize,
    chunk: &mut [f32],
    run_len: usize,
    mut piece: impl FnMut(usize, usize, &mut [f32]),
) {
    let mut index = start;
    let mut rest = chunk;
    while !rest.is_empty() {
        let (run, first) = (index / run_len, index % run_len);
        let len = (run_len - first).min(rest.len());
        let (values, tail) = std::mem::take(&mut rest).split_at_mut(len);
        piece(run, first, values);
        index += values.len();
        rest = tail;
    }
}

/// [`written_in_chunks`] where each value belongs to a run of `run_len` contiguous values (a
/// row's classes, a class's positions, a sample's positions): `piece(run, first, values)`
/// writes the values from offset `first` of run `run`, each chunk cut at the runs' ends
/// ([`for_each_run`]).
#[inline(always)]
pub(super) fn written_in_runs(
    len: usize,
    reads: usize,
    run_len: usize,
    piece: impl Fn(usize, usize, &mut [f32]) + Send + Sync,
) -> Vec<f32> {
    written_in_chunks(
        len,
        reads,
        #[inline(always)]
        |start, chunk| {
            // A closure of its own: passing `&piece` (std's forwarding impl for `&F`) made the
            // kernels 8-14x slower, their bodies compiled outside the vector dispatch.
            for_each_run(
                start,
                chunk,
                run_len,
                #[inline(always)]
                |run, first, values| piece(run, first, values),
            )
        },
    )
}

/// Per sample and class: the sums over positions of `p · onehot` and of `p` stacked,
/// `[2, N, C]`, and of `onehot`, `[N, C]`, with `p = softmax(logits)` over the classes; and the
/// log-sum-exp `[N, S]` the backward pass reuses.
pub(super) fn softmax_overlap_sums(
    logits: FlexTensor,
    target: FlexTensor,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (logits, target) = (contiguous(logits), contiguous(target));
    let dims = Dims::of(&logits);
    let x = floats(&logits);
    let c = dims.c;
    let mut sums = vec![0f32; 2 * dims.n * c];
    let (intersection, prediction) = sums.split_at_mut(dims.n * c);
    let mut truth = vec![0f32; dims.n * c];
    let lse = with_classes!(target, |t| {
        if dims.s == 1 {
            let lse = log_sum_exp(x, dims);
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
            lse
        } else {
            let mut lse = zeros(dims.n * dims.s);
            // Each tile's sums, in order; added up per sample in that order, so that the
            // sums do not depend on how rayon split the work.
            let per_tile: Vec<Vec<f64>> = lse
                .par_chunks_mut(dims.s)
                .enumerate()
                .flat_map(|(sample, lse)| {
                    lse.par_chunks_mut(TILE).enumerate().map_init(
                        Vec::new,
                        move |exps, (k, lse)| {
                            simd(
                                #[inline(always)]
                                || overlap_tile(x, t, dims, sample, k * TILE, lse, exps),
                            )
                        },
                    )
                })
                .collect();
            for (sample, tiles) in per_tile.chunks(dims.s.div_ceil(TILE)).enumerate() {
                let mut sample_sums = vec![0f64; 3 * c];
                for tile in tiles {
                    sample_sums.iter_mut().zip(tile).for_each(|(a, b)| *a += b);
                }
                for class in 0..c {
                    intersection[sample * c + class] = sample_sums[class] as f32;
                    prediction[sample * c + class] = sample_sums[c + class] as f32;
                    truth[sample * c + class] = sample_sums[2 * c + class] as f32;
                }
            }
            lse
        }
    });
    (
        tensor(sums, vec![2, dims.n, c]),
        tensor(truth, vec![dims.n, c]),
        tensor(lse, vec![dims.n, dims.s]),
    )
}

/// One tile's contribution to [`softmax_overlap_sums`], `[3 * C]` (intersection, prediction
/// and truth per class), and its positions' log-sum-exp, written to `lse`. Each exponential
/// is computed once: kept for the tile in `exps` (the task's scratch buffer), and scaled by
/// its position's `1 / Σ exp` while the three sums are taken.
#[inline(always)]
fn overlap_tile<I: ClassIndex>(
    x: &[f32],
    t: &[I],
    dims: Dims,
    sample: usize,
    start: usize,
    lse: &mut [f32],
    exps: &mut Vec<f32>,
) -> Vec<f64> {
    let len = lse.len();
    let first = sample * dims.s + start;
    let mut classes = [0i32; TILE];
    tile_classes(&t[first..][..len], &mut classes);
    let base = dims.base(sample, start);
    let mut max = [0f32; TILE];
    tile_max(x, dims, base, len, &mut max);
    exps.resize(dims.c * len, 0.0);
    let mut total = [0f32; TILE];
    for (class, exps) in exps.chunks_exact_mut(len).enumerate() {
        let column = &x[base + class * dims.s..][..len];
        let terms = exps.iter_mut().zip(&mut total[..len]);
        for ((e, z), (&v, &m)) in terms.zip(column.iter().zip(&max[..len])) {
            *e = fast_exp(v - m);
            *z += *e;
        }
    }
    let mut scale = [0f32; TILE];
    for (((l, r), &m), &z) in lse.iter_mut().zip(&mut scale).zip(&max).zip(&total) {
        *l = m + fast_ln(z);
        *r = 1.0 / z;
    }
    let mut sums = vec![0f64; 3 * dims.c];
    for (class, exps) in exps.chunks_exact(len).enumerate() {
        let [hit_p, p, hit] = class_sums(exps, &scale[..len], &classes[..len], class as i32);
        sums[class] = hit_p.into();
        sums[dims.c + class] = p.into();
        sums[2 * dims.c + class] = hit.into();
    }
    sums
}

/// `[Σ hit · p, Σ p, Σ hit]` over a tile's positions for one class, with `p = e · r` and
/// `hit` 1 where the position's class is `class`: one pass, sixteen lanes of each sum (three
/// buffers summed one after the other were a pass each).
#[inline(always)]
fn class_sums(exps: &[f32], scale: &[f32], classes: &[i32], class: i32) -> [f32; 3] {
    debug_assert!(exps.len() == scale.len() && exps.len() == classes.len());
    let (mut hit_p, mut p_sum, mut hits) = ([0f32; 16], [0f32; 16], [0f32; 16]);
    let (es, rs, ks) = (
        exps.chunks_exact(16),
        scale.chunks_exact(16),
        classes.chunks_exact(16),
    );
    let mut rest = [0f32; 3];
    for ((&e, &r), &k) in es
        .remainder()
        .iter()
        .zip(rs.remainder())
        .zip(ks.remainder())
    {
        let (p, hit) = (e * r, if k == class { 1.0 } else { 0.0 });
        rest[0] += hit * p;
        rest[1] += p;
        rest[2] += hit;
    }
    for ((es, rs), ks) in es.zip(rs).zip(ks) {
        for i in 0..16 {
            let (p, hit) = (es[i] * rs[i], if ks[i] == class { 1.0 } else { 0.0 });
            hit_p[i] += hit * p;
            p_sum[i] += p;
            hits[i] += hit;
        }
    }
    [
        hit_p.iter().sum::<f32>() + rest[0],
        p_sum.iter().sum::<f32>() + rest[1],
        hits.iter().sum::<f32>() + rest[2],
    ]
}

/// The gradient of [`softmax_overlap_sums`] given the stacked sums' upstream gradient
/// `[2, N, C]` (`g_I`, then `g_P`): with `dp = g_I · onehot + g_P`, the softmax backward
/// `p · (dp - Σ_c p · dp)`. Over positions (`S > 1`) one pass, a tile at a time
/// ([`written_by_tiles`]: `p` once per element); over rows two, the dot per row and then the
/// gradient chunk by chunk ([`written_in_runs`]), each recomputing `p`.
pub(super) fn softmax_overlap_sums_backward(
    logits: FlexTensor,
    lse: FlexTensor,
    target: FlexTensor,
    grad: FlexTensor,
) -> FlexTensor {
    let (logits, target, grad) = (contiguous(logits), contiguous(target), contiguous(grad));
    let dims = Dims::of(&logits);
    let (x, lse, grad) = (floats(&logits), floats(&lse), floats(&grad));
    let (g_i, g_p) = grad.split_at(dims.n * dims.c);
    if dims.s > 1 {
        let (out, _) = with_classes!(target, |t| {
            written_by_tiles(
                dims,
                #[inline(always)]
                |sample, start, pieces| {
                    let weights = OverlapWeights::of(g_i, g_p, dims.c, sample);
                    overlap_backward_tile(x, lse, t, dims, weights, sample, start, pieces);
                    0.0
                },
            )
        });
        return tensor(out, vec![dims.n, dims.c, dims.s]);
    }
    let out = with_classes!(target, |t| {
        let dot = written_in_runs(
            dims.n,
            dims.c,
            1,
            #[inline(always)]
            |sample, _, dot| {
                let weights = OverlapWeights::of(g_i, g_p, dims.c, sample);
                dot[0] = overlap_dot(x, lse, t, dims.c, sample, weights);
            },
        );
        written_in_runs(
            x.len(),
            1,
            dims.c,
            #[inline(always)]
            |row, first, piece| {
                let weights = OverlapWeights::of(g_i, g_p, dims.c, row);
                overlap_backward_row_piece(x, lse, &dot, t, dims.c, weights, row, first, piece)
            },
        )
    });
    tensor(out, vec![dims.n, dims.c, dims.s])
}

/// One sample's upstream gradients `[C]` of the intersection and prediction sums.
#[derive(Clone, Copy)]
struct OverlapWeights<'a> {
    intersection: &'a [f32],
    prediction: &'a [f32],
}

impl<'a> OverlapWeights<'a> {
    #[inline(always)]
    fn of(g_i: &'a [f32], g_p: &'a [f32], c: usize, sample: usize) -> Self {
        Self {
            intersection: &g_i[sample * c..][..c],
            prediction: &g_p[sample * c..][..c],
        }
    }

    /// `dp` of `class` where the target is (`hit`) or is not that class.
    #[inline(always)]
    fn of_class(self, class: usize, hit: bool) -> f32 {
        let on = if hit { self.intersection[class] } else { 0.0 };
        self.prediction[class] + on
    }
}

/// The smallest and the largest of `indices` (`i64` or `i32`, any shape), `[2]` as `i64`:
/// one pass over them, per task in lanes.
pub(super) fn index_bounds(indices: FlexTensor) -> FlexTensor {
    fn bounds<T: Copy + Into<i64> + Send + Sync>(values: &[T]) -> (i64, i64) {
        values
            .par_chunks(ELEMENTS_PER_TASK)
            .map(|chunk| {
                simd(
                    #[inline(always)]
                    || {
                        let (mut lo, mut hi) = ([i64::MAX; 8], [i64::MIN; 8]);
                        let blocks = chunk.chunks_exact(8);
                        let rest = blocks.remainder();
                        for block in blocks {
                            for ((lo, hi), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(block) {
                                let v: i64 = v.into();
                                *lo = (*lo).min(v);
                                *hi = (*hi).max(v);
                            }
                        }
                        let rest = rest.iter().map(|&v| -> i64 { v.into() });
                        let lo = lo.into_iter().chain(rest.clone()).min();
                        let hi = hi.into_iter().chain(rest).max();
                        (lo.unwrap_or(i64::MAX), hi.unwrap_or(i64::MIN))
                    },
                )
            })
            .reduce(|| (i64::MAX, i64::MIN), |a, b| (a.0.min(b.0), a.1.max(b.1)))
    }
    let indices = contiguous(indices);
    let (lo, hi) = match indices.dtype() {
        DType::I32 => bounds(indices.as_slice::<i32>().expect("contiguous i32 indices")),
        _ => bounds(indices.as_slice::<i64>().expect("contiguous i64 indices")),
    };
    FlexTensor::from_data(TensorData::new(vec![lo, hi], vec![2]))
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

    /// `(1 − r, d(1 − r)/dp)` where the target is 0, with one division.
    #[inline(always)]
    fn off(self, p: f32) -> (f32, f32) {
        let inv = 1.0 / (self.k * p + self.dr);
        let r = self.nr * inv;
        (1.0 - r, self.k * r * inv)
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
    let out = with_classes!(target, |t| {
        written_in_runs(
            dims.n * c,
            1,
            c,
            #[inline(always)]
            |sample, first, piece| {
                let input = &x[sample * c..][..c];
                dice_row_piece(input, lse[sample], t[sample].class(), ratio, first, piece)
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
    let out = with_classes!(target, |t| {
        let row_of = |sample: usize| DiceRow {
            input: &x[sample * c..][..c],
            lse: lse[sample],
            class: t[sample].class(),
            g: &g[sample * c..][..c],
            ratio,
        };
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(c)
            .enumerate()
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(sample, row)| {
                simd(
                    #[inline(always)]
                    || row_of(sample).gradient(row),
                )
            });
        out
    });
    tensor(out, vec![dims.n, c, 1])
}

/// `Σ_{n,c} scale_c · (1 − r_{n,c})` of [`softmax_dice_rows`] with per-class `class_scale`
/// `[C]` (a dropped class's 0, a kept one's weight over the mean's divisor), and its gradient
/// with respect to the logits, computed together in one pass over the rows
/// ([`written_by_rows`]): per row the softmax `p`, the loss's slope `G_c = scale_c ·
/// d(1 − r)/dp_c`, and the softmax backward `p · (G − Σ_c p · G)`, each exponential once.
pub(super) fn softmax_dice_rows_sum_with_gradient(
    logits: FlexTensor,
    target: FlexTensor,
    params: &FlexTensor,
    class_scale: &FlexTensor,
) -> (f32, FlexTensor) {
    let (logits, target) = (contiguous(logits), contiguous(target));
    let dims = Dims::of(&logits);
    debug_assert_eq!(dims.s, 1, "rows only");
    let (x, c, scales) = (floats(&logits), dims.c, floats(class_scale));
    let ratio = DiceRatio::of(params);
    let (gradient, total) = with_classes!(target, |t| {
        written_by_rows(
            dims.n,
            c,
            #[inline(always)]
            |row, out| {
                let class = t[row].class();
                softmax_row(&x[row * c..][..c], out);
                let off = |p: f32, s: f32| s * ratio.slope_off(p);
                // The sums as if the target were 0 everywhere, then the target class set right;
                // the loss and the slope from one reciprocal (a division is as dear as the
                // rest of the element's arithmetic).
                let (mut losses, mut dots) = ([0f32; 8], [0f32; 8]);
                let (ps, ss) = (out.chunks_exact(8), scales.chunks_exact(8));
                let rest = ps.remainder().iter().zip(ss.remainder());
                // Whole blocks of eight lanes, which stay in registers, then the rest: over
                // `chunks(8)` the lanes were stored and reloaded every block (dice_4096x1000
                // 3.8-4.6 ms against 3.2-3.5 with exact blocks; 16 lanes were no faster there
                // and slower on 10 classes). Keeping each slope for the last loop instead of
                // dividing again measured slower (3.3-3.4 against 3.0-3.1 ms).
                for (ps, ss) in ps.zip(ss) {
                    let lanes = losses.iter_mut().zip(dots.iter_mut()).zip(ps).zip(ss);
                    for (((loss, dot), &p), &s) in lanes {
                        let (loss_off, slope_off) = ratio.off(p);
                        *loss += s * loss_off;
                        *dot += p * s * slope_off;
                    }
                }
                for ((loss, dot), (&p, &s)) in losses.iter_mut().zip(dots.iter_mut()).zip(rest) {
                    let (loss_off, slope_off) = ratio.off(p);
                    *loss += s * loss_off;
                    *dot += p * s * slope_off;
                }
                let (p_class, s_class) = (out[class], scales[class]);
                let on = s_class * ratio.slope_on(p_class);
                let loss = losses.iter().sum::<f32>()
                    + s_class * (ratio.loss_on(p_class) - ratio.loss_off(p_class));
                let dot = dots.iter().sum::<f32>() + p_class * (on - off(p_class, s_class));
                for (o, &s) in out.iter_mut().zip(scales) {
                    *o *= off(*o, s) - dot;
                }
                out[class] = p_class * (on - dot);
                loss
            },
        )
    });
    (total as f32, tensor(gradient, vec![dims.n, c, 1]))
}

/// `Σ_{n,c} scale_c · v_{n,c}` of values `[N, C]`, in fixed blocks of rows added in order.
pub(super) fn class_weighted_sum(values: FlexTensor, class_scale: &FlexTensor) -> FlexTensor {
    let values = contiguous(values);
    let scales = floats(class_scale);
    let c = scales.len().max(1);
    let blocks: Vec<f64> = floats(&values)
        .par_chunks(c * ROWS_PER_TASK)
        .map(|rows| {
            rows.chunks(c)
                .map(|row| f64::from(row.iter().zip(scales).map(|(&v, &s)| v * s).sum::<f32>()))
                .sum::<f64>()
        })
        .collect();
    tensor(vec![blocks.iter().sum::<f64>() as f32], vec![1])
}

/// Classes `first..` of one row of [`softmax_dice_rows`].
#[inline(always)]
fn dice_row_piece(
    input: &[f32],
    lse: f32,
    class: usize,
    ratio: DiceRatio,
    first: usize,
    out: &mut [f32],
) {
    for (o, &v) in out.iter_mut().zip(&input[first..]) {
        *o = ratio.loss_off(fast_exp(v - lse));
    }
    if let Some(o) = class.checked_sub(first).and_then(|k| out.get_mut(k)) {
        *o = ratio.loss_on(fast_exp(input[class] - lse));
    }
}

/// One row of [`softmax_dice_rows_backward`]: with `p = softmax(input)` and the upstream
/// gradient `g`, `dp` is `g · d(1 − r)/dp` (the slope where the target is 0 on every class but
/// `class`), and the gradient is the softmax backward `p · (dp − Σ_c p · dp)`. The row is
/// written whole (its dot first), into a cleared buffer: measured, this beat two passes that
/// each compute `p` into an uncleared one (`dice_4096x1000`: 10.5 against 11.7 ms).
#[derive(Clone, Copy)]
struct DiceRow<'a> {
    input: &'a [f32],
    lse: f32,
    class: usize,
    g: &'a [f32],
    ratio: DiceRatio,
}

impl DiceRow<'_> {
    /// The row's gradient; `row` holds `p` first.
    #[inline(always)]
    fn gradient(self, row: &mut [f32]) {
        for (o, &v) in row.iter_mut().zip(self.input) {
            *o = fast_exp(v - self.lse);
        }
        let off = |p: f32, g: f32| g * self.ratio.slope_off(p);
        let mut lanes = [0f32; 8];
        let (ps, gs) = (row.chunks_exact(8), self.g.chunks_exact(8));
        let rest: f32 = ps
            .remainder()
            .iter()
            .zip(gs.remainder())
            .map(|(&p, &g)| p * off(p, g))
            .sum();
        for (ps, gs) in ps.zip(gs) {
            for ((lane, &p), &g) in lanes.iter_mut().zip(ps).zip(gs) {
                *lane += p * off(p, g);
            }
        }
        let p_class = row[self.class];
        let on = self.g[self.class] * self.ratio.slope_on(p_class);
        let dot =
            lanes.iter().sum::<f32>() + rest + p_class * (on - off(p_class, self.g[self.class]));
        for (o, &g) in row.iter_mut().zip(self.g) {
            *o *= off(*o, g) - dot;
        }
        row[self.class] = p_class * (on - dot);
    }
}

/// `scale · Σ (output - target)²`, `[1]`, accumulated per task in `f32` lanes and across
/// tasks in `f64`.
pub(super) fn squared_error_sum(output: FlexTensor, target: FlexTensor, scale: f32) -> FlexTensor {
    let (output, target) = (contiguous(output), contiguous(target));
    let (x, y) = (floats(&output), floats(&target));
    let sums: Vec<f64> = x
        .par_chunks(ELEMENTS_PER_TASK)
        .zip(y.par_chunks(ELEMENTS_PER_TASK))
        .map(|(x, y)| {
            simd(
                #[inline(always)]
                || squared_error_chunk(x, y),
            )
        })
        .collect();
    // Added in chunk order (rayon's `sum` groups by the split): the same value every run.
    let sum = f64::from(scale) * sums.iter().sum::<f64>();
    tensor(vec![sum as f32], vec![1])
}

/// [`squared_error_sum`] and its gradient with respect to the output, `2 · scale · (output −
/// target)`, in one pass over both: each chunk of the gradient is written (as in
/// [`written_in_chunks`]) together with its chunk's sum of squares.
pub(super) fn squared_error_sum_with_gradient(
    output: FlexTensor,
    target: FlexTensor,
    scale: f32,
) -> (f32, FlexTensor) {
    let (output, target) = (contiguous(output), contiguous(target));
    let shape = output.layout().shape().to_vec();
    let (x, y) = (floats(&output), floats(&target));
    let len = x.len();
    let (mut chunks, mut sums): (Vec<[f32; CHUNK]>, Vec<f64>) = (Vec::new(), Vec::new());
    (0..len.div_ceil(CHUNK))
        .into_par_iter()
        .with_min_len(chunks_per_task(2))
        .map(|k| {
            let start = k * CHUNK;
            let n = CHUNK.min(len - start);
            let (x, y) = (&x[start..][..n], &y[start..][..n]);
            let mut chunk = [0f32; CHUNK];
            let sum = simd(
                #[inline(always)]
                || {
                    scaled_difference(&mut chunk[..n], x, y, 2.0 * scale);
                    squared_error_chunk(x, y)
                },
            );
            (chunk, sum)
        })
        .unzip_into_vecs(&mut chunks, &mut sums);
    let mut gradient = chunks.into_flattened();
    gradient.truncate(len);
    // Chunk by chunk in order: the same sum however the chunks were split over threads.
    let sum = f64::from(scale) * sums.iter().sum::<f64>();
    (sum as f32, tensor(gradient, shape))
}

/// `scale · 2 · (output - target) · grad`: the gradient of [`squared_error_sum`] with respect
/// to the output (`scale` the sum's own) or the target (its negative).
pub(super) fn squared_error_backward(
    output: FlexTensor,
    target: FlexTensor,
    grad: FlexTensor,
    scale: f32,
) -> FlexTensor {
    let (output, target, grad) = (contiguous(output), contiguous(target), contiguous(grad));
    let (x, y) = (floats(&output), floats(&target));
    let scale = 2.0 * scale * floats(&grad)[0];
    let out = written_in_chunks(
        x.len(),
        1,
        #[inline(always)]
        |start, out| {
            let len = out.len();
            scaled_difference(out, &x[start..][..len], &y[start..][..len], scale)
        },
    );
    tensor(out, output.layout().shape().to_vec())
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
    let len = loss.len();
    let base = dims.base(sample, start);
    let classes = &t[sample * dims.s + start..][..len];
    // The target's logit picked class by class (a select per element vectorises; a gather
    // by index does not).
    loss.copy_from_slice(lse);
    for class in 0..dims.c {
        let column = &x[base + class * dims.s..][..len];
        for ((l, &v), &k) in loss.iter_mut().zip(column).zip(classes) {
            *l -= if k.class() == class { v } else { 0.0 };
        }
    }
}

/// The logits' gradient on classes `first..` of one row (`S = 1`), whose log-sum-exp is `lse`
/// and upstream gradient `g`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn nll_backward_row_piece<I: ClassIndex>(
    x: &[f32],
    lse: f32,
    g: f32,
    t: &[I],
    c: usize,
    row: usize,
    first: usize,
    out: &mut [f32],
) {
    let input = &x[row * c + first..][..out.len()];
    for (o, &v) in out.iter_mut().zip(input) {
        *o = g * fast_exp(v - lse);
    }
    if let Some(o) = t[row]
        .class()
        .checked_sub(first)
        .and_then(|k| out.get_mut(k))
    {
        *o -= g;
    }
}

/// The logits' gradient on positions `first..` of one class row (`row` = sample · C + class)
/// of `[N, C, S]`, the upstream gradient `scale · upstream` (`scale` without `upstream`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn nll_backward_class_piece<I: ClassIndex>(
    x: &[f32],
    lse: &[f32],
    upstream: Option<&[f32]>,
    scale: f32,
    t: &[I],
    dims: Dims,
    row: usize,
    first: usize,
    out: &mut [f32],
) {
    let (sample, class) = (row / dims.c, row % dims.c);
    let position = sample * dims.s + first;
    let len = out.len();
    let l = &lse[position..][..len];
    let (column, classes) = (&x[row * dims.s + first..][..len], &t[position..][..len]);
    let terms = column.iter().zip(l).zip(classes);
    let gradient = |v: f32, l: f32, k: I| {
        let hit = if k.class() == class { 1.0 } else { 0.0 };
        fast_exp(v - l) - hit
    };
    match upstream {
        Some(g) => {
            for ((o, ((&v, &l), &k)), &g) in out.iter_mut().zip(terms).zip(g) {
                *o = scale * g * gradient(v, l, k);
            }
        }
        None => {
            for (o, ((&v, &l), &k)) in out.iter_mut().zip(terms) {
                *o = scale * gradient(v, l, k);
            }
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

/// `Σ_c p · dp` over the row (`S = 1`) of `sample`.
#[inline(always)]
fn overlap_dot<I: ClassIndex>(
    x: &[f32],
    lse: &[f32],
    t: &[I],
    c: usize,
    sample: usize,
    weights: OverlapWeights<'_>,
) -> f32 {
    let (row, l, class) = (&x[sample * c..][..c], lse[sample], t[sample].class());
    exp_dot(row, l, weights.prediction) + fast_exp(row[class] - l) * weights.intersection[class]
}

/// `Σ exp(v - lse) · w` over a row, the exponentials a block at a time (see
/// [`log_sum_exp_row`]).
#[inline(always)]
fn exp_dot(row: &[f32], lse: f32, weights: &[f32]) -> f32 {
    let mut sum = 0f32;
    let mut terms = [0f32; 64];
    for (block, weights) in row.chunks(64).zip(weights.chunks(64)) {
        let terms = &mut terms[..block.len()];
        for ((e, &v), &w) in terms.iter_mut().zip(block).zip(weights) {
            *e = fast_exp(v - lse) * w;
        }
        sum += lane_sum(terms);
    }
    sum
}

/// The logits' gradient on classes `first..` of one row (`S = 1`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn overlap_backward_row_piece<I: ClassIndex>(
    x: &[f32],
    lse: &[f32],
    dot: &[f32],
    t: &[I],
    c: usize,
    weights: OverlapWeights<'_>,
    row: usize,
    first: usize,
    out: &mut [f32],
) {
    let (l, d) = (lse[row], dot[row]);
    let len = out.len();
    let input = &x[row * c + first..][..len];
    let g_all = &weights.prediction[first..][..len];
    for ((o, &v), &g) in out.iter_mut().zip(input).zip(g_all) {
        *o = fast_exp(v - l) * (g - d);
    }
    let class = t[row].class();
    if let Some(o) = class.checked_sub(first).and_then(|k| out.get_mut(k)) {
        *o += fast_exp(x[row * c + class] - l) * weights.intersection[class];
    }
}

/// One tile of [`softmax_overlap_sums_backward`] over positions (`S > 1`): `p` of every class
/// of the tile into its class `pieces` (each exponential once), their dot with the slopes per
/// position, then `p · (dp − dot)` in place while the tile is in L1.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn overlap_backward_tile<I: ClassIndex>(
    x: &[f32],
    lse: &[f32],
    t: &[I],
    dims: Dims,
    weights: OverlapWeights<'_>,
    sample: usize,
    start: usize,
    pieces: &mut [&mut [f32]],
) {
    let len = pieces[0].len();
    let position = sample * dims.s + start;
    let lse = &lse[position..][..len];
    let mut classes = [0i32; TILE];
    tile_classes(&t[position..][..len], &mut classes);
    let classes = &classes[..len];
    let base = dims.base(sample, start);
    let slopes = |class: usize| {
        (
            weights.of_class(class, false),
            weights.of_class(class, true),
            class as i32,
        )
    };
    let mut dot = [0f32; TILE];
    for (class, piece) in pieces.iter_mut().enumerate() {
        let column = &x[base + class * dims.s..][..len];
        let (g_all, g_hit, class) = slopes(class);
        let lanes = piece.iter_mut().zip(column).zip(lse);
        for (((p, &v), &l), (d, &k)) in lanes.zip(dot.iter_mut().zip(classes)) {
            *p = fast_exp(v - l);
            *d += *p * if k == class { g_hit } else { g_all };
        }
    }
    for (class, piece) in pieces.iter_mut().enumerate() {
        let (g_all, g_hit, class) = slopes(class);
        for ((o, &d), &k) in piece.iter_mut().zip(&dot).zip(classes) {
            *o *= if k == class { g_hit } else { g_all } - d;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in `[-8, 8)`.
    fn values(count: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::Rng::new(seed);
        (0..count).map(|_| rng.range(-8.0, 8.0) as f32).collect()
    }

    /// `row_max` as it was: `f32::max` folded left to right.
    fn plain_max(row: &[f32]) -> f32 {
        row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
    }

    /// Every length from empty to past three blocks of lanes, so each remainder and the
    /// short-row path are taken.
    #[test]
    fn lane_sums_and_row_maxima_match_plain_folds_at_every_length() {
        for len in 0..=100 {
            let row = values(len, len as u64);
            let exact: f64 = row.iter().map(|&v| f64::from(v)).sum();
            let sum = f64::from(lane_sum(&row));
            assert!(
                (sum - exact).abs() < 1e-4,
                "len {len}: {sum} against {exact}"
            );
            let squares: f64 = row.iter().map(|&v| f64::from(v * v)).sum();
            let of = f64::from(lane_sum_of(&row, |v| v * v));
            assert!(
                (of - squares).abs() < 1e-6 * (1.0 + squares),
                "len {len}: {of} against {squares}"
            );
            assert_eq!(row_max(&row), plain_max(&row), "len {len}");
        }
        // The largest value in the last lane and in the remainder.
        let mut row = vec![0f32; 70];
        row[31] = 5.0;
        assert_eq!(row_max(&row), 5.0);
        row[69] = 6.0;
        assert_eq!(row_max(&row), 6.0);
    }

    /// `if v > m` skips a NaN as `f32::max` did, in a lane, in the remainder and in a short
    /// row; infinities count as values.
    #[test]
    fn row_maxima_treat_nan_and_infinity_as_f32_max_did() {
        for len in [20, 40, 70] {
            let mut row = values(len, 9);
            for at in [0, len / 2, len - 1] {
                row[at] = f32::NAN;
            }
            assert_eq!(row_max(&row), plain_max(&row), "len {len}, NaNs");
            assert!(!row_max(&row).is_nan());
            row[len / 3] = f32::INFINITY;
            assert_eq!(row_max(&row), f32::INFINITY, "len {len}, +inf");
            let nans = vec![f32::NAN; len];
            assert_eq!(row_max(&nans), plain_max(&nans), "len {len}, all NaN");
            let negative = vec![f32::NEG_INFINITY; len];
            assert_eq!(row_max(&negative), f32::NEG_INFINITY, "len {len}, all -inf");
        }
    }

    #[test]
    fn class_sums_match_their_definition_at_every_length() {
        for len in (0..=100).chain([TILE]) {
            let exps: Vec<f32> = values(len, 3).iter().map(|v| v.abs()).collect();
            let scale: Vec<f32> = values(len, 4).iter().map(|v| v.abs() / 8.0).collect();
            let classes: Vec<i32> = (0..len).map(|i| (i * 7 % 3) as i32).collect();
            let [hit_p, p, hit] = class_sums(&exps, &scale, &classes, 1);
            let (mut want_hit_p, mut want_p, mut want_hit) = (0f64, 0f64, 0f64);
            for ((&e, &r), &k) in exps.iter().zip(&scale).zip(&classes) {
                let q = f64::from(e) * f64::from(r);
                want_p += q;
                if k == 1 {
                    want_hit_p += q;
                    want_hit += 1.0;
                }
            }
            let close = |got: f32, want: f64| (f64::from(got) - want).abs() <= 1e-6 * (1.0 + want);
            assert!(
                close(hit_p, want_hit_p),
                "len {len}: {hit_p} against {want_hit_p}"
            );
            assert!(close(p, want_p), "len {len}: {p} against {want_p}");
            assert_eq!(f64::from(hit), want_hit, "len {len}");
        }
    }

    /// Rows of 10 to 1000 values, fewer than a parallel task takes and more: every value
    /// where its row puts it, and each row's value counted once.
    #[test]
    fn written_by_rows_places_every_row_and_counts_it_once() {
        for (rows, row_len) in [(37, 10), (5, CHUNK), (3, 2 * CHUNK), (7, 1000), (300, 1000)] {
            let row = |index: usize, out: &mut [f32]| {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = (index * row_len + j) as f32;
                }
                index as f32 + 0.5
            };
            let (values, total) = written_by_rows(rows, row_len, row);
            assert_eq!(values.len(), rows * row_len, "{rows} rows of {row_len}");
            for (i, &v) in values.iter().enumerate() {
                assert_eq!(v, i as f32, "{rows} rows of {row_len}: value {i}");
            }
            let want: f64 = (0..rows).map(|r| r as f64 + 0.5).sum();
            assert_eq!(total, want, "{rows} rows of {row_len}: the total");
        }
    }

    #[test]
    fn zeros_has_the_length_asked_for() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * ELEMENTS_PER_TASK + 5] {
            let buffer = zeros(len);
            assert_eq!(buffer.len(), len);
            assert!(buffer.iter().all(|&v| v == 0.0));
        }
    }
}
