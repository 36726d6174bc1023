use burn::config::Config;
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction, Registry,
    burn::tensor::Tensor,
    config::{OptionError, ensure},
    error::InputError,
    serde_json::{Value, json},
};
use serde::{Deserialize, Serialize};

/// One term of a [`WeightedSumLoss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedTerm {
    /// The term's weight (finite; default 1).
    #[serde(default = "unit_weight")]
    pub weight: f32,
    /// The term's loss: a registered name, or a config object `{"name": ..., options...}`.
    pub loss: Value,
}

fn unit_weight() -> f32 {
    1.0
}

/// Options of [`WeightedSumLoss`].
#[derive(Config, Debug)]
pub struct WeightedSumLossConfig {
    /// The weighted terms, at least one.
    pub terms: Vec<WeightedTerm>,
}

impl LossConfig for WeightedSumLossConfig {
    const REQUIRED: &'static [(&'static str, &'static str)] = &[(
        "terms",
        "a list of terms such as [{\"weight\": 1.0, \"loss\": {\"name\": \"dice\"}}, {\"weight\": 0.5, \"loss\": \"cross_entropy\"}]",
    )];

    fn example() -> Self {
        Self::new(vec![
            WeightedTerm {
                weight: 1.0,
                loss: json!({"name": "dice"}),
            },
            WeightedTerm {
                weight: 1.0,
                loss: json!({"name": "cross_entropy"}),
            },
        ])
    }

    fn validate(&self) -> Result<(), OptionError> {
        ensure(!self.terms.is_empty(), "terms", || {
            "must list at least one term".into()
        })?;
        for (index, term) in self.terms.iter().enumerate() {
            ensure(
                term.weight.is_finite(),
                &format!("terms[{index}].weight"),
                || format!("must be a finite number, got {}", term.weight),
            )?;
        }
        Ok(())
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        // `build` may be called without `validate`: an empty term list must not reach forward.
        self.validate()
            .map_err(|error| ConfigError::invalid("weighted_sum", &error.option, error.problem))?;
        let weights: Vec<f64> = self.terms.iter().map(|term| term.weight as f64).collect();
        let losses = build_terms(
            "weighted_sum",
            self.terms.into_iter().map(|term| term.loss).collect(),
        )?;
        let terms = losses
            .into_iter()
            .zip(weights)
            .map(|((name, loss), weight)| Term { name, weight, loss })
            .collect();
        Ok(Box::new(WeightedSumLoss { terms }))
    }
}

/// The terms' losses of the composite `composite`, each with its reported name: the
/// registered name, suffixed `_2`, `_3`, ... when an earlier term has it.
pub(crate) fn build_terms(
    composite: &str,
    configs: Vec<Value>,
) -> Result<Vec<(String, Box<dyn Loss>)>, ConfigError> {
    let registry = Registry::global()?;
    let mut terms: Vec<(String, Box<dyn Loss>)> = Vec::with_capacity(configs.len());
    for (index, config) in configs.iter().enumerate() {
        let loss = registry
            .build_value(config)
            .map_err(|error| nested(composite, index, error))?;
        let name = unique_name(registry, config, &terms);
        terms.push((name, loss));
    }
    Ok(terms)
}

/// A term's config error, re-addressed to the term (`terms[1].loss.gamma`).
fn nested(composite: &str, index: usize, error: ConfigError) -> ConfigError {
    let at = format!("terms[{index}].loss");
    let (option, problem) = match &error {
        ConfigError::InvalidOption {
            loss,
            option,
            problem,
        } => (
            format!("{at}.{option}"),
            format!("{problem} (in loss `{loss}`)"),
        ),
        ConfigError::UnknownOption { option, .. } | ConfigError::MissingOption { option, .. } => {
            (format!("{at}.{option}"), format!("is wrong: {error}"))
        }
        ConfigError::UnknownLoss { .. } => (format!("{at}.name"), format!("is wrong: {error}")),
        _ => (at, format!("is wrong: {error}")),
    };
    ConfigError::invalid(composite, &option, problem)
}

