//! The conformance kit: checks that any loss, built-in or plugin, is numerically sound.
//!
//! [`check`] (or [`check_registered`]) runs every property below on small deterministic random
//! inputs of each shape and target kind the loss declares in its
//! [`Capabilities`](crate::Capabilities), and reports which property failed with the input that
//! broke it:
//!
//! | property | what must hold |
//! | --- | --- |
//! | `finite` | value and gradient are finite on random inputs |
//! | `extreme` | value and gradient stay finite at logits ±1e4, probabilities of exactly 0 and 1, residuals around 1e3, log-rates of ±30, empty masks |
//! | `gradient` | autodiff gradient = central finite differences: `|g - fd| <= 2e-2·max|g| + 1e-4` in float32 (step `1e-3·max(1, |x|)`); elements where the one-sided slopes disagree (a kink) are skipped, but at most half of them |
//! | `reduction` | `none` has one finite value per sample and `sum(none) = sum`; where the loss declares what `mean` averages over (`Capabilities::mean_over`), `mean · count = sum`; within 1e-4 relative |
//! | `batch_order` | reversing the batch leaves `mean` and `sum` unchanged and reverses `none` |
//! | `minimum` | a perfect prediction gives the declared minimum, within 1e-3 |
//! | `devices` | every compiled-in device gives the same value and gradient, within 1e-4 relative to the largest |
//! | `error` | the loss accepts every input its capabilities declare |
//!
//! Inputs: every declared rank × target kind, plus one sample with the fewest channels the
//! loss accepts; with an `ignore_index`, targets get ignored positions and one input has a
//! sample that is ignored entirely.
//!
//! Tolerances are for float32 arithmetic on inputs of a few dozen elements.

use std::fmt;

use burn::tensor::Device;

use crate::{
    compute::{ComputedLoss, compute_loss},
    error::ConfigError,
    input::{HostArray, HostValues, Reduction},
    loss::{Capabilities, Loss, OutputDomain, TargetKind},
    registry::Registry,
    rng::Rng,
};

/// A property of the kit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Property {
    /// Finite value and gradient on random inputs.
    Finite,
    /// Finite value and gradient at extreme inputs.
    Extreme,
    /// Autodiff gradient matches finite differences.
    Gradient,
    /// `mean`, `sum` and `none` agree.
    Reduction,
    /// Invariance to the order of the batch.
    BatchOrder,
    /// A perfect prediction gives the declared minimum.
    Minimum,
    /// Every compiled-in device agrees.
    Devices,
    /// The loss rejected an input its capabilities declare.
    Error,
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Property::Finite => "finite",
            Property::Extreme => "extreme",
            Property::Gradient => "gradient",
            Property::Reduction => "reduction",
            Property::BatchOrder => "batch_order",
            Property::Minimum => "minimum",
            Property::Devices => "devices",
            Property::Error => "error",
        })
    }
}

/// One failed property, with the input that broke it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The property that failed.
    pub property: Property,
    /// The input: shapes, kinds and the first values.
    pub input: String,
    /// What was observed.
    pub detail: String,
}

/// The result of running the kit on one loss.
#[derive(Debug, Clone)]
pub struct Report {
    /// The loss's name.
    pub loss: String,
    /// How many property checks ran.
    pub checks: usize,
    /// The checks that failed.
    pub failures: Vec<Failure>,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.checks > 0
    }

    /// Whether `property` failed.
    pub fn failed(&self, property: Property) -> bool {
        self.failures
            .iter()
            .any(|failure| failure.property == property)
    }

    /// Panics with the report unless every check passed.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.passed(), "{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.checks == 0 {
            return writeln!(f, "loss `{}`: no conformance check could run", self.loss);
        }
        if self.failures.is_empty() {
            return writeln!(
                f,
                "loss `{}`: {} conformance checks passed",
                self.loss, self.checks
            );
        }
        writeln!(
            f,
            "loss `{}`: {} of {} conformance checks failed",
            self.loss,
            self.failures.len(),
            self.checks
        )?;
        for failure in &self.failures {
            writeln!(
                f,
                "- {}: {} [input: {}]",
                failure.property, failure.detail, failure.input
            )?;
        }
        Ok(())
    }
}

