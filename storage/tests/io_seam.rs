//! The I/O seam holds: no source file of the storage crate outside `src/io/` names glommio's
//! file API or `std::fs`, so every file operation goes through `storage::io` (and its fault
//! injection). A lint run as a test, like glommio's own `tests/linters.rs`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Files of `src` outside `src/io/` whose text contains one of the forbidden paths, with the
/// offending line.
fn offenders(src: &Path) -> Vec<String> {
    let io = src.join("io");
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut found = Vec::new();
    for file in files {
        if file.starts_with(&io) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            if line.contains("glommio::io") || line.contains("std::fs") {
                found.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    found
}

/// Only `src/io/` touches files.
#[test]
fn only_the_io_module_names_file_apis() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = offenders(&src);
    assert!(
        found.is_empty(),
        "file operations outside storage/src/io (route them through the seam):\n{}",
        found.join("\n")
    );
}

/// The lint can fail: it sees the seam's own imports when `io/` is not exempted.
#[test]
fn the_lint_sees_file_apis_where_they_are() {
    let io = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/io");
    let mut files = Vec::new();
    rust_files(&io, &mut files);
    let text: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert!(text.contains("glommio::io") && text.contains("std::fs"));
}
