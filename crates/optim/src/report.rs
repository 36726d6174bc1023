//! `report.html`: one self-contained page per run, rewritten at the end of every epoch. It
//! holds its charts as inline SVG and its style inline; it fetches nothing, so it opens offline
//! and can be mailed.
//!
//! The page shows:
//! - the last epoch's headline numbers;
//! - the loss of every step, each epoch's mean, the mean over all epochs so far and the
//!   validation loss;
//! - the learning rate, the task's metrics per epoch and each composite term;
//! - the last epoch per class (recall; Dice and IoU; F1 and average precision), the confusion
//!   matrix as a heat map, and predicted against true for regression;
//! - every epoch's row of `metrics.csv`;
//! - the run's settings.
//!
//! Every number is shown rounded and carried in full in its `data-value` attribute, so a test
//! (or a script) can check the page against `metrics.csv`.

use std::fmt::Write as _;

use serde_json::Value;

use crate::{
    metrics::{Metrics, TaskKind},
    plot::{Series, escape, svg_plot},
    stats::RunStats,
};

/// The reports' style sheet (also the dashboard's).
pub const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1500px}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px}\
.cards{display:flex;flex-wrap:wrap;gap:12px}\
.card{border:1px solid #ccc;border-radius:6px;padding:8px 14px;min-width:120px}\
.card .name{font-size:12px;color:#666}.card .metric{font-size:22px}\
.charts{display:flex;flex-wrap:wrap;gap:16px}.chart svg{width:640px;height:auto}\
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}\
th{background:#f4f4f4}pre{background:#f7f7f7;padding:10px;font-size:12px;overflow:auto}";

const COLORS: [&str; 8] = [
    "#08519c", "#d94801", "#238b45", "#6a51a3", "#cb181d", "#525252", "#e7298a", "#66a61e",
];

/// A picture of what the model does on a validation sample, shown in the report and saved
/// under `previews/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// A file name (without folder), e.g. `valid-0.png`.
    pub name: String,
    /// What it shows, in words.
    pub caption: String,
    /// The PNG bytes.
    pub png: Vec<u8>,
}

/// Base64 (RFC 4648, with padding) for data URIs.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A number as shown (4 decimals) with its full value in `data-value`.
fn number(value: f64) -> String {
    if value.is_finite() {
        format!("<span data-value=\"{value}\">{value:.4}</span>")
    } else {
        "<span data-value=\"NaN\">–</span>".into()
    }
}

fn line(label: &str, color: &str, points: Vec<(f64, f64)>, dots: bool, width: f64) -> Series {
    Series {
        label: label.into(),
        color: color.into(),
        points,
        dots,
        line: true,
        width,
    }
}

/// A whole page around `body`.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n{body}</body></html>\n",
        escape(title)
    )
}

/// The run's report page.
pub fn report_html(
    stats: &RunStats,
    run: &Value,
    title: &str,
    predictions: &[(f64, f64)],
    previews: &[Preview],
) -> String {
    page(
        title,
        &report_body(
            stats,
            run,
            title,
            predictions,
            previews,
            PreviewSource::Inline,
        ),
    )
}

/// Where a page finds its previews' images.
#[derive(Clone, Copy)]
pub enum PreviewSource<'a> {
    /// Inline as data URIs: the page stands alone.
    Inline,
    /// At the address this gives for the preview's file name (a served page, whose browser
    /// then keeps the images between updates).
    Linked(&'a dyn Fn(&str) -> String),
}

