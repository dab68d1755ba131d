//! Evaluation: loss, accuracy and a confusion summary of a model on a dataset, on any
//! backend's [`Executable`].
//!
//! Every sample is seen once, in the dataset's order for seed 0. The loss is the mean
//! cross-entropy of the first declared output (logits `[B, classes]`) against `label`,
//! computed in float64 from the logits the backend returns; a prediction is the first
//! largest logit. Inputs named in `without` are left out, as if every sample lacked
//! the optional modality (the adapters that read it are skipped). `graft eval` and
//! validation during `graft train` both report through here.

use crate::backend::{inputs, BackendError, Executable, Plan};
use crate::data::{Batch, DataError, Dataset, ModelInput};
use crate::ir::DType;
use crate::tensor::HostTensor;
use serde::Serialize;
use std::fmt::Write as _;

/// Confused pairs listed.
const TOP_CONFUSED: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{0}")]
    Invalid(String),
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
pub fn check_without(model_inputs: &[ModelInput], without: &[String]) -> Result<(), EvalError> {
    for w in without {
        match model_inputs.iter().find(|i| &i.0 == w) {
            None => {
                let names: Vec<&str> = model_inputs.iter().map(|i| i.0.as_str()).collect();
                return Err(EvalError::Invalid(format!(
                    "--without {w}: the model has no input `{w}` (its inputs: {})",
                    names.join(", ")
                )));
            }
            Some(i) if !i.3 => return Err(EvalError::Invalid(format!("--without {w}: `{w}` is not optional, so the model cannot run without it (mark it `optional` in the spec)"))),
            Some(_) => {}
        }
    }
    Ok(())
}

/// A batch's inputs checked and in plan order, leaving out those named in `without`
/// (as if the batch lacked them) and those the model does not read.
pub fn batch_inputs(plan: &Plan, batch: &Batch, without: &[String]) -> Result<Vec<Option<HostTensor>>, BackendError> {
    let given = batch.inputs.iter().map(|(n, h)| (n.clone(), h.clone()));
    bind_given(plan, given, without)
}

/// [`batch_inputs`] that moves the inputs out of `batch` instead of copying them (its
/// labels stay).
pub fn take_batch_inputs(
    plan: &Plan,
    batch: &mut Batch,
    without: &[String],
) -> Result<Vec<Option<HostTensor>>, BackendError> {
    bind_given(plan, std::mem::take(&mut batch.inputs).into_iter(), without)
}

fn bind_given(
    plan: &Plan,
    given: impl Iterator<Item = (String, HostTensor)>,
    without: &[String],
) -> Result<Vec<Option<HostTensor>>, BackendError> {
    let read = |name: &String| !without.contains(name) && plan.inputs().iter().any(|i| &i.name == name);
    let given = given.filter(|(name, _)| read(name)).collect();
    Ok(inputs::bind(plan, given, DType::F32)?.values)
}

/// What is evaluated: an executable of `plan`, and which of its outputs is the logits.
pub struct Evaluated<'a> {
    pub model: &'a str,
    pub plan: &'a Plan,
    pub exe: &'a mut dyn Executable,
    /// Index into `plan.outputs()`.
    pub output: usize,
}

/// Evaluate every sample of `ds` once, `batch` samples per forward.
pub fn evaluate(m: Evaluated<'_>, ds: &Dataset, batch: usize, without: &[String]) -> Result<Report, EvalError> {
    let model = m.model.to_string();
    let t = tally(m, ds, batch, without, (0, 1))?;
    report(&model, ds, without, t)
}

/// The confusion counts and the summed loss of a share of a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Tally {
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    pub loss_sum: f64,
    pub samples: u64,
}

/// Tally the batches of `ds` whose index is `rank` modulo `world` (`shard`): the
/// tallies of all ranks of a data-parallel run add up to the whole dataset's.
pub fn tally(
    m: Evaluated<'_>,
    ds: &Dataset,
    batch: usize,
    without: &[String],
    shard: (usize, usize),
) -> Result<Tally, EvalError> {
    let classes = ds.meta.classes;
    let mut confusion = vec![vec![0u64; classes]; classes];
    let (mut loss_sum, mut samples) = (0.0f64, 0u64);
    let (rank, world) = (shard.0, shard.1.max(1));
    // Stored inputs get the eval transform (resize + center crop, the central clip).
    let ds = ds.clone().with_view(crate::data::View::Eval);
    for (i, b) in ds.batches(batch.max(1), 0, 0, false).enumerate() {
        if i % world != rank {
            continue;
        }
        let b = b?;
        let ins = batch_inputs(m.plan, &b, without)?;
        let mut outs = m.exe.run(&ins)?;
        if m.output >= outs.len() {
            return Err(EvalError::Invalid(format!("internal error: no output {}", m.output)));
        }
        let (name, logits) = outs.swap_remove(m.output);
        let n = b.len();
        if logits.shape.len() != 2 || logits.shape[0] != n as i64 || logits.shape[1] != classes as i64 {
            return Err(EvalError::Invalid(format!(
                "output `{name}` is {:?}, expected [{n}, {classes}]",
                logits.shape
            )));
        }
        let values = logits.to_f64();
        for (row, &t) in values.chunks_exact(classes.max(1)).zip(&b.labels) {
            let t = usize::try_from(t)
                .ok()
                .filter(|&t| t < classes)
                .ok_or_else(|| EvalError::Invalid(format!("label {t} outside 0..{classes}")))?;
            let (p, max) = row.iter().enumerate().fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
                if v > bv || (v.is_nan() && !bv.is_nan()) {
                    (i, v)
                } else {
                    (bi, bv)
                }
            });
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            loss_sum += lse - row[t];
            confusion[t][p] += 1;
        }
        samples += n as u64;
    }
    Ok(Tally { confusion, loss_sum, samples })
}

/// The report of model `model` from a (summed) tally over `ds`.
pub fn report(model: &str, ds: &Dataset, without: &[String], t: Tally) -> Result<Report, EvalError> {
    let classes = ds.meta.classes;
    let Tally { confusion, loss_sum, samples } = t;
    if samples == 0 {
        return Err(EvalError::Invalid(format!("{}: no samples", ds.dir.display())));
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
        model: model.to_string(),
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
