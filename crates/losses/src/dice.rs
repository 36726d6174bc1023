use burn::tensor::Tensor;
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,
    config::OptionError,
};

use crate::overlap::{Activation, Overlap, OverlapOptions, Sums, overlap_config};

overlap_config! {
    /// Options of [`DiceLoss`].
    pub struct DiceLossConfig {
        /// Soft IoU (Jaccard) instead of Dice.
        #[config(default = false)]
        pub jaccard: bool,
    }
    + dice_options
}

impl LossConfig for DiceLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        self.overlap_options().validate()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(DiceLoss::new(
            "dice",
            self.overlap_options(),
            self.jaccard,
        )?))
    }
}

losskit_core::documented! {
    /// # What it does
    /// One minus the soft Dice coefficient between probabilities `p` and target masks `t`, per
    /// sample and class (MONAI's `DiceLoss`):
    ///
    /// ```text
    /// I = Σ_s p·t        P = Σ_s p   (Σ p² with squared_pred)        T = Σ_s t   (Σ t²)
    /// f[n, c] = 1 - (2·I + smooth_nr) / (P + T + smooth_dr)
    /// jaccard:  f[n, c] = 1 - (2·I + smooth_nr) / (2·(P + T - I) + smooth_dr)
    /// mean = mean over (n, c) of w_c·f[n, c]            (batch: sums over n too, mean over c)
    /// ```
    ///
    /// `p` is the softmax (or sigmoid) of the output; class-index targets are one-hot encoded
    /// (with one output channel they are the binary mask itself), dense targets are taken as
    /// given. Works on `[N, C, S]`, `[N, C, H, W]` and `[N, C, D, H, W]` outputs alike.
    /// `sum` adds every `w_c·f`; `none` gives each sample's share of `sum`, `Σ_c w_c·f[n, c]`
    /// (with `batch`, where `f` belongs to the whole batch, `sum / N` for every sample), so
    /// `Σ none = sum`.
    ///
    /// Edge cases: an empty target with an empty prediction gives `f ≈ 0` through the smoothing
    /// (no 0/0); a class absent from a sample still contributes `1 - smooth_nr / (P + smooth_dr)`,
    /// as in MONAI; positions of `ignore_index` count in neither `P` nor `T`, and a sample whose
    /// positions are all ignored gives 0 with a zero gradient. Values and gradients stay finite
    /// for any finite logits.
    ///
    /// # When to use it
    /// Segmentation with strongly imbalanced foreground and background: Dice measures overlap
    /// per class, so small structures count as much as large ones. Often combined with
    /// cross-entropy (`dice_ce`) for smoother early training. `batch: true` is steadier when
    /// many samples lack some class.
    ///
    /// Classification outputs `[N, C]` are read as MONAI reads their `[N, C, 1]` view: one
    /// position per sample. There, use `batch: true` (the classes pooled over the batch), or
    /// per sample `smooth_nr: 0`: with the default `smooth_nr`, each class absent from a sample
    /// scores `smooth_nr / (p + smooth_dr)`, which rewards pushing its probability below
    /// `1e-5` more than raising the true class's, and the classifier settles with a class it
    /// never predicts (0.80 validation accuracy on the generated cells, against 1.00 with
    /// `smooth_nr: 0` or `batch: true`).
    ///
    /// # Options
    /// - `activation` (`softmax` | `sigmoid` | `none`, default `softmax`).
    /// - `include_background` (bool, default true): false drops channel 0.
    /// - `smooth_nr` (float >= 0, default 1e-5), `smooth_dr` (float > 0, default 1e-5).
    /// - `squared_pred` (bool, default false).
    /// - `batch` (bool, default false): `none` then gives every sample `sum / N`.
    /// - `jaccard` (bool, default false): soft IoU, as the `jaccard` loss.
    /// - `weights` (list of floats, one per output channel, default none): per-class weights
    ///   (the background's is unused when it is excluded; MONAI lists only the counted classes).
    /// - `ignore_index` (integer, default none).
    /// - `ignore_empty` (bool, default false): leaves out each (sample, class) absent from both
    ///   the target and the hard prediction (`losskit_core::empty`, the rule of the
    ///   segmentation metrics); the mean is over the pairs that count.
    ///
    /// # Example
    /// ```json
    /// {"name": "dice", "include_background": false, "batch": true}
    /// ```
    ///
    /// # References
    /// - Milletari et al., "V-Net" (3DV 2016).
    /// - MONAI `monai.losses.DiceLoss` (softmax=True, to_onehot_y=True).
    #[derive(Debug, Clone)]
    pub struct DiceLoss {
        overlap: Overlap,
        jaccard: bool,
    }
}

