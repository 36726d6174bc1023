use losskit_core::{
    AuxiliaryInput, Capabilities, ConfigError, Error, Loss, LossConfig, LossInput, LossValue,
    Reduction,
    config::OptionError,
    distance::{SIGNED_DISTANCE_MAPS, auxiliary_or_computed},
};

use crate::shape::{Shape, shape_config};

shape_config! {
    /// Options of [`BoundaryLoss`].
    pub struct BoundaryLossConfig {}
    include_background: false,
    + spacing
}

impl LossConfig for BoundaryLossConfig {
    fn example() -> Self {
        Self::new()
    }

    fn validate(&self) -> Result<(), OptionError> {
        self.shape_options().validate()
    }

    fn build(self) -> Result<Box<dyn Loss>, ConfigError> {
        Ok(Box::new(BoundaryLoss {
            shape: self.shape_options().build("boundary")?,
        }))
    }
}

losskit_core::documented! {
    /// # What it does
    /// The boundary (surface) loss of Kervadec et al.: each class's probabilities weighted by
    /// the signed distance map of its target mask, so probability mass far outside the object
    /// costs in proportion to its distance and mass inside earns a reward:
    ///
    /// ```text
    /// φ_c(s) = d(s, object)        outside the target mask of class c
    ///        = -(d(s, outside) - 1) inside it           (0 for every s if c is absent)
    /// loss   = mean over (n, counted c, s) of p[n, c, s] · φ_c[n, s]
    /// ```
    ///
    /// `d` is the exact Euclidean distance to the nearest element of the set (in `spacing`
    /// units), computed by `losskit_core::distance` on each sample's whole image, as the
    /// authors' `one_hot2dist` computes it with SciPy; a class absent from the sample (or
    /// filling all of it) has no boundary and a zero map. `p` is the softmax (or sigmoid) of
    /// the output. The maps depend on the target only, so no gradient flows through them.
    /// `sum` adds every element; `none` gives each sample its sum.
    ///
    /// When training on patches, distances measured on the patch stop at its border: give
    /// the maps computed on the whole image as the auxiliary input `signed_distance_maps`
    /// (`LossInput::with_auxiliary`, `losskit compute --auxiliary`), and the loss uses them
    /// instead of computing its own.
    ///
    /// The loss is not bounded below by 0: a perfect prediction gives a negative value (the
    /// mean of the inside distances). It has no useful gradient on its own early in training
    /// (every class far from its object gets pushed down alike); the authors pair it with a
    /// region loss whose weight moves over to it, e.g. `scheduled` from `dice` to `boundary`.
    ///
    /// # When to use it
    /// Highly unbalanced segmentation (small lesions, thin organs) where region losses
    /// plateau: the boundary term sees how far the predicted mass lies from the object, not
    /// only how much overlaps it.
    ///
    /// # Options
    /// - `activation` (`softmax` | `sigmoid` | `none`, default `softmax`).
    /// - `include_background` (bool, default false, as in the authors' code): true adds
    ///   channel 0's map too.
    /// - `spacing` (list of floats > 0, one per spatial axis, default 1 each): anisotropic
    ///   voxel sizes.
    /// - `ignore_empty` (bool, default false): the mean leaves out each (sample, class) absent
    ///   from both target and hard prediction (`losskit_core::empty`, the rule the
    ///   segmentation metrics follow); their values are 0 either way.
    ///
    /// # Example
    /// ```json
    /// {"name": "boundary", "spacing": [1.0, 1.0]}
    /// ```
    ///
    /// # References
    /// - Kervadec et al., "Boundary loss for highly unbalanced segmentation" (MIDL 2019;
    ///   Medical Image Analysis 2021), and their code's `one_hot2dist` / `SurfaceLoss`.
    /// - Felzenszwalb and Huttenlocher, "Distance transforms of sampled functions" (2012).
    #[derive(Debug, Clone)]
    pub struct BoundaryLoss {
        shape: Shape,
    }
}

losskit_core::register_loss!(BoundaryLoss {
    name: "boundary",
    aliases: ["surface"],
    category: Segmentation,
    summary: "Kervadec's boundary loss: probabilities weighted by exact signed distance maps of the target.",
    config: BoundaryLossConfig,
});

