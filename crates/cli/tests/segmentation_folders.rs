//! Segmentation on image + mask folders at their own resolution, through the binary: every
//! image and mask format the loader promises, patch training that resumes exactly, and
//! whole-image validation of images of any size.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use common::{losskit, text};

use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("losskit-seg-folders-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    dir
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A disc of radius `r` at (cx, cy): the "object" of each generated image.
fn inside(x: u32, y: u32, (cx, cy, r): (u32, u32, u32)) -> bool {
    let (dx, dy) = (x as i64 - cx as i64, y as i64 - cy as i64);
    dx * dx + dy * dy <= (r * r) as i64
}

/// Image sizes that are not multiples of the U-Net's down-sampling and differ per image.
const SIZES: [(u32, u32); 5] = [(40, 30), (52, 64), (33, 47), (64, 64), (24, 20)];

fn disc(i: usize, (w, h): (u32, u32)) -> (u32, u32, u32) {
    (w / 2 + i as u32 % 3, h / 2, w.min(h) / 4)
}

/// Trains one epoch of a few steps on `root` with tiny settings; returns the run folder.
fn train(root: &Path, extra: &[&str]) -> (PathBuf, Output) {
    let out = root.join("run");
    let mut args = vec![
        "train",
        "--task",
        "segmentation",
        "--data",
        root.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "2",
        "--width",
        "4",
        "--depth",
        "2",
        "--patch",
        "16",
        "--progress",
        "quiet",
        "--force",
    ];
    args.extend_from_slice(extra);
    (out.clone(), losskit(&args))
}

/// Checks a finished run: per-class Dice for `classes`, the settings recorded, and that
/// `evaluate` scores every validation image at its own size.
fn check_run(out: &Path, output: &Output, classes: &[&str]) {
    assert!(output.status.success(), "{}", text(output));
    let summary = json(&out.join("summary.json"));
    assert!(summary["val_dice"].is_number(), "{summary}");
    let names: Vec<&str> = summary["val_class_dice"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = classes.to_vec();
    expected.sort();
    assert_eq!(names, expected, "{summary}");
    let run = &summary["run"];
    assert_eq!(
        run["segmentation"]["patches"]["size"],
        serde_json::json!([16, 16])
    );
    assert_eq!(run["segmentation"]["depth"], 2);
    assert!(
        run["data"]["reading"]["normalization"]["method"].is_string(),
        "{run}"
    );
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    for class in classes {
        let column = format!("val_dice_{}", class.trim_start_matches('#'));
        assert!(
            csv.lines().next().unwrap().contains(&column),
            "{column} in {csv}"
        );
    }
    let evaluated = losskit(&["evaluate", "--checkpoint", out.to_str().unwrap()]);
    assert!(evaluated.status.success(), "{}", text(&evaluated));
    let scores: Value = serde_json::from_slice(&evaluated.stdout).unwrap();
    assert_eq!(scores["val_dice"], summary["val_dice"], "{scores}");
}

#[test]
fn gray_png_images_of_different_sizes_with_0_255_masks() {
    let root = scratch("gray");
    for (i, &(w, h)) in SIZES.iter().enumerate() {
        let d = disc(i, (w, h));
        image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([if inside(x, y, d) {
                180
            } else {
                40 + (x % 5) as u8
            }])
        })
        .save(root.join(format!("images/{i}.png")))
        .unwrap();
        image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([if inside(x, y, d) { 255 } else { 0 }])
        })
        .save(root.join(format!("masks/{i}.png")))
        .unwrap();
    }
    let (out, output) = train(&root, &[]);
    check_run(&out, &output, &["background", "class_1"]);
    // The run folder's config.toml trains the same run again, to the last digit.
    let again = root.join("again");
    let output = losskit(&[
        "train",
        "--config",
        out.join("config.toml").to_str().unwrap(),
        "--progress",
        "quiet",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let (a, b) = (
        json(&out.join("summary.json")),
        json(&again.join("summary.json")),
    );
    assert_eq!(a["run"], b["run"]);
    for key in ["val_loss", "val_dice", "train_loss"] {
        assert_eq!(a[key], b[key], "{key}");
    }
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn sixteen_bit_tiff_images_with_instance_label_masks() {
    let root = scratch("tiff");
    for (i, &(w, h)) in SIZES.iter().enumerate() {
        let d = disc(i, (w, h));
        // 16-bit values far above 255: precision an 8-bit conversion would lose.
        image::ImageBuffer::from_fn(w, h, |x, y| {
            image::Luma([if inside(x, y, d) {
                40_000u16
            } else {
                1_000 + x as u16
            }])
        })
        .save(root.join(format!("images/{i}.tif")))
        .unwrap();
        // One id per "object" column band, more ids than the 16 levels of class masks.
        image::ImageBuffer::from_fn(w, h, |x, y| {
            image::Luma([if inside(x, y, d) {
                1 + (x % 20) as u16 + 20 * i as u16
            } else {
                0
            }])
        })
        .save(root.join(format!("masks/{i}.png")))
        .unwrap();
    }
    let (_, refused) = train(&root, &[]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--masks instances"),
        "{}",
        text(&refused)
    );
    let (out, output) = train(&root, &["--masks", "instances", "--normalize", "zscore"]);
    check_run(&out, &output, &["background", "foreground"]);
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["run"]["data"]["reading"]["masks"], "instances");
    assert_eq!(
        summary["run"]["data"]["reading"]["normalization"]["method"],
        "z_score"
    );
    let _ = std::fs::remove_dir_all(root);
}

/// An indexed-colour PNG: `index` picks each pixel's entry of `palette`.
fn write_palette_png(
    path: &Path,
    (w, h): (u32, u32),
    palette: &[[u8; 3]],
    index: impl Fn(u32, u32) -> u8,
) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut encoder = png::Encoder::new(file, w, h);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_palette(palette.iter().flatten().copied().collect::<Vec<u8>>());
    let mut writer = encoder.write_header().unwrap();
    let data: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| index(x, y))
        .collect();
    writer.write_image_data(&data).unwrap();
}

