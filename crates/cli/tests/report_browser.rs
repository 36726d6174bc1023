//! `report.html` as a person sees it: headless Chromium (Debian's `chromium`) loads a run's
//! report, the numbers in the DOM it renders are checked against `metrics.csv`, and a
//! screenshot is written (`LOSSKIT_SCREENSHOTS=DIR` keeps it there to be looked at).
//!
//! Ignored by the README's test command, which needs no browser; `.ci/run` installs Chromium
//! and runs it with `--ignored`.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::{losskit, text};

fn scratch(name: &str) -> PathBuf {
    common::scratch("browser", name)
}

fn chromium() -> &'static str {
    let path = "/usr/bin/chromium";
    assert!(
        Path::new(path).exists(),
        "this test needs Debian's chromium (apt-get install chromium); .ci/run installs it"
    );
    path
}

/// Chromium's flags for a headless run as root in a container.
const HEADLESS: [&str; 5] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--allow-file-access-from-files",
];

/// The DOM Chromium builds from the page.
fn rendered_dom(page: &Path) -> String {
    let output = Command::new(chromium())
        .args(HEADLESS)
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "chromium: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// A screenshot of the page, `width`×`height`.
fn screenshot(page: &Path, png: &Path, width: u32, height: u32) {
    let output = Command::new(chromium())
        .args(HEADLESS)
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "chromium: {output:?}");
    assert_drawn(png, width, height, 100);
}

/// The screenshot is `width`×`height` and its charts are drawn: at least one pixel in
/// `one_in` is neither white nor near-white.
fn assert_drawn(png: &Path, width: u32, height: u32, one_in: u32) {
    let image = image::open(png).unwrap().to_rgb8();
    assert_eq!(image.dimensions(), (width, height));
    let inked = image
        .pixels()
        .filter(|p| p.0.iter().any(|&c| c < 200))
        .count();
    assert!(
        inked > (width * height / one_in) as usize,
        "the screenshot is nearly blank ({inked} inked pixels)"
    );
}

/// The `data-value`s of the DOM's epochs table, row by row.
fn epochs_table(dom: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let table = &dom[dom.find("id=\"epochs\"").expect("an epochs table")..];
    let table = &table[..table.find("</table>").unwrap()];
    let header: Vec<String> = table
        .split("<th>")
        .skip(1)
        .map(|cell| cell[..cell.find("</th>").unwrap()].to_string())
        .collect();
    let rows = table
        .split("<tr><td>")
        .skip(1)
        .map(|row| {
            let epoch = row[..row.find("</td>").unwrap()].to_string();
            std::iter::once(epoch)
                .chain(
                    row.split("data-value=\"")
                        .skip(1)
                        .map(|cell| cell[..cell.find('"').unwrap()].to_string()),
                )
                .collect()
        })
        .collect();
    (header, rows)
}

fn check_against_metrics_csv(run: &Path, dom: &str) {
    let rows = check_first_epochs(run, dom);
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(rows, metrics.lines().count() - 1, "one row per epoch");
}

/// Checks each epoch row the page shows against that epoch's row of `metrics.csv` (a live page
/// may show fewer epochs than the file ends with); returns how many it showed.
fn check_first_epochs(run: &Path, dom: &str) -> usize {
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = metrics.lines();
    let csv_header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let (header, rows) = epochs_table(dom);
    assert!(
        rows.len() < metrics.lines().count(),
        "no more rows than metrics.csv"
    );
    for (row, line) in rows.iter().zip(lines) {
        let cells: Vec<&str> = line.split(',').collect();
        for (name, shown) in header.iter().zip(row) {
            let at = csv_header.iter().position(|h| h == name).unwrap();
            let (csv, shown): (f64, f64) = (
                cells[at].parse().unwrap(),
                shown.parse().unwrap_or(f64::NAN),
            );
            assert!(
                csv == shown || (csv.is_nan() && shown.is_nan()),
                "{name}: metrics.csv {csv}, page {shown}"
            );
        }
    }
    rows.len()
}

