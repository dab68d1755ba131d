//! Parameters in a `tch` VarStore: values for a plan's parameter table.
//!
//! Trainable parameters are VarStore variables that require gradients (what an
//! optimizer built on the store updates); frozen ones are stored without gradients.
//! Values arrive as host tensors, materialised by [`crate::params`].

use super::convert::to_tensor;
use super::is_float_kind;
use crate::backend::plan::Plan;
use crate::tensor::HostTensor;
use anyhow::Result;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Values for one plan's parameters.
pub struct ParamStore {
    pub vs: VarStore,
    /// In plan order; shallow clones of the VarStore's variables.
    pub tensors: Vec<Tensor>,
}

impl ParamStore {
    /// Store `values` (in plan order) on `device`, float parameters in `float_kind`.
    pub fn new(plan: &Plan, values: Vec<HostTensor>, device: Device, float_kind: Kind) -> Result<ParamStore> {
        let tensors = values.iter().map(to_tensor).collect::<Result<Vec<_>, _>>()?;
        ParamStore::from_tensors(plan, tensors, device, float_kind)
    }

    /// Store given tensors (in plan order, any device and dtype).
    pub fn from_tensors(plan: &Plan, values: Vec<Tensor>, device: Device, float_kind: Kind) -> Result<ParamStore> {
        let vs = VarStore::new(device);
        let mut tensors = Vec::with_capacity(plan.params().len());
        for (p, value) in plan.params().iter().zip(values) {
            let kind = if is_float_kind(value.kind()) { float_kind } else { value.kind() };
            let t = value.f_to_device(device)?.f_to_kind(kind)?.f_detach()?;
            let mut at = vs.root();
            let segs: Vec<&str> = p.path.split('.').collect();
            for s in &segs[..segs.len() - 1] {
                at = at.sub(*s);
            }
            tensors.push(at.add(segs[segs.len() - 1], t, p.trainable));
        }
        Ok(ParamStore { vs, tensors })
    }

    pub fn trainable_count(&self) -> usize {
        self.vs.trainable_variables().len()
    }
}
