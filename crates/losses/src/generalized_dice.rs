use burn::tensor::Tensor;
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,
    config::OptionError,
};
use serde::{Deserialize, Serialize};

use crate::overlap::{Overlap, Sums, overlap_config, reduce_classes};

overlap_config! {
    /// Options of [`GeneralizedDiceLoss`].
    pub struct GeneralizedDiceLossConfig {
        /// How a class's target volume `T` becomes its weight.
        #[config(default = "WeightType::Square")]
        pub weight_type: WeightType,
    }
}

impl LossConfig for GeneralizedDiceLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        self.overlap_options().validate()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(GeneralizedDiceLoss {
            overlap: self.overlap_options().build("generalized_dice")?,
            weight_type: self.weight_type,
        }))
    }
}

/// How [`GeneralizedDiceLoss`] weighs a class of target volume `T`: its `weight_type` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightType {
    /// `square`: 1/T².
    Square,
    /// `simple`: 1/T.
    Simple,
    /// `uniform`: 1.
    Uniform,
}

losskit_core::documented! {
    /// # What it does
    /// The generalised Dice loss (MONAI's `GeneralizedDiceLoss`): one Dice ratio per sample
    /// over all classes, each class weighted by the inverse of its target volume:
    ///
    /// ```text
    /// I_c = Σ_s p·t        P_c = Σ_s p        T_c = Σ_s t
    /// w_c = 1/T_c²  (square)  |  1/T_c  (simple)  |  1  (uniform)
    ///       a class absent from the sample (w_c = ∞) takes the largest finite w of the sample
    /// f[n] = 1 - (2·Σ_c w_c·I_c + smooth_nr) / (Σ_c w_c·(P_c + T_c) + smooth_dr)
    /// mean = mean over n       (batch: one ratio over the whole batch)
    /// ```
    ///
    /// The weights come from the target only (no gradient flows through them). Class-index
    /// targets are one-hot encoded; `sum` adds the per-sample values, `none` gives them (with
    /// `batch`, the batch value divided by N for every sample, so that `Σ none = sum`).
    /// Edge cases: an empty target (every weight infinite) gives weights 0 and
    /// `f = 1 - smooth_nr / smooth_dr` (0 by default) with no 0/0; a sample whose positions are
    /// all ignored gives 0 with a zero gradient; values and gradients stay finite for any
    /// finite logits.
    ///
    /// # When to use it
    /// Multi-class segmentation with classes of very different sizes: the inverse-volume
    /// weights keep small structures from being drowned by large ones, more strongly than
    /// plain Dice's per-class mean.
    ///
    /// # Options
    /// - `weight_type` (`square` | `simple` | `uniform`, default `square`).
    /// - `activation` (`softmax` | `sigmoid` | `none`, default `softmax`).
    /// - `include_background` (bool, default true), `batch` (bool, default false).
    /// - `smooth_nr` (float >= 0, default 1e-5), `smooth_dr` (float > 0, default 1e-5).
    /// - `ignore_index` (integer, default none).
    /// - `ignore_empty` (bool, default false): leaves each class absent from both the target
    ///   and the hard prediction of a sample out of that sample's weighted sums
    ///   (`losskit_core::empty`); by default MONAI's rule gives it the row's largest weight.
    ///
    /// # Example
    /// ```json
    /// {"name": "generalized_dice", "weight_type": "simple"}
    /// ```
    ///
    /// # References
    /// - Sudre et al., "Generalised Dice overlap as a deep learning loss function for highly
    ///   unbalanced segmentations" (DLMIA 2017).
    /// - MONAI `monai.losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True)`.
    #[derive(Debug, Clone)]
    pub struct GeneralizedDiceLoss {
        overlap: Overlap,
        weight_type: WeightType,
    }
}

losskit_core::register_loss!(GeneralizedDiceLoss {
    name: "generalized_dice",
    aliases: ["generalised_dice", "gdl"],
    category: Segmentation,
    summary: "Generalised Dice loss (MONAI GeneralizedDiceLoss): classes weighted by inverse target volume.",
    config: GeneralizedDiceLossConfig,
});

impl GeneralizedDiceLoss {
    /// The class weights `[B, K]` from the target volumes, infinite ones replaced by the
    /// largest finite weight of the row, as MONAI does.
    fn class_weights(&self, truth: Tensor<2>) -> Tensor<2> {
        let truth = truth.detach();
        let weights = match self.weight_type {
            WeightType::Square => (truth.clone() * truth).recip(),
            WeightType::Simple => truth.recip(),
            WeightType::Uniform => return truth.ones_like(),
        };
        let infinite = weights.clone().is_inf();
        let finite = weights.mask_fill(infinite.clone(), 0.0);
        let largest = finite.clone().max_dim(1);
        finite + infinite.float() * largest
    }
}

