//! Segmentation data at its own resolution: images of any size (sizes may differ within a
//! set) with per-pixel class masks, read lazily through a bounded cache with background
//! prefetch.
//!
//! A folder is `root/images/NAME.EXT` with `root/masks/NAME.EXT` (same stem): PNG, JPEG or
//! TIFF; 8- or 16-bit gray, RGB, RGBA (alpha dropped) or palette images. Masks are read as
//! [`MaskMode`] says, optionally named by `root/classes.json`. Every pair is decoded once when
//! the folder is loaded, so a bad file is reported before training starts; the decoded images
//! stay in memory up to [`CACHE_BYTES`] and the rest are read again when a batch needs them
//! (the training loop asks for the next batch's images in the background).

mod masks;
mod normalize;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use anyhow::{Result, bail};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use self::masks::{
    MaskMapping, MaskSurvey, RawMask, classes_from_survey, classes_of, raw_mask, read_classes_file,
};
pub use self::{
    masks::{MAX_MASK_LEVELS, MaskMode},
    normalize::Normalization,
};
use super::{
    image_file::{image_header, is_image, open_image, sorted_entries},
    split_indices,
};

/// The most bytes of decoded images a folder keeps in memory (2 GiB); beyond it, the least
/// recently used image is dropped and read again when needed.
pub const CACHE_BYTES: usize = 2 << 30;

/// Pairs decoded at once while a folder is scanned (bounds the memory of the scan).
const SCAN_CHUNK: usize = 64;

/// One image with its mask, normalised, at its own size.
#[derive(Debug, Clone, PartialEq)]
pub struct SegImage {
    /// Channels (1 gray, 3 colour).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Normalised pixel values, `[C, H, W]` row-major.
    pub pixels: Vec<f32>,
    /// The class of each pixel, `[H, W]` row-major.
    pub labels: Vec<u8>,
    /// For each foreground class `c ≥ 1` (at position `c − 1`), the indices of its pixels:
    /// what foreground oversampling draws from.
    pub foreground: Vec<Vec<u32>>,
}

impl SegImage {
    /// An image and its labels (`classes` classes, background included).
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        pixels: Vec<f32>,
        labels: Vec<u8>,
        classes: usize,
    ) -> Self {
        debug_assert_eq!(pixels.len(), channels * height * width);
        debug_assert_eq!(labels.len(), height * width);
        let mut foreground = vec![Vec::new(); classes.saturating_sub(1)];
        for (i, &label) in labels.iter().enumerate() {
            if let Some(pixels) = (label as usize)
                .checked_sub(1)
                .and_then(|c| foreground.get_mut(c))
            {
                pixels.push(i as u32);
            }
        }
        Self {
            channels,
            height,
            width,
            pixels,
            labels,
            foreground,
        }
    }

    fn bytes(&self) -> usize {
        self.pixels.len() * 4
            + self.labels.len()
            + self.foreground.iter().map(|f| f.len() * 4).sum::<usize>()
    }
}

/// How a folder's files become [`SegImage`]s.
#[derive(Debug)]
struct Decoding {
    mapping: MaskMapping,
    colour_masks: bool,
    normalization: Normalization,
    classes: usize,
    channels: usize,
}

#[derive(Debug)]
enum Entry {
    Memory(Arc<SegImage>),
    File {
        image: PathBuf,
        mask: PathBuf,
        height: usize,
        width: usize,
    },
}

#[derive(Default)]
struct Cache {
    images: HashMap<usize, Arc<SegImage>>,
    /// Least recently used first.
    order: VecDeque<usize>,
    bytes: usize,
    /// Being read by a prefetch.
    pending: HashSet<usize>,
}

impl Cache {
    fn touch(&mut self, id: usize) -> Option<Arc<SegImage>> {
        let image = self.images.get(&id)?.clone();
        if let Some(at) = self.order.iter().position(|&i| i == id) {
            self.order.remove(at);
        }
        self.order.push_back(id);
        Some(image)
    }

    fn insert(&mut self, id: usize, image: Arc<SegImage>, budget: usize) {
        if self.images.contains_key(&id) || image.bytes() > budget {
            return;
        }
        self.bytes += image.bytes();
        self.images.insert(id, image);
        self.order.push_back(id);
        while self.bytes > budget {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(dropped) = self.images.remove(&old) {
                self.bytes -= dropped.bytes();
            }
        }
    }
}

