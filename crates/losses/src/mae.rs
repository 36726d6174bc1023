use burn::{config::Config, nn::loss::LpLossConfig};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,
};

use crate::elementwise::forward_elementwise;

/// Options of [`MaeLoss`] (it has none).
#[derive(Config, Debug)]
pub struct MaeLossConfig {}

impl LossConfig for MaeLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(MaeLoss))
    }
}

losskit_core::documented! {
    /// # What it does
    /// Mean absolute error between output and target:
    ///
    /// ```text
    /// mean = 1/M · Σ |x - y|        (M = number of elements)
    /// ```
    ///
    /// The gradient is `sign(x - y) / M` (0 where `x = y`).
    ///
    /// # When to use it
    /// Regression with outliers or heavy-tailed noise; it estimates the median. Its constant
    /// gradient can make convergence slow near the optimum (`huber` and `smooth_l1` fix that).
    ///
    /// # Options
    /// None.
    ///
    /// # Example
    /// ```json
    /// {"name": "mae"}
    /// ```
    ///
    /// # References
    /// - PyTorch `torch.nn.functional.l1_loss`; Keras `MeanAbsoluteError`.
    ///
    /// Wraps burn-nn's `LpLoss` with p = 1.
    #[derive(Debug, Clone, Copy)]
    pub struct MaeLoss;
}

losskit_core::register_loss!(MaeLoss {
    name: "mae",
    aliases: ["l1", "mean_absolute_error"],
    category: Regression,
    summary: "Mean absolute error (L1) between output and a real-valued target.",
    config: MaeLossConfig,
});

impl Loss for MaeLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        forward_elementwise("mae", input, reduction, |output, target| {
            LpLossConfig::l1().forward_no_reduction(output, target)
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
        let loss = build("l1");
        let (value, grad) =
            value_and_grad(loss.as_ref(), floats(&[1.0, -2.0, 3.0, 0.5], [2, 2]), |o| {
                LossInput::with_dense(o, floats(&[0.0, 0.0, 1.0, 1.0], [2, 2])).unwrap()
            });
        assert_close(&[value], &[(1.0 + 2.0 + 2.0 + 0.5) / 4.0], 1e-6);
        assert_close(&grad, &[0.25, -0.25, 0.25, -0.25], 1e-6);
    }

    #[test]
    fn rejects_options() {
        assert!(build_error(r#"{"name": "mae", "p": 2}"#).contains("has no option `p`"));
    }
}
