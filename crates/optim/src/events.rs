//! The run's story as it happens: `events.jsonl` in the run folder, one JSON object per line
//! (run start with the resolved settings, every step, every epoch with every metric and
//! composite term, each checkpoint, the end or the error that stopped it), each line written
//! whole with one `write` as the event happens, so a killed run leaves complete lines. A
//! resumed run appends; a new run (or `--force`) starts the file anew. Every event also goes
//! to `tracing` (target `losskit::train`: steps at `trace`, the rest at `debug`), where
//! `RUST_LOG` or `-v` shows it.
//!
//! The events are the run's record: the run's statistics (and so `metrics.csv`,
//! `summary.json`, `steps.csv` and `report.html`) are the fold of its events
//! ([`RunStats::apply`]), in the training loop as in [`replay`], which rebuilds them from the file
//! (the dashboard's source). Composite terms are `[name, value]` pairs, in the loss's order; a
//! non-finite number is `null`.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use crate::{
    metrics::TaskKind,
    monitor::Best,
    stats::{EpochStats, RunStats},
};

/// The file name of a run's event log inside its output folder.
pub const EVENTS_FILE: &str = "events.jsonl";

/// One event of a run; the `event` field of its line names the kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// Training starts, or resumes from a checkpoint.
    RunStart(RunStart),
    /// One optimizer step.
    Step(StepEvent),
    /// An epoch ended: its statistics, after validation.
    Epoch(EpochEvent),
    /// The checkpoint of an epoch was written.
    Checkpoint {
        /// The epoch.
        epoch: usize,
        /// The checkpoint file.
        path: PathBuf,
        /// The best-epoch copy, when this epoch is the best so far.
        best: Option<PathBuf>,
    },
    /// Early stopping ended the run.
    StoppedEarly {
        /// The last epoch trained.
        epoch: usize,
        /// The best epoch.
        best: Option<Best>,
    },
    /// The run finished.
    RunEnd {
        /// The epochs completed.
        epochs: usize,
        /// Whether early stopping ended it.
        stopped_early: bool,
        /// The best epoch.
        best: Option<Best>,
    },
    /// An error stopped the run.
    Error {
        /// The message, as the program prints it.
        message: String,
    },
    /// An event of a kind this version does not know (a newer writer's); ignored.
    #[serde(other)]
    Unknown,
}

/// The start of a run (or of its resumption).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStart {
    /// Whether the run continues from its checkpoint.
    pub resume: bool,
    /// The last epoch already done (0 for a new run).
    pub from_epoch: usize,
    /// The epochs the run is to train.
    pub epochs: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// Steps per epoch.
    pub steps_per_epoch: usize,
    /// Training samples.
    pub train_samples: usize,
    /// The run's seed.
    pub seed: u64,
    /// The task.
    pub task: TaskKind,
    /// Class, label or target names.
    pub classes: Vec<String>,
    /// The best epoch so far (a resumed run's, from its checkpoint).
    #[serde(default)]
    pub best: Option<Best>,
    /// The training process (the dashboard tells a killed run from a running one by it).
    #[serde(default)]
    pub pid: Option<u32>,
    /// The resolved settings.
    pub run: Value,
}

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEvent {
    /// The epoch, from 1.
    pub epoch: usize,
    /// The step within the epoch, from 1.
    pub step: usize,
    /// Steps since the run began.
    pub global_step: usize,
    /// The batch's loss (always finite: a non-finite loss stops the run before its step).
    pub loss: f64,
    /// The learning rate after the step's scheduler update.
    pub lr: f64,
    /// The batch's composite terms.
    #[serde(deserialize_with = "terms_from_json")]
    pub terms: Vec<(String, f64)>,
}

/// The end of an epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochEvent {
    /// The epoch's statistics; its step losses are the epoch's step events, so they are not
    /// repeated here.
    #[serde(flatten)]
    pub stats: EpochStats,
    /// The mean of the epoch training losses so far.
    pub avg_loss_all_epochs: f64,
    /// Whether this epoch is the best so far.
    pub improved: bool,
    /// The best epoch so far under the run's monitor.
    pub best: Option<Best>,
    /// Whether early stopping ends the run after this epoch.
    pub stopped_early: bool,
}

