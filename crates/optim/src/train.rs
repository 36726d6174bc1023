//! The training loop: any [`Loss`], any optimizer, any device; seeded, checkpointed every
//! epoch, resumable, and stopped with a clear message on a non-finite loss.
//!
//! It is a loop of its own rather than burn-train's `Learner`: the `Learner` needs burn's
//! `train` feature (a rebuild of burn and its dashboard dependencies), and its metrics see a
//! loss as one number, while this loop reports the per-term values of composite losses
//! (`LossValue::terms`), per-class recall and Dice/IoU, and writes them as it goes.

use std::{
    io::{IsTerminal, Write as _},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use burn::{
    module::Module,
    store::{BurnpackStore, ModuleSnapshot},
    tensor::{Bytes, Device},
};
use losskit_core::{Loss, LossInput, Reduction, Target, input::to_f64_vec};
use serde_json::Value;

use crate::{
    checkpoint::{CHECKPOINT_FILE, Checkpoint, CheckpointMeta},
    error::TrainError,
    metrics::{Confusion, Metrics, TaskKind},
    optimizer::OptimizerConfig,
    parallel::{StepResult, Workers, shard_step},
    schedule::ScheduleConfig,
    stats::{EpochStats, RunStats, write_reports},
};

/// Held while a run seeds the device and draws its initial weights (see `train`).
static SEEDED_INIT: Mutex<()> = Mutex::new(());

/// Which part of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training set.
    Train,
    /// The validation set.
    Valid,
}

/// A model and its data: what the loop trains.
pub trait Task: Sync {
    /// The model.
    type Model: Module;

    /// Classification or segmentation.
    fn kind(&self) -> TaskKind;

    /// The class names, index order.
    fn classes(&self) -> Vec<String>;

    /// A freshly initialised model on `device`.
    fn init_model(&self, device: &Device) -> Self::Model;

    /// The number of samples in `split`.
    fn len(&self, split: Split) -> usize;

    /// The model's output on the samples `indices` of `split` with their class-index targets,
    /// on `device`.
    fn input(
        &self,
        model: &Self::Model,
        split: Split,
        indices: &[usize],
        device: &Device,
    ) -> Result<LossInput, TrainError>;
}

/// How progress is shown on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A line updated in place on a terminal; one line per epoch otherwise.
    Auto,
    /// One line per epoch.
    Lines,
    /// Nothing.
    Quiet,
}

/// The settings of a run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Epochs to train in total (a resumed run continues up to this number).
    pub epochs: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// The seed of weight initialisation, shuffling and any randomness in the model.
    pub seed: u64,
    /// The output folder: checkpoint, metrics, summary and plot.
    pub out_dir: PathBuf,
    /// Continue from the checkpoint in `out_dir`.
    pub resume: bool,
    /// How progress is shown.
    pub progress: Progress,
    /// A description of the run, stored in the checkpoint and `summary.json`.
    pub run: Value,
    /// The plot's title.
    pub title: String,
    /// Stop after this many optimizer steps per epoch (for quick checks); `None`: every batch.
    pub max_steps_per_epoch: Option<usize>,
    /// Set by the caller (e.g. on Ctrl-C) to end the run before its next step with
    /// [`TrainError::Interrupted`]; the last checkpoint is kept. `None`: never interrupted.
    pub stop: Option<Arc<AtomicBool>>,
    /// Data parallelism: with two or more devices, each step's batch is split into one shard
    /// per device (see the `parallel` module's documentation for what that means for
    /// batch-global losses); the model and optimizer stay on the `device` given to [`train`].
    /// Empty or one device: one device, no threads.
    pub data_parallel: Vec<Device>,
}

/// The result of a run.
#[derive(Debug)]
pub struct TrainOutcome<M> {
    /// The trained model.
    pub model: M,
    /// The statistics of every epoch.
    pub stats: RunStats,
    /// The checkpoint file.
    pub checkpoint: PathBuf,
}

