//! Per-image intensity normalisation, as StarDist and nnU-Net do it: each image is scaled by
//! its own statistics, so stains, exposures and bit depths that differ from image to image
//! reach the model on one scale.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// How an image's pixel values are scaled before training and inference; recorded in the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Normalization {
    /// `(x − p_low) / (p_high − p_low)`, the percentiles taken over all of the image's pixels
    /// and channels together (StarDist's `normalize(x, 1, 99.8)`): robust to a few saturated
    /// or dead pixels, and keeps the balance between colour channels.
    Percentile {
        /// The lower percentile, in [0, 100).
        low: f64,
        /// The upper percentile, in (low, 100].
        high: f64,
    },
    /// `(x − mean) / std` over all of the image's pixels and channels (nnU-Net's scheme for
    /// images other than CT).
    ZScore,
    /// Pixel values in [0, 1] (8-bit values / 255, 16-bit / 65535), shifted by −0.5: no
    /// per-image statistics (the generated data's scheme).
    None,
}

impl Default for Normalization {
    fn default() -> Self {
        Self::Percentile {
            low: 1.0,
            high: 99.8,
        }
    }
}

impl Normalization {
    /// Parses `percentile` (1 and 99.8), `percentile:LOW,HIGH`, `zscore` or `none`.
    pub fn parse(text: &str) -> Result<Self> {
        let parsed = match text.trim() {
            "percentile" => Self::default(),
            "zscore" | "z-score" | "z_score" => Self::ZScore,
            "none" => Self::None,
            other => {
                let Some(bounds) = other.strip_prefix("percentile:") else {
                    bail!(
                        "--normalize `{text}`: expected percentile, percentile:LOW,HIGH (e.g. percentile:1,99.8), zscore or none"
                    );
                };
                let numbers: Vec<f64> = bounds
                    .split(',')
                    .map(|n| n.trim().parse::<f64>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "--normalize `{text}`: LOW and HIGH must be numbers, e.g. percentile:1,99.8"
                        )
                    })?;
                let [low, high] = numbers[..] else {
                    bail!("--normalize `{text}`: expected two percentiles, e.g. percentile:1,99.8");
                };
                Self::Percentile { low, high }
            }
        };
        parsed.check()?;
        Ok(parsed)
    }

    /// Checks the percentiles are ordered and within [0, 100].
    pub fn check(&self) -> Result<()> {
        if let Self::Percentile { low, high } = *self
            && !(0.0 <= low && low < high && high <= 100.0)
        {
            bail!(
                "--normalize: percentiles must satisfy 0 <= LOW < HIGH <= 100 (got {low}, {high})"
            );
        }
        Ok(())
    }

    /// Normalises `pixels` (one image, all channels, values in [0, 1]) in place.
    pub fn apply(&self, pixels: &mut [f32]) {
        if pixels.is_empty() {
            return;
        }
        let (offset, scale) = match *self {
            Self::None => (0.5, 1.0),
            Self::ZScore => {
                let n = pixels.len() as f64;
                let mean = pixels.iter().map(|&p| f64::from(p)).sum::<f64>() / n;
                let var = pixels
                    .iter()
                    .map(|&p| (f64::from(p) - mean).powi(2))
                    .sum::<f64>()
                    / n;
                (mean, var.sqrt())
            }
            Self::Percentile { low, high } => {
                let mut sorted: Vec<f32> = pixels.to_vec();
                let lo = percentile(&mut sorted, low);
                let hi = percentile(&mut sorted, high);
                (lo, hi - lo)
            }
        };
        // A constant image has no spread to divide by: it becomes all zeros.
        let inverse = if scale > 1e-12 { 1.0 / scale } else { 0.0 };
        for p in pixels.iter_mut() {
            *p = ((f64::from(*p) - offset) * inverse) as f32;
        }
    }
}

/// The `q`-th percentile (0–100) of `values`, linearly interpolated between the two nearest
/// ranks (NumPy's default); reorders `values`.
fn percentile(values: &mut [f32], q: f64) -> f64 {
    let rank = q / 100.0 * (values.len() - 1) as f64;
    let below = rank.floor() as usize;
    let fraction = rank - below as f64;
    let (_, &mut at, above) = values.select_nth_unstable_by(below, f32::total_cmp);
    let at = f64::from(at);
    if fraction == 0.0 || above.is_empty() {
        return at;
    }
    let next = above.iter().copied().fold(f32::INFINITY, f32::min);
    at + fraction * (f64::from(next) - at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy() {
        // numpy.percentile(np.arange(11.0), [1, 99.8, 50]) = [0.1, 9.98, 5.0]
        let mut values: Vec<f32> = (0..11).rev().map(|v| v as f32).collect();
        assert!((percentile(&mut values, 1.0) - 0.1).abs() < 1e-6);
        assert!((percentile(&mut values, 99.8) - 9.98).abs() < 1e-5);
        assert!((percentile(&mut values, 50.0) - 5.0).abs() < 1e-6);
        assert_eq!(percentile(&mut values, 100.0), 10.0);
    }

    #[test]
    fn percentile_normalisation_maps_the_bounds_to_zero_and_one() {
        let mut pixels: Vec<f32> = (0..1000).map(|v| v as f32 / 999.0 * 0.2 + 0.1).collect();
        Normalization::Percentile {
            low: 0.0,
            high: 100.0,
        }
        .apply(&mut pixels);
        assert!(pixels[0].abs() < 1e-6 && (pixels[999] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn zscore_gives_zero_mean_unit_variance_and_constant_images_become_zero() {
        let mut pixels: Vec<f32> = (0..100).map(|v| (v as f32).sin()).collect();
        Normalization::ZScore.apply(&mut pixels);
        let mean = pixels.iter().sum::<f32>() / 100.0;
        let var = pixels.iter().map(|p| (p - mean).powi(2)).sum::<f32>() / 100.0;
        assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4);
        let mut flat = vec![0.3_f32; 16];
        Normalization::default().apply(&mut flat);
        assert!(flat.iter().all(|&p| p == 0.0));
    }

    #[test]
    fn parse_names_and_bounds() {
        assert_eq!(
            Normalization::parse("zscore").unwrap(),
            Normalization::ZScore
        );
        assert_eq!(
            Normalization::parse("percentile:2,98").unwrap(),
            Normalization::Percentile {
                low: 2.0,
                high: 98.0
            }
        );
        for bad in [
            "percentile:98,2",
            "percentile:1",
            "minmax",
            "percentile:a,b",
        ] {
            assert!(Normalization::parse(bad).is_err(), "{bad}");
        }
    }
}
