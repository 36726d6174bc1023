//! `losskit eval`: a loss's value (and gradient) on `.npy` files.

use std::path::Path;

use anyhow::{Context, Result};
use losskit_core::{Reduction, Registry, evaluate::evaluate};
use serde_json::{Value, json};

use crate::{
    commands::device_from_flag,
    npy::{encode_f32, read_npy, write_atomically},
};

/// What `eval` was asked to do.
#[derive(Debug, Clone)]
pub struct EvalRequest<'a> {
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
}

/// Evaluates the loss; returns the JSON line to print. Nothing is written unless the whole
/// evaluation succeeds.
pub fn run(request: &EvalRequest<'_>) -> Result<String> {
    let loss = Registry::global()?.build_spec(request.loss)?;
    let output = read_npy(request.output)?;
    let target = read_npy(request.target)?;
    let device = device_from_flag(request.device)?;
    let evaluation = evaluate(
        loss.as_ref(),
        &output,
        &target,
        &device,
        request.reduction,
        request.grad.is_some(),
    )?;
    if let Some(bad) = evaluation.value.iter().find(|v| !v.is_finite()) {
        anyhow::bail!("the loss is {bad} on these inputs; nothing written");
    }
    if evaluation.gradient.iter().flatten().any(|g| !g.is_finite()) {
        anyhow::bail!("the loss's gradient is not finite on these inputs; nothing written");
    }
    if let (Some(path), Some(gradient)) = (request.grad, &evaluation.gradient) {
        let values: Vec<f32> = gradient.iter().map(|v| *v as f32).collect();
        write_atomically(path, &encode_f32(&output.shape, &values))
            .with_context(|| format!("cannot write gradient to {}", path.display()))?;
    }
    let mut line = serde_json::Map::new();
    line.insert(
        "loss".into(),
        number_or_list(&evaluation.value, request.reduction),
    );
    if !evaluation.terms.is_empty() {
        let terms = evaluation
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
