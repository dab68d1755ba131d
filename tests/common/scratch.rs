//! Scratch directories for tests: each under the system temp dir, named `graft-TAG-…`,
//! and removed when the returned value drops, so when its test ends, pass or fail. Hold
//! it until every process given a path inside it has finished.

/// A fresh directory `graft-{tag}-…` under the system temp dir.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("graft-{tag}-")).tempdir().expect("a scratch directory under the temp dir")
}
