//! Run preparation: a [`TrainRequest`] (what `losskit train` or `compare` was asked) resolved
//! into a [`RunSpec`] (the run's full description, stored in its checkpoint), its data and its
//! device, every option checked before anything is written; and [`with_task`], which builds the
//! task a spec describes.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use losskit_core::{Loss, OutputDomain, Reduction, Registry, TargetKind, spec::parse_spec};
use losskit_optim::{
    CHECKPOINT_FILE, Checkpoint, Monitor, OptimizerConfig, Progress, ScheduleConfig, Split, Task,
    TaskKind, train::MAX_EPOCHS,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    data::{
        DataSource, Dataset, FolderReading, MaskMode, Normalization, SEG_SIZE, SegmentationData,
        TableReading,
        patches::{Augmentation, PatchSampling},
        regression::least_squares_r2,
    },
    models::{CnnConfig, MIN_CNN_SIZE, UNetConfig},
    sliding_window::SlidingWindow,
    tasks::{
        ClassificationTask, RegressionScaling, RegressionTask, SegmentationSettings,
        SegmentationTask,
    },
};

/// The device named by `--device`, or the default CPU device (never burn's
/// `Device::default()`, which prefers any GPU it finds).
pub fn device_from_flag(name: Option<&str>) -> Result<Device> {
    let asked = name.unwrap_or("cpu");
    let device = losskit_core::devices::parse_device(asked)?;
    tracing::debug!(
        target: "losskit::device",
        "device `{asked}`{}: {device:?}",
        if name.is_none() { " (the default)" } else { "" }
    );
    Ok(device)
}

/// What `train` (and each run of `compare`) was asked to do.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    /// Classification or segmentation.
    pub task: TaskKind,
    /// `--data`: an image folder, idx files or a mask folder (generated data when `None`).
    pub data: Option<PathBuf>,
    /// The loss spec.
    pub loss: String,
    /// The optimizer spec.
    pub optimizer: String,
    /// The schedule spec (constant when `None`).
    pub schedule: Option<String>,
    /// Epochs (the task's default when `None`).
    pub epochs: Option<usize>,
    /// Batch size (the task's default when `None`).
    pub batch_size: Option<usize>,
    /// The device name.
    pub device: Option<String>,
    /// Devices for data-parallel training (two or more); the first also holds the model.
    pub devices: Vec<String>,
    /// The output folder.
    pub out: PathBuf,
    /// The seed.
    pub seed: u64,
    /// Continue the run in `out`.
    pub resume: bool,
    /// Replace a finished or stopped run in `out`.
    pub force: bool,
    /// Class imbalance of the generated classification data (1: balanced).
    pub imbalance: f64,
    /// Use at most this many training samples.
    pub limit: Option<usize>,
    /// The model's base width (the task's default when `None`).
    pub width: Option<usize>,
    /// Stop each epoch after this many steps (quick checks).
    pub max_steps: Option<usize>,
    /// How progress is shown.
    pub progress: Progress,
    /// Augmentation on or off (the task's and data's default when `None`).
    pub augment: Option<bool>,
    /// The segmentation options.
    pub segmentation: SegmentationRequest,
    /// The classifier's input side for image folders (default: from the data).
    pub size: Option<usize>,
    /// The metric deciding the best epoch (`val_loss` when `None`).
    pub monitor: Option<String>,
    /// Stop after this many epochs without improvement of the monitored metric.
    pub patience: Option<usize>,
    /// Start from the weights of this run folder's last checkpoint, or of this checkpoint file.
    pub init_from: Option<PathBuf>,
    /// The table column a regression run predicts (`--data` tables).
    pub target: Option<String>,
    /// How a regression table is read: columns left out, rows with missing values.
    pub table: TableReading,
}

/// What `train` was asked about segmentation (each `None`: the default for the data).
#[derive(Debug, Clone, Default)]
pub struct SegmentationRequest {
    /// The U-Net's depth (down-sampling steps).
    pub depth: Option<usize>,
    /// The training patch size.
    pub patch: Option<[usize; 2]>,
    /// Optimizer steps per epoch (patches per epoch = steps × batch size).
    pub steps_per_epoch: Option<usize>,
    /// Per-image intensity normalisation of folder images.
    pub normalization: Option<Normalization>,
    /// How mask values are read.
    pub masks: Option<MaskMode>,
    /// Refuse images smaller than a patch instead of padding them.
    pub no_pad: bool,
    /// The fraction of patches centred near foreground.
    pub foreground: Option<f64>,
    /// The overlap of validation windows.
    pub overlap: Option<f64>,
}

