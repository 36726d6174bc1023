use burn::{config::Config, tensor::Tensor};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,
};

use crate::elementwise::forward_elementwise;

/// Options of [`LogCoshLoss`] (it has none).
#[derive(Config, Debug)]
pub struct LogCoshLossConfig {}

impl LossConfig for LogCoshLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(LogCoshLoss))
    }
}

losskit_core::documented! {
    /// # What it does
    /// The log of the hyperbolic cosine of the residual `r = x - y`:
    ///
    /// ```text
    /// l(r) = log cosh(r) = |r| + log1p(exp(-2|r|)) - log 2
    /// mean = 1/M · Σ l(r)
    /// ```
    ///
    /// Computed in the right-hand form so that it stays finite for residuals of any size
    /// (`cosh` overflows float32 beyond |r| ≈ 89). Its gradient is `tanh(r) / M`.
    ///
    /// # When to use it
    /// Regression wanting MSE's smoothness near zero (≈ r²/2) and MAE's robustness far away
    /// (≈ |r| - log 2), with a gradient that is smooth everywhere.
    ///
    /// # Options
    /// None.
    ///
    /// # Example
    /// ```json
    /// {"name": "log_cosh"}
    /// ```
    ///
    /// # References
    /// - Keras `LogCosh`.
    ///
    /// Written here: burn-nn has no log-cosh loss.
    #[derive(Debug, Clone, Copy)]
    pub struct LogCoshLoss;
}

losskit_core::register_loss!(LogCoshLoss {
    name: "log_cosh",
    aliases: ["logcosh"],
    category: Regression,
    summary: "Log-cosh of the residual: smooth like MSE near zero, robust like MAE far away.",
    config: LogCoshLossConfig,
});

fn log_cosh(residual: Tensor<3>) -> Tensor<3> {
    let magnitude = residual.abs();
    magnitude.clone() + (magnitude * -2.0).exp().log1p() - std::f64::consts::LN_2
}

impl Loss for LogCoshLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        forward_elementwise("log_cosh", input, reduction, |output, target| {
            log_cosh(output - target)
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
        let loss = build("log_cosh");
        let (value, grad) = value_and_grad(loss.as_ref(), floats(&[0.5, -1.0], [1, 2]), |o| {
            LossInput::with_dense(o, floats(&[0.0, 0.0], [1, 2])).unwrap()
        });
        let expected = (0.5f64.cosh().ln() + 1f64.cosh().ln()) / 2.0;
        assert_close(&[value], &[expected], 1e-6);
        assert_close(&grad, &[0.5f64.tanh() / 2.0, -(1f64.tanh()) / 2.0], 1e-5);
    }

    #[test]
    fn huge_residuals_stay_finite() {
        let loss = build("log_cosh");
        let (value, grad) = value_and_grad(loss.as_ref(), floats(&[1e4, -1e4], [1, 2]), |o| {
            LossInput::with_dense(o, floats(&[0.0, 0.0], [1, 2])).unwrap()
        });
        assert_close(&[value], &[1e4 - std::f64::consts::LN_2], 1e-6);
        assert_close(&grad, &[0.5, -0.5], 1e-6);
    }

    #[test]
    fn rejects_options() {
        assert!(build_error(r#"{"name": "log_cosh", "delta": 1}"#).contains("delta"));
    }
}
