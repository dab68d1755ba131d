//! `graft fuse`: fold a model's re-parameterizations into plain backbone weights.
//!
//! Both modes are compiled and their weights loaded from the same leaves. Every
//! folded parameter is evaluated in float64 and stored in its own dtype. Both graphs
//! then run in float32 on the same random inputs (declared shapes, every symbol 2);
//! nothing is written unless every output agrees to a relative error
//! ‖infer − train‖ / ‖train‖ ≤ 1e-5. The checkpoint holds every inference-mode
//! parameter, keyed relative to the first backbone (so it loads into the plain
//! backbone spec and, for a ViT, into timm with `strict=True`); parameters outside
//! the backbone keep their full paths.

use super::cli::{bindings, compiled, plan_of, FuseArgs};
use super::exec;
use super::inputs;
use super::params::{value_of, ParamStore};
use super::safetensors;
use super::weights::{Declared, Leaves};
use crate::pipeline::Mode;
use crate::report::thousands;
use crate::syntax::ast::ComponentKind;
use anyhow::{bail, Result};
use std::collections::BTreeSet;
use std::process::ExitCode;
use tch::{Device, Kind, Tensor};

/// The largest accepted relative error between the folded and unfolded model.
pub const TOLERANCE: f64 = 1e-5;

/// ‖a − b‖ / ‖b‖ in float64 (the absolute error when ‖b‖ is 0).
pub fn relative_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b) = (a.f_to_kind(Kind::Double)?, b.f_to_kind(Kind::Double)?);
    let diff = a.f_sub(&b)?.f_norm()?.f_double_value(&[])?;
    let base = b.f_norm()?.f_double_value(&[])?;
    Ok(if base > 0.0 { diff / base } else { diff })
}

/// Check every output of the folded model against the unfolded one; the largest
/// relative error, or an error naming the first output past [`TOLERANCE`].
pub fn compare(train: &[(String, Tensor)], infer: &[(String, Tensor)]) -> Result<f64> {
    let mut worst = 0.0f64;
    for (name, t) in train {
        let Some((_, i)) = infer.iter().find(|(n, _)| n == name) else {
            bail!("output `{name}` is missing in infer mode")
        };
        if t.size() != i.size() {
            bail!("output `{name}` is {:?} in train mode but {:?} in infer mode", t.size(), i.size());
        }
        let e = relative_error(i, t)?;
        println!("output {name}: relative error {e:.3e} (limit {TOLERANCE:.0e})");
        if e.is_nan() || e > TOLERANCE {
            bail!("the folded model does not match the trained one: output `{name}` differs by {e:.3e} relative (limit {TOLERANCE:.0e}); nothing written");
        }
        worst = worst.max(e);
    }
    Ok(worst)
}

