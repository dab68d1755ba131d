//! [`TorchTraining`] and [`TorchTrainer`]: the training seam
//! ([`crate::backend::train`]) on LibTorch.
//!
//! A trainer holds the model (its VarStore), AdamW over exactly the trainable
//! variables, the gradients accumulated since the last update and, with
//! `graph_capture`, the CUDA graph of a batch's forward and backward. Data-parallel,
//! it shares the process group with its [`TorchTraining`] and all-reduces the
//! gradients in buckets before each update.
//!
//! Alone and with one batch per step, a step can also run whole on the device
//! ([`Trainer::step_whole`], [`super::device_step`]): nothing is read back until the
//! loop drains the losses at its logging interval, and with `graph_capture` the whole
//! step (forward, backward, clipping, AdamW) replays as one CUDA graph.

use super::device_step::{train_step, DeviceStep, StepGraphs, StepParts};
use super::dist::{self as dp, DistOptions};
use super::model::Model;
use super::optim::{clip_grad_norm, AdamW};
use super::step::{graphed_batch, loss_and_grads};
use crate::backend::torch::convert::{device as tch_device, to_host};
use crate::backend::torch::cuda_graph::{self, GraphedStep};
use crate::backend::torch::dist::reduce::{sum, Buckets};
use crate::backend::torch::dist::{BackendArg, Dist, Env};
use crate::backend::train::{
    ParamGroup, Reduction, StepValues, Stepped, TrainError, TrainOptions, Trainer, Training, Update,
};
use crate::backend::{Device, Executable, Plan};
use crate::safetensors::SafeFile;
use crate::tensor::HostTensor;
use std::rc::Rc;
use tch::Tensor;

/// The seam's error for a failure of the LibTorch side (its whole context chain).
fn failed(e: anyhow::Error) -> TrainError {
    TrainError::Failed(format!("{e:#}"))
}

/// Training on LibTorch in this process: the device and, under torchrun, the
/// data-parallel group.
pub struct TorchTraining {
    device: tch::Device,
    dist: Option<Rc<Dist>>,
}

impl TorchTraining {
    /// Train on `device`, joining the data-parallel run `env` describes (torchrun's
    /// variables) if any: the device becomes `cuda:LOCAL_RANK` on CUDA.
    pub fn join(device: Device, env: Option<Env>, opts: DistOptions) -> Result<TorchTraining, TrainError> {
        let (dist, device) = dp::join(env, tch_device(device), opts).map_err(failed)?;
        Ok(TorchTraining { device, dist: dist.map(Rc::new) })
    }

    /// The data-parallel group, if this is a rank of one.
    pub fn dist(&self) -> Option<&Dist> {
        self.dist.as_deref()
    }
}

impl Training for TorchTraining {
    type Trainer = TorchTrainer;

    fn rank(&self) -> usize {
        self.dist.as_ref().map_or(0, |d| d.rank())
    }

    fn world(&self) -> usize {
        self.dist.as_ref().map_or(1, |d| d.world())
    }

    fn device(&self) -> Device {
        match self.device {
            tch::Device::Cuda(i) => Device::Cuda(i),
            _ => Device::Cpu,
        }
    }

    fn check(&self, opts: &TrainOptions) -> Result<(), TrainError> {
        if opts.graph_capture {
            cuda_graph::require("--cuda-graph", self.device).map_err(failed)?;
        }
        if opts.autocast {
            cuda_graph::require("--autocast", self.device).map_err(failed)?;
        }
        Ok(())
    }

    fn data_parallel(&self) -> bool {
        self.dist.is_some()
    }

    fn prepare(
        &self,
        plan: &Plan,
        output: usize,
        params: Vec<HostTensor>,
        opts: &TrainOptions,
    ) -> Result<TorchTrainer, TrainError> {
        tch::manual_seed(opts.seed as i64);
        let model = Model::new(plan, output, params, self.device).map_err(failed)?;
        let opt = AdamW::new(model.trainable(), opts.lr, &opts.lr_for, opts.weight_decay, &model.frozen_paths())
            .map_err(failed)?;
        let params = opt.params();
        let grads = (0..params.len()).map(|_| None).collect();
        let dev = DeviceStep::new(self.device, opts.log_every).map_err(failed)?;
        Ok(TorchTrainer {
            model,
            opt,
            params,
            grads,
            graphed: None,
            dev,
            whole: StepGraphs::default(),
            dist: self.dist.clone(),
            buckets: None,
            opts: opts.clone(),
        })
    }

