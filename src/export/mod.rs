//! Emitters: a compiled model written out for other tools.
//!
//! Each emitter reads only a [`Compiled`](crate::pipeline::Compiled) model — its
//! verified graph and the names around it (sites, sources, the modules as parsed and
//! the arguments each instance was built with) — and returns text or bytes;
//! writing files is the caller's (`commands::export`).
//!
//! - [`pytorch`]: a self-contained `model.py` (an `nn.Module` tree whose
//!   `state_dict()` keys are graft's parameter paths; one class per spec module, its
//!   parameters as constructor parameters), from the path tree ([`tree`]), the spec's
//!   expressions ([`pyargs`]) and one Python expression per op ([`pyops`]).
//! - [`onnx`]: an ONNX `ModelProto` of the inference graph ([`onnx_proto`] declares
//!   the messages for `prost`).

pub mod onnx;
mod onnx_ops;
pub mod onnx_proto;
mod pyargs;
mod pyforward;
mod pyops;
mod pyscope;
pub mod pytorch;
mod tree;

/// Why a model cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The model uses something the target format cannot say.
    #[error("{0}")]
    Unsupported(String),
    /// A parameter or input value (weights for ONNX initializers) is malformed.
    #[error("{0}")]
    Value(String),
}
