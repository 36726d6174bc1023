//! Training patches of segmentation images: where each patch is cut (uniformly, or around a
//! foreground pixel, as nnU-Net oversamples foreground), and the augmentation applied to it,
//! one geometric map for image and mask (bilinear for the image, nearest for the mask).
//!
//! Every patch is a function of the run's seed, the epoch and the sample's position in the
//! epoch only: a resumed run draws the same patches as an uninterrupted one.

use anyhow::{Result, bail};
use losskit_core::Rng;
use serde::{Deserialize, Serialize};

use super::segmentation::SegImage;

/// How training patches are drawn; recorded in the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchSampling {
    /// Patch height and width (multiples of the U-Net's downsampling factor).
    pub size: [usize; 2],
    /// Patches per epoch.
    pub per_epoch: usize,
    /// The fraction of patches centred near a pixel of a foreground class (nnU-Net: 1/3).
    pub foreground: f64,
    /// Pad an image smaller than a patch (image with 0, mask with background); when off, such
    /// an image is an error.
    pub pad: bool,
}

/// Random changes to each training patch; recorded in the run. Probabilities are per patch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Mirror along each axis with probability 1/2.
    pub flip: bool,
    /// Rotate by a random multiple of 90° (square patches).
    pub rotate90: bool,
    /// Probability of a rotation by a random angle in ±`rotation_degrees`.
    pub rotation_probability: f64,
    /// The largest angle of that rotation.
    pub rotation_degrees: f64,
    /// Probability of a zoom by a random factor in `scale`.
    pub scale_probability: f64,
    /// The zoom range (above 1: the patch shows a larger area, shrunk).
    pub scale: [f64; 2],
    /// Probability of multiplying the patch's intensities by a factor in `brightness`.
    pub brightness_probability: f64,
    /// The brightness factor's range.
    pub brightness: [f64; 2],
    /// Probability of scaling the patch's contrast around its mean by a factor in `contrast`.
    pub contrast_probability: f64,
    /// The contrast factor's range.
    pub contrast: [f64; 2],
    /// Probability of adding Gaussian noise with a standard deviation up to `noise_sigma`.
    pub noise_probability: f64,
    /// The largest noise standard deviation (normalised intensity units).
    pub noise_sigma: f64,
}

impl Default for Augmentation {
    /// nnU-Net's 2-D defaults, scaled down where a small model on a CPU learns better from
    /// milder changes: mirroring, 90° rotations, rotation ±15° and zoom 0.85–1.25 each on a
    /// fifth of the patches, brightness and contrast 0.75–1.25 on 15 %, noise on 10 %.
    fn default() -> Self {
        Self {
            flip: true,
            rotate90: true,
            rotation_probability: 0.2,
            rotation_degrees: 15.0,
            scale_probability: 0.2,
            scale: [0.85, 1.25],
            brightness_probability: 0.15,
            brightness: [0.75, 1.25],
            contrast_probability: 0.15,
            contrast: [0.75, 1.25],
            noise_probability: 0.1,
            noise_sigma: 0.1,
        }
    }
}

impl Augmentation {
    /// No augmentation.
    pub fn none() -> Self {
        Self {
            flip: false,
            rotate90: false,
            rotation_probability: 0.0,
            scale_probability: 0.0,
            brightness_probability: 0.0,
            contrast_probability: 0.0,
            noise_probability: 0.0,
            ..Self::default()
        }
    }

    /// Whether it changes anything.
    pub fn is_none(&self) -> bool {
        !self.flip
            && !self.rotate90
            && self.rotation_probability == 0.0
            && self.scale_probability == 0.0
            && self.brightness_probability == 0.0
            && self.contrast_probability == 0.0
            && self.noise_probability == 0.0
    }

    /// Checks probabilities are in [0, 1] and ranges are ordered and positive.
    pub fn check(&self) -> Result<()> {
        for (name, p) in [
            ("rotation_probability", self.rotation_probability),
            ("scale_probability", self.scale_probability),
            ("brightness_probability", self.brightness_probability),
            ("contrast_probability", self.contrast_probability),
            ("noise_probability", self.noise_probability),
        ] {
            if !(0.0..=1.0).contains(&p) {
                bail!("augmentation: {name} must be in [0, 1] (got {p})");
            }
        }
        for (name, [low, high]) in [
            ("scale", self.scale),
            ("brightness", self.brightness),
            ("contrast", self.contrast),
        ] {
            if !(low > 0.0 && low <= high && high <= 100.0) {
                bail!(
                    "augmentation: {name} must be [LOW, HIGH] with 0 < LOW <= HIGH <= 100 (got [{low}, {high}])"
                );
            }
        }
        if !(0.0..=180.0).contains(&self.rotation_degrees)
            || !(0.0..=10.0).contains(&self.noise_sigma)
        {
            bail!("augmentation: rotation_degrees must be in [0, 180] and noise_sigma in [0, 10]");
        }
        Ok(())
    }
}

