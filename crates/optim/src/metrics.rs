//! Task metrics: accuracy and per-class recall for classification and Dice and IoU for
//! segmentation (from a confusion matrix); MAE, RMSE, R² and coverage for regression (from the
//! prediction of every sample); per-label F1 and average precision for multi-label
//! classification (from every sample's scores). A [`Tally`] gathers them batch by batch.

use burn::tensor::{Int, Tensor, activation};
use losskit_core::{LossInput, OutputDomain, input::Target, input::to_f64_vec};
use serde::{Deserialize, Deserializer, Serialize};

/// What kind of task a model solves; decides which metrics are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// One class per image.
    Classification,
    /// One class per pixel.
    Segmentation,
    /// One real value per sample.
    Regression,
    /// Any number of labels per sample (independent yes/no per label).
    #[serde(rename = "multilabel")]
    MultiLabel,
}

impl TaskKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Classification => "classification",
            TaskKind::Segmentation => "segmentation",
            TaskKind::Regression => "regression",
            TaskKind::MultiLabel => "multilabel",
        }
    }

    /// Whether the task's targets are class indices (one class per sample or pixel).
    pub fn has_class_indices(self) -> bool {
        matches!(self, TaskKind::Classification | TaskKind::Segmentation)
    }
}

/// Counts of (true class, predicted class) pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    /// The number of classes.
    pub classes: usize,
    /// `counts[truth * classes + predicted]`.
    pub counts: Vec<u64>,
}

impl Confusion {
    /// An empty matrix.
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// Adds the predictions of canonical outputs `[N, C, S]` against indices `[N, S]`.
    pub fn add_batch(&mut self, output: Tensor<3>, target: Tensor<2, Int>) {
        let predicted = output.argmax(1);
        let [n, _, s] = predicted.dims();
        let predicted = losskit_core::input::to_i64_vec(predicted.reshape([n, s]));
        let truth = losskit_core::input::to_i64_vec(target);
        self.add(&truth, &predicted);
    }

    /// Adds pairs of (truth, prediction); indices outside the classes are skipped.
    pub fn add(&mut self, truth: &[i64], predicted: &[i64]) {
        let c = self.classes as i64;
        for (&t, &p) in truth.iter().zip(predicted) {
            if (0..c).contains(&t) && (0..c).contains(&p) {
                self.counts[(t * c + p) as usize] += 1;
            }
        }
    }

    /// Adds another matrix of the same classes (a shard of the same batch).
    pub fn merge(&mut self, other: &Confusion) {
        for (count, more) in self.counts.iter_mut().zip(&other.counts) {
            *count += more;
        }
    }