/// The report's contents (what goes between `<body>` and `</body>`; the dashboard shows it
/// live). Steps of an epoch under way are drawn on the loss chart.
pub fn report_body(
    stats: &RunStats,
    run: &Value,
    title: &str,
    predictions: &[(f64, f64)],
    previews: &[Preview],
    source: PreviewSource<'_>,
) -> String {
    let mut page = format!("<h1>{}</h1>\n", escape(title));
    let Some(last) = stats.last() else {
        let _ = writeln!(
            page,
            "<p id=\"state\" data-epochs=\"0\">No epoch has finished yet{}.</p>",
            match stats.pending_steps.len() {
                0 => String::new(),
                n => format!("; {n} step(s) of the first epoch done"),
            }
        );
        if !stats.pending_steps.is_empty() {
            let _ = writeln!(
                page,
                "<div class=\"charts\"><div class=\"chart\">{}</div></div>",
                charts(stats, &[]).swap_remove(0)
            );
        }
        return page;
    };
    let _ = writeln!(
        page,
        "<p id=\"state\" data-epochs=\"{}\">{} task, {} epoch(s) finished{}.</p>",
        stats.epochs.len(),
        stats.task.as_str(),
        stats.epochs.len(),
        if stats.stopped_early {
            ", stopped early".to_string()
        } else if stats.pending_steps.is_empty() {
            String::new()
        } else {
            format!("; {} step(s) of the next done", stats.pending_steps.len())
        }
    );
    // The last epoch's headline numbers.
    page.push_str("<div class=\"cards\">\n");
    let mut cards = vec![
        ("val_loss", last.val_loss),
        ("train_loss", last.train_loss),
        ("avg_loss_all_epochs", stats.avg_loss_all_epochs()),
    ];
    cards.extend(last.val_metrics.headline(stats.task));
    for (name, value) in cards {
        let _ = writeln!(
            page,
            "<div class=\"card\" data-metric=\"{name}\"><div class=\"name\">{name}</div><div class=\"metric\">{}</div></div>",
            number(value)
        );
    }
    if let Some(best) = &stats.best {
        let _ = writeln!(
            page,
            "<div class=\"card\" data-metric=\"best\"><div class=\"name\">best {} (epoch {})</div><div class=\"metric\">{}</div></div>",
            escape(&best.metric),
            best.epoch,
            number(best.value)
        );
    }
    page.push_str("</div>\n<h2>Curves</h2>\n<div class=\"charts\">\n");
    for chart in charts(stats, predictions) {
        let _ = writeln!(page, "<div class=\"chart\">{chart}</div>");
    }
    page.push_str("</div>\n");
    per_class(&mut page, stats);
    confusion(&mut page, stats);
    if !previews.is_empty() {
        page.push_str(
            "<h2>Validation previews (last epoch)</h2>\n<div class=\"charts\" id=\"previews\">\n",
        );
        for preview in previews {
            let src = match source {
                PreviewSource::Inline => format!("data:image/png;base64,{}", base64(&preview.png)),
                PreviewSource::Linked(link) => escape(&link(&preview.name)),
            };
            let _ = writeln!(
                page,
                "<figure><img alt=\"{0}\" src=\"{src}\"><figcaption>{0}</figcaption></figure>",
                escape(&preview.caption),
            );
        }
        page.push_str("</div>\n");
    }
    epochs_table(&mut page, stats);
    let _ = writeln!(
        page,
        "<h2>Settings</h2>\n<pre id=\"settings\">{}</pre>",
        escape(&serde_json::to_string_pretty(run).unwrap_or_default())
    );
    page
}

