//! The data of the bundled examples: generated blood-cell-like microscope images (with
//! per-pixel masks for segmentation), image folders, MNIST-format idx files, and image + mask
//! folders read at their own resolution.

mod generated;
mod idx;
mod image_file;
mod image_folder;
pub mod multilabel;
pub mod patches;
pub mod regression;
pub mod segmentation;
pub mod table;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use losskit_optim::{Rng, TaskKind};
use serde::{Deserialize, Serialize};

use self::idx::idx_file;
pub use self::{
    generated::{
        CELL_TYPES, MAX_CELLS, SEG_CLASSES, generate_cells, generate_counts, generate_labels,
        generate_masks,
    },
    idx::load_idx,
    image_file::{MAX_IMAGE_SIDE, classifier_pixels, is_image, sorted_entries},
    image_folder::load_image_folder,
    multilabel::{LABEL_FILES, load_label_table},
    regression::{Inputs, RegressionData, RegressionSet, load_table_regression, table_path},
    segmentation::{
        FolderReading, MaskMode, Normalization, SegImage, SegImages, SegmentationData,
        load_segmentation_folder, read_image,
    },
    table::{Missing, TableReading},
};
use crate::models::CNN_SIZE;

fn is_default_reading(reading: &TableReading) -> bool {
    *reading == TableReading::default()
}

/// The side of the generated segmentation images.
pub const SEG_SIZE: usize = 48;

/// Images and their labels, in memory.
#[derive(Debug, Clone, Default)]
pub struct ImageSet {
    /// Channels per image.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Pixel values in [0, 1], `[N, C, H, W]` row-major.
    pub images: Vec<f32>,
    /// Class indices: one per image (classification) or per pixel (segmentation, `[N, H, W]`).
    pub labels: Vec<i64>,
}

impl ImageSet {
    pub(crate) fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
            ..Self::default()
        }
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        let per = self.channels * self.height * self.width;
        self.images.len().checked_div(per).unwrap_or(0)
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A set of the same shape without images.
    pub fn clone_empty(&self) -> Self {
        Self::new(self.channels, self.height, self.width)
    }

    /// Pixels per image (all channels).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Classification data: a training and a validation set of images of one size.
#[derive(Debug, Clone)]
pub struct ClassificationData {
    /// Class names, index order.
    pub classes: Vec<String>,
    /// The training set.
    pub train: ImageSet,
    /// The validation set.
    pub valid: ImageSet,
    /// Where the data came from, in words.
    pub description: String,
}

/// A task's data.
#[derive(Debug, Clone)]
pub enum Dataset {
    /// Images with one class each.
    Classification(ClassificationData),
    /// Images with a class per pixel, each at its own size.
    Segmentation(SegmentationData),
    /// Images or table rows with a real target each.
    Regression(RegressionData),
    /// Images with any number of labels each (`labels` holds one 0/1 per label and image).
    MultiLabel(ClassificationData),
}

impl Dataset {
    /// The task the data is for.
    pub fn kind(&self) -> TaskKind {
        match self {
            Self::Classification(_) => TaskKind::Classification,
            Self::Segmentation(_) => TaskKind::Segmentation,
            Self::Regression(_) => TaskKind::Regression,
            Self::MultiLabel(_) => TaskKind::MultiLabel,
        }
    }

    /// Class (label) names, index order; for regression, the target's name (one output).
    pub fn classes(&self) -> Vec<String> {
        match self {
            Self::Classification(data) | Self::MultiLabel(data) => data.classes.clone(),
            Self::Segmentation(data) => data.classes.clone(),
            Self::Regression(data) => vec![data.target.clone()],
        }
    }

    /// Channels per image (0 for table rows).
    pub fn channels(&self) -> usize {
        match self {
            Self::Classification(data) | Self::MultiLabel(data) => data.train.channels,
            Self::Segmentation(data) => data.channels(),
            Self::Regression(data) => data.channels(),
        }
    }

    /// The side of the classifier's square input images, when the inputs are such images.
    pub fn image_side(&self) -> Option<usize> {
        match self {
            Self::Classification(data) | Self::MultiLabel(data) => Some(data.train.height),
            Self::Regression(RegressionData {
                train:
                    RegressionSet {
                        inputs: Inputs::Images(set),
                        ..
                    },
                ..
            }) => Some(set.height),
            _ => None,
        }
    }

