//! The benchmark cases that `bench/peers/run` compares with PyTorch, shared by the
//! `losskit-peer` binary (which runs them on request) and `cargo bench -p losskit-peer`.
//!
//! Every case is forward + backward of a loss (or one Adam step of a bundled model), and ends
//! by reading the loss and one gradient element back to the host, so that lazy work is done;
//! `bench/peers/peers.py` does the same in PyTorch. The driver hands both sides the same input
//! arrays ([`loss_runner_on`], [`check_loss_case`]); `cargo bench` makes its own
//! ([`runner`]).
#![warn(missing_docs)]

use burn::{
    optim::GradientsParams,
    tensor::{Device, Int, Tensor, TensorData},
};
use losskit_core::{
    Loss, LossInput, Reduction, Registry, Rng, Target, compute::compute_loss, input::HostArray,
};
use losskit_examples::models::{Cnn, CnnConfig, UNet, UNetConfig};
use losskit_optim::{OptimizerConfig, ScheduleConfig};

extern crate losskit_losses;

/// A loss case: the loss spec, the output shape, and whether the target is class indices
/// (else a dense float target of the output's shape).
pub struct LossCase {
    /// The loss spec.
    pub spec: &'static str,
    /// The output shape `[N, C, ...]`.
    pub shape: &'static [usize],
    /// Class-index targets (else a dense float target of the output's shape).
    pub indices: bool,
}

/// The loss cases, by name.
pub const LOSS_CASES: [(&str, LossCase); 12] = [
    (
        "ce_256x10",
        LossCase {
            spec: "cross_entropy",
            shape: &[256, 10],
            indices: true,
        },
    ),
    (
        "ce_4096x1000",
        LossCase {
            spec: "cross_entropy",
            shape: &[4096, 1000],
            indices: true,
        },
    ),
    (
        "ce_16x4x128x128",
        LossCase {
            spec: "cross_entropy",
            shape: &[16, 4, 128, 128],
            indices: true,
        },
    ),
    (
        "ce_2x4x32x64x64",
        LossCase {
            spec: "cross_entropy",
            shape: &[2, 4, 32, 64, 64],
            indices: true,
        },
    ),
    (
        "mse_256x10",
        LossCase {
            spec: "mse",
            shape: &[256, 10],
            indices: false,
        },
    ),
    (
        "mse_4096x1024",
        LossCase {
            spec: "mse",
            shape: &[4096, 1024],
            indices: false,
        },
    ),
    (
        "mse_16x4x128x128",
        LossCase {
            spec: "mse",
            shape: &[16, 4, 128, 128],
            indices: false,
        },
    ),
    (
        "mse_2x4x32x64x64",
        LossCase {
            spec: "mse",
            shape: &[2, 4, 32, 64, 64],
            indices: false,
        },
    ),
    (
        "dice_256x10",
        LossCase {
            spec: "dice",
            shape: &[256, 10],
            indices: true,
        },
    ),
    (
        "dice_4096x1000",
        LossCase {
            spec: "dice",
            shape: &[4096, 1000],
            indices: true,
        },
    ),
    (
        "dice_16x4x128x128",
        LossCase {
            spec: "dice",
            shape: &[16, 4, 128, 128],
            indices: true,
        },
    ),
    (
        "dice_2x4x32x64x64",
        LossCase {
            spec: "dice",
            shape: &[2, 4, 32, 64, 64],
            indices: true,
        },
    ),
];

/// The training-step cases: one Adam step of each bundled model at its default batch size on
/// the generated data, and of the U-Net as an image folder trains it (`folder_defaults`: batch
/// 8 of 128×128 patches, depth 3), on RGB images.
pub const STEP_CASES: [&str; 3] = ["cnn_step_b32", "unet_step_b16", "unet_step_b8_128"];

/// A U-Net step case's sizes.
struct UNetStep {
    batch: usize,
    channels: usize,
    classes: usize,
    side: usize,
    depth: usize,
}

fn unet_step(case: &str) -> UNetStep {
    if case == "unet_step_b8_128" {
        UNetStep {
            batch: 8,
            channels: 3,
            classes: 2,
            side: 128,
            depth: 3,
        }
    } else {
        UNetStep {
            batch: 16,
            channels: 1,
            classes: 3,
            side: 48,
            depth: 2,
        }
    }
}

