//! What a backend reports: user-facing problems (inputs that do not fit the spec, a
//! device or dtype it lacks, a kernel that failed on given data) and compiler bugs.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BackendError {
    /// Given inputs do not fit the model; one line per problem.
    #[error("inputs do not match the spec:\n  {}", .0.join("\n  "))]
    Inputs(Vec<String>),
    /// An input that must be synthesised (an absent `= zeros` input) has a size that
    /// no given input binds.
    #[error("input `{input}` ({ty}) is absent and no given input binds `{symbol}`, so its zeros have no size")]
    Unbound { input: String, ty: String, symbol: String },
    /// The backend cannot honour a device, dtype or option.
    #[error("{0}")]
    Unsupported(String),
    /// A kernel failed on the data it was given (an embedding id out of range…):
    /// the instance (`path`) and op it ran for, and what went wrong.
    #[error("running `{path}` ({op}): {error}")]
    Kernel { path: String, op: &'static str, error: KernelError },
    /// An output depends on an absent optional input (the compiler rules this out).
    #[error("output `{0}` is absent: it depends on a missing optional input")]
    AbsentOutput(String),
    /// The backend's runtime failed outside a kernel (allocation, device transfer…).
    #[error("{what}: {message}")]
    Runtime { what: String, message: String },
    /// A broken invariant: a bug in graft.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a kernel failed on its operands.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum KernelError {
    /// An embedding id outside its table.
    #[error("index {id} is out of range (ids must lie in 0..{rows} for this table)")]
    IdOutOfRange { id: i64, rows: usize },
    /// The op's shape rule ([`crate::ir::Op::infer`]) refuses the operands' run-time
    /// shapes.
    #[error("{0}")]
    Shape(String),
    /// Integer ids where the native backend needs floats.
    #[error("expects a float tensor, got integer ids (the native backend computes in f32)")]
    IntegerOperand,
    /// A float tensor where integer ids are needed.
    #[error("expects an integer tensor of ids, got floats")]
    FloatOperand,
    /// The library's own message (LibTorch's first line, with a hint).
    #[error("{0}")]
    Library(String),
}

impl BackendError {
    pub fn runtime(what: impl Into<String>, message: impl std::fmt::Display) -> BackendError {
        BackendError::Runtime { what: what.into(), message: message.to_string() }
    }
}
