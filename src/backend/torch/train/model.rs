//! The model as training and evaluation see it: a spec compiled in train mode (the
//! graph as trained: adapters, pathways and LoRA unfolded, trainable flags from the
//! `train` rules), lowered once, its weights loaded (and, for `--run` / `--resume`, a
//! trained checkpoint laid over them), ready to compute logits for a [`Batch`].
//!
//! Compiling and loading are two steps so a dataset is checked against the model's
//! inputs before any weight is read. The loss is the cross-entropy of the first
//! declared output (logits `[B, classes]`) against the batch's labels.

use super::checkpoint::{trainable_shapes, Identity, TrainableFile};
use crate::api::compile_spec;
use crate::backend::plan::Plan;
use crate::backend::torch::convert::{place, to_tensor};
use crate::backend::torch::exec;
use crate::backend::torch::store::ParamStore;
use crate::data::{model_inputs, Batch, Dataset, ModelInput};
use crate::ir::{Dim, ParamInfo};
use crate::params::{materialise, Bindings, Declared, Leaves};
use crate::pipeline::{Compiled, Mode};
use crate::tensor::HostTensor;
use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Reduction, Tensor};

/// A compiled spec, before weights.
pub struct Spec {
    pub path: PathBuf,
    pub compiled: Compiled,
    pub plan: Plan,
    pub identity: Identity,
    pub inputs: Vec<ModelInput>,
    /// Index into `plan.outputs` of the first declared output, and its name.
    pub output: usize,
    pub output_name: String,
    /// The output's last dimension, when fixed.
    pub classes: Option<i64>,
    /// Load weights holding NaN or infinity (`--allow-nonfinite`).
    pub allow_nonfinite: bool,
}

impl Spec {
    /// Compile `path` in train mode (an error carries the spec's diagnostics).
    pub fn compile(path: &Path) -> Result<Spec> {
        let c = compile_spec(path, Mode::Train)?;
        let plan = Plan::new(&c.graph);
        let inspect = crate::report::inspect(&c);
        let first = inspect.outputs.first().ok_or_else(|| anyhow!("model `{}` has no output", c.model))?;
        if first.shape.len() != 2 {
            let dims: Vec<String> = first.shape.iter().map(|d| d.to_string()).collect();
            bail!(
                "model `{}`: training needs the first output to be logits [B, classes]; `{}` is [{}]",
                c.model,
                first.name,
                dims.join(", ")
            );
        }
        let classes = match &first.shape[1] {
            Dim::Fixed(n) => Some(*n),
            _ => None,
        };
        let output = plan
            .outputs()
            .iter()
            .position(|o| o.name == first.name)
            .ok_or_else(|| anyhow!("internal error: output `{}` is not in the plan", first.name))?;
        Ok(Spec {
            path: path.to_path_buf(),
            identity: Identity::of(&c),
            inputs: model_inputs(&inspect),
            output_name: first.name.clone(),
            output,
            classes,
            plan,
            compiled: c,
            allow_nonfinite: false,
        })
    }

    /// Check a dataset against the model's inputs and classes; returns notes to print.
    pub fn check_dataset(&self, ds: &Dataset, role: &str) -> Result<Vec<String>> {
        let notes = ds.check_against(&self.inputs).map_err(|e| {
            anyhow!(
                "{role} {} does not fit model `{}` ({}):\n  {e}",
                ds.dir.display(),
                self.compiled.model,
                self.path.display()
            )
        })?;
        if let Some(c) = self.classes {
            if c != ds.meta.classes as i64 {
                bail!(
                    "{role} {} has {} classes (dataset.json), but model `{}`'s output `{}` has {c}: make the head's width {}",
                    ds.dir.display(),
                    ds.meta.classes,
                    self.compiled.model,
                    self.output_name,
                    ds.meta.classes
                );
            }
        }
        Ok(notes)
    }

    pub fn trainable_shapes(&self) -> Vec<(String, Vec<i64>)> {
        trainable_shapes(&self.plan)
    }

    /// Optional model inputs (the ones a batch may lack).
    pub fn optional_inputs(&self) -> Vec<&str> {
        self.inputs.iter().filter(|i| i.3).map(|i| i.0.as_str()).collect()
    }

    /// Every parameter's value (plan order): the weights, with a checkpoint over the
    /// trainable ones (checked first; `strict` for an exact resume). Returns the values
    /// and notes to print.
    pub fn materialise(
        &self,
        weights: &[String],
        allow_missing: &[String],
        seed: u64,
        run: Option<(&TrainableFile, bool)>,
    ) -> Result<(Vec<HostTensor>, Vec<String>)> {
        let mut notes = Vec::new();
        if let Some((f, strict)) = run {
            notes.extend(f.check(&self.identity, &self.trainable_shapes(), strict)?);
        }
        let mut b = Bindings::of_spec(&self.path, &self.compiled, weights)?;
        b.allow_nonfinite = self.allow_nonfinite;
        let declared = Declared::from_sites(&self.compiled.sites);
        let mut leaves = Leaves::load(self.plan.params().iter(), &b, &declared, allow_missing, seed)?;
        notes.append(&mut leaves.notes);
        if let Some((f, _)) = run {
            f.apply(&mut leaves)?;
        }
        Ok((materialise(self.plan.params(), &leaves)?, notes))
    }

