//! The fused layer kernels on Flex: a stride-1 "same" convolution as im2col and burn-flex's
//! matrix product, per sample and tile of output positions, with its backward pass in the same
//! form; a transposed convolution whose stride equals its kernel (a U-Net's up-sampling) as
//! one product per sample; batch norm with batch statistics followed by ReLU, in one pass
//! for the statistics and one for the output (and the same two backward); and the 2×2
//! stride-2 max pooling, one pass each way.
//!
//! Burn-flex runs a 2-D convolution as a 3-D one on an NHWC copy of its input, its input
//! gradient as a transposed 3-D convolution and its weight gradient as a convolution of the
//! axes-swapped input by the axes-swapped output gradient (two layout copies of each); its
//! batch norm is composed of reductions over axes-swapped copies. Here every pass reads the
//! NCHW tensors where they lie: a tile's im2col rows are shifted copies of input rows, small
//! enough to stay in cache for the product that reads them, and the product of the weights by
//! a tile is already that tile of the NCHW output. The input gradient is the "same"
//! convolution of the output gradient by the flipped, transposed kernel (stride 1, odd sides),
//! so it takes the forward's path rather than a scatter.
//!
//! Work is split over samples (convolution) or channels and planes (batch norm); each
//! sample's or channel's sums run in a fixed order, so results do not depend on the threads.

use burn::tensor::Shape;
use burn_flex::{FlexTensor, ops::matmul::matmul};
use rayon::prelude::*;

use super::flex::{contiguous, floats, lane_sum, lane_sum_of, simd, tensor, written_in_runs};

/// The most im2col elements of one tile (256 KiB of `f32`: a core's L2 share).
const TILE_ELEMENTS: usize = 1 << 16;

/// The sizes of a "same" convolution: input `[n, ci, h, w]`, weight `[co, ci, kh, kw]` with odd
/// kernel sides, output `[n, co, h, w]`; or of a transposed convolution whose stride equals its
/// kernel ([`ConvDims::of_transposed`]).
#[derive(Debug, Clone, Copy)]
struct ConvDims {
    n: usize,
    ci: usize,
    h: usize,
    w: usize,
    co: usize,
    kh: usize,
    kw: usize,
}

impl ConvDims {
    fn of(x: &FlexTensor, weight: &FlexTensor) -> Self {
        let (x, weight) = (x.layout().shape(), weight.layout().shape());
        Self {
            n: x[0],
            ci: x[1],
            h: x[2],
            w: x[3],
            co: weight[0],
            kh: weight[2],
            kw: weight[3],
        }
    }

    /// The sizes of a transposed convolution whose stride equals its kernel: input
    /// `[n, ci, h, w]`, weight `[ci, co, kh, kw]` (burn's transposed layout), output
    /// `[n, co, h·kh, w·kw]`, each input pixel spreading over its own `kh × kw` block.
    fn of_transposed(x: &FlexTensor, weight: &FlexTensor) -> Self {
        let shape = weight.layout().shape();
        Self {
            co: shape[1],
            ..Self::of(x, weight)
        }
    }

    /// Rows of a transposed convolution's product per sample: one per output channel and
    /// kernel position.
    fn block_rows(&self) -> usize {
        self.co * self.kh * self.kw
    }

    /// Elements of one channel of a transposed convolution's output.
    fn block_plane(&self) -> usize {
        self.plane() * self.kh * self.kw
    }

    /// The convolution that gives the input's gradient: of the output gradient (`co`
    /// channels) to `ci` channels.
    fn transposed(self) -> Self {
        Self {
            ci: self.co,
            co: self.ci,
            ..self
        }
    }

    fn plane(&self) -> usize {
        self.h * self.w
    }