/// A small deterministic random generator (SplitMix64) for shuffling and data generation.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform float in [low, high).
    pub fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }

    /// A uniform index below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A standard normal sample.
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-12);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Shuffles in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// The order of the training samples in `epoch` (1-based): a function of the seed and epoch only,
/// so a resumed run sees the same order as an uninterrupted one.
pub fn epoch_order(seed: u64, epoch: usize, len: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64)).shuffle(&mut order);
    order
}

fn stop_requested(config: &TrainConfig) -> bool {
    config
        .stop
        .as_ref()
        .is_some_and(|stop| stop.load(Ordering::Relaxed))
}

pub(crate) fn scalar(tensor: burn::tensor::Tensor<1>) -> f64 {
    to_f64_vec(tensor).first().copied().unwrap_or(f64::NAN)
}

/// Adds each term's value, weighted by `weight` samples, to its running sum (first-seen order).
fn add_terms(sums: &mut Vec<(String, f64)>, terms: &[(String, f64)], weight: f64) {
    for (name, term) in terms {
        let v = term * weight;
        match sums.iter_mut().find(|(n, _)| n == name) {
            Some((_, sum)) => *sum += v,
            None => sums.push((name.clone(), v)),
        }
    }
}

/// The most epochs a run may have.
pub const MAX_EPOCHS: usize = 100_000;

/// Loads burnpack `bytes` into `model`; every tensor of the model must be in the checkpoint and
/// every tensor of the checkpoint must be used (a checkpoint of another model is refused).
pub fn load_weights<M: Module>(
    model: &mut M,
    bytes: &[u8],
    source: &str,
) -> Result<(), TrainError> {
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes.to_vec())));
    let result = model.load_from(&mut store).map_err(|error| {
        TrainError::Checkpoint(format!(
            "{source}: the checkpoint holds another model than this run's, or is damaged ({})",
            shorten(&one_line(error.to_string()), 120)
        ))
    })?;
    if !result.missing.is_empty() || !result.unused.is_empty() || !result.errors.is_empty() {
        return Err(TrainError::Checkpoint(format!(
            "{source}: the checkpoint holds another model ({} tensors missing, {} unused, {} mismatched); \
             it does not fit this run's model",
            result.missing.len(),
            result.unused.len(),
            result.errors.len()
        )));
    }
    Ok(())
}

/// At most `max` characters of `text` (a long library message cut to fit one line).
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}...", text.chars().take(max).collect::<String>())
    }
}

fn one_line(text: String) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A run description without its `epochs` (which a resumed run may extend).
fn without_epochs(run: &Value) -> Value {
    let mut run = run.clone();
    if let Value::Object(map) = &mut run {
        map.remove("epochs");
    }
    run
}

struct Display {
    mode: Progress,
    tty: bool,
    last: Option<Instant>,
}

