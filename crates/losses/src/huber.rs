use burn::{config::Config, nn::loss::HuberLossConfig as BurnHuberConfig};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,
    config::{OptionError, ensure},
};

use crate::elementwise::forward_elementwise;

/// Options of [`HuberLoss`].
#[derive(Config, Debug)]
pub struct HuberLossConfig {
    /// Where the loss turns from quadratic to linear; must be > 0.
    #[config(default = 1.0)]
    pub delta: f32,
}

impl LossConfig for HuberLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        ensure(self.delta.is_finite() && self.delta > 0.0, "delta", || {
            format!("must be a finite number > 0, got {}", self.delta)
        })
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(HuberLoss { delta: self.delta }))
    }
}

losskit_core::documented! {
    /// # What it does
    /// Quadratic for small residuals, linear for large ones (`r = x - y`, `δ = delta`):
    ///
    /// ```text
    /// l(r) = 0.5 r²               if |r| <= δ
    ///        δ (|r| - 0.5 δ)      otherwise
    /// mean = 1/M · Σ l(r)
    /// ```
    ///
    /// # When to use it
    /// Regression with occasional outliers: MSE's fast convergence near the optimum, MAE's
    /// robustness far from it.
    ///
    /// # Options
    /// - `delta` (float > 0, default 1.0): the residual where the loss turns linear.
    ///
    /// # Example
    /// ```json
    /// {"name": "huber", "delta": 0.7}
    /// ```
    ///
    /// # References
    /// - Huber, "Robust Estimation of a Location Parameter" (1964).
    /// - PyTorch `torch.nn.functional.huber_loss`.
    ///
    /// Wraps burn-nn's `HuberLoss` (checked against the reference vectors).
    #[derive(Debug, Clone, Copy)]
    pub struct HuberLoss {
        delta: f32,
    }
}

losskit_core::register_loss!(HuberLoss {
    name: "huber",
    aliases: [],
    category: Regression,
    summary: "Huber loss: quadratic near zero, linear beyond delta; robust to outliers.",
    config: HuberLossConfig,
});

impl Loss for HuberLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let huber = BurnHuberConfig::new(self.delta).init();
        forward_elementwise("huber", input, reduction, |output, target| {
            huber.forward_no_reduction(output, target)
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
        let loss = build(r#"{"name": "huber", "delta": 0.5}"#);
        let (value, grad) = value_and_grad(
            loss.as_ref(),
            floats(&[-2.0, -0.5, 0.0, 0.3], [1, 4]),
            |o| LossInput::with_dense(o, floats(&[0.0; 4], [1, 4])).unwrap(),
        );
        assert_close(&[value], &[(0.875 + 0.125 + 0.0 + 0.045) / 4.0], 1e-6);
        assert_close(&grad, &[-0.5 / 4.0, -0.5 / 4.0, 0.0, 0.3 / 4.0], 1e-6);
    }

    #[test]
    fn delta_must_be_positive() {
        assert!(build_error(r#"{"name": "huber", "delta": 0}"#).contains("`delta`"));
        assert!(build_error(r#"{"name": "huber", "delta": -1}"#).contains("> 0"));
    }
}
