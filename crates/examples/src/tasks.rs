//! The bundled tasks: classification (single- or multi-label) of images with the CNN,
//! segmentation with the U-Net, regression of images with the CNN or of table rows with the
//! MLP; each hands the training loop a model and its batches, the model's output passed
//! through the head that puts it in the loss's domain (softmax for a loss that takes
//! probabilities, ...). Segmentation trains on random patches and validates on whole images
//! with a sliding window.

use burn::tensor::{Device, Int, Tensor, TensorData};
use losskit_core::{AuxiliaryInput, LossInput, OutputDomain, TargetKind, distance::class_maps};
use losskit_optim::{
    OutputReading, Split, SplitEvaluation, Task, TaskKind, TrainError, report::Preview,
};

use serde::{Deserialize, Serialize};

use crate::{
    data::{
        ClassificationData, ImageSet, Inputs, RegressionData, SegmentationData,
        patches::{Augmentation, PatchSampling, patch_rng, sample_patch},
        regression::column_statistics,
    },
    models::{Cnn, CnnConfig, MlpConfig, Regressor, UNet, UNetConfig, output_head},
    sliding_window::SlidingWindow,
};

/// A classifier input value from a pixel in [0, 1].
pub fn centred(pixel: f32) -> f32 {
    pixel - 0.5
}

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
        pixels.extend(
            set.images[i * per..(i + 1) * per]
                .iter()
                .map(|&p| centred(p)),
        );
        labels.extend_from_slice(&set.labels[i * labels_per_image..(i + 1) * labels_per_image]);
    }
    let images = Tensor::<4>::from_data(
        TensorData::new(pixels, [indices.len(), set.channels, set.height, set.width]),
        device,
    );
    (images, labels)
}

fn split_set(data: &ClassificationData, split: Split) -> &ImageSet {
    match split {
        Split::Train => &data.train,
        Split::Valid => &data.valid,
    }
}

/// Classification of images with the bundled CNN: one class per image, or with `multilabel`
/// any number of labels (the data's `labels` then hold a 0/1 per label and image, given to
/// the loss as a dense `[N, labels]` target).
#[derive(Debug)]
pub struct ClassificationTask {
    /// The data.
    pub data: ClassificationData,
    /// Multi-label classification.
    pub multilabel: bool,
    /// What the loss takes (the model's head follows it).
    pub output: OutputDomain,
    /// The model's shape.
    pub model: CnnConfig,
    /// Random crops (after zero padding by an eighth of the side) and horizontal flips of
    /// the training images, drawn from the seed, epoch and position.
    pub augment: bool,
    /// The run's seed.
    pub seed: u64,
}

impl ClassificationTask {
    fn labels_per_image(&self) -> usize {
        if self.multilabel {
            self.data.classes.len()
        } else {
            1
        }
    }

    /// The loss input of a batch: the model's output through the head, and the targets.
    fn loss_input(
        &self,
        model: &Cnn,
        images: Tensor<4>,
        labels: Vec<i64>,
        device: &Device,
    ) -> Result<LossInput, TrainError> {
        let n = images.dims()[0];
        let output = output_head(self.output, model.forward(images));
        let input = if self.multilabel {
            let marks = labels.into_iter().map(|l| l as f32).collect::<Vec<_>>();
            let target = Tensor::<2>::from_data(
                TensorData::new(marks, [n, self.data.classes.len()]),
                device,
            );
            LossInput::with_dense(output, target)
        } else {
            let target = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device);
            LossInput::with_indices(output, target)
        };
        Ok(input.map_err(losskit_core::Error::from)?)
    }
}

impl Task for ClassificationTask {
    type Model = Cnn;

    fn kind(&self) -> TaskKind {
        if self.multilabel {
            TaskKind::MultiLabel
        } else {
            TaskKind::Classification
        }
    }

    fn reading(&self) -> OutputReading {
        OutputReading {
            domain: self.output,
            ..OutputReading::default()
        }
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
        let (images, labels) = batch_tensors(
            split_set(&self.data, split),
            indices,
            self.labels_per_image(),
            device,
        );
        self.loss_input(model, images, labels, device)
    }

