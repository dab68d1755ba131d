//! Tidy checks over the source tree: every module says what it is, and files stay
//! readable.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("readable dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_module_has_a_doc_comment_and_a_sane_length() {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    assert!(files.len() > 20);
    let mut problems = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("utf-8 source");
        if !text.trim_start().starts_with("//!") {
            problems.push(format!("{}: no `//!` module doc at the top", f.display()));
        }
        let lines = text.lines().count();
        if lines > 600 {
            problems.push(format!("{}: {lines} lines; split it by concern", f.display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_pass_file_is_named_after_its_function() {
    for e in std::fs::read_dir("src/passes").expect("passes dir").flatten() {
        let name = e.file_name().to_string_lossy().trim_end_matches(".rs").to_string();
        if name == "mod" || name == "testkit" || name == "ctx" {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).expect("source");
        let signature =
            |cx: &str| format!("pub fn {name}(g: &mut Graph, {cx}: &mut PassCtx) -> Result<bool, VerifyError>");
        assert!(
            text.contains(&signature("cx")) || text.contains(&signature("_cx")),
            "src/passes/{name}.rs must define the pass `{}`",
            signature("cx")
        );
        assert!(
            graft::pipeline::PASSES.iter().any(|p| p.name == name),
            "src/passes/{name}.rs is not in the pipeline's pass list"
        );
        assert!(
            text.trim_start().starts_with(&format!("//! {name}:")),
            "src/passes/{name}.rs doc must start with `{name}:`"
        );
    }
}

/// Backends see verified IR and plans only: nothing under `src/backend/` reaches into
/// the front end (`lower`, `syntax`) or the passes.
#[test]
fn backends_do_not_import_the_front_end_or_the_passes() {
    let mut files = Vec::new();
    rust_files(Path::new("src/backend"), &mut files);
    assert!(files.len() > 5);
    let forbidden = ["lower", "syntax", "passes"];
    let mut problems = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("utf-8 source");
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for m in forbidden {
                // `crate::lower`, `graft::syntax::…`, `use crate::{passes, …}`.
                let paths = [format!("crate::{m}"), format!("graft::{m}"), format!("super::super::{m}")];
                let braced =
                    code.contains("crate::{") && code.split(|c: char| !c.is_alphanumeric() && c != '_').any(|w| w == m);
                if paths.iter().any(|p| code.contains(p.as_str())) || braced {
                    problems.push(format!("{}:{}: imports `{m}`: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
