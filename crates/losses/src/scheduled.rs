use burn::config::Config;
use losskit_core::{
    AuxiliaryInput, Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue,
    Reduction, TrainingProgress,
    burn::tensor::Tensor,
    config::{OptionError, ensure},
    serde_json::{Value, json},
};
use serde::{Deserialize, Serialize};

use crate::weighted_sum::{
    auxiliary_inputs_of, build_terms, forward_weighted, merged_capabilities,
};

/// How a [`Ramp`] moves from its start to its end weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RampShape {
    /// In equal steps per epoch.
    #[default]
    Linear,
    /// Slowly, then fast, then slowly: `(1 - cos(π·t)) / 2`.
    Cosine,
    /// At once, after the ramp's epochs.
    Step,
}

/// A weight that moves from `start` to `end` over `epochs` epochs, after `after` epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    /// The weight in the first epoch (and during the `after` epochs).
    pub start: f32,
    /// The weight once the ramp is over.
    pub end: f32,
    /// How many epochs the ramp takes (>= 1).
    pub epochs: usize,
    /// Epochs at the start weight before the ramp begins (default 0).
    #[serde(default)]
    pub after: usize,
    /// The ramp's shape (default `linear`).
    #[serde(default)]
    pub shape: RampShape,
}

impl Ramp {
    /// The weight during `epoch` (counted from 1).
    pub fn at(&self, epoch: usize) -> f64 {
        let elapsed = epoch.saturating_sub(1).saturating_sub(self.after) as f64;
        let t = (elapsed / self.epochs as f64).min(1.0);
        let progress = match self.shape {
            RampShape::Linear => t,
            RampShape::Cosine => (1.0 - (std::f64::consts::PI * t).cos()) / 2.0,
            RampShape::Step => f64::from(u8::from(t >= 1.0)),
        };
        let (start, end) = (f64::from(self.start), f64::from(self.end));
        start + (end - start) * progress
    }
}

/// The weight of a [`ScheduledTerm`]: a number, or a ramp over epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TermWeight {
    /// The same weight in every epoch.
    Constant(f32),
    /// A weight that changes with the epoch.
    Ramp(Ramp),
}

impl TermWeight {
    fn at(&self, epoch: usize) -> f64 {
        match self {
            TermWeight::Constant(weight) => f64::from(*weight),
            TermWeight::Ramp(ramp) => ramp.at(epoch),
        }
    }

    fn values(&self) -> Vec<f32> {
        match self {
            TermWeight::Constant(weight) => vec![*weight],
            TermWeight::Ramp(ramp) => vec![ramp.start, ramp.end],
        }
    }
}

/// One term of a [`ScheduledLoss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledTerm {
    /// The term's weight: a number, or `{"start", "end", "epochs", "after", "shape"}`.
    pub weight: TermWeight,
    /// The term's loss: a registered name, or a config object `{"name": ..., options...}`.
    pub loss: Value,
}

/// Options of [`ScheduledLoss`].
#[derive(Config, Debug)]
pub struct ScheduledLossConfig {
    /// The terms, at least one.
    pub terms: Vec<ScheduledTerm>,
}

