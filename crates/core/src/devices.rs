//! Devices by name, among the backends compiled in.
//!
//! burn's `Device::default()` prefers GPUs (a software Vulkan driver counts), so losskit never
//! uses it: the default is the default CPU backend, and anything else is asked for by name.

use burn::tensor::Device;

/// A device name that cannot be used in this build.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct DeviceError {
    message: String,
}

/// The backends compiled into this build, default CPU backend first.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut backends = Vec::new();
    if cfg!(feature = "flex") {
        backends.push("flex");
    }
    if cfg!(feature = "ndarray") {
        backends.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        backends.push("wgpu");
    }
    if cfg!(feature = "remote") {
        backends.push("remote");
    }
    backends
}

/// The name of the default CPU backend (`flex` when compiled in: measured faster than ndarray).
pub fn default_cpu_backend() -> Option<&'static str> {
    compiled_backends()
        .into_iter()
        .find(|name| *name == "flex" || *name == "ndarray")
}

/// The default device: the default CPU backend.
pub fn default_device() -> Result<Device, DeviceError> {
    parse_device("cpu")
}

/// Every CPU device compiled in (for cross-device checks).
pub fn cpu_devices() -> Vec<(&'static str, Device)> {
    compiled_backends()
        .into_iter()
        .filter(|name| *name == "flex" || *name == "ndarray")
        .filter_map(|name| parse_device(name).ok().map(|device| (name, device)))
        .collect()
}

/// A device from its name: `cpu` (the default CPU backend), `flex`, `ndarray`, `wgpu`
/// (`wgpu`, `wgpu:discrete:N`, `wgpu:integrated:N`, `wgpu:virtual:N`, `wgpu:cpu`), or
/// `remote:ws://HOST:PORT` (a device served by `losskit serve`; the `remote` feature).
pub fn parse_device(name: &str) -> Result<Device, DeviceError> {
    if let Some(url) = name.trim().strip_prefix("remote:") {
        return remote_device(url);
    }
    let compiled = compiled_backends();
    // Unused only when every backend is compiled in.
    #[cfg_attr(
        all(feature = "flex", feature = "ndarray", feature = "wgpu"),
        allow(unused_variables)
    )]
    let missing = |wanted: &str| DeviceError {
        message: format!(
            "device `{wanted}` is not compiled into this build; available: {} (rebuild with `--features {wanted}` to add it)",
            if compiled.is_empty() {
                "none".to_string()
            } else {
                compiled.join(", ")
            }
        ),
    };
    let lowered = name.trim().to_ascii_lowercase();
    let mut parts = lowered.split(':');
    let backend = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    match backend {
        "cpu" if rest.is_empty() => match default_cpu_backend() {
            Some(cpu) => parse_device(cpu),
            None => Err(DeviceError {
                message: format!(
                    "no CPU backend is compiled into this build (available: {}); rebuild with `--features flex`",
                    compiled.join(", ")
                ),
            }),
        },
        "flex" if rest.is_empty() => {
            #[cfg(feature = "flex")]
            return Ok(Device::flex());
            #[cfg(not(feature = "flex"))]
            return Err(missing("flex"));
        }
        "ndarray" if rest.is_empty() => {
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            return Ok(Device::ndarray());
            #[cfg(not(feature = "ndarray"))]
            return Err(missing("ndarray"));
        }
        "wgpu" => {
            #[cfg(feature = "wgpu")]
            return wgpu_device(name, &rest);
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = rest;
                Err(missing("wgpu"))
            }
        }
        _ => Err(DeviceError {
            message: format!(
                "unknown device `{name}`; expected cpu, flex, ndarray, wgpu[:discrete:N|:integrated:N|:virtual:N|:cpu] or remote:ws://HOST:PORT (compiled in: {})",
                compiled.join(", ")
            ),
        }),
    }
}

/// Remote devices connected so far, by URL: a connection is made once per process.
#[cfg(feature = "remote")]
static REMOTE_DEVICES: std::sync::Mutex<Vec<(String, Device)>> = std::sync::Mutex::new(Vec::new());

#[cfg(feature = "remote")]
fn remote_device(url: &str) -> Result<Device, DeviceError> {
    use burn::remote::RemoteHost;
    let url = url.trim();
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return Err(DeviceError {
            message: format!("device `remote:{url}`: expected remote:ws://HOST:PORT"),
        });
    }
    let mut devices = REMOTE_DEVICES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, device)) = devices.iter().find(|(known, _)| known == url) {
        return Ok(device.clone());
    }
    let device = Device::remote_options(&RemoteHost::websocket(url))
        .init()
        .map_err(|error| DeviceError {
            message: format!(
                "cannot connect to the remote device at {url}: {error}; is `losskit serve` running there?"
            ),
        })?;
    devices.push((url.to_string(), device.clone()));
    Ok(device)
}

#[cfg(not(feature = "remote"))]
fn remote_device(url: &str) -> Result<Device, DeviceError> {
    Err(DeviceError {
        message: format!(
            "device `remote:{url}` needs the remote backend, which is not compiled into this build; rebuild with `--features remote`"
        ),
    })
}

