//! Loss statistics of a run: per-step losses, epoch means, the mean over all epochs,
//! validation loss, task metrics and per-term values; written as `metrics.csv`, `steps.csv`,
//! `summary.json` and `loss.svg`.

use std::{fmt::Write as _, path::Path};

use losskit_core::atomic_write::write_atomically;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    error::TrainError,
    metrics::{Metrics, TaskKind},
    monitor::Best,
    plot::{Series, svg_plot},
};

/// The statistics of one finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// The epoch, from 1.
    pub epoch: usize,
    /// The loss of each optimizer step (an epoch event leaves them to its step events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_losses: Vec<f64>,
    /// The mean training loss (weighted by batch size).
    pub train_loss: f64,
    /// Mean training values of the loss's terms (composite losses).
    #[serde(deserialize_with = "crate::events::terms_from_json")]
    pub train_terms: Vec<(String, f64)>,
    /// The training metrics (on the batches as trained, before each step).
    pub train_metrics: Metrics,
    /// The validation loss.
    pub val_loss: f64,
    /// Validation values of the loss's terms.
    #[serde(deserialize_with = "crate::events::terms_from_json")]
    pub val_terms: Vec<(String, f64)>,
    /// The validation metrics.
    pub val_metrics: Metrics,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    /// Wall time of the epoch in seconds (training and validation).
    pub seconds: f64,
}

/// Every epoch so far, and what the run is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// The task kind.
    pub task: TaskKind,
    /// Class names, index order.
    pub classes: Vec<String>,
    /// The finished epochs.
    pub epochs: Vec<EpochStats>,
    /// The best epoch under the run's monitor (kept in `best.lkc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<Best>,
    /// Whether early stopping ended the run before its last epoch.
    #[serde(default)]
    pub stopped_early: bool,
    /// The step losses of the epoch under way (see [`RunStats::apply`]).
    #[serde(skip)]
    pub(crate) pending_steps: Vec<f64>,
}

impl RunStats {
    /// No epochs yet.
    pub fn new(task: TaskKind, classes: Vec<String>) -> Self {
        Self {
            task,
            classes,
            epochs: Vec::new(),
            best: None,
            stopped_early: false,
            pending_steps: Vec::new(),
        }
    }

    /// The mean of the epoch training losses so far.
    pub fn avg_loss_all_epochs(&self) -> f64 {
        if self.epochs.is_empty() {
            return f64::NAN;
        }
        self.epochs.iter().map(|e| e.train_loss).sum::<f64>() / self.epochs.len() as f64
    }

    /// The last finished epoch.
    pub fn last(&self) -> Option<&EpochStats> {
        self.epochs.last()
    }

    /// One line summing up an epoch (for logs and non-terminal output).
    pub fn epoch_line(&self, total_epochs: usize) -> String {
        let Some(e) = self.last() else {
            return String::new();
        };
        let mut line = format!(
            "epoch {}/{}  train_loss {:.4}  avg_loss_all_epochs {:.4}  val_loss {:.4}",
            e.epoch,
            total_epochs,
            e.train_loss,
            self.avg_loss_all_epochs(),
            e.val_loss
        );
        for (name, value) in e.val_metrics.headline(self.task) {
            let _ = write!(line, "  {name} {value:.4}");
        }
        for (name, value) in &e.train_terms {
            let _ = write!(line, "  {name} {value:.4}");
        }
        let _ = write!(line, "  lr {:.2e}  {:.1}s", e.lr, e.seconds);
        line
    }