    /// Rows of the im2col matrix: one per input channel and kernel position.
    fn patch(&self) -> usize {
        self.ci * self.kh * self.kw
    }

    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1
    }

    /// Output positions per tile: all of them for a 1×1 kernel (its im2col matrix is the
    /// input itself), otherwise as many as keep a tile's im2col within [`TILE_ELEMENTS`] (a
    /// multiple of 16, at least 64).
    fn tile(&self) -> usize {
        if self.pointwise() {
            return self.plane().max(1);
        }
        (TILE_ELEMENTS / self.patch() / 16 * 16)
            .max(64)
            .min(self.plane())
            .max(1)
    }
}

/// The output positions `lo..hi` of a row whose input position `+ offset` lies in `0..len`.
#[inline(always)]
fn valid(len: usize, offset: isize) -> (usize, usize) {
    let lo = (-offset).clamp(0, len as isize) as usize;
    let hi = (len as isize - offset).clamp(0, len as isize) as usize;
    (lo, hi.max(lo))
}

/// The im2col matrix `[ci·kh·kw, end − start]` of output positions `start..end` (flat, over
/// `h × w`) of one sample `[ci, h, w]`, zero where the kernel reaches past the border.
///
/// Row `(c, ky, kx)` of the matrix is channel `c` of the input shifted by `(dy, dx)`: over the
/// positions whose shifted row lies inside the image, one contiguous run of the input (one
/// copy, not one a row), in which the elements that wrapped around a row's end are then
/// zeroed. The buffer is written front to back, each element once, so it is never cleared
/// first. Where the runs lie depends on the kernel position only, so it is worked out once
/// per position ([`Shift`]) rather than once per row: for small images (7×7, 14×14) the
/// per-row bookkeeping, with its divisions, took as long as the copying.
fn im2col_tile(sample: &[f32], d: ConvDims, start: usize, end: usize) -> Vec<f32> {
    let len = end - start;
    let mut cols = Vec::with_capacity(d.patch() * len);
    let shifts: Vec<Shift> = (0..d.kh)
        .flat_map(|ky| (0..d.kw).map(move |kx| Shift::of(d, ky, kx, start, end)))
        .collect();
    for input in sample.chunks_exact(d.plane()).take(d.ci) {
        for shift in &shifts {
            shift.append(input, d.w, start, end, &mut cols);
        }
    }
    debug_assert_eq!(cols.len(), d.patch() * len);
    cols
}

/// Where one kernel position's im2col row takes its values, for output positions
/// `start..end`: the input from `first + shift` to `last + shift` (flat), zeros around it, and
/// the columns `0..lo` and `hi..w` of every image row zeroed (they wrapped around a row's end).
struct Shift {
    shift: isize,
    first: usize,
    last: usize,
    lo: usize,
    hi: usize,
}

impl Shift {
    fn of(d: ConvDims, ky: usize, kx: usize, start: usize, end: usize) -> Self {
        let (w, plane) = (d.w as isize, d.plane() as isize);
        let dy = ky as isize - ((d.kh - 1) / 2) as isize;
        let dx = kx as isize - ((d.kw - 1) / 2) as isize;
        let shift = dy * w + dx;
        // Positions whose shifted row is inside the image, and whose shifted flat index is
        // inside the plane (the two differ only by elements the column fix-up zeroes).
        let first = (start as isize).max(-dy * w).max(-shift).min(end as isize);
        let last = (end as isize)
            .min((d.h as isize - dy) * w)
            .min(plane - shift)
            .max(first);
        let (lo, hi) = if dx == 0 { (0, d.w) } else { valid(d.w, dx) };
        Self {
            shift,
            first: first as usize,
            last: last as usize,
            lo,
            hi,
        }
    }

    /// Appends this kernel position's row of the im2col matrix of one channel `input`.
    #[inline]
    fn append(&self, input: &[f32], w: usize, start: usize, end: usize, cols: &mut Vec<f32>) {
        let at = cols.len();
        cols.resize(at + (self.first - start), 0.0);
        if self.first < self.last {
            let from = (self.first as isize + self.shift) as usize;
            cols.extend_from_slice(&input[from..][..self.last - self.first]);
        }
        cols.resize(at + (end - start), 0.0);
        if self.lo == 0 && self.hi == w {
            return;
        }
        let out = &mut cols[at..];
        let mut line = start - start % w;
        while line < end {
            for (from, to) in [(line, line + self.lo), (line + self.hi, line + w)] {
                let (from, to) = (from.max(start), to.min(end));
                if from < to {
                    out[from - start..to - start].fill(0.0);
                }
            }
            line += w;
        }
    }
}