/// Runs the kit on the registered loss `name`, configured with its example config.
pub fn check_registered(name: &str) -> Result<Report, ConfigError> {
    let registry = Registry::global()?;
    let entry = registry.get(name)?;
    let loss = entry.build_example()?;
    Ok(check(entry.name, loss.as_ref()))
}

/// Runs the kit on `loss` on the default CPU device, comparing every other compiled-in CPU
/// backend with it (`check_on` takes any devices, GPUs included).
pub fn check(name: &str, loss: &dyn Loss) -> Report {
    check_on(name, loss, &crate::devices::cpu_devices())
}

/// Runs the kit on `loss`; the first device is the reference, the others are compared to it.
pub fn check_on(name: &str, loss: &dyn Loss, devices: &[(&'static str, Device)]) -> Report {
    let mut kit = Kit {
        loss,
        report: Report {
            loss: name.to_string(),
            checks: 0,
            failures: Vec::new(),
        },
        devices,
    };
    let Some((_, device)) = devices.first() else {
        return kit.report;
    };
    let capabilities = loss.capabilities();
    let mut seed = 7u64;
    for &rank in &capabilities.ranks {
        for &kind in &capabilities.targets {
            seed += 1;
            let case = Case::random(&capabilities, rank, kind, seed);
            kit.run_case(&case, device, &capabilities);
            if let Some(ignored) = capabilities
                .ignore_index
                .filter(|_| kind == TargetKind::ClassIndices)
            {
                kit.run_case(&case.with_ignored(ignored, false), device, &capabilities);
                kit.run_case(&case.with_ignored(ignored, true), device, &capabilities);
            }
        }
    }
    // One sample with the fewest channels the loss accepts.
    if let (Some(&rank), Some(&kind)) = (capabilities.ranks.first(), capabilities.targets.first()) {
        let mut shape = Case::random(&capabilities, rank, kind, 0).output.shape;
        shape[0] = 1;
        shape[1] = capabilities.min_channels.max(1);
        let case = Case::generate(&capabilities, &shape, kind, seed + 1, 1.0);
        kit.run_case(&case, device, &capabilities);
    }
    kit.report
}

/// A generated input.
#[derive(Debug, Clone)]
pub struct Case {
    /// The model output.
    pub output: HostArray,
    /// The target.
    pub target: HostArray,
    /// How it was made.
    pub description: String,
}

impl Case {
    /// A random input of `rank` with targets of `kind`, fitting `capabilities`.
    pub fn random(capabilities: &Capabilities, rank: usize, kind: TargetKind, seed: u64) -> Case {
        let channels = capabilities
            .min_channels
            .max(3)
            .min(capabilities.max_channels.unwrap_or(usize::MAX));
        let shape: Vec<usize> = match rank {
            2 => vec![4, channels],
            3 => vec![3, channels, 5],
            4 => vec![2, channels, 4, 3],
            _ => vec![2, channels, 2, 3, 2],
        };
        Case::generate(capabilities, &shape, kind, seed, 1.0)
    }

    /// A random input of `shape` with targets of `kind`; unbounded outputs (logits, real
    /// values) are multiplied by `scale`.
    pub fn generate(
        capabilities: &Capabilities,
        shape: &[usize],
        kind: TargetKind,
        seed: u64,
        scale: f64,
    ) -> Case {
        let mut rng = Rng::new(seed);
        let count: usize = shape.iter().product();
        let positions = count / (shape[0] * shape[1]).max(1);
        let mut values = random_output(capabilities.output, shape, &mut rng);
        if matches!(
            capabilities.output,
            OutputDomain::Logits | OutputDomain::Real
        ) {
            values.iter_mut().for_each(|v| *v *= scale);
        }
        let output = HostArray {
            shape: shape.to_vec(),
            values: HostValues::Float(values),
        };
        let target = random_target(kind, shape, positions, &mut rng);
        Case {
            output,
            target,
            description: format!(
                "output {shape:?} of {:?} (scale {scale}), target {kind:?} (seed {seed})",
                capabilities.output
            ),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{}; output starts {}; target starts {}",
            self.description,
            preview(&self.output.values),
            preview(&self.target.values)
        )
    }

    fn with_output(&self, values: Vec<f64>, what: &str) -> Case {
        Case {
            output: HostArray {
                shape: self.output.shape.clone(),
                values: HostValues::Float(values),
            },
            target: self.target.clone(),
            description: format!("{} with {what}", self.description),
        }
    }

    fn with_target(&self, target: HostValues, what: &str) -> Case {
        Case {
            output: self.output.clone(),
            target: HostArray {
                shape: self.target.shape.clone(),
                values: target,
            },
            description: format!("{} with {what}", self.description),
        }
    }

    /// The same input with every fourth target position set to `ignored` (and, if `whole_sample`,
    /// every position of the first sample).
    fn with_ignored(&self, ignored: i64, whole_sample: bool) -> Case {
        let HostValues::Int(indices) = &self.target.values else {
            return self.clone();
        };
        let per_sample = indices.len() / self.target.shape[0].max(1);
        let values = indices
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if i % 4 == 1 || (whole_sample && i < per_sample) {
                    ignored
                } else {
                    v
                }
            })
            .collect();
        let what = if whole_sample {
            "the first sample ignored entirely"
        } else {
            "every fourth position ignored"
        };
        self.with_target(HostValues::Int(values), what)
    }

    fn output_values(&self) -> &[f64] {
        match &self.output.values {
            HostValues::Float(values) => values,
            HostValues::Int(_) => &[],
        }
    }

    /// The same input with the batch reversed.
    fn reversed(&self) -> Case {
        let reverse = |array: &HostArray| {
            let n = array.shape[0];
            let per = array.values.len() / n;
            let order = (0..n).rev().flat_map(|i| i * per..(i + 1) * per);
            HostArray {
                shape: array.shape.clone(),
                values: match &array.values {
                    HostValues::Float(v) => HostValues::Float(order.map(|i| v[i]).collect()),
                    HostValues::Int(v) => HostValues::Int(order.map(|i| v[i]).collect()),
                },
            }
        };
        Case {
            output: reverse(&self.output),
            target: reverse(&self.target),
            description: format!("{} reversed", self.description),
        }
    }
}

