//! `graft run` end to end through the binary: specs/vit_tiny.graft with random
//! weights under timm's exact keys, and the strict weights report.

#![cfg(feature = "torch")]

mod common;

use common::scratch::temp_dir;
use graft::api::compile_file;
use graft::ir::ParamSource;
use graft::pipeline::Mode;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::{Device, Kind, Tensor};

fn spec() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/vit_tiny.graft")
}

/// Random weights for every parameter, under its weights key (timm's names).
fn weights() -> Vec<(String, Tensor)> {
    let Ok(c) = compile_file(&spec(), Mode::Train) else { panic!("specs/vit_tiny.graft compiles") };
    tch::manual_seed(7);
    c.graph
        .params()
        .map(|(_, p)| match &p.source {
            ParamSource::Weights { binding, key } => {
                assert_eq!(binding, "vit");
                (key.clone(), Tensor::randn(p.shape.as_slice(), (Kind::Float, Device::Cpu)) * 0.05)
            }
            other => panic!("{} has source {other:?}", p.path),
        })
        .collect()
}

fn write(dir: &Path, name: &str, tensors: &[(String, Tensor)]) -> PathBuf {
    let path = dir.join(name);
    Tensor::write_safetensors(tensors, &path).unwrap();
    path
}

fn image(batch: i64) -> Tensor {
    tch::manual_seed(11);
    Tensor::randn([batch, 3, 224, 224], (Kind::Float, Device::Cpu))
}

fn graft_run(weights: &Path, inputs: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_graft"));
    cmd.arg("run").arg(spec()).arg("--weights").arg(format!("vit={}", weights.display()));
    cmd.arg("--inputs").arg(inputs).arg("--out").arg(out).args(["--device", "cpu"]).args(extra);
    cmd.output().expect("graft runs")
}

fn logits(path: &Path) -> Tensor {
    let mut t = Tensor::read_safetensors(path).unwrap();
    assert_eq!(t.len(), 1, "one output");
    let (name, v) = t.remove(0);
    assert_eq!(name, "logits");
    v
}

#[test]
fn weights_use_timm_keys() {
    let w = weights();
    assert_eq!(w.len(), 152);
    let keys: Vec<&str> = w.iter().map(|(k, _)| k.as_str()).collect();
    for k in [
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "blocks.0.attn.qkv.weight",
        "blocks.11.mlp.fc2.bias",
        "norm.weight",
        "head.bias",
    ] {
        assert!(keys.contains(&k), "{k}");
    }
    let qkv = &w.iter().find(|(k, _)| k == "blocks.8.attn.qkv.weight").unwrap().1;
    assert_eq!(qkv.size(), vec![576, 192]);
}

