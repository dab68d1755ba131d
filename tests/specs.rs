//! Golden tests over the gallery: every spec under specs/ (specs/demo/ included)
//! compiles in train and infer mode to the snapshotted IR text and parameter report.

use graft::api::{compile_file, render_failure};
use graft::pipeline::Mode;
use graft::report::{param_report, param_table};

fn compile(path: &std::path::Path, mode: Mode) -> graft::pipeline::Compiled {
    compile_file(path, mode).unwrap_or_else(|f| panic!("{} failed:\n{}", path.display(), render_failure(&f, false)))
}

#[test]
fn gallery_ir_and_params() {
    insta::glob!("../specs", "**/*.graft", |path| {
        for (mode, name) in [(Mode::Train, "train"), (Mode::Infer, "infer")] {
            let c = compile(path, mode);
            let ir = graft::ir::print::to_text(&c.graph, &format!("graft ir: model {} mode {name}", c.model));
            insta::assert_snapshot!(format!("ir_{name}"), ir);
            insta::assert_snapshot!(format!("params_{name}"), param_table(&param_report(&c)));
        }
    });
}

#[test]
fn printed_ir_is_deterministic() {
    for spec in ["specs/cm3t_video_audio_pose.graft", "specs/m2pt_image_point.graft", "specs/lora_vit_base.graft"] {
        let path = std::path::Path::new(spec);
        for mode in [Mode::Train, Mode::Infer] {
            let a = graft::ir::print::to_text(&compile(path, mode).graph, "");
            let b = graft::ir::print::to_text(&compile(path, mode).graph, "");
            assert_eq!(a, b, "{spec} printed differently twice");
            let ya = graft::ir::print::to_yaml(&compile(path, mode).graph);
            assert_eq!(ya, graft::ir::print::to_yaml(&compile(path, mode).graph));
        }
    }
}

/// Every `.graft` file in the repository (`benches/`, `tests/conformance/`, the
/// filetests, the standard library; only the deliberately invalid fixtures are
/// excluded): files with a model compile in both modes, files of modules check.
/// A new directory of specs is covered without being listed here.
#[test]
fn every_spec_in_the_repository_compiles() {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | ".git" | ".graft-env" | "node_modules")
                    && p != std::path::Path::new("./tests/fixtures/invalid")
                {
                    walk(&p, out);
                }
            } else if name.ends_with(".graft") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(std::path::Path::new("."), &mut files);
    files.sort();
    let (mut models, mut libraries) = (0, 0);
    for path in &files {
        let load =
            || graft::lower::load_file(path).unwrap_or_else(|(s, d)| panic!("{}", graft::diag::render(&s, &d, false)));
        if load().root_model.is_none() {
            assert!(graft::api::check_program(load()).is_ok_and(|c| c.is_none()), "{} does not check", path.display());
            libraries += 1;
            continue;
        }
        for mode in [Mode::Train, Mode::Infer] {
            compile(path, mode);
        }
        models += 1;
    }
    assert!(models >= 30 && libraries >= 4, "{models} models and {libraries} module files found");
}