fn keep(png: &Path, name: &str) {
    if let Ok(dir) = std::env::var("LOSSKIT_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(png, Path::new(&dir).join(name)).unwrap();
    }
}

#[test]
#[ignore = "needs Chromium; .ci/run installs it and runs this with --ignored"]
fn run_and_compare_reports_show_the_numbers_of_metrics_csv() {
    let dir = scratch("reports");
    for (task, extra) in [
        ("classification", &["--limit", "200", "--epochs", "3"][..]),
        ("segmentation", &["--limit", "32", "--epochs", "3"][..]),
        ("regression", &["--limit", "64", "--epochs", "3"][..]),
    ] {
        let run = dir.join(task);
        let mut args = vec![
            "train",
            "--task",
            task,
            "--width",
            "4",
            "--out",
            run.to_str().unwrap(),
            "--progress",
            "quiet",
        ];
        args.extend(extra);
        let output = losskit(&args);
        assert!(output.status.success(), "{}", text(&output));
        let page = run.join("report.html");
        let dom = rendered_dom(&page);
        assert!(
            dom.contains("data-epochs=\"3\""),
            "{task}: three epochs shown"
        );
        assert_eq!(
            dom.matches("<svg").count() >= 3,
            true,
            "{task}: charts in the DOM"
        );
        check_against_metrics_csv(&run, &dom);
        if task == "classification" {
            // The six most confident mistakes of a barely trained classifier.
            assert_eq!(dom.matches("<img").count(), 6, "{task}: previews");
            assert!(dom.contains(", predicted "), "{task}: captions");
        }
        if task == "segmentation" {
            // Three validation images, truth | prediction, inline and under previews/.
            assert_eq!(dom.matches("<img").count(), 3, "{task}: previews");
            assert!(run.join("previews/valid-2.png").exists());
        }
        let png = run.join("report.png");
        screenshot(&page, &png, 1400, 1800);
        keep(&png, &format!("report-{task}.png"));
    }
    // compare: one row per run, each equal to that run's last line of metrics.csv.
    let compare = dir.join("compare");
    let output = losskit(&[
        "compare",
        "--loss",
        "cross_entropy",
        "--loss",
        r#"{"name": "dice", "batch": true}"#,
        "--limit",
        "100",
        "--epochs",
        "2",
        "--width",
        "4",
        "--out",
        compare.to_str().unwrap(),
        "--progress",
        "quiet",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let page = compare.join("report.html");
    let dom = rendered_dom(&page);
    assert!(dom.contains("data-runs=\"2\""));
    let table = &dom[dom.find("id=\"runs\"").unwrap()..];
    for (run, row) in ["1-cross_entropy", "2-dice"]
        .iter()
        .zip(table.split("<tr><th>").skip(2))
    {
        let metrics = std::fs::read_to_string(compare.join(run).join("metrics.csv")).unwrap();
        let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
        let last: Vec<&str> = metrics.lines().last().unwrap().split(',').collect();
        let csv = |name: &str| last[header.iter().position(|h| *h == name).unwrap()];
        let shown: Vec<&str> = row
            .split("data-value=\"")
            .skip(1)
            .map(|cell| &cell[..cell.find('"').unwrap()])
            .collect();
        // val_loss, avg_loss_all_epochs, val_accuracy.
        assert_eq!(
            shown,
            [
                csv("val_loss"),
                csv("avg_loss_all_epochs"),
                csv("val_accuracy")
            ]
        );
    }
    let png = compare.join("report.png");
    screenshot(&page, &png, 1400, 1000);
    keep(&png, "report-compare.png");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Chrome's DevTools protocol over `--remote-debugging-pipe`: JSON messages ended by NUL on the
/// browser's descriptors 3 (in) and 4 (out), here two named pipes. No WebSocket client needed.
struct DevTools {
    to: std::fs::File,
    from: std::io::BufReader<std::fs::File>,
    next: u64,
    session: Option<String>,
    browser: std::process::Child,
}

impl DevTools {
    fn start(dir: &Path, width: u32, height: u32) -> Self {
        let (input, output) = (dir.join("cdp-in"), dir.join("cdp-out"));
        for pipe in [&input, &output] {
            let made = Command::new("mkfifo").arg(pipe).status().unwrap();
            assert!(made.success(), "mkfifo {}", pipe.display());
        }
        let browser = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec {} {} --remote-debugging-pipe --user-data-dir={} --window-size={width},{height} about:blank 3<{} 4>{}",
                chromium(),
                HEADLESS.join(" "),
                dir.join("profile").display(),
                input.display(),
                output.display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Opened in the order the shell opens them, so neither side waits on the other.
        let to = std::fs::OpenOptions::new()
            .write(true)
            .open(&input)
            .unwrap();
        let from = std::io::BufReader::new(std::fs::File::open(&output).unwrap());
        Self {
            to,
            from,
            next: 0,
            session: None,
            browser,
        }
    }

    /// Sends a command (to the attached page, once there is one) and returns its result.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use std::io::{BufRead as _, Write as _};
        self.next += 1;
        let mut message = serde_json::json!({"id": self.next, "method": method, "params": params});
        if let Some(session) = &self.session {
            message["sessionId"] = serde_json::json!(session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        loop {
            let mut reply = Vec::new();
            let read = self.from.read_until(0, &mut reply).unwrap();
            assert!(read > 0, "chromium closed the DevTools pipe");
            reply.pop();
            let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
            if reply["id"] == self.next {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Opens `url` in a new page of `width`×`height` and attaches to it.
    fn open(&mut self, url: &str, width: u32, height: u32) {
        let target = self.call("Target.createTarget", serde_json::json!({"url": url}));
        let attached = self.call(
            "Target.attachToTarget",
            serde_json::json!({"targetId": target["targetId"], "flatten": true}),
        );
        self.session = attached["sessionId"].as_str().map(String::from);
        self.call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
    }

    /// The value of a JavaScript expression on the page.
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expression, "returnByValue": true}),
        )["result"]["value"]
            .clone()
    }

    /// Waits until `expression` is true on the page (polling the page's state, with a limit).
    fn wait_for(&mut self, expression: &str, limit: std::time::Duration) {
        let start = std::time::Instant::now();
        while self.eval(expression) != serde_json::json!(true) {
            assert!(
                start.elapsed() < limit,
                "the page never showed `{expression}`: {}",
                self.eval("document.body.innerText.slice(0, 2000)")
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn screenshot(&mut self, png: &Path) {
        let shot = self.call(
            "Page.captureScreenshot",
            serde_json::json!({"format": "png"}),
        );
        std::fs::write(png, base64_decode(shot["data"].as_str().unwrap())).unwrap();
    }
}

impl Drop for DevTools {
    fn drop(&mut self) {
        let _ = self.browser.kill();
        let _ = self.browser.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut bits, mut count, mut out) = (0u32, 0, Vec::new());
    for byte in text.bytes().filter(|&b| b != b'=') {
        let value = ALPHABET.iter().position(|&a| a == byte).unwrap() as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

#[test]
#[ignore = "needs Chromium; .ci/run installs it and runs this with --ignored"]
fn the_dashboard_draws_a_run_live_while_it_trains() {
    use std::io::BufRead as _;
    let dir = scratch("dashboard");
    let runs = dir.join("runs");
    let run = runs.join("live");
    // Enough steps (about ten seconds here) that the page is open, and sees two epochs, while
    // the run trains, even on a loaded machine.
    let mut training = Command::new(env!("CARGO_BIN_EXE_losskit"))
        .args([
            "train",
            "--dashboard=0",
            "--limit",
            "900",
            "--epochs",
            "6",
            "--width",
            "8",
            "--batch-size",
            "16",
            "--progress",
            "lines",
            "--out",
            run.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(training.stderr.take().unwrap());
    let mut line = String::new();
    let url = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no dashboard line"
        );
        if let Some(at) = line.find("http://") {
            break line[at..].split_whitespace().next().unwrap().to_string();
        }
    };
    // The rest of stderr drains on its own thread, so training never blocks on a full pipe.
    let drained = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        rest
    });
    let (width, height) = (1400, 1800);
    let mut devtools = DevTools::start(&dir, width, height);
    devtools.open(&url, width, height);
    devtools.wait_for(
        "Number(document.querySelector('#view #state')?.dataset.epochs || 0) >= 2",
        std::time::Duration::from_secs(300),
    );
    assert_eq!(
        devtools.eval("document.getElementById('connection').dataset.state"),
        "live"
    );
    let view: String = devtools
        .eval("document.getElementById('view').innerHTML")
        .as_str()
        .unwrap()
        .to_string();
    let runs_list = devtools.eval("document.getElementById('runs').innerText");
    assert!(runs_list.as_str().unwrap().contains("live"), "{runs_list}");
    assert!(view.matches("<svg").count() >= 3, "charts drawn");
    let png = dir.join("dashboard.png");
    devtools.screenshot(&png);
    keep(&png, "dashboard-live.png");
    let lags = devtools.eval("JSON.stringify(window.lags)");
    let status = training.wait().unwrap();
    let rest = drained.join().unwrap();
    assert!(status.success(), "training: {rest}");
    // The epochs the page showed are metrics.csv's first rows, to the last digit.
    let shown = check_first_epochs(&run, &view);
    assert!(shown >= 2, "{shown} epochs shown");
    // The training's dashboard went with it; `losskit dashboard` shows the finished run, all
    // of metrics.csv.
    let mut server = Command::new(env!("CARGO_BIN_EXE_losskit"))
        .args(["dashboard", runs.to_str().unwrap(), "--port", "0"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let at = first.find("http://").unwrap_or_else(|| panic!("{first}"));
    let url = first[at..].split_whitespace().next().unwrap().to_string();
    devtools.call(
        "Page.navigate",
        serde_json::json!({"url": format!("{url}#run=live")}),
    );
    devtools.wait_for(
        "document.querySelector('#run-status')?.classList.contains('finished') === true",
        std::time::Duration::from_secs(30),
    );
    let view: String = devtools
        .eval("document.getElementById('view').innerHTML")
        .as_str()
        .unwrap()
        .to_string();
    check_against_metrics_csv(&run, &view);
    // The compare view of selected runs (here the run beside itself), normalised or not.
    devtools.call(
        "Page.navigate",
        serde_json::json!({"url": format!("{url}#compare=live&compare=live")}),
    );
    devtools.wait_for(
        "document.querySelector('#view #state')?.dataset.runs === '2' && document.getElementById('view').innerHTML.includes('first epoch')",
        std::time::Duration::from_secs(30),
    );
    devtools.eval("document.getElementById('normalise').click()");
    devtools.wait_for(
        "document.querySelector('#view #state')?.dataset.runs === '2' && !document.getElementById('view').innerHTML.includes('first epoch')",
        std::time::Duration::from_secs(30),
    );
    let compare_png = dir.join("dashboard-compare.png");
    devtools.screenshot(&compare_png);
    keep(&compare_png, "dashboard-compare.png");
    // Two charts and a table: less ink than a run's page.
    assert_drawn(&compare_png, width, height, 200);
    let _ = server.kill();
    let _ = server.wait();
    assert_drawn(&png, width, height, 100);
    // Measured, not asserted: how long after the log was written the page had it.
    eprintln!("dashboard lag after each write, seconds: {lags}");
    drop(devtools);
    // Chromium's helper processes may still be closing files in its profile: best effort.
    let _ = std::fs::remove_dir_all(&dir);
}
