use burn::{
    config::Config,
    tensor::{Tensor, activation::softmax},
};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,
    targets::dense_target,
};

/// Options of [`LovaszSoftmaxLoss`].
#[derive(Config, Debug)]
pub struct LovaszSoftmaxLossConfig {
    /// One loss per image, averaged, instead of one over the whole batch.
    #[config(default = false)]
    pub per_image: bool,
    /// A target class index whose positions are left out.
    pub ignore_index: Option<i64>,
}

impl LossConfig for LovaszSoftmaxLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(LovaszSoftmaxLoss { config: self }))
    }
}

losskit_core::documented! {
    /// # What it does
    /// The Lovász-softmax loss: the Lovász extension of the Jaccard loss of each class, a
    /// convex surrogate that is tight on the discrete IoU (segmentation-models-pytorch's
    /// `LovaszLoss(mode="multiclass")`, classes "present"):
    ///
    /// ```text
    /// p = softmax(x)          e_c[i] = |t_c[i] - p_c[i]|       (i over the positions)
    /// π = the order of e_c, descending;  g = t_c[π]
    /// J[k] = 1 - (Σg - cumsum(g)[k]) / (Σg + cumsum(1 - g)[k]);   ΔJ[k] = J[k] - J[k-1]
    /// l_c = Σ_k e_c[π[k]] · ΔJ[k]
    /// loss = mean of l_c over the classes present in the target
    /// ```
    ///
    /// Without `per_image` the positions of the whole batch are pooled (one loss for the batch);
    /// with it, each image gets its loss and `mean` averages them. `sum` adds `l_c` over the
    /// (image, present class) pairs; `none` gives each image its share of `sum`, `Σ_c l_c` over
    /// its present classes (without `per_image`, where the classes' losses belong to the whole
    /// batch, `sum / N` for every sample), so that `Σ none = sum`. The gradient flows through
    /// the sorted errors; the order itself is piecewise constant.
    ///
    /// Edge cases: only classes present in the target contribute, so an absent class adds
    /// nothing; positions of `ignore_index` are left out; an image (or batch) with no counted
    /// position gives 0 with a zero gradient. No division can be 0/0 (the union is at least
    /// 1 wherever it is used) and the loss stays finite for any finite logits.
    ///
    /// # When to use it
    /// Semantic segmentation scored by mean IoU, usually to fine-tune a model trained with
    /// cross-entropy (or in a `weighted_sum` with it). `per_image: true` optimises the per-image
    /// IoU instead of the dataset-level one.
    ///
    /// # Options
    /// - `per_image` (bool, default false): one loss per image; `none` then gives each image
    ///   the sum of its classes' losses, and without it every sample gets `sum / N`.
    /// - `ignore_index` (integer, default none).
    ///
    /// # Example
    /// ```json
    /// {"name": "lovasz_softmax", "per_image": true, "ignore_index": 255}
    /// ```
    ///
    /// # References
    /// - Berman, Rannen Triki & Blaschko, "The Lovász-Softmax loss: A tractable surrogate for
    ///   the optimization of the intersection-over-union measure in neural networks" (CVPR 2018).
    /// - segmentation-models-pytorch `LovaszLoss(mode="multiclass", per_image=False)`.
    #[derive(Debug, Clone)]
    pub struct LovaszSoftmaxLoss {
        config: LovaszSoftmaxLossConfig,
    }
}

losskit_core::register_loss!(LovaszSoftmaxLoss {
    name: "lovasz_softmax",
    aliases: ["lovasz"],
    category: Segmentation,
    summary: "Lovász-softmax loss: a tight convex surrogate of the per-class IoU (smp LovaszLoss multiclass).",
    config: LovaszSoftmaxLossConfig,
});

impl LovaszSoftmaxLoss {
    /// The loss of each (image or batch, class) `[B, C]`, zero for absent classes, and the
    /// `[B, C]` mask of present classes.
    fn per_class(&self, input: LossInput) -> Result<(Tensor<2>, Tensor<2>), Error> {
        let [n, c, s] = input.output().dims();
        let (target, valid) = dense_target(input.target(), c, self.config.ignore_index)?;
        let (output, _) = input.into_parts();
        let mut errors = (target.clone() - softmax(output, 1)).abs();
        if let Some(valid) = valid {
            // Ignored positions get error 0 and truth 0: they sort after every positive error,
            // so they change no term that counts.
            errors = errors * valid.unsqueeze_dim::<3>(1);
        }
        let (errors, truth) = if self.config.per_image {
            (errors, target)
        } else {
            let pool = |values: Tensor<3>| values.swap_dims(0, 1).reshape([1, c, n * s]);
            (pool(errors), pool(target))
        };
        let groups = errors.dims()[0];
        let order = errors.clone().detach().argsort_descending(2);
        let truth_sorted = truth.clone().gather(2, order.clone());
        let losses = (errors.gather(2, order) * jaccard_steps(truth_sorted))
            .sum_dim(2)
            .reshape([groups, c]);
        let present = truth
            .sum_dim(2)
            .reshape([groups, c])
            .greater_elem(0.0)
            .float();
        Ok((losses * present.clone(), present))
    }
}

