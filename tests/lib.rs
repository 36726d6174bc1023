//! Registry-wide tests live in this package's test targets. The library links everything the
//! `losskit` binary links (built-ins and every plugin under `plugins/`), so the tests see the
//! same registry as users do.
#![warn(missing_docs)]

// Linked for their registrations.
extern crate losskit_losses;

pub use losskit_cli::plugins::PLUGIN_LOSSES;

/// The built-in losses every build must register.
pub const BUILT_IN_LOSSES: &[&str] = &[
    "binary_cross_entropy",
    "cross_entropy",
    "focal",
    "huber",
    "kl_div",
    "log_cosh",
    "mae",
    "mse",
    "msle",
    "multi_margin",
    "poisson_nll",
    "quadratic",
    "quantile",
    "smooth_l1",
    "weighted_cross_entropy",
];

/// Every name that must be registered: the built-ins and each linked plugin's losses.
pub fn expected_losses() -> Vec<&'static str> {
    let mut names = BUILT_IN_LOSSES.to_vec();
    for (_, plugin_names) in PLUGIN_LOSSES {
        names.extend_from_slice(plugin_names);
    }
    names
}
