//! Optimizers by name, configured from a spec and built from burn's optimizer configs.

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::{
    AdaGradConfig, AdamConfig, AdamWConfig, ModuleOptimizer, RmsPropConfig, SgdConfig,
    decay::WeightDecayConfig, momentum::MomentumConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    error::OptimConfigError,
    options::{Options, parse_named_spec, split_named},
};

/// The names of the optimizers, in display order.
pub const OPTIMIZERS: [&str; 5] = ["sgd", "adam", "adamw", "rmsprop", "adagrad"];

/// A validated optimizer config: which optimizer, its learning rate and options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum OptimizerConfig {
    /// Stochastic gradient descent, optionally with (Nesterov) momentum.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum factor in [0, 1); 0 disables momentum.
        momentum: f64,
        /// Dampening of the momentum, in [0, 1].
        dampening: f64,
        /// Nesterov momentum (needs momentum > 0).
        nesterov: bool,
        /// L2 penalty added to the gradient.
        weight_decay: f64,
        /// Clip gradients to this global norm, if set.
        clip_norm: Option<f64>,
    },
    /// Adam.
    Adam {
        /// Learning rate.
        lr: f64,
        /// The moment decay rates.
        betas: [f64; 2],
        /// Added to the denominator for stability.
        eps: f64,
        /// L2 penalty added to the gradient (0 disables).
        weight_decay: f64,
        /// AMSGrad variant.
        amsgrad: bool,
        /// Clip gradients to this global norm, if set.
        clip_norm: Option<f64>,
    },
    /// Adam with decoupled weight decay.
    Adamw {
        /// Learning rate.
        lr: f64,
        /// The moment decay rates.
        betas: [f64; 2],
        /// Added to the denominator for stability.
        eps: f64,
        /// Decoupled weight decay.
        weight_decay: f64,
        /// AMSGrad variant.
        amsgrad: bool,
        /// Clip gradients to this global norm, if set.
        clip_norm: Option<f64>,
    },
    /// RMSprop.
    Rmsprop {
        /// Learning rate.
        lr: f64,
        /// Smoothing constant.
        alpha: f64,
        /// Momentum factor in [0, 1).
        momentum: f64,
        /// Added to the denominator for stability.
        eps: f64,
        /// Centered variant.
        centered: bool,
        /// L2 penalty (0 disables).
        weight_decay: f64,
        /// Clip gradients to this global norm, if set.
        clip_norm: Option<f64>,
    },
    /// Adagrad.
    Adagrad {
        /// Learning rate.
        lr: f64,
        /// Learning-rate decay.
        lr_decay: f64,
        /// Added to the denominator for stability.
        eps: f64,
        /// L2 penalty (0 disables).
        weight_decay: f64,
        /// Clip gradients to this global norm, if set.
        clip_norm: Option<f64>,
    },
}

fn positive(value: f64) -> Option<&'static str> {
    (value <= 0.0).then_some("must be > 0")
}

fn non_negative(value: f64) -> Option<&'static str> {
    (value < 0.0).then_some("must be >= 0")
}

fn unit_open(value: f64) -> Option<&'static str> {
    (!(0.0..1.0).contains(&value)).then_some("must be in [0, 1)")
}

fn unit_closed(value: f64) -> Option<&'static str> {
    (!(0.0..=1.0).contains(&value)).then_some("must be in [0, 1]")
}

impl OptimizerConfig {
    /// Parses an optimizer spec: a name (`adam`), a JSON object (`{"name": "sgd", "lr": 0.1,
    /// "momentum": 0.9}`) or a `.json` / `.toml` file.
    pub fn parse(spec: &str) -> Result<Self, OptimConfigError> {
        let (name, options) = parse_named_spec("optimizer", spec)?;
        Self::from_options(&name, &options)
    }

    /// Builds the config from a JSON value (a name or an object with `name`).
    pub fn from_value(value: &Value) -> Result<Self, OptimConfigError> {
        let (name, options) = split_named("optimizer", value.clone())?;
        Self::from_options(&name, &options)
    }

