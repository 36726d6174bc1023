//! Numerically safe building blocks for losses.

use std::fmt;

use burn::tensor::Tensor;

use crate::config::{OptionError, ensure};

/// The floor `floored_pow` raises instead of 0.
pub const POW_FLOOR: f64 = 1e-12;

/// The largest focusing exponent (a focal-style γ) a loss accepts, see [`check_exponent`].
/// Published settings stay below 10 (focal loss 2, ASL's γ- 4); beyond a few hundred,
/// `(1 - p)^γ` is 0 in float32 for every `p` that is not almost exactly 0.
pub const MAX_EXPONENT: f64 = 1000.0;

/// Up to this magnitude [`floored_pow`] uses burn's `powf_scalar`; beyond it, `exp(γ·ln b)`.
/// burn turns an integral float exponent into an `i64` and panics where it does not fit (from
/// about 9.2e18; every float32 from 2^24 up is integral), and its gradient raises to `γ - 1`
/// the same way. 2^31 keeps both far inside `i64`.
const POWF_SCALAR_LIMIT: f64 = 2_147_483_648.0;

/// `max(base, 1e-12)^exponent`: the focal-style factor `(1 - p)^γ`, finite with a finite
/// gradient where `base` reaches 0 (for γ < 1 the true gradient there is infinite).
///
/// Every power of a tensor by an option's value goes through here: it never panics, whatever
/// the exponent (a huge one gives 0 below 1 and 1 at 1, as the power does; NaN gives NaN).
pub fn floored_pow<const D: usize>(base: Tensor<D>, exponent: f64) -> Tensor<D> {
    let base = base.clamp_min(POW_FLOOR);
    if exponent.abs() <= POWF_SCALAR_LIMIT {
        base.powf_scalar(exponent)
    } else {
        // The same power for base > 0, with no integer conversion of the exponent anywhere
        // (nor in its gradient); clamped so that the float32 scalar stays finite.
        let exponent = exponent.clamp(-f64::from(f32::MAX), f64::from(f32::MAX));
        (base.log() * exponent).exp()
    }
}

/// Checks a focusing exponent option (γ of the focal-style losses): a number in
/// `[0, MAX_EXPONENT]`.
pub fn check_exponent<T: Exponent>(option: &str, value: T) -> Result<(), OptionError> {
    check_exponent_in(option, value, true)
}

/// Checks a focusing exponent option that must not be 0: a number in `(0, MAX_EXPONENT]`.
pub fn check_positive_exponent<T: Exponent>(option: &str, value: T) -> Result<(), OptionError> {
    check_exponent_in(option, value, false)
}

/// An option's number type (`f32` or `f64`), shown as the user wrote it in errors.
pub trait Exponent: Into<f64> + Copy + fmt::Display + fmt::LowerExp {}

impl<T: Into<f64> + Copy + fmt::Display + fmt::LowerExp> Exponent for T {}

fn check_exponent_in<T: Exponent>(option: &str, value: T, zero: bool) -> Result<(), OptionError> {
    let number: f64 = value.into();
    let above_zero = if zero { number >= 0.0 } else { number > 0.0 };
    ensure(above_zero && number <= MAX_EXPONENT, option, || {
        // Large values read better in exponent form (4.3e37, not 38 digits).
        let shown = if number.abs() >= 1e6 {
            format!("{value:e}")
        } else {
            value.to_string()
        };
        let open = if zero { '[' } else { '(' };
        format!("must be a number in {open}0, {MAX_EXPONENT}], got {shown}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Value and gradient of `Σ floored_pow(base, exponent)` (on a CPU backend, when one is
    /// compiled in).
    #[cfg(any(feature = "flex", feature = "ndarray"))]
    fn value_and_grad(base: &[f32], exponent: f64) -> (Vec<f64>, Vec<f64>) {
        use burn::tensor::TensorData;

        use crate::input::to_f64_vec;

        let device = crate::devices::default_device()
            .expect("a CPU backend is compiled in")
            .autodiff();
        let base = Tensor::<1>::from_data(TensorData::new(base.to_vec(), [base.len()]), &device)
            .require_grad();
        let power = floored_pow(base.clone(), exponent);
        let grads = power.clone().sum().backward();
        (
            to_f64_vec(power),
            to_f64_vec(base.grad(&grads).expect("base has a gradient")),
        )
    }

    #[cfg(any(feature = "flex", feature = "ndarray"))]
    #[test]
    fn ordinary_exponents_give_the_power_and_its_gradient() {
        let (value, grad) = value_and_grad(&[0.5, 2.0], 3.0);
        assert_eq!(value, [0.125, 8.0]);
        assert_eq!(grad, [0.75, 12.0]);
        let (value, _) = value_and_grad(&[0.0, 0.25], 0.5);
        assert!((value[0] - 1e-6).abs() < 1e-9 && (value[1] - 0.5).abs() < 1e-7);
    }

    #[cfg(any(feature = "flex", feature = "ndarray"))]
    #[test]
    fn huge_exponents_neither_panic_nor_give_nan() {
        // Integral float exponents beyond i64 made burn's powf_scalar panic (issue 16).
        for exponent in [4.3e37, 1e30, f64::from(f32::MAX), 1e300, 3e9] {
            let (value, grad) = value_and_grad(&[0.0, 0.5, 1.0], exponent);
            assert_eq!(value, [0.0, 0.0, 1.0], "exponent {exponent}");
            assert!(grad.iter().all(|g| g.is_finite()), "{exponent}: {grad:?}");
        }
        let (value, _) = value_and_grad(&[0.5], f64::NAN);
        assert!(value[0].is_nan());
    }

    #[test]
    fn exponents_are_bounded() {
        assert!(check_exponent("gamma", 2.0f32).is_ok());
        assert!(check_exponent("gamma", 0.0f64).is_ok());
        assert!(check_exponent("gamma", MAX_EXPONENT).is_ok());
        let error = check_exponent("gamma_neg", 4.3e37f32).unwrap_err();
        assert_eq!(error.option, "gamma_neg");
        assert_eq!(error.problem, "must be a number in [0, 1000], got 4.3e37");
        for bad in [-0.5, f64::NAN, f64::INFINITY, 1000.5] {
            assert!(check_exponent("gamma", bad).is_err(), "{bad}");
        }
        assert!(check_positive_exponent("gamma", 0.5f32).is_ok());
        let error = check_positive_exponent("gamma", 0.0f32).unwrap_err();
        assert_eq!(error.problem, "must be a number in (0, 1000], got 0");
    }
}
