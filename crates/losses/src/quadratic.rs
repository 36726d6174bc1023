use burn::config::Config;
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, MeanCount,
    OutputDomain, Reduction, TargetKind, reduce::reduce_elements, targets::dense_target,
};

/// Options of [`QuadraticLoss`] (it has none).
#[derive(Config, Debug)]
pub struct QuadraticLossConfig {}

impl LossConfig for QuadraticLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(QuadraticLoss))
    }
}

losskit_core::documented! {
    /// # What it does
    /// The quadratic cost of classic neural-network texts: mean squared error between the
    /// output and the one-hot encoding of the target class:
    ///
    /// ```text
    /// mean = 1/(N·C·S) · Σ (x_c - onehot(y)_c)²
    /// ```
    ///
    /// Dense targets (e.g. soft labels) are used as they are.
    ///
    /// # When to use it
    /// Teaching and comparison with the textbook setup (Nielsen's "quadratic cost"); for
    /// real classification prefer `cross_entropy`, whose gradient does not vanish when a
    /// saturated unit is wrong.
    ///
    /// # Options
    /// None.
    ///
    /// # Example
    /// ```json
    /// {"name": "quadratic"}
    /// ```
    ///
    /// # References
    /// - Nielsen, "Neural Networks and Deep Learning", ch. 1 and 3 (2015).
    ///
    /// Wraps nothing: burn-nn's `MseLoss` would need the one-hot target built first, which is
    /// all this loss adds.
    #[derive(Debug, Clone, Copy)]
    pub struct QuadraticLoss;
}

losskit_core::register_loss!(QuadraticLoss {
    name: "quadratic",
    aliases: ["quadratic_cost"],
    category: Classification,
    summary: "Quadratic cost: mean squared error between the output and the one-hot target.",
    config: QuadraticLossConfig,
});

impl Loss for QuadraticLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let (target, _) = dense_target(input.target(), input.channels(), None)?;
        let (output, _) = input.into_parts();
        Ok(reduce_elements((output - target).square(), reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            targets: vec![TargetKind::ClassIndices, TargetKind::Probabilities],
            output: OutputDomain::Probabilities,
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

    #[test]
    fn value_and_gradient() {
        let loss = build("quadratic");
        let (value, grad) =
            value_and_grad(loss.as_ref(), floats(&[0.5, 0.5, 1.0, 0.0], [2, 2]), |o| {
                LossInput::with_indices(o, ints(&[0, 1], [2])).unwrap()
            });
        assert_close(&[value], &[(0.25 + 0.25 + 1.0 + 1.0) / 4.0], 1e-6);
        assert_close(&grad, &[-0.25, 0.25, 0.5, -0.5], 1e-6);
    }

    #[test]
    fn rejects_options() {
        assert!(build_error(r#"{"name": "quadratic", "weights": [1]}"#).contains("weights"));
    }
}
