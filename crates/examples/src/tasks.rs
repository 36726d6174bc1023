//! The bundled tasks: classification of images with the CNN, segmentation with the U-Net; each
//! hands the training loop a model and its batches.

use burn::tensor::{Device, Int, Tensor, TensorData};
use losskit_core::LossInput;
use losskit_optim::{Split, Task, TaskKind, TrainError};

use crate::{
    data::{Dataset, ImageSet},
    models::{Cnn, CnnConfig, UNet, UNetConfig},
};

fn batch_tensors(
    set: &ImageSet,
    indices: &[usize],
    labels_per_image: usize,
    device: &Device,
) -> (Tensor<4>, Vec<i64>) {
    let per = set.image_len();
    let mut pixels = Vec::with_capacity(indices.len() * per);
    let mut labels = Vec::with_capacity(indices.len() * labels_per_image);
    for &i in indices {
        pixels.extend(set.images[i * per..(i + 1) * per].iter().map(|p| p - 0.5));
        labels.extend_from_slice(&set.labels[i * labels_per_image..(i + 1) * labels_per_image]);
    }
    let images = Tensor::<4>::from_data(
        TensorData::new(pixels, [indices.len(), set.channels, set.height, set.width]),
        device,
    );
    (images, labels)
}

fn split_set(data: &Dataset, split: Split) -> &ImageSet {
    match split {
        Split::Train => &data.train,
        Split::Valid => &data.valid,
    }
}

/// Classification of images with the bundled CNN.
#[derive(Debug)]
pub struct ClassificationTask {
    /// The data.
    pub data: Dataset,
    /// The model's shape.
    pub model: CnnConfig,
}

impl Task for ClassificationTask {
    type Model = Cnn;

    fn kind(&self) -> TaskKind {
        TaskKind::Classification
    }

    fn classes(&self) -> Vec<String> {
        self.data.classes.clone()
    }

    fn init_model(&self, device: &Device) -> Cnn {
        self.model.init(device)
    }

    fn len(&self, split: Split) -> usize {
        split_set(&self.data, split).len()
    }

    fn input(
        &self,
        model: &Cnn,
        split: Split,
        indices: &[usize],
        device: &Device,
    ) -> Result<LossInput, TrainError> {
        let (images, labels) = batch_tensors(split_set(&self.data, split), indices, 1, device);
        let target = Tensor::<1, Int>::from_data(TensorData::new(labels, [indices.len()]), device);
        Ok(LossInput::with_indices(model.forward(images), target)
            .map_err(losskit_core::Error::from)?)
    }
}

/// Segmentation of images with the bundled U-Net.
#[derive(Debug)]
pub struct SegmentationTask {
    /// The data.
    pub data: Dataset,
    /// The model's shape.
    pub model: UNetConfig,
}

impl Task for SegmentationTask {
    type Model = UNet;

    fn kind(&self) -> TaskKind {
        TaskKind::Segmentation
    }

    fn classes(&self) -> Vec<String> {
        self.data.classes.clone()
    }

    fn init_model(&self, device: &Device) -> UNet {
        self.model.init(device)
    }

    fn len(&self, split: Split) -> usize {
        split_set(&self.data, split).len()
    }

    fn input(
        &self,
        model: &UNet,
        split: Split,
        indices: &[usize],
        device: &Device,
    ) -> Result<LossInput, TrainError> {
        let set = split_set(&self.data, split);
        let (h, w) = (set.height, set.width);
        let (images, labels) = batch_tensors(set, indices, h * w, device);
        let target =
            Tensor::<3, Int>::from_data(TensorData::new(labels, [indices.len(), h, w]), device);
        Ok(LossInput::with_indices(model.forward(images), target)
            .map_err(losskit_core::Error::from)?)
    }
}
