//! The conformance kit over every registered loss, and proof that it catches broken ones.

use losskit_core::{
    Capabilities, Error, Loss, LossInput, LossValue, Reduction, Registry,
    burn::tensor::{Tensor, TensorData},
    conformance::{Property, check},
    reduce::reduce_elements,
};

#[test]
fn every_registered_loss_passes_the_conformance_kit() {
    let registry = Registry::global().expect("registry builds");
    // The kit passes vacuously on an empty registry: make sure every crate is linked.
    for name in losskit_tests::expected_losses() {
        assert!(registry.get(name).is_ok(), "`{name}` is not registered in this test binary");
    }
    let mut failed = Vec::new();
    let mut checks = 0;
    for entry in registry.iter() {
        let report = losskit_core::conformance::check_registered(entry.name).expect("example config builds");
        checks += report.checks;
        if !report.passed() {
            failed.push(report.to_string());
        }
    }
    println!("{} losses, {checks} conformance checks", registry.len());
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Squared error whose value is right but whose gradient is that of the absolute error.
#[derive(Debug)]
struct WrongGradient;

impl Loss for WrongGradient {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let (output, target) = input.into_parts();
        let losskit_core::Target::Dense(target) = target else { unreachable!("dense targets only") };
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
        let losskit_core::Target::Dense(target) = target else { unreachable!("dense targets only") };
        let ramp: Vec<f32> = (0..n).map(|i| (i + 1) as f32).collect();
        let ramp = Tensor::<1>::from_data(TensorData::new(ramp, [n]), &output.device()).reshape([n, 1, 1]);
        let _ = (c, s);
        Ok(reduce_elements((output - target).square() * ramp, reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::regression()
    }
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
