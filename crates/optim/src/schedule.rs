//! Learning-rate schedules by name, built from burn's `lr_scheduler` configs.
//!
//! Every schedule counts optimizer steps. Any schedule takes `warmup_steps`: the learning rate
//! then rises linearly from `lr / warmup_steps` to `lr` first, and the schedule proper runs over
//! the remaining steps.

use burn::lr_scheduler::{
    LrSchedulerConfig,
    cosine::CosineAnnealingLrSchedulerConfig,
    exponential::ExponentialLrSchedulerConfig,
    linear::LinearLrSchedulerConfig,
    module_lr_scheduler::{ModuleLrScheduler, ModuleLrSchedulerConfig},
    sequential::SequentialLrSchedulerConfig,
    step::StepLrSchedulerConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    error::OptimConfigError,
    options::{Options, parse_named_spec, split_named},
};

/// The names of the schedules.
pub const SCHEDULES: [&str; 5] = ["constant", "step", "exponential", "cosine", "warmup"];

/// The shape of a schedule after its warm-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The optimizer's learning rate throughout.
    Constant,
    /// Multiply by `gamma` every `step_size` steps.
    Step {
        /// Steps between decays.
        step_size: usize,
        /// The decay factor.
        gamma: f64,
    },
    /// Multiply by `gamma` every step.
    Exponential {
        /// The per-step factor, in (0, 1].
        gamma: f64,
    },
    /// Cosine annealing from the learning rate to `min_lr` over the run.
    Cosine {
        /// The final learning rate.
        min_lr: f64,
    },
}

/// A validated schedule config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleConfig {
    /// Linear warm-up steps before the schedule (0: none).
    pub warmup_steps: usize,
    /// The schedule after warm-up.
    pub kind: ScheduleKind,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            warmup_steps: 0,
            kind: ScheduleKind::Constant,
        }
    }
}

impl ScheduleConfig {
    /// Parses a schedule spec: a name (`cosine`), a JSON object (`{"name": "step",
    /// "step_size": 100, "gamma": 0.5}`, `{"name": "warmup", "warmup_steps": 50, "then":
    /// "cosine"}`) or a `.json` / `.toml` file.
    pub fn parse(spec: &str) -> Result<Self, OptimConfigError> {
        let (name, options) = parse_named_spec("schedule", spec)?;
        Self::from_options(&name, &options)
    }

    /// Builds the config from a JSON value (a name or an object with `name`).
    pub fn from_value(value: &Value) -> Result<Self, OptimConfigError> {
        let (name, options) = split_named("schedule", value.clone())?;
        Self::from_options(&name, &options)
    }

    /// Builds the config from a name and its options.
    pub fn from_options(
        name: &str,
        options: &Map<String, Value>,
    ) -> Result<Self, OptimConfigError> {
        let lowered = name.trim().to_ascii_lowercase();
        let lowered = match lowered.as_str() {
            "linear_warmup" | "warmup_linear" => "warmup".to_string(),
            "cosine_annealing" => "cosine".to_string(),
            _ => lowered,
        };
        let allowed: &[&str] = match lowered.as_str() {
            "constant" => &["warmup_steps"],
            "step" => &["step_size", "gamma", "warmup_steps"],
            "exponential" => &["gamma", "warmup_steps"],
            "cosine" => &["min_lr", "warmup_steps"],
            "warmup" => &["warmup_steps", "then"],
            _ => {
                return Err(OptimConfigError::UnknownName {
                    kind: "schedule",
                    name: name.to_string(),
                    suggestions: losskit_core::error::closest(&lowered, SCHEDULES),
                    available: SCHEDULES.iter().map(|s| s.to_string()).collect(),
                });
            }
        };
        let o = Options::new("schedule", &lowered, options, allowed)?;
        let warmup_steps = o.count("warmup_steps", Some(0), 0)?;
        let kind = match lowered.as_str() {
            "constant" => ScheduleKind::Constant,
            "step" => ScheduleKind::Step {
                step_size: o.count("step_size", None, 1)?,
                gamma: o.number("gamma", 0.1, |g| {
                    (g <= 0.0 || g > 1.0).then_some("must be in (0, 1]")
                })?,
            },
            "exponential" => ScheduleKind::Exponential {
                gamma: o.number("gamma", 0.999, |g| {
                    (g <= 0.0 || g > 1.0).then_some("must be in (0, 1]")
                })?,
            },
            "cosine" => ScheduleKind::Cosine {
                min_lr: o.number("min_lr", 0.0, |m| (m < 0.0).then_some("must be >= 0"))?,
            },
            _ => {
                if warmup_steps == 0 {
                    return Err(o.invalid(
                        "warmup_steps",
                        "is required (at least 1) for the warmup schedule",
                    ));
                }
                match o.nested("then") {
                    None => ScheduleKind::Constant,
                    Some(then) => {
                        let inner = ScheduleConfig::from_value(then)?;
                        if inner.warmup_steps > 0 {
                            return Err(o.invalid("then", "must not have its own warmup_steps"));
                        }
                        inner.kind
                    }
                }
            }
        };
        Ok(Self { warmup_steps, kind })
    }

