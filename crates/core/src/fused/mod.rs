//! Fused loss kernels: the heavy inner parts of the cross-entropy, overlap (Dice family) and
//! squared-error losses, and the whole soft Dice/Jaccard loss of a classifier's output (one
//! position per sample), as single backend operations with a hand-written backward pass; and,
//! in [`layers`], the same for the convolution block the bundled models train (a "same"
//! convolution, batch norm + ReLU).

use burn::tensor::{DType, Int, Tensor};

#[cfg(feature = "flex")]
mod extension;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
mod flex_layers;
#[cfg(feature = "flex")]
mod layer_extension;
pub mod layers;

/// `-log softmax(logits)[target]` at every position: logits `[N, C, S]`, class indices
/// `[N, S]` in `0..C`, result `[N, S]`.
///
/// The indices must be in range (the losses check them first with
/// [`checked_indices`](crate::targets::checked_indices)); an index outside `0..C` gives an
/// unspecified value or a panic, as in burn's `gather`. The same holds for
/// [`softmax_overlap_sums`].
pub fn log_softmax_nll(logits: Tensor<3>, target: Tensor<2, Int>) -> Tensor<2> {
    #[cfg(feature = "flex")]
    if fused_runs_on(&logits, &target) {
        return extension::log_softmax_nll(logits, target);
    }
    composed::log_softmax_nll(logits, target)
}

/// `scale · Σ w · (−log softmax(logits)[target])` over all positions, `[1]`: logits
/// `[N, C, S]`, class indices `[N, S]` in `0..C` (checked first, as for [`log_softmax_nll`]),
/// per-position weights `[N, S]` (1 everywhere when `None`; constants, without gradient). A
/// cross-entropy's mean or sum as one operation: on the CPU backend the forward pass also
/// computes the logits' gradient, so the backward pass only scales it by its upstream value
/// (rows of classes take one pass over the logits, positions of segmentation maps two).
pub fn log_softmax_nll_sum(
    logits: Tensor<3>,
    target: Tensor<2, Int>,
    weights: Option<Tensor<2>>,
    scale: f32,
) -> Tensor<1> {
    #[cfg(feature = "flex")]
    if fused_runs_on(&logits, &target)
        && weights.as_ref().is_none_or(|weights| {
            is_flex_f32(weights)
                && weights.dims() == target.dims()
                && weights.device() == logits.device()
        })
    {
        let weights = match weights {
            Some(weights) => {
                let [n, s] = weights.dims();
                weights.reshape([n * s])
            }
            None => Tensor::ones([1], &logits.device()),
        };
        return extension::log_softmax_nll_sum(logits, target, weights, scale);
    }
    composed::log_softmax_nll_sum(logits, target, weights, scale)
}

/// Per sample and class, `[N, C]` each: the sums over positions of `p · onehot(target)`, of
/// `p`, and of `onehot(target)`, with `p = softmax(logits)` over the classes; logits
/// `[N, C, S]`, class indices `[N, S]` in `0..C`. The soft Dice family's intersection,
/// prediction and truth (the last without gradient).
pub fn softmax_overlap_sums(
    logits: Tensor<3>,
    target: Tensor<2, Int>,
) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    #[cfg(feature = "flex")]
    if fused_runs_on(&logits, &target) {
        return extension::softmax_overlap_sums(logits, target);
    }
    composed::softmax_overlap_sums(logits, target)
}

/// The soft Dice loss `1 − (2·p·t + smooth_nr) / (p + t + smooth_dr)` (with `jaccard`, the
/// denominator `2·(p + t − p·t) + smooth_dr`) per sample and class, `[N, C]`, of logits
/// `[N, C, 1]` (one position per sample: a classifier's output) with `p = softmax(logits)`
/// over the classes and `t` the one-hot of class indices `[N, 1]` in `0..C`. With one position,
/// each (sample, class) sum of the Dice family is one element, so the fused form computes the
/// ratio in the pass that computes `p` (and its gradient in one pass back) instead of building
/// the sums and then the ratio from `[N, C]` tensors.
pub fn softmax_dice_rows(
    logits: Tensor<3>,
    target: Tensor<2, Int>,
    smooth_nr: f32,
    smooth_dr: f32,
    jaccard: bool,
) -> Tensor<2> {
    #[cfg(feature = "flex")]
    if fused_runs_on(&logits, &target) && logits.dims()[2] == 1 {
        let params = dice_params(smooth_nr, smooth_dr, jaccard, &logits.device());
        return extension::softmax_dice_rows(logits, target, params);
    }
    composed::softmax_dice_rows(logits, target, smooth_nr, smooth_dr, jaccard)
}

