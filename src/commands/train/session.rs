//! The training loop: optimizer steps through the seam's [`Trainer`], validation,
//! metrics and checkpoints at their intervals, the summary at the end; a non-finite
//! loss, gradient norm or parameter stops the run cleanly.
//!
//! A checkpoint is written only when every trainable tensor is finite, so the one in
//! RUN_DIR is always the last good one. A checkpoint's three files appear together in
//! one rename ([`super::rundir`]); the run directory stays locked while the loop runs.
//!
//! When the trainer runs steps whole ([`Trainer::defers`]: one batch per step, one
//! process), the loop queues them without waiting and reads their losses every
//! `--log-every` steps, and before any validation or checkpoint; the metrics and the
//! progress of the interval follow then. A non-finite step is named when read, and the
//! steps after it changed nothing, so the run stops as the step-by-step loop would.

use super::args::{Hyper, TrainArgs};
use super::checkpoint::{self, State, TRAINABLE};
use super::events::{Observer, TrainEvent};
use super::feed::Feed;
use super::messages::{stop, Ctx};
use super::metrics::{Metrics, Record};
use super::progress::clock;
use super::rundir::RunLock;
use super::spec::Spec;
use crate::backend::train::{Trainer, Training, Update};
use crate::data::Dataset;
use crate::evaluate::{report, take_batch_inputs, tally, Evaluated, Report, Tally, Views};
use crate::ir::DType;
use crate::tensor::HostTensor;
use anyhow::Result;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A finished run.
pub struct Trained<T> {
    /// The trainer, holding the trained parameters.
    pub trainer: T,
    pub dir: PathBuf,
    /// Optimizer steps taken in total.
    pub step: u64,
    /// The losses of the steps this invocation took.
    pub losses: Vec<f32>,
    /// The last validation, with `--val`.
    pub val: Option<Report>,
}

/// Where the data stream and the counters stand.
pub struct Position {
    pub epoch: u64,
    /// Batches of `epoch` consumed.
    pub position: u64,
    /// Samples seen by the run so far.
    pub samples: u64,
}

impl Position {
    /// Where a resumed run left off (the start for a fresh one). A different number
    /// of ranks keeps the samples consumed but changes the data order (a note).
    pub fn resumed(prev: Option<&State>, global: usize, world: usize, main: bool, obs: &mut dyn Observer) -> Position {
        let (epoch, mut position) = prev.map_or((0, 0), |p| (p.epoch, p.position));
        if let Some(p) = prev.filter(|p| p.world_size != world) {
            // `position` counts global batches of the old size: keep the samples consumed.
            let old = if p.global_batch > 0 { p.global_batch } else { p.hyper.batch * p.world_size };
            position = position * old as u64 / global as u64;
            if main {
                obs.event(TrainEvent::Note(&format!(
                    "the run so far used {} rank(s) (global batch {old}); now {world} (global batch {global}): training continues from the same epoch, but the data order changes",
                    p.world_size
                )));
            }
        }
        Position { epoch, position, samples: prev.map_or(0, |p| p.samples) }
    }
}

/// A run ready for its first step.
pub struct Loop<'a, S: Training> {
    pub s: &'a S,
    pub a: &'a TrainArgs,
    pub spec: &'a Spec,
    pub trainer: S::Trainer,
    pub hyper: Hyper,
    pub ckpt_every: u64,
    pub eval_every: u64,
    /// Whole steps queued between two reads of their losses.
    pub log_every: u64,
    pub out: PathBuf,
    /// The last good checkpoint: (step, run directory holding it).
    pub last_ckpt: Option<(u64, PathBuf)>,
    pub metrics: Metrics,
    /// The lock on `out` taken when it was created (rank 0).
    pub _lock: Option<RunLock>,
}

/// What the loop keeps between steps.
struct Counters {
    step: u64,
    at: Position,
    losses: Vec<f32>,
    last_val: Option<Report>,
    /// Data-parallel: the trainable tensors' combined fingerprint at the last checkpoint.
    replicas: Option<String>,
    began: Instant,
    session_samples: u64,
    /// The `--cuda-graph` eager-batch note was shown.
    noted: bool,
    /// Time spent waiting for batches, this invocation.
    data_wait: Duration,
    /// Whole steps queued and not yet read, in order.
    pending: Vec<Pending>,
    /// When the losses were last read (seconds since `began`).
    read_at: f64,
}

