//! Task metrics from a confusion matrix: accuracy and per-class recall for classification,
//! Dice and IoU for segmentation.

use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

/// What kind of task a model solves; decides which metrics are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// One class per image.
    Classification,
    /// One class per pixel.
    Segmentation,
}

impl TaskKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Classification => "classification",
            TaskKind::Segmentation => "segmentation",
        }
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
        // prediction; a class absent from both says nothing and is skipped. When no foreground
        // class is present at all (and none predicted), the prediction is perfect: 1.
        let foreground = |values: Vec<f64>| -> f64 {
            let fg: Vec<f64> = values
                .into_iter()
                .enumerate()
                .skip(1)
                .filter(|&(c, _)| {
                    let (tp, fp, fn_) = self.overlap(c);
                    tp + fp + fn_ > 0
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

/// A task's metrics on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The fraction of samples (pixels for segmentation) predicted correctly.
    pub accuracy: f64,
    /// Per-class recall.
    pub recall: Vec<f64>,
    /// Mean Dice over the foreground classes present in the truth or the prediction
    /// (segmentation only; class 0 is background); 1 when none is present in either.
    pub dice: Option<f64>,
    /// Mean IoU over the foreground classes, counted like `dice` (segmentation only).
    pub iou: Option<f64>,
    /// Dice of each class, background included, pooled over the split (segmentation only;
    /// empty otherwise, and in checkpoints written before it was kept).
    #[serde(default)]
    pub class_dice: Vec<f64>,
    /// IoU of each class, like `class_dice`.
    #[serde(default)]
    pub class_iou: Vec<f64>,
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
}
