//! Exact Euclidean distance transforms of 2-D and 3-D masks, and the signed distance maps that
//! boundary losses weigh probabilities with.
//!
//! The transform is the separable linear-time algorithm of Felzenszwalb and Huttenlocher
//! ("Distance transforms of sampled functions", Theory of Computing 8, 2012): the squared
//! distance along one axis is the lower envelope of parabolas rooted at the feature elements;
//! applied along each axis in turn to the previous axis's result it gives the exact squared
//! Euclidean distance, in time linear in the number of elements. Voxel spacing may differ per
//! axis (anisotropic scans). Maps of a batch are computed per sample and class in parallel.
//!
//! The signed distance map follows Kervadec et al. ("Boundary loss for highly unbalanced
//! segmentation", MIDL 2019) and their code: outside the object, the distance to the nearest
//! object element; inside, minus (the distance to the nearest element outside − 1); all zero for a
//! class absent from the sample (or filling all of it: it has no boundary).

use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::{
    error::{Error, InputError},
    input::{LossInput, Target, to_f64_vec, to_i64_vec},
    loss::AuxiliaryInput,
};

/// Kervadec's signed distance maps of the target's class masks ([`signed_distance_map`]), as
/// the boundary loss reads them.
pub const SIGNED_DISTANCE_MAPS: AuxiliaryInput = AuxiliaryInput {
    name: "signed_distance_maps",
    description: "signed distance of each element to the boundary of its class's target mask \
                  (negative inside; Kervadec et al.), per sample and class",
    map: signed_distance_map,
};

/// MONAI's distance fields of the target's class masks ([`distance_field`]), as the
/// Hausdorff-distance loss reads them.
pub const DISTANCE_FIELDS: AuxiliaryInput = AuxiliaryInput {
    name: "distance_fields",
    description: "unsigned distance of each element to the boundary of its class's target mask \
                  (MONAI's HausdorffDTLoss field), per sample and class",
    map: distance_field,
};

/// The squared distance from each element of a `dims`-shaped mask (row-major; 1 to 3 axes) to
/// its nearest `true` element, with `spacing` the size of an element along each axis.
/// Infinite everywhere when no element is `true`.
///
/// # Panics
/// If `mask.len()` is not the product of `dims`, or `spacing` has another length than `dims`.
pub fn squared_distance_to(mask: &[bool], dims: &[usize], spacing: &[f64]) -> Vec<f64> {
    assert_eq!(
        mask.len(),
        dims.iter().product::<usize>(),
        "mask and dims differ"
    );
    assert_eq!(dims.len(), spacing.len(), "one spacing per axis");
    let Some((&n, outer_dims)) = dims.split_last() else {
        return Vec::new();
    };
    if n == 0 {
        return Vec::new();
    }
    // The last axis first: its lines are contiguous, and on a mask the 1-D transform is just
    // the distance to the nearest feature on either side (two scans, no parabolas).
    let weight = spacing[dims.len() - 1] * spacing[dims.len() - 1];
    let mut distance = vec![f64::INFINITY; mask.len()];
    for (line, out) in mask.chunks(n).zip(distance.chunks_mut(n)) {
        let mut last = None;
        for (i, (&feature, d)) in line.iter().zip(out.iter_mut()).enumerate() {
            if feature {
                last = Some(i);
            }
            if let Some(at) = last {
                *d = (i - at) as f64;
            }
        }
        let mut next = None;
        for (i, (&feature, d)) in line.iter().zip(out.iter_mut()).enumerate().rev() {
            if feature {
                next = Some(i);
            }
            if let Some(at) = next {
                *d = d.min((at - i) as f64);
            }
        }
        for d in out.iter_mut() {
            *d = *d * *d * weight;
        }
    }
    // The other axes: the lower envelope of parabolas over the previous result.
    let longest = outer_dims.iter().copied().max().unwrap_or(0);
    let mut scratch = Envelope::new(longest);
    for (axis, &length) in outer_dims.iter().enumerate() {
        if length == 0 {
            return distance;
        }
        // Elements along `axis` are `stride` apart; lines start at every element whose
        // coordinate on `axis` is 0.
        let stride: usize = dims[axis + 1..].iter().product();
        let outer = distance.len() / (length * stride);
        let weight = spacing[axis] * spacing[axis];
        for block in 0..outer {
            for inner in 0..stride {
                let start = block * length * stride + inner;
                scratch.line(&mut distance, start, stride, length, weight);
            }
        }
    }
    distance
}

/// The Euclidean distance from each element to its nearest `true` element (see
/// [`squared_distance_to`]).
pub fn distance_to(mask: &[bool], dims: &[usize], spacing: &[f64]) -> Vec<f64> {
    let mut distance = squared_distance_to(mask, dims, spacing);
    for d in &mut distance {
        *d = d.sqrt();
    }
    distance
}

