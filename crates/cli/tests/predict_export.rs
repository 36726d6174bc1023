//! `losskit predict` and `losskit export` through the binary: full-resolution masks of images
//! of any size, a CSV per classification, exports that predict exactly as the checkpoint does,
//! and the bad inputs (one line each; a bad image among good ones does not stop the others).

mod common;

use std::path::{Path, PathBuf};

use common::{losskit, text};

fn scratch(name: &str) -> PathBuf {
    common::scratch("predict", name)
}

fn disc_image(w: u32, h: u32) -> (image::GrayImage, image::GrayImage) {
    let inside = |x: u32, y: u32| {
        let (dx, dy) = (x as i64 - w as i64 / 2, y as i64 - h as i64 / 2);
        dx * dx + dy * dy <= (w.min(h) as i64 / 3).pow(2)
    };
    (
        image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([if inside(x, y) { 200 } else { 30 }])
        }),
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([u8::from(inside(x, y))])),
    )
}

/// A tiny segmentation run on a mask folder; returns the run folder.
fn segmentation_run(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    std::fs::create_dir_all(data.join("masks")).unwrap();
    for (i, (w, h)) in [(32, 32), (40, 24), (24, 36)].into_iter().enumerate() {
        let (image, mask) = disc_image(w, h);
        image.save(data.join(format!("images/{i}.png"))).unwrap();
        mask.save(data.join(format!("masks/{i}.png"))).unwrap();
    }
    let out = dir.join("seg-run");
    let output = losskit(&[
        "train",
        "--task",
        "segmentation",
        "--data",
        data.to_str().unwrap(),
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
    ]);
    assert!(output.status.success(), "{}", text(&output));
    out
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn segmentation_predicts_full_resolution_masks_and_a_bad_image_does_not_stop_the_rest() {
    let dir = scratch("seg");
    let run = segmentation_run(&dir);
    let inputs = dir.join("new");
    std::fs::create_dir_all(&inputs).unwrap();
    disc_image(100, 70).0.save(inputs.join("wide.png")).unwrap();
    disc_image(13, 9).0.save(inputs.join("tiny.png")).unwrap();
    std::fs::write(inputs.join("broken.png"), b"\x89PNG\r\n\x1a\nnot an image").unwrap();
    let out = dir.join("predicted");
    let output = losskit(&[
        "predict",
        "--checkpoint",
        run.to_str().unwrap(),
        "--input",
        inputs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    // One line for the broken image, one closing line; the others are written.
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
    assert!(
        stderr.lines().next().unwrap().contains("broken.png"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 of 3 images could not be predicted"),
        "{stderr}"
    );
    assert_eq!(
        files_in(&out),
        [
            "tiny.mask.png",
            "tiny.overlay.png",
            "wide.mask.png",
            "wide.overlay.png"
        ]
    );
    let mask = image::open(out.join("wide.mask.png")).unwrap();
    assert_eq!((mask.width(), mask.height()), (100, 70));
    assert!(
        mask.to_luma8().pixels().all(|p| p.0[0] <= 1),
        "class indices"
    );
    let preview = image::open(out.join("tiny.overlay.png")).unwrap();
    assert_eq!((preview.width(), preview.height()), (13, 9));
    // Inputs stay as they were, and the input folder is refused as --out.
    assert_eq!(files_in(&inputs), ["broken.png", "tiny.png", "wide.png"]);
    let into_input = losskit(&[
        "predict",
        "--checkpoint",
        run.to_str().unwrap(),
        "--input",
        inputs.to_str().unwrap(),
        "--out",
        inputs.to_str().unwrap(),
    ]);
    assert_eq!(into_input.status.code(), Some(2), "{}", text(&into_input));
    assert!(String::from_utf8_lossy(&into_input.stderr).contains("is the input folder"));

    // Exports in every format and layout predict the same masks as the checkpoint.
    std::fs::remove_file(inputs.join("broken.png")).unwrap();
    let reference = dir.join("reference");
    let output = losskit(&[
        "predict",
        "--checkpoint",
        run.to_str().unwrap(),
        "--input",
        inputs.to_str().unwrap(),
        "--out",
        reference.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    for (format, layout, file) in [
        ("safetensors", "burn", "model.safetensors"),
        ("safetensors", "pytorch", "torch.safetensors"),
        ("burnpack", "burn", "model.bpk"),
    ] {
        let exported = dir.join(file);
        let output = losskit(&[
            "export",
            "--checkpoint",
            run.to_str().unwrap(),
            "--format",
            format,
            "--layout",
            layout,
            "--out",
            exported.to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "{format} {layout}: {}",
            text(&output)
        );
        assert!(exported.with_extension("json").is_file());
        let again = dir.join(format!("from-{file}"));
        let output = losskit(&[
            "predict",
            "--checkpoint",
            exported.to_str().unwrap(),
            "--input",
            inputs.to_str().unwrap(),
            "--out",
            again.to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "{format} {layout}: {}",
            text(&output)
        );
        for name in files_in(&reference) {
            assert_eq!(
                std::fs::read(reference.join(&name)).unwrap(),
                std::fs::read(again.join(&name)).unwrap(),
                "{format} {layout}: {name}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn classification_writes_one_csv_row_per_image() {
    let dir = scratch("cls");
    let run = dir.join("run");
    let output = losskit(&[
        "train",
        "--limit",
        "40",
        "--batch-size",
        "8",
        "--width",
        "4",
        "--max-steps",
        "2",
        "--epochs",
        "1",
        "--progress",
        "quiet",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let inputs = dir.join("cells");
    std::fs::create_dir_all(&inputs).unwrap();
    for (i, (w, h)) in [(28, 28), (64, 40), (17, 90)].into_iter().enumerate() {
        disc_image(w, h)
            .0
            .save(inputs.join(format!("{i}.png")))
            .unwrap();
    }
    let out = dir.join("predicted");
    let output = losskit(&[
        "predict",
        "--checkpoint",
        run.to_str().unwrap(),
        "--input",
        inputs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let csv = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("file,class,p_erythrocyte,"), "{csv}");
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split(',').collect();
        let total: f64 = cells[2..].iter().map(|p| p.parse::<f64>().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-4, "{line}");
    }
    // Bad input: no images, --out a file, not a checkpoint.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for (args, needle) in [
        (
            vec![
                "--input",
                empty.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            "no .png, .jpg or .tif images",
        ),
        (
            vec![
                "--input",
                inputs.to_str().unwrap(),
                "--out",
                out.join("predictions.csv").to_str().unwrap(),
            ],
            "is a file",
        ),
    ] {
        let mut all = vec!["predict", "--checkpoint", run.to_str().unwrap()];
        all.extend(args);
        let output = losskit(&all);
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    let not_a_checkpoint = losskit(&[
        "predict",
        "--checkpoint",
        inputs.join("0.png").to_str().unwrap(),
        "--input",
        inputs.to_str().unwrap(),
        "--out",
        dir.join("x").to_str().unwrap(),
    ]);
    assert_eq!(
        not_a_checkpoint.status.code(),
        Some(2),
        "{}",
        text(&not_a_checkpoint)
    );
    assert!(String::from_utf8_lossy(&not_a_checkpoint.stderr).contains("not a losskit checkpoint"));
    let _ = std::fs::remove_dir_all(dir);
}