#[test]
fn run_vit_tiny() {
    let tmp = temp_dir("torch-backend-run");
    let dir = tmp.path();
    let w = write(dir, "vit.safetensors", &weights());
    let x = image(2);
    let inputs = write(dir, "in.safetensors", &[("image".to_string(), x.shallow_clone())]);
    let out = dir.join("out.safetensors");
    let r = graft_run(&w, &inputs, &out, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let y = logits(&out);
    assert_eq!(y.size(), vec![2, 1000]);
    assert_eq!(y.kind(), Kind::Float);
    assert_eq!(y.isfinite().all().int64_value(&[]), 1);
    // Train mode computes the same function.
    let out_train = dir.join("out_train.safetensors");
    let r = graft_run(&w, &inputs, &out_train, &["--mode", "train"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(logits(&out_train).allclose(&y, 1e-5, 1e-5, false));
    // Images are independent: the second image alone gives the batch's second row.
    let one = write(dir, "in1.safetensors", &[("image".to_string(), x.narrow(0, 1, 1).contiguous())]);
    let out1 = dir.join("out1.safetensors");
    let r = graft_run(&w, &one, &out1, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(logits(&out1).allclose(&y.narrow(0, 1, 1), 1e-4, 1e-5, false));
}

#[test]
fn missing_key_and_wrong_shape_are_one_readable_error() {
    let tmp = temp_dir("torch-backend-mismatch");
    let dir = tmp.path();
    let mut w = weights();
    w.retain(|(k, _)| k != "blocks.3.norm1.bias");
    for (k, t) in w.iter_mut() {
        if k == "blocks.8.attn.qkv.weight" {
            *t = t.tr().contiguous();
        }
    }
    let w = write(dir, "bad.safetensors", &w);
    let inputs = write(dir, "in_bad.safetensors", &[("image".to_string(), image(1))]);
    let out = dir.join("never.safetensors");
    let r = graft_run(&w, &inputs, &out, &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains("weights do not match the spec (2 problems)"), "{err}");
    assert!(err.contains("blocks.3.norm1.bias: spec f32[192]"), "{err}");
    assert!(err.contains("blocks.8.attn.qkv.weight: file f32[192, 576], spec f32[576, 192]"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists());
}

#[test]
fn allow_missing_and_input_errors() {
    let tmp = temp_dir("torch-backend-allow-missing");
    let dir = tmp.path();
    let mut w = weights();
    w.retain(|(k, _)| !k.starts_with("head."));
    let w = write(dir, "nohead.safetensors", &w);
    let inputs = write(dir, "in_ok.safetensors", &[("image".to_string(), image(1))]);
    let out = dir.join("nohead_out.safetensors");
    let r = graft_run(&w, &inputs, &out, &[]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("head.weight: spec f32[1000, 192]"));
    let r = graft_run(&w, &inputs, &out, &["--allow-missing", "head.*"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(logits(&out).size(), vec![1, 1000]);
    // A wrongly shaped input names what was expected and what was given.
    let small = write(
        dir,
        "in_small.safetensors",
        &[("image".to_string(), Tensor::zeros([1, 3, 32, 32], (Kind::Float, Device::Cpu)))],
    );
    let r = graft_run(&w, &small, &out, &["--allow-missing", "head.*"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains("expected f32[B, 3, 224, 224], given f32[1, 3, 32, 32]"), "{err}");
    // An empty batch is refused naming the input, not deep inside the model.
    let empty = write(
        dir,
        "in_empty.safetensors",
        &[("image".to_string(), Tensor::zeros([0, 3, 224, 224], (Kind::Float, Device::Cpu)))],
    );
    let r = graft_run(&w, &empty, &out, &["--allow-missing", "head.*"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains("`image`") && err.contains("B (dim 0) is 0; it must be at least 1"), "{err}");
    // An output that would overwrite an input is refused; the input is untouched.
    let before = std::fs::read(&inputs).unwrap();
    for target in [&inputs, &w] {
        let r = graft_run(&w, &inputs, target, &["--allow-missing", "head.*"]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{err}");
        assert!(err.contains("would overwrite an input"), "{err}");
    }
    assert_eq!(std::fs::read(&inputs).unwrap(), before);
}

/// `graft bench --weights N:BINDING=FILE` measures a spec with its real weights (the
/// second position), next to the same spec with random ones, and counts what it read.
#[test]
fn bench_measures_a_deployed_checkpoint() {
    let tmp = temp_dir("torch-backend-bench");
    let dir = tmp.path();
    let w = write(dir, "bench-weights.safetensors", &weights());
    let spec = spec();
    let bench = |extra: &[String]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_graft"));
        cmd.arg("bench").arg(&spec).arg(&spec).args(["--batch", "1", "--iters", "1", "--warmup", "0", "--json"]);
        cmd.args(["--threads", "1"]).args(extra).output().expect("graft runs")
    };
    let o = bench(&["--weights".into(), format!("2:vit={}", w.display())]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let s = r["specs"].as_array().unwrap();
    assert_eq!(s[0]["weights_params"], 0, "the first spec keeps random weights");
    assert_eq!(s[1]["weights"][0], format!("vit={}", w.display()));
    assert_eq!(s[1]["weights_params"], s[1]["params"], "every parameter of the deployed model came from the file");
    assert_eq!(s[1]["params"], 5_717_416);
    // A position past the specs, and a file that does not fit, are errors.
    let o = bench(&["--weights".into(), format!("3:vit={}", w.display())]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("N:BINDING=FILE"), "{}", String::from_utf8_lossy(&o.stderr));
    let bad = write(dir, "bench-bad.safetensors", &weights()[1..]);
    let o = bench(&["--weights".into(), format!("1:vit={}", bad.display())]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("weights do not match the spec"));
}
