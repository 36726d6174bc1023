use burn::{
    config::Config,
    tensor::{Tensor, TensorData},
};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,
    config::{OptionError, ensure},
    input::to_f64_vec,
};

use crate::cross_entropy::{CrossEntropyLoss, CrossEntropyLossConfig, validate_cross_entropy};

/// Options of [`TopKCrossEntropyLoss`].
#[derive(Config, Debug)]
pub struct TopKCrossEntropyLossConfig {
    /// The percentage of positions kept, in (0, 100].
    #[config(default = 10.0)]
    pub k: f64,
    /// Per-class weights (one per class), applied to each position's loss as in PyTorch's
    /// `reduction="none"`.
    pub weights: Option<Vec<f32>>,
    /// A target class index whose positions have loss 0.
    pub ignore_index: Option<i64>,
    /// Label smoothing in [0, 1].
    #[config(default = 0.0)]
    pub label_smoothing: f32,
}

impl LossConfig for TopKCrossEntropyLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        let k = self.k;
        ensure(k.is_finite() && k > 0.0 && k <= 100.0, "k", || {
            format!("must be a percentage in (0, 100], got {k}")
        })?;
        validate_cross_entropy(self.weights.as_deref(), self.label_smoothing)
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        let cross_entropy = CrossEntropyLossConfig::new()
            .with_weights(self.weights)
            .with_ignore_index(self.ignore_index)
            .with_label_smoothing(self.label_smoothing);
        Ok(Box::new(TopKCrossEntropyLoss {
            cross_entropy: CrossEntropyLoss::new("topk_cross_entropy", cross_entropy),
            k: self.k,
        }))
    }
}

losskit_core::documented! {
    /// # What it does
    /// Cross-entropy over only the hardest positions: the mean of the largest `k` percent of
    /// the per-position cross-entropies of the whole batch, as nnU-Net's `TopKLoss` computes
    /// it:
    ///
    /// ```text
    /// l_j  = -w[y_j] · log softmax(x_j)[y_j]          for every position j of every sample
    /// m    = max(1, ⌊M · k / 100⌋)                    (M positions in the batch)
    /// loss = (1/m) · Σ of the m largest l_j
    /// ```
    ///
    /// Positions of `ignore_index` have loss 0 and still count in M, as in nnU-Net (which
    /// passes its ignore label to PyTorch's cross-entropy with `reduction="none"`). Which
    /// positions are kept is decided on the values (no gradient flows through the choice;
    /// ties go to the earlier position); the gradient reaches the kept positions only. `sum`
    /// adds the kept values; `none` gives each sample the sum of its kept positions, so
    /// `Σ none = sum`. nnU-Net gives NaN when `⌊M·k/100⌋ = 0`; here at least one position is
    /// kept.
    ///
    /// # When to use it
    /// Segmentation where most pixels are easy: the loss concentrates on the hardest k% (the
    /// boundaries, the small structures) without a focusing parameter to tune. nnU-Net uses
    /// it with k = 10, alone or with Dice.
    ///
    /// # Options
    /// - `k` (percentage in (0, 100], default 10): `100` is plain cross-entropy (without
    ///   weights).
    /// - `weights` (list of floats, one per class), `ignore_index` (integer),
    ///   `label_smoothing` (float in [0, 1]): as in `cross_entropy`.
    ///
    /// # Example
    /// ```json
    /// {"name": "topk_cross_entropy", "k": 10}
    /// ```
    ///
    /// # References
    /// - Wu et al., "Bridging Category-level and Instance-level Semantic Image Segmentation"
    ///   (2016), online bootstrapped cross-entropy.
    /// - nnU-Net `nnunetv2.training.loss.robust_ce_loss.TopKLoss`; Ma et al., "Loss odyssey in
    ///   medical image segmentation" (Medical Image Analysis 2021).
    #[derive(Debug, Clone)]
    pub struct TopKCrossEntropyLoss {
        cross_entropy: CrossEntropyLoss,
        k: f64,
    }
}

losskit_core::register_loss!(TopKCrossEntropyLoss {
    name: "topk_cross_entropy",
    aliases: ["topk"],
    category: Segmentation,
    summary: "Cross-entropy over the hardest k% of positions in the batch (nnU-Net TopKLoss).",
    config: TopKCrossEntropyLossConfig,
});

impl TopKCrossEntropyLoss {
    /// How many of `positions` are kept.
    fn kept(&self, positions: usize) -> usize {
        ((positions as f64 * self.k / 100.0).floor() as usize).clamp(1, positions)
    }

