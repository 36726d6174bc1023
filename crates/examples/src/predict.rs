//! Using a trained model: class probabilities of new images, or full-resolution masks (with
//! the sliding window of validation), from a checkpoint or an exported model; and exporting
//! the weights as safetensors or burnpack with the model's description beside them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::{
    module::Module,
    tensor::{Device, Tensor, TensorData, activation::softmax},
};
use burn_store::{
    BurnToPyTorchAdapter, BurnpackStore, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore,
};
use losskit_optim::{Checkpoint, TaskKind, checkpoint::resolve, train::load_weights};
use serde::{Deserialize, Serialize};

use crate::{
    data::{classifier_pixels, is_image, read_image, sorted_entries},
    models::{Cnn, UNet},
    run::RunSpec,
    sliding_window::SlidingWindow,
    tasks::centred,
};

/// The formats `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// SafeTensors (readable from Python with `safetensors.torch.load_file`).
    Safetensors,
    /// burn's own burnpack.
    Burnpack,
}

/// How tensors are named and laid out in an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// burn's names and layouts (`norm.gamma`, linear weights `[in, out]`).
    Burn,
    /// PyTorch's (`norm.weight`, linear weights `[out, in]`), through burn-store's
    /// `BurnToPyTorchAdapter`.
    Pytorch,
}

/// What sits beside exported weights (`MODEL.json`): enough to rebuild the model and feed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedModel {
    /// The weights' format.
    pub format: ExportFormat,
    /// Their names and layouts.
    pub layout: Layout,
    /// `cnn` (classification) or `unet` (segmentation).
    pub model: String,
    /// The run the weights come from (model shape, classes, normalisation, window).
    pub run: RunSpec,
    /// The epoch of the checkpoint exported.
    pub epoch: usize,
}

/// A trained model ready to predict.
pub struct Predictor {
    spec: RunSpec,
    model: Model,
    device: Device,
    /// The epoch the weights are from.
    epoch: usize,
}

enum Model {
    Classifier(Box<Cnn>),
    Segmenter(Box<UNet>, SlidingWindow),
}

impl std::fmt::Debug for Predictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predictor")
            .field("task", &self.spec.task)
            .field("classes", &self.spec.classes)
            .finish()
    }
}

/// One image's prediction.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    /// The probability of each class.
    Classes(Vec<f32>),
    /// The class of each pixel (`[H, W]`) and the decoded image (to draw the outline on).
    Mask {
        /// Class indices, row-major.
        classes: Vec<u8>,
        /// The image as read.
        image: image::DynamicImage,
    },
}

/// Prediction reads classification and segmentation runs.
fn check_predictable(spec: &RunSpec) -> Result<()> {
    if matches!(spec.task, TaskKind::Regression | TaskKind::MultiLabel) {
        bail!(
            "predict and export read classification and segmentation runs; this is a {} run: score it on other data with `losskit evaluate --checkpoint RUN --data ...`",
            spec.task.as_str()
        );
    }
    Ok(())
}

