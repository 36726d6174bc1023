//! `losskit devices`: the backends compiled in, and what a `--device` name resolves to.

use anyhow::Result;
use losskit_core::devices::{compiled_backends, default_cpu_backend, describe};

/// Lists the compiled-in backends and describes each name in `names` (default: `cpu`); a
/// `wgpu` name initialises its adapter and prints it.
pub fn run(names: &[String]) -> Result<String> {
    let mut out = format!(
        "compiled in: {} (default CPU backend: {})\n",
        compiled_backends().join(", "),
        default_cpu_backend().unwrap_or("none")
    );
    let defaults = ["cpu".to_string()];
    let names = if names.is_empty() {
        &defaults[..]
    } else {
        names
    };
    for name in names {
        out.push_str(&describe(name)?);
        out.push('\n');
    }
    Ok(out)
}
