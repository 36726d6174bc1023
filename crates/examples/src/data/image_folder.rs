//! Classification data from an image folder: one sub-folder per class.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::{
    ClassificationData, ImageSet,
    image_file::{Small, is_image, median_side, open_image, sorted_entries},
    split_indices,
};

fn class_folders(root: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut classes = Vec::new();
    for entry in sorted_entries(root)? {
        if entry.is_dir() {
            let files: Vec<PathBuf> = sorted_entries(&entry)?
                .into_iter()
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            let name = entry
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            classes.push((name, files));
        }
    }
    Ok(classes)
}

/// The classifier's input side for a folder: the median of its images' shorter sides, within
/// 8..=128 (read from the headers; nothing is decoded).
pub fn default_size(root: &Path) -> Result<usize> {
    let dir = if root.join("train").is_dir() {
        root.join("train")
    } else {
        root.to_path_buf()
    };
    let files: Vec<PathBuf> = class_folders(&dir)?
        .into_iter()
        .flat_map(|(_, files)| files)
        .collect();
    median_side(&files)
}

/// `root/<class>/*.png|jpg|tif`, or `root/train/<class>/...` with `root/val/<class>/...` (also
/// `valid/`, `test/`): each image's central square (its shorter side) resized to
/// `size`×`size`; grayscale unless some image has colour.
pub fn load_image_folder(root: &Path, seed: u64, size: usize) -> Result<ClassificationData> {
    let val_dir = ["val", "valid", "validation", "test"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir());
    let (train_groups, valid_groups) = match (root.join("train").is_dir(), val_dir) {
        (true, Some(val)) => (
            class_folders(&root.join("train"))?,
            Some(class_folders(&val)?),
        ),
        _ => (class_folders(root)?, None),
    };
    let classes: Vec<String> = train_groups.iter().map(|(n, _)| n.clone()).collect();
    if classes.len() < 2 {
        bail!(
            "{}: expected one folder per class (at least two) holding .png/.jpg images, found {}",
            root.display(),
            classes.len()
        );
    }
    if let Some((name, _)) = train_groups.iter().find(|(_, files)| files.is_empty()) {
        bail!(
            "{}: class folder `{name}` holds no .png/.jpg images",
            root.display()
        );
    }
    let mut train_files: Vec<(PathBuf, i64)> = Vec::new();
    let mut valid_files: Vec<(PathBuf, i64)> = Vec::new();
    match valid_groups {
        Some(groups) => {
            for (c, (_, files)) in train_groups.iter().enumerate() {
                train_files.extend(files.iter().map(|f| (f.clone(), c as i64)));
            }
            for (name, files) in groups {
                let Some(c) = classes.iter().position(|n| *n == name) else {
                    bail!(
                        "{}: validation class `{name}` is not a training class",
                        root.display()
                    );
                };
                valid_files.extend(files.into_iter().map(|f| (f, c as i64)));
            }
        }
        None => {
            for (c, (_, files)) in train_groups.iter().enumerate() {
                let (t, v) = split_indices(files.len(), seed.wrapping_add(c as u64));
                train_files.extend(t.into_iter().map(|i| (files[i].clone(), c as i64)));
                valid_files.extend(v.into_iter().map(|i| (files[i].clone(), c as i64)));
            }
        }
    }
    if valid_files.is_empty() {
        bail!(
            "{}: too few images to hold out a validation set",
            root.display()
        );
    }
    // Decode everything first (any corrupt file fails the run before training starts), each
    // image resized as soon as it is decoded so no full-size image stays in memory.
    let decode = |files: &[(PathBuf, i64)]| -> Result<Vec<(Small, i64)>> {
        files
            .iter()
            .map(|(path, c)| Ok((Small::new(&open_image(path)?, size), *c)))
            .collect()
    };
    let train_images = decode(&train_files)?;
    let valid_images = decode(&valid_files)?;
    let colour = train_images
        .iter()
        .chain(&valid_images)
        .any(|(image, _)| image.rgb.is_some());
    let channels = if colour { 3 } else { 1 };
    let to_set = |images: &[(Small, i64)]| {
        let mut set = ImageSet::new(channels, size, size);
        for (image, c) in images {
            image.extend_into(&mut set.images, channels);
            set.labels.push(*c);
        }
        set
    };
    Ok(ClassificationData {
        description: format!(
            "image folder {} ({} classes, {}x{size}x{size}, central squares), train: {}, validation: {}",
            root.display(),
            classes.len(),
            channels,
            train_images.len(),
            valid_images.len()
        ),
        classes,
        train: to_set(&train_images),
        valid: to_set(&valid_images),
    })
}