/// The term's registered name, suffixed `_2`, `_3`, ... when an earlier term has it.
fn unique_name(registry: &Registry, config: &Value, earlier: &[(String, Box<dyn Loss>)]) -> String {
    let given = match config {
        Value::String(name) => name.as_str(),
        other => other.get("name").and_then(Value::as_str).unwrap_or("term"),
    };
    let base = registry.get(given).map_or(given, |entry| entry.name);
    let taken = |name: &str| earlier.iter().any(|(taken, _)| taken == name);
    if !taken(base) {
        return base.to_string();
    }
    (2..)
        .map(|n| format!("{base}_{n}"))
        .find(|name| !taken(name))
        .expect("some suffix is free")
}

#[derive(Debug)]
struct Term {
    name: String,
    weight: f64,
    loss: Box<dyn Loss>,
}

losskit_core::documented! {
    /// # What it does
    /// A weighted sum of any registered losses, each configured as on its own:
    ///
    /// ```text
    /// loss = Σ_k w_k · loss_k(x, y)
    /// ```
    ///
    /// Each term is computed with the requested reduction and reported, already weighted,
    /// under its loss's name (`dice`, `focal`, ...; a repeated name gets `_2`, `_3`). `mean` is
    /// the weighted sum of each term's own mean (e.g. Dice's mean over samples and classes plus
    /// focal's mean over pixels), `sum` the weighted sum of the terms' sums, `none` the weighted
    /// sum of the per-sample values (each term's share of its `sum`, so `Σ none = sum`). Edge cases
    /// (empty masks, absent classes, ignored positions) are each term's own.
    ///
    /// It accepts what every term accepts (target kinds, ranks, channels); its `mean` is a plain
    /// count only if every term's is the same count, it ignores a class index only if every
    /// term ignores the same one, and its minimum is the weighted sum of the terms' minima when they all
    /// have one. The output is read as the first term reads it.
    ///
    /// # When to use it
    /// Compound objectives beyond the built-in pairs (`dice_ce`, `dice_focal`): e.g. Dice plus
    /// a down-weighted focal loss, Lovász plus cross-entropy, or a regression loss plus a
    /// regulariser, with every term reported separately for logging.
    ///
    /// # Options
    /// - `terms` (required): a non-empty list of `{"weight": float, "loss": config}`; `weight`
    ///   is finite (default 1), `loss` a loss name or config object (composites nest). An
    ///   invalid term option is reported with its path, e.g. `terms[1].loss.gamma`.
    ///
    /// # Example
    /// ```json
    /// {"name": "weighted_sum", "terms": [{"weight": 1.0, "loss": {"name": "dice"}}, {"weight": 0.5, "loss": {"name": "focal", "gamma": 2.0}}]}
    /// ```
    ///
    /// # References
    /// - Ma et al., "Loss odyssey in medical image segmentation" (Medical Image Analysis 2021),
    ///   on compound losses.
    #[derive(Debug)]
    pub struct WeightedSumLoss {
        terms: Vec<Term>,
    }
}

losskit_core::register_loss!(WeightedSumLoss {
    name: "weighted_sum",
    aliases: ["compound"],
    category: Composite,
    summary: "A weighted sum of any registered losses, each term reported separately.",
    config: WeightedSumLossConfig,
});

impl Loss for WeightedSumLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let terms: Vec<(&str, &dyn Loss, f64)> = self
            .terms
            .iter()
            .map(|term| (term.name.as_str(), term.loss.as_ref(), term.weight))
            .collect();
        forward_weighted("weighted_sum", &terms, input, reduction)
    }

    fn auxiliary_inputs(&self) -> Vec<losskit_core::AuxiliaryInput> {
        let losses: Vec<&dyn Loss> = self.terms.iter().map(|term| term.loss.as_ref()).collect();
        auxiliary_inputs_of(&losses)
    }

    fn changes_with_progress(&self) -> bool {
        self.terms
            .iter()
            .any(|term| term.loss.changes_with_progress())
    }

    fn capabilities(&self) -> Capabilities {
        let terms: Vec<(&dyn Loss, f64)> = self
            .terms
            .iter()
            .map(|term| (term.loss.as_ref(), term.weight))
            .collect();
        merged_capabilities(&terms)
    }
}

