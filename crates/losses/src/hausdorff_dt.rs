use burn::tensor::{Tensor, TensorData};
use losskit_core::{
    AuxiliaryInput, Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue,
    Reduction,
    config::{OptionError, ensure},
    distance::{DISTANCE_FIELDS, auxiliary_or_computed, distance_field_into, maps_of_masks},
    input::to_f64_vec,
};

use crate::shape::{Shape, shape_config};

shape_config! {
    /// Options of [`HausdorffDtLoss`].
    pub struct HausdorffDtLossConfig {
        /// The power α of the distances, in (0, 8].
        #[config(default = 2.0)]
        pub alpha: f32,
        /// Averages each class over the batch and its positions together, instead of over each
        /// sample's positions (MONAI's `batch`).
        #[config(default = false)]
        pub batch: bool,
    }
    include_background: false,
    + spacing
}

impl LossConfig for HausdorffDtLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        let alpha = self.alpha;
        ensure(
            alpha.is_finite() && alpha > 0.0 && alpha <= 8.0,
            "alpha",
            || format!("must be a number in (0, 8], got {alpha}"),
        )?;
        self.shape_options().validate()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(HausdorffDtLoss {
            shape: self.shape_options().build("hausdorff_dt")?,
            alpha: f64::from(self.alpha),
            batch: self.batch,
        }))
    }
}

losskit_core::documented! {
    /// # What it does
    /// The distance-transform estimate of the Hausdorff distance (Karimi and Salcudean), as
    /// MONAI 1.6.1's `HausdorffDTLoss` computes it: each squared error between probability and
    /// target is weighted by how far the element lies from the predicted and from the true
    /// boundary,
    ///
    /// ```text
    /// f[n, c] = mean over positions s of (p - t)² · (d_p^α + d_t^α)
    /// mean = mean over (n, counted c) of f        sum = Σ f        none: Σ_c f[n, c]
    /// ```
    ///
    /// with `d_t` the distance field of the target mask of class c and `d_p` that of the
    /// prediction mask `p > 1/2`: each element's Euclidean distance (in `spacing` units) to
    /// the nearest element on the other side of the mask's boundary; all zero for an empty or
    /// full mask, as in MONAI. Fields are computed per sample on whole images
    /// (`losskit_core::distance`, exact) and carry no gradient. As in MONAI, `sum` adds the
    /// per-(sample, class) means (so it is `mean` times N·K, not a sum over pixels); with
    /// `batch` each class is averaged over the whole batch first (`f[c]`; `mean` is unchanged,
    /// `sum` is `Σ_c f[c]`, and `none` gives every sample `sum / N`).
    ///
    /// The target's fields may be given precomputed (for patches cut from larger images) as
    /// the auxiliary input `distance_fields`; the prediction's are computed from the
    /// prediction, on the images the loss is given.
    ///
    /// # When to use it
    /// Segmentation where the worst boundary error matters (surgical margins, organs at risk):
    /// errors far from the true or predicted surface cost more than near it. Usually combined
    /// with Dice or cross-entropy, since a field of zeros (an empty prediction and target)
    /// gives no signal.
    ///
    /// # Options
    /// - `alpha` (float in (0, 8], default 2): the power of the distances.
    /// - `batch` (bool, default false): per-class means over the whole batch.
    /// - `activation` (`softmax` | `sigmoid` | `none`, default `softmax`).
    /// - `include_background` (bool, default false, MONAI's default).
    /// - `spacing` (list of floats > 0, one per spatial axis, default 1 each).
    /// - `ignore_empty` (bool, default false): the mean leaves out each (sample, class) absent
    ///   from both target and hard prediction (`losskit_core::empty`).
    ///
    /// # Example
    /// ```json
    /// {"name": "hausdorff_dt", "alpha": 2.0}
    /// ```
    ///
    /// # References
    /// - Karimi and Salcudean, "Reducing the Hausdorff Distance in Medical Image Segmentation
    ///   with Convolutional Neural Networks" (IEEE TMI 2020).
    /// - MONAI `monai.losses.HausdorffDTLoss`.
    #[derive(Debug, Clone)]
    pub struct HausdorffDtLoss {
        shape: Shape,
        alpha: f64,
        batch: bool,
    }
}