impl LossConfig for ScheduledLossConfig {
    const REQUIRED: &'static [(&'static str, &'static str)] = &[(
        "terms",
        "a list of terms such as [{\"weight\": {\"start\": 1, \"end\": 0.01, \"epochs\": 99}, \"loss\": \"dice\"}, {\"weight\": {\"start\": 0, \"end\": 0.99, \"epochs\": 99}, \"loss\": \"boundary\"}]",
    )];

    fn example() -> Self {
        let ramp = |start, end| {
            TermWeight::Ramp(Ramp {
                start,
                end,
                epochs: 99,
                after: 0,
                shape: RampShape::Linear,
            })
        };
        Self::new(vec![
            ScheduledTerm {
                weight: ramp(1.0, 0.01),
                loss: json!({"name": "dice"}),
            },
            ScheduledTerm {
                weight: ramp(0.0, 0.99),
                loss: json!({"name": "boundary"}),
            },
        ])
    }

    fn validate(&self) -> Result<(), OptionError> {
        ensure(!self.terms.is_empty(), "terms", || {
            "must list at least one term".into()
        })?;
        for (index, term) in self.terms.iter().enumerate() {
            let at = format!("terms[{index}].weight");
            for value in term.weight.values() {
                ensure(value.is_finite(), &at, || {
                    format!("must hold finite numbers, got {value}")
                })?;
            }
            if let TermWeight::Ramp(ramp) = &term.weight {
                ensure(ramp.epochs >= 1, &format!("{at}.epochs"), || {
                    "must be at least 1".into()
                })?;
            }
        }
        Ok(())
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        self.validate()
            .map_err(|error| ConfigError::invalid("scheduled", &error.option, error.problem))?;
        let weights: Vec<TermWeight> = self.terms.iter().map(|term| term.weight.clone()).collect();
        let losses = build_terms(
            "scheduled",
            self.terms.into_iter().map(|term| term.loss).collect(),
        )?;
        let terms = losses
            .into_iter()
            .zip(weights)
            .map(|((name, loss), weight)| Term { name, weight, loss })
            .collect();
        Ok(Box::new(ScheduledLoss { terms }))
    }
}

#[derive(Debug)]
struct Term {
    name: String,
    weight: TermWeight,
    loss: Box<dyn Loss>,
}

losskit_core::documented! {
    /// # What it does
    /// A weighted sum of registered losses whose weights change with the training epoch:
    ///
    /// ```text
    /// loss(epoch) = Σ_k w_k(epoch) · loss_k(x, y)
    /// ramp:  t = clamp((epoch - 1 - after) / epochs, 0, 1)
    ///        w = start + (end - start) · s(t),  s(t) = t | (1 - cos πt)/2 | [t = 1]
    /// ```
    ///
    /// Epochs count from 1, as in `metrics.csv`: a ramp gives `start` in epoch `after + 1` and
    /// `end` from epoch `after + epochs + 1` on. The training loop tells the loss the epoch
    /// (validation reads the epoch just trained); `losskit compute --epoch N` sets it by hand;
    /// without it the loss is at epoch 1. Every term is computed in every epoch, even at
    /// weight 0, so an input a later term cannot take fails at once, not mid-run.
    ///
    /// Each term is reported, already weighted, under its loss's name (as in `weighted_sum`),
    /// and its current weight as `<name>_weight`, so `metrics.csv` has a column of each term's
    /// weight and value per epoch. Reductions, capabilities and edge cases are those of
    /// `weighted_sum`; the minimum is known only when every term's minimum is 0 and no weight
    /// is ever negative.
    ///
    /// # When to use it
    /// Losses that need a warm start: the boundary-loss authors train with the region loss
    /// first and move its weight to the boundary loss by 0.01 per epoch (the example below);
    /// likewise annealing in clDice, a Hausdorff term or a regulariser.
    ///
    /// # Options
    /// - `terms` (required): a non-empty list of `{"weight": w, "loss": config}`, where `w` is
    ///   a number or `{"start": float, "end": float, "epochs": int >= 1, "after": int (default
    ///   0), "shape": "linear" | "cosine" | "step" (default linear)}`, and `loss` a loss name
    ///   or config object. An invalid term option is reported with its path, e.g.
    ///   `terms[1].loss.alpha`.
    ///
    /// # Example
    /// ```json
    /// {"name": "scheduled", "terms": [{"weight": {"start": 1.0, "end": 0.01, "epochs": 99}, "loss": "dice"}, {"weight": {"start": 0.0, "end": 0.99, "epochs": 99}, "loss": "boundary"}]}
    /// ```
    ///
    /// # References
    /// - Kervadec et al., "Boundary loss for highly unbalanced segmentation" (MIDL 2019),
    ///   the rebalancing schedule.
    #[derive(Debug)]
    pub struct ScheduledLoss {
        terms: Vec<Term>,
    }
}

