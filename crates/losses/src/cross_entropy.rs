use burn::{
    config::Config,
    tensor::{Int, Tensor, activation::log_softmax},
};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction, Target,
    TargetKind,
    config::{OptionError, check_weights, ensure},
    fused,
    reduce::{MIN_TOTAL_WEIGHT, reduce_maybe_weighted},
    targets::{channel_vector, checked_indices},
};

/// Options of [`CrossEntropyLoss`].
#[derive(Config, Debug)]
pub struct CrossEntropyLossConfig {
    /// Per-class weights (one per class); the weighted mean divides by the sum of the
    /// targets' weights, as PyTorch does.
    pub weights: Option<Vec<f32>>,
    /// A target class index that contributes nothing (e.g. -100 for unlabelled pixels).
    pub ignore_index: Option<i64>,
    /// Label smoothing in [0, 1]: the target becomes `(1 - ε)·onehot + ε/C`.
    #[config(default = 0.0)]
    pub label_smoothing: f32,
    /// `true`: the output holds logits; `false`: it holds probabilities.
    #[config(default = true)]
    pub from_logits: bool,
}

impl LossConfig for CrossEntropyLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        validate_cross_entropy(self.weights.as_deref(), self.label_smoothing)
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(CrossEntropyLoss::new("cross_entropy", self)))
    }
}

pub(crate) fn validate_cross_entropy(
    weights: Option<&[f32]>,
    label_smoothing: f32,
) -> Result<(), OptionError> {
    if let Some(weights) = weights {
        check_weights("weights", weights)?;
    }
    ensure(
        (0.0..=1.0).contains(&label_smoothing),
        "label_smoothing",
        || format!("must be in [0, 1], got {label_smoothing}"),
    )
}

losskit_core::documented! {
    /// # What it does
    /// Cross-entropy between the softmax of the output and the target class:
    ///
    /// ```text
    /// loss_i = -w[y_i] · log softmax(x_i)[y_i]
    /// mean   = Σ_i loss_i / Σ_i w[y_i]          (w = 1 without weights)
    /// ```
    ///
    /// With label smoothing ε the target is `(1 - ε)·onehot(y) + ε/C`. With a dense target `p`
    /// (class probabilities), `loss_i = -Σ_c w_c p_ic log softmax(x_i)_c` and the mean divides
    /// by the number of positions. Spatial outputs `[N, C, H, W]` / `[N, C, D, H, W]` are
    /// handled per pixel (voxel); `none` gives each sample's sum over its positions.
    ///
    /// # When to use it
    /// The default for single-label classification and for per-pixel segmentation when classes
    /// are roughly balanced. Use `weights` (or `weighted_cross_entropy`, `focal`) for imbalanced
    /// classes, `label_smoothing` against over-confident models.
    ///
    /// # Options
    /// - `weights` (list of floats, one per class, default none): per-class weights.
    /// - `ignore_index` (integer, default none): class index that contributes nothing.
    /// - `label_smoothing` (float in [0, 1], default 0).
    /// - `from_logits` (bool, default true): false when the output already holds probabilities
    ///   (they are clamped to [1e-7, 1] before the log).
    ///
    /// If every target is ignored, the mean is 0 with a zero gradient (PyTorch gives NaN).
    ///
    /// # Example
    /// ```json
    /// {"name": "cross_entropy", "label_smoothing": 0.1, "ignore_index": -100}
    /// ```
    ///
    /// # References
    /// - PyTorch `torch.nn.functional.cross_entropy`.
    /// - Szegedy et al., "Rethinking the Inception Architecture" (2016), label smoothing.
    ///
    /// Written here rather than wrapping burn-nn's `CrossEntropyLoss`, which returns only the
    /// mean over `[N, C]` inputs, takes no negative ignore index and no probability targets;
    /// a unit test checks both agree where burn-nn applies.
    #[derive(Debug, Clone)]
    pub struct CrossEntropyLoss {
        name: &'static str,
        weights: Option<Vec<f32>>,
        ignore_index: Option<i64>,
        label_smoothing: f32,
        from_logits: bool,
    }
}

losskit_core::register_loss!(CrossEntropyLoss {
    name: "cross_entropy",
    aliases: ["log_loss", "ce"],
    category: Classification,
    summary: "Softmax cross-entropy over class indices or class probabilities, with weights, ignore_index and label smoothing.",
    config: CrossEntropyLossConfig,
});

/// The smallest probability whose log is taken when the output holds probabilities.
const MIN_PROBABILITY: f64 = 1e-7;

impl CrossEntropyLoss {
    /// A cross-entropy loss reporting errors under `name`.
    pub fn new(name: &'static str, config: CrossEntropyLossConfig) -> Self {
        Self {
            name,
            weights: config.weights,
            ignore_index: config.ignore_index,
            label_smoothing: config.label_smoothing,
            from_logits: config.from_logits,
        }
    }

    /// Same as [`new`](Self::new) with explicit per-class weights.
    pub(crate) fn with_weights(mut self, weights: Option<Vec<f32>>) -> Self {
        self.weights = weights;
        self
    }

