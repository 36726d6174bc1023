//! Fused layer kernels for the bundled models' convolution blocks: a stride-1 "same" 2-D
//! convolution, a transposed convolution whose stride equals its kernel (a U-Net's
//! up-sampling), batch norm with batch statistics followed by ReLU (the training form), and
//! the 2×2 stride-2 max pooling.
//!
//! On the Flex CPU backend with `f32` each runs as one operation with a hand-written backward
//! pass (the kernels' notes say why burn-flex's own forms are slower); on every other backend
//! and dtype each runs its [`composed`] form, burn's `conv2d`, `conv_transpose2d`,
//! `batch_norm_train` then `relu`, and `max_pool2d`: same value, same gradient, to float
//! rounding (the pooling exactly). Tests hold the two to each other.

use burn::tensor::Tensor;

#[cfg(feature = "flex")]
use super::layer_extension as extension;

/// The convolution of `x` `[N, C_in, H, W]` by `weight` `[C_out, C_in, K_h, K_w]` with stride 1,
/// dilation 1, no groups and no bias, padded by `(K − 1) / 2` on each side so that the output
/// `[N, C_out, H, W]` keeps the input's size (odd kernel sides; even ones pad the end less, as
/// burn's `conv2d` with that padding does).
pub fn conv2d_same(x: Tensor<4>, weight: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    {
        let [_, channels, _, _] = x.dims();
        let [_, weight_channels, kh, kw] = weight.dims();
        if super::is_flex_f32(&x)
            && super::is_flex_f32(&weight)
            && channels == weight_channels
            && kh % 2 == 1
            && kw % 2 == 1
            && x.device() == weight.device()
        {
            return extension::conv2d_same(x, weight);
        }
    }
    composed::conv2d_same(x, weight)
}

/// The transposed convolution of `x` `[N, C_in, H, W]` by `weight` `[C_in, C_out, K_h, K_w]`
/// (burn-nn's `ConvTranspose2d` layout) with stride equal to the kernel, no padding, dilation
/// 1 and no groups, plus `bias` `[C_out]` when given: `[N, C_out, H·K_h, W·K_w]`, each input
/// pixel spread over its own `K_h × K_w` block, as a U-Net's 2×2 stride-2 up-sampling does.
pub fn conv_transpose2d_blocks(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    {
        let [_, channels, _, _] = x.dims();
        let [weight_channels, outputs, _, _] = weight.dims();
        let bias_fits = bias.as_ref().is_none_or(|bias| {
            super::is_flex_f32(bias) && bias.dims() == [outputs] && bias.device() == x.device()
        });
        if super::is_flex_f32(&x)
            && super::is_flex_f32(&weight)
            && channels == weight_channels
            && bias_fits
            && x.device() == weight.device()
        {
            let bias = bias.unwrap_or_else(|| Tensor::zeros([outputs], &x.device()));
            return extension::conv_transpose2d_blocks(x, weight, bias);
        }
    }
    composed::conv_transpose2d_blocks(x, weight, bias)
}

/// `relu(γ · (x − mean) / √(var + ε) + β)` of `x` `[N, C, H, W]` with the batch's own
/// per-channel mean and biased variance, as burn-nn's `BatchNorm` computes in training, then
/// ReLU; returns the output and the batch mean and variance `[C]` (detached: they feed the
/// running statistics, not the gradient).
pub fn batch_norm_relu_train(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    #[cfg(feature = "flex")]
    {
        let [_, channels, _, _] = x.dims();
        if super::is_flex_f32(&x)
            && super::is_flex_f32(&gamma)
            && super::is_flex_f32(&beta)
            && gamma.dims() == [channels]
            && beta.dims() == [channels]
            && x.device() == gamma.device()
            && x.device() == beta.device()
        {
            return extension::batch_norm_relu_train(x, gamma, beta, epsilon);
        }
    }
    composed::batch_norm_relu_train(x, gamma, beta, epsilon)
}

