//! `graft fuse`: fold a trained model into its backbone's weights, check, write.
//!
//! `graft fuse SPEC [--weights BINDING=FILE]... [--run RUN_DIR] --out FUSED.safetensors
//! [--allow-missing PATTERN]... [--seed N]`. See [`crate::fuse`] for what is checked;
//! this prints the comparison and the parameter counts and writes the checkpoint only
//! when the check passes. `--run` is proven as `eval --run` proves it (`apply_run` in
//! `train/checkpoint.rs`, feature `torch`): a torn run is an error, never a fuse of
//! other weights.

use super::{backend, bindings, compiled, BackendArg, EngineArgs};
use crate::backend::Plan;
use crate::fuse::{fuse as fold, FuseError, TOLERANCE};
use crate::params::{Declared, Leaves};
use crate::pipeline::Mode;
use crate::report::thousands;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct FuseArgs {
    /// The spec file; its weights paths are relative to its directory.
    pub spec: PathBuf,
    /// Weights file for a binding (repeatable); a component the spec initialises, such
    /// as trained adapters, may be bound here too.
    #[arg(long = "weights", value_name = "BINDING=FILE")]
    pub weights: Vec<String>,
    /// The fused checkpoint to write.
    #[arg(long, value_name = "FUSED.safetensors")]
    pub out: PathBuf,
    /// A `graft train` run whose newest checkpoint is loaded over the spec's weights
    /// (or one checkpoint directory in it); proven first, as `eval --run` proves it.
    #[arg(long, value_name = "RUN_DIR")]
    pub run: Option<PathBuf>,
    /// Glob of weight keys that may be missing from (or extra in) a file (repeatable).
    #[arg(long = "allow-missing", value_name = "PATTERN")]
    pub allow_missing: Vec<String>,
    /// Load weights that hold NaN or infinity (otherwise an error naming the file and
    /// the tensor).
    #[arg(long = "allow-nonfinite")]
    pub allow_nonfinite: bool,
    /// Seed for initialised parameters and the random check inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Which backend runs the fused and unfused models for the check.
    #[arg(long, value_enum, default_value_t = BackendArg::DEFAULT)]
    pub backend: BackendArg,
    #[command(flatten)]
    pub engine: EngineArgs,
}

fn print_comparison(c: &crate::fuse::Comparison) {
    for (name, e) in &c.outputs {
        println!("output {name}: relative error {e:.3e} (limit {TOLERANCE:.0e})");
    }
}

/// `--out` must not be an input: the spec, a weights file, or a file of the run.
fn refuse_overwrite(a: &FuseArgs, bindings: &crate::params::Bindings) -> Result<()> {
    let mut inputs: Vec<(String, PathBuf)> = vec![("the spec".into(), a.spec.clone())];
    inputs.extend(bindings.files.iter().map(|(b, p)| (format!("the weights file of `{b}`"), p.clone())));
    // Without LibTorch `--run` is refused before anything is written.
    #[cfg(feature = "torch")]
    if let Some(run) = &a.run {
        let t = super::train::checkpoint::TRAINABLE;
        inputs.push(("the run's trained tensors".into(), run.join(t)));
        if let Ok(Some(dir)) = super::train::rundir::latest(run) {
            inputs.push(("the run's trained tensors".into(), dir.join(t)));
        }
    }
    crate::input_file::refuse_overwrite("--out", &a.out, inputs.iter().map(|(w, p)| (w.clone(), p.as_path())))
        .map_err(|e| anyhow::anyhow!(e))
}

