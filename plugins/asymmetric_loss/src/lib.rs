//! # asymmetric_loss
//!
//! A losskit plugin: the Asymmetric Loss for multi-label classification. Link the crate and
//! the loss is in `losskit_core::Registry::global()` under `asymmetric`.
#![warn(missing_docs)]

use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, MeanCount,
    OutputDomain, Reduction, TargetKind,
    burn::{
        self,
        config::Config,
        tensor::activation::{sigmoid, softplus},
    },
    config::{OptionError, ensure},
    numerics::{check_exponent, floored_pow},
    reduce::reduce_elements,
    targets::dense_target,
};

/// The names this crate registers (the registry-wide tests check they are present).
pub const LOSS_NAMES: &[&str] = &["asymmetric"];

/// Options of [`AsymmetricLoss`].
#[derive(Config, Debug)]
pub struct AsymmetricLossConfig {
    /// Focusing exponent of the negative term (γ-), in [0, 1000].
    #[config(default = 4.0)]
    pub gamma_neg: f32,
    /// Focusing exponent of the positive term (γ+), in [0, 1000].
    #[config(default = 1.0)]
    pub gamma_pos: f32,
    /// Probability margin m shifted off negatives; in [0, 1).
    #[config(default = 0.05)]
    pub clip: f32,
}

impl LossConfig for AsymmetricLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        check_exponent("gamma_neg", self.gamma_neg)?;
        check_exponent("gamma_pos", self.gamma_pos)?;
        ensure((0.0..1.0).contains(&self.clip), "clip", || {
            format!("must be in [0, 1), got {}", self.clip)
        })
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(AsymmetricLoss { config: self }))
    }
}

losskit_core::documented! {
    /// # What it does
    /// Binary cross-entropy per label with different focusing for positives and negatives, and
    /// a probability margin that discards very easy negatives (`p = σ(x)`, `m = clip`):
    ///
    /// ```text
    /// L+ = (1 - p)^γ+ · log p
    /// L- = p_m^γ- · log(1 - p_m)           p_m = max(p - m, 0)
    /// l  = -(y · L+ + (1 - y) · L-)
    /// mean = 1/M · Σ l
    /// ```
    ///
    /// Logs are computed from logits (`log p = -softplus(-x)`, `1 - p_m = min(σ(-x) + m, 1)`),
    /// so values and gradients stay finite for any logit.
    ///
    /// # When to use it
    /// Multi-label classification with many more negative than positive labels per sample
    /// (tagging, chest X-ray findings, attribute recognition), where plain BCE or symmetric
    /// focal loss under-weights the rare positives.
    ///
    /// # Options
    /// - `gamma_neg` (float in [0, 1000], default 4).
    /// - `gamma_pos` (float in [0, 1000], default 1).
    /// - `clip` (float in [0, 1), default 0.05): the margin m.
    ///
    /// # Example
    /// ```json
    /// {"name": "asymmetric", "gamma_neg": 4.0, "gamma_pos": 1.0, "clip": 0.05}
    /// ```
    ///
    /// # References
    /// - Ridnik et al., "Asymmetric Loss For Multi-Label Classification" (ICCV 2021).
    #[derive(Debug, Clone)]
    pub struct AsymmetricLoss {
        config: AsymmetricLossConfig,
    }
}

losskit_core::register_loss!(AsymmetricLoss {
    name: "asymmetric",
    aliases: ["asl"],
    category: Classification,
    summary: "Asymmetric loss (ASL) for multi-label classification: separate focusing for positives and negatives.",
    config: AsymmetricLossConfig,
});

