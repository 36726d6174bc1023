//! Small helpers for the same-file unit tests.

use burn::tensor::{Device, Int, Tensor, TensorData};
use losskit_core::{Loss, LossInput, Reduction, input::to_f64_vec};

/// The default CPU device, with autodiff.
pub fn device() -> Device {
    losskit_core::devices::default_device()
        .expect("a CPU backend is compiled in")
        .autodiff()
}

/// A float tensor of `shape` from row-major values.
pub fn floats<const D: usize>(values: &[f32], shape: [usize; D]) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), &device())
}

/// An int tensor of `shape` from row-major values.
pub fn ints<const D: usize>(values: &[i64], shape: [usize; D]) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), &device())
}

/// The segmentation example of the tests: logits `[2, 3, 2]` (two samples, three classes, two
/// positions) with class indices `[[2, 0], [1, 1]]`.
pub fn segmentation_example() -> LossInput {
    let values = [
        0.3, -1.0, 2.0, 0.5, 0.1, -0.2, 1.1, 0.0, -0.7, 0.4, 0.9, -1.3,
    ];
    LossInput::with_indices(floats(&values, [2, 3, 2]), ints(&[2, 0, 1, 1], [2, 2])).unwrap()
}

/// The loss value(s) as `f64`.
pub fn value(loss: &dyn Loss, input: LossInput, reduction: Reduction) -> Vec<f64> {
    to_f64_vec(loss.forward(input, reduction).expect("loss computes").value)
}

/// The loss value (mean) and d(loss)/d(output), for an output tensor built with `floats`.
pub fn value_and_grad<const D: usize>(
    loss: &dyn Loss,
    output: Tensor<D>,
    make_input: impl FnOnce(Tensor<D>) -> LossInput,
) -> (f64, Vec<f64>) {
    let output = output.require_grad();
    let value = loss
        .forward(make_input(output.clone()), Reduction::Mean)
        .expect("loss computes")
        .value;
    let grads = value.backward();
    let grad = output.grad(&grads).expect("output has a gradient");
    (to_f64_vec(value)[0], to_f64_vec(grad))
}

/// Asserts the loss's value (mean) and its gradient are finite.
pub fn assert_finite<const D: usize>(
    loss: &dyn Loss,
    output: Tensor<D>,
    make_input: impl FnOnce(Tensor<D>) -> LossInput,
) {
    let (value, grad) = value_and_grad(loss, output, make_input);
    assert!(
        value.is_finite() && grad.iter().all(|g| g.is_finite()),
        "value {value}, gradient {grad:?}"
    );
}

/// Asserts two float slices agree within `tolerance` (absolute + relative).
pub fn assert_close(actual: &[f64], expected: &[f64], tolerance: f64) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "lengths differ: {actual:?} vs {expected:?}"
    );
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tolerance * (1.0 + e.abs()),
            "element {i}: {a} vs expected {e} (all: {actual:?} vs {expected:?})"
        );
    }
}

/// Builds a registered loss by JSON config.
pub fn build(config: &str) -> Box<dyn Loss> {
    losskit_core::Registry::global()
        .expect("registry builds")
        .build_spec(config)
        .expect("config builds")
}

/// The error message of building `config`.
pub fn build_error(config: &str) -> String {
    losskit_core::Registry::global()
        .expect("registry builds")
        .build_spec(config)
        .expect_err("config must be rejected")
        .to_string()
}
