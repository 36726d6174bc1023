//! `losskit compare`: train the same model on the same data with the same seed once per loss,
//! and compare validation loss, accuracy or Dice/IoU and per-class recall.

use anyhow::{Result, bail};
use burn::tensor::Device;
use losskit_core::atomic_write::write_atomically;
use losskit_optim::{
    Metrics, RunStats, TaskKind,
    plot::{Series, svg_plot},
};
use serde_json::{Value, json};

use losskit_examples::{
    data::{DataSource, Dataset},
    run::{Prepared, RunSpec, TrainRequest, check_prepared, prepare_with},
};

use crate::commands::train::run_prepared;

const COLORS: [&str; 8] = [
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
];

/// A run of the comparison, prepared and checked, waiting to train; its data is shared.
struct Pending {
    request: TrainRequest,
    spec: RunSpec,
    devices: (Device, Vec<Device>),
    initial_model: Option<Vec<u8>>,
    label: String,
}

/// Trains once per loss in `losses` (each into `out/<n>-<loss name>`); returns the table.
pub fn run(base: &TrainRequest, losses: &[String]) -> Result<String> {
    if losses.len() < 2 {
        bail!("compare needs at least two --loss");
    }
    if base.resume {
        bail!("compare does not resume; run it again with another --out");
    }
    let (pending, shared) = prepare_all(base, losses)?;
    crate::commands::train::check_out_dir(&base.out, false, true)?;
    let mut results: Vec<(String, RunStats)> = Vec::new();
    for Pending {
        request,
        spec,
        devices: (device, data_parallel),
        initial_model,
        label,
    } in pending
    {
        tracing::info!("compare: training with loss {label}");
        let title = format!("{} - loss {label}", spec.task.as_str());
        // Each run gets its own copy only while it trains.
        let data = match &shared {
            Some((source, data)) if *source == spec.data => data.clone(),
            _ => spec.data.load()?,
        };
        let prepared = Prepared {
            spec,
            data,
            device,
            data_parallel,
            initial_model,
        };
        let stats = run_prepared(prepared, &request, &title)?;
        results.push((label, stats));
    }
    let mut table = table(&results);
    let svg = svg_plot(
        &format!("{} - loss comparison", results[0].1.task.as_str()),
        "epoch",
        "loss",
        &series(&results),
    );
    write_atomically(&base.out.join("compare.svg"), svg.as_bytes())?;
    write_atomically(
        &base.out.join("compare.json"),
        serde_json::to_string_pretty(&summary(&results))?.as_bytes(),
    )?;
    let report = losskit_optim::report::compare_html(
        &format!("{} - loss comparison", results[0].1.task.as_str()),
        &results,
    );
    write_atomically(&base.out.join("report.html"), report.as_bytes())?;
    table.push_str(&format!(
        "wrote {0}/compare.svg, {0}/compare.json, {0}/report.html",
        base.out.display()
    ));
    Ok(table)
}

/// Prepares (and so validates) every run before training any. The data is loaded once and
/// shared by the runs that use the same source.
fn prepare_all(
    base: &TrainRequest,
    losses: &[String],
) -> Result<(Vec<Pending>, Option<(DataSource, Dataset)>)> {
    let mut pending: Vec<Pending> = Vec::new();
    let mut shared: Option<(DataSource, Dataset)> = None;
    for (i, loss) in losses.iter().enumerate() {
        let mut request = base.clone();
        request.loss = loss.clone();
        let prepared = prepare_with(
            &request,
            shared.as_ref().map(|(source, data)| (source, data)),
        )?;
        let name = prepared
            .spec
            .loss
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("loss")
            .to_string();
        request.out = base.out.join(format!("{}-{name}", i + 1));
        check_prepared(&prepared)?;
        let Prepared {
            spec,
            data,
            device,
            data_parallel,
            initial_model,
        } = prepared;
        if shared
            .as_ref()
            .is_none_or(|(source, _)| *source != spec.data)
        {
            shared = Some((spec.data.clone(), data));
        }
        pending.push(Pending {
            request,
            spec,
            devices: (device, data_parallel),
            initial_model,
            label: loss.clone(),
        });
    }
    Ok((pending, shared))
}

