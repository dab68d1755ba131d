//! The `graft run` and `graft fuse` commands.
//!
//! `graft run SPEC [--weights BINDING=FILE]... --inputs IN.safetensors --out OUT.safetensors
//! [--mode train|infer] [--device cpu|cuda|auto] [--dtype f32|bf16|f16]
//! [--allow-missing PATTERN]... [--seed N] [--cuda-graph]` compiles the spec, loads its weights (spec
//! paths are relative to the spec's directory; `--weights` overrides a binding or binds
//! a component the spec initialises), checks the inputs, runs, and writes every output
//! by name. Any user error is one clear message and exit status 1.

use super::exec;
use super::fuse;
use super::inputs;
use super::lower::{lower, Plan};
use super::params::ParamStore;
use super::safetensors::{self, SafeFile};
use super::weights::{Bindings, Declared, Leaves};
use super::{kind_name, type_text, DeviceArg, RunDtype};
use crate::api::{compile_file, render_failure};
use crate::pipeline::{Compiled, Failure, Mode};
use anyhow::{anyhow, bail, Result};
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    pub mode: Mode,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// Float type to compute in (parameters and float inputs are cast to it).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: RunDtype,
    /// Glob of weight keys that may be missing from (or extra in) a file (repeatable).
    #[arg(long = "allow-missing", value_name = "PATTERN")]
    pub allow_missing: Vec<String>,
    /// Seed for parameters initialised from their init rule.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Capture the forward in a CUDA graph and replay it (CUDA only; `cuda-graphs` build).
    #[arg(long = "cuda-graph")]
    pub cuda_graph: bool,
}

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
    /// A `graft train` run whose trainable.safetensors is loaded over the spec's weights.
    #[arg(long, value_name = "RUN_DIR")]
    pub run: Option<PathBuf>,
    /// Glob of weight keys that may be missing from (or extra in) a file (repeatable).
    #[arg(long = "allow-missing", value_name = "PATTERN")]
    pub allow_missing: Vec<String>,
    /// Seed for initialised parameters and the random check inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Compile, or print the spec's errors and return `None` (exit 1).
pub(crate) fn compiled(spec: &Path, mode: Mode) -> Option<Compiled> {
    match compile_file(spec, mode) {
        Ok(c) => Some(c),
        Err(f) => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            eprint!("{}", render_failure(&f, color));
            if let Failure::User(_, d) = &f {
                let n = d.items.len();
                eprintln!("{n} error{} in {}", if n == 1 { "" } else { "s" }, spec.display());
            }
            None
        }
    }
}

pub(crate) fn plan_of(c: &Compiled) -> Result<Plan> {
    lower(&c.graph).map_err(|e| anyhow!("internal error lowering model {}: {e}", c.model))
}

/// The spec's bindings, resolved, with `--weights` applied.
pub(crate) fn bindings(spec: &Path, c: &Compiled, cli: &[String]) -> Result<Bindings> {
    let dir = spec.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut names: BTreeSet<String> = c.components.iter().map(|x| x.name.clone()).collect();
    names.extend(c.heads.iter().cloned());
    names.extend(c.adapters.iter().cloned());
    names.extend(c.pathways.iter().cloned());
    let mut b = Bindings::resolve(dir, &c.weights, cli, &names)?;
    let unbound: Vec<&str> =
        c.required_weights.iter().filter(|r| !b.files.contains_key(*r)).map(String::as_str).collect();
    if !unbound.is_empty() {
        let args: Vec<String> = unbound.iter().map(|r| format!("--weights {r}=FILE")).collect();
        bail!(
            "{}: `{}` {} its weights to the command line (`weights required`); pass {}",
            spec.display(),
            unbound.join("`, `"),
            if unbound.len() == 1 { "leaves" } else { "leave" },
            args.join(" ")
        );
    }
    b.maps = c.key_maps.clone();
    // PEFT adapter directories: their config checked against the adapter first.
    for (name, path) in &b.files {
        if super::peft::is_peft_dir(path) {
            let map = super::peft::check(name, path, c.adapter_info.get(name))?;
            b.maps.insert(name.clone(), map);
        }
    }
    b.weights_only = c.components.iter().filter(|x| x.weights_only).map(|x| x.name.clone()).collect();
    Ok(b)
}

/// `graft run`.
pub fn run(a: RunArgs) -> Result<ExitCode> {
    let Some(c) = compiled(&a.spec, a.mode) else { return Ok(ExitCode::from(1)) };
    let device = a.device.device()?;
    if a.cuda_graph {
        super::cuda_graph::require("--cuda-graph", device)?;
    }
    let kind = a.dtype.kind();
    let plan = plan_of(&c)?;
    let bindings = bindings(&a.spec, &c, &a.weights)?;
    // Inputs first: they are cheap to check.
    let given = SafeFile::open(&a.inputs).map_err(|e| anyhow!("--inputs: {e:#}"))?.tensors()?;
    let (ins, _) = inputs::bind(&plan, given, kind, device)?;
    let store = {
        let leaves =
            Leaves::load(plan.params.iter(), &bindings, &Declared::from_sites(&c.sites), &a.allow_missing, a.seed)?;
        for note in &leaves.notes {
            eprintln!("note: {note}");
        }
        ParamStore::build(&plan, &leaves, device, kind)?
    };
    let outs = if a.cuda_graph {
        // Replay once; copy the graph's static outputs to the host before it goes.
        let g = super::cuda_graph::GraphedForward::capture(&plan, &store.tensors, &ins)?;
        g.run(&ins)?.into_iter().map(|(n, t)| Ok((n, t.f_to_device(tch::Device::Cpu)?))).collect::<Result<_>>()?
    } else {
        tch::no_grad(|| exec::run(&plan, &store.tensors, ins))?
    };
    let outs: Vec<(String, tch::Tensor)> =
        outs.into_iter().map(|(n, t)| Ok((n, t.f_contiguous()?))).collect::<Result<_>>()?;
    safetensors::write(&a.out, &outs)?;
    let desc: Vec<String> =
        outs.iter().map(|(n, t)| format!("{n} {}", type_text(&kind_name(t.kind()), &t.size()))).collect();
    println!("wrote {} ({})", a.out.display(), desc.join(", "));
    Ok(ExitCode::SUCCESS)
}

/// `graft fuse`.
pub fn fuse(a: FuseArgs) -> Result<ExitCode> {
    fuse::fuse(&a)
}
