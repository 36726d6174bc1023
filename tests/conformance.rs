//! The conformance kit over every registered loss, and proof that it catches broken ones.

use losskit_core::{
    Capabilities, Error, Loss, LossInput, LossValue, Reduction, Registry,
    burn::tensor::{Tensor, TensorData},
    conformance::{Property, check},
    reduce::{reduce_elements, reduce_positions},
};

#[test]
fn every_registered_loss_passes_the_conformance_kit() {
    let registry = Registry::global().expect("registry builds");
    // The kit passes vacuously on an empty registry: make sure every crate is linked.
    for name in losskit_tests::expected_losses() {
        assert!(
            registry.get(name).is_ok(),
            "`{name}` is not registered in this test binary"
        );
    }
    let mut failed = Vec::new();
    let mut checks = 0;
    for entry in registry.iter() {
        let report =
            losskit_core::conformance::check_registered(entry.name).expect("example config builds");
        checks += report.checks;
        if !report.passed() {
            failed.push(report.to_string());
        }
    }
    println!("{} losses, {checks} conformance checks", registry.len());
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Non-default configs: each must pass the kit as the example configs do.
const NON_DEFAULT_CONFIGS: &[&str] = &[
    r#"{"name": "cross_entropy", "from_logits": false}"#,
    r#"{"name": "cross_entropy", "label_smoothing": 0.1}"#,
    r#"{"name": "cross_entropy", "weights": [0.5, 2.0, 1.5]}"#,
    r#"{"name": "cross_entropy", "ignore_index": -100}"#,
    r#"{"name": "cross_entropy", "weights": [0.5, 2.0, 1.5, 1.0], "ignore_index": 255, "label_smoothing": 0.05}"#,
    r#"{"name": "weighted_cross_entropy", "weights": "balanced"}"#,
    r#"{"name": "weighted_cross_entropy", "weights": "balanced", "ignore_index": -1}"#,
    r#"{"name": "weighted_cross_entropy", "weights": [1.0, 3.0]}"#,
    r#"{"name": "binary_cross_entropy", "from_logits": false}"#,
    r#"{"name": "binary_cross_entropy", "pos_weight": [2.0, 1.0, 0.5]}"#,
    r#"{"name": "binary_cross_entropy", "from_logits": false, "pos_weight": [2.0, 1.0], "weights": [1.0, 0.5]}"#,
    r#"{"name": "focal", "activation": "sigmoid"}"#,
    r#"{"name": "focal", "alpha": [0.25, 0.5, 0.25]}"#,
    r#"{"name": "focal", "gamma": 0.5}"#,
    r#"{"name": "focal", "ignore_index": -1}"#,
    r#"{"name": "focal", "activation": "sigmoid", "alpha": [0.25, 0.5, 0.75], "ignore_index": -1}"#,
    r#"{"name": "poisson_nll", "log_input": false}"#,
    r#"{"name": "poisson_nll", "full": true}"#,
    r#"{"name": "poisson_nll", "log_input": false, "full": true}"#,
    r#"{"name": "huber", "delta": 0.3}"#,
    r#"{"name": "smooth_l1", "beta": 2.0}"#,
    r#"{"name": "quantile", "quantile": 0.9}"#,
    r#"{"name": "dice", "activation": "sigmoid"}"#,
    r#"{"name": "dice", "batch": true}"#,
    r#"{"name": "dice", "squared_pred": true}"#,
    r#"{"name": "dice", "include_background": false}"#,
    r#"{"name": "dice", "ignore_index": -1}"#,
    r#"{"name": "dice", "jaccard": true}"#,
    r#"{"name": "dice", "weights": [0.5, 1.0, 2.0], "batch": true, "ignore_index": -1}"#,
    r#"{"name": "generalized_dice", "weight_type": "simple"}"#,
    r#"{"name": "generalized_dice", "weight_type": "uniform"}"#,
    r#"{"name": "generalized_dice", "batch": true, "ignore_index": -1}"#,
    r#"{"name": "tversky", "alpha": 0.3, "beta": 0.7}"#,
    r#"{"name": "focal_tversky", "alpha": 0.3, "beta": 0.7, "gamma": 0.5}"#,
    r#"{"name": "focal_tversky", "batch": true, "ignore_index": -1}"#,
    r#"{"name": "lovasz_softmax", "per_image": true}"#,
    r#"{"name": "lovasz_softmax", "ignore_index": -1}"#,
    r#"{"name": "dice_ce", "lambda_ce": 0.5}"#,
    r#"{"name": "dice_ce", "ignore_index": -1, "weights": [1.0, 2.0, 0.5]}"#,
    r#"{"name": "dice_focal", "activation": "sigmoid"}"#,
    r#"{"name": "dice_focal", "ignore_index": -1}"#,
    r#"{"name": "boundary", "include_background": true, "activation": "sigmoid"}"#,
    r#"{"name": "hausdorff_dt", "include_background": true, "alpha": 1.0}"#,
    r#"{"name": "hausdorff_dt", "batch": true, "ignore_empty": true}"#,
    r#"{"name": "soft_cldice", "include_background": false, "iterations": 2}"#,
    r#"{"name": "dice_cldice", "activation": "sigmoid", "alpha": 0.2}"#,
    r#"{"name": "topk_cross_entropy", "k": 50, "ignore_index": -1, "label_smoothing": 0.1}"#,
    r#"{"name": "unified_focal", "variant": "symmetric", "lambda": 0.2, "delta": 0.3, "gamma": 1.0}"#,
    r#"{"name": "weighted_sum", "terms": [{"weight": 1.0, "loss": "dice"}, {"weight": -0.25, "loss": "cross_entropy"}]}"#,
    r#"{"name": "weighted_sum", "terms": [{"loss": {"name": "dice", "ignore_index": -1}}, {"loss": {"name": "ce", "ignore_index": -1}}]}"#,
    r#"{"name": "class_balanced", "samples_per_class": [100, 10, 1], "base": "focal"}"#,
    r#"{"name": "asymmetric", "clip": 0}"#,
];

#[test]
fn non_default_configs_pass_the_conformance_kit() {
    let registry = Registry::global().expect("registry builds");
    let mut failed = Vec::new();
    for config in NON_DEFAULT_CONFIGS {
        let loss = registry
            .build_spec(config)
            .unwrap_or_else(|error| panic!("{config} builds: {error}"));
        let report = check(config, loss.as_ref());
        if !report.passed() {
            failed.push(report.to_string());
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Squared error whose value is right but whose gradient is that of the absolute error.
#[derive(Debug)]
struct WrongGradient;

impl Loss for WrongGradient {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let (output, target) = input.into_parts();
        let losskit_core::Target::Dense(target) = target else {
            unreachable!("dense targets only")
        };
        let residual = output - target;
        let reported = residual.clone().abs();
        let actual = residual.square();
        let value = reported.clone() + (actual - reported).detach();
        Ok(reduce_elements(value, reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::regression()
    }
}

/// Cross-entropy through `log(softmax)`, which is `log(0)` for confident logits.
#[derive(Debug)]
struct NaiveLogSoftmax;

impl Loss for NaiveLogSoftmax {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let classes = input.channels();
        let (target, _) = losskit_core::targets::dense_target(input.target(), classes, None)?;
        let (output, _) = input.into_parts();
        let probabilities = losskit_core::burn::tensor::activation::softmax(output, 1);
        Ok(reduce_elements((probabilities.log() * target).neg(), reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::classification()
    }
}

/// Weighs each sample by its position in the batch.
#[derive(Debug)]
struct OrderDependent;

impl Loss for OrderDependent {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let [n, c, s] = input.output().dims();
        let (output, target) = input.into_parts();
        let losskit_core::Target::Dense(target) = target else {
            unreachable!("dense targets only")
        };
        let ramp: Vec<f32> = (0..n).map(|i| (i + 1) as f32).collect();
        let ramp =
            Tensor::<1>::from_data(TensorData::new(ramp, [n]), &output.device()).reshape([n, 1, 1]);
        let _ = (c, s);
        Ok(reduce_elements((output - target).square() * ramp, reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::regression()
    }
}

/// Squared error whose `none` gives each sample's mean, not its share of `sum`.
#[derive(Debug)]
struct NoneIsPerSampleMean;

impl Loss for NoneIsPerSampleMean {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let [n, c, s] = input.output().dims();
        let (output, target) = input.into_parts();
        let losskit_core::Target::Dense(target) = target else {
            unreachable!("dense targets only")
        };
        let values = (output - target).square();
        Ok(match reduction {
            Reduction::None => values.reshape([n, c * s]).mean_dim(1).reshape([n]),
            other => reduce_elements(values, other),
        }
        .into())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::regression()
    }
}

/// Cross-entropy plus a constant 1: a perfect prediction gives 1, not the declared minimum 0.
#[derive(Debug)]
struct OffsetMinimum;

impl Loss for OffsetMinimum {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let [n, classes, s] = input.output().dims();
        let (target, _) = losskit_core::targets::dense_target(input.target(), classes, None)?;
        let (output, _) = input.into_parts();
        let log_p = losskit_core::burn::tensor::activation::log_softmax(output, 1);
        let per_position = (log_p * target).sum_dim(1).reshape([n, s]).neg() + 1.0;
        Ok(reduce_positions(per_position, reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            minimum: Some(0.0),
            ..Capabilities::classification()
        }
    }
}

#[test]
fn none_that_does_not_add_up_to_sum_fails_the_reduction_property() {
    let report = check("none_is_per_sample_mean", &NoneIsPerSampleMean);
    assert!(report.failed(Property::Reduction), "{report}");
    assert!(!report.failed(Property::Gradient), "{report}");
}

#[test]
fn a_wrong_minimum_fails_the_minimum_property() {
    let report = check("offset_minimum", &OffsetMinimum);
    assert!(report.failed(Property::Minimum), "{report}");
    assert!(!report.failed(Property::Reduction), "{report}");
}

#[test]
fn a_wrong_gradient_fails_the_gradient_property() {
    let report = check("wrong_gradient", &WrongGradient);
    assert!(report.failed(Property::Gradient), "{report}");
    assert!(report.to_string().contains("gradient"), "{report}");
}

#[test]
fn log_of_zero_fails_the_extreme_property() {
    let report = check("naive_log_softmax", &NaiveLogSoftmax);
    assert!(report.failed(Property::Extreme), "{report}");
    assert!(!report.failed(Property::Gradient), "{report}");
}

#[test]
fn order_dependence_fails_the_batch_order_property() {
    let report = check("order_dependent", &OrderDependent);
    assert!(report.failed(Property::BatchOrder), "{report}");
}

#[test]
fn a_sound_loss_passes_with_many_checks() {
    let report = losskit_core::conformance::check_registered("mse").unwrap();
    report.assert_passed();
    assert!(report.checks >= 20, "{report}");
}

/// Every registered loss gives the same value and gradient on wgpu as on the default CPU
/// device (the kit's `devices` property, with the CPU as reference).
#[cfg(feature = "wgpu")]
#[test]
fn every_loss_agrees_between_cpu_and_wgpu() {
    let cpu = losskit_core::devices::default_device().expect("a CPU backend");
    let wgpu =
        losskit_core::devices::parse_device("wgpu").expect("a wgpu adapter (in CI: lavapipe)");
    println!("{}", losskit_core::devices::describe("wgpu").unwrap());
    let registry = Registry::global().expect("registry builds");
    let mut failed = Vec::new();
    for entry in registry.iter() {
        let loss = entry.build_example().expect("example builds");
        let report = losskit_core::conformance::check_on(
            entry.name,
            loss.as_ref(),
            &[("cpu", cpu.clone()), ("wgpu", wgpu.clone())],
        );
        if !report.passed() {
            failed.push(report.to_string());
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