struct Store {
    entries: Vec<Entry>,
    decoding: Option<Decoding>,
    channels: usize,
    cache: Mutex<Cache>,
    budget: usize,
}

impl Store {
    fn get(&self, id: usize) -> Result<Arc<SegImage>> {
        if let Entry::Memory(image) = &self.entries[id] {
            return Ok(image.clone());
        }
        if let Some(hit) = self.lock().touch(id) {
            return Ok(hit);
        }
        let image = Arc::new(self.decode(id)?);
        self.lock().insert(id, image.clone(), self.budget);
        Ok(image)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while the lock was held leaves a cache that is still consistent (each
        // change is completed before the guard drops).
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn decode(&self, id: usize) -> Result<SegImage> {
        match (&self.entries[id], &self.decoding) {
            (Entry::Memory(image), _) => Ok((**image).clone()),
            (Entry::File { image, mask, .. }, Some(decoding)) => decode_pair(image, mask, decoding),
            (Entry::File { .. }, None) => bail!("a file entry without its decoding settings"),
        }
    }
}

/// A set of segmentation images (one split, or all of a folder): shares its store and cache
/// with the other splits of the same data.
#[derive(Clone)]
pub struct SegImages {
    store: Arc<Store>,
    members: Vec<usize>,
}

impl fmt::Debug for SegImages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegImages")
            .field("images", &self.members.len())
            .field("channels", &self.store.channels)
            .finish()
    }
}

impl SegImages {
    /// In-memory images (generated data), all of one channel count.
    pub fn from_memory(channels: usize, images: Vec<SegImage>) -> Self {
        let members = (0..images.len()).collect();
        Self {
            store: Arc::new(Store {
                entries: images
                    .into_iter()
                    .map(|i| Entry::Memory(Arc::new(i)))
                    .collect(),
                decoding: None,
                channels,
                cache: Mutex::new(Cache::default()),
                budget: 0,
            }),
            members,
        }
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Channels per image.
    pub fn channels(&self) -> usize {
        self.store.channels
    }

    /// The (height, width) of image `i`, without reading it.
    pub fn size(&self, i: usize) -> (usize, usize) {
        match &self.store.entries[self.members[i]] {
            Entry::Memory(image) => (image.height, image.width),
            Entry::File { height, width, .. } => (*height, *width),
        }
    }

    /// Image `i`, from the cache or read now.
    pub fn get(&self, i: usize) -> Result<Arc<SegImage>> {
        self.store.get(self.members[i])
    }

    /// Starts reading the images `indices` in the background, if they are files not in the
    /// cache; what [`get`](Self::get) returns is the same either way.
    pub fn prefetch(&self, indices: &[usize]) {
        let wanted: Vec<usize> = {
            let mut cache = self.store.lock();
            let cache = &mut *cache;
            indices
                .iter()
                .map(|&i| self.members[i])
                .filter(|&id| matches!(self.store.entries[id], Entry::File { .. }))
                .filter(|id| !cache.images.contains_key(id) && !cache.pending.contains(id))
                .collect::<Vec<_>>()
                .into_iter()
                .filter(|&id| cache.pending.insert(id))
                .collect()
        };
        if wanted.is_empty() {
            return;
        }
        let store = self.store.clone();
        std::thread::spawn(move || {
            for id in wanted {
                // A failure is reported by `get`, which reads the file again.
                if let Ok(image) = store.decode(id) {
                    store.lock().insert(id, Arc::new(image), store.budget);
                }
                store.lock().pending.remove(&id);
            }
        });
    }

    /// The images of `self` followed by those of `other` (both of one store).
    pub fn joined(&self, other: &SegImages) -> SegImages {
        debug_assert!(Arc::ptr_eq(&self.store, &other.store));
        let mut members = self.members.clone();
        members.extend_from_slice(&other.members);
        SegImages {
            store: self.store.clone(),
            members,
        }
    }

    /// The first `n` images.
    pub fn first(&self, n: usize) -> SegImages {
        SegImages {
            store: self.store.clone(),
            members: self.members.iter().copied().take(n).collect(),
        }
    }

    /// All but the first `n` images.
    pub fn skip(&self, n: usize) -> SegImages {
        SegImages {
            store: self.store.clone(),
            members: self.members.iter().copied().skip(n).collect(),
        }
    }

    fn subset(&self, members: Vec<usize>) -> SegImages {
        SegImages {
            store: self.store.clone(),
            members,
        }
    }
}

/// Segmentation data: classes and the two splits.
#[derive(Debug, Clone)]
pub struct SegmentationData {
    /// Class names, index order (0 is background).
    pub classes: Vec<String>,
    /// The training images.
    pub train: SegImages,
    /// The validation images.
    pub valid: SegImages,
    /// Where the data came from, in words.
    pub description: String,
}

impl SegmentationData {
    /// Channels per image.
    pub fn channels(&self) -> usize {
        self.train.channels()
    }

