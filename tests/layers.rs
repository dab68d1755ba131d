//! The layers of the crate, checked on the source: the backends sit below the compiler
//! driver and the application, so nothing under `src/backend/` names `api`,
//! `pipeline`, `report`, `data`, `evaluate`, `fuse` or `commands` (the training loop,
//! the run directory and the command-line choices live in `src/commands/`, above the
//! training seam `backend::train`). A planted violation is caught (the scanner's own
//! test).

use std::path::{Path, PathBuf};

/// Modules above the backends.
const ABOVE: &[&str] = &["api", "pipeline", "report", "data", "evaluate", "fuse", "commands", "choices"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("readable dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The modules of `ABOVE` a file's code (comments and its `#[cfg(test)] mod tests`
/// left out: a unit test may compile a spec) names as `crate::m`, `graft::m`, or
/// inside a `crate::{…}` group.
fn upward(text: &str) -> Vec<(usize, &'static str)> {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let words: Vec<&str> = code.split(|c: char| !c.is_alphanumeric() && c != '_').collect();
        for &m in ABOVE {
            let direct = [format!("crate::{m}::"), format!("crate::{m};"), format!("graft::{m}::")];
            let grouped = code.contains("crate::{") && words.contains(&m);
            if direct.iter().any(|p| code.contains(p.as_str())) || grouped {
                found.push((i + 1, m));
            }
        }
    }
    found
}

#[test]
fn the_scanner_sees_an_upward_import() {
    let planted =
        "//! doc naming crate::commands::train is fine\nuse crate::evaluate::tally;\nuse crate::{data, ir};\n";
    assert_eq!(upward(planted), [(2, "evaluate"), (3, "data")]);
    assert!(upward("use crate::backend::train::Trainer; // crate::api in a comment\n").is_empty());
    assert!(upward("fn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::pipeline::Mode;\n}\n").is_empty());
}

#[test]
fn backends_import_nothing_above_them() {
    let mut files = Vec::new();
    rust_files(Path::new("src/backend"), &mut files);
    assert!(files.len() > 10);
    let mut problems = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("utf-8 source");
        for (line, m) in upward(&text) {
            problems.push(format!("{}:{line}: imports `{m}`, a module above the backends", f.display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