/// The im2col tile of sample `sample` of `x` (`[n, ci, h, w]`, contiguous) as a tensor `[ci·kh·kw,
/// end − start]`; for a 1×1 kernel, a view of the sample itself.
fn columns(x: &FlexTensor, d: ConvDims, sample: usize, start: usize, end: usize) -> FlexTensor {
    let size = d.ci * d.plane();
    if d.pointwise() {
        return x
            .narrow(0, sample, 1)
            .reshape(Shape::new([d.ci, d.plane()]))
            .narrow(1, start, end - start);
    }
    let cols = im2col_tile(&floats(x)[sample * size..][..size], d, start, end);
    tensor(cols, vec![d.patch(), end - start])
}

/// `weights` `[rows, k]` times the im2col matrix of every sample of `x`, tile by tile, written
/// as `[n, rows, h·w]`: the "same" convolution with `d`'s kernel.
fn convolve(x: &FlexTensor, weights: &FlexTensor, d: ConvDims, rows: usize) -> Vec<f32> {
    let (plane, tile) = (d.plane(), d.tile());
    let mut out = vec![0f32; d.n * rows * plane];
    out.par_chunks_mut((rows * plane).max(1))
        .enumerate()
        .for_each(|(sample, out)| {
            for start in (0..plane).step_by(tile) {
                let end = (start + tile).min(plane);
                let product = matmul(weights.clone(), columns(x, d, sample, start, end));
                let product = floats(&product);
                for (row, values) in product.chunks_exact(end - start).enumerate() {
                    out[row * plane + start..row * plane + end].copy_from_slice(values);
                }
            }
        });
    out
}

/// The "same" convolution (stride 1, padding `(k − 1) / 2`) of `x` `[n, ci, h, w]` by `weight`
/// `[co, ci, kh, kw]` (odd sides), `[n, co, h, w]`.
pub(super) fn conv2d_same(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
    let (x, weight) = (contiguous(x), contiguous(weight));
    let d = ConvDims::of(&x, &weight);
    let weights = weight.reshape(Shape::new([d.co, d.patch()]));
    tensor(convolve(&x, &weights, d, d.co), vec![d.n, d.co, d.h, d.w])
}

/// `weight` `[co, ci, kh, kw]` flipped in both kernel axes with its channel axes swapped, as
/// a matrix `[ci, co·kh·kw]`: the kernel whose "same" convolution of the output gradient is the
/// input gradient.
fn flipped_transposed(weight: &[f32], d: ConvDims) -> FlexTensor {
    let k = d.kh * d.kw;
    let mut flipped = vec![0f32; d.ci * d.co * k];
    for o in 0..d.co {
        for c in 0..d.ci {
            for j in 0..k {
                flipped[(c * d.co + o) * k + (k - 1 - j)] = weight[(o * d.ci + c) * k + j];
            }
        }
    }
    tensor(flipped, vec![d.ci, d.co * k])
}

