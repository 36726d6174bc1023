use burn::{
    config::Config,
    tensor::{
        Tensor,
        activation::{log_softmax, sigmoid, softplus},
    },
};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, MeanCount, Reduction,
    TargetKind,
    config::{OptionError, check_weights, ensure},
    numerics::{check_exponent, floored_pow},
    reduce::{reduce_elements, reduce_maybe_weighted, reduce_weighted},
    targets::{channel_vector, dense_target},
};
use serde::{Deserialize, Serialize};

/// Options of [`FocalLoss`].
#[derive(Config, Debug)]
pub struct FocalLossConfig {
    /// The focusing parameter γ in [0, 1000]; 0 gives cross-entropy.
    #[config(default = 2.0)]
    pub gamma: f32,
    /// Per-class weights α (one per class); in the sigmoid form, α weighs positives and
    /// 1 - α negatives.
    pub alpha: Option<Vec<f32>>,
    /// The form of the loss: softmax or sigmoid.
    #[config(default = "FocalActivation::Auto")]
    pub activation: FocalActivation,
    /// A target class index whose positions contribute nothing (in the sigmoid form, in no
    /// channel).
    pub ignore_index: Option<i64>,
}

/// The form of a [`FocalLoss`]: its `activation` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FocalActivation {
    /// `auto`: softmax for C > 1 channels, sigmoid for C = 1.
    Auto,
    /// `softmax`: softmax over the channels (exclusive classes).
    Softmax,
    /// `sigmoid`: sigmoid per channel (multi-label: one binary problem per channel).
    Sigmoid,
}

impl LossConfig for FocalLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        check_exponent("gamma", self.gamma)?;
        if let Some(alpha) = &self.alpha {
            check_weights("alpha", alpha)?;
            if self.activation == FocalActivation::Sigmoid || alpha.len() == 1 {
                ensure(alpha.iter().all(|a| *a <= 1.0), "alpha", || {
                    "must be in [0, 1] in the sigmoid form".into()
                })?;
            }
        }
        Ok(())
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(FocalLoss { config: self }))
    }
}

losskit_core::documented! {
    /// # What it does
    /// Cross-entropy scaled down on well-classified examples by `(1 - p_t)^γ`:
    ///
    /// ```text
    /// softmax form (C > 1):  l = -α_y · (1 - p_y)^γ · log p_y            p = softmax(x)
    /// sigmoid form (C = 1):  l = α_t · (1 - p_t)^γ · BCE(x, y)           p_t = σ(x) if y = 1 else 1 - σ(x)
    /// mean = 1/M · Σ l
    ///   softmax form: M = N·S positions (the non-ignored positions with ignore_index)
    ///   sigmoid form: M = N·C·S elements (C times the non-ignored positions with ignore_index)
    /// ```
    ///
    /// With γ = 0 and no α it equals cross-entropy. Dense probability targets use
    /// `l = -Σ_c α_c t_c (1 - p_c)^γ log p_c`. In the sigmoid form class-index targets are
    /// one-hot encoded (one binary problem per class) and an ignored position counts in no
    /// channel. `sum` adds every `l`; `none` gives each sample's sum. `(1 - p_t)` is floored at
    /// 1e-12 before the power, so the gradient stays finite for any γ.
    ///
    /// # When to use it
    /// Heavy class imbalance and many easy negatives (dense detection, rare-class
    /// classification, segmentation of small structures): the easy majority stops dominating
    /// the gradient. γ = 2 is the usual choice; raise it to focus harder.
    ///
    /// # Options
    /// - `gamma` (float in [0, 1000], default 2).
    /// - `alpha` (list of floats, default none): per-class weights; in the sigmoid form each
    ///   in [0, 1], weighting positives by α and negatives by 1 - α.
    /// - `activation` (`auto` | `softmax` | `sigmoid`, default `auto`).
    /// - `ignore_index` (integer, default none): positions of this class index count nowhere,
    ///   in either form.
    ///
    /// # Example
    /// ```json
    /// {"name": "focal", "gamma": 2.0, "alpha": [0.25, 0.75]}
    /// ```
    ///
    /// # References
    /// - Lin et al., "Focal Loss for Dense Object Detection" (ICCV 2017).
    /// - torchvision `sigmoid_focal_loss`.
    ///
    /// Written here: burn-nn has no focal loss.
    #[derive(Debug, Clone)]
    pub struct FocalLoss {
        config: FocalLossConfig,
    }
}

