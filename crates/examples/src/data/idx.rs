//! MNIST-format idx files (Fashion-MNIST, MNIST, KMNIST), gzipped or not.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use super::{ClassificationData, ImageSet};
use crate::models::CNN_SIZE;

pub(super) fn idx_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .chain(std::iter::once(stem.replacen("-idx", ".idx", 1)))
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

/// The most bytes a gzipped idx file may unpack to.
const MAX_IDX_BYTES: u64 = 1 << 30;

fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(MAX_IDX_BYTES + 1)
            .read_to_end(&mut out)
            .with_context(|| format!("{} is not a valid gzip file", path.display()))?;
        if out.len() as u64 > MAX_IDX_BYTES {
            bail!(
                "{} unpacks to more than {} MiB; larger idx files are not supported",
                path.display(),
                MAX_IDX_BYTES >> 20
            );
        }
        out
    } else {
        raw
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        bail!("{} is not an idx file of unsigned bytes", path.display());
    }
    let dims = bytes[3] as usize;
    if dims == 0 || dims > 4 || bytes.len() < 4 + 4 * dims {
        bail!("{}: bad idx header", path.display());
    }
    let shape: Vec<usize> = (0..dims)
        .map(|d| {
            u32::from_be_bytes([
                bytes[4 + 4 * d],
                bytes[5 + 4 * d],
                bytes[6 + 4 * d],
                bytes[7 + 4 * d],
            ]) as usize
        })
        .collect();
    let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let data = &bytes[4 + 4 * dims..];
    if count != Some(data.len()) {
        bail!(
            "{}: header says {:?} but holds {} values",
            path.display(),
            shape,
            data.len()
        );
    }
    Ok((shape, data.to_vec()))
}

fn idx_set(dir: &Path, prefix: &str, limit: Option<usize>) -> Result<(ImageSet, usize)> {
    let images_name = format!("{prefix}-images-idx3-ubyte");
    let labels_name = format!("{prefix}-labels-idx1-ubyte");
    let images_path = idx_file(dir, &images_name)
        .with_context(|| format!("{}: missing {images_name}[.gz]", dir.display()))?;
    let labels_path = idx_file(dir, &labels_name)
        .with_context(|| format!("{}: missing {labels_name}[.gz]", dir.display()))?;
    let (shape, pixels) = read_idx(&images_path)?;
    let (label_shape, labels) = read_idx(&labels_path)?;
    if shape.len() != 3 || label_shape.len() != 1 || shape[0] != label_shape[0] {
        bail!(
            "{} ({:?}) and {} ({:?}) do not fit together",
            images_path.display(),
            shape,
            labels_path.display(),
            label_shape
        );
    }
    if shape[1] != CNN_SIZE || shape[2] != CNN_SIZE {
        bail!(
            "{}: images are {}x{}; expected 28x28",
            images_path.display(),
            shape[1],
            shape[2]
        );
    }
    let n = limit.map_or(shape[0], |l| l.min(shape[0]));
    let mut set = ImageSet::new(1, CNN_SIZE, CNN_SIZE);
    set.images = pixels[..n * CNN_SIZE * CNN_SIZE]
        .iter()
        .map(|&p| p as f32 / 255.0)
        .collect();
    set.labels = labels[..n].iter().map(|&l| l as i64).collect();
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    Ok((set, classes))
}

/// MNIST-format idx files: `train-*` for training, `t10k-*` (the test set) for validation.
pub fn load_idx(dir: &Path, limit: Option<usize>) -> Result<ClassificationData> {
    let (train, train_classes) = idx_set(dir, "train", limit)?;
    let (valid, valid_classes) = idx_set(dir, "t10k", None)?;
    let classes = train_classes.max(valid_classes).max(2);
    Ok(ClassificationData {
        classes: (0..classes).map(|c| c.to_string()).collect(),
        description: format!(
            "idx files {} ({classes} classes, 1x28x28), train: {}, validation (t10k): {}",
            dir.display(),
            train.len(),
            valid.len()
        ),
        train,
        valid,
    })
}
