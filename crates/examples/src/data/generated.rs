//! Generated microscope images: blood cells of five types for classification, and fields of
//! cells with background / cell / nucleus masks for segmentation. Drawn shape by shape from the
//! run's seed, so a data set is a function of its seed.

use losskit_optim::Rng;

use super::{
    ClassificationData, ImageSet, SEG_SIZE,
    regression::{Inputs, RegressionData, RegressionSet},
    segmentation::{SegImage, SegImages, SegmentationData},
};
use crate::models::CNN_SIZE;

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
) -> ClassificationData {
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
    ClassificationData {
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

/// A field of one to three cells of random types: its pixels, per-pixel labels and the cell
/// types it shows.
fn render_field(rng: &mut Rng) -> (Vec<f32>, Vec<i64>, Vec<usize>) {
    let size = SEG_SIZE;
    let mut canvas = Canvas::new(size, rng.range(0.8, 0.9) as f32);
    let cells = 1 + rng.below(3);
    let mut kinds = Vec::with_capacity(cells);
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
        kinds.push(kind);
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
    let (pixels, labels) = canvas.finish(rng, 0.05);
    (pixels, labels, kinds)
}

/// Generated microscope fields `1 × 48 × 48` with one to three cells and per-pixel masks:
/// background (0), cell (1) and nucleus (2).
pub fn generate_masks(train: usize, valid: usize, seed: u64) -> SegmentationData {
    let mut rng = Rng::new(seed ^ 0xA5A5);
    let classes = SEG_CLASSES.len();
    let make = |n: usize, rng: &mut Rng| -> Vec<SegImage> {
        (0..n)
            .map(|_| {
                let (pixels, labels, _) = render_field(rng);
                // The generated data's normalisation (`none`): [0, 1] shifted by -0.5.
                let pixels = pixels.into_iter().map(|p| p - 0.5).collect();
                let labels = labels.into_iter().map(|l| l as u8).collect();
                SegImage::new(1, SEG_SIZE, SEG_SIZE, pixels, labels, classes)
            })
            .collect()
    };
    let train_images = make(train, &mut rng);
    let valid_images = make(valid, &mut rng);
    let all = SegImages::from_memory(1, train_images.into_iter().chain(valid_images).collect());
    SegmentationData {
        classes: SEG_CLASSES.iter().map(|s| s.to_string()).collect(),
        train: all.first(train),
        valid: all.skip(train),
        description: format!(
            "generated cell fields 1x48x48 with masks, train: {train}, validation: {valid}"
        ),
    }
}

/// Generated microscope fields `1 × 48 × 48` for multi-label classification: one to three
/// cells of random types; the labels are the types the field shows (each present in about a
/// third of the fields).
pub fn generate_labels(train: usize, valid: usize, seed: u64) -> ClassificationData {
    let mut rng = Rng::new(seed ^ 0x1ABE1);
    let labels = CELL_TYPES.len();
    let make = |n: usize, rng: &mut Rng| {
        let mut set = ImageSet::new(1, SEG_SIZE, SEG_SIZE);
        for _ in 0..n {
            let (pixels, _, kinds) = render_field(rng);
            set.images.extend(pixels);
            set.labels
                .extend((0..labels).map(|l| i64::from(kinds.contains(&l))));
        }
        set
    };
    let train_set = make(train, &mut rng);
    let valid_set = make(valid, &mut rng);
    ClassificationData {
        classes: CELL_TYPES.iter().map(|s| s.to_string()).collect(),
        train: train_set,
        valid: valid_set,
        description: format!(
            "generated cell fields 1x48x48 labelled with the cell types they show, train: {train}, validation: {valid}"
        ),
    }
}

/// The most cells a generated counting field holds.
pub const MAX_CELLS: usize = 9;

/// A field of 0 to [`MAX_CELLS`] small cells of random types, apart from each other: its pixels
/// and the number of cells.
fn render_count_field(rng: &mut Rng) -> (Vec<f32>, usize) {
    let size = SEG_SIZE;
    let mut canvas = Canvas::new(size, rng.range(0.8, 0.9) as f32);
    let cells = rng.below(MAX_CELLS + 1);
    let mut centres: Vec<(f64, f64)> = Vec::new();
    for _ in 0..cells {
        let mut best = (24.0, 24.0);
        for _ in 0..60 {
            best = (rng.range(6.0, 42.0), rng.range(6.0, 42.0));
            if centres
                .iter()
                .all(|(x, y)| ((x - best.0).powi(2) + (y - best.1).powi(2)).sqrt() > 12.0)
            {
                break;
            }
        }
        centres.push(best);
        let kind = rng.below(CELL_TYPES.len());
        let scale = rng.range(0.42, 0.5);
        paint_cell(&mut canvas, rng, kind, best.0, best.1, scale, None, None);
    }
    (canvas.finish(rng, 0.05).0, cells)
}

/// Generated microscope fields `1 × 48 × 48` for regression: the target is the number of
/// cells in the field (0 to 9, uniform), as a cell counter estimates it.
pub fn generate_counts(train: usize, valid: usize, seed: u64) -> RegressionData {
    let mut rng = Rng::new(seed ^ 0xC0C0);
    let make = |n: usize, rng: &mut Rng| {
        let mut images = ImageSet::new(1, SEG_SIZE, SEG_SIZE);
        let mut targets = Vec::with_capacity(n);
        for _ in 0..n {
            let (pixels, count) = render_count_field(rng);
            images.images.extend(pixels);
            targets.push(count as f64);
        }
        RegressionSet {
            inputs: Inputs::Images(images),
            targets,
        }
    };
    let train_set = make(train, &mut rng);
    let valid_set = make(valid, &mut rng);
    RegressionData {
        target: "cells".into(),
        features: Vec::new(),
        train: train_set,
        valid: valid_set,
        description: format!(
            "generated cell fields 1x48x48, target: the number of cells (0-{MAX_CELLS}), train: {train}, validation: {valid}"
        ),
    }
}
