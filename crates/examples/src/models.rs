//! The bundled models: a small CNN for classification (and image regression and multi-label
//! classification), a small U-Net for segmentation, and a small MLP for table rows.

use burn::{
    module::Module,
    nn::{
        BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d,
        conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig},
        pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig},
    },
    tensor::{
        Device, Tensor,
        activation::{self, relu},
    },
};
use losskit_core::{OutputDomain, fused::layers};
use serde::{Deserialize, Serialize};

/// The side of the generated classification images and the default classifier input.
pub const CNN_SIZE: usize = 28;

/// The smallest classifier input side (three 2×2 poolings must leave a pixel).
pub const MIN_CNN_SIZE: usize = 8;

/// `pool` applied to `x`: a 2×2 stride-2 pooling (as the models build theirs) as the fused
/// operation, whose kernels on Flex read each window once each way (burn-flex runs every max
/// pooling as a general 3-D loop with `i64` indices); any other through burn-nn.
fn max_pool(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let two_by_two = pool.kernel_size == [2, 2]
        && pool.stride == [2, 2]
        && pool.dilation == [1, 1]
        && !pool.ceil_mode
        && matches!(pool.padding, PaddingConfig2d::Valid);
    if two_by_two {
        layers::max_pool2d_2x2(x)
    } else {
        pool.forward(x)
    }
}

/// Convolution, batch norm, ReLU.
#[derive(Module, Debug)]
pub struct ConvBlock {
    conv: Conv2d,
    norm: BatchNorm,
}

impl ConvBlock {
    fn new(input: usize, output: usize, device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([input, output], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device),
            norm: BatchNormConfig::new(output).init(device),
        }
    }

    // The block runs as two fused operations (`losskit_core::fused::layers`): on Flex the
    // convolution and the training-time batch norm + ReLU are single graph nodes with
    // hand-written backward passes, several times faster than burn-flex's composed forms
    // (bench/RESULTS.md); elsewhere they are burn's own.
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = layers::conv2d_same(x, self.conv.weight.val());
        if !(x.device().is_autodiff() && self.norm.training.is_enabled()) {
            return relu(self.norm.forward(x));
        }
        let norm = &self.norm;
        let (output, mean, variance) =
            layers::batch_norm_relu_train(x, norm.gamma.val(), norm.beta.val(), norm.epsilon);
        // The running statistics, updated as burn-nn's `BatchNorm::forward` updates them.
        let device = output.device();
        for (running, batch) in [(&norm.running_mean, mean), (&norm.running_var, variance)] {
            let value = running.value_sync().to_device(&device);
            running.update(
                (value.mul_scalar(1.0 - norm.momentum) + batch.mul_scalar(norm.momentum)).detach(),
            );
        }
        output
    }
}

/// The classification model's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CnnConfig {
    /// Input channels (1 grayscale, 3 RGB).
    pub channels: usize,
    /// Classes.
    pub classes: usize,
    /// Channels of the first block (doubled by each of the next two).
    pub width: usize,
}

/// A small CNN for `channels × H × W` images of any size (at least 8×8): three conv blocks
/// with max pooling, an adaptive average pooling to a 3×3 grid, then a hidden linear layer.
///
/// The adaptive pooling makes one model shape serve every input size. At 28×28 the feature
/// map is already 3×3, so the model is exactly the fixed-size CNN of earlier runs (whose
/// checkpoints load unchanged); unlike global average pooling it keeps a coarse layout
/// (centre versus rim), which the cell images' classes depend on.
#[derive(Module, Debug)]
pub struct Cnn {
    block1: ConvBlock,
    block2: ConvBlock,
    block3: ConvBlock,
    pool: MaxPool2d,
    grid: AdaptiveAvgPool2d,
    hidden: Linear,
    output: Linear,
}

impl CnnConfig {
    /// The model, on `device`.
    pub fn init(&self, device: &Device) -> Cnn {
        let w = self.width;
        Cnn {
            block1: ConvBlock::new(self.channels, w, device),
            block2: ConvBlock::new(w, 2 * w, device),
            block3: ConvBlock::new(2 * w, 4 * w, device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            grid: AdaptiveAvgPool2dConfig::new([3, 3]).init(),
            hidden: LinearConfig::new(4 * w * 3 * 3, 64).init(device),
            output: LinearConfig::new(64, self.classes).init(device),
        }
    }
}

impl Cnn {
    /// Logits `[N, classes]` of images `[N, channels, H, W]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = max_pool(&self.pool, self.block1.forward(images)); // 28 -> 14
        let x = max_pool(&self.pool, self.block2.forward(x)); // 7
        let x = self
            .grid
            .forward(max_pool(&self.pool, self.block3.forward(x))); // 3
        let [n, c, h, w] = x.dims();
        let x = relu(self.hidden.forward(x.reshape([n, c * h * w])));
        self.output.forward(x)
    }
}

