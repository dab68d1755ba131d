//! The model as training and evaluation see it: a spec compiled in train mode (the
//! graph as trained: adapters, pathways and LoRA unfolded, trainable flags from the
//! `train` rules), planned once, with its parameter values (and, for `--run` /
//! `--resume`, a trained checkpoint laid over them) for a backend to load.
//!
//! Compiling and loading are two steps so a dataset is checked against the model's
//! inputs before any weight is read. The loss is the cross-entropy of the first
//! declared output (logits `[B, classes]`) against the batch's labels.

use super::checkpoint::{trainable_shapes, Identity, TrainableFile};
use crate::api::compile_spec;
use crate::backend::plan::Plan;
use crate::data::{model_inputs, Batch, Dataset, ModelInput};
use crate::ir::Dim;
use crate::params::{materialise, Bindings, Declared, Leaves};
use crate::pipeline::{Compiled, Mode};
use crate::tensor::HostTensor;
use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};

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
        let (problems, norm_notes) = crate::commands::data::fits::check_normalization(&self.compiled, ds);
        if let Some(p) = problems.first() {
            bail!(
                "{role} {} does not fit model `{}` ({}):\n  {p}",
                ds.dir.display(),
                self.compiled.model,
                self.path.display()
            );
        }
        let notes = notes.into_iter().chain(norm_notes).collect();
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

    /// Optional model inputs that `batch` lacks or that `without` removes.
    pub fn missing(&self, batch: &Batch, without: &[String]) -> Vec<String> {
        self.optional_inputs()
            .into_iter()
            .filter(|n| !batch.has(n) || without.iter().any(|w| w == n))
            .map(str::to_string)
            .collect()
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
}
