//! The training loop: any [`Loss`], any optimizer, any device; seeded, checkpointed every
//! epoch, resumable, and stopped with a clear message on a non-finite loss.
//!
//! It is a loop of its own rather than burn-train's `Learner`: the `Learner` needs burn's
//! `train` feature (a rebuild of burn and its dashboard dependencies), and its metrics see a
//! loss as one number, while this loop reports the per-term values of composite losses
//! (`LossValue::terms`), per-class recall and Dice/IoU, and writes them as it goes.

use std::{
    io::{IsTerminal, Write as _},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use burn::{
    module::Module,
    store::{BurnpackStore, ModuleSnapshot},
    tensor::{Bytes, Device},
};
use losskit_core::{
    Loss, LossInput, Reduction, Rng, TrainingProgress, atomic_write::write_atomically,
    input::to_f64_vec,
};
use serde_json::Value;

use crate::{
    checkpoint::{CHECKPOINT_FILE, Checkpoint, CheckpointMeta},
    error::TrainError,
    events::{EpochEvent, EventLog, RunEvent, RunStart, StepEvent},
    init::seeded_init,
    metrics::{Metrics, Mistake, Mistakes, OutputReading, Tally, TaskKind},
    monitor::{BEST_FILE, Monitor},
    optimizer::OptimizerConfig,
    parallel::{StepResult, Workers, shard_step},
    report::Preview,
    schedule::ScheduleConfig,
    stats::{EpochStats, RunStats, write_predictions, write_reports},
};

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

    /// Classification, segmentation, regression or multi-label classification.
    fn kind(&self) -> TaskKind;

    /// How the outputs the task gives the loss read as predictions, for the metrics. By
    /// default: logits, targets in their own units.
    fn reading(&self) -> OutputReading {
        OutputReading::default()
    }

    /// The class names, index order.
    fn classes(&self) -> Vec<String>;

    /// A freshly built model on `device`. Training redraws its weights from the run's seed
    /// ([`seeded_init`](crate::seeded_init)), so burn's lazy initialisers need not be seeded.
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

    /// The model's output on the training samples `indices` of `epoch` (1-based) with their
    /// targets. A task whose training samples change from epoch to epoch (random patches,
    /// augmentation) draws them here, from the run's seed, the epoch and the indices only, so
    /// a resumed run sees what an uninterrupted one does. By default: [`Task::input`].
    fn train_input(
        &self,
        model: &Self::Model,
        indices: &[usize],
        epoch: usize,
        device: &Device,
    ) -> Result<LossInput, TrainError> {
        let _ = epoch;
        self.input(model, Split::Train, indices, device)
    }

    /// [`Task::train_input`] with the auxiliary inputs the loss reads. A task that trains on
    /// patches of larger images computes them on each whole image
    /// ([`AuxiliaryInput::map`](losskit_core::AuxiliaryInput)) and cuts them with the patch, so
    /// distances do not stop at the patch's border. By default none are given and the loss
    /// computes them from the target it gets.
    fn train_input_with(
        &self,
        model: &Self::Model,
        indices: &[usize],
        epoch: usize,
        device: &Device,
        auxiliary: &[losskit_core::AuxiliaryInput],
    ) -> Result<LossInput, TrainError> {
        let _ = auxiliary;
        self.train_input(model, indices, epoch, device)
    }

    /// A hint that the samples `indices` of `split` come next: a task that reads its data
    /// lazily may start reading them in the background. It must not change what any later
    /// call returns. By default: nothing.
    fn prefetch(&self, split: Split, indices: &[usize]) {
        let _ = (split, indices);
    }

    /// How many samples of `split` one evaluation batch holds when the run's batch size is
    /// `batch_size` (a task whose samples differ in size evaluates them one at a time). By
    /// default: `batch_size`.
    fn eval_batch_size(&self, split: Split, batch_size: usize) -> usize {
        let _ = split;
        batch_size
    }

    /// Pictures of what `model` does on a few validation samples, for the report (computed
    /// after each epoch's validation, whose results — the surest mistakes among them — are in
    /// `validation`). By default: none.
    fn previews(
        &self,
        model: &Self::Model,
        device: &Device,
        validation: &SplitEvaluation,
    ) -> Result<Vec<Preview>, TrainError> {
        let _ = (model, device, validation);
        Ok(Vec::new())
    }
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
    /// The metric that decides the best epoch, whose checkpoint is kept as `best.lkc`.
    pub monitor: Monitor,
    /// Stop when the monitored metric has not improved for this many epochs (`None`: train
    /// every epoch).
    pub patience: Option<usize>,
    /// Start from these weights (burnpack bytes of the same model, e.g. another run's
    /// checkpoint) instead of the seed's initial weights; the optimizer starts fresh.
    pub initial_model: Option<Vec<u8>>,
    /// Files written into `out_dir` with the reports at each save (name, contents), such as
    /// the run's resolved configuration.
    pub files: Vec<(String, String)>,
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

impl<M> TrainOutcome<M> {
    /// Whether early stopping ended the run before its last epoch.
    pub fn stopped_early(&self) -> bool {
        self.stats.stopped_early
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

/// The keys of a run description that a resumed run may change: how long it trains and when
/// it stops, not what it computes.
pub const RESUMABLE_KEYS: [&str; 3] = ["epochs", "patience", "monitor"];

/// A run description without the keys a resumed run may change.
fn without_resumable(run: &Value) -> Value {
    let mut run = run.clone();
    if let Value::Object(map) = &mut run {
        for key in RESUMABLE_KEYS {
            map.remove(key);
        }
    }
    run
}

/// Writes `event` to the log and folds it into the run's statistics: the reports are written
/// from the same events as `events.jsonl`.
fn record(events: &mut EventLog, stats: &mut RunStats, event: RunEvent) {
    events.record(&event);
    stats.apply(&event);
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
pub struct SplitEvaluation {
    /// The mean loss.
    pub loss: f64,
    /// The mean values of the loss's terms (composite losses).
    pub terms: Vec<(String, f64)>,
    /// The task's metrics.
    pub metrics: Metrics,
    /// Regression: each sample's (target, prediction), in the target's units.
    pub predictions: Vec<(f64, f64)>,
    /// Classification and multi-label: the surest mistakes (up to [`MISTAKES_KEPT`]).
    pub mistakes: Vec<Mistake>,
}

/// How many of a split's surest mistakes an evaluation keeps (for the report's previews).
pub const MISTAKES_KEPT: usize = 6;

/// An empty tally of `task`'s metrics.
pub(crate) fn tally_of<T: Task>(task: &T) -> Tally {
    Tally::new(task.kind(), task.classes().len(), task.reading())
}

/// The mean loss, terms and metrics of a model over a whole split (no gradients), with the
/// loss at training `progress` (scheduled losses).
pub fn evaluate_split<T: Task>(
    task: &T,
    model: &T::Model,
    loss: &dyn Loss,
    split: Split,
    batch_size: usize,
    progress: TrainingProgress,
    device: &Device,
) -> Result<SplitEvaluation, TrainError> {
    let mut tally = tally_of(task);
    let mut mistakes = Mistakes::new(task.kind(), task.reading(), MISTAKES_KEPT);
    let mut total = 0.0;
    let mut terms: Vec<(String, f64)> = Vec::new();
    let mut count = 0usize;
    let len = task.len(split);
    let indices: Vec<usize> = (0..len).collect();
    let batches: Vec<&[usize]> = indices
        .chunks(task.eval_batch_size(split, batch_size).max(1))
        .collect();
    for (i, batch) in batches.iter().enumerate() {
        if let Some(next) = batches.get(i + 1) {
            task.prefetch(split, next);
        }
        let input = task
            .input(model, split, batch, device)?
            .with_progress(progress);
        tally.add(&input);
        mistakes.add(&input);
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
    Ok(SplitEvaluation {
        loss: total / n,
        terms,
        metrics: tally.metrics(task.kind()),
        predictions: tally.pairs().to_vec(),
        mistakes: mistakes.into_worst(),
    })
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
    let devices: Vec<Device> = config
        .data_parallel
        .iter()
        .map(|d| d.clone().autodiff())
        .collect();
    std::thread::scope(|scope| {
        let workers = Workers::start(scope, task, loss, &devices);
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

fn run_training<T: Task>(
    task: &T,
    loss: &dyn Loss,
    optimizer: &OptimizerConfig,
    schedule: &ScheduleConfig,
    device: &Device,
    config: &TrainConfig,
    workers: Option<&Workers<T::Model>>,
) -> Result<TrainOutcome<T::Model>, TrainError> {
    let run = Run::new(task, loss, device, config, workers)?;
    let total_steps = run
        .steps_per_epoch
        .checked_mul(config.epochs)
        .ok_or_else(|| TrainError::Task("epochs times steps per epoch is too large".into()))?;
    let scheduler = schedule.build(optimizer.lr(), total_steps)?;
    let mut state = if config.resume {
        run.resume(optimizer.build(), scheduler)?
    } else {
        run.start(optimizer.build(), scheduler)?
    };
    // Whether the checkpoint in `out_dir` is this run's (a replaced run's stays until the first
    // save overwrites it).
    let mut saved = config.resume && run.checkpoint_path.exists();
    let mut display = Display::new(config.progress);
    // Every event of the run (and of each epoch) is recorded inside these spans, so a
    // subscriber can tell which run and epoch a diagnostic belongs to.
    let _run = tracing::info_span!(
        target: "losskit::train",
        "run",
        out = %config.out_dir.display(),
        task = %task.kind().as_str()
    )
    .entered();
    let mut events = EventLog::open(&config.out_dir, config.resume);
    let start = RunEvent::RunStart(RunStart {
        resume: config.resume,
        from_epoch: state.epoch,
        epochs: config.epochs,
        batch_size: config.batch_size,
        steps_per_epoch: run.steps_per_epoch,
        train_samples: run.train_len,
        seed: config.seed,
        task: task.kind(),
        classes: task.classes(),
        best: state.stats.best.clone(),
        pid: Some(std::process::id()),
        run: config.run.clone(),
    });
    record(&mut events, &mut state.stats, start);
    let failed = |events: &mut EventLog, error: TrainError| {
        events.record(&RunEvent::Error {
            message: error.to_string(),
        });
        error
    };
    for epoch in state.epoch + 1..=config.epochs {
        let _epoch = tracing::info_span!(target: "losskit::train", "epoch", epoch).entered();
        let started = Instant::now();
        let trained;
        (state, trained) = run
            .train_epoch(state, epoch, optimizer.lr(), &mut display, &mut events)
            .map_err(|stop| stop.into_error(epoch, saved.then_some(&run.checkpoint_path)))
            .map_err(|error| failed(&mut events, error))?;
        let (epoch_stats, predictions, previews) = run
            .validate(&state.model, trained, epoch, started)
            .map_err(|stop| stop.into_error(epoch, saved.then_some(&run.checkpoint_path)))
            .map_err(|error| failed(&mut events, error))?;
        state.val_predictions = predictions;
        state.previews = previews;
        state.epoch = epoch;
        let best = config
            .monitor
            .best(state.stats.epochs.iter().chain([&epoch_stats]));
        let improved = best.as_ref().is_some_and(|b| b.epoch == epoch);
        let stop = config.patience.is_some_and(|patience| {
            let since = best.as_ref().map_or(epoch, |b| epoch - b.epoch);
            since >= patience && epoch < config.epochs
        });
        let trained_epochs = state.stats.epochs.len() as f64 + 1.0;
        let avg_loss_all_epochs = (state.stats.epochs.iter().map(|e| e.train_loss).sum::<f64>()
            + epoch_stats.train_loss)
            / trained_epochs;
        record(
            &mut events,
            &mut state.stats,
            RunEvent::Epoch(EpochEvent {
                stats: epoch_stats,
                avg_loss_all_epochs,
                improved,
                best,
                stopped_early: stop,
            }),
        );
        run.save(&state, improved)
            .map_err(|error| failed(&mut events, error))?;
        saved = true;
        events.record(&RunEvent::Checkpoint {
            epoch,
            path: run.checkpoint_path.clone(),
            best: improved.then(|| config.out_dir.join(BEST_FILE)),
        });
        let mut line = state.stats.epoch_line(config.epochs);
        if improved {
            line.push_str("  (best)");
        }
        display.epoch(&line);
        if stop {
            events.record(&RunEvent::StoppedEarly {
                epoch,
                best: state.stats.best.clone(),
            });
            if let Some(best) = &state.stats.best {
                display.epoch(&format!(
                    "stopped early: {} has not improved for {} epochs (best {:.4} at epoch {}, kept in {BEST_FILE})",
                    best.metric,
                    epoch - best.epoch,
                    best.value,
                    best.epoch
                ));
            }
            break;
        }
    }
    events.record(&RunEvent::RunEnd {
        epochs: state.epoch,
        stopped_early: state.stats.stopped_early,
        best: state.stats.best.clone(),
    });
    Ok(TrainOutcome {
        model: state.model,
        stats: state.stats,
        checkpoint: run.checkpoint_path,
    })
}

/// What a run does not change while it trains: the task, loss, settings and derived sizes.
struct Run<'a, T: Task> {
    task: &'a T,
    loss: &'a dyn Loss,
    /// The device of evaluation (no gradients).
    device: &'a Device,
    /// The device of training: `device` with autodiff.
    autodiff: Device,
    config: &'a TrainConfig,
    workers: Option<&'a Workers<T::Model>>,
    checkpoint_path: PathBuf,
    train_len: usize,
    steps_per_epoch: usize,
}

/// What changes from step to step, and what a checkpoint holds.
struct State<M> {
    model: M,
    optim: burn::optim::ModuleOptimizer,
    scheduler: burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler,
    stats: RunStats,
    global_step: usize,
    /// The last epoch completed.
    epoch: usize,
    /// Regression: the last validation pass's (target, prediction) pairs (not checkpointed:
    /// each epoch recomputes them).
    val_predictions: Vec<(f64, f64)>,
    /// The last validation pass's previews (not checkpointed either).
    previews: Vec<Preview>,
}

/// An epoch's training part, before validation.
struct Trained {
    /// Σ loss × samples, and samples.
    weighted: f64,
    seen: usize,
    /// Σ term × samples per term.
    term_sums: Vec<(String, f64)>,
    tally: Tally,
    lr: f64,
}

/// Why an epoch stopped early; the epoch and checkpoint are added by the caller.
enum Stop {
    Interrupted { step: usize },
    NonFinite { value: f64, step: usize },
    Failed(TrainError),
}

impl From<TrainError> for Stop {
    fn from(error: TrainError) -> Self {
        Self::Failed(error)
    }
}

impl Stop {
    fn into_error(self, epoch: usize, checkpoint: Option<&PathBuf>) -> TrainError {
        let checkpoint = checkpoint.map(|path| path.display().to_string());
        match self {
            Self::Interrupted { step } => TrainError::Interrupted {
                epoch,
                step,
                checkpoint,
            },
            Self::NonFinite { value, step } => TrainError::NonFiniteLoss {
                value: format!("{value}"),
                epoch,
                step,
                checkpoint,
            },
            Self::Failed(error) => error,
        }
    }
}

impl<'a, T: Task> Run<'a, T> {
    fn new(
        task: &'a T,
        loss: &'a dyn Loss,
        device: &'a Device,
        config: &'a TrainConfig,
        workers: Option<&'a Workers<T::Model>>,
    ) -> Result<Self, TrainError> {
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
        let batches = train_len.div_ceil(config.batch_size);
        Ok(Self {
            task,
            loss,
            device,
            autodiff: device.clone().autodiff(),
            config,
            workers,
            checkpoint_path: config.out_dir.join(CHECKPOINT_FILE),
            train_len,
            steps_per_epoch: config
                .max_steps_per_epoch
                .map_or(batches, |m| m.min(batches))
                .max(1),
        })
    }

    /// A new run: the model's weights drawn from the seed, or the initial weights given.
    fn start(
        &self,
        optim: burn::optim::ModuleOptimizer,
        scheduler: burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler,
    ) -> Result<State<T::Model>, TrainError> {
        let model = match &self.config.initial_model {
            Some(bytes) => {
                let mut model = self.task.init_model(&self.autodiff);
                load_weights(&mut model, bytes, "the initial weights")?;
                model
            }
            None => seeded_init(self.task.init_model(&self.autodiff), self.config.seed),
        };
        Ok(State {
            model,
            optim,
            scheduler,
            stats: RunStats::new(self.task.kind(), self.task.classes()),
            global_step: 0,
            epoch: 0,
            val_predictions: Vec::new(),
            previews: Vec::new(),
        })
    }

    /// The run in the checkpoint, which must be this run's (apart from its epochs).
    fn resume(
        &self,
        optim: burn::optim::ModuleOptimizer,
        mut scheduler: burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler,
    ) -> Result<State<T::Model>, TrainError> {
        let path = &self.checkpoint_path;
        let checkpoint = Checkpoint::read(path)?;
        if without_resumable(&checkpoint.meta.run) != without_resumable(&self.config.run) {
            return Err(TrainError::Checkpoint(format!(
                "{} was written by a different run (model, data, loss or optimizer differ); \
                 start a new run with --force or another --out",
                path.display()
            )));
        }
        let mut model = self.task.init_model(&self.autodiff);
        load_weights(&mut model, &checkpoint.model, &path.display().to_string())?;
        let optim = optim
            .from_bytes(Bytes::from_bytes_vec(checkpoint.optimizer))
            .map_err(|error| {
                TrainError::Checkpoint(format!(
                    "cannot load the optimizer state from {} (it does not fit this optimizer): {}",
                    path.display(),
                    shorten(&one_line(error.to_string()), 120)
                ))
            })?;
        for _ in 0..checkpoint.meta.global_step {
            scheduler.step();
        }
        Ok(State {
            model,
            optim,
            scheduler,
            stats: checkpoint.meta.stats,
            global_step: checkpoint.meta.global_step,
            epoch: checkpoint.meta.epoch,
            val_predictions: Vec::new(),
            previews: Vec::new(),
        })
    }

    /// The optimizer steps of `epoch`, in the seed's order for that epoch.
    fn train_epoch(
        &self,
        mut state: State<T::Model>,
        epoch: usize,
        lr: f64,
        display: &mut Display,
        events: &mut EventLog,
    ) -> Result<(State<T::Model>, Trained), Stop> {
        let config = self.config;
        // Only for layers that draw in their forward pass (dropout): burn gives them nothing but
        // the device's process-wide generator. Weights, data and orders never draw from it.
        self.autodiff.seed(config.seed.wrapping_add(epoch as u64));
        let order = epoch_order(config.seed, epoch, self.train_len);
        let mut trained = Trained {
            weighted: 0.0,
            seen: 0,
            term_sums: Vec::new(),
            tally: tally_of(self.task),
            lr,
        };
        let batches: Vec<&[usize]> = order
            .chunks(config.batch_size)
            .take(self.steps_per_epoch)
            .collect();
        for (step, batch) in batches.iter().copied().enumerate() {
            if let Some(next) = batches.get(step + 1) {
                self.task.prefetch(Split::Train, next);
            }
            if stop_requested(config) {
                return Err(Stop::Interrupted { step: step + 1 });
            }
            let progress = TrainingProgress { epoch, step };
            let StepResult {
                grads,
                value,
                terms,
                tally,
            } = match self.workers {
                Some(workers) => workers.step(&state.model, batch, progress, &self.autodiff)?,
                None => shard_step(
                    self.task,
                    self.loss,
                    &state.model,
                    batch,
                    progress,
                    &self.autodiff,
                    1.0,
                )?,
            };
            trained.tally.merge(&tally);
            if !value.is_finite() {
                return Err(Stop::NonFinite {
                    value,
                    step: step + 1,
                });
            }
            add_terms(&mut trained.term_sums, &terms, batch.len() as f64);
            let rates = state.scheduler.step();
            trained.lr = rates.base();
            state.model = state.optim.step(rates, state.model, grads);
            state.global_step += 1;
            record(
                events,
                &mut state.stats,
                RunEvent::Step(StepEvent {
                    epoch,
                    step: step + 1,
                    global_step: state.global_step,
                    loss: value,
                    lr: trained.lr,
                    terms,
                }),
            );
            trained.weighted += value * batch.len() as f64;
            trained.seen += batch.len();
            display.step(|| self.progress_text(epoch, step + 1, value, &trained, &state.stats));
        }
        Ok((state, trained))
    }

    /// The live progress line.
    fn progress_text(
        &self,
        epoch: usize,
        step: usize,
        loss: f64,
        trained: &Trained,
        stats: &RunStats,
    ) -> String {
        let seen = trained.seen.max(1) as f64;
        let mut text = format!(
            "epoch {epoch}/{} step {step}/{}  loss {loss:.4}  epoch mean {:.4}",
            self.config.epochs,
            self.steps_per_epoch,
            trained.weighted / seen
        );
        for (name, sum) in &trained.term_sums {
            text.push_str(&format!("  {name} {:.4}", sum / seen));
        }
        if !stats.epochs.is_empty() {
            text.push_str(&format!(
                "  all-epochs mean {:.4}",
                stats.avg_loss_all_epochs()
            ));
        }
        text.push_str(&format!("  lr {:.2e}", trained.lr));
        text
    }

    /// The end of an epoch: the validation pass and the epoch's statistics. A non-finite mean
    /// (an overflowing sum) or validation loss stops the run before the checkpoint is written,
    /// so the last good one is kept.
    fn validate(
        &self,
        model: &T::Model,
        trained: Trained,
        epoch: usize,
        started: Instant,
    ) -> Result<(EpochStats, Vec<(f64, f64)>, Vec<Preview>), Stop> {
        let valid = model.valid();
        // Validation reads the loss as the epoch's last step left it.
        let progress = TrainingProgress {
            epoch,
            step: self.steps_per_epoch,
        };
        let validation = evaluate_split(
            self.task,
            &valid,
            self.loss,
            Split::Valid,
            self.config.batch_size,
            progress,
            self.device,
        )?;
        let previews = self.task.previews(&valid, self.device, &validation)?;
        let SplitEvaluation {
            loss: val_loss,
            terms: val_terms,
            metrics: val_metrics,
            predictions,
            ..
        } = validation;
        let seen = trained.seen.max(1) as f64;
        let train_loss = trained.weighted / seen;
        for value in [train_loss, val_loss] {
            if !value.is_finite() {
                return Err(Stop::NonFinite {
                    value,
                    step: self.steps_per_epoch,
                });
            }
        }
        let stats = EpochStats {
            epoch,
            // The epoch's step events carry them (see `record`).
            step_losses: Vec::new(),
            train_loss,
            train_terms: trained
                .term_sums
                .into_iter()
                .map(|(n, s)| (n, s / seen))
                .collect(),
            train_metrics: trained.tally.metrics(self.task.kind()),
            val_loss,
            val_terms,
            val_metrics,
            lr: trained.lr,
            seconds: started.elapsed().as_secs_f64(),
        };
        Ok((stats, predictions, previews))
    }

    /// The checkpoint (also as the best one when `best`) and the reports, each written
    /// atomically.
    fn save(&self, state: &State<T::Model>, best: bool) -> Result<(), TrainError> {
        let checkpoint = checkpoint_of(
            &state.model,
            &state.optim,
            state.epoch,
            state.global_step,
            self.config,
            &state.stats,
        )?;
        let bytes = checkpoint.encode()?;
        write_atomically(&self.checkpoint_path, &bytes)?;
        if best {
            write_atomically(&self.config.out_dir.join(BEST_FILE), &bytes)?;
        }
        for (name, contents) in &self.config.files {
            write_atomically(&self.config.out_dir.join(name), contents.as_bytes())?;
        }
        write_reports(
            &self.config.out_dir,
            &state.stats,
            &self.config.run,
            &self.config.title,
            &state.val_predictions,
            &state.previews,
        )?;
        if !state.val_predictions.is_empty() {
            write_predictions(
                &self.config.out_dir,
                &state.val_predictions,
                &self.config.title,
                state.epoch,
            )?;
        }
        Ok(())
    }
}

fn checkpoint_of<M: Module>(
    model: &M,
    optim: &burn::optim::ModuleOptimizer,
    epoch: usize,
    global_step: usize,
    config: &TrainConfig,
    stats: &RunStats,
) -> Result<Checkpoint, TrainError> {
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
    Ok(Checkpoint {
        meta: CheckpointMeta {
            epoch,
            global_step,
            run: config.run.clone(),
            stats: stats.clone(),
        },
        model: model_bytes.to_vec(),
        optimizer: optimizer_bytes.to_vec(),
    })
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