/// One training patch: `[C, H, W]` pixels and `[H, W]` class indices.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    /// Normalised pixel values.
    pub pixels: Vec<f32>,
    /// Class indices.
    pub labels: Vec<i64>,
    /// For each patch pixel, the image pixel (row-major index) its label comes from; for a
    /// pixel beyond the image (padding, a rotated corner), the nearest image pixel. Maps
    /// computed on the whole image are cut along with the patch through it.
    pub sources: Vec<u32>,
    /// The length of a patch pixel in image pixels (the zoom; 1 without resampling):
    /// distances measured on the image divide by it.
    pub scale: f64,
}

impl Patch {
    /// Cuts `[K, H·W]` maps of the whole image (`K` maps of the image's size, one after the
    /// other) along with the patch: `[K, ph·pw]`, with distances in patch pixels.
    pub fn cut_maps(&self, maps: &[f64], image_size: usize) -> Vec<f32> {
        maps.chunks(image_size)
            .flat_map(|map| {
                self.sources
                    .iter()
                    .map(move |&source| (map[source as usize] / self.scale) as f32)
            })
            .collect()
    }
}

/// The row-major index of the image pixel nearest to `(y, x)` (clamped into the image).
fn nearest_source(y: isize, x: isize, h: usize, w: usize) -> u32 {
    let y = y.clamp(0, h as isize - 1) as usize;
    let x = x.clamp(0, w as isize - 1) as usize;
    (y * w + x) as u32
}