/// One optimizer step's batches.
struct Batches {
    loss_sum: f64,
    samples: u64,
    missing: BTreeSet<String>,
    wait: Duration,
}

/// A whole step queued on the device, its values not read yet.
struct Pending {
    step: u64,
    /// Where its batch lies in the stream (epoch, index), for a stop's message.
    batch: (u64, u64),
    /// The epoch and samples seen after it.
    epoch: u64,
    samples: u64,
    step_samples: u64,
    lr: f64,
    wait: Duration,
    missing: Vec<String>,
}

/// Move `p` past the batch at `index` of `epoch`, into the next epoch after its last.
fn advance(p: &mut Position, epoch: u64, index: u64, per_epoch: u64) {
    (p.epoch, p.position) = (epoch, index + 1);
    if p.position >= per_epoch {
        (p.epoch, p.position) = (p.epoch + 1, 0);
    }
}

impl<S: Training> Loop<'_, S> {
    /// Train from step `start` to the run's total.
    pub fn run(
        mut self,
        ds: &Dataset,
        val: Option<&Dataset>,
        start: u64,
        at: Position,
        obs: &mut dyn Observer,
    ) -> Result<Trained<S::Trainer>> {
        let (rank, world) = (self.s.rank(), self.s.world());
        let (h, total) = (&self.hyper, self.hyper.schedule.total);
        let shard = (rank, world);
        let feed = Feed::start_shard(ds, h.batch * world, h.seed, h.drop_last, at.epoch, at.position, shard);
        let mut st = Counters {
            step: start,
            at,
            losses: Vec::new(),
            last_val: None,
            replicas: None,
            began: Instant::now(),
            session_samples: 0,
            noted: false,
            data_wait: Duration::ZERO,
            pending: Vec::new(),
            read_at: 0.0,
        };
        obs.event(TrainEvent::Started { start, total, quiet: rank != 0 });
        let whole = self.trainer.defers();
        while st.step < total {
            if whole {
                self.step_whole(&feed, &mut st)?;
            } else {
                self.step(&feed, &mut st, obs)?;
            }
            let step = st.step;
            let validate = val.is_some() && (step.is_multiple_of(self.eval_every) || step == total);
            let ckpt = step.is_multiple_of(self.ckpt_every) || step == total;
            if validate || ckpt || st.pending.len() as u64 >= self.log_every {
                self.read(&mut st, obs)?;
            }
            if let Some(vds) = val.filter(|_| validate) {
                self.validate(vds, &mut st, obs)?;
            }
            if ckpt {
                self.checkpoint(&mut st, obs)?;
            }
        }
        obs.event(TrainEvent::Ended);
        self.finish(start, st, obs)
    }

    /// Record why the run stops and build its error.
    fn stop(&mut self, step: u64, what: &str, obs: &mut dyn Observer) -> anyhow::Error {
        let ctx = Ctx { hyper: &self.hyper, ckpt_every: self.ckpt_every };
        stop(&mut self.metrics, obs, &ctx, step, self.last_ckpt.as_ref(), what)
    }

    /// `--accumulate` batches forward and backward; a non-finite loss stops the run
    /// (data-parallel: checked on the mean over the ranks, so all stop together).
    fn batches(&mut self, feed: &Feed, st: &mut Counters, obs: &mut dyn Observer) -> Result<Batches> {
        let mut b = Batches { loss_sum: 0.0, samples: 0, missing: BTreeSet::new(), wait: Duration::ZERO };
        for _ in 0..self.hyper.accumulate {
            let t = Instant::now();
            let mut item = feed.next()?;
            b.wait += t.elapsed();
            b.samples += item.batch.len() as u64;
            b.missing.extend(self.spec.missing(&item.batch, &[]));
            let labels = item.batch.label_tensor();
            let inputs = take_batch_inputs(&self.spec.plan, &mut item.batch, &[])?;
            let r = self.trainer.step(&inputs, &labels)?;
            if r.eager && !st.noted {
                let note = "--cuda-graph: batches with other shapes or inputs than the captured one run eagerly";
                obs.event(TrainEvent::Note(note));
                st.noted = true;
            }
            if !r.loss.is_finite() && !self.s.data_parallel() {
                let at = format!(
                    "the loss is {} at step {} (epoch {}, batch {})",
                    r.loss,
                    st.step + 1,
                    item.epoch,
                    item.index
                );
                return Err(self.stop(st.step + 1, &at, obs));
            }
            b.loss_sum += r.loss as f64;
            advance(&mut st.at, item.epoch, item.index, feed.per_epoch);
        }
        st.data_wait += b.wait;
        Ok(b)
    }

    /// One optimizer step queued whole on the device ([`Trainer::step_whole`]); its
    /// record waits for [`Self::read`].
    fn step_whole(&mut self, feed: &Feed, st: &mut Counters) -> Result<()> {
        let scale = self.hyper.schedule.factor(st.step);
        let t = Instant::now();
        let mut item = feed.next()?;
        let wait = t.elapsed();
        let (labels, step_samples) = (item.batch.label_tensor(), item.batch.len() as u64);
        let missing = self.spec.missing(&item.batch, &[]).into_iter().collect();
        let inputs = take_batch_inputs(&self.spec.plan, &mut item.batch, &[])?;
        self.trainer.step_whole(st.step + 1, &inputs, &labels, scale)?;
        st.step += 1;
        advance(&mut st.at, item.epoch, item.index, feed.per_epoch);
        st.at.samples += step_samples;
        st.session_samples += step_samples;
        st.data_wait += wait;
        st.pending.push(Pending {
            step: st.step,
            batch: (item.epoch, item.index),
            epoch: st.at.epoch,
            samples: st.at.samples,
            step_samples,
            lr: self.hyper.lr * scale,
            wait,
            missing,
        });
        Ok(())
    }

    /// Read the queued whole steps' losses and norms (one wait for the device), then
    /// record them; a non-finite one stops the run, named.
    fn read(&mut self, st: &mut Counters, obs: &mut dyn Observer) -> Result<()> {
        if st.pending.is_empty() {
            return Ok(());
        }
        let values = self.trainer.drain()?;
        let pending = std::mem::take(&mut st.pending);
        if values.len() != pending.len() || values.iter().zip(&pending).any(|(v, p)| v.step != p.step) {
            anyhow::bail!("internal error: {} step values read for {} steps queued", values.len(), pending.len());
        }
        let now = st.began.elapsed().as_secs_f64();
        let span = (now - st.read_at).max(1e-9);
        st.read_at = now;
        let interval: u64 = pending.iter().map(|p| p.step_samples).sum();
        let rate = st.session_samples as f64 / now.max(1e-9);
        for (p, v) in pending.into_iter().zip(values) {
            let loss = v.loss as f32;
            if !loss.is_finite() {
                let (e, i) = p.batch;
                let at = format!("the loss is {loss} at step {} (epoch {e}, batch {i})", p.step);
                return Err(self.stop(p.step, &at, obs));
            }
            if !v.grad_norm.is_finite() {
                let at = format!("the gradient norm is {} at step {} (loss {loss})", v.grad_norm, p.step);
                return Err(self.stop(p.step, &at, obs));
            }
            st.losses.push(loss);
            self.metrics.push(Record::Train {
                step: p.step,
                epoch: p.epoch,
                loss,
                lr: p.lr,
                grad_norm: v.grad_norm,
                samples: p.samples,
                samples_per_s: interval as f64 / span,
                elapsed_s: now,
                data_wait_s: p.wait.as_secs_f64(),
                missing: p.missing,
            })?;
            obs.event(TrainEvent::Step { step: p.step, loss, lr: p.lr, samples_per_s: rate });
        }
        Ok(())
    }

    /// One optimizer step: its batches, the update, the metrics record.
    fn step(&mut self, feed: &Feed, st: &mut Counters, obs: &mut dyn Observer) -> Result<()> {
        let t_step = Instant::now();
        let scale = self.hyper.schedule.factor(st.step);
        let b = self.batches(feed, st, obs)?;
        let world = self.s.world();
        let (loss, norm) = match self.trainer.update(st.step + 1, b.loss_sum / self.hyper.accumulate as f64, scale)? {
            Update::Applied { loss, grad_norm } => (loss as f32, grad_norm),
            Update::LossNotFinite { loss } => {
                let at = format!("the loss (mean over {world} ranks) is {} at step {}", loss as f32, st.step + 1);
                return Err(self.stop(st.step + 1, &at, obs));
            }
            Update::NormNotFinite { loss, grad_norm } => {
                let at = format!("the gradient norm is {grad_norm} at step {} (loss {})", st.step + 1, loss as f32);
                return Err(self.stop(st.step + 1, &at, obs));
            }
        };
        let step_samples = b.samples * world as u64;
        st.step += 1;
        st.at.samples += step_samples;
        st.session_samples += step_samples;
        st.losses.push(loss);
        let dt = t_step.elapsed().as_secs_f64();
        let rate = st.session_samples as f64 / st.began.elapsed().as_secs_f64().max(1e-9);
        let lr = self.hyper.lr * scale;
        self.metrics.push(Record::Train {
            step: st.step,
            epoch: st.at.epoch,
            loss,
            lr,
            grad_norm: norm,
            samples: st.at.samples,
            samples_per_s: step_samples as f64 / dt.max(1e-9),
            elapsed_s: st.began.elapsed().as_secs_f64(),
            data_wait_s: b.wait.as_secs_f64(),
            missing: b.missing.into_iter().collect(),
        })?;
        obs.event(TrainEvent::Step { step: st.step, loss, lr, samples_per_s: rate });
        Ok(())
    }

    /// Loss and accuracy on the validation data (data-parallel: each rank its share,
    /// the tallies summed over the ranks).
    fn validate(&mut self, vds: &Dataset, st: &mut Counters, obs: &mut dyn Observer) -> Result<()> {
        let mut exe = self.trainer.executable();
        let spec = self.spec;
        let m = Evaluated { model: &spec.compiled.model, plan: &spec.plan, exe: exe.as_mut(), output: spec.output };
        let (batch, shard) = (self.hyper.batch, (self.s.rank(), self.s.world()));
        let mut t = tally(m, vds, batch, &[], shard, Views::ONE)?;
        if self.s.data_parallel() {
            t = self.sum_tally(t)?;
        }
        let r = report(&spec.compiled.model, vds, &[], t)?;
        let step = st.step;
        obs.event(TrainEvent::Validated { step, loss: r.loss, accuracy: r.accuracy, samples: r.samples });
        self.metrics.push(Record::Val { step, loss: r.loss, accuracy: r.accuracy, samples: r.samples })?;
        st.last_val = Some(r);
        Ok(())
    }

    /// A tally summed over the ranks.
    fn sum_tally(&self, t: Tally) -> Result<Tally> {
        let classes = t.confusion.len();
        let mut flat: Vec<f64> = t.confusion.iter().flatten().map(|&c| c as f64).collect();
        flat.extend([t.loss_sum, t.samples as f64]);
        let s = self.s.sum(&flat, "reducing the validation metrics")?;
        let confusion =
            (0..classes).map(|i| s[i * classes..(i + 1) * classes].iter().map(|&c| c as u64).collect()).collect();
        Ok(Tally { confusion, loss_sum: s[classes * classes], samples: s[classes * classes + 1] as u64 })
    }

    /// After step `st.step`: check the trainable tensors, then (rank 0) publish a
    /// checkpoint and redraw the plot.
    fn checkpoint(&mut self, st: &mut Counters, obs: &mut dyn Observer) -> Result<()> {
        let step = st.step;
        let trainable = self.trainer.trainable()?;
        if let Some(bad) = first_nonfinite(&trainable) {
            let loss = st.losses.last().copied().unwrap_or(f32::NAN);
            let at = format!("parameter `{bad}` is not finite after step {step} (loss {loss})");
            return Err(self.stop(step, &at, obs));
        }
        let id = &self.spec.identity;
        let state = State {
            format: checkpoint::STATE_FORMAT.into(),
            model: id.model.clone(),
            graph_fingerprint: id.fingerprint.clone(),
            step,
            epoch: st.at.epoch,
            position: st.at.position,
            samples: st.at.samples,
            data: self.a.data.display().to_string(),
            hyper: self.hyper.clone(),
            world_size: self.s.world(),
            global_batch: self.hyper.batch * self.s.world(),
        };
        if let Some(f) = self.trainer.check_replicas(step)? {
            st.replicas = Some(f);
        }
        if self.s.rank() == 0 {
            checkpoint::write_all(&self.out, id, &trainable, &self.trainer.optimizer_state()?, &state)?;
            self.metrics.plot()?;
        }
        self.last_ckpt = Some((step, self.out.clone()));
        Ok(())
    }

    /// The summary (every rank waits for rank 0's last checkpoint first).
    fn finish(self, start: u64, st: Counters, obs: &mut dyn Observer) -> Result<Trained<S::Trainer>> {
        let (rank, world, step) = (self.s.rank(), self.s.world(), st.step);
        let trained = |t: S::Trainer, st: Counters| Trained {
            trainer: t,
            dir: self.out.clone(),
            step,
            losses: st.losses,
            val: st.last_val,
        };
        if self.s.data_parallel() {
            // Every rank exits non-zero if rank 0 failed to write the last checkpoint.
            self.s.barrier("finishing the run")?;
            if rank != 0 {
                let f = st.replicas.as_deref().unwrap_or("-");
                obs.event(TrainEvent::Result(&format!(
                    "rank {rank} of {world}: trained to step {step}; trainable fingerprint {f}"
                )));
                return Ok(trained(self.trainer, st));
            }
        }
        let secs = st.began.elapsed().as_secs_f64();
        let taken = step - start;
        let model = &self.spec.compiled.model;
        obs.event(TrainEvent::Result(&format!(
            "trained {model} to step {step} ({taken} steps in {}, {:.1} ms/step, {:.0} samples/s); last loss {:.4}",
            clock(secs),
            1000.0 * secs / taken as f64,
            st.session_samples as f64 / secs.max(1e-9),
            st.losses.last().copied().unwrap_or(f32::NAN)
        )));
        let wait = st.data_wait.as_secs_f64();
        obs.event(TrainEvent::Result(&format!(
            "waited for data: {:.2} ms per step ({:.1}% of the training time)",
            1000.0 * wait / taken as f64,
            100.0 * wait / secs.max(1e-9)
        )));
        if let Some(r) = &st.last_val {
            let pct = 100.0 * r.accuracy;
            obs.event(TrainEvent::Result(&format!(
                "validation: loss {:.4}, accuracy {pct:.2}% ({} samples)",
                r.loss, r.samples
            )));
        }
        let tensors = self.spec.plan.params().iter().filter(|p| p.trainable).count();
        obs.event(TrainEvent::Result(&format!("wrote {} ({tensors} tensors)", self.out.join(TRAINABLE).display())));
        if let Some(f) = &st.replicas {
            obs.event(TrainEvent::Result(&format!(
                "rank 0 of {world}: trainable fingerprint {f} (bitwise identical on every rank)"
            )));
        }
        if let Some(b) = self.trainer.reduction().filter(|b| b.calls > 0) {
            let spent = b.spent.as_secs_f64();
            obs.event(TrainEvent::Result(&format!(
                "all-reduce: {:.2} ms per step ({:.1}% of the training time; {:.2} MB in {} bucket(s), waits for the slowest rank included)",
                1000.0 * spent / b.calls as f64,
                100.0 * spent / secs.max(1e-9),
                b.bytes as f64 / 1e6,
                b.buckets
            )));
        }
        Ok(trained(self.trainer, st))
    }
}

/// The first tensor holding NaN or infinity.
fn first_nonfinite(tensors: &[(String, HostTensor)]) -> Option<String> {
    let finite = |t: &HostTensor| match t.dtype {
        DType::F32 => t.as_f32().is_some_and(|v| v.iter().all(|x| x.is_finite())),
        DType::F64 => t.as_f64().is_some_and(|v| v.iter().all(|x| x.is_finite())),
        // Half floats: an exponent of all ones is infinity or NaN.
        DType::F16 => t.data.chunks_exact(2).all(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 != 0x7c00),
        DType::BF16 => t.data.chunks_exact(2).all(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7f80 != 0x7f80),
        DType::I64 | DType::I32 | DType::Bool | DType::U8 => true,
    };
    tensors.iter().find(|(_, t)| !finite(t)).map(|(n, _)| n.clone())
}
