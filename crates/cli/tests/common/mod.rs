//! What the binary's test files share: running `losskit` and showing what it printed.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

/// Runs the `losskit` binary built for these tests.
pub fn losskit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_losskit"))
        .args(args)
        .output()
        .expect("the losskit binary runs")
}

/// A command's exit status and output, for assertion messages.
pub fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A fresh, empty folder for one test: `$TMPDIR/losskit-SUITE-NAME-PID` (removed first if an
/// earlier run left it).
#[allow(dead_code)] // not every test file needs one
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("losskit-{suite}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
