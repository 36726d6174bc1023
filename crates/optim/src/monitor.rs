//! Which epoch is best, and when to stop: the metric a run monitors (`--monitor`), its
//! direction, and the patience of early stopping (`--patience`), as Keras's `EarlyStopping`
//! and `ModelCheckpoint(save_best_only=True)` do.

use serde::{Deserialize, Serialize};

use crate::{error::TrainError, metrics::TaskKind, stats::EpochStats};

/// The file name of a run's best checkpoint, beside the last one.
pub const BEST_FILE: &str = "best.lkc";

/// A per-epoch metric to monitor: losses are minimised, the others maximised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Monitor {
    metric: String,
}

impl Default for Monitor {
    fn default() -> Self {
        Self {
            metric: "val_loss".into(),
        }
    }
}

/// The best epoch so far under a monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// The metric.
    pub metric: String,
    /// The epoch (from 1).
    pub epoch: usize,
    /// Its value then.
    pub value: f64,
}

impl Monitor {
    /// The metrics a task's runs can monitor.
    pub fn metrics(task: TaskKind) -> &'static [&'static str] {
        match task {
            TaskKind::Classification => {
                &["val_loss", "val_accuracy", "train_loss", "train_accuracy"]
            }
            TaskKind::Segmentation => &[
                "val_loss",
                "val_dice",
                "val_iou",
                "val_accuracy",
                "train_loss",
                "train_accuracy",
            ],
            TaskKind::Regression => &[
                "val_loss",
                "val_mae",
                "val_rmse",
                "val_r2",
                "train_loss",
                "train_mae",
                "train_r2",
            ],
            TaskKind::MultiLabel => &[
                "val_loss",
                "val_f1",
                "val_map",
                "val_accuracy",
                "train_loss",
                "train_accuracy",
            ],
        }
    }

    /// The monitor of `metric`, which `task` must report.
    pub fn new(metric: &str, task: TaskKind) -> Result<Self, TrainError> {
        let known = Self::metrics(task);
        if !known.contains(&metric) {
            let close = losskit_core::error::closest(metric, known.iter().copied());
            let hint = close
                .first()
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            return Err(TrainError::Task(format!(
                "--monitor `{metric}`: a {} run reports {}{hint}",
                task.as_str(),
                known.join(", ")
            )));
        }
        Ok(Self {
            metric: metric.into(),
        })
    }

    /// The metric's name.
    pub fn metric(&self) -> &str {
        &self.metric
    }

    /// Whether larger is better (losses and errors are minimised).
    pub fn maximize(&self) -> bool {
        !["loss", "mae", "rmse"]
            .iter()
            .any(|suffix| self.metric.ends_with(suffix))
    }

    /// The metric's value in an epoch (NaN when the epoch lacks it).
    pub fn value(&self, epoch: &EpochStats) -> f64 {
        match self.metric.as_str() {
            "val_loss" => epoch.val_loss,
            "train_loss" => epoch.train_loss,
            "val_accuracy" => epoch.val_metrics.accuracy,
            "train_accuracy" => epoch.train_metrics.accuracy,
            "val_dice" => epoch.val_metrics.dice.unwrap_or(f64::NAN),
            "val_iou" => epoch.val_metrics.iou.unwrap_or(f64::NAN),
            "val_mae" => epoch.val_metrics.mae.unwrap_or(f64::NAN),
            "train_mae" => epoch.train_metrics.mae.unwrap_or(f64::NAN),
            "val_rmse" => epoch.val_metrics.rmse.unwrap_or(f64::NAN),
            "val_r2" => epoch.val_metrics.r2.unwrap_or(f64::NAN),
            "train_r2" => epoch.train_metrics.r2.unwrap_or(f64::NAN),
            "val_f1" => epoch.val_metrics.f1.unwrap_or(f64::NAN),
            "val_map" => epoch.val_metrics.map.unwrap_or(f64::NAN),
            _ => f64::NAN,
        }
    }

    /// The best of `epochs`: the first to reach the best value (a NaN is never best).
    pub fn best<'a>(&self, epochs: impl IntoIterator<Item = &'a EpochStats>) -> Option<Best> {
        let mut best: Option<Best> = None;
        for epoch in epochs {
            let value = self.value(epoch);
            let better = match &best {
                _ if value.is_nan() => false,
                None => true,
                Some(b) if self.maximize() => value > b.value,
                Some(b) => value < b.value,
            };
            if better {
                best = Some(Best {
                    metric: self.metric.clone(),
                    epoch: epoch.epoch,
                    value,
                });
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{metrics::Metrics, stats::RunStats};

    fn epoch(n: usize, val_loss: f64, accuracy: f64) -> EpochStats {
        let metrics = Metrics {
            accuracy,
            ..Metrics::default()
        };
        EpochStats {
            epoch: n,
            step_losses: Vec::new(),
            train_loss: 1.0,
            train_terms: Vec::new(),
            train_metrics: metrics.clone(),
            val_loss,
            val_terms: Vec::new(),
            val_metrics: metrics,
            lr: 0.1,
            seconds: 0.0,
        }
    }

    #[test]
    fn losses_are_minimised_and_accuracies_maximised_first_best_wins() {
        let stats = RunStats {
            task: TaskKind::Classification,
            classes: Vec::new(),
            epochs: vec![
                epoch(1, 0.9, 0.5),
                epoch(2, 0.4, 0.8),
                epoch(3, f64::NAN, 0.8),
                epoch(4, 0.4, 0.7),
            ],
            ..RunStats::new(TaskKind::Classification, Vec::new())
        };
        let by_loss = Monitor::default().best(&stats.epochs).unwrap();
        assert_eq!((by_loss.epoch, by_loss.value), (2, 0.4));
        let by_accuracy = Monitor::new("val_accuracy", TaskKind::Classification)
            .unwrap()
            .best(&stats.epochs)
            .unwrap();
        assert_eq!(by_accuracy.epoch, 2);
    }

    #[test]
    fn a_metric_the_task_lacks_is_refused_with_the_closest_name() {
        let error = Monitor::new("val_dice", TaskKind::Classification).unwrap_err();
        assert!(error.to_string().contains("val_accuracy"), "{error}");
        let error = Monitor::new("val_los", TaskKind::Segmentation).unwrap_err();
        assert!(
            error.to_string().contains("did you mean `val_loss`"),
            "{error}"
        );
    }
}
