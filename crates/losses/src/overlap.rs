//! What the Dice family (Dice, Jaccard, generalised Dice, Tversky, focal Tversky and the
//! compounds built on Dice) shares: the options (declared once, by [`overlap_config!`]), turning
//! the output into probabilities and the target into masks, the per-class overlap sums every
//! ratio is built from, and one reduction policy.
//!
//! Conventions, the same for every loss of the family:
//! - class indices are one-hot encoded (MONAI's `to_onehot_y`); with a single output channel
//!   they are the binary mask itself (0 background, 1 foreground);
//! - ignored positions (`ignore_index`) are removed from both the prediction and the target
//!   sums; a sample (or, with `batch`, the batch) without any counted position gives 0 with a
//!   zero gradient;
//! - the ratios are smoothed (`smooth_nr`, `smooth_dr > 0`), so empty masks never give 0/0;
//! - `sum` adds every per-(sample, class) value, `mean` averages them, and `none` gives each
//!   sample its share of `sum`: the sum over the counted classes of its values (with `batch`,
//!   where the values belong to the whole batch, every sample gets `sum / N`).

use burn::tensor::{
    Int, Tensor,
    activation::{sigmoid, softmax},
};
use losskit_core::{
    Capabilities, ConfigError, Error, LossInput, OutputDomain, Reduction, Target, TargetKind,
    config::{OptionError, check_weights, ensure},
    empty,
    error::InputError,
    fused,
    targets::{channel_vector, checked_indices, dense_target},
};
use serde::{Deserialize, Serialize};

