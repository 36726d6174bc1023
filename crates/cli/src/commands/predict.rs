//! `losskit predict`: a trained model on new images (class probabilities in a CSV, or
//! full-resolution masks with outlined previews), and `losskit export`: its weights as
//! safetensors or burnpack.

use std::{fmt::Write as _, path::Path};

use anyhow::{Result, bail};
use losskit_core::atomic_write::write_atomically;
use losskit_examples::predict::{
    ExportFormat, Layout, Prediction, Predictor, input_files, overlay,
};

use crate::commands::device_from_flag;

/// Predicts every image `input` names into `out`; a bad image gets one line on stderr and the
/// rest go on. Fails (after the others are written) when any image failed.
pub fn run(checkpoint: &Path, input: &Path, out: &Path, device: Option<&str>) -> Result<String> {
    let device = device_from_flag(device)?;
    let predictor = Predictor::load(checkpoint, &device)?;
    let files = input_files(input)?;
    if out.is_file() {
        bail!(
            "--out {} is a file; expected a folder for the predictions",
            out.display()
        );
    }
    if input.is_dir() && same_folder(input, out) {
        bail!(
            "--out {} is the input folder; predictions go into a folder of their own, so no input is overwritten or read back",
            out.display()
        );
    }
    std::fs::create_dir_all(out)
        .map_err(|e| anyhow::anyhow!("cannot create --out {}: {e}", out.display()))?;
    let classes = &predictor.spec().classes;
    let mut csv = String::from("file,class");
    for class in classes {
        let _ = write!(csv, ",p_{class}");
    }
    csv.push('\n');
    let mut failed = 0;
    let mut written = 0;
    for file in &files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let result = predictor
            .predict(file)
            .and_then(|prediction| match prediction {
                Prediction::Classes(probabilities) => {
                    let best = probabilities
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map_or(0, |(i, _)| i);
                    let _ = write!(csv, "{},{}", csv_field(&name), csv_field(&classes[best]));
                    for p in probabilities {
                        let _ = write!(csv, ",{p}");
                    }
                    csv.push('\n');
                    Ok(())
                }
                Prediction::Mask {
                    classes: mask,
                    image,
                } => {
                    let stem = file
                        .file_stem()
                        .map(|s| s.to_string_lossy().to_string())
                        .unwrap_or_default();
                    let (w, h) = (image.width(), image.height());
                    let mask_image = image::GrayImage::from_raw(w, h, mask.clone())
                        .ok_or_else(|| anyhow::anyhow!("the mask does not fit the image"))?;
                    write_png(
                        &out.join(format!("{stem}.mask.png")),
                        &image::DynamicImage::ImageLuma8(mask_image),
                    )?;
                    write_png(
                        &out.join(format!("{stem}.overlay.png")),
                        &image::DynamicImage::ImageRgb8(overlay(&image, &mask)),
                    )?;
                    Ok(())
                }
            });
        match result {
            Ok(()) => written += 1,
            Err(error) => {
                failed += 1;
                tracing::warn!(
                    "predict: {}: {}",
                    file.display(),
                    format!("{error:#}").replace('\n', " ")
                );
            }
        }
    }
    let what = if predictor.spec().task == losskit_optim::TaskKind::Classification {
        write_atomically(&out.join("predictions.csv"), csv.as_bytes())?;
        format!("{}/predictions.csv", out.display())
    } else {
        format!(
            "{}/NAME.mask.png (class indices) and NAME.overlay.png",
            out.display()
        )
    };
    if failed > 0 {
        bail!(
            "{failed} of {} images could not be predicted (see the lines above); the other {written} are in {what}",
            files.len()
        );
    }
    Ok(format!("predicted {written} images: {what}"))
}

fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn write_png(path: &Path, image: &image::DynamicImage) -> Result<()> {
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| anyhow::anyhow!("cannot encode {}: {e}", path.display()))?;
    Ok(write_atomically(path, &bytes)?)
}

/// Exports the model of `checkpoint` to `out` (and its description to `out` with `.json`).
pub fn export(
    checkpoint: &Path,
    format: ExportFormat,
    layout: Layout,
    out: &Path,
) -> Result<String> {
    if out.is_dir() {
        bail!(
            "--out {} is a folder; expected a file such as model.safetensors",
            out.display()
        );
    }
    let expected = match format {
        ExportFormat::Safetensors => "safetensors",
        ExportFormat::Burnpack => "bpk",
    };
    if out.extension().is_none_or(|e| e != expected) {
        bail!(
            "--out {}: a {expected} export is named *.{expected} (predict and load recognise it by that)",
            out.display()
        );
    }
    let device = device_from_flag(None)?;
    let predictor = Predictor::load(checkpoint, &device)?;
    predictor.export(out, format, layout)?;
    Ok(format!(
        "wrote {} and {}",
        out.display(),
        out.with_extension("json").display()
    ))
}
