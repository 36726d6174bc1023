use burn::tensor::Tensor;
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,
    config::OptionError, empty, numerics::check_exponent, reduce::reduce_maybe_weighted,
};

use crate::{
    dice::DiceLoss,
    focal::{FocalActivation, focal_elements},
    overlap::{check_non_negative, logits_activation, overlap_config},
};

overlap_config! {
    /// Options of [`DiceFocalLoss`]: the Dice options, the terms' weights and the focal γ.
    /// `include_background`, `weights` and `ignore_index` apply to both terms.
    pub struct DiceFocalLossConfig {
        /// Weight of the Dice term.
        #[config(default = 1.0)]
        pub lambda_dice: f32,
        /// Weight of the focal term.
        #[config(default = 1.0)]
        pub lambda_focal: f32,
        /// The focal term's focusing parameter γ, in [0, 1000].
        #[config(default = 2.0)]
        pub gamma: f32,
        /// Dice: soft IoU instead of Dice.
        #[config(default = false)]
        pub jaccard: bool,
        /// The focal term's form: `sigmoid` per channel (MONAI 1.6.1's `DiceFocalLoss`,
        /// whatever the Dice term's activation), `softmax` over the channels, or `auto`.
        #[config(default = "FocalActivation::Sigmoid")]
        pub focal_activation: FocalActivation,
    }
    + dice_options
}

impl LossConfig for DiceFocalLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        check_non_negative("lambda_dice", self.lambda_dice)?;
        check_non_negative("lambda_focal", self.lambda_focal)?;
        check_exponent("gamma", self.gamma)?;
        logits_activation(self.activation)?;
        self.overlap_options().validate()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(DiceFocalLoss {
            dice: DiceLoss::new("dice_focal", self.overlap_options(), self.jaccard)?,
            lambda_dice: self.lambda_dice as f64,
            lambda_focal: self.lambda_focal as f64,
            gamma: self.gamma as f64,
            focal_activation: self.focal_activation,
        }))
    }
}

losskit_core::documented! {
    /// # What it does
    /// Dice plus focal loss, each weighted, as MONAI 1.6.1's `DiceFocalLoss(softmax=True,
    /// to_onehot_y=True)` computes it:
    ///
    /// ```text
    /// loss  = λ_dice · dice(x, y) + λ_focal · focal(x, y)
    /// focal = 1/(M·K) · Σ_positions Σ_c w_c · l_c         (K counted classes, M positions)
    /// sigmoid: l_c = (1 - p_t)^γ · BCE(x_c, t_c)          softmax: l_c = -(1 - p_c)^γ · t_c · log p_c
    /// ```
    ///
    /// The Dice term is the `dice` loss with the same options (softmax over the channels by
    /// default). The focal term is, by default, the sigmoid focal loss of each channel over the
    /// logits against the one-hot target: that is MONAI 1.6.1's `FocalLoss` default, which its
    /// `DiceFocalLoss` uses even when the Dice term takes a softmax (MONAI 1.6.1 has no
    /// `use_softmax` argument there). `focal_activation: "softmax"` gives the softmax focal
    /// loss of the whole distribution instead (this loss's default before it matched MONAI).
    /// As in MONAI the focal mean is over every (position, counted class) element, so it is
    /// the `focal` loss divided by K; without the background, channel 0 is left out of the
    /// focal sum too. `sum` and `none` add the focal values over positions (over each sample's
    /// positions) divided by K; both terms, already weighted, are reported as `dice` and
    /// `focal`.
    ///
    /// Edge cases: empty masks give a Dice term ≈ 0 through the smoothing (no 0/0), absent
    /// classes contribute as in MONAI, ignored positions count in neither term, and when every
    /// position is ignored both terms are 0 with a zero gradient; `(1 - p)` is floored before
    /// the power, so everything stays finite for any finite logits.
    ///
    /// # When to use it
    /// Segmentation with heavy imbalance and many easy background pixels: the focal term
    /// concentrates on the hard pixels, the Dice term on per-class overlap.
    ///
    /// # Options
    /// - `lambda_dice` (float >= 0, default 1), `lambda_focal` (float >= 0, default 1).
    /// - `gamma` (float in [0, 1000], default 2).
    /// - `activation` (`softmax` | `sigmoid`, default `softmax`): the Dice term's.
    /// - `focal_activation` (`sigmoid` | `softmax` | `auto`, default `sigmoid`, MONAI's): the
    ///   focal term's; `auto` is softmax for several channels, sigmoid for one.
    /// - Dice: `include_background` (also for the focal term), `smooth_nr`, `smooth_dr`,
    ///   `squared_pred`, `batch`, `jaccard` (as in `dice`).
    /// - `weights` (list of floats, one per output channel): per-class weights of both terms.
    /// - `ignore_index` (integer, default none).
    /// - `ignore_empty` (bool, default false): leaves out each (sample, class) absent from both
    ///   the target and the hard prediction (`losskit_core::empty`, the rule of the
    ///   segmentation metrics), in both terms: the Dice mean and the focal term's mean over
    ///   classes are over the classes that count.
    ///
    /// # Example
    /// ```json
    /// {"name": "dice_focal", "gamma": 2.0, "lambda_focal": 0.5}
    /// ```
    ///
    /// # References
    /// - MONAI `monai.losses.DiceFocalLoss`.
    /// - Lin et al., "Focal Loss for Dense Object Detection" (ICCV 2017).
    /// - Zhu et al., "AnatomyNet" (Medical Physics 2019), Dice + focal.
    #[derive(Debug, Clone)]
    pub struct DiceFocalLoss {
        dice: DiceLoss,
        lambda_dice: f64,
        lambda_focal: f64,
        gamma: f64,
        focal_activation: FocalActivation,
    }
}

