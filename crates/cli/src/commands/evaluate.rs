//! `losskit evaluate`: a trained checkpoint's loss and metrics on its validation data (or on
//! other data of the same kind).

use std::path::Path;

use anyhow::{Context, Result, bail};
use losskit_optim::{Checkpoint, Split, Task, TaskKind, checkpoint::resolve, train::{evaluate_split, load_model}};
use serde_json::{Value, json};

use crate::{
    commands::{device_from_flag, train::RunSpec},
    examples::{
        ClassificationTask, SegmentationTask,
        data::DataSource,
        models::{CnnConfig, UNetConfig},
    },
};

fn evaluate_task<T: Task>(task: &T, checkpoint: &Checkpoint, spec: &RunSpec, device: &burn::tensor::Device) -> Result<Value> {
    let loss = spec.build_loss()?;
    let model = load_model(task, checkpoint, device)?;
    let evaluation = evaluate_split(task, &model, loss.as_ref(), Split::Valid, spec.batch_size, device)?;
    let (val_loss, terms, metrics) = (evaluation.loss, evaluation.terms, evaluation.metrics);
    let recall: serde_json::Map<String, Value> = task
        .classes()
        .into_iter()
        .zip(&metrics.recall)
        .map(|(name, r)| (name, if r.is_finite() { json!(r) } else { Value::Null }))
        .collect();
    let mut out = json!({
        "epoch": checkpoint.meta.epoch,
        "samples": task.len(Split::Valid),
        "val_loss": val_loss,
        "val_accuracy": metrics.accuracy,
        "val_recall": recall,
    });
    if !terms.is_empty() {
        out["val_terms"] = Value::Object(terms.into_iter().map(|(n, v)| (n, json!(v))).collect());
    }
    if task.kind() == TaskKind::Segmentation {
        out["val_dice"] = json!(metrics.dice);
        out["val_iou"] = json!(metrics.iou);
    }
    Ok(out)
}

/// Evaluates the checkpoint at `path` (a file or a run folder); prints JSON.
pub fn run(path: &Path, data: Option<&Path>, device: Option<&str>) -> Result<String> {
    let checkpoint = Checkpoint::read(path)?;
    let spec: RunSpec = serde_json::from_value(checkpoint.meta.run.clone())
        .with_context(|| format!("{}: the run description is not readable", resolve(path).display()))?;
    let device = device_from_flag(device)?;
    let source = match data {
        Some(path) => DataSource::from_flag(spec.task, Some(path), spec.seed, 1.0, None)?,
        None => spec.data.clone(),
    };
    let dataset = source.load()?;
    if dataset.classes.len() != spec.classes.len() || dataset.train.channels != spec.channels {
        bail!(
            "the data has {} classes and {} channels; the model was trained on {} classes and {} channels",
            dataset.classes.len(),
            dataset.train.channels,
            spec.classes.len(),
            spec.channels
        );
    }
    let result = match spec.task {
        TaskKind::Classification => {
            let task = ClassificationTask {
                model: CnnConfig { channels: spec.channels, classes: spec.classes.len(), width: spec.width },
                data: dataset,
            };
            evaluate_task(&task, &checkpoint, &spec, &device)?
        }
        TaskKind::Segmentation => {
            let task = SegmentationTask {
                model: UNetConfig { channels: spec.channels, classes: spec.classes.len(), width: spec.width },
                data: dataset,
            };
            evaluate_task(&task, &checkpoint, &spec, &device)?
        }
    };
    Ok(serde_json::to_string_pretty(&result)?)
}
