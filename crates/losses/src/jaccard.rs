use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,
    config::OptionError,
};

use crate::{dice::DiceLoss, overlap::overlap_config};

overlap_config! {
    /// Options of [`JaccardLoss`]: those of [`DiceLossConfig`](crate::DiceLossConfig) without
    /// `jaccard`.
    pub struct JaccardLossConfig {}
    + dice_options
}

impl LossConfig for JaccardLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        self.overlap_options().validate()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(JaccardLoss(DiceLoss::new(
            "jaccard",
            self.overlap_options(),
            true,
        )?)))
    }
}

losskit_core::documented! {
    /// # What it does
    /// One minus the soft Jaccard index (intersection over union) per sample and class, MONAI's
    /// `DiceLoss(jaccard=True)`:
    ///
    /// ```text
    /// I = Σ_s p·t        P = Σ_s p   (Σ p² with squared_pred)        T = Σ_s t   (Σ t²)
    /// f[n, c] = 1 - (2·I + smooth_nr) / (2·(P + T - I) + smooth_dr)      ≈ 1 - I / (P + T - I)
    /// mean = mean over (n, c) of w_c·f[n, c]
    /// ```
    ///
    /// It is the `dice` loss with `jaccard: true`; every other option, the reductions and the
    /// edge cases are those of `dice`: empty masks give `f ≈ 0` through the smoothing (no 0/0),
    /// a class absent from a sample contributes as in MONAI, and a sample whose positions are
    /// all ignored gives 0 with a zero gradient.
    ///
    /// # When to use it
    /// Segmentation evaluated by IoU: optimising the soft IoU directly. It penalises errors a
    /// little more than Dice at low overlap; for a tight surrogate of the discrete IoU see
    /// `lovasz_softmax`.
    ///
    /// # Options
    /// - `activation` (`softmax` | `sigmoid` | `none`, default `softmax`).
    /// - `include_background` (bool, default true).
    /// - `smooth_nr` (float >= 0, default 1e-5), `smooth_dr` (float > 0, default 1e-5).
    /// - `squared_pred` (bool, default false), `batch` (bool, default false).
    /// - `weights` (list of floats, one per output channel), `ignore_index` (integer).
    /// - `ignore_empty` (bool, default false): leaves out each (sample, class) absent from both
    ///   the target and the hard prediction (`losskit_core::empty`, the rule of the
    ///   segmentation metrics); the mean is over the pairs that count.
    ///
    /// # Example
    /// ```json
    /// {"name": "jaccard", "include_background": false}
    /// ```
    ///
    /// # References
    /// - Rahman & Wang, "Optimizing Intersection-Over-Union in Deep Neural Networks for Image
    ///   Segmentation" (ISVC 2016).
    /// - MONAI `monai.losses.DiceLoss(jaccard=True)`.
    #[derive(Debug, Clone)]
    pub struct JaccardLoss(DiceLoss);
}

losskit_core::register_loss!(JaccardLoss {
    name: "jaccard",
    aliases: ["iou", "soft_iou", "jaccard_loss"],
    category: Segmentation,
    summary: "Soft Jaccard (IoU) loss: MONAI DiceLoss(jaccard=True), per sample and class.",
    config: JaccardLossConfig,
});

impl Loss for JaccardLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        self.0.forward(input, reduction)
    }

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn matches_a_hand_computed_value_and_equals_dice_with_jaccard() {
        // Probabilities [3/4, 1/4] at one position of class 0: class 0 has I = 3/4, P = 3/4,
        // T = 1; class 1 has I = 0, P = 1/4, T = 0.
        let ln3 = 3f32.ln();
        let make =
            || LossInput::with_indices(floats(&[ln3, 0.0], [1, 2, 1]), ints(&[0], [1, 1])).unwrap();
        let s = 1e-5;
        let f0 = 1.0 - (1.5 + s) / (2.0 * (1.75 - 0.75) + s);
        let f1 = 1.0 - s / (2.0 * 0.25 + s);
        let expected = [(f0 + f1) / 2.0];
        assert_close(
            &value(build("jaccard").as_ref(), make(), Reduction::Mean),
            &expected,
            1e-6,
        );
        let dice = build(r#"{"name": "dice", "jaccard": true}"#);
        assert_close(
            &value(dice.as_ref(), make(), Reduction::Mean),
            &expected,
            1e-6,
        );
    }

    #[test]
    fn gradient_is_finite_and_pushes_towards_the_target() {
        let loss = build("iou");
        let (_, grad) = value_and_grad(loss.as_ref(), floats(&[0.0, 0.0], [1, 2, 1]), |o| {
            LossInput::with_indices(o, ints(&[1], [1, 1])).unwrap()
        });
        assert!(grad[1] < 0.0 && grad[0] > 0.0, "{grad:?}");
        assert_close(&[grad[0] + grad[1]], &[0.0], 1e-6);
    }

    #[test]
    fn bad_options_are_named() {
        assert!(build_error(r#"{"name": "jaccard", "smooth_dr": -1.0}"#).contains("`smooth_dr`"));
        assert!(
            build_error(r#"{"name": "jaccard", "jaccard": false}"#)
                .contains("has no option `jaccard`")
        );
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("jaccard")
            .unwrap()
            .assert_passed();
    }
}