    fn sum(&self, values: &[f64], what: &str) -> Result<Vec<f64>, TrainError> {
        let Some(d) = &self.dist else { return Ok(values.to_vec()) };
        let device = if d.backend == BackendArg::Nccl { self.device } else { tch::Device::Cpu };
        sum(d, values, device, what).map_err(failed)
    }

    fn barrier(&self, what: &str) -> Result<(), TrainError> {
        match &self.dist {
            Some(d) => d.barrier(what).map_err(failed),
            None => Ok(()),
        }
    }

    fn publish_failure(&self, why: &str) {
        if let Some(d) = &self.dist {
            d.publish_failure(why);
        }
    }
}

/// One model being trained on LibTorch.
pub struct TorchTrainer {
    model: Model,
    opt: AdamW,
    /// The trainable variables, in the optimizer's order (what gradients are taken
    /// with respect to).
    params: Vec<Tensor>,
    /// Gradients summed over the batches of the current step (`None`: none yet).
    grads: Vec<Option<Tensor>>,
    graphed: Option<GraphedStep>,
    /// The device-side flag, rate and value ring of whole steps.
    dev: DeviceStep,
    /// With `graph_capture`: the captured whole steps, one per batch signature.
    whole: StepGraphs,
    dist: Option<Rc<Dist>>,
    buckets: Option<Buckets>,
    opts: TrainOptions,
}

impl TorchTrainer {
    /// The model with its live parameters.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Data-parallel: average the gradients and `loss` over the ranks (alone: as
    /// they are).
    fn reduce(
        &mut self,
        step: u64,
        grads: Vec<Option<Tensor>>,
        loss: f64,
    ) -> anyhow::Result<(Vec<Option<Tensor>>, f64)> {
        match (&self.dist, self.buckets.as_mut()) {
            (Some(d), Some(b)) => {
                d.mark_step(step)?;
                b.reduce(d, grads, loss)
            }
            _ => Ok((grads, loss)),
        }
    }
}

impl Trainer for TorchTrainer {
    fn replicate(&mut self, settings: &[(String, String)]) -> Result<(), TrainError> {
        if let Some(d) = &self.dist {
            self.buckets = Some(dp::prepare(d, &self.model, &self.params, settings.to_vec()).map_err(failed)?);
        }
        Ok(())
    }

    fn groups(&self) -> Vec<ParamGroup> {
        let g = &self.opt.groups;
        g.iter().map(|g| ParamGroup { pattern: g.pattern.clone(), lr: g.lr, tensors: g.tensors }).collect()
    }

    fn step(&mut self, inputs: &[Option<HostTensor>], labels: &HostTensor) -> Result<Stepped, TrainError> {
        let (accumulate, autocast) = (self.opts.accumulate, self.opts.autocast);
        let n = labels.shape.first().copied().unwrap_or(0) as usize;
        let ins = self.model.place(inputs).map_err(failed)?;
        let labels = self.model.labels(labels).map_err(failed)?;
        let mut eager = false;
        let (loss, g) = if self.opts.graph_capture {
            let (m, p) = (&self.model, &self.params);
            graphed_batch(&mut self.graphed, m, p, (ins, labels, n), accumulate, autocast, &mut eager)
        } else {
            loss_and_grads(&self.model, &self.params, ins, &labels, n, accumulate, autocast)
        }
        .map_err(failed)?;
        let loss = loss.f_double_value(&[]).map_err(|e| failed(e.into()))? as f32;
        for (acc, gi) in self.grads.iter_mut().zip(g) {
            if !gi.defined() {
                continue;
            }
            match acc {
                Some(t) => {
                    let _ = t.f_add_(&gi).map_err(|e| failed(e.into()))?;
                }
                None => *acc = Some(gi),
            }
        }
        Ok(Stepped { loss, eager })
    }