/// `Σ_{n,c} class_scale[c] · loss_{n,c}` over [`softmax_dice_rows`]'s `[N, C]` loss, `[1]`:
/// with `class_scale` 0 for a class left out and each kept class's weight over the mean's
/// divisor, a Dice loss's mean or sum as one operation. On the CPU backend its forward pass
/// also computes the logits' gradient (one pass over the rows, each exponential once), so
/// the backward pass only scales it by its upstream value.
pub fn softmax_dice_rows_sum(
    logits: Tensor<3>,
    target: Tensor<2, Int>,
    smooth_nr: f32,
    smooth_dr: f32,
    jaccard: bool,
    class_scale: &[f32],
) -> Tensor<1> {
    let device = logits.device();
    let scales = Tensor::<1>::from_data(
        burn::tensor::TensorData::new(class_scale.to_vec(), [class_scale.len()]),
        &device,
    );
    #[cfg(feature = "flex")]
    {
        let [_, c, s] = logits.dims();
        if fused_runs_on(&logits, &target) && s == 1 && class_scale.len() == c {
            let params = dice_params(smooth_nr, smooth_dr, jaccard, &device);
            return extension::softmax_dice_rows_sum(logits, target, params, scales);
        }
    }
    composed::softmax_dice_rows_sum(logits, target, smooth_nr, smooth_dr, jaccard, scales)
}

/// The ratio's constants for the fused Dice rows: `smooth_nr`, `smooth_dr`, and 1 (Dice) or 2
/// (Jaccard).
#[cfg(feature = "flex")]
fn dice_params(
    smooth_nr: f32,
    smooth_dr: f32,
    jaccard: bool,
    device: &burn::tensor::Device,
) -> Tensor<1> {
    let k = if jaccard { 2.0 } else { 1.0 };
    Tensor::from_data(
        burn::tensor::TensorData::new(vec![smooth_nr, smooth_dr, k], [3]),
        device,
    )
}

/// `scale · Σ (output - target)²` over all elements, `[1]` (an MSE's mean with `scale` one
/// over the element count, its sum with 1). On the CPU backend, when the target is a constant
/// (no gradient), the forward pass also computes the output's gradient `2 · scale · (output −
/// target)`, so the backward pass only scales it by its upstream value (one pass over the
/// arrays instead of one each way).
pub fn squared_error_sum(output: Tensor<3>, target: Tensor<3>, scale: f32) -> Tensor<1> {
    #[cfg(feature = "flex")]
    if is_flex_f32(&output) && is_flex_f32(&target) && output.dims() == target.dims() {
        return extension::squared_error_sum(output, target, scale);
    }
    composed::squared_error_sum(output, target, scale)
}

/// The smallest and the largest of the class indices `indices`, as a loss checks them against
/// its class count: one pass on the CPU backend (burn's `min` and `max` are a pass each).
pub fn index_bounds(indices: &Tensor<2, Int>) -> [i64; 2] {
    #[cfg(feature = "flex")]
    if is_flex_int(indices) {
        let bounds = crate::input::to_i64_vec(extension::index_bounds(indices.clone()));
        return [bounds[0], bounds[1]];
    }
    composed::index_bounds(indices)
}

/// Whether this build has the fused kernels for the device and dtype of `tensor`: `f32` on the
/// Flex CPU backend (with or without autodiff).
pub fn is_fused(tensor: &Tensor<3>) -> bool {
    #[cfg(feature = "flex")]
    {
        is_flex_f32(tensor)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = tensor;
        false
    }
}

#[cfg(feature = "flex")]
fn is_flex_f32<const D: usize>(tensor: &Tensor<D>) -> bool {
    // Empty tensors take the composed path: the kernels split their work by sizes.
    tensor.shape().num_elements() > 0 && tensor.dtype() == DType::F32 && on_flex(&tensor.device())
}

#[cfg(feature = "flex")]
fn is_flex_int(tensor: &Tensor<2, Int>) -> bool {
    tensor.shape().num_elements() > 0
        && matches!(tensor.dtype(), DType::I64 | DType::I32)
        && on_flex(&tensor.device())
}