/// The union a Jaccard index divides by is at least 1 for hard labels; this floor only guards
/// soft targets.
const MIN_UNION: f64 = 1e-6;

/// The Lovász extension's weights `ΔJ[k]` for truths sorted by descending error `[B, C, P]`.
fn jaccard_steps(truth_sorted: Tensor<3>) -> Tensor<3> {
    let positions = truth_sorted.dims()[2];
    let total = truth_sorted.clone().sum_dim(2);
    let intersection = total.clone() - truth_sorted.clone().cumsum(2);
    let union = total + (truth_sorted.neg() + 1.0).cumsum(2);
    let jaccard = (intersection / union.clamp_min(MIN_UNION)).neg() + 1.0;
    if positions == 1 {
        return jaccard;
    }
    let previous = Tensor::cat(
        vec![
            jaccard.zeros_like().narrow(2, 0, 1),
            jaccard.clone().narrow(2, 0, positions - 1),
        ],
        2,
    );
    jaccard - previous
}

impl Loss for LovaszSoftmaxLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let samples = input.batch_size();
        let (losses, present) = self.per_class(input)?;
        let groups = losses.dims()[0];
        Ok(match reduction {
            Reduction::Sum => losses.sum(),
            // Each image's share of `sum`: its classes' losses, or an equal share of the batch's.
            Reduction::None if groups < samples => {
                (losses.sum() / samples as f64).repeat_dim(0, samples)
            }
            Reduction::None => losses.sum_dim(1).reshape([groups]),
            Reduction::Mean => (losses.sum_dim(1) / present.sum_dim(1).clamp_min(1.0))
                .reshape([groups])
                .mean(),
        }
        .into())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ignore_index: self.config.ignore_index,
            ..Capabilities::segmentation()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    /// smp's algorithm on the host, for a single group: mean over present classes.
    fn reference(probabilities: &[Vec<f64>], labels: &[usize]) -> f64 {
        let classes = probabilities.len();
        let mut losses = Vec::new();
        for c in 0..classes {
            let truth: Vec<f64> = labels
                .iter()
                .map(|&l| if l == c { 1.0 } else { 0.0 })
                .collect();
            let total: f64 = truth.iter().sum();
            if total == 0.0 {
                continue;
            }
            let mut order: Vec<usize> = (0..labels.len()).collect();
            let error = |i: usize| (truth[i] - probabilities[c][i]).abs();
            order.sort_by(|&a, &b| error(b).total_cmp(&error(a)));
            let (mut seen, mut missed, mut previous, mut loss) = (0.0, 0.0, 0.0, 0.0);
            for &i in &order {
                seen += truth[i];
                missed += 1.0 - truth[i];
                let jaccard = 1.0 - (total - seen) / (total + missed);
                loss += error(i) * (jaccard - previous);
                previous = jaccard;
            }
            losses.push(loss);
        }
        losses.iter().sum::<f64>() / losses.len().max(1) as f64
    }

    fn softmax_host(logits: &[f32], classes: usize, positions: usize) -> Vec<Vec<f64>> {
        (0..classes)
            .map(|c| {
                (0..positions)
                    .map(|i| {
                        let total: f64 = (0..classes)
                            .map(|k| (logits[k * positions + i] as f64).exp())
                            .sum();
                        (logits[c * positions + i] as f64).exp() / total
                    })
                    .collect()
            })
            .collect()
    }

    const LOGITS: [f32; 15] = [
        0.3, -1.0, 2.0, 0.5, 0.1, -0.2, 1.1, 0.0, -0.7, 0.4, 0.9, -1.3, 0.2, 0.6, -0.4,
    ];
    const LABELS: [usize; 5] = [2, 0, 1, 1, 2];

    fn example(output: Tensor<3>) -> LossInput {
        LossInput::with_indices(output, ints(&LABELS.map(|l| l as i64), [1, 5])).unwrap()
    }

    #[test]
    fn matches_the_reference_algorithm() {
        let loss = build("lovasz_softmax");
        let expected = reference(&softmax_host(&LOGITS, 3, 5), &LABELS);
        assert_close(
            &value(
                loss.as_ref(),
                example(floats(&LOGITS, [1, 3, 5])),
                Reduction::Mean,
            ),
            &[expected],
            1e-5,
        );
    }

    #[test]
    fn gradient_matches_finite_differences_of_the_reference() {
        let loss = build("lovasz_softmax");
        let (_, grad) = value_and_grad(loss.as_ref(), floats(&LOGITS, [1, 3, 5]), example);
        // Steps small enough to keep the order of the errors: the loss is linear between kinks.
        let h = 1e-3f32;
        let numeric: Vec<f64> = (0..LOGITS.len())
            .map(|i| {
                let mut up = LOGITS;
                up[i] += h;
                let mut down = LOGITS;
                down[i] -= h;
                let at = |logits: &[f32]| reference(&softmax_host(logits, 3, 5), &LABELS);
                (at(&up) - at(&down)) / (up[i] - down[i]) as f64
            })
            .collect();
        assert_close(&grad, &numeric, 1e-3);
    }

    #[test]
    fn per_image_averages_the_images_and_ignored_positions_are_left_out() {
        let logits = [
            0.3, -1.0, 2.0, 0.5, 0.1, -0.2, 1.1, 0.0, -0.7, 0.4, 0.9, -1.3,
        ];
        // Image 1 has labels [0, ignored, 1]: it is the image of its positions 0 and 2 alone.
        let loss = build(r#"{"name": "lovasz_softmax", "per_image": true, "ignore_index": 9}"#);
        let input = LossInput::with_indices(
            floats(&logits, [2, 2, 3]),
            ints(&[0, 1, 1, 0, 9, 1], [2, 3]),
        )
        .unwrap();
        let first = reference(&softmax_host(&logits[..6], 2, 3), &[0, 1, 1]);
        let image1 = [logits[6], logits[8], logits[9], logits[11]];
        let second = reference(&softmax_host(&image1, 2, 2), &[0, 1]);
        // Both classes are present in both images: each image's share of `sum` is twice its mean.
        assert_close(
            &value(loss.as_ref(), input.clone(), Reduction::None),
            &[2.0 * first, 2.0 * second],
            1e-5,
        );
        assert_close(
            &value(loss.as_ref(), input.clone(), Reduction::Sum),
            &[2.0 * (first + second)],
            1e-5,
        );
        assert_close(
            &value(loss.as_ref(), input, Reduction::Mean),
            &[(first + second) / 2.0],
            1e-5,
        );
    }

    #[test]
    fn none_without_per_image_shares_the_batch_sum_equally() {
        let logits = [
            0.3, -1.0, 2.0, 0.5, 0.1, -0.2, 1.1, 0.0, -0.7, 0.4, 0.9, -1.3,
        ];
        let loss = build("lovasz_softmax");
        let input = LossInput::with_indices(
            floats(&logits, [2, 2, 3]),
            ints(&[0, 1, 1, 0, 0, 1], [2, 3]),
        )
        .unwrap();
        let sum = value(loss.as_ref(), input.clone(), Reduction::Sum)[0];
        assert_close(
            &value(loss.as_ref(), input, Reduction::None),
            &[sum / 2.0, sum / 2.0],
            1e-6,
        );
    }

    #[test]
    fn all_ignored_gives_zero_with_zero_gradient() {
        let loss = build(r#"{"name": "lovasz_softmax", "ignore_index": -1}"#);
        let (value, grad) = value_and_grad(
            loss.as_ref(),
            floats(&[1.0, 2.0, 3.0, 4.0], [1, 2, 2]),
            |o| LossInput::with_indices(o, ints(&[-1, -1], [1, 2])).unwrap(),
        );
        assert_eq!(value, 0.0);
        assert!(grad.iter().all(|g| *g == 0.0), "{grad:?}");
    }

    #[test]
    fn bad_options_are_named() {
        assert!(
            build_error(r#"{"name": "lovasz_softmax", "per_image": "yes"}"#).contains("per_image")
        );
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("lovasz_softmax")
            .unwrap()
            .assert_passed();
        for config in [
            r#"{"name": "lovasz_softmax", "per_image": true}"#,
            r#"{"name": "lovasz_softmax", "ignore_index": -1}"#,
            r#"{"name": "lovasz_softmax", "per_image": true, "ignore_index": 255}"#,
        ] {
            losskit_core::conformance::check(config, build(config).as_ref()).assert_passed();
        }
    }
}
