//! The native backend against the LibTorch backend, through the one backend seam:
//! every gallery spec in train and infer mode, seeded parameters and inputs, compared
//! norm-wise (‖native − torch‖ / ‖torch‖ ≤ 1e-5, the metric `graft fuse` uses), with
//! absent optional inputs; and one thread against two (bit-identical).
#![cfg(feature = "torch")]

use graft::api::compile_spec;
use graft::backend::native::Native;
use graft::backend::torch::TorchBackend;
use graft::backend::{inputs, Backend, Options, Plan};
use graft::params::init::random_values;
use graft::pipeline::Mode;
use graft::tensor::HostTensor;
use std::path::Path;

/// Outputs of `backend` on `spec` with seeded parameters and inputs (`drop`: inputs
/// left absent).
fn outputs(backend: &dyn Backend, spec: &str, mode: Mode, batch: i64, drop: &[&str]) -> Vec<(String, HostTensor)> {
    let c = compile_spec(Path::new(spec), mode).unwrap_or_else(|e| panic!("{spec}: {e:?}"));
    let plan = Plan::new(&c.graph);
    let params: Vec<HostTensor> = plan.params().iter().map(|p| random_values(p, 0)).collect();
    let given: Vec<(String, HostTensor)> =
        inputs::random(&plan, batch, 1).unwrap().into_iter().filter(|(n, _)| !drop.contains(&n.as_str())).collect();
    let bound = inputs::bind(&plan, given, graft::ir::DType::F32).unwrap();
    let mut exe = backend.prepare(&plan, params, &Options::default()).unwrap();
    exe.run(&bound.values).unwrap_or_else(|e| panic!("{spec} on {}: {e}", backend.name()))
}

/// The largest norm-wise relative error over the outputs.
fn rel_err(a: &[(String, HostTensor)], b: &[(String, HostTensor)]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0f64;
    for ((n1, x), (n2, y)) in a.iter().zip(b) {
        assert_eq!(n1, n2);
        assert_eq!(x.shape, y.shape, "{n1}");
        let (x, y) = (x.to_f64(), y.to_f64());
        let num = x.iter().zip(&y).map(|(p, q)| (p - q) * (p - q)).sum::<f64>().sqrt();
        let den = y.iter().map(|q| q * q).sum::<f64>().sqrt();
        worst = worst.max(if den == 0.0 { num } else { num / den });
    }
    worst
}

fn native(threads: usize) -> Native {
    Native { threads, ..Native::default() }
}

fn gallery() -> Vec<String> {
    let mut specs: Vec<String> = ["specs", "specs/demo"]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "graft"))
        .map(|p| p.display().to_string())
        .collect();
    specs.sort();
    specs
}

fn check(spec: &str, mode: Mode, drop: &[&str]) {
    let want = outputs(&TorchBackend, spec, mode, 1, drop);
    let got = outputs(&native(1), spec, mode, 1, drop);
    let e = rel_err(&got, &want);
    eprintln!("{spec} {mode:?} {drop:?}: {e:.2e}");
    assert!(e <= 1e-5, "{spec} {mode:?}: native vs torch {e:.3e}");
}

/// Small gallery specs (the big backbones run in `gallery_large_specs_agree`).
#[test]
fn gallery_specs_agree_with_torch() {
    let only = std::env::var("GRAFT_SPEC").unwrap_or_default();
    for s in gallery().iter().filter(|s| s.contains(&only) && !large(s)) {
        for mode in [Mode::Infer, Mode::Train] {
            check(s, mode, &[]);
        }
    }
}

fn large(s: &str) -> bool {
    [
        "vit_large",
        "videomae",
        "vit_base",
        "lora_vit_base",
        "cm3t_video",
        "m2pt_image_point",
        "vit_small",
        "minilm",
        "ast_base",
        "clip_vit",
        "dinov2",
    ]
    .iter()
    .any(|l| s.contains(l))
}

/// The full-size backbones (ViT-S/B/L, VideoMAE, MiniLM, AST, CLIP, DINOv2, the CM3T and M2PT models) at
/// batch 1; `GRAFT_SPEC=name` runs one.
#[test]
#[ignore = "full-size backbones take tens of minutes in a debug build; run: cargo test --release --features torch --test backends -- --ignored"]
fn gallery_large_specs_agree_with_torch() {
    let only = std::env::var("GRAFT_SPEC").unwrap_or_default();
    for s in gallery().iter().filter(|s| s.contains(&only) && large(s)) {
        for mode in [Mode::Infer, Mode::Train] {
            check(s, mode, &[]);
        }
    }
}

/// Absent optional inputs: the same pass-through rule on both backends.
#[test]
fn absent_optional_inputs_agree_with_torch() {
    check("specs/demo/cm3t_multimodal.graft", Mode::Infer, &["audio"]);
    check("specs/demo/cm3t_multimodal.graft", Mode::Train, &["pose"]);
    check("specs/demo/cm3t_multimodal.graft", Mode::Infer, &["audio", "pose"]);
    check("specs/minilm.graft", Mode::Infer, &["token_type_ids"]);
}

/// A key mask with masked keys, and a batch row with every key masked (which
/// averages the values, as LibTorch's additive mask does, instead of NaN).
#[test]
fn masked_keys_and_fully_masked_rows_agree_with_torch() {
    let spec = "specs/minilm.graft";
    let c = compile_spec(Path::new(spec), Mode::Infer).unwrap();
    let plan = Plan::new(&c.graph);
    let ids: Vec<i64> = (0..10).map(|i| (i * 7919 + 13) % 30000).collect();
    let given = vec![
        ("input_ids".to_string(), HostTensor::from_i64(&[2, 5], &ids).unwrap()),
        ("attention_mask".to_string(), HostTensor::from_i64(&[2, 5], &[1, 1, 1, 0, 0, 0, 0, 0, 0, 0]).unwrap()),
    ];
    let run = |b: &dyn Backend| {
        let params: Vec<HostTensor> = plan.params().iter().map(|p| random_values(p, 0)).collect();
        let bound = inputs::bind(&plan, given.clone(), graft::ir::DType::F32).unwrap();
        b.prepare(&plan, params, &Options::default()).unwrap().run(&bound.values).unwrap()
    };
    let (want, got) = (run(&TorchBackend), run(&native(1)));
    assert!(got.iter().all(|(_, t)| t.to_f64().iter().all(|v| v.is_finite())));
    let e = rel_err(&got, &want);
    assert!(e <= 1e-5, "{e:.3e}");
}

/// Work split over two threads gives the same bits as one thread.
#[test]
fn two_threads_give_the_bits_of_one() {
    for (spec, drop) in [("specs/demo/cm3t_multimodal.graft", &[][..]), ("specs/demo/m2pt_video_audio.graft", &[][..])]
    {
        let one = outputs(&native(1), spec, Mode::Infer, 3, drop);
        let two = outputs(&native(2), spec, Mode::Infer, 3, drop);
        assert_eq!(one, two, "{spec}");
    }
}