impl SegmentationRequest {
    /// The flags that were given, by name (they apply to segmentation only).
    pub fn given(&self) -> Vec<&'static str> {
        [
            ("--depth", self.depth.is_some()),
            ("--patch", self.patch.is_some()),
            ("--steps-per-epoch", self.steps_per_epoch.is_some()),
            ("--normalize", self.normalization.is_some()),
            ("--masks", self.masks.is_some()),
            ("--no-pad", self.no_pad),
            ("--foreground", self.foreground.is_some()),
            ("--overlap", self.overlap.is_some()),
        ]
        .into_iter()
        .filter(|(_, given)| *given)
        .map(|(flag, _)| flag)
        .collect()
    }
}

impl TrainRequest {
    /// The defaults of `losskit train` for `task`.
    pub fn new(task: TaskKind, out: PathBuf) -> Self {
        Self {
            task,
            data: None,
            loss: default_loss(task).into(),
            optimizer: "adam".into(),
            schedule: None,
            epochs: None,
            batch_size: None,
            device: None,
            devices: Vec::new(),
            out,
            seed: 42,
            resume: false,
            force: false,
            imbalance: 1.0,
            limit: None,
            width: None,
            max_steps: None,
            progress: Progress::Auto,
            augment: None,
            segmentation: SegmentationRequest::default(),
            size: None,
            monitor: None,
            patience: None,
            init_from: None,
            target: None,
            table: TableReading::default(),
        }
    }
}

/// A run's full description, stored in its checkpoint and summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Classification or segmentation.
    pub task: TaskKind,
    /// The data.
    pub data: DataSource,
    /// The model's base width.
    pub width: usize,
    /// The model's input channels.
    pub channels: usize,
    /// The classes.
    pub classes: Vec<String>,
    /// The loss config object.
    pub loss: Value,
    /// The optimizer config.
    pub optimizer: OptimizerConfig,
    /// The schedule config.
    pub schedule: ScheduleConfig,
    /// Epochs in total.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// The seed.
    pub seed: u64,
    /// Steps per epoch cap, if any.
    pub max_steps: Option<usize>,
    /// The U-Net's depth, patches, augmentation and sliding window (segmentation; runs
    /// written before these were options have none and train whole 48×48 images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<SegmentationRun>,
    /// The metric deciding the best epoch (`val_loss` in runs written before it was an option).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
    /// Epochs without improvement after which training stops (`None`: never early).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
    /// The checkpoint this run's weights started from (a warm start), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<InitFrom>,
    /// Random crops and flips of the classifier's training images (image folders; absent:
    /// none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<bool>,
    /// Table regression: the validation R² of linear least squares on the same split, the
    /// baseline the model is reported against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_r2: Option<f64>,
    /// Regression: how inputs and targets are scaled (from the training split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regression: Option<RegressionScaling>,
}

/// Where a warm-started run's weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitFrom {
    /// The checkpoint file.
    pub checkpoint: PathBuf,
    /// The epoch it held.
    pub epoch: usize,
    /// That run's loss config.
    pub loss: Value,
}

impl RunSpec {
    /// The classifier's shape.
    pub fn cnn_config(&self) -> CnnConfig {
        CnnConfig {
            channels: self.channels,
            classes: self.classes.len(),
            width: self.width,
        }
    }

    /// The segmenter's depth, patches, augmentation and window; runs written before these
    /// were options trained whole 48×48 images of `train_images` each epoch.
    pub fn segmentation_run(&self, train_images: usize) -> SegmentationRun {
        self.segmentation
            .clone()
            .unwrap_or_else(|| SegmentationRun {
                depth: GENERATED_DEPTH,
                settings: SegmentationSettings::whole_images(
                    [SEG_SIZE, SEG_SIZE],
                    train_images,
                    self.batch_size,
                ),
            })
    }

    /// The segmenter's shape.
    pub fn unet_config(&self) -> UNetConfig {
        UNetConfig {
            channels: self.channels,
            classes: self.classes.len(),
            width: self.width,
            depth: self.segmentation_run(0).depth,
        }
    }

    /// How the run's images are normalised (folders: as chosen; generated data: `none`).
    pub fn normalization(&self) -> Normalization {
        match &self.data {
            DataSource::MaskFolder { reading, .. } => reading.normalization,
            _ => Normalization::None,
        }
    }

    /// The monitor of this run (`val_loss` unless it chose another).
    pub fn monitor(&self) -> Result<Monitor> {
        Ok(Monitor::new(
            self.monitor.as_deref().unwrap_or("val_loss"),
            self.task,
        )?)
    }
}

/// The segmentation part of a run's description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentationRun {
    /// The U-Net's depth.
    pub depth: usize,
    /// Patches, augmentation and sliding window.
    #[serde(flatten)]
    pub settings: SegmentationSettings,
}

impl RunSpec {
    /// The loss this run trains with.
    pub fn build_loss(&self) -> Result<Box<dyn Loss>> {
        Ok(Registry::global()?.build_value(&self.loss)?)
    }
}

