//! `DataError`: everything that can go wrong reading or writing a dataset, each
//! naming the file (and the tensor, where there is one) so the message alone says
//! what to fix.

use std::path::{Path, PathBuf};

/// An error reading, validating or writing a dataset. Never a panic: corrupt or
/// foreign files always end up here.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// `dataset.json` is missing, not JSON, or inconsistent.
    #[error("{}: {msg}", path.display())]
    Meta { path: PathBuf, msg: String },
    /// A file that cannot be opened, read or written (a missing shard lands here).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a safetensors file (bad header length, header not JSON, …).
    #[error("{}: not a safetensors file{}: {reason}", path.display(), key_suffix(key))]
    NotSafetensors { path: PathBuf, key: Option<String>, reason: String },
    /// The file ends before the data its header announces.
    #[error(
        "{}: truncated{}: needs {expected} bytes, the file has {actual}",
        path.display(),
        key_suffix(key)
    )]
    Truncated { path: PathBuf, key: Option<String>, expected: u64, actual: u64 },
    /// A shard without the `label` tensor.
    #[error("{}: no `label` tensor (every shard holds `label`: i64[n])", path.display())]
    MissingLabel { path: PathBuf },
    /// A shard without an input that `dataset.json` does not mark optional.
    #[error(
        "{}: no tensor `{key}`, and dataset.json does not mark `{key}` optional",
        path.display()
    )]
    MissingInput { path: PathBuf, key: String },
    /// A tensor that `dataset.json` does not declare.
    #[error("{}: tensor `{key}` is not an input declared in dataset.json", path.display())]
    UnknownTensor { path: PathBuf, key: String },
    /// A tensor whose element type differs from `dataset.json` (or `label` not i64).
    #[error("{}: tensor `{key}` has dtype {found}, expected {expected}", path.display())]
    WrongDtype { path: PathBuf, key: String, found: String, expected: String },
    /// A tensor whose shape disagrees with `dataset.json` (`[n, per-sample shape…]`).
    #[error("{}: tensor `{key}` has shape {found:?}, expected {expected}", path.display())]
    WrongShape { path: PathBuf, key: String, found: Vec<i64>, expected: String },
    /// Tensors of one shard holding different numbers of samples.
    #[error(
        "{}: tensor `{key}` holds {found} samples but `label` holds {expected}",
        path.display()
    )]
    SampleCount { path: PathBuf, key: String, found: u64, expected: u64 },
    /// A label outside `0..classes`.
    #[error(
        "{}: tensor `label`: sample {index} has label {value}, outside 0..{classes}",
        path.display()
    )]
    LabelRange { path: PathBuf, index: usize, value: i64, classes: usize },
    /// The dataset does not fit a model's declared inputs (one line per problem).
    #[error("the dataset does not fit the model's inputs:\n  {}", problems.join("\n  "))]
    Incompatible { problems: Vec<String> },
    /// A bad argument (batch size 0, an unknown modality in `--drop`, …).
    #[error("{0}")]
    Invalid(String),
}

impl From<crate::durable::WriteError> for DataError {
    /// A failed durable write: the destination path, with the step that failed.
    fn from(e: crate::durable::WriteError) -> DataError {
        let source = std::io::Error::new(e.source.kind(), format!("{}: {}", e.step, e.source));
        DataError::Io { path: e.path, source }
    }
}

impl From<crate::safetensors::SafetensorsError> for DataError {
    fn from(e: crate::safetensors::SafetensorsError) -> DataError {
        use crate::safetensors::SafetensorsError as S;
        match e {
            S::Io { path, source } => DataError::Io { path, source },
            S::NotSafetensors { path, key, reason } => DataError::NotSafetensors { path, key, reason },
            S::Truncated { path, key, expected, actual } => DataError::Truncated { path, key, expected, actual },
            S::Write(w) => w.into(),
            other => DataError::Invalid(other.to_string()),
        }
    }
}

fn key_suffix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!(" (tensor `{k}`)")).unwrap_or_default()
}

impl DataError {
    /// The file the error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        use DataError::*;
        match self {
            Meta { path, .. }
            | Io { path, .. }
            | NotSafetensors { path, .. }
            | Truncated { path, .. }
            | MissingLabel { path }
            | MissingInput { path, .. }
            | UnknownTensor { path, .. }
            | WrongDtype { path, .. }
            | WrongShape { path, .. }
            | SampleCount { path, .. }
            | LabelRange { path, .. } => Some(path),
            Incompatible { .. } | Invalid(_) => None,
        }
    }

    /// The tensor the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        use DataError::*;
        match self {
            NotSafetensors { key, .. } | Truncated { key, .. } => key.as_deref(),
            MissingLabel { .. } | LabelRange { .. } => Some("label"),
            MissingInput { key, .. }
            | UnknownTensor { key, .. }
            | WrongDtype { key, .. }
            | WrongShape { key, .. }
            | SampleCount { key, .. } => Some(key),
            Meta { .. } | Io { .. } | Incompatible { .. } | Invalid(_) => None,
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> DataError {
        DataError::Io { path: path.to_path_buf(), source }
    }
}
