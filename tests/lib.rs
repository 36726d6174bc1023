//! Registry-wide tests live in this package's test targets; this library links every crate
//! that registers losses, so that the tests see them all.
#![warn(missing_docs)]

extern crate losskit_losses;

/// The names every build must register (built-ins and plugins).
pub const EXPECTED_LOSSES: &[&str] = &["cross_entropy", "mse"];