losskit_core::register_loss!(FocalLoss {
    name: "focal",
    aliases: ["focal_loss"],
    category: Classification,
    summary: "Focal loss: cross-entropy down-weighting easy examples by (1 - p)^gamma; softmax or sigmoid form.",
    config: FocalLossConfig,
});

impl FocalLoss {
    fn uses_sigmoid(&self, channels: usize) -> bool {
        match self.config.activation {
            FocalActivation::Sigmoid => true,
            FocalActivation::Softmax => false,
            FocalActivation::Auto => channels == 1,
        }
    }

    /// Whether the options alone fix the sigmoid form (`auto` with a single α is the
    /// one-channel sigmoid form).
    fn declares_sigmoid(&self) -> bool {
        match self.config.activation {
            FocalActivation::Sigmoid => true,
            FocalActivation::Softmax => false,
            FocalActivation::Auto => self
                .config
                .alpha
                .as_ref()
                .is_some_and(|alpha| alpha.len() == 1),
        }
    }
}

/// The focal loss of each element `[N, C, S]` of logits against a dense target, before class
/// weights and reduction: the softmax form (over C) or the sigmoid form (each element alone).
pub(crate) fn focal_elements(
    output: Tensor<3>,
    target: Tensor<3>,
    gamma: f64,
    sigmoid_form: bool,
) -> Tensor<3> {
    if sigmoid_form {
        let bce =
            (target.clone().neg() + 1.0) * output.clone() + softplus(output.clone().neg(), 1.0);
        let complement =
            target.clone() * sigmoid(output.clone().neg()) + (target.neg() + 1.0) * sigmoid(output);
        return floored_pow(complement, gamma) * bce;
    }
    let log_p = log_softmax(output, 1);
    let complement = log_p.clone().exp().neg() + 1.0;
    (floored_pow(complement, gamma) * log_p * target).neg()
}