fn normal(shape: &[usize], seed: u64) -> TensorData {
    let mut rng = Rng::new(seed);
    let n: usize = shape.iter().product();
    TensorData::new(
        (0..n).map(|_| rng.normal() as f32).collect::<Vec<f32>>(),
        shape.to_vec(),
    )
}

fn labels(shape: &[usize], classes: usize, seed: u64) -> TensorData {
    let mut rng = Rng::new(seed);
    let n: usize = shape.iter().product();
    TensorData::new(
        (0..n)
            .map(|_| rng.below(classes) as i64)
            .collect::<Vec<i64>>(),
        shape.to_vec(),
    )
}

/// A prepared case: one call is one repetition; it returns a value to keep the work alive.
pub type Runner = Box<dyn FnMut() -> f64>;

fn build_loss(case: &LossCase) -> Box<dyn Loss> {
    Registry::global()
        .expect("the registry builds")
        .build_spec(case.spec)
        .expect("a built-in loss")
}

/// The loss case named `case`.
pub fn loss_case(case: &str) -> Option<&'static LossCase> {
    LOSS_CASES
        .iter()
        .find(|(name, _)| *name == case)
        .map(|(_, case)| case)
}

fn loss_runner(case: &LossCase, device: &Device) -> Runner {
    let autodiff = device.clone().autodiff();
    // The canonical layout [N, C, S], as `LossInput::with_indices` makes it from [N, C, ...].
    let (n, c) = (case.shape[0], case.shape[1]);
    let s: usize = case.shape[2..].iter().product();
    let output = Tensor::<3>::from_data(normal(&[n, c, s], 1), &autodiff);
    let target = if case.indices {
        Target::Indices(Tensor::<2, Int>::from_data(
            labels(&[n, s], c, 2),
            &autodiff,
        ))
    } else {
        Target::Dense(Tensor::<3>::from_data(normal(&[n, c, s], 2), &autodiff))
    };
    timed_loss(build_loss(case), output, target, case.shape.to_vec())
}

/// The loss case on the given arrays (an output of the case's shape and its target, as a
/// user's `.npy` files would hold them), read onto `device` once, as a training loop holds
/// them.
pub fn loss_runner_on(
    case: &LossCase,
    output: &HostArray,
    target: &HostArray,
    device: &Device,
) -> Result<Runner, String> {
    if output.shape != case.shape {
        return Err(format!(
            "the output has shape {:?}, the case {:?}",
            output.shape, case.shape
        ));
    }
    let input = LossInput::from_host(output, target, &device.clone().autodiff())
        .map_err(|error| error.to_string())?;
    let (output, target) = input.into_parts();
    Ok(timed_loss(
        build_loss(case),
        output,
        target,
        case.shape.to_vec(),
    ))
}

/// The case's loss (mean) and its gradient with respect to the output, in the output's
/// row-major order, on the given arrays: what the driver compares with PyTorch's before timing.
pub fn check_loss_case(
    case: &LossCase,
    output: &HostArray,
    target: &HostArray,
    device: &Device,
) -> Result<(f64, Vec<f64>), String> {
    let computed = compute_loss(
        build_loss(case).as_ref(),
        output,
        target,
        device,
        Reduction::Mean,
        true,
    )
    .map_err(|error| error.to_string())?;
    let gradient = computed.gradient.ok_or("no gradient came back")?;
    Ok((computed.value[0], gradient))
}

fn timed_loss(loss: Box<dyn Loss>, output: Tensor<3>, target: Target, shape: Vec<usize>) -> Runner {
    Box::new(move || {
        let x = output.clone().require_grad();
        let input = LossInput::from_canonical(x.clone(), target.clone(), shape.clone())
            .expect("the case's shapes are valid");
        let value = loss
            .forward(input, Reduction::Mean)
            .expect("the loss runs")
            .value;
        let grads = value.clone().backward();
        let scalar: f64 = value.into_scalar::<f32>().into();
        let grad = x.grad(&grads).expect("the output has a gradient");
        let first: f64 = grad.slice([0..1, 0..1, 0..1]).into_scalar::<f32>().into();
        scalar + first
    })
}

