//! The bundled models: a small CNN for classification and a small U-Net for segmentation.

use burn::{
    module::Module,
    nn::{
        BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d,
        conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig},
        pool::{MaxPool2d, MaxPool2dConfig},
    },
    tensor::{Device, Tensor, activation::relu},
};
use serde::{Deserialize, Serialize};

/// The size of the CNN's input images (square).
pub const CNN_SIZE: usize = 28;

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

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu(self.norm.forward(self.conv.forward(x)))
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

/// A small CNN for `channels × 28 × 28` images: three conv blocks with max pooling, then a
/// hidden linear layer.
#[derive(Module, Debug)]
pub struct Cnn {
    block1: ConvBlock,
    block2: ConvBlock,
    block3: ConvBlock,
    pool: MaxPool2d,
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
            hidden: LinearConfig::new(4 * w * 3 * 3, 64).init(device),
            output: LinearConfig::new(64, self.classes).init(device),
        }
    }
}

impl Cnn {
    /// Logits `[N, classes]` of images `[N, channels, 28, 28]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(self.block1.forward(images)); // 14
        let x = self.pool.forward(self.block2.forward(x)); // 7
        let x = self.pool.forward(self.block3.forward(x)); // 3
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
    /// Channels of the first level (doubled at each of the two deeper levels).
    pub width: usize,
}

/// A small U-Net with two down- and two up-sampling levels (input sides divisible by 4).
#[derive(Module, Debug)]
pub struct UNet {
    enc1: ConvBlock,
    enc1b: ConvBlock,
    enc2: ConvBlock,
    enc2b: ConvBlock,
    bottom: ConvBlock,
    bottomb: ConvBlock,
    up2: ConvTranspose2d,
    dec2: ConvBlock,
    up1: ConvTranspose2d,
    dec1: ConvBlock,
    head: Conv2d,
    pool: MaxPool2d,
}

impl UNetConfig {
    /// The model, on `device`.
    pub fn init(&self, device: &Device) -> UNet {
        let w = self.width;
        let up = |input: usize, output: usize| {
            ConvTranspose2dConfig::new([input, output], [2, 2])
                .with_stride([2, 2])
                .init(device)
        };
        UNet {
            enc1: ConvBlock::new(self.channels, w, device),
            enc1b: ConvBlock::new(w, w, device),
            enc2: ConvBlock::new(w, 2 * w, device),
            enc2b: ConvBlock::new(2 * w, 2 * w, device),
            bottom: ConvBlock::new(2 * w, 4 * w, device),
            bottomb: ConvBlock::new(4 * w, 4 * w, device),
            up2: up(4 * w, 2 * w),
            dec2: ConvBlock::new(4 * w, 2 * w, device),
            up1: up(2 * w, w),
            dec1: ConvBlock::new(2 * w, w, device),
            head: Conv2dConfig::new([w, self.classes], [1, 1]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
        }
    }
}

impl UNet {
    /// Logits `[N, classes, H, W]` of images `[N, channels, H, W]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        let e1 = self.enc1b.forward(self.enc1.forward(images));
        let e2 = self
            .enc2b
            .forward(self.enc2.forward(self.pool.forward(e1.clone())));
        let b = self
            .bottomb
            .forward(self.bottom.forward(self.pool.forward(e2.clone())));
        let d2 = self
            .dec2
            .forward(Tensor::cat(vec![self.up2.forward(b), e2], 1));
        let d1 = self
            .dec1
            .forward(Tensor::cat(vec![self.up1.forward(d2), e1], 1));
        self.head.forward(d1)
    }
}
