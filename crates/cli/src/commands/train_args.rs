//! The command-line arguments of `train`, `compare` and `evaluate` (kept here so `main.rs`
//! only lists the commands).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use losskit_optim::{Progress, TaskKind};

use losskit_examples::{
    data::{MaskMode, Missing, Normalization},
    run::{RunSpec, SegmentationRequest, TrainRequest},
    run_config::{PatchSize, RunConfig},
};
use losskit_optim::{OptimizerConfig, ScheduleConfig};

use crate::commands::{compare, dashboard::Dashboard, evaluate, train};

/// `--missing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MissingArg {
    /// Refuse the table, naming the first missing cell.
    Error,
    /// Leave out the rows with a missing value.
    Drop,
}

/// `--task`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskArg {
    /// The CNN on blood-cell images (or `--data`: an image folder or idx files).
    Classification,
    /// The U-Net on cell images with masks (or `--data`: images/ and masks/ folders).
    Segmentation,
    /// A real value per sample: the CNN counting cells in generated fields, or `--data` a
    /// table with `--target COLUMN` (numeric features for an MLP, or a `file` column naming
    /// images for the CNN).
    Regression,
    /// Any number of labels per image: the CNN on generated fields labelled with the cell
    /// types they show, or `--data` a label table (`file` and `labels` columns).
    Multilabel,
}

impl From<TaskArg> for TaskKind {
    fn from(task: TaskArg) -> Self {
        match task {
            TaskArg::Classification => TaskKind::Classification,
            TaskArg::Segmentation => TaskKind::Segmentation,
            TaskArg::Regression => TaskKind::Regression,
            TaskArg::Multilabel => TaskKind::MultiLabel,
        }
    }
}

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressArg {
    /// A live line on a terminal, one line per epoch otherwise.
    Auto,
    /// One line per epoch.
    Lines,
    /// Nothing on stderr.
    Quiet,
}

/// Options shared by `train` and `compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// classification (default), segmentation, regression or multilabel.
    #[arg(long, value_enum)]
    pub task: Option<TaskArg>,
    /// The data: a folder of `<class>/*.png|jpg`, MNIST-format idx files, or `images/` +
    /// `masks/` (segmentation); a CSV table (regression, with --target; multilabel: `file`
    /// and `labels` columns, or a folder holding labels.csv) (default: generated cell images).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The table column a regression run predicts (with --data TABLE.csv).
    #[arg(long)]
    pub target: Option<String>,
    /// Table columns that are not features, comma-separated (identifiers, text, other
    /// targets); regression on a --data table.
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Rows of a regression table with a missing value (empty, NA, NaN, null, …) in a column
    /// the run uses: error (default; names the first) or drop (train on the other rows).
    #[arg(long, value_enum)]
    pub missing: Option<MissingArg>,
    /// The optimizer: a name (sgd, adam, adamw, rmsprop, adagrad) or a JSON object such as
    /// {"name": "sgd", "lr": 0.05, "momentum": 0.9} (default: adam; lr 0.003 for segmentation).
    #[arg(long)]
    pub optimizer: Option<String>,
    /// The learning-rate schedule: constant, step, exponential, cosine, warmup, or a JSON object
    /// such as {"name": "cosine", "warmup_steps": 50} (default: constant; cosine for
    /// segmentation and for regression on images).
    #[arg(long)]
    pub schedule: Option<String>,
    /// Epochs (default: 6 for classification, at least 300 steps on image folders; 12 for
    /// segmentation, 8 on mask folders; 10 for regression, at least 360 steps on tables; 15
    /// for multilabel).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Samples per step (default: 32 for classification; 16 for segmentation on generated
    /// data, 8 patches on folders).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Device: cpu (default), flex, ndarray, wgpu.
    #[arg(long)]
    pub device: Option<String>,
    /// Data-parallel training over these devices, comma-separated (e.g. cpu,cpu or
    /// wgpu:discrete:0,wgpu:discrete:1): each step's batch is split across them.
    #[arg(long, value_delimiter = ',', conflicts_with = "device")]
    pub devices: Vec<String>,
    /// Output folder (default: runs/<task>, or runs/compare-<task> for compare).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of weights, shuffling and generated data (default: 42).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Class imbalance of the generated classification data: the most frequent class has this
    /// many times the images of the rarest (eosinophil) (default: 1, balanced).
    #[arg(long)]
    pub imbalance: Option<f64>,
    /// Use at most this many training samples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// The classifier's input side for image folders: each image's central square (its
    /// shorter side) is resized to SIZE x SIZE (default: the median shorter side, in 8..=128).
    #[arg(long)]
    pub size: Option<usize>,
    /// Augmentation: for segmentation, flips, 90° turns, small rotations and zooms,
    /// brightness, contrast and noise of each patch; for classification, random crops (after
    /// padding by an eighth) and horizontal flips (default: on for folders, off for idx files
    /// and generated data).
    #[arg(long, value_parser = parse_on_off)]
    pub augment: Option<bool>,
    /// The model's base width (channels of its first block).
    #[arg(long)]
    pub width: Option<usize>,
    /// Stop each epoch after this many steps (quick checks).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// The metric that decides the best epoch (kept as best.lkc) and early stopping:
    /// val_loss (default), val_accuracy, train_loss, train_accuracy; val_dice, val_iou for
    /// segmentation; val_mae, val_rmse, val_r2 for regression; val_f1, val_map for multilabel.
    #[arg(long)]
    pub monitor: Option<String>,
    /// Stop when the monitored metric has not improved for this many epochs.
    #[arg(long)]
    pub patience: Option<usize>,
    /// Start from another run's weights (a run folder: its last checkpoint; or a checkpoint
    /// file such as RUN/best.lkc) with this run's loss, optimizer and schedule; the model's
    /// shape must match (width and depth default to that run's).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Replace an earlier run in the output folder (its files stay until the new run has saved
    /// its first epoch).
    #[arg(long)]
    pub force: bool,
    /// How progress is shown on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressArg,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub segmentation: SegmentationArgs,
}