    /// Log-probabilities `[N, C, S]` of the output.
    pub fn log_probabilities(&self, output: Tensor<3>) -> Tensor<3> {
        if self.from_logits {
            log_softmax(output, 1)
        } else {
            output.clamp(MIN_PROBABILITY, 1.0).log()
        }
    }

    fn class_weights(&self, classes: usize, input: &LossInput) -> Result<Option<Tensor<3>>, Error> {
        let Some(weights) = &self.weights else {
            return Ok(None);
        };
        Ok(Some(channel_vector(
            self.name,
            "weights",
            weights,
            classes,
            &input.device(),
        )?))
    }

    /// The class indices checked (ignored ones replaced by class 0), the class weight of each
    /// position's target `[N, S]` (with class weights), and the mask `[N, S]` of the positions
    /// that count (with `ignore_index`).
    #[allow(clippy::type_complexity)]
    fn checked_targets(
        &self,
        indices: &Tensor<2, Int>,
        weights: Option<&Tensor<3>>,
        classes: usize,
    ) -> Result<(Tensor<2, Int>, Option<Tensor<2>>, Option<Tensor<2>>), Error> {
        let [n, s] = indices.dims();
        let (indices, valid) = checked_indices(indices, classes, self.ignore_index)?;
        let target_weight = weights.map(|weights| {
            weights
                .clone()
                .reshape([classes])
                .select(0, indices.clone().reshape([n * s]))
                .reshape([n, s])
        });
        Ok((indices, target_weight, valid))
    }

    /// The mean or sum of the common case (logits, class indices, no smoothing) as one fused
    /// operation ([`fused::log_softmax_nll_sum`]: on the CPU backend its forward pass also
    /// computes the gradient); `None` for every other case.
    fn reduced_in_one_operation(
        &self,
        input: &LossInput,
        reduction: Reduction,
    ) -> Result<Option<Tensor<1>>, Error> {
        let Target::Indices(indices) = input.target() else {
            return Ok(None);
        };
        let output = input.output();
        if reduction == Reduction::None
            || !self.from_logits
            || self.label_smoothing != 0.0
            || !fused::is_fused(output)
        {
            return Ok(None);
        }
        let [n, classes, s] = output.dims();
        let weights = self.class_weights(classes, input)?;
        let (indices, target_weight, valid) =
            self.checked_targets(indices, weights.as_ref(), classes)?;
        let position_weight = match (target_weight, valid) {
            (Some(weight), Some(valid)) => Some(weight * valid),
            (weight, None) => weight,
            (None, valid) => valid,
        };
        // The mean divides by the number of positions, or by the total weight (see
        // `reduce_weighted`).
        let scale = match (reduction, &position_weight) {
            (Reduction::Sum, _) => 1.0,
            (_, None) => 1.0 / (n * s) as f64,
            (_, Some(weight)) => {
                1.0 / f64::from(weight.clone().sum().into_scalar::<f32>()).max(MIN_TOTAL_WEIGHT)
            }
        };
        Ok(Some(fused::log_softmax_nll_sum(
            output.clone(),
            indices,
            position_weight,
            scale as f32,
        )))
    }

    /// The loss per position `[N, S]` and, for class-index targets, the weight of each position
    /// (the mean's denominator).
    pub fn per_position(&self, input: LossInput) -> Result<(Tensor<2>, Option<Tensor<2>>), Error> {
        let [n, classes, s] = input.output().dims();
        let weights = self.class_weights(classes, &input)?;
        let (output, target) = input.into_parts();
        let epsilon = self.label_smoothing as f64;
        match target {
            Target::Indices(indices) => {
                let (indices, target_weight, valid) =
                    self.checked_targets(&indices, weights.as_ref(), classes)?;
                let weighted = |values: Tensor<2>| match &target_weight {
                    Some(w) => values * w.clone(),
                    None => values,
                };
                let mut loss = if self.from_logits && epsilon == 0.0 {
                    // The common case in one fused pass (softmax, pick, log) each way.
                    weighted(fused::log_softmax_nll(output, indices))
                } else {
                    let log_p = self.log_probabilities(output);
                    let picked = log_p
                        .clone()
                        .gather(1, indices.reshape([n, 1, s]))
                        .reshape([n, s]);
                    let nll = weighted(picked);
                    if epsilon > 0.0 {
                        // PyTorch's smoothing term: the (weighted) mean over classes of -log p.
                        let spread = match &weights {
                            Some(weights) => log_p * weights.clone(),
                            None => log_p,
                        };
                        let smooth = spread.sum_dim(1).reshape([n, s]);
                        nll * (-(1.0 - epsilon)) - smooth * (epsilon / classes as f64)
                    } else {
                        nll.neg()
                    }
                };
                let mut position_weight = target_weight;
                if let Some(valid) = valid {
                    loss = loss * valid.clone();
                    position_weight = Some(match position_weight {
                        Some(w) => w * valid,
                        None => valid,
                    });
                }
                Ok((loss, position_weight))
            }
            Target::Dense(probabilities) => {
                let log_p = self.log_probabilities(output);
                let probabilities = if epsilon > 0.0 {
                    probabilities * (1.0 - epsilon) + epsilon / classes as f64
                } else {
                    probabilities
                };
                let mut weighted = log_p * probabilities;
                if let Some(weights) = weights {
                    weighted = weighted * weights;
                }
                Ok((weighted.sum_dim(1).reshape([n, s]).neg(), None))
            }
        }
    }
}

