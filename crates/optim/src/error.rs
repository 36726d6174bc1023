//! Typed errors of optimizer and schedule configs, and of training runs.

/// A problem with an optimizer or schedule config.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptimConfigError {
    /// No optimizer or schedule of this name.
    #[error("unknown {kind} `{name}`{}; available: {}", suggest(.suggestions), .available.join(", "))]
    UnknownName {
        /// `optimizer` or `schedule`.
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// The closest names, best first.
        suggestions: Vec<String>,
        /// Every valid name.
        available: Vec<String>,
    },
    /// An option the optimizer or schedule does not have.
    #[error("{kind} `{name}` has no option `{option}`{}; its options are: {}", suggest(.suggestions), .allowed.join(", "))]
    UnknownOption {
        /// `optimizer` or `schedule`.
        kind: &'static str,
        /// The optimizer's or schedule's name.
        name: String,
        /// The unknown option.
        option: String,
        /// The closest option names.
        suggestions: Vec<String>,
        /// Every option accepted.
        allowed: Vec<String>,
    },
    /// An option with a wrong type or a value out of range.
    #[error("{kind} `{name}`: option `{option}` {problem}")]
    InvalidOption {
        /// `optimizer` or `schedule`.
        kind: &'static str,
        /// The optimizer's or schedule's name.
        name: String,
        /// The option at fault.
        option: String,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// The spec could not be read.
    #[error("{0}")]
    InvalidSpec(String),
}

fn suggest(suggestions: &[String]) -> String {
    match suggestions {
        [] => String::new(),
        [one] => format!(" (did you mean `{one}`?)"),
        many => {
            let quoted: Vec<String> = many.iter().map(|s| format!("`{s}`")).collect();
            format!(" (did you mean one of {}?)", quoted.join(", "))
        }
    }
}

/// A training run that could not go on.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A loss that is NaN or infinite.
    #[error("the loss became {value} at epoch {epoch}, step {step}; training stopped{}", kept(.checkpoint))]
    NonFiniteLoss {
        /// The value (`NaN`, `inf`).
        value: String,
        /// The epoch (1-based).
        epoch: usize,
        /// The step within the epoch (1-based).
        step: usize,
        /// The last good checkpoint, if any.
        checkpoint: Option<String>,
    },
    /// The caller asked the run to stop (e.g. Ctrl-C) before it finished.
    #[error("interrupted before epoch {epoch}, step {step}{}", kept(.checkpoint))]
    Interrupted {
        /// The epoch that was running (1-based).
        epoch: usize,
        /// The step that was about to run (1-based).
        step: usize,
        /// The last checkpoint, if any epoch completed.
        checkpoint: Option<String>,
    },
    /// The loss rejected the model output or the target.
    #[error("loss: {0}")]
    Loss(#[from] losskit_core::Error),
    /// A config problem.
    #[error(transparent)]
    Config(#[from] OptimConfigError),
    /// A checkpoint that could not be read or written.
    #[error("{0}")]
    Checkpoint(String),
    /// A file that could not be written.
    #[error("{0}")]
    Io(String),
    /// The task (data, model) failed.
    #[error("{0}")]
    Task(String),
}

impl From<std::io::Error> for TrainError {
    /// A failed write; the message names the file ([`losskit_core::atomic_write`] errors do).
    fn from(error: std::io::Error) -> Self {
        Self::Io(error.to_string())
    }
}

fn kept(checkpoint: &Option<String>) -> String {
    match checkpoint {
        Some(path) => format!("; the last good checkpoint is kept at {path}"),
        None => "; no epoch completed, so there is no checkpoint".to_string(),
    }
}