    fn train_input(
        &self,
        model: &Cnn,
        indices: &[usize],
        epoch: usize,
        device: &Device,
    ) -> Result<LossInput, TrainError> {
        if !self.augment {
            return self.input(model, Split::Train, indices, device);
        }
        let set = &self.data.train;
        let (c, h, w) = (set.channels, set.height, set.width);
        let per = set.image_len();
        let pad = (h.min(w) / 8).max(1) as isize;
        let mut pixels = Vec::with_capacity(indices.len() * per);
        let per_image = self.labels_per_image();
        let mut labels = Vec::with_capacity(indices.len() * per_image);
        for &i in indices {
            let mut rng = patch_rng(self.seed, epoch, i);
            let flip = rng.uniform() < 0.5;
            let dy = rng.below(2 * pad as usize + 1) as isize - pad;
            let dx = rng.below(2 * pad as usize + 1) as isize - pad;
            let image = &set.images[i * per..(i + 1) * per];
            for channel in 0..c {
                for y in 0..h as isize {
                    for x in 0..w as isize {
                        let sx = if flip { w as isize - 1 - x } else { x } + dx;
                        let sy = y + dy;
                        let inside = sy >= 0 && sx >= 0 && sy < h as isize && sx < w as isize;
                        // Outside the image: 0.5, the mean gray, centred to 0.
                        let value = if inside {
                            image[channel * h * w + sy as usize * w + sx as usize]
                        } else {
                            0.5
                        };
                        pixels.push(centred(value));
                    }
                }
            }
            labels.extend_from_slice(&set.labels[i * per_image..(i + 1) * per_image]);
        }
        let images =
            Tensor::<4>::from_data(TensorData::new(pixels, [indices.len(), c, h, w]), device);
        self.loss_input(model, images, labels, device)
    }

    /// The validation images the classifier gets most confidently wrong (up to six, as the
    /// validation pass kept them), each with its true and predicted classes.
    fn previews(
        &self,
        _model: &Cnn,
        _device: &Device,
        validation: &SplitEvaluation,
    ) -> Result<Vec<Preview>, TrainError> {
        let set = &self.data.valid;
        let names = |classes: &[usize]| -> String {
            let names: Vec<&str> = classes
                .iter()
                .filter_map(|&c| self.data.classes.get(c).map(String::as_str))
                .collect();
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        };
        validation
            .mistakes
            .iter()
            .filter(|mistake| mistake.index < set.len())
            .enumerate()
            .map(|(rank, mistake)| {
                let (truth, guess) = (names(&mistake.truth), names(&mistake.predicted));
                let (i, p) = (mistake.index, mistake.confidence);
                let caption = if self.multilabel {
                    format!(
                        "validation image {i}: shows {truth}, predicted {guess} (surest wrong label at p = {p:.2})"
                    )
                } else {
                    format!("validation image {i}: {truth}, predicted {guess} (p = {p:.2})")
                };
                Ok(Preview {
                    name: format!("mistake-{}.png", rank + 1),
                    caption,
                    png: image_png(set, i).map_err(TrainError::Task)?,
                })
            })
            .collect()
    }
}

/// How the segmenter trains and validates; recorded in the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentationSettings {
    /// The training patches.
    pub patches: PatchSampling,
    /// Their augmentation.
    pub augmentation: Augmentation,
    /// Validation and inference on whole images.
    pub window: SlidingWindow,
}

impl SegmentationSettings {
    /// Whole images, each once per epoch, unchanged: how runs trained before patches (and
    /// how the generated 48×48 data trains).
    pub fn whole_images(size: [usize; 2], images: usize, batch_size: usize) -> Self {
        Self {
            patches: PatchSampling {
                size,
                per_epoch: images,
                foreground: 0.0,
                pad: true,
            },
            augmentation: Augmentation::none(),
            window: SlidingWindow::new(size, batch_size),
        }
    }
}