fn preview(values: &HostValues) -> String {
    let shown: Vec<String> = match values {
        HostValues::Float(v) => v.iter().take(6).map(|x| format!("{x:.4}")).collect(),
        HostValues::Int(v) => v.iter().take(6).map(|x| x.to_string()).collect(),
    };
    format!("[{}, ...]", shown.join(", "))
}

struct Kit<'a> {
    loss: &'a dyn Loss,
    report: Report,
    devices: &'a [(&'static str, Device)],
}

const GRADIENT_RELATIVE: f64 = 2e-2;
const GRADIENT_ABSOLUTE: f64 = 1e-4;
const REDUCTION_RELATIVE: f64 = 1e-4;
const MINIMUM_ABSOLUTE: f64 = 1e-3;
const DEVICE_RELATIVE: f64 = 1e-4;

impl Kit<'_> {
    fn fail(&mut self, property: Property, case: &Case, detail: impl Into<String>) {
        self.report.failures.push(Failure {
            property,
            input: case.describe(),
            detail: detail.into(),
        });
    }

    fn eval(
        &mut self,
        case: &Case,
        device: &Device,
        reduction: Reduction,
        gradient: bool,
    ) -> Option<ComputedLoss> {
        match compute_loss(
            self.loss,
            &case.output,
            &case.target,
            device,
            reduction,
            gradient,
        ) {
            Ok(evaluation) => Some(evaluation),
            Err(error) => {
                self.report.checks += 1;
                self.fail(
                    Property::Error,
                    case,
                    format!("{reduction} failed: {error}"),
                );
                None
            }
        }
    }

    fn run_case(&mut self, case: &Case, device: &Device, capabilities: &Capabilities) {
        let Some(mean) = self.eval(case, device, Reduction::Mean, true) else {
            return;
        };
        self.check_finite(Property::Finite, case, &mean);
        self.check_gradient(case, device, &mean);
        self.check_reductions(case, device, capabilities, &mean);
        self.check_batch_order(case, device);
        for extreme in extreme_cases(case, capabilities) {
            if let Some(evaluation) = self.eval(&extreme, device, Reduction::Mean, true) {
                self.check_finite(Property::Extreme, &extreme, &evaluation);
            }
        }
        if let Some(minimum) = capabilities.minimum {
            self.check_minimum(case, device, capabilities, minimum);
        }
        self.check_devices(case, &mean);
    }

    fn check_finite(&mut self, property: Property, case: &Case, evaluation: &ComputedLoss) {
        self.report.checks += 1;
        let gradient = evaluation.gradient.as_deref().unwrap_or_default();
        if let Some(v) = evaluation.value.iter().find(|v| !v.is_finite()) {
            self.fail(property, case, format!("value is {v}"));
        } else if let Some((i, g)) = gradient.iter().enumerate().find(|(_, g)| !g.is_finite()) {
            self.fail(property, case, format!("gradient element {i} is {g}"));
        }
    }

    fn check_gradient(&mut self, case: &Case, device: &Device, evaluation: &ComputedLoss) {
        self.report.checks += 1;
        let Some(gradient) = &evaluation.gradient else {
            return;
        };
        let base = case.output_values().to_vec();
        let scale = gradient.iter().fold(0f64, |m, g| m.max(g.abs()));
        let at = |kit: &mut Kit<'_>, values: Vec<f64>| -> Option<f64> {
            let probe = case.with_output(values, "a finite-difference step");
            compute_loss(
                kit.loss,
                &probe.output,
                &probe.target,
                device,
                Reduction::Mean,
                false,
            )
            .ok()
            .map(|e| e.value[0])
        };
        let center = evaluation.value[0];
        let stride = (base.len() / 24).max(1);
        let (mut compared, mut skipped) = (0usize, 0usize);
        for i in (0..base.len()).step_by(stride) {
            let h = 1e-3 * base[i].abs().max(1.0);
            let mut plus = base.clone();
            plus[i] += h;
            let mut minus = base.clone();
            minus[i] -= h;
            let (Some(up), Some(down)) = (at(self, plus), at(self, minus)) else {
                self.fail(
                    Property::Gradient,
                    case,
                    format!("evaluating a step at element {i} failed"),
                );
                return;
            };
            let right = (up - center) / h;
            let left = (center - down) / h;
            // A kink between the two steps: the derivative is not defined there.
            if (right - left).abs() > 0.1 * scale.max(1e-3) + 10.0 * GRADIENT_ABSOLUTE {
                skipped += 1;
                continue;
            }
            compared += 1;
            let numeric = (up - down) / (2.0 * h);
            if (numeric - gradient[i]).abs() > GRADIENT_RELATIVE * scale + GRADIENT_ABSOLUTE {
                self.fail(
                    Property::Gradient,
                    case,
                    format!(
                        "d loss / d output[{i}]: autodiff {:.6e}, finite differences {numeric:.6e}",
                        gradient[i]
                    ),
                );
                return;
            }
        }
        if compared == 0 || skipped > compared {
            self.fail(
                Property::Gradient,
                case,
                format!("the loss has kinks at {skipped} of {} probed elements: too few smooth points to compare", compared + skipped),
            );
        }
    }

    fn check_reductions(
        &mut self,
        case: &Case,
        device: &Device,
        capabilities: &Capabilities,
        mean: &ComputedLoss,
    ) {
        self.report.checks += 1;
        let (Some(sum), Some(none)) = (
            self.eval(case, device, Reduction::Sum, false),
            self.eval(case, device, Reduction::None, false),
        ) else {
            return;
        };
        let shape = &case.output.shape;
        let n = shape[0];
        if none.value.len() != n
            || none.value.iter().any(|v| !v.is_finite())
            || !sum.value[0].is_finite()
        {
            self.fail(
                Property::Reduction,
                case,
                format!(
                    "`none` must give {n} finite values, got {:?}; sum {}",
                    none.value, sum.value[0]
                ),
            );
            return;
        }
        let total: f64 = none.value.iter().sum();
        let sum = sum.value[0];
        if (total - sum).abs() > REDUCTION_RELATIVE * sum.abs().max(1.0) {
            self.fail(
                Property::Reduction,
                case,
                format!("sum of `none` is {total}, `sum` is {sum}"),
            );
            return;
        }
        if let Some(over) = capabilities.mean_over {
            let mean = mean.value[0];
            let count = over.of(shape);
            if (mean * count as f64 - sum).abs() > REDUCTION_RELATIVE * sum.abs().max(1.0) {
                self.fail(
                    Property::Reduction,
                    case,
                    format!(
                        "`mean` {mean} is not `sum` {sum} over the declared {over:?} count {count}"
                    ),
                );
            }
        }
    }

    fn check_batch_order(&mut self, case: &Case, device: &Device) {
        self.report.checks += 1;
        let reversed = case.reversed();
        for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            let (Some(forward), Some(backward)) = (
                self.eval(case, device, reduction, false),
                self.eval(&reversed, device, reduction, false),
            ) else {
                return;
            };
            let mut expected = forward.value.clone();
            if reduction == Reduction::None {
                expected.reverse();
            }
            let scale = expected.iter().fold(1f64, |m, v| m.max(v.abs()));
            if expected
                .iter()
                .zip(&backward.value)
                .any(|(a, b)| (a - b).abs() > REDUCTION_RELATIVE * scale)
            {
                self.fail(
                    Property::BatchOrder,
                    case,
                    format!(
                        "{reduction}: {:?} for the batch, {:?} for it reversed",
                        forward.value, backward.value
                    ),
                );
                return;
            }
        }
    }

    fn check_minimum(
        &mut self,
        case: &Case,
        device: &Device,
        capabilities: &Capabilities,
        minimum: f64,
    ) {
        self.report.checks += 1;
        let perfect = perfect_case(case, capabilities);
        let Some(evaluation) = self.eval(&perfect, device, Reduction::Mean, false) else {
            return;
        };
        let value = evaluation.value[0];
        // Written so that a NaN value fails too.
        let reaches_minimum = (value - minimum).abs() <= MINIMUM_ABSOLUTE;
        if !reaches_minimum {
            self.fail(
                Property::Minimum,
                &perfect,
                format!("a perfect prediction gives {value}, the declared minimum is {minimum}"),
            );
        }
    }

    fn check_devices(&mut self, case: &Case, reference: &ComputedLoss) {
        let devices = self.devices;
        let reference_name = devices[0].0;
        for (name, device) in &devices[1..] {
            self.report.checks += 1;
            let Some(other) = self.eval(case, device, Reduction::Mean, true) else {
                continue;
            };
            let value_scale = reference.value[0].abs().max(1e-3);
            let gradient_a = reference.gradient.as_deref().unwrap_or_default();
            let gradient_b = other.gradient.as_deref().unwrap_or_default();
            let gradient_scale = gradient_a.iter().fold(1e-6f64, |m, g| m.max(g.abs()));
            let value_differs =
                (reference.value[0] - other.value[0]).abs() > DEVICE_RELATIVE * value_scale;
            let gradient_differs = gradient_a.len() != gradient_b.len()
                || gradient_a
                    .iter()
                    .zip(gradient_b)
                    .any(|(a, b)| (a - b).abs() > DEVICE_RELATIVE * gradient_scale);
            if value_differs || gradient_differs {
                self.fail(
                    Property::Devices,
                    case,
                    format!(
                        "{reference_name} gives {} and {name} gives {}{}",
                        reference.value[0],
                        other.value[0],
                        if gradient_differs {
                            " (gradients differ)"
                        } else {
                            ""
                        }
                    ),
                );
            }
        }
    }
}

