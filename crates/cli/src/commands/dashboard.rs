//! `losskit dashboard` and `losskit train --dashboard`: a local web page of every run in a
//! folder, updating live from each run's `events.jsonl` over server-sent events.
//!
//! The server only reads files: training never waits on it, so a slow or vanished browser
//! cannot hold up a step. Each page keeps one event stream open; every 200 ms the stream looks
//! at the runs' event logs (size and modification time) and, when something changed, sends
//! the run list or the view again, rendered by the same code as `report.html` (a run) or the
//! compare report (selected runs). A half-written last line is left out until it is whole.
//! Files are served only by a run and a name that the folder listing gave: nothing outside the
//! runs folder can be asked for. The page's script, style and charts are compiled in; it
//! fetches nothing else.

use std::{
    convert::Infallible,
    fmt::Write as _,
    io::ErrorKind,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, anyhow, bail};
use axum::{
    Router,
    extract::{RawQuery, State},
    http::{StatusCode, header},
    response::{
        Html, IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use losskit_optim::{
    EVENTS_FILE, RunStats, TaskKind,
    events::Replay,
    plot::escape,
    replay,
    report::{Preview, PreviewSource, STYLE, compare_body, report_body},
};
use serde_json::Value;

/// How often a page's stream looks for changes.
const POLL: Duration = Duration::from_millis(200);
/// How long `train --dashboard` keeps serving after training ends: a few polls, so open pages
/// get the run's end before the server goes with the process.
pub const LINGER: Duration = Duration::from_millis(1000);
/// How deep below the runs folder runs are looked for (`compare` puts its runs one level
/// below its own folder).
const DEPTH: usize = 3;

const PAGE: &str = include_str!("dashboard.html");

/// A dashboard listening on its address, not yet serving.
#[derive(Debug)]
pub struct Dashboard {
    listener: std::net::TcpListener,
    root: PathBuf,
    addr: SocketAddr,
}

impl Dashboard {
    /// Listens on `bind:port` (port 0: any free one) for the runs under `root`.
    pub fn bind(root: &Path, bind: &str, port: u16) -> Result<Self> {
        if !root.is_dir() {
            bail!(
                "the runs folder {} does not exist or is not a folder (train into it with `losskit train --out {}/NAME`, or name the folder that holds your runs)",
                root.display(),
                root.display()
            );
        }
        let root = root
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", root.display()))?;
        let listener = std::net::TcpListener::bind((bind, port)).map_err(|error| match error.kind() {
            ErrorKind::AddrInUse => anyhow!(
                "cannot listen on {bind}:{port}: the port is in use (choose another with --port, or --port 0 for any free one)"
            ),
            _ => anyhow!("cannot listen on {bind}:{port}: {error}"),
        })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            tracing::warn!(
                target: "losskit::dashboard",
                "the dashboard has no authentication: anyone who can reach {addr} sees these runs and their files"
            );
        }
        Ok(Self {
            listener,
            root,
            addr,
        })
    }

    /// The page's address.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Serves until the process ends.
    pub fn serve(self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the dashboard's server")?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(self.listener)?;
            axum::serve(listener, router(self.root)).await
        })?;
        Ok(())
    }

    /// Serves on a thread of its own, beside training.
    pub fn serve_in_background(self) {
        let spawned = std::thread::Builder::new()
            .name("dashboard".into())
            .spawn(move || {
                if let Err(error) = self.serve() {
                    tracing::warn!(target: "losskit::dashboard", "the dashboard stopped: {error:#}");
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(target: "losskit::dashboard", "cannot start the dashboard: {error}");
        }
    }
}

/// `losskit dashboard`: serves until interrupted.
pub fn run(root: &Path, bind: &str, port: u16) -> Result<String> {
    let dashboard = Dashboard::bind(root, bind, port)?;
    tracing::info!(
        target: "losskit::dashboard",
        "dashboard of {} on {} (Ctrl-C stops it)",
        dashboard.root.display(),
        dashboard.url()
    );
    dashboard.serve()?;
    Ok(String::new())
}

fn router(root: PathBuf) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/live", get(live))
        .route("/file", get(file))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(root)
}

async fn page() -> Html<String> {
    Html(PAGE.replace("/*STYLE*/", STYLE))
}

