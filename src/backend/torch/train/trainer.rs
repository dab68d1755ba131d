//! The training loop: resolve the hyperparameters (fresh or from `state.json`), load
//! the model and the data, step, validate, checkpoint, and stop cleanly on a
//! non-finite loss.
//!
//! A checkpoint is written only when every trainable tensor is finite, so the one in
//! RUN_DIR is always the last good one. A checkpoint's three files appear together in
//! one rename ([`rundir`]); the run directory is locked while a trainer uses it.

#![allow(clippy::print_stdout, clippy::print_stderr)] // `graft train`'s loop: notes and results on the terminal

use super::checkpoint::{self, State, TrainableFile, OPTIMIZER, STATE, TRAINABLE};
use super::dist;
use super::feed::Feed;
use super::messages::{header, stop, Ctx};
use super::metrics::{Metrics, Record};
use super::model::{Model, Spec};
use super::optim::{clip_grad_norm, parse_lr_for, AdamW};
use super::progress::{clock, Progress};
use super::resume::keep;
use super::rundir;
use super::schedule::{Schedule, ScheduleKind};
use super::step::{graphed_batch, loss_and_grads};
use super::{Hyper, TrainArgs, DEFAULT_CHECKPOINT_EVERY, DEFAULT_WEIGHT_DECAY};
use crate::backend::torch::cuda_graph;
use crate::backend::torch::dist::Dist;
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

/// Run `graft train`; `None` when the spec has errors (printed). Under torchrun, join
/// the data-parallel run first; a rank that fails tells the others why.
pub fn run(a: &TrainArgs) -> Result<Option<Trained>> {
    let device = crate::backend::torch::convert::device(a.device.device(&crate::backend::torch::TorchBackend)?);
    let (dist, device) = dist::join(a, device)?;
    let r = train(a, dist.as_ref(), device);
    if let Some(d) = &dist {
        match &r {
            // Every rank sees a finished run for itself: not a failure.
            Err(e) if e.is::<Finished>() => {}
            Err(e) => d.publish_failure(e.to_string().lines().next().unwrap_or("unknown error")),
            Ok(None) => d.publish_failure("the spec has errors"),
            Ok(Some(_)) => {}
        }
    }
    r
}