/// Segmentation of images with the bundled U-Net: training on patches of the images (sample
/// `i` of an epoch is a patch of image `i mod images`), validation on whole images.
#[derive(Debug)]
pub struct SegmentationTask {
    /// The data.
    pub data: SegmentationData,
    /// The model's shape.
    pub model: UNetConfig,
    /// Patches, augmentation and the sliding window.
    pub settings: SegmentationSettings,
    /// The run's seed (patches and augmentation draw from it).
    pub seed: u64,
    /// What the loss takes (the model's head follows it).
    pub output: OutputDomain,
}

impl SegmentationTask {
    /// Whether every validation image is exactly one window (then several are evaluated in
    /// one forward pass).
    fn valid_is_windows(&self) -> bool {
        let [h, w] = self.settings.window.size;
        (0..self.data.valid.len()).all(|i| self.data.valid.size(i) == (h, w))
    }

    fn image_of(&self, split: Split, index: usize) -> usize {
        match split {
            Split::Train => index % self.data.train.len().max(1),
            Split::Valid => index,
        }
    }

    fn whole_images(
        &self,
        model: &UNet,
        indices: &[usize],
        device: &Device,
    ) -> Result<LossInput, TrainError> {
        let set = &self.data.valid;
        let classes = self.data.classes.len();
        let mut outputs = Vec::with_capacity(indices.len());
        let mut labels = Vec::new();
        let mut size = None;
        let images = indices
            .iter()
            .map(|&i| set.get(i).map_err(|e| TrainError::Task(format!("{e:#}"))))
            .collect::<Result<Vec<_>, _>>()?;
        for image in &images {
            if size.is_some_and(|s| s != (image.height, image.width)) {
                return Err(TrainError::Task(
                    "validation images of different sizes cannot share a batch".into(),
                ));
            }
            size = Some((image.height, image.width));
            labels.extend(image.labels.iter().map(|&l| i64::from(l)));
        }
        let (h, w) = size.unwrap_or((0, 0));
        if self.valid_is_windows() {
            // Every image is one window: one forward pass for the batch.
            let pixels: Vec<f32> = images
                .iter()
                .flat_map(|i| i.pixels.iter().copied())
                .collect();
            let channels = set.channels();
            outputs.push(model.forward(Tensor::<4>::from_data(
                TensorData::new(pixels, [images.len(), channels, h, w]),
                device,
            )));
        } else {
            for image in &images {
                outputs.push(self.settings.window.run(
                    |x| model.forward(x),
                    &image.pixels,
                    [image.channels, image.height, image.width],
                    classes,
                    device,
                ));
            }
        }
        let target =
            Tensor::<3, Int>::from_data(TensorData::new(labels, [images.len(), h, w]), device);
        let output = output_head(self.output, Tensor::cat(outputs, 0));
        Ok(LossInput::with_indices(output, target).map_err(losskit_core::Error::from)?)
    }
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
        match split {
            Split::Train if self.data.train.is_empty() => 0,
            Split::Train => self.settings.patches.per_epoch,
            Split::Valid => self.data.valid.len(),
        }
    }

    fn input(
        &self,
        model: &UNet,
        split: Split,
        indices: &[usize],
        device: &Device,
    ) -> Result<LossInput, TrainError> {
        match split {
            Split::Train => self.train_input(model, indices, 0, device),
            Split::Valid => self.whole_images(model, indices, device),
        }
    }

    fn train_input(
        &self,
        model: &UNet,
        indices: &[usize],
        epoch: usize,
        device: &Device,
    ) -> Result<LossInput, TrainError> {
        self.train_input_with(model, indices, epoch, device, &[])
    }

    /// Patches, and the auxiliary maps the loss reads computed on each whole image and cut
    /// with its patch.
    fn train_input_with(
        &self,
        model: &UNet,
        indices: &[usize],
        epoch: usize,
        device: &Device,
        auxiliary: &[AuxiliaryInput],
    ) -> Result<LossInput, TrainError> {
        let [ph, pw] = self.settings.patches.size;
        let channels = self.data.train.channels();
        let mut pixels = Vec::with_capacity(indices.len() * channels * ph * pw);
        let mut labels = Vec::with_capacity(indices.len() * ph * pw);
        let mut images_and_patches = Vec::with_capacity(indices.len());
        for &position in indices {
            let image = self
                .data
                .train
                .get(self.image_of(Split::Train, position))
                .map_err(|e| TrainError::Task(format!("{e:#}")))?;
            let patch = sample_patch(
                &image,
                &self.settings.patches,
                &self.settings.augmentation,
                &mut patch_rng(self.seed, epoch, position),
            );
            pixels.extend_from_slice(&patch.pixels);
            labels.extend_from_slice(&patch.labels);
            if !auxiliary.is_empty() {
                images_and_patches.push((image, patch));
            }
        }
        let n = indices.len();
        let images = Tensor::<4>::from_data(TensorData::new(pixels, [n, channels, ph, pw]), device);
        let target = Tensor::<3, Int>::from_data(TensorData::new(labels, [n, ph, pw]), device);
        let output = output_head(self.output, model.forward(images));
        let classes = output.dims()[1];
        let mut input =
            LossInput::with_indices(output, target).map_err(losskit_core::Error::from)?;
        for aux in auxiliary {
            let mut maps = Vec::with_capacity(n * classes * ph * pw);
            for (image, patch) in &images_and_patches {
                let whole: Vec<i64> = image.labels.iter().map(|&l| i64::from(l)).collect();
                let size = image.height * image.width;
                let image_maps = class_maps(
                    &whole,
                    classes,
                    &[image.height, image.width],
                    &[1.0, 1.0],
                    aux.map,
                );
                maps.extend(patch.cut_maps(&image_maps, size));
            }
            let maps = Tensor::<4>::from_data(TensorData::new(maps, [n, classes, ph, pw]), device);
            input = input
                .with_auxiliary(aux.name, maps)
                .map_err(losskit_core::Error::from)?;
        }
        Ok(input)
    }

    fn prefetch(&self, split: Split, indices: &[usize]) {
        let images: Vec<usize> = indices.iter().map(|&i| self.image_of(split, i)).collect();
        match split {
            Split::Train => self.data.train.prefetch(&images),
            Split::Valid => self.data.valid.prefetch(&images),
        }
    }

    fn eval_batch_size(&self, split: Split, batch_size: usize) -> usize {
        match split {
            Split::Valid if !self.valid_is_windows() => 1,
            _ => batch_size,
        }
    }

    /// The first three validation images, each as truth | prediction with the classes'
    /// outlines drawn over the image.
    fn previews(
        &self,
        model: &UNet,
        device: &Device,
        _validation: &SplitEvaluation,
    ) -> Result<Vec<Preview>, TrainError> {
        (0..self.data.valid.len().min(PREVIEWS))
            .map(|i| {
                let image = self
                    .data
                    .valid
                    .get(i)
                    .map_err(|e| TrainError::Task(format!("{e:#}")))?;
                let output = self.whole_images(model, &[i], device)?.output().clone();
                let predicted: Vec<u8> = losskit_core::input::to_i64_vec(output.argmax(1))
                    .into_iter()
                    .map(|c| c as u8)
                    .collect();
                let png = side_by_side(&image, &predicted).map_err(TrainError::Task)?;
                Ok(Preview {
                    name: format!("valid-{i}.png"),
                    caption: format!(
                        "validation image {i} ({}x{}): truth | prediction",
                        image.width, image.height
                    ),
                    png,
                })
            })
            .collect()
    }
}