    fn at(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.classes + predicted]
    }

    /// The total count.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The fraction predicted correctly.
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.classes).map(|c| self.at(c, c)).sum();
        ratio(correct, self.total())
    }

    /// Per-class recall (NaN for a class with no samples).
    pub fn recall(&self) -> Vec<f64> {
        (0..self.classes)
            .map(|c| {
                let row: u64 = (0..self.classes).map(|p| self.at(c, p)).sum();
                ratio(self.at(c, c), row)
            })
            .collect()
    }

    fn overlap(&self, class: usize) -> (u64, u64, u64) {
        let tp = self.at(class, class);
        let fp: u64 = (0..self.classes)
            .filter(|&t| t != class)
            .map(|t| self.at(t, class))
            .sum();
        let fn_: u64 = (0..self.classes)
            .filter(|&p| p != class)
            .map(|p| self.at(class, p))
            .sum();
        (tp, fp, fn_)
    }

    /// Per-class Dice, 2TP / (2TP + FP + FN) (1 for a class absent from truth and prediction).
    pub fn dice(&self) -> Vec<f64> {
        (0..self.classes)
            .map(|c| {
                let (tp, fp, fn_) = self.overlap(c);
                if tp + fp + fn_ == 0 {
                    1.0
                } else {
                    ratio(2 * tp, 2 * tp + fp + fn_)
                }
            })
            .collect()
    }

    /// Per-class IoU, TP / (TP + FP + FN) (1 for a class absent from truth and prediction).
    pub fn iou(&self) -> Vec<f64> {
        (0..self.classes)
            .map(|c| {
                let (tp, fp, fn_) = self.overlap(c);
                if tp + fp + fn_ == 0 {
                    1.0
                } else {
                    ratio(tp, tp + fp + fn_)
                }
            })
            .collect()
    }

    /// The task's metrics.
    pub fn metrics(&self, kind: TaskKind) -> Metrics {
        // The mean over the foreground classes (all but class 0) present in the truth or the
        // prediction; a class absent from both says nothing and is skipped (the empty-class
        // rule of `losskit_core::empty`, which the losses follow with `ignore_empty`). When no foreground
        // class is present at all (and none predicted), the prediction is perfect: 1.
        let foreground = |values: Vec<f64>| -> f64 {
            let fg: Vec<f64> = values
                .into_iter()
                .enumerate()
                .skip(1)
                .filter(|&(c, _)| {
                    let (tp, fp, fn_) = self.overlap(c);
                    losskit_core::empty::counts((tp + fn_) as f64, (tp + fp) as f64)
                })
                .map(|(_, v)| v)
                .collect();
            if fg.is_empty() {
                1.0
            } else {
                fg.iter().sum::<f64>() / fg.len() as f64
            }
        };
        let segmentation = kind == TaskKind::Segmentation;
        Metrics {
            accuracy: self.accuracy(),
            recall: self.recall(),
            dice: segmentation.then(|| foreground(self.dice())),
            iou: segmentation.then(|| foreground(self.iou())),
            class_dice: if segmentation {
                self.dice()
            } else {
                Vec::new()
            },
            class_iou: if segmentation { self.iou() } else { Vec::new() },
            confusion: if kind == TaskKind::Classification {
                self.counts.clone()
            } else {
                Vec::new()
            },
            ..Metrics::default()
        }
    }
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        f64::NAN
    } else {
        numerator as f64 / denominator as f64
    }
}

/// A task's metrics on one split. A metric the task does not have is NaN, `None` or empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The fraction of samples (pixels for segmentation) predicted correctly; for multi-label
    /// classification the fraction whose labels are all predicted right (subset accuracy, as
    /// scikit-learn's `accuracy_score`); NaN for regression.
    #[serde(deserialize_with = "nan_from_null")]
    pub accuracy: f64,
    /// Per-class recall.
    #[serde(deserialize_with = "nans_from_nulls")]
    pub recall: Vec<f64>,
    /// Mean Dice over the foreground classes present in the truth or the prediction
    /// (segmentation only; class 0 is background); 1 when none is present in either.
    pub dice: Option<f64>,
    /// Mean IoU over the foreground classes, counted like `dice` (segmentation only).
    pub iou: Option<f64>,
    /// Dice of each class, background included, pooled over the split (segmentation only;
    /// empty otherwise, and in checkpoints written before it was kept).
    #[serde(default, deserialize_with = "nans_from_nulls")]
    pub class_dice: Vec<f64>,
    /// IoU of each class, like `class_dice`.
    #[serde(default, deserialize_with = "nans_from_nulls")]
    pub class_iou: Vec<f64>,
    /// Regression: mean absolute error, in the target's units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Regression: root mean squared error, in the target's units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    /// Regression: the coefficient of determination, 1 − SSE / SST (SST about the split's own
    /// mean, as scikit-learn's `r2_score`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
    /// Regression: the fraction of targets at or below the prediction (for the quantile loss
    /// with quantile q this should approach q).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    /// Multi-label: the mean of `label_f1` over the labels present in the truth or the
    /// prediction (macro F1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    /// Multi-label: mean average precision over the labels with a positive sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<f64>,
    /// Multi-label: F1 of each label at probability 0.5 (NaN for a label absent from truth and
    /// prediction).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nans_from_nulls"
    )]
    pub label_f1: Vec<f64>,
    /// Multi-label: average precision of each label (scikit-learn's `average_precision_score`:
    /// Σ (Rₙ − Rₙ₋₁) Pₙ over the thresholds; NaN for a label without positives).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nans_from_nulls"
    )]
    pub label_ap: Vec<f64>,
    /// Classification: the confusion matrix, `confusion[truth * classes + predicted]` (empty
    /// otherwise, and in checkpoints written before it was kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confusion: Vec<u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            accuracy: f64::NAN,
            recall: Vec::new(),
            dice: None,
            iou: None,
            class_dice: Vec::new(),
            class_iou: Vec::new(),
            mae: None,
            rmse: None,
            r2: None,
            coverage: None,
            f1: None,
            map: None,
            label_f1: Vec::new(),
            label_ap: Vec::new(),
            confusion: Vec::new(),
        }
    }
}