    /// The smallest (height, width) over both splits.
    pub fn smallest_size(&self) -> (usize, usize) {
        let all = self.train.joined(&self.valid);
        (0..all.len())
            .map(|i| all.size(i))
            .fold((usize::MAX, usize::MAX), |(h, w), (a, b)| {
                (h.min(a), w.min(b))
            })
    }
}

/// How a mask folder is read; recorded in the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FolderReading {
    /// Per-image intensity normalisation.
    #[serde(default)]
    pub normalization: Normalization,
    /// How mask values are read.
    #[serde(default)]
    pub masks: MaskMode,
}

struct Pair {
    image: PathBuf,
    mask: PathBuf,
}

/// What the first pass learns of a pair: its size and colour, and its mask's values.
struct Surveyed {
    height: usize,
    width: usize,
    colour_image: bool,
    mask: RawMask,
    colour_mask: bool,
}

/// Loads `root/images` + `root/masks` at their own resolution.
pub fn load_segmentation_folder(
    root: &Path,
    seed: u64,
    reading: FolderReading,
) -> Result<SegmentationData> {
    load_segmentation_folder_with_budget(root, seed, reading, CACHE_BYTES)
}

fn load_segmentation_folder_with_budget(
    root: &Path,
    seed: u64,
    reading: FolderReading,
    budget: usize,
) -> Result<SegmentationData> {
    reading.normalization.check()?;
    let pairs = list_pairs(root)?;
    let named = read_classes_file(root)?;
    let limit = named.is_none() && reading.masks == MaskMode::Classes;
    let mut survey = MaskSurvey::default();
    let mut sizes = Vec::with_capacity(pairs.len());
    let mut colour_image = false;
    let mut colour_mask: Option<(bool, PathBuf)> = None;
    for chunk in pairs.chunks(SCAN_CHUNK) {
        let surveyed: Vec<Result<Surveyed>> = chunk.par_iter().map(survey_pair).collect();
        for (pair, surveyed) in chunk.iter().zip(surveyed) {
            let surveyed = surveyed?;
            match &colour_mask {
                Some((colour, first)) if *colour != surveyed.colour_mask => bail!(
                    "masks mix colour and gray images ({} is {}, {} is {}); use one kind",
                    first.display(),
                    if *colour { "colour" } else { "gray" },
                    pair.mask.display(),
                    if surveyed.colour_mask {
                        "colour"
                    } else {
                        "gray"
                    },
                ),
                Some(_) => {}
                None => colour_mask = Some((surveyed.colour_mask, pair.mask.clone())),
            }
            if named.is_none() {
                survey.add(&surveyed.mask, &pair.mask, limit)?;
            }
            colour_image |= surveyed.colour_image;
            sizes.push((surveyed.height, surveyed.width));
        }
    }
    let masks_dir = root.join("masks");
    let (classes, mapping) = match named {
        Some(named) if reading.masks == MaskMode::Classes => named,
        Some(_) => bail!(
            "--masks instances reads any non-zero value as foreground; remove classes.json or drop --masks instances"
        ),
        None => classes_from_survey(&survey, reading.masks, &masks_dir)?,
    };
    let channels = if colour_image { 3 } else { 1 };
    let decoding = Decoding {
        mapping,
        colour_masks: colour_mask.is_some_and(|(c, _)| c),
        normalization: reading.normalization,
        classes: classes.len(),
        channels,
    };
    // The second pass decodes every pair as training will (so a bad image or mask value is
    // reported now) and keeps what fits in the cache.
    let mut cache = Cache::default();
    for (start, chunk) in (0..pairs.len())
        .step_by(SCAN_CHUNK)
        .zip(pairs.chunks(SCAN_CHUNK))
    {
        let decoded: Vec<Result<SegImage>> = chunk
            .par_iter()
            .map(|pair| decode_pair(&pair.image, &pair.mask, &decoding))
            .collect();
        for (offset, image) in decoded.into_iter().enumerate() {
            let image = image?;
            if cache.bytes + image.bytes() <= budget {
                cache.insert(start + offset, Arc::new(image), budget);
            }
        }
    }
    let entries = pairs
        .into_iter()
        .zip(&sizes)
        .map(|(pair, &(height, width))| Entry::File {
            image: pair.image,
            mask: pair.mask,
            height,
            width,
        })
        .collect::<Vec<_>>();
    let count = entries.len();
    let (train_idx, valid_idx) = split_indices(count, seed);
    if valid_idx.is_empty() {
        bail!(
            "{}: at least two images are needed (one for validation)",
            root.display()
        );
    }
    let all = SegImages {
        store: Arc::new(Store {
            entries,
            decoding: Some(decoding),
            channels,
            cache: Mutex::new(cache),
            budget,
        }),
        members: Vec::new(),
    };
    let (min, max) = sizes
        .iter()
        .fold(((usize::MAX, usize::MAX), (0, 0)), |(lo, hi), &(h, w)| {
            ((lo.0.min(h), lo.1.min(w)), (hi.0.max(h), hi.1.max(w)))
        });
    let size_text = if min == max {
        format!("{}x{}", min.0, min.1)
    } else {
        format!("{}x{} to {}x{}", min.0, min.1, max.0, max.1)
    };
    Ok(SegmentationData {
        description: format!(
            "mask folder {} ({} classes: {}; {channels} channel(s), {size_text} at native size), train: {}, validation: {}",
            root.display(),
            classes.len(),
            classes.join(", "),
            train_idx.len(),
            valid_idx.len()
        ),
        classes,
        train: all.subset(train_idx),
        valid: all.subset(valid_idx),
    })
}