/// The segmentation model's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Input channels.
    pub channels: usize,
    /// Classes (background included).
    pub classes: usize,
    /// Channels of the first level (doubled at each deeper level).
    pub width: usize,
    /// Down-sampling steps (input sides must be multiples of `2^depth`); runs written before
    /// depth was an option have 2.
    #[serde(default = "UNetConfig::default_depth")]
    pub depth: usize,
}

impl UNetConfig {
    fn default_depth() -> usize {
        2
    }

    /// The factor image sides must be a multiple of.
    pub fn downsampling(&self) -> usize {
        1 << self.depth
    }

    /// The model, on `device`.
    pub fn init(&self, device: &Device) -> UNet {
        let width = |level: usize| self.width << level;
        let up = |input: usize, output: usize| {
            ConvTranspose2dConfig::new([input, output], [2, 2])
                .with_stride([2, 2])
                .init(device)
        };
        let double = |input: usize, output: usize| DoubleConv {
            first: ConvBlock::new(input, output, device),
            second: ConvBlock::new(output, output, device),
        };
        UNet {
            encoders: (0..self.depth)
                .map(|level| {
                    let input = if level == 0 {
                        self.channels
                    } else {
                        width(level - 1)
                    };
                    double(input, width(level))
                })
                .collect(),
            bottom: double(width(self.depth - 1), width(self.depth)),
            ups: (0..self.depth)
                .rev()
                .map(|level| up(width(level + 1), width(level)))
                .collect(),
            decoders: (0..self.depth)
                .rev()
                .map(|level| ConvBlock::new(2 * width(level), width(level), device))
                .collect(),
            head: Conv2dConfig::new([self.width, self.classes], [1, 1]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
        }
    }
}

/// Two convolution blocks.
#[derive(Module, Debug)]
pub struct DoubleConv {
    first: ConvBlock,
    second: ConvBlock,
}

impl DoubleConv {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.second.forward(self.first.forward(x))
    }
}

/// A U-Net (Ronneberger et al. 2015) of configurable depth and width: at each level two
/// convolution blocks and a 2×2 max pooling down, a 2×2 transposed convolution up, the skip
/// connection concatenated, and one convolution block.
#[derive(Module, Debug)]
pub struct UNet {
    encoders: Vec<DoubleConv>,
    bottom: DoubleConv,
    ups: Vec<ConvTranspose2d>,
    decoders: Vec<ConvBlock>,
    head: Conv2d,
    pool: MaxPool2d,
}

impl UNet {
    /// Logits `[N, classes, H, W]` of images `[N, channels, H, W]` (sides multiples of
    /// `2^depth`).
    pub fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        let mut skips = Vec::with_capacity(self.encoders.len());
        let mut x = images;
        for encoder in &self.encoders {
            let features = encoder.forward(x);
            x = max_pool(&self.pool, features.clone());
            skips.push(features);
        }
        x = self.bottom.forward(x);
        for ((up, decoder), skip) in self
            .ups
            .iter()
            .zip(&self.decoders)
            .zip(skips.into_iter().rev())
        {
            x = decoder.forward(Tensor::cat(vec![Self::up(up, x), skip], 1));
        }
        self.head(x)
    }

    // The 2×2 stride-2 up-sampling as the fused transposed convolution (one product per
    // sample); burn-flex runs it, and its backward, as 3-D (transposed) convolutions on
    // layout copies. `UNetConfig::init` builds every `ups` layer with stride = kernel, no
    // padding, dilation 1 and one group, the only case the fused form computes.
    fn up(up: &ConvTranspose2d, x: Tensor<4>) -> Tensor<4> {
        layers::conv_transpose2d_blocks(x, up.weight.val(), up.bias.as_ref().map(|b| b.val()))
    }

    // The 1×1 head as the fused convolution (its 1×1 path is one product per sample);
    // burn-flex runs it as a 3-D convolution on layout copies.
    fn head(&self, x: Tensor<4>) -> Tensor<4> {
        let logits = layers::conv2d_same(x, self.head.weight.val());
        match &self.head.bias {
            Some(bias) => {
                let [classes] = bias.dims();
                logits + bias.val().reshape([1, classes, 1, 1])
            }
            None => logits,
        }
    }
}

/// The tabular model's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Input features.
    pub inputs: usize,
    /// Outputs.
    pub outputs: usize,
    /// Units of each hidden layer.
    pub width: usize,
}

