//! `losskit compute` (formerly `eval`): a loss's value (and gradient) on `.npy` files.

use std::path::Path;

use anyhow::{Context, Result};
use losskit_core::{
    Reduction, Registry, TrainingProgress,
    atomic_write::write_atomically,
    compute::{Extras, compute_loss_with},
};
use serde_json::{Value, json};

use crate::{
    commands::device_from_flag,
    npy::{encode_f32, read_npy},
};

/// What `compute` was asked to do.
#[derive(Debug, Clone)]
pub struct ComputeRequest<'a> {
    /// The loss spec: a name, a JSON object or a `.json`/`.toml` file.
    pub loss: &'a str,
    /// The model output `.npy`.
    pub output: &'a Path,
    /// The target `.npy`.
    pub target: &'a Path,
    /// How to reduce.
    pub reduction: Reduction,
    /// Where to write d(loss)/d(output), if anywhere.
    pub grad: Option<&'a Path>,
    /// The device name (`None`: the default CPU device).
    pub device: Option<&'a str>,
    /// Auxiliary inputs, each `NAME=FILE.npy`.
    pub auxiliary: &'a [String],
    /// The training progress scheduled losses read.
    pub progress: Option<TrainingProgress>,
}

/// Computes the loss; returns the JSON line to print. Nothing is written unless the whole
/// computation succeeds.
pub fn run(request: &ComputeRequest<'_>) -> Result<String> {
    let loss = Registry::global()?.build_spec(request.loss)?;
    let output = read_npy(request.output)?;
    let target = read_npy(request.target)?;
    let mut extras = Extras {
        auxiliary: Vec::new(),
        progress: request.progress,
    };
    for spec in request.auxiliary {
        let Some((name, file)) = spec
            .split_once('=')
            .filter(|(n, f)| !n.is_empty() && !f.is_empty())
        else {
            anyhow::bail!(
                "--auxiliary `{spec}`: expected NAME=FILE.npy, e.g. signed_distance_maps=maps.npy"
            );
        };
        let array = read_npy(Path::new(file)).with_context(|| format!("--auxiliary {name}"))?;
        extras.auxiliary.push((name.to_string(), array));
    }
    let device = device_from_flag(request.device)?;
    let computed = compute_loss_with(
        loss.as_ref(),
        &output,
        &target,
        &extras,
        &device,
        request.reduction,
        request.grad.is_some(),
    )?;
    if let Some(bad) = computed.value.iter().find(|v| !v.is_finite()) {
        anyhow::bail!("the loss is {bad} on these inputs; nothing written");
    }
    if computed.gradient.iter().flatten().any(|g| !g.is_finite()) {
        anyhow::bail!("the loss's gradient is not finite on these inputs; nothing written");
    }
    if let (Some(path), Some(gradient)) = (request.grad, &computed.gradient) {
        let values: Vec<f32> = gradient.iter().map(|v| *v as f32).collect();
        write_atomically(path, &encode_f32(&output.shape, &values)).context("--grad")?;
    }
    let mut line = serde_json::Map::new();
    line.insert(
        "loss".into(),
        number_or_list(&computed.value, request.reduction),
    );
    if !computed.terms.is_empty() {
        let terms = computed
            .terms
            .iter()
            .map(|(name, values)| (name.clone(), number_or_list(values, request.reduction)))
            .collect();
        line.insert("terms".into(), Value::Object(terms));
    }
    Ok(serde_json::to_string(&Value::Object(line))?)
}

fn number_or_list(values: &[f64], reduction: Reduction) -> Value {
    match reduction {
        Reduction::None => json!(values),
        _ => json!(values.first().copied().unwrap_or(f64::NAN)),
    }
}
