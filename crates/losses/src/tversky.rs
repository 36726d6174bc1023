use burn::tensor::Tensor;
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,
    config::{OptionError, ensure},
};

use crate::overlap::{
    Overlap, OverlapOptions, Sums, check_non_negative, overlap_config, reduce_classes,
};

overlap_config! {
    /// Options of [`TverskyLoss`].
    pub struct TverskyLossConfig {
        /// Weight of the false positives.
        #[config(default = 0.5)]
        pub alpha: f32,
        /// Weight of the false negatives.
        #[config(default = 0.5)]
        pub beta: f32,
    }
}

impl LossConfig for TverskyLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        check_alpha_beta(self.alpha, self.beta)?;
        self.overlap_options().validate()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(TverskyLoss::new(
            "tversky",
            self.overlap_options(),
            self.alpha,
            self.beta,
        )?))
    }
}

/// Checks the weights of the false positives (α) and negatives (β).
pub(crate) fn check_alpha_beta(alpha: f32, beta: f32) -> Result<(), OptionError> {
    check_non_negative("alpha", alpha)?;
    check_non_negative("beta", beta)?;
    ensure(alpha + beta > 0.0, "beta", || {
        format!("alpha + beta must be > 0, got alpha = {alpha} and beta = {beta}")
    })
}

losskit_core::documented! {
    /// # What it does
    /// One minus the Tversky index per sample and class (MONAI's `TverskyLoss`), a Dice that
    /// weighs false positives by α and false negatives by β:
    ///
    /// ```text
    /// TP = Σ_s p·t        FP = Σ_s p·(1 - t)        FN = Σ_s (1 - p)·t
    /// TI[n, c] = (TP + smooth_nr) / (TP + α·FP + β·FN + smooth_dr)
    /// f[n, c] = 1 - TI[n, c]          mean = mean over (n, c)   (batch: sums over n too)
    /// ```
    ///
    /// α = β = 0.5 gives Dice, α = β = 1 the soft Jaccard index (both up to the smoothing).
    /// Targets, activations and reductions are those of `dice`: class indices are one-hot
    /// encoded, `sum` adds every `f`, `none` gives each sample's share of `sum`, its
    /// sum of `f` over the classes (with `batch`, `sum / N` for every sample). Edge cases as
    /// in `dice`: empty masks give `f ≈ 0` through the smoothing, a class absent from a sample
    /// contributes as in MONAI, a sample whose positions are all ignored gives 0 with a zero
    /// gradient; everything stays finite for any finite logits.
    ///
    /// # When to use it
    /// Segmentation where missing a structure costs more than over-segmenting it (or the
    /// reverse): β > α raises recall on small lesions, α > β raises precision.
    ///
    /// # Options
    /// - `alpha` (float >= 0, default 0.5), `beta` (float >= 0, default 0.5); α + β > 0.
    /// - `activation` (`softmax` | `sigmoid` | `none`, default `softmax`).
    /// - `include_background` (bool, default true), `batch` (bool, default false).
    /// - `smooth_nr` (float >= 0, default 1e-5), `smooth_dr` (float > 0, default 1e-5).
    /// - `ignore_index` (integer, default none).
    /// - `ignore_empty` (bool, default false): leaves out each (sample, class) absent from both
    ///   the target and the hard prediction (`losskit_core::empty`, the rule of the
    ///   segmentation metrics); the mean is over the pairs that count.
    ///
    /// # Example
    /// ```json
    /// {"name": "tversky", "alpha": 0.3, "beta": 0.7}
    /// ```
    ///
    /// # References
    /// - Salehi et al., "Tversky loss function for image segmentation using 3D fully
    ///   convolutional deep networks" (MLMI 2017).
    /// - MONAI `monai.losses.TverskyLoss`.
    #[derive(Debug, Clone)]
    pub struct TverskyLoss {
        overlap: Overlap,
        alpha: f64,
        beta: f64,
    }
}

losskit_core::register_loss!(TverskyLoss {
    name: "tversky",
    aliases: ["tversky_loss"],
    category: Segmentation,
    summary: "Tversky loss (MONAI TverskyLoss): a Dice weighting false positives by alpha and false negatives by beta.",
    config: TverskyLossConfig,
});