    /// Where the data came from, in words.
    pub fn description(&self) -> &str {
        match self {
            Self::Classification(data) | Self::MultiLabel(data) => &data.description,
            Self::Segmentation(data) => &data.description,
            Self::Regression(data) => &data.description,
        }
    }

    /// The number of (training, validation) samples.
    pub fn sizes(&self) -> (usize, usize) {
        match self {
            Self::Classification(data) | Self::MultiLabel(data) => {
                (data.train.len(), data.valid.len())
            }
            Self::Segmentation(data) => (data.train.len(), data.valid.len()),
            Self::Regression(data) => (data.train.len(), data.valid.len()),
        }
    }

    /// The same data with every image in the validation split (to score other data whole).
    pub fn all_for_validation(self) -> Self {
        let join_images = |mut data: ClassificationData| {
            let mut all = std::mem::take(&mut data.train);
            all.images.append(&mut data.valid.images);
            all.labels.append(&mut data.valid.labels);
            data.valid = all;
            data.train = data.valid.clone_empty();
            data
        };
        match self {
            Self::Classification(data) => Self::Classification(join_images(data)),
            Self::MultiLabel(data) => Self::MultiLabel(join_images(data)),
            Self::Regression(mut data) => {
                let (train, valid) = (data.train, data.valid);
                let indices: Vec<usize> = (0..train.len()).collect();
                let empty = RegressionSet::select(&train.inputs, &train.targets, &[]);
                let mut all = RegressionSet::select(&train.inputs, &train.targets, &indices);
                all.targets.extend(valid.targets);
                match (&mut all.inputs, valid.inputs) {
                    (Inputs::Images(a), Inputs::Images(b)) => a.images.extend(b.images),
                    (Inputs::Rows { values: a, .. }, Inputs::Rows { values: b, .. }) => a.extend(b),
                    _ => {}
                }
                data.train = empty;
                data.valid = all;
                Self::Regression(data)
            }
            Self::Segmentation(mut data) => {
                data.valid = data.train.joined(&data.valid);
                data.train = data.train.first(0);
                Self::Segmentation(data)
            }
        }
    }

    /// The data with only its first training image (and no validation images): what a
    /// forward pass that checks a loss needs.
    pub fn first_training_image(&self) -> Self {
        match self {
            Self::Regression(data) => Self::Regression(RegressionData {
                target: data.target.clone(),
                features: data.features.clone(),
                train: RegressionSet::select(&data.train.inputs, &data.train.targets, &[0]),
                valid: RegressionSet::select(&data.valid.inputs, &data.valid.targets, &[]),
                description: String::new(),
            }),
            Self::MultiLabel(data) => {
                let Self::Classification(first) =
                    Self::Classification(data.clone()).first_training_image()
                else {
                    unreachable!()
                };
                Self::MultiLabel(first)
            }
            Self::Classification(data) => {
                let mut train = data.train.clone_empty();
                let per = data.train.image_len();
                let labels = data
                    .train
                    .labels
                    .len()
                    .checked_div(data.train.len())
                    .unwrap_or(0);
                train
                    .images
                    .extend_from_slice(&data.train.images[..per.min(data.train.images.len())]);
                train
                    .labels
                    .extend_from_slice(&data.train.labels[..labels.min(data.train.labels.len())]);
                Self::Classification(ClassificationData {
                    classes: data.classes.clone(),
                    train,
                    valid: data.valid.clone_empty(),
                    description: String::new(),
                })
            }
            Self::Segmentation(data) => Self::Segmentation(SegmentationData {
                classes: data.classes.clone(),
                train: data.train.first(1),
                valid: data.valid.first(0),
                description: String::new(),
            }),
        }
    }
}

