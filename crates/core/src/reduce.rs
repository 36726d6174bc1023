//! Reductions shared by the losses, so that `mean`, `sum` and `none` mean the same everywhere.
//!
//! `sum` adds every element; `none` gives each sample's share of that sum (shape `[N]`);
//! `mean` divides the sum by the number of elements, or by the total weight for weighted
//! losses. A total weight of zero (every target ignored) gives 0 with a zero gradient, not
//! PyTorch's NaN.

use burn::tensor::Tensor;

use crate::input::Reduction;

/// The smallest total weight a weighted mean divides by.
pub const MIN_TOTAL_WEIGHT: f64 = 1e-12;

/// Reduces element values `[N, C, S]`.
pub fn reduce_elements(values: Tensor<3>, reduction: Reduction) -> Tensor<1> {
    match reduction {
        Reduction::Mean => values.mean(),
        Reduction::Sum => values.sum(),
        Reduction::None => {
            let [n, c, s] = values.dims();
            values.reshape([n, c * s]).sum_dim(1).reshape([n])
        }
    }
}

/// Reduces position values `[N, S]`.
pub fn reduce_positions(values: Tensor<2>, reduction: Reduction) -> Tensor<1> {
    match reduction {
        Reduction::Mean => values.mean(),
        Reduction::Sum => values.sum(),
        Reduction::None => {
            let [n, _] = values.dims();
            values.sum_dim(1).reshape([n])
        }
    }
}

/// Reduces weighted position values `[N, S]` (already multiplied by their weights): `mean`
/// divides by the total weight.
pub fn reduce_weighted(values: Tensor<2>, weights: Tensor<2>, reduction: Reduction) -> Tensor<1> {
    match reduction {
        Reduction::Mean => values.sum() / weights.sum().clamp_min(MIN_TOTAL_WEIGHT),
        other => reduce_positions(values, other),
    }
}

/// Reduces position values `[N, S]`, weighted by `weights` when there are any.
pub fn reduce_maybe_weighted(
    values: Tensor<2>,
    weights: Option<Tensor<2>>,
    reduction: Reduction,
) -> Tensor<1> {
    match weights {
        Some(weights) => reduce_weighted(values, weights, reduction),
        None => reduce_positions(values, reduction),
    }
}

/// Reduces per-sample values `[N]` (losses defined per sample, such as Dice).
pub fn reduce_samples(values: Tensor<1>, reduction: Reduction) -> Tensor<1> {
    match reduction {
        Reduction::Mean => values.mean(),
        Reduction::Sum => values.sum(),
        Reduction::None => values,
    }
}
