//! `losskit dashboard` without a browser: its bad inputs (a runs folder that does not exist, a
//! port in use), a half-written `events.jsonl` shown as far as it goes, and requests that try
//! to leave the runs folder, over plain HTTP on loopback.

mod common;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{losskit, text};

fn scratch(name: &str) -> PathBuf {
    common::scratch("dashboard", name)
}

/// The one line a failed command prints.
fn error_line(args: &[&str]) -> String {
    let output = losskit(args);
    assert!(!output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn a_missing_folder_and_a_port_in_use_are_one_line_errors() {
    let dir = scratch("bad");
    let missing = dir.join("no-such-runs");
    let line = error_line(&["dashboard", missing.to_str().unwrap(), "--port", "0"]);
    assert!(
        line.starts_with("losskit: error: the runs folder") && line.contains("does not exist"),
        "{line}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let line = error_line(&["dashboard", dir.to_str().unwrap(), "--port", &port]);
    assert!(line.contains("the port is in use"), "{line}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A dashboard serving `runs` on a free loopback port; killed when dropped.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(runs: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_losskit"))
            .args(["dashboard", runs.to_str().unwrap(), "--port", "0"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let at = line.find("http://").unwrap_or_else(|| panic!("{line}"));
        let address = line[at + 7..].split('/').next().unwrap().to_string();
        Self { child, address }
    }

    /// A GET request's status code and body (the stream read until `until` appears in it,
    /// or the server closes it).
    fn get(&self, target: &str, until: Option<&str>) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            stream,
            "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address
        )
        .unwrap();
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).unwrap_or(0);
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buffer[..n]);
            if until.is_some_and(|u| String::from_utf8_lossy(&received).contains(u)) {
                break;
            }
        }
        let response = String::from_utf8_lossy(&received).into_owned();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, response)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_half_written_log_shows_what_is_there_and_nothing_outside_the_folder_is_served() {
    let dir = scratch("serve");
    let runs = dir.join("runs");
    let run = runs.join("half");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(dir.join("secret.txt"), "outside the runs folder").unwrap();
    // A run start, one step, and a line cut half-way: the writer (a process that no longer
    // exists) was killed mid-line.
    let start = serde_json::json!({
        "event": "run_start", "resume": false, "from_epoch": 0, "epochs": 2, "batch_size": 4,
        "steps_per_epoch": 3, "train_samples": 12, "seed": 1, "task": "classification",
        "classes": ["a", "b"], "pid": 2147483646, "run": {"loss": {"name": "cross_entropy"}},
    });
    let step = serde_json::json!({
        "event": "step", "epoch": 1, "step": 1, "global_step": 1, "loss": 0.75, "lr": 0.001,
        "terms": [],
    });
    std::fs::write(
        run.join("events.jsonl"),
        format!("{start}\n{step}\n{{\"event\":\"step\",\"epo"),
    )
    .unwrap();
    let server = Server::start(&runs);
    let (status, page) = server.get("/", None);
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("EventSource") && !page.contains("http://cdn"),
        "the page, self-contained"
    );
    let (status, live) = server.get("/live?run=half", Some("1 step(s) of the first epoch"));
    assert_eq!(status, 200, "{live}");
    assert!(live.contains("text/event-stream"), "{live}");
    assert!(
        live.contains("event: runs") || live.contains("event: view"),
        "{live}"
    );
    assert!(
        live.contains("No epoch has finished yet; 1 step(s) of the first epoch done"),
        "{live}"
    );
    // Its process is gone and no end was written: killed.
    assert!(live.contains("stopped without an end (killed?)"), "{live}");
    let (status, log) = server.get("/file?run=half&name=events.jsonl", None);
    assert_eq!(status, 200);
    assert!(log.contains("\"run_start\""));
    for target in [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/file?run=half&name=../../secret.txt",
        "/file?run=half&name=%2Fetc%2Fpasswd",
        "/file?run=..&name=secret.txt",
        "/file?run=.&name=secret.txt",
    ] {
        let (status, body) = server.get(target, None);
        assert!(status == 404 || status == 400, "{target}: {body}");
        assert!(
            !body.contains("outside the runs folder") && !body.contains("root:"),
            "{target}: {body}"
        );
    }
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}