/// The signed distance map of `mask` (Kervadec et al.): outside, the distance to the nearest
/// element inside; inside, −(the distance to the nearest element outside − 1); all zero when
/// the mask is empty or full.
pub fn signed_distance_map(mask: &[bool], dims: &[usize], spacing: &[f64]) -> Vec<f64> {
    let inside = mask.iter().filter(|&&m| m).count();
    if inside == 0 || inside == mask.len() {
        return vec![0.0; mask.len()];
    }
    let to_object = distance_to(mask, dims, spacing);
    let outside: Vec<bool> = mask.iter().map(|&m| !m).collect();
    let to_background = distance_to(&outside, dims, spacing);
    mask.iter()
        .zip(to_object.iter().zip(&to_background))
        .map(|(&m, (&out, &inn))| if m { -(inn - 1.0) } else { out })
        .collect()
}

/// MONAI's distance field of `mask` (`HausdorffDTLoss`): each element's distance to the
/// nearest element on the other side of the mask's boundary (inside, to the nearest element
/// outside; outside, to the nearest inside); all zero when the mask is empty or full.
pub fn distance_field(mask: &[bool], dims: &[usize], spacing: &[f64]) -> Vec<f64> {
    let inside = mask.iter().filter(|&&m| m).count();
    if inside == 0 || inside == mask.len() {
        return vec![0.0; mask.len()];
    }
    let outside: Vec<bool> = mask.iter().map(|&m| !m).collect();
    let to_object = distance_to(mask, dims, spacing);
    let to_background = distance_to(&outside, dims, spacing);
    // Each is zero on its own side, so the sum is the one that is not.
    to_object
        .iter()
        .zip(&to_background)
        .map(|(out, inn)| out + inn)
        .collect()
}

/// Signed distance maps `[N, C, dims…]` of a class-index target `[N, dims…]` with `classes`
/// classes, each sample and class computed on its whole image, in parallel.
///
/// # Panics
/// If `target.len()` is not a multiple of the image size given by `dims`.
pub fn signed_distance_maps(
    target: &[i64],
    classes: usize,
    dims: &[usize],
    spacing: &[f64],
) -> Vec<f64> {
    maps_of_indices(target, classes, dims, spacing, signed_distance_map)
}

/// The maps `[N, C, dims…]` that `map` gives for each class mask of a class-index target
/// `[N, dims…]`, in parallel. Indices outside `0..classes` (ignored positions) belong to no
/// class.
///
/// # Panics
/// If `target.len()` is not a multiple of the image size given by `dims`.
pub fn maps_of_indices(
    target: &[i64],
    classes: usize,
    dims: &[usize],
    spacing: &[f64],
    map: fn(&[bool], &[usize], &[f64]) -> Vec<f64>,
) -> Vec<f64> {
    let size: usize = dims.iter().product();
    assert!(
        size > 0 && target.len() % size == 0,
        "target and dims differ"
    );
    let samples = target.len() / size;
    let mut maps = vec![0.0; samples * classes * size];
    maps.par_chunks_mut(size)
        .enumerate()
        .for_each(|(map_index, out)| {
            let (sample, class) = (map_index / classes, map_index % classes);
            let image = &target[sample * size..(sample + 1) * size];
            let mask: Vec<bool> = image.iter().map(|&t| t == class as i64).collect();
            out.copy_from_slice(&map(&mask, dims, spacing));
        });
    maps
}

/// The maps `[N, channels, dims…]` of class-index labels `[N, dims…]` read as the losses read
/// them: one mask per class, or with a single channel the mask of label 1 (the Dice family's
/// binary reading).
pub fn class_maps(
    labels: &[i64],
    channels: usize,
    dims: &[usize],
    spacing: &[f64],
    map: fn(&[bool], &[usize], &[f64]) -> Vec<f64>,
) -> Vec<f64> {
    if channels == 1 {
        let masks: Vec<bool> = labels.iter().map(|&t| t == 1).collect();
        maps_of_masks(&masks, dims, spacing, map)
    } else {
        maps_of_indices(labels, channels, dims, spacing, map)
    }
}

/// The maps that `map` gives for each of the masks `[M, dims…]` (row-major, one after the
/// other), in parallel.
///
/// # Panics
/// If `masks.len()` is not a multiple of the image size given by `dims`.
pub fn maps_of_masks(
    masks: &[bool],
    dims: &[usize],
    spacing: &[f64],
    map: fn(&[bool], &[usize], &[f64]) -> Vec<f64>,
) -> Vec<f64> {
    let size: usize = dims.iter().product();
    assert!(size > 0 && masks.len() % size == 0, "masks and dims differ");
    let mut maps = vec![0.0; masks.len()];
    maps.par_chunks_mut(size)
        .zip(masks.par_chunks(size))
        .for_each(|(out, mask)| out.copy_from_slice(&map(mask, dims, spacing)));
    maps
}

