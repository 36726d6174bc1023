use burn::config::Config;
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, OutputDomain,
    Reduction, TargetKind,
};

use crate::elementwise::forward_elementwise;

/// Options of [`MsleLoss`] (it has none).
#[derive(Config, Debug)]
pub struct MsleLossConfig {}

impl LossConfig for MsleLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(MsleLoss))
    }
}

/// Keras clamps both sides here before `log1p`, so negative values count as (almost) zero.
const MSLE_FLOOR: f64 = 1e-7;

losskit_core::documented! {
    /// # What it does
    /// Mean squared error of `log(1 + ·)`, with both sides clamped at ε = 1e-7 as Keras does:
    ///
    /// ```text
    /// l = (log1p(max(x, ε)) - log1p(max(y, ε)))²
    /// mean = 1/M · Σ l
    /// ```
    ///
    /// # When to use it
    /// Non-negative targets spanning orders of magnitude (counts, prices, durations) where
    /// relative error matters more than absolute error. Outputs below ε get no gradient.
    ///
    /// # Options
    /// None.
    ///
    /// # Example
    /// ```json
    /// {"name": "msle"}
    /// ```
    ///
    /// # References
    /// - Keras `MeanSquaredLogarithmicError`.
    ///
    /// Written here: burn-nn has no MSLE loss.
    #[derive(Debug, Clone, Copy)]
    pub struct MsleLoss;
}

losskit_core::register_loss!(MsleLoss {
    name: "msle",
    aliases: ["mean_squared_logarithmic_error"],
    category: Regression,
    summary: "Mean squared logarithmic error: MSE of log1p, for targets spanning magnitudes.",
    config: MsleLossConfig,
});

impl Loss for MsleLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        forward_elementwise("msle", input, reduction, |output, target| {
            let difference =
                output.clamp_min(MSLE_FLOOR).log1p() - target.clamp_min(MSLE_FLOOR).log1p();
            difference.square()
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            targets: vec![TargetKind::NonNegative],
            output: OutputDomain::AboveMinusOne,
            ..Capabilities::regression()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn value_and_gradient() {
        let loss = build("msle");
        let e = std::f64::consts::E;
        let (value, grad) = value_and_grad(
            loss.as_ref(),
            floats(&[(e - 1.0) as f32, 0.0], [1, 2]),
            |o| LossInput::with_dense(o, floats(&[0.0, 0.0], [1, 2])).unwrap(),
        );
        assert_close(&[value], &[0.5], 1e-5);
        // d/dx (log1p x)^2 / 2 = log1p(x) / (1 + x) = 1 / e at x = e - 1.
        assert_close(&grad, &[1.0 / e, 0.0], 1e-5);
    }

    #[test]
    fn rejects_options() {
        assert!(build_error(r#"{"name": "msle", "eps": 1}"#).contains("eps"));
    }
}