/// Every image of `root/images` with its mask of the same stem in `root/masks`.
fn list_pairs(root: &Path) -> Result<Vec<Pair>> {
    let images_dir = root.join("images");
    let masks_dir = root.join("masks");
    if !images_dir.is_dir() || !masks_dir.is_dir() {
        bail!(
            "{}: expected the folders images/ and masks/",
            root.display()
        );
    }
    let files = |dir: &Path| -> Result<Vec<PathBuf>> {
        Ok(sorted_entries(dir)?
            .into_iter()
            .filter(|p| p.is_file() && is_image(p))
            .collect())
    };
    let images = files(&images_dir)?;
    if images.is_empty() {
        bail!("{}: no .png, .jpg or .tif images", images_dir.display());
    }
    let masks = files(&masks_dir)?;
    images
        .into_iter()
        .map(|image| {
            let stem = image.file_stem().unwrap_or_default();
            let Some(mask) = masks.iter().find(|m| m.file_stem() == Some(stem)) else {
                bail!(
                    "image {} has no mask in {}",
                    image.display(),
                    masks_dir.display()
                );
            };
            Ok(Pair {
                image,
                mask: mask.clone(),
            })
        })
        .collect()
}

fn survey_pair(pair: &Pair) -> Result<Surveyed> {
    let (width, height, colour_image) = image_header(&pair.image)?;
    let mask = open_image(&pair.mask)?;
    if (mask.width(), mask.height()) != (width, height) {
        bail!(
            "mask {} is {}x{} but its image is {}x{}",
            pair.mask.display(),
            mask.width(),
            mask.height(),
            width,
            height
        );
    }
    let colour_mask = mask.color().has_color();
    Ok(Surveyed {
        height: height as usize,
        width: width as usize,
        colour_image,
        mask: raw_mask(&mask, colour_mask),
        colour_mask,
    })
}