/// Image `i` of a classification set as PNG, enlarged to at least 96 pixels high.
fn image_png(set: &ImageSet, i: usize) -> Result<Vec<u8>, String> {
    let (c, h, w) = (set.channels, set.height, set.width);
    let pixels = &set.images[i * set.image_len()..(i + 1) * set.image_len()];
    let scale = 96u32.div_ceil(h as u32).clamp(1, 6);
    let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let out = image::RgbImage::from_fn(w as u32 * scale, h as u32 * scale, |x, y| {
        let at = (y / scale) as usize * w + (x / scale) as usize;
        let value = |k: usize| byte(pixels[(if c == 3 { k } else { 0 }) * h * w + at]);
        image::Rgb([value(0), value(1), value(2)])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    out.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode a preview: {e}"))?;
    Ok(bytes.into_inner())
}

/// How many validation images the segmentation report previews.
const PREVIEWS: usize = 3;

/// A segmentation image as PNG: the truth's outlines and the prediction's, each over the image
/// (its values stretched to 0–255), side by side, enlarged to at least 128 pixels high.
fn side_by_side(image: &crate::data::SegImage, predicted: &[u8]) -> Result<Vec<u8>, String> {
    let (w, h, c) = (image.width, image.height, image.channels);
    let plane = |channel: usize| &image.pixels[channel * w * h..(channel + 1) * w * h];
    let (low, high) = image
        .pixels
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let to_byte = |v: f32| (((v - low) / (high - low).max(1e-6)) * 255.0).round() as u8;
    let rgb = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let at = y as usize * w + x as usize;
        let value = |k: usize| to_byte(plane(if c == 3 { k } else { 0 })[at]);
        image::Rgb([value(0), value(1), value(2)])
    });
    let base = image::DynamicImage::ImageRgb8(rgb);
    let truth = crate::predict::overlay(&base, &image.labels);
    let prediction = crate::predict::overlay(&base, predicted);
    let scale = 128u32.div_ceil(h as u32).clamp(1, 4);
    let gap = 4;
    let (pw, ph) = (w as u32 * scale, h as u32 * scale);
    let mut out = image::RgbImage::from_pixel(2 * pw + gap, ph, image::Rgb([255, 255, 255]));
    for (panel, offset) in [(&truth, 0), (&prediction, pw + gap)] {
        for y in 0..ph {
            for x in 0..pw {
                out.put_pixel(offset + x, y, *panel.get_pixel(x / scale, y / scale));
            }
        }
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    out.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode a preview: {e}"))?;
    Ok(bytes.into_inner())
}

/// How regression targets are scaled for training: `trained = (value − shift) / scale`. A loss
/// that takes any real target trains on standardised targets (the training split's mean and
/// standard deviation), so one learning rate suits any unit; a loss that needs non-negative
/// targets (counts, rates: `msle`, `poisson_nll`) trains on targets divided by their training
/// mean, which keeps them non-negative. Metrics are reported in the target's own units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TargetScaling {
    /// Subtracted first.
    pub shift: f64,
    /// Divided by next.
    pub scale: f64,
}

