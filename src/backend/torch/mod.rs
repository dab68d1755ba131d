//! The LibTorch backend (through `tch`), behind the [`crate::backend::Backend`] seam.
//!
//! ```text
//! Plan + host parameters ─executable─▶ TorchExecutable (tensors on CPU/CUDA)
//! host inputs ─convert─▶ tensors ─exec─▶ outputs ─convert─▶ host outputs
//! ```
//!
//! - [`executable`]: [`TorchBackend`] and its executable (CUDA-graph replay optional).
//! - [`exec`]: runs a plan's instruction list with LibTorch kernels.
//! - [`convert`]: host tensors ↔ tensors, devices, PyTorch zip checkpoints.
//! - [`store`]: parameters in a VarStore, trainable and frozen apart (training).
//! - [`train`]: the training seam ([`crate::backend::train`]) on LibTorch: autograd
//!   steps, AdamW, CUDA-graph step capture, data-parallel hooks.
//! - [`bench`]: the timing of `graft bench --train`, training steps side by side.
//! - [`cuda_graph`]: CUDA-graph capture/replay and bf16 autocast (`cuda-graphs` feature).
//! - [`dist`]: data-parallel training on c10d (`distributed` feature).

pub mod bench;
pub mod convert;
pub mod cuda_graph;
pub mod dist;
pub mod exec;
pub mod executable;
pub mod store;
pub mod train;

#[cfg(test)]
mod op_tests;

pub use executable::{TorchBackend, TorchExecutable};

use crate::ir::DType;
use std::ffi::{c_char, c_int, CStr};
use tch::Kind;

/// Call a function of a C++ shim (`csrc/ffi_guard.hpp`'s convention) with a message
/// buffer it owns for the call (pointer and capacity in bytes, NUL included): `Err`
/// with the shim's message when it returns non-zero. The message is read only up to
/// the first NUL inside the buffer, so a shim that failed to terminate it cannot make
/// this read past the end.
pub(crate) fn shim_call(f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), String> {
    let mut buf = [0u8; 1024];
    if f(buf.as_mut_ptr().cast::<c_char>(), buf.len()) == 0 {
        return Ok(());
    }
    let msg = CStr::from_bytes_until_nul(&buf)
        .map_or_else(|_| String::from_utf8_lossy(&buf).into_owned(), |m| m.to_string_lossy().into_owned());
    Err(if msg.is_empty() { "unknown error".to_string() } else { msg })
}

/// The element type of an IR dtype.
pub fn kind_of(d: DType) -> Kind {
    match d {
        DType::F32 => Kind::Float,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::F64 => Kind::Double,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        DType::Bool => Kind::Bool,
        DType::U8 => Kind::Uint8,
    }
}

/// A short name for a tensor element type, in the IR's spelling where there is one.
pub fn kind_name(k: Kind) -> String {
    match k {
        Kind::Float => "f32".into(),
        Kind::Half => "f16".into(),
        Kind::BFloat16 => "bf16".into(),
        Kind::Double => "f64".into(),
        Kind::Int64 => "i64".into(),
        Kind::Int => "i32".into(),
        Kind::Int16 => "i16".into(),
        Kind::Int8 => "i8".into(),
        Kind::Uint8 => "u8".into(),
        Kind::Bool => "bool".into(),
        other => format!("{other:?}"),
    }
}

pub fn is_float_kind(k: Kind) -> bool {
    matches!(k, Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double)
}

/// `f32[2, 3]`.
pub fn type_text(kind: &str, shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{kind}[{}]", dims.join(", "))
}
