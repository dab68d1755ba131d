//! The training seam: what a backend implements so `graft train` can fine-tune a model
//! on it, the way [`Backend`](super::Backend) and [`Executable`] serve inference.
//!
//! ```text
//! Training (one per process: the device, the data-parallel group if any)
//!   ─prepare(&Plan, logits output, params: Vec<HostTensor>, &TrainOptions)─▶ Trainer
//! per optimizer step: Trainer::step(inputs, labels) × accumulate ─▶ losses
//!                     Trainer::update(step, mean loss, lr factor) ─▶ Update
//! checkpoints: Trainer::trainable / optimizer_state (host tensors) out,
//!              Trainer::load_optimizer_state in (the trainable tensors come in with
//!              the parameters given to `prepare`)
//! validation:  Trainer::executable() ─▶ an Executable over the live parameters
//! without waiting (Trainer::defers): per optimizer step of one batch
//!                     Trainer::step_whole(step, inputs, labels, lr factor)
//!              then, at the logging interval, Trainer::drain ─▶ Drained
//! ```
//!
//! Everything about a *run* stays above this seam, in the application
//! (`crate::commands::train`): the run directory, resume, the learning-rate schedule
//! (the seam takes its factor), checkpoint files, metrics and progress. A backend sees
//! a [`Plan`], host tensors and options, and returns values: it never prints. Inputs
//! arrive as [`crate::backend::inputs::bind`] returns them (plan order, `None`
//! absent), labels as an `i64[B]` host tensor; the loss is the cross-entropy of one
//! plan output (logits `[B, classes]`, chosen at [`Training::prepare`]) against them.
//!
//! Only the parameters the plan marks trainable are updated (AdamW with decoupled
//! weight decay on tensors of two or more dimensions, `lr_for` groups, global-norm
//! clipping); frozen ones stay bit-identical. A step that sees a non-finite loss or
//! gradient norm updates nothing ([`Update`] says why), so the caller can stop with
//! the last good checkpoint intact.

use super::{BackendError, Device, Executable, Plan};
use crate::safetensors::SafeFile;
use crate::tensor::HostTensor;
use std::time::Duration;

/// A training backend's failure. Messages are complete sentences (they may span
/// lines, e.g. naming the data-parallel rank at fault).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{0}")]
    Failed(String),
}

/// How [`Training::prepare`] readies a model.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOptions {
    /// Seeds whatever random stream the backend draws from (graft's own steps draw
    /// none; the parameters arrive as values).
    pub seed: u64,
    /// Peak learning rate of the default group.
    pub lr: f64,
    /// `(glob on parameter paths, peak rate)`: the first matching pattern wins.
    pub lr_for: Vec<(String, f64)>,
    pub weight_decay: f64,
    /// Clip gradients to this global L2 norm.
    pub clip: Option<f64>,
    /// Batches per optimizer step: each batch's loss is divided by it.
    pub accumulate: usize,
    /// Capture forward + backward of a batch once and replay it (CUDA graphs).
    pub graph_capture: bool,
    /// Run the forward in bfloat16 where it is safe (autocast).
    pub autocast: bool,
    /// Optimizer steps between two reads of their losses ([`Trainer::drain`]): how
    /// many [`Trainer::step_whole`] calls may precede a drain.
    pub log_every: usize,
}

/// A parameter group of the optimizer, for the run's banner.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamGroup {
    /// The `lr_for` pattern, or `None` for the default group.
    pub pattern: Option<String>,
    pub lr: f64,
    /// Trainable tensors in the group.
    pub tensors: usize,
}

/// One batch's forward and backward.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stepped {
    /// This batch's loss (mean over its samples).
    pub loss: f32,
    /// With graph capture: the batch did not fit the captured graph (another shape,
    /// or an optional input absent) and ran eagerly.
    pub eager: bool,
}

/// What [`Trainer::update`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Update {
    /// The optimizer stepped. `loss` is the step's mean loss (over the data-parallel
    /// ranks too), `grad_norm` the global gradient norm before clipping.
    Applied { loss: f64, grad_norm: f64 },
    /// Data-parallel: the mean loss over the ranks is not finite; nothing changed.
    /// (Alone, the caller checks each batch's loss from [`Trainer::step`].)
    LossNotFinite { loss: f64 },
    /// The gradient norm is not finite; nothing changed.
    NormNotFinite { loss: f64, grad_norm: f64 },
}

/// One optimizer step's values, read back by [`Trainer::drain`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepValues {
    /// The step (1-based).
    pub step: u64,
    pub loss: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
}

impl StepValues {
    pub fn finite(&self) -> bool {
        self.loss.is_finite() && self.grad_norm.is_finite()
    }
}

/// What a data-parallel trainer all-reduces, for reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Reduction {
    /// The collective backend (`gloo`, `nccl`).
    pub collective: String,
    pub buckets: usize,
    /// Bytes all-reduced per step.
    pub bytes: usize,
    /// Time spent all-reducing, over `calls` steps (waits for the slowest rank included).
    pub spent: Duration,
    pub calls: u64,
}