/// The gradients of [`conv2d_same`] given its output's `grad`: the input's (when
/// `input_gradient`) and the weight's.
pub(super) fn conv2d_same_backward(
    x: FlexTensor,
    weight: FlexTensor,
    grad: FlexTensor,
    input_gradient: bool,
) -> (Option<FlexTensor>, FlexTensor) {
    let (x, weight, grad) = (contiguous(x), contiguous(weight), contiguous(grad));
    let d = ConvDims::of(&x, &weight);
    let (plane, tile) = (d.plane(), d.tile());
    let weight_size = d.co * d.patch();
    // Each sample's weight gradient apart, then summed in sample order.
    let mut per_sample = vec![0f32; d.n * weight_size];
    per_sample
        .par_chunks_mut(weight_size.max(1))
        .enumerate()
        .for_each(|(sample, weight_grad)| {
            let grad = grad.narrow(0, sample, 1).reshape(Shape::new([d.co, plane]));
            for start in (0..plane).step_by(tile) {
                let end = (start + tile).min(plane);
                let cols = columns(&x, d, sample, start, end);
                let product = matmul(grad.narrow(1, start, end - start), cols.transpose(0, 1));
                for (total, &g) in weight_grad.iter_mut().zip(floats(&product)) {
                    *total += g;
                }
            }
        });
    let weight_grad = sum_in_sample_order(&per_sample, weight_size);
    let input = input_gradient.then(|| {
        let flipped = flipped_transposed(floats(&weight), d);
        let values = convolve(&grad, &flipped, d.transposed(), d.ci);
        tensor(values, vec![d.n, d.ci, d.h, d.w])
    });
    (input, tensor(weight_grad, vec![d.co, d.ci, d.kh, d.kw]))
}

/// The element-wise sum of the consecutive `size`-long per-sample parts of `parts`, added in
/// sample order: a sum in the order threads finish would make the result depend on the
/// scheduling.
fn sum_in_sample_order<T: Copy + Default + std::ops::AddAssign>(
    parts: &[T],
    size: usize,
) -> Vec<T> {
    let mut total = vec![T::default(); size];
    for part in parts.chunks_exact(size.max(1)) {
        for (sum, &value) in total.iter_mut().zip(part) {
            *sum += value;
        }
    }
    total
}

/// Sample `sample` of `x` `[n, c, h, w]` (contiguous) as a matrix view `[c, h·w]`.
fn sample_matrix(x: &FlexTensor, sample: usize, c: usize, plane: usize) -> FlexTensor {
    x.narrow(0, sample, 1).reshape(Shape::new([c, plane]))
}

/// The transposed convolution with stride equal to its kernel of `x` `[n, ci, h, w]` by
/// `weight` `[ci, co, kh, kw]`, plus `bias` `[co]`: per sample, the product of the weights
/// (as `[co·kh·kw, ci]`) by the sample (`[ci, h·w]`), whose row `(o, a, b)` is the `(a, b)`
/// position of every block of output channel `o`.
pub(super) fn conv_transpose2d_blocks(
    x: FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
) -> FlexTensor {
    let [x, weight, bias] = [x, weight, bias].map(contiguous);
    let d = ConvDims::of_transposed(&x, &weight);
    let bias = floats(&bias);
    let weights = weight
        .reshape(Shape::new([d.ci, d.block_rows()]))
        .transpose(0, 1);
    let mut out = vec![0f32; d.n * d.co * d.block_plane()];
    out.par_chunks_mut((d.co * d.block_plane()).max(1))
        .enumerate()
        .for_each(|(sample, out)| {
            let product = matmul(weights.clone(), sample_matrix(&x, sample, d.ci, d.plane()));
            scatter_blocks(floats(&product), bias, d, out);
        });
    tensor(out, vec![d.n, d.co, d.h * d.kh, d.w * d.kw])
}

/// Writes a sample's product `[co·kh·kw, h·w]` into its output `[co, h·kh, w·kw]`, plus the
/// channel's bias.
fn scatter_blocks(product: &[f32], bias: &[f32], d: ConvDims, out: &mut [f32]) {
    let (plane, width) = (d.plane(), d.w * d.kw);
    for (o, channel) in out.chunks_exact_mut(d.block_plane()).enumerate() {
        for (line_index, line) in channel.chunks_exact_mut(width).enumerate() {
            let (y, a) = (line_index / d.kh, line_index % d.kh);
            for b in 0..d.kw {
                let row = ((o * d.kh + a) * d.kw + b) * plane + y * d.w;
                for (block, &v) in line[b..]
                    .iter_mut()
                    .step_by(d.kw)
                    .zip(&product[row..row + d.w])
                {
                    *block = v + bias[o];
                }
            }
        }
    }
}