    /// Load the weights (and a checkpoint over the trainable ones) onto `device`.
    /// Returns the model and notes to print.
    pub fn load(
        self,
        weights: &[String],
        allow_missing: &[String],
        seed: u64,
        device: Device,
        run: Option<(&TrainableFile, bool)>,
    ) -> Result<(Model, Vec<String>)> {
        let (values, notes) = self.materialise(weights, allow_missing, seed, run)?;
        let store = ParamStore::new(&self.plan, values, device, Kind::Float)?;
        let want = self.plan.params().iter().filter(|p| p.trainable).count();
        if store.trainable_count() != want {
            bail!("internal error: {} trainable variables for {want} trainable parameters", store.trainable_count());
        }
        Ok((Model { spec: self, store, device }, notes))
    }
}

/// A compiled spec with its parameters in memory.
pub struct Model {
    pub spec: Spec,
    pub store: ParamStore,
    pub device: Device,
}

impl Model {
    /// Every parameter with its value, in plan order.
    pub fn params(&self) -> impl Iterator<Item = (&ParamInfo, &Tensor)> {
        self.spec.plan.params().iter().zip(&self.store.tensors)
    }

    /// The trainable parameters: (full path, the variable itself).
    pub fn trainable(&self) -> Vec<(String, Tensor)> {
        self.params().filter(|(p, _)| p.trainable).map(|(p, t)| (p.path.clone(), t.shallow_clone())).collect()
    }

    pub fn frozen_paths(&self) -> Vec<String> {
        self.params().filter(|(p, _)| !p.trainable).map(|(p, _)| p.path.clone()).collect()
    }

    /// Optional model inputs that `batch` lacks or that `without` removes.
    pub fn missing(&self, batch: &Batch, without: &[String]) -> Vec<String> {
        self.spec
            .optional_inputs()
            .into_iter()
            .filter(|n| !batch.has(n) || without.iter().any(|w| w == n))
            .map(str::to_string)
            .collect()
    }

    /// The first output's logits for a batch; inputs named in `without` are left out
    /// (as if the batch lacked them). Records autograd history unless called under
    /// `no_grad`.
    pub fn logits(&self, batch: &Batch, without: &[String]) -> Result<Tensor> {
        self.logits_of(self.bind(batch, without)?, batch.len())
    }

    /// A batch's inputs in plan order on the model's device (`without`: as in [`Self::logits`]).
    pub fn bind(&self, batch: &Batch, without: &[String]) -> Result<Vec<Option<Tensor>>> {
        let values = crate::evaluate::batch_inputs(&self.spec.plan, batch, without)?;
        Ok(place(&values, self.device, Kind::Float)?)
    }

    /// The model as an [`Executable`] over its live parameters (each optimizer step
    /// shows through): validation during training.
    pub fn executable(&self) -> crate::backend::torch::TorchExecutable {
        let params = self.store.tensors.iter().map(Tensor::shallow_clone).collect();
        crate::backend::torch::TorchExecutable::over(self.spec.plan.clone(), params, self.device, Kind::Float)
    }

    /// The first output's logits for bound inputs ([`Self::bind`]) of a batch of `n`.
    pub fn logits_of(&self, ins: Vec<Option<Tensor>>, n: usize) -> Result<Tensor> {
        let mut outs = exec::run(&self.spec.plan, &self.store.tensors, ins)?;
        let logits = outs.swap_remove(self.spec.output).1;
        let size = logits.size();
        if size.len() != 2 || size[0] != n as i64 {
            bail!("output `{}` is {size:?}, expected [{n}, classes]", self.spec.output_name);
        }
        Ok(logits)
    }

    /// The batch's labels on the model's device.
    pub fn labels(&self, batch: &Batch) -> Result<Tensor> {
        Ok(crate::backend::torch::convert::to_device_async(to_tensor(&batch.label_tensor())?, self.device)?)
    }
}

/// Cross-entropy of logits `[B, C]` against labels `[B]` (mean or sum over the batch).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, sum: bool) -> Result<Tensor> {
    let r = if sum { Reduction::Sum } else { Reduction::Mean };
    Ok(logits.f_cross_entropy_loss::<Tensor>(labels, None, r, -100, 0.0)?)
}