/// The weighted sum of `terms` (name, loss, weight) on `input`, each term reported already
/// weighted under its name.
pub(crate) fn forward_weighted(
    composite: &str,
    terms: &[(&str, &dyn Loss, f64)],
    input: LossInput,
    reduction: Reduction,
) -> Result<LossValue, Error> {
    let mut total: Option<Tensor<1>> = None;
    let mut reported = Vec::with_capacity(terms.len());
    for (name, loss, weight) in terms {
        let value = loss.forward(input.clone(), reduction)?.value * *weight;
        total = Some(match total {
            Some(total) => total + value.clone(),
            None => value.clone(),
        });
        reported.push((name.to_string(), value));
    }
    // `build` rejects an empty term list, so there is always a total.
    let Some(value) = total else {
        return Err(InputError::Unsupported {
            loss: composite.into(),
            problem: "has no terms".into(),
        }
        .into());
    };
    Ok(LossValue {
        value,
        terms: reported,
    })
}

/// What a weighted sum of `terms` (each loss with its weight) accepts: what every term
/// accepts; a plain-count mean or an ignored index only if every term has the same; the
/// weighted sum of the minima when every term has one and no weight is negative.
pub(crate) fn merged_capabilities(terms: &[(&dyn Loss, f64)]) -> Capabilities {
    let Some(((first, first_weight), rest)) = terms.split_first() else {
        // Unreachable (`build` rejects an empty term list): accept nothing.
        return Capabilities {
            targets: Vec::new(),
            ranks: Vec::new(),
            minimum: None,
            ..Capabilities::classification()
        };
    };
    let mut merged = first.capabilities();
    merged.minimum = merged.minimum.map(|minimum| first_weight * minimum);
    for (loss, weight) in rest {
        let other = loss.capabilities();
        merged.targets.retain(|kind| other.accepts(*kind));
        merged.ranks.retain(|rank| other.ranks.contains(rank));
        merged.min_channels = merged.min_channels.max(other.min_channels);
        merged.max_channels = match (merged.max_channels, other.max_channels) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if merged.mean_over != other.mean_over {
            merged.mean_over = None;
        }
        if merged.ignore_index != other.ignore_index {
            merged.ignore_index = None;
        }
        merged.minimum = merged
            .minimum
            .zip(other.minimum)
            .map(|(sum, minimum)| sum + weight * minimum);
    }
    if terms.iter().any(|(_, weight)| *weight < 0.0) {
        // A negative weight rewards one term's growth: no minimum at a perfect prediction.
        merged.minimum = None;
    }
    merged
}

