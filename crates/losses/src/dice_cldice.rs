use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,
    config::{OptionError, ensure},
    reduce::reduce_samples,
};

use crate::{
    dice::DiceLoss,
    overlap::OverlapOptions,
    shape::{Shape, shape_config},
    soft_cldice::SkeletonOptions,
};

shape_config! {
    /// Options of [`DiceClDiceLoss`].
    pub struct DiceClDiceLossConfig {
        /// The weight α of the clDice term, in [0, 1]; Dice gets 1 - α.
        #[config(default = 0.5)]
        pub alpha: f32,
    }
    include_background: true,
    + skeleton
}

impl LossConfig for DiceClDiceLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        let alpha = self.alpha;
        ensure((0.0..=1.0).contains(&alpha), "alpha", || {
            format!("must be in [0, 1], got {alpha}")
        })?;
        self.skeleton_options().validate()?;
        self.shape_options().validate()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        let skeleton = self.skeleton_options();
        // MONAI's Dice term: the same activation, background rule and smoothing.
        let dice = OverlapOptions {
            activation: self.activation,
            include_background: self.include_background,
            smooth_nr: skeleton.smooth_nr,
            smooth_dr: skeleton.smooth_dr,
            squared_pred: false,
            batch: false,
            weights: None,
            ignore_index: None,
            ignore_empty: false,
        };
        Ok(Box::new(DiceClDiceLoss {
            dice: DiceLoss::new("dice_cldice", dice, false)?,
            skeleton,
            shape: self.shape_options().build("dice_cldice")?,
            alpha: f64::from(self.alpha),
        }))
    }
}

losskit_core::documented! {
    /// # What it does
    /// Soft Dice and soft clDice, weighted, as MONAI 1.6.1's `SoftDiceclDiceLoss` computes
    /// them:
    ///
    /// ```text
    /// loss = (1 - α) · dice(p, t) + α · cldice(p, t)
    /// ```
    ///
    /// `dice` is the `dice` loss (mean over samples and classes) with `smooth_nr` and
    /// `smooth_dr` as given here (MONAI passes them on), and `cldice` the `soft_cldice` loss
    /// with the same options; see those losses for the formulas. Both terms, already weighted,
    /// are reported as `dice` and `cldice`. `sum` and `none` combine each term's `sum` and
    /// `none`.
    ///
    /// # When to use it
    /// Tubular and network-like structures: the Dice term learns the region, the clDice term
    /// keeps thin branches connected (Shit et al. train with α between 0.1 and 0.5).
    ///
    /// # Options
    /// - `alpha` (float in [0, 1], default 0.5): the clDice weight.
    /// - `iterations`, `smooth_nr`, `smooth_dr`, `smooth`, `activation`,
    ///   `include_background`: as in `soft_cldice` (defaults 3, 1, 1, 1e-4, `softmax`, true).
    ///
    /// # Example
    /// ```json
    /// {"name": "dice_cldice", "alpha": 0.3, "iterations": 10}
    /// ```
    ///
    /// # References
    /// - Shit et al., "clDice — a Novel Topology-Preserving Loss Function for Tubular
    ///   Structure Segmentation" (CVPR 2021).
    /// - MONAI `monai.losses.SoftDiceclDiceLoss` (1.6.1).
    #[derive(Debug, Clone)]
    pub struct DiceClDiceLoss {
        dice: DiceLoss,
        skeleton: SkeletonOptions,
        shape: Shape,
        alpha: f64,
    }
}

losskit_core::register_loss!(DiceClDiceLoss {
    name: "dice_cldice",
    aliases: [],
    category: Segmentation,
    summary: "Weighted sum of soft Dice and soft clDice (MONAI SoftDiceclDiceLoss); reports both terms.",
    config: DiceClDiceLossConfig,
});

impl Loss for DiceClDiceLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let dims = input.spatial_shape().to_vec();
        let dice = self.dice.forward(input.clone(), reduction)?.value * (1.0 - self.alpha);
        let (probabilities, target) = self.shape.probabilities(input)?;
        let cl_dice = reduce_samples(
            self.skeleton.cl_dice(probabilities, target, &dims),
            reduction,
        ) * self.alpha;
        Ok(LossValue {
            value: dice.clone() + cl_dice.clone(),
            terms: vec![("dice".into(), dice), ("cldice".into(), cl_dice)],
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            mean_over: None,
            ..self.shape.capabilities(Some(0.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn is_the_weighted_sum_of_dice_and_cldice() {
        let input = || {
            LossInput::with_indices(
                floats(
                    &[
                        0.3, -1.0, 2.0, 0.5, 0.1, -0.2, 1.1, 0.0, -0.7, 0.4, 0.9, -1.3, 0.2, 0.8,
                        -0.5, 1.5, 0.0, 0.3,
                    ],
                    [1, 2, 3, 3],
                ),
                ints(&[0, 1, 1, 0, 1, 0, 1, 1, 0], [1, 3, 3]),
            )
            .unwrap()
        };
        let combined = build(r#"{"name": "dice_cldice", "alpha": 0.3}"#)
            .forward(input(), Reduction::Mean)
            .unwrap();
        let dice = value(
            build(r#"{"name": "dice", "smooth_nr": 1.0, "smooth_dr": 1.0}"#).as_ref(),
            input(),
            Reduction::Mean,
        )[0];
        let cl_dice = value(build("soft_cldice").as_ref(), input(), Reduction::Mean)[0];
        assert_close(
            &losskit_core::input::to_f64_vec(combined.value),
            &[0.7 * dice + 0.3 * cl_dice],
            1e-6,
        );
        let names: Vec<&str> = combined.terms.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["dice", "cldice"]);
    }

    #[test]
    fn bad_alpha_is_named() {
        assert_eq!(
            build_error(r#"{"name": "dice_cldice", "alpha": 1.5}"#),
            "loss `dice_cldice`: option `alpha` must be in [0, 1], got 1.5"
        );
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("dice_cldice")
            .unwrap()
            .assert_passed();
        let config = r#"{"name": "dice_cldice", "activation": "sigmoid", "alpha": 0.2}"#;
        losskit_core::conformance::check(config, build(config).as_ref()).assert_passed();
    }
}
