//! The model as LibTorch trains it: a plan with its parameters in a VarStore
//! (trainable ones require gradients, frozen ones do not), on one device, ready to
//! compute the logits of bound inputs.
//!
//! The loss is the cross-entropy of one plan output (logits `[B, classes]`) against
//! the batch's labels.

use crate::backend::plan::Plan;
use crate::backend::torch::convert::{place, to_tensor};
use crate::backend::torch::exec;
use crate::backend::torch::store::ParamStore;
use crate::ir::ParamInfo;
use crate::tensor::HostTensor;
use anyhow::{bail, Result};
use tch::{Device, Kind, Reduction, Tensor};

/// A plan with its parameters in memory.
pub struct Model {
    pub plan: Plan,
    /// Index into `plan.outputs` of the logits the loss reads.
    pub output: usize,
    pub store: ParamStore,
    pub device: Device,
}

impl Model {
    /// `values`: every parameter's value in plan order (weights, with a checkpoint
    /// over the trainable ones), stored on `device` in f32.
    pub fn new(plan: &Plan, output: usize, values: Vec<HostTensor>, device: Device) -> Result<Model> {
        if output >= plan.outputs().len() {
            bail!("internal error: output {output} of a plan with {} outputs", plan.outputs().len());
        }
        let store = ParamStore::new(plan, values, device, Kind::Float)?;
        let want = plan.params().iter().filter(|p| p.trainable).count();
        if store.trainable_count() != want {
            bail!("internal error: {} trainable variables for {want} trainable parameters", store.trainable_count());
        }
        Ok(Model { plan: plan.clone(), output, store, device })
    }

    /// Every parameter with its value, in plan order.
    pub fn params(&self) -> impl Iterator<Item = (&ParamInfo, &Tensor)> {
        self.plan.params().iter().zip(&self.store.tensors)
    }

    /// The trainable parameters: (full path, the variable itself).
    pub fn trainable(&self) -> Vec<(String, Tensor)> {
        self.params().filter(|(p, _)| p.trainable).map(|(p, t)| (p.path.clone(), t.shallow_clone())).collect()
    }

    pub fn frozen_paths(&self) -> Vec<String> {
        self.params().filter(|(p, _)| !p.trainable).map(|(p, _)| p.path.clone()).collect()
    }

    /// Bound host inputs (plan order, `None` absent) on the model's device.
    pub fn place(&self, inputs: &[Option<HostTensor>]) -> Result<Vec<Option<Tensor>>> {
        Ok(place(self.plan.inputs(), inputs, self.device, Kind::Float)?)
    }

    /// The model as an [`Executable`](crate::backend::Executable) over its live
    /// parameters (each optimizer step shows through): validation during training.
    pub fn executable(&self) -> crate::backend::torch::TorchExecutable {
        let params = self.store.tensors.iter().map(Tensor::shallow_clone).collect();
        crate::backend::torch::TorchExecutable::over(self.plan.clone(), params, self.device, Kind::Float)
    }

    /// The logits for placed inputs ([`Self::place`]) of a batch of `n`. Records
    /// autograd history unless called under `no_grad`.
    pub fn logits_of(&self, ins: Vec<Option<Tensor>>, n: usize) -> Result<Tensor> {
        let mut outs = exec::run(&self.plan, &self.store.tensors, ins)?;
        let logits = outs.swap_remove(self.output).1;
        let size = logits.size();
        if size.len() != 2 || size[0] != n as i64 {
            bail!("output `{}` is {size:?}, expected [{n}, classes]", self.plan.outputs()[self.output].name);
        }
        Ok(logits)
    }

    /// Labels (`i64[B]` on the host) on the model's device.
    pub fn labels(&self, labels: &HostTensor) -> Result<Tensor> {
        Ok(crate::backend::torch::convert::to_device_async(to_tensor(labels)?, self.device)?)
    }
}

/// Cross-entropy of logits `[B, C]` against labels `[B]` (mean or sum over the batch).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, sum: bool) -> Result<Tensor> {
    let r = if sum { Reduction::Sum } else { Reduction::Mean };
    Ok(logits.f_cross_entropy_loss::<Tensor>(labels, None, r, -100, 0.0)?)
}
