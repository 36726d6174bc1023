//! What the shape-aware segmentation losses (boundary, Hausdorff distance, clDice) share: the
//! options that decide which probabilities and masks they compare (declared once, by
//! [`shape_config!`]), and turning the output into those probabilities with the Dice family's
//! conventions (softmax or sigmoid, one-hot class indices, channel 0 dropped unless included).
//!
//! Unlike the Dice family they need the spatial layout (distances, morphology), so they take
//! `[N, C, L]`, `[N, C, H, W]` and `[N, C, D, H, W]` outputs, not `[N, C]`, and they have no
//! `ignore_index`: an ignored pixel has no place in a distance map or a skeleton.

use burn::tensor::Tensor;
use losskit_core::{
    Capabilities, ConfigError, Error, LossInput, MeanCount, Reduction, TargetKind,
    config::OptionError, config::ensure, reduce::reduce_elements,
};

use crate::overlap::{Activation, Overlap, OverlapOptions};

/// Declares the config of a shape-aware loss: its own options, then `activation` and
/// `include_background` (with this loss's default, the reference library's); with
/// `+ spacing` the voxel spacing of distance-based losses, with `+ skeleton` the soft-skeleton
/// options of the clDice losses (and `skeleton_options()`). The config gets
/// `shape_options()`.
///
/// ```text
/// shape_config! {
///     /// Options of [`BoundaryLoss`].
///     pub struct BoundaryLossConfig {}
///     include_background: false,
///     + spacing
/// }
/// ```
macro_rules! shape_config {
    (@emit $(#[$($attr:tt)*])* $name:ident { $($fields:tt)* } $background:tt [$($copy:ident),*]) => {
        $(#[$($attr)*])*
        #[derive(burn::config::Config, Debug)]
        pub struct $name {
            $($fields)*
            /// How the output becomes probabilities: `softmax` (exclusive classes), `sigmoid`
            /// (independent masks) or `none` (the output already holds probabilities).
            #[config(default = "crate::overlap::Activation::Softmax")]
            pub activation: crate::overlap::Activation,
            /// `false` leaves channel 0 (the background) out of the loss (unless it is the only
            /// channel).
            #[config(default = $background)]
            pub include_background: bool,
        }

        impl $name {
            /// The options this loss shares with the other shape-aware losses.
            pub(crate) fn shape_options(&self) -> crate::shape::ShapeOptions {
                #[allow(unused_mut)]
                let mut options = crate::shape::ShapeOptions {
                    activation: self.activation,
                    include_background: self.include_background,
                    spacing: None,
                    ignore_empty: false,
                };
                $(options.$copy = self.$copy.clone();)*
                options
            }
        }
    };
    ($(#[$($attr:tt)*])* pub struct $name:ident { $($own:tt)* } include_background: $background:tt, + spacing) => {
        shape_config! {
            @emit $(#[$($attr)*])* $name {
                $($own)*
                /// The size of an element along each spatial axis (e.g. `[3.0, 0.8, 0.8]` mm for
                /// a CT volume), one positive value per axis; distances are measured in these
                /// units. Default: 1 for every axis.
                pub spacing: Option<Vec<f32>>,
                /// Skips each (sample, class) whose class is absent from both the target and
                /// the hard prediction (`losskit_core::empty`, the metrics' rule); the mean is
                /// over the classes that count.
                #[config(default = false)]
                pub ignore_empty: bool,
            } $background [spacing, ignore_empty]
        }
    };
    ($(#[$($attr:tt)*])* pub struct $name:ident { $($own:tt)* } include_background: $background:tt, + skeleton) => {
        shape_config! {
            @emit $(#[$($attr)*])* $name {
                $($own)*
                /// Soft-skeleton iterations (MONAI's `iter_`), in 0..=50: the skeleton reaches
                /// structures up to about twice this many elements thick.
                #[config(default = 3)]
                pub iterations: usize,
                /// Added to the numerators of the precision and sensitivity ratios (>= 0).
                #[config(default = 1.0)]
                pub smooth_nr: f32,
                /// Added to their denominators (> 0).
                #[config(default = 1.0)]
                pub smooth_dr: f32,
                /// Added to the denominator of their harmonic mean (> 0).
                #[config(default = 1e-4)]
                pub smooth: f32,
            } $background []
        }

        impl $name {
            /// The skeleton options this loss shares with the other clDice losses.
            pub(crate) fn skeleton_options(&self) -> crate::soft_cldice::SkeletonOptions {
                crate::soft_cldice::SkeletonOptions {
                    iterations: self.iterations,
                    smooth_nr: self.smooth_nr,
                    smooth_dr: self.smooth_dr,
                    smooth: self.smooth,
                }
            }
        }
    };
    ($(#[$($attr:tt)*])* pub struct $name:ident { $($own:tt)* } include_background: $background:tt) => {
        shape_config! { @emit $(#[$($attr)*])* $name { $($own)* } $background [] }
    };
}
pub(crate) use shape_config;

/// The options every shape-aware loss shares, as its config holds them ([`shape_config!`]).
#[derive(Debug, Clone)]
pub(crate) struct ShapeOptions {
    pub(crate) activation: Activation,
    pub(crate) include_background: bool,
    pub(crate) spacing: Option<Vec<f32>>,
    pub(crate) ignore_empty: bool,
}

impl ShapeOptions {
    /// Checks the spacing (serde has checked `activation`).
    pub(crate) fn validate(&self) -> Result<(), OptionError> {
        if let Some(spacing) = &self.spacing {
            ensure(
                !spacing.is_empty() && spacing.iter().all(|s| s.is_finite() && *s > 0.0),
                "spacing",
                || format!("must list one finite size > 0 per spatial axis, got {spacing:?}"),
            )?;
        }
        Ok(())
    }

    /// The checked options of the loss registered as `name`.
    pub(crate) fn build(self, name: &'static str) -> Result<Shape, ConfigError> {
        self.validate()
            .map_err(|error| ConfigError::invalid(name, &error.option, error.problem))?;
        let overlap = OverlapOptions {
            activation: self.activation,
            include_background: self.include_background,
            smooth_nr: 0.0,
            smooth_dr: 1.0,
            squared_pred: false,
            batch: false,
            weights: None,
            ignore_index: None,
            ignore_empty: self.ignore_empty,
        }
        .build(name)?;
        Ok(Shape {
            overlap,
            spacing: self.spacing,
        })
    }
}

/// The checked shared options of a shape-aware loss.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    overlap: Overlap,
    spacing: Option<Vec<f32>>,
}

impl Shape {
    /// The loss's name, for errors.
    pub(crate) fn name(&self) -> &'static str {
        self.overlap.name
    }

    /// The probabilities and target masks of the counted classes, `[N, K, S]` each.
    pub(crate) fn probabilities(&self, input: LossInput) -> Result<(Tensor<3>, Tensor<3>), Error> {
        let (probabilities, target, _) = self.overlap.probabilities(input)?;
        Ok((probabilities, target))
    }

    /// Drops the background channel unless it is counted: `[N, C, S]` to `[N, K, S]`.
    pub(crate) fn counted_classes(&self, values: Tensor<3>) -> Tensor<3> {
        self.overlap.counted_classes(values)
    }

    /// With `ignore_empty`, the `[N, K]` mask of the (sample, class) pairs that count.
    pub(crate) fn present(&self, input: &LossInput) -> Result<Option<Tensor<2>>, Error> {
        if !self.overlap.ignore_empty {
            return Ok(None);
        }
        let (truth, predicted) = self.overlap.class_counts(input)?;
        Ok(Some(losskit_core::empty::counted_classes(truth, predicted)))
    }

    /// Reduces element values `[N, K, S]`: `mean` over the elements (of the classes that
    /// count, with `present`), `sum`, or each sample's sum.
    pub(crate) fn reduce(
        &self,
        values: Tensor<3>,
        present: Option<Tensor<2>>,
        reduction: Reduction,
    ) -> Tensor<1> {
        let Some(present) = present else {
            return reduce_elements(values, reduction);
        };
        let [n, k, s] = values.dims();
        let values = values * present.clone().reshape([n, k, 1]);
        match reduction {
            Reduction::Mean => values.sum() / (present.sum() * s as f64).clamp_min(1.0),
            other => reduce_elements(values, other),
        }
    }

    /// The spacing of each spatial axis of `input`.
    pub(crate) fn spacing(&self, input: &LossInput) -> Result<Vec<f64>, Error> {
        losskit_core::distance::spacing_of(self.name(), input, self.spacing.as_deref())
    }

    /// Whether every channel counts (then a mean over elements is a mean over N·C·S).
    fn counts_every_channel(&self) -> bool {
        self.overlap.include_background && !self.overlap.ignore_empty
    }

    /// What the loss accepts: the activation's targets and domain, spatial outputs only;
    /// `mean_over` elements when every channel counts (and no empty class is skipped).
    pub(crate) fn capabilities(&self, minimum: Option<f64>) -> Capabilities {
        let mut capabilities = self.overlap.capabilities();
        capabilities.ranks = vec![3, 4, 5];
        // A probability target thresholded into masks would not be what the loss reads.
        capabilities
            .targets
            .retain(|kind| *kind != TargetKind::Probabilities);
        capabilities.minimum = minimum;
        capabilities.mean_over = self.counts_every_channel().then_some(MeanCount::Elements);
        capabilities
    }
}
