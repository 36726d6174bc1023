//! Registry-wide tests live in this package's test targets. The library links everything the
//! `losskit` binary links (built-ins and every plugin under `plugins/`), so the tests see the
//! same registry as users do.
#![warn(missing_docs)]

// Linked for their registrations.
extern crate losskit_losses;

pub use losskit_cli::plugins::PLUGIN_LOSSES;

/// The built-in losses every build must register.
pub const BUILT_IN_LOSSES: &[&str] = &[
    // Classification.
    "binary_cross_entropy",
    "cross_entropy",
    "focal",
    "kl_div",
    "multi_margin",
    "quadratic",
    "weighted_cross_entropy",
    // Regression.
    "huber",
    "log_cosh",
    "mae",
    "mse",
    "msle",
    "poisson_nll",
    "quantile",
    "smooth_l1",
    // Segmentation.
    "boundary",
    "dice",
    "dice_ce",
    "dice_cldice",
    "dice_focal",
    "focal_tversky",
    "generalized_dice",
    "hausdorff_dt",
    "jaccard",
    "lovasz_softmax",
    "soft_cldice",
    "topk_cross_entropy",
    "tversky",
    "unified_focal",
    // Composite.
    "scheduled",
    "weighted_sum",
];

/// Every name that must be registered: the built-ins and each linked plugin's losses.
pub fn expected_losses() -> Vec<&'static str> {
    let mut names = BUILT_IN_LOSSES.to_vec();
    for (_, plugin_names) in PLUGIN_LOSSES {
        names.extend_from_slice(plugin_names);
    }
    names
}
