use burn::{config::Config, nn::loss::SmoothL1LossConfig as BurnSmoothL1Config};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,
    config::{OptionError, ensure},
};

use crate::elementwise::forward_elementwise;

/// Options of [`SmoothL1Loss`].
#[derive(Config, Debug)]
pub struct SmoothL1LossConfig {
    /// Where the loss turns from quadratic to linear; must be > 0.
    #[config(default = 1.0)]
    pub beta: f32,
}

impl LossConfig for SmoothL1LossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        ensure(self.beta.is_finite() && self.beta > 0.0, "beta", || {
            format!(
                "must be a finite number > 0 (use `mae` for beta = 0), got {}",
                self.beta
            )
        })
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(SmoothL1Loss { beta: self.beta }))
    }
}

losskit_core::documented! {
    /// # What it does
    /// Smooth L1 (`r = x - y`, `β = beta`), Huber divided by β:
    ///
    /// ```text
    /// l(r) = 0.5 r² / β       if |r| < β
    ///        |r| - 0.5 β      otherwise
    /// mean = 1/M · Σ l(r)
    /// ```
    ///
    /// # When to use it
    /// Bounding-box and other regression where large errors should count linearly; its
    /// gradient magnitude is at most 1 whatever β.
    ///
    /// # Options
    /// - `beta` (float > 0, default 1.0).
    ///
    /// # Example
    /// ```json
    /// {"name": "smooth_l1", "beta": 0.5}
    /// ```
    ///
    /// # References
    /// - Girshick, "Fast R-CNN" (2015).
    /// - PyTorch `torch.nn.functional.smooth_l1_loss`.
    ///
    /// Wraps burn-nn's `SmoothL1Loss` (checked against the reference vectors).
    #[derive(Debug, Clone, Copy)]
    pub struct SmoothL1Loss {
        beta: f32,
    }
}

losskit_core::register_loss!(SmoothL1Loss {
    name: "smooth_l1",
    aliases: [],
    category: Regression,
    summary: "Smooth L1: quadratic below beta, then linear (Fast R-CNN's box loss).",
    config: SmoothL1LossConfig,
});

impl Loss for SmoothL1Loss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let smooth = BurnSmoothL1Config::new().with_beta(self.beta).init();
        forward_elementwise("smooth_l1", input, reduction, |output, target| {
            smooth.forward(output, target)
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::regression()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn value_and_gradient() {
        let loss = build(r#"{"name": "smooth_l1", "beta": 0.5}"#);
        let (value, grad) = value_and_grad(loss.as_ref(), floats(&[2.0, 0.25], [1, 2]), |o| {
            LossInput::with_dense(o, floats(&[0.0, 0.0], [1, 2])).unwrap()
        });
        assert_close(&[value], &[((2.0 - 0.25) + 0.5 * 0.0625 / 0.5) / 2.0], 1e-6);
        assert_close(&grad, &[0.5, 0.25], 1e-6);
    }

    #[test]
    fn beta_must_be_positive() {
        assert!(build_error(r#"{"name": "smooth_l1", "beta": 0}"#).contains("`beta`"));
    }
}
