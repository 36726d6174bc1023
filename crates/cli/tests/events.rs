//! The run's events through the binary: `events.jsonl` agrees with `steps.csv` and
//! `metrics.csv`, a resumed run appends and `--force` starts anew, a run killed with SIGKILL
//! leaves only whole lines, and `RUST_LOG` / `-v` show the diagnostics (the loss built, the
//! device chosen) through `tracing`.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{losskit, text};
use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    common::scratch("events", name)
}

/// The complete lines of `events.jsonl` (a last line without its newline is left out), each
/// of which must parse.
fn events(run: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Equal up to serde_json's float parsing (not correctly rounded without its
/// `float_roundtrip` feature: the last digit can differ).
fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

const TINY: [&str; 10] = [
    "--limit",
    "40",
    "--batch-size",
    "8",
    "--width",
    "4",
    "--progress",
    "quiet",
    "--max-steps",
    "3",
];

fn train(run: &Path, extra: &[&str]) {
    let mut args = vec!["train", "--out", run.to_str().unwrap()];
    args.extend(extra);
    args.extend(TINY);
    let output = losskit(&args);
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn events_match_the_reports_resume_appends_and_force_starts_anew() {
    let dir = scratch("log");
    let run = dir.join("run");
    train(&run, &["--epochs", "2"]);
    let log = events(&run);
    assert_eq!(log[0]["event"], "run_start");
    assert_eq!(log[0]["resume"], false);
    assert_eq!(log.last().unwrap()["event"], "run_end");
    // Every step of steps.csv, in order, with its loss.
    let steps = std::fs::read_to_string(run.join("steps.csv")).unwrap();
    let step_losses: Vec<f64> = steps
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    let step_events = of_kind(&log, "step");
    assert_eq!(step_events.len(), step_losses.len());
    for (event, loss) in step_events.iter().zip(&step_losses) {
        assert!(
            same(event["loss"].as_f64().unwrap(), *loss),
            "{event} vs {loss}"
        );
    }
    // Every epoch of metrics.csv, with its losses and accuracy.
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let epoch_events = of_kind(&log, "epoch");
    assert_eq!(epoch_events.len(), 2);
    for (event, row) in epoch_events.iter().zip(metrics.lines().skip(1)) {
        let cells: Vec<&str> = row.split(',').collect();
        let cell = |name: &str| cells[column(name)].parse::<f64>().unwrap();
        assert!(same(event["val_loss"].as_f64().unwrap(), cell("val_loss")));
        assert!(same(
            event["train_loss"].as_f64().unwrap(),
            cell("train_loss")
        ));
        assert!(same(
            event["val_metrics"]["accuracy"].as_f64().unwrap(),
            cell("val_accuracy")
        ));
    }
    assert_eq!(of_kind(&log, "checkpoint").len(), 2);
    // A resumed run appends, from where it stood.
    let output = losskit(&[
        "train",
        "--resume",
        "--out",
        run.to_str().unwrap(),
        "--epochs",
        "3",
        "--progress",
        "quiet",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let resumed = events(&run);
    assert_eq!(
        resumed[..log.len()],
        log[..],
        "the earlier lines stay as they were"
    );
    let starts = of_kind(&resumed, "run_start");
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[1]["resume"], true);
    assert_eq!(starts[1]["from_epoch"], 2);
    assert_eq!(of_kind(&resumed, "epoch").len(), 3);
    // The reports are the fold of the events: replaying the log gives them to the byte.
    let replayed =
        losskit_optim::replay(&std::fs::read_to_string(run.join("events.jsonl")).unwrap());
    assert!(replayed.bad_lines.is_empty(), "{:?}", replayed.bad_lines);
    assert_eq!(replayed.end, Some(Ok(())));
    assert_eq!(replayed.stats.epochs.len(), 3);
    for file in ["metrics.csv", "steps.csv"] {
        let written = std::fs::read_to_string(run.join(file)).unwrap();
        let from_events = if file == "metrics.csv" {
            replayed.stats.metrics_csv()
        } else {
            replayed.stats.steps_csv()
        };
        assert_eq!(from_events, written, "{file}");
    }
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        replayed
            .stats
            .summary(&replayed.start.as_ref().unwrap().run),
        summary
    );
    // --force replaces the run: its log starts anew.
    train(&run, &["--epochs", "1", "--force"]);
    let replaced = events(&run);
    assert_eq!(of_kind(&replaced, "run_start").len(), 1);
    assert_eq!(of_kind(&replaced, "epoch").len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_killed_with_sigkill_leaves_whole_lines() {
    let dir = scratch("kill");
    let run = dir.join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_losskit"))
        .args([
            "train",
            "--epochs",
            "50",
            "--limit",
            "400",
            "--batch-size",
            "8",
            "--width",
            "4",
            "--progress",
            "quiet",
            "--out",
            run.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the log to show the first epoch written (its state, not a sleep's length).
    let started = Instant::now();
    while !run.join("events.jsonl").exists() || of_kind(&events(&run), "checkpoint").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint event after 300 s"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: nothing runs after it.
    child.wait().unwrap();
    let log = events(&run);
    assert_eq!(log[0]["event"], "run_start");
    assert!(
        of_kind(&log, "run_end").is_empty(),
        "a killed run has no end"
    );
    assert!(!of_kind(&log, "epoch").is_empty());
    // The report is whole (written atomically, like every report).
    let report = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(report.starts_with("<!DOCTYPE html>") && report.trim_end().ends_with("</html>"));
    // The checkpoint it points to loads.
    let checkpoint = of_kind(&log, "checkpoint")[0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    losskit_optim::Checkpoint::read(Path::new(&checkpoint)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rust_log_and_verbose_show_the_loss_built_and_the_device_chosen() {
    let dir = scratch("diagnostics");
    let run = dir.join("run");
    let mut args = vec!["train", "--epochs", "1", "--out", run.to_str().unwrap()];
    args.extend(TINY);
    let output = Command::new(env!("CARGO_BIN_EXE_losskit"))
        .args(&args)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("losskit: debug: losskit::registry: building loss `cross_entropy`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("losskit: debug: losskit::device: device `cpu` (the default)"),
        "{stderr}"
    );
    assert!(stderr.contains(r#""event":"epoch""#), "{stderr}");
    // Training events name their run and epoch (tracing spans).
    assert!(
        stderr.contains("losskit: debug: losskit::train: run{out=")
            && stderr.contains("task=classification}: epoch{epoch=1}: {"),
        "{stderr}"
    );
    // Without RUST_LOG: only what a run always says (here nothing: --progress quiet).
    std::fs::remove_dir_all(&run).unwrap();
    let quiet = Command::new(env!("CARGO_BIN_EXE_losskit"))
        .args(&args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(quiet.status.success(), "{}", text(&quiet));
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
    // -v is debug for losskit's own targets; a bad RUST_LOG is a warning, not a failure.
    std::fs::remove_dir_all(&run).unwrap();
    let mut verbose = args.clone();
    verbose.push("-v");
    let output = Command::new(env!("CARGO_BIN_EXE_losskit"))
        .args(&verbose)
        .env("RUST_LOG", "=not a filter=")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("building loss `cross_entropy`"), "{stderr}");
    std::fs::remove_dir_all(&run).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_losskit"))
        .args(&args)
        .env("RUST_LOG", "=not a filter=")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("losskit: warning: RUST_LOG `=not a filter=`"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
