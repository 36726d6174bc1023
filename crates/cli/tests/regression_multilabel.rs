//! Regression and multi-label classification through the binary: a table of numeric features
//! (the MLP, reported beside linear least squares), a table naming images (the CNN), the
//! generated cell counts and cell-type labels, a label table, `compare` across regression
//! losses, and metrics that agree with the predictions they are computed from.

mod common;

use std::path::{Path, PathBuf};

use common::{losskit, text};
use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    common::scratch("regml", name)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn run_ok(args: &[&str]) -> String {
    let output = losskit(args);
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A deterministic uniform draw in [-1, 1) (a 64-bit LCG; the test needs no RNG crate).
fn noise(state: &mut u64) -> f64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// `y = 3a − 2b + 40 + small noise`, with a constant column `c` (standardising must not divide
/// by zero) and values in the hundreds (the target scaling must handle any unit).
fn linear_table(path: &Path, rows: usize) {
    let mut state = 7u64;
    let mut csv = String::from("a,b,c,y\n");
    for _ in 0..rows {
        let a = noise(&mut state) * 50.0;
        let b = noise(&mut state) * 30.0 + 100.0;
        let y = 3.0 * a - 2.0 * b + 40.0 + noise(&mut state);
        csv.push_str(&format!("{a:.4},{b:.4},1,{y:.4}\n"));
    }
    std::fs::write(path, csv).unwrap();
}

/// (target, prediction) pairs of `val_predictions.csv`.
fn predictions(run: &Path) -> Vec<(f64, f64)> {
    let text = std::fs::read_to_string(run.join("val_predictions.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("target,prediction"));
    lines
        .map(|line| {
            let (t, p) = line.split_once(',').unwrap();
            (t.parse().unwrap(), p.parse().unwrap())
        })
        .collect()
}

#[test]
fn a_numeric_table_trains_the_mlp_and_its_metrics_match_its_predictions() {
    let dir = scratch("table");
    let table = dir.join("linear.csv");
    linear_table(&table, 100);
    let run = dir.join("run");
    let stdout = run_ok(&[
        "train",
        "--task",
        "regression",
        "--data",
        table.to_str().unwrap(),
        "--target",
        "y",
        "--out",
        run.to_str().unwrap(),
        "--progress",
        "quiet",
    ]);
    let baseline: f64 = stdout
        .split("linear least squares on the same split: val_r2 ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no baseline in {stdout}"));
    assert!(baseline > 0.99, "{stdout}");
    let summary = json(&run.join("summary.json"));
    assert_eq!(summary["task"], "regression");
    assert_eq!(summary["target"], "y");
    let r2 = summary["val_r2"].as_f64().unwrap();
    assert!(r2 > 0.95, "the MLP should fit a linear target: val_r2 {r2}");
    assert!(summary["run"]["linear_r2"].as_f64().unwrap() > 0.99);
    assert!(summary.get("val_accuracy").is_none(), "{summary}");
    // The reported numbers are those of the predictions written beside them.
    let pairs = predictions(&run);
    assert_eq!(pairs.len(), 20, "20 % of 100 rows are held out");
    let n = pairs.len() as f64;
    let mean = pairs.iter().map(|(t, _)| t).sum::<f64>() / n;
    let sse: f64 = pairs.iter().map(|(t, p)| (t - p).powi(2)).sum();
    let sst: f64 = pairs.iter().map(|(t, _)| (t - mean).powi(2)).sum();
    let mae = pairs.iter().map(|(t, p)| (t - p).abs()).sum::<f64>() / n;
    let coverage = pairs.iter().filter(|(t, p)| t <= p).count() as f64 / n;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
    assert!(close(summary["val_r2"].as_f64().unwrap(), 1.0 - sse / sst));
    assert!(close(summary["val_mae"].as_f64().unwrap(), mae));
    assert!(close(
        summary["val_rmse"].as_f64().unwrap(),
        (sse / n).sqrt()
    ));
    assert!(close(summary["val_coverage"].as_f64().unwrap(), coverage));
    // The targets are in the table's units, not the trained (standardised) ones.
    assert!(pairs.iter().any(|(t, _)| t.abs() > 50.0), "{pairs:?}");
    let svg = std::fs::read_to_string(run.join("pred_vs_true.svg")).unwrap();
    assert_eq!(
        svg.matches("<circle").count(),
        20,
        "one dot per validation row"
    );
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(
        metrics.starts_with(
            "epoch,train_loss,avg_loss_all_epochs,val_loss,train_mae,val_mae,val_rmse,train_r2,val_r2,val_coverage,lr,seconds\n"
        ),
        "{metrics}"
    );
    // 80 training rows are 3 steps an epoch: 120 epochs make the default 360 steps.
    assert_eq!(metrics.lines().count(), 121);
    // The checkpoint (NaN accuracy and all) reads back: resume trains on, evaluate agrees.
    run_ok(&[
        "train",
        "--resume",
        "--out",
        run.to_str().unwrap(),
        "--epochs",
        "121",
        "--progress",
        "quiet",
    ]);
    let resumed = json(&run.join("summary.json"));
    assert_eq!(resumed["epochs"], 121);
    let evaluated: Value = serde_json::from_str(&run_ok(&[
        "evaluate",
        "--checkpoint",
        run.to_str().unwrap(),
    ]))
    .expect("evaluate prints JSON");
    assert!(
        close(
            evaluated["val_r2"].as_f64().unwrap(),
            resumed["val_r2"].as_f64().unwrap()
        ),
        "{evaluated} vs {resumed}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compare_puts_regression_losses_side_by_side_with_coverage() {
    let dir = scratch("compare");
    let table = dir.join("linear.csv");
    linear_table(&table, 60);
    let out = dir.join("compare");
    let stdout = run_ok(&[
        "compare",
        "--task",
        "regression",
        "--data",
        table.to_str().unwrap(),
        "--target",
        "y",
        "--loss",
        "mse",
        "--loss",
        "huber",
        "--loss",
        r#"{"name": "quantile", "quantile": 0.9}"#,
        "--epochs",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--progress",
        "quiet",
    ]);
    assert!(stdout.contains("MAE") && stdout.contains("R2") && stdout.contains("COVERAGE"));
    let compare = json(&out.join("compare.json"));
    let runs = compare["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for run in runs {
        for key in ["val_mae", "val_rmse", "val_r2", "val_coverage"] {
            assert!(run[key].is_f64(), "{key} in {run}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A table as R's `write.csv` writes it (row names in an unnamed first column, text quoted,
/// `NA` for missing values) with an identifier column: `--exclude` leaves the identifier out,
/// `--missing drop` the rows with an `NA`, and both are kept in the run's config.toml, so the
/// run resumes and trains again as it was.
#[test]
fn tables_as_r_and_pandas_write_them_train_with_exclude_and_missing_drop() {
    let dir = scratch("rtable");
    let table = dir.join("r.csv");
    let mut state = 11u64;
    let mut csv = String::from("\"\",\"id\",\"a\",\"b\",\"y\"\n");
    for row in 0..60 {
        let a = noise(&mut state) * 10.0;
        let b = noise(&mut state) * 5.0;
        let y = 2.0 * a + b + noise(&mut state) * 0.1;
        // Rows 0, 7, 14, …: one NA each, in a feature or in the target.
        let cell = |value: f64, column: usize| {
            if row % 7 == 0 && row % 3 == column {
                "NA".to_string()
            } else {
                format!("{value:.4}")
            }
        };
        csv.push_str(&format!(
            "\"{}\",\"id-{row}\",{},{},{}\n",
            row + 1,
            cell(a, 0),
            cell(b, 1),
            cell(y, 2)
        ));
    }
    std::fs::write(&table, csv).unwrap();
    let run = dir.join("run");
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut args: Vec<&str> = vec![
            "train",
            "--task",
            "regression",
            "--data",
            table.to_str().unwrap(),
            "--target",
            "y",
            "--out",
            run.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect()
    };
    let call = |extra: &[&'static str]| {
        let args = args(extra);
        losskit(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let refused = call(&[]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("line 2, column `a`: `NA` is a missing value; 9 of 60 rows"),
        "{stderr}"
    );
    let refused = call(&["--missing", "drop"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("line 3, column `id` holds text (`id-1`)")
            && stderr.contains("--exclude id"),
        "{stderr}"
    );
    assert!(!run.exists(), "a refused run writes nothing");
    let trained = call(&["--exclude", "id", "--missing", "drop"]);
    assert!(trained.status.success(), "{}", text(&trained));
    let stderr = String::from_utf8_lossy(&trained.stderr);
    assert!(
        stderr.contains("2 numeric features, target `y`; row names left out; excluded: id; 9 rows with a missing value left out"),
        "{stderr}"
    );
    assert_eq!(predictions(&run).len(), 10, "20 % of the 51 complete rows");
    let summary = json(&run.join("summary.json"));
    assert!(summary["val_r2"].as_f64().unwrap() > 0.9, "{summary}");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        config.contains("exclude = [\"id\"]") && config.contains("missing = \"drop\""),
        "{config}"
    );
    // The config trains the same run again; --resume keeps the reading.
    let again = dir.join("again");
    run_ok(&[
        "train",
        "--config",
        run.join("config.toml").to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
        "--progress",
        "quiet",
    ]);
    assert_eq!(
        std::fs::read_to_string(again.join("val_predictions.csv")).unwrap(),
        std::fs::read_to_string(run.join("val_predictions.csv")).unwrap()
    );
    run_ok(&[
        "train",
        "--resume",
        "--out",
        run.to_str().unwrap(),
        "--epochs",
        "181",
        "--progress",
        "quiet",
    ]);
    assert_eq!(json(&run.join("summary.json"))["epochs"], 181);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Gray images whose brightness is `value`, with a label per image.
fn image(path: &Path, value: u8, striped: bool) {
    image::GrayImage::from_fn(20, 20, |x, _| {
        image::Luma([if striped && x % 4 < 2 { 255 } else { value }])
    })
    .save(path)
    .unwrap();
}

#[test]
fn tables_naming_images_train_regression_and_multilabel() {
    let dir = scratch("images");
    let mut targets = String::from("file,brightness\n");
    let mut labels = String::from("file,labels\n");
    let mut one_hot = String::from("file,bright,striped\n");
    for i in 0..20u8 {
        let (bright, striped) = (i % 2 == 0, i % 3 == 0);
        let value = if bright { 180 } else { 40 } + i;
        image(&dir.join(format!("{i}.png")), value, striped);
        targets.push_str(&format!("{i}.png,{value}\n"));
        let names: Vec<&str> = [("bright", bright), ("striped", striped)]
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| n)
            .collect();
        labels.push_str(&format!("{i}.png,{}\n", names.join(";")));
        one_hot.push_str(&format!(
            "{i}.png,{},{}\n",
            u8::from(bright),
            u8::from(striped)
        ));
    }
    std::fs::write(dir.join("targets.csv"), targets).unwrap();
    std::fs::write(dir.join("labels.csv"), labels).unwrap();
    std::fs::write(dir.join("one_hot.csv"), one_hot).unwrap();
    let tiny = ["--epochs", "1", "--width", "4", "--progress", "quiet"];
    let regression = dir.join("regression");
    let mut args = vec![
        "train",
        "--task",
        "regression",
        "--data",
        dir.to_str().unwrap(),
        "--target",
        "brightness",
        "--out",
        regression.to_str().unwrap(),
    ];
    args.extend(tiny);
    run_ok(&args);
    let summary = json(&regression.join("summary.json"));
    assert!(summary["val_r2"].is_f64(), "{summary}");
    assert_eq!(summary["run"]["data"]["source"], "table");
    assert_eq!(summary["run"]["data"]["size"], 20, "the images' own side");
    assert_eq!(predictions(&regression).len(), 4);
    for (table, name) in [("labels.csv", "names"), ("one_hot.csv", "one_hot")] {
        let out = dir.join(name);
        let mut args = vec![
            "train",
            "--task",
            "multilabel",
            "--data",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        let table = dir.join(table);
        if name == "one_hot" {
            args[4] = table.to_str().unwrap();
        }
        args.extend(tiny);
        run_ok(&args);
        let summary = json(&out.join("summary.json"));
        assert_eq!(summary["task"], "multilabel");
        let f1 = summary["val_label_f1"].as_object().unwrap();
        assert_eq!(
            f1.keys().collect::<Vec<_>>(),
            ["bright", "striped"],
            "{summary}"
        );
        assert!(summary["val_map"].is_f64() || summary["val_map"].is_null());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_generated_counts_and_labels_train() {
    let dir = scratch("generated");
    for (task, keys) in [
        (
            "regression",
            &["val_mae", "val_rmse", "val_r2", "val_coverage"][..],
        ),
        ("multilabel", &["val_f1", "val_map", "val_accuracy"][..]),
    ] {
        let out = dir.join(task);
        let stdout = run_ok(&[
            "train",
            "--task",
            task,
            "--limit",
            "64",
            "--epochs",
            "1",
            "--width",
            "4",
            "--out",
            out.to_str().unwrap(),
            "--progress",
            "quiet",
        ]);
        let summary = json(&out.join("summary.json"));
        for key in keys {
            assert!(summary[key].is_f64(), "{task}: {key} in {summary}");
        }
        for key in keys {
            assert!(stdout.contains(key), "{task}: {key} in {stdout}");
        }
    }
    let metrics = std::fs::read_to_string(dir.join("multilabel/metrics.csv")).unwrap();
    let header = metrics.lines().next().unwrap();
    for column in ["val_f1", "val_map", "val_f1_eosinophil", "val_ap_monocyte"] {
        assert!(
            header.split(',').any(|c| c == column),
            "{column} in {header}"
        );
    }
    // One epoch of a width-4 model gets labels wrong: the surest mistakes are the previews,
    // each captioned with the labels shown and predicted.
    let report = std::fs::read_to_string(dir.join("multilabel/report.html")).unwrap();
    assert!(
        dir.join("multilabel/previews/mistake-1.png").exists(),
        "multi-label previews"
    );
    assert!(
        report.contains("validation image") && report.contains("surest wrong label at p = "),
        "the captions in report.html"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