fn random_output(domain: OutputDomain, shape: &[usize], rng: &mut Rng) -> Vec<f64> {
    let count: usize = shape.iter().product();
    match domain {
        OutputDomain::Logits | OutputDomain::Real | OutputDomain::LogRate => {
            (0..count).map(|_| 1.5 * rng.normal()).collect()
        }
        OutputDomain::Probabilities => {
            softmax_over_channels(&(0..count).map(|_| rng.normal()).collect::<Vec<_>>(), shape)
        }
        OutputDomain::UnitInterval => (0..count).map(|_| 0.05 + 0.9 * rng.uniform()).collect(),
        OutputDomain::AboveMinusOne => (0..count).map(|_| 3.0 * rng.uniform()).collect(),
    }
}

fn random_target(kind: TargetKind, shape: &[usize], positions: usize, rng: &mut Rng) -> HostArray {
    let count: usize = shape.iter().product();
    let (n, c) = (shape[0], shape[1]);
    match kind {
        TargetKind::ClassIndices => {
            let mut index_shape = vec![n];
            index_shape.extend_from_slice(&shape[2..]);
            HostArray {
                shape: index_shape,
                values: HostValues::Int((0..n * positions).map(|_| rng.below(c) as i64).collect()),
            }
        }
        TargetKind::Probabilities => HostArray {
            shape: shape.to_vec(),
            values: HostValues::Float(softmax_over_channels(
                &(0..count).map(|_| rng.normal()).collect::<Vec<_>>(),
                shape,
            )),
        },
        TargetKind::BinaryMask => HostArray {
            shape: shape.to_vec(),
            values: HostValues::Float(
                (0..count)
                    .map(|_| if rng.uniform() < 0.4 { 1.0 } else { 0.0 })
                    .collect(),
            ),
        },
        TargetKind::Real => HostArray {
            shape: shape.to_vec(),
            values: HostValues::Float((0..count).map(|_| 1.5 * rng.normal()).collect()),
        },
        TargetKind::NonNegative => HostArray {
            shape: shape.to_vec(),
            values: HostValues::Float((0..count).map(|_| 3.0 * rng.uniform()).collect()),
        },
    }
}

