//! One module per `losskit` command.

pub mod eval;
pub mod info;
pub mod list;

use anyhow::Result;
use burn::tensor::Device;

/// The device named by `--device`, or the default CPU device.
pub fn device_from_flag(name: Option<&str>) -> Result<Device> {
    Ok(losskit_core::devices::parse_device(name.unwrap_or("cpu"))?)
}