/// A sample's output gradient `[co, h·kh, w·kw]` gathered as `[co·kh·kw, h·w]`, the layout of
/// the forward product.
fn gather_blocks(grad: &[f32], d: ConvDims) -> Vec<f32> {
    let width = d.w * d.kw;
    let mut rows = Vec::with_capacity(d.block_rows() * d.plane());
    for channel in grad.chunks_exact(d.block_plane()) {
        for a in 0..d.kh {
            for b in 0..d.kw {
                for y in 0..d.h {
                    let line = &channel[(y * d.kh + a) * width..][..width];
                    rows.extend(line[b..].iter().step_by(d.kw));
                }
            }
        }
    }
    rows
}

/// The gradients of [`conv_transpose2d_blocks`] given its output's `grad`: the input's (when
/// `input_gradient`), the weight's and the bias's. Per sample the gathered gradient `G`
/// `[co·kh·kw, h·w]` gives the input's as `weights · G`, the weight's as `x · Gᵀ` and the
/// bias's as the sums of `G`'s rows; the per-sample parts are summed in sample order.
pub(super) fn conv_transpose2d_blocks_backward(
    x: FlexTensor,
    weight: FlexTensor,
    grad: FlexTensor,
    input_gradient: bool,
) -> (Option<FlexTensor>, FlexTensor, FlexTensor) {
    let [x, weight, grad] = [x, weight, grad].map(contiguous);
    let d = ConvDims::of_transposed(&x, &weight);
    let weights = weight.reshape(Shape::new([d.ci, d.block_rows()]));
    let (sample_input, weight_size) = (d.ci * d.plane(), d.ci * d.block_rows());
    let upstream = floats(&grad);
    let mut input = vec![
        0f32;
        if input_gradient {
            d.n * sample_input
        } else {
            d.n
        }
    ];
    let mut weight_parts = vec![0f32; d.n * weight_size];
    let mut bias_parts = vec![0f64; d.n * d.co];
    input
        .par_chunks_mut(if input_gradient {
            sample_input.max(1)
        } else {
            1
        })
        .zip(weight_parts.par_chunks_mut(weight_size.max(1)))
        .zip(bias_parts.par_chunks_mut(d.co.max(1)))
        .enumerate()
        .for_each(|(sample, ((input, weight_part), bias_part))| {
            let sample_grad =
                &upstream[sample * d.co * d.block_plane()..][..d.co * d.block_plane()];
            let gathered = gather_blocks(sample_grad, d);
            simd(
                #[inline(always)]
                || {
                    for (total, rows) in bias_part
                        .iter_mut()
                        .zip(gathered.chunks_exact((d.kh * d.kw * d.plane()).max(1)))
                    {
                        *total = f64::from(lane_sum(rows));
                    }
                },
            );
            let gathered = tensor(gathered, vec![d.block_rows(), d.plane()]);
            let sample = sample_matrix(&x, sample, d.ci, d.plane());
            let part = matmul(sample, gathered.clone().transpose(0, 1));
            weight_part.copy_from_slice(floats(&part));
            if input_gradient {
                input.copy_from_slice(floats(&matmul(weights.clone(), gathered)));
            }
        });
    let weight_grad = sum_in_sample_order(&weight_parts, weight_size);
    let bias_grad = sum_in_sample_order(&bias_parts, d.co);
    let input = input_gradient.then(|| tensor(input, vec![d.n, d.ci, d.h, d.w]));
    (
        input,
        tensor(weight_grad, vec![d.ci, d.co, d.kh, d.kw]),
        tensor(
            bias_grad.into_iter().map(|v| v as f32).collect(),
            vec![d.co],
        ),
    )
}

fn shape_of(x: &FlexTensor) -> Vec<usize> {
    x.layout().shape().iter().copied().collect()
}

/// `[n, c, s]` of a tensor `[n, c, ...]`.
fn norm_dims(x: &FlexTensor) -> [usize; 3] {
    let shape = x.layout().shape();
    let (n, c) = (shape[0], shape[1]);
    [n, c, shape.num_elements() / (n * c).max(1)]
}

