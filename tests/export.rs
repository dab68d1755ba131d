//! `graft export pytorch` and `graft export onnx` against graft's own outputs.
//!
//! For every gallery spec, demo spec and conformance case, in train and infer mode,
//! the test writes the exported package (model.py, and weights.safetensors with seeded
//! parameter values), seeded inputs and graft's outputs for them (the native backend,
//! what `graft run --backend native` computes), with each optional input present and
//! absent; then one Python process (`tests/export/check.py`, the pinned venv) checks:
//! `ruff check` and `ruff format --check` on every model.py; parameter names, shapes
//! and the trainable set equal graft's; outputs equal graft's (‖Δ‖/‖graft‖ ≤ 1e-5);
//! `torch.compile` (full graph) and `torch.export` on the multimodal demo; every ONNX
//! file passes `onnx.checker` (full check) and ONNX Runtime agrees with graft at two
//! batch sizes, one of them through external data. The full-size backbones are
//! checked for structure only (names, shapes, trainable set, formatting; built on the
//! meta device): their forward in a debug build would take minutes, and they use the
//! ops the small specs cover.

mod common;

use common::scratch::temp_dir;
use graft::api::compile_spec;
use graft::backend::{inputs, Backend, Options, Plan};
use graft::export::{onnx, pytorch};
use graft::params::init::random_values;
use graft::pipeline::{Compiled, Mode};
use graft::tensor::HostTensor;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let py = repo().join(".graft-env/venv/bin/python");
    assert!(py.exists(), "export tests need the pinned Python environment ({}): run scripts/setup.sh", py.display());
    py
}

fn specs() -> Vec<String> {
    let mut specs: Vec<String> = ["specs", "specs/demo", "tests/conformance/specs"]
        .iter()
        .flat_map(|d| std::fs::read_dir(repo().join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "graft"))
        .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    specs.sort();
    specs
}

/// The full-size backbones: structure only (see the module doc).
fn large(spec: &str) -> bool {
    spec.starts_with("specs/") && !spec.starts_with("specs/demo/") && !spec.contains("vit_tiny")
}

fn write(path: &Path, tensors: &[(String, HostTensor)]) {
    graft::safetensors::write(path, tensors, &BTreeMap::new()).unwrap();
}

/// graft's outputs on `given` (`graft run`: LibTorch in a `torch` build, the native
/// backend otherwise; the two agree to 1e-5, `tests/backends.rs`).
fn run(plan: &Plan, params: &[HostTensor], given: Vec<(String, HostTensor)>) -> Vec<(String, HostTensor)> {
    let bound = inputs::bind(plan, given, graft::ir::DType::F32).unwrap();
    #[cfg(feature = "torch")]
    let backend = graft::backend::torch::TorchBackend;
    #[cfg(not(feature = "torch"))]
    let backend = graft::backend::native::Native::default();
    let mut exe = backend.prepare(plan, params.to_vec(), &Options::default()).unwrap();
    exe.run(&bound.values).unwrap()
}

struct Case {
    dir: PathBuf,
    n: usize,
}

impl Case {
    /// Write inputs and graft's outputs; returns the manifest entry.
    fn add(&mut self, plan: &Plan, params: &[HostTensor], given: Vec<(String, HostTensor)>, absent: &[&str]) -> Value {
        self.n += 1;
        let given: Vec<_> = given.into_iter().filter(|(n, _)| !absent.contains(&n.as_str())).collect();
        let (i, o) =
            (self.dir.join(format!("in{}.safetensors", self.n)), self.dir.join(format!("out{}.safetensors", self.n)));
        write(&i, &given);
        write(&o, &run(plan, params, given));
        json!({"inputs": i, "outputs": o, "absent": absent})
    }
}

