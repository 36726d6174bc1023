use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction, Target,
    config::{OptionError, ensure},
};

use crate::{
    binary_cross_entropy::BinaryCrossEntropyLossConfig,
    cross_entropy::{CrossEntropyLoss, CrossEntropyLossConfig, validate_cross_entropy},
    dice::DiceLoss,
    overlap::{Activation, check_non_negative, logits_activation, overlap_config},
};

overlap_config! {
    /// Options of [`DiceCeLoss`]: the Dice options, the terms' weights and the
    /// cross-entropy's label smoothing. `weights` and `ignore_index` apply to both terms.
    pub struct DiceCeLossConfig {
        /// Weight of the Dice term.
        #[config(default = 1.0)]
        pub lambda_dice: f32,
        /// Weight of the cross-entropy term.
        #[config(default = 1.0)]
        pub lambda_ce: f32,
        /// Dice: soft IoU instead of Dice.
        #[config(default = false)]
        pub jaccard: bool,
        /// Cross-entropy label smoothing in [0, 1] (softmax only).
        #[config(default = 0.0)]
        pub label_smoothing: f32,
    }
    + dice_options
}

impl LossConfig for DiceCeLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        check_non_negative("lambda_dice", self.lambda_dice)?;
        check_non_negative("lambda_ce", self.lambda_ce)?;
        logits_activation(self.activation)?;
        self.overlap_options().validate()?;
        validate_cross_entropy(self.weights.as_deref(), self.label_smoothing)?;
        if self.activation == Activation::Sigmoid {
            ensure(self.label_smoothing == 0.0, "label_smoothing", || {
                "applies to the softmax cross-entropy only; set \"activation\": \"softmax\" or leave it 0".into()
            })?;
            ensure(self.ignore_index.is_none(), "ignore_index", || {
                "applies with \"activation\": \"softmax\" only (binary cross-entropy has no ignored index)".into()
            })?;
        }
        Ok(())
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        let dice = DiceLoss::new("dice_ce", self.overlap_options(), self.jaccard)?;
        let cross_entropy: Box<dyn Loss> = match dice.activation() {
            Activation::Sigmoid => BinaryCrossEntropyLossConfig {
                pos_weight: None,
                weights: self.weights.clone(),
                from_logits: true,
            }
            .build()?,
            _ => Box::new(CrossEntropyLoss::new(
                "dice_ce",
                CrossEntropyLossConfig::new()
                    .with_weights(self.weights.clone())
                    .with_ignore_index(self.ignore_index)
                    .with_label_smoothing(self.label_smoothing),
            )),
        };
        Ok(Box::new(DiceCeLoss {
            dice,
            cross_entropy,
            lambda_dice: self.lambda_dice as f64,
            lambda_ce: self.lambda_ce as f64,
            label_smoothing: self.label_smoothing,
        }))
    }
}

losskit_core::documented! {
    /// # What it does
    /// Dice plus cross-entropy, each weighted (MONAI's `DiceCELoss(softmax=True,
    /// to_onehot_y=True)`):
    ///
    /// ```text
    /// loss = λ_dice · dice(x, y) + λ_ce · cross_entropy(x, y)
    /// ```
    ///
    /// The Dice term is the `dice` loss with the same options; the cross-entropy term is the
    /// `cross_entropy` loss on the logits (with `weights`, `ignore_index`, `label_smoothing`),
    /// or with `activation: sigmoid` the `binary_cross_entropy` loss of each channel (multi-label
    /// masks; MONAI uses BCE only for one channel). Each term is reduced as its own loss
    /// reduces: `mean` is Dice's mean over samples and classes plus the cross-entropy's mean
    /// over positions; `sum` adds both sums; `none` adds the per-sample values, each term's share
    /// of its `sum`, so `Σ none = sum`. Both terms, already weighted, are
    /// reported as `dice` and `cross_entropy`.
    ///
    /// Edge cases are the terms': empty masks give a Dice term ≈ 0 through the smoothing (no
    /// 0/0), absent classes contribute as in MONAI, and when every position is ignored both
    /// terms are 0 with a zero gradient; everything stays finite for any finite logits.
    ///
    /// # When to use it
    /// The usual default for medical and semantic segmentation: cross-entropy gives smooth,
    /// well-conditioned gradients early on, Dice keeps small structures from being ignored.
    ///
    /// # Options
    /// - `lambda_dice` (float >= 0, default 1), `lambda_ce` (float >= 0, default 1).
    /// - `activation` (`softmax` | `sigmoid`, default `softmax`).
    /// - Dice: `include_background`, `smooth_nr`, `smooth_dr`, `squared_pred`, `batch`,
    ///   `jaccard` (as in `dice`).
    /// - `weights` (list of floats, one per output channel): per-class weights of both terms.
    /// - `ignore_index` (integer, softmax only), `label_smoothing` (float in [0, 1], softmax
    ///   only).
    /// - `ignore_empty` (bool, default false): leaves out each (sample, class) absent from both
    ///   the target and the hard prediction (`losskit_core::empty`, the rule of the
    ///   segmentation metrics); the mean is over the pairs that count
    ///   (the Dice term only).
    ///
    /// # Example
    /// ```json
    /// {"name": "dice_ce", "lambda_dice": 1.0, "lambda_ce": 0.5, "include_background": false}
    /// ```
    ///
    /// # References
    /// - MONAI `monai.losses.DiceCELoss`.
    /// - Isensee et al., "nnU-Net" (Nature Methods 2021), Dice + cross-entropy.
    #[derive(Debug)]
    pub struct DiceCeLoss {
        dice: DiceLoss,
        cross_entropy: Box<dyn Loss>,
        lambda_dice: f64,
        lambda_ce: f64,
        label_smoothing: f32,
    }
}