losskit_core::register_loss!(DiceFocalLoss {
    name: "dice_focal",
    aliases: [],
    category: Segmentation,
    summary: "Weighted sum of Dice and focal loss (MONAI DiceFocalLoss: softmax Dice, sigmoid focal); reports both terms.",
    config: DiceFocalLossConfig,
});

impl DiceFocalLoss {
    /// The focal term: the mean over (position, counted class) elements, as MONAI's
    /// `FocalLoss` takes it.
    fn focal(&self, input: &LossInput, reduction: Reduction) -> Result<Tensor<1>, Error> {
        let overlap = self.dice.overlap();
        let channels = input.channels();
        let (target, valid) = overlap.target(input)?;
        let sigmoid = match self.focal_activation {
            FocalActivation::Sigmoid => true,
            FocalActivation::Softmax => false,
            FocalActivation::Auto => channels == 1,
        };
        let elements = overlap.counted_classes(focal_elements(
            input.output().clone(),
            target,
            self.gamma,
            sigmoid,
        ));
        let [n, classes, s] = elements.dims();
        let elements = match overlap.class_weights(channels, &input.device())? {
            Some(weights) => elements * weights.reshape([1, classes, 1]),
            None => elements,
        };
        let per_position = if overlap.ignore_empty {
            // The mean over the classes that count in each sample, as for the Dice term.
            let (truth, predicted) = overlap.class_counts(input)?;
            let present = empty::counted_classes(truth, predicted);
            let kept = present.clone().sum_dim(1).clamp_min(1.0);
            (elements * present.reshape([n, classes, 1]))
                .sum_dim(1)
                .reshape([n, s])
                / kept.reshape([n, 1])
        } else {
            elements.sum_dim(1).reshape([n, s]) / classes as f64
        };
        let (per_position, weights) = match valid {
            Some(valid) => (per_position * valid.clone(), Some(valid)),
            None => (per_position, None),
        };
        Ok(reduce_maybe_weighted(per_position, weights, reduction))
    }
}

