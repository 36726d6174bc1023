use burn::config::Config;
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,
    config::{OptionError, ensure},
};

use crate::elementwise::forward_elementwise;

/// Options of [`QuantileLoss`].
#[derive(Config, Debug)]
pub struct QuantileLossConfig {
    /// The quantile to estimate, in (0, 1).
    #[config(default = 0.5)]
    pub quantile: f32,
}

impl LossConfig for QuantileLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        ensure(
            self.quantile > 0.0 && self.quantile < 1.0,
            "quantile",
            || format!("must be in (0, 1), got {}", self.quantile),
        )
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(QuantileLoss {
            quantile: self.quantile,
        }))
    }
}

losskit_core::documented! {
    /// # What it does
    /// The pinball loss of quantile `q` (`e = y - x`):
    ///
    /// ```text
    /// l(e) = max(q·e, (q - 1)·e)
    /// mean = 1/M · Σ l(e)
    /// ```
    ///
    /// Under-prediction costs `q` per unit, over-prediction `1 - q`; the minimiser is the
    /// q-th quantile of the target's distribution.
    ///
    /// # When to use it
    /// Prediction intervals and asymmetric costs (e.g. `q = 0.9` for an upper bound);
    /// `q = 0.5` is half the MAE.
    ///
    /// # Options
    /// - `quantile` (float in (0, 1), default 0.5).
    ///
    /// # Example
    /// ```json
    /// {"name": "quantile", "quantile": 0.8}
    /// ```
    ///
    /// # References
    /// - Koenker & Bassett, "Regression Quantiles" (1978).
    ///
    /// Written here: burn-nn has no quantile loss.
    #[derive(Debug, Clone, Copy)]
    pub struct QuantileLoss {
        quantile: f32,
    }
}

losskit_core::register_loss!(QuantileLoss {
    name: "quantile",
    aliases: ["pinball"],
    category: Regression,
    summary: "Pinball loss for quantile regression: asymmetric L1 around the chosen quantile.",
    config: QuantileLossConfig,
});

impl Loss for QuantileLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let q = self.quantile as f64;
        forward_elementwise("quantile", input, reduction, |output, target| {
            let error = target - output;
            let under = error.clone() * q;
            let over = error * (q - 1.0);
            under.max_pair(over)
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
        let loss = build(r#"{"name": "quantile", "quantile": 0.8}"#);
        // Under-prediction by 1 costs 0.8, over-prediction by 2 costs 0.4.
        let (value, grad) = value_and_grad(loss.as_ref(), floats(&[0.0, 2.0], [1, 2]), |o| {
            LossInput::with_dense(o, floats(&[1.0, 0.0], [1, 2])).unwrap()
        });
        assert_close(&[value], &[(0.8 + 0.4) / 2.0], 1e-6);
        assert_close(&grad, &[-0.4, 0.1], 1e-6);
    }

    #[test]
    fn quantile_must_be_inside_the_unit_interval() {
        assert!(build_error(r#"{"name": "quantile", "quantile": 1.0}"#).contains("`quantile`"));
        assert!(build_error(r#"{"name": "quantile", "quantile": 0}"#).contains("(0, 1)"));
    }
}
