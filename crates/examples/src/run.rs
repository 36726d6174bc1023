//! Run preparation: a [`TrainRequest`] (what `losskit train` or `compare` was asked) resolved
//! into a [`RunSpec`] (the run's full description, stored in its checkpoint), its data and its
//! device, every option checked before anything is written; and [`with_task`], which builds the
//! task a spec describes.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use losskit_core::{Loss, Reduction, Registry, TargetKind, spec::parse_spec};
use losskit_optim::{
    CHECKPOINT_FILE, Checkpoint, OptimizerConfig, Progress, ScheduleConfig, Split, Task, TaskKind,
    train::MAX_EPOCHS,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    data::{DataSource, Dataset},
    models::{CnnConfig, UNetConfig},
    tasks::{ClassificationTask, SegmentationTask},
};

/// The device named by `--device`, or the default CPU device (never burn's
/// `Device::default()`, which prefers any GPU it finds).
pub fn device_from_flag(name: Option<&str>) -> Result<Device> {
    Ok(losskit_core::devices::parse_device(name.unwrap_or("cpu"))?)
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
}

impl TrainRequest {
    /// The defaults of `losskit train` for `task`.
    pub fn new(task: TaskKind, out: PathBuf) -> Self {
        Self {
            task,
            data: None,
            loss: "cross_entropy".into(),
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
}

impl RunSpec {
    /// The loss this run trains with.
    pub fn build_loss(&self) -> Result<Box<dyn Loss>> {
        Ok(Registry::global()?.build_value(&self.loss)?)
    }
}

/// The task's default epochs and batch size.
pub fn defaults(task: TaskKind) -> (usize, usize, usize) {
    match task {
        // (epochs, batch size, width)
        TaskKind::Classification => (6, 32, 12),
        TaskKind::Segmentation => (12, 16, 8),
    }
}

/// The task's default optimizer and schedule specs.
pub fn default_optimizer(task: TaskKind) -> (&'static str, Option<&'static str>) {
    match task {
        TaskKind::Classification => ("adam", None),
        TaskKind::Segmentation => (
            r#"{"name": "adam", "lr": 0.003}"#,
            Some(r#"{"name": "cosine", "min_lr": 0.0001}"#),
        ),
    }
}

/// Checks that a loss can train the task's model (class-index targets of the task's rank).
pub fn check_loss(loss: &dyn Loss, spec: &Value, task: TaskKind) -> Result<()> {
    let capabilities = loss.capabilities();
    let name = spec.get("name").and_then(Value::as_str).unwrap_or("?");
    if !capabilities.accepts(TargetKind::ClassIndices) {
        bail!(
            "loss `{name}` does not take class-index targets, so it cannot train the {} example; try cross_entropy, focal or weighted_cross_entropy{}",
            task.as_str(),
            if task == TaskKind::Segmentation {
                ", dice or dice_ce"
            } else {
                ""
            }
        );
    }
    let rank = match task {
        TaskKind::Classification => 2,
        TaskKind::Segmentation => 4,
    };
    if !capabilities.ranks.contains(&rank) {
        bail!(
            "loss `{name}` does not take outputs of rank {rank} (the {} example's)",
            task.as_str()
        );
    }
    Ok(())
}

/// A run ready to go: its spec, data and device.
#[derive(Debug)]
pub struct Prepared {
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
    let (spec, data) = if request.resume {
        let spec = resumed_spec(request)?;
        let data = load(&spec.data)?;
        (spec, data)
    } else {
        let mut spec = new_spec(request)?;
        let data = load(&spec.data)?;
        if data.train.is_empty() || data.valid.is_empty() {
            bail!("the data has no training or no validation samples");
        }
        spec.channels = data.train.channels;
        spec.classes = data.classes.clone();
        (spec, data)
    };
    Ok(Prepared {
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

/// The spec of the run in `--out`, with `--epochs` raised as asked.
fn resumed_spec(request: &TrainRequest) -> Result<RunSpec> {
    let checkpoint = Checkpoint::read(&request.out.join(CHECKPOINT_FILE))
        .map_err(|error| anyhow::anyhow!("--resume: {error}"))?;
    let mut spec: RunSpec = serde_json::from_value(checkpoint.meta.run.clone())
        .context("--resume: the checkpoint's run description is not readable")?;
    if let Some(epochs) = request.epochs {
        check_epochs(epochs)?;
        spec.epochs = epochs;
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

/// The spec of a new run from the request's flags, every option checked; its `channels` and
/// `classes` are filled in once the data is loaded.
fn new_spec(request: &TrainRequest) -> Result<RunSpec> {
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
    let (default_epochs, default_batch, default_width) = defaults(request.task);
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
    let data = DataSource::from_flag(
        request.task,
        request.data.as_deref(),
        request.seed,
        request.imbalance,
        request.limit,
    )?;
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
    match spec.task {
        TaskKind::Classification => run.run(&ClassificationTask {
            model: CnnConfig {
                channels: spec.channels,
                classes: spec.classes.len(),
                width: spec.width,
            },
            data,
        }),
        TaskKind::Segmentation => run.run(&SegmentationTask {
            model: UNetConfig {
                channels: spec.channels,
                classes: spec.classes.len(),
                width: spec.width,
            },
            data,
        }),
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
    let data = &prepared.data;
    let per_image = data.train.image_len();
    let labels_per_image = data
        .train
        .labels
        .len()
        .checked_div(data.train.len())
        .unwrap_or(0);
    let mut train = data.train.clone_empty();
    train
        .images
        .extend_from_slice(&data.train.images[..per_image.min(data.train.images.len())]);
    train
        .labels
        .extend_from_slice(&data.train.labels[..labels_per_image.min(data.train.labels.len())]);
    let one = Dataset {
        kind: data.kind,
        classes: data.classes.clone(),
        train,
        valid: data.valid.clone_empty(),
        description: String::new(),
    };
    let loss = prepared.spec.build_loss()?;
    with_task(
        &prepared.spec,
        one,
        Forward {
            loss: loss.as_ref(),
            device: &prepared.device,
        },
    )
}
