//! The object-safe loss trait.

use std::fmt;

use burn::tensor::Tensor;

use crate::{
    error::Error,
    input::{LossInput, Reduction},
};

/// A loss function: any device, any supported input shape, built from a config.
///
/// Implementations compute with burn tensor operations only, so the same code runs on every
/// backend and autodiff records the gradient.
pub trait Loss: Send + Sync + fmt::Debug {
    /// The loss of `input`, reduced as asked. `Mean` and `Sum` give shape `[1]`, `None` gives
    /// `[N]`.
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error>;

    /// What this loss (with its options) accepts and promises; used by callers to validate
    /// input and by the conformance kit to generate it.
    fn capabilities(&self) -> Capabilities;

    /// The auxiliary per-sample inputs this loss reads besides the output and target (for
    /// example distance maps). Each one is optional: when [`LossInput::auxiliary`] lacks it,
    /// the loss computes it from the target it is given. A data pipeline that trains on
    /// patches computes it on whole images with [`AuxiliaryInput::compute`] and cuts it with
    /// the patch, so that distances do not stop at the patch's border. None by default.
    fn auxiliary_inputs(&self) -> Vec<AuxiliaryInput> {
        Vec::new()
    }

    /// Whether the loss's value depends on [`LossInput::progress`] (a schedule): then values
    /// of different epochs measure different things, and training picks its best epoch by a
    /// metric rather than by the loss. False by default.
    fn changes_with_progress(&self) -> bool {
        false
    }
}

/// How far training has come, as a loss may read it from [`LossInput::progress`] (schedules).
/// The training loop sets it on every step and validation pass; `losskit compute --epoch`
/// sets it by hand; without it a loss reads [`TrainingProgress::START`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainingProgress {
    /// The epoch under way, counted from 1 as in `metrics.csv`.
    pub epoch: usize,
    /// The optimizer step within the epoch, counted from 0 (validation after an epoch reads
    /// the number of steps the epoch took).
    pub step: usize,
}

impl TrainingProgress {
    /// The first step of the first epoch.
    pub const START: TrainingProgress = TrainingProgress { epoch: 1, step: 0 };
}

/// An auxiliary per-sample input a loss can read: a float map of the output's shape
/// `[N, C, ...]`, one map per sample and class, each made from that class's target mask.
#[derive(Debug, Clone, Copy)]
pub struct AuxiliaryInput {
    /// Its name in [`LossInput::auxiliary`] (and on the command line).
    pub name: &'static str,
    /// What it holds, in one line.
    pub description: &'static str,
    /// The map of one class mask (row-major over `dims`, with `spacing` the size of an
    /// element along each axis), written into an output of the mask's length, as
    /// [`distance`](crate::distance) computes it.
    pub map: crate::distance::MaskMap,
}

/// A loss value, with the values of its terms for composite losses.
#[derive(Debug, Clone)]
pub struct LossValue {
    /// The loss: `[1]` for `mean`/`sum`, `[N]` for `none`.
    pub value: Tensor<1>,
    /// Named parts of a composite loss (already weighted), reduced the same way; a loss whose
    /// weights change during training also reports each term's current weight, as
    /// `<term>_weight` (the weight itself, repeated per sample for `none`).
    pub terms: Vec<(String, Tensor<1>)>,
}

impl LossValue {
    /// A loss value without terms.
    pub fn new(value: Tensor<1>) -> Self {
        Self {
            value,
            terms: Vec::new(),
        }
    }
}

impl From<Tensor<1>> for LossValue {
    fn from(value: Tensor<1>) -> Self {
        Self::new(value)
    }
}

/// A kind of target a loss accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// Class indices `[N, ...]`.
    ClassIndices,
    /// Class probabilities over C (each position sums to 1), dense.
    Probabilities,
    /// Independent binary labels in {0, 1} per channel (multi-label, masks), dense.
    BinaryMask,
    /// Real values, dense (regression).
    Real,
    /// Non-negative real values, dense (counts, rates).
    NonNegative,
}

/// What the output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputDomain {
    /// Unbounded logits.
    Logits,
    /// Probabilities over C, each position sums to 1.
    Probabilities,
    /// Independent probabilities in [0, 1].
    UnitInterval,
    /// Real values (regression).
    Real,
    /// Real values above -1 (e.g. for `log1p`).
    AboveMinusOne,
    /// The log of a rate or scale: real values whose `exp` must stay finite (|x| < 80).
    LogRate,
}

/// The number of values a plain `mean` averages over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MeanCount {
    /// N, one value per sample.
    Samples,
    /// N·S, one value per sample and position (pixel, voxel).
    Positions,
    /// N·C·S, one value per element of the output.
    Elements,
}

impl MeanCount {
    /// The count for an output of `shape` `[N, C, ...]`.
    pub fn of(self, shape: &[usize]) -> usize {
        let positions: usize = shape[2..].iter().product();
        match self {
            MeanCount::Samples => shape[0],
            MeanCount::Positions => shape[0] * positions,
            MeanCount::Elements => shape[0] * shape[1] * positions,
        }
    }
}

/// What a configured loss accepts and promises.
#[derive(Debug, Clone, PartialEq)]
pub struct Capabilities {
    /// Target kinds accepted.
    pub targets: Vec<TargetKind>,
    /// Output ranks accepted (2 = `[N, C]`, 4 = `[N, C, H, W]`, 5 = `[N, C, D, H, W]`).
    pub ranks: Vec<usize>,
    /// The fewest channels C accepted.
    pub min_channels: usize,
    /// The most channels C accepted, if bounded.
    pub max_channels: Option<usize>,
    /// What the output is expected to hold.
    pub output: OutputDomain,
    /// What `mean` divides `sum` by, for losses where each sample's value depends on that
    /// sample alone and the mean is a plain average (`None`: weighted means, ignored
    /// positions, ratio losses such as Dice). Every loss, whatever this says, gives each
    /// sample's share of `sum` under `none`, so that `sum(none) = sum`.
    pub mean_over: Option<MeanCount>,
    /// The loss's value for a perfect prediction, if it has a minimum there.
    pub minimum: Option<f64>,
    /// The class index the loss ignores, if any (the kit puts it into targets).
    pub ignore_index: Option<i64>,
}

impl Capabilities {
    /// Capabilities of a classification loss over logits and class indices, any rank.
    pub fn classification() -> Self {
        Self {
            targets: vec![TargetKind::ClassIndices],
            ranks: vec![2, 3, 4, 5],
            min_channels: 2,
            max_channels: None,
            output: OutputDomain::Logits,
            mean_over: Some(MeanCount::Positions),
            minimum: None,
            ignore_index: None,
        }
    }

    /// Capabilities of a regression loss over real values, any rank.
    pub fn regression() -> Self {
        Self {
            targets: vec![TargetKind::Real],
            ranks: vec![2, 3, 4, 5],
            min_channels: 1,
            max_channels: None,
            output: OutputDomain::Real,
            mean_over: Some(MeanCount::Elements),
            minimum: Some(0.0),
            ignore_index: None,
        }
    }

    /// Capabilities of a segmentation overlap loss (Dice family) over logits.
    pub fn segmentation() -> Self {
        Self {
            targets: vec![TargetKind::ClassIndices, TargetKind::Probabilities],
            ranks: vec![3, 4, 5],
            min_channels: 2,
            max_channels: None,
            output: OutputDomain::Logits,
            mean_over: None,
            minimum: Some(0.0),
            ignore_index: None,
        }
    }

    /// Whether targets of `kind` are accepted.
    pub fn accepts(&self, kind: TargetKind) -> bool {
        self.targets.contains(&kind)
    }
}
