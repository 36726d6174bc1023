use burn::config::Config;
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction, Target,
    config::{OptionError, check_weights, ensure},
    input::to_f64_vec,
    reduce::reduce_maybe_weighted,
    targets::checked_indices,
};
use serde::{Deserialize, Serialize};

use crate::cross_entropy::{CrossEntropyLoss, CrossEntropyLossConfig, validate_cross_entropy};

/// Class weights: a list, or `"balanced"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClassWeights {
    /// One weight per class.
    List(Vec<f32>),
    /// A named rule; only `"balanced"` exists.
    Rule(String),
}

/// Options of [`WeightedCrossEntropyLoss`].
#[derive(Config, Debug)]
pub struct WeightedCrossEntropyLossConfig {
    /// Per-class weights, or `"balanced"`.
    pub weights: ClassWeights,
    /// A target class index that contributes nothing.
    pub ignore_index: Option<i64>,
    /// Label smoothing in [0, 1].
    #[config(default = 0.0)]
    pub label_smoothing: f32,
    /// `true`: the output holds logits; `false`: probabilities.
    #[config(default = true)]
    pub from_logits: bool,
}

impl LossConfig for WeightedCrossEntropyLossConfig {
    const REQUIRED: &'static [(&'static str, &'static str)] =
        &[("weights", "a list of per-class weights, or \"balanced\"")];

    fn example() -> Self {
        Self::new(ClassWeights::Rule("balanced".into()))
    }

    fn validate(&self) -> Result<(), OptionError> {
        match &self.weights {
            ClassWeights::List(weights) => check_weights("weights", weights)?,
            ClassWeights::Rule(rule) => ensure(rule == "balanced", "weights", || {
                format!("must be a list of per-class weights or \"balanced\", got \"{rule}\"")
            })?,
        }
        validate_cross_entropy(None, self.label_smoothing)
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        let list = match &self.weights {
            ClassWeights::List(weights) => Some(weights.clone()),
            ClassWeights::Rule(_) => None,
        };
        let inner = CrossEntropyLoss::new(
            "weighted_cross_entropy",
            CrossEntropyLossConfig::new()
                .with_weights(list.clone())
                .with_ignore_index(self.ignore_index)
                .with_label_smoothing(self.label_smoothing)
                .with_from_logits(self.from_logits),
        );
        Ok(Box::new(WeightedCrossEntropyLoss {
            inner,
            balanced: list.is_none(),
            ignore_index: self.ignore_index,
        }))
    }
}

losskit_core::documented! {
    /// # What it does
    /// Cross-entropy with per-class weights that must be given, either as a list or as
    /// `"balanced"`:
    ///
    /// ```text
    /// loss_i = -w[y_i] · log softmax(x_i)[y_i]
    /// mean   = Σ_i loss_i / Σ_i w[y_i]
    /// balanced: w_c = M / (C · m_c)     (m_c = positions of class c in the batch, M = Σ m_c)
    /// ```
    ///
    /// `"balanced"` is scikit-learn's rule computed on each batch: classes absent from the
    /// batch get no weight; dense (probability) targets count `m_c = Σ p_c`.
    ///
    /// # When to use it
    /// Imbalanced classification or segmentation, where plain cross-entropy lets the majority
    /// class dominate the gradient. Use fixed weights (e.g. inverse dataset frequencies) for
    /// stable training; `"balanced"` adapts per batch and is noisier with small batches.
    ///
    /// # Options
    /// - `weights` (required): list of floats (one per class, >= 0) or `"balanced"`.
    /// - `ignore_index`, `label_smoothing`, `from_logits`: as in `cross_entropy`.
    ///
    /// # Example
    /// ```json
    /// {"name": "weighted_cross_entropy", "weights": [1.0, 4.0, 10.0]}
    /// ```
    ///
    /// # References
    /// - PyTorch `torch.nn.functional.cross_entropy(weight=...)`.
    /// - scikit-learn `compute_class_weight("balanced")`.
    #[derive(Debug, Clone)]
    pub struct WeightedCrossEntropyLoss {
        inner: CrossEntropyLoss,
        balanced: bool,
        ignore_index: Option<i64>,
    }
}

losskit_core::register_loss!(WeightedCrossEntropyLoss {
    name: "weighted_cross_entropy",
    aliases: ["weighted_ce"],
    category: Classification,
    summary: "Cross-entropy with required per-class weights, or \"balanced\" inverse-frequency weights per batch.",
    config: WeightedCrossEntropyLossConfig,
});