/// The charts: losses, learning rate, the task's metrics, composite terms, predicted vs true.
fn charts(stats: &RunStats, predictions: &[(f64, f64)]) -> Vec<String> {
    let mut charts = Vec::new();
    let mut step = 0.0;
    let mut steps = Vec::new();
    let (mut epoch_means, mut running, mut validation) = (Vec::new(), Vec::new(), Vec::new());
    let mut sum = 0.0;
    for (i, e) in stats.epochs.iter().enumerate() {
        for loss in &e.step_losses {
            step += 1.0;
            steps.push((step, *loss));
        }
        sum += e.train_loss;
        epoch_means.push((step, e.train_loss));
        running.push((step, sum / (i + 1) as f64));
        validation.push((step, e.val_loss));
    }
    for loss in &stats.pending_steps {
        step += 1.0;
        steps.push((step, *loss));
    }
    charts.push(svg_plot(
        "loss",
        "step",
        "loss",
        &[
            line("train (step)", "#9ecae1", steps, false, 1.0),
            line("train (epoch mean)", COLORS[0], epoch_means, true, 2.0),
            line("mean over all epochs", COLORS[2], running, false, 2.0),
            line("validation", COLORS[1], validation, true, 2.0),
        ],
    ));
    let per_epoch = |read: &dyn Fn(&crate::stats::EpochStats) -> f64| -> Vec<(f64, f64)> {
        stats
            .epochs
            .iter()
            .map(|e| (e.epoch as f64, read(e)))
            .collect()
    };
    charts.push(svg_plot(
        "learning rate",
        "epoch",
        "lr (last step)",
        &[line("lr", COLORS[5], per_epoch(&|e| e.lr), true, 2.0)],
    ));
    // Before the first epoch ends (the dashboard), the steps so far are all there is.
    let Some(first) = stats.epochs.first() else {
        return charts;
    };
    let headline = first.val_metrics.headline(stats.task);
    let metric_series: Vec<Series> = headline
        .iter()
        .enumerate()
        .map(|(k, (name, _))| {
            line(
                name,
                COLORS[k % COLORS.len()],
                per_epoch(&|e| e.val_metrics.headline(stats.task)[k].1),
                true,
                2.0,
            )
        })
        .collect();
    charts.push(svg_plot("validation metrics", "epoch", "", &metric_series));
    let terms: Vec<String> = first.train_terms.iter().map(|(n, _)| n.clone()).collect();
    if !terms.is_empty() {
        let series: Vec<Series> = terms
            .iter()
            .enumerate()
            .map(|(k, name)| {
                line(
                    &format!("{name} (train)"),
                    COLORS[k % COLORS.len()],
                    per_epoch(&|e| {
                        e.train_terms
                            .iter()
                            .find(|(n, _)| n == name)
                            .map_or(f64::NAN, |(_, v)| *v)
                    }),
                    true,
                    2.0,
                )
            })
            .collect();
        charts.push(svg_plot("composite terms", "epoch", "term", &series));
    }
    if stats.task == TaskKind::Regression && !predictions.is_empty() {
        let (low, high) = predictions
            .iter()
            .flat_map(|&(t, p)| [t, p])
            .filter(|v| v.is_finite())
            .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        charts.push(svg_plot(
            "validation: predicted vs true",
            "target",
            "prediction",
            &[
                line(
                    "prediction = target",
                    "#999999",
                    vec![(low, low), (high, high)],
                    false,
                    1.0,
                ),
                Series {
                    label: "samples".into(),
                    color: COLORS[0].into(),
                    points: predictions.to_vec(),
                    dots: true,
                    line: false,
                    width: 1.0,
                },
            ],
        ));
    }
    charts
}

