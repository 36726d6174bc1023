use burn::tensor::{Tensor, activation::relu};
use losskit_core::{
    Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue, MeanCount, Reduction,
    config::{OptionError, ensure},
    reduce::reduce_samples,
};

use crate::{
    overlap::check_non_negative,
    shape::{Shape, shape_config},
};

shape_config! {
    /// Options of [`SoftClDiceLoss`].
    pub struct SoftClDiceLossConfig {}
    include_background: true,
    + skeleton
}

impl LossConfig for SoftClDiceLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        self.skeleton_options().validate()?;
        self.shape_options().validate()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(SoftClDiceLoss {
            skeleton: self.skeleton_options(),
            shape: self.shape_options().build("soft_cldice")?,
        }))
    }
}

/// The soft-skeleton options of the clDice losses, as their configs hold them.
#[derive(Debug, Clone)]
pub(crate) struct SkeletonOptions {
    pub(crate) iterations: usize,
    pub(crate) smooth_nr: f32,
    pub(crate) smooth_dr: f32,
    pub(crate) smooth: f32,
}

impl SkeletonOptions {
    pub(crate) fn validate(&self) -> Result<(), OptionError> {
        let iterations = self.iterations;
        ensure(iterations <= 50, "iterations", || {
            format!("must be in 0..=50, got {iterations}")
        })?;
        check_non_negative("smooth_nr", self.smooth_nr)?;
        for (option, value) in [("smooth_dr", self.smooth_dr), ("smooth", self.smooth)] {
            ensure(value.is_finite() && value > 0.0, option, || {
                format!(
                    "must be a finite number > 0 (it keeps empty masks from giving 0/0), got {value}"
                )
            })?;
        }
        Ok(())
    }

    /// Each sample's clDice loss `[N]` between probabilities and target masks `[N, K, S]` of
    /// an output whose spatial sizes are `dims`.
    pub(crate) fn cl_dice(
        &self,
        probabilities: Tensor<3>,
        target: Tensor<3>,
        dims: &[usize],
    ) -> Tensor<1> {
        let [n, k, s] = probabilities.dims();
        let volume = volume_shape(n, k, dims);
        let skeleton_of = |values: Tensor<3>| {
            soft_skeleton(values.reshape(volume), self.iterations).reshape([n, k * s])
        };
        let prediction_skeleton = skeleton_of(probabilities.clone());
        let target_skeleton = skeleton_of(target.clone().detach());
        let (probabilities, target) = (
            probabilities.reshape([n, k * s]),
            target.reshape([n, k * s]),
        );
        let (nr, dr) = (f64::from(self.smooth_nr), f64::from(self.smooth_dr));
        let ratio =
            |hits: Tensor<2>, all: Tensor<2>| (hits.sum_dim(1) + nr) / (all.sum_dim(1) + dr);
        let precision = ratio(prediction_skeleton.clone() * target, prediction_skeleton);
        let sensitivity = ratio(target_skeleton.clone() * probabilities, target_skeleton);
        let harmonic = (precision.clone() * sensitivity.clone() * 2.0)
            / (precision + sensitivity + f64::from(self.smooth));
        (harmonic.neg() + 1.0).reshape([n])
    }
}

/// `[N, K, D, H, W]` for spatial sizes `dims` of one to three axes (missing leading axes are 1).
fn volume_shape(n: usize, k: usize, dims: &[usize]) -> [usize; 5] {
    let mut volume = [n, k, 1, 1, 1];
    volume[5 - dims.len()..].copy_from_slice(dims);
    volume
}

/// The minimum (`max: false`) or maximum of each element and its two neighbours along `axis`;
/// at the ends, of the neighbours that exist (PyTorch's pooling with implicit infinite
/// padding). Ties keep the element itself, so the gradient reaches one element only.
fn window(values: Tensor<5>, axis: usize, max: bool) -> Tensor<5> {
    let len = values.dims()[axis];
    if len == 1 {
        return values;
    }
    // Shifted copies whose missing neighbour is the element itself: it never changes the
    // minimum or maximum.
    let before = Tensor::cat(
        vec![
            values.clone().narrow(axis, 0, 1),
            values.clone().narrow(axis, 0, len - 1),
        ],
        axis,
    );
    let after = Tensor::cat(
        vec![
            values.clone().narrow(axis, 1, len - 1),
            values.clone().narrow(axis, len - 1, 1),
        ],
        axis,
    );
    if max {
        values.max_pair(before).max_pair(after)
    } else {
        values.min_pair(before).min_pair(after)
    }
}

