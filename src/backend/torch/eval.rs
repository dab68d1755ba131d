//! `graft eval`: loss, accuracy and a confusion summary of a model on a dataset.
//!
//! ```text
//! graft eval SPEC --data DIR [--run RUN_DIR] [--weights BINDING=FILE]... [--without INPUT]...
//!     [--batch N] [--json] [--device cpu|cuda|auto] [--allow-missing PATTERN]... [--seed N]
//! ```
//!
//! The spec is compiled in train mode (the model as trained) and its weights loaded;
//! `--run` lays `RUN_DIR/trainable.safetensors` over them after checking names and
//! shapes (a different graph fingerprint with the same names and shapes is a note).
//! `--without audio` evaluates as if the optional modality were missing from every
//! sample: the adapters that read it are skipped. Every sample is seen once, in the
//! dataset's order for seed 0; the report has the mean loss, accuracy, per-class
//! accuracy and the most confused (true, predicted) pairs. `--json` prints the same as
//! one JSON object, confusion matrix included.

use super::train::checkpoint::TrainableFile;
use super::train::model::{cross_entropy, Model, Spec};
use super::DeviceArg;
use crate::data::Dataset;
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use tch::Kind;

/// Confused pairs listed.
const TOP_CONFUSED: usize = 5;

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// The spec file; its weights paths are relative to its directory.
    pub spec: PathBuf,
    /// Dataset directory (`dataset.json` + shards).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// A `graft train` run whose trainable.safetensors is loaded over the spec's weights.
    #[arg(long, value_name = "RUN_DIR")]
    pub run: Option<PathBuf>,
    /// Weights file for a binding, overriding the spec's (repeatable).
    #[arg(long = "weights", value_name = "BINDING=FILE")]
    pub weights: Vec<String>,
    /// Evaluate as if this optional input were missing (repeatable).
    #[arg(long = "without", value_name = "INPUT")]
    pub without: Vec<String>,
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub batch: usize,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// Glob of weight keys that may be missing from (or extra in) a file (repeatable).
    #[arg(long = "allow-missing", value_name = "PATTERN")]
    pub allow_missing: Vec<String>,
    /// Seed for parameters initialised from their init rule.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Serialize, Clone, Debug)]
pub struct ClassRow {
    pub class: usize,
    pub name: String,
    pub samples: u64,
    pub correct: u64,
    /// `None` when the dataset has no sample of the class.
    pub accuracy: Option<f64>,
}

#[derive(Serialize, Clone, Debug)]
pub struct Confused {
    #[serde(rename = "true")]
    pub truth: usize,
    pub true_name: String,
    pub predicted: usize,
    pub predicted_name: String,
    pub count: u64,
}