fn train(a: &TrainArgs, dist: Option<&Dist>, device: tch::Device) -> Result<Option<Trained>> {
    let (rank, world) = dist.map_or((0, 1), |d| (d.rank(), d.world()));
    let main = rank == 0;
    let out = a.out.clone().or_else(|| a.resume.clone()).ok_or_else(|| anyhow!("--out RUN_DIR is required"))?;
    let in_place = a.resume.as_deref().is_some_and(|r| same_dir(r, &out));
    let mut notes = Vec::new();
    // The run directory is locked before anything in it is read, and what a killed
    // writer left there is cleaned up; a new directory is locked when it is created.
    // Under torchrun only rank 0 touches the run directory.
    let mut lock = None;
    let was_run = rundir::is_run(&out);
    if main && out.is_dir() {
        let l = rundir::lock(&out)?;
        if was_run {
            notes.extend(rundir::recover(&out, &l)?);
        }
        lock = Some(l);
    }
    let no_run_in = |dir: &Path| -> Result<()> {
        if rundir::latest(dir)?.is_some() && !in_place {
            bail!(
                "{} already holds a run: pass --resume {} to continue it, or choose another --out",
                dir.display(),
                dir.display()
            );
        }
        Ok(())
    };
    no_run_in(&out)?;
    let prev = match a.resume.as_deref() {
        // A run killed before its first checkpoint: the same command starts it afresh.
        Some(r) if in_place && was_run && rundir::latest(r)?.is_none() && a.batch.is_some() && a.lr.is_some() => {
            notes.push(format!("{} has no complete checkpoint yet: starting from step 0", r.display()));
            None
        }
        Some(r) => Some(State::read(r)?),
        None => None,
    };
    let resume = prev.as_ref().and(a.resume.as_ref());
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
    if a.cuda_graph {
        cuda_graph::require("--cuda-graph", device)?;
    }
    if a.autocast.is_some() {
        cuda_graph::require("--autocast", device)?;
    }
    let autocast = a.autocast.is_some();
    tch::manual_seed(seed as i64);

    // The spec first (its errors are the likeliest), then the data against it.
    let mut spec = Spec::compile(&a.spec)?;
    spec.allow_nonfinite = a.allow_nonfinite;
    let ds = open_data(&a.data, "data")?;
    for n in spec.check_dataset(&ds, "training data")? {
        if main {
            eprintln!("note: {n}");
        }
    }
    let val = match &a.val {
        Some(v) => {
            let vds = open_data(v, "val")?;
            for n in spec.check_dataset(&vds, "validation data")? {
                if main {
                    eprintln!("note: {n}");
                }
            }
            Some(vds)
        }
        None => None,
    };
    // Data-parallel: every rank reads the stream of global batches and keeps its share.
    let global = batch * world;
    let drop_last = ph.map(|h| h.drop_last).unwrap_or_else(|| ds.num_batches(global, true) > 0);
    let per_epoch = ds.num_batches(global, drop_last) as u64;
    if per_epoch == 0 {
        bail!("--data {}: no batch of {global} (the dataset has {} samples)", a.data.display(), ds.len());
    }
    if world > 1 && (!drop_last || ds.num_batches(global, true) == 0) {
        bail!(
            "--data {}: {world} ranks need at least one full global batch of {global} samples (--batch {batch} × {world} ranks) per input combination",
            a.data.display()
        );
    }
    let total = match (a.steps, a.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => crate::bounds::total_steps(e, per_epoch, accumulate as u64).map_err(|e| anyhow!(e))?,
        (None, None) => match ph {
            Some(h) => h.schedule.total,
            None => bail!("pass --steps N or --epochs N"),
        },
    };
    let start = prev.as_ref().map_or(0, |p| p.step);
    if let (Some(dir), true) = (resume, total == start) {
        return Err(anyhow!(Finished { dir: dir.clone(), step: start }));
    }
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
    let resumed = match (resume, &prev) {
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
    if let (Some(dir), Some(p)) = (resume, &prev) {
        let path = rundir::latest(dir)?.unwrap_or_else(|| dir.clone()).join(OPTIMIZER);
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
    let (_lock, mut metrics) = if main {
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let lock = match lock {
            Some(l) => l,
            None => {
                let l = rundir::lock(&out)?;
                no_run_in(&out)?;
                l
            }
        };
        (Some(lock), Metrics::open(&out, resume.map(PathBuf::as_path).zip(prev.as_ref().map(|p| p.step)))?)
    } else {
        (None, Metrics::unwritten())
    };
    let id = model.spec.identity.clone();
    let params = opt.params();
    let mut buckets = match dist {
        Some(d) => {
            let settings = vec![
                ("graph".to_string(), id.fingerprint.clone()),
                ("hyperparameters".to_string(), serde_json::to_string(&hyper)?),
                (
                    "data".to_string(),
                    format!("{} samples in {} shards, {} classes", ds.len(), ds.shards.len(), ds.meta.classes),
                ),
                ("start step".to_string(), start.to_string()),
                ("device".to_string(), if device.is_cuda() { "cuda" } else { "cpu" }.to_string()),
            ];
            Some(dist::prepare(d, &model, &params, settings)?)
        }
        None => None,
    };
    if main {
        for n in &notes {
            eprintln!("note: {n}");
        }
        header(&model, &opt, &ds, &hyper, (per_epoch, global), start, &out, device);
    }
    if let (true, Some(d), Some(b)) = (main, dist, &buckets) {
        eprintln!(
            "  data-parallel: {world} ranks ({}), global batch {global}; {} bucket(s), {:.2} MB all-reduced per step",
            d.backend.name(),
            b.len(),
            b.bytes as f64 / 1e6
        );
    }
    if main && (a.cuda_graph || autocast) {
        let graph = if a.cuda_graph { "forward + backward in a CUDA graph (optimizer eager)" } else { "eager" };
        eprintln!("  {graph}{}", if autocast { ", autocast bf16" } else { "" });
    }
    let (mut graphed, mut noted) = (None, false);

    let (mut epoch, mut position) = prev.as_ref().map_or((0, 0), |p| (p.epoch, p.position));
    if let Some(p) = prev.as_ref().filter(|p| p.world_size != world) {
        // `position` counts global batches of the old size: keep the samples consumed.
        let old = if p.global_batch > 0 { p.global_batch } else { p.hyper.batch * p.world_size };
        position = position * old as u64 / global as u64;
        if main {
            eprintln!(
                "note: the run so far used {} rank(s) (global batch {old}); now {world} (global batch {global}): training continues from the same epoch, but the data order changes",
                p.world_size
            );
        }
    }
    let mut samples = prev.as_ref().map_or(0, |p| p.samples);
    let feed = Feed::start_shard(&ds, global, seed, drop_last, epoch, position, (rank, world));
    let mut step = start;
    // The last good checkpoint: (step, run directory holding it).
    let mut last_ckpt: Option<(u64, PathBuf)> = prev.as_ref().zip(resume.cloned()).map(|(p, d)| (p.step, d));
    let mut losses = Vec::new();
    let mut last_val: Option<Report> = None;
    let mut progress = if main { Progress::new(start, total) } else { Progress::quiet(start, total) };
    let mut replicas: Option<String> = None;
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
            // Data-parallel: checked on the mean over the ranks, so all stop together.
            if !value.is_finite() && dist.is_none() {
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
        let mut loss = (loss_sum / accumulate as f64) as f32;
        if let (Some(d), Some(b)) = (dist, buckets.as_mut()) {
            d.mark_step(step + 1)?;
            let (mean, mean_loss) = b.reduce(d, grads, loss_sum / accumulate as f64)?;
            (grads, loss) = (mean, mean_loss as f32);
            step_samples *= world as u64;
            if !loss.is_finite() {
                let at = format!("the loss (mean over {world} ranks) is {loss} at step {}", step + 1);
                return Err(stop(&mut metrics, &progress, &ctx, step + 1, last_ckpt.as_ref(), &at));
            }
        }
        // The norm before clipping (what is logged), the gradients clipped on the device.
        let norm = match clip_grad_norm(&mut grads, hyper.clip)? {
            Some(n) => n.f_double_value(&[])?,
            None => 0.0,
        };
        if !norm.is_finite() {
            let at = format!("the gradient norm is {norm} at step {} (loss {loss})", step + 1);
            return Err(stop(&mut metrics, &progress, &ctx, step + 1, last_ckpt.as_ref(), &at));
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
            let r = match dist {
                Some(d) => dist::validate(d, m, vds, batch, device)?,
                None => evaluate(m, vds, batch, &[])?,
            };
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
                world_size: world,
                global_batch: global,
            };
            if let Some(d) = dist {
                replicas = Some(dist::check_replicas(d, step, &trainable)?);
            }
            if main {
                checkpoint::write_all(&out, &id, &trainable, &opt, &state)?;
                metrics.plot()?;
            }
            last_ckpt = Some((step, out.clone()));
        }
    }
    progress.finish();
    if let Some(d) = dist {
        // Every rank exits non-zero if rank 0 failed to write the last checkpoint.
        d.barrier("finishing the run")?;
        if !main {
            println!(
                "rank {rank} of {world}: trained to step {step}; trainable fingerprint {}",
                replicas.as_deref().unwrap_or("-")
            );
            return Ok(Some(Trained { model, dir: out, step, losses, val: last_val }));
        }
    }
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
    if let Some(f) = &replicas {
        println!("rank 0 of {world}: trainable fingerprint {f} (bitwise identical on every rank)");
    }
    if let Some(b) = buckets.as_ref().filter(|b| b.calls > 0) {
        let ms = 1000.0 * b.spent.as_secs_f64() / b.calls as f64;
        println!(
            "all-reduce: {ms:.2} ms per step ({:.1}% of the training time; {:.2} MB in {} bucket(s), waits for the slowest rank included)",
            100.0 * b.spent.as_secs_f64() / secs.max(1e-9),
            b.bytes as f64 / 1e6,
            b.len()
        );
    }
    Ok(Some(Trained { model, dir: out, step, losses, val: last_val }))
}

/// `--resume` of a run that already reached its last step: nothing to do, which is
/// success (a script re-runs its command after a crash without looking).
#[derive(Debug)]
pub struct Finished {
    pub dir: PathBuf,
    pub step: u64,
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} already finished: it is at step {}, its last; pass a larger --steps (or --epochs) to train on",
            self.dir.display(),
            self.step
        )
    }
}

impl std::error::Error for Finished {}
