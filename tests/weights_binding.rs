//! Weights bindings through `graft run`: `weights required`, key rules (`prefix`,
//! `rename`), scalars stored as `[1]` (M2PT λ) and weights-only instances that read
//! part of a full checkpoint. Tiny shapes; the expected outputs are computed here.

#![cfg(feature = "torch")]

mod common;

use common::scratch::temp_dir;
use std::path::Path;
use std::process::{Command, Output};
use tch::Tensor;

const SPEC: &str = r#"
module net(dim: int, classes: int = 0) {
  in x
  fc = linear(dim, dim)(x)
  if classes > 0 {
    head = linear(dim, classes)(fc)
    out head
  } else {
    out fc
  }
}

model m {
  input x: f32[B, 4]
  backbone target = net(4)(x) weights required KEYS
  backbone aux = net(4) weights "aux.safetensors"
  pathway cmr = reparam(lambda: 0.0, aux: frozen) from aux.fc into target.fc
  output y = target
  train cmr
}
"#;

fn t(v: &[f32], shape: &[i64]) -> Tensor {
    Tensor::from_slice(v).reshape(shape)
}

fn save(path: &Path, tensors: &[(&str, Tensor)]) {
    let v: Vec<(String, Tensor)> = tensors.iter().map(|(k, t)| (k.to_string(), t.shallow_clone())).collect();
    Tensor::write_safetensors(&v, path).unwrap();
}

fn graft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_graft")).args(args).output().expect("graft runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

struct Case {
    dir: tempfile::TempDir,
    spec: String,
    w: Tensor,
    b: Tensor,
    w_aux: Tensor,
}

/// The spec with `keys` as the target's key rules, the auxiliary checkpoint (with a
/// classifier the weights-only `aux` does not declare) and the inputs.
fn case(name: &str, keys: &str) -> Case {
    let dir = temp_dir(&format!("weights-binding-{name}"));
    let spec = dir.path().join("m.graft");
    std::fs::write(&spec, SPEC.replace("KEYS", keys)).unwrap();
    let w = t(&[0.5, -0.2, 0.1, 0.3, 0.0, 0.4, -0.6, 0.2, 0.7, 0.1, 0.05, -0.3, 0.2, 0.2, -0.1, 0.9], &[4, 4]);
    let b = t(&[0.1, -0.1, 0.2, 0.0], &[4]);
    let w_aux = t(&[0.3, 0.1, -0.2, 0.5, 0.6, -0.4, 0.2, 0.1, 0.0, 0.3, 0.8, -0.5, 0.1, -0.7, 0.4, 0.2], &[4, 4]);
    save(
        &dir.path().join("aux.safetensors"),
        &[
            ("fc.weight", w_aux.shallow_clone()),
            ("fc.bias", t(&[9.0; 4], &[4])),
            ("head.weight", t(&[1.0; 8], &[2, 4])),
            ("head.bias", t(&[1.0; 2], &[2])),
        ],
    );
    save(&dir.path().join("x.safetensors"), &[("x", t(&[1.0, 2.0, -1.0, 0.5, 0.0, -2.0, 3.0, 1.0], &[2, 4]))]);
    Case { dir, spec: spec.display().to_string(), w, b, w_aux }
}