/// Composite terms as written: `[name, value]` pairs, `null` for a non-finite value.
pub(crate) fn terms_from_json<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<(String, f64)>, D::Error> {
    let pairs = Vec::<(String, Option<f64>)>::deserialize(deserializer)?;
    Ok(pairs
        .into_iter()
        .map(|(name, value)| (name, value.unwrap_or(f64::NAN)))
        .collect())
}

impl RunStats {
    /// Folds one event into the statistics: a new run's start resets them, a resumption drops
    /// any epoch after its checkpoint's, steps collect until their epoch ends.
    pub fn apply(&mut self, event: &RunEvent) {
        match event {
            RunEvent::RunStart(start) => {
                if start.resume {
                    self.epochs.retain(|e| e.epoch <= start.from_epoch);
                    self.best = start.best.clone();
                    self.stopped_early = false;
                } else {
                    *self = RunStats::new(start.task, start.classes.clone());
                }
                self.pending_steps.clear();
            }
            RunEvent::Step(step) => self.pending_steps.push(step.loss),
            RunEvent::Epoch(epoch) => {
                let mut stats = epoch.stats.clone();
                if stats.step_losses.is_empty() {
                    stats.step_losses = std::mem::take(&mut self.pending_steps);
                }
                self.pending_steps.clear();
                self.epochs.push(stats);
                self.best = epoch.best.clone();
                self.stopped_early = epoch.stopped_early;
            }
            RunEvent::Checkpoint { .. }
            | RunEvent::StoppedEarly { .. }
            | RunEvent::RunEnd { .. }
            | RunEvent::Error { .. }
            | RunEvent::Unknown => {}
        }
    }
}

/// A run as its `events.jsonl` tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// The statistics of the epochs finished, and the steps of the epoch under way.
    pub stats: RunStats,
    /// The last run start (settings of the run).
    pub start: Option<RunStart>,
    /// The step events of the epoch under way.
    pub steps: Vec<StepEvent>,
    /// How the run ended, if it did: `run_end` or the error's message.
    pub end: Option<Result<(), String>>,
    /// Complete lines that are not events (reported, then skipped).
    pub bad_lines: Vec<usize>,
}

