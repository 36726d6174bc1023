//! Segmentation data from a mask folder: `images/` and `masks/` with matching names.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};
use losskit_optim::TaskKind;

use super::{
    Dataset, ImageSet, SEG_SIZE,
    image_file::{Small, is_image, open_image, sorted_entries},
    split_indices,
};

/// The most distinct levels a mask folder may hold (class indices 0..16 or gray levels).
const MAX_MASK_LEVELS: usize = 16;

/// A mask's values as 16-bit levels: 16-bit masks as they are, 8-bit ones widened (not scaled).
fn mask_levels(mask: &image::DynamicImage) -> image::ImageBuffer<image::Luma<u16>, Vec<u16>> {
    use image::DynamicImage as D;
    match mask {
        D::ImageLuma16(_) | D::ImageLumaA16(_) | D::ImageRgb16(_) | D::ImageRgba16(_) => {
            mask.to_luma16()
        }
        _ => {
            let gray = mask.to_luma8();
            image::ImageBuffer::from_fn(gray.width(), gray.height(), |x, y| {
                image::Luma([gray.get_pixel(x, y).0[0] as u16])
            })
        }
    }
}

/// Masks resized to the training size, each beside its image, and the levels they hold.
struct Pairs {
    /// (image, mask at `SEG_SIZE`) per image, in file order.
    pairs: Vec<(Small, image::ImageBuffer<image::Luma<u16>, Vec<u16>>)>,
    /// Every level some mask holds, ascending.
    levels: Vec<u16>,
    /// The first mask holding each level, to name it in errors.
    first_holder: BTreeMap<u16, PathBuf>,
}

/// `root/images/*.png|jpg` with masks `root/masks/<same stem>.png` holding class indices per
/// pixel (or gray levels such as 0/128/255, mapped to 0, 1, 2 in order), resized to 48×48.
pub fn load_mask_folder(root: &Path, seed: u64) -> Result<Dataset> {
    let read = read_pairs(root)?;
    let (classes_count, direct) = class_count(&read, &root.join("masks"))?;
    let Pairs { pairs, levels, .. } = read;
    let colour = pairs.iter().any(|(image, _)| image.rgb.is_some());
    let channels = if colour { 3 } else { 1 };
    let (train_idx, valid_idx) = split_indices(pairs.len(), seed);
    if valid_idx.is_empty() {
        bail!(
            "{}: at least two images are needed (one for validation)",
            root.display()
        );
    }
    let class_of = |level: u16| -> i64 {
        if direct {
            level as i64
        } else {
            levels.iter().position(|&l| l == level).unwrap_or(0) as i64
        }
    };
    let to_set = |indices: &[usize]| {
        let mut set = ImageSet::new(channels, SEG_SIZE, SEG_SIZE);
        for &i in indices {
            let (image, mask) = &pairs[i];
            image.extend_into(&mut set.images, channels);
            set.labels.extend(mask.pixels().map(|p| class_of(p.0[0])));
        }
        set
    };
    let classes = (0..classes_count)
        .map(|c| {
            if c == 0 {
                "background".to_string()
            } else {
                format!("class_{c}")
            }
        })
        .collect();
    Ok(Dataset {
        kind: TaskKind::Segmentation,
        description: format!(
            "mask folder {} ({classes_count} classes, {channels}x48x48), train: {}, validation: {}",
            root.display(),
            train_idx.len(),
            valid_idx.len()
        ),
        classes,
        train: to_set(&train_idx),
        valid: to_set(&valid_idx),
    })
}

/// Decodes every image and its mask (same stem), checks their sizes agree and the masks hold
/// few levels, and resizes both at once.
fn read_pairs(root: &Path) -> Result<Pairs> {
    let images_dir = root.join("images");
    let masks_dir = root.join("masks");
    if !images_dir.is_dir() || !masks_dir.is_dir() {
        bail!(
            "{}: expected the folders images/ and masks/",
            root.display()
        );
    }
    let images: Vec<PathBuf> = sorted_entries(&images_dir)?
        .into_iter()
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    if images.is_empty() {
        bail!("{}: no .png/.jpg images", images_dir.display());
    }
    let masks: Vec<PathBuf> = sorted_entries(&masks_dir)?
        .into_iter()
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    let mut pairs = Vec::new();
    let mut levels: BTreeSet<u16> = BTreeSet::new();
    let mut first_holder: BTreeMap<u16, PathBuf> = BTreeMap::new();
    for image_path in &images {
        let stem = image_path.file_stem().unwrap_or_default();
        let Some(mask_path) = masks.iter().find(|m| m.file_stem() == Some(stem)) else {
            bail!(
                "image {} has no mask in {}",
                image_path.display(),
                masks_dir.display()
            );
        };
        let image = open_image(image_path)?;
        let mask = mask_levels(&open_image(mask_path)?);
        if (mask.width(), mask.height()) != (image.width(), image.height()) {
            bail!(
                "mask {} is {}x{} but its image is {}x{}",
                mask_path.display(),
                mask.width(),
                mask.height(),
                image.width(),
                image.height()
            );
        }
        for pixel in mask.pixels() {
            if levels.insert(pixel.0[0]) {
                first_holder.insert(pixel.0[0], mask_path.clone());
            }
        }
        if levels.len() > MAX_MASK_LEVELS {
            bail!(
                "mask {} brings the masks to more than {MAX_MASK_LEVELS} distinct levels (lossy compression or \
                 smoothing?); use lossless PNG class-index masks",
                mask_path.display()
            );
        }
        // Resized now, so no full-size image or mask stays in memory.
        let small_mask = image::imageops::resize(
            &mask,
            SEG_SIZE as u32,
            SEG_SIZE as u32,
            image::imageops::FilterType::Nearest,
        );
        pairs.push((Small::new(&image, SEG_SIZE), small_mask));
    }
    Ok(Pairs {
        pairs,
        levels: levels.into_iter().collect(),
        first_holder,
    })
}

/// The number of classes the masks hold, and whether their levels are class indices
/// (`true`) or gray levels mapped to classes in order (`false`).
fn class_count(read: &Pairs, masks_dir: &Path) -> Result<(usize, bool)> {
    let levels = &read.levels;
    let direct = levels
        .last()
        .is_some_and(|&max| (max as usize) < MAX_MASK_LEVELS);
    let count = if direct {
        // Class-index masks must use 0..C-1: a class that no mask holds, below one that some
        // mask does, is a value out of range (a stray label), not an empty class.
        let max = levels.last().copied().unwrap_or(0);
        if let Some(missing) = (0..max).find(|c| !levels.contains(c)) {
            bail!(
                "mask {} holds class {max}, but no mask holds class {missing}: class-index masks \
                 use 0..C-1 without gaps (gray-level masks such as 0/128/255 are mapped in order)",
                read.first_holder
                    .get(&max)
                    .map_or_else(String::new, |p| p.display().to_string())
            );
        }
        max as usize + 1
    } else {
        levels.len()
    };
    if count < 2 {
        bail!(
            "{}: the masks hold a single class; expected at least two",
            masks_dir.display()
        );
    }
    Ok((count, direct))
}