/// A multi-layer perceptron for standardised table rows: two hidden layers of `width` units
/// with ReLU and a linear output, plus a linear map of the inputs straight to the output (the
/// "wide" part of wide-and-deep models), so that a target that is nearly linear in the
/// features, as many small tables' are, is not left to the hidden layers to approximate.
#[derive(Module, Debug)]
pub struct Mlp {
    first: Linear,
    second: Linear,
    output: Linear,
    linear: Linear,
}

impl MlpConfig {
    /// The model, on `device`.
    pub fn init(&self, device: &Device) -> Mlp {
        Mlp {
            first: LinearConfig::new(self.inputs, self.width).init(device),
            second: LinearConfig::new(self.width, self.width).init(device),
            output: LinearConfig::new(self.width, self.outputs).init(device),
            linear: LinearConfig::new(self.inputs, self.outputs)
                .with_bias(false)
                .init(device),
        }
    }
}

impl Mlp {
    /// Outputs `[N, outputs]` of rows `[N, inputs]`.
    pub fn forward(&self, rows: Tensor<2>) -> Tensor<2> {
        let wide = self.linear.forward(rows.clone());
        let x = relu(self.first.forward(rows));
        let x = relu(self.second.forward(x));
        self.output.forward(x) + wide
    }
}

/// A regression model: the CNN for images, the MLP for table rows.
#[derive(Module, Debug)]
pub enum Regressor {
    /// Images.
    Cnn(Cnn),
    /// Table rows.
    Mlp(Mlp),
}

