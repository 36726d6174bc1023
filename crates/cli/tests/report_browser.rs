//! `report.html` as a person sees it: headless Chromium (Debian's `chromium`) loads a run's
//! report, the numbers in the DOM it renders are checked against `metrics.csv`, and a
//! screenshot is written (`LOSSKIT_SCREENSHOTS=DIR` keeps it there to be looked at).
//!
//! Ignored by the README's test command, which needs no browser; `.ci/run` installs Chromium
//! and runs it with `--ignored`.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::{losskit, text};

fn scratch(name: &str) -> PathBuf {
    common::scratch("browser", name)
}

fn chromium() -> &'static str {
    let path = "/usr/bin/chromium";
    assert!(
        Path::new(path).exists(),
        "this test needs Debian's chromium (apt-get install chromium); .ci/run installs it"
    );
    path
}

/// Chromium's flags for a headless run as root in a container.
const HEADLESS: [&str; 5] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--allow-file-access-from-files",
];

/// The DOM Chromium builds from the page.
fn rendered_dom(page: &Path) -> String {
    let output = Command::new(chromium())
        .args(HEADLESS)
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "chromium: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// A screenshot of the page, `width`×`height`.
fn screenshot(page: &Path, png: &Path, width: u32, height: u32) {
    let output = Command::new(chromium())
        .args(HEADLESS)
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "chromium: {output:?}");
    let image = image::open(png).unwrap().to_rgb8();
    assert_eq!(image.dimensions(), (width, height));
    // The charts are drawn: many pixels are neither white nor near-white.
    let inked = image
        .pixels()
        .filter(|p| p.0.iter().any(|&c| c < 200))
        .count();
    assert!(
        inked > (width * height) as usize / 100,
        "the screenshot is nearly blank ({inked} inked pixels)"
    );
}

/// The `data-value`s of the DOM's epochs table, row by row.
fn epochs_table(dom: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let table = &dom[dom.find("id=\"epochs\"").expect("an epochs table")..];
    let table = &table[..table.find("</table>").unwrap()];
    let header: Vec<String> = table
        .split("<th>")
        .skip(1)
        .map(|cell| cell[..cell.find("</th>").unwrap()].to_string())
        .collect();
    let rows = table
        .split("<tr><td>")
        .skip(1)
        .map(|row| {
            let epoch = row[..row.find("</td>").unwrap()].to_string();
            std::iter::once(epoch)
                .chain(
                    row.split("data-value=\"")
                        .skip(1)
                        .map(|cell| cell[..cell.find('"').unwrap()].to_string()),
                )
                .collect()
        })
        .collect();
    (header, rows)
}

fn check_against_metrics_csv(run: &Path, dom: &str) {
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = metrics.lines();
    let csv_header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let (header, rows) = epochs_table(dom);
    assert_eq!(rows.len(), metrics.lines().count() - 1, "one row per epoch");
    for (row, line) in rows.iter().zip(lines) {
        let cells: Vec<&str> = line.split(',').collect();
        for (name, shown) in header.iter().zip(row) {
            let at = csv_header.iter().position(|h| h == name).unwrap();
            let (csv, shown): (f64, f64) = (
                cells[at].parse().unwrap(),
                shown.parse().unwrap_or(f64::NAN),
            );
            assert!(
                csv == shown || (csv.is_nan() && shown.is_nan()),
                "{name}: metrics.csv {csv}, page {shown}"
            );
        }
    }
}

fn keep(png: &Path, name: &str) {
    if let Ok(dir) = std::env::var("LOSSKIT_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(png, Path::new(&dir).join(name)).unwrap();
    }
}

#[test]
#[ignore = "needs Chromium; .ci/run installs it and runs this with --ignored"]
fn run_and_compare_reports_show_the_numbers_of_metrics_csv() {
    let dir = scratch("reports");
    for (task, extra) in [
        ("classification", &["--limit", "200", "--epochs", "3"][..]),
        ("segmentation", &["--limit", "32", "--epochs", "3"][..]),
        ("regression", &["--limit", "64", "--epochs", "3"][..]),
    ] {
        let run = dir.join(task);
        let mut args = vec![
            "train",
            "--task",
            task,
            "--width",
            "4",
            "--out",
            run.to_str().unwrap(),
            "--progress",
            "quiet",
        ];
        args.extend(extra);
        let output = losskit(&args);
        assert!(output.status.success(), "{}", text(&output));
        let page = run.join("report.html");
        let dom = rendered_dom(&page);
        assert!(
            dom.contains("data-epochs=\"3\""),
            "{task}: three epochs shown"
        );
        assert_eq!(
            dom.matches("<svg").count() >= 3,
            true,
            "{task}: charts in the DOM"
        );
        check_against_metrics_csv(&run, &dom);
        if task == "classification" {
            // The six most confident mistakes of a barely trained classifier.
            assert_eq!(dom.matches("<img").count(), 6, "{task}: previews");
            assert!(dom.contains(", predicted "), "{task}: captions");
        }
        if task == "segmentation" {
            // Three validation images, truth | prediction, inline and under previews/.
            assert_eq!(dom.matches("<img").count(), 3, "{task}: previews");
            assert!(run.join("previews/valid-2.png").exists());
        }
        let png = run.join("report.png");
        screenshot(&page, &png, 1400, 1800);
        keep(&png, &format!("report-{task}.png"));
    }
    // compare: one row per run, each equal to that run's last line of metrics.csv.
    let compare = dir.join("compare");
    let output = losskit(&[
        "compare",
        "--loss",
        "cross_entropy",
        "--loss",
        r#"{"name": "dice", "batch": true}"#,
        "--limit",
        "100",
        "--epochs",
        "2",
        "--width",
        "4",
        "--out",
        compare.to_str().unwrap(),
        "--progress",
        "quiet",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let page = compare.join("report.html");
    let dom = rendered_dom(&page);
    assert!(dom.contains("data-runs=\"2\""));
    let table = &dom[dom.find("id=\"runs\"").unwrap()..];
    for (run, row) in ["1-cross_entropy", "2-dice"]
        .iter()
        .zip(table.split("<tr><th>").skip(2))
    {
        let metrics = std::fs::read_to_string(compare.join(run).join("metrics.csv")).unwrap();
        let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
        let last: Vec<&str> = metrics.lines().last().unwrap().split(',').collect();
        let csv = |name: &str| last[header.iter().position(|h| *h == name).unwrap()];
        let shown: Vec<&str> = row
            .split("data-value=\"")
            .skip(1)
            .map(|cell| &cell[..cell.find('"').unwrap()])
            .collect();
        // val_loss, avg_loss_all_epochs, val_accuracy.
        assert_eq!(
            shown,
            [
                csv("val_loss"),
                csv("avg_loss_all_epochs"),
                csv("val_accuracy")
            ]
        );
    }
    let png = compare.join("report.png");
    screenshot(&page, &png, 1400, 1000);
    keep(&png, "report-compare.png");
    std::fs::remove_dir_all(&dir).unwrap();
}