impl TargetScaling {
    /// The scaling of `targets` (the training split) for a loss that accepts `kinds`.
    pub fn for_loss(targets: &[f64], kinds: &[TargetKind]) -> Self {
        let n = targets.len().max(1) as f64;
        let mean = targets.iter().sum::<f64>() / n;
        if kinds.contains(&TargetKind::Real) {
            let var = targets.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / n;
            Self {
                shift: mean,
                scale: if var > 0.0 { var.sqrt() } else { 1.0 },
            }
        } else {
            Self {
                shift: 0.0,
                scale: if mean > 0.0 { mean } else { 1.0 },
            }
        }
    }
}

/// How a regression run scales what its model reads and predicts, fixed from its training
/// split when the run starts (and kept in the run, so that scoring other data later scales it
/// the same way).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionScaling {
    /// The targets.
    pub target: TargetScaling,
    /// Table rows: each feature column's training mean.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feature_mean: Vec<f64>,
    /// Table rows: each feature column's training standard deviation (1 for a constant one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feature_std: Vec<f64>,
}

impl RegressionScaling {
    /// The scaling of `data`'s training split for a loss that accepts targets of `kinds`.
    pub fn of(data: &RegressionData, kinds: &[TargetKind]) -> Self {
        let (feature_mean, feature_std) = match &data.train.inputs {
            Inputs::Rows { columns, values } => column_statistics(*columns, values),
            Inputs::Images(_) => (Vec::new(), Vec::new()),
        };
        Self {
            target: TargetScaling::for_loss(&data.train.targets, kinds),
            feature_mean,
            feature_std,
        }
    }
}

