//! `losskit list`: every registered loss.

use anyhow::Result;
use losskit_core::{Category, Registry};
use serde_json::json;

/// How `list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// An aligned table.
    Table,
    /// A JSON array.
    Json,
    /// A Markdown table (the README's loss table).
    Markdown,
}

/// Prints the registered losses, optionally of one category.
pub fn run(category: Option<&str>, format: ListFormat) -> Result<String> {
    let registry = Registry::global()?;
    let category: Option<Category> = category
        .map(|text| text.parse::<Category>().map_err(anyhow::Error::msg))
        .transpose()?;
    let selected: Vec<_> = registry
        .iter()
        .filter(|entry| category.is_none_or(|c| entry.category == c))
        .collect();
    Ok(match format {
        ListFormat::Json => {
            let rows: Vec<_> = selected
                .iter()
                .map(|entry| {
                    json!({
                        "name": entry.name,
                        "aliases": entry.aliases,
                        "category": entry.category.as_str(),
                        "summary": entry.summary,
                        "crate": entry.crate_name,
                    })
                })
                .collect();
            serde_json::to_string_pretty(&rows)?
        }
        ListFormat::Markdown => {
            let mut out = String::from(
                "| loss | aliases | category | summary |\n| --- | --- | --- | --- |\n",
            );
            for entry in &selected {
                let aliases: Vec<String> = entry.aliases.iter().map(|a| format!("`{a}`")).collect();
                out.push_str(&format!(
                    "| `{}` | {} | {} | {} |\n",
                    entry.name,
                    aliases.join(", "),
                    entry.category.as_str(),
                    entry.summary.replace('|', "\\|")
                ));
            }
            out
        }
        ListFormat::Table => {
            let name_width = selected
                .iter()
                .map(|e| e.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            let alias_text: Vec<String> = selected.iter().map(|e| e.aliases.join(", ")).collect();
            let alias_width = alias_text.iter().map(String::len).max().unwrap_or(7).max(7);
            let mut out = format!(
                "{:name_width$}  {:alias_width$}  {:14}  SUMMARY\n",
                "NAME", "ALIASES", "CATEGORY"
            );
            for (entry, aliases) in selected.iter().zip(&alias_text) {
                out.push_str(&format!(
                    "{:name_width$}  {:alias_width$}  {:14}  {}\n",
                    entry.name,
                    aliases,
                    entry.category.as_str(),
                    entry.summary
                ));
            }
            out.push_str(&format!("{} losses\n", selected.len()));
            out
        }
    })
}
