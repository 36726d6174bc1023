//! Invariants that hold for every registered loss: adding a loss adds these tests for it.

use losskit_core::Registry;

use losskit_tests::{PLUGIN_LOSSES, expected_losses};

/// The registry, checked to hold every expected loss: the tests below iterate it, and would
/// pass vacuously on an empty one.
fn registry() -> &'static Registry {
    let registry = Registry::global().expect("the registry builds without duplicate names");
    let expected = expected_losses();
    assert!(
        registry.len() >= expected.len(),
        "only {} losses registered, expected at least {}",
        registry.len(),
        expected.len()
    );
    registry
}

#[test]
fn every_expected_loss_is_registered() {
    let registry = registry();
    let missing: Vec<&str> = expected_losses()
        .into_iter()
        .filter(|name| registry.get(name).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "not registered (is the crate linked?): {missing:?}"
    );
    assert!(PLUGIN_LOSSES.len() >= 2, "the example plugins are linked");
    for (plugin, names) in PLUGIN_LOSSES {
        for name in *names {
            assert_eq!(
                registry.get(name).unwrap().crate_name,
                *plugin,
                "`{name}` comes from {plugin}"
            );
        }
    }
}

#[test]
fn names_and_aliases_are_snake_case_and_unique() {
    let mut seen = std::collections::BTreeSet::new();
    for entry in registry().iter() {
        for name in std::iter::once(entry.name).chain(entry.aliases.iter().copied()) {
            let snake = !name.is_empty()
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !name.contains("__")
                && !name.ends_with('_');
            assert!(snake, "`{name}` is not snake_case");
            assert!(seen.insert(name), "`{name}` is claimed twice");
        }
    }
}

#[test]
fn every_loss_is_documented_in_sections() {
    for entry in registry().iter() {
        let docs = entry.documentation();
        for section in [
            "# What it does",
            "# When to use it",
            "# Options",
            "# Example",
            "# References",
        ] {
            assert!(
                docs.contains(section),
                "`{}` docs lack `{section}`",
                entry.name
            );
        }
        assert!(
            !entry.summary.is_empty() && entry.summary.len() <= 160,
            "`{}` summary must be one line",
            entry.name
        );
        assert!(
            !entry.summary.contains('\n'),
            "`{}` summary must be one line",
            entry.name
        );
    }
}

#[test]
fn every_example_config_builds_and_round_trips() {
    let registry = registry();
    for entry in registry.iter() {
        entry
            .build_example()
            .unwrap_or_else(|error| panic!("`{}` example config fails: {error}", entry.name));
        let example = entry.example_config();
        registry
            .build_value(&example)
            .unwrap_or_else(|error| panic!("`{}` example does not rebuild: {error}", entry.name));
        for (option, _) in entry.required {
            let mut without = example.as_object().unwrap().clone();
            without.remove(*option);
            let error = registry
                .build(&without)
                .err()
                .unwrap_or_else(|| panic!("`{}` builds without required `{option}`", entry.name));
            assert!(error.to_string().contains(option), "{error}");
        }
    }
}

#[test]
fn the_documented_example_config_in_each_docs_builds() {
    let registry = registry();
    for entry in registry.iter() {
        let docs = entry.documentation();
        let example = docs
            .split("```json")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap_or_else(|| panic!("`{}` docs have no ```json example", entry.name));
        registry
            .build_spec(example.trim())
            .unwrap_or_else(|error| panic!("`{}` documented example fails: {error}", entry.name));
    }
}

#[test]
fn unknown_options_and_names_get_suggestions() {
    let registry = registry();
    for entry in registry.iter() {
        let mut config = entry.example_config().as_object().unwrap().clone();
        config.insert("no_such_option".into(), serde_json::json!(1));
        let error = registry
            .build(&config)
            .expect_err("unknown option rejected")
            .to_string();
        assert!(error.contains("no_such_option"), "{error}");
    }
    let error = registry.get("cross_entropi").unwrap_err().to_string();
    assert!(error.contains("cross_entropy"), "{error}");
}

#[test]
fn the_readme_loss_table_is_generated_from_the_registry() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme
        .find("<!-- losses:start -->")
        .expect("README has <!-- losses:start -->");
    let end = readme
        .find("<!-- losses:end -->")
        .expect("README has <!-- losses:end -->");
    let table = readme[start + "<!-- losses:start -->".len()..end].trim();
    let generated =
        losskit_cli::commands::list::run(None, losskit_cli::commands::list::ListFormat::Markdown)
            .unwrap();
    assert_eq!(
        table,
        generated.trim(),
        "README's loss table is stale: paste the output of `cargo run --release -p losskit-cli -- list --format markdown`"
    );
}
