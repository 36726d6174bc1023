//! `losskit evaluate`: a trained checkpoint's loss and metrics on its validation data (or on
//! other data of the same kind).

use std::path::Path;

use anyhow::{Context, Result, bail};
use losskit_optim::{
    Checkpoint, Split, Task, TaskKind,
    checkpoint::resolve,
    train::{evaluate_split, load_model},
};
use serde_json::{Value, json};

use losskit_examples::{
    data::{DataSource, Dataset, FolderReading, TableReading},
    run::{RunSpec, TaskRun, device_from_flag, with_task},
};

struct Evaluating<'a> {
    checkpoint: &'a Checkpoint,
    spec: &'a RunSpec,
    device: &'a burn::tensor::Device,
}

impl TaskRun for Evaluating<'_> {
    type Output = Value;

    fn run<T: Task>(self, task: &T) -> Result<Value> {
        evaluate_task(task, self.checkpoint, self.spec, self.device)
    }
}

fn evaluate_task<T: Task>(
    task: &T,
    checkpoint: &Checkpoint,
    spec: &RunSpec,
    device: &burn::tensor::Device,
) -> Result<Value> {
    let loss = spec.build_loss()?;
    let model = load_model(task, checkpoint, device)?;
    let evaluation = evaluate_split(
        task,
        &model,
        loss.as_ref(),
        Split::Valid,
        spec.batch_size,
        // The loss as the checkpoint's last epoch trained it (its schedule's weights then).
        losskit_core::TrainingProgress {
            epoch: checkpoint.meta.epoch.max(1),
            step: 0,
        },
        device,
    )?;
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
    });
    if task.kind() != TaskKind::Regression {
        out["val_accuracy"] = json!(metrics.accuracy);
        out["val_recall"] = Value::Object(recall);
    }
    for (name, value) in metrics.headline(task.kind()) {
        out[name] = if value.is_finite() {
            json!(value)
        } else {
            Value::Null
        };
    }
    if task.kind() == TaskKind::Regression {
        out["val_coverage"] = json!(metrics.coverage);
    }
    if !terms.is_empty() {
        out["val_terms"] = Value::Object(terms.into_iter().map(|(n, v)| (n, json!(v))).collect());
    }
    if task.kind() == TaskKind::Segmentation {
        out["val_dice"] = json!(metrics.dice);
        out["val_iou"] = json!(metrics.iou);
        let per_class = |values: &[f64]| -> Value {
            Value::Object(
                task.classes()
                    .into_iter()
                    .zip(values)
                    .map(|(name, v)| (name, if v.is_finite() { json!(v) } else { Value::Null }))
                    .collect(),
            )
        };
        out["val_class_dice"] = per_class(&metrics.class_dice);
        out["val_class_iou"] = per_class(&metrics.class_iou);
    }
    Ok(out)
}

/// Evaluates the checkpoint at `path` (a file or a run folder); prints JSON.
pub fn run(path: &Path, data: Option<&Path>, device: Option<&str>) -> Result<String> {
    let checkpoint = Checkpoint::read(path)?;
    let spec: RunSpec = serde_json::from_value(checkpoint.meta.run.clone()).with_context(|| {
        format!(
            "{}: the run description is not readable",
            resolve(path).display()
        )
    })?;
    let device = device_from_flag(device)?;
    let source = match data {
        Some(path) => {
            let reading = match &spec.data {
                DataSource::MaskFolder { reading, .. } => *reading,
                _ => FolderReading::default(),
            };
            let (size, target, table) = match &spec.data {
                DataSource::Table {
                    target,
                    size,
                    reading,
                    ..
                } => (*size, Some(target.as_str()), reading.clone()),
                _ => (Some(spec.data.input_size()), None, TableReading::default()),
            };
            DataSource::from_flag(
                spec.task,
                Some(path),
                spec.seed,
                1.0,
                None,
                reading,
                size,
                target,
                &table,
            )?
        }
        None => spec.data.clone(),
    };
    let mut dataset = source.load()?;
    if dataset.classes().len() != spec.classes.len() || dataset.channels() != spec.channels {
        bail!(
            "the data has {} classes and {} channels; the model was trained on {} classes and {} channels",
            dataset.classes().len(),
            dataset.channels(),
            spec.classes.len(),
            spec.channels
        );
    }
    if dataset.classes() != spec.classes {
        // The same classes in another order (an image folder lists them alphabetically) are
        // mapped to the model's order; other classes are refused.
        let Dataset::Classification(images) = &mut dataset else {
            bail!(
                "the data's classes ({}) are not the model's ({})",
                dataset.classes().join(", "),
                spec.classes.join(", ")
            );
        };
        let mapping: Option<Vec<i64>> = images
            .classes
            .iter()
            .map(|name| {
                spec.classes
                    .iter()
                    .position(|c| c == name)
                    .map(|i| i as i64)
            })
            .collect();
        let Some(mapping) = mapping else {
            bail!(
                "the data's classes ({}) are not the model's ({})",
                images.classes.join(", "),
                spec.classes.join(", ")
            );
        };
        for label in images
            .train
            .labels
            .iter_mut()
            .chain(images.valid.labels.iter_mut())
        {
            if let Some(&mapped) = usize::try_from(*label).ok().and_then(|l| mapping.get(l)) {
                *label = mapped;
            }
        }
        images.classes = spec.classes.clone();
    }
    if data.is_some() {
        // Other data is scored whole, not just the part a training run would hold out.
        dataset = dataset.all_for_validation();
    }
    let result = with_task(
        &spec,
        dataset,
        Evaluating {
            checkpoint: &checkpoint,
            spec: &spec,
            device: &device,
        },
    )?;
    Ok(serde_json::to_string_pretty(&result)?)
}