impl Loss for GeneralizedDiceLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let sums = self.overlap.sums(input)?;
        let Sums {
            intersection,
            prediction,
            truth,
            ..
        } = sums.clone();
        let mut weights = self.class_weights(truth.clone());
        if let Some(present) = &sums.present {
            weights = weights * present.clone();
        }
        // The empty classes are out of the sums: the per-sample values are reduced as they are.
        let mut sums = sums;
        sums.present = None;
        let numerator = (intersection * weights.clone()).sum_dim(1) * 2.0 + self.overlap.smooth_nr;
        let denominator = ((prediction + truth) * weights).sum_dim(1) + self.overlap.smooth_dr;
        let values = (numerator / denominator).neg() + 1.0;
        Ok(reduce_classes(values, &sums, reduction).into())
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
        // Positions of classes [0, 0, 1] with probabilities [3/4, 1/4] each.
        // Class 0: I = 3/2, P = 9/4, T = 2, w = 1/4; class 1: I = 1/4, P = 3/4, T = 1, w = 1.
        let loss = build("generalized_dice");
        let ln3 = 3f32.ln();
        let output = floats(&[ln3, ln3, ln3, 0.0, 0.0, 0.0], [1, 2, 3]);
        let input = LossInput::with_indices(output, ints(&[0, 0, 1], [1, 3])).unwrap();
        let s = 1e-5;
        let numerator = 2.0 * (0.25 * 1.5 + 0.25) + s;
        let denominator = 0.25 * (2.25 + 2.0) + (0.75 + 1.0) + s;
        assert_close(
            &value(loss.as_ref(), input, Reduction::Mean),
            &[1.0 - numerator / denominator],
            1e-5,
        );
    }

    #[test]
    fn absent_classes_take_the_largest_finite_weight() {
        // Class 1 is absent: its weight becomes class 0's, 1/4 (T_0 = 2), and I_1 = T_1 = 0.
        let loss = build("gdl");
        let ln3 = 3f32.ln();
        let output = floats(&[ln3, ln3, 0.0, 0.0], [1, 2, 2]);
        let input = LossInput::with_indices(output, ints(&[0, 0], [1, 2])).unwrap();
        let s = 1e-5;
        let numerator = 2.0 * 0.25 * 1.5 + s;
        let denominator = 0.25 * (1.5 + 2.0) + 0.25 * 0.5 + s;
        assert_close(
            &value(loss.as_ref(), input, Reduction::Mean),
            &[1.0 - numerator / denominator],
            1e-5,
        );
    }

    #[test]
    fn gradient_and_empty_targets_stay_finite() {
        let loss = build(r#"{"name": "generalized_dice", "include_background": false}"#);
        let (value, grad) = value_and_grad(
            loss.as_ref(),
            floats(&[1e4, -1e4, 0.5, 1e4], [1, 2, 2]),
            |o| LossInput::with_indices(o, ints(&[0, 0], [1, 2])).unwrap(),
        );
        assert!(
            value.abs() < 1e-6 && grad.iter().all(|g| g.is_finite()),
            "{value} {grad:?}"
        );
        let (_, grad) = value_and_grad(
            loss.as_ref(),
            floats(&[0.0, 0.0, 0.0, 1.0], [1, 2, 2]),
            |o| LossInput::with_indices(o, ints(&[1, 0], [1, 2])).unwrap(),
        );
        assert!(
            grad.iter().all(|g| g.is_finite()) && grad[2] < 0.0,
            "{grad:?}"
        );
    }

    #[test]
    fn bad_options_are_named() {
        assert_eq!(
            build_error(r#"{"name": "generalized_dice", "weight_type": "cubic"}"#),
            "loss `generalized_dice`: option `weight_type` has the wrong type or value: unknown \
             variant `cubic`, expected one of `square`, `simple`, `uniform`"
        );
        assert!(
            build_error(r#"{"name": "generalized_dice", "smooth_dr": 0.0}"#)
                .contains("`smooth_dr`")
        );
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("generalized_dice")
            .unwrap()
            .assert_passed();
        let config = r#"{"name": "generalized_dice", "activation": "sigmoid", "weight_type": "simple", "batch": true}"#;
        losskit_core::conformance::check(config, build(config).as_ref()).assert_passed();
    }
}