/// The table printed at the end: validation loss, the task's metrics, recall per class.
fn table(results: &[(String, RunStats)]) -> String {
    let task = results[0].1.task;
    let short: Vec<String> = results[0]
        .1
        .classes
        .iter()
        .map(|c| c.chars().take(10).collect())
        .collect();
    // Widths in characters (what `{:width$}` pads to), not bytes.
    let label_width = results
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut table = format!("{:label_width$}  {:>8}", "LOSS", "VAL_LOSS");
    let headline = Metrics::default().headline(task);
    for (name, _) in &headline {
        let name = name.trim_start_matches("val_").to_uppercase();
        table.push_str(&format!("  {name:>8}"));
    }
    let per_class = task != TaskKind::Regression;
    let headers: Vec<String> = if per_class {
        short.iter().map(|name| format!("R:{name}")).collect()
    } else {
        Vec::new()
    };
    let widths: Vec<usize> = headers.iter().map(|h| h.chars().count().max(6)).collect();
    for (header, width) in headers.iter().zip(&widths) {
        table.push_str(&format!("  {header:>width$}"));
    }
    table.push('\n');
    for (label, stats) in results {
        let Some(last) = stats.last() else { continue };
        table.push_str(&format!("{label:label_width$}  {:>8.4}", last.val_loss));
        for (_, value) in last.val_metrics.headline(task) {
            table.push_str(&format!("  {value:>8.4}"));
        }
        for (recall, width) in last.val_metrics.recall.iter().zip(&widths) {
            table.push_str(&format!("  {recall:>width$.3}"));
        }
        table.push('\n');
    }
    table.push_str(if per_class {
        "(R: validation recall per class; each loss's val_loss is on its own scale)\n"
    } else {
        "(MAE, RMSE in the target's units; each loss's val_loss is on its own scale)\n"
    });
    table
}

/// `compare.json`: the task, the classes and each run's final metrics and loss curves.
fn summary(results: &[(String, RunStats)]) -> Value {
    let classes = &results[0].1.classes;
    let rows: Vec<Value> = results
        .iter()
        .filter_map(|(label, stats)| {
            let last = stats.last()?;
            let recall: serde_json::Map<String, Value> = classes
                .iter()
                .zip(&last.val_metrics.recall)
                .map(|(c, r)| (c.clone(), json!(r)))
                .collect();
            let mut row = json!({
                "loss": label,
                "val_loss": last.val_loss,
                "avg_loss_all_epochs": stats.avg_loss_all_epochs(),
                "val_accuracy": finite(last.val_metrics.accuracy),
                "val_dice": last.val_metrics.dice,
                "val_iou": last.val_metrics.iou,
                "val_recall": recall,
                "epochs": stats.epochs.iter().map(|e| json!({"epoch": e.epoch, "train_loss": e.train_loss, "val_loss": e.val_loss})).collect::<Vec<_>>(),
            });
            for (name, value) in last.val_metrics.headline(stats.task) {
                row[name] = finite(value);
            }
            Some(row)
        })
        .collect();
    json!({"task": results[0].1.task.as_str(), "classes": classes, "runs": rows})
}

fn finite(value: f64) -> Value {
    if value.is_finite() {
        json!(value)
    } else {
        Value::Null
    }
}

/// The plot's lines: each run's training (thin) and validation (dotted, thick) loss per epoch.
fn series(results: &[(String, RunStats)]) -> Vec<Series> {
    results
        .iter()
        .enumerate()
        .flat_map(|(i, (label, stats))| {
            let color = COLORS[i % COLORS.len()].to_string();
            let curve = |value: fn(&losskit_optim::EpochStats) -> f64| -> Vec<(f64, f64)> {
                stats
                    .epochs
                    .iter()
                    .map(|e| (e.epoch as f64, value(e)))
                    .collect()
            };
            [
                Series {
                    label: format!("{} train", short_label(label)),
                    color: color.clone(),
                    points: curve(|e| e.train_loss),
                    dots: false,
                    line: true,
                    width: 1.0,
                },
                Series {
                    label: format!("{} val", short_label(label)),
                    color,
                    points: curve(|e| e.val_loss),
                    dots: true,
                    line: true,
                    width: 2.5,
                },
            ]
        })
        .collect()
}

fn short_label(label: &str) -> String {
    if label.chars().count() <= 24 {
        label.to_string()
    } else {
        format!("{}...", label.chars().take(21).collect::<String>())
    }
}
