//! Sliding-window inference at full resolution, after MONAI's `sliding_window_inference`:
//! overlapping windows of the training patch size, run in batches, blended with a Gaussian
//! importance map so that each pixel is decided mostly by windows that see it near their
//! centre.

use burn::tensor::{Device, Tensor, TensorData};
use losskit_core::input::to_f64_vec;
use serde::{Deserialize, Serialize};

/// How a whole image is covered by windows; recorded in the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SlidingWindow {
    /// Window height and width (the training patch size).
    pub size: [usize; 2],
    /// The fraction by which neighbouring windows overlap, in [0, 1) (MONAI: 0.25; nnU-Net
    /// 0.5).
    pub overlap: f64,
    /// Windows per forward pass.
    pub batch: usize,
    /// The Gaussian's standard deviation as a fraction of the window size (MONAI: 0.125).
    pub sigma_scale: f64,
}

impl SlidingWindow {
    /// Windows of `size`, overlapping by half, `batch` per pass, σ = size / 8.
    pub fn new(size: [usize; 2], batch: usize) -> Self {
        Self {
            size,
            overlap: 0.5,
            batch: batch.max(1),
            sigma_scale: 0.125,
        }
    }

    /// The window starts along one axis of length `len` (MONAI's scan interval: windows
    /// `size × (1 − overlap)` apart, the last one flush with the end).
    fn starts(&self, len: usize, size: usize) -> Vec<usize> {
        if len <= size {
            return vec![0];
        }
        let interval = ((size as f64 * (1.0 - self.overlap)) as usize).max(1);
        let count = (len - size).div_ceil(interval) + 1;
        (0..count).map(|i| (i * interval).min(len - size)).collect()
    }

    /// The importance of each window pixel: a Gaussian with its peak (1) at the centre,
    /// floored at its smallest positive value as MONAI does, so no pixel has zero weight.
    fn importance(&self) -> Vec<f32> {
        let [h, w] = self.size;
        let axis = |len: usize| -> Vec<f64> {
            let sigma = (len as f64 * self.sigma_scale).max(1e-6);
            let centre = (len as f64 - 1.0) / 2.0;
            (0..len)
                .map(|i| (-0.5 * ((i as f64 - centre) / sigma).powi(2)).exp())
                .collect()
        };
        let (gy, gx) = (axis(h), axis(w));
        let mut map: Vec<f64> = gy
            .iter()
            .flat_map(|y| gx.iter().map(move |x| y * x))
            .collect();
        let floor = map
            .iter()
            .copied()
            .filter(|&v| v > 0.0)
            .fold(f64::INFINITY, f64::min);
        map.iter_mut().for_each(|v| *v = v.max(floor));
        map.into_iter().map(|v| v as f32).collect()
    }

    /// The model's blended output `[1, classes, H, W]` for one image `[C, H, W]` (`pixels`).
    /// An image smaller than a window is padded with 0 and the padding cut off again; an
    /// image that is exactly one window is a single forward pass.
    pub fn run(
        &self,
        forward: impl Fn(Tensor<4>) -> Tensor<4>,
        pixels: &[f32],
        [channels, height, width]: [usize; 3],
        classes: usize,
        device: &Device,
    ) -> Tensor<4> {
        let [wh, ww] = self.size;
        if (height, width) == (wh, ww) {
            let image = Tensor::<4>::from_data(
                TensorData::new(pixels.to_vec(), [1, channels, height, width]),
                device,
            );
            return forward(image);
        }
        // The padded canvas: at least one window in each direction.
        let (ch, cw) = (height.max(wh), width.max(ww));
        let window_at = |top: usize, left: usize, out: &mut Vec<f32>| {
            for c in 0..channels {
                for y in top..top + wh {
                    for x in left..left + ww {
                        out.push(if y < height && x < width {
                            pixels[c * height * width + y * width + x]
                        } else {
                            0.0
                        });
                    }
                }
            }
        };
        let positions: Vec<(usize, usize)> = self
            .starts(ch, wh)
            .into_iter()
            .flat_map(|top| self.starts(cw, ww).into_iter().map(move |left| (top, left)))
            .collect();
        let importance = self.importance();
        let mut sum = vec![0.0_f32; classes * ch * cw];
        let mut weight = vec![0.0_f32; ch * cw];
        for group in positions.chunks(self.batch) {
            let mut batch = Vec::with_capacity(group.len() * channels * wh * ww);
            for &(top, left) in group {
                window_at(top, left, &mut batch);
            }
            let input = Tensor::<4>::from_data(
                TensorData::new(batch, [group.len(), channels, wh, ww]),
                device,
            );
            let output = to_f64_vec(forward(input));
            for (k, &(top, left)) in group.iter().enumerate() {
                for y in 0..wh {
                    for x in 0..ww {
                        let g = importance[y * ww + x];
                        let at = (top + y) * cw + left + x;
                        weight[at] += g;
                        for class in 0..classes {
                            let value = output[((k * classes + class) * wh + y) * ww + x] as f32;
                            sum[class * ch * cw + at] += value * g;
                        }
                    }
                }
            }
        }
        let mut blended = Vec::with_capacity(classes * height * width);
        for class in 0..classes {
            for y in 0..height {
                for x in 0..width {
                    let at = y * cw + x;
                    blended.push(sum[class * ch * cw + at] / weight[at]);
                }
            }
        }
        Tensor::<4>::from_data(
            TensorData::new(blended, [1, classes, height, width]),
            device,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_every_pixel_and_end_flush() {
        let window = SlidingWindow::new([64, 64], 4);
        assert_eq!(window.starts(64, 64), [0]);
        assert_eq!(window.starts(100, 64), [0, 32, 36]);
        assert_eq!(window.starts(10, 64), [0]);
        let starts = window.starts(1000, 64);
        assert_eq!(*starts.last().unwrap(), 1000 - 64);
        assert!(starts.windows(2).all(|p| p[1] - p[0] <= 32));
    }

    #[test]
    fn the_importance_map_peaks_at_the_centre_and_is_never_zero() {
        let map = SlidingWindow::new([16, 16], 1).importance();
        let max = map.iter().copied().fold(0.0, f32::max);
        assert!((max - map[7 * 16 + 7]).abs() < 1e-6);
        assert!(map.iter().all(|&v| v > 0.0));
        assert!(map[0] < map[7 * 16 + 7] / 100.0);
    }

    #[test]
    fn a_position_independent_model_gives_its_own_output_at_any_image_size() {
        // A per-pixel model (the identity, doubled) must be reproduced exactly by any window
        // layout, whatever the padding and blending.
        let device = losskit_core::devices::parse_device("cpu").unwrap();
        for (h, w) in [(16, 16), (37, 23), (5, 9), (64, 100)] {
            let pixels: Vec<f32> = (0..h * w).map(|i| (i % 13) as f32 - 6.0).collect();
            let window = SlidingWindow::new([16, 16], 3);
            let out = window.run(
                |x| Tensor::cat(vec![x.clone(), x.mul_scalar(2.0)], 1),
                &pixels,
                [1, h, w],
                2,
                &device,
            );
            assert_eq!(out.dims(), [1, 2, h, w]);
            let values = to_f64_vec(out);
            for i in 0..h * w {
                assert!(
                    (values[i] - f64::from(pixels[i])).abs() < 1e-5,
                    "{h}x{w} pixel {i}"
                );
                assert!((values[h * w + i] - 2.0 * f64::from(pixels[i])).abs() < 1e-5);
            }
        }
    }
}