/// The 2×2 max pooling with stride 2 of `x` `[N, C, H, W]`, `[N, C, H / 2, W / 2]` (no
/// padding: an odd last row or column is dropped, as burn-nn's `MaxPool2d` with kernel
/// `[2, 2]` and its default stride does). The gradient goes to each window's first largest
/// element (its last NaN when there is one), as in burn and PyTorch.
pub fn max_pool2d_2x2(x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if super::is_flex_f32(&x) {
        return extension::max_pool2d_2x2(x);
    }
    composed::max_pool2d_2x2(x)
}

/// The same operations from burn's own: what runs where there is no fused kernel, and the
/// reference the fused kernels are tested against.
pub mod composed {
    use burn::tensor::{
        Tensor,
        activation::relu,
        module::{batch_norm_train, conv_transpose2d, conv2d, max_pool2d},
        ops::{ConvOptions, ConvTransposeOptions, MaxPoolOptions},
    };

    /// See [`super::conv2d_same`].
    pub fn conv2d_same(x: Tensor<4>, weight: Tensor<4>) -> Tensor<4> {
        let [_, _, kh, kw] = weight.dims();
        let options = ConvOptions::new([1, 1], [(kh - 1) / 2, (kw - 1) / 2], [1, 1], 1);
        conv2d(x, weight, None, options)
    }

    /// See [`super::conv_transpose2d_blocks`].
    pub fn conv_transpose2d_blocks(
        x: Tensor<4>,
        weight: Tensor<4>,
        bias: Option<Tensor<1>>,
    ) -> Tensor<4> {
        let [_, _, kh, kw] = weight.dims();
        let options = ConvTransposeOptions::new([kh, kw], [0, 0], [0, 0], [1, 1], 1);
        conv_transpose2d(x, weight, bias, options)
    }

