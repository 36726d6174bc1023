//! The one empty-class rule that losses and metrics share (the option MONAI names
//! `ignore_empty`): a class absent from both the truth and the hard prediction of a sample says
//! nothing about how well that sample was segmented, so with the option it is skipped, in the
//! loss and in the metric alike. Without it (the default) such a class counts as the
//! smoothing makes it count (a Dice loss of about 0, a Dice score of 1).
//!
//! MONAI's `DiceMetric(ignore_empty=True)` skips every class absent from the truth, even one
//! that was predicted; here a false prediction of an absent class still counts (it is a
//! mistake the loss should see).

use burn::tensor::Tensor;

/// Whether a class with `truth` elements in the truth and `predicted` in the prediction counts
/// under the rule.
pub fn counts(truth: f64, predicted: f64) -> bool {
    truth > 0.0 || predicted > 0.0
}

/// The rule over per-(sample, class) counts `[B, K]` of the truth and of the hard prediction:
/// 1 where the class counts, 0 where it is skipped.
pub fn counted_classes(truth: Tensor<2>, predicted: Tensor<2>) -> Tensor<2> {
    (truth.detach() + predicted.detach())
        .greater_elem(0.0)
        .float()
}

/// The hard prediction of probabilities or logits `[N, C, S]` as a one-hot `[N, C, S]` (no
/// gradient): the most probable class for exclusive classes (`exclusive`, e.g. softmax; ties
/// go to the lower class), else each channel above 1/2 (sigmoid: logits above 0, given as
/// `threshold`).
pub fn hard_prediction(values: Tensor<3>, exclusive: bool, threshold: f64) -> Tensor<3> {
    let values = values.detach();
    if exclusive {
        let [n, c, s] = values.dims();
        if c == 1 {
            return values.ones_like();
        }
        // The argmax of the logits is the argmax of their softmax.
        let winners = values.argmax(1).reshape([n, s]);
        crate::targets::one_hot(winners, c)
    } else {
        values.greater_elem(threshold).float()
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;

    use super::*;
    use crate::input::to_f64_vec;

    #[test]
    fn a_class_counts_when_it_is_in_the_truth_or_the_prediction() {
        assert!(counts(1.0, 0.0) && counts(0.0, 2.0) && !counts(0.0, 0.0));
        let device = crate::devices::default_device().unwrap();
        let tensor =
            |values: Vec<f32>| Tensor::<2>::from_data(TensorData::new(values, [1, 3]), &device);
        let counted = counted_classes(tensor(vec![0.0, 2.0, 0.0]), tensor(vec![0.0, 0.0, 1.0]));
        assert_eq!(to_f64_vec(counted), [0.0, 1.0, 1.0]);
        let logits = Tensor::<3>::from_data(
            TensorData::new(vec![0.1f32, 2.0, 0.5, -1.0], [1, 2, 2]),
            &device,
        );
        assert_eq!(
            to_f64_vec(hard_prediction(logits.clone(), true, 0.5)),
            [0.0, 1.0, 1.0, 0.0]
        );
        assert_eq!(
            to_f64_vec(hard_prediction(logits, false, 0.0)),
            [1.0, 1.0, 1.0, 0.0]
        );
    }
}
