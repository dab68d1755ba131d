//! graft's multi-tensor AdamW and global-norm clipping against PyTorch's
//! `torch.optim.AdamW(foreach=True)` and `clip_grad_norm_(foreach=True)`: 20 steps on
//! the CPU with two learning-rate groups, decayed and undecayed tensors (a 0-d λ among
//! them), a tensor without a gradient on some steps, clipping and a changing rate; the
//! parameters and both moments agree to 1e-6 (relative to each tensor's largest value).
//! Also the device-side non-finite flag: a step it marks changes nothing.
//! Needs the pinned Python environment (scripts/setup.sh).

#![cfg(feature = "torch")]

use graft::backend::torch::train::optim::{clip_grad_norm, flag_non_finite, global_norm, AdamW, Rate};
use std::path::PathBuf;
use std::process::Command;
use tch::{Device, Kind, Tensor};

const STEPS: usize = 20;
const LR: f64 = 3e-2;
const LR_HEAD: f64 = 1e-1;
const WD: f64 = 0.05;
const CLIP: f64 = 0.5;

fn python() -> PathBuf {
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".graft-env/venv/bin/python");
    assert!(py.exists(), "{} does not exist: run scripts/setup.sh first", py.display());
    py
}

/// (name, shape): `w`/`w2` are decayed (two or more dims), `b`/`lam` are not; `head.*`
/// is the second group.
const PARAMS: [(&str, &[i64]); 4] = [("body.w", &[8, 16]), ("body.b", &[16]), ("head.w2", &[4, 8]), ("head.lam", &[])];

/// Steps on which `body.b` has no gradient (an adapter skipped for a missing modality).
fn no_grad(step: usize, name: &str) -> bool {
    name == "body.b" && (step == 4 || step == 11)
}

fn rate(step: usize) -> f64 {
    0.5 * (1.0 + (std::f64::consts::PI * step as f64 / STEPS as f64).cos())
}

const REFERENCE: &str = r#"
import sys, torch
from safetensors.torch import load_file, save_file
d = load_file(sys.argv[1])
names = ["body.w", "body.b", "head.w2", "head.lam"]
ps = {n: torch.nn.Parameter(d["init." + n].clone()) for n in names}
lr, lr_head, wd, clip, steps = (float(d["cfg"][i]) for i in range(5))
groups = [
    {"params": [ps["body.w"]], "lr": lr, "weight_decay": wd, "base": lr},
    {"params": [ps["body.b"]], "lr": lr, "weight_decay": 0.0, "base": lr},
    {"params": [ps["head.w2"]], "lr": lr_head, "weight_decay": wd, "base": lr_head},
    {"params": [ps["head.lam"]], "lr": lr_head, "weight_decay": 0.0, "base": lr_head},
]
opt = torch.optim.AdamW(groups, foreach=True)
for t in range(int(steps)):
    for n in names:
        k = f"g{t}.{n}"
        ps[n].grad = d[k].clone() if k in d else None
    present = [p for p in ps.values() if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(present, clip, foreach=True)
    for g in opt.param_groups:
        g["lr"] = g["base"] * float(d["rate"][t])
    opt.step()
out = {}
for n in names:
    out["p." + n] = ps[n].detach()
    st = opt.state[ps[n]]
    out["m." + n] = st["exp_avg"]
    out["v." + n] = st["exp_avg_sq"]
save_file(out, sys.argv[2])
"#;

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    assert_eq!(a.size(), b.size());
    let diff = (&a - &b).abs().max().double_value(&[]);
    diff / b.abs().max().double_value(&[]).max(1e-12)
}

