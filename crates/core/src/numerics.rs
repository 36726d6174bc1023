//! Numerically safe building blocks for losses.

use burn::tensor::Tensor;

/// The floor `floored_pow` raises instead of 0.
pub const POW_FLOOR: f64 = 1e-12;

/// `max(base, 1e-12)^exponent`: the focal-style factor `(1 - p)^γ`, finite with a finite
/// gradient where `base` reaches 0 (for γ < 1 the true gradient there is infinite).
pub fn floored_pow<const D: usize>(base: Tensor<D>, exponent: f64) -> Tensor<D> {
    base.clamp_min(POW_FLOOR).powf_scalar(exponent)
}
