//! Signed distance maps of a `[16, 4, 128, 128]` class-index batch (issue 23's budget: 10 ms
//! on 2 cores) and of a 3-D `[2, 4, 32, 64, 64]` one, per sample and class in parallel.
//! `cargo bench -p losskit-losses --bench distance_maps`.

use criterion::{Criterion, criterion_group, criterion_main};
use losskit_core::{Rng, distance::signed_distance_maps};

/// Blobs of classes 1..4 on background 0: a few discs per image, as a segmentation target has.
fn target(samples: usize, dims: &[usize], rng: &mut Rng) -> Vec<i64> {
    let size: usize = dims.iter().product();
    let mut target = vec![0i64; samples * size];
    for sample in 0..samples {
        for class in 1..4i64 {
            let centre: Vec<f64> = dims.iter().map(|&d| rng.uniform() * d as f64).collect();
            let radius = 4.0 + rng.uniform() * dims[dims.len() - 1] as f64 / 6.0;
            for i in 0..size {
                let mut rest = i;
                let mut distance = 0.0;
                for axis in (0..dims.len()).rev() {
                    let x = (rest % dims[axis]) as f64;
                    rest /= dims[axis];
                    distance += (x - centre[axis]).powi(2);
                }
                if distance <= radius * radius {
                    target[sample * size + i] = class;
                }
            }
        }
    }
    target
}

fn bench_distance_maps(criterion: &mut Criterion) {
    let mut rng = Rng::new(5);
    for (name, samples, dims) in [
        ("sdf_16x4x128x128", 16, &[128usize, 128][..]),
        ("sdf_2x4x32x64x64", 2, &[32usize, 64, 64][..]),
    ] {
        let target = target(samples, dims, &mut rng);
        let spacing = vec![1.0; dims.len()];
        criterion.bench_function(name, |b| {
            b.iter(|| signed_distance_maps(&target, 4, dims, &spacing))
        });
    }
}

criterion_group!(benches, bench_distance_maps);
criterion_main!(benches);
