//! `graft export pytorch SPEC [--mode train|infer] [--weights B=F]… --out DIR`: the
//! model as a PyTorch package ([`crate::export::pytorch`]); `graft export onnx SPEC
//! [--weights B=F]… --out FILE.onnx [--opset N] [--dynamic-batch]`: the folded model
//! as ONNX ([`crate::export::onnx`]).
//!
//! `graft export peft SPEC --run RUN_DIR --out DIR [--adapter NAME]`: a run's trained
//! `lora` adapter as a PEFT directory (`adapter_config.json` +
//! `adapter_model.safetensors`, published together), for
//! `peft.PeftModel.from_pretrained` over the timm / transformers model whose keys the
//! backbone has. See [`crate::params::peft`]. The run is read as `eval --run` reads
//! it: its newest checkpoint must be good and `RUN_DIR/trainable.safetensors` its file.

use super::compiled;
use crate::lower::AdapterInfo;
use crate::params::peft::{component, config_json, CONFIG, PREFIX, WEIGHTS};
use crate::params::{materialise, Declared, Leaves};
use crate::pipeline::Mode;
use crate::safetensors::SafeFile;
use crate::tensor::HostTensor;
use anyhow::{anyhow, bail, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// The trainable tensors `--run` names, proven as `eval --run` proves them
/// ([`super::train::checkpoint::TrainableFile::open_run`]: a run's newest checkpoint
/// good and its top-level file that checkpoint's own); the file's path and the file.
#[cfg(feature = "torch")]
fn open_run(run: &std::path::Path) -> Result<(PathBuf, SafeFile)> {
    let (f, notes) = super::train::checkpoint::TrainableFile::open_run(run)?;
    for n in notes {
        eprintln!("note: {n}");
    }
    Ok((f.path, f.file))
}

/// Without LibTorch a run directory cannot be proven, so only a file is read.
#[cfg(not(feature = "torch"))]
fn open_run(run: &std::path::Path) -> Result<(PathBuf, SafeFile)> {
    if run.is_dir() {
        bail!(
            "--run {}: reading a training run needs a graft built with `--features torch`; pass its checkpoint's file instead (--run {})",
            run.display(),
            run.join("checkpoint-STEP").join("trainable.safetensors").display()
        );
    }
    Ok((run.to_path_buf(), SafeFile::open(run)?))
}

/// `graft export peft`.
#[derive(clap::Args, Debug)]
pub struct ExportPeftArgs {
    /// The spec the run trained.
    pub spec: PathBuf,
    /// The `graft train` output directory (its newest checkpoint, proven as `eval --run`
    /// proves it), one checkpoint directory in it, or a trainable file.
    #[arg(long)]
    pub run: PathBuf,
    /// The directory to write (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// The `lora` adapter to export, when the spec has several.
    #[arg(long)]
    pub adapter: Option<String>,
}

/// Write the run's LoRA adapter as a PEFT directory.
pub fn peft(a: &ExportPeftArgs) -> Result<ExitCode> {
    let c = compiled(&a.spec, Mode::Train)?;
    let loras: Vec<(&String, &AdapterInfo)> = c.adapter_info.iter().filter(|(_, i)| i.module == "lora").collect();
    let (name, info) = match (&a.adapter, loras.as_slice()) {
        (Some(n), _) => loras
            .iter()
            .find(|(k, _)| *k == n)
            .copied()
            .ok_or_else(|| anyhow!("--adapter {n}: the spec has no lora adapter `{n}`"))?,
        (None, [one]) => *one,
        (None, []) => bail!("{}: the spec has no `lora` adapter to export", a.spec.display()),
        (None, many) => bail!(
            "{}: several lora adapters ({}); choose one with --adapter",
            a.spec.display(),
            many.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")
        ),
    };
    let comp = component(name, info)?;
    let (rank, alpha) = match (info.args.get("rank"), info.args.get("alpha")) {
        (Some(r), Some(al)) => (*r, *al),
        _ => bail!("adapter `{name}`: rank and alpha must be numbers known at compile time"),
    };
    if a.out.exists() {
        bail!("--out {}: already exists; graft writes a new directory", a.out.display());
    }
    let (ckpt, file) = open_run(&a.run)?;
    let mut tensors = Vec::new();
    let mut targets = Vec::new();
    for site in &info.sites {
        let rest = &site[comp.len() + 1..];
        for m in ["lora_A", "lora_B"] {
            let key = format!("{name}.{site}.{m}.weight");
            let t = file
                .tensor(&key)
                .map_err(|_| anyhow!("{}: no `{key}`: was the run trained with this spec?", ckpt.display()))?;
            tensors.push((format!("{PREFIX}{rest}.{m}.weight"), t));
        }
        targets.push(rest.to_string());
    }
    let config = config_json(rank, alpha, &targets);
    let staged = crate::durable::StagedDir::new(&a.out)?;
    staged.write(CONFIG, serde_json::to_string_pretty(&config)?.as_bytes())?;
    staged.write(WEIGHTS, &crate::safetensors::encode(tensors.iter().map(|(n, t)| (n, t)), &BTreeMap::new())?)?;
    staged.publish()?;
    println!(
        "wrote {} (adapter `{name}`: rank {rank}, alpha {alpha}, {} modules of `{comp}`)",
        a.out.display(),
        targets.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `graft export pytorch`.
#[derive(clap::Args, Debug)]
pub struct ExportPytorchArgs {
    /// The spec file; its weights paths are relative to its directory.
    pub spec: PathBuf,
    /// `train` keeps adapters, pathways and LoRA as modules of their own; `infer`
    /// writes the folded (plain) model.
    #[arg(long, value_enum, default_value = "train")]
    pub mode: super::ModeArg,
    #[command(flatten)]
    pub values: WeightArgs,
    /// Write model.py only (no weights.safetensors).
    #[arg(long = "no-weights")]
    pub no_weights: bool,
    /// The directory to write (must not exist): model.py and weights.safetensors.
    #[arg(long)]
    pub out: PathBuf,
}

/// Where parameter values come from, as in `graft run`.
#[derive(clap::Args, Debug)]
pub struct WeightArgs {
    /// Weights file for a binding, overriding the spec's (repeatable).
    #[arg(long = "weights", value_name = "BINDING=FILE")]
    pub weights: Vec<String>,
    /// Glob of weight keys that may be missing from (or extra in) a file (repeatable).
    #[arg(long = "allow-missing", value_name = "PATTERN")]
    pub allow_missing: Vec<String>,
    /// Seed for parameters initialised from their init rule.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The model's parameter values by path, loaded as `graft run` loads them (weights
/// files, seeded init rules, fold expressions in float64).
fn values(spec: &std::path::Path, c: &crate::pipeline::Compiled, a: &WeightArgs) -> Result<Vec<(String, HostTensor)>> {
    let plan = crate::backend::Plan::new(&c.graph);
    let bindings = super::bindings(spec, c, &a.weights)?;
    let declared = Declared::from_sites(&c.sites);
    let leaves = Leaves::load(plan.params().iter(), &bindings, &declared, &a.allow_missing, a.seed)?;
    for note in &leaves.notes {
        eprintln!("note: {note}");
    }
    let vals = materialise(plan.params(), &leaves)?;
    Ok(plan.params().iter().map(|p| p.path.clone()).zip(vals).collect())
}

/// Refuse an `--out` that exists or that names one of the command's inputs.
fn check_out(spec: &std::path::Path, out: &std::path::Path, weights: &[String]) -> Result<()> {
    if out.exists() {
        bail!("--out {}: already exists; graft writes a new one", out.display());
    }
    let files: Vec<(String, PathBuf)> = weights
        .iter()
        .filter_map(|w| w.split_once('=').map(|(b, f)| (format!("the weights file of `{b}`"), PathBuf::from(f))))
        .chain([("the spec".to_string(), spec.to_path_buf())])
        .collect();
    crate::input_file::refuse_overwrite("--out", out, files.iter().map(|(n, p)| (n.clone(), p.as_path())))
        .map_err(|e| anyhow!(e))
}

/// Write a compiled spec as a PyTorch package: model.py (+ weights.safetensors).
pub fn pytorch(a: &ExportPytorchArgs) -> Result<ExitCode> {
    check_out(&a.spec, &a.out, &a.values.weights)?;
    let c = compiled(&a.spec, a.mode.into())?;
    let text = crate::export::pytorch::model_py(&c).map_err(|e| anyhow!("{}: {e}", a.spec.display()))?;
    let weights = if a.no_weights { None } else { Some(values(&a.spec, &c, &a.values)?) };
    let staged = crate::durable::StagedDir::new(&a.out)?;
    staged.write("model.py", text.as_bytes())?;
    if let Some(w) = &weights {
        let bytes = crate::safetensors::encode(w.iter().map(|(n, t)| (n, t)), &BTreeMap::new())?;
        staged.write("weights.safetensors", &bytes)?;
    }
    staged.publish()?;
    let what = if weights.is_some() { "model.py, weights.safetensors" } else { "model.py" };
    let mode = if c.mode == Mode::Train { "train" } else { "infer" };
    println!("wrote {} ({what}; model `{}`, {mode} mode)", a.out.display(), c.model);
    Ok(ExitCode::SUCCESS)
}

/// `graft export onnx`.
#[derive(clap::Args, Debug)]
pub struct ExportOnnxArgs {
    /// The spec file; its weights paths are relative to its directory.
    pub spec: PathBuf,
    #[command(flatten)]
    pub values: WeightArgs,
    /// The ONNX file to write (weights past 2 GB go to FILE.data beside it).
    #[arg(long, value_name = "FILE.onnx")]
    pub out: PathBuf,
    /// The ONNX opset (17 to 21).
    #[arg(long, default_value_t = 17, value_parser = clap::value_parser!(i64).range(17..=21))]
    pub opset: i64,
    /// Keep batch-like symbols (`B`) symbolic; otherwise every symbol is fixed to
    /// `--batch`.
    #[arg(long = "dynamic-batch")]
    pub dynamic_batch: bool,
    /// The size fixed symbols take without --dynamic-batch.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub batch: i64,
}

/// Write the folded (inference) model as one ONNX file.
pub fn onnx(a: &ExportOnnxArgs) -> Result<ExitCode> {
    check_out(&a.spec, &a.out, &a.values.weights)?;
    let c = compiled(&a.spec, Mode::Infer)?;
    let weights = values(&a.spec, &c, &a.values)?;
    let opts =
        crate::export::onnx::Options { opset: a.opset, dynamic: a.dynamic_batch, fixed: a.batch, external_over: None };
    let data_name = format!("{}.data", a.out.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
    let out =
        crate::export::onnx::model(&c, weights, &opts, &data_name).map_err(|e| anyhow!("{}: {e}", a.spec.display()))?;
    if let Some(data) = &out.external {
        crate::durable::write_atomic(&a.out.with_file_name(&data_name), data)?;
    }
    crate::durable::write_atomic(&a.out, &out.model)?;
    let ext = if out.external.is_some() { format!(" + {data_name}") } else { String::new() };
    println!("wrote {}{ext} (model `{}`, opset {}, {} nodes)", a.out.display(), c.model, a.opset, out.nodes);
    Ok(ExitCode::SUCCESS)
}
