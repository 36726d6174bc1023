//! Every registered built-in loss (default config), forward and forward + backward, at the
//! sizes it accepts of: small `[256, 10]`, large `[4096, 1000]`, segmentation
//! `[16, 4, 128, 128]` and 3-D `[2, 4, 32, 64, 64]`. Inputs come from the conformance kit's
//! generator, so each loss gets values of its own domain (logits, probabilities, rates).
//! `cargo bench -p losskit-losses --bench every_loss` (add a name filter after `--`, e.g.
//! `-- dice/`).

use std::time::Duration;

use burn::tensor::Device;
use criterion::{Criterion, criterion_group, criterion_main};
use losskit_core::{LossInput, Reduction, Registry, TargetKind, conformance::Case};

extern crate losskit_losses;

const SIZES: [(&str, &[usize]); 4] = [
    ("small_256x10", &[256, 10]),
    ("large_4096x1000", &[4096, 1000]),
    ("seg_16x4x128x128", &[16, 4, 128, 128]),
    ("3d_2x4x32x64x64", &[2, 4, 32, 64, 64]),
];

fn device() -> Device {
    losskit_core::devices::parse_device("cpu").expect("a CPU backend")
}

fn bench_every_loss(criterion: &mut Criterion) {
    let registry = Registry::global().expect("the registry builds");
    let device = device();
    let autodiff = device.clone().autodiff();
    for registration in registry.iter() {
        let loss = registration
            .build_example()
            .expect("the example config builds");
        let capabilities = loss.capabilities();
        let kind = if capabilities.targets.contains(&TargetKind::ClassIndices) {
            TargetKind::ClassIndices
        } else {
            capabilities.targets[0]
        };
        let mut group = criterion.benchmark_group(registration.name);
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        for (size, shape) in SIZES {
            let channels_fit = shape[1] >= capabilities.min_channels
                && capabilities.max_channels.is_none_or(|max| shape[1] <= max);
            if !capabilities.ranks.contains(&shape.len()) || !channels_fit {
                continue;
            }
            let case = Case::generate(&capabilities, shape, kind, 1, 1.0);
            let plain = LossInput::from_host(&case.output, &case.target, &device)
                .expect("a generated input is valid");
            group.bench_function(format!("{size}/forward"), |b| {
                b.iter(|| {
                    let value = loss.forward(plain.clone(), Reduction::Mean).expect("runs");
                    std::hint::black_box(value.value.into_data())
                })
            });
            let tracked = LossInput::from_host(&case.output, &case.target, &autodiff)
                .expect("a generated input is valid");
            group.bench_function(format!("{size}/forward_backward"), |b| {
                b.iter(|| {
                    let leaf = tracked.output().clone().require_grad();
                    let input = tracked.clone().with_output(leaf.clone());
                    let value = loss.forward(input, Reduction::Mean).expect("runs").value;
                    let grads = value.backward();
                    std::hint::black_box(leaf.grad(&grads).map(|g| g.into_data()))
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_every_loss);
criterion_main!(benches);
