//! The training loop: resolve the hyperparameters (fresh or from `state.json`), load
//! the model and the data, step, validate, checkpoint, and stop cleanly on a
//! non-finite loss.
//!
//! A checkpoint is written only when every trainable tensor is finite, so the one in
//! RUN_DIR is always the last good one. The order of writes is optimizer state, then
//! trainable tensors, then `state.json`; a resume checks that the three agree.

#![allow(clippy::print_stdout, clippy::print_stderr)] // `graft train`'s loop: notes and results on the terminal

use super::checkpoint::{self, State, TrainableFile, OPTIMIZER, STATE, TRAINABLE};
use super::feed::Feed;
use super::messages::{header, stop, Ctx};
use super::metrics::{Metrics, Record};
use super::model::{Model, Spec};
use super::optim::{clip, global_norm, parse_lr_for, AdamW};
use super::progress::{clock, Progress};
use super::schedule::{Schedule, ScheduleKind};
use super::step::{graphed_batch, loss_and_grads};
use super::{Hyper, TrainArgs, DEFAULT_CHECKPOINT_EVERY, DEFAULT_WEIGHT_DECAY};
use crate::backend::torch::cuda_graph;
use crate::data::Dataset;
use crate::evaluate::{evaluate, Evaluated, Report};
use crate::safetensors::SafeFile;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Tensor;

/// A finished run.
pub struct Trained {
    pub model: Model,
    pub dir: PathBuf,
    /// Optimizer steps taken in total.
    pub step: u64,
    /// The losses of the steps this invocation took.
    pub losses: Vec<f32>,
    /// The last validation, with `--val`.
    pub val: Option<Report>,
}

