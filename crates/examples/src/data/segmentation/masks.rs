//! Mask files to class indices: class-index and gray-level masks, RGB (and palette) colour
//! masks with an optional `classes.json`, and instance-label masks.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The most classes a mask folder read without `classes.json` may hold (distinct levels or
/// colours); more usually means lossy compression, smoothing or instance labels.
pub const MAX_MASK_LEVELS: usize = 16;

/// How mask pixel values are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskMode {
    /// Class indices (0..C−1), gray levels (0/255, 0/128/255: mapped to 0, 1, 2 in ascending
    /// order), or colours (black first, then ascending RGB; or as `classes.json` says).
    #[default]
    Classes,
    /// Instance labels as StarDist and Cellpose ship them (0 background, one id per object,
    /// any bit depth): every non-zero pixel is foreground (two classes).
    Instances,
}

impl MaskMode {
    /// Parses `classes` or `instances`.
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim() {
            "classes" => Ok(Self::Classes),
            "instances" => Ok(Self::Instances),
            other => bail!("--masks `{other}`: expected classes or instances"),
        }
    }
}

/// A mask's pixels as read from its file, before classes are assigned.
pub(crate) enum RawMask {
    /// Gray levels (8-bit values widened, not scaled; 16-bit as they are).
    Levels(Vec<u16>),
    /// RGB colours (alpha dropped; palette images expanded).
    Colours(Vec<[u8; 3]>),
}

/// Reads a decoded mask: colour masks as colours (when `colour` is set, every mask is read as
/// colours, a gray one as (v, v, v)), others as levels.
pub(crate) fn raw_mask(mask: &image::DynamicImage, colour: bool) -> RawMask {
    use image::DynamicImage as D;
    if colour {
        return RawMask::Colours(mask.to_rgb8().pixels().map(|p| p.0).collect());
    }
    match mask {
        D::ImageLuma16(_) | D::ImageLumaA16(_) | D::ImageRgb16(_) | D::ImageRgba16(_) => {
            RawMask::Levels(mask.to_luma16().pixels().map(|p| p.0[0]).collect())
        }
        _ => RawMask::Levels(
            mask.to_luma8()
                .pixels()
                .map(|p| u16::from(p.0[0]))
                .collect(),
        ),
    }
}

/// One entry of `classes.json`: a class name and the mask value or colour that marks it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassEntry {
    name: String,
    #[serde(default)]
    value: Option<u16>,
    #[serde(default)]
    color: Option<[u8; 3]>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassesFile {
    classes: Vec<ClassEntry>,
}

/// How raw mask values become class indices; decided once for a whole folder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MaskMapping {
    /// The level is the class index.
    Direct,
    /// The class is the level's position in this list.
    Levels(Vec<u16>),
    /// The class is the colour's position in this list.
    Colours(Vec<[u8; 3]>),
    /// 0 is background, anything else foreground.
    Instances,
}

/// What a scan of every mask found: each level or colour and the first mask holding it.
#[derive(Default)]
pub(crate) struct MaskSurvey {
    levels: BTreeMap<u16, PathBuf>,
    colours: BTreeMap<[u8; 3], PathBuf>,
}

impl MaskSurvey {
    /// Adds a mask's values; fails once more than [`MAX_MASK_LEVELS`] are seen (unless the
    /// masks are instance labels or `classes.json` names the values).
    pub(crate) fn add(&mut self, mask: &RawMask, path: &Path, limit: bool) -> Result<()> {
        match mask {
            RawMask::Levels(levels) => {
                for &level in levels {
                    self.levels
                        .entry(level)
                        .or_insert_with(|| path.to_path_buf());
                }
            }
            RawMask::Colours(colours) => {
                for &colour in colours {
                    self.colours
                        .entry(colour)
                        .or_insert_with(|| path.to_path_buf());
                }
            }
        }
        if limit && self.levels.len().max(self.colours.len()) > MAX_MASK_LEVELS {
            bail!(
                "mask {} brings the masks to more than {MAX_MASK_LEVELS} distinct values; for \
                 instance labels (one id per object) pass --masks instances, for more classes \
                 name them in classes.json beside masks/, otherwise use lossless PNG class-index masks \
                 (JPEG and smoothing add values)",
                path.display()
            );
        }
        Ok(())
    }
}

