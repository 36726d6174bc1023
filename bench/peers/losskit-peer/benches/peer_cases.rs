//! The cases of `bench/peers/run` under criterion (losskit only): cross-entropy, MSE and Dice
//! forward + backward at the four sizes, and one training step of each bundled model.
//! `cargo bench -p losskit-peer` (add a case-name filter after `--`).

use criterion::{Criterion, criterion_group, criterion_main};
use losskit_peer::{LOSS_CASES, STEP_CASES, runner};

fn bench_cases(criterion: &mut Criterion) {
    let device = losskit_core::devices::parse_device("cpu").expect("a CPU backend");
    let names = LOSS_CASES.iter().map(|(name, _)| *name).chain(STEP_CASES);
    let mut group = criterion.benchmark_group("peer_cases");
    group.sample_size(10);
    for name in names {
        let mut run = runner(name, &device).expect("a known case");
        group.bench_function(name, |b| b.iter(|| std::hint::black_box(run())));
    }
    group.finish();
}

criterion_group!(benches, bench_cases);
criterion_main!(benches);