/// The metric that picks the best epoch when the loss cannot (its weights change with the
/// epoch): the task's main validation metric.
fn main_metric(task: TaskKind) -> &'static str {
    match task {
        TaskKind::Classification => "val_accuracy",
        TaskKind::Segmentation => "val_dice",
        TaskKind::Regression => "val_mae",
        TaskKind::MultiLabel => "val_map",
    }
}

/// The task's default epochs, batch size and model width (generated data).
pub fn defaults(task: TaskKind) -> (usize, usize, usize) {
    match task {
        // (epochs, batch size, width)
        TaskKind::Classification => (6, 32, 12),
        TaskKind::Segmentation => (12, 16, 8),
        TaskKind::Regression => (10, 32, 12),
        TaskKind::MultiLabel => (15, 32, 12),
    }
}

/// The defaults of regression on a table of numeric features: the MLP's hidden units and the
/// fewest optimizer steps a run takes (more epochs for small tables, at most 200).
pub mod table_defaults {
    /// Units of each hidden layer of the MLP.
    pub const WIDTH: usize = 16;
    /// The fewest optimizer steps of a default run (30 epochs of scikit-learn's diabetes
    /// table; longer runs of this small model overfit small tables).
    pub const MIN_STEPS: usize = 360;
    /// The most epochs a default gives.
    pub const MAX_EPOCHS: usize = 200;
}

/// The defaults of segmentation on a mask folder (real images at their own size): epochs,
/// batch size, width, depth, steps per epoch and the largest default patch side.
pub mod folder_defaults {
    /// Epochs.
    pub const EPOCHS: usize = 8;
    /// Patches per step.
    pub const BATCH_SIZE: usize = 8;
    /// Channels of the U-Net's first level.
    pub const WIDTH: usize = 8;
    /// Down-sampling steps of the U-Net.
    pub const DEPTH: usize = 3;
    /// Optimizer steps per epoch.
    pub const STEPS_PER_EPOCH: usize = 40;
    /// The largest default patch side (smaller images give smaller patches).
    pub const MAX_PATCH: usize = 128;
}

/// The fewest optimizer steps a classification run on an image folder takes by default (more
/// epochs for small folders).
pub const MIN_FOLDER_STEPS: usize = 300;

/// The most epochs a default gives.
const MAX_DEFAULT_EPOCHS: usize = 100;

/// The U-Net depth of runs written before it was an option, and of the generated data.
const GENERATED_DEPTH: usize = 2;

/// The task's default loss: cross-entropy for classification, Dice + cross-entropy (MONAI's
/// `DiceCELoss`, nnU-Net's default) for segmentation.
pub fn default_loss(task: TaskKind) -> &'static str {
    match task {
        TaskKind::Classification => "cross_entropy",
        TaskKind::Segmentation => "dice_ce",
        TaskKind::Regression => "mse",
        TaskKind::MultiLabel => "binary_cross_entropy",
    }
}

/// The default schedule of regression on images (tables keep a constant rate).
pub const IMAGE_REGRESSION_SCHEDULE: &str = "cosine";