/// The classes of a `classes.json`, if the folder has one.
pub(crate) fn read_classes_file(root: &Path) -> Result<Option<(Vec<String>, MaskMapping)>> {
    let path = root.join("classes.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let file: ClassesFile = serde_json::from_str(&text).map_err(|error| {
        anyhow::anyhow!(
            "{}: {error}; expected {{\"classes\": [{{\"name\": \"background\", \"color\": [0, 0, 0]}}, ...]}} \
             (or \"value\": N for gray masks)",
            path.display()
        )
    })?;
    if file.classes.len() < 2 {
        bail!("{}: at least two classes are needed", path.display());
    }
    let names: Vec<String> = file.classes.iter().map(|c| c.name.clone()).collect();
    let by_colour = file
        .classes
        .iter()
        .all(|c| c.color.is_some() && c.value.is_none());
    let by_value = file
        .classes
        .iter()
        .all(|c| c.value.is_some() && c.color.is_none());
    let mapping = if by_colour {
        MaskMapping::Colours(file.classes.iter().filter_map(|c| c.color).collect())
    } else if by_value {
        MaskMapping::Levels(file.classes.iter().filter_map(|c| c.value).collect())
    } else {
        bail!(
            "{}: every class needs either \"color\": [R, G, B] (colour masks) or \"value\": N (gray masks), the same for all",
            path.display()
        );
    };
    let distinct = match &mapping {
        MaskMapping::Colours(c) => c.iter().collect::<BTreeSet<_>>().len(),
        MaskMapping::Levels(l) => l.iter().collect::<BTreeSet<_>>().len(),
        _ => 0,
    };
    if distinct != names.len() {
        bail!("{}: two classes share a value or colour", path.display());
    }
    Ok(Some((names, mapping)))
}

/// The classes and mapping the survey implies (no `classes.json`).
pub(crate) fn classes_from_survey(
    survey: &MaskSurvey,
    mode: MaskMode,
    masks_dir: &Path,
) -> Result<(Vec<String>, MaskMapping)> {
    if mode == MaskMode::Instances {
        return Ok((
            vec!["background".into(), "foreground".into()],
            MaskMapping::Instances,
        ));
    }
    let (names, mapping) = if !survey.colours.is_empty() {
        // Black (background, when present) sorts first.
        let colours: Vec<[u8; 3]> = survey.colours.keys().copied().collect();
        let names: Vec<String> = colours
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 && *c == [0, 0, 0] {
                    "background".to_string()
                } else {
                    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
                }
            })
            .collect();
        (names, MaskMapping::Colours(colours))
    } else {
        let levels: Vec<u16> = survey.levels.keys().copied().collect();
        let max = levels.last().copied().unwrap_or(0);
        if (max as usize) < MAX_MASK_LEVELS {
            // Class-index masks use 0..C-1: a class that no mask holds, below one that some
            // mask does, is a stray value, not an empty class.
            if let Some(missing) = (0..max).find(|c| !levels.contains(c)) {
                bail!(
                    "mask {} holds class {max}, but no mask holds class {missing}: class-index masks \
                     use 0..C-1 without gaps (gray-level masks such as 0/128/255 are mapped in order; \
                     classes.json beside masks/ can name any values)",
                    survey
                        .levels
                        .get(&max)
                        .map_or_else(String::new, |p| p.display().to_string())
                );
            }
            let names = (0..=max).map(class_name).collect();
            (names, MaskMapping::Direct)
        } else {
            let names = (0..levels.len() as u16).map(class_name).collect();
            (names, MaskMapping::Levels(levels))
        }
    };
    if names.len() < 2 {
        bail!(
            "{}: the masks hold a single class; expected at least two",
            masks_dir.display()
        );
    }
    Ok((names, mapping))
}

fn class_name(class: u16) -> String {
    if class == 0 {
        "background".into()
    } else {
        format!("class_{class}")
    }
}