impl Loss for BoundaryLoss {
    fn forward(&self, input: LossInput, reduction: Reduction) -> Result<LossValue, Error> {
        let spacing = self.shape.spacing(&input)?;
        let maps = auxiliary_or_computed(&input, &SIGNED_DISTANCE_MAPS, &spacing)?;
        let maps = self.shape.counted_classes(maps);
        let present = self.shape.present(&input)?;
        let (probabilities, _) = self.shape.probabilities(input)?;
        Ok(self
            .shape
            .reduce(probabilities * maps, present, reduction)
            .into())
    }

    fn capabilities(&self) -> Capabilities {
        self.shape.capabilities(None)
    }

    fn auxiliary_inputs(&self) -> Vec<AuxiliaryInput> {
        vec![SIGNED_DISTANCE_MAPS]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn hand_computed_one_dimensional_case() {
        // Two classes on 4 positions, class 1 at positions 1 and 2. Its map: 1 outside at the
        // ends, -(1 - 1) = 0 inside. Logits 0 give p = 1/2 everywhere: (1/2 + 0 + 0 + 1/2) / 4.
        let loss = build("boundary");
        let make = |o| LossInput::with_indices(o, ints(&[0, 1, 1, 0], [1, 4])).unwrap();
        let (value, grad) = value_and_grad(loss.as_ref(), floats(&[0.0; 8], [1, 2, 4]), make);
        assert_close(&[value], &[0.25], 1e-6);
        // d p1 / d x1 = p(1 - p) = 1/4, d p1 / d x0 = -1/4, each times φ / 4.
        let phi = [1.0, 0.0, 0.0, 1.0];
        let expected: Vec<f64> = phi
            .iter()
            .map(|f| -f / 16.0)
            .chain(phi.iter().map(|f| f / 16.0))
            .collect();
        assert_close(&grad, &expected, 1e-6);
    }

    #[test]
    fn an_absent_class_adds_nothing_and_the_background_counts_when_asked() {
        let target = ints(&[0, 0, 0, 0], [1, 4]);
        let input = || LossInput::with_indices(floats(&[1.0; 12], [1, 3, 4]), target.clone());
        assert_close(
            &value(
                build("boundary").as_ref(),
                input().unwrap(),
                Reduction::Mean,
            ),
            &[0.0],
            1e-9,
        );
        // Class 0 fills the image: no boundary either.
        let with_background = build(r#"{"name": "boundary", "include_background": true}"#);
        assert_close(
            &value(with_background.as_ref(), input().unwrap(), Reduction::Sum),
            &[0.0],
            1e-9,
        );
    }

    #[test]
    fn given_maps_replace_the_computed_ones_and_spacing_scales_distances() {
        let loss = build("boundary");
        let output = floats(&[0.0; 8], [1, 2, 4]);
        let maps = floats(&[0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0], [1, 2, 4]);
        let input = LossInput::with_indices(output.clone(), ints(&[0, 1, 1, 0], [1, 4]))
            .unwrap()
            .with_auxiliary("signed_distance_maps", maps)
            .unwrap();
        // p = 1/2 times 2 at each of the 4 positions of class 1, over 4 elements.
        assert_close(&value(loss.as_ref(), input, Reduction::Mean), &[1.0], 1e-6);
        let spaced = build(r#"{"name": "boundary", "spacing": [3.0]}"#);
        let input = LossInput::with_indices(output, ints(&[0, 1, 1, 0], [1, 4])).unwrap();
        // Kervadec's map in units: [3, -(3 - 1), -(3 - 1), 3], times p = 1/2.
        assert_close(&value(spaced.as_ref(), input, Reduction::Sum), &[1.0], 1e-6);
    }

    #[test]
    fn bad_spacing_is_named() {
        assert!(build_error(r#"{"name": "boundary", "spacing": [0.0]}"#).contains("`spacing`"));
        let loss = build(r#"{"name": "boundary", "spacing": [1.0, 1.0]}"#);
        let input =
            LossInput::with_indices(floats(&[0.0; 8], [1, 2, 4]), ints(&[0; 4], [1, 4])).unwrap();
        let error = loss
            .forward(input, Reduction::Mean)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("2 `spacing` values but the output has 1 spatial axes"),
            "{error}"
        );
    }

    #[test]
    fn passes_the_conformance_kit() {
        losskit_core::conformance::check_registered("boundary")
            .unwrap()
            .assert_passed();
        let config = r#"{"name": "boundary", "activation": "sigmoid", "include_background": true}"#;
        losskit_core::conformance::check(config, build(config).as_ref()).assert_passed();
    }
}