impl Metrics {
    /// The task's main validation metrics, by name, as reports show them first (NaN where
    /// missing).
    pub fn headline(&self, kind: TaskKind) -> Vec<(&'static str, f64)> {
        let value = |v: Option<f64>| v.unwrap_or(f64::NAN);
        match kind {
            TaskKind::Classification => vec![("val_accuracy", self.accuracy)],
            TaskKind::Segmentation => {
                vec![("val_dice", value(self.dice)), ("val_iou", value(self.iou))]
            }
            TaskKind::Regression => vec![
                ("val_mae", value(self.mae)),
                ("val_rmse", value(self.rmse)),
                ("val_r2", value(self.r2)),
                ("val_coverage", value(self.coverage)),
            ],
            TaskKind::MultiLabel => vec![
                ("val_f1", value(self.f1)),
                ("val_map", value(self.map)),
                ("val_accuracy", self.accuracy),
            ],
        }
    }
}

/// JSON has no NaN: serde_json writes it as `null`, which reads back as NaN here.
fn nan_from_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

fn nans_from_nulls<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(deserializer)?
        .into_iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}

/// How a task's outputs, as its loss sees them, read as predictions: the loss's output domain
/// (logits are turned into probabilities for multi-label scores; a log-rate into a rate) and,
/// for regression, the affine map from the trained target scale back to the target's units
/// (`value × scale + shift`, applied to predictions and targets alike).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputReading {
    /// What the output holds.
    pub domain: OutputDomain,
    /// Regression: the target's scale.
    pub scale: f64,
    /// Regression: the target's shift.
    pub shift: f64,
}

impl Default for OutputReading {
    fn default() -> Self {
        Self {
            domain: OutputDomain::Logits,
            scale: 1.0,
            shift: 0.0,
        }
    }
}

/// The metrics of a split, gathered batch by batch.
#[derive(Debug, Clone)]
pub enum Tally {
    /// Classes: a confusion matrix.
    Confusion(Confusion),
    /// Regression: every (target, prediction) pair, in the target's units.
    Regression {
        /// How outputs read.
        reading: OutputReading,
        /// (target, prediction) of each sample seen.
        pairs: Vec<(f64, f64)>,
    },
    /// Multi-label: each sample's label probabilities and truth.
    Labels {
        /// How outputs read.
        reading: OutputReading,
        /// The number of labels.
        labels: usize,
        /// Probabilities, `[samples, labels]` row-major.
        scores: Vec<f64>,
        /// Truth, like `scores`.
        truth: Vec<bool>,
    },
}

impl Tally {
    /// An empty tally for a task of `kind` with `classes` classes (labels).
    pub fn new(kind: TaskKind, classes: usize, reading: OutputReading) -> Self {
        match kind {
            TaskKind::Classification | TaskKind::Segmentation => {
                Self::Confusion(Confusion::new(classes))
            }
            TaskKind::Regression => Self::Regression {
                reading,
                pairs: Vec::new(),
            },
            TaskKind::MultiLabel => Self::Labels {
                reading,
                labels: classes,
                scores: Vec::new(),
                truth: Vec::new(),
            },
        }
    }

    /// Adds a batch's outputs and targets.
    pub fn add(&mut self, input: &LossInput) {
        match (self, input.target()) {
            (Self::Confusion(confusion), Target::Indices(indices)) => {
                confusion.add_batch(input.output().clone().detach(), indices.clone());
            }
            (Self::Regression { reading, pairs }, Target::Dense(target)) => {
                let mut output = input.output().clone().detach();
                if reading.domain == OutputDomain::LogRate {
                    output = output.exp();
                }
                let to_units = |v: f64| v * reading.scale + reading.shift;
                pairs.extend(
                    to_f64_vec(target.clone())
                        .into_iter()
                        .zip(to_f64_vec(output))
                        .map(|(t, p)| (to_units(t), to_units(p))),
                );
            }
            (
                Self::Labels {
                    reading,
                    scores,
                    truth,
                    ..
                },
                Target::Dense(target),
            ) => {
                let mut output = input.output().clone().detach();
                if reading.domain == OutputDomain::Logits {
                    output = activation::sigmoid(output);
                }
                scores.extend(to_f64_vec(output));
                truth.extend(to_f64_vec(target.clone()).into_iter().map(|t| t >= 0.5));
            }
            _ => {}
        }
    }