/// A mask's class indices under `mapping`; a value the mapping does not know is an error that
/// names the mask, the value and the pixel.
pub(crate) fn classes_of(
    mask: &RawMask,
    mapping: &MaskMapping,
    classes: usize,
    width: usize,
    path: &Path,
) -> Result<Vec<u8>> {
    let unknown = |index: usize, value: String| {
        anyhow::anyhow!(
            "mask {} holds {value} at pixel ({}, {}), which is not one of the {classes} classes",
            path.display(),
            index % width.max(1),
            index / width.max(1)
        )
    };
    match (mask, mapping) {
        (RawMask::Levels(levels), MaskMapping::Instances) => {
            Ok(levels.iter().map(|&l| u8::from(l != 0)).collect())
        }
        (RawMask::Colours(colours), MaskMapping::Instances) => {
            Ok(colours.iter().map(|&c| u8::from(c != [0, 0, 0])).collect())
        }
        (RawMask::Levels(levels), MaskMapping::Direct) => levels
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                if (l as usize) < classes {
                    Ok(l as u8)
                } else {
                    Err(unknown(i, format!("class {l}")))
                }
            })
            .collect(),
        (RawMask::Levels(levels), MaskMapping::Levels(known)) => levels
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                known
                    .iter()
                    .position(|&k| k == l)
                    .map(|c| c as u8)
                    .ok_or_else(|| unknown(i, format!("value {l}")))
            })
            .collect(),
        (RawMask::Colours(colours), MaskMapping::Colours(known)) => colours
            .iter()
            .enumerate()
            .map(|(i, c)| {
                known
                    .iter()
                    .position(|k| k == c)
                    .map(|c| c as u8)
                    .ok_or_else(|| {
                        unknown(i, format!("colour #{:02x}{:02x}{:02x}", c[0], c[1], c[2]))
                    })
            })
            .collect(),
        (RawMask::Levels(_), MaskMapping::Colours(_)) => bail!(
            "mask {} is gray but the classes are colours (classes.json names colours)",
            path.display()
        ),
        (RawMask::Colours(_), _) => bail!(
            "mask {} is in colour but the classes are gray values",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn survey(masks: &[RawMask]) -> Result<MaskSurvey> {
        let mut survey = MaskSurvey::default();
        for mask in masks {
            survey.add(mask, Path::new("m.png"), true)?;
        }
        Ok(survey)
    }

    #[test]
    fn binary_masks_of_0_and_255_are_two_classes_in_order() {
        let mask = RawMask::Levels(vec![0, 255, 255, 0]);
        let s = survey(&[RawMask::Levels(vec![0, 255, 255, 0])]).unwrap();
        let (names, mapping) = classes_from_survey(&s, MaskMode::Classes, Path::new("m")).unwrap();
        assert_eq!(names, ["background", "class_1"]);
        assert_eq!(
            classes_of(&mask, &mapping, 2, 2, Path::new("m")).unwrap(),
            [0, 1, 1, 0]
        );
    }

    #[test]
    fn colours_sort_black_first_and_unknown_colours_are_named() {
        let mask = RawMask::Colours(vec![[255, 0, 0], [0, 0, 0], [0, 255, 0]]);
        let s = survey(&[RawMask::Colours(vec![[255, 0, 0], [0, 0, 0], [0, 255, 0]])]).unwrap();
        let (names, mapping) = classes_from_survey(&s, MaskMode::Classes, Path::new("m")).unwrap();
        assert_eq!(names, ["background", "#00ff00", "#ff0000"]);
        assert_eq!(
            classes_of(&mask, &mapping, 3, 3, Path::new("m")).unwrap(),
            [2, 0, 1]
        );
        let stray = RawMask::Colours(vec![[1, 2, 3]]);
        let error = classes_of(&stray, &mapping, 3, 1, Path::new("m.png")).unwrap_err();
        assert!(
            error.to_string().contains("#010203 at pixel (0, 0)"),
            "{error}"
        );
    }

    #[test]
    fn instance_labels_beyond_the_level_limit_are_foreground() {
        let labels: Vec<u16> = (0..40).collect();
        assert!(survey(&[RawMask::Levels(labels.clone())]).is_err());
        let mut s = MaskSurvey::default();
        s.add(&RawMask::Levels(labels.clone()), Path::new("m"), false)
            .unwrap();
        let (names, mapping) =
            classes_from_survey(&s, MaskMode::Instances, Path::new("m")).unwrap();
        assert_eq!(names.len(), 2);
        let classes =
            classes_of(&RawMask::Levels(labels), &mapping, 2, 40, Path::new("m")).unwrap();
        assert_eq!(classes[0], 0);
        assert!(classes[1..].iter().all(|&c| c == 1));
    }

    #[test]
    fn class_index_gaps_are_refused() {
        let s = survey(&[RawMask::Levels(vec![0, 1, 7])]).unwrap();
        let error = classes_from_survey(&s, MaskMode::Classes, Path::new("m")).unwrap_err();
        assert!(error.to_string().contains("holds class 7"), "{error}");
    }
}
