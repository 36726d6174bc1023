//! Every case of the reference vectors (PyTorch, MONAI, segmentation-models-pytorch), through
//! the `losskit compute` command: values within rtol 2e-4 / atol 2e-5, gradients within 2e-3 of
//! the largest reference gradient.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use losskit_cli::npy::read_npy;
use losskit_core::input::HostValues;
use serde_json::Value;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The vector sets in the repository (so a fresh clone tests on its own): `vectors` and
/// `vectors2` copied from ../shared/reference, `vectors3` made here by its `generate.py` with
/// MONAI 1.6.1, PyTorch and SciPy for the shapes vectors2 lacks (3-D, empty classes, one
/// channel, spacing).
const SETS: [&str; 3] = ["vectors", "vectors2", "vectors3"];

/// The sets copied from ../shared/reference.
const SHARED_SETS: [&str; 2] = ["vectors", "vectors2"];

/// Losses that `vectors2` has cases for and losskit does not have yet (issue 23). Their cases
/// must fail as unknown losses: once one exists, its case must pass and it leaves this list.
const PENDING: [&str; 0] = [];

fn vectors(set: &str) -> PathBuf {
    repository_root().join("tests/reference").join(set)
}

/// Every case of every set, with its folder.
fn cases() -> Vec<(PathBuf, Value)> {
    SETS.iter()
        .flat_map(|set| {
            let dir = vectors(set);
            let text =
                std::fs::read_to_string(dir.join("cases.json")).expect("cases.json is readable");
            let parsed: Value = serde_json::from_str(&text).expect("cases.json is JSON");
            parsed["cases"]
                .as_array()
                .expect("cases is a list")
                .iter()
                .map(|case| (dir.join(case["id"].as_str().unwrap()), case.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn floats(path: &Path) -> Vec<f64> {
    match read_npy(path).expect("reads .npy").values {
        HostValues::Float(values) => values,
        HostValues::Int(values) => values.into_iter().map(|v| v as f64).collect(),
    }
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 2e-5 + 2e-4 * expected.abs()
}

fn run_case(dir: &Path, case: &Value, device: Option<&str>, scratch: &Path) -> Result<(), String> {
    let id = case["id"].as_str().unwrap();
    let grad_path = scratch.join(format!("{id}.grad.npy"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_losskit"));
    command
        .arg("compute")
        .arg("--loss")
        .arg(case["loss"].to_string())
        .arg("--output")
        .arg(dir.join("output.npy"))
        .arg("--target")
        .arg(dir.join("target.npy"))
        .arg("--reduction")
        .arg(case["reduction"].as_str().unwrap())
        .arg("--grad")
        .arg(&grad_path);
    if let Some(device) = device {
        command.arg("--device").arg(device);
    }
    let result = command.output().expect("losskit runs");
    if !result.status.success() {
        return Err(format!(
            "{id}: exit {:?}: {}",
            result.status.code(),
            String::from_utf8_lossy(&result.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&result.stdout);
    let line: Value =
        serde_json::from_str(stdout.trim()).map_err(|e| format!("{id}: bad JSON {stdout}: {e}"))?;
    let expected: Vec<f64> = match &case["expected"] {
        Value::Array(values) => values.iter().map(|v| v.as_f64().unwrap()).collect(),
        value => vec![value.as_f64().unwrap()],
    };
    let actual: Vec<f64> = match &line["loss"] {
        Value::Array(values) => values.iter().map(|v| v.as_f64().unwrap()).collect(),
        value => vec![
            value
                .as_f64()
                .ok_or_else(|| format!("{id}: no number in {stdout}"))?,
        ],
    };
    if actual.len() != expected.len() || actual.iter().zip(&expected).any(|(a, e)| !close(*a, *e)) {
        return Err(format!("{id}: loss {actual:?}, expected {expected:?}"));
    }
    let reference = floats(&dir.join("grad.npy"));
    let ours = floats(&grad_path);
    let scale = reference
        .iter()
        .fold(0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    if ours.len() != reference.len() {
        return Err(format!(
            "{id}: gradient has {} values, expected {}",
            ours.len(),
            reference.len()
        ));
    }
    let worst = ours
        .iter()
        .zip(&reference)
        .map(|(a, e)| (a - e).abs() / scale)
        .fold(0f64, f64::max);
    if worst.is_nan() || worst > 2e-3 {
        return Err(format!(
            "{id}: gradient differs by {worst:.3e} of the largest reference gradient"
        ));
    }
    Ok(())
}

fn run_all(device: Option<&str>) {
    let scratch = std::env::temp_dir().join(format!(
        "losskit-reference-{}-{}",
        std::process::id(),
        device.unwrap_or("cpu")
    ));
    std::fs::create_dir_all(&scratch).unwrap();
    let cases = cases();
    assert!(
        cases.len() >= 59,
        "expected the three reference sets, got {}",
        cases.len()
    );
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(dir, case)| {
            let result = run_case(dir, case, device, &scratch);
            let name = case["loss"]["name"].as_str().unwrap_or_default();
            if !PENDING.contains(&name) {
                return result.err();
            }
            match result {
                Err(error) if error.contains(&format!("unknown loss `{name}`")) => None,
                Err(error) => Some(format!("{error} (a pending loss should be unknown)")),
                Ok(()) => Some(format!("{name} now passes: remove it from PENDING")),
            }
        })
        .collect();
    std::fs::remove_dir_all(&scratch).ok();
    assert!(
        failures.is_empty(),
        "{} of {} reference cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_reference_case_passes_on_the_default_cpu_device() {
    run_all(None);
}

#[cfg(feature = "ndarray")]
#[test]
fn every_reference_case_passes_on_ndarray() {
    run_all(Some("ndarray"));
}

#[test]
fn the_copied_vectors_match_shared_when_present() {
    for set in SHARED_SETS {
        let shared = repository_root().join(format!("../shared/reference/{set}/cases.json"));
        if let Ok(original) = std::fs::read(&shared) {
            let copy = std::fs::read(vectors(set).join("cases.json")).unwrap();
            assert_eq!(
                original, copy,
                "tests/reference/{set} is stale: copy ../shared/reference/{set} again"
            );
        }
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn every_reference_case_passes_on_wgpu() {
    run_all(Some("wgpu"));
}

/// The signed distance maps of `losskit_core::distance` against SciPy's exact transforms,
/// through the `boundary` case (Kervadec's one_hot2dist on `distance_transform_edt`): the
/// mean over samples, classes 1.. and pixels of softmax probability × map is its reference
/// value. Checked before the loss itself exists (issue 23).
#[test]
fn signed_distance_maps_give_the_boundary_reference_value() {
    let dir = vectors("vectors2").join("boundary");
    let case = cases()
        .into_iter()
        .find(|(_, c)| c["id"] == "boundary")
        .expect("the boundary case")
        .1;
    let output = read_npy(&dir.join("output.npy")).unwrap();
    let logits = floats(&dir.join("output.npy"));
    let target: Vec<i64> = floats(&dir.join("target.npy"))
        .into_iter()
        .map(|t| t as i64)
        .collect();
    let [n, c, h, w] = output.shape[..] else {
        panic!("a 4-D output: {:?}", output.shape)
    };
    let maps = losskit_core::distance::signed_distance_maps(&target, c, &[h, w], &[1.0, 1.0]);
    let size = h * w;
    let mut sum = 0.0;
    for sample in 0..n {
        for pixel in 0..size {
            let at = |class: usize| logits[(sample * c + class) * size + pixel];
            let top = (0..c).map(at).fold(f64::MIN, f64::max);
            let total: f64 = (0..c).map(|k| (at(k) - top).exp()).sum();
            for class in 1..c {
                let probability = (at(class) - top).exp() / total;
                sum += probability * maps[(sample * c + class) * size + pixel];
            }
        }
    }
    let value = sum / (n * (c - 1) * size) as f64;
    let expected = case["expected"].as_f64().unwrap();
    assert!(
        (value - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "{value} vs SciPy's {expected}"
    );
}

/// Runs `losskit compute` with `extra` arguments on the boundary case's arrays: the JSON line on
/// success, the error line otherwise.
fn compute_boundary_case(loss: &str, extra: &[&str]) -> Result<Value, String> {
    let dir = vectors("vectors2").join("boundary");
    let result = Command::new(env!("CARGO_BIN_EXE_losskit"))
        .arg("compute")
        .args(["--loss", loss])
        .arg("--output")
        .arg(dir.join("output.npy"))
        .arg("--target")
        .arg(dir.join("target.npy"))
        .args(extra)
        .output()
        .expect("losskit runs");
    if result.status.success() {
        Ok(serde_json::from_slice(&result.stdout).expect("a JSON line"))
    } else {
        Err(String::from_utf8_lossy(&result.stderr).trim().to_string())
    }
}

#[test]
fn compute_takes_auxiliary_maps_and_the_epoch() {
    let scratch = std::env::temp_dir().join(format!("losskit-auxiliary-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let dir = vectors("vectors2").join("boundary");
    let output = read_npy(&dir.join("output.npy")).unwrap();
    let target: Vec<i64> = floats(&dir.join("target.npy"))
        .into_iter()
        .map(|t| t as i64)
        .collect();
    let [_, c, h, w] = output.shape[..] else {
        panic!("a 4-D output")
    };
    // Maps computed elsewhere (here: the same maps, doubled) replace the loss's own.
    let maps: Vec<f32> =
        losskit_core::distance::signed_distance_maps(&target, c, &[h, w], &[1.0, 1.0])
            .iter()
            .map(|&d| 2.0 * d as f32)
            .collect();
    let maps_path = scratch.join("maps.npy");
    std::fs::write(
        &maps_path,
        losskit_cli::npy::encode_f32(&output.shape, &maps),
    )
    .unwrap();
    let given = format!("signed_distance_maps={}", maps_path.display());
    let plain = compute_boundary_case("boundary", &[]).unwrap()["loss"]
        .as_f64()
        .unwrap();
    let doubled = compute_boundary_case("boundary", &["--auxiliary", &given]).unwrap()["loss"]
        .as_f64()
        .unwrap();
    assert!(
        (doubled - 2.0 * plain).abs() < 1e-5,
        "{doubled} vs 2 × {plain}"
    );

    // A name the loss does not read, a shape that is not the output's, a malformed flag.
    let error = compute_boundary_case("dice", &["--auxiliary", &given]).unwrap_err();
    assert!(
        error.contains("reads no auxiliary input `signed_distance_maps`; it reads none"),
        "{error}"
    );
    let wrong = scratch.join("wrong.npy");
    std::fs::write(
        &wrong,
        losskit_cli::npy::encode_f32(&[1, c, h, w], &maps[..c * h * w]),
    )
    .unwrap();
    let error = compute_boundary_case(
        "boundary",
        &[
            "--auxiliary",
            &format!("signed_distance_maps={}", wrong.display()),
        ],
    )
    .unwrap_err();
    assert!(
        error.contains("expected the output's shape [3, 4, 16, 12]"),
        "{error}"
    );
    assert!(!error.contains("panicked"), "{error}");
    let error = compute_boundary_case("boundary", &["--auxiliary", "maps.npy"]).unwrap_err();
    assert!(error.contains("expected NAME=FILE.npy"), "{error}");

    // The epoch moves a schedule's weights: epoch 1 is all Dice, epoch 3 all boundary.
    let scheduled = r#"{"name": "scheduled", "terms": [
        {"weight": {"start": 1, "end": 0, "epochs": 2}, "loss": "dice"},
        {"weight": {"start": 0, "end": 1, "epochs": 2}, "loss": "boundary"}]}"#;
    let at = |epoch: &str| compute_boundary_case(scheduled, &["--epoch", epoch]).unwrap();
    let dice = compute_boundary_case("dice", &[]).unwrap()["loss"]
        .as_f64()
        .unwrap();
    let first = at("1");
    assert!((first["loss"].as_f64().unwrap() - dice).abs() < 1e-6);
    assert_eq!(first["terms"]["boundary_weight"].as_f64(), Some(0.0));
    let third = at("3");
    assert!((third["loss"].as_f64().unwrap() - plain).abs() < 1e-6);
    assert_eq!(third["terms"]["dice_weight"].as_f64(), Some(0.0));
    let second = at("2");
    assert!((second["loss"].as_f64().unwrap() - (dice + plain) / 2.0).abs() < 1e-6);
    let error = compute_boundary_case(scheduled, &["--epoch", "0"]).unwrap_err();
    assert!(error.contains("--epoch"), "{error}");
    std::fs::remove_dir_all(&scratch).ok();
}