/// The query's values under `key`, percent-decoded, in order.
fn values(query: &Option<String>, key: &str) -> Vec<String> {
    form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// A run: a folder under the root holding an `events.jsonl`.
#[derive(Debug, Clone, PartialEq)]
struct RunDir {
    /// Its path below the root, `/`-separated (`.` for the root itself).
    id: String,
    dir: PathBuf,
}

/// Every run under `root`, in path order; links are not followed.
fn runs(root: &Path) -> Vec<RunDir> {
    fn walk(root: &Path, dir: &Path, depth: usize, found: &mut Vec<RunDir>) {
        if dir.join(EVENTS_FILE).is_file() {
            let id = dir
                .strip_prefix(root)
                .ok()
                .map(|p| {
                    p.components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| ".".into());
            found.push(RunDir {
                id,
                dir: dir.to_path_buf(),
            });
        }
        if depth == DEPTH {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut folders: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        folders.sort();
        for folder in folders {
            walk(root, &folder, depth + 1, found);
        }
    }
    let mut found = Vec::new();
    walk(root, root, 0, &mut found);
    found
}

/// The regular files of a run folder and its sub-folders (one level), as `/`-separated
/// names with their sizes; links are not followed.
fn run_files(dir: &Path) -> Vec<(String, u64)> {
    let mut files = Vec::new();
    let list = |folder: &Path,
                prefix: &str,
                files: &mut Vec<(String, u64)>,
                deeper: &mut Vec<(PathBuf, String)>| {
        let Ok(entries) = std::fs::read_dir(folder) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            match entry.file_type() {
                Ok(t) if t.is_file() => {
                    let size = entry.metadata().map_or(0, |m| m.len());
                    files.push((format!("{prefix}{name}"), size));
                }
                Ok(t) if t.is_dir() => deeper.push((entry.path(), format!("{prefix}{name}/"))),
                _ => {}
            }
        }
    };
    let mut deeper = Vec::new();
    list(dir, "", &mut files, &mut deeper);
    for (folder, prefix) in std::mem::take(&mut deeper) {
        // A nested run is a run of its own, not this one's files.
        if !folder.join(EVENTS_FILE).exists() {
            list(&folder, &prefix, &mut files, &mut Vec::new());
        }
    }
    files.sort();
    files
}

/// Whether the process that started a run is alive (Linux: its `/proc` entry; elsewhere a log
/// written in the last minute counts as alive).
fn alive(pid: Option<u32>, modified: Option<SystemTime>) -> bool {
    match pid {
        Some(pid) if Path::new("/proc/self").exists() => {
            Path::new("/proc").join(pid.to_string()).exists()
        }
        _ => modified
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age < Duration::from_secs(60)),
    }
}

/// What a run's log said when last read, and the file's state then.
#[derive(Debug, Clone)]
struct Snapshot {
    replay: Replay,
    modified: Option<SystemTime>,
}

impl Snapshot {
    fn read(dir: &Path) -> Self {
        let path = dir.join(EVENTS_FILE);
        let meta = std::fs::metadata(&path).ok();
        let text = std::fs::read(&path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        Self {
            replay: replay(&text),
            modified: meta.and_then(|m| m.modified().ok()),
        }
    }

    fn status(&self) -> Status {
        match &self.replay.end {
            Some(Ok(())) => Status::Finished,
            Some(Err(message)) => Status::Failed(message.clone()),
            None if alive(
                self.replay.start.as_ref().and_then(|s| s.pid),
                self.modified,
            ) =>
            {
                Status::Running
            }
            None => Status::Stopped,
        }
    }
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq)]
enum Status {
    Running,
    Finished,
    Failed(String),
    /// No end recorded and its process is gone: killed.
    Stopped,
}

impl Status {
    fn class(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed(_) => "failed",
            Self::Stopped => "stopped",
        }
    }

    fn words(&self) -> String {
        match self {
            Self::Running => "running".into(),
            Self::Finished => "finished".into(),
            Self::Failed(message) => format!("stopped: {message}"),
            Self::Stopped => "stopped without an end (killed?)".into(),
        }
    }
}

/// The run list.
fn runs_html(found: &[(RunDir, Snapshot)]) -> String {
    if found.is_empty() {
        return "<p id=\"no-runs\">No run yet: runs appear here as soon as they start.</p>".into();
    }
    let mut html = String::from("<ul class=\"runs\">\n");
    for (run, snapshot) in found {
        let status = snapshot.status();
        let stats = &snapshot.replay.stats;
        let epochs = snapshot.replay.start.as_ref().map_or(0, |s| s.epochs);
        let _ = writeln!(
            html,
            "<li data-run=\"{id}\" data-status=\"{class}\"><input type=\"checkbox\" class=\"pick\" value=\"{id}\" title=\"compare\"> <a href=\"#run={href}\">{id}</a><br><span class=\"status {class}\">{words} · epoch {done}/{epochs}</span></li>",
            id = escape(&run.id),
            href = escape(&form_urlencoded::byte_serialize(run.id.as_bytes()).collect::<String>()),
            class = status.class(),
            words = escape(&status.words()),
            done = stats.epochs.len(),
        );
    }
    html.push_str("</ul>\n");
    html
}

