//! Computing a loss on host arrays: the value and, optionally, d(loss)/d(output) (what
//! `losskit compute`, the conformance kit and the reference tests run).

use burn::tensor::{Device, Tensor, TensorData};

use crate::{
    error::{Error, InputError},
    input::{HostArray, HostValues, LossInput, Reduction, to_f64_vec},
    loss::{Loss, TrainingProgress},
};

/// What a loss may read besides the output and the target.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// Auxiliary inputs by name (see [`Loss::auxiliary_inputs`]), each of the output's shape.
    pub auxiliary: Vec<(String, HostArray)>,
    /// How far training has come, for losses that schedule on it.
    pub progress: Option<TrainingProgress>,
}

/// A loss computed on host arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputedLoss {
    /// The loss: one value for `mean`/`sum`, one per sample for `none`.
    pub value: Vec<f64>,
    /// Each term of a composite loss.
    pub terms: Vec<(String, Vec<f64>)>,
    /// d(loss)/d(output) (for `none`, of the sum of the values), in the output's row-major
    /// order; present when asked for.
    pub gradient: Option<Vec<f64>>,
}

/// Computes `loss` on `output` and `target` on `device`, with the gradient if `gradient`.
pub fn compute_loss(
    loss: &dyn Loss,
    output: &HostArray,
    target: &HostArray,
    device: &Device,
    reduction: Reduction,
    gradient: bool,
) -> Result<ComputedLoss, Error> {
    compute_loss_with(
        loss,
        output,
        target,
        &Extras::default(),
        device,
        reduction,
        gradient,
    )
}

/// [`compute_loss`] with auxiliary inputs and training progress. An auxiliary input the loss
/// does not read is an error, so that a misspelt name is not silently ignored.
pub fn compute_loss_with(
    loss: &dyn Loss,
    output: &HostArray,
    target: &HostArray,
    extras: &Extras,
    device: &Device,
    reduction: Reduction,
    gradient: bool,
) -> Result<ComputedLoss, Error> {
    let device = if gradient {
        device.clone().autodiff()
    } else {
        device.clone()
    };
    let mut input = LossInput::from_host(output, target, &device)?;
    let reads = loss.auxiliary_inputs();
    for (name, array) in &extras.auxiliary {
        if !reads.iter().any(|aux| aux.name == name.as_str()) {
            let names: Vec<&str> = reads.iter().map(|aux| aux.name).collect();
            return Err(InputError::Unsupported {
                loss: "input".into(),
                problem: format!(
                    "the loss reads no auxiliary input `{name}`; it reads {}",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            }
            .into());
        }
        input =
            input.with_auxiliary(name, auxiliary_tensor(name, array, &output.shape, &device)?)?;
    }
    if let Some(progress) = extras.progress {
        input = input.with_progress(progress);
    }
    let leaf = gradient.then(|| input.output().clone().require_grad());
    let input = match &leaf {
        Some(leaf) => input.with_output(leaf.clone()),
        None => input,
    };
    let result = loss.forward(input, reduction)?;
    let gradient = match &leaf {
        Some(leaf) => {
            let grads = result.value.clone().sum().backward();
            Some(match leaf.grad(&grads) {
                Some(grad) => to_f64_vec(grad),
                // The loss does not depend on the output.
                None => vec![0.0; output.values.len()],
            })
        }
        None => None,
    };
    Ok(ComputedLoss {
        value: to_f64_vec(result.value),
        terms: result
            .terms
            .into_iter()
            .map(|(name, term)| (name, to_f64_vec(term)))
            .collect(),
        gradient,
    })
}

/// An auxiliary input's host array as a canonical `[N, C, S]` float tensor, checked to have the
/// output's shape.
fn auxiliary_tensor(
    name: &str,
    array: &HostArray,
    output_shape: &[usize],
    device: &Device,
) -> Result<Tensor<3>, Error> {
    let values: Vec<f32> = match &array.values {
        HostValues::Float(values) => values.iter().map(|&v| v as f32).collect(),
        HostValues::Int(values) => values.iter().map(|&v| v as f32).collect(),
    };
    let unsupported = |problem: String| -> Error {
        InputError::Unsupported {
            loss: "input".into(),
            problem,
        }
        .into()
    };
    if values.iter().any(|v| !v.is_finite()) {
        return Err(unsupported(format!(
            "the auxiliary input `{name}` holds a value that is not a finite float32"
        )));
    }
    let shape = &array.shape;
    if shape.as_slice() != output_shape || values.len() != shape.iter().product::<usize>() {
        return Err(unsupported(format!(
            "the auxiliary input `{name}` has shape {shape:?}; expected the output's shape {output_shape:?}"
        )));
    }
    let canonical = [shape[0], shape[1], shape[2..].iter().product()];
    Ok(Tensor::from_data(
        TensorData::new(values, canonical),
        device,
    ))
}