losskit_core::register_loss!(HausdorffDtLoss {
    name: "hausdorff_dt",
    aliases: ["hausdorff"],
    category: Segmentation,
    summary: "Hausdorff-distance loss from distance transforms of prediction and target (MONAI HausdorffDTLoss).",
    config: HausdorffDtLossConfig,
});

impl HausdorffDtLoss {
    /// The distance fields `[N, K, S]` of the prediction masks `p > 1/2`.
    fn prediction_fields(
        &self,
        probabilities: &Tensor<3>,
        dims: &[usize],
        spacing: &[f64],
    ) -> Tensor<3> {
        let masks: Vec<bool> = to_f64_vec(probabilities.clone().detach())
            .iter()
            .map(|&p| p > 0.5)
            .collect();
        let fields: Vec<f32> = maps_of_masks(&masks, dims, spacing, distance_field_into)
            .iter()
            .map(|&d| d as f32)
            .collect();
        Tensor::from_data(
            TensorData::new(fields, probabilities.dims()),
            &probabilities.device(),
        )
    }
}

impl Loss for HausdorffDtLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let spacing = self.shape.spacing(&input)?;
        let dims = input.spatial_shape().to_vec();
        let target_fields =
            self.shape
                .counted_classes(auxiliary_or_computed(&input, &DISTANCE_FIELDS, &spacing)?);
        let present = self.shape.present(&input)?;
        let (probabilities, target) = self.shape.probabilities(input)?;
        let prediction_fields = self.prediction_fields(&probabilities, &dims, &spacing);
        let weights =
            prediction_fields.powf_scalar(self.alpha) + target_fields.powf_scalar(self.alpha);
        let error = probabilities - target;
        let values = error.clone() * error * weights;
        let [n, k, _] = values.dims();
        let mut per_class = values.mean_dim(2).reshape([n, k]);
        let mut present = present;
        if self.batch {
            per_class = per_class.mean_dim(0);
            present = present.map(|present| present.sum_dim(0).greater_elem(0.0).float());
        }
        let (per_class, count) = match present {
            Some(present) => (per_class * present.clone(), present.sum()),
            None => {
                let count = per_class.dims().iter().product::<usize>() as f64;
                (per_class.clone(), per_class.zeros_like().sum() + count)
            }
        };
        let value = match reduction {
            Reduction::Mean => per_class.sum() / count.clamp_min(1.0),
            Reduction::Sum => per_class.sum(),
            Reduction::None if self.batch => (per_class.sum() / n as f64).repeat_dim(0, n),
            Reduction::None => per_class.sum_dim(1).reshape([n]),
        };
        Ok(value.into())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // The mean is over (sample, class) means: N·K values, not a count the kit knows.
            mean_over: None,
            ..self.shape.capabilities(Some(0.0))
        }
    }

    fn auxiliary_inputs(&self) -> Vec<AuxiliaryInput> {
        vec![DISTANCE_FIELDS]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn hand_computed_one_dimensional_case() {
        // Class 1 at positions 1 and 2 of 4: its field is 1 everywhere (each element is one
        // step from the other side). Logits give p1 = [0.8, 0.8, 0.2, 0.2] (prediction mask
        // {0, 1}, field [2, 1, 1, 2]).
        let logit = (0.8f64 / 0.2).ln() as f32 / 2.0;
        let output = floats(
            &[-logit, -logit, logit, logit, logit, logit, -logit, -logit],
            [1, 2, 4],
        );
        let loss = build("hausdorff_dt");
        let make = |o| LossInput::with_indices(o, ints(&[0, 1, 1, 0], [1, 4])).unwrap();
        let p: [f64; 4] = [0.8, 0.8, 0.2, 0.2];
        let t = [0.0, 1.0, 1.0, 0.0];
        let d_p = [2.0, 1.0, 1.0, 2.0];
        let d_t = [1.0; 4];
        let expected: f64 = (0..4)
            .map(|s| (p[s] - t[s]).powi(2) * (d_p[s] * d_p[s] + d_t[s] * d_t[s]))
            .sum::<f64>()
            / 4.0;
        let (value, grad) = value_and_grad(loss.as_ref(), output, make);
        assert_close(&[value], &[expected], 1e-5);
        // d/dx1 = 2 (p - t) w · p (1 - p) / 4; d/dx0 the opposite.
        let d1: Vec<f64> = (0..4)
            .map(|s| {
                2.0 * (p[s] - t[s]) * (d_p[s] * d_p[s] + d_t[s] * d_t[s]) * p[s] * (1.0 - p[s])
                    / 4.0
            })
            .collect();
        let expected_grad: Vec<f64> = d1.iter().map(|g| -g).chain(d1.iter().copied()).collect();
        assert_close(&grad, &expected_grad, 1e-5);
    }

    #[test]
    fn sum_adds_the_per_sample_class_means_as_monai_does_and_batch_keeps_the_mean() {
        let input = || {
            LossInput::with_indices(
                floats(
                    &[
                        0.3, -1.0, 2.0, 0.5, 0.1, -0.2, 1.1, 0.0, -0.7, 0.4, 0.9, -1.3, 0.2, 0.8,
                        -0.5, 1.5,
                    ],
                    [2, 2, 4],
                ),
                ints(&[0, 1, 1, 0, 1, 1, 0, 0], [2, 4]),
            )
            .unwrap()
        };
        let loss = build(r#"{"name": "hausdorff_dt", "include_background": true}"#);
        let mean = value(loss.as_ref(), input(), Reduction::Mean)[0];
        let sum = value(loss.as_ref(), input(), Reduction::Sum)[0];
        let none = value(loss.as_ref(), input(), Reduction::None);
        // Two samples × two classes of per-position means.
        assert_close(&[sum], &[4.0 * mean], 1e-6);
        assert_close(&[none.iter().sum()], &[sum], 1e-6);
        let batch = build(r#"{"name": "hausdorff_dt", "include_background": true, "batch": true}"#);
        assert_close(
            &value(batch.as_ref(), input(), Reduction::Mean),
            &[mean],
            1e-6,
        );
        let batch_sum = value(batch.as_ref(), input(), Reduction::Sum)[0];
        assert_close(&[batch_sum], &[2.0 * mean], 1e-6);
        assert_close(
            &value(batch.as_ref(), input(), Reduction::None),
            &[batch_sum / 2.0, batch_sum / 2.0],
            1e-6,
        );
    }

    #[test]
    fn a_perfect_prediction_gives_zero() {
        let loss = build(r#"{"name": "hausdorff_dt", "include_background": true}"#);
        let output = floats(&[9.0, -9.0, -9.0, 9.0, -9.0, 9.0, 9.0, -9.0], [1, 2, 4]);
        let input = LossInput::with_indices(output, ints(&[0, 1, 1, 0], [1, 4])).unwrap();
        assert!(value(loss.as_ref(), input, Reduction::Mean)[0] < 1e-6);
    }

    #[test]
    fn bad_alpha_is_named() {
        assert!(build_error(r#"{"name": "hausdorff_dt", "alpha": 0.0}"#).contains("`alpha`"));
        assert!(build_error(r#"{"name": "hausdorff_dt", "alpha": 100.0}"#).contains("`alpha`"));
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("hausdorff_dt")
            .unwrap()
            .assert_passed();
        let config = r#"{"name": "hausdorff_dt", "activation": "sigmoid", "alpha": 1.0}"#;
        losskit_core::conformance::check(config, build(config).as_ref()).assert_passed();
    }
}
