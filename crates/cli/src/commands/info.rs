//! `losskit info NAME`: a loss's documentation, options and example config.

use anyhow::Result;
use losskit_core::Registry;

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
    let example = entry.example_config();
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