/// Replays `text` (the contents of an `events.jsonl`). A last line without its newline is one
/// being written (or cut by a kill) and is left out; a complete line that is not an event is
/// skipped and named in [`Replay::bad_lines`].
pub fn replay(text: &str) -> Replay {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    let mut replay = Replay {
        stats: RunStats::new(TaskKind::Classification, Vec::new()),
        start: None,
        steps: Vec::new(),
        end: None,
        bad_lines: Vec::new(),
    };
    for (index, line) in complete.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|value| serde_json::from_value::<RunEvent>(value).ok());
        let Some(event) = event else {
            replay.bad_lines.push(index + 1);
            continue;
        };
        replay.stats.apply(&event);
        match event {
            RunEvent::RunStart(start) => {
                replay.start = Some(start);
                replay.steps.clear();
                replay.end = None;
            }
            RunEvent::Step(step) => replay.steps.push(step),
            RunEvent::Epoch(_) => replay.steps.clear(),
            RunEvent::RunEnd { .. } => replay.end = Some(Ok(())),
            RunEvent::Error { message } => replay.end = Some(Err(message)),
            _ => {}
        }
    }
    replay
}

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

    /// Records `event`: one line, with the time in seconds since the Unix epoch.
    pub fn record(&mut self, event: &RunEvent) {
        let mut value = serde_json::to_value(event).unwrap_or_else(|error| {
            json!({"event": "error", "message": format!("cannot encode an event: {error}")})
        });
        if let Value::Object(fields) = &mut value {
            fields.insert(
                "time".into(),
                json!(
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64())
                ),
            );
        }
        let mut line = value.to_string();
        if matches!(event, RunEvent::Step(_)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn start(resume: bool, from_epoch: usize) -> RunEvent {
        RunEvent::RunStart(RunStart {
            resume,
            from_epoch,
            epochs: 3,
            batch_size: 2,
            steps_per_epoch: 2,
            train_samples: 4,
            seed: 7,
            task: TaskKind::Classification,
            classes: vec!["a".into(), "b".into()],
            best: None,
            pid: None,
            run: json!({"loss": "dice"}),
        })
    }

    fn step(epoch: usize, step: usize, loss: f64) -> RunEvent {
        RunEvent::Step(StepEvent {
            epoch,
            step,
            global_step: (epoch - 1) * 2 + step,
            loss,
            lr: 0.1,
            terms: vec![("z".into(), f64::NAN), ("a".into(), 1.5)],
        })
    }

    fn epoch(epoch: usize) -> RunEvent {
        RunEvent::Epoch(EpochEvent {
            stats: EpochStats {
                epoch,
                step_losses: Vec::new(),
                train_loss: 1.0 / epoch as f64,
                train_terms: vec![("z".into(), 0.5), ("a".into(), f64::NAN)],
                train_metrics: Metrics::default(),
                val_loss: 2.0 / epoch as f64,
                val_terms: vec![("z".into(), 0.25), ("a".into(), 0.75)],
                val_metrics: Metrics {
                    recall: vec![0.5, f64::NAN],
                    ..Metrics::default()
                },
                lr: 0.1,
                seconds: 0.5,
            },
            avg_loss_all_epochs: 1.0,
            improved: true,
            best: Some(Best {
                metric: "val_loss".into(),
                epoch,
                value: 2.0 / epoch as f64,
            }),
            stopped_early: false,
        })
    }

    #[test]
    fn lines_are_whole_objects_appended_or_started_anew() {
        let dir = std::env::temp_dir().join(format!("losskit-events-{}", std::process::id()));
        let mut log = EventLog::open(&dir, false);
        log.record(&start(false, 0));
        log.record(&step(1, 1, 0.5));
        let mut resumed = EventLog::open(&dir, true);
        resumed.record(&start(true, 0));
        let text = std::fs::read_to_string(dir.join(EVENTS_FILE)).unwrap();
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 3);
        assert_eq!(events[1]["event"], "step");
        assert!(events[1]["time"].is_f64());
        assert_eq!(events[1]["terms"], json!([["z", null], ["a", 1.5]]));
        assert_eq!(events[2]["resume"], true);
        EventLog::open(&dir, false).record(&start(false, 0));
        let text = std::fs::read_to_string(dir.join(EVENTS_FILE)).unwrap();
        assert_eq!(text.lines().count(), 1, "a new run starts the log anew");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn lines(events: &[RunEvent]) -> String {
        events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect()
    }

    #[test]
    fn replay_folds_events_as_the_run_did_and_keeps_term_order_and_nans() {
        let events = [
            start(false, 0),
            step(1, 1, 0.75),
            step(1, 2, 0.25),
            epoch(1),
            step(2, 1, 0.5),
            step(2, 2, 0.5),
            epoch(2),
            // Killed during epoch 3, after epoch 2's checkpoint: the resumption replaces it.
            step(3, 1, 9.0),
            epoch(3),
            start(true, 2),
            step(3, 1, 0.125),
        ];
        let mut live = RunStats::new(TaskKind::Regression, Vec::new());
        for event in &events {
            live.apply(event);
        }
        let replayed = replay(&(lines(&events) + "{\"event\":\"step\",\"epo"));
        // Debug, not ==: NaN terms are equal only as text.
        assert_eq!(format!("{:?}", replayed.stats), format!("{live:?}"));
        assert_eq!(replayed.bad_lines, Vec::<usize>::new());
        assert_eq!(live.epochs.len(), 2);
        assert_eq!(live.epochs[0].step_losses, [0.75, 0.25]);
        assert_eq!(live.epochs[1].step_losses, [0.5, 0.5]);
        assert_eq!(
            live.epochs[0].train_terms[0].0, "z",
            "the loss's order, not the alphabet's"
        );
        assert!(live.epochs[0].train_terms[1].1.is_nan());
        assert!(live.epochs[0].val_metrics.recall[1].is_nan());
        assert_eq!(replayed.steps.len(), 1, "the epoch under way");
        assert_eq!(replayed.start.as_ref().map(|s| s.from_epoch), Some(2));
        assert_eq!(replayed.end, None);
        let ended = replay(
            &(lines(&events)
                + "not json\n"
                + &lines(&[RunEvent::Error {
                    message: "losskit: error: x".into(),
                }])),
        );
        assert_eq!(ended.bad_lines, [12]);
        assert_eq!(ended.end, Some(Err("losskit: error: x".into())));
        let unknown = replay("{\"event\":\"from_the_future\",\"x\":1}\n");
        assert!(unknown.bad_lines.is_empty());
    }
}
