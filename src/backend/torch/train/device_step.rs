//! Optimizer steps without a host synchronisation, eager or captured whole.
//!
//! A step is forward (autocast when asked), cross-entropy, backward, the global
//! gradient norm with clipping on the device, a non-finite check that raises a device
//! flag, and the fused AdamW update, which the raised flag turns into a no-op. Nothing
//! is read back: the loss and the norm of each step are copied into a device ring
//! ([`DeviceStep::record`]) and read in one transfer when the caller logs
//! ([`DeviceStep::drain`]). A step that went non-finite leaves the parameters as they
//! were, and so does every step after it until the flag is read, so the run stops
//! exactly where the eager loop would have stopped, and the drained records name that
//! step.
//!
//! [`GraphedTrainStep`] captures the whole step (forward, backward, clipping, AdamW)
//! in one CUDA graph at the shapes and present inputs of a batch; the schedule's factor
//! is a device tensor the graph reads, so a changing learning rate needs no re-capture.
//! The warm-up runs that CUDA graphs need before a capture go through the same code
//! with the flag raised, so they change nothing.

use super::model::{cross_entropy, Model};
use super::optim::{clip_grad_norm, flag_non_finite, AdamW, Rate};
use crate::backend::torch::cuda_graph::{same_signature, shallow, Autocast, CudaGraph, WARMUP};
pub use crate::backend::train::StepValues;
use anyhow::{anyhow, bail, Result};
use tch::{Device, Kind, Tensor};

/// The device-side values of sync-free steps.
pub struct DeviceStep {
    /// The schedule's factor for the next step (0-d float).
    pub rate: Tensor,
    /// 1 once a step was non-finite (0-d float); updates are skipped while it is.
    pub found_inf: Tensor,
    /// Loss and gradient norm of the steps since the last drain, `[capacity, 2]`.
    ring: Tensor,
    pending: Vec<u64>,
}

impl DeviceStep {
    /// Room for `capacity` steps between drains (the logging interval).
    pub fn new(device: Device, capacity: usize) -> Result<DeviceStep> {
        let f = (Kind::Float, device);
        Ok(DeviceStep {
            rate: Tensor::f_ones([], f)?,
            found_inf: Tensor::f_zeros([], f)?,
            ring: Tensor::f_zeros([capacity.max(1) as i64, 2], f)?,
            pending: Vec::new(),
        })
    }

    /// Set the schedule's factor for the next step (an asynchronous host-to-device
    /// fill: no synchronisation).
    pub fn set_rate(&mut self, factor: f64) -> Result<()> {
        let _ = self.rate.f_fill_(factor)?;
        Ok(())
    }

    /// Copy step `step`'s loss and norm into the ring (on the device).
    pub fn record(&mut self, step: u64, loss: &Tensor, norm: &Tensor) -> Result<()> {
        if self.pending.len() as i64 >= self.ring.size()[0] {
            bail!("internal error: more steps than the ring holds between two drains");
        }
        let row = self.ring.f_select(0, self.pending.len() as i64)?;
        let _guard = tch::no_grad_guard();
        row.f_select(0, 0)?.f_copy_(&loss.f_detach()?.f_to_kind(Kind::Float)?)?;
        row.f_select(0, 1)?.f_copy_(norm)?;
        self.pending.push(step);
        Ok(())
    }

    /// The recorded steps' values (one device-to-host transfer), and whether a step
    /// went non-finite since the last clear; empties the ring.
    pub fn drain(&mut self) -> Result<(Vec<StepValues>, bool)> {
        if self.pending.is_empty() {
            return Ok((Vec::new(), false));
        }
        let n = self.pending.len() as i64;
        let host = self.ring.f_narrow(0, 0, n)?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?;
        let flat = Vec::<f64>::try_from(host.f_reshape([-1])?)?;
        let bad = self.found_inf.f_to_device(Device::Cpu)?.f_double_value(&[])? != 0.0;
        let out = self
            .pending
            .drain(..)
            .enumerate()
            .map(|(i, step)| StepValues { step, loss: flat[2 * i], grad_norm: flat[2 * i + 1] })
            .collect();
        Ok((out, bad))
    }
}

/// What a whole step reads besides its batch: the model, its trainable tensors, the
/// optimizer, clipping, autocast and the device-side state.
pub struct StepParts<'a> {
    pub model: &'a Model,
    pub params: &'a [Tensor],
    pub opt: &'a mut AdamW,
    pub clip: Option<f64>,
    pub autocast: bool,
    pub dev: &'a DeviceStep,
}

/// Forward, loss and backward, then clipping, the non-finite check and AdamW, all on
/// the device; returns the loss and the norm before clipping (0-d device tensors).
/// The schedule's factor is `rate`, or `dev.rate` when `None` (what a captured graph
/// reads).
pub fn train_step(
    parts: &mut StepParts,
    rate: Option<f64>,
    ins: Vec<Option<Tensor>>,
    labels: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let StepParts { model, params, ref mut opt, clip, autocast, dev } = *parts;
    let n = labels.size().first().copied().unwrap_or(0) as usize;
    let loss = {
        let _autocast = Autocast::bf16_if(autocast)?;
        let logits = model.logits_of(ins, n)?;
        let logits = if autocast { logits.f_to_kind(Kind::Float)? } else { logits };
        cross_entropy(&logits, labels, false)?
    };
    let zero = || Tensor::f_zeros([], (Kind::Float, labels.device()));
    if !loss.requires_grad() {
        return Ok((loss.f_detach()?, zero()?));
    }
    let grads = Tensor::f_run_backward(&[&loss], params, false, false)?;
    let mut grads: Vec<Option<Tensor>> = grads.into_iter().map(|g| g.defined().then_some(g)).collect();
    let norm = match clip_grad_norm(&mut grads, clip)? {
        Some(norm) => norm,
        None => zero()?,
    };
    let loss = loss.f_detach()?;
    flag_non_finite(&[&loss, &norm], &dev.found_inf)?;
    let rate = rate.map_or(Rate::Device(&dev.rate), Rate::Value);
    opt.step_on_device(&grads, rate, Some(&dev.found_inf))?;
    Ok((loss, norm))
}