#[cfg(feature = "wgpu")]
type WgpuSlot = (String, Result<(Device, String), String>);

/// wgpu devices initialised so far, by adapter kind, with their adapter's description.
#[cfg(feature = "wgpu")]
static WGPU_DEVICES: std::sync::Mutex<Vec<WgpuSlot>> = std::sync::Mutex::new(Vec::new());

#[cfg(feature = "wgpu")]
fn wgpu_kind(name: &str, rest: &[&str]) -> Result<burn::tensor::DeviceKind, DeviceError> {
    use burn::tensor::DeviceKind;
    let index = |text: &str| {
        text.parse::<usize>().map_err(|_| DeviceError {
            message: format!("device `{name}`: `{text}` is not an adapter index"),
        })
    };
    Ok(match rest {
        [] => DeviceKind::DefaultDevice,
        ["cpu"] => DeviceKind::Cpu,
        ["discrete", n] => DeviceKind::DiscreteGpu(index(n)?),
        ["integrated", n] => DeviceKind::IntegratedGpu(index(n)?),
        ["virtual", n] => DeviceKind::VirtualGpu(index(n)?),
        _ => {
            return Err(DeviceError {
                message: format!(
                    "device `{name}`: expected wgpu, wgpu:discrete:N, wgpu:integrated:N, wgpu:virtual:N or wgpu:cpu"
                ),
            });
        }
    })
}

/// Initialises the wgpu device once per adapter kind, so that a machine without a usable
/// adapter gets an error here rather than a panic at the first tensor operation.
#[cfg(feature = "wgpu")]
fn wgpu_init(name: &str, rest: &[&str]) -> Result<(Device, String), DeviceError> {
    let kind = wgpu_kind(name, rest)?;
    let key = format!("{kind:?}");
    let mut devices = WGPU_DEVICES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let result = match devices.iter().find(|(known, _)| *known == key) {
        Some((_, result)) => result.clone(),
        None => {
            let result = Device::wgpu_options()
                .device_kind(kind)
                .init_with_setup()
                .map(|(device, setup)| {
                    let info = setup.adapter.get_info();
                    let mut adapter =
                        format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type);
                    // A software driver (lavapipe, llvmpipe, WARP) is what a machine whose GPU
                    // driver is missing falls back to; it is slower than the CPU backends.
                    if info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu {
                        adapter.push_str(
                            "; a software driver, not a GPU, usually slower than --device cpu (on a machine with a GPU, install its driver with Vulkan support)",
                        );
                    }
                    (device, adapter)
                })
                .map_err(|error| {
                    format!(
                        "device `{name}`: no usable wgpu adapter ({error}); install a GPU driver with Vulkan \
                         support (without a GPU, Debian's `mesa-vulkan-drivers libvulkan1` provide the lavapipe \
                         software driver) or use --device cpu"
                    )
                });
            devices.push((key, result.clone()));
            result
        }
    };
    result.map_err(|message| DeviceError { message })
}

#[cfg(feature = "wgpu")]
fn wgpu_device(name: &str, rest: &[&str]) -> Result<Device, DeviceError> {
    wgpu_init(name, rest).map(|(device, _)| device)
}

/// What a device name resolves to: the backend, and for wgpu the adapter (initialising it).
pub fn describe(name: &str) -> Result<String, DeviceError> {
    let device = parse_device(name)?;
    let lowered = name.trim().to_ascii_lowercase();
    #[cfg(feature = "wgpu")]
    if lowered.starts_with("wgpu") {
        let rest: Vec<&str> = lowered.split(':').skip(1).collect();
        let (_, adapter) = wgpu_init(name, &rest)?;
        return Ok(format!("{name}: wgpu on {adapter}"));
    }
    if lowered.starts_with("remote:") {
        return Ok(format!("{name}: connected (the server's device 0)"));
    }
    let backend = match lowered.as_str() {
        "cpu" => default_cpu_backend().unwrap_or("none"),
        other => other,
    };
    let _ = device;
    Ok(format!("{name}: {backend} (CPU)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_devices_list_the_choices() {
        let error = parse_device("tpu").unwrap_err().to_string();
        assert!(error.contains("unknown device `tpu`"), "{error}");
    }

    #[cfg(not(feature = "remote"))]
    #[test]
    fn a_remote_device_without_the_feature_says_how_to_add_it() {
        let error = parse_device("remote:ws://127.0.0.1:3000")
            .unwrap_err()
            .to_string();
        assert!(error.contains("--features remote"), "{error}");
    }

    #[cfg(not(feature = "wgpu"))]
    #[test]
    fn a_backend_not_compiled_in_says_how_to_add_it() {
        let error = parse_device("wgpu").unwrap_err().to_string();
        assert!(error.contains("--features wgpu"), "{error}");
    }

    #[cfg(feature = "flex")]
    #[test]
    fn cpu_means_flex_when_flex_is_built() {
        assert_eq!(default_cpu_backend(), Some("flex"));
        assert!(parse_device("cpu").is_ok());
    }
}
