//! The data of the bundled examples: generated blood-cell-like microscope images (with
//! per-pixel masks for segmentation), image folders and MNIST-format idx files.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use losskit_optim::{Rng, TaskKind};
use serde::{Deserialize, Serialize};

use super::models::CNN_SIZE;

/// The side of the generated (and resized folder) segmentation images.
pub const SEG_SIZE: usize = 48;

/// The largest image side read from a folder (larger images are refused, not decoded).
pub const MAX_IMAGE_SIDE: u32 = 8192;

/// The cell types of the generated classification data, in class order (the last is the
/// rarest when `--imbalance` is used).
pub const CELL_TYPES: [&str; 5] = [
    "erythrocyte",
    "lymphocyte",
    "neutrophil",
    "monocyte",
    "eosinophil",
];

/// The classes of the generated segmentation data.
pub const SEG_CLASSES: [&str; 3] = ["background", "cell", "nucleus"];

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
    fn new(channels: usize, height: usize, width: usize) -> Self {
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

/// A training and a validation set.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Classification or segmentation.
    pub kind: TaskKind,
    /// Class names, index order.
    pub classes: Vec<String>,
    /// The training set.
    pub train: ImageSet,
    /// The validation set.
    pub valid: ImageSet,
    /// Where the data came from, in words.
    pub description: String,
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
    },
    /// MNIST-format idx files (`train-images-idx3-ubyte[.gz]`, ..., `t10k-...`).
    Idx {
        /// The folder holding them.
        path: PathBuf,
        /// Use at most this many training images (all when `None`).
        limit: Option<usize>,
    },
    /// `root/images/*.png` with `root/masks/*.png` of the same names.
    MaskFolder {
        /// The root folder.
        path: PathBuf,
        /// The seed of the train/validation split.
        seed: u64,
    },
}

impl DataSource {
    /// Loads or generates the data.
    pub fn load(&self) -> Result<Dataset> {
        match self {
            DataSource::GeneratedCells {
                train_per_class,
                valid_per_class,
                imbalance,
                seed,
            } => Ok(generate_cells(
                *train_per_class,
                *valid_per_class,
                *imbalance,
                *seed,
            )),
            DataSource::GeneratedMasks { train, valid, seed } => {
                Ok(generate_masks(*train, *valid, *seed))
            }
            DataSource::ImageFolder { path, seed } => load_image_folder(path, *seed),
            DataSource::Idx { path, limit } => load_idx(path, *limit),
            DataSource::MaskFolder { path, seed } => load_mask_folder(path, *seed),
        }
    }

