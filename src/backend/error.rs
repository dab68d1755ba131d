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
    /// A kernel failed on the data it was given (an embedding id out of range…).
    #[error("running `{path}` ({op}): {message}")]
    Kernel { path: String, op: &'static str, message: String },
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

impl BackendError {
    pub fn runtime(what: impl Into<String>, message: impl std::fmt::Display) -> BackendError {
        BackendError::Runtime { what: what.into(), message: message.to_string() }
    }
}