/// What follows a model's last layer so that its output lies in the domain the loss declares
/// (over the channels, dimension 1): softmax for probabilities, sigmoid for independent
/// probabilities, softplus for values above −1, a clamp to ±80 for log-rates; logits and real
/// values pass unchanged.
pub fn output_head<const D: usize>(domain: OutputDomain, output: Tensor<D>) -> Tensor<D> {
    match domain {
        OutputDomain::Logits | OutputDomain::Real => output,
        OutputDomain::Probabilities => activation::softmax(output, 1),
        OutputDomain::UnitInterval => activation::sigmoid(output),
        OutputDomain::AboveMinusOne => activation::softplus(output, 1.0),
        OutputDomain::LogRate => output.clamp(-80.0, 80.0),
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;

    use super::*;

    fn values(tensor: Tensor<2>) -> Vec<f32> {
        tensor.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn the_head_puts_outputs_in_the_loss_domain() {
        let device = losskit_core::devices::default_device().unwrap();
        let logits = || {
            Tensor::<2>::from_data(
                TensorData::new(vec![2.0f32, -1.0, 0.5, -3.0, 0.0, 4.0], [2, 3]),
                &device,
            )
        };
        // Probabilities (the quadratic cost's domain): each row sums to 1.
        let p = values(output_head(OutputDomain::Probabilities, logits()));
        for row in p.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{row:?}");
        }
        let sigmoid = values(output_head(OutputDomain::UnitInterval, logits()));
        assert!((sigmoid[0] - 1.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
        let above = values(output_head(OutputDomain::AboveMinusOne, logits()));
        assert!(above.iter().all(|&v| v > -1.0));
        assert_eq!(
            values(output_head(OutputDomain::Logits, logits())),
            values(logits())
        );
        assert_eq!(
            values(output_head(OutputDomain::Real, logits())),
            values(logits())
        );
    }

    /// burn-nn's own convolution block: what the fused one must equal.
    fn composed_block(block: &ConvBlock, x: Tensor<4>) -> Tensor<4> {
        relu(block.norm.forward(block.conv.forward(x)))
    }

    fn floats<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
        tensor
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()
    }

    fn assert_close(name: &str, a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{name}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 2e-5 * (1.0 + y.abs()),
                "{name}[{i}]: {x} vs {y}"
            );
        }
    }

    #[test]
    fn the_fused_conv_block_trains_as_burn_nn_s_conv_batch_norm_relu() {
        let device = losskit_core::devices::default_device().unwrap().autodiff();
        // Two blocks with the same weights (clones would share their running statistics),
        // drawn by `seeded_init`: seeding the device's generator here raced with the tests
        // that draw from it on other threads (this test failed in one CI run of many).
        let fresh = || losskit_optim::seeded_init(ConvBlock::new(3, 5, &device), 3);
        let mut rng = losskit_core::Rng::new(9);
        let shape = [4, 3, 7, 6];
        let data: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.normal() as f32 * 2.0 + 0.3)
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(data, shape), &device);
        let run = |forward: &dyn Fn(&ConvBlock, Tensor<4>) -> Tensor<4>| {
            let block = fresh();
            let input = x.clone().require_grad();
            let output = forward(&block, input.clone());
            let weights = Tensor::<4>::from_data(
                TensorData::new(
                    (0..output.shape().num_elements())
                        .map(|i| (i % 7) as f32 - 3.0)
                        .collect::<Vec<f32>>(),
                    output.dims(),
                ),
                &device,
            );
            let grads = (output.clone() * weights).sum().backward();
            let grad = |t: Tensor<1>| floats(t.grad(&grads).unwrap());
            (
                floats(output.inner()),
                floats(input.grad(&grads).unwrap()),
                floats(block.conv.weight.val().grad(&grads).unwrap()),
                [grad(block.norm.gamma.val()), grad(block.norm.beta.val())].concat(),
                [
                    floats(block.norm.running_mean.value_sync()),
                    floats(block.norm.running_var.value_sync()),
                ]
                .concat(),
            )
        };
        let fused = run(&|block, x| block.forward(x));
        let composed = run(&composed_block);
        assert_close("output", &fused.0, &composed.0);
        assert_close("input grad", &fused.1, &composed.1);
        assert_close("conv weight grad", &fused.2, &composed.2);
        assert_close("gamma and beta grads", &fused.3, &composed.3);
        assert_close("running statistics", &fused.4, &composed.4);
        // Evaluation (no autodiff) takes the running statistics, as burn-nn does.
        let inner = fresh().valid();
        let eval = x.clone().inner();
        assert_close(
            "evaluation",
            &floats(inner.forward(eval.clone())),
            &floats(relu(inner.norm.forward(inner.conv.forward(eval)))),
        );
    }

    #[test]
    fn the_u_net_up_sampling_is_burn_nn_s_transposed_convolution() {
        let device = losskit_core::devices::default_device().unwrap().autodiff();
        let unet = UNetConfig {
            channels: 1,
            classes: 2,
            width: 3,
            depth: 2,
        }
        .init(&device);
        // Drawn by its own generator, not the device's process-wide one other tests share.
        let unet = losskit_optim::seeded_init(unet, 6);
        let mut rng = losskit_core::Rng::new(3);
        for up in &unet.ups {
            let [inputs, _, _, _] = up.weight.dims();
            let shape = [2, inputs, 3, 5];
            let data: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|_| rng.normal() as f32)
                .collect();
            let x = Tensor::<4>::from_data(TensorData::new(data, shape), &device).require_grad();
            let run = |forward: &dyn Fn(Tensor<4>) -> Tensor<4>| {
                let output = forward(x.clone());
                let grads = (output.clone() * output.clone()).sum().backward();
                let bias = up.bias.as_ref().unwrap().val();
                (
                    floats(output.inner()),
                    floats(x.grad(&grads).unwrap()),
                    floats(up.weight.val().grad(&grads).unwrap()),
                    floats(bias.grad(&grads).unwrap()),
                )
            };
            let fused = run(&|x| UNet::up(up, x));
            let composed = run(&|x| up.forward(x));
            assert_close("up output", &fused.0, &composed.0);
            assert_close("up input grad", &fused.1, &composed.1);
            assert_close("up weight grad", &fused.2, &composed.2);
            assert_close("up bias grad", &fused.3, &composed.3);
        }
    }

    #[test]
    fn the_u_net_head_is_burn_nn_s_1x1_convolution() {
        let device = losskit_core::devices::default_device().unwrap().autodiff();
        let unet = UNetConfig {
            channels: 1,
            classes: 3,
            width: 4,
            depth: 1,
        }
        .init(&device);
        // Drawn by its own generator, not the device's process-wide one other tests share.
        let unet = losskit_optim::seeded_init(unet, 5);
        let mut rng = losskit_core::Rng::new(2);
        let shape = [2, 4, 6, 5];
        let data: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.normal() as f32)
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(data, shape), &device);
        let run = |forward: &dyn Fn(Tensor<4>) -> Tensor<4>| {
            let output = forward(x.clone());
            let grads = (output.clone() * output.clone()).sum().backward();
            let bias = unet.head.bias.as_ref().unwrap().val();
            (
                floats(output.inner()),
                floats(unet.head.weight.val().grad(&grads).unwrap()),
                floats(bias.grad(&grads).unwrap()),
            )
        };
        let fused = run(&|x| unet.head(x));
        let composed = run(&|x| unet.head.forward(x));
        assert_close("head output", &fused.0, &composed.0);
        assert_close("head weight grad", &fused.1, &composed.1);
        assert_close("head bias grad", &fused.2, &composed.2);
    }
}