/// Where a run's data comes from; stored in checkpoints so `evaluate` can rebuild it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum DataSource {
    /// Generated blood-cell images.
    GeneratedCells {
        /// Training images of the most frequent class.
        train_per_class: usize,
        /// Validation images per class (balanced).
        valid_per_class: usize,
        /// Ratio of the most to the least frequent class in training (1: balanced).
        imbalance: f64,
        /// The generator's seed.
        seed: u64,
    },
    /// Generated cell images with background / cell / nucleus masks.
    GeneratedMasks {
        /// Training images.
        train: usize,
        /// Validation images.
        valid: usize,
        /// The generator's seed.
        seed: u64,
    },
    /// `root/<class>/*.png|jpg` (or `root/train/<class>/...` and `root/val/<class>/...`).
    ImageFolder {
        /// The root folder.
        path: PathBuf,
        /// The seed of the train/validation split.
        seed: u64,
        /// The classifier's input side (28 in runs written before it was an option).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<usize>,
    },
    /// MNIST-format idx files (`train-images-idx3-ubyte[.gz]`, ..., `t10k-...`).
    Idx {
        /// The folder holding them.
        path: PathBuf,
        /// Use at most this many training images (all when `None`).
        limit: Option<usize>,
    },
    /// `root/images/*` with `root/masks/*` of the same names, at their own size.
    MaskFolder {
        /// The root folder.
        path: PathBuf,
        /// The seed of the train/validation split.
        seed: u64,
        /// Normalisation and mask reading (the defaults in runs written before they were
        /// options).
        #[serde(default)]
        reading: FolderReading,
    },
    /// Generated cell fields whose target is the number of cells (regression).
    GeneratedCounts {
        /// Training images.
        train: usize,
        /// Validation images.
        valid: usize,
        /// The generator's seed.
        seed: u64,
    },
    /// Generated cell fields labelled with the cell types they show (multi-label).
    GeneratedLabels {
        /// Training images.
        train: usize,
        /// Validation images.
        valid: usize,
        /// The generator's seed.
        seed: u64,
    },
    /// A table with a target column: numeric feature columns, or a `file` column naming images
    /// (regression).
    Table {
        /// The table file.
        path: PathBuf,
        /// The target column.
        target: String,
        /// Columns left out and rows with missing values (the defaults in runs written before
        /// they were options).
        #[serde(default, skip_serializing_if = "is_default_reading")]
        reading: TableReading,
        /// The seed of the train/validation split.
        seed: u64,
        /// The side images are resized to (recorded once loaded; `None`: none, or not yet).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<usize>,
    },
    /// A label table: a `file` column naming images and their labels (multi-label).
    LabelTable {
        /// The table file.
        path: PathBuf,
        /// The seed of the train/validation split.
        seed: u64,
        /// The side images are resized to (recorded once loaded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<usize>,
    },
}

impl DataSource {
    /// Loads or generates the data.
    pub fn load(&self) -> Result<Dataset> {
        Ok(match self {
            DataSource::GeneratedCounts { train, valid, seed } => {
                Dataset::Regression(generate_counts(*train, *valid, *seed))
            }
            DataSource::GeneratedLabels { train, valid, seed } => {
                Dataset::MultiLabel(generate_labels(*train, *valid, *seed))
            }
            DataSource::Table {
                path,
                target,
                reading,
                seed,
                size,
            } => Dataset::Regression(load_table_regression(path, target, reading, *seed, *size)?.0),
            DataSource::LabelTable { path, seed, size } => {
                Dataset::MultiLabel(load_label_table(path, *seed, *size)?.0)
            }
            DataSource::GeneratedCells {
                train_per_class,
                valid_per_class,
                imbalance,
                seed,
            } => Dataset::Classification(generate_cells(
                *train_per_class,
                *valid_per_class,
                *imbalance,
                *seed,
            )),
            DataSource::GeneratedMasks { train, valid, seed } => {
                Dataset::Segmentation(generate_masks(*train, *valid, *seed))
            }
            DataSource::ImageFolder { path, seed, size } => {
                Dataset::Classification(load_image_folder(path, *seed, size.unwrap_or(CNN_SIZE))?)
            }
            DataSource::Idx { path, limit } => Dataset::Classification(load_idx(path, *limit)?),
            DataSource::MaskFolder {
                path,
                seed,
                reading,
            } => Dataset::Segmentation(load_segmentation_folder(path, *seed, *reading)?),
        })
    }

    /// The side of the classifier's square input images.
    pub fn input_size(&self) -> usize {
        match self {
            DataSource::ImageFolder {
                size: Some(size), ..
            }
            | DataSource::Table {
                size: Some(size), ..
            }
            | DataSource::LabelTable {
                size: Some(size), ..
            } => *size,
            DataSource::GeneratedCounts { .. } | DataSource::GeneratedLabels { .. } => SEG_SIZE,
            _ => CNN_SIZE,
        }
    }