losskit_core::register_loss!(DiceLoss {
    name: "dice",
    aliases: ["dice_loss", "soft_dice"],
    category: Segmentation,
    summary: "Soft Dice loss (MONAI DiceLoss) over softmax or sigmoid probabilities, per sample and class.",
    config: DiceLossConfig,
});

impl DiceLoss {
    /// A Dice loss (or Jaccard, with `jaccard`) with the shared overlap `options`, reporting
    /// errors under `name`.
    pub(crate) fn new(
        name: &'static str,
        options: OverlapOptions,
        jaccard: bool,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            overlap: options.build(name)?,
            jaccard,
        })
    }

    /// The loss per (sample, class) `[B, K]` and the sums it came from.
    fn per_class(&self, input: LossInput) -> Result<(Tensor<2>, Sums), Error> {
        let sums = self.overlap.sums(input)?;
        let Sums {
            intersection,
            prediction,
            truth,
            ..
        } = sums.clone();
        let total = prediction + truth;
        let denominator = if self.jaccard {
            (total - intersection.clone()) * 2.0
        } else {
            total
        };
        let ratio =
            (intersection * 2.0 + self.overlap.smooth_nr) / (denominator + self.overlap.smooth_dr);
        Ok((ratio.neg() + 1.0, sums))
    }

    /// The activation turning the output into probabilities.
    pub(crate) fn activation(&self) -> Activation {
        self.overlap.activation
    }

    /// The options deciding which probabilities and masks are compared.
    pub(crate) fn overlap(&self) -> &Overlap {
        &self.overlap
    }
}

