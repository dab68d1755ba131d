//! Batches: every input of some samples as host tensors, and their labels. The host
//! tensor itself lives in [`crate::tensor`] (re-exported here).

use crate::ir::DType;
pub use crate::tensor::{dtype_of_tag, elem_size, numel, st_tag, type_text, HostTensor};
use std::collections::BTreeMap;

/// One batch: every input present in it (first dim = batch size) and the labels.
/// An optional modality is either in `inputs` for every sample or absent.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub inputs: BTreeMap<String, HostTensor>,
    pub labels: Vec<i64>,
}

impl Batch {
    /// The number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Whether the batch carries input `name`.
    pub fn has(&self, name: &str) -> bool {
        self.inputs.contains_key(name)
    }

    /// The labels as an `i64[n]` tensor.
    pub fn label_tensor(&self) -> HostTensor {
        let mut data = Vec::with_capacity(self.labels.len() * 8);
        for l in &self.labels {
            data.extend_from_slice(&l.to_le_bytes());
        }
        HostTensor { dtype: DType::I64, shape: vec![self.labels.len() as i64], data }
    }
}