/// The task's default optimizer and schedule specs (regression on images: also
/// [`IMAGE_REGRESSION_SCHEDULE`], chosen once the data shows images).
pub fn default_optimizer(task: TaskKind) -> (&'static str, Option<&'static str>) {
    match task {
        TaskKind::Classification | TaskKind::Regression | TaskKind::MultiLabel => ("adam", None),
        TaskKind::Segmentation => (
            r#"{"name": "adam", "lr": 0.003}"#,
            Some(r#"{"name": "cosine", "min_lr": 0.0001}"#),
        ),
    }
}

/// Advice on a loss that trains the task but poorly: an overlap loss (one with `batch` and
/// `smooth_nr` options) per sample on the classifier's `[N, C]` with `smooth_nr > 0`, which
/// scores each absent class `smooth_nr / (p + smooth_dr)` (see `losskit info dice`).
pub fn loss_advice(loss_spec: &Value, task: TaskKind) -> Option<String> {
    if task != TaskKind::Classification {
        return None;
    }
    let name = loss_spec.get("name")?.as_str()?;
    let registration = Registry::global().ok()?.get(name).ok()?;
    let defaults = (registration.example)();
    let option = |key: &str| loss_spec.get(key).or_else(|| defaults.get(key)).cloned();
    let batch = option("batch")?.as_bool()?;
    let smooth_nr = option("smooth_nr")?.as_f64()?;
    (!batch && smooth_nr > 0.0).then(|| {
        format!(
            "`{0}` per sample on the classifier's [N, C] (one position per sample) scores each class absent from a sample smooth_nr / (p + smooth_dr) and can settle with a class it never predicts (0.80 validation accuracy on the generated cells); {{\"name\": \"{0}\", \"batch\": true}} or \"smooth_nr\": 0 reach 1.00 (losskit info {0})",
            registration.name
        )
    })
}

/// Checks that a loss can train the task's model: it takes the task's targets (class indices;
/// 0/1 per label; real values) at the task's output rank, and the model can give outputs in
/// the domain it declares.
pub fn check_loss(loss: &dyn Loss, spec: &Value, task: TaskKind) -> Result<()> {
    let capabilities = loss.capabilities();
    let name = spec.get("name").and_then(Value::as_str).unwrap_or("?");
    let example = task.as_str();
    match task {
        TaskKind::Classification | TaskKind::Segmentation
            if !capabilities.accepts(TargetKind::ClassIndices) =>
        {
            bail!(
                "loss `{name}` does not take class-index targets, so it cannot train the {example} example; try cross_entropy, focal or weighted_cross_entropy{}",
                if task == TaskKind::Segmentation {
                    ", dice or dice_ce"
                } else {
                    ", or dice with batch: true"
                }
            );
        }
        TaskKind::MultiLabel if !capabilities.accepts(TargetKind::BinaryMask) => bail!(
            "loss `{name}` does not take multi-label targets (0 or 1 per label), so it cannot train the multilabel example; try binary_cross_entropy, asymmetric, or dice, jaccard or tversky with \"activation\": \"sigmoid\""
        ),
        TaskKind::Regression
            if !capabilities.accepts(TargetKind::Real)
                && !capabilities.accepts(TargetKind::NonNegative) =>
        {
            bail!(
                "loss `{name}` does not take real-valued targets, so it cannot train the regression example; try mse, mae, huber, smooth_l1, log_cosh or quantile"
            );
        }
        _ => {}
    }
    let rank = match task {
        TaskKind::Segmentation => 4,
        _ => 2,
    };
    if !capabilities.ranks.contains(&rank) {
        bail!("loss `{name}` does not take outputs of rank {rank} (the {example} example's)");
    }
    let domain = capabilities.output;
    let fits = match task {
        TaskKind::Classification | TaskKind::Segmentation => matches!(
            domain,
            OutputDomain::Logits | OutputDomain::Probabilities | OutputDomain::UnitInterval
        ),
        // Softmax across labels would make them compete; multi-label needs independent ones.
        TaskKind::MultiLabel => matches!(domain, OutputDomain::Logits | OutputDomain::UnitInterval),
        TaskKind::Regression => matches!(
            domain,
            OutputDomain::Real | OutputDomain::AboveMinusOne | OutputDomain::LogRate
        ),
    };
    if !fits {
        bail!(
            "loss `{name}` expects outputs that are {}, which the {example} model cannot give: {}",
            domain_words(domain),
            match task {
                TaskKind::Regression =>
                    "its output is a real value per sample (a rate for poisson_nll needs \"log_input\": true)",
                TaskKind::MultiLabel =>
                    "its labels are independent, not one distribution over the classes",
                _ => "its output is one score per class",
            }
        );
    }
    Ok(())
}

fn domain_words(domain: OutputDomain) -> &'static str {
    match domain {
        OutputDomain::Logits => "logits",
        OutputDomain::Probabilities => "probabilities summing to 1 over the classes",
        OutputDomain::UnitInterval => "probabilities in [0, 1]",
        OutputDomain::Real => "real values",
        OutputDomain::AboveMinusOne => "values above -1",
        OutputDomain::LogRate => "log-rates",
    }
}

/// Refuses regression targets the loss cannot take (negative ones for a loss of
/// non-negative targets, such as msle or poisson_nll).
fn check_targets(loss: &dyn Loss, spec: &RunSpec, data: &Dataset) -> Result<()> {
    let Dataset::Regression(data) = data else {
        return Ok(());
    };
    let capabilities = loss.capabilities();
    if capabilities.accepts(TargetKind::Real) {
        return Ok(());
    }
    if let Some(negative) = data
        .train
        .targets
        .iter()
        .chain(&data.valid.targets)
        .find(|t| **t < 0.0)
    {
        bail!(
            "loss `{}` takes non-negative targets, but target `{}` has {negative}; use mse, mae or huber for targets of any sign",
            spec.loss.get("name").and_then(Value::as_str).unwrap_or("?"),
            data.target
        );
    }
    Ok(())
}

/// A run ready to go: its spec, data and device.
#[derive(Debug)]
pub struct Prepared {
    /// The weights a warm start begins from (burnpack bytes).
    pub initial_model: Option<Vec<u8>>,
    /// The spec.
    pub spec: RunSpec,
    /// The data.
    pub data: Dataset,
    /// The device.
    pub device: Device,
    /// The devices of data-parallel training (empty: only `device`).
    pub data_parallel: Vec<Device>,
}

/// Resolves a request into a run spec and loads its data; writes nothing.
pub fn prepare(request: &TrainRequest) -> Result<Prepared> {
    prepare_with(request, None)
}

