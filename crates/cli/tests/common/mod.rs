//! What the binary's test files share: running `losskit` and showing what it printed.

use std::process::{Command, Output};

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