/// Training on one backend in this process: the device, and the data-parallel group
/// when several processes train one model together (each a rank; rank 0 writes).
pub trait Training {
    type Trainer: Trainer;

    /// This process's rank and the number of ranks (`(0, 1)` alone).
    fn rank(&self) -> usize;
    fn world(&self) -> usize;

    /// Whether this process is a rank of a data-parallel group (possibly of one):
    /// losses are then checked after averaging over the ranks.
    fn data_parallel(&self) -> bool;

    /// The device this rank computes on.
    fn device(&self) -> Device;

    /// Whether this backend can honour `opts` (graph capture, autocast on this
    /// device), checked before any work.
    fn check(&self, opts: &TrainOptions) -> Result<(), TrainError>;

    /// Ready `plan` to train with `params` (one per `plan.params`, in order): the
    /// trainable ones as variables, an optimizer over exactly those. The loss reads
    /// `plan.outputs[output]`.
    fn prepare(
        &self,
        plan: &Plan,
        output: usize,
        params: Vec<HostTensor>,
        opts: &TrainOptions,
    ) -> Result<Self::Trainer, TrainError>;

    /// Data-parallel: the element-wise sum of `values` over every rank (each passes
    /// its own; `what` names the reduction in errors); alone, `values`.
    fn sum(&self, values: &[f64], what: &str) -> Result<Vec<f64>, TrainError>;

    /// Data-parallel: wait for every rank (`what` names the point in errors).
    fn barrier(&self, what: &str) -> Result<(), TrainError>;

    /// Data-parallel: tell the other ranks why this one stops (best effort).
    fn publish_failure(&self, why: &str);
}

/// A model being trained.
pub trait Trainer {
    /// Data-parallel: check that every rank trains with the same `settings` and the
    /// same frozen weights, then make every rank's trainable tensors rank 0's. Alone:
    /// nothing. Call once, before the first step.
    fn replicate(&mut self, settings: &[(String, String)]) -> Result<(), TrainError>;

    /// The optimizer's parameter groups.
    fn groups(&self) -> Vec<ParamGroup>;

    /// Forward and backward of one batch; the gradients (of `loss / accumulate`)
    /// accumulate until [`Self::update`].
    fn step(&mut self, inputs: &[Option<HostTensor>], labels: &HostTensor) -> Result<Stepped, TrainError>;

    /// Finish optimizer step `step` (1-based) whose batches' mean loss is `loss`:
    /// average over the ranks, the global norm, clipping, then the optimizer at
    /// `lr_scale` × each group's peak rate. Clears the accumulated gradients.
    fn update(&mut self, step: u64, loss: f64, lr_scale: f64) -> Result<Update, TrainError>;

    /// The trainable tensors by full parameter path, in plan order, on the host.
    fn trainable(&self) -> Result<Vec<(String, HostTensor)>, TrainError>;

    /// Data-parallel: check that every rank holds bitwise the same trainable tensors
    /// after `step`; their combined fingerprint. Alone: `None`.
    fn check_replicas(&self, step: u64) -> Result<Option<String>, TrainError>;

    /// The optimizer's state as named host tensors (written beside a checkpoint).
    fn optimizer_state(&self) -> Result<Vec<(String, HostTensor)>, TrainError>;

    /// Restore the state [`Self::optimizer_state`] wrote.
    fn load_optimizer_state(&mut self, file: &SafeFile) -> Result<(), TrainError>;

    /// The model as an [`Executable`] over the live parameters (each update shows
    /// through): validation during training.
    fn executable(&self) -> Box<dyn Executable>;

    /// Data-parallel: what the steps all-reduce; alone: `None`.
    fn reduction(&self) -> Option<Reduction>;

    /// Whether optimizer steps can run whole, without waiting for the device
    /// ([`Self::step_whole`]): one batch per step (no accumulation), one process.
    fn defers(&self) -> bool;

    /// Optimizer step `step` (1-based) on one batch, whole: forward, backward, the
    /// global norm and clipping, then the optimizer at `lr_scale` × each group's peak
    /// rate, queued on the device without reading anything back. Its loss and norm
    /// come out of the next [`Self::drain`]. A step whose loss or norm is not finite
    /// changes nothing, and neither does any step after it until the drain reports it.
    /// At most [`TrainOptions::log_every`] steps between two drains. With
    /// `graph_capture` the whole step is one CUDA graph per batch signature.
    fn step_whole(
        &mut self,
        step: u64,
        inputs: &[Option<HostTensor>],
        labels: &HostTensor,
        lr_scale: f64,
    ) -> Result<(), TrainError>;

    /// The values of the steps since the last drain, in order (one read from the
    /// device). Call before reading the parameters (checkpoints, validation).
    fn drain(&mut self) -> Result<Vec<StepValues>, TrainError>;
}
