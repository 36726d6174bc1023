//! `losskit eval` on bad input: one line naming the problem, a non-zero exit, no panic text,
//! and no gradient file left behind.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use losskit_cli::npy::encode_f32;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("losskit-eval-errors-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn encode_i64(shape: &[usize], values: &[i64]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = if shape.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let header = format!("{{'descr': '<i8', 'fortran_order': False, 'shape': {shape_text}, }}\n");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes
}

fn eval(loss: &str, output: &Path, target: &Path, grad: &Path) -> (i32, String) {
    let result = Command::new(env!("CARGO_BIN_EXE_losskit"))
        .args(["eval", "--loss", loss, "--output"])
        .arg(output)
        .arg("--target")
        .arg(target)
        .arg("--grad")
        .arg(grad)
        .output()
        .expect("losskit runs");
    (
        result.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&result.stderr).into_owned(),
    )
}

#[test]
fn every_fault_gets_one_line_and_a_non_zero_exit() {
    let scratch = Scratch::new("matrix");
    let output = scratch.file(
        "output.npy",
        &encode_f32(&[2, 3], &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
    );
    let target = scratch.file("target.npy", &encode_i64(&[2], &[0, 2]));
    let grad = scratch.0.join("grad.npy");
    let cases: Vec<(&str, String, PathBuf, PathBuf, &str)> = vec![
        (
            "shape mismatch",
            "cross_entropy".into(),
            output.clone(),
            scratch.file("t3.npy", &encode_i64(&[3], &[0, 1, 2])),
            "does not fit output shape",
        ),
        (
            "class index too large",
            "cross_entropy".into(),
            output.clone(),
            scratch.file("t9.npy", &encode_i64(&[2], &[0, 9])),
            "class index 9, outside 0..3",
        ),
        (
            "negative class index",
            "cross_entropy".into(),
            output.clone(),
            scratch.file("tn.npy", &encode_i64(&[2], &[-1, 0])),
            "class index -1",
        ),
        (
            "NaN in output",
            "cross_entropy".into(),
            scratch.file(
                "nan.npy",
                &encode_f32(&[2, 3], &[0.1, f32::NAN, 0.3, 0.4, 0.5, 0.6]),
            ),
            target.clone(),
            "output contains NaN",
        ),
        (
            "infinity in output",
            "cross_entropy".into(),
            scratch.file(
                "inf.npy",
                &encode_f32(&[2, 3], &[0.1, f32::INFINITY, 0.3, 0.4, 0.5, 0.6]),
            ),
            target.clone(),
            "infinity",
        ),
        (
            "missing file",
            "cross_entropy".into(),
            scratch.0.join("absent.npy"),
            target.clone(),
            "absent.npy",
        ),
        (
            "malformed npy",
            "cross_entropy".into(),
            scratch.file("bad.npy", b"not numpy at all"),
            target.clone(),
            "not a .npy file",
        ),
        (
            "truncated npy",
            "cross_entropy".into(),
            scratch.file("short.npy", &encode_f32(&[2, 3], &[0.0; 6])[..100]),
            target.clone(),
            "truncated",
        ),
        (
            "rank 1 output",
            "cross_entropy".into(),
            scratch.file("r1.npy", &encode_f32(&[6], &[0.0; 6])),
            target.clone(),
            "rank 2 to 5",
        ),
        (
            "zero-size output",
            "cross_entropy".into(),
            scratch.file("empty.npy", &encode_f32(&[0, 3], &[])),
            target.clone(),
            "N, C >= 1",
        ),
        (
            "unknown option",
            r#"{"name": "cross_entropy", "smoothing": 0.1}"#.into(),
            output.clone(),
            target.clone(),
            "has no option `smoothing`",
        ),
        (
            "ill-typed option",
            r#"{"name": "focal", "gamma": "two"}"#.into(),
            output.clone(),
            target.clone(),
            "`gamma`",
        ),
        (
            "out-of-range option",
            r#"{"name": "cross_entropy", "label_smoothing": 2}"#.into(),
            output.clone(),
            target.clone(),
            "label_smoothing",
        ),
        (
            "unknown loss",
            "dise".into(),
            output.clone(),
            target.clone(),
            "unknown loss `dise`",
        ),
        (
            "malformed JSON",
            r#"{"name": "mse""#.into(),
            output.clone(),
            target.clone(),
            "not valid JSON",
        ),
        (
            "class indices for a regression loss",
            "mse".into(),
            output.clone(),
            target.clone(),
            "float target",
        ),
    ];
    let mut failures = Vec::new();
    for (fault, loss, output, target, expected) in &cases {
        let (code, stderr) = eval(loss, output, target, &grad);
        let lines: Vec<&str> = stderr.lines().collect();
        let ok = code != 0
            && lines.len() == 1
            && lines[0].starts_with("losskit: error: ")
            && stderr.contains(expected)
            && !stderr.contains("panicked")
            && !stderr.contains("RUST_BACKTRACE")
            && !grad.exists();
        if !ok {
            failures.push(format!(
                "{fault}: exit {code}, stderr {stderr:?}, gradient written: {}",
                grad.exists()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} faults mishandled:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn a_good_call_prints_one_json_line_and_writes_the_gradient() {
    let scratch = Scratch::new("good");
    let output = scratch.file(
        "output.npy",
        &encode_f32(&[2, 3], &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
    );
    let target = scratch.file("target.npy", &encode_i64(&[2], &[0, 2]));
    let grad = scratch.0.join("grad.npy");
    let result = Command::new(env!("CARGO_BIN_EXE_losskit"))
        .args(["eval", "--loss", "ce", "--reduction", "none", "--output"])
        .arg(&output)
        .arg("--target")
        .arg(&target)
        .arg("--grad")
        .arg(&grad)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(line["loss"].as_array().unwrap().len(), 2);
    let gradient = losskit_cli::npy::read_npy(&grad).unwrap();
    assert_eq!(gradient.shape, vec![2, 3]);
}
