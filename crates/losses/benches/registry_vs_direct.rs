//! A loss built from the registry against the same loss called directly: the registry (a
//! `Box<dyn Loss>` built from JSON once) must add no measurable cost over the concrete type,
//! and the losskit loss is compared with burn-nn's where burn has one (losskit checks every
//! class index against C, which burn-nn does not).
//! Run with `cargo bench -p losskit-losses --bench registry_vs_direct`.

use std::hint::black_box;

use burn::{
    nn::loss::{CrossEntropyLossConfig, MseLoss},
    tensor::{Device, Int, Tensor, TensorData},
};
use criterion::{Criterion, criterion_group, criterion_main};
use losskit_core::{LossInput, Reduction, Registry, Rng};

extern crate losskit_losses;

fn device() -> Device {
    losskit_core::devices::default_device().expect("a CPU backend")
}

fn logits(n: usize, c: usize, seed: u64) -> Tensor<2> {
    let mut rng = Rng::new(seed);
    let values: Vec<f32> = (0..n * c).map(|_| rng.normal() as f32).collect();
    Tensor::from_data(TensorData::new(values, [n, c]), &device())
}

fn classes(n: usize, c: usize, seed: u64) -> Tensor<1, Int> {
    let mut rng = Rng::new(seed);
    let values: Vec<i64> = (0..n).map(|_| rng.below(c) as i64).collect();
    Tensor::from_data(TensorData::new(values, [n]), &device())
}

fn bench_cross_entropy(criterion: &mut Criterion) {
    let (n, c) = (256, 10);
    let output = logits(n, c, 1);
    let target = classes(n, c, 2);
    let registry_loss = Registry::global()
        .unwrap()
        .build_spec("cross_entropy")
        .unwrap();
    let direct = CrossEntropyLossConfig::new().init(&device());
    let mut group = criterion.benchmark_group("cross_entropy_256x10_forward");
    group.bench_function("direct_burn_nn", |b| {
        b.iter(|| {
            let value = direct.forward(black_box(output.clone()), black_box(target.clone()));
            black_box(value.into_data())
        })
    });
    group.bench_function("registry", |b| {
        b.iter(|| {
            let input =
                LossInput::with_indices(black_box(output.clone()), black_box(target.clone()))
                    .unwrap();
            black_box(
                registry_loss
                    .forward(input, Reduction::Mean)
                    .unwrap()
                    .value
                    .into_data(),
            )
        })
    });
    let typed = losskit_losses::CrossEntropyLoss::new(
        "cross_entropy",
        losskit_losses::CrossEntropyLossConfig::new(),
    );
    group.bench_function("typed_losskit", |b| {
        b.iter(|| {
            let input =
                LossInput::with_indices(black_box(output.clone()), black_box(target.clone()))
                    .unwrap();
            black_box(
                losskit_core::Loss::forward(&typed, input, Reduction::Mean)
                    .unwrap()
                    .value
                    .into_data(),
            )
        })
    });
    group.finish();
}

fn bench_mse(criterion: &mut Criterion) {
    let (n, c) = (256, 10);
    let output = logits(n, c, 3);
    let target = logits(n, c, 4);
    let registry_loss = Registry::global().unwrap().build_spec("mse").unwrap();
    let direct = MseLoss::new();
    let mut group = criterion.benchmark_group("mse_256x10_forward");
    group.bench_function("direct_burn_nn", |b| {
        b.iter(|| {
            let value = direct.forward(
                black_box(output.clone()),
                black_box(target.clone()),
                burn::nn::loss::Reduction::Mean,
            );
            black_box(value.into_data())
        })
    });
    group.bench_function("registry", |b| {
        b.iter(|| {
            let input = LossInput::with_dense(black_box(output.clone()), black_box(target.clone()))
                .unwrap();
            black_box(
                registry_loss
                    .forward(input, Reduction::Mean)
                    .unwrap()
                    .value
                    .into_data(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench_cross_entropy, bench_mse);
criterion_main!(benches);