    /// The data source for `--data PATH` (or the generated default) of a task.
    pub fn from_flag(
        kind: TaskKind,
        path: Option<&Path>,
        seed: u64,
        imbalance: f64,
        limit: Option<usize>,
    ) -> Result<Self> {
        let Some(path) = path else {
            return Ok(match kind {
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
        if !path.is_dir() {
            bail!("--data {}: not a folder", path.display());
        }
        Ok(match kind {
            TaskKind::Classification if idx_file(path, "train-images-idx3-ubyte").is_some() => {
                DataSource::Idx {
                    path: path.to_path_buf(),
                    limit,
                }
            }
            TaskKind::Classification => DataSource::ImageFolder {
                path: path.to_path_buf(),
                seed,
            },
            TaskKind::Segmentation => DataSource::MaskFolder {
                path: path.to_path_buf(),
                seed,
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Generated cells.

/// A grayscale canvas painted shape by shape, with the label of each pixel's last cover.
struct Canvas {
    size: usize,
    pixels: Vec<f32>,
    labels: Vec<i64>,
}

impl Canvas {
    fn new(size: usize, background: f32) -> Self {
        Self {
            size,
            pixels: vec![background; size * size],
            labels: vec![0; size * size],
        }
    }

    /// Paints an ellipse (center, radii, rotation) with `value`; pixels more than half covered
    /// take `label` when given. `inside` shapes the cover further (1 = keep).
    #[allow(clippy::too_many_arguments)]
    fn ellipse(
        &mut self,
        cx: f64,
        cy: f64,
        a: f64,
        b: f64,
        angle: f64,
        value: f32,
        label: Option<i64>,
    ) {
        let (sin, cos) = angle.sin_cos();
        let reach = a.max(b) + 1.5;
        let (x0, x1) = (
            (cx - reach).floor().max(0.0) as usize,
            ((cx + reach).ceil() as usize).min(self.size - 1),
        );
        let (y0, y1) = (
            (cy - reach).floor().max(0.0) as usize,
            ((cy + reach).ceil() as usize).min(self.size - 1),
        );
        if cx + reach < 0.0 || cy + reach < 0.0 {
            return;
        }
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
                let u = dx * cos + dy * sin;
                let v = -dx * sin + dy * cos;
                let r = ((u / a).powi(2) + (v / b).powi(2)).sqrt();
                let distance = (r - 1.0) * a.min(b);
                let cover = (0.5 - distance).clamp(0.0, 1.0) as f32;
                if cover > 0.0 {
                    let i = y * self.size + x;
                    self.pixels[i] = self.pixels[i] * (1.0 - cover) + value * cover;
                    if let Some(label) = label
                        && cover >= 0.5
                    {
                        self.labels[i] = label;
                    }
                }
            }
        }
    }

    fn disc(&mut self, cx: f64, cy: f64, r: f64, value: f32, label: Option<i64>) {
        self.ellipse(cx, cy, r, r, 0.0, value, label);
    }

    /// Adds sensor noise, a blur-free brightness/contrast change and clamps to [0, 1].
    fn finish(mut self, rng: &mut Rng, noise: f64) -> (Vec<f32>, Vec<i64>) {
        let contrast = rng.range(0.85, 1.15) as f32;
        let brightness = rng.range(-0.06, 0.06) as f32;
        for p in self.pixels.iter_mut() {
            let noisy = (*p - 0.5) * contrast + 0.5 + brightness + (rng.normal() * noise) as f32;
            *p = noisy.clamp(0.0, 1.0);
        }
        (self.pixels, self.labels)
    }
}

/// Paints one cell of `kind` (index into [`CELL_TYPES`]) centred at (cx, cy), scaled by
/// `scale`; cytoplasm takes label `cell`, nucleus label `nucleus` when given.
#[allow(clippy::too_many_arguments)]
fn paint_cell(
    canvas: &mut Canvas,
    rng: &mut Rng,
    kind: usize,
    cx: f64,
    cy: f64,
    scale: f64,
    cell: Option<i64>,
    nucleus: Option<i64>,
) {
    let angle = rng.range(0.0, std::f64::consts::TAU);
    match kind {
        // Erythrocyte: a biconcave disc, paler in the middle, no nucleus.
        0 => {
            let a = rng.range(8.0, 10.0) * scale;
            let b = a * rng.range(0.85, 1.0);
            canvas.ellipse(cx, cy, a, b, angle, 0.52, cell);
            canvas.ellipse(cx, cy, a * 0.45, b * 0.45, angle, 0.68, cell);
        }
        // Lymphocyte: small, a large round dark nucleus and a thin rim of cytoplasm.
        1 => {
            let r = rng.range(7.0, 8.5) * scale;
            canvas.disc(cx, cy, r, 0.62, cell);
            let (ox, oy) = (rng.range(-0.8, 0.8) * scale, rng.range(-0.8, 0.8) * scale);
            canvas.ellipse(
                cx + ox,
                cy + oy,
                r * 0.8,
                r * rng.range(0.7, 0.8),
                angle,
                0.2,
                nucleus,
            );
        }
        // Neutrophil: large, with a nucleus of three to five small lobes along an arc.
        2 => {
            let r = rng.range(10.0, 12.0) * scale;
            canvas.disc(cx, cy, r, 0.64, cell);
            let lobes = 3 + rng.below(3);
            let spread = rng.range(1.8, 2.6);
            for k in 0..lobes {
                let t = angle + spread * (k as f64 / (lobes - 1) as f64 - 0.5) * 1.6;
                let (lx, ly) = (cx + r * 0.42 * t.cos(), cy + r * 0.42 * t.sin());
                canvas.disc(lx, ly, r * rng.range(0.2, 0.26), 0.24, nucleus);
            }
        }
        // Monocyte: the largest, a kidney-shaped nucleus off centre.
        3 => {
            let r = rng.range(11.0, 13.0) * scale;
            canvas.disc(cx, cy, r, 0.58, cell);
            let (dx, dy) = (angle.cos(), angle.sin());
            let (nx, ny) = (cx + dx * r * 0.15, cy + dy * r * 0.15);
            canvas.ellipse(
                nx,
                ny,
                r * 0.62,
                r * 0.48,
                angle + std::f64::consts::FRAC_PI_2,
                0.3,
                nucleus,
            );
            // The bite that makes it a bean: cytoplasm painted back over one side.
            canvas.disc(nx + dx * r * 0.55, ny + dy * r * 0.55, r * 0.33, 0.58, cell);
        }
        // Eosinophil: coarse granules in the cytoplasm and a two-lobed nucleus.
        _ => {
            let r = rng.range(10.0, 12.0) * scale;
            canvas.disc(cx, cy, r, 0.6, cell);
            for _ in 0..(25.0 * scale * scale) as usize {
                let t = rng.range(0.0, std::f64::consts::TAU);
                let d = r * rng.uniform().sqrt() * 0.9;
                canvas.disc(cx + d * t.cos(), cy + d * t.sin(), 0.9 * scale, 0.42, cell);
            }
            let (dx, dy) = (angle.cos(), angle.sin());
            for side in [-1.0, 1.0] {
                canvas.disc(
                    cx + side * dx * r * 0.33,
                    cy + side * dy * r * 0.33,
                    r * 0.3,
                    0.24,
                    nucleus,
                );
            }
        }
    }
}

fn render_cell(rng: &mut Rng, kind: usize) -> Vec<f32> {
    let size = CNN_SIZE;
    let mut canvas = Canvas::new(size, rng.range(0.8, 0.9) as f32);
    // Neighbouring red cells, cut by the frame.
    for _ in 0..rng.below(3) {
        let t = rng.range(0.0, std::f64::consts::TAU);
        let d = rng.range(17.0, 21.0);
        let (cx, cy) = (14.0 + d * t.cos(), 14.0 + d * t.sin());
        paint_cell(&mut canvas, rng, 0, cx, cy, 1.0, None, None);
    }
    let (cx, cy) = (14.0 + rng.range(-1.5, 1.5), 14.0 + rng.range(-1.5, 1.5));
    let scale = rng.range(0.92, 1.05);
    paint_cell(&mut canvas, rng, kind, cx, cy, scale, None, None);
    canvas.finish(rng, 0.05).0
}

/// Generated blood-cell images, `1 × 28 × 28`: five cell types with distinct shapes and
/// textures. Training has `train_per_class` images of the first class, down to
/// `train_per_class / imbalance` of the last (geometrically); validation is balanced.
pub fn generate_cells(
    train_per_class: usize,
    valid_per_class: usize,
    imbalance: f64,
    seed: u64,
) -> Dataset {
    let classes = CELL_TYPES.len();
    let mut rng = Rng::new(seed);
    let make = |counts: &[usize], rng: &mut Rng| {
        let mut set = ImageSet::new(1, CNN_SIZE, CNN_SIZE);
        let mut order: Vec<usize> = counts
            .iter()
            .enumerate()
            .flat_map(|(c, &n)| std::iter::repeat_n(c, n))
            .collect();
        rng.shuffle(&mut order);
        for kind in order {
            set.images.extend(render_cell(rng, kind));
            set.labels.push(kind as i64);
        }
        set
    };
    let imbalance = imbalance.max(1.0);
    let train_counts: Vec<usize> = (0..classes)
        .map(|c| {
            let fraction = imbalance.powf(-(c as f64) / (classes - 1) as f64);
            ((train_per_class as f64 * fraction).round() as usize).max(1)
        })
        .collect();
    let train = make(&train_counts, &mut rng);
    let valid = make(&vec![valid_per_class; classes], &mut rng);
    let counts: Vec<String> = CELL_TYPES
        .iter()
        .zip(&train_counts)
        .map(|(n, c)| format!("{n} {c}"))
        .collect();
    Dataset {
        kind: TaskKind::Classification,
        classes: CELL_TYPES.iter().map(|s| s.to_string()).collect(),
        train,
        valid,
        description: format!(
            "generated blood cells 1x28x28, train: {} ({}), validation: {} balanced",
            train_counts.iter().sum::<usize>(),
            counts.join(", "),
            valid_per_class * classes
        ),
    }
}

fn render_field(rng: &mut Rng) -> (Vec<f32>, Vec<i64>) {
    let size = SEG_SIZE;
    let mut canvas = Canvas::new(size, rng.range(0.8, 0.9) as f32);
    let cells = 1 + rng.below(3);
    let mut centres: Vec<(f64, f64)> = Vec::new();
    for _ in 0..cells {
        // A centre away from the others (a few tries), so cells touch at most.
        let mut best = (24.0, 24.0);
        for _ in 0..20 {
            let c = (rng.range(8.0, 40.0), rng.range(8.0, 40.0));
            best = c;
            if centres
                .iter()
                .all(|(x, y)| ((x - c.0).powi(2) + (y - c.1).powi(2)).sqrt() > 20.0)
            {
                break;
            }
        }
        centres.push(best);
        let kind = rng.below(CELL_TYPES.len());
        let scale = rng.range(0.75, 0.95);
        paint_cell(
            &mut canvas,
            rng,
            kind,
            best.0,
            best.1,
            scale,
            Some(1),
            Some(2),
        );
    }
    canvas.finish(rng, 0.05)
}

/// Generated microscope fields `1 × 48 × 48` with one to three cells and per-pixel masks:
/// background (0), cell (1) and nucleus (2).
pub fn generate_masks(train: usize, valid: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed ^ 0xA5A5);
    let make = |n: usize, rng: &mut Rng| {
        let mut set = ImageSet::new(1, SEG_SIZE, SEG_SIZE);
        for _ in 0..n {
            let (pixels, labels) = render_field(rng);
            set.images.extend(pixels);
            set.labels.extend(labels);
        }
        set
    };
    let train_set = make(train, &mut rng);
    let valid_set = make(valid, &mut rng);
    Dataset {
        kind: TaskKind::Segmentation,
        classes: SEG_CLASSES.iter().map(|s| s.to_string()).collect(),
        train: train_set,
        valid: valid_set,
        description: format!(
            "generated cell fields 1x48x48 with masks, train: {train}, validation: {valid}"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Image files.

fn is_image(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| e == "png" || e == "jpg" || e == "jpeg")
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read folder {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

fn open_image(path: &Path) -> Result<image::DynamicImage> {
    let mut reader = image::ImageReader::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    reader
        .decode()
        .map_err(|error| anyhow::anyhow!("cannot decode image {}: {error}", path.display()))
}

fn resized_pixels(image: &image::DynamicImage, channels: usize, size: usize) -> Vec<f32> {
    let filter = image::imageops::FilterType::Triangle;
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
struct Small {
    gray: Vec<f32>,
    rgb: Option<Vec<f32>>,
}

impl Small {
    fn new(image: &image::DynamicImage, size: usize) -> Self {
        Self {
            gray: resized_pixels(image, 1, size),
            rgb: image
                .color()
                .has_color()
                .then(|| resized_pixels(image, 3, size)),
        }
    }

    fn extend_into(&self, out: &mut Vec<f32>, channels: usize) {
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

/// Splits indices `0..n` into (train, validation), 20 % validation (at least one when n > 1).
fn split_indices(n: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(seed ^ 0x5917).shuffle(&mut order);
    let valid = if n > 1 { (n / 5).max(1) } else { 0 };
    let (v, t) = order.split_at(valid);
    (t.to_vec(), v.to_vec())
}

/// `root/<class>/*.png|jpg`, or `root/train/<class>/...` with `root/val/<class>/...` (also
/// `valid/`, `test/`), resized to 28×28; grayscale unless some image has colour.
pub fn load_image_folder(root: &Path, seed: u64) -> Result<Dataset> {
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
            .map(|(path, c)| Ok((Small::new(&open_image(path)?, CNN_SIZE), *c)))
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
        let mut set = ImageSet::new(channels, CNN_SIZE, CNN_SIZE);
        for (image, c) in images {
            image.extend_into(&mut set.images, channels);
            set.labels.push(*c);
        }
        set
    };
    Ok(Dataset {
        kind: TaskKind::Classification,
        description: format!(
            "image folder {} ({} classes, {}x28x28), train: {}, validation: {}",
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

/// `root/images/*.png|jpg` with masks `root/masks/<same stem>.png` holding class indices per
/// pixel (or gray levels such as 0/128/255, mapped to 0, 1, 2 in order), resized to 48×48.
pub fn load_mask_folder(root: &Path, seed: u64) -> Result<Dataset> {
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
    // The first mask that holds each level, to name it when a class index is out of range.
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
    let levels: Vec<u16> = levels.into_iter().collect();
    let direct = levels
        .last()
        .is_some_and(|&max| (max as usize) < MAX_MASK_LEVELS);
    let classes_count = if direct {
        // Class-index masks must use 0..C-1: a class that no mask holds, below one that some
        // mask does, is a value out of range (a stray label), not an empty class.
        let max = levels.last().copied().unwrap_or(0);
        if let Some(missing) = (0..max).find(|c| !levels.contains(c)) {
            bail!(
                "mask {} holds class {max}, but no mask holds class {missing}: class-index masks \
                 use 0..C-1 without gaps (gray-level masks such as 0/128/255 are mapped in order)",
                first_holder
                    .get(&max)
                    .map_or_else(String::new, |p| p.display().to_string())
            );
        }
        max as usize + 1
    } else {
        levels.len()
    };
    if classes_count < 2 {
        bail!(
            "{}: the masks hold a single class; expected at least two",
            masks_dir.display()
        );
    }
    let colour = pairs.iter().any(|(image, _)| image.rgb.is_some());
    let channels = if colour { 3 } else { 1 };
    let (train_idx, valid_idx) = split_indices(pairs.len(), seed);
    if valid_idx.is_empty() {
        bail!(
            "{}: at least two images are needed (one for validation)",
            root.display()
        );
    }
    let to_set = |indices: &[usize]| {
        let mut set = ImageSet::new(channels, SEG_SIZE, SEG_SIZE);
        for &i in indices {
            let (image, mask) = &pairs[i];
            image.extend_into(&mut set.images, channels);
            set.labels.extend(mask.pixels().map(|p| {
                let v = p.0[0];
                if direct {
                    v as i64
                } else {
                    levels.iter().position(|&l| l == v).unwrap_or(0) as i64
                }
            }));
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

// ---------------------------------------------------------------------------------------------
// MNIST-format idx files.

fn idx_file(dir: &Path, stem: &str) -> Option<PathBuf> {
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
pub fn load_idx(dir: &Path, limit: Option<usize>) -> Result<Dataset> {
    let (train, train_classes) = idx_set(dir, "train", limit)?;
    let (valid, valid_classes) = idx_set(dir, "t10k", None)?;
    let classes = train_classes.max(valid_classes).max(2);
    Ok(Dataset {
        kind: TaskKind::Classification,
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
