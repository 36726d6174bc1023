//! Writing a file so that readers see the old content or the new, never a part: the one way
//! every output of losskit (checkpoints, reports, gradients, scaffolded files) reaches the disk.

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, synced, then
/// renamed over `path`, then the folder synced so the rename survives a crash.
///
/// On any error the temporary file is removed and `path` keeps its previous content. The error
/// names `path` and keeps the system's error kind (e.g. `File too large` on a full disk).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let named = |error: io::Error| {
        io::Error::new(
            error.kind(),
            format!("cannot write {}: {error}", path.display()),
        )
    };
    let file_name = path.file_name().ok_or_else(|| {
        named(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path names no file",
        ))
    })?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        // The data must be on disk before the rename makes it the file's content.
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, path)?;
        // Make the rename durable; not every system can sync a folder, so that error is ignored.
        if let Ok(dir) = fs::File::open(&dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result.map_err(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("losskit-atomic-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_the_content_and_leaves_no_temporary_file() {
        let dir = scratch("replace");
        let path = dir.join("out.txt");
        write_atomically(&path, b"old").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.txt"]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_names_the_path() {
        let dir = scratch("fail");
        let path = dir.join("out.txt");
        write_atomically(&path, b"old").unwrap();
        // A folder in the way of the rename makes the write fail after the temporary file.
        let blocked = dir.join("sub");
        fs::create_dir_all(blocked.join("inner")).unwrap();
        let error = write_atomically(&blocked, b"x").unwrap_err();
        assert!(error.to_string().contains("cannot write"), "{error}");
        assert!(error.to_string().contains("sub"), "{error}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        fs::remove_dir_all(dir).unwrap();
    }
}