/// Options of `--task segmentation`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Segmentation")]
pub struct SegmentationArgs {
    /// The U-Net's depth: down-sampling steps, each halving the resolution and doubling the
    /// channels (default: 3 for folders, 2 for the generated data).
    #[arg(long)]
    pub depth: Option<usize>,
    /// Training patch size, N or HxW, multiples of 2^depth (default: the smallest image side,
    /// at most 128, rounded down to such a multiple; the whole 48x48 image for generated data).
    #[arg(long, value_parser = parse_patch)]
    pub patch: Option<[usize; 2]>,
    /// Optimizer steps per epoch, each on --batch-size random patches (default: 40 for
    /// folders; one pass over the images for generated data).
    #[arg(long)]
    pub steps_per_epoch: Option<usize>,
    /// Per-image intensity normalisation of folder images: percentile (1 to 99.8, StarDist's),
    /// percentile:LOW,HIGH, zscore (nnU-Net's), or none (values in [0, 1], minus 0.5).
    #[arg(long, value_parser = parse_normalize)]
    pub normalize: Option<String>,
    /// How mask values are read: classes (class indices, gray levels in order, or colours;
    /// classes.json beside masks/ may name them) or instances (0 background, any other value
    /// foreground, as StarDist and Cellpose masks).
    #[arg(long, value_parser = parse_masks)]
    pub masks: Option<String>,
    /// Refuse images smaller than a patch instead of padding them.
    #[arg(long)]
    pub no_pad: bool,
    /// The fraction of training patches centred near a foreground pixel (default: 0.33, as
    /// nnU-Net).
    #[arg(long)]
    pub foreground: Option<f64>,
    /// How much neighbouring validation windows overlap, in [0, 0.95) (default: 0.5).
    #[arg(long)]
    pub overlap: Option<f64>,
}

