//! Pass filetests (Cranelift style): each `tests/filetests/*.graft` names a stage in
//! its header (`// stop-after: PASS`, `// mode: train|infer`); the IR printed right
//! after that stage is the snapshot. `graft compile --stop-after PASS` prints the
//! same text.

use graft::api::render_failure;
use graft::pipeline::{graph_after, stages, CompileOptions, Mode};

/// The value of `// KEY: VALUE` in the file's leading comments.
fn header<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("// {key}:");
    text.lines().take_while(|l| l.starts_with("//")).find_map(|l| l.strip_prefix(&prefix)).map(str::trim)
}

#[test]
fn ir_after_each_stage() {
    insta::glob!("filetests", "*.graft", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let stage = header(&text, "stop-after").unwrap_or_else(|| panic!("{}: no `// stop-after:`", path.display()));
        let mode = match header(&text, "mode") {
            Some("infer") => Mode::Infer,
            Some("train") | None => Mode::Train,
            Some(m) => panic!("{}: mode `{m}`", path.display()),
        };
        let prog =
            graft::lower::load_file(path).unwrap_or_else(|(s, d)| panic!("{}", graft::diag::render(&s, &d, false)));
        let g = graph_after(prog, mode, stage, &CompileOptions { verify_each_pass: true })
            .unwrap_or_else(|| panic!("{}: `{stage}` is not one of {:?}", path.display(), stages(mode)))
            .unwrap_or_else(|f| panic!("{}:\n{}", path.display(), render_failure(&f, false)));
        insta::assert_snapshot!(graft::ir::print::to_text(&g, &format!("after {stage}")));
    });
}

#[test]
fn filetests_name_real_stages() {
    let mut pinned = Vec::new();
    for e in std::fs::read_dir("tests/filetests").unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        pinned.push(header(&text, "stop-after").unwrap().to_string());
    }
    for s in &pinned {
        assert!(stages(Mode::Infer).contains(&s.as_str()), "filetest stops after unknown stage `{s}`");
    }
    assert!(pinned.len() >= 3);
}
