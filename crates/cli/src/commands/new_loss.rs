//! `losskit new-loss NAME`: scaffolds a plugin crate under `plugins/NAME/` and links it into
//! `losskit`, so that the next build lists the loss and tests it with the conformance kit.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use losskit_core::{Category, Registry};

use losskit_core::atomic_write::write_atomically;

const CLI_MANIFEST_MARKER: &str = "# Plugins, linked for their registrations";
const PLUGINS_LIST_MARKER: &str = "    // losskit new-loss adds plugins above this line.";

/// Scaffolds the plugin `name` in the workspace at `root` (or the one around the current
/// directory). Either every file is written or none is.
pub fn run(name: &str, category: Category, root: Option<&Path>) -> Result<String> {
    check_name(name)?;
    let root = match root {
        Some(root) => root.to_path_buf(),
        None => find_workspace_root()?,
    };
    let plugin_dir = root.join("plugins").join(name);
    let cli_manifest = root.join("crates/cli/Cargo.toml");
    let plugins_list = root.join("crates/cli/src/plugins.rs");
    let readme = root.join("README.md");
    if plugin_dir.exists() {
        bail!(
            "{} already exists; choose another name (nothing was changed)",
            plugin_dir.display()
        );
    }
    if let Ok(entry) = Registry::global()?.get(name) {
        bail!(
            "a loss named `{name}` is already registered (by {}); choose another name (nothing was changed)",
            entry.crate_name
        );
    }
    let manifest = fs::read_to_string(&cli_manifest)
        .with_context(|| format!("cannot read {}", cli_manifest.display()))?;
    if let Some(taken) = taken_crate_name(&root, &manifest, name) {
        bail!("`{name}` would clash with {taken}; choose another name (nothing was changed)");
    }
    let list = fs::read_to_string(&plugins_list)
        .with_context(|| format!("cannot read {}", plugins_list.display()))?;
    let new_manifest = insert_after_marker(
        &manifest,
        CLI_MANIFEST_MARKER,
        &format!("{name} = {{ path = \"../../plugins/{name}\" }}\n"),
    )
    .with_context(|| {
        format!(
            "{} has no `{CLI_MANIFEST_MARKER}` section",
            cli_manifest.display()
        )
    })?;
    let new_list = insert_before_marker(
        &list,
        PLUGINS_LIST_MARKER,
        &format!("    (\"{name}\", {name}::LOSS_NAMES),\n"),
    )
    .with_context(|| {
        format!(
            "{} has no `{}` line",
            plugins_list.display(),
            PLUGINS_LIST_MARKER.trim()
        )
    })?;
    // The README's loss table is generated from the registry; add the new row now so that it
    // stays true before the plugin is first built.
    let readme_text = fs::read_to_string(&readme).ok();
    let new_readme = readme_text
        .as_deref()
        .and_then(|text| insert_readme_row(text, &readme_row(name, category)));

    // Write the crate in a hidden folder first, then move it into place in one rename.
    let staging = root.join("plugins").join(format!(".{name}.new"));
    let _ = fs::remove_dir_all(&staging);
    let written = (|| -> Result<()> {
        fs::create_dir_all(staging.join("src"))?;
        fs::create_dir_all(staging.join("tests"))?;
        fs::write(staging.join("Cargo.toml"), plugin_manifest(name))?;
        fs::write(staging.join("README.md"), plugin_readme(name))?;
        fs::write(staging.join("src/lib.rs"), plugin_source(name, category))?;
        fs::write(
            staging.join("tests/conformance.rs"),
            plugin_conformance_test(name),
        )?;
        fs::rename(&staging, &plugin_dir)?;
        Ok(())
    })();
    if let Err(error) = written {
        let _ = fs::remove_dir_all(&staging);
        return Err(error.context(format!("cannot create {}", plugin_dir.display())));
    }
    let linked = write_atomically(&cli_manifest, new_manifest.as_bytes())
        .and_then(|()| write_atomically(&plugins_list, new_list.as_bytes()))
        .and_then(|()| match &new_readme {
            Some(text) => write_atomically(&readme, text.as_bytes()),
            None => Ok(()),
        });
    if let Err(error) = linked {
        let _ = write_atomically(&cli_manifest, manifest.as_bytes());
        let _ = write_atomically(&plugins_list, list.as_bytes());
        let _ = fs::remove_dir_all(&plugin_dir);
        return Err(anyhow::Error::new(error)
            .context("cannot link the plugin into crates/cli (nothing was changed)"));
    }
    Ok(format!(
        "created plugins/{name} ({category} loss `{name}`) and linked it into losskit\n\
         next: edit plugins/{name}/src/lib.rs, then\n  \
         cargo test --release -p {name}\n  \
         cargo run --release -p losskit-cli -- info {name}\n"
    ))
}

