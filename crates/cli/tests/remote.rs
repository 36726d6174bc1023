//! Training against a remote device on loopback: `losskit serve` in one process, `losskit
//! train --device remote:ws://127.0.0.1:PORT` in another. Needs `--features remote-server`
//! (CI builds it in its GPU stage).
#![cfg(feature = "remote-server")]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `losskit serve --port 0` on loopback; returns it and its URL.
fn serve() -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_losskit"))
        .args(["serve", "--bind", "127.0.0.1", "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // burn's server logs its own lines to stderr too; ours names the URL.
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("losskit serve printed its address before ending")
            .unwrap();
        if let Some(url) = line
            .split_whitespace()
            .find(|word| word.starts_with("ws://"))
        {
            break url.trim_end_matches(';').to_string();
        }
    };
    // Keep reading stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (Server(child), url)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("losskit-remote-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}, stdout {:?}, stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn train(url: &str, out: &Path, epochs: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_losskit"));
    command
        .args([
            "train",
            "--device",
            &format!("remote:{url}"),
            "--epochs",
            epochs,
        ])
        .args([
            "--limit",
            "40",
            "--batch-size",
            "8",
            "--width",
            "4",
            "--max-steps",
            "2",
        ])
        .args(["--progress", "quiet", "--out"])
        .arg(out)
        .stdin(Stdio::null());
    command
}

#[test]
fn training_on_a_remote_device_and_losing_it() {
    let (server, url) = serve();
    let dir = scratch("train");
    let out = dir.join("run");
    let output = train(&url, &out, "1").output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["epochs"], 1, "{summary}");
    assert!(
        summary["val_loss"].as_f64().unwrap().is_finite(),
        "{summary}"
    );

    // The server goes away in the middle of a run: one line, non-zero exit, and the last
    // checkpoint still loads.
    let long = dir.join("long");
    let mut child = train(&url, &long, "500")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !long.join("checkpoint.lkc").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint after 300 s"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(server);
    let lost = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if lost.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the run did not end within 120 s of losing its server");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert_eq!(stderr.lines().count(), 1, "{}", text(&output));
    assert!(stderr.contains("remote"), "{}", text(&output));
    let output = Command::new(env!("CARGO_BIN_EXE_losskit"))
        .args(["evaluate", "--checkpoint"])
        .arg(&long)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn no_remote_server_is_one_line() {
    let dir = scratch("none");
    // A port nobody listens on: bind one, read it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = train(&format!("ws://127.0.0.1:{port}"), &dir.join("run"), "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert_eq!(stderr.lines().count(), 1, "{}", text(&output));
    assert!(stderr.contains("cannot connect"), "{}", text(&output));
    assert!(!dir.join("run").exists());
    let _ = std::fs::remove_dir_all(dir);
}