/// A run's loss, from its settings.
fn loss_name(run: &Value) -> String {
    run.get("loss")
        .and_then(|l| l.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string()
}

/// One run's view: the report, its status and its files.
fn run_html(run: &RunDir, snapshot: &Snapshot) -> String {
    let settings = snapshot
        .replay
        .start
        .as_ref()
        .map_or(Value::Null, |s| s.run.clone());
    let title = format!("{} - {}", run.id, loss_name(&settings));
    let status = snapshot.status();
    let time = snapshot
        .modified
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    let mut html = format!(
        "<p id=\"run-status\" class=\"status {}\" data-time=\"{time}\">{}",
        status.class(),
        escape(&status.words())
    );
    if let (Status::Running, Some(start)) = (&status, &snapshot.replay.start)
        && let Some(step) = snapshot.replay.steps.last()
    {
        let _ = write!(
            html,
            " · epoch {} step {}/{}",
            step.epoch, step.step, start.steps_per_epoch
        );
    }
    if !snapshot.replay.bad_lines.is_empty() {
        let _ = write!(
            html,
            " · {} line(s) of events.jsonl are not events and were skipped",
            snapshot.replay.bad_lines.len()
        );
    }
    html.push_str("</p>\n");
    let predictions = read_predictions(&run.dir);
    let previews = read_previews(&run.dir);
    let id = form_urlencoded::byte_serialize(run.id.as_bytes()).collect::<String>();
    // Linked, not inline: the browser fetches a preview once per version of its file.
    let link = |name: &str| {
        let version = std::fs::metadata(run.dir.join("previews").join(name))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        format!(
            "/file?run={id}&name={}&v={version}",
            form_urlencoded::byte_serialize(format!("previews/{name}").as_bytes())
                .collect::<String>()
        )
    };
    html.push_str(&report_body(
        &snapshot.replay.stats,
        &settings,
        &title,
        &predictions,
        &previews,
        PreviewSource::Linked(&link),
    ));
    html.push_str("<h2>Files</h2>\n<ul id=\"files\">\n");
    for (name, size) in run_files(&run.dir) {
        let _ = writeln!(
            html,
            "<li><a href=\"/file?run={id}&amp;name={}\" target=\"_blank\">{}</a> ({size} bytes)</li>",
            escape(&form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()),
            escape(&name)
        );
    }
    html.push_str("</ul>\n");
    html
}

/// A regression run's last validation predictions, if it wrote them.
fn read_predictions(dir: &Path) -> Vec<(f64, f64)> {
    std::fs::read_to_string(dir.join("val_predictions.csv"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (t, p) = line.split_once(',')?;
            Some((t.trim().parse().ok()?, p.trim().parse().ok()?))
        })
        .collect()
}

/// A run's validation previews, as saved under `previews/` (by name: the page links them).
fn read_previews(dir: &Path) -> Vec<Preview> {
    let mut previews: Vec<Preview> = std::fs::read_dir(dir.join("previews"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".png"))
        .map(|name| Preview {
            caption: name.clone(),
            name,
            png: Vec::new(),
        })
        .collect();
    previews.sort_by(|a, b| a.name.cmp(&b.name));
    previews
}

/// The compare view of `picked` runs.
fn compare_html(picked: &[(RunDir, Snapshot)], normalise: bool) -> String {
    let runs: Vec<(String, RunStats)> = picked
        .iter()
        .filter(|(_, s)| !s.replay.stats.epochs.is_empty())
        .map(|(run, s)| (run.id.clone(), s.replay.stats.clone()))
        .collect();
    let tasks: Vec<TaskKind> = runs.iter().map(|(_, s)| s.task).collect();
    if tasks.windows(2).any(|w| w[0] != w[1]) {
        return "<p id=\"state\" data-runs=\"0\">These runs are of different tasks; compare runs of one task.</p>".into();
    }
    let mut html = compare_body("compare", &runs, normalise);
    let waiting = picked.len() - runs.len();
    if waiting > 0 {
        let _ = writeln!(
            html,
            "<p>{waiting} selected run(s) have no finished epoch yet.</p>"
        );
    }
    html
}

/// What one page asked to see.
#[derive(Debug, Clone, PartialEq)]
enum View {
    Nothing,
    Run(String),
    Compare(Vec<String>, bool),
}

/// The least time between two sends of a view while its run trains: each send redraws the page,
/// and on a small machine the browser's redrawing competes with training for the cores.
const MIN_INTERVAL: Duration = Duration::from_millis(500);
/// How often a list or view that shows a running run is looked at again even when no file
/// changed (a killed run changes its status, not its files).
const RECHECK: Duration = Duration::from_secs(2);

/// The state of one page's event stream.
struct Stream {
    root: PathBuf,
    view: View,
    /// What was last sent, the files it was made from, and when.
    runs: Sent,
    view_sent: Sent,
    /// Each run's last reading, with the size and time of the log it was read from: a log that
    /// has not changed is not parsed again.
    snapshots: std::collections::HashMap<String, (u64, Option<SystemTime>, Snapshot)>,
    queue: Vec<Event>,
    first: bool,
}

#[derive(Default)]
struct Sent {
    html: Option<String>,
    print: Vec<(String, u64, Option<SystemTime>)>,
    at: Option<std::time::Instant>,
    running: bool,
}

impl Sent {
    /// Whether the files changed (and the last send is old enough), or a running run is due
    /// for another look.
    fn stale(&self, print: &[(String, u64, Option<SystemTime>)], min_interval: Duration) -> bool {
        let age = self.at.map_or(Duration::MAX, |at| at.elapsed());
        self.html.is_none()
            || (self.print != print && age >= min_interval)
            || (self.running && age >= RECHECK)
    }

    /// Records `html` made from `print`; whether it differs from what was sent.
    fn update(
        &mut self,
        html: &str,
        print: Vec<(String, u64, Option<SystemTime>)>,
        running: bool,
    ) -> bool {
        self.print = print;
        self.at = Some(std::time::Instant::now());
        self.running = running;
        if self.html.as_deref() == Some(html) {
            return false;
        }
        self.html = Some(html.to_string());
        true
    }
}

/// A fingerprint of a run's files that a view shows.
fn print_of(run: &RunDir) -> Vec<(String, u64, Option<SystemTime>)> {
    ["events.jsonl", "previews", "val_predictions.csv"]
        .into_iter()
        .map(|name| {
            let meta = std::fs::metadata(run.dir.join(name)).ok();
            (
                format!("{}/{name}", run.id),
                meta.as_ref().map_or(0, |m| m.len()),
                meta.and_then(|m| m.modified().ok()),
            )
        })
        .collect()
}

impl Stream {
    /// `run`'s reading, parsed again only when its log changed.
    fn snapshot(&mut self, run: &RunDir) -> Snapshot {
        let meta = std::fs::metadata(run.dir.join(EVENTS_FILE)).ok();
        let key = (
            meta.as_ref().map_or(0, |m| m.len()),
            meta.and_then(|m| m.modified().ok()),
        );
        match self.snapshots.get(&run.id) {
            Some((len, modified, snapshot)) if (*len, *modified) == key => snapshot.clone(),
            _ => {
                let snapshot = Snapshot::read(&run.dir);
                self.snapshots
                    .insert(run.id.clone(), (key.0, key.1, snapshot.clone()));
                snapshot
            }
        }
    }

    /// Looks at the files once; queues what changed.
    fn poll(&mut self) {
        let found = runs(&self.root);
        let list_print: Vec<_> = found
            .iter()
            .flat_map(|r| print_of(r).into_iter().take(1))
            .collect();
        if self.runs.stale(&list_print, MIN_INTERVAL) {
            let snapshots: Vec<(RunDir, Snapshot)> = found
                .iter()
                .map(|run| (run.clone(), self.snapshot(run)))
                .collect();
            let running = snapshots.iter().any(|(_, s)| s.status() == Status::Running);
            let html = runs_html(&snapshots);
            if self.runs.update(&html, list_print, running) {
                self.queue.push(Event::default().event("runs").data(html));
            }
        }
        let wanted: Vec<&RunDir> = match &self.view {
            View::Nothing => Vec::new(),
            View::Run(id) => found.iter().filter(|r| &r.id == id).collect(),
            View::Compare(ids, _) => ids
                .iter()
                .filter_map(|id| found.iter().find(|r| &r.id == id))
                .collect(),
        };
        let view_print: Vec<_> = wanted.iter().flat_map(|r| print_of(r)).collect();
        if self.view_sent.stale(&view_print, MIN_INTERVAL) {
            let picked: Vec<(RunDir, Snapshot)> = wanted
                .iter()
                .map(|r| ((*r).clone(), self.snapshot(r)))
                .collect();
            let running = picked.iter().any(|(_, s)| s.status() == Status::Running);
            let render = || match (&self.view, picked.first()) {
                (View::Nothing, _) => {
                    "<p id=\"state\" data-epochs=\"0\">Choose a run on the left.</p>".to_string()
                }
                (View::Run(_), Some((run, snapshot))) => run_html(run, snapshot),
                (View::Run(id), None) => format!(
                    "<p id=\"state\" data-epochs=\"0\">There is no run {} in this folder (yet).</p>",
                    escape(id)
                ),
                (View::Compare(_, normalise), _) => compare_html(&picked, *normalise),
            };
            // A bug in rendering shows on the page (and once on stderr); the server goes on.
            let html = std::panic::catch_unwind(std::panic::AssertUnwindSafe(render))
                .unwrap_or_else(|_| {
                    "<p id=\"state\" data-epochs=\"0\">This view cannot be drawn (an internal error; see the dashboard's terminal).</p>".to_string()
                });
            if self.view_sent.update(&html, view_print, running) {
                self.queue.push(Event::default().event("view").data(html));
            }
        }
    }
}

/// The server-sent events of one page: `runs` (the list) and `view` (what it shows), each
/// sent at the start and again when it changes.
async fn live(State(root): State<PathBuf>, RawQuery(query): RawQuery) -> impl IntoResponse {
    let picked = values(&query, "compare");
    let view = match values(&query, "run").into_iter().next() {
        _ if !picked.is_empty() => View::Compare(picked, values(&query, "normalise") != ["0"]),
        Some(run) => View::Run(run),
        None => View::Nothing,
    };
    let stream = Stream {
        root,
        view,
        runs: Sent::default(),
        view_sent: Sent::default(),
        snapshots: std::collections::HashMap::new(),
        queue: Vec::new(),
        first: true,
    };
    let events = futures_util::stream::unfold(stream, |mut stream| async move {
        loop {
            if !stream.queue.is_empty() {
                let event = stream.queue.remove(0);
                return Some((Ok::<Event, Infallible>(event), stream));
            }
            if !stream.first {
                tokio::time::sleep(POLL).await;
            }
            stream.first = false;
            stream.poll();
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// A file of a run, by the run's id and the name the run's file list gives it.
async fn file(State(root): State<PathBuf>, RawQuery(query): RawQuery) -> Response {
    let (Some(id), Some(name)) = (
        values(&query, "run").into_iter().next(),
        values(&query, "name").into_iter().next(),
    ) else {
        return (StatusCode::BAD_REQUEST, "ask for /file?run=RUN&name=FILE\n").into_response();
    };
    let Some(run) = runs(&root).into_iter().find(|r| r.id == id) else {
        return (StatusCode::NOT_FOUND, "no such run\n").into_response();
    };
    if !run_files(&run.dir).iter().any(|(n, _)| *n == name) {
        return (StatusCode::NOT_FOUND, "no such file in this run\n").into_response();
    }
    let Ok(bytes) = std::fs::read(run.dir.join(&name)) else {
        return (StatusCode::NOT_FOUND, "the file went away\n").into_response();
    };
    let kind = match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "csv" | "jsonl" | "json" | "toml" | "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("losskit-dashboard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn runs_are_the_folders_with_an_event_log_and_files_stay_inside_them() {
        let root = scratch("walk");
        for run in ["a", "cmp/ce", "cmp/dice", "deep/x/y/z"] {
            std::fs::create_dir_all(root.join(run).join("previews")).unwrap();
            std::fs::write(root.join(run).join(EVENTS_FILE), "").unwrap();
            std::fs::write(root.join(run).join("previews/p.png"), "png").unwrap();
        }
        std::fs::write(root.join("a/metrics.csv"), "epoch\n").unwrap();
        let found: Vec<String> = runs(&root).into_iter().map(|r| r.id).collect();
        assert_eq!(
            found,
            ["a", "cmp/ce", "cmp/dice"],
            "deeper than {DEPTH} is not looked at"
        );
        let files: Vec<String> = run_files(&root.join("a"))
            .into_iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(files, ["events.jsonl", "metrics.csv", "previews/p.png"]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn query_values_are_decoded_and_repeatable() {
        let query = Some("compare=cmp%2Fce&compare=a%20b&run=x&normalise=0".to_string());
        assert_eq!(values(&query, "compare"), ["cmp/ce", "a b"]);
        assert_eq!(values(&query, "normalise"), ["0"]);
        assert!(values(&None, "run").is_empty());
    }
}