    /// See [`super::batch_norm_relu_train`].
    pub fn batch_norm_relu_train(
        x: Tensor<4>,
        gamma: Tensor<1>,
        beta: Tensor<1>,
        epsilon: f64,
    ) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
        let result = batch_norm_train(x, gamma, beta, epsilon);
        (relu(result.output), result.mean, result.variance)
    }

    /// See [`super::max_pool2d_2x2`].
    pub fn max_pool2d_2x2(x: Tensor<4>) -> Tensor<4> {
        max_pool2d(x, MaxPoolOptions::new([2, 2]).with_stride([2, 2]))
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn values(count: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut rng = crate::Rng::new(seed);
        (0..count)
            .map(|_| rng.range(-1.0, 1.0) as f32 * scale)
            .collect()
    }

    fn random<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
        let count = shape.iter().product();
        Tensor::from_data(TensorData::new(values(count, seed, 1.0), shape), device)
    }

    fn floats<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
        tensor
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .expect("f32 values")
    }

    fn assert_close(name: &str, fused: &[f32], composed: &[f32], tolerance: f32) {
        assert_eq!(fused.len(), composed.len(), "{name}: lengths");
        let scale = composed.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        for (i, (a, b)) in fused.iter().zip(composed).enumerate() {
            assert!(
                (a - b).abs() <= tolerance * scale,
                "{name}[{i}]: fused {a}, composed {b}"
            );
        }
    }

    /// `[N, C_in, H, W]` and `[C_out, C_in, K, K]` the kernels treat differently: 3×3 and 1×1
    /// and 5×3 kernels, one input channel, images narrower than the kernel, rows of one pixel,
    /// and enough input channels that a sample takes several tiles of positions, starting
    /// inside image rows.
    const CONV_SHAPES: [([usize; 4], [usize; 4]); 7] = [
        ([2, 3, 7, 6], [4, 3, 3, 3]),
        ([3, 1, 9, 9], [5, 1, 3, 3]),
        ([2, 4, 5, 8], [3, 4, 1, 1]),
        ([1, 2, 6, 5], [2, 2, 5, 3]),
        ([2, 2, 2, 1], [3, 2, 3, 3]),
        ([4, 6, 12, 12], [8, 6, 3, 3]),
        ([2, 64, 20, 21], [3, 64, 3, 3]),
    ];

    #[test]
    fn fused_conv2d_same_matches_burn_conv2d() {
        let device = Device::flex().autodiff();
        for (k, (input, kernel)) in CONV_SHAPES.into_iter().enumerate() {
            let seed = 10 * k as u64;
            let x = random(input, seed, &device);
            let weight = random(kernel, seed + 1, &device);
            let [n, _, h, w] = input;
            let upstream = random([n, kernel[0], h, w], seed + 2, &device);
            let run = |f: fn(Tensor<4>, Tensor<4>) -> Tensor<4>| {
                let (x, weight) = (x.clone().require_grad(), weight.clone().require_grad());
                let out = f(x.clone(), weight.clone());
                let value = floats(out.clone().inner());
                let grads = (out * upstream.clone()).sum().backward();
                let grad = |t: &Tensor<4>| floats(t.grad(&grads).expect("a gradient"));
                (value, grad(&x), grad(&weight))
            };
            let fused = run(conv2d_same);
            let composed = run(composed::conv2d_same);
            let label = format!("conv2d_same {input:?} by {kernel:?}");
            assert_close(&format!("{label} value"), &fused.0, &composed.0, 1e-5);
            assert_close(&format!("{label} input grad"), &fused.1, &composed.1, 1e-5);
            assert_close(&format!("{label} weight grad"), &fused.2, &composed.2, 1e-5);
        }
    }

    /// Inputs `[N, C_in, H, W]` and weights `[C_in, C_out, K_h, K_w]`: 2×2 as a U-Net uses it,
    /// 3×3 and 1×2 blocks, one-pixel and one-channel inputs, and a product large enough for
    /// the matrix product to split over threads.
    const BLOCK_SHAPES: [([usize; 4], [usize; 4]); 6] = [
        ([2, 3, 4, 5], [3, 4, 2, 2]),
        ([1, 2, 3, 3], [2, 1, 3, 3]),
        ([3, 1, 1, 2], [1, 2, 1, 2]),
        ([2, 4, 1, 1], [4, 3, 2, 2]),
        ([2, 8, 6, 7], [8, 4, 2, 2]),
        ([2, 64, 24, 24], [64, 32, 2, 2]),
    ];

    #[test]
    fn fused_conv_transpose2d_blocks_matches_burn_conv_transpose2d() {
        let device = Device::flex().autodiff();
        for (k, (input, kernel)) in BLOCK_SHAPES.into_iter().enumerate() {
            let seed = 100 + 10 * k as u64;
            let x = random(input, seed, &device);
            let weight = random(kernel, seed + 1, &device);
            let bias = random([kernel[1]], seed + 2, &device);
            let [n, _, h, w] = input;
            let upstream = random(
                [n, kernel[1], h * kernel[2], w * kernel[3]],
                seed + 3,
                &device,
            );
            type Blocks = fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>) -> Tensor<4>;
            let run = |f: Blocks| {
                let (x, weight, bias) = (
                    x.clone().require_grad(),
                    weight.clone().require_grad(),
                    bias.clone().require_grad(),
                );
                let out = f(x.clone(), weight.clone(), Some(bias.clone()));
                let value = floats(out.clone().inner());
                let grads = (out * upstream.clone()).sum().backward();
                let grad_x = floats(x.grad(&grads).expect("an input gradient"));
                let grad_weight = floats(weight.grad(&grads).expect("a weight gradient"));
                let grad_bias = floats(bias.grad(&grads).expect("a bias gradient"));
                (value, grad_x, grad_weight, grad_bias)
            };
            let fused = run(conv_transpose2d_blocks);
            let composed = run(composed::conv_transpose2d_blocks);
            let label = format!("conv_transpose2d_blocks {input:?} by {kernel:?}");
            assert_close(&format!("{label} value"), &fused.0, &composed.0, 1e-5);
            assert_close(&format!("{label} input grad"), &fused.1, &composed.1, 1e-5);
            assert_close(&format!("{label} weight grad"), &fused.2, &composed.2, 1e-5);
            assert_close(&format!("{label} bias grad"), &fused.3, &composed.3, 1e-5);
        }
    }

    #[test]
    fn the_blocks_without_a_bias_and_of_a_constant_input_match_burn() {
        let device = Device::flex().autodiff();
        let x = random([2, 3, 3, 4], 7, &device);
        let weight = random([3, 2, 2, 2], 8, &device).require_grad();
        let run = |f: fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>) -> Tensor<4>| {
            let out = f(x.clone(), weight.clone(), None);
            let grads = (out.clone() * out.clone()).sum().backward();
            assert!(x.grad(&grads).is_none(), "a constant input has no gradient");
            (
                floats(out.inner()),
                floats(weight.grad(&grads).expect("a weight gradient")),
            )
        };
        let (fused, composed) = (
            run(conv_transpose2d_blocks),
            run(composed::conv_transpose2d_blocks),
        );
        assert_close("unbiased blocks value", &fused.0, &composed.0, 1e-5);
        assert_close("unbiased blocks weight grad", &fused.1, &composed.1, 1e-5);
    }

    #[test]
    fn a_constant_input_gets_no_gradient_and_the_weight_still_does() {
        let device = Device::flex().autodiff();
        let x = random([2, 3, 5, 5], 1, &device);
        let weight = random([4, 3, 3, 3], 2, &device).require_grad();
        let grads = conv2d_same(x.clone(), weight.clone()).sum().backward();
        let composed = composed::conv2d_same(x, weight.clone()).sum().backward();
        assert_close(
            "weight grad",
            &floats(weight.grad(&grads).expect("a gradient")),
            &floats(weight.grad(&composed).expect("a gradient")),
            1e-5,
        );
    }

    #[test]
    fn fused_batch_norm_relu_matches_burn_batch_norm_then_relu() {
        let device = Device::flex().autodiff();
        for (k, shape) in [[4, 3, 5, 6], [2, 8, 1, 1], [1, 2, 9, 3], [16, 5, 12, 12]]
            .into_iter()
            .enumerate()
        {
            let seed = 100 + 10 * k as u64;
            // An offset and a scale per run, so that the ReLU cuts at different points.
            let x = random(shape, seed, &device) * 3.0 + 0.5;
            let c = shape[1];
            let gamma = random([c], seed + 1, &device) + 1.0;
            let beta = random([c], seed + 2, &device);
            let upstream = random(shape, seed + 3, &device);
            type Norm =
                fn(Tensor<4>, Tensor<1>, Tensor<1>, f64) -> (Tensor<4>, Tensor<1>, Tensor<1>);
            let run = |f: Norm| {
                let (x, gamma, beta) = (
                    x.clone().require_grad(),
                    gamma.clone().require_grad(),
                    beta.clone().require_grad(),
                );
                let (out, mean, variance) = f(x.clone(), gamma.clone(), beta.clone(), 1e-5);
                let value = floats(out.clone().inner());
                let statistics = [floats(mean.inner()), floats(variance.inner())].concat();
                let grads = (out * upstream.clone()).sum().backward();
                (
                    value,
                    statistics,
                    floats(x.grad(&grads).expect("a gradient")),
                    floats(gamma.grad(&grads).expect("a gradient")),
                    floats(beta.grad(&grads).expect("a gradient")),
                )
            };
            let fused = run(batch_norm_relu_train);
            let composed = run(composed::batch_norm_relu_train);
            let label = format!("batch_norm_relu {shape:?}");
            assert_close(&format!("{label} value"), &fused.0, &composed.0, 2e-5);
            assert_close(&format!("{label} statistics"), &fused.1, &composed.1, 2e-5);
            assert_close(&format!("{label} input grad"), &fused.2, &composed.2, 2e-5);
            assert_close(&format!("{label} gamma grad"), &fused.3, &composed.3, 2e-5);
            assert_close(&format!("{label} beta grad"), &fused.4, &composed.4, 2e-5);
        }
    }

    /// The gradients and values of `pool` on `x`, with `upstream` weighting the output.
    fn pooled(
        pool: fn(Tensor<4>) -> Tensor<4>,
        x: &Tensor<4>,
        upstream: &Tensor<4>,
    ) -> (Vec<f32>, Vec<f32>) {
        let x = x.clone().require_grad();
        let out = pool(x.clone());
        let value = floats(out.clone().inner());
        let grads = (out * upstream.clone()).sum().backward();
        (value, floats(x.grad(&grads).expect("an input gradient")))
    }

    #[test]
    fn fused_max_pool_matches_burn_max_pool_with_ties_and_odd_sides() {
        let device = Device::flex().autodiff();
        // Even sides, odd sides (a row and a column dropped), one window per plane, and
        // enough planes for the work to split over threads.
        for (k, shape) in [[2, 3, 8, 8], [1, 2, 7, 5], [3, 1, 2, 2], [4, 8, 32, 30]]
            .into_iter()
            .enumerate()
        {
            let seed = 300 + 10 * k as u64;
            let [n, c, h, w] = shape;
            let upstream = random([n, c, h / 2, w / 2], seed + 1, &device);
            let x = random(shape, seed, &device);
            // Rounded to halves, most windows hold equal values: the gradient must go to
            // the same one of them.
            let ties = (x.clone() * 2.0).round() / 2.0;
            for (label, x) in [("distinct", x), ("ties", ties)] {
                let fused = pooled(max_pool2d_2x2, &x, &upstream);
                let composed = pooled(composed::max_pool2d_2x2, &x, &upstream);
                let label = format!("max_pool2d_2x2 {shape:?} {label}");
                assert_eq!(fused.0, composed.0, "{label} value");
                assert_eq!(fused.1, composed.1, "{label} input grad");
            }
        }
    }

    #[test]
    fn a_nan_in_a_window_wins_the_max_pool_as_in_burn() {
        let device = Device::flex().autodiff();
        let mut values = values(16, 5, 1.0);
        // Window (0, 0): one NaN; window (0, 1): two, the last one wins.
        values[1] = f32::NAN;
        values[2] = f32::NAN;
        values[7] = f32::NAN;
        let x = Tensor::<4>::from_data(TensorData::new(values, [1, 1, 4, 4]), &device);
        let upstream = random([1, 1, 2, 2], 6, &device);
        let fused = pooled(max_pool2d_2x2, &x, &upstream);
        let composed = pooled(composed::max_pool2d_2x2, &x, &upstream);
        let bits = |v: &[f32]| v.iter().map(|v| v.is_nan()).collect::<Vec<_>>();
        assert_eq!(bits(&fused.0), vec![true, true, false, false]);
        assert_eq!(bits(&fused.0), bits(&composed.0), "NaN outputs");
        assert_eq!(fused.1, composed.1, "the gradient goes to the same element");
        assert_ne!(
            fused.1[7], 0.0,
            "the last NaN of window (0, 1) takes its gradient"
        );
    }

    #[test]
    fn the_layers_run_composed_off_flex() {
        let x = Tensor::<4>::zeros([1, 2, 3, 3], &Device::flex()).cast(burn::tensor::DType::F64);
        let weight =
            Tensor::<4>::ones([1, 2, 3, 3], &Device::flex()).cast(burn::tensor::DType::F64);
        assert!(!crate::fused::is_fused(&x.clone().reshape([1, 2, 9])));
        let value = floats(conv2d_same(x + 1.0, weight));
        // The centre sees all 18 ones; a corner 8.
        assert_eq!(value[4], 18.0);
        assert_eq!(value[0], 8.0);
    }
}