/// The generator of the patch at `position` of `epoch`.
pub fn patch_rng(seed: u64, epoch: usize, position: usize) -> Rng {
    let key = (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (position as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    Rng::stream(seed ^ key, "patch")
}

/// Cuts one augmented patch of `sampling.size` out of `image`.
pub fn sample_patch(
    image: &SegImage,
    sampling: &PatchSampling,
    augmentation: &Augmentation,
    rng: &mut Rng,
) -> Patch {
    let [ph, pw] = sampling.size;
    let (h, w) = (image.height, image.width);
    // The patch's top-left corner in the image (negative or beyond: padding).
    let place = |len: usize, patch: usize, centre: Option<usize>, rng: &mut Rng| -> isize {
        if len < patch {
            return -(((patch - len) / 2) as isize);
        }
        let last = (len - patch) as isize;
        match centre {
            // The foreground pixel anywhere in the patch's middle half, so it is not always
            // at the centre.
            Some(c) => {
                let jitter = rng.range(-0.25, 0.25) * patch as f64;
                let start = c as f64 - patch as f64 / 2.0 + jitter;
                (start.round() as isize).clamp(0, last)
            }
            None => rng.below(last as usize + 1) as isize,
        }
    };
    let classes_present: Vec<&Vec<u32>> =
        image.foreground.iter().filter(|p| !p.is_empty()).collect();
    let forced = rng.uniform() < sampling.foreground && !classes_present.is_empty();
    let centre = forced.then(|| {
        let pixels = classes_present[rng.below(classes_present.len())];
        let at = pixels[rng.below(pixels.len())] as usize;
        (at / w, at % w)
    });
    let top = place(h, ph, centre.map(|c| c.0), rng);
    let left = place(w, pw, centre.map(|c| c.1), rng);
    let map = draw_map(augmentation, ph == pw, rng);
    let mut patch = if map.is_grid() {
        cut_exact(image, [ph, pw], top, left, &map)
    } else {
        cut_resampled(image, [ph, pw], top, left, &map)
    };
    adjust_intensity(&mut patch.pixels, augmentation, rng);
    patch
}

/// Where a patch pixel's value comes from: source = centre + `matrix` · (offset from the
/// patch centre).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Map {
    matrix: [[f64; 2]; 2],
}

impl Map {
    /// A map onto the pixel grid (mirroring and 90° turns only): no resampling is needed.
    fn is_grid(&self) -> bool {
        self.matrix
            .iter()
            .flatten()
            .all(|&v| v == 0.0 || v == 1.0 || v == -1.0)
    }
}

fn draw_map(augmentation: &Augmentation, square: bool, rng: &mut Rng) -> Map {
    let mut m = [[1.0, 0.0], [0.0, 1.0]];
    let multiply = |a: [[f64; 2]; 2], b: [[f64; 2]; 2]| {
        [
            [
                a[0][0] * b[0][0] + a[0][1] * b[1][0],
                a[0][0] * b[0][1] + a[0][1] * b[1][1],
            ],
            [
                a[1][0] * b[0][0] + a[1][1] * b[1][0],
                a[1][0] * b[0][1] + a[1][1] * b[1][1],
            ],
        ]
    };
    if augmentation.flip {
        if rng.uniform() < 0.5 {
            m = multiply(m, [[-1.0, 0.0], [0.0, 1.0]]);
        }
        if rng.uniform() < 0.5 {
            m = multiply(m, [[1.0, 0.0], [0.0, -1.0]]);
        }
    }
    if augmentation.rotate90 && square {
        for _ in 0..rng.below(4) {
            m = multiply(m, [[0.0, -1.0], [1.0, 0.0]]);
        }
    }
    if rng.uniform() < augmentation.rotation_probability {
        let angle = rng
            .range(
                -augmentation.rotation_degrees,
                augmentation.rotation_degrees,
            )
            .to_radians();
        let (s, c) = angle.sin_cos();
        m = multiply([[c, -s], [s, c]], m);
    }
    if rng.uniform() < augmentation.scale_probability {
        let [low, high] = augmentation.scale;
        let zoom = rng.range(low, high);
        m = multiply([[zoom, 0.0], [0.0, zoom]], m);
    }
    Map { matrix: m }
}

/// The patch by index arithmetic (mirroring and 90° turns of an unscaled cut).
fn cut_exact(image: &SegImage, [ph, pw]: [usize; 2], top: isize, left: isize, map: &Map) -> Patch {
    let (h, w, channels) = (image.height, image.width, image.channels);
    let plane = h * w;
    let mut pixels = vec![0.0; channels * ph * pw];
    let mut labels = vec![0; ph * pw];
    let mut sources = vec![0; ph * pw];
    let m = map.matrix;
    // Offsets in doubled units keep the centre of an even-sized patch on integers.
    for u in 0..ph {
        for v in 0..pw {
            let du = 2 * u as isize + 1 - ph as isize;
            let dv = 2 * v as isize + 1 - pw as isize;
            let su = (m[0][0] as isize * du + m[0][1] as isize * dv + ph as isize - 1) / 2;
            let sv = (m[1][0] as isize * du + m[1][1] as isize * dv + pw as isize - 1) / 2;
            let (y, x) = (top + su, left + sv);
            sources[u * pw + v] = nearest_source(y, x, h, w);
            if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                continue;
            }
            let source = y as usize * w + x as usize;
            labels[u * pw + v] = i64::from(image.labels[source]);
            for c in 0..channels {
                pixels[c * ph * pw + u * pw + v] = image.pixels[c * plane + source];
            }
        }
    }
    Patch {
        pixels,
        labels,
        sources,
        scale: 1.0,
    }
}