    /// Adds another tally of the same task (a shard of the same batch).
    pub fn merge(&mut self, other: &Tally) {
        match (self, other) {
            (Self::Confusion(a), Self::Confusion(b)) => a.merge(b),
            (Self::Regression { pairs, .. }, Self::Regression { pairs: more, .. }) => {
                pairs.extend_from_slice(more)
            }
            (
                Self::Labels { scores, truth, .. },
                Self::Labels {
                    scores: more_scores,
                    truth: more_truth,
                    ..
                },
            ) => {
                scores.extend_from_slice(more_scores);
                truth.extend_from_slice(more_truth);
            }
            _ => {}
        }
    }

    /// The (target, prediction) pairs of a regression tally (empty otherwise).
    pub fn pairs(&self) -> &[(f64, f64)] {
        match self {
            Self::Regression { pairs, .. } => pairs,
            _ => &[],
        }
    }

    /// The metrics of everything added.
    pub fn metrics(&self, kind: TaskKind) -> Metrics {
        match self {
            Self::Confusion(confusion) => confusion.metrics(kind),
            Self::Regression { pairs, .. } => regression_metrics(pairs),
            Self::Labels {
                labels,
                scores,
                truth,
                ..
            } => label_metrics(*labels, scores, truth),
        }
    }
}

/// A validation sample the model gets wrong, and how sure it was.
#[derive(Debug, Clone, PartialEq)]
pub struct Mistake {
    /// The sample's index in its split.
    pub index: usize,
    /// The true classes (one for classification; the labels that hold for multi-label).
    pub truth: Vec<usize>,
    /// The predicted classes (the argmax; the labels at or above 0.5).
    pub predicted: Vec<usize>,
    /// Classification: the predicted class's probability. Multi-label: the surest wrong
    /// decision's probability (p for a label wrongly given, 1 − p for one wrongly left out).
    pub confidence: f64,
}

/// The most confident mistakes of a split, kept while it is evaluated (samples arrive in index
/// order), so showing them costs no second pass over the data.
#[derive(Debug, Clone)]
pub struct Mistakes {
    kind: TaskKind,
    reading: OutputReading,
    keep: usize,
    seen: usize,
    worst: Vec<Mistake>,
}

impl Mistakes {
    /// Keeps the `keep` surest mistakes of a classification or multi-label split (other tasks
    /// keep none).
    pub fn new(kind: TaskKind, reading: OutputReading, keep: usize) -> Self {
        Self {
            kind,
            reading,
            keep,
            seen: 0,
            worst: Vec::new(),
        }
    }

