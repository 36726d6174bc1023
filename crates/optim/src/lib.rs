//! # losskit-optim
//!
//! Optimizers and learning-rate schedules by name (wrapping burn's), and a training loop that
//! takes any registered loss, any optimizer and any device, checkpoints every epoch, resumes,
//! and reports live loss statistics: the loss of each step, epoch means, the mean over all
//! epochs, validation loss, task metrics and the per-term values of composite losses.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod error;
pub mod events;
pub mod init;
pub mod metrics;
pub mod monitor;
pub mod optimizer;
mod options;
mod parallel;
pub mod plot;
pub mod report;
pub mod schedule;
pub mod stats;
pub mod train;

pub use checkpoint::{CHECKPOINT_FILE, Checkpoint, CheckpointMeta};
pub use error::{OptimConfigError, TrainError};
pub use events::{EVENTS_FILE, EventLog, RunEvent, replay};
pub use init::seeded_init;
pub use losskit_core::Rng;
pub use metrics::{Confusion, Metrics, Mistake, OutputReading, Tally, TaskKind};
pub use monitor::{BEST_FILE, Best, Monitor};
pub use optimizer::OptimizerConfig;
pub use options::{parse_named_spec, split_named};
pub use schedule::ScheduleConfig;
pub use stats::{EpochStats, RunStats};
pub use train::{Progress, Split, SplitEvaluation, Task, TrainConfig, TrainOutcome, train};
