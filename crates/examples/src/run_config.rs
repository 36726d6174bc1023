//! A run's whole configuration in one file: `losskit train --config run.toml`. Its keys are
//! `train`'s flags in snake_case (`batch_size`, `steps_per_epoch`, ...); `loss`, `optimizer`
//! and `schedule` take a name or a table. Flags given with `--config` override the file. Every
//! run folder keeps its resolved `config.toml` (every default filled in), and `train --config
//! RUN/config.toml --out NEW` trains the same run again: same seed, same numbers.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use losskit_core::error::closest;
use losskit_optim::{ScheduleConfig, TaskKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    data::{DataSource, MaskMode, Missing, Normalization, SEG_SIZE, TableReading},
    run::{RunSpec, SegmentationRequest, TrainRequest},
};

/// The file name of the resolved configuration in a run folder.
pub const CONFIG_FILE: &str = "config.toml";

/// A patch size: one side, or height and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PatchSize {
    /// A square patch.
    Side(usize),
    /// `[height, width]`.
    Sides([usize; 2]),
}

/// Everything `train` can be told, each `None` when not said (the file, or the flags).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is the flag of the same name
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imbalance: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<PatchSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_per_epoch: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masks: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreground: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<Missing>,
}

/// The keys a config file may hold.
pub const KEYS: [&str; 30] = [
    "task",
    "data",
    "loss",
    "optimizer",
    "schedule",
    "epochs",
    "batch_size",
    "seed",
    "device",
    "devices",
    "imbalance",
    "limit",
    "width",
    "max_steps",
    "monitor",
    "patience",
    "init_from",
    "size",
    "depth",
    "patch",
    "steps_per_epoch",
    "augment",
    "normalize",
    "masks",
    "pad",
    "target",
    "exclude",
    "missing",
    "foreground",
    "overlap",
];

