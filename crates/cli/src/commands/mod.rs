//! One module per `losskit` command.

pub mod compare;
pub mod devices;
pub mod eval;
pub mod evaluate;
pub mod info;
pub mod list;
pub mod new_loss;
pub mod serve;
pub mod train;
pub mod train_args;

use anyhow::Result;
use burn::tensor::Device;

/// The device named by `--device`, or the default CPU device.
pub fn device_from_flag(name: Option<&str>) -> Result<Device> {
    Ok(losskit_core::devices::parse_device(name.unwrap_or("cpu"))?)
}
