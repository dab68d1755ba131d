//! Every spec under tests/fixtures/invalid/ holds one mistake. Each must fail as a user
//! error (never a compiler bug or a panic) rendered with `file:line:col`, the source
//! line, a caret and a hint; the rendered text is snapshotted. The first line,
//! `// expect: CODE what`, names the error code every reported error must have.

use graft::api::{check_program, render_failure};
use graft::pipeline::Failure;
use std::path::{Path, PathBuf};

/// `tests/fixtures/invalid/NAME.graft`, relative to the crate root (the working
/// directory of `cargo test`), so that rendered paths do not depend on the machine.
fn relative(path: &Path) -> PathBuf {
    let name = path.file_name().expect("fixture file name");
    Path::new("tests/fixtures/invalid").join(name)
}

fn check(path: &Path) -> Result<(), Failure> {
    let prog = graft::lower::load_file(path).map_err(|(s, d)| Failure::User(s, d))?;
    check_program(prog).map(|_| ())
}

#[test]
fn invalid() {
    insta::glob!("fixtures/invalid/*.graft", |abs| {
        let path = relative(abs);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let source = std::fs::read_to_string(&path).unwrap();
        let expected = source
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("// expect: "))
            .and_then(|l| l.split_whitespace().next())
            .filter(|c| c.len() == 5 && c.starts_with('E') && c[1..].bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or_else(|| panic!("{name} must start with `// expect: EXXXX what the mistake is`"));
        let failure = match check(&path) {
            Ok(()) => panic!("{name} compiled, but it holds a mistake"),
            Err(f) => f,
        };
        let text = render_failure(&failure, false);
        let Failure::User(_, diags) = &failure else { panic!("{name} is a compiler bug, not a user error:\n{text}") };
        let codes: Vec<&str> = diags.items.iter().map(|d| d.code).collect();
        assert!(
            !codes.is_empty() && codes.iter().all(|c| *c == expected),
            "{name}: expected only {expected}, got {codes:?}:\n{text}"
        );
        // `NAME.graft:LINE:COL`
        let located = text.match_indices(&format!("{name}:")).any(|(i, m)| {
            let rest = &text[i + m.len()..];
            let mut parts = rest.splitn(3, |c: char| c == ':' || c.is_whitespace());
            let line = parts.next().unwrap_or("");
            let col = parts.next().unwrap_or("");
            !line.is_empty()
                && line.bytes().all(|b| b.is_ascii_digit())
                && !col.is_empty()
                && col.bytes().all(|b| b.is_ascii_digit())
        });
        assert!(located, "{name}: no `{name}:line:col` in\n{text}");
        assert!(text.contains("hint:"), "{name}: no hint in\n{text}");
        assert!(text.contains('^'), "{name}: no caret in\n{text}");
        assert!(!text.contains("internal compiler error"), "{name}:\n{text}");
        insta::assert_snapshot!(text);
    });
}

/// The fixture set covers the mistakes it is meant to (a missing file would silently
/// shrink the glob above).
#[test]
fn fixture_set_is_complete() {
    let dir = Path::new("tests/fixtures/invalid");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".graft"))
        .collect();
    names.sort();
    assert!(names.len() >= 34, "only {} invalid fixtures", names.len());
    for n in &names {
        let (num, rest) = n.split_once('_').expect("NN_what.graft");
        assert!(num.len() == 2 && num.bytes().all(|b| b.is_ascii_digit()), "{n} is not NN_what.graft");
        assert!(!rest.is_empty());
    }
    // Helper files of the import-cycle fixture are not entry points of their own.
    assert!(dir.join("imports/cycle_a.graft").exists());
    assert!(dir.join("imports/cycle_b.graft").exists());
}
