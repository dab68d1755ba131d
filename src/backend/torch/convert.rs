//! Host tensors ↔ LibTorch tensors (one copy each way), devices, and PyTorch zip
//! checkpoints read into host tensors.

use super::exec::torch_message;
use super::{kind_name, kind_of};
use crate::backend::plan::InputSlot;
use crate::backend::{BackendError, Device};
use crate::ir::{DType, PixelNorm};
use crate::tensor::HostTensor;
use tch::{Kind, TchError, Tensor};

/// The LibTorch device.
pub fn device(d: Device) -> tch::Device {
    match d {
        Device::Cpu => tch::Device::Cpu,
        Device::Cuda(i) => tch::Device::Cuda(i),
    }
}

/// The IR dtype of a LibTorch element type, if graft has one.
pub fn dtype_of(k: Kind) -> Option<DType> {
    Some(match k {
        Kind::Float => DType::F32,
        Kind::Half => DType::F16,
        Kind::BFloat16 => DType::BF16,
        Kind::Double => DType::F64,
        Kind::Int64 => DType::I64,
        Kind::Int => DType::I32,
        Kind::Bool => DType::Bool,
        Kind::Uint8 => DType::U8,
        _ => return None,
    })
}

/// A host tensor as a CPU tensor (one copy).
pub fn to_tensor(h: &HostTensor) -> Result<Tensor, TchError> {
    Tensor::f_from_data_size(&h.data, &h.shape, kind_of(h.dtype))
}

/// A CPU tensor on `device`: on a GPU through pinned host memory with a non-blocking
/// copy, so the host goes on issuing work instead of waiting for the device to finish
/// what it was given before (a copy from pageable memory waits for it); the pinned
/// block is recycled only once the copy has run (LibTorch's caching host allocator).
pub fn to_device_async(t: Tensor, device: tch::Device) -> Result<Tensor, TchError> {
    match device {
        tch::Device::Cuda(_) => {
            let pinned = pinned(&t).map_err(TchError::Torch)?;
            pinned.f_to_device_(device, t.f_kind()?, true, false)
        }
        _ => t.f_to_device(device),
    }
}

/// A host tensor on `device`. On a GPU its bytes are copied once, into pinned memory,
/// and sent with a non-blocking copy (see [`to_device_async`]); elsewhere, one copy
/// into a CPU tensor.
pub fn host_to_device(h: &HostTensor, device: tch::Device) -> Result<Tensor, TchError> {
    let kind = kind_of(h.dtype);
    let elem = kind.elt_size_in_bytes();
    let numel: i64 = h.shape.iter().product();
    let whole = numel >= 0 && h.data.len() == numel as usize * elem && (h.data.as_ptr() as usize).is_multiple_of(elem);
    if let (tch::Device::Cuda(_), true) = (device, whole) {
        // SAFETY: `h.data` holds exactly `numel` aligned elements of `kind` and outlives
        // `view`, which only `pinned` reads (a synchronous copy into pinned memory)
        // before it is dropped at the end of this block.
        let pinned = {
            let view = unsafe { Tensor::f_from_blob(h.data.as_ptr(), &h.shape, &[], kind, tch::Device::Cpu)? };
            pinned(&view).map_err(TchError::Torch)?
        };
        return pinned.f_to_device_(device, kind, true, false);
    }
    to_device_async(to_tensor(h)?, device)
}

/// Host inputs (plan order, `None` absent) on `device`, float ones in `float`.
pub fn place(
    slots: &[InputSlot],
    inputs: &[Option<HostTensor>],
    device: tch::Device,
    float: Kind,
) -> Result<Vec<Option<Tensor>>, BackendError> {
    inputs
        .iter()
        .zip(slots)
        .map(|(h, slot)| {
            h.as_ref()
                .map(|h| {
                    let t = host_to_device(h, device)?;
                    let t = match (&slot.norm, h.dtype) {
                        (Some(n), DType::U8) => normalise(&t, n)?,
                        _ => t,
                    };
                    let kind = if super::is_float_kind(t.kind()) { float } else { t.kind() };
                    t.f_to_kind(kind)
                })
                .transpose()
        })
        .collect::<Result<_, _>>()
        .map_err(|e| BackendError::runtime("placing inputs", torch_message(&e)))
}