fn softmax_over_channels(values: &[f64], shape: &[usize]) -> Vec<f64> {
    let (n, c) = (shape[0], shape[1]);
    let s = values.len() / (n * c);
    let mut out = values.to_vec();
    for i in 0..n {
        for p in 0..s {
            let at = |k: usize| i * c * s + k * s + p;
            let max = (0..c).map(|k| values[at(k)]).fold(f64::MIN, f64::max);
            let total: f64 = (0..c).map(|k| (values[at(k)] - max).exp()).sum();
            for k in 0..c {
                out[at(k)] = (values[at(k)] - max).exp() / total;
            }
        }
    }
    out
}

/// The hard class of each position `(sample, position) -> class`, from any target.
fn hard_classes(case: &Case) -> Vec<usize> {
    let shape = &case.output.shape;
    let (n, c) = (shape[0], shape[1]);
    let s: usize = shape[2..].iter().product();
    match &case.target.values {
        HostValues::Int(indices) => indices.iter().map(|&i| i.max(0) as usize).collect(),
        HostValues::Float(dense) => (0..n * s)
            .map(|ip| {
                let (i, p) = (ip / s, ip % s);
                (0..c)
                    .max_by(|&a, &b| {
                        dense[i * c * s + a * s + p].total_cmp(&dense[i * c * s + b * s + p])
                    })
                    .unwrap_or(0)
            })
            .collect(),
    }
}

