//! Reading `{"name": ..., options...}` specs with typed, named errors.

use losskit_core::spec::{SpecKind, parse_named};
use serde_json::{Map, Value};

use crate::error::OptimConfigError;

/// Parses a spec of `kind` (`optimizer` or `schedule`) with the one spec parser of losskit
/// ([`losskit_core::spec::parse_named`]): a bare name (`adam`), a JSON object (`{"name":
/// "adam", "lr": 1e-3}`) or a path to a `.json` or `.toml` file holding that object. Returns the
/// name and the remaining options.
pub fn parse_named_spec(
    kind: &'static str,
    spec: &str,
) -> Result<(String, Map<String, Value>), OptimConfigError> {
    let example = match kind {
        "schedule" => "cosine",
        _ => "adam",
    };
    let object = parse_named(
        SpecKind {
            noun: kind,
            example,
        },
        spec,
    )
    .map_err(OptimConfigError::InvalidSpec)?;
    split_named(kind, Value::Object(object))
}

/// Splits a JSON value (a name, or an object with `name`) into the name and its options.
pub fn split_named(
    kind: &'static str,
    value: Value,
) -> Result<(String, Map<String, Value>), OptimConfigError> {
    match value {
        Value::String(name) => Ok((name, Map::new())),
        Value::Object(mut object) => match object.remove("name") {
            Some(Value::String(name)) => Ok((name, object)),
            Some(other) => Err(OptimConfigError::InvalidSpec(format!(
                "{kind} `name` must be a string, got {other}"
            ))),
            None => Err(OptimConfigError::InvalidSpec(format!(
                "{kind} spec has no `name`; expected e.g. {{\"name\": \"...\"}}"
            ))),
        },
        other => Err(OptimConfigError::InvalidSpec(format!(
            "a {kind} spec must be a name or an object, got {other}"
        ))),
    }
}

/// The options of one named optimizer or schedule, read one by one.
pub(crate) struct Options<'a> {
    kind: &'static str,
    name: &'a str,
    options: &'a Map<String, Value>,
}

impl<'a> Options<'a> {
    /// Checks every option is one of `allowed`.
    pub(crate) fn new(
        kind: &'static str,
        name: &'a str,
        options: &'a Map<String, Value>,
        allowed: &[&str],
    ) -> Result<Self, OptimConfigError> {
        for key in options.keys() {
            if !allowed.contains(&key.as_str()) {
                return Err(OptimConfigError::UnknownOption {
                    kind,
                    name: name.to_string(),
                    option: key.clone(),
                    suggestions: losskit_core::error::closest(key, allowed.iter().copied()),
                    allowed: allowed.iter().map(|s| s.to_string()).collect(),
                });
            }
        }
        Ok(Self {
            kind,
            name,
            options,
        })
    }

    pub(crate) fn invalid(&self, option: &str, problem: impl Into<String>) -> OptimConfigError {
        OptimConfigError::InvalidOption {
            kind: self.kind,
            name: self.name.to_string(),
            option: option.to_string(),
            problem: problem.into(),
        }
    }

    /// A finite number, or `default` when absent; `check` returns a problem for bad values.
    pub(crate) fn number(
        &self,
        option: &str,
        default: f64,
        check: impl Fn(f64) -> Option<&'static str>,
    ) -> Result<f64, OptimConfigError> {
        let value = match self.options.get(option) {
            None | Some(Value::Null) => default,
            Some(Value::Number(number)) => number
                .as_f64()
                .ok_or_else(|| self.invalid(option, "must be a number"))?,
            Some(other) => {
                return Err(self.invalid(option, format!("must be a number, got {other}")));
            }
        };
        if !value.is_finite() {
            return Err(self.invalid(option, "must be finite"));
        }
        if let Some(problem) = check(value) {
            return Err(self.invalid(option, format!("{problem}, got {value}")));
        }
        Ok(value)
    }

    /// A whole number, or `default` when absent.
    pub(crate) fn count(
        &self,
        option: &str,
        default: Option<usize>,
        min: usize,
    ) -> Result<usize, OptimConfigError> {
        let value = match (self.options.get(option), default) {
            (None | Some(Value::Null), Some(default)) => default,
            (None | Some(Value::Null), None) => {
                return Err(self.invalid(option, "is required (a whole number)"));
            }
            (Some(Value::Number(number)), _) => number.as_u64().ok_or_else(|| {
                self.invalid(option, format!("must be a whole number, got {number}"))
            })? as usize,
            (Some(other), _) => {
                return Err(self.invalid(option, format!("must be a whole number, got {other}")));
            }
        };
        if value < min {
            return Err(self.invalid(option, format!("must be at least {min}, got {value}")));
        }
        Ok(value)
    }

    /// A boolean, or `default` when absent.
    pub(crate) fn flag(&self, option: &str, default: bool) -> Result<bool, OptimConfigError> {
        match self.options.get(option) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(value)) => Ok(*value),
            Some(other) => Err(self.invalid(option, format!("must be true or false, got {other}"))),
        }
    }

    /// A pair of numbers, or `default` when absent.
    pub(crate) fn pair(
        &self,
        option: &str,
        default: [f64; 2],
        check: impl Fn(f64) -> Option<&'static str>,
    ) -> Result<[f64; 2], OptimConfigError> {
        match self.options.get(option) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Array(items)) if items.len() == 2 => {
                let mut out = [0.0; 2];
                for (slot, item) in out.iter_mut().zip(items) {
                    let value = item.as_f64().ok_or_else(|| {
                        self.invalid(option, format!("must be two numbers, got {item}"))
                    })?;
                    if let Some(problem) = check(value) {
                        return Err(self.invalid(option, format!("{problem}, got {value}")));
                    }
                    *slot = value;
                }
                Ok(out)
            }
            Some(other) => Err(self.invalid(
                option,
                format!("must be two numbers such as [0.9, 0.999], got {other}"),
            )),
        }
    }

    /// A nested spec (a name or an object), if present.
    pub(crate) fn nested(&self, option: &str) -> Option<&'a Value> {
        self.options.get(option).filter(|value| !value.is_null())
    }
}
