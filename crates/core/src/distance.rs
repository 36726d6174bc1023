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
use std::cell::RefCell;

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
    map: signed_distance_map_into,
};

/// MONAI's distance fields of the target's class masks ([`distance_field`]), as the
/// Hausdorff-distance loss reads them.
pub const DISTANCE_FIELDS: AuxiliaryInput = AuxiliaryInput {
    name: "distance_fields",
    description: "unsigned distance of each element to the boundary of its class's target mask \
                  (MONAI's HausdorffDTLoss field), per sample and class",
    map: distance_field_into,
};

/// A map of one mask, written into an output of the mask's length: what
/// [`AuxiliaryInput::map`] holds ([`signed_distance_map_into`], [`distance_field_into`]).
pub type MaskMap = fn(mask: &[bool], dims: &[usize], spacing: &[f64], out: &mut [f64]);

thread_local! {
    // Reused by every transform on a thread, so a batch of maps allocates once per thread.
    static ENVELOPE: RefCell<Envelope> = RefCell::new(Envelope::new(0));
    static SCRATCH: RefCell<(Vec<bool>, Vec<f64>)> =
        const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The squared distance from each element of a `dims`-shaped mask (row-major; 1 to 3 axes) to
/// its nearest `true` element, with `spacing` the size of an element along each axis.
/// Infinite everywhere when no element is `true`.
///
/// # Panics
/// If `mask.len()` is not the product of `dims`, or `spacing` has another length than `dims`.
pub fn squared_distance_to(mask: &[bool], dims: &[usize], spacing: &[f64]) -> Vec<f64> {
    let mut distance = vec![0.0; mask.len()];
    squared_distance_into(mask, dims, spacing, &mut distance);
    distance
}

/// [`squared_distance_to`], written into `distance` (of the mask's length).
///
/// # Panics
/// As [`squared_distance_to`], and if `distance` has another length than `mask`.
pub fn squared_distance_into(mask: &[bool], dims: &[usize], spacing: &[f64], distance: &mut [f64]) {
    assert_eq!(
        mask.len(),
        dims.iter().product::<usize>(),
        "mask and dims differ"
    );
    assert_eq!(dims.len(), spacing.len(), "one spacing per axis");
    assert_eq!(distance.len(), mask.len(), "mask and output differ");
    let Some((&first, rest)) = dims.split_first() else {
        return;
    };
    if mask.is_empty() {
        return;
    }
    // Axis 0 first, a whole slab (every element with one axis-0 coordinate) at a time: on a
    // mask the 1-D transform is the distance to the nearest feature on either side, a forward
    // and a backward scan, and over contiguous slabs their inner loops vectorise.
    let slab: usize = rest.iter().product();
    for (i, features) in mask.chunks(slab).enumerate() {
        let (before, current) = distance.split_at_mut(i * slab);
        let row = &mut current[..slab];
        if i == 0 {
            for (d, &feature) in row.iter_mut().zip(features) {
                *d = if feature { 0.0 } else { f64::INFINITY };
            }
        } else {
            let previous = &before[(i - 1) * slab..];
            for ((d, &feature), &p) in row.iter_mut().zip(features).zip(previous) {
                *d = if feature { 0.0 } else { p + 1.0 };
            }
        }
    }
    for i in (0..first.saturating_sub(1)).rev() {
        let (current, after) = distance.split_at_mut((i + 1) * slab);
        for (d, &next) in current[i * slab..].iter_mut().zip(&after[..slab]) {
            *d = d.min(next + 1.0);
        }
    }
    let weight = spacing[0] * spacing[0];
    for d in distance.iter_mut() {
        *d = *d * *d * weight;
    }
    // The other axes: the lower envelope of parabolas over the previous result (the last
    // axis's lines are contiguous).
    let longest = rest.iter().copied().max().unwrap_or(0);
    ENVELOPE.with(|envelope| {
        let mut envelope = envelope.borrow_mut();
        envelope.reserve(longest);
        envelope_passes(&mut envelope, distance, dims, spacing);
    });
}

/// The lower-envelope passes along axes 1.. of `distance`.
fn envelope_passes(scratch: &mut Envelope, distance: &mut [f64], dims: &[usize], spacing: &[f64]) {
    for (offset, &length) in dims[1..].iter().enumerate() {
        let axis = offset + 1;
        if length == 0 {
            return;
        }
        // Elements along `axis` are `stride` apart; lines start at every element whose
        // coordinate on `axis` is 0.
        let stride: usize = dims[axis + 1..].iter().product();
        let outer = distance.len() / (length * stride);
        let weight = spacing[axis] * spacing[axis];
        for block in 0..outer {
            for inner in 0..stride {
                let start = block * length * stride + inner;
                scratch.line(distance, start, stride, length, weight);
            }
        }
    }
}

/// The Euclidean distance from each element to its nearest `true` element (see
/// [`squared_distance_to`]).
pub fn distance_to(mask: &[bool], dims: &[usize], spacing: &[f64]) -> Vec<f64> {
    let mut distance = vec![0.0; mask.len()];
    distance_into(mask, dims, spacing, &mut distance);
    distance
}

fn distance_into(mask: &[bool], dims: &[usize], spacing: &[f64], out: &mut [f64]) {
    squared_distance_into(mask, dims, spacing, out);
    for d in out.iter_mut() {
        *d = d.sqrt();
    }
}

/// The signed distance map of `mask` (Kervadec et al.): outside, the distance to the nearest
/// element inside; inside, −(the distance to the nearest element outside − 1); all zero when
/// the mask is empty or full.
pub fn signed_distance_map(mask: &[bool], dims: &[usize], spacing: &[f64]) -> Vec<f64> {
    let mut map = vec![0.0; mask.len()];
    signed_distance_map_into(mask, dims, spacing, &mut map);
    map
}

/// [`signed_distance_map`], written into `out` (of the mask's length).
pub fn signed_distance_map_into(mask: &[bool], dims: &[usize], spacing: &[f64], out: &mut [f64]) {
    both_sides(
        mask,
        dims,
        spacing,
        out,
        |inside, to_object, to_background| {
            if inside {
                1.0 - to_background
            } else {
                to_object
            }
        },
    );
}

/// MONAI's distance field of `mask` (`HausdorffDTLoss`): each element's distance to the
/// nearest element on the other side of the mask's boundary (inside, to the nearest element
/// outside; outside, to the nearest inside); all zero when the mask is empty or full.
pub fn distance_field(mask: &[bool], dims: &[usize], spacing: &[f64]) -> Vec<f64> {
    let mut field = vec![0.0; mask.len()];
    distance_field_into(mask, dims, spacing, &mut field);
    field
}

/// [`distance_field`], written into `out` (of the mask's length).
pub fn distance_field_into(mask: &[bool], dims: &[usize], spacing: &[f64], out: &mut [f64]) {
    both_sides(
        mask,
        dims,
        spacing,
        out,
        |inside, to_object, to_background| {
            if inside { to_background } else { to_object }
        },
    );
}

/// Writes `combine(inside, distance to the object, distance to the background)` for each
/// element into `out` (only the distance of the element's other side is meaningful), or zeros
/// when the mask is empty or full (it has no boundary).
///
/// Each transform runs on the box where it is needed: the distance to the object on the
/// bounding box of the elements outside it, grown by one element, and the distance to the
/// background on that of the elements inside. That is exact: every element beyond such a box
/// is on the other side, and for any element beyond it, its projection onto the box's border
/// layer is on the other side too and no farther from any element inside the box. For a
/// small object, the transform inside it costs next to nothing.
fn both_sides(
    mask: &[bool],
    dims: &[usize],
    spacing: &[f64],
    out: &mut [f64],
    combine: impl Fn(bool, f64, f64) -> f64,
) {
    let inside = mask.iter().filter(|&&m| m).count();
    if inside == 0 || inside == mask.len() {
        out.fill(0.0);
        return;
    }
    SCRATCH.with(|scratch| {
        let (features, distances) = &mut *scratch.borrow_mut();
        for side in [false, true] {
            // `side`: the elements whose distance to the other side is computed here.
            let region = Region::around(mask, dims, side);
            features.clear();
            region.for_each_row(|full, _, len| {
                features.extend(mask[full..full + len].iter().map(|&m| m != side));
            });
            distances.resize(region.len(), 0.0);
            squared_distance_into(features, &region.dims, spacing, distances);
            region.for_each_row(|full, local, len| {
                let rows = out[full..full + len]
                    .iter_mut()
                    .zip(&mask[full..full + len])
                    .zip(&distances[local..local + len]);
                for ((o, &m), &squared) in rows {
                    if m == side {
                        let distance = squared.sqrt();
                        *o = if side {
                            combine(true, 0.0, distance)
                        } else {
                            combine(false, distance, 0.0)
                        };
                    }
                }
            });
        }
    });
}

/// A box of a row-major array of up to three axes: the bounding box of some elements grown by
/// one element on every side, clipped to the array.
struct Region {
    /// The array's sizes, with leading axes of size 1 up to three.
    full: [usize; 3],
    /// The box's first element on each axis.
    start: [usize; 3],
    /// The box's sizes, as the array's axes are given (one to three).
    dims: Vec<usize>,
    /// The box's sizes with leading 1s, as `full`.
    size: [usize; 3],
}

impl Region {
    /// The box around the elements of `mask` equal to `side` (there is at least one).
    fn around(mask: &[bool], dims: &[usize], side: bool) -> Self {
        let mut full = [1usize; 3];
        full[3 - dims.len()..].copy_from_slice(dims);
        let (mut low, mut high) = ([usize::MAX; 3], [0usize; 3]);
        let mut index = 0;
        for a in 0..full[0] {
            for b in 0..full[1] {
                let row = &mask[index..index + full[2]];
                index += full[2];
                let Some(first) = row.iter().position(|&m| m == side) else {
                    continue;
                };
                let last = row.iter().rposition(|&m| m == side).unwrap_or(first);
                for (axis, at) in [(0, a), (1, b)] {
                    low[axis] = low[axis].min(at);
                    high[axis] = high[axis].max(at);
                }
                low[2] = low[2].min(first);
                high[2] = high[2].max(last);
            }
        }
        let mut start = [0; 3];
        let mut size = [1; 3];
        for axis in 0..3 {
            start[axis] = low[axis].saturating_sub(1);
            let end = (high[axis] + 2).min(full[axis]);
            size[axis] = end - start[axis];
        }
        Region {
            full,
            start,
            dims: size[3 - dims.len()..].to_vec(),
            size,
        }
    }

    fn len(&self) -> usize {
        self.size.iter().product()
    }

    /// Calls `visit(index in the array, index in the box, length)` for every row of the box
    /// (its elements along the last axis), in row-major order.
    fn for_each_row(&self, mut visit: impl FnMut(usize, usize, usize)) {
        let mut local = 0;
        for a in 0..self.size[0] {
            for b in 0..self.size[1] {
                let row = ((self.start[0] + a) * self.full[1] + self.start[1] + b) * self.full[2]
                    + self.start[2];
                visit(row, local, self.size[2]);
                local += self.size[2];
            }
        }
    }
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
    maps_of_indices(target, classes, dims, spacing, signed_distance_map_into)
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
    map: MaskMap,
) -> Vec<f64> {
    let size: usize = dims.iter().product();
    assert!(
        size > 0 && target.len() % size == 0,
        "target and dims differ"
    );
    let samples = target.len() / size;
    let mut maps = vec![0.0; samples * classes * size];
    maps.par_chunks_mut(size).enumerate().for_each_init(
        || Vec::with_capacity(size),
        |mask: &mut Vec<bool>, (map_index, out)| {
            let (sample, class) = (map_index / classes, map_index % classes);
            let image = &target[sample * size..(sample + 1) * size];
            mask.clear();
            mask.extend(image.iter().map(|&t| t == class as i64));
            map(mask, dims, spacing, out);
        },
    );
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
    map: MaskMap,
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
pub fn maps_of_masks(masks: &[bool], dims: &[usize], spacing: &[f64], map: MaskMap) -> Vec<f64> {
    let size: usize = dims.iter().product();
    assert!(size > 0 && masks.len() % size == 0, "masks and dims differ");
    let mut maps = vec![0.0; masks.len()];
    maps.par_chunks_mut(size)
        .zip(masks.par_chunks(size))
        .for_each(|(out, mask)| map(mask, dims, spacing, out));
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
    /// Where each parabola of the envelope starts to be the lowest, as a fraction
    /// `numerators[i] / denominators[i]` (denominators > 0; the first parabola's start is −∞ and
    /// not stored): comparing fractions by cross-multiplication keeps divisions off the
    /// envelope's dependency chain.
    numerators: Vec<f64>,
    denominators: Vec<f64>,
}

impl Envelope {
    fn new(longest: usize) -> Self {
        Self {
            values: vec![0.0; longest],
            roots: vec![0; longest],
            numerators: vec![0.0; longest],
            denominators: vec![0.0; longest],
        }
    }

    /// Room for lines of `longest` elements.
    fn reserve(&mut self, longest: usize) {
        if self.values.len() < longest {
            *self = Self::new(longest);
        }
    }

    /// Replaces the `n` values of `data` at `start`, `start + stride`, … by their 1-D squared
    /// distance transform with squared spacing `weight`. Infinite values root no parabola.
    fn line(&mut self, data: &mut [f64], start: usize, stride: usize, n: usize, weight: f64) {
        for i in 0..n {
            self.values[i] = data[start + i * stride];
        }
        let f = &self.values[..n];
        let (roots, numerators, denominators) = (
            &mut self.roots[..n],
            &mut self.numerators[..n],
            &mut self.denominators[..n],
        );
        let mut count = 0;
        for q in 0..n {
            if !f[q].is_finite() {
                continue;
            }
            // Inside a run of zeros (features), a parabola is never the lowest anywhere that
            // is not itself zero: the run's ends are nearer every other element. Such
            // elements get their zero directly below; skipping them leaves dense masks with
            // a short envelope.
            if f[q] == 0.0 && q > 0 && q + 1 < n && f[q - 1] == 0.0 && f[q + 1] == 0.0 {
                continue;
            }
            let qf = q as f64;
            let height = f[q] + weight * qf * qf;
            while count > 0 {
                let r = roots[count - 1];
                let rf = r as f64;
                // Where the parabola at q starts to be below the one at r.
                let numerator = height - (f[r] + weight * rf * rf);
                let denominator = 2.0 * weight * (qf - rf);
                let last = count - 1;
                if last > 0 && numerator * denominators[last] <= numerators[last] * denominator {
                    // The parabola at r is never the lowest: drop it.
                    count -= 1;
                    continue;
                }
                numerators[count] = numerator;
                denominators[count] = denominator;
                break;
            }
            roots[count] = q;
            count += 1;
        }
        if count == 0 {
            // No feature on this line: the values stay infinite.
            return;
        }
        let mut j = 0;
        for q in 0..n {
            let qf = q as f64;
            while j + 1 < count && numerators[j + 1] < qf * denominators[j + 1] {
                j += 1;
            }
            if f[q] == 0.0 {
                data[start + q * stride] = 0.0;
                continue;
            }
            let offset = qf - roots[j] as f64;
            data[start + q * stride] = weight * offset * offset + f[roots[j]];
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
    fn signed_maps_and_fields_equal_brute_force_for_small_and_large_objects() {
        // Objects of every size (a few elements to most of the array) in 1-D, 2-D and 3-D
        // with uneven spacing: each transform runs on its box only, which must not matter.
        let mut rng = Rng::new(11);
        for (dims, spacing) in [
            (vec![17], vec![1.5]),
            (vec![9, 13], vec![1.0, 0.7]),
            (vec![5, 6, 7], vec![2.0, 1.0, 0.5]),
        ] {
            let len: usize = dims.iter().product();
            for density in [0.02, 0.1, 0.5, 0.9, 0.98] {
                let mask = random_mask(&mut rng, len, density);
                let outside: Vec<bool> = mask.iter().map(|&m| !m).collect();
                let inside_count = mask.iter().filter(|&&m| m).count();
                let (to_object, to_background) = (
                    brute_force(&mask, &dims, &spacing),
                    brute_force(&outside, &dims, &spacing),
                );
                let signed = signed_distance_map(&mask, &dims, &spacing);
                let field = distance_field(&mask, &dims, &spacing);
                for i in 0..len {
                    let (signed_expected, field_expected) =
                        if inside_count == 0 || inside_count == len {
                            (0.0, 0.0)
                        } else if mask[i] {
                            (1.0 - to_background[i].sqrt(), to_background[i].sqrt())
                        } else {
                            (to_object[i].sqrt(), to_object[i].sqrt())
                        };
                    assert!(
                        (signed[i] - signed_expected).abs() < 1e-9
                            && (field[i] - field_expected).abs() < 1e-9,
                        "{dims:?}, density {density}, element {i}: {} / {} vs {signed_expected} / {field_expected}",
                        signed[i],
                        field[i]
                    );
                }
            }
        }
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