impl Display {
    fn new(mode: Progress) -> Self {
        Self {
            mode,
            tty: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    fn step(&mut self, text: impl FnOnce() -> String) {
        if self.mode != Progress::Auto || !self.tty {
            return;
        }
        if self.last.is_some_and(|t| t.elapsed().as_millis() < 100) {
            return;
        }
        self.last = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{}", text());
        let _ = err.flush();
    }

    fn epoch(&mut self, line: &str) {
        match self.mode {
            Progress::Quiet => {}
            Progress::Auto if self.tty => eprintln!("\r\x1b[2K{line}"),
            _ => eprintln!("{line}"),
        }
        self.last = None;
    }
}

/// A model's loss and metrics over a whole split.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The mean loss.
    pub loss: f64,
    /// The mean values of the loss's terms (composite losses).
    pub terms: Vec<(String, f64)>,
    /// The task's metrics.
    pub metrics: Metrics,
}

/// The mean loss, terms and metrics of a model over a whole split (no gradients).
pub fn evaluate_split<T: Task>(
    task: &T,
    model: &T::Model,
    loss: &dyn Loss,
    split: Split,
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation, TrainError> {
    let classes = task.classes().len();
    let mut confusion = Confusion::new(classes);
    let mut total = 0.0;
    let mut terms: Vec<(String, f64)> = Vec::new();
    let mut count = 0usize;
    let len = task.len(split);
    let indices: Vec<usize> = (0..len).collect();
    for batch in indices.chunks(batch_size.max(1)) {
        let input = task.input(model, split, batch, device)?;
        add_confusion(&mut confusion, &input);
        let value = loss.forward(input, Reduction::Mean)?;
        let weight = batch.len() as f64;
        let values: Vec<(String, f64)> = value
            .terms
            .iter()
            .map(|(name, term)| (name.clone(), scalar(term.clone().detach())))
            .collect();
        add_terms(&mut terms, &values, weight);
        total += scalar(value.value) * weight;
        count += batch.len();
    }
    if count == 0 {
        let name = match split {
            Split::Train => "training",
            Split::Valid => "validation",
        };
        return Err(TrainError::Task(format!(
            "the {name} set is empty; there is nothing to evaluate"
        )));
    }
    let n = count as f64;
    for (_, v) in terms.iter_mut() {
        *v /= n;
    }
    Ok(Evaluation {
        loss: total / n,
        terms,
        metrics: confusion.metrics(task.kind()),
    })
}

pub(crate) fn add_confusion(confusion: &mut Confusion, input: &LossInput) {
    if let Target::Indices(indices) = input.target() {
        confusion.add_batch(input.output().clone().detach(), indices.clone());
    }
}

/// Trains `task`'s model with `loss`, `optimizer` and `schedule` on `device`.
///
/// Every epoch ends with a validation pass, a checkpoint and updated reports (`metrics.csv`,
/// `steps.csv`, `summary.json`, `loss.svg`), all written atomically into `config.out_dir`. With
/// `config.resume`, training continues from that folder's checkpoint and gives the same model
/// as an uninterrupted run. A NaN or infinite loss stops the run before the optimizer step; the
/// last checkpoint is kept.
pub fn train<T: Task>(
    task: &T,
    loss: &dyn Loss,
    optimizer: &OptimizerConfig,
    schedule: &ScheduleConfig,
    device: &Device,
    config: &TrainConfig,
) -> Result<TrainOutcome<T::Model>, TrainError> {
    if config.data_parallel.len() < 2 {
        return run_training(task, loss, optimizer, schedule, device, config, None);
    }
    let classes = task.classes().len();
    let devices: Vec<Device> = config
        .data_parallel
        .iter()
        .map(|d| d.clone().autodiff())
        .collect();
    std::thread::scope(|scope| {
        let workers = Workers::start(scope, task, loss, &devices, classes);
        run_training(
            task,
            loss,
            optimizer,
            schedule,
            device,
            config,
            Some(&workers),
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn run_training<T: Task>(
    task: &T,
    loss: &dyn Loss,
    optimizer: &OptimizerConfig,
    schedule: &ScheduleConfig,
    device: &Device,
    config: &TrainConfig,
    workers: Option<&Workers<T::Model>>,
) -> Result<TrainOutcome<T::Model>, TrainError> {
    if config.batch_size == 0 {
        return Err(TrainError::Task("batch size must be at least 1".into()));
    }
    if config.epochs == 0 || config.epochs > MAX_EPOCHS {
        return Err(TrainError::Task(format!(
            "epochs must be in 1..={MAX_EPOCHS}"
        )));
    }
    let train_len = task.len(Split::Train);
    if train_len == 0 {
        return Err(TrainError::Task("the training set is empty".into()));
    }
    let checkpoint_path = config.out_dir.join(CHECKPOINT_FILE);
    let autodiff = device.clone().autodiff();
    let batches = train_len.div_ceil(config.batch_size);
    let steps_per_epoch = config
        .max_steps_per_epoch
        .map_or(batches, |m| m.min(batches))
        .max(1);
    let total_steps = steps_per_epoch
        .checked_mul(config.epochs)
        .ok_or_else(|| TrainError::Task("epochs times steps per epoch is too large".into()))?;

    let mut scheduler = schedule.build(optimizer.lr(), total_steps)?;
    let mut optim = optimizer.build();
    let mut model;
    let mut stats;
    let mut global_step;
    let start_epoch;
    if config.resume {
        let checkpoint = Checkpoint::read(&checkpoint_path)?;
        if without_epochs(&checkpoint.meta.run) != without_epochs(&config.run) {
            return Err(TrainError::Checkpoint(format!(
                "{} was written by a different run (model, data, loss or optimizer differ); \
                 start a new run with --force or another --out",
                checkpoint_path.display()
            )));
        }
        model = task.init_model(&autodiff);
        load_weights(
            &mut model,
            &checkpoint.model,
            &checkpoint_path.display().to_string(),
        )?;
        optim = optim
            .from_bytes(Bytes::from_bytes_vec(checkpoint.optimizer))
            .map_err(|error| {
                TrainError::Checkpoint(format!(
                    "cannot load the optimizer state from {} (it does not fit this optimizer): {}",
                    checkpoint_path.display(),
                    shorten(&one_line(error.to_string()), 120)
                ))
            })?;
        stats = checkpoint.meta.stats;
        global_step = checkpoint.meta.global_step;
        start_epoch = checkpoint.meta.epoch;
        for _ in 0..global_step {
            scheduler.step();
        }
    } else {
        // burn keeps one random generator per device for the whole process: another run's
        // seeding or drawing in between (two runs in two threads, parallel tests) would make
        // the initial weights depend on timing.
        let _seeded = SEEDED_INIT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        autodiff.seed(config.seed);
        model = task.init_model(&autodiff);
        drop(_seeded);
        stats = RunStats {
            task: task.kind(),
            classes: task.classes(),
            epochs: Vec::new(),
        };
        global_step = 0;
        start_epoch = 0;
    }
    // Whether the checkpoint in `out_dir` is this run's (a replaced run's stays until the first
    // save overwrites it).
    let mut saved = config.resume && checkpoint_path.exists();
    let mut display = Display::new(config.progress);
    let classes = task.classes().len();
    for epoch in start_epoch + 1..=config.epochs {
        let started = Instant::now();
        autodiff.seed(config.seed.wrapping_add(epoch as u64));
        let order = epoch_order(config.seed, epoch, train_len);
        let mut step_losses = Vec::with_capacity(steps_per_epoch);
        let mut weighted = 0.0;
        let mut seen = 0usize;
        let mut term_sums: Vec<(String, f64)> = Vec::new();
        let mut confusion = Confusion::new(classes);
        let mut lr = optimizer.lr();
        for (step, batch) in order
            .chunks(config.batch_size)
            .take(steps_per_epoch)
            .enumerate()
        {
            if stop_requested(config) {
                return Err(TrainError::Interrupted {
                    epoch,
                    step: step + 1,
                    checkpoint: saved.then(|| checkpoint_path.display().to_string()),
                });
            }
            let StepResult {
                grads,
                value: current,
                terms,
                confusion: step_confusion,
            } = match workers {
                Some(workers) => workers.step(&model, batch, &autodiff, classes)?,
                None => shard_step(task, loss, &model, batch, &autodiff, 1.0, classes)?,
            };
            confusion.merge(&step_confusion);
            if !current.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    value: format!("{current}"),
                    epoch,
                    step: step + 1,
                    checkpoint: saved.then(|| checkpoint_path.display().to_string()),
                });
            }
            add_terms(&mut term_sums, &terms, batch.len() as f64);
            let rates = scheduler.step();
            lr = rates.base();
            model = optim.step(rates, model, grads);
            global_step += 1;
            step_losses.push(current);
            weighted += current * batch.len() as f64;
            seen += batch.len();
            display.step(|| {
                let mut text = format!(
                    "epoch {epoch}/{} step {}/{steps_per_epoch}  loss {current:.4}  epoch mean {:.4}",
                    config.epochs,
                    step + 1,
                    weighted / seen as f64
                );
                for (name, sum) in &term_sums {
                    text.push_str(&format!("  {name} {:.4}", sum / seen as f64));
                }
                if let Some(mean) = (!stats.epochs.is_empty()).then(|| stats.avg_loss_all_epochs()) {
                    text.push_str(&format!("  all-epochs mean {mean:.4}"));
                }
                text.push_str(&format!("  lr {lr:.2e}"));
                text
            });
        }
        let valid = model.valid();
        let Evaluation {
            loss: val_loss,
            terms: val_terms,
            metrics: val_metrics,
        } = evaluate_split(task, &valid, loss, Split::Valid, config.batch_size, device)?;
        let seen_f = seen.max(1) as f64;
        let train_loss = weighted / seen_f;
        // A non-finite mean (overflowing sum) or validation loss stops the run before the
        // checkpoint is written, so the last good one is kept.
        for value in [train_loss, val_loss] {
            if !value.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    value: format!("{value}"),
                    epoch,
                    step: steps_per_epoch,
                    checkpoint: saved.then(|| checkpoint_path.display().to_string()),
                });
            }
        }
        stats.epochs.push(EpochStats {
            epoch,
            step_losses,
            train_loss,
            train_terms: term_sums
                .into_iter()
                .map(|(n, s)| (n, s / seen_f))
                .collect(),
            train_metrics: confusion.metrics(task.kind()),
            val_loss,
            val_terms,
            val_metrics,
            lr,
            seconds: started.elapsed().as_secs_f64(),
        });
        save(
            &config.out_dir,
            &checkpoint_path,
            &model,
            &optim,
            epoch,
            global_step,
            config,
            &stats,
        )?;
        saved = true;
        display.epoch(&stats.epoch_line(config.epochs));
    }
    Ok(TrainOutcome {
        model,
        stats,
        checkpoint: checkpoint_path,
    })
}