impl RunConfig {
    /// Reads a TOML config; an unknown key is named with the closest valid one. A relative
    /// `data` or `init_from` path is relative to the file's folder.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--config: cannot read {}", path.display()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|error| {
            anyhow::anyhow!(
                "--config {} is not valid TOML: {}",
                path.display(),
                error.message()
            )
        })?;
        if let Some(key) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
            let hint = closest(key, KEYS)
                .first()
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            bail!(
                "--config {}: unknown key `{key}`{hint} (the keys are train's flags in snake_case: {})",
                path.display(),
                KEYS.join(", ")
            );
        }
        let mut config: RunConfig = table.try_into().map_err(|error: toml::de::Error| {
            anyhow::anyhow!("--config {}: {}", path.display(), error.message())
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        for file in [&mut config.data, &mut config.init_from]
            .into_iter()
            .flatten()
        {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        Ok(config)
    }

    /// `self` with every value `over` sets replacing it (flags over the file).
    pub fn overridden_by(self, over: RunConfig) -> RunConfig {
        macro_rules! pick {
            ($($field:ident),*) => {
                RunConfig { $($field: over.$field.or(self.$field)),* }
            };
        }
        pick!(
            task,
            data,
            loss,
            optimizer,
            schedule,
            epochs,
            batch_size,
            seed,
            device,
            devices,
            imbalance,
            limit,
            width,
            max_steps,
            monitor,
            patience,
            init_from,
            size,
            depth,
            patch,
            steps_per_epoch,
            augment,
            normalize,
            masks,
            pad,
            foreground,
            overlap,
            target,
            exclude,
            missing
        )
    }

    /// The request these settings describe (the task's defaults for what they leave out).
    pub fn request(&self, out: PathBuf) -> Result<TrainRequest> {
        let task = self.task.unwrap_or(TaskKind::Classification);
        let mut request = TrainRequest::new(task, out);
        let spec_text = |value: &Value| -> String {
            match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            }
        };
        request.data = self.data.clone();
        if let Some(loss) = &self.loss {
            request.loss = spec_text(loss);
        }
        let (optimizer, schedule) = crate::run::default_optimizer(task);
        request.optimizer = self
            .optimizer
            .as_ref()
            .map_or_else(|| optimizer.to_string(), spec_text);
        request.schedule = self
            .schedule
            .as_ref()
            .map(spec_text)
            .or_else(|| schedule.map(str::to_string));
        request.epochs = self.epochs;
        request.batch_size = self.batch_size;
        request.seed = self.seed.unwrap_or(request.seed);
        request.device = self.device.clone();
        request.devices = self.devices.clone().unwrap_or_default();
        request.imbalance = self.imbalance.unwrap_or(request.imbalance);
        request.limit = self.limit;
        request.width = self.width;
        request.max_steps = self.max_steps;
        request.monitor = self.monitor.clone();
        request.patience = self.patience;
        request.init_from = self.init_from.clone();
        request.size = self.size;
        request.target = self.target.clone();
        request.table = TableReading {
            exclude: self.exclude.clone().unwrap_or_default(),
            missing: self.missing.unwrap_or_default(),
        };
        request.augment = self.augment;
        request.segmentation = SegmentationRequest {
            depth: self.depth,
            patch: self.patch.map(|p| match p {
                PatchSize::Side(side) => [side, side],
                PatchSize::Sides(sides) => sides,
            }),
            steps_per_epoch: self.steps_per_epoch,
            normalization: self
                .normalize
                .as_deref()
                .map(Normalization::parse)
                .transpose()?,
            masks: self.masks.as_deref().map(MaskMode::parse).transpose()?,
            no_pad: self.pad == Some(false),
            foreground: self.foreground,
            overlap: self.overlap,
        };
        Ok(request)
    }

    /// The full configuration of a prepared run, every default filled in: what `config.toml`
    /// in its folder holds.
    pub fn resolved(spec: &RunSpec, device: Option<&str>, devices: &[String]) -> RunConfig {
        let mut config = RunConfig {
            task: Some(spec.task),
            loss: Some(spec.loss.clone()),
            optimizer: Some(without_nulls(spec.optimizer.to_value())),
            schedule: Some(schedule_spec(&spec.schedule)),
            epochs: Some(spec.epochs),
            batch_size: Some(spec.batch_size),
            seed: Some(spec.seed),
            width: Some(spec.width),
            max_steps: spec.max_steps,
            monitor: spec.monitor.clone(),
            patience: spec.patience,
            init_from: spec.init_from.as_ref().map(|i| i.checkpoint.clone()),
            ..RunConfig::default()
        };
        if devices.is_empty() {
            config.device = Some(device.unwrap_or("cpu").to_string());
        } else {
            config.devices = Some(devices.to_vec());
        }
        let mut generated_images = None;
        match &spec.data {
            DataSource::GeneratedCells {
                train_per_class,
                imbalance,
                ..
            } => {
                config.imbalance = Some(*imbalance);
                // `--limit L` gives ceil(L / 5) per class, so 5 × that gives it back.
                config.limit = (*train_per_class < 500).then_some(train_per_class * 5);
            }
            DataSource::GeneratedMasks { train, .. } => {
                config.limit = (*train < 400).then_some(*train);
                generated_images = Some(*train);
            }
            DataSource::ImageFolder { path, size, .. } => {
                config.data = Some(path.clone());
                config.size = *size;
                config.augment = spec.augment;
            }
            DataSource::Idx { path, limit } => {
                config.data = Some(path.clone());
                config.limit = *limit;
            }
            DataSource::GeneratedCounts { train, .. }
            | DataSource::GeneratedLabels { train, .. } => {
                config.limit = (*train < 1000).then_some(*train);
            }
            DataSource::Table {
                path,
                target,
                size,
                reading,
                ..
            } => {
                config.data = Some(path.clone());
                config.target = Some(target.clone());
                config.exclude = (!reading.exclude.is_empty()).then(|| reading.exclude.clone());
                config.missing = (reading.missing != Missing::Error).then_some(reading.missing);
                config.size = *size;
            }
            DataSource::LabelTable { path, size, .. } => {
                config.data = Some(path.clone());
                config.size = *size;
                config.augment = spec.augment;
            }
            DataSource::MaskFolder { path, reading, .. } => {
                config.data = Some(path.clone());
                config.normalize = Some(normalization_text(reading.normalization));
                config.masks = Some(
                    match reading.masks {
                        MaskMode::Classes => "classes",
                        MaskMode::Instances => "instances",
                    }
                    .into(),
                );
            }
        }
        if let Some(segmentation) = &spec.segmentation {
            let settings = &segmentation.settings;
            config.depth = Some(segmentation.depth);
            config.patch = Some(PatchSize::Sides(settings.patches.size));
            let per_epoch = settings.patches.per_epoch;
            // Generated data's default is one pass over its images, however many steps that is.
            if generated_images != Some(per_epoch) || settings.patches.size != [SEG_SIZE; 2] {
                config.steps_per_epoch = Some(per_epoch / spec.batch_size.max(1));
            }
            config.augment = Some(!settings.augmentation.is_none());
            config.pad = Some(settings.patches.pad);
            config.foreground = Some(settings.patches.foreground);
            config.overlap = Some(settings.window.overlap);
        }
        config
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).context("cannot write the run's config as TOML")
    }
}

fn normalization_text(normalization: Normalization) -> String {
    match normalization {
        Normalization::Percentile { low, high } => format!("percentile:{low},{high}"),
        Normalization::ZScore => "zscore".into(),
        Normalization::None => "none".into(),
    }
}

/// A schedule as the spec that parses back to it.
fn schedule_spec(schedule: &ScheduleConfig) -> Value {
    let mut spec = serde_json::to_value(&schedule.kind).unwrap_or(Value::Null);
    if schedule.warmup_steps > 0
        && let Value::Object(map) = &mut spec
    {
        map.insert("warmup_steps".into(), schedule.warmup_steps.into());
    }
    spec
}

/// TOML has no null: an unset option is left out.
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}
