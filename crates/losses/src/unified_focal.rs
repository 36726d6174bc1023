use burn::{
    config::Config,
    tensor::{Tensor, TensorData, activation::softmax},
};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,
    config::{OptionError, ensure},
    numerics::floored_pow,
    targets::dense_target,
};
use serde::{Deserialize, Serialize};

/// Which classes the unified focal loss modulates: its `variant` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnifiedFocalVariant {
    /// Suppresses the background's easy pixels in the focal term and enhances the foreground
    /// classes' focal Tversky term, leaving the other side unmodulated (`L_aUF`).
    Asymmetric,
    /// Modulates every class in both terms (`L_sUF`).
    Symmetric,
}

/// Options of [`UnifiedFocalLoss`].
#[derive(Config, Debug)]
pub struct UnifiedFocalLossConfig {
    /// λ, the weight of the focal term (the focal Tversky term gets 1 - λ), in [0, 1].
    #[config(default = 0.5)]
    pub lambda: f32,
    /// δ, the weight of the foreground classes (the background gets 1 - δ) in the focal term,
    /// and of the false negatives (the false positives get 1 - δ) in the Tversky index, in
    /// [0, 1].
    #[config(default = 0.6)]
    pub delta: f32,
    /// γ, in [0, 1]: the focal exponent `(1 - p)^γ` and the focal Tversky exponent
    /// `(1 - mTI)^(1 - γ)`.
    #[config(default = 0.5)]
    pub gamma: f32,
    /// `asymmetric` (the paper's recommendation) or `symmetric`.
    #[config(default = "UnifiedFocalVariant::Asymmetric")]
    pub variant: UnifiedFocalVariant,
}

impl LossConfig for UnifiedFocalLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        for (option, value) in [
            ("lambda", self.lambda),
            ("delta", self.delta),
            ("gamma", self.gamma),
        ] {
            ensure((0.0..=1.0).contains(&value), option, || {
                format!("must be in [0, 1], got {value}")
            })?;
        }
        Ok(())
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        self.validate()
            .map_err(|error| ConfigError::invalid("unified_focal", &error.option, error.problem))?;
        Ok(Box::new(UnifiedFocalLoss {
            lambda: f64::from(self.lambda),
            delta: f64::from(self.delta),
            gamma: f64::from(self.gamma),
            variant: self.variant,
        }))
    }
}

/// The ε of the reference code (Keras' `epsilon()`): probabilities are clipped to
/// `[ε, 1 - ε]` before the log, and it smooths the Tversky index.
const EPSILON: f64 = 1e-7;

losskit_core::documented! {
    /// # What it does
    /// The Unified Focal loss of Yeung et al. (2022), multi-class: a weighted sum of a
    /// modified focal loss and a modified focal Tversky loss that share δ (class balance) and
    /// γ (focusing), with class 0 the background and every other class foreground (rare):
    ///
    /// ```text
    /// p = softmax(x) clipped to [ε, 1 - ε]        t = one-hot target        ε = 1e-7
    /// focal:    F_i = Σ_c w_c · m_c · (-t_ic · log p_ic)        w_0 = 1 - δ, w_c = δ (c ≥ 1)
    ///           m_c = (1 - p_ic)^γ if class c is modulated, else 1
    /// Tversky:  mTI_nc = (TP + ε) / (TP + δ·FN + (1 - δ)·FP + ε)     (sums over positions)
    ///           T_nc = (1 - mTI_nc)^(1 - γ) if class c is modulated, else 1 - mTI_nc
    /// loss = λ · mean_i F_i + (1 - λ) · mean_(n,c) T_nc
    /// ```
    ///
    /// `asymmetric` modulates the background only in the focal term and the foreground only
    /// in the Tversky term (the paper's `L_aUF`: easy background pixels are suppressed, rare
    /// classes enhanced); `symmetric` modulates every class in both (`L_sUF`). With δ = 0.5
    /// and γ = 0 the symmetric form is λ·CE/2 + (1 - λ)·Dice, which a test checks.
    ///
    /// Which formulas: the paper's equations, extended to several foreground classes as its
    /// section on multi-class segmentation describes. The authors' code (and ports of it)
    /// differs in three ways this loss does not follow: its `asym_unified_focal_loss` and
    /// `sym_unified_focal_loss` return `weight·FTL + (1 - weight)·FL`, so its λ weights the
    /// focal Tversky term (the paper's weights the focal term); it handles exactly two
    /// classes; and it writes `(1 - mTI)^(1 - γ)` as `(1 - mTI)·(1 - mTI)^(-γ)`, which is NaN
    /// (0·∞) when `mTI = 1`. Here `1 - mTI` is floored at 1e-12 before the power, so a perfect
    /// prediction stays finite. To reproduce the code's weighting, pass `lambda: 1 - weight`. Each term, already weighted, is reported (`focal`,
    /// `focal_tversky`). `sum` adds every position's and every (sample, class)'s weighted
    /// value; `none` gives each sample its share.
    ///
    /// # When to use it
    /// Segmentation with heavy class imbalance (small lesions) when neither a distribution
    /// loss (cross-entropy, focal) nor a region loss (Dice, Tversky) alone is robust: the
    /// paper reports it at or above the best of both across five datasets with the default
    /// λ = 0.5, δ = 0.6, γ = 0.5.
    ///
    /// # Options
    /// - `lambda` (float in [0, 1], default 0.5): the focal term's weight.
    /// - `delta` (float in [0, 1], default 0.6): foreground and false-negative weight.
    /// - `gamma` (float in [0, 1], default 0.5): focusing; 0 turns both modulations off.
    /// - `variant` (`asymmetric` | `symmetric`, default `asymmetric`).
    ///
    /// # Example
    /// ```json
    /// {"name": "unified_focal", "variant": "asymmetric", "lambda": 0.5, "delta": 0.6, "gamma": 0.5}
    /// ```
    ///
    /// # References
    /// - Yeung, Sala, Schönlieb and Rundo, "Unified Focal loss: Generalising Dice and cross
    ///   entropy-based losses to handle class imbalanced medical image segmentation",
    ///   Computerized Medical Imaging and Graphics 95 (2022).
    /// - Abraham and Khan, "A Novel Focal Tversky Loss Function" (ISBI 2019).
    #[derive(Debug, Clone)]
    pub struct UnifiedFocalLoss {
        lambda: f64,
        delta: f64,
        gamma: f64,
        variant: UnifiedFocalVariant,
    }
}

