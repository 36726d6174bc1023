//! The fault matrix: every kind of bad input `losskit` reads (loss specs, config files, `.npy`
//! tensors, image and mask folders, checkpoints, output folders), each run through the binary.
//! Every fault must end with a non-zero exit, one line `losskit: error: …` naming the problem,
//! no panic text, and no partial output. Then the faults of a running training: a full disk
//! (a file-size limit) and Ctrl-C, after which the last checkpoint loads and `--resume` goes on.

use std::{
    ffi::OsString,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use losskit_cli::npy::encode_f32;
use serde_json::Value;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("losskit-faults-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn losskit<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    Command::new(env!("CARGO_BIN_EXE_losskit"))
        .args(args.into_iter().map(Into::into))
        .stdin(Stdio::null())
        .output()
        .expect("the losskit binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}, stdout {:?}, stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A `.npy` file: `descr` such as `<f4`, the data already in that encoding and order.
fn npy(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = match dims.as_slice() {
        [one] => format!("({one},)"),
        _ => format!("({})", dims.join(", ")),
    };
    let order = if fortran { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn indices(shape: &[usize], values: &[i64]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy("<i8", false, shape, &data)
}

fn write_png(path: &Path, value: u8, width: u32, height: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_fn(width, height, |x, _| {
        image::Luma([value.wrapping_add((x * 3) as u8)])
    })
    .save(path)
    .unwrap();
}

fn write_mask(path: &Path, size: u32, classes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_fn(size, size, |x, _| {
        image::Luma([classes[(x as usize * classes.len()) / size as usize]])
    })
    .save(path)
    .unwrap();
}

/// A PNG whose header claims `side`×`side` pixels (a decompression bomb's calling card).
fn huge_png(side: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut crc = flate2::Crc::new();
    crc.update(&ihdr);
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(&13u32.to_be_bytes());
    bytes.extend_from_slice(&ihdr);
    bytes.extend_from_slice(&crc.sum().to_be_bytes());
    bytes
}

/// Two classes of small gray images, five each.
fn class_folder(root: &Path) {
    for (class, value) in [("dark", 20u8), ("light", 200u8)] {
        for i in 0..5 {
            write_png(&root.join(class).join(format!("{i}.png")), value, 16, 16);
        }
    }
}

/// Three images with their class-index masks (two classes).
fn mask_folder(root: &Path) {
    for i in 0..3 {
        write_png(&root.join("images").join(format!("{i}.png")), 90, 16, 16);
        write_mask(&root.join("masks").join(format!("{i}.png")), 16, &[0, 1]);
    }
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

fn train_args(extra: &[&OsString]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["train".into(), "--epochs".into(), "1".into()];
    args.extend(extra.iter().map(|a| (*a).clone()));
    args.extend(TINY.iter().map(OsString::from));
    args
}

/// `train --resume`: the run's settings come from its checkpoint.
fn resume_args(out: &Path, epochs: usize) -> Vec<OsString> {
    vec![
        "train".into(),
        "--resume".into(),
        "--out".into(),
        os(out),
        "--epochs".into(),
        epochs.to_string().into(),
        "--progress".into(),
        "quiet".into(),
    ]
}

fn os(path: &Path) -> OsString {
    path.as_os_str().to_owned()
}

struct Fault {
    name: &'static str,
    args: Vec<OsString>,
    /// Text the one-line message must contain (the file, option, shape or index at fault).
    expect: &'static str,
    /// Paths that must not exist afterwards (no partial output).
    not_written: Vec<PathBuf>,
}

fn check(fault: &Fault) -> Result<(), String> {
    let output = losskit(&fault.args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let problems: Vec<&str> = [
        (output.status.code() != Some(2), "exit status is not 2"),
        (lines.len() != 1, "not exactly one line on stderr"),
        (
            !lines
                .first()
                .is_some_and(|l| l.starts_with("losskit: error: ")),
            "no `losskit: error:` prefix",
        ),
        (
            !stderr.contains(fault.expect),
            "the expected text is missing",
        ),
        (
            stderr.contains("panicked") || stderr.contains("internal error"),
            "a panic",
        ),
        (
            fault.not_written.iter().any(|p| p.exists()),
            "partial output was written",
        ),
    ]
    .into_iter()
    .filter_map(|(bad, what)| bad.then_some(what))
    .collect();
    if problems.is_empty() {
        eprintln!("{:<50} {}", fault.name, stderr.trim_end());
        Ok(())
    } else {
        Err(format!(
            "{}: {} (expected `{}`); {}",
            fault.name,
            problems.join(", "),
            fault.expect,
            text(&output)
        ))
    }
}

/// A finished tiny classification run in `out`.
fn trained_run(out: &Path) {
    let output = losskit(train_args(&[&"--out".into(), &os(out)]));
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn every_fault_fails_with_one_line_and_writes_nothing() {
    let s = Scratch::new("matrix");
    let output = s.file(
        "output.npy",
        &encode_f32(&[2, 3], &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
    );
    let target = s.file("target.npy", &indices(&[2], &[0, 2]));
    let grad = s.path("grad.npy");
    let eval = |loss: &str, output: &Path, target: &Path| -> Vec<OsString> {
        vec![
            "compute".into(),
            "--loss".into(),
            loss.into(),
            "--output".into(),
            os(output),
            "--target".into(),
            os(target),
            "--grad".into(),
            os(&grad),
        ]
    };
    let f32s =
        |values: &[f32]| -> Vec<u8> { values.iter().flat_map(|v| v.to_le_bytes()).collect() };
    let out = s.path("run");
    let full_f32 = encode_f32(&[2, 3], &[0.0; 6]);

    // Image folders.
    let folder = s.path("folder");
    class_folder(&folder);
    let corrupt = s.path("corrupt");
    class_folder(&corrupt);
    s.file("corrupt/light/broken.png", b"\x89PNG\r\n\x1a\nnot really");
    let zero_byte = s.path("zero-byte");
    class_folder(&zero_byte);
    s.file("zero-byte/dark/empty.png", b"");
    let bomb = s.path("bomb");
    class_folder(&bomb);
    s.file("bomb/dark/huge.png", &huge_png(200_000));
    let empty = s.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let empty_class = s.path("empty-class");
    class_folder(&empty_class);
    std::fs::create_dir_all(empty_class.join("nothing")).unwrap();
    // Masks.
    let wrong_size = s.path("mask-size");
    mask_folder(&wrong_size);
    write_mask(&wrong_size.join("masks/1.png"), 12, &[0, 1]);
    let out_of_range = s.path("mask-range");
    mask_folder(&out_of_range);
    write_mask(&out_of_range.join("masks/2.png"), 16, &[0, 1, 7]);
    let no_mask = s.path("mask-missing");
    mask_folder(&no_mask);
    std::fs::remove_file(no_mask.join("masks/0.png")).unwrap();
    let corrupt_tiff = s.path("mask-tiff");
    mask_folder(&corrupt_tiff);
    s.file(
        "mask-tiff/images/3.tif",
        b"II*\0\x08\0\0\0not a real directory",
    );
    write_mask(&corrupt_tiff.join("masks/3.png"), 16, &[0, 1]);
    let seg_bomb = s.path("mask-bomb");
    mask_folder(&seg_bomb);
    s.file("mask-bomb/images/bomb.png", &huge_png(200_000));
    write_mask(&seg_bomb.join("masks/bomb.png"), 16, &[0, 1]);
    let stray_colour = s.path("mask-colour");
    std::fs::create_dir_all(stray_colour.join("masks")).unwrap();
    for i in 0..3 {
        write_png(
            &stray_colour.join("images").join(format!("{i}.png")),
            90,
            16,
            16,
        );
        let colour = if i == 2 { [7, 7, 200] } else { [255, 0, 0] };
        image::RgbImage::from_fn(16, 16, |x, _| {
            image::Rgb(if x < 8 { [0, 0, 0] } else { colour })
        })
        .save(stray_colour.join("masks").join(format!("{i}.png")))
        .unwrap();
    }
    s.file(
        "mask-colour/classes.json",
        br#"{"classes": [{"name": "background", "color": [0, 0, 0]}, {"name": "cell", "color": [255, 0, 0]}]}"#,
    );
    let folder_of_masks = s.path("mask-folder");
    mask_folder(&folder_of_masks);
    let seg_args = |root: &Path, extra: &[&str]| -> Vec<OsString> {
        let mut args = vec![
            OsString::from("--task"),
            "segmentation".into(),
            "--data".into(),
            os(root),
            "--out".into(),
            os(&out),
        ];
        args.extend(extra.iter().map(OsString::from));
        train_args(&args.iter().collect::<Vec<_>>())
    };
    // Checkpoints.
    let run = s.path("trained");
    trained_run(&run);
    let checkpoint = std::fs::read(run.join("checkpoint.lkc")).unwrap();
    let truncated = s.file("truncated.lkc", &checkpoint[..checkpoint.len() / 2]);
    let truncated_run = s.path("truncated-run");
    std::fs::create_dir_all(&truncated_run).unwrap();
    std::fs::write(
        truncated_run.join("checkpoint.lkc"),
        &checkpoint[..checkpoint.len() - 7],
    )
    .unwrap();
    let mut other_model = losskit_optim::Checkpoint::read(&run.join("checkpoint.lkc")).unwrap();
    // A consistent segmentation run whose weights are the classifier's.
    other_model.meta.run["task"] = "segmentation".into();
    other_model.meta.run["data"] =
        serde_json::json!({"source": "generated_masks", "train": 4, "valid": 2, "seed": 1});
    other_model.meta.run["classes"] = serde_json::json!(["background", "cell", "nucleus"]);
    let other_model_path = s.path("other-model.lkc");
    other_model.write(&other_model_path).unwrap();
    // Where nothing can be written, for root too.
    let unwritable = PathBuf::from("/proc/losskit-cannot-write-here/run");
    let below_file = s.file("a-file", b"x").join("run");

    // Tables (regression) and label tables (multi-label).
    let text_cell = s.file(
        "text_cell.csv",
        b"a,b,y\n1,2,3\n4,five,6\n7,8,9\n1,1,1\n2,2,2\n",
    );
    let empty_table = s.file("empty.csv", b"");
    let missing_value = s.file(
        "missing_value.csv",
        b"a,b,y\n1,2,3\n4,NA,6\n7,,9\n1,1,1\n2,2,2\n3,1,2\n",
    );
    let text_column = s.file(
        "text_column.csv",
        b"name,a,y\nann,1,3\nbob,4,6\ncy,7,9\ndee,1,1\neve,2,2\n",
    );
    let constant_target = s.file("constant.csv", b"a,y\n1,5\n2,5\n3,5\n4,5\n5,5\n");
    let good_table = s.file(
        "good.csv",
        b"a,b,y\n1,2,3\n2,1,4\n3,5,1\n4,4,2\n5,3,7\n6,6,1\n",
    );
    let negative_table = s.file("negative.csv", b"a,y\n1,-2\n2,1\n3,5\n4,4\n5,3\n6,6\n");
    let labels_dir = s.path("labelled");
    for i in 0..6 {
        write_png(&labels_dir.join(format!("{i}.png")), 40 * i as u8, 16, 16);
    }
    std::fs::write(
        labels_dir.join("labels.csv"),
        "file,labels\n0.png,a\n1.png,a;b\n2.png,b\n3.png,\nmissing.png,a\n5.png,b\n",
    )
    .unwrap();
    let regression = |table: &Path, target: &str, extra: &[&str]| -> Vec<OsString> {
        let mut args = train_args(&[
            &"--task".into(),
            &"regression".into(),
            &"--data".into(),
            &os(table),
            &"--target".into(),
            &target.into(),
            &"--out".into(),
            &os(&out),
        ]);
        args.extend(extra.iter().map(OsString::from));
        args
    };
    let faults = vec![
        Fault {
            name: "table with a text cell",
            args: regression(&text_cell, "y", &[]),
            expect: "text_cell.csv: line 3, column `b`: `five` is not a finite number",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "table with a missing value",
            args: regression(&missing_value, "y", &[]),
            expect: "missing_value.csv: line 3, column `b`: `NA` is a missing value; 2 of 6 rows have a missing value in the columns used. Pass --missing drop",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "table with a text column",
            args: regression(&text_column, "y", &[]),
            expect: "text_column.csv: line 2, column `name` holds text (`ann`), not numbers; every feature and target must be numeric: encode it as numbers, or leave the column out (regression: --exclude name)",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "--exclude naming no column",
            args: regression(&text_column, "y", &["--exclude", "nmae"]),
            expect: "no column `nmae` for --exclude; the columns are name, a, y (did you mean `name`?)",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "--exclude naming the target",
            args: regression(&good_table, "y", &["--exclude", "a,y"]),
            expect: "--exclude y: that is the target column (--target); the target is never a feature",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "--missing without a table",
            args: train_args(&[
                &"--task".into(),
                &"regression".into(),
                &"--missing".into(),
                &"drop".into(),
                &"--out".into(),
                &os(&out),
            ]),
            expect: "--exclude and --missing say how a --data table of --task regression is read",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "empty table",
            args: regression(&empty_table, "y", &[]),
            expect: "empty.csv: the file is empty",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "missing target column",
            args: regression(&good_table, "z", &[]),
            expect: "no column `z` for the target (--target); the columns are a, b, y",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "constant target column",
            args: regression(&constant_target, "y", &[]),
            expect: "target column `y` is constant (5 in every row)",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "regression table without --target",
            args: {
                let mut args = regression(&good_table, "y", &[]);
                let at = args.iter().position(|a| a == "--target").unwrap();
                args.drain(at..at + 2);
                args
            },
            expect: "needs --target COLUMN",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "label table naming an unknown image",
            args: train_args(&[
                &"--task".into(),
                &"multilabel".into(),
                &"--data".into(),
                &os(&labels_dir),
                &"--out".into(),
                &os(&out),
            ]),
            expect: "labels.csv: line 6: image `missing.png` does not exist",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "class-index loss for regression",
            args: regression(&good_table, "y", &["--loss", "cross_entropy"]),
            expect: "loss `cross_entropy` does not take real-valued targets",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "rate loss the regression head cannot feed",
            args: regression(
                &good_table,
                "y",
                &["--loss", r#"{"name": "poisson_nll", "log_input": false}"#],
            ),
            expect: "expects outputs that are probabilities in [0, 1], which the regression model cannot give",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "non-negative loss on negative targets",
            args: regression(&negative_table, "y", &["--loss", "msle"]),
            expect: "loss `msle` takes non-negative targets, but target `y` has -2",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "single-label loss for multi-label",
            args: train_args(&[
                &"--task".into(),
                &"multilabel".into(),
                &"--loss".into(),
                &"cross_entropy".into(),
                &"--out".into(),
                &os(&out),
            ]),
            expect: "loss `cross_entropy` does not take multi-label targets",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "--target without a regression table",
            args: train_args(&[&"--target".into(), &"y".into(), &"--out".into(), &os(&out)]),
            expect: "--target names the column to predict",
            not_written: vec![out.clone()],
        },
        // Loss specs and config files.
        Fault {
            name: "unknown loss, with suggestions",
            args: eval("dise", &output, &target),
            expect: "unknown loss `dise` (did you mean",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "unknown option",
            args: eval(
                r#"{"name": "cross_entropy", "smoothing": 0.1}"#,
                &output,
                &target,
            ),
            expect: "has no option `smoothing`",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "ill-typed option",
            args: eval(r#"{"name": "focal", "gamma": "two"}"#, &output, &target),
            expect: "`gamma`",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "out-of-range option",
            args: eval(
                r#"{"name": "cross_entropy", "label_smoothing": 2}"#,
                &output,
                &target,
            ),
            expect: "label_smoothing",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "malformed JSON",
            args: eval(r#"{"name": "mse""#, &output, &target),
            expect: "not valid JSON",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "malformed JSON file",
            args: eval(
                s.file("bad.json", b"{\"name\": \"focal\",, }")
                    .to_str()
                    .unwrap(),
                &output,
                &target,
            ),
            expect: "bad.json",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "malformed TOML file",
            args: eval(
                s.file("bad.toml", b"name = \"focal\"\ngamma = [2\n")
                    .to_str()
                    .unwrap(),
                &output,
                &target,
            ),
            expect: "bad.toml",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "ill-typed option in a TOML file",
            args: eval(
                s.file("typed.toml", b"name = \"focal\"\ngamma = \"two\"\n")
                    .to_str()
                    .unwrap(),
                &output,
                &target,
            ),
            expect: "`gamma`",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "empty JSON config file",
            args: eval(
                s.file("empty.json", b"").to_str().unwrap(),
                &output,
                &target,
            ),
            expect: "empty.json",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "empty TOML config file",
            args: eval(
                s.file("empty.toml", b"\n").to_str().unwrap(),
                &output,
                &target,
            ),
            expect: "empty.toml",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "empty spec",
            args: eval("", &output, &target),
            expect: "empty",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "config object without a name",
            args: eval(r#"{"gamma": 2}"#, &output, &target),
            expect: "name",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "config file that does not exist",
            args: eval("losses/focal.toml", &output, &target),
            expect: "focal.toml",
            not_written: vec![grad.clone()],
        },
        // .npy tensors.
        Fault {
            name: ".npy missing",
            args: eval("cross_entropy", &s.path("absent.npy"), &target),
            expect: "absent.npy",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: ".npy malformed",
            args: eval(
                "cross_entropy",
                &s.file("bad.npy", b"not numpy at all"),
                &target,
            ),
            expect: "not a .npy file",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: ".npy truncated data",
            args: eval(
                "cross_entropy",
                &s.file("short.npy", &full_f32[..full_f32.len() - 4]),
                &target,
            ),
            expect: "truncated",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: ".npy truncated header",
            args: eval(
                "cross_entropy",
                &s.file("short-header.npy", &encode_f32(&[2, 3], &[0.0; 6])[..20]),
                &target,
            ),
            expect: "short-header.npy",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: ".npy wrong dtype (complex)",
            args: eval(
                "cross_entropy",
                &s.file("complex.npy", &npy("<c8", false, &[2, 3], &[0; 48])),
                &target,
            ),
            expect: "c8",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: ".npy wrong dtype (strings)",
            args: eval(
                "cross_entropy",
                &s.file("strings.npy", &npy("<U1", false, &[2, 3], &[0; 24])),
                &target,
            ),
            expect: "U1",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: ".npy float class indices",
            args: eval(
                "cross_entropy",
                &output,
                &s.file(
                    "float-target.npy",
                    &npy("<f4", false, &[2], &f32s(&[0.0, 2.0])),
                ),
            ),
            expect: "target",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: ".npy zero-size",
            args: eval(
                "cross_entropy",
                &s.file("zero.npy", &encode_f32(&[0, 3], &[])),
                &target,
            ),
            expect: "N, C >= 1",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: ".npy rank 1",
            args: eval(
                "cross_entropy",
                &s.file("r1.npy", &encode_f32(&[6], &[0.0; 6])),
                &target,
            ),
            expect: "rank 2 to 5",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "output and target shapes differ",
            args: eval(
                "cross_entropy",
                &output,
                &s.file("t3.npy", &indices(&[3], &[0, 1, 2])),
            ),
            expect: "does not fit output shape",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "dense target of another shape",
            args: eval(
                "mse",
                &output,
                &s.file("dense.npy", &encode_f32(&[3, 2], &[0.0; 6])),
            ),
            expect: "[3, 2]",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "class index >= C",
            args: eval(
                "cross_entropy",
                &output,
                &s.file("t9.npy", &indices(&[2], &[0, 9])),
            ),
            expect: "class index 9, outside 0..3",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "negative class index",
            args: eval(
                "cross_entropy",
                &output,
                &s.file("tn.npy", &indices(&[2], &[-1, 0])),
            ),
            expect: "class index -1",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "negative class index other than ignore_index",
            args: eval(
                r#"{"name": "cross_entropy", "ignore_index": -100}"#,
                &output,
                &s.file("tn5.npy", &indices(&[2], &[-5, 0])),
            ),
            expect: "class index -5",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "NaN in the output",
            args: eval(
                "cross_entropy",
                &s.file(
                    "nan.npy",
                    &encode_f32(&[2, 3], &[0.1, f32::NAN, 0.3, 0.4, 0.5, 0.6]),
                ),
                &target,
            ),
            expect: "output contains NaN",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "infinity in the output",
            args: eval(
                "cross_entropy",
                &s.file(
                    "inf.npy",
                    &encode_f32(&[2, 3], &[0.1, f32::INFINITY, 0.3, 0.4, 0.5, 0.6]),
                ),
                &target,
            ),
            expect: "infinity",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "class indices for a regression loss",
            args: eval("mse", &output, &target),
            expect: "float target",
            not_written: vec![grad.clone()],
        },
        Fault {
            name: "gradient file in a folder that cannot be written",
            args: {
                let mut args = eval("cross_entropy", &output, &target);
                *args.last_mut().unwrap() = os(&unwritable.join("grad.npy"));
                args
            },
            expect: "grad.npy",
            not_written: vec![unwritable.join("grad.npy")],
        },
        // Image and mask folders.
        Fault {
            name: "image folder missing",
            args: train_args(&[
                &"--data".into(),
                &os(&s.path("nowhere")),
                &"--out".into(),
                &os(&out),
            ]),
            expect: "nowhere",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "image folder empty",
            args: train_args(&[&"--data".into(), &os(&empty), &"--out".into(), &os(&out)]),
            expect: "expected one folder per class",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "class folder without images",
            args: train_args(&[
                &"--data".into(),
                &os(&empty_class),
                &"--out".into(),
                &os(&out),
            ]),
            expect: "`nothing` holds no .png/.jpg images",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "corrupt image",
            args: train_args(&[&"--data".into(), &os(&corrupt), &"--out".into(), &os(&out)]),
            expect: "broken.png",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "zero-byte image",
            args: train_args(&[
                &"--data".into(),
                &os(&zero_byte),
                &"--out".into(),
                &os(&out),
            ]),
            expect: "empty.png",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "decompression bomb (200000x200000 header)",
            args: train_args(&[&"--data".into(), &os(&bomb), &"--out".into(), &os(&out)]),
            expect: "huge.png",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "mask of the wrong size",
            args: train_args(&[
                &"--task".into(),
                &"segmentation".into(),
                &"--data".into(),
                &os(&wrong_size),
                &"--out".into(),
                &os(&out),
            ]),
            expect: "is 12x12 but its image is 16x16",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "mask with a class value out of range",
            args: train_args(&[
                &"--task".into(),
                &"segmentation".into(),
                &"--data".into(),
                &os(&out_of_range),
                &"--out".into(),
                &os(&out),
            ]),
            expect: "2.png holds class 7",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "image without a mask",
            args: train_args(&[
                &"--task".into(),
                &"segmentation".into(),
                &"--data".into(),
                &os(&no_mask),
                &"--out".into(),
                &os(&out),
            ]),
            expect: "has no mask",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "corrupt TIFF in a mask folder",
            args: seg_args(&corrupt_tiff, &[]),
            expect: "3.tif",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "decompression bomb in a mask folder",
            args: seg_args(&seg_bomb, &[]),
            expect: "bomb.png",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "mask colour that classes.json does not name",
            args: seg_args(&stray_colour, &[]),
            expect: "2.png holds colour #0707c8 at pixel (8, 0), which is not one of the 2 classes",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "patch larger than every image, padding off",
            args: seg_args(&folder_of_masks, &["--patch", "32", "--no-pad"]),
            expect: "smaller than the 32x32 patch",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "patch not a multiple of the down-sampling",
            args: seg_args(&folder_of_masks, &["--patch", "20"]),
            expect: "20 is not a multiple of 8",
            not_written: vec![out.clone()],
        },
        Fault {
            name: "segmentation option for classification",
            args: train_args(&[&"--patch".into(), &"32".into(), &"--out".into(), &os(&out)]),
            expect: "--patch applies to --task segmentation only",
            not_written: vec![out.clone()],
        },
        // Checkpoints and output folders.
        Fault {
            name: "checkpoint truncated (evaluate)",
            args: vec!["evaluate".into(), "--checkpoint".into(), os(&truncated)],
            expect: "truncated.lkc is not a losskit checkpoint (truncated)",
            not_written: vec![],
        },
        Fault {
            name: "checkpoint truncated (resume)",
            args: resume_args(&truncated_run, 2),
            expect: "truncated",
            not_written: vec![truncated_run.join("metrics.csv")],
        },
        Fault {
            name: "checkpoint of another model",
            args: vec![
                "evaluate".into(),
                "--checkpoint".into(),
                os(&other_model_path),
            ],
            expect: "holds another model",
            not_written: vec![],
        },
        Fault {
            name: "not a checkpoint",
            args: vec!["evaluate".into(), "--checkpoint".into(), os(&output)],
            expect: "not a losskit checkpoint",
            not_written: vec![],
        },
        Fault {
            name: "output folder that cannot be created",
            args: train_args(&[&"--out".into(), &os(&unwritable)]),
            expect: "--out",
            not_written: vec![unwritable.clone()],
        },
        Fault {
            name: "output folder below a file",
            args: train_args(&[&"--out".into(), &os(&below_file)]),
            expect: "--out",
            not_written: vec![],
        },
        Fault {
            name: "output folder holding another run",
            args: train_args(&[&"--out".into(), &os(&run)]),
            expect: "already holds a run",
            not_written: vec![],
        },
    ];
    let failures: Vec<String> = faults.iter().filter_map(|f| check(f).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} faults mishandled:\n{}",
        failures.len(),
        faults.len(),
        failures.join("\n")
    );
    // The trained run was refused, not touched.
    assert_eq!(
        std::fs::read(run.join("checkpoint.lkc")).unwrap(),
        checkpoint
    );
    eprintln!(
        "fault matrix: {} faults, each one line, exit 2, nothing written",
        faults.len()
    );
}

#[test]
fn big_endian_fortran_order_and_f64_files_give_the_same_loss() {
    let s = Scratch::new("layouts");
    // [2, 3] in C order: rows (0.1, 0.2, 0.3) and (0.4, 0.5, 0.6).
    let values = [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6];
    let column_major = [0.1f32, 0.4, 0.2, 0.5, 0.3, 0.6];
    let target = s.file("target.npy", &indices(&[2], &[0, 2]));
    let files = [
        ("native.npy", encode_f32(&[2, 3], &values)),
        (
            "big-endian.npy",
            npy(
                ">f4",
                false,
                &[2, 3],
                &values
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect::<Vec<u8>>(),
            ),
        ),
        (
            "fortran.npy",
            npy(
                "<f4",
                true,
                &[2, 3],
                &column_major
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>(),
            ),
        ),
        (
            "f64.npy",
            npy(
                "<f8",
                false,
                &[2, 3],
                &values
                    .iter()
                    .flat_map(|&v| f64::from(v).to_le_bytes())
                    .collect::<Vec<u8>>(),
            ),
        ),
    ];
    let mut losses = Vec::new();
    for (name, bytes) in files {
        let path = s.file(name, &bytes);
        let output = losskit([
            OsString::from("compute"),
            "--loss".into(),
            "cross_entropy".into(),
            "--output".into(),
            os(&path),
            "--target".into(),
            os(&target),
        ]);
        assert!(output.status.success(), "{name}: {}", text(&output));
        let line: Value = serde_json::from_slice(&output.stdout).unwrap();
        losses.push((name, line["loss"].as_f64().unwrap()));
    }
    for (name, loss) in &losses[1..] {
        assert!(
            (loss - losses[0].1).abs() < 1e-6,
            "{name}: {loss} vs {}",
            losses[0].1
        );
    }
}

#[test]
fn mixed_image_sizes_and_ignored_indices_are_accepted() {
    let s = Scratch::new("accepted");
    let folder = s.path("mixed");
    for (class, value) in [("dark", 20u8), ("light", 200u8)] {
        for i in 0..5u32 {
            write_png(
                &folder.join(class).join(format!("{i}.png")),
                value,
                12 + 7 * i,
                30 - 3 * i,
            );
        }
    }
    let output = losskit(train_args(&[
        &"--data".into(),
        &os(&folder),
        &"--out".into(),
        &os(&s.path("run")),
    ]));
    assert!(
        output.status.success(),
        "images of five sizes are resized: {}",
        text(&output)
    );

    let out = s.file(
        "output.npy",
        &encode_f32(&[2, 3], &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
    );
    let target = s.file("target.npy", &indices(&[2], &[-100, 2]));
    let output = losskit([
        // `eval`, the command's former name, stays as a hidden alias.
        OsString::from("eval"),
        "--loss".into(),
        r#"{"name": "cross_entropy", "ignore_index": -100}"#.into(),
        "--output".into(),
        os(&out),
        "--target".into(),
        os(&target),
    ]);
    assert!(
        output.status.success(),
        "ignore_index is not a fault: {}",
        text(&output)
    );
}

/// Writes past `limit` bytes fail (EFBIG), as on a full disk.
fn with_file_size_limit(limit: u64, args: &[OsString]) -> Output {
    Command::new("prlimit")
        .arg(format!("--fsize={limit}"))
        .arg(env!("CARGO_BIN_EXE_losskit"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("prlimit (util-linux) runs")
}

/// Every file in `dir` and its sub-folders (the report's previews), with its bytes, sorted.
fn files_below(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_below(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            files.push((path, bytes));
        }
    }
    files.sort();
    files
}

#[test]
fn a_full_disk_fails_cleanly_and_keeps_the_last_checkpoint() {
    let s = Scratch::new("disk-full");
    let run = s.path("run");
    trained_run(&run);
    let checkpoint = std::fs::read(run.join("checkpoint.lkc")).unwrap();
    let before = files_below(&run);
    // Room for the small files, not for the checkpoint.
    let args = resume_args(&run, 2);
    let output = with_file_size_limit(checkpoint.len() as u64 / 2, &args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert_eq!(stderr.lines().count(), 1, "{}", text(&output));
    assert!(
        stderr.contains("checkpoint.lkc") && stderr.contains("File too large"),
        "{}",
        text(&output)
    );
    let after = files_below(&run);
    assert_eq!(
        before.len(),
        after.len(),
        "a temporary file was left behind"
    );
    // Every file is as it was, but the event log, which tells the failed attempt after
    // what it held.
    let events = |files: &[(PathBuf, Vec<u8>)]| -> Vec<u8> {
        files
            .iter()
            .find(|(path, _)| path.ends_with("events.jsonl"))
            .map(|(_, bytes)| bytes.clone())
            .expect("an event log")
    };
    let others = |files: &[(PathBuf, Vec<u8>)]| -> Vec<(PathBuf, Vec<u8>)> {
        files
            .iter()
            .filter(|(path, _)| !path.ends_with("events.jsonl"))
            .cloned()
            .collect()
    };
    assert!(others(&before) == others(&after), "the run's files changed");
    let (old, new) = (events(&before), events(&after));
    assert!(
        new.starts_with(&old),
        "the event log was rewritten, not appended"
    );
    let appended = String::from_utf8(new[old.len()..].to_vec()).unwrap();
    let last: Value = serde_json::from_str(appended.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "error", "{appended}");
    assert!(
        last["message"].as_str().unwrap().contains("checkpoint.lkc"),
        "{appended}"
    );
    // The old checkpoint still loads, and with room again the run goes on.
    let output = losskit(["evaluate".into(), "--checkpoint".into(), os(&run)]);
    assert!(output.status.success(), "{}", text(&output));
    let output = losskit(&args);
    assert!(output.status.success(), "{}", text(&output));

    // `eval --grad` under the same limit: one line, no gradient file, no temporary file.
    let big = s.file("big.npy", &encode_f32(&[64, 16], &[0.5; 1024]));
    let target = s.file("target.npy", &indices(&[64], &[1; 64]));
    let grad = s.path("grads/grad.npy");
    std::fs::create_dir_all(grad.parent().unwrap()).unwrap();
    let output = with_file_size_limit(
        1024,
        &[
            "compute".into(),
            "--loss".into(),
            "cross_entropy".into(),
            "--output".into(),
            os(&big),
            "--target".into(),
            os(&target),
            "--grad".into(),
            os(&grad),
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).lines().count(),
        1,
        "{}",
        text(&output)
    );
    assert_eq!(
        std::fs::read_dir(grad.parent().unwrap()).unwrap().count(),
        0,
        "{}",
        text(&output)
    );
}

fn summary(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn ctrl_c_keeps_the_last_checkpoint_and_resume_goes_on() {
    let s = Scratch::new("sigint");
    let run = s.path("run");
    // Enough epochs that the run is still going when the signal comes.
    let args: Vec<OsString> = [
        "train",
        "--epochs",
        "12",
        "--limit",
        "400",
        "--batch-size",
        "16",
        "--width",
        "4",
        "--progress",
        "quiet",
        "--out",
    ]
    .iter()
    .map(OsString::from)
    .chain([os(&run)])
    .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_losskit"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !run.join("checkpoint.lkc").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint after 300 s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{}", text(&output));
    assert_eq!(stderr.lines().count(), 1, "{}", text(&output));
    assert!(
        stderr.starts_with("losskit: error: interrupted") && stderr.contains("--resume"),
        "{}",
        text(&output)
    );
    let kept = losskit_optim::Checkpoint::read(&run.join("checkpoint.lkc")).unwrap();
    assert!(
        kept.meta.epoch >= 1 && kept.meta.epoch < 12,
        "epoch {}",
        kept.meta.epoch
    );
    let output = losskit(["evaluate".into(), "--checkpoint".into(), os(&run)]);
    assert!(
        output.status.success(),
        "the kept checkpoint loads: {}",
        text(&output)
    );

    let output = losskit(resume_args(&run, 12));
    assert!(output.status.success(), "{}", text(&output));
    let summary = summary(&run);
    assert_eq!(summary["epochs"], 12, "{summary}");
    let _ = std::io::stderr().flush();
}

#[test]
fn a_good_call_prints_one_json_line_and_writes_the_gradient() {
    let s = Scratch::new("good");
    let output = s.file(
        "output.npy",
        &encode_f32(&[2, 3], &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
    );
    let target = s.file("target.npy", &indices(&[2], &[0, 2]));
    let grad = s.path("grad.npy");
    let result = losskit([
        OsString::from("compute"),
        "--loss".into(),
        "ce".into(),
        "--reduction".into(),
        "none".into(),
        "--output".into(),
        os(&output),
        "--target".into(),
        os(&target),
        "--grad".into(),
        os(&grad),
    ]);
    assert!(result.status.success(), "{}", text(&result));
    let line: Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(line["loss"].as_array().unwrap().len(), 2);
    let gradient = losskit_cli::npy::read_npy(&grad).unwrap();
    assert_eq!(gradient.shape, vec![2, 3]);
}
