//! Property tests over random shapes and values for every registered loss: no panic, no error
//! on inputs the loss declares it accepts, finite values and gradients for finite inputs.

use losskit_core::{
    Reduction, Registry, compute::compute_loss, conformance::Case, devices::default_device,
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};

/// Cases per loss; `PROPTEST_CASES` overrides it.
const CASES_PER_LOSS: u32 = 256;

#[test]
fn every_loss_is_finite_and_panic_free_on_random_inputs() {
    let registry = Registry::global().expect("registry builds");
    for name in losskit_tests::expected_losses() {
        assert!(
            registry.get(name).is_ok(),
            "`{name}` is not linked into this test binary"
        );
    }
    let device = default_device().expect("a CPU backend");
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES_PER_LOSS);
    let mut total = 0;
    for entry in registry.iter() {
        let loss = entry.build_example().expect("example builds");
        let capabilities = loss.capabilities();
        let min_c = capabilities.min_channels.max(1);
        let max_c = capabilities.max_channels.unwrap_or(min_c + 3).max(min_c);
        let strategy = (
            0..capabilities.ranks.len(),
            0..capabilities.targets.len(),
            1usize..4,
            min_c..=max_c,
            prop::collection::vec(1usize..5, 3),
            any::<u64>(),
            -2.0f64..2.0,
        );
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&strategy, |(rank, kind, n, c, spatial, seed, log_scale)| {
            let rank = capabilities.ranks[rank];
            let mut shape = vec![n, c];
            shape.extend_from_slice(&spatial[..rank - 2]);
            let case = Case::generate(
                &capabilities,
                &shape,
                capabilities.targets[kind],
                seed,
                10f64.powf(log_scale),
            );
            for (reduction, gradient) in [
                (Reduction::Mean, true),
                (Reduction::Sum, false),
                (Reduction::None, false),
            ] {
                let evaluation = compute_loss(
                    loss.as_ref(),
                    &case.output,
                    &case.target,
                    &device,
                    reduction,
                    gradient,
                )
                .map_err(|error| {
                    TestCaseError::fail(format!("{reduction}: {error} on {}", case.description))
                })?;
                prop_assert!(
                    evaluation.value.iter().all(|v| v.is_finite()),
                    "{reduction} value {:?} on {}",
                    evaluation.value,
                    case.description
                );
                if let Some(gradient) = &evaluation.gradient {
                    prop_assert!(
                        gradient.iter().all(|g| g.is_finite()),
                        "non-finite gradient on {}",
                        case.description
                    );
                }
            }
            Ok(())
        });
        if let Err(error) = result {
            panic!("loss `{}`: {error}", entry.name);
        }
        total += cases;
    }
    println!(
        "{} losses, {cases} random cases each ({total} in all)",
        registry.len()
    );
}
