//! `graft run`: run a model on named inputs and write its outputs by name.
//!
//! `graft run SPEC [--weights BINDING=FILE]... --inputs IN.safetensors --out OUT.safetensors
//! [--mode train|infer] [--device cpu|cuda|auto] [--dtype f32|bf16|f16]
//! [--allow-missing PATTERN]... [--seed N] [--cuda-graph] [--backend native|torch]
//! [--threads N] [--elementwise unfused|blocks|jit]` compiles the spec, loads its
//! weights (spec paths are relative to the spec's directory; `--weights` overrides a
//! binding or binds a component the spec initialises), checks the inputs, runs, and
//! writes every output by name. Any user error is one clear message and exit status 1.

use super::{backend, bindings, compiled, options, BackendArg, DeviceArg, DtypeArg, EngineArgs, ModeArg};
use crate::backend::{inputs, Plan};
use crate::params::{materialise, Declared, Leaves};
use crate::safetensors::{self, SafeFile};
use anyhow::{anyhow, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The spec file; its weights paths are relative to its directory.
    pub spec: PathBuf,
    /// Weights file for a binding, overriding the spec's (repeatable).
    #[arg(long = "weights", value_name = "BINDING=FILE")]
    pub weights: Vec<String>,
    /// Inputs by name.
    #[arg(long, value_name = "IN.safetensors")]
    pub inputs: PathBuf,
    /// Where to write the outputs, by name.
    #[arg(long, value_name = "OUT.safetensors")]
    pub out: PathBuf,
    /// `infer` runs the folded model; `train` the model as trained (same function).
    #[arg(long, value_enum, default_value = "infer")]
    pub mode: ModeArg,
    #[arg(long, default_value = "auto", value_parser = DeviceArg::parse, value_name = "cpu|cuda|cuda:N|auto")]
    pub device: DeviceArg,
    /// Float type to compute in (parameters and float inputs are cast to it).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DtypeArg,
    /// Glob of weight keys that may be missing from (or extra in) a file (repeatable).
    #[arg(long = "allow-missing", value_name = "PATTERN")]
    pub allow_missing: Vec<String>,
    /// Load weights that hold NaN or infinity (otherwise an error naming the file and
    /// the tensor).
    #[arg(long = "allow-nonfinite")]
    pub allow_nonfinite: bool,
    /// Seed for parameters initialised from their init rule.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Capture the forward in a CUDA graph and replay it (CUDA only; `cuda-graphs` build).
    #[arg(long = "cuda-graph")]
    pub cuda_graph: bool,
    /// Which backend executes the model.
    #[arg(long, value_enum, default_value_t = BackendArg::DEFAULT)]
    pub backend: BackendArg,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `graft run`.
pub fn run(a: RunArgs) -> Result<()> {
    let c = compiled(&a.spec, a.mode.into())?;
    let backend = backend(a.backend, &a.engine)?;
    let opts = options(backend.as_ref(), a.device, a.dtype, a.cuda_graph)?;
    let plan = Plan::new(&c.graph);
    let mut bindings = bindings(&a.spec, &c, &a.weights)?;
    bindings.allow_nonfinite = a.allow_nonfinite;
    let inputs_of_run = [("--inputs".to_string(), a.inputs.as_path()), ("the spec".to_string(), a.spec.as_path())];
    let weights = bindings.files.iter().map(|(b, p)| (format!("the weights file of `{b}`"), p.as_path()));
    crate::input_file::refuse_overwrite("--out", &a.out, inputs_of_run.into_iter().chain(weights))
        .map_err(|e| anyhow!(e))?;
    // Inputs first: they are cheap to check.
    let given = SafeFile::open(&a.inputs).and_then(|f| f.tensors()).map_err(|e| anyhow!("--inputs: {e}"))?;
    let bound = inputs::bind(&plan, given, opts.float)?;
    let values = {
        let declared = Declared::from_sites(&c.sites);
        let leaves = Leaves::load(plan.params().iter(), &bindings, &declared, &a.allow_missing, a.seed)?;
        for note in &leaves.notes {
            eprintln!("note: {note}");
        }
        materialise(plan.params(), &leaves)?
    };
    let mut exe = backend.prepare(&plan, values, &opts)?;
    let outs = exe.run(&bound.values)?;
    safetensors::write(&a.out, &outs, &BTreeMap::new())?;
    let desc: Vec<String> = outs.iter().map(|(n, t)| format!("{n} {}", t.type_text())).collect();
    println!("wrote {} ({})", a.out.display(), desc.join(", "));
    Ok(())
}