/// The patch by resampling (rotation or zoom): bilinear for the image, nearest for the mask,
/// 0 and background outside the image.
fn cut_resampled(
    image: &SegImage,
    [ph, pw]: [usize; 2],
    top: isize,
    left: isize,
    map: &Map,
) -> Patch {
    let (h, w, channels) = (image.height, image.width, image.channels);
    let plane = h * w;
    let mut pixels = vec![0.0; channels * ph * pw];
    let mut labels = vec![0; ph * pw];
    let mut sources = vec![0; ph * pw];
    let m = map.matrix;
    let (cy, cx) = (top as f64 + ph as f64 / 2.0, left as f64 + pw as f64 / 2.0);
    for u in 0..ph {
        for v in 0..pw {
            let du = u as f64 + 0.5 - ph as f64 / 2.0;
            let dv = v as f64 + 0.5 - pw as f64 / 2.0;
            // Continuous coordinates: pixel (i, j) covers [i, i + 1) × [j, j + 1).
            let sy = cy + m[0][0] * du + m[0][1] * dv;
            let sx = cx + m[1][0] * du + m[1][1] * dv;
            let (ny, nx) = (sy.floor(), sx.floor());
            sources[u * pw + v] = nearest_source(ny as isize, nx as isize, h, w);
            if ny >= 0.0 && nx >= 0.0 && ny < h as f64 && nx < w as f64 {
                labels[u * pw + v] = i64::from(image.labels[ny as usize * w + nx as usize]);
            }
            let (fy, fx) = (sy - 0.5, sx - 0.5);
            let (y0, x0) = (fy.floor(), fx.floor());
            let (ty, tx) = ((fy - y0) as f32, (fx - x0) as f32);
            let at = |y: f64, x: f64, c: usize| -> f32 {
                if y < 0.0 || x < 0.0 || y >= h as f64 || x >= w as f64 {
                    0.0
                } else {
                    image.pixels[c * plane + y as usize * w + x as usize]
                }
            };
            for c in 0..channels {
                let top_row = at(y0, x0, c) * (1.0 - tx) + at(y0, x0 + 1.0, c) * tx;
                let bottom_row = at(y0 + 1.0, x0, c) * (1.0 - tx) + at(y0 + 1.0, x0 + 1.0, c) * tx;
                pixels[c * ph * pw + u * pw + v] = top_row * (1.0 - ty) + bottom_row * ty;
            }
        }
    }
    // Both columns of the map have the zoom as their length (rotations and mirrors keep it).
    let scale = (m[0][0] * m[1][1] - m[0][1] * m[1][0]).abs().sqrt();
    Patch {
        pixels,
        labels,
        sources,
        scale,
    }
}