/// Regression with one real target per sample: images with the CNN (one output), table rows
/// (standardised with the training split's statistics) with the MLP.
#[derive(Debug)]
pub struct RegressionTask {
    /// The data.
    pub data: RegressionData,
    /// The CNN's base width or the MLP's hidden units.
    pub width: usize,
    /// What the loss takes (the model's head follows it).
    pub output: OutputDomain,
    /// How inputs and targets are scaled.
    pub scaling: RegressionScaling,
}

impl RegressionTask {
    fn set(&self, split: Split) -> &crate::data::RegressionSet {
        match split {
            Split::Train => &self.data.train,
            Split::Valid => &self.data.valid,
        }
    }
}

impl Task for RegressionTask {
    type Model = Regressor;

    fn kind(&self) -> TaskKind {
        TaskKind::Regression
    }

    fn classes(&self) -> Vec<String> {
        vec![self.data.target.clone()]
    }

    fn init_model(&self, device: &Device) -> Regressor {
        match &self.data.train.inputs {
            Inputs::Images(set) => Regressor::Cnn(
                CnnConfig {
                    channels: set.channels,
                    classes: 1,
                    width: self.width,
                }
                .init(device),
            ),
            Inputs::Rows { columns, .. } => Regressor::Mlp(
                MlpConfig {
                    inputs: *columns,
                    outputs: 1,
                    width: self.width,
                }
                .init(device),
            ),
        }
    }

    fn len(&self, split: Split) -> usize {
        self.set(split).len()
    }

    fn reading(&self) -> OutputReading {
        OutputReading {
            domain: self.output,
            scale: self.scaling.target.scale,
            shift: self.scaling.target.shift,
        }
    }

    fn input(
        &self,
        model: &Regressor,
        split: Split,
        indices: &[usize],
        device: &Device,
    ) -> Result<LossInput, TrainError> {
        let set = self.set(split);
        let n = indices.len();
        let output = match (&set.inputs, model) {
            (Inputs::Images(images), Regressor::Cnn(cnn)) => {
                let (images, _) = batch_tensors(images, indices, 0, device);
                cnn.forward(images)
            }
            (Inputs::Rows { columns, values }, Regressor::Mlp(mlp)) => {
                let (mean, std) = (&self.scaling.feature_mean, &self.scaling.feature_std);
                if mean.len() != *columns || std.len() != *columns {
                    return Err(TrainError::Task(format!(
                        "the table has {columns} feature columns; the run was trained on {}",
                        mean.len()
                    )));
                }
                let rows: Vec<f32> = indices
                    .iter()
                    .flat_map(|&i| {
                        (0..*columns)
                            .map(move |c| ((values[i * columns + c] - mean[c]) / std[c]) as f32)
                    })
                    .collect();
                mlp.forward(Tensor::<2>::from_data(
                    TensorData::new(rows, [n, *columns]),
                    device,
                ))
            }
            _ => {
                return Err(TrainError::Task(
                    "the regression model does not fit its inputs (images need the CNN, table rows the MLP)"
                        .into(),
                ));
            }
        };
        let TargetScaling { shift, scale } = self.scaling.target;
        let targets: Vec<f32> = indices
            .iter()
            .map(|&i| ((set.targets[i] - shift) / scale) as f32)
            .collect();
        let target = Tensor::<2>::from_data(TensorData::new(targets, [n, 1]), device);
        Ok(
            LossInput::with_dense(output_head(self.output, output), target)
                .map_err(losskit_core::Error::from)?,
        )
    }
}