    /// The task's metric columns of `metrics.csv` after the losses: a name and how to read
    /// it from an epoch.
    pub(crate) fn metric_columns(&self) -> Vec<MetricColumn> {
        fn column(name: String, read: impl Fn(&EpochStats) -> f64 + 'static) -> MetricColumn {
            (name, Box::new(read))
        }
        let option = |v: Option<f64>| v.unwrap_or(f64::NAN);
        let at = |values: &[f64], c: usize| values.get(c).copied().unwrap_or(f64::NAN);
        let names: Vec<String> = self.classes.iter().map(|c| csv_name(c)).collect();
        let mut columns = Vec::new();
        match self.task {
            TaskKind::Classification | TaskKind::Segmentation | TaskKind::MultiLabel => {
                columns.push(column("train_accuracy".into(), |e| {
                    e.train_metrics.accuracy
                }));
                columns.push(column("val_accuracy".into(), |e| e.val_metrics.accuracy));
            }
            TaskKind::Regression => {}
        }
        match self.task {
            TaskKind::Classification => {}
            TaskKind::Segmentation => {
                columns.push(column("val_dice".into(), move |e| {
                    option(e.val_metrics.dice)
                }));
                columns.push(column("val_iou".into(), move |e| option(e.val_metrics.iou)));
            }
            TaskKind::Regression => {
                columns.push(column("train_mae".into(), move |e| {
                    option(e.train_metrics.mae)
                }));
                columns.push(column("val_mae".into(), move |e| option(e.val_metrics.mae)));
                columns.push(column("val_rmse".into(), move |e| {
                    option(e.val_metrics.rmse)
                }));
                columns.push(column("train_r2".into(), move |e| {
                    option(e.train_metrics.r2)
                }));
                columns.push(column("val_r2".into(), move |e| option(e.val_metrics.r2)));
                columns.push(column("val_coverage".into(), move |e| {
                    option(e.val_metrics.coverage)
                }));
            }
            TaskKind::MultiLabel => {
                columns.push(column("val_f1".into(), move |e| option(e.val_metrics.f1)));
                columns.push(column("val_map".into(), move |e| option(e.val_metrics.map)));
            }
        }
        if self.task != TaskKind::Regression {
            for (c, name) in names.iter().enumerate() {
                columns.push(column(format!("val_recall_{name}"), move |e| {
                    at(&e.val_metrics.recall, c)
                }));
            }
        }
        if self.task == TaskKind::Segmentation {
            for (c, name) in names.iter().enumerate() {
                columns.push(column(format!("val_dice_{name}"), move |e| {
                    at(&e.val_metrics.class_dice, c)
                }));
            }
            for (c, name) in names.iter().enumerate() {
                columns.push(column(format!("val_iou_{name}"), move |e| {
                    at(&e.val_metrics.class_iou, c)
                }));
            }
        }
        if self.task == TaskKind::MultiLabel {
            for (c, name) in names.iter().enumerate() {
                columns.push(column(format!("val_f1_{name}"), move |e| {
                    at(&e.val_metrics.label_f1, c)
                }));
            }
            for (c, name) in names.iter().enumerate() {
                columns.push(column(format!("val_ap_{name}"), move |e| {
                    at(&e.val_metrics.label_ap, c)
                }));
            }
        }
        columns
    }

    /// `metrics.csv`: one row per epoch.
    pub fn metrics_csv(&self) -> String {
        let term_names: Vec<String> = self
            .epochs
            .first()
            .map(|e| e.train_terms.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default();
        let columns = self.metric_columns();
        let mut out = String::from("epoch,train_loss,avg_loss_all_epochs,val_loss");
        for (name, _) in &columns {
            let _ = write!(out, ",{name}");
        }
        for name in &term_names {
            let _ = write!(out, ",train_term_{0},val_term_{0}", csv_name(name));
        }
        out.push_str(",lr,seconds\n");
        let mut running = 0.0;
        for (i, e) in self.epochs.iter().enumerate() {
            running += e.train_loss;
            let _ = write!(
                out,
                "{},{},{},{}",
                e.epoch,
                e.train_loss,
                running / (i + 1) as f64,
                e.val_loss,
            );
            for (_, read) in &columns {
                let _ = write!(out, ",{}", read(e));
            }
            for name in &term_names {
                let find = |terms: &[(String, f64)]| {
                    terms
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| *v)
                        .unwrap_or(f64::NAN)
                };
                let _ = write!(out, ",{},{}", find(&e.train_terms), find(&e.val_terms));
            }
            let _ = writeln!(out, ",{},{}", e.lr, e.seconds);
        }
        out
    }

    /// `steps.csv`: the loss of every step.
    pub fn steps_csv(&self) -> String {
        let mut out = String::from("epoch,step,global_step,loss\n");
        let mut global = 0;
        for e in &self.epochs {
            for (i, loss) in e.step_losses.iter().enumerate() {
                global += 1;
                let _ = writeln!(out, "{},{},{},{}", e.epoch, i + 1, global, loss);
            }
        }
        out
    }

