//! The native backend against the LibTorch backend, through the one backend seam:
//! every gallery spec in train and infer mode, seeded parameters and inputs, compared
//! norm-wise (‖native − torch‖ / ‖torch‖ ≤ 1e-5, the metric `graft fuse` uses), with
//! absent optional inputs; and one thread against two (bit-identical).
#![cfg(feature = "torch")]

use graft::api::compile_spec;
mod common;

use common::compare::{assert_close_host, Tol};
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

/// ‖native − torch‖ / ‖torch‖ per output, the metric `graft fuse` uses.
const TOL: Tol = Tol::Norm { rel: 1e-5 };

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
    for s in assert_close_host(&format!("{spec} {mode:?} {drop:?}: native vs torch"), &got, &want, TOL) {
        eprintln!("{spec} {mode:?} {drop:?}: {s}");
    }
}

/// The gallery specs `GRAFT_SPEC` (a substring, default all) selects among `keep`:
/// a filter that matches nothing fails rather than passing having run nothing.
fn selected(keep: impl Fn(&str) -> bool) -> Vec<String> {
    let only = std::env::var("GRAFT_SPEC").unwrap_or_default();
    let specs: Vec<String> = gallery().into_iter().filter(|s| s.contains(&only) && keep(s)).collect();
    assert!(!specs.is_empty(), "GRAFT_SPEC={only:?} matches no spec this test runs");
    specs
}

/// Small gallery specs (the big backbones run in `gallery_large_specs_agree`).
#[test]
fn gallery_specs_agree_with_torch() {
    for s in &selected(|s| !large(s)) {
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
    for s in &selected(large) {
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
    // The comparator also fails on any NaN (a fully masked row must average instead).
    assert_close_host("masked keys: native vs torch", &got, &want, TOL);
}

/// Work split over two threads gives the same bits as one thread: at batch 3 the
/// linear layers split their columns, at batch 24 (past `packed::ROWS_PER_CHUNK` rows
/// per chunk) their rows.
#[test]
fn two_threads_give_the_bits_of_one() {
    for (spec, drop) in [("specs/demo/cm3t_multimodal.graft", &[][..]), ("specs/demo/m2pt_video_audio.graft", &[][..])]
    {
        for batch in [3, 24] {
            let one = outputs(&native(1), spec, Mode::Infer, batch, drop);
            let two = outputs(&native(2), spec, Mode::Infer, batch, drop);
            assert_close_host(&format!("{spec} at batch {batch}: 2 threads vs 1"), &two, &one, Tol::Exact);
        }
    }
}