fn parse_patch(text: &str) -> Result<[usize; 2], String> {
    let sides: Vec<&str> = text.split(['x', 'X']).collect();
    let number = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{text}`: expected N or HxW, e.g. 128 or 96x128"))
    };
    match sides[..] {
        [side] => Ok([number(side)?; 2]),
        [h, w] => Ok([number(h)?, number(w)?]),
        _ => Err(format!("`{text}`: expected N or HxW, e.g. 128 or 96x128")),
    }
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("`{text}`: expected on or off")),
    }
}

fn parse_normalize(text: &str) -> Result<String, String> {
    Normalization::parse(text)
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

fn parse_masks(text: &str) -> Result<String, String> {
    MaskMode::parse(text)
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

impl SegmentationArgs {
    fn request(&self) -> SegmentationRequest {
        SegmentationRequest {
            depth: self.depth,
            patch: self.patch,
            steps_per_epoch: self.steps_per_epoch,
            normalization: self
                .normalize
                .as_deref()
                .and_then(|n| Normalization::parse(n).ok()),
            masks: self.masks.as_deref().and_then(|m| MaskMode::parse(m).ok()),
            no_pad: self.no_pad,
            foreground: self.foreground,
            overlap: self.overlap,
        }
    }
}

impl RunArgs {
    /// What the flags say, as a run config (`None` where a flag is not given).
    fn config(&self, loss: Option<&str>) -> RunConfig {
        let seg = &self.segmentation;
        RunConfig {
            task: self.task.map(TaskKind::from),
            data: self.data.clone(),
            loss: loss.map(|l| l.into()),
            optimizer: self.optimizer.clone().map(Into::into),
            schedule: self.schedule.clone().map(Into::into),
            epochs: self.epochs,
            batch_size: self.batch_size,
            seed: self.seed,
            device: self.device.clone(),
            devices: (!self.devices.is_empty()).then(|| self.devices.clone()),
            imbalance: self.imbalance,
            limit: self.limit,
            width: self.width,
            max_steps: self.max_steps,
            monitor: self.monitor.clone(),
            patience: self.patience,
            init_from: self.init_from.clone(),
            size: self.size,
            depth: seg.depth,
            patch: seg.patch.map(PatchSize::Sides),
            steps_per_epoch: seg.steps_per_epoch,
            augment: self.augment,
            normalize: seg.normalize.clone(),
            masks: seg.masks.clone(),
            pad: seg.no_pad.then_some(false),
            foreground: seg.foreground,
            overlap: seg.overlap,
            target: self.target.clone(),
            exclude: (!self.exclude.is_empty()).then(|| self.exclude.clone()),
            missing: self.missing.map(|m| match m {
                MissingArg::Error => Missing::Error,
                MissingArg::Drop => Missing::Drop,
            }),
        }
    }

    /// The request of `config` (the flags, over a config file's settings), with the options
    /// that are not settings (output folder, --force, --progress) from the flags.
    fn request_from(&self, config: &RunConfig, default_out: &str) -> Result<TrainRequest> {
        let task = config.task.unwrap_or(TaskKind::Classification);
        let out = self
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{default_out}{}", task.as_str())));
        let mut request = config.request(out)?;
        request.force = self.force;
        request.progress = match self.progress {
            ProgressArg::Auto => Progress::Auto,
            ProgressArg::Lines => Progress::Lines,
            ProgressArg::Quiet => Progress::Quiet,
        };
        Ok(request)
    }
}

/// `losskit train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// The loss: a name, a JSON object, or a .json/.toml file (default: cross_entropy for
    /// classification, dice_ce for segmentation).
    #[arg(long)]
    pub loss: Option<String>,
    /// A run config file (TOML): train's flags in snake_case, e.g. `epochs = 20`, `loss =
    /// {name = "focal", gamma = 2}`; flags given here override it. Each run folder keeps its
    /// resolved config.toml, which trains the same run again.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint (its settings are kept; --epochs may
    /// extend it and --patience / --monitor change when it stops; an option that would change
    /// the run, such as another --loss, is refused: use --init-from for that).
    #[arg(long)]
    pub resume: bool,
    /// Serve the live dashboard of the runs beside --out while training, on 127.0.0.1:PORT
    /// (default 8050; 0: any free port). It stops when training ends; `losskit dashboard
    /// FOLDER` serves it afterwards.
    #[arg(long, value_name = "PORT", num_args = 0..=1, require_equals = true, default_missing_value = "8050")]
    pub dashboard: Option<u16>,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub run: RunArgs,
}

/// `losskit compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// A loss to compare (repeat: --loss A --loss B ...).
    #[arg(long = "loss", required = true)]
    pub losses: Vec<String>,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub run: RunArgs,
}

/// `losskit evaluate`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvaluateArgs {
    /// A checkpoint file, or the run folder holding checkpoint.lkc.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Other data of the same kind and classes, scored whole (default: the run's validation data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Device: cpu (default), flex, ndarray, wgpu.
    #[arg(long)]
    pub device: Option<String>,
}

impl TrainArgs {
    /// Runs `train`.
    pub fn run(&self) -> Result<String> {
        let flags = self.run.config(self.loss.as_deref());
        let config = match &self.config {
            Some(_) if self.resume => bail!(
                "--config describes a new run; --resume takes the run's settings from its checkpoint"
            ),
            Some(path) => RunConfig::read(path)?.overridden_by(flags),
            None => flags,
        };
        let mut request = self.run.request_from(&config, "runs/")?;
        if self.resume {
            self.check_resume(&request.out)?;
        }
        request.resume = self.resume;
        if let Some(port) = self.dashboard {
            let runs = match request.out.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => PathBuf::from("."),
            };
            std::fs::create_dir_all(&runs)
                .with_context(|| format!("cannot create {}", runs.display()))?;
            let dashboard = Dashboard::bind(&runs, "127.0.0.1", port)?;
            let id = request
                .out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            tracing::info!(
                target: "losskit::dashboard",
                "dashboard on {}#run={id} (it stops when training ends; `losskit dashboard {}` serves it afterwards)",
                dashboard.url(),
                runs.display()
            );
            dashboard.serve_in_background();
            let report = train::run(&request);
            // Open pages get the run's last events before the server goes with the process.
            std::thread::sleep(crate::commands::dashboard::LINGER);
            return report;
        }
        train::run(&request)
    }
}

