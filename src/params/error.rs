//! [`ParamError`]: why parameters could not be materialised. Its own module so that
//! the loaders (`bindings`, `weights`, `leaves`, `fold`, …) and `params` itself share
//! it without importing each other.

use crate::safetensors::SafetensorsError;
use std::path::PathBuf;

/// Why parameters could not be materialised.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    /// A weights file that cannot be read as one.
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// A NaN or infinity in a weights file.
    #[error(
        "{}: tensor `{key}` is not finite ({detail}): the outputs would be NaN\n  hint: fix or re-export the file, or pass --allow-nonfinite to load it as it is",
        path.display()
    )]
    NonFinite { path: PathBuf, key: String, detail: String },
    /// A binding without a file, a `--weights` argument that names nothing.
    #[error("{0}")]
    Binding(String),
    /// Keys missing, unexpected or mismatched, over every file, one line each.
    #[error("weights do not match the spec ({problems} problem{}):\n{report}", if *problems == 1 { "" } else { "s" })]
    Mismatch { problems: usize, report: String },
    /// A fold expression that cannot be evaluated on the values given.
    #[error("{message}")]
    Fold { message: String },
    #[error("internal error: {0}")]
    Internal(String),
}