    /// The config as JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Builds burn's scheduler for a run of `total_steps` optimizer steps starting at `lr`.
    pub fn build(
        &self,
        lr: f64,
        total_steps: usize,
    ) -> Result<ModuleLrScheduler, OptimConfigError> {
        let invalid = |problem: String| OptimConfigError::InvalidOption {
            kind: "schedule",
            name: self.name().to_string(),
            option: "lr".into(),
            problem,
        };
        let needs_unit_lr = !matches!(
            self.kind,
            ScheduleKind::Constant | ScheduleKind::Step { .. }
        ) || self.warmup_steps > 0;
        if needs_unit_lr && !(lr > 0.0 && lr <= 1.0) {
            return Err(invalid(format!(
                "the optimizer's lr must be in (0, 1] for this schedule, got {lr}"
            )));
        }
        let after = total_steps.saturating_sub(self.warmup_steps).max(1);
        let main: LrSchedulerConfig = match &self.kind {
            ScheduleKind::Constant => LrSchedulerConfig::Constant(lr),
            ScheduleKind::Step { step_size, gamma } => StepLrSchedulerConfig::new(lr, *step_size)
                .with_gamma(*gamma)
                .into(),
            ScheduleKind::Exponential { gamma } => {
                ExponentialLrSchedulerConfig::new(lr, *gamma).into()
            }
            ScheduleKind::Cosine { min_lr } => {
                if *min_lr > lr {
                    return Err(OptimConfigError::InvalidOption {
                        kind: "schedule",
                        name: "cosine".into(),
                        option: "min_lr".into(),
                        problem: format!("must be at most the optimizer's lr {lr}, got {min_lr}"),
                    });
                }
                CosineAnnealingLrSchedulerConfig::new(lr, after)
                    .with_min_lr(*min_lr)
                    .into()
            }
        };
        let config = if self.warmup_steps > 0 {
            let warmup =
                LinearLrSchedulerConfig::new(lr / self.warmup_steps as f64, lr, self.warmup_steps);
            LrSchedulerConfig::Sequential(SequentialLrSchedulerConfig::new(
                vec![warmup.into(), main],
                vec![self.warmup_steps],
            ))
        } else {
            main
        };
        ModuleLrSchedulerConfig::new(config).init().map_err(invalid)
    }

    /// The schedule's name.
    pub fn name(&self) -> &'static str {
        match self.kind {
            ScheduleKind::Constant if self.warmup_steps > 0 => "warmup",
            ScheduleKind::Constant => "constant",
            ScheduleKind::Step { .. } => "step",
            ScheduleKind::Exponential { .. } => "exponential",
            ScheduleKind::Cosine { .. } => "cosine",
        }
    }
}