impl TrainArgs {
    /// `--resume` keeps the run's settings: a flag that would change one is refused, naming
    /// it and what the run has, with the way to change it (a warm start). A flag equal to the
    /// run's setting is accepted.
    fn check_resume(&self, out: &Path) -> Result<()> {
        let run = &self.run;
        let Ok(checkpoint) =
            losskit_optim::Checkpoint::read(&out.join(losskit_optim::CHECKPOINT_FILE))
        else {
            // prepare() reports the missing or damaged checkpoint.
            return Ok(());
        };
        let Ok(spec) = serde_json::from_value::<RunSpec>(checkpoint.meta.run.clone()) else {
            return Ok(());
        };
        let same_loss = |given: &str| {
            losskit_core::spec::parse_spec(given)
                .is_ok_and(|m| serde_json::Value::Object(m) == spec.loss)
        };
        // (flag, given, equal to the run's setting, the run's setting in words)
        let checks: Vec<(&str, bool, bool, String)> = vec![
            (
                "--loss",
                self.loss.is_some(),
                self.loss.as_deref().is_some_and(same_loss),
                spec.loss.to_string(),
            ),
            (
                "--optimizer",
                run.optimizer.is_some(),
                run.optimizer
                    .as_deref()
                    .is_some_and(|o| OptimizerConfig::parse(o).is_ok_and(|o| o == spec.optimizer)),
                spec.optimizer.to_value().to_string(),
            ),
            (
                "--schedule",
                run.schedule.is_some(),
                run.schedule
                    .as_deref()
                    .is_some_and(|o| ScheduleConfig::parse(o).is_ok_and(|o| o == spec.schedule)),
                format!("{:?}", spec.schedule),
            ),
            (
                "--batch-size",
                run.batch_size.is_some(),
                run.batch_size == Some(spec.batch_size),
                spec.batch_size.to_string(),
            ),
            (
                "--seed",
                run.seed.is_some(),
                run.seed == Some(spec.seed),
                spec.seed.to_string(),
            ),
            (
                "--width",
                run.width.is_some(),
                run.width == Some(spec.width),
                spec.width.to_string(),
            ),
            (
                "--task",
                run.task.is_some(),
                run.task.map(TaskKind::from) == Some(spec.task),
                spec.task.as_str().to_string(),
            ),
            (
                "--max-steps",
                run.max_steps.is_some(),
                run.max_steps.is_some() && run.max_steps == spec.max_steps,
                format!("{:?}", spec.max_steps),
            ),
            ("--data", run.data.is_some(), false, String::new()),
            ("--imbalance", run.imbalance.is_some(), false, String::new()),
            ("--size", run.size.is_some(), false, String::new()),
            ("--augment", run.augment.is_some(), false, String::new()),
            ("--limit", run.limit.is_some(), false, String::new()),
        ];
        let segmentation = run.segmentation.request();
        let differs = checks
            .into_iter()
            .filter(|(_, given, same, _)| *given && !*same)
            .map(|(flag, _, _, setting)| (flag, setting))
            .chain(
                segmentation
                    .given()
                    .into_iter()
                    .map(|flag| (flag, String::new())),
            )
            .next();
        if let Some((flag, setting)) = differs {
            let has = if setting.is_empty() {
                String::new()
            } else {
                format!(" (the run has {setting})")
            };
            bail!(
                "--resume: {flag} differs from the run being resumed{has}, whose settings are kept (only --epochs, --patience and --monitor may change); to go on from its weights with new settings, start a new run: --init-from {} --out NEW_FOLDER",
                out.display()
            );
        }
        Ok(())
    }
}

impl CompareArgs {
    /// Runs `compare`.
    pub fn run(&self) -> Result<String> {
        let mut request = self
            .run
            .request_from(&self.run.config(None), "runs/compare-")?;
        request.force = true;
        if request.progress == Progress::Auto {
            request.progress = Progress::Lines;
        }
        compare::run(&request, &self.losses)
    }
}

impl EvaluateArgs {
    /// Runs `evaluate`.
    pub fn run(&self) -> Result<String> {
        evaluate::run(
            &self.checkpoint,
            self.data.as_deref(),
            self.device.as_deref(),
        )
    }
}