/// Soft erosion: the minimum over the cross of each element and its axis neighbours (MONAI's
/// `soft_erode`: the minimum of 3-long minimum pools along each axis).
fn soft_erode(values: Tensor<5>) -> Tensor<5> {
    let mut eroded: Option<Tensor<5>> = None;
    for axis in 2..5 {
        let pooled = window(values.clone(), axis, false);
        eroded = Some(match eroded {
            Some(eroded) => eroded.min_pair(pooled),
            None => pooled,
        });
    }
    eroded.expect("three axes")
}

/// Soft dilation: the maximum over the 3×3(×3) box (MONAI's `soft_dilate`), as one
/// 3-long maximum along each axis in turn.
fn soft_dilate(values: Tensor<5>) -> Tensor<5> {
    (2..5).fold(values, |values, axis| window(values, axis, true))
}

fn soft_open(values: Tensor<5>) -> Tensor<5> {
    soft_dilate(soft_erode(values))
}

/// The soft skeleton of Shit et al. (MONAI's `soft_skel`): what each erosion removes that
/// its opening does not restore, accumulated over `iterations` erosions.
pub(crate) fn soft_skeleton(values: Tensor<5>, iterations: usize) -> Tensor<5> {
    let mut image = values;
    let mut skeleton = relu(image.clone() - soft_open(image.clone()));
    for _ in 0..iterations {
        image = soft_erode(image);
        let delta = relu(image.clone() - soft_open(image.clone()));
        skeleton = skeleton.clone() + relu(delta.clone() - skeleton * delta);
    }
    skeleton
}

losskit_core::documented! {
    /// # What it does
    /// One minus the soft centerline Dice (clDice) of Shit et al., as MONAI 1.6.1's
    /// `SoftclDiceLoss` computes it: the harmonic mean of the topology precision (how much of
    /// the predicted skeleton lies in the target) and the topology sensitivity (how much of
    /// the target's skeleton lies in the prediction), per sample:
    ///
    /// ```text
    /// S_p = softskel(p), S_t = softskel(t)        (soft morphological skeletons)
    /// Tprec = (Σ S_p·t + smooth_nr) / (Σ S_p + smooth_dr)
    /// Tsens = (Σ S_t·p + smooth_nr) / (Σ S_t + smooth_dr)
    /// loss_n = 1 - 2·Tprec·Tsens / (Tprec + Tsens + smooth)     (sums over classes and space)
    /// ```
    ///
    /// The soft skeleton repeats soft erosion (a minimum over each element's axis neighbours)
    /// and soft opening (erosion, then a maximum over the 3×3(×3) box) `iterations` times,
    /// each pooling written as shifted minimums and maximums, so 1-D, 2-D and 3-D outputs
    /// (burn has no 3-D max pooling) get the same morphology as MONAI's `max_pool2d` /
    /// `max_pool3d`. `p` is the softmax (or sigmoid) of the output; class indices are one-hot
    /// encoded. `mean` averages the samples' values, `sum` adds them, `none` gives each.
    ///
    /// Edge cases: empty skeletons give ratios of the smoothing terms (no 0/0); on a single
    /// channel the channel is the mask.
    ///
    /// # When to use it
    /// Tubular and network-like structures (vessels, neurons, roads, airways), where a thin
    /// gap that barely changes Dice breaks connectivity. Use it with a region loss
    /// (`dice_cldice`): alone it ignores everything off the skeletons.
    ///
    /// # Options
    /// - `iterations` (integer in 0..=50, default 3): at least half the largest thickness of
    ///   the structures, in elements.
    /// - `smooth_nr` (float >= 0, default 1), `smooth_dr` (float > 0, default 1), `smooth`
    ///   (float > 0, default 1e-4): MONAI 1.6.1's defaults.
    /// - `activation` (`softmax` | `sigmoid` | `none`, default `softmax`).
    /// - `include_background` (bool, default true, MONAI 1.6.1's default).
    ///
    /// # Example
    /// ```json
    /// {"name": "soft_cldice", "iterations": 5, "include_background": false}
    /// ```
    ///
    /// # References
    /// - Shit et al., "clDice — a Novel Topology-Preserving Loss Function for Tubular
    ///   Structure Segmentation" (CVPR 2021).
    /// - MONAI `monai.losses.SoftclDiceLoss` (1.6.1).
    #[derive(Debug, Clone)]
    pub struct SoftClDiceLoss {
        skeleton: SkeletonOptions,
        shape: Shape,
    }
}