/// The input with a perfect prediction: a hard target, and the output that predicts it.
fn perfect_case(case: &Case, capabilities: &Capabilities) -> Case {
    let shape = &case.output.shape;
    let (n, c) = (shape[0], shape[1]);
    let s: usize = shape[2..].iter().product();
    let classes = hard_classes(case);
    let one_hot: Vec<f64> = (0..n * c * s)
        .map(|e| {
            let (i, k, p) = (e / (c * s), (e / s) % c, e % s);
            if classes[i * s + p] == k { 1.0 } else { 0.0 }
        })
        .collect();
    let target = match &case.target.values {
        HostValues::Int(_) => HostValues::Int(classes.iter().map(|&k| k as i64).collect()),
        HostValues::Float(dense) => match (
            capabilities.targets.contains(&TargetKind::Real)
                || capabilities.targets.contains(&TargetKind::NonNegative),
            capabilities.output,
        ) {
            (true, OutputDomain::Real | OutputDomain::AboveMinusOne) => {
                HostValues::Float(dense.clone())
            }
            _ if is_binary(dense) => HostValues::Float(dense.clone()),
            _ => HostValues::Float(one_hot.clone()),
        },
    };
    let truth: Vec<f64> = match &target {
        HostValues::Float(dense) if dense.len() == one_hot.len() => dense.clone(),
        _ => one_hot,
    };
    let output = match capabilities.output {
        OutputDomain::Logits => truth
            .iter()
            .map(|t| if *t > 0.5 { 30.0 } else { -30.0 })
            .collect(),
        OutputDomain::Probabilities | OutputDomain::UnitInterval => truth.clone(),
        OutputDomain::Real | OutputDomain::AboveMinusOne | OutputDomain::LogRate => truth.clone(),
    };
    Case {
        output: HostArray {
            shape: shape.clone(),
            values: HostValues::Float(output),
        },
        target: HostArray {
            shape: case.target.shape.clone(),
            values: target,
        },
        description: format!("{} made perfect", case.description),
    }
}