    /// Records the image side the data was read at (label and target tables decide it from
    /// their images when loaded).
    pub fn set_image_side(&mut self, side: usize) {
        if let DataSource::Table { size, .. } | DataSource::LabelTable { size, .. } = self {
            *size = Some(side);
        }
    }

    /// Whether the data is generated (not read from files).
    pub fn is_generated(&self) -> bool {
        matches!(
            self,
            DataSource::GeneratedCells { .. }
                | DataSource::GeneratedMasks { .. }
                | DataSource::GeneratedCounts { .. }
                | DataSource::GeneratedLabels { .. }
        )
    }

    /// The data source for `--data PATH` (or the generated default) of a task.
    #[allow(clippy::too_many_arguments)]
    pub fn from_flag(
        kind: TaskKind,
        path: Option<&Path>,
        seed: u64,
        imbalance: f64,
        limit: Option<usize>,
        reading: FolderReading,
        size: Option<usize>,
        target: Option<&str>,
        table: &TableReading,
    ) -> Result<Self> {
        if target.is_some() && !(kind == TaskKind::Regression && path.is_some()) {
            bail!("--target names the column to predict in a --data table of --task regression");
        }
        if *table != TableReading::default() && !(kind == TaskKind::Regression && path.is_some()) {
            bail!("--exclude and --missing say how a --data table of --task regression is read");
        }
        let Some(path) = path else {
            return Ok(match kind {
                TaskKind::Regression => DataSource::GeneratedCounts {
                    train: limit.map_or(1000, |l| l.min(1000)),
                    valid: 250,
                    seed,
                },
                TaskKind::MultiLabel => DataSource::GeneratedLabels {
                    train: limit.map_or(1000, |l| l.min(1000)),
                    valid: 250,
                    seed,
                },
                TaskKind::Classification => DataSource::GeneratedCells {
                    // --limit caps the default size; it never raises it.
                    train_per_class: limit.map_or(500, |l| l.div_ceil(CELL_TYPES.len()).min(500)),
                    valid_per_class: 150,
                    imbalance,
                    seed,
                },
                TaskKind::Segmentation => DataSource::GeneratedMasks {
                    train: limit.map_or(400, |l| l.min(400)),
                    valid: 100,
                    seed,
                },
            });
        };
        if imbalance != 1.0 {
            bail!("--imbalance applies to the generated data only, not to --data");
        }
        match kind {
            TaskKind::Regression => {
                let Some(target) = target else {
                    bail!(
                        "--task regression --data {} needs --target COLUMN: the table column to predict",
                        path.display()
                    );
                };
                return Ok(DataSource::Table {
                    path: table_path(path, &["targets.csv", "targets.tsv"])?,
                    target: target.to_string(),
                    reading: table.clone(),
                    seed,
                    size,
                });
            }
            TaskKind::MultiLabel => {
                return Ok(DataSource::LabelTable {
                    path: table_path(path, &LABEL_FILES)?,
                    seed,
                    size,
                });
            }
            _ => {}
        }
        if !path.is_dir() {
            bail!("--data {}: not a folder", path.display());
        }
        Ok(match kind {
            TaskKind::Classification if idx_file(path, "train-images-idx3-ubyte").is_some() => {
                if size.is_some_and(|s| s != CNN_SIZE) {
                    bail!("--size: idx files hold 28x28 images; --size applies to image folders");
                }
                DataSource::Idx {
                    path: path.to_path_buf(),
                    limit,
                }
            }
            TaskKind::Classification => DataSource::ImageFolder {
                path: path.to_path_buf(),
                seed,
                size: Some(match size {
                    Some(size) => size,
                    None => image_folder::default_size(path)?,
                }),
            },
            TaskKind::Segmentation => DataSource::MaskFolder {
                path: path.to_path_buf(),
                seed,
                reading,
            },
            TaskKind::Regression | TaskKind::MultiLabel => unreachable!("returned above"),
        })
    }
}

/// Splits indices `0..n` into (train, validation), 20 % validation (at least one when n > 1).
pub(super) fn split_indices(n: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(seed ^ 0x5917).shuffle(&mut order);
    let valid = if n > 1 { (n / 5).max(1) } else { 0 };
    let (v, t) = order.split_at(valid);
    (t.to_vec(), v.to_vec())
}