/// [`prepare`], with the data already loaded from `request`'s data source when given (compare
/// loads it once for all its runs).
pub fn prepare_with(
    request: &TrainRequest,
    loaded: Option<(&DataSource, &Dataset)>,
) -> Result<Prepared> {
    let load = |source: &DataSource| -> Result<Dataset> {
        match loaded {
            Some((loaded_source, data)) if loaded_source == source => Ok(data.clone()),
            _ => source.load(),
        }
    };
    let (device, data_parallel) = devices(request)?;
    let mut initial_model = None;
    let (spec, data) = if request.resume {
        if request.init_from.is_some() {
            bail!(
                "--init-from starts a new run from another run's weights; --resume continues this one: pass one of them"
            );
        }
        let spec = resumed_spec(request)?;
        let data = load(&spec.data)?;
        (spec, data)
    } else {
        let source = request.init_from.as_deref().map(read_source).transpose()?;
        let mut spec = new_spec(request, source.as_ref().map(|(spec, _, _)| spec))?;
        let data = load(&spec.data)?;
        let (train, valid) = data.sizes();
        if train == 0 || valid == 0 {
            bail!("the data has no training or no validation samples");
        }
        spec.channels = data.channels();
        spec.classes = data.classes().to_vec();
        if let Some(side) = data.image_side() {
            spec.data.set_image_side(side);
        }
        let loss = spec.build_loss()?;
        check_targets(loss.as_ref(), &spec, &data)?;
        if let Dataset::Regression(regression) = &data {
            spec.regression = Some(RegressionScaling::of(
                regression,
                &loss.capabilities().targets,
            ));
        }
        // Images are regressed by the CNN, whose batch norm makes the last epochs of a constant
        // rate wander (the generated counts: validation predictions 0.6 cells low on average
        // after 10 epochs, against 0.05 with cosine decay); the tables' MLP has none.
        if matches!(data, Dataset::Regression(_)) && spec.channels > 0 && request.schedule.is_none()
        {
            spec.schedule = ScheduleConfig::parse(IMAGE_REGRESSION_SCHEDULE)?;
        }
        if let Dataset::Regression(regression) = &data
            && spec.channels == 0
        {
            if request.width.is_none() && source.is_none() {
                spec.width = table_defaults::WIDTH;
            }
            spec.linear_r2 = least_squares_r2(regression);
            if request.epochs.is_none() {
                let steps = train.div_ceil(spec.batch_size).max(1);
                spec.epochs = table_defaults::MIN_STEPS
                    .div_ceil(steps)
                    .clamp(spec.epochs, table_defaults::MAX_EPOCHS);
            }
        }
        if request.epochs.is_none()
            && matches!(
                spec.data,
                DataSource::ImageFolder { .. } | DataSource::LabelTable { .. }
            )
        {
            // A small folder gives few steps an epoch; batch norm's running statistics (what
            // validation uses) need a few hundred steps to settle.
            let steps = train.div_ceil(spec.batch_size).max(1);
            spec.epochs = spec
                .epochs
                .max(MIN_FOLDER_STEPS.div_ceil(steps))
                .min(MAX_DEFAULT_EPOCHS);
        }
        if let Dataset::Segmentation(segmentation) = &data {
            let source_depth = source
                .as_ref()
                .and_then(|(s, _, _)| s.segmentation.as_ref().map(|s| s.depth));
            spec.segmentation = Some(segmentation_run(
                request,
                &spec,
                segmentation,
                source_depth,
            )?);
        }
        if let Some((source, checkpoint, path)) = source {
            check_same_model(&source, &spec, &path)?;
            spec.init_from = Some(InitFrom {
                checkpoint: path,
                epoch: checkpoint.meta.epoch,
                loss: source.loss.clone(),
            });
            initial_model = Some(checkpoint.model);
        }
        (spec, data)
    };
    Ok(Prepared {
        initial_model,
        spec,
        data,
        device,
        data_parallel,
    })
}

/// The device of `--device` (or the first of `--devices`) and the data-parallel devices.
fn devices(request: &TrainRequest) -> Result<(Device, Vec<Device>)> {
    let data_parallel = request
        .devices
        .iter()
        .map(|name| device_from_flag(Some(name)).with_context(|| format!("--devices: `{name}`")))
        .collect::<Result<Vec<Device>>>()?;
    let device = match data_parallel.first() {
        Some(first) => first.clone(),
        None => device_from_flag(request.device.as_deref())?,
    };
    Ok((device, data_parallel))
}

