//! Computing a loss on host arrays: the value and, optionally, d(loss)/d(output) (what
//! `losskit compute`, the conformance kit and the reference tests run).

use burn::tensor::Device;

use crate::{
    error::Error,
    input::{HostArray, LossInput, Reduction, to_f64_vec},
    loss::Loss,
};

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
    let device = if gradient {
        device.clone().autodiff()
    } else {
        device.clone()
    };
    let input = LossInput::from_host(output, target, &device)?;
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