impl Loss for CrossEntropyLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        if let Some(reduced) = self.reduced_in_one_operation(&input, reduction)? {
            return Ok(reduced.into());
        }
        let (loss, weights) = self.per_position(input)?;
        Ok(reduce_maybe_weighted(loss, weights, reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::classification();
        capabilities.targets.push(TargetKind::Probabilities);
        if self.weights.is_some() || self.ignore_index.is_some() {
            capabilities.mean_over = None;
        }
        if let Some(weights) = &self.weights {
            // One weight per class: the options fix C.
            capabilities.min_channels = weights.len();
            capabilities.max_channels = Some(weights.len());
        }
        capabilities.ignore_index = self.ignore_index;
        if !self.from_logits {
            capabilities.output = losskit_core::OutputDomain::Probabilities;
        }
        if self.label_smoothing == 0.0 {
            capabilities.minimum = Some(0.0);
        }
        capabilities
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn matches_a_hand_computed_value() {
        // log-softmax of [0, ln 3] is [ln(1/4), ln(3/4)].
        let loss = build("cross_entropy");
        let output = floats(&[0.0, 3f32.ln(), 0.0, 3f32.ln()], [2, 2]);
        let input = LossInput::with_indices(output, ints(&[1, 0], [2])).unwrap();
        let expected = (-(0.75f64).ln() - (0.25f64).ln()) / 2.0;
        assert_close(
            &value(loss.as_ref(), input, Reduction::Mean),
            &[expected],
            1e-6,
        );
    }

    #[test]
    fn gradient_is_softmax_minus_onehot_over_n() {
        let loss = build("cross_entropy");
        let output = floats(&[0.0, 3f32.ln()], [1, 2]);
        let (_, grad) = value_and_grad(loss.as_ref(), output, |o| {
            LossInput::with_indices(o, ints(&[1], [1])).unwrap()
        });
        assert_close(&grad, &[0.25, -0.25], 1e-6);
    }

    #[test]
    fn agrees_with_burn_nn_where_burn_applies() {
        use burn::nn::loss::CrossEntropyLossConfig as BurnConfig;
        let values = [0.3, -1.2, 2.0, 0.7, 0.1, -0.4, 1.5, 0.2, -2.0];
        let targets = [2, 0, 1];
        let weights = vec![0.5, 2.0, 1.5];
        let burn = BurnConfig::new()
            .with_weights(Some(weights.clone()))
            .init(&device())
            .forward(floats(&values, [3, 3]), ints(&targets, [3]));
        let ours = build(r#"{"name": "cross_entropy", "weights": [0.5, 2.0, 1.5]}"#);
        let input = LossInput::with_indices(floats(&values, [3, 3]), ints(&targets, [3])).unwrap();
        assert_close(
            &value(ours.as_ref(), input, Reduction::Mean),
            &losskit_core::input::to_f64_vec(burn),
            1e-6,
        );
    }

    #[test]
    fn all_ignored_gives_zero_with_zero_gradient() {
        let loss = build(r#"{"name": "cross_entropy", "ignore_index": -100}"#);
        let output = floats(&[1.0, 2.0, 3.0, 4.0], [2, 2]);
        let (value, grad) = value_and_grad(loss.as_ref(), output, |o| {
            LossInput::with_indices(o, ints(&[-100, -100], [2])).unwrap()
        });
        assert_eq!(value, 0.0);
        assert!(grad.iter().all(|g| *g == 0.0), "{grad:?}");
    }

    #[test]
    fn out_of_range_classes_are_rejected() {
        let loss = build("cross_entropy");
        let input = LossInput::with_indices(floats(&[0.0; 4], [2, 2]), ints(&[0, 2], [2])).unwrap();
        let error = loss
            .forward(input, Reduction::Mean)
            .unwrap_err()
            .to_string();
        assert!(error.contains("class index 2, outside 0..2"), "{error}");
    }

    #[test]
    fn bad_options_are_named() {
        assert!(
            build_error(r#"{"name": "cross_entropy", "label_smoothing": 1.5}"#)
                .contains("label_smoothing")
        );
        assert!(
            build_error(r#"{"name": "cross_entropy", "weights": [1.0, -1.0]}"#).contains("weights")
        );
        assert!(
            build_error(r#"{"name": "cross_entropy", "smoothing": 0.1}"#)
                .contains("label_smoothing")
        );
        assert!(
            build_error(r#"{"name": "cross_entropy", "from_logits": "yes"}"#)
                .contains("from_logits")
        );
    }
}
