//! Golden tests over the gallery: every file in specs/ compiles in train and infer
//! mode to the snapshotted IR text and parameter report.

use graft::api::{compile_file, render_failure};
use graft::pipeline::Mode;
use graft::report::{param_report, param_table};

fn compile(path: &std::path::Path, mode: Mode) -> graft::pipeline::Compiled {
    compile_file(path, mode).unwrap_or_else(|f| panic!("{} failed:\n{}", path.display(), render_failure(&f, false)))
}

#[test]
fn gallery_ir_and_params() {
    insta::glob!("../specs", "*.graft", |path| {
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