/// A whole training step captured at one batch signature.
pub struct GraphedTrainStep {
    // Field order: the graph goes before the buffers it reads and writes.
    graph: CudaGraph,
    inputs: Vec<Option<Tensor>>,
    labels: Tensor,
    loss: Tensor,
    norm: Tensor,
}

fn fill(dst: &Tensor, src: &Tensor) -> Result<()> {
    let _guard = tch::no_grad_guard();
    dst.shallow_clone().f_copy_(src)?;
    Ok(())
}

fn empty_like(t: &Tensor) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    Ok(t.f_detach()?.f_contiguous()?.f_empty_like()?)
}

impl GraphedTrainStep {
    /// Capture [`train_step`] at the signature of `ins`/`labels`. Nothing is computed
    /// for this batch yet: call [`Self::run`] with it. The warm-up runs have the flag
    /// raised, so they update nothing; a flag raised before is kept.
    pub fn capture(parts: &mut StepParts, ins: &[Option<Tensor>], labels: &Tensor) -> Result<GraphedTrainStep> {
        let dev = parts.dev;
        let inputs = ins.iter().map(|t| t.as_ref().map(empty_like).transpose()).collect::<Result<Vec<_>>>()?;
        for (d, s) in inputs.iter().zip(ins) {
            if let (Some(d), Some(s)) = (d, s) {
                fill(d, s)?;
            }
        }
        let static_labels = empty_like(labels)?;
        fill(&static_labels, labels)?;
        let was = dev.found_inf.f_to_device(Device::Cpu)?.f_double_value(&[])?;
        let _ = dev.found_inf.shallow_clone().f_fill_(1.0)?;
        let mut graph = CudaGraph::new()?;
        graph.side_stream(true)?;
        let body = |parts: &mut StepParts| train_step(parts, None, shallow(&inputs), &static_labels);
        let warm: Result<()> = (0..WARMUP).try_for_each(|_| body(parts).map(drop));
        let restore = dev.found_inf.shallow_clone().f_fill_(was).map(drop).map_err(anyhow::Error::from);
        if let Err(e) = warm.and(restore) {
            let _ = graph.side_stream(false);
            return Err(e.context("warming up the captured training step (run without --cuda-graph to train eagerly)"));
        }
        graph.capture_begin().inspect_err(|_| {
            let _ = graph.side_stream(false);
        })?;
        let out = body(parts);
        let end = graph.capture_end();
        let (loss, norm) = match (out, end) {
            (Ok(v), Ok(())) => v,
            (Err(e), _) => return Err(e.context("while capturing the training step (run without --cuda-graph)")),
            (Ok(_), Err(e)) => {
                return Err(e.context("an operation of the training step cannot be captured (run without --cuda-graph)"))
            }
        };
        Ok(GraphedTrainStep { graph, inputs, labels: static_labels, loss, norm })
    }

    /// Whether a batch has the signature the graph was captured at.
    pub fn fits(&self, ins: &[Option<Tensor>], labels: &Tensor) -> bool {
        same_signature(&self.inputs, ins)
            && same_signature(&[Some(self.labels.shallow_clone())], &[Some(labels.shallow_clone())])
    }

    /// One whole step on a batch that [`Self::fits`]; the loss and norm are the graph's
    /// static tensors (record them before the next replay).
    pub fn run(&self, ins: &[Option<Tensor>], labels: &Tensor) -> Result<(Tensor, Tensor)> {
        if !self.fits(ins, labels) {
            return Err(anyhow!("internal error: a batch that does not fit the captured training step"));
        }
        for (d, s) in self.inputs.iter().zip(ins) {
            if let (Some(d), Some(s)) = (d, s) {
                fill(d, s)?;
            }
        }
        fill(&self.labels, labels)?;
        self.graph.replay()?;
        Ok((self.loss.shallow_clone(), self.norm.shallow_clone()))
    }
}

/// At most this many captured step graphs are kept (one per batch signature: the full
/// batch, a short last batch, each set of present optional inputs); past it the least
/// recently used one is dropped.
pub const MAX_GRAPHS: usize = 4;

/// The captured step graphs of a run, by batch signature.
#[derive(Default)]
pub struct StepGraphs {
    graphs: Vec<GraphedTrainStep>,
    /// Captures so far (for reports and tests).
    pub captures: u64,
}

impl StepGraphs {
    /// One whole step on a batch: replayed from the graph of its signature, captured now
    /// if there is none.
    pub fn step(&mut self, parts: &mut StepParts, ins: &[Option<Tensor>], labels: &Tensor) -> Result<(Tensor, Tensor)> {
        let i = match self.graphs.iter().position(|g| g.fits(ins, labels)) {
            Some(i) => i,
            None => {
                if self.graphs.len() >= MAX_GRAPHS {
                    self.graphs.remove(0);
                }
                let g = GraphedTrainStep::capture(parts, ins, labels)?;
                self.captures += 1;
                self.graphs.push(g);
                self.graphs.len() - 1
            }
        };
        // Most recently used last.
        let g = self.graphs.remove(i);
        let out = g.run(ins, labels);
        self.graphs.push(g);
        out
    }
}
