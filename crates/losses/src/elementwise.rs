//! The shared shape of element-wise losses (regression and the like): a dense target of the
//! output's shape, a per-element formula, the common reductions.

use burn::tensor::Tensor;
use losskit_core::{
    Error, LossInput, LossValue, Reduction, Target, error::InputError, reduce::reduce_elements,
};

/// The dense target, or an error naming the loss.
pub(crate) fn dense_only(name: &str, target: Target) -> Result<Tensor<3>, Error> {
    match target {
        Target::Dense(dense) => Ok(dense),
        Target::Indices(_) => Err(InputError::Unsupported {
            loss: name.into(),
            problem: "needs a float target of the output's shape, got class indices".into(),
        }
        .into()),
    }
}

/// Applies `per_element(output, target)` and reduces.
pub(crate) fn forward_elementwise(
    name: &str,
    input: LossInput,
    reduction: Reduction,
    per_element: impl FnOnce(Tensor<3>, Tensor<3>) -> Tensor<3>,
) -> Result<LossValue, Error> {
    let (output, target) = input.into_parts();
    let target = dense_only(name, target)?;
    Ok(reduce_elements(per_element(output, target), reduction).into())
}
