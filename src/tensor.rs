//! Host tensors: plain little-endian bytes with a dtype and a shape, the one tensor
//! type every backend-neutral part of graft speaks (datasets, weights files,
//! parameter materialisation, a backend's inputs and outputs). A backend turns a
//! `HostTensor` into its own tensor with one copy (`data` is exactly
//! `numel × elem_size` bytes, row-major).
//!
//! Conversions between dtypes round as LibTorch does: to `f32` to nearest, to `bf16`
//! and `f16` through `f32` to nearest-even, so values materialised here are the bits a
//! LibTorch conversion would give.

use crate::ir::DType;

/// Bytes per element.
pub fn elem_size(dtype: DType) -> usize {
    match dtype {
        DType::F64 | DType::I64 => 8,
        DType::F32 | DType::I32 => 4,
        DType::F16 | DType::BF16 => 2,
        DType::Bool | DType::U8 => 1,
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
        DType::U8 => "U8",
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
        "U8" => DType::U8,
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

impl HostTensor {
    /// Every element as `f64` (exact for every dtype but `i64` beyond 2^53).
    pub fn to_f64(&self) -> Vec<f64> {
        let c = |n: usize| self.data.chunks_exact(n);
        match self.dtype {
            DType::F64 => c(8).map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default())).collect(),
            DType::F32 => c(4).map(|b| f32::from_le_bytes(b.try_into().unwrap_or_default()) as f64).collect(),
            DType::F16 => c(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f64()).collect(),
            DType::BF16 => c(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f64()).collect(),
            DType::I64 => c(8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()) as f64).collect(),
            DType::I32 => c(4).map(|b| i32::from_le_bytes(b.try_into().unwrap_or_default()) as f64).collect(),
            DType::Bool => self.data.iter().map(|&b| (b != 0) as u8 as f64).collect(),
            DType::U8 => self.data.iter().map(|&b| b as f64).collect(),
        }
    }

    /// A tensor of `dtype` from `f64` values, each rounded as LibTorch rounds a
    /// `double` tensor converted to `dtype`; `None` if shape and values disagree.
    pub fn from_f64_as(dtype: DType, shape: &[i64], values: &[f64]) -> Option<HostTensor> {
        if numel(shape)? != values.len() {
            return None;
        }
        let mut data = Vec::with_capacity(values.len() * elem_size(dtype));
        for &v in values {
            match dtype {
                DType::F64 => data.extend_from_slice(&v.to_le_bytes()),
                DType::F32 => data.extend_from_slice(&(v as f32).to_le_bytes()),
                DType::F16 => data.extend_from_slice(&half::f16::from_f32(v as f32).to_le_bytes()),
                DType::BF16 => data.extend_from_slice(&half::bf16::from_f32(v as f32).to_le_bytes()),
                DType::I64 => data.extend_from_slice(&(v as i64).to_le_bytes()),
                DType::I32 => data.extend_from_slice(&(v as i32).to_le_bytes()),
                DType::Bool => data.push((v != 0.0) as u8),
                DType::U8 => data.push(v as u8),
            }
        }
        Some(HostTensor { dtype, shape: shape.to_vec(), data })
    }

    /// The same values in `dtype` (a copy; the tensor itself when the dtype is already
    /// `dtype`).
    pub fn to_dtype(self, dtype: DType) -> HostTensor {
        if self.dtype == dtype {
            return self;
        }
        let values = self.to_f64();
        HostTensor::from_f64_as(dtype, &self.shape, &values).expect("same shape")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for dt in [DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::I32, DType::Bool, DType::U8] {
            assert_eq!(dtype_of_tag(st_tag(dt)), Some(dt));
        }
    }

    #[test]
    fn conversions_round_like_libtorch() {
        // 1 + 2^-8 is halfway between two bf16 values: ties go to even (1.0); 1 + 3·2^-9
        // rounds up. f16 keeps 10 mantissa bits.
        let t = HostTensor::from_f64(&[4], &[1.0 + 1.0 / 256.0, 1.0 + 3.0 / 512.0, -2.5, 65520.0]).unwrap();
        let b = t.clone().to_dtype(DType::BF16);
        assert_eq!(b.data.len(), 8);
        assert_eq!(b.to_f64(), vec![1.0, 1.0078125, -2.5, 65536.0]);
        let h = t.clone().to_dtype(DType::F16);
        assert_eq!(h.to_f64()[..3], [1.00390625, 1.005859375, -2.5]);
        assert!(h.to_f64()[3].is_infinite(), "past f16's range");
        let f = t.to_dtype(DType::F32);
        assert_eq!(f.as_f32().unwrap()[2], -2.5);
        let i = HostTensor::from_f64_as(DType::I64, &[2], &[3.0, -1.0]).unwrap();
        assert_eq!(i.as_i64().unwrap(), vec![3, -1]);
        assert!(HostTensor::from_f64_as(DType::F32, &[3], &[1.0]).is_none());
    }
}