impl Loss for DiceLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let channels = input.channels();
        if let Some(total) = self
            .overlap
            .dice_rows_reduced(&input, self.jaccard, reduction)?
        {
            return Ok(total.into());
        }
        if let Some(values) = self.overlap.dice_rows(&input, self.jaccard)? {
            return Ok(self
                .overlap
                .reduce_rows(values, channels, reduction)?
                .into());
        }
        let (values, sums) = self.per_class(input)?;
        Ok(self
            .overlap
            .reduce(values, &sums, channels, reduction)?
            .into())
    }

    fn capabilities(&self) -> Capabilities {
        self.overlap.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use losskit_core::input::to_f64_vec;

    /// Two positions, two classes: softmax probabilities [3/4, 1/4] and [1/4, 3/4].
    fn two_by_two() -> Tensor<3> {
        let ln3 = 3f32.ln();
        floats(&[ln3, 0.0, 0.0, ln3], [1, 2, 2])
    }

    #[test]
    fn matches_a_hand_computed_value() {
        // Target classes [0, 0]: class 0 has I = 1, P = 1, T = 2; class 1 has I = 0, P = 1, T = 0.
        let loss = build("dice");
        let input = LossInput::with_indices(two_by_two(), ints(&[0, 0], [1, 2])).unwrap();
        let f0 = 1.0 - (2.0 + 1e-5) / (3.0 + 1e-5);
        let f1 = 1.0 - 1e-5 / (1.0 + 1e-5);
        assert_close(
            &value(loss.as_ref(), input, Reduction::Mean),
            &[(f0 + f1) / 2.0],
            1e-6,
        );
    }

    #[test]
    fn gradient_matches_the_formula() {
        // One position, target class 0, p = σ(x0 - x1). Without smoothing f0 = 1 - 2p/(p + 1) and
        // f1 = 1 - 0/(1 - p) = 1, so d mean / dp = -2/(p + 1)^2 / 2.
        let loss = build(r#"{"name": "dice", "smooth_nr": 0.0, "smooth_dr": 1e-9}"#);
        let (value, grad) = value_and_grad(loss.as_ref(), floats(&[0.0, 0.0], [1, 2, 1]), |o| {
            LossInput::with_indices(o, ints(&[0], [1, 1])).unwrap()
        });
        let p = 0.5;
        assert_close(&[value], &[(1.0 - 2.0 * p / (p + 1.0) + 1.0) / 2.0], 1e-6);
        let d_p = -1.0 / (p + 1.0f64).powi(2);
        // dp/dx0 = p(1 - p), dp/dx1 = -p(1 - p).
        assert_close(&grad, &[d_p * p * (1.0 - p), -d_p * p * (1.0 - p)], 1e-5);
    }

    /// Over rows (a classifier's `[N, C]`) the mean and the sum run as one fused operation;
    /// with class weights and the background left out they equal the per-sample values
    /// (`none`, reduced apart) summed, and divided by the (sample, class) pairs for the mean,
    /// in value and gradient.
    #[test]
    fn the_fused_reductions_over_rows_equal_the_per_sample_values_reduced() {
        let logits: Vec<f32> = (0..24)
            .map(|i| ((i * 29 % 13) as f32 - 6.0) / 3.0)
            .collect();
        let classes = [0, 3, 1, 2, 2, 1];
        for config in [
            r#"{"name": "dice", "include_background": false, "weights": [0.5, 2.0, 1.0, 3.0]}"#,
            r#"{"name": "dice", "jaccard": true, "smooth_nr": 0.0}"#,
        ] {
            let loss = build(config);
            let run = |reduction: Reduction, divisor: f64| {
                let x = floats(&logits, [6, 4]).require_grad();
                let input = LossInput::with_indices(x.clone(), ints(&classes, [6])).unwrap();
                let value = loss.forward(input, reduction).expect("loss computes").value;
                let total = value.sum() / divisor;
                let grads = total.backward();
                let grad = to_f64_vec(x.grad(&grads).expect("a gradient"));
                (to_f64_vec(total), grad)
            };
            let kept = if config.contains("include_background") {
                3.0
            } else {
                4.0
            };
            let (mean, per_sample_mean) =
                (run(Reduction::Mean, 1.0), run(Reduction::None, 6.0 * kept));
            assert_close(&mean.0, &per_sample_mean.0, 1e-6);
            assert_close(&mean.1, &per_sample_mean.1, 1e-6);
            let (sum, per_sample_sum) = (run(Reduction::Sum, 1.0), run(Reduction::None, 1.0));
            assert_close(&sum.0, &per_sample_sum.0, 1e-6);
            assert_close(&sum.1, &per_sample_sum.1, 1e-6);
        }
    }

    #[test]
    fn dense_one_hot_targets_equal_class_indices() {
        let loss = build(r#"{"name": "dice", "include_background": false, "squared_pred": true}"#);
        let indices = LossInput::with_indices(two_by_two(), ints(&[0, 1], [1, 2])).unwrap();
        let dense =
            LossInput::with_dense(two_by_two(), floats(&[1.0, 0.0, 0.0, 1.0], [1, 2, 2])).unwrap();
        assert_close(
            &value(loss.as_ref(), indices, Reduction::Mean),
            &value(loss.as_ref(), dense, Reduction::Mean),
            1e-6,
        );
    }

    #[test]
    fn volumes_equal_the_same_data_as_images() {
        let loss = build(r#"{"name": "dice", "batch": true}"#);
        let values: Vec<f32> = (0..2 * 3 * 24)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 4.0)
            .collect();
        let classes: Vec<i64> = (0..2 * 24).map(|i| (i * 7 % 3) as i64).collect();
        let volume = LossInput::with_indices(
            floats(&values, [2, 3, 2, 3, 4]),
            ints(&classes, [2, 2, 3, 4]),
        )
        .unwrap();
        let image =
            LossInput::with_indices(floats(&values, [2, 3, 6, 4]), ints(&classes, [2, 6, 4]))
                .unwrap();
        for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            assert_close(
                &value(loss.as_ref(), volume.clone(), reduction),
                &value(loss.as_ref(), image.clone(), reduction),
                1e-6,
            );
        }
    }

    #[test]
    fn ignored_positions_count_nowhere_and_all_ignored_gives_zero() {
        let loss = build(r#"{"name": "dice", "ignore_index": 255}"#);
        let ln3 = 3f32.ln();
        // The ignored second position would otherwise be class 1 with p = [1/4, 3/4].
        let output = floats(&[ln3, 0.0, 0.0, ln3], [1, 2, 2]);
        let with_ignored = LossInput::with_indices(output, ints(&[0, 255], [1, 2])).unwrap();
        let alone =
            LossInput::with_indices(floats(&[ln3, 0.0], [1, 2, 1]), ints(&[0], [1, 1])).unwrap();
        assert_close(
            &value(loss.as_ref(), with_ignored, Reduction::Mean),
            &value(loss.as_ref(), alone, Reduction::Mean),
            1e-6,
        );
        let (value, grad) = value_and_grad(
            loss.as_ref(),
            floats(&[1.0, 2.0, 3.0, 4.0], [1, 2, 2]),
            |o| LossInput::with_indices(o, ints(&[255, 255], [1, 2])).unwrap(),
        );
        assert_eq!(value, 0.0);
        assert!(grad.iter().all(|g| *g == 0.0), "{grad:?}");
    }

    #[test]
    fn extreme_logits_and_empty_masks_stay_finite() {
        let loss = build(r#"{"name": "dice", "activation": "sigmoid"}"#);
        let (value, grad) = value_and_grad(
            loss.as_ref(),
            floats(&[1e4, -1e4, 1e4, -1e4], [1, 1, 4]),
            |o| LossInput::with_dense(o, floats(&[0.0; 4], [1, 1, 4])).unwrap(),
        );
        assert!(
            value.is_finite() && grad.iter().all(|g| g.is_finite()),
            "{value} {grad:?}"
        );
        let (value, _) = value_and_grad(loss.as_ref(), floats(&[-1e4; 4], [1, 1, 4]), |o| {
            LossInput::with_dense(o, floats(&[0.0; 4], [1, 1, 4])).unwrap()
        });
        assert!(
            value.abs() < 1e-6,
            "an empty prediction of an empty mask gives {value}"
        );
    }

    #[test]
    fn class_weights_and_none_reduction() {
        let loss = build(r#"{"name": "dice", "weights": [0.0, 2.0]}"#);
        let input = LossInput::with_indices(two_by_two(), ints(&[0, 0], [1, 2])).unwrap();
        let f1 = 1.0 - 1e-5 / (1.0 + 1e-5);
        assert_close(
            &value(loss.as_ref(), input.clone(), Reduction::Mean),
            &[2.0 * f1 / 2.0],
            1e-6,
        );
        assert_close(
            &value(loss.as_ref(), input.clone(), Reduction::Sum),
            &[2.0 * f1],
            1e-6,
        );
        // `none` is each sample's share of `sum`: its weighted values summed over the classes.
        assert_close(
            &value(loss.as_ref(), input, Reduction::None),
            &[2.0 * f1],
            1e-6,
        );
    }

    #[test]
    fn none_is_each_samples_share_of_sum() {
        let make = segmentation_example;
        for config in [r#"{"name": "dice"}"#, r#"{"name": "dice", "batch": true}"#] {
            let loss = build(config);
            let sum = value(loss.as_ref(), make(), Reduction::Sum)[0];
            let none = value(loss.as_ref(), make(), Reduction::None);
            assert_close(&[none.iter().sum::<f64>()], &[sum], 1e-6);
            if config.contains("batch") {
                assert_close(&none, &[sum / 2.0, sum / 2.0], 1e-6);
            }
        }
        // Per sample, `none` adds the sample's class values; `mean` averages all N·C of them.
        let loss = build("dice");
        let mean = value(loss.as_ref(), make(), Reduction::Mean)[0];
        assert_close(
            &[value(loss.as_ref(), make(), Reduction::Sum)[0]],
            &[6.0 * mean],
            1e-6,
        );
    }

    #[test]
    fn bad_options_are_named() {
        assert_eq!(
            build_error(r#"{"name": "dice", "activation": "relu"}"#),
            "loss `dice`: option `activation` has the wrong type or value: unknown variant \
             `relu`, expected one of `softmax`, `sigmoid`, `none`"
        );
        assert!(build_error(r#"{"name": "dice", "smooth_dr": 0.0}"#).contains("`smooth_dr`"));
        assert!(build_error(r#"{"name": "dice", "smooth_nr": -1.0}"#).contains("`smooth_nr`"));
        assert!(build_error(r#"{"name": "dice", "weights": [1.0, -1.0]}"#).contains("`weights`"));
        let loss = build(r#"{"name": "dice", "weights": [1.0, 1.0, 1.0]}"#);
        let input = LossInput::with_indices(two_by_two(), ints(&[0, 0], [1, 2])).unwrap();
        assert!(
            loss.forward(input, Reduction::Mean)
                .unwrap_err()
                .to_string()
                .contains("3 `weights` values")
        );
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("dice")
            .unwrap()
            .assert_passed();
        for config in [
            r#"{"name": "dice", "activation": "sigmoid"}"#,
            r#"{"name": "dice", "activation": "none", "squared_pred": true}"#,
            r#"{"name": "dice", "batch": true, "include_background": false, "ignore_index": -1}"#,
        ] {
            losskit_core::conformance::check(config, build(config).as_ref()).assert_passed();
        }
    }
}