    /// `summary.json`: the final numbers of the run.
    pub fn summary(&self, run: &Value) -> Value {
        let last = self.last();
        let number = |v: Option<f64>| {
            v.filter(|v| v.is_finite())
                .map_or(Value::Null, |v| json!(v))
        };
        let recall: serde_json::Map<String, Value> = self
            .classes
            .iter()
            .enumerate()
            .map(|(c, name)| {
                (
                    name.clone(),
                    number(last.and_then(|e| e.val_metrics.recall.get(c).copied())),
                )
            })
            .collect();
        let terms = |select: fn(&EpochStats) -> &Vec<(String, f64)>| -> Value {
            Value::Object(
                last.map(|e| {
                    select(e)
                        .iter()
                        .map(|(n, v)| (n.clone(), number(Some(*v))))
                        .collect()
                })
                .unwrap_or_default(),
            )
        };
        let mut summary = json!({
            "task": self.task.as_str(),
            "epochs": self.epochs.len(),
            "train_loss": number(last.map(|e| e.train_loss)),
            "avg_loss_all_epochs": number(Some(self.avg_loss_all_epochs())),
            "val_loss": number(last.map(|e| e.val_loss)),
            "train_terms": terms(|e| &e.train_terms),
            "val_terms": terms(|e| &e.val_terms),
            "seconds": self.epochs.iter().map(|e| e.seconds).sum::<f64>(),
            "run": run,
        });
        if let Some(best) = &self.best {
            summary["best"] = json!({
                "metric": best.metric,
                "epoch": best.epoch,
                "value": number(Some(best.value)),
            });
        }
        summary["stopped_early"] = json!(self.stopped_early);
        if self.task != TaskKind::Regression {
            summary["val_accuracy"] = number(last.map(|e| e.val_metrics.accuracy));
            summary["val_recall"] = Value::Object(recall);
        }
        let per_class = |select: fn(&Metrics) -> &Vec<f64>| -> Value {
            Value::Object(
                self.classes
                    .iter()
                    .enumerate()
                    .map(|(c, name)| {
                        let value = last.and_then(|e| select(&e.val_metrics).get(c).copied());
                        (name.clone(), number(value))
                    })
                    .collect(),
            )
        };
        let metric =
            |select: fn(&Metrics) -> Option<f64>| number(last.and_then(|e| select(&e.val_metrics)));
        if self.task == TaskKind::Regression {
            summary["val_mae"] = metric(|m| m.mae);
            summary["val_rmse"] = metric(|m| m.rmse);
            summary["val_r2"] = metric(|m| m.r2);
            summary["val_coverage"] = metric(|m| m.coverage);
            summary["target"] = json!(self.classes.first());
        }
        if self.task == TaskKind::MultiLabel {
            summary["val_f1"] = metric(|m| m.f1);
            summary["val_map"] = metric(|m| m.map);
            summary["val_label_f1"] = per_class(|m| &m.label_f1);
            summary["val_label_ap"] = per_class(|m| &m.label_ap);
        }
        if self.task == TaskKind::Segmentation {
            summary["val_dice"] = number(last.and_then(|e| e.val_metrics.dice));
            summary["val_iou"] = number(last.and_then(|e| e.val_metrics.iou));
            summary["val_class_dice"] = per_class(|m| &m.class_dice);
            summary["val_class_iou"] = per_class(|m| &m.class_iou);
        }
        summary
    }

    /// `loss.svg`: training loss per step, epoch means, and validation loss.
    pub fn loss_svg(&self, title: &str) -> String {
        let steps: Vec<f64> = self
            .epochs
            .iter()
            .flat_map(|e| e.step_losses.iter().copied())
            .collect();
        let mut x = 0.0;
        let mut train = Vec::new();
        let mut val = Vec::new();
        for e in &self.epochs {
            x += e.step_losses.len() as f64;
            train.push((x, e.train_loss));
            val.push((x, e.val_loss));
        }
        let step_points: Vec<(f64, f64)> = steps
            .iter()
            .enumerate()
            .map(|(i, v)| ((i + 1) as f64, *v))
            .collect();
        let series = vec![
            Series {
                label: "train loss (step)".into(),
                color: "#9ecae1".into(),
                points: step_points,
                dots: false,
                line: true,
                width: 1.0,
            },
            Series {
                label: "train loss (epoch mean)".into(),
                color: "#08519c".into(),
                points: train,
                dots: true,
                line: true,
                width: 2.0,
            },
            Series {
                label: "validation loss".into(),
                color: "#d94801".into(),
                points: val,
                dots: true,
                line: true,
                width: 2.0,
            },
        ];
        svg_plot(title, "step", "loss", &series)
    }
}