    /// Adds the next batch of the split.
    pub fn add(&mut self, input: &LossInput) {
        // Per-sample outputs: `[N, C]`, or `[N, C, 1]` as inputs hold them.
        let [n, classes] = match input.output().dims()[..] {
            [n, c] | [n, c, 1] => [n, c],
            _ => return,
        };
        let offset = self.seen;
        self.seen += n;
        if self.keep == 0 || classes == 0 {
            return;
        }
        let mut output: Tensor<2> = input.output().clone().detach().reshape([n, classes]);
        match (self.kind, self.reading.domain) {
            (TaskKind::Classification, OutputDomain::Logits) => {
                output = activation::softmax(output, 1)
            }
            (TaskKind::MultiLabel, OutputDomain::Logits) => output = activation::sigmoid(output),
            (TaskKind::Classification | TaskKind::MultiLabel, _) => {}
            _ => return,
        }
        let scores = to_f64_vec(output);
        let truth: Vec<Vec<usize>> = match input.target() {
            Target::Indices(indices) if self.kind == TaskKind::Classification => {
                to_f64_vec(indices.clone().float())
                    .into_iter()
                    .map(|t| vec![t as usize])
                    .collect()
            }
            Target::Dense(marks) if self.kind == TaskKind::MultiLabel => to_f64_vec(marks.clone())
                .chunks(classes)
                .map(|row| (0..classes).filter(|&l| row[l] >= 0.5).collect())
                .collect(),
            _ => return,
        };
        for (row, (scores, truth)) in scores.chunks(classes).zip(truth).enumerate() {
            let (predicted, confidence) = if self.kind == TaskKind::Classification {
                let (class, p) = scores
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f64::MIN),
                        |best, (c, &p)| if p > best.1 { (c, p) } else { best },
                    );
                (vec![class], p)
            } else {
                let given: Vec<usize> = (0..classes).filter(|&l| scores[l] >= 0.5).collect();
                let surest_wrong = (0..classes)
                    .filter(|l| given.contains(l) != truth.contains(l))
                    .map(|l| {
                        if given.contains(&l) {
                            scores[l]
                        } else {
                            1.0 - scores[l]
                        }
                    })
                    .fold(f64::MIN, f64::max);
                (given, surest_wrong)
            };
            if predicted != truth {
                self.worst.push(Mistake {
                    index: offset + row,
                    truth,
                    predicted,
                    confidence,
                });
            }
        }
        self.worst.sort_by(|a, b| {
            b.confidence
                .total_cmp(&a.confidence)
                .then(a.index.cmp(&b.index))
        });
        self.worst.truncate(self.keep);
    }

    /// The surest mistakes, surest first (ties: lower index first).
    pub fn into_worst(self) -> Vec<Mistake> {
        self.worst
    }
}

fn regression_metrics(pairs: &[(f64, f64)]) -> Metrics {
    if pairs.is_empty() {
        return Metrics::default();
    }
    let n = pairs.len() as f64;
    let mean = pairs.iter().map(|(t, _)| t).sum::<f64>() / n;
    let sse: f64 = pairs.iter().map(|(t, p)| (t - p).powi(2)).sum();
    let sst: f64 = pairs.iter().map(|(t, _)| (t - mean).powi(2)).sum();
    Metrics {
        mae: Some(pairs.iter().map(|(t, p)| (t - p).abs()).sum::<f64>() / n),
        rmse: Some((sse / n).sqrt()),
        // scikit-learn's convention for a constant target: 1 when predicted exactly, else 0.
        r2: Some(if sst > 0.0 {
            1.0 - sse / sst
        } else if sse == 0.0 {
            1.0
        } else {
            0.0
        }),
        coverage: Some(pairs.iter().filter(|(t, p)| t <= p).count() as f64 / n),
        ..Metrics::default()
    }
}

/// Average precision of one label: Σ (Rₙ − Rₙ₋₁) Pₙ over the distinct scores, highest first
/// (tied scores form one threshold), as scikit-learn computes it.
pub fn average_precision(scores: &[f64], truth: &[bool]) -> f64 {
    let positives = truth.iter().filter(|&&t| t).count();
    if positives == 0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut seen, mut ap, mut last_recall) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let score = scores[order[i]];
        while i < order.len() && scores[order[i]] == score {
            tp += usize::from(truth[order[i]]);
            seen += 1;
            i += 1;
        }
        let recall = tp as f64 / positives as f64;
        ap += (recall - last_recall) * tp as f64 / seen as f64;
        last_recall = recall;
    }
    ap
}

