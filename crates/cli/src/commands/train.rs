//! `losskit train`: train a bundled example with any registered loss, optimizer and schedule.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use losskit_core::{Loss, Reduction, Registry, TargetKind, spec::parse_spec};
use losskit_optim::{
    CHECKPOINT_FILE, Checkpoint, OptimizerConfig, Progress, RunStats, ScheduleConfig, Split, Task,
    TaskKind, TrainConfig, TrainError,
    stats::{REPORT_FILES, write_atomically},
    train::MAX_EPOCHS,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    commands::device_from_flag,
    examples::{
        ClassificationTask, SegmentationTask,
        data::{DataSource, Dataset},
        models::{CnnConfig, UNetConfig},
    },
    signals::Interrupted,
};

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
    let data_parallel = request
        .devices
        .iter()
        .map(|name| device_from_flag(Some(name)).with_context(|| format!("--devices: `{name}`")))
        .collect::<Result<Vec<Device>>>()?;
    let device = match data_parallel.first() {
        Some(first) => first.clone(),
        None => device_from_flag(request.device.as_deref())?,
    };
    if request.resume {
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
        let data = load(&spec.data)?;
        return Ok(Prepared {
            spec,
            data,
            device,
            data_parallel,
        });
    }
    let loss_spec = Value::Object(parse_spec(&request.loss)?);
    let loss = Registry::global()?.build_value(&loss_spec)?;
    check_loss(loss.as_ref(), &loss_spec, request.task)?;
    let optimizer = OptimizerConfig::parse(&request.optimizer)?;
    let schedule = match &request.schedule {
        Some(spec) => ScheduleConfig::parse(spec)?,
        None => ScheduleConfig::default(),
    };
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
    let source = DataSource::from_flag(
        request.task,
        request.data.as_deref(),
        request.seed,
        request.imbalance,
        request.limit,
    )?;
    let data = load(&source)?;
    if data.train.is_empty() || data.valid.is_empty() {
        bail!("the data has no training or no validation samples");
    }
    // Check the schedule can be built before anything is written.
    schedule.build(optimizer.lr(), 1)?;
    let spec = RunSpec {
        task: request.task,
        data: source,
        width,
        channels: data.train.channels,
        classes: data.classes.clone(),
        loss: loss_spec,
        optimizer,
        schedule,
        epochs,
        batch_size,
        seed: request.seed,
        max_steps: request.max_steps,
    };
    Ok(Prepared {
        spec,
        data,
        device,
        data_parallel,
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
fn check_forward<T: Task>(task: &T, loss: &dyn Loss, device: &Device) -> Result<()> {
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

struct Training<'a> {
    loss: &'a dyn Loss,
    spec: &'a RunSpec,
    device: &'a Device,
    config: &'a TrainConfig,
    request: &'a TrainRequest,
}

impl TaskRun for Training<'_> {
    type Output = RunStats;

    fn run<T: Task>(self, task: &T) -> Result<RunStats> {
        check_forward(task, self.loss, self.device)?;
        // Only now is the output folder created; with --force the old run's files stay until
        // the new run writes its first checkpoint and reports over them.
        check_out_dir(&self.request.out, self.request.resume, self.request.force)?;
        let replacing = !self.request.resume && self.request.out.join(CHECKPOINT_FILE).exists();
        match losskit_optim::train(
            task,
            self.loss,
            &self.spec.optimizer,
            &self.spec.schedule,
            self.device,
            self.config,
        ) {
            Ok(outcome) => Ok(outcome.stats),
            Err(
                error @ TrainError::NonFiniteLoss {
                    checkpoint: None, ..
                },
            ) if replacing => Err(anyhow::anyhow!(
                "{error}; the earlier run in {} is left as it was",
                self.request.out.display()
            )),
            Err(error @ TrainError::NonFiniteLoss { .. }) => Err(anyhow::anyhow!("{error}")),
            Err(error @ TrainError::Interrupted { .. }) => {
                let out = self.request.out.display();
                let hint = match &error {
                    TrainError::Interrupted {
                        checkpoint: Some(_),
                        ..
                    } => format!("; continue it with `losskit train --resume --out {out}`"),
                    _ if replacing => format!("; the earlier run in {out} is left as it was"),
                    _ => String::new(),
                };
                Err(Interrupted(format!("{error}{hint}")).into())
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// Creates the output folder and checks it can be written to (a probe file, removed again).
pub fn check_out_dir(out: &Path, resume: bool, force: bool) -> Result<()> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create --out {}", out.display()))?;
    if !resume && !force && out.join(CHECKPOINT_FILE).exists() {
        bail!(
            "{} already holds a run; pass --resume to continue it, --force to replace it, or another --out",
            out.display()
        );
    }
    let probe = out.join(".losskit-write-check");
    write_atomically(&probe, b"ok")
        .map_err(|error| anyhow::anyhow!("--out {} is not writable: {error}", out.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Runs training for a prepared run; returns the statistics.
pub fn run_prepared(prepared: Prepared, request: &TrainRequest, title: &str) -> Result<RunStats> {
    let Prepared {
        spec,
        data,
        device,
        data_parallel,
    } = prepared;
    let loss = spec.build_loss()?;
    let config = TrainConfig {
        epochs: spec.epochs,
        batch_size: spec.batch_size,
        seed: spec.seed,
        out_dir: request.out.clone(),
        resume: request.resume,
        progress: request.progress,
        run: serde_json::to_value(&spec)?,
        title: title.to_string(),
        max_steps_per_epoch: spec.max_steps,
        stop: crate::signals::stop_flag(),
        data_parallel,
    };
    if request.progress != Progress::Quiet {
        eprintln!("losskit: {}", data.description);
    }
    let training = Training {
        loss: loss.as_ref(),
        spec: &spec,
        device: &device,
        config: &config,
        request,
    };
    let remote = request
        .devices
        .iter()
        .chain(&request.device)
        .any(|name| name.trim().starts_with("remote:"));
    if !remote {
        return with_task(&spec, data, training);
    }
    // burn's remote client panics when the connection drops mid-run; that is an outside
    // failure with a message for the user, and the last checkpoint (written atomically) stays.
    crate::panics::catch(|| with_task(&spec, data, training)).unwrap_or_else(|panic| {
        let checkpoint = request.out.join(CHECKPOINT_FILE);
        let kept = if checkpoint.exists() {
            format!(
                "; the last checkpoint is kept at {} (continue it with `losskit train --resume --out {}`)",
                checkpoint.display(),
                request.out.display()
            )
        } else {
            "; no epoch completed, so there is no checkpoint".to_string()
        };
        bail!("lost the remote device ({panic}){kept}")
    })
}

/// The closing report of a run.
pub fn report(stats: &RunStats, out: &Path) -> String {
    let Some(last) = stats.last() else {
        return "no epoch finished".into();
    };
    let mut text = format!(
        "epochs {}  val_loss {:.4}  avg_loss_all_epochs {:.4}",
        last.epoch,
        last.val_loss,
        stats.avg_loss_all_epochs()
    );
    match stats.task {
        TaskKind::Classification => {
            text.push_str(&format!("  val_accuracy {:.4}", last.val_metrics.accuracy))
        }
        TaskKind::Segmentation => text.push_str(&format!(
            "  val_dice {:.4}  val_iou {:.4}",
            last.val_metrics.dice.unwrap_or(f64::NAN),
            last.val_metrics.iou.unwrap_or(f64::NAN)
        )),
    }
    let seconds: f64 = stats.epochs.iter().map(|e| e.seconds).sum();
    text.push_str(&format!("  time {seconds:.1}s\nrecall:"));
    for (name, recall) in stats.classes.iter().zip(&last.val_metrics.recall) {
        text.push_str(&format!(" {name} {recall:.3}"));
    }
    let files: Vec<String> = std::iter::once(CHECKPOINT_FILE)
        .chain(REPORT_FILES)
        .map(|file| format!("{}/{file}", out.display()))
        .collect();
    text.push_str(&format!("\nwrote {}", files.join(", ")));
    text
}

/// Trains as asked; returns the closing report.
pub fn run(request: &TrainRequest) -> Result<String> {
    let prepared = prepare(request)?;
    let title = format!(
        "{} - loss {} - {}",
        prepared.spec.task.as_str(),
        prepared
            .spec
            .loss
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?"),
        prepared.spec.optimizer.name()
    );
    let stats = run_prepared(prepared, request, &title)?;
    Ok(report(&stats, &request.out))
}
