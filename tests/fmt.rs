//! `graft fmt`: the layout of messy inputs (snapshots), idempotence, and that
//! formatting never changes meaning: the compiled IR of every model spec in the
//! repository (gallery, benches, conformance, filetests) and of the gallery against the
//! formatted std is byte-identical before and after.

use graft::fmt::{format_text, FmtError};
use graft::pipeline::Mode;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fmt(name: &str, text: &str) -> String {
    match format_text(name, text) {
        Ok(s) => s,
        Err(FmtError::Syntax(sources, d)) => panic!("{name}:\n{}", graft::diag::render(&sources, &d, false)),
        Err(FmtError::Internal(e)) => panic!("{e}"),
    }
}

fn graft_files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    graft::fmt::collect_specs(dir, &mut v).unwrap();
    assert!(!v.is_empty(), "no specs under {}", dir.display());
    v
}

#[test]
fn messy_inputs() {
    insta::glob!("fixtures/fmt", "*.graft", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let once = fmt("input.graft", &text);
        assert_eq!(fmt("once.graft", &once), once, "not idempotent on {}", path.display());
        insta::assert_snapshot!(once);
    });
}

/// The IR text of a spec (train and infer), compiled from `text` with `use`s resolved
/// against `dir`.
fn ir(name: &str, dir: &Path, text: &str) -> String {
    let mut out = String::new();
    for mode in [Mode::Train, Mode::Infer] {
        match graft::api::compile_str(name, Some(dir), text, mode) {
            Ok(c) => out.push_str(&graft::ir::print::to_text(&c.graph, "")),
            Err(f) => panic!("{name}:\n{}", graft::api::render_failure(&f, false)),
        }
    }
    out
}

/// The gallery and every other model spec of the repository.
#[test]
fn gallery_is_idempotent_and_compiles_to_the_same_ir() {
    let dirs = ["specs", "benches/specs", "tests/conformance/specs", "tests/filetests"];
    for path in dirs.iter().flat_map(|d| graft_files(&root().join(d))) {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        let once = fmt(&name, &text);
        assert_eq!(fmt(&name, &once), once, "{name}: not idempotent");
        let dir = path.parent().unwrap();
        assert_eq!(ir(&name, dir, &text), ir(&name, dir, &once), "{name}: formatting changed the IR");
    }
}

/// std modules are compiled through the gallery: each spec compiles against the
/// formatted std files (imported by path) to the IR it has against the embedded ones.
#[test]
fn std_is_idempotent_and_compiles_to_the_same_ir() {
    // A scratch directory removed with the test, pass or fail.
    let scratch = tempfile::Builder::new().prefix("graft-fmt-std-").tempdir().unwrap();
    let tmp = scratch.path();
    for path in graft_files(&root().join("std")) {
        let text = std::fs::read_to_string(&path).unwrap();
        let once = fmt(&path.display().to_string(), &text);
        assert_eq!(fmt("again", &once), once, "{}: not idempotent", path.display());
        std::fs::write(tmp.join(path.file_name().unwrap()), once).unwrap();
    }
    let mut compared = 0;
    for path in graft_files(&root().join("specs")) {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        let dir = path.parent().unwrap();
        // `use std.vit` → `use "/tmp/…/vit.graft"`: the formatted copy.
        let rewired: String = text
            .lines()
            .map(|l| match l.trim().strip_prefix("use std.") {
                Some(m) => format!("use \"{}\"\n", tmp.join(format!("{m}.graft")).display()),
                None => format!("{l}\n"),
            })
            .collect();
        if rewired != text {
            assert_eq!(ir(&name, dir, &text), ir(&name, dir, &rewired), "{name}: formatted std changed the IR");
            compared += 1;
        }
    }
    assert!(compared >= 10, "only {compared} gallery specs use std");
}

/// Valid fixtures (the import fixtures that parse) keep their tokens and are idempotent;
/// invalid ones with syntax errors are refused with `check`'s diagnostics.
#[test]
fn fixtures_format_or_are_refused_like_check() {
    for path in graft_files(&root().join("tests/fixtures")) {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        match format_text(&name, &text) {
            Ok(once) => assert_eq!(fmt(&name, &once), once, "{name}: not idempotent"),
            Err(FmtError::Syntax(sources, d)) => {
                let mut map = graft::source::SourceMap::new();
                let id = map.add(name.clone(), None, text.clone());
                let check = graft::syntax::parse(id, &text).expect_err("check accepts what fmt refuses");
                assert_eq!(graft::diag::render(&sources, &d, false), graft::diag::render(&map, &check, false));
            }
            Err(FmtError::Internal(e)) => panic!("{e}"),
        }
    }
}

/// The gallery and std are kept in the canonical layout.
#[test]
fn specs_and_std_are_formatted() {
    let mut unformatted = Vec::new();
    for dir in ["specs", "std"] {
        for path in graft_files(&root().join(dir)) {
            let text = std::fs::read_to_string(&path).unwrap();
            if fmt(&path.display().to_string(), &text) != text {
                unformatted.push(path.strip_prefix(root()).unwrap().display().to_string());
            }
        }
    }
    assert!(
        unformatted.is_empty(),
        "not in the canonical layout: {}\nfix with: cargo run -- fmt specs std",
        unformatted.join(", ")
    );
}

#[test]
fn syntax_errors_are_refused_with_checks_diagnostics() {
    let text = "model m {\n  input x: f32[B, 3\n}\n";
    let Err(FmtError::Syntax(sources, d)) = format_text("bad.graft", text) else { panic!("accepted a syntax error") };
    let rendered = graft::diag::render(&sources, &d, false);
    assert!(rendered.contains("bad.graft:2:"), "{rendered}");
    assert_eq!(d.items[0].code, "E0003", "{rendered}");
}

/// The command: `--check` prints a diff and exits 1 without writing; `fmt` rewrites;
/// a file with a syntax error is left alone with `check`'s diagnostics and exit 1.
#[test]
fn the_fmt_command() {
    // A scratch directory removed with the test, pass or fail.
    let scratch = tempfile::Builder::new().prefix("graft-fmt-cli-").tempdir().unwrap();
    let dir = scratch.path();
    let messy = dir.join("messy.graft");
    let text = "module m(d:int){\n in x\n    y=linear(d,d)( x )\n out y }\n";
    std::fs::write(&messy, text).unwrap();
    let graft = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_graft")).args(args).output().unwrap();
    let path = messy.to_str().unwrap();
    let out = graft(&["fmt", "--check", path]);
    assert_eq!(out.status.code(), Some(1));
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(diff.contains("-    y=linear(d,d)( x )") && diff.contains("+  y = linear(d, d)(x)"), "{diff}");
    assert_eq!(std::fs::read_to_string(&messy).unwrap(), text, "--check wrote the file");
    let out = graft(&["fmt", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&messy).unwrap(),
        "module m(d: int) {\n  in x\n  y = linear(d, d)(x)\n  out y\n}\n"
    );
    assert_eq!(graft(&["fmt", "--check", path]).status.code(), Some(0));
    let bad = dir.join("bad.graft");
    std::fs::write(&bad, "model m {\n  input x f32[B]\n}\n").unwrap();
    let out = graft(&["fmt", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let check = graft(&["check", bad.to_str().unwrap()]);
    assert!(err.starts_with(&*String::from_utf8_lossy(&check.stderr)), "{err}");
    assert_eq!(std::fs::read_to_string(&bad).unwrap(), "model m {\n  input x f32[B]\n}\n");
    let leftovers: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "temporary files left: {leftovers:?}");
}