/// Per channel of `x` `[n, c, s]`, the mean and the biased variance (two passes, each plane's
/// sum in lanes, the planes' sums in `f64`).
fn channel_statistics(x: &[f32], [n, c, s]: [usize; 3]) -> Vec<(f32, f32)> {
    let count = (n * s) as f64;
    (0..c)
        .into_par_iter()
        .map(|channel| {
            simd(
                #[inline(always)]
                || {
                    let planes = (0..n).map(|i| &x[(i * c + channel) * s..][..s]);
                    let mean = planes.clone().map(|p| f64::from(lane_sum(p))).sum::<f64>() / count;
                    let m = mean as f32;
                    let variance = planes
                        .map(|p| f64::from(lane_sum_of(p, |v| (v - m) * (v - m))))
                        .sum::<f64>()
                        / count;
                    (m, variance as f32)
                },
            )
        })
        .collect()
}

/// One channel's normalisation: `x̂ = (x − mean) · inv_std`, `z = γ·x̂ + β`.
#[derive(Debug, Clone, Copy)]
struct ChannelNorm {
    mean: f32,
    inv_std: f32,
    gamma: f32,
    beta: f32,
}

impl ChannelNorm {
    fn all(statistics: &[(f32, f32)], gamma: &[f32], beta: &[f32], epsilon: f64) -> Vec<Self> {
        statistics
            .iter()
            .zip(gamma.iter().zip(beta))
            .map(|(&(mean, variance), (&gamma, &beta))| Self {
                mean,
                inv_std: (1.0 / (f64::from(variance) + epsilon).sqrt()) as f32,
                gamma,
                beta,
            })
            .collect()
    }

    #[inline(always)]
    fn normalized(&self, v: f32) -> f32 {
        (v - self.mean) * self.inv_std
    }

    /// 1 where the ReLU passes the gradient (its input `γ·x̂ + β` is positive), else 0: a
    /// factor rather than a branch, so that the loops over a plane vectorise.
    #[inline(always)]
    fn passes(&self, normalized: f32) -> f32 {
        f32::from(u8::from(normalized * self.gamma + self.beta > 0.0))
    }

    #[inline(always)]
    fn output(&self, v: f32) -> f32 {
        (self.normalized(v) * self.gamma + self.beta).max(0.0)
    }
}

/// `relu(γ · (x − mean) / √(var + ε) + β)` with the batch's per-channel mean and biased
/// variance, of `x` `[n, c, ...]`; returns the output, the mean `[c]` and the variance `[c]`.
pub(super) fn batch_norm_relu(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    epsilon: f64,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let [x, gamma, beta] = [x, gamma, beta].map(contiguous);
    let dims @ [_, c, s] = norm_dims(&x);
    let values = floats(&x);
    let statistics = channel_statistics(values, dims);
    let norms = ChannelNorm::all(&statistics, floats(&gamma), floats(&beta), epsilon);
    let out = written_in_runs(
        values.len(),
        1,
        s,
        #[inline(always)]
        |plane, first, out| {
            let norm = norms[plane % c];
            let x = &values[plane * s + first..][..out.len()];
            for (o, &v) in out.iter_mut().zip(x) {
                *o = norm.output(v);
            }
        },
    );
    let (mean, variance): (Vec<f32>, Vec<f32>) = statistics.into_iter().unzip();
    (
        tensor(out, shape_of(&x)),
        tensor(mean, vec![c]),
        tensor(variance, vec![c]),
    )
}