    /// Builds the config from a name and its options; every option is checked.
    pub fn from_options(
        name: &str,
        options: &Map<String, Value>,
    ) -> Result<Self, OptimConfigError> {
        let lowered = name.trim().to_ascii_lowercase();
        let allowed: &[&str] = match lowered.as_str() {
            "sgd" => &[
                "lr",
                "momentum",
                "dampening",
                "nesterov",
                "weight_decay",
                "clip_norm",
            ],
            "adam" | "adamw" => &["lr", "betas", "eps", "weight_decay", "amsgrad", "clip_norm"],
            "rmsprop" => &[
                "lr",
                "alpha",
                "momentum",
                "eps",
                "centered",
                "weight_decay",
                "clip_norm",
            ],
            "adagrad" => &["lr", "lr_decay", "eps", "weight_decay", "clip_norm"],
            _ => {
                return Err(OptimConfigError::UnknownName {
                    kind: "optimizer",
                    name: name.to_string(),
                    suggestions: losskit_core::error::closest(&lowered, OPTIMIZERS),
                    available: OPTIMIZERS.iter().map(|s| s.to_string()).collect(),
                });
            }
        };
        let o = Options::new("optimizer", &lowered, options, allowed)?;
        let default_lr = match lowered.as_str() {
            "sgd" => 0.01,
            "adagrad" => 0.01,
            _ => 1e-3,
        };
        let lr = o.number("lr", default_lr, positive)?;
        let clip_norm = match o.nested("clip_norm") {
            None => None,
            Some(_) => Some(o.number("clip_norm", 1.0, positive)?),
        };
        let betas = |o: &Options<'_>| o.pair("betas", [0.9, 0.999], unit_open);
        Ok(match lowered.as_str() {
            "sgd" => {
                let momentum = o.number("momentum", 0.0, unit_open)?;
                let nesterov = o.flag("nesterov", false)?;
                if nesterov && momentum == 0.0 {
                    return Err(o.invalid("nesterov", "needs `momentum` > 0"));
                }
                OptimizerConfig::Sgd {
                    lr,
                    momentum,
                    dampening: o.number("dampening", 0.0, unit_closed)?,
                    nesterov,
                    weight_decay: o.number("weight_decay", 0.0, non_negative)?,
                    clip_norm,
                }
            }
            "adam" => OptimizerConfig::Adam {
                lr,
                betas: betas(&o)?,
                eps: o.number("eps", 1e-8, positive)?,
                weight_decay: o.number("weight_decay", 0.0, non_negative)?,
                amsgrad: o.flag("amsgrad", false)?,
                clip_norm,
            },
            "adamw" => OptimizerConfig::Adamw {
                lr,
                betas: betas(&o)?,
                eps: o.number("eps", 1e-8, positive)?,
                weight_decay: o.number("weight_decay", 1e-2, non_negative)?,
                amsgrad: o.flag("amsgrad", false)?,
                clip_norm,
            },
            "rmsprop" => OptimizerConfig::Rmsprop {
                lr,
                alpha: o.number("alpha", 0.99, unit_open)?,
                momentum: o.number("momentum", 0.0, unit_open)?,
                eps: o.number("eps", 1e-8, positive)?,
                centered: o.flag("centered", false)?,
                weight_decay: o.number("weight_decay", 0.0, non_negative)?,
                clip_norm,
            },
            _ => OptimizerConfig::Adagrad {
                lr,
                lr_decay: o.number("lr_decay", 0.0, non_negative)?,
                eps: o.number("eps", 1e-10, positive)?,
                weight_decay: o.number("weight_decay", 0.0, non_negative)?,
                clip_norm,
            },
        })
    }

    /// The optimizer's name.
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd { .. } => "sgd",
            OptimizerConfig::Adam { .. } => "adam",
            OptimizerConfig::Adamw { .. } => "adamw",
            OptimizerConfig::Rmsprop { .. } => "rmsprop",
            OptimizerConfig::Adagrad { .. } => "adagrad",
        }
    }

    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd { lr, .. }
            | OptimizerConfig::Adam { lr, .. }
            | OptimizerConfig::Adamw { lr, .. }
            | OptimizerConfig::Rmsprop { lr, .. }
            | OptimizerConfig::Adagrad { lr, .. } => *lr,
        }
    }

    /// The config as JSON, every option spelled out.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Builds burn's optimizer for a whole module.
    pub fn build(&self) -> ModuleOptimizer {
        let decay = |penalty: f64| (penalty > 0.0).then(|| WeightDecayConfig::new(penalty as f32));
        let clip = |norm: &Option<f64>| norm.map(|n| GradientClippingConfig::Norm(n as f32));
        match self {
            OptimizerConfig::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay,
                clip_norm,
                ..
            } => SgdConfig::new()
                .with_momentum((*momentum > 0.0).then(|| {
                    MomentumConfig::new()
                        .with_momentum(*momentum)
                        .with_dampening(*dampening)
                        .with_nesterov(*nesterov)
                }))
                .with_weight_decay(decay(*weight_decay))
                .with_gradient_clipping(clip(clip_norm))
                .init(),
            OptimizerConfig::Adam {
                betas,
                eps,
                weight_decay,
                amsgrad,
                clip_norm,
                ..
            } => AdamConfig::new()
                .with_beta_1(betas[0] as f32)
                .with_beta_2(betas[1] as f32)
                .with_epsilon(*eps as f32)
                .with_amsgrad(*amsgrad)
                .with_weight_decay(decay(*weight_decay))
                .with_grad_clipping(clip(clip_norm))
                .init(),
            OptimizerConfig::Adamw {
                betas,
                eps,
                weight_decay,
                amsgrad,
                clip_norm,
                ..
            } => AdamWConfig::new()
                .with_beta_1(betas[0] as f32)
                .with_beta_2(betas[1] as f32)
                .with_epsilon(*eps as f32)
                .with_weight_decay(*weight_decay as f32)
                .with_amsgrad(*amsgrad)
                .with_grad_clipping(clip(clip_norm))
                .init(),
            OptimizerConfig::Rmsprop {
                alpha,
                momentum,
                eps,
                centered,
                weight_decay,
                clip_norm,
                ..
            } => RmsPropConfig::new()
                .with_alpha(*alpha as f32)
                .with_momentum(*momentum as f32)
                .with_epsilon(*eps as f32)
                .with_centered(*centered)
                .with_weight_decay(decay(*weight_decay))
                .with_grad_clipping(clip(clip_norm))
                .init(),
            OptimizerConfig::Adagrad {
                lr_decay,
                eps,
                weight_decay,
                clip_norm,
                ..
            } => AdaGradConfig::new()
                .with_lr_decay(*lr_decay)
                .with_epsilon(*eps as f32)
                .with_weight_decay(decay(*weight_decay))
                .with_grad_clipping(clip(clip_norm))
                .init(),
        }
    }
}