/// A dependency of the `losskit` crate or a workspace package already called `name` (Cargo
/// treats `-` and `_` alike).
fn taken_crate_name(root: &Path, cli_manifest: &str, name: &str) -> Option<String> {
    let normal = |text: &str| text.trim().replace('-', "_");
    let dependency = cli_manifest
        .lines()
        .filter_map(|line| {
            line.split_once('=')
                .map(|(key, _)| key.trim().trim_end_matches(".workspace"))
        })
        .find(|key| normal(key) == name);
    if let Some(key) = dependency {
        return Some(format!("the dependency `{key}` of crates/cli"));
    }
    let packages = ["crates", "plugins"]
        .iter()
        .filter_map(|dir| fs::read_dir(root.join(dir)).ok())
        .flatten()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned());
    packages
        .into_iter()
        .find(|package| normal(package) == name || normal(&format!("losskit_{package}")) == name)
        .map(|package| format!("the workspace package `{package}`"))
}

fn readme_row(name: &str, category: Category) -> String {
    format!("| `{name}` |  | {category} | {} |", template_summary(name))
}

fn template_summary(name: &str) -> String {
    format!("One line: what {name} computes.")
}

/// Inserts `row` into the README's generated loss table, keeping it sorted by name.
fn insert_readme_row(readme: &str, row: &str) -> Option<String> {
    let start = readme.find("<!-- losses:start -->")?;
    let end = readme.find("<!-- losses:end -->")?;
    let mut lines: Vec<&str> = readme[start..end].lines().collect();
    let header = lines.iter().position(|line| line.starts_with("| ---"))?;
    let name_of = |line: &str| line.split('`').nth(1).map(str::to_string);
    let new_name = name_of(row)?;
    let at = lines[header + 1..]
        .iter()
        .position(|line| name_of(line).is_some_and(|name| name > new_name))
        .map_or(lines.len(), |i| header + 1 + i);
    lines.insert(at, row);
    Some(format!(
        "{}{}\n{}",
        &readme[..start],
        lines.join("\n"),
        &readme[end..]
    ))
}

fn check_name(name: &str) -> Result<()> {
    let snake = name.len() >= 2
        && name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.contains("__")
        && !name.ends_with('_');
    if !snake {
        bail!(
            "`{name}` is not a valid loss name; use snake_case letters, digits and single underscores, starting with a letter (e.g. `my_loss`)"
        );
    }
    const RESERVED: &[&str] = &[
        "self",
        "super",
        "crate",
        "core",
        "std",
        "alloc",
        "test",
        "proc_macro",
        "losskit",
    ];
    if RESERVED.contains(&name) {
        bail!("`{name}` is reserved as a crate name; choose another");
    }
    Ok(())
}

fn find_workspace_root() -> Result<PathBuf> {
    let start = std::env::current_dir().context("cannot read the current directory")?;
    start
        .ancestors()
        .find(|dir| dir.join("crates/cli/src/plugins.rs").is_file() && dir.join("Cargo.toml").is_file())
        .map(Path::to_path_buf)
        .with_context(|| format!("{} is not inside a losskit checkout (no crates/cli/src/plugins.rs above it); run this from the repository or pass --root", start.display()))
}