#[test]
fn adamw_and_clipping_equal_pytorchs_foreach_over_twenty_steps() {
    tch::manual_seed(7);
    let init: Vec<(String, Tensor)> =
        PARAMS.iter().map(|(n, s)| (n.to_string(), Tensor::randn(*s, (Kind::Float, Device::Cpu)))).collect();
    let params: Vec<(String, Tensor)> = init.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
    let mut opt = AdamW::new(params, LR, &[("head.*".into(), LR_HEAD)], WD, &[]).unwrap();
    let mut saved: Vec<(String, Tensor)> = init.iter().map(|(n, t)| (format!("init.{n}"), t.copy())).collect();
    for t in 0..STEPS {
        let mut grads: Vec<Option<Tensor>> = PARAMS
            .iter()
            .map(|(n, s)| (!no_grad(t, n)).then(|| Tensor::randn(*s, (Kind::Float, Device::Cpu)) * 0.3))
            .collect();
        for ((n, _), g) in PARAMS.iter().zip(&grads) {
            if let Some(g) = g {
                saved.push((format!("g{t}.{n}"), g.copy()));
            }
        }
        let norm = clip_grad_norm(&mut grads, Some(CLIP)).unwrap().unwrap();
        assert!(norm.double_value(&[]) > 0.0);
        opt.step(&grads, rate(t)).unwrap();
    }
    let rates: Vec<f64> = (0..STEPS).map(rate).collect();
    saved.push(("rate".into(), Tensor::from_slice(&rates)));
    saved.push(("cfg".into(), Tensor::from_slice(&[LR, LR_HEAD, WD, CLIP, STEPS as f64])));
    // A scratch directory removed with the test, pass or fail.
    let dir = tempfile::Builder::new().prefix("graft-optim-").tempdir().unwrap();
    let (input, output) = (dir.path().join("in.safetensors"), dir.path().join("out.safetensors"));
    Tensor::write_safetensors(&saved, &input).unwrap();
    let o = Command::new(python()).arg("-c").arg(REFERENCE).arg(&input).arg(&output).output().unwrap();
    assert!(o.status.success(), "reference failed:\n{}", String::from_utf8_lossy(&o.stderr));
    let want: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(&output).unwrap().into_iter().collect();
    let state: std::collections::HashMap<String, Tensor> = opt.state_tensors().unwrap().into_iter().collect();
    for ((n, _), p) in PARAMS.iter().zip(opt.params()) {
        let moved = rel(&p, &init.iter().find(|(m, _)| m == n).unwrap().1);
        assert!(moved > 1e-3, "{n} trained ({moved})");
        let e = rel(&p, &want[&format!("p.{n}")]);
        assert!(e <= 1e-6, "{n}: parameter differs from PyTorch by {e:e}");
        for (ours, theirs) in [("exp_avg", "m"), ("exp_avg_sq", "v")] {
            let e = rel(&state[&format!("{n}.{ours}")], &want[&format!("{theirs}.{n}")]);
            assert!(e <= 1e-6, "{n}.{ours} differs from PyTorch by {e:e}");
        }
    }
    let steps = |n: &str| state[&format!("{n}.step")].int64_value(&[0]);
    assert_eq!((steps("body.w"), steps("body.b")), (STEPS as i64, STEPS as i64 - 2), "no gradient: no step");
}

#[test]
fn a_step_flagged_non_finite_changes_nothing() {
    let w = Tensor::from_slice(&[1.0f32, -2.0, 0.5, 3.0]).reshape([2, 2]);
    let mut opt = AdamW::new(vec![("w".into(), w.shallow_clone())], 0.1, &[], 0.01, &[]).unwrap();
    let good = Tensor::from_slice(&[0.1f32, 0.2, -0.3, 0.4]).reshape([2, 2]);
    opt.step(&[Some(good.copy())], 1.0).unwrap();
    let before = w.copy();
    let state_before = opt.state_tensors().unwrap();
    let found_inf = Tensor::zeros([], (Kind::Float, Device::Cpu));
    let bad = Tensor::from_slice(&[0.1f32, f32::NAN, -0.3, 0.4]).reshape([2, 2]);
    let loss = Tensor::from(1.5f32);
    flag_non_finite(&[&loss], &found_inf).unwrap();
    assert_eq!(found_inf.double_value(&[]), 0.0, "a finite loss raises no flag");
    let norm = global_norm(&[Some(bad.copy())]).unwrap().unwrap();
    flag_non_finite(&[&loss, &norm], &found_inf).unwrap();
    assert_eq!(found_inf.double_value(&[]), 1.0, "a NaN gradient makes the norm NaN, which raises the flag");
    let rate = Tensor::from(1.0f32);
    opt.step_on_device(&[Some(bad)], Rate::Device(&rate), Some(&found_inf)).unwrap();
    assert!(w.equal(&before), "parameters untouched");
    for ((n, a), (_, b)) in opt.state_tensors().unwrap().iter().zip(&state_before) {
        assert!(a.equal(b), "{n} untouched");
    }
    // The flag stays raised until the caller clears it; a clean step then proceeds,
    // with the rate read from the device tensor.
    let _ = found_inf.shallow_clone().fill_(0.0);
    opt.step_on_device(&[Some(good)], Rate::Device(&rate), Some(&found_inf)).unwrap();
    assert!(!w.equal(&before));
    assert_eq!(opt.state_tensors().unwrap()[2].1.int64_value(&[0]), 2);
}