/// The spec of the run in `--out`, with `--epochs` raised and `--patience` / `--monitor`
/// changed as asked.
fn resumed_spec(request: &TrainRequest) -> Result<RunSpec> {
    let checkpoint = Checkpoint::read(&request.out.join(CHECKPOINT_FILE))
        .map_err(|error| anyhow::anyhow!("--resume: {error}"))?;
    let mut spec: RunSpec = serde_json::from_value(checkpoint.meta.run.clone())
        .context("--resume: the checkpoint's run description is not readable")?;
    if let Some(epochs) = request.epochs {
        check_epochs(epochs)?;
        spec.epochs = epochs;
    }
    if let Some(monitor) = &request.monitor {
        Monitor::new(monitor, spec.task)?;
        spec.monitor = Some(monitor.clone());
    }
    if let Some(patience) = request.patience {
        if patience == 0 {
            bail!("--patience must be at least 1 (epochs without improvement before stopping)");
        }
        spec.patience = Some(patience);
    }
    if spec.epochs <= checkpoint.meta.epoch {
        bail!(
            "--resume: the run in {} already finished {} of {} epochs; pass a larger --epochs to train on",
            request.out.display(),
            checkpoint.meta.epoch,
            spec.epochs
        );
    }
    Ok(spec)
}

/// The run spec, checkpoint and file of `--init-from PATH` (a run folder: its last
/// checkpoint).
fn read_source(path: &std::path::Path) -> Result<(RunSpec, Checkpoint, PathBuf)> {
    let file = losskit_optim::checkpoint::resolve(path);
    let checkpoint =
        Checkpoint::read(&file).map_err(|error| anyhow::anyhow!("--init-from: {error}"))?;
    let spec: RunSpec = serde_json::from_value(checkpoint.meta.run.clone()).with_context(|| {
        format!(
            "--init-from {}: the run description is not readable",
            file.display()
        )
    })?;
    Ok((spec, checkpoint, file))
}

/// A warm start needs the source run's model: task, input channels, classes, width, depth.
fn check_same_model(source: &RunSpec, spec: &RunSpec, path: &std::path::Path) -> Result<()> {
    let depth = |s: &RunSpec| s.segmentation.as_ref().map(|s| s.depth);
    let differences: Vec<String> = [
        (
            "task",
            source.task.as_str().to_string(),
            spec.task.as_str().to_string(),
        ),
        (
            "channels",
            source.channels.to_string(),
            spec.channels.to_string(),
        ),
        ("classes", source.classes.join("/"), spec.classes.join("/")),
        ("width", source.width.to_string(), spec.width.to_string()),
        (
            "depth",
            format!("{:?}", depth(source)),
            format!("{:?}", depth(spec)),
        ),
    ]
    .into_iter()
    .filter(|(_, a, b)| a != b)
    .map(|(what, a, b)| format!("{what} {a} there, {b} here"))
    .collect();
    if !differences.is_empty() {
        bail!(
            "--init-from {}: its model does not fit this run ({}); a warm start needs the same task, data classes and model shape",
            path.display(),
            differences.join(", ")
        );
    }
    Ok(())
}

