//! Typed errors: what was wrong, and what was expected.

use std::fmt;

/// A problem with a loss's configuration: its name, its options or the spec that holds them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// No loss is registered under this name.
    #[error("unknown loss `{name}`{}", suggest(.suggestions))]
    UnknownLoss {
        /// The name asked for.
        name: String,
        /// The closest registered names, best first.
        suggestions: Vec<String>,
    },
    /// The config names an option the loss does not have.
    #[error("loss `{loss}` has no option `{option}`{}; its options are: {}", suggest(.suggestions), list(.allowed))]
    UnknownOption {
        /// The loss's registered name.
        loss: String,
        /// The unknown option.
        option: String,
        /// The closest option names.
        suggestions: Vec<String>,
        /// Every option the loss accepts.
        allowed: Vec<String>,
    },
    /// An option without default was not given.
    #[error("loss `{loss}` needs option `{option}`: {expected}")]
    MissingOption {
        /// The loss's registered name.
        loss: String,
        /// The missing option.
        option: String,
        /// What a valid value looks like.
        expected: String,
    },
    /// An option has the wrong type or a value outside its range.
    #[error("loss `{loss}`: option `{option}` {problem}")]
    InvalidOption {
        /// The loss's registered name.
        loss: String,
        /// The option at fault (a dotted path for nested options).
        option: String,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// The spec itself could not be read or parsed.
    #[error("{0}")]
    InvalidSpec(String),
    /// Two registrations claim one name.
    #[error("loss name `{name}` is registered twice ({first} and {second}); rename one of them")]
    DuplicateName {
        /// The contested name (or alias).
        name: String,
        /// The loss that claimed it first.
        first: String,
        /// The loss that claimed it again.
        second: String,
    },
}

/// A problem with the tensors handed to a loss.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    /// The output's rank is not one the losses accept.
    #[error("output has shape {shape:?}; expected [N, C, ...] of rank 2 to 5 with N, C >= 1")]
    OutputRank {
        /// The output's shape.
        shape: Vec<usize>,
    },
    /// Output and target shapes do not fit together.
    #[error("target shape {target:?} does not fit output shape {output:?}; expected {expected}")]
    ShapeMismatch {
        /// The output's shape.
        output: Vec<usize>,
        /// The target's shape.
        target: Vec<usize>,
        /// The shapes that would fit.
        expected: String,
    },
    /// A class index outside `0..classes` (and not the ignored index).
    #[error("target holds class index {index}, outside 0..{classes}{}", ignore_note(.ignore_index))]
    ClassIndexOutOfRange {
        /// The offending index.
        index: i64,
        /// The number of classes (the output's C).
        classes: usize,
        /// The ignored index, if any.
        ignore_index: Option<i64>,
    },
    /// A NaN or infinity in an input tensor.
    #[error("{tensor} contains {what}; losses need finite inputs")]
    NonFinite {
        /// `output` or `target`.
        tensor: &'static str,
        /// `NaN` or `infinity`.
        what: &'static str,
    },
    /// The loss does not accept this kind of target or shape.
    #[error("loss `{loss}` {problem}")]
    Unsupported {
        /// The loss's name.
        loss: String,
        /// What is not supported, and what is.
        problem: String,
    },
    /// Target values outside the domain the loss needs.
    #[error("{0}")]
    TargetDomain(String),
}

/// Any losskit error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A configuration problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An input problem.
    #[error(transparent)]
    Input(#[from] InputError),
}

fn suggest(suggestions: &[String]) -> String {
    match suggestions {
        [] => String::new(),
        [one] => format!(" (did you mean `{one}`?)"),
        many => format!(" (did you mean one of {}?)", list(many)),
    }
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| format!("`{item}`")).collect();
    quoted.join(", ")
}

fn ignore_note(ignore_index: &Option<i64>) -> String {
    match ignore_index {
        Some(index) => format!(" (or {index}, the ignore_index)"),
        None => String::new(),
    }
}

/// The names closest to `wanted` among `candidates`, best first (at most three).
pub fn closest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut scored: Vec<(f64, &str)> = candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(wanted, candidate), candidate))
        .filter(|(score, candidate)| {
            *score > 0.8 || candidate.contains(wanted) && wanted.len() >= 3
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(3)
        .map(|(_, name)| name.to_string())
        .collect()
}

impl ConfigError {
    /// An [`InvalidOption`](ConfigError::InvalidOption) error.
    pub fn invalid(loss: &str, option: &str, problem: impl fmt::Display) -> Self {
        ConfigError::InvalidOption {
            loss: loss.to_string(),
            option: option.to_string(),
            problem: problem.to_string(),
        }
    }
}