losskit_core::register_loss!(UnifiedFocalLoss {
    name: "unified_focal",
    aliases: ["unified_focal_loss"],
    category: Segmentation,
    summary: "Unified Focal loss (Yeung et al. 2022): modified focal plus focal Tversky, symmetric or asymmetric, multi-class.",
    config: UnifiedFocalLossConfig,
});

impl UnifiedFocalLoss {
    /// A `[1, C, 1]` tensor of `background` for class 0 and `foreground` for the others.
    fn per_class(
        &self,
        channels: usize,
        background: f32,
        foreground: f32,
        like: &Tensor<3>,
    ) -> Tensor<3> {
        let values: Vec<f32> = (0..channels)
            .map(|c| if c == 0 { background } else { foreground })
            .collect();
        Tensor::from_data(TensorData::new(values, [1, channels, 1]), &like.device())
    }
}

impl Loss for UnifiedFocalLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let channels = input.channels();
        let (target, _) = dense_target(input.target(), channels, None)?;
        let (output, _) = input.into_parts();
        let [n, c, s] = output.dims();
        let probabilities = softmax(output, 1).clamp(EPSILON, 1.0 - EPSILON);
        let asymmetric = self.variant == UnifiedFocalVariant::Asymmetric;
        let delta = self.delta as f32;

        // The modified focal term, per position.
        let cross_entropy = (probabilities.clone().log() * target.clone()).neg();
        let modulation = floored_pow(probabilities.clone().neg() + 1.0, self.gamma);
        // 1 where a class is modulated, 0 where it is not.
        let focal_modulated = self.per_class(c, 1.0, if asymmetric { 0.0 } else { 1.0 }, &target);
        let modulation = modulation * focal_modulated.clone() + (focal_modulated.neg() + 1.0);
        let weights = self.per_class(c, 1.0 - delta, delta, &target);
        let focal = (cross_entropy * modulation * weights)
            .sum_dim(1)
            .reshape([n, s]);

        // The modified focal Tversky term, per sample and class.
        let true_positives = (probabilities.clone() * target.clone()).sum_dim(2);
        let false_negatives = (target.clone() * (probabilities.clone().neg() + 1.0)).sum_dim(2);
        let false_positives = ((target.neg() + 1.0) * probabilities).sum_dim(2);
        let index = (true_positives.clone() + EPSILON)
            / (true_positives
                + false_negatives * self.delta
                + false_positives * (1.0 - self.delta)
                + EPSILON);
        let distance = (index.neg() + 1.0).clamp_min(1e-12).reshape([n, c, 1]);
        let tversky_modulated =
            self.per_class(c, if asymmetric { 0.0 } else { 1.0 }, 1.0, &distance);
        let tversky = (floored_pow(distance.clone(), 1.0 - self.gamma) * tversky_modulated.clone()
            + distance * (tversky_modulated.neg() + 1.0))
            .reshape([n, c]);

        let (focal, tversky) = match reduction {
            Reduction::Mean => (focal.mean(), tversky.mean()),
            Reduction::Sum => (focal.sum(), tversky.sum()),
            Reduction::None => (
                focal.sum_dim(1).reshape([n]),
                tversky.sum_dim(1).reshape([n]),
            ),
        };
        let focal = focal * self.lambda;
        let tversky = tversky * (1.0 - self.lambda);
        Ok(LossValue {
            value: focal.clone() + tversky.clone(),
            terms: vec![("focal".into(), focal), ("focal_tversky".into(), tversky)],
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ranks: vec![2, 3, 4, 5],
            minimum: None,
            ..Capabilities::segmentation()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    /// The loss by its formulas, in f64, on one sample's probabilities `p[c][s]` and classes.
    fn by_hand(
        p: &[[f64; 2]; 2],
        classes: [usize; 2],
        lambda: f64,
        delta: f64,
        gamma: f64,
        asymmetric: bool,
    ) -> f64 {
        let eps = 1e-7;
        let t = |c: usize, s: usize| f64::from(u8::from(classes[s] == c));
        let mut focal = 0.0;
        for s in 0..2 {
            for c in 0..2 {
                let weight = if c == 0 { 1.0 - delta } else { delta };
                let modulated = c == 0 || !asymmetric;
                let m = if modulated {
                    (1.0 - p[c][s]).powf(gamma)
                } else {
                    1.0
                };
                focal += weight * m * -t(c, s) * p[c][s].ln();
            }
        }
        let mut tversky = 0.0;
        for c in 0..2 {
            let tp: f64 = (0..2).map(|s| p[c][s] * t(c, s)).sum();
            let fn_: f64 = (0..2).map(|s| (1.0 - p[c][s]) * t(c, s)).sum();
            let fp: f64 = (0..2).map(|s| p[c][s] * (1.0 - t(c, s))).sum();
            let mti = (tp + eps) / (tp + delta * fn_ + (1.0 - delta) * fp + eps);
            let modulated = c >= 1 || !asymmetric;
            tversky += if modulated {
                (1.0 - mti).powf(1.0 - gamma)
            } else {
                1.0 - mti
            };
        }
        lambda * focal / 2.0 + (1.0 - lambda) * tversky / 2.0
    }

    #[test]
    fn matches_the_papers_formulas_by_hand() {
        // Two positions: logits [ln 3, 0] (p = 3/4, 1/4) of class 0, and [0, ln 4] (p = 1/5,
        // 4/5) of class 1.
        let (ln3, ln4) = (3f32.ln(), 4f32.ln());
        let output = || floats(&[ln3, 0.0, 0.0, ln4], [1, 2, 2]);
        let p = [[0.75, 0.2], [0.25, 0.8]];
        for (variant, asymmetric) in [("asymmetric", true), ("symmetric", false)] {
            let loss = build(&format!(
                r#"{{"name": "unified_focal", "variant": "{variant}", "lambda": 0.3, "delta": 0.7, "gamma": 0.4}}"#
            ));
            let input = LossInput::with_indices(output(), ints(&[0, 1], [1, 2])).unwrap();
            assert_close(
                &value(loss.as_ref(), input, Reduction::Mean),
                &[by_hand(&p, [0, 1], 0.3, 0.7, 0.4, asymmetric)],
                1e-5,
            );
        }
    }

    #[test]
    fn symmetric_without_focusing_is_half_cross_entropy_plus_dice() {
        let loss = build(
            r#"{"name": "unified_focal", "variant": "symmetric", "lambda": 0.25, "delta": 0.5, "gamma": 0.0}"#,
        );
        let cross_entropy = value(
            build("cross_entropy").as_ref(),
            segmentation_example(),
            Reduction::Mean,
        )[0];
        let dice = value(
            build(r#"{"name": "dice", "smooth_nr": 1e-7, "smooth_dr": 1e-7}"#).as_ref(),
            segmentation_example(),
            Reduction::Mean,
        )[0];
        assert_close(
            &value(loss.as_ref(), segmentation_example(), Reduction::Mean),
            &[0.25 * cross_entropy / 2.0 + 0.75 * dice],
            1e-5,
        );
    }

    #[test]
    fn a_perfect_prediction_is_finite_and_none_adds_up_to_sum() {
        let loss = build("unified_focal");
        let output = floats(&[30.0, -30.0, -30.0, 30.0], [1, 2, 2]);
        assert_finite(loss.as_ref(), output, |o| {
            LossInput::with_indices(o, ints(&[0, 1], [1, 2])).unwrap()
        });
        let none = value(loss.as_ref(), segmentation_example(), Reduction::None);
        let sum = value(loss.as_ref(), segmentation_example(), Reduction::Sum);
        assert_close(&[none.iter().sum()], &sum, 1e-6);
    }

    #[test]
    fn bad_options_are_named() {
        assert_eq!(
            build_error(r#"{"name": "unified_focal", "gamma": 2}"#),
            "loss `unified_focal`: option `gamma` must be in [0, 1], got 2"
        );
        assert!(build_error(r#"{"name": "unified_focal", "variant": "both"}"#).contains("variant"));
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("unified_focal")
            .unwrap()
            .assert_passed();
        let config = r#"{"name": "unified_focal", "variant": "symmetric", "gamma": 0.9}"#;
        losskit_core::conformance::check(config, build(config).as_ref()).assert_passed();
    }
}