fn step_runner(case: &str, device: &Device) -> Runner {
    let autodiff = device.clone().autodiff();
    autodiff.seed(7);
    let loss_spec = if case.starts_with("cnn") {
        "cross_entropy"
    } else {
        "dice"
    };
    let loss: Box<dyn Loss> = Registry::global()
        .expect("the registry builds")
        .build_spec(loss_spec)
        .expect("a built-in loss");
    let optimizer_config = OptimizerConfig::parse("adam").expect("adam parses");
    let mut optimizer = optimizer_config.build();
    let mut scheduler = ScheduleConfig::default()
        .build(optimizer_config.lr(), usize::MAX / 2)
        .expect("the constant schedule builds");
    if case.starts_with("cnn") {
        let (batch, classes) = (32, 5);
        let mut model: Option<Cnn> = Some(
            CnnConfig {
                channels: 1,
                classes,
                width: 12,
            }
            .init(&autodiff),
        );
        let images = Tensor::<4>::from_data(normal(&[batch, 1, 28, 28], 3), &autodiff);
        let target = Tensor::<1, Int>::from_data(labels(&[batch], classes, 4), &autodiff);
        Box::new(move || {
            let current = model.take().expect("the model is there between steps");
            let logits = current.forward(images.clone());
            let input = LossInput::with_indices(logits, target.clone()).expect("valid shapes");
            let value = loss
                .forward(input, Reduction::Mean)
                .expect("the loss runs")
                .value;
            let scalar: f64 = value.clone().into_scalar::<f32>().into();
            let grads = GradientsParams::from_grads(value.backward(), &current);
            model = Some(optimizer.step(scheduler.step(), current, grads));
            scalar
        })
    } else {
        let UNetStep {
            batch,
            channels,
            classes,
            side,
            depth,
        } = unet_step(case);
        let mut model: Option<UNet> = Some(
            UNetConfig {
                channels,
                classes,
                width: 8,
                depth,
            }
            .init(&autodiff),
        );
        let images = Tensor::<4>::from_data(normal(&[batch, channels, side, side], 3), &autodiff);
        let target =
            Tensor::<3, Int>::from_data(labels(&[batch, side, side], classes, 4), &autodiff);
        Box::new(move || {
            let current = model.take().expect("the model is there between steps");
            let logits = current.forward(images.clone());
            let input = LossInput::with_indices(logits, target.clone()).expect("valid shapes");
            let value = loss
                .forward(input, Reduction::Mean)
                .expect("the loss runs")
                .value;
            let scalar: f64 = value.clone().into_scalar::<f32>().into();
            let grads = GradientsParams::from_grads(value.backward(), &current);
            model = Some(optimizer.step(scheduler.step(), current, grads));
            scalar
        })
    }
}

/// The case named `case`, prepared on `device` (its inputs made, its loss or model built).
pub fn runner(case: &str, device: &Device) -> Option<Runner> {
    if let Some((_, loss_case)) = LOSS_CASES.iter().find(|(name, _)| *name == case) {
        return Some(loss_runner(loss_case, device));
    }
    STEP_CASES
        .contains(&case)
        .then(|| step_runner(case, device))
}

#[cfg(test)]
mod tests {
    use losskit_core::input::HostValues;

    use super::*;

    #[test]
    fn the_driver_s_arrays_give_the_loss_and_its_gradient_the_timed_run_computes() {
        let device = losskit_core::devices::default_device().expect("a CPU device");
        let case = loss_case("dice_256x10").expect("a loss case");
        let mut rng = Rng::new(5);
        let output = HostArray {
            shape: vec![256, 10],
            values: HostValues::Float((0..2560).map(|_| rng.normal()).collect()),
        };
        let target = HostArray {
            shape: vec![256],
            values: HostValues::Int((0..256).map(|_| rng.below(10) as i64).collect()),
        };
        let (value, gradient) = check_loss_case(case, &output, &target, &device).unwrap();
        assert_eq!(gradient.len(), 2560);
        // The timed run returns the loss plus the first gradient element.
        let mut run = loss_runner_on(case, &output, &target, &device).unwrap();
        let timed = run();
        assert!(
            (timed - (value + gradient[0])).abs() < 1e-5,
            "{timed} vs {value} + {}",
            gradient[0]
        );
        let wrong = HostArray {
            shape: vec![2560],
            values: output.values.clone(),
        };
        let error = loss_runner_on(case, &wrong, &target, &device)
            .err()
            .expect("a wrong shape is refused");
        assert!(
            error.contains("the output has shape [2560], the case [256, 10]"),
            "{error}"
        );
    }
}