losskit_core::register_loss!(ScheduledLoss {
    name: "scheduled",
    aliases: ["schedule"],
    category: Composite,
    summary: "A weighted sum of losses whose weights ramp over the epochs (e.g. Dice, then boundary); reports each weight.",
    config: ScheduledLossConfig,
});

impl Loss for ScheduledLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let epoch = input.progress().unwrap_or(TrainingProgress::START).epoch;
        let samples = match reduction {
            Reduction::None => input.batch_size(),
            _ => 1,
        };
        let device = input.device();
        let terms: Vec<(&str, &dyn Loss, f64)> = self
            .terms
            .iter()
            .map(|term| {
                (
                    term.name.as_str(),
                    term.loss.as_ref(),
                    term.weight.at(epoch),
                )
            })
            .collect();
        let LossValue {
            value,
            terms: reported,
        } = forward_weighted("scheduled", &terms, input, reduction)?;
        // Each term's value, then its weight (repeated per sample for `none`).
        let mut with_weights = Vec::with_capacity(2 * reported.len());
        for ((name, value), (_, _, weight)) in reported.into_iter().zip(&terms) {
            let weight_name = format!("{name}_weight");
            with_weights.push((name, value));
            with_weights.push((
                weight_name,
                Tensor::<1>::zeros([samples], &device) + *weight,
            ));
        }
        Ok(LossValue {
            value,
            terms: with_weights,
        })
    }

    fn capabilities(&self) -> Capabilities {
        let terms: Vec<(&dyn Loss, f64)> = self
            .terms
            .iter()
            .map(|term| (term.loss.as_ref(), 1.0))
            .collect();
        let mut capabilities = merged_capabilities(&terms);
        let never_negative = self
            .terms
            .iter()
            .all(|term| term.weight.values().iter().all(|w| *w >= 0.0));
        if capabilities.minimum != Some(0.0) || !never_negative {
            capabilities.minimum = None;
        }
        capabilities
    }

    fn auxiliary_inputs(&self) -> Vec<AuxiliaryInput> {
        let losses: Vec<&dyn Loss> = self.terms.iter().map(|term| term.loss.as_ref()).collect();
        auxiliary_inputs_of(&losses)
    }

    fn changes_with_progress(&self) -> bool {
        self.terms.iter().any(|term| {
            matches!(&term.weight, TermWeight::Ramp(ramp) if ramp.start != ramp.end)
                || term.loss.changes_with_progress()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use losskit_core::input::to_f64_vec;

    const DICE_TO_FOCAL: &str = r#"{"name": "scheduled", "terms": [
        {"weight": {"start": 1.0, "end": 0.2, "epochs": 4, "after": 1}, "loss": "dice"},
        {"weight": {"start": 0.0, "end": 0.8, "epochs": 4, "after": 1}, "loss": "focal"}]}"#;

    #[test]
    fn ramps_are_linear_cosine_or_step_and_count_epochs_from_one() {
        let ramp = |shape| Ramp {
            start: 1.0,
            end: 0.0,
            epochs: 4,
            after: 1,
            shape,
        };
        let linear: Vec<f64> = (1..=7).map(|e| ramp(RampShape::Linear).at(e)).collect();
        assert_close(&linear, &[1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0], 1e-12);
        let cosine: Vec<f64> = (1..=6).map(|e| ramp(RampShape::Cosine).at(e)).collect();
        let half = 0.5 + 0.5 * (std::f64::consts::PI / 4.0).cos();
        assert_close(&cosine, &[1.0, 1.0, half, 0.5, 1.0 - half, 0.0], 1e-12);
        let step: Vec<f64> = (1..=7).map(|e| ramp(RampShape::Step).at(e)).collect();
        assert_close(&step, &[1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0], 1e-12);
    }

    #[test]
    fn the_epoch_sets_each_terms_weight_and_both_are_reported() {
        let loss = build(DICE_TO_FOCAL);
        let dice = value(
            build("dice").as_ref(),
            segmentation_example(),
            Reduction::Mean,
        )[0];
        let focal = value(
            build("focal").as_ref(),
            segmentation_example(),
            Reduction::Mean,
        )[0];
        for (epoch, dice_weight, focal_weight) in [(1, 1.0, 0.0), (4, 0.6, 0.4), (9, 0.2, 0.8)] {
            let input = segmentation_example().with_progress(TrainingProgress { epoch, step: 0 });
            let result = loss.forward(input, Reduction::Mean).unwrap();
            assert_close(
                &to_f64_vec(result.value),
                &[dice_weight * dice + focal_weight * focal],
                1e-6,
            );
            let terms: Vec<(String, f64)> = result
                .terms
                .into_iter()
                .map(|(name, term)| (name, to_f64_vec(term)[0]))
                .collect();
            let names: Vec<&str> = terms.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["dice", "dice_weight", "focal", "focal_weight"]);
            assert_close(
                &[terms[1].1, terms[3].1],
                &[dice_weight, focal_weight],
                1e-6,
            );
        }
        // Without progress: epoch 1.
        assert_close(
            &value(loss.as_ref(), segmentation_example(), Reduction::Mean),
            &[dice],
            1e-6,
        );
    }

    #[test]
    fn only_ramps_that_move_make_it_change_with_progress() {
        assert!(build(DICE_TO_FOCAL).changes_with_progress());
        let still = build(
            r#"{"name": "scheduled", "terms": [{"weight": {"start": 0.5, "end": 0.5, "epochs": 3}, "loss": "dice"}, {"weight": 2, "loss": "focal"}]}"#,
        );
        assert!(!still.changes_with_progress());
        let nested = build(&format!(
            r#"{{"name": "weighted_sum", "terms": [{{"weight": 1, "loss": {DICE_TO_FOCAL}}}]}}"#
        ));
        assert!(nested.changes_with_progress());
    }

    #[test]
    fn constant_weights_are_a_weighted_sum() {
        let scheduled = build(
            r#"{"name": "scheduled", "terms": [{"weight": 0.5, "loss": "dice"}, {"weight": 2, "loss": "focal"}]}"#,
        );
        let weighted = build(
            r#"{"name": "weighted_sum", "terms": [{"weight": 0.5, "loss": "dice"}, {"weight": 2, "loss": "focal"}]}"#,
        );
        for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            assert_close(
                &value(scheduled.as_ref(), segmentation_example(), reduction),
                &value(weighted.as_ref(), segmentation_example(), reduction),
                1e-6,
            );
        }
    }

    #[test]
    fn bad_terms_are_named_with_their_path() {
        assert_eq!(
            build_error(
                r#"{"name": "scheduled", "terms": [{"weight": {"start": 1, "end": 0, "epochs": 0}, "loss": "dice"}]}"#
            ),
            "loss `scheduled`: option `terms[0].weight.epochs` must be at least 1"
        );
        assert!(
            build_error(
                r#"{"name": "scheduled", "terms": [{"weight": 1, "loss": "dice"}, {"weight": 1, "loss": {"name": "boundary", "spacing": [0]}}]}"#
            )
            .contains("terms[1].loss.spacing")
        );
        assert!(build_error(r#"{"name": "scheduled", "terms": []}"#).contains("`terms`"));
    }

    #[test]
    fn it_reads_the_auxiliary_inputs_of_its_terms() {
        let loss = build(
            r#"{"name": "scheduled", "terms": [{"weight": 1, "loss": "dice"}, {"weight": 1, "loss": "boundary"}, {"weight": 1, "loss": {"name": "boundary", "spacing": [2, 1]}}]}"#,
        );
        let names: Vec<&str> = loss.auxiliary_inputs().iter().map(|a| a.name).collect();
        assert_eq!(names, ["signed_distance_maps"]);
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("scheduled")
            .unwrap()
            .assert_passed();
        let input = build(DICE_TO_FOCAL);
        losskit_core::conformance::check(DICE_TO_FOCAL, input.as_ref()).assert_passed();
    }
}