/// The spec of a new run from the request's flags, every option checked; its `channels` and
/// `classes` are filled in once the data is loaded. A warm start's `source` gives the defaults
/// of the model's shape.
fn new_spec(request: &TrainRequest, source: Option<&RunSpec>) -> Result<RunSpec> {
    let loss_spec = Value::Object(parse_spec(&request.loss)?);
    let loss = Registry::global()?.build_value(&loss_spec)?;
    check_loss(loss.as_ref(), &loss_spec, request.task)?;
    let optimizer = OptimizerConfig::parse(&request.optimizer)?;
    let schedule = match &request.schedule {
        Some(spec) => ScheduleConfig::parse(spec)?,
        None => ScheduleConfig::default(),
    };
    // Check the schedule can be built before anything is loaded or written.
    schedule.build(optimizer.lr(), 1)?;
    let (mut default_epochs, mut default_batch, mut default_width) = defaults(request.task);
    if request.task == TaskKind::Segmentation && request.data.is_some() {
        default_epochs = folder_defaults::EPOCHS;
        default_batch = folder_defaults::BATCH_SIZE;
        default_width = folder_defaults::WIDTH;
    }
    let given = request.segmentation.given();
    if request.task != TaskKind::Segmentation && !given.is_empty() {
        bail!("{} applies to --task segmentation only", given.join(", "));
    }
    if request.task == TaskKind::Segmentation && request.size.is_some() {
        bail!(
            "--size applies to the image classifier (segmentation trains on --patch patches of images at their own size)"
        );
    }
    if let Some(size) = request.size
        && !(MIN_CNN_SIZE..=1024).contains(&size)
    {
        bail!("--size must be in {MIN_CNN_SIZE}..=1024 (the classifier's input side in pixels)");
    }
    if let Some(source) = source {
        default_width = source.width;
        if source.task != request.task {
            bail!(
                "--init-from: that run is {}, this one {}; a warm start needs the same task",
                source.task.as_str(),
                request.task.as_str()
            );
        }
    }
    let monitor = match &request.monitor {
        Some(monitor) => monitor.clone(),
        // A scheduled loss measures something else each epoch: its values do not rank epochs.
        None if loss.changes_with_progress() => main_metric(request.task).into(),
        None => "val_loss".into(),
    };
    Monitor::new(&monitor, request.task)?;
    if request.patience == Some(0) {
        bail!("--patience must be at least 1 (epochs without improvement before stopping)");
    }
    let epochs = request.epochs.unwrap_or(default_epochs);
    let batch_size = request.batch_size.unwrap_or(default_batch);
    let width = request.width.unwrap_or(default_width);
    check_epochs(epochs)?;
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if width == 0 || width > 256 {
        bail!("--width must be in 1..=256");
    }
    if !(request.imbalance >= 1.0 && request.imbalance <= 1000.0) {
        bail!(
            "--imbalance must be in [1, 1000] (the ratio of the most to the least frequent class)"
        );
    }
    let reading = FolderReading {
        normalization: request.segmentation.normalization.unwrap_or_default(),
        masks: request.segmentation.masks.unwrap_or_default(),
    };
    let data = DataSource::from_flag(
        request.task,
        request.data.as_deref(),
        request.seed,
        request.imbalance,
        request.limit,
        reading,
        request.size,
        request.target.as_deref(),
        &request.table,
    )?;
    if request.size.is_some()
        && !matches!(
            data,
            DataSource::ImageFolder { .. }
                | DataSource::Idx { .. }
                | DataSource::Table { .. }
                | DataSource::LabelTable { .. }
        )
    {
        bail!("--size applies to images read from --data, not to the generated images");
    }
    let folder_images = matches!(
        data,
        DataSource::ImageFolder { .. } | DataSource::LabelTable { .. }
    );
    let classifies = matches!(
        request.task,
        TaskKind::Classification | TaskKind::MultiLabel
    );
    if classifies && !folder_images && request.augment == Some(true) {
        bail!(
            "--augment applies to image folders and label tables (--data), not to idx files or the generated images"
        );
    }
    if request.task == TaskKind::Regression && request.augment.is_some() {
        bail!(
            "--augment applies to classification and segmentation: crops and flips can change a regression target (a count, an area)"
        );
    }
    if data.is_generated()
        && let Some(flag) = given
            .iter()
            .find(|f| matches!(**f, "--normalize" | "--masks" | "--no-pad"))
    {
        bail!("{flag} applies to --data folders only, not to the generated data");
    }
    Ok(RunSpec {
        task: request.task,
        data,
        width,
        channels: 0,
        classes: Vec::new(),
        loss: loss_spec,
        optimizer,
        schedule,
        epochs,
        batch_size,
        seed: request.seed,
        max_steps: request.max_steps,
        segmentation: None,
        monitor: Some(monitor),
        patience: request.patience,
        init_from: None,
        augment: (classifies && folder_images).then(|| request.augment.unwrap_or(true)),
        linear_r2: None,
        regression: None,
    })
}

/// The U-Net depth, patches, augmentation and sliding window of a new segmentation run:
/// the request's, or defaults suited to the data (whole images, unchanged, for the generated
/// data; patches of at most 128 px, augmented, for folders).
fn segmentation_run(
    request: &TrainRequest,
    spec: &RunSpec,
    data: &SegmentationData,
    source_depth: Option<usize>,
) -> Result<SegmentationRun> {
    let asked = &request.segmentation;
    let generated = spec.data.is_generated();
    let depth = asked.depth.or(source_depth).unwrap_or(if generated {
        GENERATED_DEPTH
    } else {
        folder_defaults::DEPTH
    });
    if !(1..=6).contains(&depth) {
        bail!("--depth must be in 1..=6");
    }
    let factor = 1usize << depth;
    let (min_h, min_w) = data.smallest_size();
    let patch = match asked.patch {
        Some(patch) => {
            if let Some(side) = patch
                .iter()
                .find(|&&s| s == 0 || s % factor != 0 || s > 4096)
            {
                bail!(
                    "--patch: {side} is not a multiple of {factor} (2^depth, the U-Net's down-sampling) in {factor}..=4096; try {}",
                    (side / factor).max(1) * factor
                );
            }
            patch
        }
        None if generated => [SEG_SIZE, SEG_SIZE],
        None => {
            // The largest multiple of the down-sampling below both the smallest image side
            // and the cap; a set of tiny images gets one padded patch of the factor.
            let side = min_h.min(min_w).min(folder_defaults::MAX_PATCH) / factor * factor;
            [side.max(factor); 2]
        }
    };
    let pad = !asked.no_pad;
    if !pad && (min_h < patch[0] || min_w < patch[1]) {
        bail!(
            "--no-pad: the smallest image is {min_h}x{min_w}, smaller than the {}x{} patch; pass a smaller --patch or allow padding",
            patch[0],
            patch[1]
        );
    }
    let per_epoch = match asked.steps_per_epoch {
        Some(0) => bail!("--steps-per-epoch must be at least 1"),
        Some(steps) => steps
            .checked_mul(spec.batch_size)
            .filter(|&n| n <= 100_000_000)
            .ok_or_else(|| anyhow::anyhow!("--steps-per-epoch times --batch-size is too large"))?,
        None if generated => data.train.len(),
        None => folder_defaults::STEPS_PER_EPOCH * spec.batch_size,
    };
    let foreground = asked.foreground.unwrap_or(1.0 / 3.0);
    if !(0.0..=1.0).contains(&foreground) {
        bail!("--foreground must be in [0, 1] (the fraction of patches centred near foreground)");
    }
    let overlap = asked.overlap.unwrap_or(0.5);
    if !(0.0..0.95).contains(&overlap) {
        bail!("--overlap must be in [0, 0.95)");
    }
    let augmentation = if request.augment.unwrap_or(!generated) {
        Augmentation::default()
    } else {
        Augmentation::none()
    };
    Ok(SegmentationRun {
        depth,
        settings: SegmentationSettings {
            patches: PatchSampling {
                size: patch,
                per_epoch,
                foreground,
                pad,
            },
            augmentation,
            window: SlidingWindow {
                overlap,
                ..SlidingWindow::new(patch, spec.batch_size)
            },
        },
    })
}