fn insert_after_marker(text: &str, marker: &str, line: &str) -> Option<String> {
    let start = text.find(marker)?;
    let end = start + text[start..].find('\n')? + 1;
    Some(format!("{}{}{}", &text[..end], line, &text[end..]))
}

fn insert_before_marker(text: &str, marker: &str, line: &str) -> Option<String> {
    let start = text.find(marker)?;
    Some(format!("{}{}{}", &text[..start], line, &text[start..]))
}

fn type_name(name: &str) -> String {
    let mut out: String = name
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    if !out.ends_with("Loss") {
        out.push_str("Loss");
    }
    out
}

fn plugin_manifest(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
description = "losskit plugin: the `{name}` loss"
version.workspace = true
edition.workspace = true
rust-version.workspace = true
license.workspace = true

[dependencies]
losskit-core.workspace = true

[dev-dependencies]
losskit-core = {{ workspace = true, features = ["flex", "ndarray"] }}

[lints]
workspace = true
"#
    )
}

fn plugin_readme(name: &str) -> String {
    format!(
        "# {name} — a losskit plugin\n\nRegisters the loss `{name}`. Edit `src/lib.rs` (formula, options, docs); \
         `cargo test --release -p {name}` runs its unit tests and the conformance kit, and \
         `losskit info {name}` prints its documentation.\n"
    )
}

fn plugin_conformance_test(name: &str) -> String {
    format!(
        r#"//! The conformance kit on this plugin's losses.

use {name}::LOSS_NAMES;

#[test]
fn every_loss_of_this_plugin_passes_the_conformance_kit() {{
    for name in LOSS_NAMES {{
        losskit_core::conformance::check_registered(name)
            .expect("the loss is registered")
            .assert_passed();
    }}
}}
"#
    )
}