/// The gradients of [`batch_norm_relu`] with respect to `x`, `γ` and `β`, given its output's
/// `grad` and the statistics it returned.
pub(super) fn batch_norm_relu_backward(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    mean: FlexTensor,
    variance: FlexTensor,
    epsilon: f64,
    grad: FlexTensor,
) -> [FlexTensor; 3] {
    let [x, grad, gamma, beta, mean, variance] =
        [x, grad, gamma, beta, mean, variance].map(contiguous);
    let [n, c, s] = norm_dims(&x);
    let (values, upstream) = (floats(&x), floats(&grad));
    let statistics: Vec<(f32, f32)> = floats(&mean)
        .iter()
        .copied()
        .zip(floats(&variance).iter().copied())
        .collect();
    let norms = ChannelNorm::all(&statistics, floats(&gamma), floats(&beta), epsilon);
    // Per channel, Σ g and Σ g·x̂ with g the upstream gradient where the ReLU passed it.
    let sums: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|channel| {
            let norm = norms[channel];
            simd(
                #[inline(always)]
                || {
                    let (mut total, mut total_x) = (0f64, 0f64);
                    for i in 0..n {
                        let at = (i * c + channel) * s;
                        let (g, x) = (&upstream[at..at + s], &values[at..at + s]);
                        let (a, b) = relu_grad_sums(norm, x, g);
                        total += f64::from(a);
                        total_x += f64::from(b);
                    }
                    (total as f32, total_x as f32)
                },
            )
        })
        .collect();
    let count = (n * s) as f32;
    let input = written_in_runs(
        values.len(),
        1,
        s,
        #[inline(always)]
        |plane, first, out| {
            let channel = plane % c;
            let (norm, (total, total_x)) = (norms[channel], sums[channel]);
            let scale = norm.gamma * norm.inv_std;
            let (mean_g, mean_gx) = (total / count, total_x / count);
            let at = plane * s + first;
            let (x, g) = (&values[at..][..out.len()], &upstream[at..][..out.len()]);
            for ((o, &v), &g) in out.iter_mut().zip(x).zip(g) {
                let normalized = norm.normalized(v);
                let g = g * norm.passes(normalized);
                *o = scale * (g - mean_g - normalized * mean_gx);
            }
        },
    );
    let (beta_grad, gamma_grad): (Vec<f32>, Vec<f32>) = sums.into_iter().unzip();
    [
        tensor(input, shape_of(&x)),
        tensor(gamma_grad, vec![c]),
        tensor(beta_grad, vec![c]),
    ]
}

/// `(Σ g, Σ g·x̂)` over a plane, `g` the upstream gradient where the ReLU's input is positive.
#[inline(always)]
fn relu_grad_sums(norm: ChannelNorm, x: &[f32], g: &[f32]) -> (f32, f32) {
    let masked = |v: f32, g: f32| {
        let normalized = norm.normalized(v);
        let g = g * norm.passes(normalized);
        (g, g * normalized)
    };
    let (mut total, mut total_x) = ([0f32; 8], [0f32; 8]);
    for (xs, gs) in x.chunks_exact(8).zip(g.chunks_exact(8)) {
        for lane in 0..8 {
            let (a, b) = masked(xs[lane], gs[lane]);
            total[lane] += a;
            total_x[lane] += b;
        }
    }
    let tail = x.len() / 8 * 8;
    let (mut rest, mut rest_x) = (0f32, 0f32);
    for (&v, &g) in x[tail..].iter().zip(&g[tail..]) {
        let (a, b) = masked(v, g);
        rest += a;
        rest_x += b;
    }
    (
        total.iter().sum::<f32>() + rest,
        total_x.iter().sum::<f32>() + rest_x,
    )
}

/// `[n, c, h, w]` of a 4-D tensor.
fn dims4(x: &FlexTensor) -> [usize; 4] {
    let shape = x.layout().shape();
    [shape[0], shape[1], shape[2], shape[3]]
}

/// The maximum of the 2×2 window `[[a, b], [c, d]]` and its place in it (`0..4`, row by row):
/// the first largest value, or the last NaN, as burn and PyTorch choose, so that the gradient
/// goes to the same element. Selects rather than branches, so that loops over windows
/// vectorise.
#[inline(always)]
fn window_max(a: f32, b: f32, c: f32, d: f32) -> (f32, u32) {
    let mut best = (a, 0u32);
    for (place, v) in [(1, b), (2, c), (3, d)] {
        let take = (v > best.0) | v.is_nan();
        best = (
            if take { v } else { best.0 },
            if take { place } else { best.1 },
        );
    }
    best
}