/// The spacing of each spatial axis of `input`: `spacing` when given (one value per axis,
/// each finite and > 0), else 1 for every axis. Errors name `loss`.
pub fn spacing_of(
    loss: &str,
    input: &LossInput,
    spacing: Option<&[f32]>,
) -> Result<Vec<f64>, Error> {
    let dims = input.spatial_shape();
    let Some(spacing) = spacing else {
        return Ok(vec![1.0; dims.len()]);
    };
    if spacing.len() != dims.len() {
        return Err(InputError::Unsupported {
            loss: loss.into(),
            problem: format!(
                "has {} `spacing` values but the output has {} spatial axes ({dims:?})",
                spacing.len(),
                dims.len()
            ),
        }
        .into());
    }
    Ok(spacing.iter().map(|&s| f64::from(s)).collect())
}

/// The auxiliary input `aux` of `input`, `[N, C, S]`: as given, or computed on the host from
/// the target's class masks (class indices equal to the class; a dense target above 1/2),
/// each on its whole image. Positions equal to `ignore_index` belong to no class.
pub fn auxiliary_or_computed(
    input: &LossInput,
    aux: &AuxiliaryInput,
    spacing: &[f64],
) -> Result<Tensor<3>, Error> {
    if let Some(given) = input.auxiliary(aux.name) {
        return Ok(given.clone().detach());
    }
    let [n, c, s] = [input.batch_size(), input.channels(), input.positions()];
    let dims = input.spatial_shape();
    if dims.is_empty() {
        return Err(InputError::Unsupported {
            loss: aux.name.into(),
            problem: format!(
                "needs spatial axes (an output [N, C, H, W] or [N, C, D, H, W]), got {:?}",
                input.shape()
            ),
        }
        .into());
    }
    let maps = match input.target() {
        Target::Indices(indices) => {
            class_maps(&to_i64_vec(indices.clone()), c, dims, spacing, aux.map)
        }
        Target::Dense(dense) => {
            let values = to_f64_vec(dense.clone());
            let masks: Vec<bool> = values.iter().map(|&t| t > 0.5).collect();
            maps_of_masks(&masks, dims, spacing, aux.map)
        }
    };
    let maps: Vec<f32> = maps.iter().map(|&v| v as f32).collect();
    Ok(Tensor::<3>::from_data(
        TensorData::new(maps, [n, c, s]),
        &input.device(),
    ))
}

/// Buffers for one line's lower envelope of parabolas.
struct Envelope {
    /// The values along the line.
    values: Vec<f64>,
    /// Positions of the parabolas in the envelope.
    roots: Vec<usize>,
    /// Where each parabola of the envelope starts to be the lowest (one more than `roots`).
    bounds: Vec<f64>,
}

impl Envelope {
    fn new(longest: usize) -> Self {
        Self {
            values: vec![0.0; longest],
            roots: vec![0; longest],
            bounds: vec![0.0; longest + 1],
        }
    }