impl Loss for FocalLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let [n, channels, s] = input.output().dims();
        let alpha = self
            .config
            .alpha
            .as_deref()
            .map(|alpha| channel_vector("focal", "alpha", alpha, channels, &input.device()))
            .transpose()?;
        let gamma = self.config.gamma as f64;
        let sigmoid_form = self.uses_sigmoid(channels);
        // Ignored positions are all-zero in the target and reported in `valid`.
        let (target, valid) = dense_target(input.target(), channels, self.config.ignore_index)?;
        let (output, _) = input.into_parts();
        if sigmoid_form {
            let mut loss = focal_elements(output, target.clone(), gamma, true);
            if let Some(alpha) = alpha {
                loss = loss
                    * (target.clone() * alpha.clone() + (target.neg() + 1.0) * (alpha.neg() + 1.0));
            }
            return Ok(match valid {
                None => reduce_elements(loss, reduction),
                Some(valid) => {
                    // An ignored position counts in no channel: `mean` is over C·(counted positions).
                    let per_position = loss.sum_dim(1).reshape([n, s]) * valid.clone();
                    reduce_weighted(per_position, valid * channels as f64, reduction)
                }
            }
            .into());
        }
        let mut loss = focal_elements(output, target, gamma, false);
        if let Some(alpha) = alpha {
            loss = loss * alpha;
        }
        let loss = loss.sum_dim(1).reshape([n, s]);
        Ok(reduce_maybe_weighted(loss, valid, reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::classification();
        capabilities.minimum = Some(0.0);
        if self.declares_sigmoid() {
            capabilities.targets = vec![TargetKind::BinaryMask, TargetKind::ClassIndices];
            capabilities.min_channels = 1;
            capabilities.mean_over = Some(MeanCount::Elements);
        } else {
            capabilities.targets.push(TargetKind::Probabilities);
        }
        if let Some(alpha) = &self.config.alpha {
            // One α per channel: the options fix C.
            capabilities.min_channels = alpha.len();
            capabilities.max_channels = Some(alpha.len());
        }
        if self.config.ignore_index.is_some() {
            capabilities.mean_over = None;
            capabilities.ignore_index = self.config.ignore_index;
        }
        capabilities
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn value_and_gradient_match_the_formula() {
        let loss = build(r#"{"name": "focal", "gamma": 2.0}"#);
        // p_y = 3/4: loss = -(1/4)^2 · log(3/4).
        let (value, grad) = value_and_grad(loss.as_ref(), floats(&[0.0, 3f32.ln()], [1, 2]), |o| {
            LossInput::with_indices(o, ints(&[1], [1])).unwrap()
        });
        assert_close(&[value], &[-(0.0625f64) * 0.75f64.ln()], 1e-6);
        // d/dz_y with p = 3/4, γ = 2: (1-p)^γ (γ p log p - (1 - p)) ... checked numerically:
        let p: f64 = 0.75;
        let dldp = 2.0 * (1.0 - p) * p.ln() - (1.0 - p).powi(2) / p;
        let dz_y = dldp * p * (1.0 - p);
        assert_close(&grad, &[-dz_y, dz_y], 1e-5);
    }

    #[test]
    fn gamma_zero_is_cross_entropy() {
        let focal = build(r#"{"name": "focal", "gamma": 0.0}"#);
        let ce = build("cross_entropy");
        let make = || {
            LossInput::with_indices(
                floats(&[0.3, -1.0, 2.0, 0.5, 0.1, -0.2], [2, 3]),
                ints(&[2, 0], [2]),
            )
            .unwrap()
        };
        assert_close(
            &value(focal.as_ref(), make(), Reduction::Mean),
            &value(ce.as_ref(), make(), Reduction::Mean),
            1e-6,
        );
    }

    #[test]
    fn sigmoid_form_for_one_channel() {
        let loss = build(r#"{"name": "focal", "gamma": 1.0}"#);
        let input = LossInput::with_dense(floats(&[0.0], [1, 1]), floats(&[1.0], [1, 1])).unwrap();
        // p_t = 1/2: (1/2)^1 · log 2.
        assert_close(
            &value(loss.as_ref(), input, Reduction::Mean),
            &[0.5 * 2f64.ln()],
            1e-6,
        );
    }

    #[test]
    fn sigmoid_form_leaves_ignored_positions_out_of_every_channel() {
        let loss = build(
            r#"{"name": "focal", "activation": "sigmoid", "gamma": 1.0, "ignore_index": -1}"#,
        );
        // Two positions of two channels; the second position is ignored (it would add a lot).
        let make = |o| LossInput::with_indices(o, ints(&[1, -1], [1, 2])).unwrap();
        let (value, grad) = value_and_grad(
            loss.as_ref(),
            floats(&[0.0, 9.0, 0.0, -9.0], [1, 2, 2]),
            make,
        );
        // Position 0 has class 1: both channels have p_t = 1/2, l = (1/2)·log 2 each, over C·1 = 2.
        assert_close(&[value], &[0.5 * 2f64.ln()], 1e-6);
        assert!(grad[1] == 0.0 && grad[3] == 0.0, "{grad:?}");
        let sum = losskit_core::input::to_f64_vec(
            loss.forward(
                make(floats(&[0.0, 9.0, 0.0, -9.0], [1, 2, 2])),
                Reduction::Sum,
            )
            .unwrap()
            .value,
        );
        assert_close(&sum, &[2f64.ln()], 1e-6);
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("focal")
            .unwrap()
            .assert_passed();
        for config in [
            r#"{"name": "focal", "activation": "sigmoid", "ignore_index": -1}"#,
            r#"{"name": "focal", "alpha": [0.2, 0.3, 0.5], "ignore_index": 7}"#,
        ] {
            losskit_core::conformance::check(config, build(config).as_ref()).assert_passed();
        }
    }

    #[test]
    fn bad_options_are_named() {
        assert!(build_error(r#"{"name": "focal", "gamma": -1}"#).contains("`gamma`"));
        assert_eq!(
            build_error(r#"{"name": "focal", "activation": "relu"}"#),
            "loss `focal`: option `activation` has the wrong type or value: unknown variant \
             `relu`, expected one of `auto`, `softmax`, `sigmoid`"
        );
    }

    #[test]
    fn a_huge_gamma_is_refused_and_the_largest_stays_finite() {
        // Issue 16: an integral γ beyond i64 made burn's powf_scalar panic.
        assert_eq!(
            build_error(r#"{"name": "focal", "gamma": 1e30}"#),
            "loss `focal`: option `gamma` must be a number in [0, 1000], got 1e30"
        );
        for activation in ["softmax", "sigmoid"] {
            let loss = build(&format!(
                r#"{{"name": "focal", "gamma": 1000, "activation": "{activation}"}}"#
            ));
            let output = floats(&[-30.0, 0.0, 30.0, 0.5, 2.0, -1.0], [2, 3]);
            assert_finite(loss.as_ref(), output, |o| {
                LossInput::with_indices(o, ints(&[0, 2], [2])).unwrap()
            });
        }
    }
}