/// The rows `2·oy` and `2·oy + 1` of plane `plane` of `x` `[n, c, h, w]`.
#[inline(always)]
fn row_pair(x: &[f32], [_, _, h, w]: [usize; 4], plane: usize, oy: usize) -> (&[f32], &[f32]) {
    let top = (plane * h + 2 * oy) * w;
    (&x[top..][..w], &x[top + w..][..w])
}

/// The 2×2 max pooling with stride 2 (no padding; an odd last row or column is dropped) of `x`
/// `[n, c, h, w]`, `[n, c, h / 2, w / 2]`. Burn-flex runs every max pooling through one
/// general 3-D loop that finds each window's bounds with divisions and writes `i64` indices;
/// this one reads two rows per output row.
pub(super) fn max_pool2d_2x2(x: FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    let dims @ [n, c, h, w] = dims4(&x);
    let (oh, ow) = (h / 2, w / 2);
    let input = floats(&x);
    let out = written_in_runs(
        n * c * oh * ow,
        4,
        ow.max(1),
        #[inline(always)]
        |row, first, out| {
            let (top, bottom) = row_pair(input, dims, row / oh, row % oh);
            let (top, bottom) = (&top[2 * first..], &bottom[2 * first..]);
            for ((o, t), b) in out
                .iter_mut()
                .zip(top.chunks_exact(2))
                .zip(bottom.chunks_exact(2))
            {
                *o = window_max(t[0], t[1], b[0], b[1]).0;
            }
        },
    );
    tensor(out, vec![n, c, oh, ow])
}

/// The input's gradient of [`max_pool2d_2x2`] given its output's `grad`: each window's
/// upstream value at the window's maximum (found again from `x`, which the graph keeps
/// anyway), zero elsewhere and on a dropped row or column. Written a row at a time, a window's
/// two columns together.
pub(super) fn max_pool2d_2x2_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
    let (x, grad) = (contiguous(x), contiguous(grad));
    let dims @ [n, c, h, w] = dims4(&x);
    let (oh, ow) = (h / 2, w / 2);
    let (input, upstream) = (floats(&x), floats(&grad));
    let out = written_in_runs(
        n * c * h * w,
        4,
        w,
        #[inline(always)]
        |row, first, out| {
            let (plane, y) = (row / h, row % h);
            let oy = y / 2;
            if oy >= oh {
                out.fill(0.0);
                return;
            }
            let (top, bottom) = row_pair(input, dims, plane, oy);
            let g = &upstream[(plane * oh + oy) * ow..][..ow];
            let side = 2 * (y % 2) as u32;
            // One column of a window (at the piece's ends, or a dropped last column).
            let single = |col: usize| {
                let ox = col / 2;
                let (l, r) = (2 * ox, 2 * ox + 1);
                let hit = ox < ow
                    && window_max(top[l], top[r], bottom[l], bottom[r]).1
                        == side + (col % 2) as u32;
                if hit { g[ox] } else { 0.0 }
            };
            let (mut col, mut out) = (first, out);
            if col % 2 == 1 {
                let (head, rest) = out.split_at_mut(1);
                head[0] = single(col);
                (col, out) = (col + 1, rest);
            }
            let pairs = (out.len() / 2).min(ow.saturating_sub(col / 2));
            let (paired, rest) = out.split_at_mut(2 * pairs);
            for (((o, &g), t), b) in paired
                .chunks_exact_mut(2)
                .zip(&g[col / 2..])
                .zip(top[col..].chunks_exact(2))
                .zip(bottom[col..].chunks_exact(2))
            {
                let place = window_max(t[0], t[1], b[0], b[1]).1;
                o[0] = if place == side { g } else { 0.0 };
                o[1] = if place == side + 1 { g } else { 0.0 };
            }
            for (col, o) in (col + 2 * pairs..).zip(rest) {
                *o = single(col);
            }
        },
    );
    tensor(out, vec![n, c, h, w])
}
