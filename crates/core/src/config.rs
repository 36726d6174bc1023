//! Building a loss from a serde config: defaults, unknown and ill-typed options, validation.

use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

use crate::{
    error::{ConfigError, closest},
    loss::Loss,
};

/// An option that failed validation: which one, and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionError {
    /// The option's name.
    pub option: String,
    /// What is wrong, and what was expected.
    pub problem: String,
}

impl OptionError {
    /// An error for `option`.
    pub fn new(option: &str, problem: impl Into<String>) -> Self {
        Self {
            option: option.to_string(),
            problem: problem.into(),
        }
    }
}

/// `Ok` if `ok`, else an [`OptionError`] for `option`.
pub fn ensure(ok: bool, option: &str, problem: impl FnOnce() -> String) -> Result<(), OptionError> {
    if ok {
        Ok(())
    } else {
        Err(OptionError::new(option, problem()))
    }
}

/// Per-class `weights`: finite, non-negative, not all zero.
pub fn check_weights(option: &str, weights: &[f32]) -> Result<(), OptionError> {
    ensure(!weights.is_empty(), option, || {
        "must list one weight per class, got an empty list".into()
    })?;
    if let Some((class, weight)) = weights
        .iter()
        .enumerate()
        .find(|(_, w)| !w.is_finite() || **w < 0.0)
    {
        return Err(OptionError::new(
            option,
            format!("must be finite and >= 0, got {weight} for class {class}"),
        ));
    }
    ensure(weights.iter().any(|w| *w > 0.0), option, || {
        "must have at least one positive weight".into()
    })
}

/// The config of a registered loss.
///
/// Implemented by each loss's `…Config` (which derives burn's `Config`, hence serde). Options
/// missing from a user's config take the values of [`example`](LossConfig::example), except
/// the [`REQUIRED`](LossConfig::REQUIRED) ones, which the user must give.
pub trait LossConfig: Serialize + DeserializeOwned + Sized + 'static {
    /// Options without default, each with a description of a valid value.
    const REQUIRED: &'static [(&'static str, &'static str)] = &[];

    /// A complete, valid config: every option at its default, and an example value for each
    /// required option.
    fn example() -> Self;

    /// Checks the options' values and their combinations.
    fn validate(&self) -> Result<(), OptionError> {
        Ok(())
    }

    /// Builds the loss from options that [`validate`](LossConfig::validate) accepted; call
    /// [`init`](LossConfig::init) instead, which validates first.
    fn build(self) -> Result<Box<dyn Loss>, ConfigError>;

    /// Validates the options, then builds the loss; errors are reported under `loss`.
    fn init(self, loss: &str) -> Result<Box<dyn Loss>, ConfigError> {
        self.validate()
            .map_err(|error| ConfigError::invalid(loss, &error.option, error.problem))?;
        self.build()
    }
}

/// The options of `C`'s example config, as a JSON object.
pub fn example_options<C: LossConfig>() -> Value {
    serde_json::to_value(C::example()).expect("a loss config serialises to JSON")
}

/// Parses, validates and builds a loss of config type `C` from user `options` (without `name`).
pub fn build_from_options<C: LossConfig>(
    loss: &str,
    options: &Map<String, Value>,
) -> Result<Box<dyn Loss>, ConfigError> {
    let Value::Object(mut merged) = example_options::<C>() else {
        return Err(ConfigError::InvalidSpec(format!(
            "loss `{loss}`: its config is not a JSON object (a bug in the loss)"
        )));
    };
    let allowed: Vec<String> = merged.keys().cloned().collect();
    for key in options.keys() {
        if !merged.contains_key(key) {
            return Err(ConfigError::UnknownOption {
                loss: loss.to_string(),
                option: key.clone(),
                suggestions: closest(key, allowed.iter().map(String::as_str)),
                allowed,
            });
        }
    }
    for (option, expected) in C::REQUIRED {
        if !options.contains_key(*option) {
            return Err(ConfigError::MissingOption {
                loss: loss.to_string(),
                option: option.to_string(),
                expected: expected.to_string(),
            });
        }
    }
    for (key, value) in options {
        merged.insert(key.clone(), value.clone());
    }
    let config: C = serde_path_to_error::deserialize(Value::Object(merged)).map_err(|error| {
        let option = error.path().to_string();
        ConfigError::invalid(
            loss,
            &option,
            describe_serde_error(&error.into_inner().to_string()),
        )
    })?;
    config.init(loss)
}

fn describe_serde_error(message: &str) -> String {
    // serde says "invalid type: string \"x\", expected f32"; make it read as a sentence.
    let message = message.split(" at line ").next().unwrap_or(message);
    format!("has the wrong type or value: {message}")
}