impl WeightedCrossEntropyLoss {
    fn balanced_weights(&self, input: &LossInput) -> Result<Vec<f32>, Error> {
        let classes = input.channels();
        let counts: Vec<f64> = match input.target() {
            Target::Indices(indices) => {
                let (indices, valid) = checked_indices(indices, classes, self.ignore_index)?;
                let indices = losskit_core::input::to_i64_vec(indices);
                let valid = valid.map(to_f64_vec);
                let mut counts = vec![0.0; classes];
                for (position, class) in indices.iter().enumerate() {
                    counts[*class as usize] += valid.as_ref().map_or(1.0, |v| v[position]);
                }
                counts
            }
            Target::Dense(dense) => {
                let [n, c, s] = dense.dims();
                to_f64_vec(dense.clone().swap_dims(0, 1).reshape([c, n * s]).sum_dim(1))
            }
        };
        let total: f64 = counts.iter().sum();
        Ok(counts
            .iter()
            .map(|&count| {
                if count > 0.0 {
                    (total / (classes as f64 * count)) as f32
                } else {
                    0.0
                }
            })
            .collect())
    }
}

impl Loss for WeightedCrossEntropyLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let loss = if self.balanced {
            let weights = self.balanced_weights(&input)?;
            self.inner.clone().with_weights(Some(weights))
        } else {
            self.inner.clone()
        };
        let (values, weights) = loss.per_position(input)?;
        Ok(reduce_maybe_weighted(values, weights, reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        // The inner cross-entropy declares the targets, the ignored index and, for listed
        // weights, the channels.
        let mut capabilities = self.inner.capabilities();
        capabilities.mean_over = None;
        capabilities
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn balanced_weights_equalise_the_classes() {
        // Three samples of class 0, one of class 1: weights 4/(2·3) and 4/(2·1).
        let loss = build(r#"{"name": "weighted_cross_entropy", "weights": "balanced"}"#);
        let output = floats(
            &[
                0.0,
                3f32.ln(),
                0.0,
                3f32.ln(),
                0.0,
                3f32.ln(),
                0.0,
                3f32.ln(),
            ],
            [4, 2],
        );
        let input = LossInput::with_indices(output, ints(&[0, 0, 0, 1], [4])).unwrap();
        let (w0, w1) = (4.0 / 6.0, 2.0);
        let expected = (3.0 * w0 * -(0.25f64).ln() + w1 * -(0.75f64).ln()) / (3.0 * w0 + w1);
        assert_close(
            &value(loss.as_ref(), input, Reduction::Mean),
            &[expected],
            1e-6,
        );
    }

    #[test]
    fn gradient_with_listed_weights() {
        let loss = build(r#"{"name": "weighted_cross_entropy", "weights": [1.0, 3.0]}"#);
        let (_, grad) = value_and_grad(loss.as_ref(), floats(&[0.0, 0.0, 0.0, 0.0], [2, 2]), |o| {
            LossInput::with_indices(o, ints(&[0, 1], [2])).unwrap()
        });
        // Σw = 4; sample 0 weight 1: (p - onehot)·1/4, sample 1 weight 3: ·3/4.
        assert_close(&grad, &[-0.125, 0.125, 0.375, -0.375], 1e-6);
    }

    #[test]
    fn weights_are_required_and_checked() {
        assert!(
            build_error(r#"{"name": "weighted_cross_entropy"}"#).contains("needs option `weights`")
        );
        assert!(
            build_error(r#"{"name": "weighted_cross_entropy", "weights": "inverse"}"#)
                .contains("balanced")
        );
        assert!(
            build_error(r#"{"name": "weighted_cross_entropy", "weights": [0.0, 0.0]}"#)
                .contains("positive")
        );
    }

    #[test]
    fn wrong_length_weights_are_an_input_error() {
        let loss = build(r#"{"name": "weighted_cross_entropy", "weights": [1.0, 2.0, 3.0]}"#);
        let input = LossInput::with_indices(floats(&[0.0; 4], [2, 2]), ints(&[0, 1], [2])).unwrap();
        let error = loss
            .forward(input, Reduction::Mean)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("3 `weights` values but the output has 2 channels"),
            "{error}"
        );
    }
}
