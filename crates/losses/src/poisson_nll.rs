use burn::{config::Config, nn::loss::PoissonNllLossConfig as BurnPoissonConfig};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, OutputDomain,
    Reduction, TargetKind,
    config::{OptionError, ensure},
    reduce::reduce_elements,
};

use crate::elementwise::{dense_only, require_non_negative};

/// Options of [`PoissonNllLoss`].
#[derive(Config, Debug)]
pub struct PoissonNllLossConfig {
    /// `true`: the output is the log of the rate; `false`: the rate itself.
    #[config(default = true)]
    pub log_input: bool,
    /// Add the Stirling approximation of `log(y!)` (for targets > 1).
    #[config(default = false)]
    pub full: bool,
    /// Added to the rate before its log when `log_input` is false; must be > 0.
    #[config(default = 1e-8)]
    pub eps: f64,
}

impl LossConfig for PoissonNllLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        ensure(self.eps.is_finite() && self.eps > 0.0, "eps", || {
            format!("must be a finite number > 0, got {}", self.eps)
        })
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(PoissonNllLoss { config: self }))
    }
}

losskit_core::documented! {
    /// # What it does
    /// Negative log-likelihood of a Poisson target `y` with rate `λ`:
    ///
    /// ```text
    /// log_input = true:   l = exp(x) - y·x            (x = log λ)
    /// log_input = false:  l = x - y·log(x + eps)      (x = λ)
    /// full = true adds    y·log y - y + 0.5·log(2πy)  for y > 1
    /// mean = 1/M · Σ l
    /// ```
    ///
    /// # When to use it
    /// Count regression (events, photons, cells per image). Targets must be non-negative;
    /// a negative one is an input error, not a panic.
    ///
    /// # Options
    /// - `log_input` (bool, default true).
    /// - `full` (bool, default false): include the Stirling term.
    /// - `eps` (float > 0, default 1e-8).
    ///
    /// # Example
    /// ```json
    /// {"name": "poisson_nll", "log_input": true}
    /// ```
    ///
    /// # References
    /// - PyTorch `torch.nn.functional.poisson_nll_loss`.
    ///
    /// Wraps burn-nn's `PoissonNllLoss`, after checking the target's sign (burn asserts it).
    #[derive(Debug, Clone)]
    pub struct PoissonNllLoss {
        config: PoissonNllLossConfig,
    }
}

losskit_core::register_loss!(PoissonNllLoss {
    name: "poisson_nll",
    aliases: ["poisson"],
    category: Regression,
    summary: "Poisson negative log-likelihood for count targets, from a log-rate or a rate.",
    config: PoissonNllLossConfig,
});

impl Loss for PoissonNllLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let (output, target) = input.into_parts();
        let target = dense_only("poisson_nll", target)?;
        require_non_negative("poisson_nll", &target)?;
        let poisson = BurnPoissonConfig::new()
            .with_log_input(self.config.log_input)
            .with_full(self.config.full)
            .with_eps(self.config.eps)
            .init();
        Ok(reduce_elements(poisson.forward_no_reduction(output, target), reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            targets: vec![TargetKind::NonNegative],
            output: if self.config.log_input { OutputDomain::LogRate } else { OutputDomain::UnitInterval },
            minimum: None,
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
        let loss = build("poisson_nll");
        let (value, grad) = value_and_grad(loss.as_ref(), floats(&[0.0, 1.0], [1, 2]), |o| {
            LossInput::with_dense(o, floats(&[2.0, 1.0], [1, 2])).unwrap()
        });
        let e = std::f64::consts::E;
        assert_close(&[value], &[(1.0 + (e - 1.0)) / 2.0], 1e-6);
        assert_close(&grad, &[(1.0 - 2.0) / 2.0, (e - 1.0) / 2.0], 1e-6);
    }

    #[test]
    fn negative_targets_are_an_input_error() {
        let loss = build("poisson_nll");
        let input = LossInput::with_dense(floats(&[0.0], [1, 1]), floats(&[-1.0], [1, 1])).unwrap();
        let error = loss.forward(input, Reduction::Mean).unwrap_err().to_string();
        assert!(error.contains("non-negative"), "{error}");
        assert!(build_error(r#"{"name": "poisson_nll", "eps": 0}"#).contains("`eps`"));
    }
}