    fn update(&mut self, step: u64, loss: f64, lr_scale: f64) -> Result<Update, TrainError> {
        let grads: Vec<Option<Tensor>> = self.grads.iter_mut().map(Option::take).collect();
        let (mut grads, loss) = self.reduce(step, grads, loss).map_err(failed)?;
        if self.dist.is_some() && !loss.is_finite() {
            return Ok(Update::LossNotFinite { loss });
        }
        // The norm before clipping (what is logged), the gradients clipped on the device.
        let norm = match clip_grad_norm(&mut grads, self.opts.clip).map_err(failed)? {
            Some(n) => n.f_double_value(&[]).map_err(|e| failed(e.into()))?,
            None => 0.0,
        };
        if !norm.is_finite() {
            return Ok(Update::NormNotFinite { loss, grad_norm: norm });
        }
        self.opt.step(&grads, lr_scale).map_err(failed)?;
        Ok(Update::Applied { loss, grad_norm: norm })
    }

    fn trainable(&self) -> Result<Vec<(String, HostTensor)>, TrainError> {
        let host = |(n, t): (String, Tensor)| -> Result<(String, HostTensor), TrainError> {
            let t = t.f_detach().map_err(|e| failed(e.into()))?;
            Ok((n, to_host(&t)?))
        };
        self.model.trainable().into_iter().map(host).collect()
    }

    fn check_replicas(&self, step: u64) -> Result<Option<String>, TrainError> {
        match &self.dist {
            Some(d) => Ok(Some(dp::check_replicas(d, step, &self.model.trainable()).map_err(failed)?)),
            None => Ok(None),
        }
    }

    fn optimizer_state(&self) -> Result<Vec<(String, HostTensor)>, TrainError> {
        let host = |(n, t): (String, Tensor)| -> Result<(String, HostTensor), TrainError> {
            let t = t.f_to_device(tch::Device::Cpu).and_then(|t| t.f_contiguous()).and_then(|t| t.f_detach());
            Ok((n, to_host(&t.map_err(|e| failed(e.into()))?)?))
        };
        self.opt.state_tensors().map_err(failed)?.into_iter().map(host).collect()
    }

    fn load_optimizer_state(&mut self, file: &SafeFile) -> Result<(), TrainError> {
        self.opt.load_state(file).map_err(failed)
    }

    fn executable(&self) -> Box<dyn Executable> {
        Box::new(self.model.executable())
    }

    fn defers(&self) -> bool {
        self.opts.accumulate == 1 && self.dist.is_none()
    }

    fn step_whole(
        &mut self,
        step: u64,
        inputs: &[Option<HostTensor>],
        labels: &HostTensor,
        lr_scale: f64,
    ) -> Result<(), TrainError> {
        if !self.defers() {
            let why = "internal error: whole steps need one batch per step and one process";
            return Err(TrainError::Failed(why.into()));
        }
        let ins = self.model.place(inputs).map_err(failed)?;
        let labels = self.model.labels(labels).map_err(failed)?;
        if self.opts.graph_capture {
            self.dev.set_rate(lr_scale).map_err(failed)?;
        }
        let mut parts = StepParts {
            model: &self.model,
            params: &self.params,
            opt: &mut self.opt,
            clip: self.opts.clip,
            autocast: self.opts.autocast,
            dev: &self.dev,
        };
        let (loss, norm) = if self.opts.graph_capture {
            self.whole.step(&mut parts, &ins, &labels)
        } else {
            train_step(&mut parts, Some(lr_scale), ins, &labels)
        }
        .map_err(failed)?;
        self.dev.record(step, &loss, &norm).map_err(failed)
    }

    fn drain(&mut self) -> Result<Vec<StepValues>, TrainError> {
        Ok(self.dev.drain().map_err(failed)?.0)
    }

    fn reduction(&self) -> Option<Reduction> {
        let (d, b) = (self.dist.as_ref()?, self.buckets.as_ref()?);
        Some(Reduction {
            collective: d.backend.name().to_string(),
            buckets: b.len(),
            bytes: b.bytes,
            spent: b.spent,
            calls: b.calls,
        })
    }
}
