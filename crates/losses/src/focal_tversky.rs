use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,
    config::OptionError,
    numerics::{check_positive_exponent, floored_pow},
};

use crate::{
    overlap::{overlap_config, reduce_classes},
    tversky::{TverskyLoss, check_alpha_beta},
};

overlap_config! {
    /// Options of [`FocalTverskyLoss`].
    pub struct FocalTverskyLossConfig {
        /// Weight of the false positives.
        #[config(default = 0.5)]
        pub alpha: f32,
        /// Weight of the false negatives.
        #[config(default = 0.5)]
        pub beta: f32,
        /// The exponent γ of `1 - TI`, in (0, 1000].
        #[config(default = 0.75)]
        pub gamma: f32,
    }
}

impl LossConfig for FocalTverskyLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        // γ = 0 would make every value 1, with no gradient at all.
        check_positive_exponent("gamma", self.gamma)?;
        check_alpha_beta(self.alpha, self.beta)?;
        self.overlap_options().validate()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(FocalTverskyLoss {
            tversky: TverskyLoss::new(
                "focal_tversky",
                self.overlap_options(),
                self.alpha,
                self.beta,
            )?,
            gamma: f64::from(self.gamma),
        }))
    }
}

losskit_core::documented! {
    /// # What it does
    /// The Tversky loss raised to a power γ per sample and class, then averaged:
    ///
    /// ```text
    /// TP = Σ_s p·t        FP = Σ_s p·(1 - t)        FN = Σ_s (1 - p)·t
    /// TI[n, c] = (TP + smooth_nr) / (TP + α·FP + β·FN + smooth_dr)
    /// f[n, c] = (1 - TI[n, c])^γ          mean = mean over (n, c)   (batch: sums over n too)
    /// ```
    ///
    /// With γ < 1 poorly segmented classes (small TI) weigh relatively more than with the plain
    /// Tversky loss (γ = 1). `1 - TI` is floored at 1e-12 before the power, so the gradient
    /// stays finite at a perfect prediction. Targets, activations, reductions and edge cases are
    /// those of `tversky`: empty masks give `f ≈ 0` through the smoothing (no 0/0), a class
    /// absent from a sample contributes as in MONAI's Tversky, a sample whose positions are all
    /// ignored gives 0 with a zero gradient.
    ///
    /// # When to use it
    /// Small-lesion segmentation with heavy imbalance, where Dice or Tversky plateau: the
    /// exponent keeps the gradient large on the classes that are still poorly segmented.
    ///
    /// # Options
    /// - `alpha` (float >= 0, default 0.5), `beta` (float >= 0, default 0.5); α + β > 0.
    /// - `gamma` (float in (0, 1000], default 0.75).
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
    /// {"name": "focal_tversky", "alpha": 0.3, "beta": 0.7, "gamma": 0.75}
    /// ```
    ///
    /// # References
    /// - Abraham & Khan, "A Novel Focal Tversky Loss Function with Improved Attention U-Net for
    ///   Lesion Segmentation" (ISBI 2019); their `1/γ` is this γ.
    #[derive(Debug, Clone)]
    pub struct FocalTverskyLoss {
        tversky: TverskyLoss,
        gamma: f64,
    }
}

losskit_core::register_loss!(FocalTverskyLoss {
    name: "focal_tversky",
    aliases: ["focal_tversky_loss"],
    category: Segmentation,
    summary: "Focal Tversky loss: mean over samples and classes of (1 - Tversky index)^gamma.",
    config: FocalTverskyLossConfig,
});

impl Loss for FocalTverskyLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let (index, sums) = self.tversky.index(input)?;
        let values = floored_pow(index.neg() + 1.0, self.gamma);
        Ok(reduce_classes(values, &sums, reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        self.tversky.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn matches_a_hand_computed_value() {
        // Probabilities [3/4, 1/4] at one position of class 0 (see the Tversky test).
        let loss = build(r#"{"name": "focal_tversky", "alpha": 0.3, "beta": 0.7, "gamma": 0.75}"#);
        let ln3 = 3f32.ln();
        let input =
            LossInput::with_indices(floats(&[ln3, 0.0], [1, 2, 1]), ints(&[0], [1, 1])).unwrap();
        let s: f64 = 1e-5;
        let t0 = (0.75 + s) / (0.75 + 0.7 * 0.25 + s);
        let t1 = s / (0.3 * 0.25 + s);
        let expected = ((1.0 - t0).powf(0.75) + (1.0 - t1).powf(0.75)) / 2.0;
        assert_close(
            &value(loss.as_ref(), input, Reduction::Mean),
            &[expected],
            1e-5,
        );
    }

    #[test]
    fn gamma_one_is_tversky() {
        let make = segmentation_example;
        let focal = build(r#"{"name": "focal_tversky", "gamma": 1.0, "alpha": 0.4, "beta": 0.6}"#);
        let tversky = build(r#"{"name": "tversky", "alpha": 0.4, "beta": 0.6}"#);
        for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            assert_close(
                &value(focal.as_ref(), make(), reduction),
                &value(tversky.as_ref(), make(), reduction),
                1e-5,
            );
        }
    }

    #[test]
    fn gradient_is_finite_at_a_perfect_prediction() {
        let loss = build("focal_tversky");
        let (value, grad) = value_and_grad(
            loss.as_ref(),
            floats(&[1e4, -1e4, -1e4, 1e4], [1, 2, 2]),
            |o| LossInput::with_indices(o, ints(&[0, 1], [1, 2])).unwrap(),
        );
        assert!(
            value.abs() < 1e-3 && grad.iter().all(|g| g.is_finite()),
            "{value} {grad:?}"
        );
    }

    #[test]
    fn a_huge_gamma_is_refused_and_the_largest_stays_finite() {
        // Issue 16: an integral γ beyond i64 made burn's powf_scalar panic.
        assert_eq!(
            build_error(r#"{"name": "focal_tversky", "gamma": 1e30}"#),
            "loss `focal_tversky`: option `gamma` must be a number in (0, 1000], got 1e30"
        );
        let loss = build(r#"{"name": "focal_tversky", "gamma": 1000}"#);
        let output = floats(&[-30.0, 0.0, 30.0, 0.5, 2.0, -1.0], [1, 2, 3]);
        assert_finite(loss.as_ref(), output, |o| {
            LossInput::with_indices(o, ints(&[0, 1, 1], [1, 3])).unwrap()
        });
    }

    #[test]
    fn bad_options_are_named() {
        assert_eq!(
            build_error(r#"{"name": "focal_tversky", "gamma": 0.0}"#),
            "loss `focal_tversky`: option `gamma` must be a number in (0, 1000], got 0"
        );
        assert!(build_error(r#"{"name": "focal_tversky", "beta": -1.0}"#).contains("`beta`"));
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("focal_tversky")
            .unwrap()
            .assert_passed();
    }
}
