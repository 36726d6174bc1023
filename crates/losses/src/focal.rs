use burn::{
    config::Config,
    tensor::{
        Tensor, TensorData,
        activation::{log_softmax, sigmoid, softplus},
    },
};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction, Target,
    TargetKind,
    config::{OptionError, check_weights, ensure},
    error::InputError,
    reduce::{reduce_elements, reduce_positions, reduce_weighted},
    targets::dense_target,
};

/// Options of [`FocalLoss`].
#[derive(Config, Debug)]
pub struct FocalLossConfig {
    /// The focusing parameter γ >= 0; 0 gives cross-entropy.
    #[config(default = 2.0)]
    pub gamma: f32,
    /// Per-class weights α (one per class); in the sigmoid form, α weighs positives and
    /// 1 - α negatives.
    pub alpha: Option<Vec<f32>>,
    /// `auto` (softmax for C > 1, sigmoid for C = 1), `softmax` or `sigmoid` (multi-label).
    #[config(default = "String::from(\"auto\")")]
    pub activation: String,
    /// A target class index that contributes nothing (softmax form).
    pub ignore_index: Option<i64>,
}

impl LossConfig for FocalLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        ensure(self.gamma.is_finite() && self.gamma >= 0.0, "gamma", || {
            format!("must be a finite number >= 0, got {}", self.gamma)
        })?;
        ensure(["auto", "softmax", "sigmoid"].contains(&self.activation.as_str()), "activation", || {
            format!("must be \"auto\", \"softmax\" or \"sigmoid\", got \"{}\"", self.activation)
        })?;
        if let Some(alpha) = &self.alpha {
            check_weights("alpha", alpha)?;
            if self.activation == "sigmoid" || alpha.len() == 1 {
                ensure(alpha.iter().all(|a| *a <= 1.0), "alpha", || "must be in [0, 1] in the sigmoid form".into())?;
            }
        }
        Ok(())
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(FocalLoss { config: self }))
    }
}

/// Keeps `(1 - p)^γ` differentiable where `p` rounds to 1.
const MIN_COMPLEMENT: f64 = 1e-12;

losskit_core::documented! {
    /// # What it does
    /// Cross-entropy scaled down on well-classified examples by `(1 - p_t)^γ`:
    ///
    /// ```text
    /// softmax form (C > 1):  l = -α_y · (1 - p_y)^γ · log p_y            p = softmax(x)
    /// sigmoid form (C = 1):  l = α_t · (1 - p_t)^γ · BCE(x, y)           p_t = σ(x) if y = 1 else 1 - σ(x)
    /// mean = 1/M · Σ l      (M = positions, or non-ignored positions)
    /// ```
    ///
    /// With γ = 0 and no α it equals cross-entropy. Dense probability targets use
    /// `l = -Σ_c α_c t_c (1 - p_c)^γ log p_c`.
    ///
    /// # When to use it
    /// Heavy class imbalance and many easy negatives (dense detection, rare-class
    /// classification, segmentation of small structures): the easy majority stops dominating
    /// the gradient. γ = 2 is the usual choice; raise it to focus harder.
    ///
    /// # Options
    /// - `gamma` (float >= 0, default 2).
    /// - `alpha` (list of floats, default none): per-class weights; in the sigmoid form each
    ///   in [0, 1], weighting positives by α and negatives by 1 - α.
    /// - `activation` (`auto` | `softmax` | `sigmoid`, default `auto`).
    /// - `ignore_index` (integer, default none).
    ///
    /// # Example
    /// ```json
    /// {"name": "focal", "gamma": 2.0, "alpha": [0.25, 0.75]}
    /// ```
    ///
    /// # References
    /// - Lin et al., "Focal Loss for Dense Object Detection" (ICCV 2017).
    /// - torchvision `sigmoid_focal_loss`.
    ///
    /// Written here: burn-nn has no focal loss.
    #[derive(Debug, Clone)]
    pub struct FocalLoss {
        config: FocalLossConfig,
    }
}

losskit_core::register_loss!(FocalLoss {
    name: "focal",
    aliases: ["focal_loss"],
    category: Classification,
    summary: "Focal loss: cross-entropy down-weighting easy examples by (1 - p)^gamma; softmax or sigmoid form.",
    config: FocalLossConfig,
});

impl FocalLoss {
    fn uses_sigmoid(&self, channels: usize) -> bool {
        match self.config.activation.as_str() {
            "sigmoid" => true,
            "softmax" => false,
            _ => channels == 1,
        }
    }

    fn alpha(&self, channels: usize, input: &LossInput) -> Result<Option<Tensor<3>>, Error> {
        let Some(alpha) = &self.config.alpha else { return Ok(None) };
        if alpha.len() != channels {
            return Err(InputError::Unsupported {
                loss: "focal".into(),
                problem: format!("has {} `alpha` values but the output has {channels} classes", alpha.len()),
            }
            .into());
        }
        Ok(Some(Tensor::<1>::from_data(TensorData::new(alpha.clone(), [channels]), &input.device()).reshape([1, channels, 1])))
    }

}