    /// A `[N, S]` mask of the kept positions: the `kept` largest of `values`.
    fn mask(&self, values: &Tensor<2>, kept: usize) -> Tensor<2> {
        let host = to_f64_vec(values.clone().detach());
        let mut order: Vec<usize> = (0..host.len()).collect();
        // Stable: equal values keep their order, so ties go to the earlier position.
        order.sort_by(|&a, &b| host[b].total_cmp(&host[a]));
        let mut mask = vec![0.0f32; host.len()];
        for &position in &order[..kept] {
            mask[position] = 1.0;
        }
        Tensor::from_data(TensorData::new(mask, values.dims()), &values.device())
    }
}

impl Loss for TopKCrossEntropyLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let (values, _) = self.cross_entropy.per_position(input)?;
        let [n, s] = values.dims();
        let kept = self.kept(n * s);
        let selected = values.clone() * self.mask(&values, kept);
        let value = match reduction {
            Reduction::Mean => selected.sum() / kept as f64,
            Reduction::Sum => selected.sum(),
            Reduction::None => selected.sum_dim(1).reshape([n]),
        };
        Ok(value.into())
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.cross_entropy.capabilities();
        // The mean divides by the kept count, not by the positions.
        capabilities.mean_over = None;
        capabilities
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn keeps_the_largest_k_percent_and_their_gradient() {
        // Four positions, two classes, all of class 0. Logits of class 1 rising: the last two
        // positions have the largest losses; k = 50 keeps them.
        let loss = build(r#"{"name": "topk_cross_entropy", "k": 50}"#);
        let output = floats(&[0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 2.0], [1, 2, 4]);
        let make = |o| LossInput::with_indices(o, ints(&[0, 0, 0, 0], [1, 4])).unwrap();
        let ce = |z: f64| (1.0 + z.exp()).ln();
        let (value, grad) = value_and_grad(loss.as_ref(), output, make);
        assert_close(&[value], &[(ce(1.0) + ce(2.0)) / 2.0], 1e-6);
        let p = |z: f64| 1.0 / (1.0 + (-z).exp());
        let expected = [
            0.0,
            0.0,
            -p(1.0) / 2.0,
            -p(2.0) / 2.0,
            0.0,
            0.0,
            p(1.0) / 2.0,
            p(2.0) / 2.0,
        ];
        assert_close(&grad, &expected, 1e-6);
    }

    #[test]
    fn k_100_is_cross_entropy_and_none_sums_to_sum() {
        let all = build(r#"{"name": "topk_cross_entropy", "k": 100}"#);
        let cross_entropy = build("cross_entropy");
        for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            assert_close(
                &value(all.as_ref(), segmentation_example(), reduction),
                &value(cross_entropy.as_ref(), segmentation_example(), reduction),
                1e-6,
            );
        }
        let some = build(r#"{"name": "topk_cross_entropy", "k": 50}"#);
        let none = value(some.as_ref(), segmentation_example(), Reduction::None);
        let sum = value(some.as_ref(), segmentation_example(), Reduction::Sum);
        assert_close(&[none.iter().sum()], &sum, 1e-6);
    }

    #[test]
    fn at_least_one_position_is_kept() {
        // 4 positions: k = 25 keeps one, and so does k = 1 (⌊0.04⌋ = 0, raised to 1).
        let one = value(
            build(r#"{"name": "topk_cross_entropy", "k": 25}"#).as_ref(),
            segmentation_example(),
            Reduction::Mean,
        );
        let fewer = value(
            build(r#"{"name": "topk_cross_entropy", "k": 1}"#).as_ref(),
            segmentation_example(),
            Reduction::Mean,
        );
        assert!(one[0] > 0.0);
        assert_close(&fewer, &one, 1e-9);
    }

    #[test]
    fn bad_k_is_named() {
        assert_eq!(
            build_error(r#"{"name": "topk_cross_entropy", "k": 0}"#),
            "loss `topk_cross_entropy`: option `k` must be a percentage in (0, 100], got 0"
        );
        assert!(build_error(r#"{"name": "topk_cross_entropy", "k": 101}"#).contains("`k`"));
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("topk_cross_entropy")
            .unwrap()
            .assert_passed();
        let config = r#"{"name": "topk_cross_entropy", "k": 30, "ignore_index": 5}"#;
        losskit_core::conformance::check(config, build(config).as_ref()).assert_passed();
    }
}
