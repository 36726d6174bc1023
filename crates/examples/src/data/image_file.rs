//! Reading image files for the folder loaders: decoding with size limits, and resizing right
//! after decoding so that no full-size image stays in memory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::models::{CNN_SIZE, MIN_CNN_SIZE};

/// The largest image side read from a folder (larger images are refused, not decoded).
pub const MAX_IMAGE_SIDE: u32 = 8192;

/// Whether `path` names an image losskit reads (PNG, JPEG, TIFF), by its extension.
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| matches!(e.as_str(), "png" | "jpg" | "jpeg" | "tif" | "tiff"))
}

/// The entries of `dir`, sorted by path.
pub fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read folder {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

fn reader(path: &Path) -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>> {
    let mut reader = image::ImageReader::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?;
    // A decompression bomb (a small file declaring a huge image) is refused before decoding.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    Ok(reader)
}

pub(super) fn open_image(path: &Path) -> Result<image::DynamicImage> {
    reader(path)?
        .decode()
        .map_err(|error| anyhow::anyhow!("cannot decode image {}: {error}", path.display()))
}

/// An image's (width, height) and whether it has colour, from its header only.
pub(super) fn image_header(path: &Path) -> Result<(u32, u32, bool)> {
    use image::ImageDecoder as _;
    let decoder = reader(path)?
        .into_decoder()
        .map_err(|error| anyhow::anyhow!("cannot decode image {}: {error}", path.display()))?;
    let (width, height) = decoder.dimensions();
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        anyhow::bail!(
            "cannot decode image {}: {width}x{height} is larger than the limit of {MAX_IMAGE_SIDE} pixels a side",
            path.display()
        );
    }
    Ok((width, height, decoder.color_type().has_color()))
}

/// The central square of `image` (its shorter side), resized to `size` × `size`: the aspect
/// ratio is kept and the longer side's ends are cut, as torchvision's `Resize` then
/// `CenterCrop` do.
fn resized_pixels(image: &image::DynamicImage, channels: usize, size: usize) -> Vec<f32> {
    let filter = image::imageops::FilterType::Triangle;
    let side = image.width().min(image.height());
    let image = &image.crop_imm(
        (image.width() - side) / 2,
        (image.height() - side) / 2,
        side,
        side,
    );
    let s = size as u32;
    let mut out = Vec::with_capacity(channels * size * size);
    if channels == 1 {
        let gray = image::imageops::resize(&image.to_luma8(), s, s, filter);
        out.extend(gray.pixels().map(|p| p.0[0] as f32 / 255.0));
    } else {
        let rgb = image::imageops::resize(&image.to_rgb8(), s, s, filter);
        for c in 0..3 {
            out.extend(rgb.pixels().map(|p| p.0[c] as f32 / 255.0));
        }
    }
    out
}

/// An image resized right after decoding: its gray pixels, and its colour pixels when it has
/// colour (a gray image's colour pixels are its gray ones, repeated per channel).
pub(super) struct Small {
    gray: Vec<f32>,
    pub(super) rgb: Option<Vec<f32>>,
}

impl Small {
    pub(super) fn new(image: &image::DynamicImage, size: usize) -> Self {
        Self {
            gray: resized_pixels(image, 1, size),
            rgb: image
                .color()
                .has_color()
                .then(|| resized_pixels(image, 3, size)),
        }
    }

    pub(super) fn extend_into(&self, out: &mut Vec<f32>, channels: usize) {
        match (&self.rgb, channels) {
            (Some(rgb), 3) => out.extend_from_slice(rgb),
            (None, 3) => {
                for _ in 0..3 {
                    out.extend_from_slice(&self.gray);
                }
            }
            _ => out.extend_from_slice(&self.gray),
        }
    }
}

/// An image file as the classifier reads it: decoded, resized to `size`×`size`, gray (1
/// channel) or RGB (3), values in [0, 1].
pub fn classifier_pixels(path: &Path, channels: usize, size: usize) -> Result<Vec<f32>> {
    let image = open_image(path)?;
    let mut out = Vec::with_capacity(channels * size * size);
    Small::new(&image, size).extend_into(&mut out, channels);
    Ok(out)
}

/// The classifier's default input side for a set of image files: the median of their shorter
/// sides, within [`MIN_CNN_SIZE`, 128] (from the headers; nothing is decoded).
pub(super) fn median_side(files: &[PathBuf]) -> Result<usize> {
    let mut sides = files
        .iter()
        .map(|file| {
            let (w, h, _) = image_header(file)?;
            Ok(w.min(h) as usize)
        })
        .collect::<Result<Vec<usize>>>()?;
    sides.sort_unstable();
    Ok(sides
        .get(sides.len() / 2)
        .copied()
        .unwrap_or(CNN_SIZE)
        .clamp(MIN_CNN_SIZE, MAX_DEFAULT_SIZE))
}

/// The largest default classifier input side (larger images are scaled down to it).
pub(super) const MAX_DEFAULT_SIZE: usize = 128;

/// Decodes image files as the classifier reads them (central square, `size`×`size`), all of
/// them first so a corrupt file fails before training: gray unless some image has colour.
/// Returns the channels and each image's pixels.
pub(super) fn decode_all(files: &[&Path], size: usize) -> Result<(usize, Vec<Vec<f32>>)> {
    let small = files
        .iter()
        .map(|path| Ok(Small::new(&open_image(path)?, size)))
        .collect::<Result<Vec<Small>>>()?;
    let channels = if small.iter().any(|s| s.rgb.is_some()) {
        3
    } else {
        1
    };
    let pixels = small
        .iter()
        .map(|s| {
            let mut out = Vec::with_capacity(channels * size * size);
            s.extend_into(&mut out, channels);
            out
        })
        .collect();
    Ok((channels, pixels))
}

/// The image file a table cell names, relative to the table's folder; it must exist.
pub(super) fn listed_file(base: &Path, cell: &str, table: &Path, line: u64) -> Result<PathBuf> {
    let path = base.join(cell);
    if cell.is_empty() {
        anyhow::bail!(
            "{}: line {line}: the file cell is empty; it must name an image relative to {}",
            table.display(),
            base.display()
        );
    }
    if !path.is_file() {
        anyhow::bail!(
            "{}: line {line}: image `{cell}` does not exist in {}",
            table.display(),
            base.display()
        );
    }
    if !is_image(&path) {
        anyhow::bail!(
            "{}: line {line}: `{cell}` is not a .png, .jpg or .tif image",
            table.display()
        );
    }
    Ok(path)
}