impl Loss for AsymmetricLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let (target, _) = dense_target(input.target(), input.channels(), None)?;
        let (output, _) = input.into_parts();
        let clip = self.config.clip as f64;
        let p = sigmoid(output.clone());
        let log_p = softplus(output.clone().neg(), 1.0).neg();
        let positive = floored_pow(p.clone().neg() + 1.0, self.config.gamma_pos as f64) * log_p;
        let (shifted, log_not_shifted) = if clip > 0.0 {
            let shifted = (p - clip).clamp_min(0.0);
            let log_not = (sigmoid(output.neg()) + clip).clamp_max(1.0).log();
            (shifted, log_not)
        } else {
            (p, softplus(output, 1.0).neg())
        };
        let negative = floored_pow(shifted, self.config.gamma_neg as f64) * log_not_shifted;
        let loss = (target.clone() * positive + (target.neg() + 1.0) * negative).neg();
        Ok(reduce_elements(loss, reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            targets: vec![TargetKind::BinaryMask, TargetKind::ClassIndices],
            ranks: vec![2, 3, 4, 5],
            min_channels: 1,
            max_channels: None,
            output: OutputDomain::Logits,
            mean_over: Some(MeanCount::Elements),
            minimum: Some(0.0),
            ignore_index: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use losskit_core::{
        Registry,
        burn::tensor::{Tensor, TensorData},
        input::to_f64_vec,
    };

    use super::*;

    fn device() -> losskit_core::burn::tensor::Device {
        losskit_core::devices::default_device().unwrap().autodiff()
    }

    #[test]
    fn value_and_gradient_match_the_formula() {
        let loss = Registry::global()
            .unwrap()
            .build_spec(r#"{"name": "asl", "gamma_neg": 2.0, "gamma_pos": 0.0, "clip": 0.0}"#)
            .unwrap();
        let output = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 0.0], [1, 2]), &device())
            .require_grad();
        let target = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.0], [1, 2]), &device());
        let value = loss
            .forward(
                LossInput::with_dense(output.clone(), target).unwrap(),
                Reduction::Mean,
            )
            .unwrap()
            .value;
        // p = 1/2: positive -log(1/2); negative -(1/2)^2 log(1/2); mean over 2.
        let ln2 = 2f64.ln();
        assert!((to_f64_vec(value.clone())[0] - (ln2 + 0.25 * ln2) / 2.0).abs() < 1e-6);
        let grad = to_f64_vec(output.grad(&value.backward()).unwrap());
        // d/dx of -log σ(x) at 0 = -1/2; of -σ² log(1-σ): -(2σ σ' log(1-σ) - σ² σ) = ln2/4 + 1/8.
        assert!((grad[0] - (-0.5 / 2.0)).abs() < 1e-6, "{grad:?}");
        assert!(
            (grad[1] - (ln2 / 4.0 + 0.125) / 2.0).abs() < 1e-6,
            "{grad:?}"
        );
    }

    #[test]
    fn bad_options_are_named() {
        let error = Registry::global()
            .unwrap()
            .build_spec(r#"{"name": "asymmetric", "clip": 1.0}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("`clip`"), "{error}");
    }

    #[test]
    fn huge_focusing_exponents_are_refused_and_the_largest_stay_finite() {
        // Issue 16: an integral γ beyond i64 made burn's powf_scalar panic.
        let registry = Registry::global().unwrap();
        let error = |spec: &str| registry.build_spec(spec).err().unwrap().to_string();
        assert_eq!(
            error(r#"{"name": "asymmetric", "gamma_neg": 4.3e37}"#),
            "loss `asymmetric`: option `gamma_neg` must be a number in [0, 1000], got 4.3e37"
        );
        assert_eq!(
            error(r#"{"name": "asl", "gamma_pos": 1e30}"#),
            "loss `asymmetric`: option `gamma_pos` must be a number in [0, 1000], got 1e30"
        );
        for clip in [0.0, 0.05] {
            let loss = registry
                .build_value(&losskit_core::serde_json::json!(
                    {"name": "asymmetric", "gamma_neg": 1000, "gamma_pos": 1000, "clip": clip}
                ))
                .unwrap();
            let output = Tensor::<2>::from_data(
                TensorData::new(vec![-30.0f32, 0.0, 30.0, 0.5, 2.0, -1.0], [2, 3]),
                &device(),
            )
            .require_grad();
            let target = Tensor::<2>::from_data(
                TensorData::new(vec![1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0], [2, 3]),
                &device(),
            );
            let value = loss
                .forward(
                    LossInput::with_dense(output.clone(), target).unwrap(),
                    Reduction::Mean,
                )
                .unwrap()
                .value;
            let grad = to_f64_vec(output.grad(&value.clone().backward()).unwrap());
            let value = to_f64_vec(value)[0];
            assert!(
                value.is_finite() && grad.iter().all(|g| g.is_finite()),
                "clip {clip}: {value} {grad:?}"
            );
        }
    }
}