/// A value given now, or the resumed run's, or a default. Values that decide the data
/// stream must not change on resume.
fn keep<T: PartialEq + std::fmt::Debug + Clone>(
    flag: &str,
    now: Option<T>,
    before: Option<T>,
    fixed: bool,
    notes: &mut Vec<String>,
) -> Result<Option<T>> {
    match (now, before) {
        (Some(n), Some(b)) if n != b => {
            if fixed {
                bail!("--{flag} {n:?} differs from the resumed run's {b:?}: an exact resume needs the same data stream (leave --{flag} out to keep it)");
            }
            notes.push(format!("--{flag} is now {n:?} (the run so far used {b:?})"));
            Ok(Some(n))
        }
        (Some(n), _) => Ok(Some(n)),
        (None, b) => Ok(b),
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn open_data(dir: &Path, flag: &str) -> Result<Dataset> {
    Dataset::open(dir).map_err(|e| anyhow!("--{flag} {}: {e}", dir.display()))
}

fn all_finite(ts: &[(String, Tensor)]) -> Result<Option<String>> {
    for (n, t) in ts {
        if t.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
            return Ok(Some(n.clone()));
        }
    }
    Ok(None)
}

/// Run `graft train`; `None` when the spec has errors (printed).
pub fn run(a: &TrainArgs) -> Result<Option<Trained>> {
    let prev = a.resume.as_deref().map(State::read).transpose()?;
    let out = a.out.clone().or_else(|| a.resume.clone()).ok_or_else(|| anyhow!("--out RUN_DIR is required"))?;
    let in_place = a.resume.as_deref().is_some_and(|r| same_dir(r, &out));
    if out.join(STATE).exists() && !in_place {
        bail!(
            "{} already holds a run ({STATE}): pass --resume {} to continue it, or choose another --out",
            out.display(),
            out.display()
        );
    }
    let mut notes = Vec::new();
    let ph = prev.as_ref().map(|p| &p.hyper);
    let batch = keep("batch", a.batch, ph.map(|h| h.batch), true, &mut notes)?
        .ok_or_else(|| anyhow!("--batch N is required"))?;
    let accumulate = keep("accumulate", a.accumulate, ph.map(|h| h.accumulate), true, &mut notes)?.unwrap_or(1);
    let seed = keep("seed", a.seed, ph.map(|h| h.seed), true, &mut notes)?.unwrap_or(0);
    let lr = keep("lr", a.lr, ph.map(|h| h.lr), false, &mut notes)?.ok_or_else(|| anyhow!("--lr X is required"))?;
    let weight_decay = keep("weight-decay", a.weight_decay, ph.map(|h| h.weight_decay), false, &mut notes)?
        .unwrap_or(DEFAULT_WEIGHT_DECAY);
    let lr_for_now = if a.lr_for.is_empty() {
        None
    } else {
        Some(a.lr_for.iter().map(|s| parse_lr_for(s)).collect::<Result<Vec<_>>>()?)
    };
    let lr_for = keep("lr-for", lr_for_now, ph.map(|h| h.lr_for.clone()), false, &mut notes)?.unwrap_or_default();
    let clip_now = keep("clip", a.clip.map(Some), ph.map(|h| h.clip), false, &mut notes)?.flatten();
    let kind =
        keep("schedule", a.schedule, ph.map(|h| h.schedule.kind), false, &mut notes)?.unwrap_or(ScheduleKind::Cosine);
    let warmup = keep("warmup", a.warmup, ph.map(|h| h.schedule.warmup), false, &mut notes)?.unwrap_or(0);
    if batch == 0 || accumulate == 0 {
        bail!("--batch and --accumulate must be at least 1");
    }
    let finite_nonneg = |x: f64| x.is_finite() && x >= 0.0;
    if !finite_nonneg(lr) || !finite_nonneg(weight_decay) {
        bail!("--lr and --weight-decay must be finite numbers >= 0");
    }
    if clip_now.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
        bail!("--clip must be a finite number > 0");
    }
    let device = crate::backend::torch::convert::device(a.device.device(&crate::backend::torch::TorchBackend)?);
    if a.cuda_graph {
        cuda_graph::require("--cuda-graph", device)?;
    }
    if a.autocast.is_some() {
        cuda_graph::require("--autocast", device)?;
    }
    let autocast = a.autocast.is_some();
    tch::manual_seed(seed as i64);

    // The spec first (its errors are the likeliest), then the data against it.
    let spec = Spec::compile(&a.spec)?;
    let ds = open_data(&a.data, "data")?;
    for n in spec.check_dataset(&ds, "training data")? {
        eprintln!("note: {n}");
    }
    let val = match &a.val {
        Some(v) => {
            let vds = open_data(v, "val")?;
            for n in spec.check_dataset(&vds, "validation data")? {
                eprintln!("note: {n}");
            }
            Some(vds)
        }
        None => None,
    };
    let drop_last = ph.map(|h| h.drop_last).unwrap_or_else(|| ds.num_batches(batch, true) > 0);
    let per_epoch = ds.num_batches(batch, drop_last) as u64;
    if per_epoch == 0 {
        bail!("--data {}: no batch of {batch} (the dataset has {} samples)", a.data.display(), ds.len());
    }
    let total = match (a.steps, a.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => (e * per_epoch).div_ceil(accumulate as u64),
        (None, None) => match ph {
            Some(h) => h.schedule.total,
            None => bail!("pass --steps N or --epochs N"),
        },
    };
    let start = prev.as_ref().map_or(0, |p| p.step);
    if total == 0 || total <= start {
        bail!("nothing to do: the run is at step {start} and --steps/--epochs give {total} steps in total");
    }
    if let Some(h) = ph {
        if h.schedule.total != total && kind == ScheduleKind::Cosine {
            notes.push(format!(
                "the cosine schedule now spans {total} steps (was {}): the rate continues on the new curve",
                h.schedule.total
            ));
        }
        if let Some(p) = &prev {
            if Path::new(&p.data) != a.data {
                notes.push(format!("--data {} (the run so far used {})", a.data.display(), p.data));
            }
        }
    }
    let hyper = Hyper {
        batch,
        accumulate,
        seed,
        drop_last,
        lr,
        weight_decay,
        lr_for,
        clip: clip_now,
        schedule: Schedule { kind, warmup, total },
    };
    let ckpt_every = a.checkpoint_every.unwrap_or(DEFAULT_CHECKPOINT_EVERY).max(1);
    let eval_every = a.eval_every.unwrap_or(ckpt_every).max(1);

    // The model, with the resumed run's tensors over the spec's weights.
    let resumed = match (&a.resume, &prev) {
        (Some(dir), Some(p)) => {
            let f = TrainableFile::open(dir)?;
            if f.step() != Some(p.step) {
                bail!(
                    "{}: {} is from step {:?} but {STATE} from step {}: the run stopped while writing a checkpoint; its files disagree",
                    dir.display(),
                    TRAINABLE,
                    f.step(),
                    p.step
                );
            }
            Some(f)
        }
        _ => None,
    };
    let (model, load_notes) =
        spec.load(&a.weights, &a.allow_missing, seed, device, resumed.as_ref().map(|f| (f, true)))?;
    notes.extend(load_notes);
    let mut opt = AdamW::new(model.trainable(), lr, &hyper.lr_for, weight_decay, &model.frozen_paths())?;
    if let (Some(dir), Some(p)) = (&a.resume, &prev) {
        let path = dir.join(OPTIMIZER);
        let step = checkpoint::read_metadata(&path)?.get("step").and_then(|s| s.parse::<u64>().ok());
        if step != Some(p.step) {
            bail!(
                "{}: optimizer state from step {step:?}, {STATE} from step {}: the checkpoint files disagree",
                dir.display(),
                p.step
            );
        }
        opt.load_state(&SafeFile::open(&path)?)?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut metrics = Metrics::open(&out, a.resume.as_deref().zip(prev.as_ref().map(|p| p.step)))?;
    for n in &notes {
        eprintln!("note: {n}");
    }
    let id = model.spec.identity.clone();
    header(&model, &opt, &ds, &hyper, per_epoch, start, &out, device);
    if a.cuda_graph || autocast {
        let graph = if a.cuda_graph { "forward + backward in a CUDA graph (optimizer eager)" } else { "eager" };
        eprintln!("  {graph}{}", if autocast { ", autocast bf16" } else { "" });
    }
    let (mut graphed, mut noted) = (None, false);

    let (mut epoch, mut position) = prev.as_ref().map_or((0, 0), |p| (p.epoch, p.position));
    let mut samples = prev.as_ref().map_or(0, |p| p.samples);
    let feed = Feed::start(&ds, batch, seed, drop_last, epoch, position);
    let params = opt.params();
    let mut step = start;
    // The last good checkpoint: (step, run directory holding it).
    let mut last_ckpt: Option<(u64, PathBuf)> = prev.as_ref().zip(a.resume.clone()).map(|(p, d)| (p.step, d));
    let mut losses = Vec::new();
    let mut last_val: Option<Report> = None;
    let mut progress = Progress::new(start, total);
    let began = Instant::now();
    let mut session_samples = 0u64;
    let ctx = Ctx { hyper: &hyper, ckpt_every };

    while step < total {
        let t_step = Instant::now();
        let scale = hyper.schedule.factor(step);
        let mut grads: Vec<Option<Tensor>> = (0..params.len()).map(|_| None).collect();
        let (mut loss_sum, mut step_samples) = (0.0f64, 0u64);
        let mut missing = BTreeSet::new();
        for _ in 0..accumulate {
            let item = feed.next()?;
            let (loss, g) = if a.cuda_graph {
                let mut eager = false;
                let r = graphed_batch(&mut graphed, &model, &params, &item.batch, accumulate, autocast, &mut eager)?;
                if eager && !noted {
                    eprintln!(
                        "note: --cuda-graph: batches with other shapes or inputs than the captured one run eagerly"
                    );
                    noted = true;
                }
                r
            } else {
                let (ins, labels) = (model.bind(&item.batch, &[])?, model.labels(&item.batch)?);
                loss_and_grads(&model, &params, ins, &labels, item.batch.len(), accumulate, autocast)?
            };
            let value = loss.f_double_value(&[])? as f32;
            if !value.is_finite() {
                let at =
                    format!("the loss is {value} at step {} (epoch {}, batch {})", step + 1, item.epoch, item.index);
                return Err(stop(&mut metrics, &progress, &ctx, step + 1, last_ckpt.as_ref(), &at));
            }
            for (acc, gi) in grads.iter_mut().zip(g) {
                if !gi.defined() {
                    continue;
                }
                match acc {
                    Some(t) => {
                        let _ = t.f_add_(&gi)?;
                    }
                    None => *acc = Some(gi),
                }
            }
            loss_sum += value as f64;
            step_samples += item.batch.len() as u64;
            missing.extend(model.missing(&item.batch, &[]));
            (epoch, position) = (item.epoch, item.index + 1);
            if position >= feed.per_epoch {
                (epoch, position) = (epoch + 1, 0);
            }
        }
        let loss = (loss_sum / accumulate as f64) as f32;
        let norm = match global_norm(&grads)? {
            Some(n) => n.f_double_value(&[])?,
            None => 0.0,
        };
        if !norm.is_finite() {
            let at = format!("the gradient norm is {norm} at step {} (loss {loss})", step + 1);
            return Err(stop(&mut metrics, &progress, &ctx, step + 1, last_ckpt.as_ref(), &at));
        }
        if let Some(c) = hyper.clip {
            clip(&mut grads, norm, c)?;
        }
        opt.step(&grads, scale)?;
        drop(grads);
        step += 1;
        samples += step_samples;
        session_samples += step_samples;
        losses.push(loss);
        let dt = t_step.elapsed().as_secs_f64();
        let rate = session_samples as f64 / began.elapsed().as_secs_f64().max(1e-9);
        metrics.push(Record::Train {
            step,
            epoch,
            loss,
            lr: lr * scale,
            grad_norm: norm,
            samples,
            samples_per_s: step_samples as f64 / dt.max(1e-9),
            elapsed_s: began.elapsed().as_secs_f64(),
            missing: missing.into_iter().collect(),
        })?;
        progress.step(step, loss, lr * scale, rate);
        let validate = val.is_some() && (step.is_multiple_of(eval_every) || step == total);
        if let (true, Some(vds)) = (validate, &val) {
            let mut exe = model.executable();
            let m = Evaluated {
                model: &model.spec.compiled.model,
                plan: &model.spec.plan,
                exe: &mut exe,
                output: model.spec.output,
            };
            let r = evaluate(m, vds, batch, &[])?;
            progress.line(&format!(
                "step {step}: val loss {:.4}, accuracy {:.2}% ({} samples)",
                r.loss,
                100.0 * r.accuracy,
                r.samples
            ));
            metrics.push(Record::Val { step, loss: r.loss, accuracy: r.accuracy, samples: r.samples })?;
            last_val = Some(r);
        }
        if step.is_multiple_of(ckpt_every) || step == total {
            let trainable = model.trainable();
            if let Some(bad) = all_finite(&trainable)? {
                let at = format!("parameter `{bad}` is not finite after step {step} (loss {loss})");
                return Err(stop(&mut metrics, &progress, &ctx, step, last_ckpt.as_ref(), &at));
            }
            let state = State {
                format: checkpoint::STATE_FORMAT.into(),
                model: id.model.clone(),
                graph_fingerprint: id.fingerprint.clone(),
                step,
                epoch,
                position,
                samples,
                data: a.data.display().to_string(),
                hyper: hyper.clone(),
            };
            checkpoint::write_all(&out, &id, &trainable, &opt, &state)?;
            last_ckpt = Some((step, out.clone()));
            metrics.plot()?;
        }
    }
    progress.finish();
    let secs = began.elapsed().as_secs_f64();
    let taken = step - start;
    println!(
        "trained {} to step {step} ({taken} steps in {}, {:.1} ms/step, {:.0} samples/s); last loss {:.4}",
        id.model,
        clock(secs),
        1000.0 * secs / taken as f64,
        session_samples as f64 / secs.max(1e-9),
        losses.last().copied().unwrap_or(f32::NAN)
    );
    if let Some(r) = &last_val {
        println!("validation: loss {:.4}, accuracy {:.2}% ({} samples)", r.loss, 100.0 * r.accuracy, r.samples);
    }
    println!("wrote {} ({} tensors)", out.join(TRAINABLE).display(), opt.paths().len());
    Ok(Some(Trained { model, dir: out, step, losses, val: last_val }))
}