fn plugin_source(name: &str, category: Category) -> String {
    let loss = type_name(name);
    let regression = category == Category::Regression;
    let (formula, body, capabilities, imports) = if regression {
        (
            "l = scale · (x - y)²\n    /// mean = 1/M · Σ l",
            "let (output, target) = input.into_parts();\n        let Target::Dense(target) = target else {\n            return Err(InputError::Unsupported { loss: NAME.into(), problem: \"needs a float target of the output's shape\".into() }.into());\n        };\n        let loss = (output - target).square() * self.config.scale;\n        Ok(reduce_elements(loss, reduction).into())",
            "Capabilities::regression()",
            "use losskit_core::{\n    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction, Target,\n    burn::{self, config::Config},\n    config::{OptionError, ensure},\n    error::InputError,\n    reduce::reduce_elements,\n};",
        )
    } else {
        (
            "l = -scale · Σ_c t_c · log softmax(x)_c\n    /// mean = 1/M · Σ l      (M = positions)",
            "let [n, classes, s] = input.output().dims();\n        let (target, _) = dense_target(input.target(), classes, None)?;\n        let (output, _) = input.into_parts();\n        let loss = (log_softmax(output, 1) * target).sum_dim(1).reshape([n, s]).neg() * self.config.scale;\n        Ok(reduce_positions(loss, reduction).into())",
            "Capabilities { minimum: Some(0.0), ..Capabilities::classification() }",
            "use losskit_core::{\n    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, Reduction,\n    burn::{self, config::Config, tensor::activation::log_softmax},\n    config::{OptionError, ensure},\n    reduce::reduce_positions,\n    targets::dense_target,\n};",
        )
    };
    let summary = template_summary(name);
    let category_ident = match category {
        Category::Classification => "Classification",
        Category::Segmentation => "Segmentation",
        Category::Regression => "Regression",
        Category::Composite => "Composite",
    };
    format!(
        r##"//! # {name}
//!
//! A losskit plugin. Link the crate and the loss is registered as `{name}`.
#![warn(missing_docs)]

{imports}

/// The names this crate registers (the registry-wide tests check they are present).
pub const LOSS_NAMES: &[&str] = &[NAME];

const NAME: &str = "{name}";

/// Options of [`{loss}`].
#[derive(Config, Debug)]
pub struct {loss}Config {{
    /// A factor applied to the loss; must be > 0.
    #[config(default = 1.0)]
    pub scale: f64,
}}

impl LossConfig for {loss}Config {{
    fn example() -> Self {{
        Self::new()
    }}

    fn validate(&self) -> Result<(), OptionError> {{
        ensure(self.scale.is_finite() && self.scale > 0.0, "scale", || {{
            format!("must be a finite number > 0, got {{}}", self.scale)
        }})
    }}

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {{
        Ok(Box::new({loss} {{ config: self }}))
    }}
}}

losskit_core::documented! {{
    /// # What it does
    /// TODO(you): describe the loss. As scaffolded:
    ///
    /// ```text
    /// {formula}
    /// ```
    ///
    /// # When to use it
    /// Say which problems this loss is for, and what to prefer otherwise.
    ///
    /// # Options
    /// - `scale` (float > 0, default 1): a factor applied to the loss.
    ///
    /// # Example
    /// ```json
    /// {{"name": "{name}", "scale": 1.0}}
    /// ```
    ///
    /// # References
    /// - Cite the paper or library this loss follows.
    #[derive(Debug, Clone)]
    pub struct {loss} {{
        config: {loss}Config,
    }}
}}

losskit_core::register_loss!({loss} {{
    name: "{name}",
    aliases: [],
    category: {category_ident},
    summary: "{summary}",
    config: {loss}Config,
}});

impl Loss for {loss} {{
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {{
        {body}
    }}

    fn capabilities(&self) -> Capabilities {{
        {capabilities}
    }}
}}

#[cfg(test)]
mod tests {{
    use losskit_core::Registry;

    #[test]
    fn a_bad_option_is_named() {{
        let error = Registry::global()
            .unwrap()
            .build_spec(r#"{{"name": "{name}", "scale": -1}}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("`scale`"), "{{error}}");
    }}
}}
"##
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_snake_case() {
        for bad in [
            "MyLoss", "my-loss", "1loss", "my__loss", "loss_", "", "crate",
        ] {
            assert!(check_name(bad).is_err(), "{bad} accepted");
        }
        assert!(check_name("my_loss2").is_ok());
    }

    #[test]
    fn readme_rows_are_inserted_in_order() {
        let readme = "intro\n<!-- losses:start -->\n| loss | aliases | category | summary |\n| --- | --- | --- | --- |\n| `a_loss` |  | regression | A. |\n| `c_loss` |  | regression | C. |\n<!-- losses:end -->\nrest\n";
        let updated = insert_readme_row(readme, "| `b_loss` |  | regression | B. |").unwrap();
        assert!(
            updated.contains("| A. |\n| `b_loss` |  | regression | B. |\n| `c_loss`"),
            "{updated}"
        );
        assert!(
            updated.ends_with("<!-- losses:end -->\nrest\n"),
            "{updated}"
        );
        let prefix = insert_readme_row(readme, "| `a_loss_x` |  | regression | AX. |").unwrap();
        assert!(prefix.contains("| A. |\n| `a_loss_x` |"), "{prefix}");
        let last = insert_readme_row(readme, "| `z_loss` |  | regression | Z. |").unwrap();
        assert!(
            last.contains("| C. |\n| `z_loss` |  | regression | Z. |\n<!-- losses:end -->"),
            "{last}"
        );
    }

    #[test]
    fn type_names_are_camel_case_losses() {
        assert_eq!(type_name("my_loss"), "MyLoss");
        assert_eq!(type_name("boundary"), "BoundaryLoss");
    }
}
