use burn::{config::Config, nn::loss::MseLoss as BurnMseLoss};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction, fused,
};

use crate::elementwise::{dense_only, forward_elementwise};

/// Options of [`MseLoss`] (it has none).
#[derive(Config, Debug)]
pub struct MseLossConfig {}

impl LossConfig for MseLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(MseLoss))
    }
}

losskit_core::documented! {
    /// # What it does
    /// Mean squared error between output and target:
    ///
    /// ```text
    /// mean = 1/M · Σ (x - y)²        (M = number of elements)
    /// ```
    ///
    /// `sum` adds the squared errors; `none` gives each sample's sum.
    ///
    /// # When to use it
    /// Regression with roughly Gaussian noise and few outliers (use `huber`, `smooth_l1` or
    /// `mae` when outliers matter).
    ///
    /// # Options
    /// None.
    ///
    /// # Example
    /// ```json
    /// {"name": "mse"}
    /// ```
    ///
    /// # References
    /// - PyTorch `torch.nn.functional.mse_loss`; Keras `MeanSquaredError`.
    ///
    /// Wraps burn-nn's `MseLoss` (checked against the reference vectors).
    #[derive(Debug, Clone, Copy)]
    pub struct MseLoss;
}

losskit_core::register_loss!(MseLoss {
    name: "mse",
    aliases: ["l2", "mean_squared_error"],
    category: Regression,
    summary: "Mean squared error (L2) between output and a real-valued target.",
    config: MseLossConfig,
});

impl Loss for MseLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        if reduction == Reduction::None {
            return forward_elementwise("mse", input, reduction, |output, target| {
                BurnMseLoss::new().forward_no_reduction(output, target)
            });
        }
        // The mean or sum of squares as one fused operation (with a constant target, one
        // pass over the arrays computes the loss and the output's gradient); burn-nn's
        // MseLoss where no kernel is.
        let (output, target) = input.into_parts();
        let target = dense_only("mse", target)?;
        let scale = match reduction {
            Reduction::Mean => 1.0 / output.shape().num_elements() as f64,
            _ => 1.0,
        };
        Ok(fused::squared_error_sum(output, target, scale as f32).into())
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
    fn matches_a_hand_computed_value() {
        let loss = build("mse");
        let input = LossInput::with_dense(
            floats(&[1.0, 2.0, 3.0, 4.0], [2, 2]),
            floats(&[1.0, 0.0, 3.0, 1.0], [2, 2]),
        )
        .unwrap();
        assert_close(
            &value(loss.as_ref(), input.clone(), Reduction::Mean),
            &[13.0 / 4.0],
            1e-6,
        );
        assert_close(
            &value(loss.as_ref(), input.clone(), Reduction::Sum),
            &[13.0],
            1e-6,
        );
        assert_close(
            &value(loss.as_ref(), input, Reduction::None),
            &[4.0, 9.0],
            1e-6,
        );
    }

    #[test]
    fn gradient_is_two_residuals_over_m() {
        let loss = build("l2");
        let (_, grad) = value_and_grad(loss.as_ref(), floats(&[1.0, 2.0], [1, 2]), |o| {
            LossInput::with_dense(o, floats(&[0.0, 0.0], [1, 2])).unwrap()
        });
        assert_close(&grad, &[1.0, 2.0], 1e-6);
    }

    #[test]
    fn class_indices_are_refused_and_options_too() {
        let loss = build("mse");
        let input = LossInput::with_indices(floats(&[0.0; 4], [2, 2]), ints(&[0, 1], [2])).unwrap();
        assert!(
            loss.forward(input, Reduction::Mean)
                .unwrap_err()
                .to_string()
                .contains("float target")
        );
        assert!(build_error(r#"{"name": "mse", "delta": 1}"#).contains("has no option `delta`"));
    }
}
