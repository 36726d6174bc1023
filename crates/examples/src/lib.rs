//! # losskit-examples
//!
//! What `losskit train` trains when the user brings only a loss: the data (generated
//! microscope images, image folders, mask folders, idx files), the models (a small CNN and a
//! small U-Net), the tasks that join them for the training loop, and run preparation (a
//! request resolved into a [`run::RunSpec`] with its data and device, before anything is
//! written).
#![warn(missing_docs)]

pub mod data;
pub mod models;
pub mod predict;
pub mod run;
pub mod run_config;
pub mod sliding_window;
pub mod tasks;

pub use tasks::{ClassificationTask, SegmentationTask};