#[test]
fn rgba_and_palette_images_with_colour_masks_named_by_classes_json() {
    let root = scratch("colour");
    let palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]];
    for (i, &(w, h)) in SIZES.iter().enumerate() {
        let d = disc(i, (w, h));
        let class = |x: u32, y: u32| -> u8 {
            if inside(x, y, d) {
                1 + u8::from(x > d.0)
            } else {
                0
            }
        };
        if i % 2 == 0 {
            // RGBA: the alpha channel must be dropped.
            image::RgbaImage::from_fn(w, h, |x, y| {
                let c = class(x, y);
                image::Rgba([60 * c, 200 - 50 * c, 90, 128])
            })
            .save(root.join(format!("images/{i}.png")))
            .unwrap();
        } else {
            write_palette_png(
                &root.join(format!("images/{i}.png")),
                (w, h),
                &[[10, 20, 30], [200, 100, 50], [50, 220, 90]],
                class,
            );
        }
        write_palette_png(
            &root.join(format!("masks/{i}.png")),
            (w, h),
            &palette,
            class,
        );
    }
    std::fs::write(
        root.join("classes.json"),
        r#"{"classes": [{"name": "background", "color": [0, 0, 0]}, {"name": "left", "color": [255, 0, 0]}, {"name": "right", "color": [0, 255, 0]}]}"#,
    )
    .unwrap();
    let (out, output) = train(&root, &[]);
    check_run(&out, &output, &["background", "left", "right"]);
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["run"]["channels"], 3);
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn patch_training_resumed_gives_the_uninterrupted_run() {
    let root = scratch("resume");
    for (i, &(w, h)) in SIZES.iter().enumerate() {
        let d = disc(i, (w, h));
        image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([if inside(x, y, d) {
                200
            } else {
                (x * 7 % 50) as u8
            }])
        })
        .save(root.join(format!("images/{i}.png")))
        .unwrap();
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([u8::from(inside(x, y, d))]))
            .save(root.join(format!("masks/{i}.png")))
            .unwrap();
    }
    let straight = root.join("straight");
    let parts = root.join("parts");
    let run = |out: &Path, epochs: &str, resume: bool| {
        let mut args = vec![
            "train",
            "--out",
            out.to_str().unwrap(),
            "--epochs",
            epochs,
            "--progress",
            "quiet",
        ];
        if resume {
            args.push("--resume");
        } else {
            args.extend_from_slice(&[
                "--task",
                "segmentation",
                "--data",
                root.to_str().unwrap(),
                "--steps-per-epoch",
                "3",
                "--batch-size",
                "2",
                "--width",
                "4",
                "--depth",
                "2",
                "--patch",
                "16",
                // The cosine default spans the run's epochs, which the resume extends.
                "--schedule",
                "constant",
            ]);
        }
        let output = losskit(&args);
        assert!(output.status.success(), "{}", text(&output));
    };
    run(&straight, "2", false);
    run(&parts, "1", false);
    run(&parts, "2", true);
    let rows = |out: &Path| -> Vec<Vec<String>> {
        std::fs::read_to_string(out.join("metrics.csv"))
            .unwrap()
            .lines()
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect()
    };
    let (a, b) = (rows(&straight), rows(&parts));
    assert_eq!(a[0], b[0]);
    let header = &a[0];
    // The second epoch is computed after the resume from exact weights: equal to the last
    // digit (seconds aside). The first epoch's row went through the checkpoint's JSON.
    let close = |x: &str, y: &str| {
        let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
        (x - y).abs() <= 1e-12 * x.abs().max(1.0) || x.is_nan() && y.is_nan()
    };
    for (column, name) in header.iter().enumerate().filter(|(_, n)| *n != "seconds") {
        if name == "avg_loss_all_epochs" {
            assert!(close(&a[2][column], &b[2][column]), "epoch 2 {name}");
        } else {
            assert_eq!(a[2][column], b[2][column], "epoch 2 {name}");
        }
        assert!(close(&a[1][column], &b[1][column]), "epoch 1 {name}");
    }
    let steps = |out: &Path| std::fs::read_to_string(out.join("steps.csv")).unwrap();
    assert_eq!(
        steps(&straight).lines().count(),
        7,
        "two epochs of three steps"
    );
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn boundary_maps_of_patches_are_cut_from_whole_image_maps() {
    // A small object in one corner of 64×64 images, 16×16 patches drawn anywhere: most
    // patches miss the object. Maps computed on such a patch are all zero (the class is absent
    // from it), so a step of such patches would have a boundary loss of exactly 0; maps cut
    // from the whole image hold the distance to the object, so every step's loss is > 0.
    let root = scratch("boundary");
    for i in 0..4 {
        let d = (6 + i as u32, 6, 3);
        image::GrayImage::from_fn(64, 64, |x, y| {
            image::Luma([if inside(x, y, d) { 200 } else { 30 }])
        })
        .save(root.join(format!("images/{i}.png")))
        .unwrap();
        image::GrayImage::from_fn(64, 64, |x, y| {
            image::Luma([if inside(x, y, d) { 255 } else { 0 }])
        })
        .save(root.join(format!("masks/{i}.png")))
        .unwrap();
    }
    let out = root.join("run");
    let output = losskit(&[
        "train",
        "--task",
        "segmentation",
        "--data",
        root.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--loss",
        "boundary",
        "--foreground",
        "0",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "6",
        "--batch-size",
        "1",
        "--width",
        "4",
        "--depth",
        "2",
        "--patch",
        "16",
        "--augment",
        "off",
        "--progress",
        "quiet",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let steps = std::fs::read_to_string(out.join("steps.csv")).unwrap();
    let mut rows = steps.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let at = header
        .iter()
        .position(|c| *c == "loss")
        .expect("a loss column");
    let losses: Vec<f64> = rows
        .map(|row| row.split(',').nth(at).unwrap().parse().unwrap())
        .collect();
    assert_eq!(losses.len(), 6, "{steps}");
    assert!(losses.iter().all(|&l| l > 0.5), "{losses:?}");
    let _ = std::fs::remove_dir_all(root);
}
