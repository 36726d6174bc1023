//! The command-line arguments of `train`, `compare` and `evaluate` (kept here so `main.rs`
//! only lists the commands).

use std::path::PathBuf;

use anyhow::{Result, bail};
use losskit_optim::{Progress, TaskKind};

use losskit_examples::{
    data::{MaskMode, Normalization},
    run::{SegmentationRequest, TrainRequest, default_optimizer},
};

use crate::commands::{compare, evaluate, train};

/// `--task`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskArg {
    /// The CNN on blood-cell images (or `--data`: an image folder or idx files).
    Classification,
    /// The U-Net on cell images with masks (or `--data`: images/ and masks/ folders).
    Segmentation,
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
    /// classification (default) or segmentation.
    #[arg(long, value_enum)]
    pub task: Option<TaskArg>,
    /// Data folder: `<class>/*.png|jpg`, MNIST-format idx files, or `images/` + `masks/`
    /// (default: generated blood-cell images).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The optimizer: a name (sgd, adam, adamw, rmsprop, adagrad) or a JSON object such as
    /// {"name": "sgd", "lr": 0.05, "momentum": 0.9} (default: adam; lr 0.003 for segmentation).
    #[arg(long)]
    pub optimizer: Option<String>,
    /// The learning-rate schedule: constant, step, exponential, cosine, warmup, or a JSON object
    /// such as {"name": "cosine", "warmup_steps": 50} (default: constant; cosine for
    /// segmentation).
    #[arg(long)]
    pub schedule: Option<String>,
    /// Epochs (default: 6 for classification, 12 for segmentation).
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
    /// The model's base width (channels of its first block).
    #[arg(long)]
    pub width: Option<usize>,
    /// Stop each epoch after this many steps (quick checks).
    #[arg(long)]
    pub max_steps: Option<usize>,
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
    /// Augmentation of training patches: flips, 90° turns, small rotations and zooms,
    /// brightness, contrast, noise (default: on for folders, off for generated data).
    #[arg(long, value_parser = parse_on_off)]
    pub augment: Option<bool>,
    /// Per-image intensity normalisation of folder images: percentile (1 to 99.8, StarDist's),
    /// percentile:LOW,HIGH, zscore (nnU-Net's), or none (values in [0, 1], minus 0.5).
    #[arg(long, value_parser = parse_normalize)]
    pub normalize: Option<Normalization>,
    /// How mask values are read: classes (class indices, gray levels in order, or colours;
    /// classes.json beside masks/ may name them) or instances (0 background, any other value
    /// foreground, as StarDist and Cellpose masks).
    #[arg(long, value_parser = parse_masks)]
    pub masks: Option<MaskMode>,
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

fn parse_normalize(text: &str) -> Result<Normalization, String> {
    Normalization::parse(text).map_err(|e| e.to_string())
}

fn parse_masks(text: &str) -> Result<MaskMode, String> {
    MaskMode::parse(text).map_err(|e| e.to_string())
}

impl SegmentationArgs {
    fn request(&self) -> SegmentationRequest {
        SegmentationRequest {
            depth: self.depth,
            patch: self.patch,
            steps_per_epoch: self.steps_per_epoch,
            augment: self.augment,
            normalization: self.normalize,
            masks: self.masks,
            no_pad: self.no_pad,
            foreground: self.foreground,
            overlap: self.overlap,
        }
    }
}

impl RunArgs {
    fn request(&self, loss: String, default_out: &str) -> TrainRequest {
        let task = match self.task.unwrap_or(TaskArg::Classification) {
            TaskArg::Classification => TaskKind::Classification,
            TaskArg::Segmentation => TaskKind::Segmentation,
        };
        let out = self
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{default_out}{}", task.as_str())));
        let mut request = TrainRequest::new(task, out);
        request.data = self.data.clone();
        if !loss.is_empty() {
            request.loss = loss;
        }
        let (optimizer, schedule) = default_optimizer(task);
        request.optimizer = self
            .optimizer
            .clone()
            .unwrap_or_else(|| optimizer.to_string());
        request.schedule = self
            .schedule
            .clone()
            .or_else(|| schedule.map(str::to_string));
        request.epochs = self.epochs;
        request.batch_size = self.batch_size;
        request.device = self.device.clone();
        request.devices = self.devices.clone();
        request.seed = self.seed.unwrap_or(request.seed);
        request.imbalance = self.imbalance.unwrap_or(request.imbalance);
        request.limit = self.limit;
        request.width = self.width;
        request.max_steps = self.max_steps;
        request.force = self.force;
        request.segmentation = self.segmentation.request();
        request.progress = match self.progress {
            ProgressArg::Auto => Progress::Auto,
            ProgressArg::Lines => Progress::Lines,
            ProgressArg::Quiet => Progress::Quiet,
        };
        request
    }
}

/// `losskit train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// The loss: a name, a JSON object, or a .json/.toml file (default: cross_entropy for
    /// classification, dice_ce for segmentation).
    #[arg(long)]
    pub loss: Option<String>,
    /// Continue the run in --out from its last checkpoint (its settings are kept; --epochs may
    /// extend it, and the options that define the run, such as --loss or --optimizer, are
    /// refused).
    #[arg(long)]
    pub resume: bool,
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
        if self.resume {
            let run = &self.run;
            let given = [
                ("--loss", self.loss.is_some()),
                ("--optimizer", run.optimizer.is_some()),
                ("--schedule", run.schedule.is_some()),
                ("--batch-size", run.batch_size.is_some()),
                ("--seed", run.seed.is_some()),
                ("--task", run.task.is_some()),
                ("--width", run.width.is_some()),
                ("--data", run.data.is_some()),
                ("--imbalance", run.imbalance.is_some()),
                ("--limit", run.limit.is_some()),
                ("--max-steps", run.max_steps.is_some()),
            ];
            let segmentation = run.segmentation.request();
            let fixed = given
                .iter()
                .filter(|(_, given)| *given)
                .map(|(flag, _)| *flag)
                .chain(segmentation.given())
                .next();
            if let Some(flag) = fixed {
                bail!(
                    "--resume: {flag} is fixed by the run being resumed; drop it or start a new run with --force"
                );
            }
        }
        let mut request = self.run.request(String::new(), "runs/");
        if let Some(loss) = &self.loss {
            request.loss = loss.clone();
        }
        request.resume = self.resume;
        train::run(&request)
    }
}

impl CompareArgs {
    /// Runs `compare`.
    pub fn run(&self) -> Result<String> {
        let mut request = self.run.request(String::new(), "runs/compare-");
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