pub fn fuse(a: &FuseArgs) -> Result<ExitCode> {
    let Some(train) = compiled(&a.spec, Mode::Train) else { return Ok(ExitCode::from(1)) };
    let Some(infer) = compiled(&a.spec, Mode::Infer) else { return Ok(ExitCode::from(1)) };
    let (ptrain, pinfer) = (plan_of(&train)?, plan_of(&infer)?);
    let bindings = bindings(&a.spec, &train, &a.weights)?;
    let declared = Declared::from_sites(&train.sites);
    let mut leaves =
        Leaves::load(ptrain.params.iter().chain(&pinfer.params), &bindings, &declared, &a.allow_missing, a.seed)?;
    for note in &leaves.notes {
        eprintln!("note: {note}");
    }
    if let Some(run) = &a.run {
        // The trained tensors over the spec's values, before anything is folded.
        for note in super::train::checkpoint::apply_run(run, &train, &ptrain, &mut leaves)? {
            eprintln!("note: {note}");
        }
    }
    // The folded values are computed once: the check runs on exactly what is written.
    let values: Vec<Tensor> = pinfer.params.iter().map(|p| value_of(p, &leaves)).collect::<Result<_>>()?;
    let folded = pinfer.params.iter().filter(|p| matches!(p.source, crate::ir::ParamSource::Folded { .. })).count();
    let strain = ParamStore::build(&ptrain, &leaves, Device::Cpu, Kind::Float)?;
    let sinfer =
        ParamStore::from_values(&pinfer, values.iter().map(|t| t.shallow_clone()).collect(), Device::Cpu, Kind::Float)?;
    drop(leaves);

    let given = inputs::random(&ptrain, 2, a.seed)?;
    let copy = |v: &[(String, Tensor)]| v.iter().map(|(n, t)| (n.clone(), t.copy())).collect::<Vec<_>>();
    let (itrain, _) = inputs::bind(&ptrain, copy(&given), Kind::Float, Device::Cpu)?;
    let (iinfer, _) = inputs::bind(&pinfer, copy(&given), Kind::Float, Device::Cpu)?;
    let otrain = tch::no_grad(|| exec::run(&ptrain, &strain.tensors, itrain))?;
    let oinfer = tch::no_grad(|| exec::run(&pinfer, &sinfer.tensors, iinfer))?;
    let worst = compare(&otrain, &oinfer)?;

    let before = train.graph.param_count();
    let after = infer.graph.param_count();
    let backbone = train.components.iter().find(|c| c.kind == ComponentKind::Backbone).map(|c| c.name.clone());
    let prefix = backbone.as_ref().map(|b| format!("{b}."));
    let mut out: Vec<(String, Tensor)> = Vec::with_capacity(values.len());
    let mut keys = BTreeSet::new();
    let mut outside = Vec::new();
    for (p, v) in pinfer.params.iter().zip(values) {
        let key = match prefix.as_deref().and_then(|pre| p.path.strip_prefix(pre)) {
            Some(k) => k.to_string(),
            None => {
                outside.push(p.path.clone());
                p.path.clone()
            }
        };
        if !keys.insert(key.clone()) {
            bail!("two parameters would be stored under the key `{key}`");
        }
        out.push((key, v.f_contiguous()?));
    }
    let written: u64 = out.iter().map(|(_, t)| t.numel() as u64).sum();
    if written != after {
        bail!("internal error: {written} parameters to write, but infer mode has {after}");
    }
    println!("params before: {} (train mode)", thousands(before));
    println!("params after:  {} (infer mode, {folded} folded)", thousands(after));
    if !outside.is_empty() {
        println!(
            "note: {} parameter tensor(s) lie outside backbone `{}` and keep their full paths (e.g. {})",
            outside.len(),
            backbone.as_deref().unwrap_or("-"),
            outside[0]
        );
    }
    safetensors::write(&a.out, &out)?;
    println!(
        "wrote {} ({} tensors{}, max relative error {worst:.3e})",
        a.out.display(),
        out.len(),
        backbone.map(|b| format!(", keys relative to `{b}`")).unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v)
    }

    #[test]
    fn compare_refuses_past_the_tolerance() {
        let a = vec![("y".to_string(), t(&[1.0, 2.0, 3.0]))];
        assert_eq!(compare(&a, &a).unwrap(), 0.0);
        let close = vec![("y".to_string(), t(&[1.0, 2.0, 3.00001]))];
        assert!(compare(&a, &close).unwrap() < TOLERANCE);
        let far = vec![("y".to_string(), t(&[1.0, 2.0, 3.001]))];
        assert!(compare(&a, &far).unwrap_err().to_string().contains("nothing written"));
        let nan = vec![("y".to_string(), t(&[1.0, f32::NAN, 3.0]))];
        assert!(compare(&a, &nan).is_err());
        assert!(compare(&a, &[]).is_err());
    }

    #[test]
    fn fuse_folds_lora_into_the_backbone_checkpoint() {
        let dir = std::env::temp_dir().join(format!("graft-fuse-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = dir.join("m.graft");
        std::fs::write(
            &spec,
            r#"use std.adapters

module net(dim: int) {
  in x
  fc   = linear(dim, dim)(x)
  norm = layernorm(dim)(fc)
  out norm
}

model m {
  input x: f32[B, 8]
  backbone b = net(8)(x) weights "w.safetensors"
  adapter l = lora(in_features: 8, out_features: 8, rank: 2, alpha: 4.0) at b.fc parallel
  output y = b
  train l
}
"#,
        )
        .unwrap();
        let f = (Kind::Float, Device::Cpu);
        let (w, bias) = (Tensor::randn([8, 8], f), Tensor::randn([8], f));
        let (la, lb) = (Tensor::randn([2, 8], f), Tensor::randn([8, 2], f));
        let base = vec![
            ("fc.weight".to_string(), w.shallow_clone()),
            ("fc.bias".to_string(), bias.shallow_clone()),
            ("norm.weight".to_string(), Tensor::ones([8], f)),
            ("norm.bias".to_string(), Tensor::zeros([8], f)),
        ];
        safetensors::write(&dir.join("w.safetensors"), &base).unwrap();
        let lora = vec![
            ("b.fc.lora_A.weight".to_string(), la.shallow_clone()),
            ("b.fc.lora_B.weight".to_string(), lb.shallow_clone()),
        ];
        safetensors::write(&dir.join("lora.safetensors"), &lora).unwrap();
        let out = dir.join("fused.safetensors");
        let args = FuseArgs {
            spec: spec.clone(),
            weights: vec![format!("l={}", dir.join("lora.safetensors").display())],
            out: out.clone(),
            run: None,
            allow_missing: vec![],
            seed: 0,
        };
        fuse(&args).unwrap();
        let fused = safetensors::SafeFile::open(&out).unwrap();
        let keys: Vec<&str> = fused.entries.keys().map(String::as_str).collect();
        assert_eq!(keys, ["fc.bias", "fc.weight", "norm.bias", "norm.weight"]);
        let d = |t: &Tensor| t.to_kind(Kind::Double);
        let want = (d(&w) + d(&lb).matmul(&d(&la)) * 2.0).to_kind(Kind::Float);
        assert!(fused.tensor("fc.weight").unwrap().equal(&want));
        assert!(fused.tensor("fc.bias").unwrap().equal(&bias));
    }
}