impl Predictor {
    /// The model of a run folder, a checkpoint file (`.lkc`), or an exported model
    /// (`.safetensors` / `.bpk` with its `.json` beside it), on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let is_export = path
            .extension()
            .is_some_and(|e| e == "safetensors" || e == "bpk");
        if is_export {
            return Self::load_export(path, device);
        }
        let checkpoint = Checkpoint::read(path)?;
        let spec: RunSpec =
            serde_json::from_value(checkpoint.meta.run.clone()).with_context(|| {
                format!(
                    "{}: the run description is not readable",
                    resolve(path).display()
                )
            })?;
        let source = resolve(path).display().to_string();
        check_predictable(&spec)?;
        let model = match spec.task {
            TaskKind::Classification => {
                let mut model = spec.cnn_config().init(device);
                load_weights(&mut model, &checkpoint.model, &source)?;
                Model::Classifier(Box::new(model))
            }
            TaskKind::Segmentation => {
                let mut model = spec.unet_config().init(device);
                load_weights(&mut model, &checkpoint.model, &source)?;
                Model::Segmenter(Box::new(model), spec.segmentation_run(0).settings.window)
            }
            TaskKind::Regression | TaskKind::MultiLabel => unreachable!("checked above"),
        };
        Ok(Self {
            spec,
            model,
            device: device.clone(),
            epoch: checkpoint.meta.epoch,
        })
    }

    fn load_export(path: &Path, device: &Device) -> Result<Self> {
        let description = path.with_extension("json");
        let text = std::fs::read_to_string(&description).with_context(|| {
            format!(
                "{}: cannot read the model description {} (export writes it beside the weights)",
                path.display(),
                description.display()
            )
        })?;
        let exported: ExportedModel = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a losskit model description",
                description.display()
            )
        })?;
        let spec = exported.run.clone();
        check_predictable(&spec)?;
        let model = match spec.task {
            TaskKind::Classification => {
                let mut model = spec.cnn_config().init(device);
                load_export_weights(&mut model, path, &exported)?;
                Model::Classifier(Box::new(model))
            }
            TaskKind::Segmentation => {
                let mut model = spec.unet_config().init(device);
                load_export_weights(&mut model, path, &exported)?;
                Model::Segmenter(Box::new(model), spec.segmentation_run(0).settings.window)
            }
            TaskKind::Regression | TaskKind::MultiLabel => unreachable!("checked above"),
        };
        Ok(Self {
            spec,
            model,
            device: device.clone(),
            epoch: exported.epoch,
        })
    }

    /// The run the model comes from.
    pub fn spec(&self) -> &RunSpec {
        &self.spec
    }

    /// Predicts one image file.
    pub fn predict(&self, path: &Path) -> Result<Prediction> {
        let channels = self.spec.channels;
        match &self.model {
            Model::Classifier(model) => {
                let size = self.spec.data.input_size();
                let pixels: Vec<f32> = classifier_pixels(path, channels, size)?
                    .into_iter()
                    .map(centred)
                    .collect();
                let input = Tensor::<4>::from_data(
                    TensorData::new(pixels, [1, channels, size, size]),
                    &self.device,
                );
                let probabilities = softmax(model.forward(input), 1);
                Ok(Prediction::Classes(
                    probabilities
                        .into_data()
                        .try_to_vec::<f32>()
                        .unwrap_or_default(),
                ))
            }
            Model::Segmenter(model, window) => {
                let (image, pixels) = read_image(path, channels, self.spec.normalization())?;
                let (w, h) = (image.width() as usize, image.height() as usize);
                let logits = window.run(
                    |x| model.forward(x),
                    &pixels,
                    [channels, h, w],
                    self.spec.classes.len(),
                    &self.device,
                );
                let classes = logits
                    .argmax(1)
                    .into_data()
                    .convert::<i64>()
                    .try_to_vec::<i64>()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| c as u8)
                    .collect();
                Ok(Prediction::Mask { classes, image })
            }
        }
    }

    /// Writes the model's weights to `out` in `format` and layout, and its description
    /// (`out` with the extension `.json`) beside them.
    pub fn export(&self, out: &Path, format: ExportFormat, layout: Layout) -> Result<()> {
        if format == ExportFormat::Burnpack && layout == Layout::Pytorch {
            bail!("--layout pytorch applies to safetensors; burnpack keeps burn's layout");
        }
        let bytes = match &self.model {
            Model::Classifier(model) => export_bytes(model.as_ref(), format, layout)?,
            Model::Segmenter(model, _) => export_bytes(model.as_ref(), format, layout)?,
        };
        let description = ExportedModel {
            format,
            layout,
            model: match self.spec.task {
                TaskKind::Segmentation => "unet",
                _ => "cnn",
            }
            .into(),
            run: self.spec.clone(),
            epoch: self.epoch,
        };
        losskit_core::atomic_write::write_atomically(out, &bytes)?;
        losskit_core::atomic_write::write_atomically(
            &out.with_extension("json"),
            serde_json::to_string_pretty(&description)?.as_bytes(),
        )?;
        Ok(())
    }
}

