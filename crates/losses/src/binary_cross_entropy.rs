use burn::{
    config::Config,
    tensor::{Tensor, activation::softplus},
};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, MeanCount,
    OutputDomain, Reduction, TargetKind,
    config::{OptionError, check_weights},
    reduce::reduce_elements,
    targets::{channel_vector, dense_target},
};

/// Options of [`BinaryCrossEntropyLoss`].
#[derive(Config, Debug)]
pub struct BinaryCrossEntropyLossConfig {
    /// Weight of the positive term, one per channel (PyTorch's `pos_weight`).
    pub pos_weight: Option<Vec<f32>>,
    /// Weight of each channel's whole loss.
    pub weights: Option<Vec<f32>>,
    /// `true`: the output holds logits (the stable form); `false`: probabilities.
    #[config(default = true)]
    pub from_logits: bool,
}

impl LossConfig for BinaryCrossEntropyLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        if let Some(pos_weight) = &self.pos_weight {
            check_weights("pos_weight", pos_weight)?;
        }
        if let Some(weights) = &self.weights {
            check_weights("weights", weights)?;
        }
        Ok(())
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(BinaryCrossEntropyLoss { config: self }))
    }
}

/// PyTorch clamps each log at -100 when the output holds probabilities.
const LOG_FLOOR: f64 = -100.0;

losskit_core::documented! {
    /// # What it does
    /// Binary cross-entropy per element, each channel an independent yes/no label:
    ///
    /// ```text
    /// from logits:  l = (1 - y)·x + (1 + (pw - 1)·y)·softplus(-x)
    /// from probs:   l = -(pw·y·log p + (1 - y)·log(1 - p))     (logs clamped at -100)
    /// mean = 1/M · Σ w_c · l
    /// ```
    ///
    /// The logit form never takes `log(sigmoid(x))`, so it is finite for any logit; `pw` is the
    /// channel's `pos_weight`, `w_c` its weight. Class-index targets are one-hot encoded (one
    /// binary problem per class).
    ///
    /// # When to use it
    /// Multi-label classification (several labels per sample), binary segmentation masks, and
    /// any per-channel yes/no target, including soft labels in [0, 1]. `pos_weight` > 1 raises
    /// recall on rare positives.
    ///
    /// # Options
    /// - `pos_weight` (list of floats, one per channel, default none).
    /// - `weights` (list of floats, one per channel, default none).
    /// - `from_logits` (bool, default true).
    ///
    /// # Example
    /// ```json
    /// {"name": "binary_cross_entropy", "pos_weight": [3.0, 2.0, 1.5]}
    /// ```
    ///
    /// # References
    /// - PyTorch `torch.nn.BCEWithLogitsLoss` and `binary_cross_entropy`.
    ///
    /// Written here rather than wrapping burn-nn's `BinaryCrossEntropyLoss`, which takes only
    /// integer targets (no soft labels) and has no `pos_weight`.
    #[derive(Debug, Clone)]
    pub struct BinaryCrossEntropyLoss {
        config: BinaryCrossEntropyLossConfig,
    }
}

losskit_core::register_loss!(BinaryCrossEntropyLoss {
    name: "binary_cross_entropy",
    aliases: ["bce", "bce_with_logits"],
    category: Classification,
    summary: "Binary cross-entropy per channel from logits (stable) or probabilities, with pos_weight.",
    config: BinaryCrossEntropyLossConfig,
});

/// `max(log(x), -100)`, with a zero (not NaN) gradient where `x` is exactly 0: the log's
/// backward would multiply 0 by `1/0` there, so 0 is replaced before the log.
fn floored_log(x: Tensor<3>) -> Tensor<3> {
    let zero = x.clone().lower_equal_elem(0.0);
    x.mask_fill(zero.clone(), 1.0)
        .log()
        .mask_fill(zero, LOG_FLOOR)
        .clamp_min(LOG_FLOOR)
}

