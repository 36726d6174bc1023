//! Invariants that hold for every registered loss: adding a loss adds these tests for it.

use std::{
    collections::BTreeSet,
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
};

use losskit_core::{
    ConfigError, Loss, LossInput, Reduction, Registry, conformance::Case, input::to_f64_vec,
};
use serde_json::{Value, json};

use losskit_tests::{BUILT_IN_LOSSES, PLUGIN_LOSSES, expected_losses};

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
fn every_option_is_named_in_the_options_section() {
    for entry in registry().iter() {
        let docs = entry.documentation();
        let options = docs
            .split("# Options")
            .nth(1)
            .and_then(|rest| rest.split("# Example").next())
            .unwrap_or_default();
        let config = entry.example_config();
        let unnamed: Vec<&String> = config
            .as_object()
            .expect("a config object")
            .keys()
            .filter(|option| *option != "name" && !options.contains(&format!("`{option}`")))
            .collect();
        assert!(
            unnamed.is_empty(),
            "`{}` docs: `# Options` does not name {unnamed:?}",
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

/// Built-in losses without a reference case yet, each with the reason. The test below fails
/// for any other built-in without a case, and for a listed one once it has a case.
const WITHOUT_REFERENCE_CASE: &[(&str, &str)] = &[
    (
        "scheduled",
        "a weighted sum of other losses whose weights depend on the epoch: scheduled.rs checks it \
         equals weighted_sum at each epoch's weights, and each term has its own reference case",
    ),
    (
        "unified_focal",
        "no independent implementation computes the paper's multi-class formulas (the authors' \
         code is two-class with λ on the other term, MONAI's is binary): unified_focal.rs checks \
         them by hand and against cross_entropy and dice where they coincide",
    ),
];

/// The registered names of the losses that the in-repo reference vectors have a case for: the
/// `loss` (a config object or a name) of each case in every `tests/reference/*/cases.json`.
fn losses_with_a_reference_case(registry: &Registry) -> BTreeSet<&'static str> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("reference");
    let mut names = BTreeSet::new();
    let mut files = 0;
    for dir in std::fs::read_dir(&root).expect("tests/reference is readable") {
        let path = dir
            .expect("tests/reference is readable")
            .path()
            .join("cases.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        files += 1;
        let parsed: Value = serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        for case in parsed["cases"].as_array().expect("`cases` is a list") {
            let loss = &case["loss"];
            let name = loss
                .as_str()
                .or_else(|| loss["name"].as_str())
                .unwrap_or_else(|| panic!("{}: a case names no loss: {case}", path.display()));
            // A case of an unregistered loss counts for none (the reference test reports it).
            if let Ok(entry) = registry.get(name) {
                names.insert(entry.name);
            }
        }
    }
    assert!(files > 0, "no cases.json under {}", root.display());
    names
}

#[test]
fn every_built_in_loss_has_a_reference_case() {
    let registry = registry();
    let covered = losses_with_a_reference_case(registry);
    let built_in: Vec<&str> = registry
        .iter()
        .filter(|entry| entry.crate_name == "losskit-losses")
        .map(|entry| entry.name)
        .collect();
    assert!(
        built_in.len() >= BUILT_IN_LOSSES.len(),
        "only {} built-in losses registered",
        built_in.len()
    );
    let exempt: BTreeSet<&str> = WITHOUT_REFERENCE_CASE
        .iter()
        .map(|(name, _)| *name)
        .collect();
    let missing: Vec<&str> = built_in
        .iter()
        .copied()
        .filter(|name| !covered.contains(name) && !exempt.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "built-in losses without a case in tests/reference/*/cases.json: {missing:?}; add one \
         computed by an independent implementation (PyTorch, MONAI, smp), see \
         tests/reference/README.md"
    );
    let stale: Vec<&str> = exempt
        .iter()
        .copied()
        .filter(|name| covered.contains(name))
        .collect();
    assert!(
        stale.is_empty(),
        "{stale:?} now have a reference case: remove them from WITHOUT_REFERENCE_CASE"
    );
}

/// Runs `loss` forward (mean) and backward on a random input of the first rank and target
/// kind it declares; the value and the gradient.
fn value_and_gradient(loss: &dyn Loss) -> Result<(f64, Vec<f64>), losskit_core::Error> {
    let capabilities = loss.capabilities();
    let case = Case::random(
        &capabilities,
        capabilities.ranks[0],
        capabilities.targets[0],
        16,
    );
    let device = losskit_core::devices::default_device()
        .expect("a CPU backend is compiled in")
        .autodiff();
    let input = LossInput::from_host(&case.output, &case.target, &device)?;
    let output = input.output().clone().require_grad();
    let value = loss
        .forward(input.with_output(output.clone()), Reduction::Mean)?
        .value;
    let gradient = output
        .grad(&value.clone().backward())
        .map_or_else(|| vec![0.0; case.output.values.len()], to_f64_vec);
    Ok((to_f64_vec(value)[0], gradient))
}

/// Issue 16: focusing exponents that made burn's `powf_scalar` panic (an integral float
/// exponent beyond i64). Each is refused with an error naming the option, and the largest
/// accepted exponent gives a finite value and gradient.
#[test]
fn huge_focusing_exponents_are_refused_by_name() {
    let registry = registry();
    let class_balanced =
        json!({"name": "class_balanced", "samples_per_class": [3, 2, 1], "base": "focal"});
    for (spec, option) in [
        (json!({"name": "asymmetric"}), "gamma_neg"),
        (json!({"name": "asymmetric"}), "gamma_pos"),
        (json!({"name": "focal"}), "gamma"),
        (json!({"name": "focal", "activation": "sigmoid"}), "gamma"),
        (json!({"name": "focal_tversky"}), "gamma"),
        (json!({"name": "dice_focal"}), "gamma"),
        (
            json!({"name": "dice_focal", "activation": "sigmoid"}),
            "gamma",
        ),
        (class_balanced, "gamma"),
    ] {
        for huge in [4.3e37, 1e30] {
            let mut crash = spec.clone();
            crash[option] = json!(huge);
            let built = catch_unwind(AssertUnwindSafe(|| registry.build_value(&crash)))
                .unwrap_or_else(|_| panic!("building {crash} panicked"));
            match built {
                Err(ConfigError::InvalidOption {
                    option: named,
                    problem,
                    ..
                }) => assert!(
                    named == option && problem.contains(", 1000], got"),
                    "{crash}: `{named}` {problem}"
                ),
                Err(other) => panic!("{crash}: refused without naming `{option}`: {other}"),
                Ok(_) => panic!("{crash}: accepted"),
            }
        }
        let mut largest = spec.clone();
        largest[option] = json!(1000);
        let loss = registry
            .build_value(&largest)
            .unwrap_or_else(|error| panic!("{largest}: {error}"));
        let (value, gradient) =
            value_and_gradient(loss.as_ref()).unwrap_or_else(|error| panic!("{largest}: {error}"));
        assert!(
            value.is_finite() && gradient.iter().all(|g| g.is_finite()),
            "{largest}: value {value}, gradient {gradient:?}"
        );
    }
}

/// Numbers a user could write for an option, sensible or not.
fn unusual_numbers() -> Vec<Value> {
    let floats = [0.0, -0.0, -1.0, 1e-30, 1e30, -1e30, 4.3e37, 3.4e38, 1e300];
    let mut numbers: Vec<Value> = floats.iter().map(|x| json!(x)).collect();
    numbers.extend([json!(i64::MAX), json!(i64::MIN), json!(u64::MAX)]);
    numbers
}

/// No value of a number option (or of every element of a list of numbers) makes building or
/// running a loss panic: it is refused with an error, or the loss computes.
#[test]
fn no_number_option_value_panics() {
    let registry = registry();
    let mut panicked = Vec::new();
    for entry in registry.iter() {
        let example = entry.example_config();
        for (option, default) in example.as_object().expect("a config object") {
            let values: Vec<Value> = match default {
                Value::Number(_) => unusual_numbers(),
                Value::Array(items) if items.iter().all(Value::is_number) => unusual_numbers()
                    .into_iter()
                    .map(|number| json!(vec![number; items.len().max(1)]))
                    .collect(),
                // Options without default (`ignore_index`, `weights`, ...): one number, or three.
                Value::Null => unusual_numbers()
                    .into_iter()
                    .flat_map(|number| {
                        [
                            number.clone(),
                            json!([number.clone(), number.clone(), number]),
                        ]
                    })
                    .collect(),
                _ => continue,
            };
            for value in values {
                let mut spec = example.clone();
                spec[option] = value;
                let run = catch_unwind(AssertUnwindSafe(|| {
                    if let Ok(loss) = registry.build_value(&spec) {
                        let _ = value_and_gradient(loss.as_ref());
                    }
                }));
                if run.is_err() {
                    panicked.push(spec.to_string());
                }
            }
        }
    }
    assert!(
        panicked.is_empty(),
        "{} configs panicked instead of being refused or computed:\n{}",
        panicked.len(),
        panicked.join("\n")
    );
}

/// The default config of `entry` with `ignore_empty` set, if the loss has that option.
fn with_ignore_empty(registry: &Registry, name: &str, ignore_empty: bool) -> Option<Box<dyn Loss>> {
    let entry = registry.get(name).ok()?;
    let mut config = entry.example_config();
    config
        .as_object_mut()?
        .insert("ignore_empty".into(), json!(ignore_empty));
    registry.build_value(&config).ok()
}

/// Logits `[N, C, 2, 3]` of a sure prediction of `classes` (one per position), and the target
/// indices `[N, 2, 3]` `truth`.
fn sure_input(classes: &[i64], truth: &[i64], channels: usize) -> LossInput {
    let device = losskit_core::devices::default_device().unwrap();
    let n = truth.len() / 6;
    let mut logits = vec![-6.0f32; n * channels * 6];
    for (i, &class) in classes.iter().enumerate() {
        let (sample, position) = (i / 6, i % 6);
        logits[(sample * channels + class as usize) * 6 + position] = 6.0;
    }
    // A little disagreement, so that no value is exactly 0 or 1.
    logits[1] += 1.0;
    let output = losskit_core::burn::tensor::Tensor::<4>::from_data(
        losskit_core::burn::tensor::TensorData::new(logits, [n, channels, 2, 3]),
        &device,
    );
    let target =
        losskit_core::burn::tensor::Tensor::<3, losskit_core::burn::tensor::Int>::from_data(
            losskit_core::burn::tensor::TensorData::new(truth.to_vec(), [n, 2, 3]),
            &device,
        );
    LossInput::with_indices(output, target).unwrap()
}

/// The mean foreground Dice of each sample by the segmentation metrics (pooled confusion).
fn metric_dice(classes: &[i64], truth: &[i64], channels: usize) -> Vec<f64> {
    truth
        .chunks(6)
        .zip(classes.chunks(6))
        .map(|(t, p)| {
            let mut confusion = losskit_optim::Confusion::new(channels);
            confusion.add(t, p);
            confusion
                .metrics(losskit_optim::TaskKind::Segmentation)
                .dice
                .unwrap()
        })
        .collect()
}

#[test]
fn ignore_empty_skips_the_classes_the_metrics_skip() {
    // Two samples of three classes; class 2 is in neither the truth nor the prediction of
    // sample 0. Then a fourth class absent from both samples everywhere (logits -6). Under
    // `ignore_empty` the loss must not change when that class is added, as the metric does
    // not; without it, the mean counts the empty class.
    let truth = [0, 1, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1];
    let predicted = [0, 1, 0, 0, 1, 1, 2, 1, 1, 0, 2, 1];
    let registry = registry();
    let mut checked = Vec::new();
    let mut counted_without = Vec::new();
    for entry in registry.iter() {
        let (Some(skipping), Some(counting)) = (
            with_ignore_empty(registry, entry.name, true),
            with_ignore_empty(registry, entry.name, false),
        ) else {
            continue;
        };
        checked.push(entry.name);
        let mean = |loss: &dyn Loss, channels: usize| -> f64 {
            let value = loss
                .forward(sure_input(&predicted, &truth, channels), Reduction::Mean)
                .unwrap_or_else(|e| panic!("{}: {e}", entry.name))
                .value;
            to_f64_vec(value)[0]
        };
        let (three, four) = (mean(skipping.as_ref(), 3), mean(skipping.as_ref(), 4));
        assert!(
            (three - four).abs() <= 1e-5 * (1.0 + three.abs()),
            "{}: with ignore_empty, an empty class changed the mean from {three} to {four}",
            entry.name
        );
        // Without the option an empty class counts in most means (not in generalised Dice's,
        // whose weights all but drop it anyway).
        let (three, four) = (mean(counting.as_ref(), 3), mean(counting.as_ref(), 4));
        if (three - four).abs() > 1e-4 * (1.0 + three.abs()) {
            counted_without.push(entry.name);
        }
    }
    for name in ["dice", "tversky", "dice_focal", "boundary", "hausdorff_dt"] {
        assert!(
            counted_without.contains(&name),
            "{name}: without ignore_empty the empty class should change the mean: {counted_without:?}"
        );
    }
    assert_eq!(
        metric_dice(&predicted, &truth, 3),
        metric_dice(&predicted, &truth, 4)
    );
    for name in [
        "dice",
        "jaccard",
        "tversky",
        "generalized_dice",
        "boundary",
        "hausdorff_dt",
    ] {
        assert!(
            checked.contains(&name),
            "{name} has no ignore_empty option: {checked:?}"
        );
    }

    // Dice itself: on a sure prediction, one minus the loss is the metric's Dice, per sample,
    // class by class, skipping exactly the classes the metric skips.
    let dice = registry
        .build_value(
            &json!({"name": "dice", "ignore_empty": true, "include_background": false,
                        "smooth_nr": 0.0, "smooth_dr": 1e-9}),
        )
        .unwrap();
    let metric = metric_dice(&predicted, &truth, 3);
    for sample in 0..2 {
        let range = sample * 6..(sample + 1) * 6;
        let input = sure_input(&predicted[range.clone()], &truth[range], 3);
        let loss = to_f64_vec(dice.forward(input, Reduction::Mean).unwrap().value)[0];
        assert!(
            (1.0 - loss - metric[sample]).abs() < 1e-3,
            "sample {sample}: 1 - dice loss {} vs the metric's {}",
            1.0 - loss,
            metric[sample]
        );
    }
}
