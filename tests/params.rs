//! Parameter counts that must equal the reference implementations exactly
//! (timm 1.0.31 and sentence-transformers; see REFERENCES in the design notes).

use graft::api::{compile_file, render_failure};
use graft::pipeline::Mode;
use graft::report::param_report;
use std::path::Path;

fn params(spec: &str, mode: Mode) -> graft::report::ParamReport {
    let c = compile_file(Path::new(spec), mode).unwrap_or_else(|f| panic!("{spec}:\n{}", render_failure(&f, false)));
    param_report(&c)
}

#[test]
fn vit_counts_equal_timm() {
    assert_eq!(params("specs/vit_tiny.graft", Mode::Train).total, 5_717_416);
    assert_eq!(params("specs/vit_small.graft", Mode::Train).total, 22_050_664);
    assert_eq!(params("specs/vit_base.graft", Mode::Train).total, 86_567_656);
    assert_eq!(params("specs/vit_large.graft", Mode::Train).total, 304_326_632);
}

/// transformers 5.23 and timm 1.0.31, default configurations, counted with
/// `sum(v.numel() for v in model.state_dict().values() if v.is_floating_point())`.
#[test]
fn checkpoint_family_counts_equal_the_references() {
    assert_eq!(params("specs/videomae_base.graft", Mode::Train).total, 86_225_664); // VideoMAEModel
    assert_eq!(params("specs/videomae_base_classifier.graft", Mode::Train).total, 86_534_800); // ..ForVideoClassification(400)
    assert_eq!(params("specs/vit_base_hf.graft", Mode::Train).total, 86_389_248); // ViTModel
    assert_eq!(params("specs/dinov2_small.graft", Mode::Train).total, 22_057_344); // vit_small_patch14_reg4_dinov2
    assert_eq!(params("specs/clip_vit_b32.graft", Mode::Train).total, 87_849_216);
    // CLIPVisionModelWithProjection
}

#[test]
fn minilm_count_equals_sentence_transformers() {
    assert_eq!(params("specs/minilm.graft", Mode::Train).total, 22_713_216);
}

#[test]
fn m2pt_adds_exactly_the_auxiliary_weights_and_lambdas_and_folds_them_away() {
    let plain = params("specs/vit_base.graft", Mode::Train).total;
    let train = params("specs/m2pt_image_point.graft", Mode::Train);
    assert_eq!(train.total, plain + 84_934_656 + 48);
    let cmr = train.components.iter().find(|c| c.name == "cmr").expect("pathway component");
    assert_eq!((cmr.total, cmr.trainable), (48, 48));
    let aux = train.components.iter().find(|c| c.name == "aux").expect("aux component");
    assert_eq!(aux.total, 84_934_656);
    // Train rules: `train target, cmr` with `aux: trainable` — everything trains.
    assert_eq!(train.trainable, train.total);
    let infer = params("specs/m2pt_image_point.graft", Mode::Infer);
    assert_eq!(infer.total, plain);
}

#[test]
fn lora_folds_to_the_plain_model() {
    let train = params("specs/lora_vit_base.graft", Mode::Train);
    // ViT-B without its 1000-class head (85,798,656) + a 10-class head.
    let backbone = 85_798_656 + 768 * 10 + 10;
    // rank 8: qkv 8·(768 + 2304), proj 8·(768 + 768), per block.
    assert_eq!(train.total, backbone + 12 * 8 * (768 + 2304) + 12 * 8 * (768 + 768));
    assert_eq!(train.trainable, 12 * 8 * (768 + 2304) + 12 * 8 * (768 + 768) + 7_690);
    assert_eq!(params("specs/lora_vit_base.graft", Mode::Infer).total, backbone);
}

#[test]
fn cm3t_trains_only_plugins_and_keeps_non_foldable_adapters() {
    let r = params("specs/cm3t_video_audio_pose.graft", Mode::Train);
    for c in &r.components {
        match c.name.as_str() {
            "video_vit" | "audio_enc" => assert_eq!(c.trainable, 0, "{} must be frozen", c.name),
            _ => assert_eq!(c.frozen, 0, "{} must train", c.name),
        }
    }
    // Multi-head and cross-attention adapters have nonlinearities: nothing folds.
    assert_eq!(params("specs/cm3t_video_audio_pose.graft", Mode::Infer).total, r.total);
}

#[test]
fn incremental_plugin_keeps_earlier_plugins_frozen() {
    let r = params("specs/cm3t_video_plus_pose.graft", Mode::Train);
    let get = |n: &str| r.components.iter().find(|c| c.name == n).unwrap_or_else(|| panic!("{n}")).clone();
    assert_eq!(get("mhva").trainable, 0);
    assert_eq!(get("cls").trainable, 0);
    assert_eq!(get("xa_pose").frozen, 0);
    assert_eq!(get("pose_enc").frozen, 0);
    assert_eq!(r.trainable, get("xa_pose").total + get("pose_enc").total);
}

/// A spec of one backbone `m` = `call` over input `input`, compiled in train mode.
fn std_model(tag: &str, input: &str, call: &str) -> graft::report::ParamReport {
    let dir = tempfile::Builder::new().prefix(&format!("graft-params-{tag}-")).tempdir().unwrap();
    let dir = dir.path();
    let spec = dir.join("m.graft");
    let text = format!(
        "use std.hf_vit\nuse std.clip\n\nmodel m {{\n  input x: {input}\n  backbone b = {call}(x)\n      weights required\n  output y = b\n}}\n"
    );
    std::fs::write(&spec, text).unwrap();
    params(spec.to_str().unwrap(), Mode::Train)
}

/// The std classification heads equal transformers' models (ViTForImageClassification
/// = ViTModel without its pooler + classifier; ASTForAudioClassification = ASTModel +
/// a LayerNorm and a linear), and std.clip's activation is a parameter.
#[test]
fn std_classification_heads_and_clip_activation() {
    let vit = std_model("vit", "f32[B, 3, 224, 224]", "hf_vit_classifier(classes: 1000)");
    assert_eq!(vit.total, 86_567_656);
    let ast = params("specs/ast_base.graft", Mode::Train).total;
    let cls = std_model("ast", "f32[B, 1024, 128]", "hf_ast_classifier(classes: 527)");
    assert_eq!(cls.total, ast + 2 * 768 + 768 * 527 + 527);
    let quick = std_model("clipq", "f32[B, 3, 224, 224]", "clip_vision()");
    let gelu = std_model("clipg", "f32[B, 3, 224, 224]", "clip_vision(act: \"gelu\")");
    assert_eq!((quick.total, gelu.total), (87_849_216, 87_849_216));
    // The activation is what the config says: 12 exact GELUs, or 12 quick-GELU sigmoids.
    for (act, gelus, sigmoids) in [("\"gelu\"", 12, 0), ("\"quick_gelu\"", 0, 12)] {
        let text = format!(
            "use std.clip\nmodel m {{\n  input x: f32[B, 3, 224, 224]\n  backbone b = clip_vision(act: {act})(x)\n      weights required\n  output y = b\n}}\n"
        );
        let c = graft::api::compile_str("clip.graft", None, &text, Mode::Infer)
            .map_err(|f| render_failure(&f, false))
            .unwrap();
        let ir = graft::ir::print::to_text(&c.graph, "");
        assert_eq!((ir.matches(" gelu(").count(), ir.matches(" sigmoid(").count()), (gelus, sigmoids), "{act}");
    }
}