/// A column of `metrics.csv`: its name and how an epoch gives its value.
pub(crate) type MetricColumn = (String, Box<dyn Fn(&EpochStats) -> f64>);

fn csv_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The report files of a run folder besides the checkpoint, as [`write_reports`] writes them.
pub const REPORT_FILES: [&str; 5] = [
    "metrics.csv",
    "steps.csv",
    "summary.json",
    "loss.svg",
    "report.html",
];

/// The files of a regression run's last validation predictions, as [`write_predictions`]
/// writes them.
pub const PREDICTION_FILES: [&str; 2] = ["val_predictions.csv", "pred_vs_true.svg"];

/// A regression run's validation predictions: `val_predictions.csv` (target, prediction per
/// sample) and `pred_vs_true.svg` (each sample against the diagonal of perfect predictions),
/// each written atomically.
pub fn write_predictions(
    dir: &Path,
    pairs: &[(f64, f64)],
    title: &str,
    epoch: usize,
) -> Result<(), TrainError> {
    let mut csv = String::from("target,prediction\n");
    for (target, prediction) in pairs {
        let _ = writeln!(csv, "{target},{prediction}");
    }
    write_atomically(&dir.join(PREDICTION_FILES[0]), csv.as_bytes())?;
    let (low, high) = pairs
        .iter()
        .flat_map(|&(t, p)| [t, p])
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let series = [
        Series {
            label: "prediction = target".into(),
            color: "#999999".into(),
            points: if low <= high {
                vec![(low, low), (high, high)]
            } else {
                Vec::new()
            },
            dots: false,
            line: true,
            width: 1.0,
        },
        Series {
            label: format!("validation (epoch {epoch})"),
            color: "#08519c".into(),
            points: pairs.to_vec(),
            dots: true,
            line: false,
            width: 1.0,
        },
    ];
    let svg = svg_plot(
        &format!("{title}: predicted vs true"),
        "target",
        "prediction",
        &series,
    );
    write_atomically(&dir.join(PREDICTION_FILES[1]), svg.as_bytes())?;
    Ok(())
}

/// Writes `metrics.csv`, `steps.csv`, `summary.json` and `loss.svg` into `dir`, each atomically.
pub fn write_reports(
    dir: &Path,
    stats: &RunStats,
    run: &Value,
    title: &str,
    predictions: &[(f64, f64)],
    previews: &[crate::report::Preview],
) -> Result<(), TrainError> {
    write_atomically(&dir.join("metrics.csv"), stats.metrics_csv().as_bytes())?;
    write_atomically(&dir.join("steps.csv"), stats.steps_csv().as_bytes())?;
    let summary = serde_json::to_string_pretty(&stats.summary(run)).unwrap_or_default();
    write_atomically(&dir.join("summary.json"), summary.as_bytes())?;
    write_atomically(&dir.join("loss.svg"), stats.loss_svg(title).as_bytes())?;
    if !previews.is_empty() {
        let folder = dir.join("previews");
        std::fs::create_dir_all(&folder).map_err(|error| {
            TrainError::Io(format!("cannot create {}: {error}", folder.display()))
        })?;
        for preview in previews {
            write_atomically(&folder.join(&preview.name), &preview.png)?;
        }
        // An earlier epoch's previews that this one does not have (fewer mistakes) go.
        if let Ok(entries) = std::fs::read_dir(&folder) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name.ends_with(".png") && !previews.iter().any(|p| p.name == name) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    let report = crate::report::report_html(stats, run, title, predictions, previews);
    write_atomically(&dir.join("report.html"), report.as_bytes())?;
    Ok(())
}
