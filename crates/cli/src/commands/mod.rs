//! One module per `losskit` command.

pub mod compare;
pub mod compute;
pub mod dashboard;
pub mod devices;
pub mod evaluate;
pub mod info;
pub mod list;
pub mod new_loss;
pub mod predict;
pub mod serve;
pub mod train;
pub mod train_args;

pub use losskit_examples::run::device_from_flag;