fn decode_pair(image_path: &Path, mask_path: &Path, decoding: &Decoding) -> Result<SegImage> {
    let image = open_image(image_path)?;
    let mask = open_image(mask_path)?;
    let (width, height) = (image.width() as usize, image.height() as usize);
    if (mask.width() as usize, mask.height() as usize) != (width, height) {
        bail!(
            "mask {} is {}x{} but its image is {width}x{height}",
            mask_path.display(),
            mask.width(),
            mask.height()
        );
    }
    let mut pixels = planar_pixels(&image, decoding.channels);
    decoding.normalization.apply(&mut pixels);
    let raw = raw_mask(&mask, decoding.colour_masks);
    let labels = classes_of(&raw, &decoding.mapping, decoding.classes, width, mask_path)?;
    Ok(SegImage::new(
        decoding.channels,
        height,
        width,
        pixels,
        labels,
        decoding.classes,
    ))
}

/// An image file as the segmenter reads it: the decoded image (to draw on) and its
/// normalised pixels `[channels, H, W]`.
pub fn read_image(
    path: &Path,
    channels: usize,
    normalization: Normalization,
) -> Result<(image::DynamicImage, Vec<f32>)> {
    let image = open_image(path)?;
    let mut pixels = planar_pixels(&image, channels);
    normalization.apply(&mut pixels);
    Ok((image, pixels))
}

/// An image's values in [0, 1] as `[C, H, W]`: gray as one channel, colour as three (alpha
/// dropped); 16-bit images keep their precision.
fn planar_pixels(image: &image::DynamicImage, channels: usize) -> Vec<f32> {
    if channels == 1 {
        return image.to_luma32f().into_raw();
    }
    let rgb = image.to_rgb32f();
    let plane = rgb.width() as usize * rgb.height() as usize;
    let mut out = vec![0.0; 3 * plane];
    for (i, pixel) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = pixel.0[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str, sizes: &[(u32, u32)]) -> PathBuf {
        let root = std::env::temp_dir().join(format!("losskit-seg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("images")).unwrap();
        std::fs::create_dir_all(root.join("masks")).unwrap();
        for (i, &(w, h)) in sizes.iter().enumerate() {
            let image =
                image::ImageBuffer::from_fn(w, h, |x, y| image::Luma([(x * 1000 + y * 7) as u16]));
            image.save(root.join(format!("images/{i}.png"))).unwrap();
            let mask = image::GrayImage::from_fn(w, h, |x, _| {
                image::Luma([if x < w / 2 { 0 } else { 255 }])
            });
            mask.save(root.join(format!("masks/{i}.png"))).unwrap();
        }
        root
    }

    #[test]
    fn images_of_different_sizes_load_at_their_own_size() {
        let root = folder("sizes", &[(30, 20), (17, 41), (64, 64), (8, 9), (12, 12)]);
        let data = load_segmentation_folder(&root, 1, FolderReading::default()).unwrap();
        assert_eq!(data.classes, ["background", "class_1"]);
        let all = data.train.joined(&data.valid);
        let mut sizes: Vec<(usize, usize)> = (0..all.len()).map(|i| all.size(i)).collect();
        sizes.sort();
        assert_eq!(sizes, [(9, 8), (12, 12), (20, 30), (41, 17), (64, 64)]);
        for i in 0..all.len() {
            let image = all.get(i).unwrap();
            assert_eq!((image.height, image.width), all.size(i));
            assert_eq!(image.labels.len(), image.height * image.width);
            assert_eq!(
                image.foreground[0].len(),
                image.labels.iter().filter(|&&l| l == 1).count()
            );
        }
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_cache_smaller_than_the_data_reads_images_again_with_the_same_result() {
        let root = folder("cache", &[(32, 32), (32, 32), (32, 32), (32, 32), (32, 32)]);
        let full = load_segmentation_folder(&root, 3, FolderReading::default()).unwrap();
        let small =
            load_segmentation_folder_with_budget(&root, 3, FolderReading::default(), 6000).unwrap();
        let (a, b) = (
            full.train.joined(&full.valid),
            small.train.joined(&small.valid),
        );
        b.prefetch(&[0, 1, 2, 3, 4]);
        for round in 0..2 {
            for i in 0..a.len() {
                assert_eq!(
                    *a.get(i).unwrap(),
                    *b.get(i).unwrap(),
                    "image {i}, round {round}"
                );
            }
        }
        assert!(small.train.store.lock().bytes <= 6000);
        let _ = std::fs::remove_dir_all(root);
    }
}
