//! Host tensors and batches: plain little-endian bytes with a dtype and a shape, so
//! the data side needs no tensor library. A backend turns a `HostTensor` into its own
//! tensor with one copy (`data` is exactly `numel × elem_size` bytes, row-major).

use crate::ir::DType;
use std::collections::BTreeMap;

/// Bytes per element.
pub fn elem_size(dtype: DType) -> usize {
    match dtype {
        DType::F64 | DType::I64 => 8,
        DType::F32 | DType::I32 => 4,
        DType::F16 | DType::BF16 => 2,
        DType::Bool => 1,
    }
}

/// The safetensors tag (`F32`, `I64`, …).
pub fn st_tag(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::F64 => "F64",
        DType::I64 => "I64",
        DType::I32 => "I32",
        DType::Bool => "BOOL",
    }
}

/// The dtype of a safetensors tag, if graft has one.
pub fn dtype_of_tag(tag: &str) -> Option<DType> {
    Some(match tag {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "I64" => DType::I64,
        "I32" => DType::I32,
        "BOOL" => DType::Bool,
        _ => return None,
    })
}

/// `f32[3, 8, 32, 32]`.
pub fn type_text(dtype: DType, shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{}[{}]", dtype.name(), dims.join(", "))
}

/// A tensor in host memory: `data` holds `numel × elem_size(dtype)` little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub dtype: DType,
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

macro_rules! decode {
    ($(#[$doc:meta] $name:ident, $from:ident, $t:ty, $dt:path;)*) => {
        $(
            #[$doc]
            pub fn $name(&self) -> Option<Vec<$t>> {
                if self.dtype != $dt {
                    return None;
                }
                let n = std::mem::size_of::<$t>();
                Some(self.data.chunks_exact(n).map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default())).collect())
            }

            #[doc = concat!("A `", stringify!($t), "` tensor from values (row-major) and a shape; `None` if they disagree.")]
            pub fn $from(shape: &[i64], values: &[$t]) -> Option<HostTensor> {
                if numel(shape)? != values.len() {
                    return None;
                }
                let mut data = Vec::with_capacity(values.len() * std::mem::size_of::<$t>());
                for v in values {
                    data.extend_from_slice(&v.to_le_bytes());
                }
                Some(HostTensor { dtype: $dt, shape: shape.to_vec(), data })
            }
        )*
    };
}

impl HostTensor {
    decode! {
        /// The values of an `f32` tensor; `None` for another dtype.
        as_f32, from_f32, f32, DType::F32;
        /// The values of an `f64` tensor; `None` for another dtype.
        as_f64, from_f64, f64, DType::F64;
        /// The values of an `i64` tensor; `None` for another dtype.
        as_i64, from_i64, i64, DType::I64;
        /// The values of an `i32` tensor; `None` for another dtype.
        as_i32, from_i32, i32, DType::I32;
    }

    /// The values of a `bool` tensor; `None` for another dtype.
    pub fn as_bool(&self) -> Option<Vec<bool>> {
        (self.dtype == DType::Bool).then(|| self.data.iter().map(|&b| b != 0).collect())
    }

    /// Zeros of a dtype and shape (`None` for a negative or overflowing shape).
    pub fn zeros(dtype: DType, shape: &[i64]) -> Option<HostTensor> {
        let bytes = numel(shape)?.checked_mul(elem_size(dtype))?;
        Some(HostTensor { dtype, shape: shape.to_vec(), data: vec![0; bytes] })
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape).unwrap_or(0)
    }

    /// `f32[8, 3, 8, 32, 32]`.
    pub fn type_text(&self) -> String {
        type_text(self.dtype, &self.shape)
    }
}

/// The product of a shape's dims; `None` if one is negative or it overflows.
pub fn numel(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
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

    #[test]
    fn values_round_trip_and_dtype_is_checked() {
        let t = HostTensor::from_f32(&[2, 2], &[1.0, -2.5, 3.0, 0.0]).unwrap();
        assert_eq!(t.data.len(), 16);
        assert_eq!(t.as_f32().unwrap(), vec![1.0, -2.5, 3.0, 0.0]);
        assert!(t.as_i64().is_none());
        assert!(HostTensor::from_i64(&[3], &[1, 2]).is_none());
        assert_eq!(HostTensor::from_i64(&[2], &[7, -1]).unwrap().as_i64().unwrap(), vec![7, -1]);
        assert_eq!(t.type_text(), "f32[2, 2]");
        assert!(HostTensor::zeros(DType::F32, &[-1]).is_none());
        for dt in [DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::I32, DType::Bool] {
            assert_eq!(dtype_of_tag(st_tag(dt)), Some(dt));
        }
    }
}