impl TverskyLoss {
    /// A Tversky loss with the shared overlap `options`, reporting errors under `name`.
    pub(crate) fn new(
        name: &'static str,
        options: OverlapOptions,
        alpha: f32,
        beta: f32,
    ) -> Result<Self, ConfigError> {
        check_alpha_beta(alpha, beta)
            .map_err(|error| ConfigError::invalid(name, &error.option, error.problem))?;
        Ok(Self {
            overlap: options.build(name)?,
            alpha: f64::from(alpha),
            beta: f64::from(beta),
        })
    }

    /// The Tversky index per (sample, class) `[B, K]` and the sums it came from.
    pub(crate) fn index(&self, input: LossInput) -> Result<(Tensor<2>, Sums), Error> {
        let sums = self.overlap.sums(input)?;
        let Sums {
            intersection,
            prediction,
            truth,
            ..
        } = sums.clone();
        let false_positives = prediction - intersection.clone();
        let false_negatives = truth - intersection.clone();
        let denominator = intersection.clone()
            + false_positives * self.alpha
            + false_negatives * self.beta
            + self.overlap.smooth_dr;
        Ok(((intersection + self.overlap.smooth_nr) / denominator, sums))
    }
}

impl Loss for TverskyLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let (index, sums) = self.index(input)?;
        Ok(reduce_classes(index.neg() + 1.0, &sums, reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        self.overlap.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn matches_a_hand_computed_value() {
        // Probabilities [3/4, 1/4] at one position of class 0. Class 0: TP = 3/4, FP = 0,
        // FN = 1/4; class 1: TP = 0, FP = 1/4, FN = 0.
        let loss = build(r#"{"name": "tversky", "alpha": 0.3, "beta": 0.7}"#);
        let ln3 = 3f32.ln();
        let input =
            LossInput::with_indices(floats(&[ln3, 0.0], [1, 2, 1]), ints(&[0], [1, 1])).unwrap();
        let s = 1e-5;
        let f0 = 1.0 - (0.75 + s) / (0.75 + 0.7 * 0.25 + s);
        let f1 = 1.0 - s / (0.3 * 0.25 + s);
        assert_close(
            &value(loss.as_ref(), input, Reduction::Mean),
            &[(f0 + f1) / 2.0],
            1e-5,
        );
    }

    #[test]
    fn halves_give_dice() {
        let make = segmentation_example;
        assert_close(
            &value(build("tversky").as_ref(), make(), Reduction::Mean),
            &value(build("dice").as_ref(), make(), Reduction::Mean),
            1e-5,
        );
    }

    #[test]
    fn gradient_pushes_towards_the_target_and_stays_finite_at_extremes() {
        let loss = build(r#"{"name": "tversky", "alpha": 0.2, "beta": 0.8}"#);
        let (_, grad) = value_and_grad(loss.as_ref(), floats(&[0.0, 0.0], [1, 2, 1]), |o| {
            LossInput::with_indices(o, ints(&[1], [1, 1])).unwrap()
        });
        assert!(grad[1] < 0.0 && grad[0] > 0.0, "{grad:?}");
        let (value, grad) = value_and_grad(
            loss.as_ref(),
            floats(&[1e4, -1e4, -1e4, 1e4], [1, 2, 2]),
            |o| LossInput::with_indices(o, ints(&[1, 0], [1, 2])).unwrap(),
        );
        assert!(
            value.is_finite() && grad.iter().all(|g| g.is_finite()),
            "{value} {grad:?}"
        );
    }

    #[test]
    fn bad_options_are_named() {
        assert!(build_error(r#"{"name": "tversky", "alpha": -0.1}"#).contains("`alpha`"));
        assert!(
            build_error(r#"{"name": "tversky", "alpha": 0.0, "beta": 0.0}"#)
                .contains("alpha + beta")
        );
        assert!(
            build_error(r#"{"name": "tversky", "activation": "tanh"}"#).contains("`activation`")
        );
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("tversky")
            .unwrap()
            .assert_passed();
        let sigmoid = r#"{"name": "tversky", "activation": "sigmoid", "alpha": 0.7, "beta": 0.3, "batch": true}"#;
        losskit_core::conformance::check(sigmoid, build(sigmoid).as_ref()).assert_passed();
    }
}
