//! Scratch directories for tests. [`temp_dir`]: one test's, under the system temp dir,
//! named `graft-TAG-…`, and removed when the returned value drops, so when its test
//! ends, pass or fail; hold it until every process given a path inside it has
//! finished. [`process_dir`]: a fixture that a test process's tests share (built once
//! behind a `OnceLock`, which nothing drops), `TAG-PID` under cargo's target tmp dir;
//! it outlives its process for inspection, and the next process of the same test file
//! removes it ([`remove_orphans`], which other tests' per-process files use too).

use std::path::{Path, PathBuf};

/// A fresh directory `graft-{tag}-…` under the system temp dir.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("graft-{tag}-")).tempdir().expect("a scratch directory under the temp dir")
}

/// A fresh, empty directory `{tag}-{pid}` under cargo's target tmp dir for this test
/// process's shared fixture. Siblings `{tag}-PID` whose process is gone (where
/// `/proc` tells) are removed first, so runs do not pile fixtures up.
pub fn process_dir(tag: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    remove_orphans(root, &format!("{tag}-"));
    let dir = root.join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Remove the entries of `root` named `{prefix}PID` or `{prefix}PID-…` (files or
/// directories) whose process is gone, where `/proc` tells; others are left alone.
pub fn remove_orphans(root: &Path, prefix: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else { continue };
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (pid, after) = rest.split_at(digits);
        if pid.is_empty() || !(after.is_empty() || after.starts_with('-')) {
            continue;
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let path = entry.path();
            let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        }
    }
}