losskit_core::register_loss!(DiceCeLoss {
    name: "dice_ce",
    aliases: ["dice_cross_entropy"],
    category: Segmentation,
    summary: "Weighted sum of Dice and cross-entropy (MONAI DiceCELoss); reports both terms.",
    config: DiceCeLossConfig,
});

/// The input of the second term of a Dice compound: with sigmoid, the target as the Dice term
/// reads it (a one-channel index target is the mask itself), so that both terms agree.
pub(crate) fn second_term_input(dice: &DiceLoss, input: &LossInput) -> Result<LossInput, Error> {
    if dice.activation() != Activation::Sigmoid {
        return Ok(input.clone());
    }
    let (target, _) = dice.overlap().target(input)?;
    Ok(LossInput::from_canonical(
        input.output().clone(),
        Target::Dense(target),
        input.shape().to_vec(),
    )?)
}

impl Loss for DiceCeLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let second = second_term_input(&self.dice, &input)?;
        let dice = self.dice.forward(input, reduction)?.value * self.lambda_dice;
        let cross_entropy = self.cross_entropy.forward(second, reduction)?.value * self.lambda_ce;
        Ok(LossValue {
            value: dice.clone() + cross_entropy.clone(),
            terms: vec![
                ("dice".into(), dice),
                ("cross_entropy".into(), cross_entropy),
            ],
        })
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.dice.capabilities();
        if self.label_smoothing > 0.0 {
            capabilities.minimum = None;
        }
        capabilities
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn is_the_weighted_sum_of_its_terms() {
        let loss = build(r#"{"name": "dice_ce", "lambda_dice": 2.0, "lambda_ce": 0.5}"#);
        let dice = value(
            build("dice").as_ref(),
            segmentation_example(),
            Reduction::Mean,
        )[0];
        let ce = value(
            build("cross_entropy").as_ref(),
            segmentation_example(),
            Reduction::Mean,
        )[0];
        let result = loss
            .forward(segmentation_example(), Reduction::Mean)
            .unwrap();
        assert_close(
            &losskit_core::input::to_f64_vec(result.value),
            &[2.0 * dice + 0.5 * ce],
            1e-6,
        );
        let terms: Vec<(String, Vec<f64>)> = result
            .terms
            .into_iter()
            .map(|(name, term)| (name, losskit_core::input::to_f64_vec(term)))
            .collect();
        assert_eq!(terms[0].0, "dice");
        assert_eq!(terms[1].0, "cross_entropy");
        assert_close(&terms[0].1, &[2.0 * dice], 1e-6);
        assert_close(&terms[1].1, &[0.5 * ce], 1e-6);
    }

    #[test]
    fn gradient_adds_the_terms_gradients() {
        let values = [0.3, -1.0, 2.0, 0.5, 0.1, -0.2];
        let make = |o| LossInput::with_indices(o, ints(&[2, 0], [1, 2])).unwrap();
        let (_, both) = value_and_grad(build("dice_ce").as_ref(), floats(&values, [1, 3, 2]), make);
        let (_, dice) = value_and_grad(build("dice").as_ref(), floats(&values, [1, 3, 2]), make);
        let (_, ce) = value_and_grad(
            build("cross_entropy").as_ref(),
            floats(&values, [1, 3, 2]),
            make,
        );
        let sum: Vec<f64> = dice.iter().zip(&ce).map(|(a, b)| a + b).collect();
        assert_close(&both, &sum, 1e-6);
    }

    #[test]
    fn sigmoid_uses_binary_cross_entropy_on_one_channel_masks() {
        let loss = build(r#"{"name": "dice_ce", "activation": "sigmoid"}"#);
        let output = floats(&[0.5, -1.0, 2.0], [1, 1, 3]);
        let indices = LossInput::with_indices(output.clone(), ints(&[1, 0, 1], [1, 3])).unwrap();
        let dense = LossInput::with_dense(output, floats(&[1.0, 0.0, 1.0], [1, 1, 3])).unwrap();
        let expected = value(
            build(r#"{"name": "dice", "activation": "sigmoid"}"#).as_ref(),
            dense.clone(),
            Reduction::Mean,
        )[0] + value(build("bce").as_ref(), dense.clone(), Reduction::Mean)[0];
        assert_close(
            &value(loss.as_ref(), indices, Reduction::Mean),
            &[expected],
            1e-6,
        );
        assert_close(
            &value(loss.as_ref(), dense, Reduction::Mean),
            &[expected],
            1e-6,
        );
    }

    #[test]
    fn bad_options_are_named() {
        assert!(build_error(r#"{"name": "dice_ce", "lambda_ce": -1.0}"#).contains("`lambda_ce`"));
        assert!(
            build_error(r#"{"name": "dice_ce", "activation": "none"}"#).contains("`activation`")
        );
        assert!(
            build_error(r#"{"name": "dice_ce", "label_smoothing": 2.0}"#)
                .contains("`label_smoothing`")
        );
        assert!(
            build_error(r#"{"name": "dice_ce", "activation": "sigmoid", "ignore_index": 0}"#)
                .contains("`ignore_index`")
        );
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("dice_ce")
            .unwrap()
            .assert_passed();
        let config = r#"{"name": "dice_ce", "activation": "sigmoid", "batch": true}"#;
        losskit_core::conformance::check(config, build(config).as_ref()).assert_passed();
    }
}