/// Declares the config of an overlap loss: its own options, then the options every overlap
/// loss shares (`activation`, `include_background`, `smooth_nr`, `smooth_dr`, `batch`,
/// `ignore_index`), and with `+ dice_options` the Dice-style ones too (`squared_pred`,
/// `weights`). The shared options are declared here only, with their docs and defaults; the
/// config gets `overlap_options()`, which reads them as one [`OverlapOptions`].
///
/// ```text
/// overlap_config! {
///     /// Options of [`TverskyLoss`].
///     pub struct TverskyLossConfig {
///         /// Weight of the false positives.
///         #[config(default = 0.5)]
///         pub alpha: f32,
///     }
/// }
/// ```
///
/// (A macro because burn's `Config` derive drops field attributes, so `#[serde(flatten)]` of an
/// options struct is not available; the JSON options stay flat either way.)
macro_rules! overlap_config {
    (@emit $(#[$($attr:tt)*])* $name:ident { $($fields:tt)* } [$($copy:ident),*]) => {
        $(#[$($attr)*])*
        #[derive(burn::config::Config, Debug)]
        pub struct $name {
            $($fields)*
            /// How the output becomes probabilities: `softmax` (exclusive classes), `sigmoid`
            /// (independent masks) or `none` (the output already holds probabilities; not in
            /// the compounds, whose second term needs logits).
            #[config(default = "crate::overlap::Activation::Softmax")]
            pub activation: crate::overlap::Activation,
            /// `false` leaves channel 0 (the background) out of the loss (out of every term of
            /// a compound).
            #[config(default = true)]
            pub include_background: bool,
            /// Added to the numerator of each ratio (>= 0).
            #[config(default = 1e-5)]
            pub smooth_nr: f32,
            /// Added to the denominator of each ratio (> 0, so that empty masks never give 0/0).
            #[config(default = 1e-5)]
            pub smooth_dr: f32,
            /// Sums over the batch before the ratio (one value per class for the whole batch)
            /// instead of per sample.
            #[config(default = false)]
            pub batch: bool,
            /// A target class index whose positions count nowhere (in no term of a compound).
            pub ignore_index: Option<i64>,
            /// Skips each (sample, class) whose class is absent from both the target and the
            /// hard prediction (`losskit_core::empty`, the metrics' rule); the mean is over the
            /// classes that count. In a compound, for the overlap term.
            #[config(default = false)]
            pub ignore_empty: bool,
        }

        impl $name {
            /// The options this loss shares with the other overlap losses.
            pub(crate) fn overlap_options(&self) -> crate::overlap::OverlapOptions {
                #[allow(unused_mut)]
                let mut options = crate::overlap::OverlapOptions {
                    activation: self.activation,
                    include_background: self.include_background,
                    smooth_nr: self.smooth_nr,
                    smooth_dr: self.smooth_dr,
                    batch: self.batch,
                    ignore_index: self.ignore_index,
                    ignore_empty: self.ignore_empty,
                    // Options of the Dice-style configs only (`+ dice_options`).
                    squared_pred: false,
                    weights: None,
                };
                $(options.$copy = self.$copy.clone();)*
                options
            }
        }
    };
    ($(#[$($attr:tt)*])* pub struct $name:ident { $($own:tt)* } + dice_options) => {
        overlap_config! {
            @emit $(#[$($attr)*])* $name {
                $($own)*
                /// Squares the prediction and the target in the denominator.
                #[config(default = false)]
                pub squared_pred: bool,
                /// Per-class weights of the per-class values (of every term of a compound), one
                /// per output channel.
                pub weights: Option<Vec<f32>>,
            } [squared_pred, weights]
        }
    };
    ($(#[$($attr:tt)*])* pub struct $name:ident { $($own:tt)* }) => {
        overlap_config! { @emit $(#[$($attr)*])* $name { $($own)* } [] }
    };
}
pub(crate) use overlap_config;

/// How an overlap loss turns the output into probabilities: its `activation` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `softmax`: softmax over the channels, for mutually exclusive classes.
    Softmax,
    /// `sigmoid`: sigmoid per element, for independent masks (multi-label, binary).
    Sigmoid,
    /// `none`: the output already holds probabilities.
    #[serde(rename = "none")]
    Identity,
}

impl Activation {
    fn apply(self, output: Tensor<3>) -> Tensor<3> {
        match self {
            Self::Softmax => softmax(output, 1),
            Self::Sigmoid => sigmoid(output),
            Self::Identity => output,
        }
    }

    /// What an overlap loss with this activation accepts: segmentation outputs, and
    /// classification outputs `[N, C]`, read as MONAI reads their `[N, C, 1]` view (one
    /// position per sample; `batch: true` pools the classes over the batch).
    pub(crate) fn capabilities(self) -> Capabilities {
        let segmentation = Capabilities {
            ranks: vec![2, 3, 4, 5],
            ..Capabilities::segmentation()
        };
        match self {
            Self::Softmax => segmentation,
            Self::Sigmoid => Capabilities {
                targets: vec![TargetKind::BinaryMask, TargetKind::ClassIndices],
                min_channels: 1,
                ..segmentation
            },
            // Masks first: the kit's one-channel input uses the first kind, and one-channel class
            // indices are read as the mask itself (0 background), not as a one-class one-hot.
            Self::Identity => Capabilities {
                targets: vec![
                    TargetKind::BinaryMask,
                    TargetKind::ClassIndices,
                    TargetKind::Probabilities,
                ],
                min_channels: 1,
                output: OutputDomain::UnitInterval,
                ..segmentation
            },
        }
    }
}

/// Checks the activation of a compound whose second term needs logits: `softmax` or `sigmoid`.
pub(crate) fn logits_activation(activation: Activation) -> Result<(), OptionError> {
    ensure(activation != Activation::Identity, "activation", || {
        "must be \"softmax\" or \"sigmoid\" here: the second term needs logits".into()
    })
}

/// Checks a non-negative, finite coefficient.
pub(crate) fn check_non_negative(option: &str, value: f32) -> Result<(), OptionError> {
    ensure(value.is_finite() && value >= 0.0, option, || {
        format!("must be a finite number >= 0, got {value}")
    })
}

/// The options every overlap loss shares, as its config holds them ([`overlap_config!`]).
#[derive(Debug, Clone)]
pub(crate) struct OverlapOptions {
    pub(crate) activation: Activation,
    pub(crate) include_background: bool,
    pub(crate) smooth_nr: f32,
    pub(crate) smooth_dr: f32,
    pub(crate) squared_pred: bool,
    pub(crate) batch: bool,
    pub(crate) weights: Option<Vec<f32>>,
    pub(crate) ignore_index: Option<i64>,
    pub(crate) ignore_empty: bool,
}

impl OverlapOptions {
    /// Checks the smoothing and the class weights (serde has checked `activation`).
    pub(crate) fn validate(&self) -> Result<(), OptionError> {
        let (smooth_nr, smooth_dr) = (self.smooth_nr, self.smooth_dr);
        check_non_negative("smooth_nr", smooth_nr)?;
        // A zero denominator smoothing would make empty masks 0/0.
        ensure(
            smooth_dr.is_finite() && smooth_dr > 0.0,
            "smooth_dr",
            || {
                format!(
                    "must be a finite number > 0 (it keeps empty masks from giving 0/0), got {smooth_dr}"
                )
            },
        )?;
        if let Some(weights) = &self.weights {
            check_weights("weights", weights)?;
        }
        Ok(())
    }

    /// The checked options of the loss registered as `name` (errors are reported under it).
    pub(crate) fn build(self, name: &'static str) -> Result<Overlap, ConfigError> {
        self.validate()
            .map_err(|error| ConfigError::invalid(name, &error.option, error.problem))?;
        Ok(Overlap {
            name,
            activation: self.activation,
            include_background: self.include_background,
            smooth_nr: f64::from(self.smooth_nr),
            smooth_dr: f64::from(self.smooth_dr),
            squared_pred: self.squared_pred,
            batch: self.batch,
            weights: self.weights,
            ignore_index: self.ignore_index,
            ignore_empty: self.ignore_empty,
        })
    }
}

/// The checked options that decide which probabilities and masks an overlap loss compares,
/// and how its ratios are smoothed.
#[derive(Debug, Clone)]
pub(crate) struct Overlap {
    /// The loss's name, for errors.
    pub(crate) name: &'static str,
    pub(crate) activation: Activation,
    pub(crate) include_background: bool,
    /// Added to the numerator of each ratio.
    pub(crate) smooth_nr: f64,
    /// Added to the denominator of each ratio (> 0).
    pub(crate) smooth_dr: f64,
    pub(crate) squared_pred: bool,
    pub(crate) batch: bool,
    /// Per-class weights of the per-class values, one per output channel.
    pub(crate) weights: Option<Vec<f32>>,
    pub(crate) ignore_index: Option<i64>,
    /// Skip (sample, class) pairs absent from target and hard prediction.
    pub(crate) ignore_empty: bool,
}

/// Per-class sums over the positions, `[B, K]`: B = N, or 1 with `batch`; K = the counted
/// classes.
#[derive(Debug, Clone)]
pub(crate) struct Sums {
    /// `Σ p·t`.
    pub(crate) intersection: Tensor<2>,
    /// `Σ p` (`Σ p²` with `squared_pred`).
    pub(crate) prediction: Tensor<2>,
    /// `Σ t` (`Σ t²` with `squared_pred`).
    pub(crate) truth: Tensor<2>,
    /// `[B, 1]`: 1 where some position counts, 0 where every one is ignored.
    counted: Option<Tensor<2>>,
    /// `[B, K]` with `ignore_empty`: 1 where the class counts, 0 where it is absent from both
    /// the target and the hard prediction.
    pub(crate) present: Option<Tensor<2>>,
    samples: usize,
}

impl Overlap {
    fn unsupported(&self, problem: String) -> Error {
        InputError::Unsupported {
            loss: self.name.into(),
            problem,
        }
        .into()
    }

    /// The dense target `[N, C, S]` and the mask `[N, S]` of counted positions, if some are
    /// ignored.
    pub(crate) fn target(
        &self,
        input: &LossInput,
    ) -> Result<(Tensor<3>, Option<Tensor<2>>), Error> {
        let channels = input.channels();
        match input.target() {
            // One channel: the indices are the binary mask, as MONAI reads a `[N, 1, ...]` label.
            Target::Indices(indices) if channels == 1 => {
                let (indices, valid) = checked_indices(indices, 2, self.ignore_index)?;
                let [n, s] = indices.dims();
                Ok((indices.float().reshape([n, 1, s]), valid))
            }
            target => Ok(dense_target(target, channels, self.ignore_index)?),
        }
    }

    /// The probabilities and the target of the counted classes, `[N, K, S]` each, with ignored
    /// positions zero in both; and the counted-position mask.
    pub(crate) fn probabilities(
        &self,
        input: LossInput,
    ) -> Result<(Tensor<3>, Tensor<3>, Option<Tensor<2>>), Error> {
        if self.activation == Activation::Softmax && input.channels() < 2 {
            return Err(self.unsupported(
                "needs at least 2 channels with softmax; use \"activation\": \"sigmoid\" for a single-channel mask".into(),
            ));
        }
        let (target, valid) = self.target(&input)?;
        let (output, _) = input.into_parts();
        let mut probabilities = self.activation.apply(output);
        if let Some(valid) = &valid {
            probabilities = probabilities * valid.clone().unsqueeze_dim::<3>(1);
        }
        Ok((
            self.counted_classes(probabilities),
            self.counted_classes(target),
            valid,
        ))
    }

    /// Drops the background channel 0 unless it is included (or the only channel, as MONAI
    /// keeps it).
    pub(crate) fn counted_classes(&self, values: Tensor<3>) -> Tensor<3> {
        let channels = values.dims()[1];
        let dropped = self.dropped(channels);
        values.narrow(1, dropped, channels - dropped)
    }

    fn dropped(&self, channels: usize) -> usize {
        usize::from(!self.include_background && channels > 1)
    }

    /// The per-class sums of `input`.
    pub(crate) fn sums(&self, input: LossInput) -> Result<Sums, Error> {
        let predicted = if self.ignore_empty {
            let (_, predicted) = self.class_counts(&input)?;
            Some(self.pool(predicted))
        } else {
            None
        };
        let mut sums = self.plain_sums(input)?;
        sums.present =
            predicted.map(|predicted| empty::counted_classes(sums.truth.clone(), predicted));
        Ok(sums)
    }

    /// Per-sample counts `[N, K]` of the counted classes' positions in the target and in the
    /// hard prediction (the most probable class with softmax, each channel above 1/2
    /// otherwise), ignored positions left out.
    pub(crate) fn class_counts(&self, input: &LossInput) -> Result<(Tensor<2>, Tensor<2>), Error> {
        let (target, valid) = self.target(input)?;
        let threshold = match self.activation {
            Activation::Sigmoid => 0.0,
            _ => 0.5,
        };
        let mut hard = empty::hard_prediction(
            input.output().clone(),
            self.activation == Activation::Softmax,
            threshold,
        );
        if let Some(valid) = valid {
            hard = hard * valid.unsqueeze_dim::<3>(1);
        }
        let count = |values: Tensor<3>| {
            let values = self.counted_classes(values.detach());
            let [n, k, _] = values.dims();
            values.sum_dim(2).reshape([n, k])
        };
        Ok((count(target), count(hard)))
    }

    /// Per-sample values `[N, K]` summed over the batch with `batch`.
    fn pool(&self, values: Tensor<2>) -> Tensor<2> {
        if self.batch {
            values.sum_dim(0)
        } else {
            values
        }
    }

    fn plain_sums(&self, input: LossInput) -> Result<Sums, Error> {
        if let Some(sums) = self.softmax_index_sums(&input)? {
            return Ok(sums);
        }
        let samples = input.batch_size();
        let (probabilities, target, valid) = self.probabilities(input)?;
        let intersection = self.over_positions(probabilities.clone() * target.clone());
        let (prediction, truth) = if self.squared_pred {
            (
                probabilities.clone() * probabilities,
                target.clone() * target,
            )
        } else {
            (probabilities, target)
        };
        let counted = valid.map(|valid| {
            let per_sample = valid.sum_dim(1);
            let any = if self.batch {
                per_sample.sum_dim(0)
            } else {
                per_sample
            };
            any.greater_elem(0.0).float()
        });
        Ok(Sums {
            intersection,
            prediction: self.over_positions(prediction),
            truth: self.over_positions(truth),
            counted,
            present: None,
            samples,
        })
    }

    /// The checked class indices of the case [`Overlap::dice_rows`] computes fused: each
    /// sample has one position (a classifier's `[N, C]`), softmax over class indices, none
    /// ignored, per sample and without `ignore_empty` or `squared_pred`, on the CPU backend;
    /// `None` for every other case.
    fn dice_rows_indices(&self, input: &LossInput) -> Result<Option<Tensor<2, Int>>, Error> {
        let channels = input.channels();
        let Target::Indices(indices) = input.target() else {
            return Ok(None);
        };
        let one_position = input.output().dims()[2] == 1;
        if !one_position
            || self.activation != Activation::Softmax
            || self.squared_pred
            || self.batch
            || self.ignore_empty
            || channels < 2
            || !fused::is_fused(input.output())
        {
            return Ok(None);
        }
        let (indices, valid) = checked_indices(indices, channels, self.ignore_index)?;
        Ok(valid.is_none().then_some(indices))
    }

    /// The Dice (or, with `jaccard`, Jaccard) loss per (sample, class) `[N, K]` of the case
    /// [`Overlap::dice_rows_indices`] describes: with one position each sum is one element, so
    /// the fused kernel computes the ratio in the softmax's pass
    /// ([`fused::softmax_dice_rows`]); `None` for every other case.
    pub(crate) fn dice_rows(
        &self,
        input: &LossInput,
        jaccard: bool,
    ) -> Result<Option<Tensor<2>>, Error> {
        let Some(indices) = self.dice_rows_indices(input)? else {
            return Ok(None);
        };
        let channels = input.channels();
        let values = fused::softmax_dice_rows(
            input.output().clone(),
            indices,
            self.smooth_nr as f32,
            self.smooth_dr as f32,
            jaccard,
        );
        let dropped = self.dropped(channels);
        Ok(Some(if dropped > 0 {
            values.narrow(1, dropped, channels - dropped)
        } else {
            values
        }))
    }

    /// The mean or sum of [`Overlap::dice_rows`] as [`Overlap::reduce_rows`] takes it (class
    /// weights, the mean over samples and kept classes), as one fused operation
    /// ([`fused::softmax_dice_rows_sum`]: on the CPU backend its forward pass also computes
    /// the gradient); `None` for `none` and wherever `dice_rows` is `None`.
    pub(crate) fn dice_rows_reduced(
        &self,
        input: &LossInput,
        jaccard: bool,
        reduction: Reduction,
    ) -> Result<Option<Tensor<1>>, Error> {
        if reduction == Reduction::None {
            return Ok(None);
        }
        let Some(indices) = self.dice_rows_indices(input)? else {
            return Ok(None);
        };
        let channels = input.channels();
        let (dropped, kept) = (self.dropped(channels), channels - self.dropped(channels));
        let weights = match self.class_weights(channels, &input.device())? {
            Some(weights) => losskit_core::input::to_f64_vec(weights),
            None => vec![1.0; kept],
        };
        let scale = match reduction {
            Reduction::Mean => 1.0 / (input.batch_size() * kept) as f64,
            _ => 1.0,
        };
        let class_scale: Vec<f32> = std::iter::repeat_n(0.0, dropped)
            .chain(weights.iter().map(|w| (w * scale) as f32))
            .collect();
        Ok(Some(fused::softmax_dice_rows_sum(
            input.output().clone(),
            indices,
            self.smooth_nr as f32,
            self.smooth_dr as f32,
            jaccard,
            &class_scale,
        )))
    }

    /// The sums of the common case, softmax over class indices with none ignored, in one fused
    /// pass each way ([`fused::softmax_overlap_sums`]); `None` for every other case.
    fn softmax_index_sums(&self, input: &LossInput) -> Result<Option<Sums>, Error> {
        let channels = input.channels();
        let Target::Indices(indices) = input.target() else {
            return Ok(None);
        };
        if self.activation != Activation::Softmax || self.squared_pred || channels < 2 {
            return Ok(None);
        }
        let (indices, valid) = checked_indices(indices, channels, self.ignore_index)?;
        if valid.is_some() {
            return Ok(None);
        }
        let dropped = self.dropped(channels);
        let kept = channels - dropped;
        let (intersection, prediction, truth) =
            fused::softmax_overlap_sums(input.output().clone(), indices);
        let counted = |sums: Tensor<2>| {
            // Narrowing only when it drops a class: a slice's gradient is a zero-padded copy.
            let sums = if dropped > 0 {
                sums.narrow(1, dropped, kept)
            } else {
                sums
            };
            if self.batch { sums.sum_dim(0) } else { sums }
        };
        Ok(Some(Sums {
            intersection: counted(intersection),
            prediction: counted(prediction),
            truth: counted(truth),
            counted: None,
            present: None,
            samples: input.batch_size(),
        }))
    }

    /// Sums `[N, K, S]` over the positions (and the batch with `batch`): `[B, K]`.
    fn over_positions(&self, values: Tensor<3>) -> Tensor<2> {
        let [n, k, s] = values.dims();
        if self.batch {
            values
                .swap_dims(0, 1)
                .reshape([k, n * s])
                .sum_dim(1)
                .reshape([1, k])
        } else {
            values.sum_dim(2).reshape([n, k])
        }
    }

    /// The per-class weights of the counted classes, `[1, K]`.
    pub(crate) fn class_weights(
        &self,
        channels: usize,
        device: &burn::tensor::Device,
    ) -> Result<Option<Tensor<2>>, Error> {
        let Some(weights) = &self.weights else {
            return Ok(None);
        };
        let tensor = channel_vector(self.name, "weights", weights, channels, device)?;
        Ok(Some(
            self.counted_classes(tensor)
                .reshape([1, channels - self.dropped(channels)]),
        ))
    }

    /// What the loss accepts: the activation's capabilities, the ignored index, and exactly
    /// as many channels as there are class weights when they are given.
    pub(crate) fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.activation.capabilities();
        capabilities.ignore_index = self.ignore_index;
        if let Some(weights) = &self.weights {
            capabilities.min_channels = weights.len();
            capabilities.max_channels = Some(weights.len());
        }
        capabilities
    }

    /// Weighs per-class values `[B, K]` by the class weights, zeroes samples without a counted
    /// position, and reduces: `mean` averages every value, `sum` adds them, `none` gives each
    /// sample's sum over the classes (with `batch`, `sum / N` for every sample).
    pub(crate) fn reduce(
        &self,
        mut values: Tensor<2>,
        sums: &Sums,
        channels: usize,
        reduction: Reduction,
    ) -> Result<Tensor<1>, Error> {
        if let Some(weights) = self.class_weights(channels, &values.device())? {
            values = values * weights;
        }
        Ok(reduce_classes(values, sums, reduction))
    }

    /// [`Overlap::reduce`] of per-sample values `[N, K]` where every sample has a counted
    /// position and every class counts ([`Overlap::dice_rows`]).
    pub(crate) fn reduce_rows(
        &self,
        mut values: Tensor<2>,
        channels: usize,
        reduction: Reduction,
    ) -> Result<Tensor<1>, Error> {
        if let Some(weights) = self.class_weights(channels, &values.device())? {
            values = values * weights;
        }
        let samples = values.dims()[0];
        Ok(reduce_counted(values, None, None, samples, reduction))
    }
}

/// Zeroes samples without a counted position (and, with `ignore_empty`, the empty classes)
/// and reduces `[B, K]` (see [`Overlap::reduce`]): `none` is each sample's share of `sum`.
pub(crate) fn reduce_classes(values: Tensor<2>, sums: &Sums, reduction: Reduction) -> Tensor<1> {
    reduce_counted(
        values,
        sums.counted.clone(),
        sums.present.clone(),
        sums.samples,
        reduction,
    )
}

/// [`reduce_classes`] given what it reads of the sums.
fn reduce_counted(
    values: Tensor<2>,
    counted: Option<Tensor<2>>,
    present: Option<Tensor<2>>,
    samples: usize,
    reduction: Reduction,
) -> Tensor<1> {
    let values = match counted {
        Some(counted) => values * counted,
        None => values,
    };
    let (values, present) = match present {
        Some(present) => (values * present.clone(), Some(present)),
        None => (values, None),
    };
    match reduction {
        // The mean over the classes that count; 0 when none does.
        Reduction::Mean => match present {
            Some(present) => values.sum() / present.sum().clamp_min(1.0),
            None => values.mean(),
        },
        Reduction::Sum => values.sum(),
        Reduction::None => {
            let [b, _] = values.dims();
            if b == samples {
                values.sum_dim(1).reshape([b])
            } else {
                // One value per class for the whole batch: each sample gets an equal share.
                (values.sum() / samples as f64).repeat_dim(0, samples)
            }
        }
    }
}
