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
    /// Mean cross-entropy per sample (of the views' mean probabilities with several
    /// views).
    pub loss: f64,
    /// Temporal clips × spatial crops scored per sample (softmax averaged).
    pub clips: u32,
    pub crops: u32,
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

/// Evaluate every sample of `ds` once, `batch` samples per forward, in each of the
/// `views` (see [`tally`]).
pub fn evaluate(
    m: Evaluated<'_>,
    ds: &Dataset,
    batch: usize,
    without: &[String],
    views: Views,
) -> Result<Report, EvalError> {
    let model = m.model.to_string();
    let t = tally(m, ds, batch, without, (0, 1), views)?;
    let mut r = report(&model, ds, without, t)?;
    (r.clips, r.crops) = (views.clips, views.crops);
    Ok(r)
}

/// How many views of each sample are scored: VideoMAE's multi-view testing, `clips`
/// temporal windows × `crops` spatial crops (1 × 1: the central window,
/// center-cropped).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Views {
    pub clips: u32,
    pub crops: u32,
}

impl Views {
    /// One view: the central clip, center-cropped.
    pub const ONE: Views = Views { clips: 1, crops: 1 };
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
///
/// With one view a sample's loss is the cross-entropy of its logits and its prediction
/// their first largest. With several (`views`: clips × crops, as VideoMAE tests), each
/// view is a pass of the eval transform and the sample's score is the mean of the
/// views' softmax probabilities, as VideoMAE's test merge averages them: the
/// prediction is its first largest and the loss `−ln` of its true class.
pub fn tally(
    mut m: Evaluated<'_>,
    ds: &Dataset,
    batch: usize,
    without: &[String],
    shard: (usize, usize),
    views: Views,
) -> Result<Tally, EvalError> {
    let classes = ds.meta.classes;
    let mut confusion = vec![vec![0u64; classes]; classes];
    let (mut loss_sum, mut samples) = (0.0f64, 0u64);
    let (rank, world) = (shard.0, shard.1.max(1));
    // Stored inputs get the eval transform (resize + crop, a clip window), once per view.
    let sets: Vec<Dataset> = crate::data::EvalView::all(views.clips.max(1), views.crops.max(1))
        .into_iter()
        .map(|v| ds.clone().with_view(crate::data::View::Eval(v)))
        .collect();
    let mut streams: Vec<_> = sets.iter().map(|d| d.batches(batch.max(1), 0, 0, false)).collect();
    for i in 0.. {
        let mine = i % world == rank;
        // The batch's summed scores (logits, or probabilities with several views) and labels.
        let mut scores: Option<(Vec<f64>, Vec<i64>)> = None;
        let mut ended = 0;
        for stream in &mut streams {
            let Some(b) = stream.next() else {
                ended += 1;
                continue;
            };
            if !mine {
                continue;
            }
            let b = b?;
            let logits = logits_of(&mut m, &b, without, classes)?;
            scores = Some(match scores {
                None if sets.len() == 1 => (logits, b.labels),
                None => (softmax_rows(&logits, classes), b.labels),
                Some((mut sum, labels)) => {
                    if labels != b.labels {
                        return Err(EvalError::Invalid(
                            "internal error: the views of a batch disagree on its labels".into(),
                        ));
                    }
                    sum.iter_mut().zip(softmax_rows(&logits, classes)).for_each(|(s, p)| *s += p);
                    (sum, labels)
                }
            });
        }
        match ended {
            0 => {}
            e if e == streams.len() => break,
            _ => return Err(EvalError::Invalid("internal error: the views yield different batch counts".into())),
        }
        let Some((values, labels)) = scores else { continue };
        for (row, &t) in values.chunks_exact(classes.max(1)).zip(&labels) {
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
            loss_sum += if sets.len() == 1 {
                let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                lse - row[t]
            } else {
                -(row[t] / sets.len() as f64).ln()
            };
            confusion[t][p] += 1;
        }
        samples += labels.len() as u64;
    }
    Ok(Tally { confusion, loss_sum, samples })
}
/// Run one batch and return its logits `[n, classes]` as f64, shape checked.
fn logits_of(m: &mut Evaluated<'_>, b: &Batch, without: &[String], classes: usize) -> Result<Vec<f64>, EvalError> {
    let ins = batch_inputs(m.plan, b, without)?;
    let mut outs = m.exe.run(&ins)?;
    if m.output >= outs.len() {
        return Err(EvalError::Invalid(format!("internal error: no output {}", m.output)));
    }
    let (name, logits) = outs.swap_remove(m.output);
    let n = b.len();
    if logits.shape.len() != 2 || logits.shape[0] != n as i64 || logits.shape[1] != classes as i64 {
        return Err(EvalError::Invalid(format!("output `{name}` is {:?}, expected [{n}, {classes}]", logits.shape)));
    }
    Ok(logits.to_f64())
}

/// Each row's softmax, in f64 (the largest logit subtracted first).
fn softmax_rows(logits: &[f64], classes: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks_exact(classes.max(1)) {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        out.extend(row.iter().map(|v| (v - max).exp() / sum));
    }
    out
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
        clips: 1,
        crops: 1,
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
    if r.clips * r.crops > 1 {
        let _ = writeln!(s, "views: {} clips × {} crops per sample (softmax averaged)", r.clips, r.crops);
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
