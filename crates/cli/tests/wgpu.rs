//! The GPU path (built with `--features wgpu`): the adapter is found and both bundled examples
//! train a few steps on it. CI runs these on Mesa's lavapipe software Vulkan driver.
#![cfg(feature = "wgpu")]

use std::process::Command;

fn losskit(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_losskit"))
        .args(args)
        .output()
        .expect("losskit runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn wgpu_reports_its_adapter() {
    let (ok, stdout, stderr) = losskit(&["devices", "wgpu"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("wgpu: wgpu on "), "{stdout}");
    // lavapipe in CI: a software adapter must be called one, so nobody mistakes it for a GPU.
    if stdout.contains(", Cpu)") {
        assert!(stdout.contains("a software driver, not a GPU"), "{stdout}");
    }
    println!("{stdout}");
}

#[test]
fn wgpu_trains_both_examples_a_few_steps() {
    for task in ["classification", "segmentation"] {
        let out = std::env::temp_dir().join(format!("losskit-wgpu-{task}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let out_text = out.to_string_lossy().into_owned();
        let (ok, _, stderr) = losskit(&[
            "train",
            "--task",
            task,
            "--device",
            "wgpu",
            "--epochs",
            "1",
            "--max-steps",
            "3",
            "--limit",
            "40",
            "--progress",
            "lines",
            "--out",
            &out_text,
        ]);
        assert!(ok, "{task} on wgpu: {stderr}");
        assert!(out.join("summary.json").is_file(), "{task}: no summary");
        std::fs::remove_dir_all(&out).ok();
    }
}