fn package(root: &Path, spec: &str, c: &Compiled, k: usize) -> Value {
    let mode = format!("{:?}", c.mode).to_lowercase();
    let dir = root.join(format!("{k:02}-{}-{mode}", spec.replace('/', "_")));
    std::fs::create_dir_all(&dir).unwrap();
    let text = pytorch::model_py(c).unwrap_or_else(|e| panic!("{spec} ({mode}): {e}"));
    std::fs::write(dir.join("model.py"), &text).unwrap();
    let plan = Plan::new(&c.graph);
    let params_json: Vec<Value> =
        plan.params().iter().map(|p| json!({"path": p.path, "shape": p.shape, "trainable": p.trainable})).collect();
    let mut entry = json!({"spec": spec, "mode": mode, "dir": dir, "params": params_json});
    entry["instances"] = instances(c, &plan);
    entry["same_class"] = json!(same_class(spec));
    if large(spec) {
        entry["meta"] = json!(true);
        return entry;
    }
    let params: Vec<HostTensor> = plan.params().iter().map(|p| random_values(p, 0)).collect();
    let named: Vec<(String, HostTensor)> = plan.params().iter().map(|p| p.path.clone()).zip(params.clone()).collect();
    write(&dir.join("weights.safetensors"), &named);
    let given = inputs::random(&plan, 2, 1).unwrap();
    let mut cases = Case { dir: dir.clone(), n: 0 };
    let mut list = vec![cases.add(&plan, &params, given.clone(), &[])];
    let optional: Vec<&str> = plan.inputs().iter().filter(|i| i.optional).map(|i| i.name.as_str()).collect();
    for o in &optional {
        list.push(cases.add(&plan, &params, given.clone(), &[o]));
    }
    if optional.len() > 1 {
        list.push(cases.add(&plan, &params, given.clone(), &optional));
    }
    entry["cases"] = json!(list);
    if spec == "specs/demo/cm3t_multimodal.graft" && c.mode == Mode::Train {
        entry["compile"] = json!(true);
    }
    entry
}

/// A spec value as JSON.
fn value(v: &graft::lower::Value) -> Value {
    use graft::lower::Value as V;
    match v {
        V::Int(i) => json!(i),
        V::Float(f) => json!(f),
        V::Bool(b) => json!(b),
        V::Str(s) => json!(s),
        V::List(items) => Value::Array(items.iter().map(value).collect()),
        V::Tensor(_) | V::Absent => Value::Null,
    }
}

/// Every module instance that holds parameters, with the arguments graft bound: the
/// exported object at that path must be built with exactly these (check.py).
fn instances(c: &Compiled, plan: &Plan) -> Value {
    let mut out = serde_json::Map::new();
    for (path, args) in &c.instance_args {
        let prefix = format!("{path}.");
        if !plan.params().iter().any(|p| p.path.starts_with(&prefix)) {
            continue;
        }
        let args: serde_json::Map<String, Value> = args.iter().map(|(n, v)| (n.clone(), value(v))).collect();
        out.insert(path.clone(), json!({"args": args}));
    }
    Value::Object(out)
}

/// One module at two widths: the instances differ only in their arguments, so they
/// share their classes (`same_class`).
const TWO_WIDTHS: (&str, &str) = (
    "two_widths",
    r#"use std.vit

model two_widths {
  input image: f32[B, 3, 32, 32]
  input audio: f32[B, 1, 32, 64]
  encoder wide = vit(dim: 64, depth: 2, heads: 4, classes: 0, patch: 8, height: 32)(image)
  encoder narrow = vit(dim: 32, depth: 1, heads: 2, classes: 0, patch: 8, height: 32, width: 64, channels: 1, eps: 1e-5)(audio)
  head a = linear(64, 3)(wide)
  head b = linear(32, 3)(narrow)
  output wide_logits = a
  output narrow_logits = b
  train wide, a, b
}
"#,
);

/// Instances that must share one class: a depth's blocks, and instances of one module
/// that differ only in their arguments.
fn same_class(spec: &str) -> Vec<Vec<String>> {
    let blocks = |at: &str, n: usize| (0..n).map(|i| format!("{at}.blocks.{i}")).collect::<Vec<_>>();
    match spec {
        "specs/vit_tiny.graft" => vec![blocks("vit", 12)],
        "specs/vit_small.graft" => vec![blocks("vit", 12)],
        "specs/demo/video_pretrain.graft" => vec![blocks("video_vit", 4)],
        "two_widths" => {
            let mut all = blocks("wide", 2);
            all.extend(blocks("narrow", 1));
            vec![all, vec!["wide".into(), "narrow".into()]]
        }
        _ => vec![],
    }
}

fn onnx_file(root: &Path, spec: &str, c: &Compiled, opset: i64, external: bool) -> Value {
    let plan = Plan::new(&c.graph);
    let params: Vec<HostTensor> = plan.params().iter().map(|p| random_values(p, 0)).collect();
    let named: Vec<(String, HostTensor)> = plan.params().iter().map(|p| p.path.clone()).zip(params.clone()).collect();
    let dir = root.join(format!("onnx-{}-{opset}", spec.replace('/', "_")));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("model.onnx");
    let mut opts = onnx::Options { opset, dynamic: true, fixed: 1, external_over: None };
    if external {
        opts.external_over = Some(0);
    }
    let out = onnx::model(c, named, &opts, "model.onnx.data").unwrap_or_else(|e| panic!("{spec} (onnx): {e}"));
    std::fs::write(&file, &out.model).unwrap();
    if let Some(data) = &out.external {
        std::fs::write(dir.join("model.onnx.data"), data).unwrap();
    }
    assert_eq!(out.external.is_some(), external, "{spec}: external data");
    let mut cases = Case { dir, n: 0 };
    let list: Vec<Value> = [1, 2]
        .iter()
        .map(|&b| {
            let mut v = cases.add(&plan, &params, inputs::random(&plan, b, 1).unwrap(), &[]);
            v["batch"] = json!(b);
            v
        })
        .collect();
    json!({"spec": spec, "file": file, "opset": opset, "cases": list})
}