fn is_binary(values: &[f64]) -> bool {
    values.iter().all(|v| *v == 0.0 || *v == 1.0)
}

fn extreme_cases(case: &Case, capabilities: &Capabilities) -> Vec<Case> {
    let base = case.output_values();
    let mut cases = Vec::new();
    match capabilities.output {
        OutputDomain::Logits => {
            cases.push(
                case.with_output(
                    base.iter()
                        .map(|v| if *v >= 0.0 { 1e4 } else { -1e4 })
                        .collect(),
                    "logits of ±1e4",
                ),
            );
            let perfect = perfect_case(case, capabilities);
            let confident_wrong: Vec<f64> = perfect
                .output_values()
                .iter()
                .map(|v| -v / 30.0 * 1e4)
                .collect();
            cases.push(perfect.with_output(confident_wrong, "confidently wrong logits of ±1e4"));
        }
        OutputDomain::Probabilities | OutputDomain::UnitInterval => {
            let perfect = perfect_case(case, capabilities);
            let wrong: Vec<f64> = perfect.output_values().iter().map(|v| 1.0 - v).collect();
            let wrong = if capabilities.output == OutputDomain::Probabilities {
                // Keep each position a distribution: all mass on a wrong class.
                rotate_channels(perfect.output_values(), &case.output.shape)
            } else {
                wrong
            };
            cases.push(
                perfect.with_output(wrong, "probabilities of exactly 0 and 1 on the wrong class"),
            );
            cases.push(perfect);
        }
        OutputDomain::Real | OutputDomain::AboveMinusOne => {
            cases.push(case.with_output(
                base.iter().map(|v| v * 1e3 + 1e3).collect(),
                "residuals around 1e3",
            ));
        }
        OutputDomain::LogRate => {
            cases.push(
                case.with_output(
                    base.iter()
                        .map(|v| if *v >= 0.0 { 30.0 } else { -30.0 })
                        .collect(),
                    "log-rates of ±30",
                ),
            );
        }
    }
    // Empty masks: every target position background (class 0), or all-zero masks.
    match &case.target.values {
        HostValues::Int(indices) => cases.push(case.with_target(
            HostValues::Int(vec![0; indices.len()]),
            "every position of class 0",
        )),
        HostValues::Float(dense) if capabilities.accepts(TargetKind::BinaryMask) => {
            cases.push(case.with_target(HostValues::Float(vec![0.0; dense.len()]), "empty masks"));
        }
        HostValues::Float(_) => {}
    }
    cases
}

fn rotate_channels(values: &[f64], shape: &[usize]) -> Vec<f64> {
    let (n, c) = (shape[0], shape[1]);
    let s = values.len() / (n * c);
    let mut out = vec![0.0; values.len()];
    for i in 0..n {
        for k in 0..c {
            for p in 0..s {
                out[i * c * s + ((k + 1) % c) * s + p] = values[i * c * s + k * s + p];
            }
        }
    }
    out
}
