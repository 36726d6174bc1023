//! # losskit-cli
//!
//! The `losskit` program's commands, as a library so that tests and fuzz targets can call them.
#![warn(missing_docs)]

// Linked for their registrations: nothing else references these crates.
extern crate losskit_losses;

pub mod commands;
pub mod diagnostics;
pub mod npy;
pub mod panics;
pub mod plugins;
pub mod signals;
