//! `graft eval`: loss, accuracy and a confusion summary of a model on a dataset.
//!
//! ```text
//! graft eval SPEC --data DIR [--run RUN_DIR] [--weights BINDING=FILE]... [--without INPUT]...
//!     [--batch N] [--workers N] [--clips K] [--crops C] [--json] [--device cpu|cuda|auto]
//!     [--allow-missing PATTERN]... [--seed N]
//! ```
//!
//! The spec is compiled in train mode (the model as trained) and its weights loaded;
//! `--run` lays the run's newest checkpoint over them after checking names and shapes
//! (a different graph fingerprint with the same names and shapes is a note). The
//! checkpoint is proven first ([`TrainableFile::open_run`]): its files complete and
//! from one step, `RUN_DIR/trainable.safetensors` its own; a torn or mismatched run is
//! an error, never an evaluation of other weights. Eval only reads the run: it takes
//! no lock (a trainer may be writing it) and never recovers it.
//! `--without audio` evaluates as if the optional modality were missing from every
//! sample. `--clips K --crops C` scores each sample in K temporal windows × C crops
//! along the long side (VideoMAE's multi-view testing) and averages the softmax
//! probabilities. The model runs on the backend seam; [`crate::evaluate`] computes the
//! report, printed as text or, with `--json`, as one JSON object (confusion matrix
//! included).

use super::train::checkpoint::TrainableFile;
use super::train::spec::Spec;
use super::{options, DeviceArg, DtypeArg};
use crate::commands::choices::NormalizeOn;
use crate::data::Dataset;
use crate::data::Transform;
use crate::evaluate::{check_without, evaluate, render, Evaluated, Views};
use anyhow::{anyhow, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// The spec file; its weights paths are relative to its directory.
    pub spec: PathBuf,
    /// Dataset directory (`dataset.json` + shards).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// A `graft train` run whose newest checkpoint is loaded over the spec's weights
    /// (or one checkpoint directory in it).
    #[arg(long, value_name = "RUN_DIR")]
    pub run: Option<PathBuf>,
    /// Weights file for a binding, overriding the spec's (repeatable).
    #[arg(long = "weights", value_name = "BINDING=FILE")]
    pub weights: Vec<String>,
    /// Evaluate as if this optional input were missing (repeatable).
    #[arg(long = "without", value_name = "INPUT")]
    pub without: Vec<String>,
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = crate::bounds::count(crate::bounds::MAX_BATCH))]
    pub batch: usize,
    /// Reader threads that decode and transform each batch's samples (default: one
    /// per core, at most 8).
    #[arg(long, value_name = "N", value_parser = crate::bounds::count(crate::data::batches::MAX_WORKERS))]
    pub workers: Option<usize>,
    /// Where image and video pixels are normalised, for inputs declared `normalized`
    /// with the dataset's own statistics: `device` hands the model raw u8 pixels,
    /// normalised where it runs; `host` normalises them in the reader; `auto`
    /// (default) is `device` on a GPU and `host` on the CPU. The model receives the
    /// same bits either way.
    #[arg(long = "normalize-on", value_enum, default_value_t = NormalizeOn::Auto)]
    pub normalize_on: NormalizeOn,
    /// Temporal windows per video, spread evenly over it; the views' softmax
    /// probabilities are averaged (VideoMAE tests with 5 on Kinetics, 2 on
    /// Something-Something). Needs a video input stored as frames.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = crate::bounds::count(crate::bounds::MAX_VIEWS))]
    pub clips: usize,
    /// Square crops along the long side of each resized image or frame (3 in VideoMAE's
    /// tests), averaged with the clips. Needs a stored image or video input.
    #[arg(long, value_name = "C", default_value_t = 1, value_parser = crate::bounds::count(crate::bounds::MAX_VIEWS))]
    pub crops: usize,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = "auto", value_parser = DeviceArg::parse, value_name = "cpu|cuda|cuda:N|auto")]
    pub device: DeviceArg,
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
}

/// `graft eval`.
pub fn run(a: EvalArgs) -> Result<()> {
    let backend: Box<dyn crate::backend::Backend> = Box::new(crate::backend::torch::TorchBackend);
    let opts = options(backend.as_ref(), a.device, DtypeArg::F32, false)?;
    let mut spec = Spec::compile(&a.spec)?;
    spec.allow_nonfinite = a.allow_nonfinite;
    check_without(&spec.inputs, &a.without)?;
    let ds = Dataset::open(&a.data)
        .map_err(|e| anyhow!("--data {}: {e}", a.data.display()))?
        .with_workers(a.workers.unwrap_or(0));
    let notes = spec.check_dataset(&ds, "the data")?;
    let ds = {
        let gpu = matches!(opts.device, crate::backend::Device::Cuda(_));
        let raw = a.normalize_on.raw_inputs(&spec.plan, &ds, gpu);
        ds.with_raw(raw)
    };
    let views = Views { clips: a.clips as u32, crops: a.crops as u32 };
    check_views(&ds, views)?;
    let (run, run_notes) = match a.run.as_deref() {
        Some(r) => {
            let (f, n) = TrainableFile::open_run(r)?;
            (Some(f), n)
        }
        None => (None, Vec::new()),
    };
    let (values, load_notes) =
        spec.materialise(&a.weights, &a.allow_missing, a.seed, run.as_ref().map(|f| (f, false)))?;
    if !a.json {
        for n in notes.iter().chain(&run_notes).chain(&load_notes) {
            eprintln!("note: {n}");
        }
    }
    let mut exe = backend.prepare(&spec.plan, values, &opts)?;
    let model = Evaluated { model: &spec.compiled.model, plan: &spec.plan, exe: exe.as_mut(), output: spec.output };
    let mut r = evaluate(model, &ds, a.batch, &a.without, views)?;
    r.run = a.run.as_ref().map(|d| d.display().to_string());
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", render(&r));
    }
    Ok(())
}

/// Several clips need a stored video input, several crops a stored image or video:
/// anything else would score the same view K times.
fn check_views(ds: &Dataset, v: Views) -> Result<()> {
    let stored = || ds.meta.inputs.values().filter(|i| i.stored.is_some()).filter_map(|i| i.transform.as_ref());
    if v.clips > 1 && !stored().any(|t| matches!(t, Transform::Video(_))) {
        return Err(anyhow!(
            "--clips {}: {} has no video input stored as frames, so every clip would be the same; \
             import videos with `graft data import video`, or leave --clips out",
            v.clips,
            ds.dir.display()
        ));
    }
    if v.crops > 1 && !stored().any(|t| matches!(t, Transform::Video(_) | Transform::Image(_))) {
        return Err(anyhow!(
            "--crops {}: {} has no image or video input stored as pixels or frames, so every crop would be \
             the same; import them with `graft data import images|video`, or leave --crops out",
            v.crops,
            ds.dir.display()
        ));
    }
    Ok(())
}