#[derive(Serialize, Clone, Debug)]
pub struct Report {
    pub model: String,
    pub data: String,
    pub run: Option<String>,
    pub without: Vec<String>,
    pub samples: u64,
    /// Mean cross-entropy per sample.
    pub loss: f64,
    pub accuracy: f64,
    pub correct: u64,
    pub classes: usize,
    pub per_class: Vec<ClassRow>,
    /// Most frequent off-diagonal (true, predicted) pairs.
    pub confused: Vec<Confused>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

/// Check `--without` names: optional inputs of the model.
pub fn check_without(spec: &Spec, without: &[String]) -> Result<()> {
    for w in without {
        match spec.inputs.iter().find(|i| &i.0 == w) {
            None => {
                let names: Vec<&str> = spec.inputs.iter().map(|i| i.0.as_str()).collect();
                bail!("--without {w}: the model has no input `{w}` (its inputs: {})", names.join(", "));
            }
            Some(i) if !i.3 => bail!("--without {w}: `{w}` is not optional, so the model cannot run without it (mark it `optional` in the spec)"),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Evaluate every sample of `ds` once (call under `no_grad`).
pub fn evaluate(model: &Model, ds: &Dataset, batch: usize, without: &[String]) -> Result<Report> {
    let t = tally(model, ds, batch, without, (0, 1))?;
    report(model, ds, without, t)
}

/// The confusion counts and the summed loss of a share of a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Tally {
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    pub loss_sum: f64,
    pub samples: u64,
}

/// Tally the batches of `ds` whose index is `rank` modulo `world` (`shard`); the
/// tallies of all ranks add up to the whole dataset's (call under `no_grad`).
pub fn tally(model: &Model, ds: &Dataset, batch: usize, without: &[String], shard: (usize, usize)) -> Result<Tally> {
    let classes = ds.meta.classes;
    let mut confusion = vec![vec![0u64; classes]; classes];
    let (mut loss_sum, mut samples) = (0.0f64, 0u64);
    let (rank, world) = (shard.0, shard.1.max(1));
    for (i, b) in ds.batches(batch.max(1), 0, 0, false).enumerate() {
        if i % world != rank {
            continue;
        }
        let b = b?;
        let logits = model.logits(&b, without)?;
        let labels = model.labels(&b)?;
        loss_sum += cross_entropy(&logits, &labels, true)?.f_to_kind(Kind::Double)?.f_double_value(&[])?;
        let pred = Vec::<i64>::try_from(logits.f_argmax(1, false)?.f_to_device(tch::Device::Cpu)?)?;
        for (&t, &p) in b.labels.iter().zip(&pred) {
            let p = usize::try_from(p)
                .ok()
                .filter(|&p| p < classes)
                .ok_or_else(|| anyhow!("prediction {p} outside 0..{classes}"))?;
            confusion[t as usize][p] += 1;
        }
        samples += b.len() as u64;
    }
    Ok(Tally { confusion, loss_sum, samples })
}

/// The report of a dataset's (summed) tally.
pub fn report(model: &Model, ds: &Dataset, without: &[String], t: Tally) -> Result<Report> {
    let classes = ds.meta.classes;
    let Tally { confusion, loss_sum, samples } = t;
    if samples == 0 {
        bail!("{}: no samples", ds.dir.display());
    }
    let correct: u64 = (0..classes).map(|c| confusion[c][c]).sum();
    let per_class = (0..classes)
        .map(|c| {
            let n: u64 = confusion[c].iter().sum();
            ClassRow {
                class: c,
                name: ds.meta.class_name(c),
                samples: n,
                correct: confusion[c][c],
                accuracy: (n > 0).then(|| confusion[c][c] as f64 / n as f64),
            }
        })
        .collect();
    let mut pairs: Vec<(u64, usize, usize)> = (0..classes)
        .flat_map(|t| (0..classes).map(move |p| (t, p)))
        .filter(|(t, p)| t != p)
        .map(|(t, p)| (confusion[t][p], t, p))
        .filter(|x| x.0 > 0)
        .collect();
    pairs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let confused = pairs
        .into_iter()
        .take(TOP_CONFUSED)
        .map(|(count, t, p)| Confused {
            truth: t,
            true_name: ds.meta.class_name(t),
            predicted: p,
            predicted_name: ds.meta.class_name(p),
            count,
        })
        .collect();
    Ok(Report {
        model: model.spec.compiled.model.clone(),
        data: ds.dir.display().to_string(),
        run: None,
        without: without.to_vec(),
        samples,
        loss: loss_sum / samples as f64,
        accuracy: correct as f64 / samples as f64,
        correct,
        classes,
        per_class,
        confused,
        confusion,
    })
}

/// The text report.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let run = r.run.as_ref().map(|d| format!(", run {d}")).unwrap_or_default();
    let _ = writeln!(s, "model {} on {} ({} samples, {} classes{run})", r.model, r.data, r.samples, r.classes);
    if !r.without.is_empty() {
        let _ = writeln!(s, "without: {} (evaluated as missing)", r.without.join(", "));
    }
    let _ = writeln!(s, "loss      {:.4}", r.loss);
    let _ = writeln!(s, "accuracy  {:.2}% ({}/{})", 100.0 * r.accuracy, r.correct, r.samples);
    let width = r.per_class.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let _ = writeln!(s, "per class:");
    for c in &r.per_class {
        let acc = c.accuracy.map(|a| format!("{:6.2}%", 100.0 * a)).unwrap_or_else(|| "      -".into());
        let _ = writeln!(s, "  {:<width$}  {acc} ({}/{})", c.name, c.correct, c.samples);
    }
    if r.confused.is_empty() {
        let _ = writeln!(s, "no confusions");
    } else {
        let _ = writeln!(s, "most confused (true → predicted):");
        for p in &r.confused {
            let _ = writeln!(s, "  {} → {}  {}", p.true_name, p.predicted_name, p.count);
        }
    }
    s
}

/// `graft eval`.
pub fn eval(a: EvalArgs) -> Result<ExitCode> {
    let device = a.device.device()?;
    let Some(spec) = Spec::compile(&a.spec)? else { return Ok(ExitCode::from(1)) };
    check_without(&spec, &a.without)?;
    let ds = Dataset::open(&a.data).map_err(|e| anyhow!("--data {}: {e}", a.data.display()))?;
    let notes = spec.check_dataset(&ds, "the data")?;
    let run = a.run.as_deref().map(TrainableFile::open).transpose()?;
    let (model, load_notes) =
        spec.load(&a.weights, &a.allow_missing, a.seed, device, run.as_ref().map(|f| (f, false)))?;
    if !a.json {
        for n in notes.iter().chain(&load_notes) {
            eprintln!("note: {n}");
        }
    }
    let mut r = tch::no_grad(|| evaluate(&model, &ds, a.batch, &a.without))?;
    r.run = a.run.as_ref().map(|d| d.display().to_string());
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", render(&r));
    }
    Ok(ExitCode::SUCCESS)
}