/// The focal loss of each element `[N, C, S]` of logits against a dense target, before class
/// weights and reduction: the softmax form (over C) or the sigmoid form (each element alone).
pub(crate) fn focal_elements(output: Tensor<3>, target: Tensor<3>, gamma: f64, sigmoid_form: bool) -> Tensor<3> {
    let modulating = |complement: Tensor<3>| complement.clamp_min(MIN_COMPLEMENT).powf_scalar(gamma);
    if sigmoid_form {
        let bce = (target.clone().neg() + 1.0) * output.clone() + softplus(output.clone().neg(), 1.0);
        let complement = target.clone() * sigmoid(output.clone().neg()) + (target.neg() + 1.0) * sigmoid(output);
        return modulating(complement) * bce;
    }
    let log_p = log_softmax(output, 1);
    let complement = log_p.clone().exp().neg() + 1.0;
    (modulating(complement) * log_p * target).neg()
}

impl Loss for FocalLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let [n, channels, s] = input.output().dims();
        let alpha = self.alpha(channels, &input)?;
        let gamma = self.config.gamma as f64;
        if self.uses_sigmoid(channels) {
            let (target, _) = dense_target(input.target(), channels, None)?;
            let (output, _) = input.into_parts();
            let mut loss = focal_elements(output, target.clone(), gamma, true);
            if let Some(alpha) = alpha {
                loss = loss * (target.clone() * alpha.clone() + (target.neg() + 1.0) * (alpha.neg() + 1.0));
            }
            return Ok(reduce_elements(loss, reduction).into());
        }
        let (target, valid) = dense_target(input.target(), channels, self.config.ignore_index)?;
        let is_indices = matches!(input.target(), Target::Indices(_));
        let (output, _) = input.into_parts();
        let mut loss = focal_elements(output, target, gamma, false);
        if let Some(alpha) = alpha {
            loss = loss * alpha;
        }
        let loss = loss.sum_dim(1).reshape([n, s]);
        Ok(match (valid, is_indices) {
            (Some(valid), _) => reduce_weighted(loss, valid, reduction),
            _ => reduce_positions(loss, reduction),
        }
        .into())
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::classification();
        capabilities.minimum = Some(0.0);
        match self.config.activation.as_str() {
            "sigmoid" => {
                capabilities.targets = vec![TargetKind::BinaryMask, TargetKind::ClassIndices];
                capabilities.min_channels = 1;
            }
            _ => capabilities.targets.push(TargetKind::Probabilities),
        }
        capabilities.per_sample = self.config.ignore_index.is_none();
        capabilities
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn value_and_gradient_match_the_formula() {
        let loss = build(r#"{"name": "focal", "gamma": 2.0}"#);
        // p_y = 3/4: loss = -(1/4)^2 · log(3/4).
        let (value, grad) = value_and_grad(loss.as_ref(), floats(&[0.0, 3f32.ln()], [1, 2]), |o| {
            LossInput::with_indices(o, ints(&[1], [1])).unwrap()
        });
        assert_close(&[value], &[-(0.0625f64) * 0.75f64.ln()], 1e-6);
        // d/dz_y with p = 3/4, γ = 2: (1-p)^γ (γ p log p - (1 - p)) ... checked numerically:
        let p: f64 = 0.75;
        let dldp = 2.0 * (1.0 - p) * p.ln() - (1.0 - p).powi(2) / p;
        let dz_y = dldp * p * (1.0 - p);
        assert_close(&grad, &[-dz_y, dz_y], 1e-5);
    }

    #[test]
    fn gamma_zero_is_cross_entropy() {
        let focal = build(r#"{"name": "focal", "gamma": 0.0}"#);
        let ce = build("cross_entropy");
        let make = || LossInput::with_indices(floats(&[0.3, -1.0, 2.0, 0.5, 0.1, -0.2], [2, 3]), ints(&[2, 0], [2])).unwrap();
        assert_close(&value(focal.as_ref(), make(), Reduction::Mean), &value(ce.as_ref(), make(), Reduction::Mean), 1e-6);
    }

    #[test]
    fn sigmoid_form_for_one_channel() {
        let loss = build(r#"{"name": "focal", "gamma": 1.0}"#);
        let input = LossInput::with_dense(floats(&[0.0], [1, 1]), floats(&[1.0], [1, 1])).unwrap();
        // p_t = 1/2: (1/2)^1 · log 2.
        assert_close(&value(loss.as_ref(), input, Reduction::Mean), &[0.5 * 2f64.ln()], 1e-6);
    }

    #[test]
    fn bad_options_are_named() {
        assert!(build_error(r#"{"name": "focal", "gamma": -1}"#).contains("`gamma`"));
        assert!(build_error(r#"{"name": "focal", "activation": "relu"}"#).contains("`activation`"));
    }
}