impl Loss for BinaryCrossEntropyLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        const NAME: &str = "binary_cross_entropy";
        let channels = input.channels();
        let pos_weight = self
            .config
            .pos_weight
            .as_deref()
            .map(|values| channel_vector(NAME, "pos_weight", values, channels, &input.device()))
            .transpose()?;
        let weights = self
            .config
            .weights
            .as_deref()
            .map(|values| channel_vector(NAME, "weights", values, channels, &input.device()))
            .transpose()?;
        let (target, _) = dense_target(input.target(), channels, None)?;
        let (output, _) = input.into_parts();
        let mut loss = if self.config.from_logits {
            let log_weight = match &pos_weight {
                Some(pw) => target.clone() * (pw.clone() - 1.0) + 1.0,
                None => target.ones_like(),
            };
            (target.clone().neg() + 1.0) * output.clone() + log_weight * softplus(output.neg(), 1.0)
        } else {
            let log_p = floored_log(output.clone());
            let log_not_p = floored_log(output.neg() + 1.0);
            let positive = match &pos_weight {
                Some(pw) => target.clone() * pw.clone() * log_p,
                None => target.clone() * log_p,
            };
            (positive + (target.neg() + 1.0) * log_not_p).neg()
        };
        if let Some(weights) = weights {
            loss = loss * weights;
        }
        Ok(reduce_elements(loss, reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        // Per-channel options fix C.
        let fixed = self
            .config
            .pos_weight
            .as_ref()
            .or(self.config.weights.as_ref())
            .map(Vec::len);
        Capabilities {
            min_channels: fixed.unwrap_or(1),
            max_channels: fixed,
            targets: vec![TargetKind::BinaryMask, TargetKind::ClassIndices],
            output: if self.config.from_logits {
                OutputDomain::Logits
            } else {
                OutputDomain::UnitInterval
            },
            minimum: Some(0.0),
            mean_over: Some(MeanCount::Elements),
            ..Capabilities::classification()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn value_and_gradient_from_logits() {
        let loss = build(r#"{"name": "binary_cross_entropy", "pos_weight": [2.0]}"#);
        let (value, grad) = value_and_grad(loss.as_ref(), floats(&[0.5, -1.0], [2, 1]), |o| {
            LossInput::with_dense(o, floats(&[1.0, 0.0], [2, 1])).unwrap()
        });
        let expected = (-2.0 * sigmoid(0.5).ln() - (1.0 - sigmoid(-1.0)).ln()) / 2.0;
        assert_close(&[value], &[expected], 1e-6);
        // d/dx = (pw·y + 1 - y)·σ(x) - pw·y, over M = 2.
        assert_close(
            &grad,
            &[(2.0 * sigmoid(0.5) - 2.0) / 2.0, sigmoid(-1.0) / 2.0],
            1e-6,
        );
    }

    #[test]
    fn huge_logits_stay_finite_and_probabilities_agree() {
        let loss = build("bce");
        let input =
            LossInput::with_dense(floats(&[1e4, -1e4], [1, 2]), floats(&[0.0, 1.0], [1, 2]))
                .unwrap();
        assert_close(&value(loss.as_ref(), input, Reduction::Mean), &[1e4], 1e-6);
        let from_probs = build(r#"{"name": "bce", "from_logits": false}"#);
        let input =
            LossInput::with_dense(floats(&[0.25, 0.5], [1, 2]), floats(&[1.0, 0.0], [1, 2]))
                .unwrap();
        assert_close(
            &value(from_probs.as_ref(), input, Reduction::Mean),
            &[-(0.25f64.ln() + 0.5f64.ln()) / 2.0],
            1e-6,
        );
    }

    #[test]
    fn probabilities_of_exactly_zero_and_one_give_a_finite_value_and_gradient() {
        let loss = build(r#"{"name": "bce", "from_logits": false}"#);
        // Right and wrong certain predictions: the wrong ones hit the -100 floor.
        let (value, grad) =
            value_and_grad(loss.as_ref(), floats(&[0.0, 1.0, 0.0, 1.0], [1, 4]), |o| {
                LossInput::with_dense(o, floats(&[0.0, 1.0, 1.0, 0.0], [1, 4])).unwrap()
            });
        assert_close(&[value], &[200.0 / 4.0], 1e-6);
        assert!(grad.iter().all(|g| g.is_finite()), "{grad:?}");
        let weighted = build(r#"{"name": "bce", "from_logits": false, "pos_weight": [2.0, 1.0]}"#);
        let (value, grad) = value_and_grad(
            weighted.as_ref(),
            floats(&[0.0, 1.0, 1.0, 0.0], [2, 2]),
            |o| LossInput::with_dense(o, floats(&[1.0, 1.0, 1.0, 0.0], [2, 2])).unwrap(),
        );
        assert_close(&[value], &[2.0 * 100.0 / 4.0], 1e-6);
        assert!(grad.iter().all(|g| g.is_finite()), "{grad:?}");
    }

    #[test]
    fn options_are_checked() {
        assert!(build_error(r#"{"name": "bce", "pos_weight": [-1.0]}"#).contains("pos_weight"));
        let loss = build(r#"{"name": "bce", "pos_weight": [1.0, 2.0]}"#);
        let input =
            LossInput::with_dense(floats(&[0.0; 3], [1, 3]), floats(&[0.0; 3], [1, 3])).unwrap();
        assert!(
            loss.forward(input, Reduction::Mean)
                .unwrap_err()
                .to_string()
                .contains("3 channels")
        );
    }
}
