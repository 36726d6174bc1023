use burn::{config::Config, tensor::Tensor};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, OutputDomain,
    Reduction, TargetKind,
    config::{OptionError, ensure},
    error::InputError,
    input::to_f64_vec,
    reduce::reduce_elements,
};

use crate::elementwise::dense_only;

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
    /// Count regression (events, photons, cells per image). Targets must be non-negative, and
    /// so must rates when `log_input` is false; a negative one is an input error
    /// (`InputError::TargetDomain`), not a panic. The Stirling term depends on the target only,
    /// so it adds no gradient; it is 0 where `y <= 1`.
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
    /// Written here rather than wrapping burn-nn's `PoissonNllLoss`, which panics on negative
    /// rates and reads values back to the host on every call; this loss checks the signs of
    /// the target (and of the rates) with one read-back and returns an error.
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

impl PoissonNllLoss {
    /// Fails unless the targets (and, with `log_input` false, the rates) are `>= 0`: one
    /// read-back of the smallest values.
    fn check_signs(&self, output: &Tensor<3>, target: &Tensor<3>) -> Result<(), Error> {
        let mut smallest = vec![target.clone().min()];
        if !self.config.log_input {
            smallest.push(output.clone().detach().min());
        }
        let smallest = to_f64_vec(Tensor::cat(smallest, 0));
        if smallest[0] < 0.0 {
            return Err(InputError::TargetDomain(format!(
                "loss `poisson_nll` needs non-negative targets, got {}",
                smallest[0]
            ))
            .into());
        }
        if let Some(&rate) = smallest.get(1).filter(|rate| **rate < 0.0) {
            return Err(InputError::TargetDomain(format!(
                "loss `poisson_nll` with \"log_input\": false needs non-negative rates in the output, got {rate}"
            ))
            .into());
        }
        Ok(())
    }
}

/// Stirling's approximation of `log(y!)`, `y·log y - y + 0.5·log(2πy)`, where `y > 1`; 0 elsewhere.
fn stirling(target: Tensor<3>) -> Tensor<3> {
    let small = target.clone().lower_equal_elem(1.0);
    // Evaluated on `max(y, 1)` so that no log sees 0.
    let y = target.clamp_min(1.0);
    let term =
        y.clone() * y.clone().log() - y.clone() + (y * (2.0 * std::f64::consts::PI)).log() * 0.5;
    term.mask_fill(small, 0.0)
}

impl Loss for PoissonNllLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let (output, target) = input.into_parts();
        let target = dense_only("poisson_nll", target)?;
        self.check_signs(&output, &target)?;
        let mut loss = if self.config.log_input {
            output.clone().exp() - target.clone() * output
        } else {
            output.clone() - target.clone() * (output + self.config.eps).log()
        };
        if self.config.full {
            loss = loss + stirling(target);
        }
        Ok(reduce_elements(loss, reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            targets: vec![TargetKind::NonNegative],
            output: if self.config.log_input {
                OutputDomain::LogRate
            } else {
                OutputDomain::UnitInterval
            },
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
    fn rates_and_the_stirling_term() {
        let loss = build(r#"{"name": "poisson_nll", "log_input": false, "full": true}"#);
        let (value, grad) = value_and_grad(loss.as_ref(), floats(&[2.0, 0.5], [1, 2]), |o| {
            LossInput::with_dense(o, floats(&[3.0, 1.0], [1, 2])).unwrap()
        });
        let eps = 1e-8f64;
        let stirling = 3.0 * 3f64.ln() - 3.0 + 0.5 * (2.0 * std::f64::consts::PI * 3.0).ln();
        let expected = (2.0 - 3.0 * (2.0 + eps).ln() + stirling + 0.5 - (0.5 + eps).ln()) / 2.0;
        assert_close(&[value], &[expected], 1e-6);
        assert_close(
            &grad,
            &[(1.0 - 3.0 / 2.0) / 2.0, (1.0 - 1.0 / 0.5) / 2.0],
            1e-5,
        );
    }

    #[test]
    fn negative_rates_are_an_input_error() {
        let loss = build(r#"{"name": "poisson_nll", "log_input": false}"#);
        let input =
            LossInput::with_dense(floats(&[-0.5, 1.0], [1, 2]), floats(&[1.0, 1.0], [1, 2]))
                .unwrap();
        let error = loss.forward(input, Reduction::Mean).unwrap_err();
        assert!(
            matches!(error, Error::Input(InputError::TargetDomain(_))),
            "{error:?}"
        );
        assert!(error.to_string().contains("rates"), "{error}");
    }

    #[test]
    fn negative_targets_are_an_input_error() {
        let loss = build("poisson_nll");
        let input = LossInput::with_dense(floats(&[0.0], [1, 1]), floats(&[-1.0], [1, 1])).unwrap();
        let error = loss
            .forward(input, Reduction::Mean)
            .unwrap_err()
            .to_string();
        assert!(error.contains("non-negative"), "{error}");
        assert!(build_error(r#"{"name": "poisson_nll", "eps": 0}"#).contains("`eps`"));
    }
}