fn adjust_intensity(pixels: &mut [f32], augmentation: &Augmentation, rng: &mut Rng) {
    if rng.uniform() < augmentation.brightness_probability {
        let [low, high] = augmentation.brightness;
        let factor = rng.range(low, high) as f32;
        pixels.iter_mut().for_each(|p| *p *= factor);
    }
    if rng.uniform() < augmentation.contrast_probability && !pixels.is_empty() {
        let [low, high] = augmentation.contrast;
        let factor = rng.range(low, high) as f32;
        let mean = pixels.iter().sum::<f32>() / pixels.len() as f32;
        pixels
            .iter_mut()
            .for_each(|p| *p = (*p - mean) * factor + mean);
    }
    if rng.uniform() < augmentation.noise_probability {
        let sigma = rng.range(0.0, augmentation.noise_sigma);
        pixels
            .iter_mut()
            .for_each(|p| *p += (rng.normal() * sigma) as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: usize, w: usize) -> SegImage {
        let pixels = (0..h * w).map(|i| i as f32).collect();
        let labels = (0..h * w).map(|i| u8::from(i % w >= w / 2)).collect();
        SegImage::new(1, h, w, pixels, labels, 2)
    }

    fn sampling(size: usize, foreground: f64) -> PatchSampling {
        PatchSampling {
            size: [size, size],
            per_epoch: 1,
            foreground,
            pad: true,
        }
    }

    #[test]
    fn a_patch_without_augmentation_is_a_crop_of_image_and_mask() {
        let image = ramp(20, 30);
        for position in 0..20 {
            let patch = sample_patch(
                &image,
                &sampling(8, 0.0),
                &Augmentation::none(),
                &mut patch_rng(1, 1, position),
            );
            let (top, left) = (
                (patch.pixels[0] as usize) / 30,
                (patch.pixels[0] as usize) % 30,
            );
            for u in 0..8 {
                for v in 0..8 {
                    let source = (top + u) * 30 + left + v;
                    assert_eq!(patch.pixels[u * 8 + v], source as f32);
                    assert_eq!(patch.labels[u * 8 + v], i64::from(image.labels[source]));
                }
            }
        }
    }

    #[test]
    fn sources_name_the_pixel_each_label_came_from_and_scale_is_the_zoom() {
        let image = ramp(40, 40);
        let zoomed = Augmentation {
            rotation_probability: 1.0,
            scale_probability: 1.0,
            scale: [1.5, 1.5],
            ..Augmentation::none()
        };
        for (augmentation, scale) in [(Augmentation::none(), 1.0), (zoomed, 1.5)] {
            for position in 0..10 {
                let patch = sample_patch(
                    &image,
                    &sampling(16, 0.5),
                    &augmentation,
                    &mut patch_rng(3, 1, position),
                );
                assert!((patch.scale - scale).abs() < 1e-9, "{}", patch.scale);
                for (label, &source) in patch.labels.iter().zip(&patch.sources) {
                    if *label == 1 {
                        assert_eq!(image.labels[source as usize], 1);
                    }
                }
                // A map of each pixel's column, cut with the patch: distances shrink by the zoom.
                let columns: Vec<f64> = (0..40 * 40).map(|i| (i % 40) as f64).collect();
                let cut = patch.cut_maps(&columns, 40 * 40);
                for (value, &source) in cut.iter().zip(&patch.sources) {
                    let expected = (source % 40) as f64 / scale;
                    assert!((f64::from(*value) - expected).abs() < 1e-4);
                }
            }
        }
    }

    #[test]
    fn image_and_mask_get_the_same_geometry() {
        // Each pixel's label is a function of its value, so any geometric map keeps the pair
        // consistent exactly when both moved alike.
        let h = 24;
        let pixels: Vec<f32> = (0..h * h).map(|i| (i % 7) as f32).collect();
        let labels: Vec<u8> = (0..h * h).map(|i| u8::from(i % 7 >= 4)).collect();
        let image = SegImage::new(1, h, h, pixels, labels, 2);
        let turns = Augmentation {
            rotate90: true,
            ..Augmentation::none()
        };
        let flips = Augmentation {
            flip: true,
            ..Augmentation::none()
        };
        for augmentation in [flips, turns] {
            for position in 0..50 {
                let patch = sample_patch(
                    &image,
                    &sampling(16, 0.5),
                    &augmentation,
                    &mut patch_rng(7, 2, position),
                );
                for (p, l) in patch.pixels.iter().zip(&patch.labels) {
                    assert_eq!(*l, i64::from(*p >= 4.0));
                }
            }
        }
    }

    #[test]
    fn rotations_resample_the_image_and_keep_mask_values_exact() {
        let image = ramp(40, 40);
        let augmentation = Augmentation {
            rotation_probability: 1.0,
            scale_probability: 1.0,
            ..Augmentation::none()
        };
        let patch = sample_patch(
            &image,
            &sampling(16, 0.0),
            &augmentation,
            &mut patch_rng(3, 1, 0),
        );
        assert!(patch.labels.iter().all(|&l| l == 0 || l == 1));
        assert!(
            patch.pixels.iter().any(|p| p.fract() != 0.0),
            "bilinear values between pixels"
        );
    }

    #[test]
    fn foreground_oversampling_finds_rare_foreground() {
        let (h, w) = (64, 64);
        let mut labels = vec![0u8; h * w];
        labels[60 * w + 3] = 1;
        let image = SegImage::new(1, h, w, vec![0.0; h * w], labels, 2);
        let hits = |foreground: f64| {
            (0..300)
                .filter(|&p| {
                    let patch = sample_patch(
                        &image,
                        &sampling(16, foreground),
                        &Augmentation::none(),
                        &mut patch_rng(5, 1, p),
                    );
                    patch.labels.contains(&1)
                })
                .count()
        };
        assert_eq!(hits(1.0), 300);
        assert!(hits(0.0) < 30, "uniform patches rarely hold one pixel");
    }

    #[test]
    fn small_images_are_padded_with_zero_and_background() {
        let image = SegImage::new(1, 4, 4, vec![1.0; 16], vec![1; 16], 2);
        let patch = sample_patch(
            &image,
            &sampling(8, 0.0),
            &Augmentation::none(),
            &mut patch_rng(1, 1, 0),
        );
        assert_eq!(patch.pixels.iter().filter(|&&p| p == 1.0).count(), 16);
        assert_eq!(patch.labels.iter().filter(|&&l| l == 1).count(), 16);
    }

    #[test]
    fn one_seed_epoch_and_position_give_one_patch() {
        let image = ramp(50, 50);
        let draw = |seed, epoch, position| {
            sample_patch(
                &image,
                &sampling(16, 0.3),
                &Augmentation::default(),
                &mut patch_rng(seed, epoch, position),
            )
        };
        assert_eq!(draw(1, 2, 3), draw(1, 2, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 3, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 2, 4));
    }
}
