//! `losskit new-loss` on a throw-away copy of the files it edits.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch_checkout(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("losskit-new-loss-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("crates/cli/src")).unwrap();
    std::fs::create_dir_all(root.join("plugins")).unwrap();
    for file in [
        "Cargo.toml",
        "README.md",
        "crates/cli/Cargo.toml",
        "crates/cli/src/plugins.rs",
    ] {
        std::fs::copy(repository().join(file), root.join(file)).unwrap();
    }
    root
}

fn new_loss(root: &Path, args: &[&str]) -> (bool, String, String) {
    let result = Command::new(env!("CARGO_BIN_EXE_losskit"))
        .arg("new-loss")
        .args(args)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap();
    (
        result.status.success(),
        String::from_utf8_lossy(&result.stdout).into_owned(),
        String::from_utf8_lossy(&result.stderr).into_owned(),
    )
}

fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn scaffolds_and_links_a_plugin_once() {
    let root = scratch_checkout("once");
    let (ok, stdout, stderr) = new_loss(&root, &["my_loss", "--category", "regression"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("plugins/my_loss"), "{stdout}");
    for file in [
        "Cargo.toml",
        "README.md",
        "src/lib.rs",
        "tests/conformance.rs",
    ] {
        assert!(
            root.join("plugins/my_loss").join(file).is_file(),
            "{file} missing"
        );
    }
    let source = std::fs::read_to_string(root.join("plugins/my_loss/src/lib.rs")).unwrap();
    assert!(source.contains("register_loss!(MyLoss"), "{source}");
    assert!(source.contains("category: Regression"));
    let manifest = std::fs::read_to_string(root.join("crates/cli/Cargo.toml")).unwrap();
    assert!(
        manifest.contains(r#"my_loss = { path = "../../plugins/my_loss" }"#),
        "{manifest}"
    );
    let list = std::fs::read_to_string(root.join("crates/cli/src/plugins.rs")).unwrap();
    assert!(
        list.contains(r#"("my_loss", my_loss::LOSS_NAMES),"#),
        "{list}"
    );
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains("| `my_loss` |  | regression | One line: what my_loss computes. |"),
        "README row missing"
    );

    let before = snapshot(&root);
    let (ok, _, stderr) = new_loss(&root, &["my_loss"]);
    assert!(
        !ok && stderr.contains("already exists") && stderr.lines().count() == 1,
        "{stderr}"
    );
    assert_eq!(before, snapshot(&root), "a second run changed files");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_or_taken_names_change_nothing() {
    let root = scratch_checkout("bad");
    let before = snapshot(&root);
    for (name, expected) in [
        ("My-Loss", "not a valid loss name"),
        ("dice_", "not a valid loss name"),
        ("cross_entropy", "already registered"),
        ("crate", "reserved"),
        ("serde_json", "would clash"),
        ("losskit_core", "would clash"),
    ] {
        let (ok, _, stderr) = new_loss(&root, &[name]);
        assert!(!ok && stderr.contains(expected), "{name}: {stderr}");
    }
    assert_eq!(before, snapshot(&root));
    std::fs::remove_dir_all(&root).unwrap();
}