/// The last epoch per class: recall; Dice and IoU (segmentation); F1 and AP (multi-label).
fn per_class(page: &mut String, stats: &RunStats) {
    let Some(last) = stats.last() else { return };
    let m = &last.val_metrics;
    let mut columns: Vec<(&str, &Vec<f64>)> = Vec::new();
    if stats.task != TaskKind::Regression {
        columns.push(("recall", &m.recall));
    }
    if !m.class_dice.is_empty() {
        columns.push(("dice", &m.class_dice));
        columns.push(("iou", &m.class_iou));
    }
    if !m.label_f1.is_empty() {
        columns.push(("f1", &m.label_f1));
        columns.push(("average precision", &m.label_ap));
    }
    if columns.is_empty() {
        return;
    }
    page.push_str(
        "<h2>Per class (last epoch, validation)</h2>\n<table id=\"per-class\"><tr><th>class</th>",
    );
    for (name, _) in &columns {
        let _ = write!(page, "<th>{name}</th>");
    }
    page.push_str("</tr>\n");
    for (c, class) in stats.classes.iter().enumerate() {
        let _ = write!(page, "<tr><th>{}</th>", escape(class));
        for (_, values) in &columns {
            let _ = write!(
                page,
                "<td>{}</td>",
                number(values.get(c).copied().unwrap_or(f64::NAN))
            );
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
}

/// The validation confusion matrix of the last epoch as a heat map (classification).
fn confusion(page: &mut String, stats: &RunStats) {
    let Some(last) = stats.last() else { return };
    let counts = &last.val_metrics.confusion;
    let classes = stats.classes.len();
    if counts.len() != classes * classes || classes == 0 {
        return;
    }
    page.push_str("<h2>Confusion matrix (last epoch, validation; rows: truth, columns: prediction)</h2>\n<table id=\"confusion\"><tr><th></th>");
    for class in &stats.classes {
        let _ = write!(page, "<th>{}</th>", escape(class));
    }
    page.push_str("</tr>\n");
    for (t, class) in stats.classes.iter().enumerate() {
        let row = &counts[t * classes..(t + 1) * classes];
        let total = row.iter().sum::<u64>().max(1) as f64;
        let _ = write!(page, "<tr><th>{}</th>", escape(class));
        for &count in row {
            // Shade by the share of the true class's samples: white 0 to deep blue 1.
            let share = count as f64 / total;
            let shade = (255.0 * (1.0 - 0.75 * share)) as u8;
            let ink = if share > 0.6 { "#fff" } else { "#222" };
            let _ = write!(
                page,
                "<td data-value=\"{count}\" style=\"background:rgb({shade},{shade},255);color:{ink}\">{count}</td>"
            );
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
}

/// Every epoch's row of `metrics.csv` (the same columns, composite terms aside).
fn epochs_table(page: &mut String, stats: &RunStats) {
    let columns = stats.metric_columns();
    page.push_str("<h2>Epochs</h2>\n<table id=\"epochs\"><tr><th>epoch</th><th>train_loss</th><th>avg_loss_all_epochs</th><th>val_loss</th>");
    for (name, _) in &columns {
        let _ = write!(page, "<th>{}</th>", escape(name));
    }
    page.push_str("<th>lr</th></tr>\n");
    let mut sum = 0.0;
    for (i, e) in stats.epochs.iter().enumerate() {
        sum += e.train_loss;
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            e.epoch,
            number(e.train_loss),
            number(sum / (i + 1) as f64),
            number(e.val_loss)
        );
        for (_, read) in &columns {
            let _ = write!(page, "<td>{}</td>", number(read(e)));
        }
        let _ = writeln!(page, "<td>{}</td></tr>", number(e.lr));
    }
    page.push_str("</table>\n");
}

/// The report of `losskit compare`: each run's validation and training loss divided by its
/// own first epoch's (losses on different scales on one axis), its headline metrics per
/// epoch, and one table of every run's last-epoch numbers.
pub fn compare_html(title: &str, runs: &[(String, RunStats)]) -> String {
    page(title, &compare_body(title, runs, true))
}

/// The compare report's contents; `normalise` divides each loss by its first epoch's value.
pub fn compare_body(title: &str, runs: &[(String, RunStats)], normalise: bool) -> String {
    let mut page = format!("<h1>{}</h1>\n", escape(title));
    let Some((_, first)) = runs.first() else {
        page.push_str("<p id=\"state\" data-runs=\"0\">No run.</p>\n");
        return page;
    };
    let task = first.task;
    let _ = writeln!(
        page,
        "<p id=\"state\" data-runs=\"{}\">{} runs of the {} task{}.</p>",
        runs.len(),
        runs.len(),
        task.as_str(),
        if normalise {
            "; each loss is divided by its own first epoch's value, so losses on different scales share one axis"
        } else {
            ""
        }
    );
    let normalised = |stats: &RunStats, read: fn(&crate::stats::EpochStats) -> f64| {
        let base = if normalise {
            stats.epochs.first().map_or(f64::NAN, read)
        } else {
            1.0
        };
        stats
            .epochs
            .iter()
            .map(|e| (e.epoch as f64, read(e) / base))
            .collect::<Vec<_>>()
    };
    let mut loss_series = Vec::new();
    for (k, (label, stats)) in runs.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        loss_series.push(line(
            &format!("{} val", short(label)),
            color,
            normalised(stats, |e| e.val_loss),
            true,
            2.5,
        ));
        loss_series.push(line(
            &format!("{} train", short(label)),
            color,
            normalised(stats, |e| e.train_loss),
            false,
            1.0,
        ));
    }
    page.push_str("<h2>Curves</h2>\n<div class=\"charts\">\n");
    let _ = writeln!(
        page,
        "<div class=\"chart\">{}</div>",
        if normalise {
            svg_plot(
                "loss / first epoch's loss",
                "epoch",
                "normalised loss",
                &loss_series,
            )
        } else {
            svg_plot("loss", "epoch", "loss", &loss_series)
        }
    );
    let headline = Metrics::default().headline(task);
    for (m, (name, _)) in headline.iter().enumerate() {
        let series: Vec<Series> = runs
            .iter()
            .enumerate()
            .map(|(k, (label, stats))| {
                line(
                    &short(label),
                    COLORS[k % COLORS.len()],
                    stats
                        .epochs
                        .iter()
                        .map(|e| (e.epoch as f64, e.val_metrics.headline(task)[m].1))
                        .collect(),
                    true,
                    2.0,
                )
            })
            .collect();
        let _ = writeln!(
            page,
            "<div class=\"chart\">{}</div>",
            svg_plot(name, "epoch", name, &series)
        );
    }
    page.push_str("</div>\n<h2>Last epoch</h2>\n<table id=\"runs\"><tr><th>loss</th><th>epochs</th><th>val_loss</th><th>avg_loss_all_epochs</th>");
    for (name, _) in &headline {
        let _ = write!(page, "<th>{name}</th>");
    }
    page.push_str("</tr>\n");
    for (label, stats) in runs {
        let Some(last) = stats.last() else { continue };
        let _ = write!(
            page,
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td>",
            escape(label),
            stats.epochs.len(),
            number(last.val_loss),
            number(stats.avg_loss_all_epochs())
        );
        for (_, value) in last.val_metrics.headline(task) {
            let _ = write!(page, "<td>{}</td>", number(value));
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
    page
}

fn short(label: &str) -> String {
    // The legend column grows with its labels; past 48 characters a label is cut, so a
    // chart keeps a readable width.
    if label.chars().count() <= 48 {
        label.to_string()
    } else {
        format!("{}…", label.chars().take(47).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{metrics::Metrics, stats::EpochStats};

    fn stats() -> RunStats {
        let epoch = |n: usize, loss: f64| EpochStats {
            epoch: n,
            step_losses: vec![loss + 0.1, loss - 0.1],
            train_loss: loss,
            train_terms: vec![("ce".into(), loss / 2.0)],
            train_metrics: Metrics::default(),
            val_loss: loss + 0.05,
            val_terms: vec![("ce".into(), loss / 2.0)],
            val_metrics: Metrics {
                accuracy: 0.5 + n as f64 / 10.0,
                recall: vec![1.0, 0.25],
                confusion: vec![3, 0, 3, 1],
                ..Metrics::default()
            },
            lr: 0.001,
            seconds: 1.0,
        };
        RunStats {
            task: TaskKind::Classification,
            classes: vec!["a<b".into(), "c".into()],
            epochs: vec![epoch(1, 0.9), epoch(2, 0.6)],
            ..RunStats::new(TaskKind::Classification, Vec::new())
        }
    }

    #[test]
    fn the_page_is_self_contained_and_carries_every_number() {
        let page = report_html(
            &stats(),
            &serde_json::json!({"loss": "ce"}),
            "t & t",
            &[],
            &[],
        );
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(
            !page.contains("http://")
                || page.matches("http://").count()
                    == page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
            "nothing fetched"
        );
        assert!(!page.contains("<script src") && !page.contains("<link"));
        assert!(page.contains("<title>t &amp; t</title>"));
        assert!(page.contains("a&lt;b"), "class names are escaped");
        assert!(page.contains("data-metric=\"val_accuracy\""));
        assert!(page.contains("<span data-value=\"0.7\">0.7000</span>"));
        assert_eq!(page.matches("<svg").count(), 4, "loss, lr, metrics, terms");
        assert!(page.contains("id=\"confusion\""));
        assert!(page.contains("<td data-value=\"3\" style="));
        // Every epoch row: epoch, losses, accuracy columns, recalls, lr.
        let table = &page[page.find("id=\"epochs\"").unwrap()..];
        assert_eq!(table.matches("<tr><td>").count(), 2);
    }

    #[test]
    fn the_compare_page_normalises_each_loss_by_its_first_epoch() {
        let runs = vec![
            ("ce".to_string(), stats()),
            (
                "a very long loss label that is cut past forty-eight characters".to_string(),
                stats(),
            ),
        ];
        let page = compare_html("compare", &runs);
        assert!(page.contains("data-runs=\"2\""));
        assert_eq!(
            page.matches("<svg").count(),
            2,
            "normalised loss and accuracy"
        );
        assert!(page.contains("a very long loss label that is cut past forty-e…"));
        assert!(
            !compare_body("compare", &runs, false).contains("first epoch"),
            "the raw loss axis"
        );
        let table = &page[page.find("id=\"runs\"").unwrap()..];
        assert_eq!(
            table.matches("<tr><th>").count(),
            3,
            "the header and one row per run"
        );
        assert!(
            table.contains("<span data-value=\"0.65\">0.6500</span>"),
            "{table}"
        );
    }

    #[test]
    fn a_run_without_epochs_says_so() {
        let mut empty = stats();
        empty.epochs.clear();
        assert!(
            report_html(&empty, &Value::Null, "t", &[], &[]).contains("No epoch has finished yet")
        );
    }

    #[test]
    fn base64_matches_rfc_4648() {
        // RFC 4648, section 10.
        for (text, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(text.as_bytes()), encoded);
        }
    }
}
