//! # class_balanced_loss
//!
//! A losskit plugin: class-balanced cross-entropy / focal loss weighted by the effective number
//! of samples per class. Link the crate and the loss is registered as `class_balanced`.
#![warn(missing_docs)]

use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,
    TargetKind,
    burn::{self, config::Config, tensor::activation::log_softmax},
    config::{OptionError, ensure},
    numerics::{check_exponent, floored_pow},
    reduce::reduce_positions,
    targets::{channel_vector, dense_target},
};

/// The names this crate registers (the registry-wide tests check they are present).
pub const LOSS_NAMES: &[&str] = &["class_balanced"];

/// Options of [`ClassBalancedLoss`].
#[derive(Config, Debug)]
pub struct ClassBalancedLossConfig {
    /// Training samples of each class (the dataset's counts, not the batch's).
    pub samples_per_class: Vec<f64>,
    /// β in [0, 1): 0 gives no re-weighting, β → 1 gives inverse frequency.
    #[config(default = 0.9999)]
    pub beta: f64,
    /// The re-weighted loss: "cross_entropy" or "focal".
    #[config(default = "String::from(\"cross_entropy\")")]
    pub base: String,
    /// Focal γ in [0, 1000] (used when `base` is "focal").
    #[config(default = 2.0)]
    pub gamma: f64,
}

impl LossConfig for ClassBalancedLossConfig {
    const REQUIRED: &'static [(&'static str, &'static str)] = &[(
        "samples_per_class",
        "the number of training samples of each class, e.g. [5000, 500, 50]",
    )];

    fn example() -> Self {
        Self::new(vec![100.0, 10.0, 1.0])
    }

    fn validate(&self) -> Result<(), OptionError> {
        ensure(
            !self.samples_per_class.is_empty(),
            "samples_per_class",
            || "must list one count per class".into(),
        )?;
        if let Some(bad) = self
            .samples_per_class
            .iter()
            .find(|n| !n.is_finite() || **n < 1.0)
        {
            return Err(OptionError::new(
                "samples_per_class",
                format!("counts must be >= 1, got {bad}"),
            ));
        }
        ensure((0.0..1.0).contains(&self.beta), "beta", || {
            format!("must be in [0, 1), got {}", self.beta)
        })?;
        ensure(
            ["cross_entropy", "focal"].contains(&self.base.as_str()),
            "base",
            || {
                format!(
                    "must be \"cross_entropy\" or \"focal\", got \"{}\"",
                    self.base
                )
            },
        )?;
        check_exponent("gamma", self.gamma)
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        let weights = effective_number_weights(&self.samples_per_class, self.beta);
        Ok(Box::new(ClassBalancedLoss {
            weights,
            gamma: if self.base == "focal" {
                self.gamma
            } else {
                0.0
            },
        }))
    }
}

/// `w_c = (1 - β) / (1 - β^n_c)`, normalised to sum to the number of classes.
pub fn effective_number_weights(samples_per_class: &[f64], beta: f64) -> Vec<f32> {
    let raw: Vec<f64> = samples_per_class
        .iter()
        .map(|&n| {
            if beta == 0.0 {
                1.0
            } else {
                (1.0 - beta) / (1.0 - beta.powf(n))
            }
        })
        .collect();
    let total: f64 = raw.iter().sum();
    raw.iter()
        .map(|w| (w * samples_per_class.len() as f64 / total) as f32)
        .collect()
}

losskit_core::documented! {
    /// # What it does
    /// Softmax cross-entropy (or focal loss) with per-class weights from the *effective number
    /// of samples* `E_n = (1 - β^n) / (1 - β)`:
    ///
    /// ```text
    /// w_c  = C · (1/E_{n_c}) / Σ_k (1/E_{n_k})
    /// l_i  = -w_{y_i} · (1 - p_{y_i})^γ · log p_{y_i}      (γ = 0 for cross-entropy)
    /// mean = 1/M · Σ_i l_i
    /// ```
    ///
    /// # When to use it
    /// Long-tailed classification where inverse-frequency weights over-correct: the effective
    /// number saturates for large classes, so rare classes gain weight without the head classes
    /// collapsing. Tune β in {0.9, 0.99, 0.999, 0.9999}.
    ///
    /// # Options
    /// - `samples_per_class` (required): training-set counts per class.
    /// - `beta` (float in [0, 1), default 0.9999).
    /// - `base` (`cross_entropy` | `focal`, default `cross_entropy`).
    /// - `gamma` (float in [0, 1000], default 2): focal γ, used with `base: focal`.
    ///
    /// # Example
    /// ```json
    /// {"name": "class_balanced", "samples_per_class": [5000, 500, 50], "beta": 0.999}
    /// ```
    ///
    /// # References
    /// - Cui et al., "Class-Balanced Loss Based on Effective Number of Samples" (CVPR 2019).
    #[derive(Debug, Clone)]
    pub struct ClassBalancedLoss {
        weights: Vec<f32>,
        gamma: f64,
    }
}