/// Whether `device` is the Flex CPU backend (with or without autodiff).
#[cfg(feature = "flex")]
fn on_flex(device: &burn::tensor::Device) -> bool {
    use burn::backend::DispatchDevice;
    matches!(
        device.as_dispatch().clone().inner(),
        DispatchDevice::Flex(_)
    )
}

#[cfg(feature = "flex")]
fn fused_runs_on(logits: &Tensor<3>, target: &Tensor<2, Int>) -> bool {
    let [n, _, s] = logits.dims();
    is_flex_f32(logits)
        && matches!(target.dtype(), DType::I64 | DType::I32)
        && target.dims() == [n, s]
        && target.device() == logits.device()
}

/// The same operations composed from burn's differentiable tensor operations: what runs where
/// there is no fused kernel, and the reference the fused kernels are tested against.
pub mod composed {
    use burn::{
        nn::loss::{MseLoss, Reduction},
        tensor::{
            Int, Tensor,
            activation::{log_softmax, softmax},
        },
    };

    use crate::targets::one_hot;

    /// See [`super::log_softmax_nll`].
    pub fn log_softmax_nll(logits: Tensor<3>, target: Tensor<2, Int>) -> Tensor<2> {
        let [n, _, s] = logits.dims();
        log_softmax(logits, 1)
            .gather(1, target.reshape([n, 1, s]))
            .reshape([n, s])
            .neg()
    }

    /// See [`super::log_softmax_nll_sum`].
    pub fn log_softmax_nll_sum(
        logits: Tensor<3>,
        target: Tensor<2, Int>,
        weights: Option<Tensor<2>>,
        scale: f32,
    ) -> Tensor<1> {
        let nll = log_softmax_nll(logits, target);
        let weighted = match weights {
            Some(weights) => nll * weights,
            None => nll,
        };
        weighted.sum() * scale
    }

    /// See [`super::softmax_overlap_sums`].
    pub fn softmax_overlap_sums(
        logits: Tensor<3>,
        target: Tensor<2, Int>,
    ) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
        let [n, c, _] = logits.dims();
        let probabilities = softmax(logits, 1);
        let onehot = one_hot(target, c);
        let intersection = (probabilities.clone() * onehot.clone()).sum_dim(2);
        let prediction = probabilities.sum_dim(2);
        let truth = onehot.sum_dim(2);
        (
            intersection.reshape([n, c]),
            prediction.reshape([n, c]),
            truth.reshape([n, c]),
        )
    }

    /// See [`super::softmax_dice_rows`]: the sums, then the ratio.
    pub fn softmax_dice_rows(
        logits: Tensor<3>,
        target: Tensor<2, Int>,
        smooth_nr: f32,
        smooth_dr: f32,
        jaccard: bool,
    ) -> Tensor<2> {
        let (intersection, prediction, truth) = softmax_overlap_sums(logits, target);
        let total = prediction + truth;
        let denominator = if jaccard {
            (total - intersection.clone()) * 2.0
        } else {
            total
        };
        ((intersection * 2.0 + smooth_nr) / (denominator + smooth_dr)).neg() + 1.0
    }

    /// See [`super::softmax_dice_rows_sum`]; `class_scale` `[C]`.
    pub fn softmax_dice_rows_sum(
        logits: Tensor<3>,
        target: Tensor<2, Int>,
        smooth_nr: f32,
        smooth_dr: f32,
        jaccard: bool,
        class_scale: Tensor<1>,
    ) -> Tensor<1> {
        let [c] = class_scale.dims();
        let loss = softmax_dice_rows(logits, target, smooth_nr, smooth_dr, jaccard);
        (loss * class_scale.reshape([1, c])).sum()
    }

    /// See [`super::index_bounds`]: burn's `min` and `max`, read back together.
    pub fn index_bounds(indices: &Tensor<2, Int>) -> [i64; 2] {
        let [n, s] = indices.dims();
        let flat = indices.clone().reshape([n * s]);
        let bounds = crate::input::to_i64_vec(Tensor::cat(vec![flat.clone().min(), flat.max()], 0));
        [bounds[0], bounds[1]]
    }

    /// See [`super::squared_error_sum`]: burn-nn's `MseLoss` with a sum, scaled.
    pub fn squared_error_sum(output: Tensor<3>, target: Tensor<3>, scale: f32) -> Tensor<1> {
        MseLoss::new().forward(output, target, Reduction::Sum) * scale
    }
}