#[allow(clippy::too_many_arguments)]
fn save<M: Module>(
    dir: &Path,
    checkpoint_path: &Path,
    model: &M,
    optim: &burn::optim::ModuleOptimizer,
    epoch: usize,
    global_step: usize,
    config: &TrainConfig,
    stats: &RunStats,
) -> Result<(), TrainError> {
    let mut store = BurnpackStore::from_bytes(None);
    model
        .save_into(&mut store)
        .map_err(|error| TrainError::Checkpoint(format!("cannot encode the model: {error}")))?;
    let model_bytes = store
        .get_bytes()
        .map_err(|error| TrainError::Checkpoint(format!("cannot encode the model: {error}")))?;
    let optimizer_bytes = optim.into_bytes().map_err(|error| {
        TrainError::Checkpoint(format!("cannot encode the optimizer state: {error}"))
    })?;
    let checkpoint = Checkpoint {
        meta: CheckpointMeta {
            epoch,
            global_step,
            run: config.run.clone(),
            stats: stats.clone(),
        },
        model: model_bytes.to_vec(),
        optimizer: optimizer_bytes.to_vec(),
    };
    checkpoint.write(checkpoint_path)?;
    write_reports(dir, stats, &config.run, &config.title)
}

/// Loads a model's weights from a checkpoint onto `device`.
pub fn load_model<T: Task>(
    task: &T,
    checkpoint: &Checkpoint,
    device: &Device,
) -> Result<T::Model, TrainError> {
    let mut model = task.init_model(device);
    load_weights(&mut model, &checkpoint.model, "checkpoint")?;
    Ok(model)
}