#[test]
fn exported_models_agree_with_graft() {
    let tmp = temp_dir("export");
    let root = tmp.path();
    let start = std::time::Instant::now();
    let (mut packages, mut onnx_files) = (Vec::new(), Vec::new());
    let only = std::env::var("GRAFT_SPEC").unwrap_or_default();
    for (k, spec) in specs().iter().filter(|s| s.contains(&only)).enumerate() {
        for mode in [Mode::Train, Mode::Infer] {
            let c = compile_spec(&repo().join(spec), mode).unwrap_or_else(|e| panic!("{spec}: {e}"));
            packages.push(package(root, spec, &c, k));
            if mode == Mode::Infer && !large(spec) {
                // Opsets in turn (17: erf GELU, ReduceMean axes attribute; 20: Gelu).
                let opset = [17, 18, 20, 21][k % 4];
                onnx_files.push(onnx_file(root, spec, &c, opset, k % 5 == 0));
            }
        }
    }
    if TWO_WIDTHS.0.contains(&only) {
        let path = root.join(format!("{}.graft", TWO_WIDTHS.0));
        std::fs::write(&path, TWO_WIDTHS.1).unwrap();
        for mode in [Mode::Train, Mode::Infer] {
            let c = compile_spec(&path, mode).unwrap_or_else(|e| panic!("{}: {e}", TWO_WIDTHS.0));
            packages.push(package(root, TWO_WIDTHS.0, &c, 99));
        }
    }
    eprintln!("prepared in {:.1}s", start.elapsed().as_secs_f64());
    check(root, json!({"packages": packages, "onnx": onnx_files}));
    eprintln!("checked in {:.1}s", start.elapsed().as_secs_f64());
}