/// A polynomial `exp` for `f32` that the compiler vectorises (libm's `expf` is a call per
/// element): Cody–Waite range reduction to `r ∈ [-ln 2 / 2, ln 2 / 2]`, Cephes' degree-6
/// polynomial for `e^r`, and the power of two built in the exponent bits. Relative error
/// below 2e-7 over `[-87, 88]` (inputs above 88 give `e^88`) (tested against `f32::exp`); below `-87.3` it returns
/// `e^-87.3` instead of a subnormal, which no loss here can tell from zero.
#[inline(always)]
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(crate) fn fast_exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding it rounds to the nearest integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_54, 88.0);
    // Fused multiply-adds: the kernels run this inside their AVX-512 or AVX2 + FMA dispatch,
    // where each is one instruction (separate multiplies and adds were a third of the
    // exponential's instructions). On a CPU without FMA each is a call to libm's `fmaf`: same values, slower.
    let shifted = x.mul_add(LOG2_E, ROUND);
    let k = shifted - ROUND;
    let r = k.mul_add(-LN2_LO, k.mul_add(-LN2_HI, x));
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 5.000_000_1e-1);
    let e_r = (p * r).mul_add(r, r) + 1.0;
    // The integer k sits in the low bits of `shifted`; move it to the exponent field.
    let exponent = (shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32 + 127) as u32;
    e_r * f32::from_bits(exponent << 23)
}

/// A polynomial natural logarithm for positive, normal `f32` that the compiler vectorises:
/// Cephes' `logf` (the mantissa reduced to `[√½, √2)`, a degree-9 polynomial, the exponent
/// times ln 2 in two parts). Relative error below 2e-7 (tested against `f64::ln`).
#[inline(always)]
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(crate) fn fast_ln(x: f32) -> f32 {
    let bits = x.to_bits();
    // x = m · 2^e with m in [0.5, 1).
    let exponent = ((bits >> 23) & 0xff) as i32 - 126;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    let e = (exponent - i32::from(small)) as f32;
    let m = if small { m + m - 1.0 } else { m - 1.0 };
    let z = m * m;
    let mut y = 7.037_683_6e-2_f32;
    y = y * m - 1.151_461e-1;
    y = y * m + 1.167_699_9e-1;
    y = y * m - 1.242_014_1e-1;
    y = y * m + 1.424_932_3e-1;
    y = y * m - 1.666_805_8e-1;
    y = y * m + 2.000_071_4e-1;
    y = y * m - 2.499_999_4e-1;
    y = y * m + 3.333_333e-1;
    y = y * m * z;
    y += -2.121_944_4e-4 * e;
    y += -0.5 * z;
    m + y + 0.693_359_4 * e
}

