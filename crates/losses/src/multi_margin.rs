use burn::{config::Config, nn::loss::MultiMarginLossConfig as BurnMultiMarginConfig};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction, Target,
    config::{OptionError, ensure},
    error::InputError,
    reduce::reduce_samples,
    targets::checked_indices,
};

/// Options of [`MultiMarginLoss`].
#[derive(Config, Debug)]
pub struct MultiMarginLossConfig {
    /// The margin the target score must win by; >= 0.
    #[config(default = 1.0)]
    pub margin: f64,
    /// The power of the hinge, 1 or 2.
    #[config(default = 1)]
    pub p: i32,
}

impl LossConfig for MultiMarginLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        ensure(self.p == 1 || self.p == 2, "p", || {
            format!("must be 1 or 2, got {}", self.p)
        })?;
        ensure(
            self.margin.is_finite() && self.margin >= 0.0,
            "margin",
            || format!("must be a finite number >= 0, got {}", self.margin),
        )
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(MultiMarginLoss { config: self }))
    }
}

losskit_core::documented! {
    /// # What it does
    /// The multi-class hinge loss (Crammer–Singer style, as PyTorch's `MultiMarginLoss`):
    ///
    /// ```text
    /// loss_i = 1/C · Σ_{j ≠ y_i} max(0, margin - x_{i,y_i} + x_{i,j})^p
    /// mean = 1/N · Σ_i loss_i
    /// ```
    ///
    /// # When to use it
    /// SVM-style classifiers, and when only the ranking of the target score matters: the loss
    /// is exactly zero once the target wins by the margin.
    ///
    /// # Options
    /// - `margin` (float >= 0, default 1).
    /// - `p` (1 or 2, default 1).
    ///
    /// # Example
    /// ```json
    /// {"name": "multi_margin", "margin": 1.0, "p": 1}
    /// ```
    ///
    /// # References
    /// - PyTorch `torch.nn.MultiMarginLoss`.
    ///
    /// Wraps burn-nn's `MultiMarginLoss`; outputs of shape `[N, C]` only, as in PyTorch.
    #[derive(Debug, Clone)]
    pub struct MultiMarginLoss {
        config: MultiMarginLossConfig,
    }
}

losskit_core::register_loss!(MultiMarginLoss {
    name: "multi_margin",
    aliases: ["multi_class_hinge"],
    category: Classification,
    summary: "Multi-class hinge loss: the target score must beat every other score by a margin.",
    config: MultiMarginLossConfig,
});

impl Loss for MultiMarginLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let [n, c, s] = input.output().dims();
        if s != 1 {
            return Err(InputError::Unsupported {
                loss: "multi_margin".into(),
                problem: format!("takes outputs of shape [N, C], got {:?}", input.shape()),
            }
            .into());
        }
        let (output, target) = input.into_parts();
        let Target::Indices(indices) = target else {
            return Err(InputError::Unsupported {
                loss: "multi_margin".into(),
                problem: "needs class-index targets".into(),
            }
            .into());
        };
        let (indices, _) = checked_indices(&indices, c, None)?;
        let hinge = BurnMultiMarginConfig::new()
            .with_margin(self.config.margin)
            .with_p(self.config.p)
            .init()
            .forward_no_reduction(output.reshape([n, c]), indices.reshape([n]));
        Ok(reduce_samples(hinge, reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ranks: vec![2],
            minimum: Some(0.0),
            ..Capabilities::classification()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn value_and_gradient() {
        let loss = build("multi_margin");
        // Target 0 scores 1, others 0.5 and -1: hinges 0.5 and 0, over C = 3.
        let (value, grad) = value_and_grad(loss.as_ref(), floats(&[1.0, 0.5, -1.0], [1, 3]), |o| {
            LossInput::with_indices(o, ints(&[0], [1])).unwrap()
        });
        assert_close(&[value], &[0.5 / 3.0], 1e-6);
        assert_close(&grad, &[-1.0 / 3.0, 1.0 / 3.0, 0.0], 1e-6);
    }

    #[test]
    fn options_are_checked() {
        assert!(build_error(r#"{"name": "multi_margin", "p": 3}"#).contains("`p`"));
        assert!(build_error(r#"{"name": "multi_margin", "margin": -1}"#).contains("`margin`"));
    }
}
