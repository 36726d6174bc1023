//! The plugin crates under `plugins/` that `losskit` links, with the losses each registers.
//!
//! Naming each crate here is what keeps it linked: `inventory` registrations of a crate that
//! nothing references are dropped by the linker. `losskit new-loss` adds a line above the
//! marker; the registry-wide tests check every listed name is registered.

/// `(crate, loss names)` for every linked plugin.
pub const PLUGIN_LOSSES: &[(&str, &[&str])] = &[
    ("asymmetric_loss", asymmetric_loss::LOSS_NAMES),
    ("class_balanced_loss", class_balanced_loss::LOSS_NAMES),
    // losskit new-loss adds plugins above this line.
];
