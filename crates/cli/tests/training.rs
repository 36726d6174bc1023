//! `losskit train`, `evaluate` and `compare` through the binary: tiny runs (few steps, tiny
//! data) and the error cases, which must fail with one line and write nothing.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use common::{losskit, text};

use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("losskit-cli-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn assert_one_line_error(output: &Output, needle: &str) {
    assert_eq!(output.status.code(), Some(2), "{}", text(output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{}", text(output));
    assert!(stderr.starts_with("losskit: error: "), "{}", text(output));
    assert!(
        stderr.contains(needle),
        "expected `{needle}` in: {}",
        text(output)
    );
}

fn summary(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
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

fn tiny(args: &[&str]) -> Vec<String> {
    args.iter()
        .chain(TINY.iter())
        .map(|s| s.to_string())
        .collect()
}

fn run(args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    losskit(&refs)
}

#[test]
fn classification_trains_resumes_and_evaluates() {
    let dir = scratch("cls");
    let out = dir.join("run");
    let out_s = out.to_str().unwrap();
    let output = run(&tiny(&[
        "train",
        "--epochs",
        "1",
        "--out",
        out_s,
        "--optimizer",
        r#"{"name": "sgd", "lr": 0.05, "momentum": 0.9}"#,
    ]));
    assert!(output.status.success(), "{}", text(&output));
    for file in [
        "checkpoint.lkc",
        "metrics.csv",
        "steps.csv",
        "summary.json",
        "loss.svg",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let first = summary(&out);
    assert_eq!(first["epochs"], 1);
    for key in ["val_loss", "avg_loss_all_epochs", "val_accuracy"] {
        assert!(first[key].is_number(), "{key}: {first}");
    }
    // Without --resume or --force an existing run is not overwritten.
    let again = run(&tiny(&["train", "--epochs", "1", "--out", out_s]));
    assert_one_line_error(&again, "already holds a run");

    // The resumed run's settings are its own: another --loss (and the like) is refused, with
    // the way to change it; the same --loss is accepted below.
    let refused = losskit(&[
        "train", "--resume", "--epochs", "2", "--loss", "focal", "--out", out_s,
    ]);
    assert_one_line_error(&refused, "--loss differs from the run being resumed");
    assert!(String::from_utf8_lossy(&refused.stderr).contains(&format!("--init-from {out_s}")));
    let resumed = losskit(&[
        "train",
        "--resume",
        "--epochs",
        "2",
        "--loss",
        "cross_entropy",
        "--progress",
        "quiet",
        "--out",
        out_s,
    ]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_eq!(summary(&out)["epochs"], 2);
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert_eq!(
        std::fs::read_to_string(out.join("steps.csv"))
            .unwrap()
            .lines()
            .count(),
        7
    );
    assert!(
        std::fs::read_to_string(out.join("loss.svg"))
            .unwrap()
            .starts_with("<svg")
    );

    let evaluated = losskit(&["evaluate", "--checkpoint", out_s]);
    assert!(evaluated.status.success(), "{}", text(&evaluated));
    let report: Value = serde_json::from_slice(&evaluated.stdout).unwrap();
    assert_eq!(report["epoch"], 2);
    assert!(
        report["val_accuracy"].is_number() && report["val_recall"]["eosinophil"].is_number(),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Trains the generated segmentation example with tiny settings into `out`, with `extra`.
fn tiny_segmentation(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--task",
        "segmentation",
        "--limit",
        "8",
        "--batch-size",
        "4",
        "--width",
        "4",
        "--max-steps",
        "2",
        "--progress",
        "quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    losskit(&args)
}

#[test]
fn segmentation_reports_dice_and_iou() {
    let dir = scratch("seg");
    let out = dir.join("run");
    let output = tiny_segmentation(&out, &["--epochs", "1"]);
    assert!(output.status.success(), "{}", text(&output));
    let s = summary(&out);
    assert!(
        s["val_dice"].is_number() && s["val_iou"].is_number() && s["val_loss"].is_number(),
        "{s}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_dice_to_boundary_schedule_trains_and_reports_each_terms_weight_and_value() {
    let dir = scratch("scheduled");
    let out = dir.join("run");
    let loss = r#"{"name": "scheduled", "terms": [
        {"weight": {"start": 1.0, "end": 0.0, "epochs": 2}, "loss": "dice"},
        {"weight": {"start": 0.0, "end": 1.0, "epochs": 2}, "loss": "boundary"}]}"#;
    let output = tiny_segmentation(&out, &["--loss", loss, "--epochs", "3"]);
    assert!(output.status.success(), "{}", text(&output));
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let mut rows = metrics.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let column = |name: &str| -> Vec<f64> {
        let at = header
            .iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"));
        metrics
            .lines()
            .skip(1)
            .map(|row| row.split(',').nth(at).unwrap().parse().unwrap())
            .collect()
    };
    assert_eq!(column("train_term_dice_weight"), [1.0, 0.5, 0.0]);
    assert_eq!(column("val_term_boundary_weight"), [0.0, 0.5, 1.0]);
    assert_eq!(column("train_term_boundary")[0], 0.0);
    let boundary = column("val_term_boundary");
    assert!(
        boundary[1] != 0.0 && boundary.iter().all(|v| v.is_finite()),
        "{boundary:?}"
    );
    // Its values of different epochs measure different things: the best epoch is the best
    // val_dice, unless --monitor says otherwise.
    assert_eq!(summary(&out)["best"]["metric"], "val_dice");
    // The loss is the sum of its weighted terms, per epoch.
    let (loss, dice) = (column("val_loss"), column("val_term_dice"));
    for epoch in 0..3 {
        assert!(
            (loss[epoch] - dice[epoch] - boundary[epoch]).abs() < 1e-5 * (1.0 + loss[epoch].abs())
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn compare_prints_one_table_and_an_overlaid_plot() {
    let dir = scratch("compare");
    let out = dir.join("cmp");
    let output = run(&tiny(&[
        "compare",
        "--epochs",
        "1",
        "--imbalance",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--loss",
        "cross_entropy",
        "--loss",
        r#"{"name": "focal", "gamma": 2}"#,
    ]));
    assert!(output.status.success(), "{}", text(&output));
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("cross_entropy")
            && table.contains("focal")
            && table.contains("R:eosinophil"),
        "{table}"
    );
    assert!(out.join("compare.svg").is_file() && out.join("compare.json").is_file());
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    assert_eq!(report["runs"].as_array().unwrap().len(), 2);

    // A loss that does not fit the classes fails before any run trains or anything is written.
    let out2 = dir.join("cmp2");
    let output = run(&tiny(&[
        "compare",
        "--epochs",
        "1",
        "--out",
        out2.to_str().unwrap(),
        "--loss",
        "cross_entropy",
        "--loss",
        r#"{"name": "weighted_cross_entropy", "weights": [1, 2]}"#,
    ]));
    assert_one_line_error(&output, "does not fit");
    assert!(!out2.exists(), "the output folder was created");
    let _ = std::fs::remove_dir_all(dir);
}

fn write_png(path: &Path, value: u8, size: u32) {
    let image = image::GrayImage::from_fn(size, size, |x, _| {
        image::Luma([value.wrapping_add((x * 3) as u8)])
    });
    image.save(path).unwrap();
}

#[test]
fn an_image_folder_trains_and_bad_folders_fail_cleanly() {
    let dir = scratch("folder");
    let data = dir.join("data");
    for (class, value) in [("dark", 20u8), ("light", 200u8)] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..5 {
            write_png(&data.join(class).join(format!("{i}.png")), value, 20 + i);
        }
    }
    let out = dir.join("run");
    let output = run(&tiny(&[
        "train",
        "--epochs",
        "1",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(output.status.success(), "{}", text(&output));
    assert!(out.join("summary.json").is_file());

    // A corrupt image: one line naming the file, nothing written.
    std::fs::write(data.join("light").join("broken.png"), b"not a png").unwrap();
    let out2 = dir.join("run2");
    let output = run(&tiny(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
    ]));
    assert_one_line_error(&output, "broken.png");
    assert!(!out2.exists(), "the output folder was created");

    // An empty folder.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let output = run(&tiny(&[
        "train",
        "--data",
        empty.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
    ]));
    assert_one_line_error(&output, "expected one folder per class");
    assert!(!out2.exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_mask_fails_cleanly() {
    let dir = scratch("masks");
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    std::fs::create_dir_all(data.join("masks")).unwrap();
    for i in 0..3 {
        write_png(&data.join("images").join(format!("{i}.png")), 100, 16);
    }
    for i in 0..2 {
        let mask = image::GrayImage::from_fn(16, 16, |x, _| image::Luma([u8::from(x > 8)]));
        mask.save(data.join("masks").join(format!("{i}.png")))
            .unwrap();
    }
    let out = dir.join("run");
    let output = losskit(&[
        "train",
        "--task",
        "segmentation",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_one_line_error(&output, "has no mask");
    assert!(!out.exists());
    // With the mask, it trains.
    let mask = image::GrayImage::from_fn(16, 16, |_, y| image::Luma([u8::from(y > 8)]));
    mask.save(data.join("masks").join("2.png")).unwrap();
    let output = losskit(&[
        "train",
        "--task",
        "segmentation",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "1",
        "--width",
        "4",
        "--progress",
        "quiet",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let _ = std::fs::remove_dir_all(dir);
}

fn idx(path: &Path, dims: &[u32], values: &[u8], gzip: bool) {
    let mut bytes = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(values);
    if gzip {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&bytes).unwrap();
        std::fs::write(path.with_extension("gz"), encoder.finish().unwrap()).unwrap();
    } else {
        std::fs::write(path, bytes).unwrap();
    }
}

#[test]
fn mnist_idx_files_train() {
    let dir = scratch("idx");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (prefix, n, gzip) in [("train", 24u32, true), ("t10k", 10, false)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        let pixels: Vec<u8> = (0..n as usize * 784)
            .map(|i| ((i / 784) % 3 * 100) as u8)
            .collect();
        idx(
            &data.join(format!("{prefix}-images-idx3-ubyte")),
            &[n, 28, 28],
            &pixels,
            gzip,
        );
        idx(
            &data.join(format!("{prefix}-labels-idx1-ubyte")),
            &[n],
            &labels,
            gzip,
        );
    }
    let out = dir.join("run");
    let output = run(&tiny(&[
        "train",
        "--epochs",
        "1",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(summary(&out)["val_recall"].as_object().unwrap().len(), 3);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_options_fail_with_one_line_and_write_nothing() {
    let dir = scratch("errors");
    let out = dir.join("run");
    let out_s = out.to_str().unwrap();
    let output = losskit(&["train", "--optimizer", "adma", "--out", out_s]);
    assert_one_line_error(
        &output,
        "unknown optimizer `adma` (did you mean one of `adam`",
    );
    let output = losskit(&[
        "train",
        "--optimizer",
        r#"{"name": "sgd", "lr": -1}"#,
        "--out",
        out_s,
    ]);
    assert_one_line_error(&output, "option `lr` must be > 0");
    let output = losskit(&["train", "--schedule", "cosin", "--out", out_s]);
    assert_one_line_error(&output, "unknown schedule `cosin`");
    let output = losskit(&["train", "--loss", "mse", "--out", out_s]);
    assert_one_line_error(&output, "does not take class-index targets");
    let output = losskit(&["train", "--loss", "cross_entropyy", "--out", out_s]);
    assert_one_line_error(&output, "unknown loss");
    let output = losskit(&["train", "--resume", "--out", out_s]);
    assert_one_line_error(&output, "--resume");
    assert!(!out.exists(), "the output folder was created");

    // An --out below a regular file cannot be created.
    let file = dir.join("file");
    std::fs::write(&file, b"x").unwrap();
    let blocked = file.join("run");
    let output = run(&tiny(&[
        "train",
        "--epochs",
        "1",
        "--out",
        blocked.to_str().unwrap(),
    ]));
    assert_one_line_error(&output, "--out");

    let output = losskit(&["evaluate", "--checkpoint", file.to_str().unwrap()]);
    assert_one_line_error(&output, "not a losskit checkpoint");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_diverging_run_stops_before_its_checkpoint_and_force_keeps_the_old_run() {
    let dir = scratch("nan");
    let out = dir.join("run");
    let out_s = out.to_str().unwrap();
    let output = run(&tiny(&["train", "--epochs", "1", "--out", out_s]));
    assert!(output.status.success(), "{}", text(&output));
    let before: Vec<Vec<u8>> = ["checkpoint.lkc", "metrics.csv", "summary.json"]
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect();
    // SGD with an absurd learning rate overflows within the first epoch.
    let output = run(&tiny(&[
        "train",
        "--force",
        "--epochs",
        "3",
        "--out",
        out_s,
        "--optimizer",
        r#"{"name": "sgd", "lr": 1e30}"#,
    ]));
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("training stopped"), "{}", text(&output));
    let after: Vec<Vec<u8>> = ["checkpoint.lkc", "metrics.csv", "summary.json"]
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect();
    assert!(before == after, "the earlier run's files changed");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn evaluate_refuses_a_checkpoint_of_another_model() {
    let dir = scratch("other-model");
    let cls = dir.join("cls");
    let seg = dir.join("seg");
    let output = run(&tiny(&[
        "train",
        "--epochs",
        "1",
        "--out",
        cls.to_str().unwrap(),
    ]));
    assert!(output.status.success(), "{}", text(&output));
    let output = losskit(&[
        "train",
        "--task",
        "segmentation",
        "--epochs",
        "1",
        "--limit",
        "4",
        "--batch-size",
        "4",
        "--width",
        "4",
        "--max-steps",
        "1",
        "--progress",
        "quiet",
        "--out",
        seg.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    // The classification weights under the segmentation run's description.
    let mut checkpoint = losskit_optim::Checkpoint::read(&cls.join("checkpoint.lkc")).unwrap();
    checkpoint.meta.run = losskit_optim::Checkpoint::read(&seg.join("checkpoint.lkc"))
        .unwrap()
        .meta
        .run;
    let mixed = dir.join("mixed.lkc");
    checkpoint.write(&mixed).unwrap();
    let output = losskit(&["evaluate", "--checkpoint", mixed.to_str().unwrap()]);
    assert_one_line_error(&output, "holds another model");

    // Data whose classes are not the model's is refused too.
    let data = dir.join("data");
    for class in ["a", "b", "c", "d", "e"] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..3 {
            write_png(&data.join(class).join(format!("{i}.png")), 50, 12);
        }
    }
    let output = losskit(&[
        "evaluate",
        "--checkpoint",
        cls.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_one_line_error(&output, "are not the model's");
    // Data with the model's classes is scored whole, not just a held-out fifth.
    let data = dir.join("cells");
    for class in [
        "erythrocyte",
        "lymphocyte",
        "neutrophil",
        "monocyte",
        "eosinophil",
    ] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..3 {
            write_png(&data.join(class).join(format!("{i}.png")), 50, 12);
        }
    }
    let output = losskit(&[
        "evaluate",
        "--checkpoint",
        cls.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["samples"], 15, "{report}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn compare_takes_long_non_ascii_labels() {
    let dir = scratch("compare-utf8");
    let name = "ééééééééééééééé-fokal-verlust.json";
    std::fs::write(dir.join(name), r#"{"name": "focal", "gamma": 2}"#).unwrap();
    let mut args = tiny(&[
        "compare",
        "--epochs",
        "1",
        "--out",
        "cmp",
        "--loss",
        "cross_entropy",
        "--loss",
        name,
    ]);
    args.retain(|a| a != "--progress" && a != "quiet");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_losskit"))
        .args(&args)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let table = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = table.lines().take(3).collect();
    // The columns line up: every row is as many characters wide as the header.
    let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
    assert!(widths.iter().all(|&w| w == widths[0]), "{table}");
    let svg = std::fs::read_to_string(dir.join("cmp").join("compare.svg")).unwrap();
    assert!(svg.contains("ééééééééééééééé-fokal..."), "{svg}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn masks_with_many_levels_are_refused() {
    let dir = scratch("lossy-masks");
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    std::fs::create_dir_all(data.join("masks")).unwrap();
    for i in 0..3 {
        write_png(&data.join("images").join(format!("{i}.png")), 100, 16);
        // A smoothed mask: a ramp of 16 levels plus one more.
        let mask = image::GrayImage::from_fn(16, 16, |x, y| {
            image::Luma([(x * 10 + u32::from(y == 0)) as u8])
        });
        mask.save(data.join("masks").join(format!("{i}.png")))
            .unwrap();
    }
    let out = dir.join("run");
    let output = losskit(&[
        "train",
        "--task",
        "segmentation",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_one_line_error(&output, "lossless PNG class-index masks");
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_checkpoint_written_before_seeded_initialisation_resumes() {
    // tests/fixtures/checkpoint-v1 was written by losskit before initial weights were drawn
    // from the run's own generator (commit d04d574): `losskit train --limit 40 --batch-size 8
    // --width 4 --max-steps 3 --epochs 1`. The checkpoint format, the run description and the
    // data streams are unchanged, so it resumes: only a new run draws new initial weights.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint-v1");
    let dir = scratch("old-checkpoint");
    let out = dir.join("run");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(fixture.join("checkpoint.lkc"), out.join("checkpoint.lkc")).unwrap();
    let out_s = out.to_str().unwrap();
    let output = losskit(&[
        "train",
        "--resume",
        "--out",
        out_s,
        "--epochs",
        "2",
        "--progress",
        "quiet",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let summary = summary(&out);
    assert_eq!(summary["epochs"], 2, "{summary}");
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "a header and two epochs: {csv}");
    // The first epoch's row is the old run's, as its checkpoint recorded it.
    let old = losskit_optim::Checkpoint::read(&fixture.join("checkpoint.lkc")).unwrap();
    let old_loss = old.meta.stats.epochs[0].train_loss;
    let row = csv.lines().nth(1).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let column = header.iter().position(|c| *c == "train_loss").unwrap();
    let logged: f64 = row.split(',').nth(column).unwrap().parse().unwrap();
    assert!((logged - old_loss).abs() < 1e-6, "{logged} vs {old_loss}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_warm_start_begins_where_its_source_ended_with_another_loss() {
    let dir = scratch("init-from");
    let source = dir.join("source");
    let small = [
        "--limit",
        "200",
        "--batch-size",
        "16",
        "--width",
        "4",
        "--progress",
        "quiet",
    ];
    let with_small = |args: &[&str]| -> Output {
        let all: Vec<&str> = args.iter().chain(small.iter()).copied().collect();
        losskit(&all)
    };
    let output = with_small(&["train", "--epochs", "4", "--out", source.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));
    let source_accuracy = summary(&source)["val_accuracy"].as_f64().unwrap();
    assert!(
        source_accuracy > 0.5,
        "the source run learned: {source_accuracy}"
    );
    // A learning rate too small to move the weights: the first validation shows where the
    // run started (up to the one step's update of batch norm's running statistics).
    let still = r#"{"name": "sgd", "lr": 1e-9}"#;
    let first_accuracy = |extra: &[&str], name: &str| -> (f64, Value) {
        let out = dir.join(name);
        let mut args = vec![
            "train",
            "--epochs",
            "1",
            "--max-steps",
            "1",
            "--loss",
            "focal",
            "--optimizer",
            still,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let output = with_small(&args);
        assert!(output.status.success(), "{}", text(&output));
        let s = summary(&out);
        (s["val_accuracy"].as_f64().unwrap(), s)
    };
    let source_dir = source.to_str().unwrap();
    let (warm, warm_summary) = first_accuracy(&["--init-from", source_dir], "warm");
    let (fresh, _) = first_accuracy(&[], "fresh");
    assert!(
        (warm - source_accuracy).abs() < 0.05,
        "warm {warm} vs source {source_accuracy}"
    );
    assert!(
        source_accuracy - fresh > 0.2,
        "fresh {fresh} vs source {source_accuracy}"
    );
    let init = &warm_summary["run"]["init_from"];
    assert_eq!(init["epoch"], 4, "{init}");
    assert_eq!(init["loss"]["name"], "cross_entropy");
    // The model must fit: another width, or another task, is refused before anything runs.
    let other_width = losskit(&[
        "train",
        "--epochs",
        "1",
        "--init-from",
        source_dir,
        "--width",
        "6",
        "--limit",
        "200",
        "--out",
        dir.join("wide").to_str().unwrap(),
    ]);
    assert_one_line_error(&other_width, "width 4 there, 6 here");
    assert!(!dir.join("wide").exists());
    let other_task = losskit(&[
        "train",
        "--task",
        "segmentation",
        "--init-from",
        source_dir,
        "--out",
        dir.join("seg").to_str().unwrap(),
    ]);
    assert_one_line_error(&other_task, "a warm start needs the same task");
    let both = losskit(&[
        "train",
        "--resume",
        "--init-from",
        source_dir,
        "--out",
        source_dir,
    ]);
    assert_one_line_error(&both, "--init-from starts a new run");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn patience_stops_early_and_the_best_checkpoint_holds_the_best_epoch() {
    let dir = scratch("patience");
    let out = dir.join("run");
    let out_s = out.to_str().unwrap();
    let output = run(&tiny(&[
        "train",
        "--epochs",
        "12",
        "--patience",
        "1",
        "--monitor",
        "val_accuracy",
        "--out",
        out_s,
        "--optimizer",
        r#"{"name": "sgd", "lr": 0.2, "momentum": 0.9}"#,
    ]));
    assert!(output.status.success(), "{}", text(&output));
    let s = summary(&out);
    assert_eq!(s["stopped_early"], true, "{s}");
    let epochs = s["epochs"].as_u64().unwrap();
    let best_epoch = s["best"]["epoch"].as_u64().unwrap();
    assert!(epochs < 12 && best_epoch + 1 == epochs, "{s}");
    // Evaluating each checkpoint reproduces its epoch's validation accuracy.
    let evaluate = |file: &str| -> Value {
        let output = losskit(&["evaluate", "--checkpoint", out.join(file).to_str().unwrap()]);
        assert!(output.status.success(), "{}", text(&output));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let best = evaluate("best.lkc");
    assert_eq!(best["epoch"], best_epoch);
    assert_eq!(best["val_accuracy"], s["best"]["value"]);
    let last = evaluate("checkpoint.lkc");
    assert_eq!(last["epoch"], epochs);
    assert!(last["val_accuracy"].as_f64() <= best["val_accuracy"].as_f64());
    let bad_monitor = run(&tiny(&[
        "train",
        "--monitor",
        "val_dice",
        "--out",
        dir.join("m").to_str().unwrap(),
    ]));
    assert_one_line_error(
        &bad_monitor,
        "a classification run reports val_loss, val_accuracy",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_run_folders_config_toml_trains_the_same_run_again_and_flags_override_it() {
    let dir = scratch("config");
    let first = dir.join("first");
    let output = run(&tiny(&[
        "train",
        "--epochs",
        "2",
        "--loss",
        r#"{"name": "focal", "gamma": 1.5}"#,
        "--optimizer",
        r#"{"name": "sgd", "lr": 0.05, "momentum": 0.9}"#,
        "--schedule",
        r#"{"name": "cosine", "warmup_steps": 2}"#,
        "--patience",
        "5",
        "--out",
        first.to_str().unwrap(),
    ]));
    assert!(output.status.success(), "{}", text(&output));
    let config = first.join("config.toml");
    let toml_text = std::fs::read_to_string(&config).unwrap();
    for line in ["epochs = 2", "seed = 42", "patience = 5", "limit = 40"] {
        assert!(toml_text.contains(line), "{line} in {toml_text}");
    }
    let rows = |out: &Path| -> Vec<String> {
        let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let seconds = header.iter().position(|c| *c == "seconds").unwrap();
        csv.lines()
            .map(|l| {
                let mut cells: Vec<&str> = l.split(',').collect();
                cells.remove(seconds);
                cells.join(",")
            })
            .collect()
    };
    let again = dir.join("again");
    let output = losskit(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--progress",
        "quiet",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(rows(&first), rows(&again), "same config, same numbers");
    assert_eq!(summary(&again)["run"], summary(&first)["run"]);
    // A flag overrides the file.
    let longer = dir.join("longer");
    let output = losskit(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--epochs",
        "3",
        "--progress",
        "quiet",
        "--out",
        longer.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(summary(&longer)["epochs"], 3);
    // The first epoch is the same run's (the cosine schedule then spans three epochs).
    assert_eq!(rows(&longer)[..2], rows(&first)[..2]);
    // A key that is not a setting is named, with the closest one.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "epoch = 3\nloss = \"dice\"\n").unwrap();
    let output = losskit(&[
        "train",
        "--config",
        bad.to_str().unwrap(),
        "--out",
        dir.join("x").to_str().unwrap(),
    ]);
    assert_one_line_error(&output, "unknown key `epoch`; did you mean `epochs`?");
    assert!(!dir.join("x").exists());
    let _ = std::fs::remove_dir_all(dir);
}

/// An overlap loss per sample on the classifier gets a warning that says why it trains poorly
/// there and what trains well; the batch form and a zero `smooth_nr` get none.
#[test]
fn per_sample_dice_on_the_classifier_is_warned_about() {
    let dir = scratch("dice-advice");
    for (loss, warned) in [
        ("dice", true),
        (r#"{"name": "tversky", "alpha": 0.3, "beta": 0.7}"#, true),
        (r#"{"name": "dice", "batch": true}"#, false),
        (r#"{"name": "dice", "smooth_nr": 0}"#, false),
        ("cross_entropy", false),
    ] {
        let out = dir.join("run");
        let mut args = tiny(&["train", "--loss", loss, "--epochs", "1", "--force"]);
        args.extend(["--out".to_string(), out.display().to_string()]);
        let output = run(&args);
        assert!(output.status.success(), "{loss}: {}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.contains("losskit: warning:")
                && stderr.contains("per sample on the classifier's [N, C]")
                && stderr.contains("\"batch\": true"),
            warned,
            "{loss}: {stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