#[cfg(all(test, feature = "flex", feature = "ndarray"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// Deterministic values in `[-scale, scale)`.
    fn values(count: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut rng = crate::Rng::new(seed);
        (0..count)
            .map(|_| rng.range(-1.0, 1.0) as f32 * scale)
            .collect()
    }

    fn classes(count: usize, c: usize, seed: u64) -> Vec<i64> {
        values(count, seed, 1.0)
            .into_iter()
            .map(|v| (((v + 1.0) / 2.0 * c as f32) as i64).min(c as i64 - 1))
            .collect()
    }

    fn floats(tensor: Tensor<3>) -> Vec<f32> {
        tensor
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .expect("f32 values")
    }

    fn assert_close(name: &str, fused: &[f32], composed: &[f32], tolerance: f32) {
        assert_eq!(fused.len(), composed.len(), "{name}: lengths");
        for (i, (a, b)) in fused.iter().zip(composed).enumerate() {
            assert!(
                (a - b).abs() <= tolerance * (1.0 + b.abs()),
                "{name}[{i}]: fused {a}, composed {b}"
            );
        }
    }

    /// The shapes the kernels treat differently: rows (S = 1), tiles of positions, a last
    /// partial tile, one class, many classes, output chunks that straddle class rows, and
    /// enough elements for several parallel tasks (with a last partial chunk).
    const SHAPES: [[usize; 3]; 7] = [
        [5, 7, 1],
        [3, 2, 1],
        [2, 3, 300],
        [3, 4, 256],
        [1, 1, 9],
        [2, 40, 17],
        [2, 3, 40_001],
    ];

    /// Runs `fused` and `composed` on the same random logits and indices on the Flex autodiff
    /// device, with a random upstream gradient, and compares values and logit gradients.
    fn check<const D: usize>(
        name: &str,
        fused: impl Fn(Tensor<3>, Tensor<2, Int>) -> Tensor<D>,
        composed: impl Fn(Tensor<3>, Tensor<2, Int>) -> Tensor<D>,
    ) {
        check_shapes(name, &SHAPES, fused, composed);
    }

    /// [`check`] on the shapes with one position per sample (more rows than a parallel task
    /// takes, 2 to 1000 classes).
    fn check_rows<const D: usize>(
        name: &str,
        fused: impl Fn(Tensor<3>, Tensor<2, Int>) -> Tensor<D>,
        composed: impl Fn(Tensor<3>, Tensor<2, Int>) -> Tensor<D>,
    ) {
        check_shapes(
            name,
            &[
                [5, 7, 1],
                [3, 2, 1],
                [130, 10, 1],
                [4, 1000, 1],
                [300, 1000, 1],
                [5, 256, 1],
                [3, 512, 1],
                [70, 13, 1],
            ],
            fused,
            composed,
        );
    }

    fn check_shapes<const D: usize>(
        name: &str,
        shapes: &[[usize; 3]],
        fused: impl Fn(Tensor<3>, Tensor<2, Int>) -> Tensor<D>,
        composed: impl Fn(Tensor<3>, Tensor<2, Int>) -> Tensor<D>,
    ) {
        let device = Device::flex().autodiff();
        for (k, &[n, c, s]) in shapes.iter().enumerate() {
            let seed = k as u64 + 1;
            let logits = Tensor::<3>::from_data(
                TensorData::new(values(n * c * s, seed, 6.0), [n, c, s]),
                &device,
            );
            assert!(is_fused(&logits), "{name}: the Flex f32 path is fused");
            let target = Tensor::<2, Int>::from_data(
                TensorData::new(classes(n * s, c, seed + 100), [n, s]),
                &device,
            );
            let run = |f: &dyn Fn(Tensor<3>, Tensor<2, Int>) -> Tensor<D>| {
                let x = logits.clone().require_grad();
                let out = f(x.clone(), target.clone());
                let shape = out.dims();
                let count = shape.iter().product();
                let upstream = Tensor::<D>::from_data(
                    TensorData::new(values(count, seed + 200, 1.0), shape),
                    &device,
                );
                let value = out.clone().inner().reshape([1, 1, count]);
                let grads = (out * upstream).sum().backward();
                let grad = x.grad(&grads).expect("the logits get a gradient");
                (floats(value), floats(grad))
            };
            let (fused_value, fused_grad) = run(&fused);
            let (composed_value, composed_grad) = run(&composed);
            let label = format!("{name} {n}x{c}x{s}");
            assert_close(
                &format!("{label} value"),
                &fused_value,
                &composed_value,
                2e-5,
            );
            assert_close(&format!("{label} grad"), &fused_grad, &composed_grad, 2e-5);
        }
    }

    #[test]
    fn fused_log_softmax_nll_matches_its_composed_form() {
        check(
            "log_softmax_nll",
            log_softmax_nll,
            composed::log_softmax_nll,
        );
    }

    /// Per-position weights `[N, S]` for indices `target`: in `[0, 2)`, every seventh zero (an
    /// ignored position).
    fn position_weights(target: &Tensor<2, Int>) -> Tensor<2> {
        let [n, s] = target.dims();
        let weights = values(n * s, 77, 1.0)
            .into_iter()
            .enumerate()
            .map(|(i, v)| if i % 7 == 3 { 0.0 } else { v + 1.0 })
            .collect::<Vec<f32>>();
        Tensor::from_data(TensorData::new(weights, [n, s]), &target.device())
    }

    /// The weighted sums of [`log_softmax_nll_sum`] the losses use: a mean (scale 1 / N·S), a
    /// sum with per-position weights, and an arbitrary scale.
    #[allow(clippy::type_complexity)]
    fn nll_sums() -> Vec<(
        &'static str,
        Box<dyn Fn(Tensor<3>, Tensor<2, Int>, bool) -> Tensor<1>>,
    )> {
        let run = |weighted: bool, scale: Option<f32>| {
            move |logits: Tensor<3>, target: Tensor<2, Int>, fused: bool| {
                let [n, _, s] = logits.dims();
                let weights = weighted.then(|| position_weights(&target));
                let scale = scale.unwrap_or(1.0 / (n * s) as f32);
                if fused {
                    log_softmax_nll_sum(logits, target, weights, scale)
                } else {
                    composed::log_softmax_nll_sum(logits, target, weights, scale)
                }
            }
        };
        vec![
            ("mean", Box::new(run(false, None))),
            ("weighted sum", Box::new(run(true, Some(1.0)))),
            ("weighted, scaled", Box::new(run(true, Some(0.37)))),
        ]
    }

    #[test]
    fn fused_log_softmax_nll_sum_matches_its_composed_form() {
        for (name, sum) in nll_sums() {
            let name = format!("log_softmax_nll_sum {name}");
            check(&name, |l, t| sum(l, t, true), |l, t| sum(l, t, false));
            check_rows(&name, |l, t| sum(l, t, true), |l, t| sum(l, t, false));
        }
    }

    /// The backward pass that starts at the loss itself (upstream gradient exactly 1) takes
    /// the gradient the forward pass computed as it is: compares it with the composed form's.
    fn check_own_backward(
        name: &str,
        shapes: &[[usize; 3]],
        sum: impl Fn(Tensor<3>, Tensor<2, Int>, bool) -> Tensor<1>,
    ) {
        let device = Device::flex().autodiff();
        for (k, &[n, c, s]) in shapes.iter().enumerate() {
            let seed = 500 + k as u64;
            let logits = Tensor::<3>::from_data(
                TensorData::new(values(n * c * s, seed, 6.0), [n, c, s]),
                &device,
            );
            let target = Tensor::<2, Int>::from_data(
                TensorData::new(classes(n * s, c, seed + 1), [n, s]),
                &device,
            );
            let run = |fused: bool| {
                let x = logits.clone().require_grad();
                let loss = sum(x.clone(), target.clone(), fused);
                let value = loss.clone().inner().reshape([1, 1, 1]);
                let grads = loss.backward();
                (floats(value), floats(x.grad(&grads).expect("a gradient")))
            };
            let (fused, composed) = (run(true), run(false));
            let label = format!("{name} {n}x{c}x{s}");
            assert_close(&format!("{label} value"), &fused.0, &composed.0, 2e-5);
            assert_close(&format!("{label} grad"), &fused.1, &composed.1, 2e-5);
        }
    }

    #[test]
    fn the_fused_nll_sum_s_own_backward_gives_the_composed_gradient() {
        for (name, sum) in nll_sums() {
            let shapes: Vec<[usize; 3]> = SHAPES.iter().copied().chain([[300, 1000, 1]]).collect();
            check_own_backward(&format!("log_softmax_nll_sum {name}"), &shapes, sum);
        }
    }

    /// The Dice rows' reductions: per class scales with the first class left out (0), and
    /// the Jaccard form with every class counted.
    #[allow(clippy::type_complexity)]
    fn dice_rows_sums() -> Vec<(
        &'static str,
        Box<dyn Fn(Tensor<3>, Tensor<2, Int>, bool) -> Tensor<1>>,
    )> {
        let run = |jaccard: bool, drop_first: bool| {
            move |logits: Tensor<3>, target: Tensor<2, Int>, fused: bool| {
                let [n, c, _] = logits.dims();
                let class_scale: Vec<f32> = (0..c)
                    .map(|k| {
                        if drop_first && k == 0 {
                            0.0
                        } else {
                            (0.5 + k as f32 / c as f32) / n as f32
                        }
                    })
                    .collect();
                if fused {
                    softmax_dice_rows_sum(logits, target, 1e-5, 1e-5, jaccard, &class_scale)
                } else {
                    let scales =
                        Tensor::<1>::from_data(TensorData::new(class_scale, [c]), &logits.device());
                    composed::softmax_dice_rows_sum(logits, target, 1e-5, 1e-5, jaccard, scales)
                }
            }
        };
        vec![
            ("dice, first class left out", Box::new(run(false, true))),
            ("jaccard", Box::new(run(true, false))),
        ]
    }

    #[test]
    fn fused_dice_rows_sums_match_their_composed_form() {
        for (name, sum) in dice_rows_sums() {
            let name = format!("softmax_dice_rows_sum {name}");
            check_rows(&name, |l, t| sum(l, t, true), |l, t| sum(l, t, false));
            let rows = [[5, 7, 1], [3, 2, 1], [130, 10, 1], [300, 1000, 1]];
            check_own_backward(&name, &rows, sum);
        }
    }

    /// The three sums side by side, `[N, 3C]`, with the truth detached (it has no gradient).
    fn stacked(
        sums: impl Fn(Tensor<3>, Tensor<2, Int>) -> (Tensor<2>, Tensor<2>, Tensor<2>),
    ) -> impl Fn(Tensor<3>, Tensor<2, Int>) -> Tensor<2> {
        move |logits, target| {
            let (intersection, prediction, truth) = sums(logits, target);
            Tensor::cat(vec![intersection, prediction, truth.detach()], 1)
        }
    }

    #[test]
    fn fused_softmax_overlap_sums_match_their_composed_form() {
        check(
            "softmax_overlap_sums",
            stacked(softmax_overlap_sums),
            stacked(composed::softmax_overlap_sums),
        );
    }

    #[test]
    fn overlap_gradients_flow_from_either_sum_alone() {
        let pick = |which: usize| {
            move |f: fn(Tensor<3>, Tensor<2, Int>) -> (Tensor<2>, Tensor<2>, Tensor<2>)| {
                move |logits: Tensor<3>, target: Tensor<2, Int>| {
                    let (intersection, prediction, _) = f(logits, target);
                    if which == 0 { intersection } else { prediction }
                }
            }
        };
        for which in [0, 1] {
            check(
                "one overlap sum",
                pick(which)(softmax_overlap_sums),
                pick(which)(composed::softmax_overlap_sums),
            );
        }
    }

    #[test]
    fn fused_dice_rows_match_their_composed_form() {
        for (smooth_nr, smooth_dr) in [(1e-5, 1e-5), (0.0, 1e-5), (1.0, 1.0)] {
            for jaccard in [false, true] {
                let name =
                    format!("softmax_dice_rows nr {smooth_nr} dr {smooth_dr} jaccard {jaccard}");
                check_rows(
                    &name,
                    |l, t| softmax_dice_rows(l, t, smooth_nr, smooth_dr, jaccard),
                    |l, t| composed::softmax_dice_rows(l, t, smooth_nr, smooth_dr, jaccard),
                );
            }
        }
    }

    /// Both ways of the fused squared error: a target with a gradient of its own (the
    /// two-parent node) and a constant one (the gradient computed in the forward pass), with
    /// a scale, under a random upstream and exactly 1 (the loss itself).
    #[test]
    fn fused_squared_error_sum_matches_burn_nn() {
        let device = Device::flex().autodiff();
        let shapes = SHAPES.into_iter().chain([[3, 7, 40_001]]);
        for (k, [n, c, s]) in shapes.enumerate() {
            let seed = k as u64 + 7;
            let make = |seed| {
                Tensor::<3>::from_data(
                    TensorData::new(values(n * c * s, seed, 3.0), [n, c, s]),
                    &device,
                )
            };
            for (tracked_target, upstream) in [(true, 0.75), (false, 0.75), (false, 1.0)] {
                let run = |f: fn(Tensor<3>, Tensor<3>, f32) -> Tensor<1>| {
                    let output = make(seed).require_grad();
                    let target = make(seed + 50);
                    let target = if tracked_target {
                        target.require_grad()
                    } else {
                        target
                    };
                    let value = f(output.clone(), target.clone(), 0.37);
                    let grads = if upstream == 1.0 {
                        value.clone().backward()
                    } else {
                        (value.clone() * upstream).backward()
                    };
                    let value = value.inner().into_data().try_to_vec::<f32>().expect("f32");
                    let target_grad = target.grad(&grads).map(floats);
                    let output_grad = floats(output.grad(&grads).expect("a gradient"));
                    (value, output_grad, target_grad)
                };
                let fused = run(squared_error_sum);
                let composed = run(composed::squared_error_sum);
                let label = format!(
                    "squared_error_sum {n}x{c}x{s}, target tracked {tracked_target}, upstream {upstream}"
                );
                assert_close(&format!("{label} value"), &fused.0, &composed.0, 1e-5);
                assert_close(&format!("{label} output grad"), &fused.1, &composed.1, 1e-5);
                assert_eq!(fused.2.is_some(), tracked_target, "{label}");
                if let (Some(fused), Some(composed)) = (&fused.2, &composed.2) {
                    assert_close(&format!("{label} target grad"), fused, composed, 1e-5);
                }
            }
        }
    }

    /// The one-pass bounds against burn's `min` and `max`: `i64` and `i32` indices, fewer
    /// than a vector's lanes and more than a parallel task's share, negative and huge values
    /// (the bad indices the check exists to catch) at either end and in the middle.
    #[test]
    fn fused_index_bounds_match_burn_s_min_and_max() {
        let device = Device::flex().autodiff();
        for (k, [n, s]) in [[1, 5], [3, 7], [2, 50_003]].into_iter().enumerate() {
            let len = n * s;
            let mut values = classes(len, 4, k as u64 + 90);
            for (at, bad) in [(0, -3), (len / 2, 1 << 40), (len - 1, -(1 << 35))] {
                let mut values = values.clone();
                values[at] = bad;
                let wide = TensorData::new(values.clone(), [n, s]);
                let wide = Tensor::<2, Int>::from_data(wide, (&device, DType::I64));
                assert_eq!(wide.dtype(), DType::I64);
                assert_eq!(
                    index_bounds(&wide),
                    composed::index_bounds(&wide),
                    "i64 {n}x{s} {at}"
                );
                let narrow: Vec<i32> = values
                    .iter()
                    .map(|&v| v.clamp(-(1 << 30), 1 << 30) as i32)
                    .collect();
                let narrow = TensorData::new(narrow, [n, s]);
                let narrow = Tensor::<2, Int>::from_data(narrow, (&device, DType::I32));
                assert_eq!(narrow.dtype(), DType::I32);
                let bounds = index_bounds(&narrow);
                assert_eq!(bounds, composed::index_bounds(&narrow), "i32 {n}x{s} {at}");
            }
            values.sort_unstable();
            let sorted = TensorData::new(values.clone(), [n, s]);
            let sorted = Tensor::<2, Int>::from_data(sorted, (&device, DType::I64));
            assert_eq!(index_bounds(&sorted), [values[0], values[len - 1]]);
        }
    }

    #[test]
    fn strided_logits_are_read_in_their_logical_order() {
        let device = Device::flex().autodiff();
        let data = TensorData::new(values(2 * 5 * 3, 9, 4.0), [2, 5, 3]);
        // [2, 5, 3] with the last two axes swapped: a [2, 3, 5] view that is not contiguous.
        let strided = Tensor::<3>::from_data(data, &device).swap_dims(1, 2);
        let contiguous = Tensor::<3>::from_data(strided.to_data(), &device);
        let target =
            Tensor::<2, Int>::from_data(TensorData::new(classes(10, 3, 4), [2, 5]), &device);
        let a = log_softmax_nll(strided, target.clone())
            .into_data()
            .try_to_vec::<f32>();
        let b = log_softmax_nll(contiguous, target)
            .into_data()
            .try_to_vec::<f32>();
        assert_eq!(a, b);
    }

    #[test]
    #[allow(deprecated)] // Device::ndarray: still a backend losskit offers
    fn other_backends_and_dtypes_run_the_composed_form() {
        let ndarray = Tensor::<3>::zeros([1, 2, 1], &Device::ndarray());
        assert!(!is_fused(&ndarray));
        let flex_f64 = Tensor::<3>::zeros([1, 2, 1], &Device::flex()).cast(DType::F64);
        assert!(!is_fused(&flex_f64));
        let target = Tensor::<2, Int>::zeros([1, 1], &Device::flex());
        let value = log_softmax_nll(flex_f64, target)
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .expect("f64");
        assert!((value[0] - 2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn fast_ln_is_within_two_ulp_of_libm() {
        let mut worst = 0f64;
        let mut x = 1e-30f32;
        while x < 1e30 {
            let expected = f64::from(x).ln();
            let got = f64::from(fast_ln(x));
            let error = if expected.abs() < 1e-3 {
                (got - expected).abs()
            } else {
                ((got - expected) / expected).abs()
            };
            worst = worst.max(error);
            x *= 1.000_37;
        }
        assert!(worst < 2e-7, "worst relative error {worst:e}");
        assert_eq!(fast_ln(1.0), 0.0);
    }

    #[test]
    fn fast_exp_is_within_two_ulp_of_libm() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let expected = f64::from(x).exp();
            let got = f64::from(fast_exp(x));
            worst = worst.max(((got - expected) / expected).abs());
            x += 0.000_37;
        }
        assert!(worst < 2e-7, "worst relative error {worst:e}");
        assert_eq!(fast_exp(0.0), 1.0);
        assert!(fast_exp(-1000.0) < 1e-37);
    }
}