fn label_metrics(labels: usize, scores: &[f64], truth: &[bool]) -> Metrics {
    let samples = scores.len().checked_div(labels).unwrap_or(0);
    if samples == 0 {
        return Metrics::default();
    }
    let predicted: Vec<bool> = scores.iter().map(|&s| s >= 0.5).collect();
    let exact = (0..samples)
        .filter(|&i| (0..labels).all(|l| predicted[i * labels + l] == truth[i * labels + l]))
        .count();
    let mut label_f1 = Vec::with_capacity(labels);
    let mut label_ap = Vec::with_capacity(labels);
    let mut recall = Vec::with_capacity(labels);
    for l in 0..labels {
        let column =
            |v: &[bool]| -> Vec<bool> { (0..samples).map(|i| v[i * labels + l]).collect() };
        let (t, p) = (column(truth), column(&predicted));
        let tp = t.iter().zip(&p).filter(|(t, p)| **t && **p).count();
        let fp = t.iter().zip(&p).filter(|(t, p)| !**t && **p).count();
        let fn_ = t.iter().zip(&p).filter(|(t, p)| **t && !**p).count();
        label_f1.push(if tp + fp + fn_ == 0 {
            f64::NAN
        } else {
            2.0 * tp as f64 / (2 * tp + fp + fn_) as f64
        });
        recall.push(ratio(tp as u64, (tp + fn_) as u64));
        let s: Vec<f64> = (0..samples).map(|i| scores[i * labels + l]).collect();
        label_ap.push(average_precision(&s, &t));
    }
    let mean = |values: &[f64]| -> Option<f64> {
        let present: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64)
    };
    Metrics {
        accuracy: exact as f64 / samples as f64,
        recall,
        f1: mean(&label_f1),
        map: mean(&label_ap),
        label_f1,
        label_ap,
        ..Metrics::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_from_counts() {
        let mut confusion = Confusion::new(2);
        confusion.add(&[0, 0, 1, 1], &[0, 1, 1, 1]);
        assert_eq!(confusion.accuracy(), 0.75);
        assert_eq!(confusion.recall(), vec![0.5, 1.0]);
        let dice = confusion.dice();
        assert!((dice[1] - 0.8).abs() < 1e-12);
        let iou = confusion.iou();
        assert!((iou[1] - 2.0 / 3.0).abs() < 1e-12);
        let metrics = confusion.metrics(TaskKind::Segmentation);
        assert!((metrics.dice.unwrap() - 0.8).abs() < 1e-12);
    }

    #[test]
    fn absent_classes_do_not_count_in_the_foreground_mean() {
        // Class 2 is in neither truth nor prediction: it must not lift the mean to 0.9.
        let mut confusion = Confusion::new(3);
        confusion.add(&[0, 0, 1, 1], &[0, 1, 1, 1]);
        let metrics = confusion.metrics(TaskKind::Segmentation);
        assert!((metrics.dice.unwrap() - 0.8).abs() < 1e-12);
        assert!((metrics.iou.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // Only background, predicted right: perfect.
        let mut confusion = Confusion::new(3);
        confusion.add(&[0, 0], &[0, 0]);
        assert_eq!(confusion.metrics(TaskKind::Segmentation).dice, Some(1.0));
    }

    #[test]
    fn nan_metrics_survive_json() {
        let mut confusion = Confusion::new(3);
        confusion.add(&[0, 1], &[0, 1]);
        let metrics = confusion.metrics(TaskKind::Classification);
        assert!(metrics.recall[2].is_nan());
        let back: Metrics =
            serde_json::from_str(&serde_json::to_string(&metrics).unwrap()).unwrap();
        assert!(back.recall[2].is_nan());
        assert_eq!(back.recall[..2], metrics.recall[..2]);
        let regression = regression_metrics(&[(1.0, 1.5)]);
        let back: Metrics =
            serde_json::from_str(&serde_json::to_string(&regression).unwrap()).unwrap();
        assert!(back.accuracy.is_nan());
        assert_eq!(back.mae, Some(0.5));
    }

    #[test]
    fn regression_metrics_by_hand() {
        // targets 1, 2, 3; predictions 1, 2, 5: SSE 4, SST 2, MAE 2/3.
        let metrics = regression_metrics(&[(1.0, 1.0), (2.0, 2.0), (3.0, 5.0)]);
        assert!((metrics.mae.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((metrics.rmse.unwrap() - (4.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((metrics.r2.unwrap() - (1.0 - 4.0 / 2.0)).abs() < 1e-12);
        assert_eq!(metrics.coverage, Some(1.0));
        let below = regression_metrics(&[(1.0, 0.0), (2.0, 3.0)]);
        assert_eq!(below.coverage, Some(0.5));
    }

    #[test]
    fn average_precision_matches_scikit_learn() {
        // sklearn.metrics.average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        // = 0.8333333333333333
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]);
        assert!((ap - 0.8333333333333333).abs() < 1e-12, "{ap}");
        // Ties form one threshold: average_precision_score([1, 0, 1], [0.5, 0.5, 0.2])
        // = 0.5833333333333333 (scikit-learn 1.9.1).
        let ap = average_precision(&[0.5, 0.5, 0.2], &[true, false, true]);
        assert!((ap - 0.5833333333333333).abs() < 1e-12, "{ap}");
        assert!(average_precision(&[0.3], &[false]).is_nan());
    }

    #[test]
    fn label_metrics_by_hand() {
        // Two labels, three samples. Label 0: truth 1 0 1, predicted 1 1 1 → F1 = 4/5.
        // Label 1: truth 0 0 0, predicted 0 0 0 → absent, skipped in the mean.
        let scores = [0.9, 0.1, 0.6, 0.2, 0.7, 0.3];
        let truth = [true, false, false, false, true, false];
        let metrics = label_metrics(2, &scores, &truth);
        assert!((metrics.label_f1[0] - 0.8).abs() < 1e-12);
        assert!(metrics.label_f1[1].is_nan());
        assert_eq!(metrics.f1, Some(0.8));
        // Samples 0 and 2 have every label right; sample 1 predicts label 0 wrongly.
        assert!((metrics.accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!(metrics.label_ap[1].is_nan());
        assert_eq!(metrics.map, Some(metrics.label_ap[0]));
    }

    fn mistakes_of(
        kind: TaskKind,
        output: Vec<f32>,
        shape: [usize; 2],
        target: &[i64],
        marks: &[f32],
    ) -> Vec<Mistake> {
        let device = losskit_core::devices::parse_device("cpu").unwrap();
        let output = Tensor::<2>::from_data(burn::tensor::TensorData::new(output, shape), &device);
        let input = if kind == TaskKind::Classification {
            let target = Tensor::<1, Int>::from_data(
                burn::tensor::TensorData::new(target.to_vec(), [shape[0]]),
                &device,
            );
            LossInput::with_indices(output, target).unwrap()
        } else {
            let target = Tensor::<2>::from_data(
                burn::tensor::TensorData::new(marks.to_vec(), shape),
                &device,
            );
            LossInput::with_dense(output, target).unwrap()
        };
        let mut mistakes = Mistakes::new(
            kind,
            OutputReading {
                domain: OutputDomain::Probabilities,
                ..OutputReading::default()
            },
            2,
        );
        // Two batches: indices continue across them.
        mistakes.add(&input);
        mistakes.add(&input);
        mistakes.into_worst()
    }

    #[test]
    fn the_surest_mistakes_are_kept_across_batches_surest_first() {
        let worst = mistakes_of(
            TaskKind::Classification,
            vec![0.9, 0.1, 0.3, 0.7, 0.2, 0.8],
            [3, 2],
            &[0, 0, 1],
            &[],
        );
        // Sample 1 (class 0, predicted 1 at 0.7) is the only mistake; seen twice, at 1 and 4.
        assert_eq!(
            worst,
            [
                Mistake {
                    index: 1,
                    truth: vec![0],
                    predicted: vec![1],
                    confidence: 0.699999988079071
                },
                Mistake {
                    index: 4,
                    truth: vec![0],
                    predicted: vec![1],
                    confidence: 0.699999988079071
                },
            ]
        );
        let worst = mistakes_of(
            TaskKind::MultiLabel,
            vec![0.9, 0.6, 0.2, 0.1, 0.4, 0.45],
            [2, 3],
            &[],
            &[1.0, 0.0, 1.0, 0.0, 0.0, 1.0],
        );
        // Sample 0 gives label 1 wrongly (0.6) and leaves out label 2 (1 − 0.2 = 0.8): 0.8.
        // Sample 1 leaves out label 2 (1 − 0.45 = 0.55); the second batch repeats sample 0 as 2.
        assert_eq!(worst.len(), 2);
        assert_eq!((worst[0].index, worst[1].index), (0, 2));
        assert_eq!(worst[0].truth, [0, 2]);
        assert_eq!(worst[0].predicted, [0, 1]);
        assert!((worst[0].confidence - 0.8).abs() < 1e-6);
    }
}