/// The auxiliary inputs any of `losses` reads, each once.
pub(crate) fn auxiliary_inputs_of(losses: &[&dyn Loss]) -> Vec<losskit_core::AuxiliaryInput> {
    let mut inputs: Vec<losskit_core::AuxiliaryInput> = Vec::new();
    for input in losses.iter().flat_map(|loss| loss.auxiliary_inputs()) {
        if !inputs.iter().any(|kept| kept.name == input.name) {
            inputs.push(input);
        }
    }
    inputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use losskit_core::{TargetKind, input::to_f64_vec};

    const DICE_FOCAL: &str = r#"{"name": "weighted_sum", "terms": [
        {"weight": 1.0, "loss": {"name": "dice"}},
        {"weight": 0.5, "loss": {"name": "focal", "gamma": 2.0}}]}"#;

    #[test]
    fn is_the_weighted_sum_of_its_terms_and_reports_them() {
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
        let result = build(DICE_FOCAL)
            .forward(segmentation_example(), Reduction::Mean)
            .unwrap();
        assert_close(&to_f64_vec(result.value), &[dice + 0.5 * focal], 1e-6);
        let names: Vec<&str> = result.terms.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["dice", "focal"]);
        assert_close(&to_f64_vec(result.terms[1].1.clone()), &[0.5 * focal], 1e-6);
    }

    #[test]
    fn gradient_is_the_weighted_sum_of_the_gradients() {
        let values = [0.3, -1.0, 2.0, 0.5, 0.1, -0.2];
        let make = |o| LossInput::with_indices(o, ints(&[2, 0], [1, 2])).unwrap();
        let config = r#"{"name": "weighted_sum", "terms": [{"weight": 2.0, "loss": "dice"}, {"weight": -0.5, "loss": "ce"}]}"#;
        let (_, both) = value_and_grad(build(config).as_ref(), floats(&values, [1, 3, 2]), make);
        let (_, dice) = value_and_grad(build("dice").as_ref(), floats(&values, [1, 3, 2]), make);
        let (_, ce) = value_and_grad(
            build("cross_entropy").as_ref(),
            floats(&values, [1, 3, 2]),
            make,
        );
        let expected: Vec<f64> = dice
            .iter()
            .zip(&ce)
            .map(|(d, c)| 2.0 * d - 0.5 * c)
            .collect();
        assert_close(&both, &expected, 1e-6);
    }

    #[test]
    fn repeated_names_are_made_unique() {
        let config = r#"{"name": "weighted_sum", "terms": [{"loss": "dice"}, {"loss": "soft_dice"}, {"loss": {"name": "dice", "batch": true}}]}"#;
        let result = build(config)
            .forward(segmentation_example(), Reduction::None)
            .unwrap();
        let names: Vec<&str> = result.terms.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["dice", "dice_2", "dice_3"]);
        assert_eq!(result.value.dims(), [2]);
    }

    #[test]
    fn capabilities_are_the_terms_intersection() {
        let loss = build(
            r#"{"name": "weighted_sum", "terms": [{"weight": 2.0, "loss": "dice"}, {"weight": 1.0, "loss": "focal"}]}"#,
        );
        let capabilities = loss.capabilities();
        assert_eq!(capabilities.ranks, [2, 3, 4, 5]);
        let with_lovasz = build(
            r#"{"name": "weighted_sum", "terms": [{"loss": "dice"}, {"loss": "lovasz_softmax"}]}"#,
        );
        assert_eq!(with_lovasz.capabilities().ranks, [3, 4, 5]);
        assert_eq!(
            capabilities.targets,
            [TargetKind::ClassIndices, TargetKind::Probabilities]
        );
        assert_eq!(capabilities.mean_over, None);
        assert_eq!(capabilities.minimum, Some(0.0));
        let smoothed = build(
            r#"{"name": "weighted_sum", "terms": [{"loss": "dice"}, {"loss": {"name": "ce", "label_smoothing": 0.1}}]}"#,
        );
        assert_eq!(smoothed.capabilities().minimum, None);
    }

    #[test]
    fn nested_errors_name_the_term() {
        let error = build_error(
            r#"{"name": "weighted_sum", "terms": [{"loss": "dice"}, {"weight": 0.5, "loss": {"name": "focal", "gamma": -1.0}}]}"#,
        );
        assert!(error.contains("`terms[1].loss.gamma`"), "{error}");
        assert_eq!(
            build_error(
                r#"{"name": "weighted_sum", "terms": [{"weight": 1, "loss": {"name": "dice", "activation": "relu"}}]}"#
            ),
            "loss `weighted_sum`: option `terms[0].loss.activation` has the wrong type or value: \
             unknown variant `relu`, expected one of `softmax`, `sigmoid`, `none` (in loss `dice`)"
        );
        let error = build_error(
            r#"{"name": "weighted_sum", "terms": [{"loss": {"name": "dice", "gama": 1.0}}]}"#,
        );
        assert!(error.contains("`terms[0].loss.gama`"), "{error}");
        let error = build_error(r#"{"name": "weighted_sum", "terms": [{"loss": "dise"}]}"#);
        assert!(
            error.contains("`terms[0].loss.name`") && error.contains("dice"),
            "{error}"
        );
        let error = build_error(
            r#"{"name": "weighted_sum", "terms": [{"weight": 1.0, "loss": "dice", "scale": 2}]}"#,
        );
        assert!(
            error.contains("terms[0]") && error.contains("scale"),
            "{error}"
        );
        assert!(build_error(r#"{"name": "weighted_sum", "terms": []}"#).contains("`terms`"));
        assert!(build_error(r#"{"name": "weighted_sum"}"#).contains("`terms`"));
    }

    #[test]
    fn build_without_validate_rejects_an_empty_term_list() {
        let error = WeightedSumLossConfig::new(Vec::new())
            .build()
            .unwrap_err()
            .to_string();
        assert!(error.contains("`terms`"), "{error}");
    }

    #[test]
    fn none_adds_up_to_sum() {
        let config = r#"{"name": "weighted_sum", "terms": [{"loss": "dice"}, {"weight": -0.5, "loss": "lovasz_softmax"}]}"#;
        let loss = build(config);
        let none: f64 = value(loss.as_ref(), segmentation_example(), Reduction::None)
            .iter()
            .sum();
        assert_close(
            &[none],
            &value(loss.as_ref(), segmentation_example(), Reduction::Sum),
            1e-6,
        );
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("weighted_sum")
            .unwrap()
            .assert_passed();
        losskit_core::conformance::check(DICE_FOCAL, build(DICE_FOCAL).as_ref()).assert_passed();
    }
}
