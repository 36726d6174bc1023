//! # losskit-core
//!
//! The pieces every loss shares: the object-safe [`Loss`] trait, the inputs it takes
//! ([`LossInput`], [`Target`], [`Reduction`]), typed errors, the self-registering
//! [registry](registry) of losses built by name from a serde config, device selection by
//! name ([`devices`]), the [`conformance`] kit that checks any loss is numerically sound, and
//! [`fused`] kernels for the heaviest loss bodies (softmax cross-entropy, soft-Dice sums, squared
//! error).
//!
//! A loss crate registers a loss with one item-level line:
//!
//! ```text
//! losskit_core::register_loss!(MyLoss {
//!     name: "my_loss",
//!     aliases: [],
//!     category: Classification,
//!     summary: "What it computes, in one line.",
//!     config: MyLossConfig,
//! });
//! ```
#![warn(missing_docs)]

#[doc(hidden)]
pub extern crate inventory;

pub use burn;
pub use serde_json;

pub mod atomic_write;
pub mod compute;
pub mod config;
pub mod conformance;
pub mod devices;
pub mod distance;
pub mod empty;
pub mod error;
pub mod fused;
pub mod input;
pub mod loss;
pub mod macros;
pub mod numerics;
pub mod reduce;
pub mod registry;
pub mod rng;
pub mod spec;
pub mod targets;

pub use config::LossConfig;
pub use error::{ConfigError, Error, InputError};
pub use input::{LossInput, Reduction, Target};
pub use loss::{
    AuxiliaryInput, Capabilities, Loss, LossValue, MeanCount, OutputDomain, TargetKind,
    TrainingProgress,
};
pub use registry::{Category, LossRegistration, Registry};
pub use rng::Rng;
