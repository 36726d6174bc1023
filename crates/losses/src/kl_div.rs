use burn::{
    config::Config, nn::loss::KLDivLossConfig as BurnKlConfig, tensor::activation::log_softmax,
};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, MeanCount, Reduction,
    TargetKind, reduce::reduce_elements, targets::dense_target,
};

/// Options of [`KlDivLoss`] (it has none).
#[derive(Config, Debug)]
pub struct KlDivLossConfig {}

impl LossConfig for KlDivLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(KlDivLoss))
    }
}

losskit_core::documented! {
    /// # What it does
    /// Kullback–Leibler divergence from the softmax of the output to the target distribution
    /// `t`, averaged over the batch (PyTorch's `batchmean`):
    ///
    /// ```text
    /// KL_i = Σ_c t_ic · (log t_ic - log softmax(x_i)_c)       (0 · log 0 = 0)
    /// mean = 1/N · Σ_i KL_i        (spatial outputs: KL summed over positions)
    /// ```
    ///
    /// # When to use it
    /// Distillation (matching a teacher's softened probabilities), label distributions, and
    /// any target that is itself a distribution. Class-index targets are one-hot, which makes
    /// it equal to cross-entropy.
    ///
    /// # Options
    /// None.
    ///
    /// # Example
    /// ```json
    /// {"name": "kl_div"}
    /// ```
    ///
    /// # References
    /// - PyTorch `F.kl_div(log_softmax(x), t, reduction="batchmean")`.
    ///
    /// Wraps burn-nn's `KLDivLoss` on the log-softmax of the output.
    #[derive(Debug, Clone, Copy)]
    pub struct KlDivLoss;
}

losskit_core::register_loss!(KlDivLoss {
    name: "kl_div",
    aliases: ["kl_divergence", "kld"],
    category: Classification,
    summary: "KL divergence from softmax(output) to a target distribution, batch mean.",
    config: KlDivLossConfig,
});

impl Loss for KlDivLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let n = input.batch_size();
        let (target, _) = dense_target(input.target(), input.channels(), None)?;
        let (output, _) = input.into_parts();
        let pointwise = BurnKlConfig::new()
            .init()
            .forward_no_reduction(log_softmax(output, 1), target);
        Ok(match reduction {
            Reduction::Mean => pointwise.sum() / n as f64,
            other => reduce_elements(pointwise, other),
        }
        .into())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            targets: vec![TargetKind::Probabilities, TargetKind::ClassIndices],
            minimum: Some(0.0),
            mean_over: Some(MeanCount::Samples),
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
        let loss = build("kl_div");
        // softmax([0, ln 3]) = [1/4, 3/4] against t = [1/2, 1/2].
        let (value, grad) = value_and_grad(loss.as_ref(), floats(&[0.0, 3f32.ln()], [1, 2]), |o| {
            LossInput::with_dense(o, floats(&[0.5, 0.5], [1, 2])).unwrap()
        });
        let expected = 0.5 * (0.5f64 / 0.25).ln() + 0.5 * (0.5f64 / 0.75).ln();
        assert_close(&[value], &[expected], 1e-6);
        assert_close(&grad, &[0.25 - 0.5, 0.75 - 0.5], 1e-6);
    }

    #[test]
    fn rejects_options() {
        assert!(build_error(r#"{"name": "kl_div", "log_target": true}"#).contains("log_target"));
    }
}
