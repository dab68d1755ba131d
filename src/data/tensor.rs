//! Batches: every input of some samples as host tensors, and their labels. The host
//! tensor itself lives in [`crate::tensor`] (re-exported here).

use crate::ir::DType;
pub use crate::tensor::{dtype_of_tag, elem_size, numel, st_tag, type_text, HostTensor};
use std::collections::BTreeMap;

/// Write `values` as little-endian bytes over `out` (exactly `4 × values.len()` long).
pub fn write_le_bytes(out: &mut [u8], values: &[f32]) {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: as in `extend_le_bytes`.
        let bytes = unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) };
        out.copy_from_slice(bytes);
    }
    #[cfg(not(target_endian = "little"))]
    for (o, v) in out.chunks_exact_mut(4).zip(values) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// Append `values` as little-endian f32 bytes (a tensor's layout): one copy of the
/// whole slice on a little-endian machine.
pub fn extend_le_bytes(out: &mut Vec<u8>, values: &[f32]) {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: f32 has no padding and u8 no alignment requirement; on a
        // little-endian machine its memory is its little-endian bytes.
        let bytes = unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) };
        out.extend_from_slice(bytes);
    }
    #[cfg(not(target_endian = "little"))]
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

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

    /// Rank `rank`'s share of a batch split over `world` ranks: samples `rank`,
    /// `rank + world`, … (as PyTorch's DistributedSampler strides its permutation).
    /// Every rank of a batch of `world × b` samples gets exactly `b`.
    pub fn shard(&self, rank: usize, world: usize) -> Batch {
        let picks: Vec<usize> = (rank..self.len()).step_by(world.max(1)).collect();
        let inputs = self
            .inputs
            .iter()
            .map(|(name, t)| {
                let per = t.data.len() / self.len().max(1);
                let mut data = Vec::with_capacity(per * picks.len());
                for &i in &picks {
                    data.extend_from_slice(&t.data[i * per..(i + 1) * per]);
                }
                let mut shape = t.shape.clone();
                shape[0] = picks.len() as i64;
                (name.clone(), HostTensor { dtype: t.dtype, shape, data })
            })
            .collect();
        Batch { inputs, labels: picks.iter().map(|&i| self.labels[i]).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_stride_samples_by_rank() {
        let x = HostTensor { dtype: DType::I32, shape: vec![4, 2], data: (0u8..32).collect() };
        let b = Batch { inputs: BTreeMap::from([("x".to_string(), x)]), labels: vec![10, 11, 12, 13] };
        let s1 = b.shard(1, 2);
        assert_eq!(s1.labels, vec![11, 13]);
        assert_eq!(s1.inputs["x"].shape, vec![2, 2]);
        let want: Vec<u8> = (8u8..16).chain(24..32).collect();
        assert_eq!(s1.inputs["x"].data, want);
        assert_eq!(b.shard(0, 1), b);
    }
}
