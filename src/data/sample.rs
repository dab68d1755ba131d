//! `graft data sample`: the first samples of a dataset (file order) exactly as the
//! model receives them — decoded, transformed (training augmentation from the seed,
//! or the eval transform) and normalised, f32 in the input's declared shape — with
//! their labels, as one safetensors file. This is the contract anyone comparing
//! graft's input pipeline with another uses.

use super::batches::{assemble, Staged};
use super::error::DataError;
use super::reader::{Dataset, LoadedShard};
use super::tensor::{Batch, HostTensor};
use std::collections::BTreeMap;
use std::path::Path;

/// The first `n` samples (fewer if the dataset is smaller), transformed in the
/// dataset's view from `(seed, epoch 0)`: the batch the reader would build from
/// them, with their labels.
pub fn first_samples(ds: &Dataset, n: usize, seed: u64) -> Result<Batch, DataError> {
    let mut staged = Vec::new();
    let mut combination: Option<&Vec<String>> = None;
    let mut global = 0u64;
    for shard in &ds.shards {
        if staged.len() >= n {
            break;
        }
        if combination.is_some_and(|c| *c != shard.inputs) {
            return Err(DataError::Invalid(format!(
                "{}: its first {n} samples mix shards with and without an optional input: ask for fewer",
                ds.dir.display()
            )));
        }
        combination = Some(&shard.inputs);
        let l = LoadedShard::load(shard, &ds.meta)?;
        let take = (n - staged.len()).min(l.labels.len());
        staged.extend((0..take).map(|i| Staged::of(&l, i, global + i as u64)));
        global += shard.samples as u64;
    }
    assemble(ds, &staged, seed, 0)
}

/// Write a batch as safetensors: each input by name, plus `label` (i64).
pub fn write_batch(batch: &Batch, out: &Path) -> Result<(), DataError> {
    let mut tensors: BTreeMap<String, HostTensor> = batch.inputs.clone();
    tensors.insert("label".into(), batch.label_tensor());
    let list: Vec<(String, HostTensor)> = tensors.into_iter().collect();
    let metadata = BTreeMap::from([("format".to_string(), "graft-data-sample".to_string())]);
    crate::safetensors::write(out, &list, &metadata)?;
    Ok(())
}