fn check_epochs(epochs: usize) -> Result<()> {
    if epochs == 0 || epochs > MAX_EPOCHS {
        bail!("--epochs must be in 1..={MAX_EPOCHS}");
    }
    Ok(())
}

/// Something to do with a run's task, whichever model it has (see [`with_task`]).
pub trait TaskRun {
    /// What it gives.
    type Output;
    /// Does it with `task`.
    fn run<T: Task>(self, task: &T) -> Result<Self::Output>;
}

/// Builds the task (model shape and data) that `spec` describes and hands it to `run`.
pub fn with_task<R: TaskRun>(spec: &RunSpec, data: Dataset, run: R) -> Result<R::Output> {
    let capabilities = spec.build_loss()?.capabilities();
    match data {
        Dataset::Classification(data) if spec.task == TaskKind::Classification => {
            run.run(&ClassificationTask {
                model: spec.cnn_config(),
                data,
                multilabel: false,
                output: capabilities.output,
                augment: spec.augment.unwrap_or(false),
                seed: spec.seed,
            })
        }
        Dataset::MultiLabel(data) if spec.task == TaskKind::MultiLabel => {
            run.run(&ClassificationTask {
                model: spec.cnn_config(),
                data,
                multilabel: true,
                output: capabilities.output,
                augment: spec.augment.unwrap_or(false),
                seed: spec.seed,
            })
        }
        Dataset::Segmentation(data) if spec.task == TaskKind::Segmentation => {
            let segmentation = spec.segmentation_run(data.train.len());
            run.run(&SegmentationTask {
                model: spec.unet_config(),
                data,
                settings: segmentation.settings,
                seed: spec.seed,
                output: capabilities.output,
            })
        }
        Dataset::Regression(data) if spec.task == TaskKind::Regression => {
            let scaling = match &spec.regression {
                Some(scaling) => scaling.clone(),
                None => RegressionScaling::of(&data, &capabilities.targets),
            };
            run.run(&RegressionTask {
                data,
                width: spec.width,
                output: capabilities.output,
                scaling,
            })
        }
        data => bail!(
            "the data is for {} but the run is {}",
            data.kind().as_str(),
            spec.task.as_str()
        ),
    }
}

/// One forward pass of a fresh model and the loss on one training sample: a loss that does not
/// fit the model or the classes fails here, before anything is written.
pub fn check_forward<T: Task>(task: &T, loss: &dyn Loss, device: &Device) -> Result<()> {
    let model = task.init_model(device);
    let input = task.input(&model, Split::Train, &[0], device)?;
    loss.forward(input, Reduction::Mean).map_err(|error| {
        anyhow::anyhow!(
            "the loss does not fit the {} model: {error}",
            task.kind().as_str()
        )
    })?;
    Ok(())
}

struct Forward<'a> {
    loss: &'a dyn Loss,
    device: &'a Device,
}

impl TaskRun for Forward<'_> {
    type Output = ();

    fn run<T: Task>(self, task: &T) -> Result<()> {
        check_forward(task, self.loss, self.device)
    }
}

/// Checks, with one forward pass on one training sample, that a prepared run's loss fits its
/// model and classes (compare checks every run before training any).
pub fn check_prepared(prepared: &Prepared) -> Result<()> {
    let loss = prepared.spec.build_loss()?;
    with_task(
        &prepared.spec,
        prepared.data.first_training_image(),
        Forward {
            loss: loss.as_ref(),
            device: &prepared.device,
        },
    )
}