/// Run check.py on a manifest; fails with its report.
fn check(root: &Path, manifest: Value) {
    let path = root.join("manifest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    let out = Command::new(python()).arg(repo().join("tests/export/check.py")).arg(&path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    assert!(out.status.success(), "exported models disagree with graft:\n{text}");
}

/// One AdamW step in PyTorch on the exported module equals one `graft train` step.
#[cfg(feature = "torch")]
#[test]
fn one_adamw_step_equals_graft_train() {
    let tmp = temp_dir("export-adamw");
    let entry = adamw_step(tmp.path());
    check(tmp.path(), json!({"packages": [entry], "onnx": []}));
}

/// The graft binary under test.
#[cfg(feature = "torch")]
fn graft(dir: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_graft")).args(args).current_dir(dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "graft {}:\n{text}", args.join(" "));
}

/// One `graft train` step (AdamW, constant rate, weight decay on matrices only) on a
/// frozen backbone with an adapter and a head; the exported package (same seed, same
/// initial values) takes one `torch.optim.AdamW` step on the same batch (the whole
/// dataset, so the reader's shuffle does not matter) in check.py.
#[cfg(feature = "torch")]
fn adamw_step(root: &Path) -> Value {
    let dir = root.join("adamw");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = r#"use std.vit
use std.adapters

model step {
  input video: f32[B, 3, 8, 32, 32]
  encoder video_vit = vit3d(dim: 32, depth: 2, heads: 2, classes: 0, frames: 8, tubelet: 2, patch: 8, image: 32)(video)
  adapter mhva = multi_head_adapter(dim: 32, heads: 2, bottleneck: 8, scale: 1.0)
      at video_vit.blocks[*].mlp parallel
  adapter xa = bottleneck(dim: 32, bottleneck: 8) at video_vit.blocks[1].attn after
  head cls = linear(32, 4)(mean_tokens(video_vit.norm))
  output logits = cls
  train mhva, xa, cls
}
"#;
    std::fs::write(dir.join("step.graft"), spec).unwrap();
    graft(&dir, &["data", "synth", "--task", "pretrain", "--n", "6", "--out", "data"]);
    graft(&dir, &["export", "pytorch", "step.graft", "--mode", "train", "--seed", "3", "--out", "pkg"]);
    let train = ["train", "step.graft", "--data", "data", "--steps", "1", "--batch", "6", "--lr", "0.01"];
    let rest = ["--schedule", "constant", "--seed", "3", "--device", "cpu", "--out", "run"];
    graft(&dir, &[&train[..], &rest].concat());
    let c = compile_spec(&dir.join("step.graft"), Mode::Train).unwrap();
    let plan = Plan::new(&c.graph);
    let params: Vec<Value> =
        plan.params().iter().map(|p| json!({"path": p.path, "shape": p.shape, "trainable": p.trainable})).collect();
    let adamw = json!({
        "batch": dir.join("data/shard-00000.safetensors"),
        "after": dir.join("run/trainable.safetensors"),
        "lr": 0.01, "wd": 0.01, "target": "label", "output": "logits",
    });
    let instances = instances(&c, &plan);
    json!({"spec": "adamw step", "mode": "train", "dir": dir.join("pkg"), "params": params, "cases": [], "adamw": adamw,
        "instances": instances})
}

/// The commands end to end: what they write, and one-line refusals (exit 1, 2 for
/// usage) that leave nothing behind.
#[test]
fn export_commands_write_their_files_and_refuse_bad_input() {
    let tmp = temp_dir("export-cli");
    let dir = tmp.path();
    let run =
        |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_graft")).args(args).current_dir(repo()).output().unwrap();
    let s = |p: &Path| p.display().to_string();
    let pkg = dir.join("pkg");
    let o = run(&[
        "export",
        "pytorch",
        "specs/demo/cm3t_mhva.graft",
        "--weights",
        "video_vit=/nonexistent.safetensors",
        "--out",
        &s(&pkg),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("nonexistent") && !err.contains("panicked"), "{err}");
    assert!(!pkg.exists(), "nothing is written on an error");
    let o = run(&["export", "pytorch", "specs/demo/video_pretrain.graft", "--mode", "infer", "--out", &s(&pkg)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files: Vec<String> =
        std::fs::read_dir(&pkg).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(std::fs::read_to_string(pkg.join("model.py")).unwrap().contains("class Model(nn.Module):"));
    let st = graft::safetensors::SafeFile::open(&pkg.join("weights.safetensors")).unwrap();
    assert!(st.entries().contains_key("video_vit.patch_embed.proj.weight"));
    let o = run(&["export", "pytorch", "specs/demo/video_pretrain.graft", "--out", &s(&pkg)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    let onnx = dir.join("m.onnx");
    let o = run(&["export", "onnx", "specs/demo/video_pretrain.graft", "--opset", "16", "--out", &s(&onnx)]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["export", "onnx", "specs/demo/video_pretrain.graft", "--dynamic-batch", "--out", &s(&onnx)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::metadata(&onnx).unwrap().len() > 1000);
}

/// The gallery ViT reads as its spec: each class takes its module's parameters (by
/// keyword), the blocks are one class built `depth` times with the ViT's arguments, and
/// sizes are the spec's expressions of them.
#[test]
fn classes_take_the_spec_modules_parameters() {
    let c = compile_spec(&repo().join("specs/vit_small.graft"), Mode::Infer).unwrap();
    let text = pytorch::model_py(&c).unwrap();
    // Layout aside: no whitespace, no trailing commas.
    let flat: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let flat = flat.replace(",)", ")").replace(",]", "]");
    assert_eq!(text.matches("class Block(").count(), 1, "{text}");
    assert!(!text.contains("class Block2"), "{text}");
    for want in [
        "def__init__(self,*,dim:int,heads:int,mlp_ratio:float=4.0,qkv_bias:bool=True,eps:float=1e-6)->None:",
        "nn.ModuleList([Block(dim=dim,heads=heads,mlp_ratio=mlp_ratio,qkv_bias=qkv_bias,eps=eps)for_inrange(depth)])",
        "forlayerinself.blocks:blocks=layer(blocks)",
        "self.heads=heads",
        "attention(q,k,v,self.heads)",
        "self.qkv=nn.Linear(dim,dim*3,bias=qkv_bias)",
        "self.mlp=Mlp(dim=dim,hidden=int(dim*mlp_ratio))",
        "self.norm1=nn.LayerNorm(dim,eps=eps)",
        "self.proj=nn.Conv2d(channels,dim,patch,stride=patch)",
        "torch.zeros(1,height//patch*(width//patch)+1,dim)",
        "self.vit=Vit(dim=384,depth=12,heads=6,width=224)",
    ] {
        assert!(flat.contains(want), "model.py lacks `{want}`:\n{text}");
    }
}