impl Case {
    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn run(&self, extra: &[String]) -> Output {
        let mut args: Vec<String> = vec!["run".into(), self.spec.clone()];
        args.extend(extra.iter().cloned());
        args.extend(["--inputs".into(), self.p("x.safetensors"), "--out".into(), self.p("y.safetensors")]);
        args.extend(["--device".into(), "cpu".into()]);
        graft(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// y = x (W + λ W′)ᵀ + b.
    fn expected(&self, lambda: f64) -> Tensor {
        let x = t(&[1.0, 2.0, -1.0, 0.5, 0.0, -2.0, 3.0, 1.0], &[2, 4]);
        x.matmul(&(&self.w + &self.w_aux * lambda).tr()) + &self.b
    }

    fn output(&self) -> Tensor {
        let mut out = Tensor::read_safetensors(self.dir.path().join("y.safetensors")).unwrap();
        out.remove(0).1
    }
}

#[test]
fn weights_required_checks_and_then_needs_the_command_line() {
    let c = case("required", "");
    let o = graft(&["check", &c.spec]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = graft(&["inspect", "--json", &c.spec]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["weights"][1], serde_json::json!({"binding": "target", "file": null, "required": true}));

    let o = c.run(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = text(&o);
    assert!(err.contains("`target` leaves its weights to the command line (`weights required`)"), "{err}");
    assert!(err.contains("pass --weights target=FILE"), "{err}");

    save(
        &c.dir.path().join("target.safetensors"),
        &[("fc.weight", c.w.shallow_clone()), ("fc.bias", c.b.shallow_clone())],
    );
    let o = c.run(&[format!("--weights=target={}", c.p("target.safetensors"))]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(c.output().allclose(&c.expected(0.0), 1e-6, 1e-6, false));
    // The auxiliary model is built for its weights only: its checkpoint's classifier
    // is listed in one note, not refused.
    let out = text(&o);
    assert!(out.contains("`aux` is built for its weights only: 2 keys of"), "{out}");
    assert!(out.contains("not read (head.bias, head.weight)"), "{out}");
}

#[test]
fn key_rules_map_a_prefixed_checkpoint() {
    let c = case("keys", r#"prefix "base_model.model." rename "dense" -> "fc""#);
    let o = graft(&["inspect", "--json", &c.spec]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["weights"][1],
        serde_json::json!({"binding": "target", "file": null, "required": true, "prefix": "base_model.model.",
                           "rename": [{"from": "dense", "to": "fc"}]})
    );
    save(
        &c.dir.path().join("target.safetensors"),
        &[("base_model.model.dense.weight", c.w.shallow_clone()), ("base_model.model.dense.bias", c.b.shallow_clone())],
    );
    // λ stored as `[1]`, as the M2PT reference code saves it.
    save(&c.dir.path().join("cmr.safetensors"), &[("target.fc.lambda", t(&[0.25], &[1]))]);
    let o = c.run(&[
        format!("--weights=target={}", c.p("target.safetensors")),
        format!("--weights=cmr={}", c.p("cmr.safetensors")),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let got = c.output();
    assert!(got.allclose(&c.expected(0.25), 1e-6, 1e-6, false), "{got}");

    // Keys outside the prefix are not the binding's: one note lists them, and what the
    // spec needs must still be under the prefix.
    save(
        &c.dir.path().join("bad.safetensors"),
        &[("base_model.model.dense.weight", c.w.shallow_clone()), ("dense.bias", c.b.shallow_clone())],
    );
    let o = c.run(&[format!("--weights=target={}", c.p("bad.safetensors"))]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = text(&o);
    assert!(err.contains("missing from the file (1):\n      fc.bias: spec f32[4]"), "{err}");
    assert!(!err.contains("in the file but not in the spec"), "{err}");
    save(
        &c.dir.path().join("full.safetensors"),
        &[
            ("base_model.model.dense.weight", c.w.shallow_clone()),
            ("base_model.model.dense.bias", c.b.shallow_clone()),
            ("classifier.weight", c.w.shallow_clone()),
        ],
    );
    let o = c.run(&[format!("--weights=target={}", c.p("full.safetensors"))]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("`target` reads the keys under `base_model.model.` of"), "{out}");
    assert!(out.contains("1 other key not read (classifier.weight)"), "{out}");
}

/// A PEFT directory whose config disagrees with the adapter: every difference listed
/// before any tensor loads.
#[test]
fn peft_directory_config_is_checked_against_the_adapter() {
    let tmp = temp_dir("weights-binding-peft");
    let dir = tmp.path();
    let spec = dir.join("m.graft");
    std::fs::write(
        &spec,
        r#"
module net(dim: int) {
  in x
  fc = linear(dim, dim)(x)
  out fc
}
model m {
  input x: f32[B, 4]
  backbone base = net(4)(x) weights "base.safetensors"
  adapter lora_all = lora(rank: 2, alpha: 4.0) at base.fc parallel
  output y = base
  train lora_all
}
"#
        .replace("module net", "use std.adapters\nmodule net"),
    )
    .unwrap();
    save(&dir.join("base.safetensors"), &[("fc.weight", t(&[0.0; 16], &[4, 4])), ("fc.bias", t(&[0.0; 4], &[4]))]);
    save(&dir.join("x.safetensors"), &[("x", t(&[1.0; 8], &[2, 4]))]);
    let peft = dir.join("adapter");
    std::fs::create_dir_all(&peft).unwrap();
    save(
        &peft.join("adapter_model.safetensors"),
        &[
            ("base_model.model.fc.lora_A.weight", t(&[0.5; 8], &[2, 4])),
            ("base_model.model.fc.lora_B.weight", t(&[0.25; 8], &[4, 2])),
        ],
    );
    let run = |config: &str| {
        std::fs::write(peft.join("adapter_config.json"), config).unwrap();
        graft(&[
            "run",
            spec.to_str().unwrap(),
            "--weights",
            &format!("lora_all={}", peft.display()),
            "--inputs",
            dir.join("x.safetensors").to_str().unwrap(),
            "--out",
            dir.join("y.safetensors").to_str().unwrap(),
        ])
    };
    let o = run(r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["qkv"], "use_dora": true}"#);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = text(&o);
    for line in [
        "adapter `lora_all` and the PEFT directory",
        "rank: spec 2, adapter_config.json r = 8",
        "alpha: spec 4, adapter_config.json lora_alpha = 16",
        "use_dora: true",
        r#"target_modules: ["qkv"] do not cover 1 of the adapter's 1 sites (first: fc)"#,
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    // The matching config loads: y = x Wᵀ + b + (alpha / r) · x Aᵀ Bᵀ with W, b zero.
    let o = run(r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["fc"], "bias": "none"}"#);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let y = Tensor::read_safetensors(dir.join("y.safetensors")).unwrap().remove(0).1;
    // x A^T = 2.0 per rank; B · that = 0.25 · 2 · 2 = 1.0; times alpha / r = 2.
    assert!(y.allclose(&t(&[2.0; 8], &[2, 4]), 1e-6, 1e-6, false), "{y}");
}

/// `grid` (`[Π dims, D]` rows after `keep` rows) through LibTorch's antialiased
/// bicubic (`F.interpolate(mode="bicubic", antialias=True)`, what timm's
/// `resample_abs_pos_embed` calls), two axes per call: (H, W), then (T, 1).
fn torch_resample_3d(table: &Tensor, keep: i64, from: [i64; 3], to: [i64; 3]) -> Tensor {
    let d = table.size()[2];
    let cls = table.narrow(1, 0, keep);
    let grid = table.narrow(1, keep, from.iter().product());
    // [1, T·H·W, D] → [D·T, H, W] as channels
    let g = grid.reshape([from[0], from[1], from[2], d]).permute([3, 0, 1, 2]).contiguous();
    let g = g.reshape([1, d * from[0], from[1], from[2]]);
    let g = g.f_internal_upsample_bicubic2d_aa([to[1], to[2]], false, None, None).unwrap();
    // [D, T, H'·W'] → resize T only
    let g = g.reshape([1, d, from[0], to[1] * to[2]]);
    let g = g.f_internal_upsample_bicubic2d_aa([to[0], to[1] * to[2]], false, None, None).unwrap();
    let g = g.reshape([d, to[0], to[1], to[2]]).permute([1, 2, 3, 0]).reshape([1, to.iter().product(), d]);
    Tensor::cat(&[cls, g], 1)
}

/// A video position table (`[T, H, W]` grid plus a class token) resampled at load
/// equals LibTorch's antialiased bicubic applied axis by axis (timm has no 3-D
/// resampling to compare with): shrinking time and growing space, and the reverse.
#[test]
fn a_3d_position_grid_resamples_like_torch_axis_by_axis() {
    use graft::keymap::Resample;
    use graft::tensor::HostTensor;
    for (from, to) in [([8, 4, 4], [4, 6, 5]), ([2, 3, 3], [5, 2, 7])] {
        let (keep, d) = (1i64, 6i64);
        let n = keep + from.iter().product::<i64>();
        let table = Tensor::randn([1, n, d], (tch::Kind::Double, tch::Device::Cpu));
        let values: Vec<f64> = Vec::<f64>::try_from(table.flatten(0, -1)).unwrap();
        let host = HostTensor::from_f64_as(graft::ir::DType::F64, &[1, n, d], &values).unwrap();
        let rule = Resample { key: "pos_embed".into(), from: from.to_vec(), to: to.to_vec(), keep };
        let got = graft::params::resample::apply(&rule, &host).unwrap();
        let want = torch_resample_3d(&table, keep, from, to);
        assert_eq!(got.shape, want.size(), "{from:?} -> {to:?}");
        let want: Vec<f64> = Vec::<f64>::try_from(want.flatten(0, -1)).unwrap();
        let got = got.to_f64();
        let num = got.iter().zip(&want).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
        let den = want.iter().map(|b| b * b).sum::<f64>().sqrt();
        assert!(num / den <= 1e-12, "{from:?} -> {to:?}: relative error {:.3e}", num / den);
    }
}