fn export_bytes<M: Module>(model: &M, format: ExportFormat, layout: Layout) -> Result<Vec<u8>> {
    Ok(match format {
        ExportFormat::Safetensors => {
            let mut store = SafetensorsStore::from_bytes(None).metadata("producer", "losskit");
            if layout == Layout::Pytorch {
                store = store.with_to_adapter(BurnToPyTorchAdapter);
            }
            model
                .save_into(&mut store)
                .map_err(|e| anyhow::anyhow!("cannot encode the model as safetensors: {e}"))?;
            store
                .get_bytes()
                .map_err(|e| anyhow::anyhow!("cannot encode the model as safetensors: {e}"))?
        }
        ExportFormat::Burnpack => {
            let mut store = BurnpackStore::from_bytes(None);
            model
                .save_into(&mut store)
                .map_err(|e| anyhow::anyhow!("cannot encode the model as burnpack: {e}"))?;
            store
                .get_bytes()
                .map_err(|e| anyhow::anyhow!("cannot encode the model as burnpack: {e}"))?
                .to_vec()
        }
    })
}

fn load_export_weights<M: Module>(
    model: &mut M,
    path: &Path,
    exported: &ExportedModel,
) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if exported.format == ExportFormat::Burnpack {
        return Ok(load_weights(model, &bytes, &path.display().to_string())?);
    }
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    if exported.layout == Layout::Pytorch {
        store = store.with_from_adapter(PyTorchToBurnAdapter);
    }
    let result = model.load_from(&mut store).map_err(|e| {
        anyhow::anyhow!(
            "{}: does not hold this model's weights ({e})",
            path.display()
        )
    })?;
    if !result.missing.is_empty() || !result.errors.is_empty() {
        bail!(
            "{}: does not hold this model's weights ({} tensors missing, {} mismatched)",
            path.display(),
            result.missing.len(),
            result.errors.len()
        );
    }
    Ok(())
}

/// The image with the predicted mask's outlines drawn over it: each foreground class in its
/// own colour on the pixels where the class changes.
pub fn overlay(image: &image::DynamicImage, classes: &[u8]) -> image::RgbImage {
    const COLOURS: [[u8; 3]; 6] = [
        [255, 60, 60],
        [60, 220, 60],
        [70, 130, 255],
        [255, 200, 0],
        [220, 0, 220],
        [0, 220, 220],
    ];
    let mut out = image.to_rgb8();
    let (w, h) = (out.width() as usize, out.height() as usize);
    for y in 0..h {
        for x in 0..w {
            let class = classes[y * w + x];
            if class == 0 {
                continue;
            }
            let edge = [(0i64, 1i64), (0, -1), (1, 0), (-1, 0)]
                .iter()
                .any(|(dy, dx)| {
                    let (ny, nx) = (y as i64 + dy, x as i64 + dx);
                    ny < 0
                        || nx < 0
                        || ny >= h as i64
                        || nx >= w as i64
                        || classes[ny as usize * w + nx as usize] != class
                });
            if edge {
                let colour = COLOURS[(class as usize - 1) % COLOURS.len()];
                out.put_pixel(x as u32, y as u32, image::Rgb(colour));
            }
        }
    }
    out
}

/// The images a `--input` names: the file itself, or the images in the folder (sorted).
pub fn input_files(input: &Path) -> Result<Vec<PathBuf>> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    if !input.is_dir() {
        bail!("--input {}: no such file or folder", input.display());
    }
    let files: Vec<PathBuf> = sorted_entries(input)?
        .into_iter()
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    if files.is_empty() {
        bail!("--input {}: no .png, .jpg or .tif images", input.display());
    }
    Ok(files)
}