losskit_core::register_loss!(ClassBalancedLoss {
    name: "class_balanced",
    aliases: ["effective_number"],
    category: Classification,
    summary: "Class-balanced cross-entropy or focal loss, weighted by the effective number of samples per class.",
    config: ClassBalancedLossConfig,
});

impl Loss for ClassBalancedLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let [n, classes, s] = input.output().dims();
        let weights = channel_vector(
            "class_balanced",
            "samples_per_class",
            &self.weights,
            classes,
            &input.device(),
        )?;
        let (target, _) = dense_target(input.target(), classes, None)?;
        let (output, _) = input.into_parts();
        let log_p = log_softmax(output, 1);
        let mut per_class = log_p.clone() * target * weights;
        if self.gamma > 0.0 {
            per_class = per_class * floored_pow(log_p.exp().neg() + 1.0, self.gamma);
        }
        let loss = per_class.sum_dim(1).reshape([n, s]).neg();
        Ok(reduce_positions(loss, reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            targets: vec![TargetKind::ClassIndices, TargetKind::Probabilities],
            min_channels: self.weights.len(),
            max_channels: Some(self.weights.len()),
            minimum: Some(0.0),
            ..Capabilities::classification()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use losskit_core::{
        Registry,
        burn::tensor::{Tensor, TensorData},
    };

    #[test]
    fn weights_follow_the_effective_number() {
        let weights = effective_number_weights(&[100.0, 10.0, 1.0], 0.9);
        let raw: Vec<f64> = [100.0f64, 10.0, 1.0]
            .iter()
            .map(|n| 0.1 / (1.0 - 0.9f64.powf(*n)))
            .collect();
        let total: f64 = raw.iter().sum();
        for (w, r) in weights.iter().zip(&raw) {
            assert!((*w as f64 - 3.0 * r / total).abs() < 1e-6);
        }
        assert!(weights[2] > weights[1] && weights[1] > weights[0]);
        assert_eq!(effective_number_weights(&[5.0, 7.0], 0.0), vec![1.0, 1.0]);
    }

    #[test]
    fn value_is_weighted_cross_entropy() {
        use losskit_core::burn::tensor::Int;
        let loss = Registry::global()
            .unwrap()
            .build_spec(r#"{"name": "class_balanced", "samples_per_class": [1, 1], "beta": 0.5}"#)
            .unwrap();
        let device = losskit_core::devices::default_device().unwrap();
        let output =
            Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 3f32.ln()], [1, 2]), &device);
        let target = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64], [1]), &device);
        let value = loss
            .forward(
                LossInput::with_indices(output, target).unwrap(),
                Reduction::Mean,
            )
            .unwrap()
            .value;
        // Equal counts give weights 1: plain cross-entropy -log(3/4).
        assert!((losskit_core::input::to_f64_vec(value)[0] + 0.75f64.ln()).abs() < 1e-6);
    }

    #[test]
    fn options_are_checked() {
        let registry = Registry::global().unwrap();
        assert!(
            registry
                .build_spec(r#"{"name": "class_balanced"}"#)
                .err()
                .unwrap()
                .to_string()
                .contains("samples_per_class")
        );
        assert!(
            registry
                .build_spec(r#"{"name": "class_balanced", "samples_per_class": [3], "beta": 1.0}"#)
                .err()
                .unwrap()
                .to_string()
                .contains("`beta`")
        );
        // Issue 16: an integral γ beyond i64 made burn's powf_scalar panic.
        assert_eq!(
            registry
                .build_spec(
                    r#"{"name": "class_balanced", "samples_per_class": [3, 1], "base": "focal", "gamma": 1e300}"#
                )
                .err()
                .unwrap()
                .to_string(),
            "loss `class_balanced`: option `gamma` must be a number in [0, 1000], got 1e300"
        );
    }
}