/// Raw `u8` pixels (on the device) normalised there, as f32: each value looked up in
/// the channel's table ([`PixelNorm::lut`], the table the data pipeline reads), so the
/// bits are those of host normalisation on any device. The table goes up without
/// blocking the host ([`to_device_async`]): this runs on every training step.
pub fn normalise(t: &Tensor, n: &PixelNorm) -> Result<Tensor, TchError> {
    let device = t.device();
    let table: Vec<f32> = n.lut().concat();
    let table = to_device_async(Tensor::f_from_slice(&table)?, device)?;
    let mut idx = t.f_to_kind(Kind::Int64)?;
    let c = n.channels() as i64;
    if c > 1 {
        let mut shape = vec![1i64; t.dim()];
        shape[n.axis] = c;
        let offsets = Tensor::f_arange_start_step(0, 256 * c, 256, (Kind::Int64, device))?.f_view(shape.as_slice())?;
        idx = idx.f_add(&offsets)?;
    }
    table.f_take(&idx)
}

/// A tensor (any device, any layout) as a host tensor (one copy to the host).
pub fn to_host(t: &Tensor) -> Result<HostTensor, BackendError> {
    let fail = |e: TchError| BackendError::runtime("copying a tensor to the host", torch_message(&e));
    let kind = t.f_kind().map_err(fail)?;
    let dtype = dtype_of(kind)
        .ok_or_else(|| BackendError::Unsupported(format!("a {} tensor has no host dtype in graft", kind_name(kind))))?;
    let t = t.f_to_device(tch::Device::Cpu).and_then(|t| t.f_contiguous()).map_err(fail)?;
    let numel = t.numel();
    let mut data = vec![0u8; numel * kind.elt_size_in_bytes()];
    if numel > 0 {
        t.f_copy_data_u8(&mut data, numel).map_err(fail)?;
    }
    Ok(HostTensor { dtype, shape: t.size(), data })
}

extern "C" {
    // csrc/optim.cpp
    fn graft_pin_memory(
        t: *mut std::ffi::c_void,
        out: *mut *mut std::ffi::c_void,
        err: *mut std::ffi::c_char,
        len: usize,
    ) -> std::ffi::c_int;
}

/// A copy of the CPU tensor `t` in pinned host memory (for a non-blocking copy to a
/// GPU).
pub fn pinned(t: &Tensor) -> Result<Tensor, String> {
    use std::ffi::c_void;
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: `t` is live for the call; on success the shim hands over a new at::Tensor*.
    super::shim_call(|e, n| unsafe { graft_pin_memory(t.as_ptr() as *mut c_void, &mut out, e, n) })
        .map_err(|msg| format!("pinning host memory: {msg}"))?;
    if out.is_null() {
        return Err("pinning host memory: the shim returned no tensor".to_string());
    }
    // SAFETY: `out` is a fresh at::Tensor* allocated with `new`, as tch's own are.
    Ok(unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dtype() {
        for dt in [DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::I32, DType::Bool, DType::U8] {
            let h = HostTensor::from_f64_as(dt, &[2, 2], &[1.0, 0.0, 1.0, 1.0]).unwrap();
            let t = to_tensor(&h).unwrap();
            assert_eq!(t.kind(), kind_of(dt));
            assert_eq!(to_host(&t).unwrap(), h);
            // A non-contiguous view comes back in row-major order.
            let back = to_host(&t.tr()).unwrap();
            assert_eq!(back.shape, vec![2, 2]);
        }
        // LibTorch rounds f32 → bf16 as the host conversion does.
        let v = [1.0f32 + 1.0 / 256.0, 1.0 + 3.0 / 512.0, 2.71, -1e-3];
        let h = HostTensor::from_f32(&[4], &v).unwrap();
        let t = to_tensor(&h).unwrap().to_kind(Kind::BFloat16);
        assert_eq!(to_host(&t).unwrap(), h.clone().to_dtype(DType::BF16));
        let t = to_tensor(&h).unwrap().to_kind(Kind::Half);
        assert_eq!(to_host(&t).unwrap(), h.to_dtype(DType::F16));
    }
}
