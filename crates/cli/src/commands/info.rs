//! `losskit info NAME`: a loss's documentation, options and example config.

use anyhow::Result;
use losskit_core::Registry;
use serde_json::Value;

/// The documentation of the loss named (or aliased) `name`.
pub fn run(name: &str) -> Result<String> {
    let entry = Registry::global()?.get(name)?;
    let mut out = format!("{} ({})\n", entry.name, entry.category);
    if !entry.aliases.is_empty() {
        out.push_str(&format!("aliases: {}\n", entry.aliases.join(", ")));
    }
    out.push_str(&format!("{}\n\n", entry.summary));
    out.push_str(&entry.documentation());
    out.push_str("\n\n# Options and defaults\n");
    let example = tidy(entry.example_config());
    if let Some(options) = example.as_object() {
        let mut any = false;
        for (option, value) in options.iter().filter(|(key, _)| key.as_str() != "name") {
            any = true;
            match entry.required.iter().find(|(name, _)| name == option) {
                Some((_, expected)) => {
                    out.push_str(&format!("- {option}: required ({expected})\n"))
                }
                None => out.push_str(&format!(
                    "- {option}: {}\n",
                    if value.is_null() {
                        "none".to_string()
                    } else {
                        value.to_string()
                    }
                )),
            }
        }
        if !any {
            out.push_str("(none)\n");
        }
    }
    // What the default config reads besides output and target (`compute --auxiliary`).
    if let Ok(loss) = Registry::global()?.build_value(&example) {
        let inputs = loss.auxiliary_inputs();
        if !inputs.is_empty() {
            out.push_str("\n# Auxiliary inputs (optional; computed from the target when absent)\n");
            for input in inputs {
                out.push_str(&format!("- {}: {}\n", input.name, input.description));
            }
        }
    }
    out.push_str("\n# Example config\n");
    // `name` first, as users write it (serde_json's map would sort it among the options).
    let mut options = example.as_object().cloned().unwrap_or_default();
    options.remove("name");
    let rest = serde_json::to_string(&options)?;
    let rest = rest.trim_start_matches('{').trim_end_matches('}');
    let separator = if rest.is_empty() { "" } else { "," };
    out.push_str(&format!(
        "{{\"name\":{}{separator}{rest}}}\n",
        serde_json::to_string(entry.name)?
    ));
    Ok(out)
}

/// `value` with each float that came from an `f32` option shown as that `f32` (`0.00001`, not
/// `9.999999747378752e-6`, the nearest `f32` printed as an `f64`).
fn tidy(value: Value) -> Value {
    match value {
        Value::Number(number) => match number.as_f64() {
            Some(float)
                if !number.is_i64() && !number.is_u64() && f64::from(float as f32) == float =>
            {
                (float as f32)
                    .to_string()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Number(number), Value::Number)
            }
            _ => Value::Number(number),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(tidy).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, tidy(v))).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_defaults_are_shown_as_written() {
        let shown = tidy(
            serde_json::json!({"smooth": f64::from(1e-5_f32), "list": [f64::from(0.1_f32)], "n": 3, "x": 0.3}),
        );
        assert_eq!(
            shown.to_string(),
            r#"{"list":[0.1],"n":3,"smooth":0.00001,"x":0.3}"#
        );
    }

    #[test]
    fn auxiliary_inputs_are_listed_for_the_losses_that_read_them() {
        let boundary = run("boundary").unwrap();
        assert!(
            boundary.contains("# Auxiliary inputs")
                && boundary.contains("- signed_distance_maps: "),
            "{boundary}"
        );
        assert!(!run("dice").unwrap().contains("# Auxiliary inputs"));
    }
}