impl Loss for DiceFocalLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let focal = self.focal(&input, reduction)? * self.lambda_focal;
        let dice = self.dice.forward(input, reduction)?.value * self.lambda_dice;
        Ok(LossValue {
            value: dice.clone() + focal.clone(),
            terms: vec![("dice".into(), dice), ("focal".into(), focal)],
        })
    }

    fn capabilities(&self) -> Capabilities {
        self.dice.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn is_dice_plus_the_focal_loss_over_the_classes() {
        let loss = build(
            r#"{"name": "dice_focal", "lambda_dice": 0.5, "lambda_focal": 2.0, "gamma": 2.0, "focal_activation": "softmax"}"#,
        );
        let dice = value(
            build("dice").as_ref(),
            segmentation_example(),
            Reduction::Mean,
        )[0];
        let focal = value(
            build(r#"{"name": "focal", "gamma": 2.0}"#).as_ref(),
            segmentation_example(),
            Reduction::Mean,
        )[0];
        let result = loss
            .forward(segmentation_example(), Reduction::Mean)
            .unwrap();
        assert_close(
            &losskit_core::input::to_f64_vec(result.value),
            &[0.5 * dice + 2.0 * focal / 3.0],
            1e-6,
        );
        assert_eq!(
            result
                .terms
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>(),
            ["dice", "focal"]
        );
    }

    #[test]
    fn hand_computed_focal_term_and_gradient() {
        // One position of class 0 with p = [1/2, 1/2]: focal = -(1/2)^2·log(1/2) / 2 classes.
        let loss =
            build(r#"{"name": "dice_focal", "lambda_dice": 0.0, "focal_activation": "softmax"}"#);
        let (value, grad) = value_and_grad(loss.as_ref(), floats(&[0.0, 0.0], [1, 2, 1]), |o| {
            LossInput::with_indices(o, ints(&[0], [1, 1])).unwrap()
        });
        assert_close(&[value], &[0.25 * 2f64.ln() / 2.0], 1e-6);
        // Focal gradient at p = 1/2, γ = 2 (see focal's test), halved.
        let p: f64 = 0.5;
        let dz = (2.0 * (1.0 - p) * p.ln() - (1.0 - p).powi(2) / p) * p * (1.0 - p) / 2.0;
        assert_close(&grad, &[dz, -dz], 1e-5);
    }

    #[test]
    fn the_default_focal_term_is_monais_sigmoid_per_channel() {
        // Logits [0, 0], class 0: each channel's sigmoid is 1/2 and its BCE log 2, so each
        // element is (1/2)^2 · log 2, and the mean over the two channels the same; the softmax
        // form would halve it (one element of the two carries the target).
        let loss = build(r#"{"name": "dice_focal", "lambda_dice": 0.0}"#);
        let input =
            LossInput::with_indices(floats(&[0.0, 0.0], [1, 2, 1]), ints(&[0], [1, 1])).unwrap();
        assert_close(
            &value(loss.as_ref(), input, Reduction::Mean),
            &[0.25 * 2f64.ln()],
            1e-6,
        );
    }

    #[test]
    fn sigmoid_form_and_ignored_positions() {
        let loss = build(
            r#"{"name": "dice_focal", "activation": "sigmoid", "lambda_dice": 0.0, "gamma": 1.0, "ignore_index": 7}"#,
        );
        // The ignored position would add a large loss.
        let input =
            LossInput::with_indices(floats(&[0.0, 9.0], [1, 1, 2]), ints(&[1, 7], [1, 2])).unwrap();
        // p_t = 1/2: (1/2)·log 2 over the one counted position.
        assert_close(
            &value(loss.as_ref(), input, Reduction::Mean),
            &[0.5 * 2f64.ln()],
            1e-6,
        );
    }

    #[test]
    fn bad_options_are_named() {
        assert!(build_error(r#"{"name": "dice_focal", "gamma": -2.0}"#).contains("`gamma`"));
        assert!(
            build_error(r#"{"name": "dice_focal", "lambda_focal": -1.0}"#)
                .contains("`lambda_focal`")
        );
        assert_eq!(
            build_error(r#"{"name": "dice_focal", "activation": "none"}"#),
            "loss `dice_focal`: option `activation` must be \"softmax\" or \"sigmoid\" here: \
             the second term needs logits"
        );
    }

    #[test]
    fn a_huge_gamma_is_refused_and_the_largest_stays_finite() {
        // Issue 16: an integral γ beyond i64 made burn's powf_scalar panic.
        assert_eq!(
            build_error(r#"{"name": "dice_focal", "gamma": 1e30}"#),
            "loss `dice_focal`: option `gamma` must be a number in [0, 1000], got 1e30"
        );
        for activation in ["softmax", "sigmoid"] {
            let loss = build(&format!(
                r#"{{"name": "dice_focal", "gamma": 1000, "activation": "{activation}"}}"#
            ));
            let output = floats(&[-30.0, 0.0, 30.0, 0.5, 2.0, -1.0], [1, 2, 3]);
            assert_finite(loss.as_ref(), output, |o| {
                LossInput::with_indices(o, ints(&[0, 1, 1], [1, 3])).unwrap()
            });
        }
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("dice_focal")
            .unwrap()
            .assert_passed();
        let config =
            r#"{"name": "dice_focal", "activation": "sigmoid", "include_background": false}"#;
        losskit_core::conformance::check(config, build(config).as_ref()).assert_passed();
    }
}