losskit_core::register_loss!(SoftClDiceLoss {
    name: "soft_cldice",
    aliases: ["cldice"],
    category: Segmentation,
    summary: "Soft centerline Dice on soft skeletons, for tubular structures (MONAI SoftclDiceLoss).",
    config: SoftClDiceLossConfig,
});

impl Loss for SoftClDiceLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let dims = input.spatial_shape().to_vec();
        let (probabilities, target) = self.shape.probabilities(input)?;
        let per_sample = self.skeleton.cl_dice(probabilities, target, &dims);
        Ok(reduce_samples(per_sample, reduction).into())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            mean_over: Some(MeanCount::Samples),
            ..self.shape.capabilities(Some(0.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use losskit_core::input::to_f64_vec;

    fn volume(values: &[f32], dims: [usize; 5]) -> Tensor<5> {
        floats(values, dims)
    }

    #[test]
    fn erosion_and_dilation_pool_like_pytorch_at_the_borders() {
        let line = volume(&[0.5, 0.1, 0.9, 0.3], [1, 1, 1, 1, 4]);
        assert_close(
            &to_f64_vec(soft_erode(line.clone())),
            &[0.1, 0.1, 0.1, 0.3],
            1e-7,
        );
        assert_close(&to_f64_vec(soft_dilate(line)), &[0.5, 0.9, 0.9, 0.9], 1e-7);
        // 2-D: erosion takes the cross, dilation the whole 3×3 box.
        let image = volume(
            &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
            [1, 1, 1, 3, 3],
        );
        assert_close(
            &to_f64_vec(soft_erode(image.clone())),
            &[1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0],
            1e-7,
        );
        let dot = volume(
            &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
            [1, 1, 1, 3, 3],
        );
        assert_close(
            &to_f64_vec(soft_dilate(dot)),
            &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0],
            1e-7,
        );
    }

    #[test]
    fn the_skeleton_of_a_bar_is_its_middle_line() {
        // A 3-wide horizontal bar in a 5×7 image: the skeleton keeps its middle row.
        let mut values = vec![0.0f32; 35];
        for row in 1..4 {
            for column in 0..7 {
                values[row * 7 + column] = 1.0;
            }
        }
        let skeleton = to_f64_vec(soft_skeleton(volume(&values, [1, 1, 1, 5, 7]), 3));
        // The bar runs into the left and right borders, which do not erode it (no padding
        // zeros), so the whole middle row is skeleton.
        let expected: Vec<f64> = (0..35).map(|i| f64::from(i / 7 == 2)).collect();
        assert_close(&skeleton, &expected, 1e-6);
    }

    #[test]
    fn a_perfect_prediction_gives_nearly_zero_and_the_gradient_is_finite() {
        let target = [0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0];
        let logits: Vec<f32> = target
            .iter()
            .map(|&t| if t == 0 { 20.0 } else { -20.0 })
            .chain(target.iter().map(|&t| if t == 1 { 20.0 } else { -20.0 }))
            .collect();
        let loss = build(r#"{"name": "soft_cldice", "include_background": false}"#);
        let make = |o| LossInput::with_indices(o, ints(&target, [1, 3, 5])).unwrap();
        let (value, grad) = value_and_grad(loss.as_ref(), floats(&logits, [1, 2, 3, 5]), make);
        assert!(value.abs() < 1e-3, "{value}");
        assert!(grad.iter().all(|g| g.is_finite()));
    }

    #[test]
    fn bad_options_are_named() {
        assert!(
            build_error(r#"{"name": "soft_cldice", "iterations": 51}"#).contains("`iterations`")
        );
        assert!(build_error(r#"{"name": "soft_cldice", "smooth": 0}"#).contains("`smooth`"));
        assert!(build_error(r#"{"name": "soft_cldice", "smooth_dr": -1}"#).contains("`smooth_dr`"));
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("soft_cldice")
            .unwrap()
            .assert_passed();
        let config = r#"{"name": "soft_cldice", "activation": "sigmoid", "iterations": 1}"#;
        losskit_core::conformance::check(config, build(config).as_ref()).assert_passed();
    }
}