    /// Replaces the `n` values of `data` at `start`, `start + stride`, … by their 1-D squared
    /// distance transform with squared spacing `weight`. Infinite values root no parabola.
    fn line(&mut self, data: &mut [f64], start: usize, stride: usize, n: usize, weight: f64) {
        for i in 0..n {
            self.values[i] = data[start + i * stride];
        }
        let f = &self.values[..n];
        let mut k: isize = -1;
        for q in 0..n {
            if !f[q].is_finite() {
                continue;
            }
            loop {
                if k < 0 {
                    k = 0;
                    self.roots[0] = q;
                    self.bounds[0] = f64::NEG_INFINITY;
                    self.bounds[1] = f64::INFINITY;
                    break;
                }
                let r = self.roots[k as usize];
                let (qf, rf) = (q as f64, r as f64);
                let crossing = ((f[q] + weight * qf * qf) - (f[r] + weight * rf * rf))
                    / (2.0 * weight * (qf - rf));
                if crossing <= self.bounds[k as usize] {
                    k -= 1;
                    continue;
                }
                k += 1;
                self.roots[k as usize] = q;
                self.bounds[k as usize] = crossing;
                self.bounds[k as usize + 1] = f64::INFINITY;
                break;
            }
        }
        if k < 0 {
            // No feature on this line: the values stay infinite.
            return;
        }
        let mut j = 0;
        for q in 0..n {
            while self.bounds[j + 1] < q as f64 {
                j += 1;
            }
            let r = self.roots[j];
            let offset = q as f64 - r as f64;
            data[start + q * stride] = weight * offset * offset + f[r];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Every element against every feature element.
    fn brute_force(mask: &[bool], dims: &[usize], spacing: &[f64]) -> Vec<f64> {
        let coordinates = |mut i: usize| -> Vec<f64> {
            let mut c = vec![0.0; dims.len()];
            for axis in (0..dims.len()).rev() {
                c[axis] = (i % dims[axis]) as f64 * spacing[axis];
                i /= dims[axis];
            }
            c
        };
        (0..mask.len())
            .map(|i| {
                let here = coordinates(i);
                (0..mask.len())
                    .filter(|&j| mask[j])
                    .map(|j| {
                        coordinates(j)
                            .iter()
                            .zip(&here)
                            .map(|(a, b)| (a - b) * (a - b))
                            .sum::<f64>()
                    })
                    .fold(f64::INFINITY, f64::min)
            })
            .collect()
    }

    fn random_mask(rng: &mut Rng, len: usize, density: f64) -> Vec<bool> {
        (0..len).map(|_| rng.uniform() < density).collect()
    }

    #[test]
    fn the_transform_equals_brute_force_in_2d_and_3d_with_any_spacing() {
        let mut rng = Rng::new(7);
        let shapes: [(&[usize], &[f64]); 6] = [
            (&[1, 1], &[1.0, 1.0]),
            (&[9, 13], &[1.0, 1.0]),
            (&[16, 5], &[2.5, 0.5]),
            (&[7], &[1.0]),
            (&[4, 6, 5], &[1.0, 1.0, 1.0]),
            (&[5, 4, 7], &[3.0, 0.7, 1.2]),
        ];
        for (dims, spacing) in shapes {
            let len = dims.iter().product();
            for density in [0.02, 0.2, 0.7] {
                let mask = random_mask(&mut rng, len, density);
                let fast = squared_distance_to(&mask, dims, spacing);
                let exact = brute_force(&mask, dims, spacing);
                for (i, (a, b)) in fast.iter().zip(&exact).enumerate() {
                    assert!(
                        (a == b) || (a - b).abs() <= 1e-9 * b.max(1.0),
                        "{dims:?} {spacing:?} density {density}, element {i}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn no_feature_is_infinitely_far_and_a_lone_point_gives_euclidean_distances() {
        assert!(
            squared_distance_to(&[false; 6], &[2, 3], &[1.0, 1.0])
                .iter()
                .all(|d| d.is_infinite())
        );
        let mut mask = vec![false; 25];
        mask[12] = true; // the centre of 5×5
        let d = distance_to(&mask, &[5, 5], &[1.0, 1.0]);
        assert_eq!(d[0], 8f64.sqrt());
        assert_eq!(d[2], 2.0);
        assert_eq!(d[12], 0.0);
    }

    #[test]
    fn the_signed_map_is_distance_outside_and_one_minus_distance_inside() {
        // A 3×3 square in the middle of 7×7.
        let dims = [7, 7];
        let mask: Vec<bool> = (0..49)
            .map(|i| (2..5).contains(&(i / 7)) && (2..5).contains(&(i % 7)))
            .collect();
        let map = signed_distance_map(&mask, &dims, &[1.0, 1.0]);
        assert_eq!(
            map[3 * 7 + 3],
            -1.0,
            "the centre: 2 to the outside, −(2 − 1)"
        );
        assert_eq!(map[2 * 7 + 2], 0.0, "a corner inside: 1 to the outside");
        assert_eq!(map[3 * 7 + 1], 1.0, "just left of the square");
        assert_eq!(map[0], 8f64.sqrt(), "the far corner, to (2, 2)");
        assert!(
            signed_distance_map(&[false; 4], &[2, 2], &[1.0, 1.0])
                .iter()
                .all(|&v| v == 0.0)
        );
        assert!(
            signed_distance_map(&[true; 4], &[2, 2], &[1.0, 1.0])
                .iter()
                .all(|&v| v == 0.0)
        );
    }

    #[test]
    fn batch_maps_are_each_sample_and_class_on_its_own() {
        let dims = [4, 5];
        let mut rng = Rng::new(3);
        let target: Vec<i64> = (0..3 * 20).map(|_| rng.below(3) as i64).collect();
        let maps = signed_distance_maps(&target, 3, &dims, &[1.0, 2.0]);
        assert_eq!(maps.len(), 3 * 3 * 20);
        for sample in 0..3 {
            for class in 0..3 {
                let mask: Vec<bool> = target[sample * 20..(sample + 1) * 20]
                    .iter()
                    .map(|&t| t == class as i64)
                    .collect();
                let at = (sample * 3 + class) * 20;
                assert_eq!(
                    maps[at..at + 20],
                    signed_distance_map(&mask, &dims, &[1.0, 2.0])[..]
                );
            }
        }
    }
}
