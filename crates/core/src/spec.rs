//! Loss specs as users write them: a name, a JSON object, or a `.json` / `.toml` file.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::ConfigError;

/// Parses a loss spec: a name (`"dice"`), a JSON object (`{"name": "dice", "smooth_nr": 1e-5}`)
/// or a path to a `.json` or `.toml` file holding that object. Returns the object.
pub fn parse_spec(spec: &str) -> Result<Map<String, Value>, ConfigError> {
    let trimmed = spec.trim();
    if trimmed.is_empty() {
        return Err(ConfigError::InvalidSpec(
            "empty loss spec; expected a loss name, a JSON object or a .json/.toml file".into(),
        ));
    }
    if trimmed.starts_with('{') {
        let value: Value = serde_json::from_str(trimmed).map_err(|error| {
            ConfigError::InvalidSpec(format!("loss spec is not valid JSON: {error}"))
        })?;
        return spec_object(value, "the loss spec");
    }
    let lower = trimmed.to_ascii_lowercase();
    if lower.ends_with(".json") || lower.ends_with(".toml") {
        return parse_spec_file(Path::new(trimmed));
    }
    if trimmed
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        let mut object = Map::new();
        object.insert("name".into(), Value::String(trimmed.to_string()));
        return Ok(object);
    }
    Err(ConfigError::InvalidSpec(format!(
        "cannot read loss spec `{trimmed}`: expected a loss name, a JSON object or a .json/.toml file"
    )))
}

/// Reads a loss spec from a `.json` or `.toml` file.
pub fn parse_spec_file(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError::InvalidSpec(format!("cannot read loss config {shown}: {error}"))
    })?;
    let format = if path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("toml"))
    {
        SpecFormat::Toml
    } else {
        SpecFormat::Json
    };
    parse_spec_text(&text, format, &shown.to_string())
}

/// The text format of a loss config file.
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
    if text.trim().is_empty() {
        return Err(ConfigError::InvalidSpec(format!(
            "loss config {source} is empty; expected an object with at least `name`"
        )));
    }
    let value: Value = match format {
        SpecFormat::Toml => toml::from_str::<Value>(text).map_err(|error| {
            ConfigError::InvalidSpec(format!(
                "{source} is not valid TOML: {}",
                one_line(&error.to_string())
            ))
        })?,
        SpecFormat::Json => serde_json::from_str(text).map_err(|error| {
            ConfigError::InvalidSpec(format!("{source} is not valid JSON: {error}"))
        })?,
    };
    spec_object(value, source)
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn spec_object(value: Value, source: &str) -> Result<Map<String, Value>, ConfigError> {
    let Value::Object(object) = value else {
        return Err(ConfigError::InvalidSpec(format!(
            "{source} must be an object such as {{\"name\": \"dice\"}}"
        )));
    };
    match object.get("name") {
        Some(Value::String(_)) => Ok(object),
        Some(other) => Err(ConfigError::InvalidSpec(format!(
            "{source}: `name` must be a string, got {other}"
        ))),
        None => Err(ConfigError::InvalidSpec(format!(
            "{source} has no `name`; expected e.g. {{\"name\": \"dice\"}}"
        ))),
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
}
