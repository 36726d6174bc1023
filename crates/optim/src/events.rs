//! The run's story as it happens: `events.jsonl` in the run folder, one JSON object per line
//! (run start with the resolved settings, every step, every epoch with every metric and
//! composite term, each checkpoint, the end or the error that stopped it), each line written
//! whole with one `write` as the event happens, so a killed run leaves complete lines. A
//! resumed run appends; a new run (or `--force`) starts the file anew. Every event also goes
//! to `tracing` (target `losskit::train`: steps at `trace`, the rest at `debug`), where
//! `RUST_LOG` or `-v` shows it.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{Map, Value, json};

/// The file name of a run's event log inside its output folder.
pub const EVENTS_FILE: &str = "events.jsonl";

/// An open event log. Writing is best effort: a failed write (a full disk) is reported once
/// through `tracing` and the log stops, while training goes on to fail, or not, on its
/// checkpoint.
#[derive(Debug)]
pub struct EventLog {
    file: Option<File>,
    path: PathBuf,
}

impl EventLog {
    /// Opens `dir/events.jsonl`: appended to when `append` (a resumed run), else started anew.
    pub fn open(dir: &Path, append: bool) -> Self {
        let path = dir.join(EVENTS_FILE);
        let file = std::fs::create_dir_all(dir)
            .and_then(|()| {
                OpenOptions::new()
                    .create(true)
                    .append(append)
                    .write(true)
                    .truncate(!append)
                    .open(&path)
            })
            .map_err(|error| {
                tracing::warn!(
                    target: "losskit::train",
                    "cannot open {}: {error}; the run goes on without an event log",
                    path.display()
                )
            })
            .ok();
        Self { file, path }
    }

    /// A log that writes nothing (events still go to `tracing`).
    pub fn disabled() -> Self {
        Self {
            file: None,
            path: PathBuf::new(),
        }
    }

    /// Records event `kind` with `fields` (an object): one line, with the time in seconds
    /// since the Unix epoch.
    pub fn record(&mut self, kind: &str, fields: Value) {
        let mut event = Map::new();
        event.insert("event".into(), json!(kind));
        event.insert(
            "time".into(),
            json!(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64())
            ),
        );
        if let Value::Object(fields) = fields {
            event.extend(fields);
        }
        let mut line = Value::Object(event).to_string();
        if kind == "step" {
            tracing::trace!(target: "losskit::train", "{line}");
        } else {
            tracing::debug!(target: "losskit::train", "{line}");
        }
        line.push('\n');
        if let Some(file) = &mut self.file
            && let Err(error) = file.write_all(line.as_bytes())
        {
            tracing::warn!(
                target: "losskit::train",
                "cannot write {}: {error}; the event log stops here",
                self.path.display()
            );
            self.file = None;
        }
    }
}

/// A number for JSON: non-finite values (which JSON cannot hold) as `null`.
pub fn number(value: f64) -> Value {
    if value.is_finite() {
        json!(value)
    } else {
        Value::Null
    }
}

/// Named values (composite terms) as an object.
pub fn named(values: &[(String, f64)]) -> Value {
    Value::Object(
        values
            .iter()
            .map(|(name, value)| (name.clone(), number(*value)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_whole_objects_appended_or_started_anew() {
        let dir = std::env::temp_dir().join(format!("losskit-events-{}", std::process::id()));
        let mut log = EventLog::open(&dir, false);
        log.record("run_start", json!({"epochs": 2}));
        log.record(
            "step",
            json!({"loss": f64::NAN, "terms": named(&[("a".into(), 1.5)])}),
        );
        let mut resumed = EventLog::open(&dir, true);
        resumed.record("run_start", json!({"resume": true}));
        let text = std::fs::read_to_string(dir.join(EVENTS_FILE)).unwrap();
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 3);
        assert_eq!(events[1]["event"], "step");
        assert!(events[1]["loss"].is_null() || events[1]["loss"].is_f64());
        assert_eq!(events[1]["terms"]["a"], 1.5);
        assert_eq!(events[2]["resume"], true);
        EventLog::open(&dir, false).record("run_start", json!({}));
        let text = std::fs::read_to_string(dir.join(EVENTS_FILE)).unwrap();
        assert_eq!(text.lines().count(), 1, "a new run starts the log anew");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