/// `graft fuse`.
pub fn run(a: &FuseArgs) -> Result<()> {
    let train = compiled(&a.spec, Mode::Train)?;
    let infer = compiled(&a.spec, Mode::Infer)?;
    let (ptrain, pinfer) = (Plan::new(&train.graph), Plan::new(&infer.graph));
    let mut bindings = bindings(&a.spec, &train, &a.weights)?;
    bindings.allow_nonfinite = a.allow_nonfinite;
    refuse_overwrite(a, &bindings)?;
    let declared = Declared::from_sites(&train.sites);
    #[allow(unused_mut)] // written only with a training run (torch builds)
    let mut leaves =
        Leaves::load(ptrain.params().iter().chain(pinfer.params()), &bindings, &declared, &a.allow_missing, a.seed)?;
    for note in &leaves.notes {
        eprintln!("note: {note}");
    }
    if let Some(run) = &a.run {
        // The trained tensors over the spec's values, before anything is folded.
        #[cfg(feature = "torch")]
        for note in super::train::checkpoint::apply_run(run, &train, &ptrain, &mut leaves)? {
            eprintln!("note: {note}");
        }
        #[cfg(not(feature = "torch"))]
        anyhow::bail!(
            "--run {}: reading a training run needs a graft built with `--features torch`; bind its trainable.safetensors with --weights instead",
            run.display()
        );
    }
    let backend = backend(a.backend, &a.engine)?;
    let fused = match fold(backend.as_ref(), &train, &infer, &leaves, a.seed) {
        Ok(f) => f,
        Err(FuseError::Differs { name, error, comparison }) => {
            print_comparison(&comparison);
            return Err(FuseError::Differs { name, error, comparison }.into());
        }
        Err(e) => return Err(e.into()),
    };
    drop(leaves);
    print_comparison(&fused.comparison);
    println!("params before: {} (train mode)", thousands(fused.before));
    println!("params after:  {} (infer mode, {} folded)", thousands(fused.after), fused.folded);
    if let Some(first) = fused.outside.first() {
        println!(
            "note: {} parameter tensor(s) lie outside backbone `{}` and keep their full paths (e.g. {first})",
            fused.outside.len(),
            fused.backbone.as_deref().unwrap_or("-"),
        );
    }
    crate::safetensors::write(&a.out, &fused.tensors, &BTreeMap::new())?;
    println!(
        "wrote {} ({} tensors{}, max relative error {:.3e})",
        a.out.display(),
        fused.tensors.len(),
        fused.backbone.map(|b| format!(", keys relative to `{b}`")).unwrap_or_default(),
        fused.comparison.worst()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safetensors::SafeFile;
    use crate::tensor::HostTensor;

    fn values(shape: &[i64], seed: u64) -> HostTensor {
        crate::params::init::init_values(&crate::ir::Init::Normal { std: 1.0 }, shape, crate::ir::DType::F32, seed, "t")
    }

    #[test]
    fn fuse_folds_lora_into_the_backbone_checkpoint() {
        let dir = tempfile::Builder::new().prefix("graft-fuse-test-").tempdir().unwrap();
        let dir = dir.path();
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
        let (w, bias) = (values(&[8, 8], 1), values(&[8], 2));
        let (la, lb) = (values(&[2, 8], 3), values(&[8, 2], 4));
        let ones = HostTensor::from_f32(&[8], &[1.0; 8]).unwrap();
        let zeros = HostTensor::from_f32(&[8], &[0.0; 8]).unwrap();
        let none = BTreeMap::new();
        let base = vec![
            ("fc.weight".to_string(), w.clone()),
            ("fc.bias".to_string(), bias.clone()),
            ("norm.weight".to_string(), ones),
            ("norm.bias".to_string(), zeros),
        ];
        crate::safetensors::write(&dir.join("w.safetensors"), &base, &none).unwrap();
        let lora = vec![("b.fc.lora_A.weight".to_string(), la.clone()), ("b.fc.lora_B.weight".to_string(), lb.clone())];
        crate::safetensors::write(&dir.join("lora.safetensors"), &lora, &none).unwrap();
        let out = dir.join("fused.safetensors");
        let args = FuseArgs {
            spec: spec.clone(),
            weights: vec![format!("l={}", dir.join("lora.safetensors").display())],
            out: out.clone(),
            run: None,
            allow_missing: vec![],
            allow_nonfinite: false,
            seed: 0,
            backend: BackendArg::DEFAULT,
            engine: EngineArgs {
                threads: Some(1),
                elementwise: super::super::ElementwiseArg::Jit,
                simd: None,
                attention: super::super::AttentionArg::Auto,
            },
        };
        run(&args).unwrap();
        let fused = SafeFile::open(&out).unwrap();
        let keys: Vec<&str> = fused.entries().keys().map(String::as_str).collect();
        assert_eq!(keys, ["fc.bias", "fc.weight", "norm.bias", "norm.weight"]);
        // W + 2·(B @ A), summed in float64 in order, rounded once.
        let (w, la, lb) = (w.to_f64(), la.to_f64(), lb.to_f64());
        let want: Vec<f32> = (0..64)
            .map(|ij| {
                let (i, j) = (ij / 8, ij % 8);
                let ba: f64 = (0..2).map(|r| lb[i * 2 + r] * la[r * 8 + j]).sum();
                (w[ij] + ba * 2.0) as f32
            })
            .collect();
        assert_eq!(fused.tensor("fc.weight").unwrap().as_f32().unwrap(), want);
        assert_eq!(fused.tensor("fc.bias").unwrap(), bias);

        // A NaN in the adapter's file: an error naming the file and the tensor; allowed,
        // an error naming the parameter, never "the output differs by NaN".
        let mut nan = la.iter().map(|&v| v as f32).collect::<Vec<_>>();
        nan[3] = f32::NAN;
        let bad = vec![
            ("b.fc.lora_A.weight".to_string(), HostTensor::from_f32(&[2, 8], &nan).unwrap()),
            ("b.fc.lora_B.weight".to_string(), values(&[8, 2], 4)),
        ];
        crate::safetensors::write(&dir.join("nan.safetensors"), &bad, &none).unwrap();
        let nan_args = FuseArgs {
            weights: vec![format!("l={}", dir.join("nan.safetensors").display())],
            out: dir.join("nan-fused.safetensors"),
            ..args
        };
        let err = run(&nan_args).unwrap_err().to_string();
        assert!(err.contains("nan.safetensors: tensor `b.fc.lora_A.weight` is not finite"), "{err}");
        let err = run(&FuseArgs { allow_nonfinite: true, ..nan_args }).unwrap_err().to_string();
        assert!(err.contains("parameter `l.b.fc.lora_A.weight` is not finite (NaN at element 3"), "{err}");
        assert!(!dir.join("nan-fused.safetensors").exists());
    }
}
