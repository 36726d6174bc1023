//! `losskit compare`: train the same model on the same data with the same seed once per loss,
//! and compare validation loss, accuracy or Dice/IoU and per-class recall.

use anyhow::{Result, bail};
use losskit_optim::{
    RunStats, TaskKind,
    stats::{Series, svg_plot, write_atomically},
};
use serde_json::{Value, json};

use crate::{
    commands::train::{Prepared, TrainRequest, check_prepared, prepare_with, run_prepared},
    examples::data::{DataSource, Dataset},
};

const COLORS: [&str; 8] = [
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
];

/// Trains once per loss in `losses` (each into `out/<n>-<loss name>`); returns the table.
pub fn run(base: &TrainRequest, losses: &[String]) -> Result<String> {
    if losses.len() < 2 {
        bail!("compare needs at least two --loss");
    }
    if base.resume {
        bail!("compare does not resume; run it again with another --out");
    }
    // Prepare (and so validate) every run before training any.
    // The data is loaded once and shared by every run (each run gets a copy when it trains).
    let mut prepared = Vec::new();
    let mut shared: Option<(DataSource, Dataset)> = None;
    for (i, loss) in losses.iter().enumerate() {
        let mut request = base.clone();
        request.loss = loss.clone();
        let run = prepare_with(
            &request,
            shared.as_ref().map(|(source, data)| (source, data)),
        )?;
        let name = run
            .spec
            .loss
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("loss")
            .to_string();
        request.out = base.out.join(format!("{}-{name}", i + 1));
        check_prepared(&run)?;
        let Prepared {
            spec,
            data,
            device,
            data_parallel,
        } = run;
        if shared
            .as_ref()
            .is_none_or(|(source, _)| *source != spec.data)
        {
            shared = Some((spec.data.clone(), data));
        }
        prepared.push((request, spec, (device, data_parallel), loss.clone()));
    }
    crate::commands::train::check_out_dir(&base.out, false, true)?;
    let mut results: Vec<(String, RunStats)> = Vec::new();
    for (request, spec, (device, data_parallel), label) in prepared {
        eprintln!("losskit: compare: training with loss {label}");
        let title = format!("{} - loss {label}", spec.task.as_str());
        let data = match &shared {
            Some((source, data)) if *source == spec.data => data.clone(),
            _ => spec.data.load()?,
        };
        let prepared = Prepared {
            spec,
            data,
            device,
            data_parallel,
        };
        let stats = run_prepared(prepared, &request, &title)?;
        results.push((label, stats));
    }
    let task = results[0].1.task;
    let classes = results[0].1.classes.clone();
    let short: Vec<String> = classes
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
    match task {
        TaskKind::Classification => table.push_str(&format!("  {:>8}", "ACCURACY")),
        TaskKind::Segmentation => table.push_str(&format!("  {:>8}  {:>8}", "DICE", "IOU")),
    }
    let headers: Vec<String> = short.iter().map(|name| format!("R:{name}")).collect();
    let widths: Vec<usize> = headers.iter().map(|h| h.chars().count().max(6)).collect();
    for (header, width) in headers.iter().zip(&widths) {
        table.push_str(&format!("  {header:>width$}"));
    }
    table.push('\n');
    let mut rows = Vec::new();
    for (label, stats) in &results {
        let Some(last) = stats.last() else { continue };
        table.push_str(&format!("{label:label_width$}  {:>8.4}", last.val_loss));
        match task {
            TaskKind::Classification => {
                table.push_str(&format!("  {:>8.4}", last.val_metrics.accuracy))
            }
            TaskKind::Segmentation => table.push_str(&format!(
                "  {:>8.4}  {:>8.4}",
                last.val_metrics.dice.unwrap_or(f64::NAN),
                last.val_metrics.iou.unwrap_or(f64::NAN)
            )),
        }
        for (recall, width) in last.val_metrics.recall.iter().zip(&widths) {
            table.push_str(&format!("  {recall:>width$.3}"));
        }
        table.push('\n');
        let recall: serde_json::Map<String, Value> = classes
            .iter()
            .zip(&last.val_metrics.recall)
            .map(|(c, r)| (c.clone(), json!(r)))
            .collect();
        rows.push(json!({
            "loss": label,
            "val_loss": last.val_loss,
            "avg_loss_all_epochs": stats.avg_loss_all_epochs(),
            "val_accuracy": last.val_metrics.accuracy,
            "val_dice": last.val_metrics.dice,
            "val_iou": last.val_metrics.iou,
            "val_recall": recall,
            "epochs": stats.epochs.iter().map(|e| json!({"epoch": e.epoch, "train_loss": e.train_loss, "val_loss": e.val_loss})).collect::<Vec<_>>(),
        }));
    }
    table.push_str("(R: validation recall per class; each loss's val_loss is on its own scale)\n");
    let series: Vec<Series> = results
        .iter()
        .enumerate()
        .flat_map(|(i, (label, stats))| {
            let color = COLORS[i % COLORS.len()].to_string();
            let train: Vec<(f64, f64)> = stats
                .epochs
                .iter()
                .map(|e| (e.epoch as f64, e.train_loss))
                .collect();
            let val: Vec<(f64, f64)> = stats
                .epochs
                .iter()
                .map(|e| (e.epoch as f64, e.val_loss))
                .collect();
            [
                Series {
                    label: format!("{} train", short_label(label)),
                    color: color.clone(),
                    points: train,
                    dots: false,
                    width: 1.0,
                },
                Series {
                    label: format!("{} val", short_label(label)),
                    color,
                    points: val,
                    dots: true,
                    width: 2.5,
                },
            ]
        })
        .collect();
    let svg = svg_plot(
        &format!("{} - loss comparison", task.as_str()),
        "epoch",
        "loss",
        &series,
    );
    write_atomically(&base.out.join("compare.svg"), svg.as_bytes())?;
    let report = json!({"task": task.as_str(), "classes": classes, "runs": rows});
    write_atomically(
        &base.out.join("compare.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    table.push_str(&format!(
        "wrote {0}/compare.svg, {0}/compare.json",
        base.out.display()
    ));
    Ok(table)
}

fn short_label(label: &str) -> String {
    if label.chars().count() <= 24 {
        label.to_string()
    } else {
        format!("{}...", label.chars().take(21).collect::<String>())
    }
}
