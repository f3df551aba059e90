//! The shape of the code the architecture page describes, checked: no
//! source file of the host over 600 lines, and no file outside `storage/`
//! that names `sqlx` (storage owns the database).

use std::path::{Path, PathBuf};

fn host_sources() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = crate::support::rust_files(&src);
    assert!(files.len() > 50, "only {} source files under {}", files.len(), src.display());
    (src, files)
}

#[test]
fn no_source_file_is_over_600_lines() {
    let (src, files) = host_sources();
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > 600).then(|| format!("{} ({lines} lines)", f.strip_prefix(&src).unwrap().display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by job: {long:?}");
}

#[test]
fn only_storage_names_sqlx() {
    let (src, files) = host_sources();
    let outside: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&src).unwrap())
        .filter(|rel| !rel.starts_with("storage") && !rel.starts_with("storage.rs"))
        .filter(|rel| std::fs::read_to_string(src.join(rel)).unwrap().contains("sqlx"))
        .map(|rel| rel.display().to_string())
        .collect();
    assert!(outside.is_empty(), "these name sqlx outside storage/: {outside:?}");
}
