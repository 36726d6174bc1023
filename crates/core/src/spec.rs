//! Specs as users write them, for losses, optimizers and schedules alike: a name, a JSON
//! object, or a `.json` / `.toml` file holding that object. One parser, so every kind accepts
//! the same forms and reports the same errors.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::ConfigError;

/// What kind of thing a spec describes, for its error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecKind {
    /// The noun in messages: `loss`, `optimizer`, `schedule`.
    pub noun: &'static str,
    /// A valid name, for the `{"name": ...}` example in messages.
    pub example: &'static str,
}

/// Loss specs.
pub const LOSS: SpecKind = SpecKind {
    noun: "loss",
    example: "dice",
};

/// Parses a spec of `kind`: a name (`"dice"`), a JSON object (`{"name": "dice", "smooth_nr":
/// 1e-5}`) or a path to a `.json` or `.toml` file holding that object. Returns the object, with
/// `name` a string; the error is one line saying what was wrong and what was expected.
pub fn parse_named(kind: SpecKind, spec: &str) -> Result<Map<String, Value>, String> {
    let noun = kind.noun;
    let trimmed = spec.trim();
    if trimmed.is_empty() {
        return Err(format!(
            "empty {noun} spec; expected a {noun} name, a JSON object or a .json/.toml file"
        ));
    }
    if trimmed.starts_with('{') {
        let value: Value = serde_json::from_str(trimmed)
            .map_err(|error| format!("{noun} spec is not valid JSON: {error}"))?;
        return named_object(kind, value, &format!("the {noun} spec"));
    }
    let lower = trimmed.to_ascii_lowercase();
    if lower.ends_with(".json") || lower.ends_with(".toml") {
        return parse_named_file(kind, Path::new(trimmed));
    }
    if trimmed
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        let mut object = Map::new();
        object.insert("name".into(), Value::String(trimmed.to_string()));
        return Ok(object);
    }
    Err(format!(
        "cannot read {noun} spec `{trimmed}`: expected a {noun} name, a JSON object or a .json/.toml file"
    ))
}

/// Reads a spec of `kind` from a `.json` or `.toml` file (TOML when the extension says so).
pub fn parse_named_file(kind: SpecKind, path: &Path) -> Result<Map<String, Value>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {} config {shown}: {error}", kind.noun))?;
    let format = if path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("toml"))
    {
        SpecFormat::Toml
    } else {
        SpecFormat::Json
    };
    parse_named_text(kind, &text, format, &shown.to_string())
}

/// Parses the text of a config file of `kind`; `source` names it in errors.
pub fn parse_named_text(
    kind: SpecKind,
    text: &str,
    format: SpecFormat,
    source: &str,
) -> Result<Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Err(format!(
            "{} config {source} is empty; expected an object with at least `name`",
            kind.noun
        ));
    }
    let value: Value = match format {
        SpecFormat::Toml => toml::from_str::<Value>(text).map_err(|error| {
            format!(
                "{source} is not valid TOML: {}",
                one_line(&error.to_string())
            )
        })?,
        SpecFormat::Json => serde_json::from_str(text)
            .map_err(|error| format!("{source} is not valid JSON: {error}"))?,
    };
    named_object(kind, value, source)
}

/// Parses a loss spec (see [`parse_named`]).
pub fn parse_spec(spec: &str) -> Result<Map<String, Value>, ConfigError> {
    parse_named(LOSS, spec).map_err(ConfigError::InvalidSpec)
}

/// Reads a loss spec from a `.json` or `.toml` file.
pub fn parse_spec_file(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    parse_named_file(LOSS, path).map_err(ConfigError::InvalidSpec)
}

/// The text format of a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    /// A JSON object.
    Json,
    /// A TOML table.
    Toml,
}

/// Parses the text of a loss config file; `source` names it in errors.
pub fn parse_spec_text(
    text: &str,
    format: SpecFormat,
    source: &str,
) -> Result<Map<String, Value>, ConfigError> {
    parse_named_text(LOSS, text, format, source).map_err(ConfigError::InvalidSpec)
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn named_object(kind: SpecKind, value: Value, source: &str) -> Result<Map<String, Value>, String> {
    let example = kind.example;
    let Value::Object(object) = value else {
        return Err(format!(
            "{source} must be an object such as {{\"name\": \"{example}\"}}"
        ));
    };
    match object.get("name") {
        Some(Value::String(_)) => Ok(object),
        Some(other) => Err(format!("{source}: `name` must be a string, got {other}")),
        None => Err(format!(
            "{source} has no `name`; expected e.g. {{\"name\": \"{example}\"}}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_becomes_an_object() {
        let spec = parse_spec("dice").unwrap();
        assert_eq!(spec["name"], "dice");
    }

    #[test]
    fn json_objects_keep_their_options() {
        let spec = parse_spec(r#"{"name": "dice", "smooth_nr": 0.5}"#).unwrap();
        assert_eq!(spec["smooth_nr"], 0.5);
    }

    #[test]
    fn malformed_json_names_the_problem() {
        let error = parse_spec(r#"{"name": "dice","#).unwrap_err().to_string();
        assert!(error.contains("not valid JSON"), "{error}");
    }

    #[test]
    fn an_object_needs_a_name() {
        let error = parse_spec(r#"{"gamma": 2}"#).unwrap_err().to_string();
        assert!(error.contains("no `name`"), "{error}");
    }

    #[test]
    fn toml_files_are_read() {
        let dir = std::env::temp_dir().join(format!("losskit-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("loss.toml");
        std::fs::write(&path, "name = \"focal\"\ngamma = 1.5\n").unwrap();
        let spec = parse_spec(path.to_str().unwrap()).unwrap();
        assert_eq!(spec["gamma"], 1.5);
        std::fs::write(&path, "name = \n").unwrap();
        assert!(
            parse_spec(path.to_str().unwrap())
                .unwrap_err()
                .to_string()
                .contains("not valid TOML")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_kind_reads_the_same_forms() {
        const OPTIMIZER: SpecKind = SpecKind {
            noun: "optimizer",
            example: "adam",
        };
        let dir = std::env::temp_dir().join(format!("losskit-spec-kind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("adam.toml");
        std::fs::write(&path, "name = \"adam\"\nlr = 0.01\n").unwrap();
        let spec = parse_named(OPTIMIZER, path.to_str().unwrap()).unwrap();
        assert_eq!(spec["lr"], 0.01);
        assert_eq!(parse_named(OPTIMIZER, "sgd").unwrap()["name"], "sgd");
        let error = parse_named(OPTIMIZER, r#"{"lr": 1}"#).unwrap_err();
        assert!(error.contains(r#"{"name": "adam"}"#), "{error}");
        let error = parse_named(OPTIMIZER, "{").unwrap_err();
        assert!(
            error.starts_with("optimizer spec is not valid JSON"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
