//! Weights files: safetensors only, opened once, their tensors listed with their
//! types before any is read.
//!
//! Weights files are data, never code: graft reads safetensors, with every header
//! checked ([`crate::safetensors`]). A PyTorch checkpoint (`.pt`, `.pth`, `.bin`: a
//! pickle, zipped or not) is refused with the one-line Python conversion to run once,
//! because loading one through LibTorch can run TorchScript code and trusts the sizes
//! and strides it states. A path that is not a regular file (a FIFO, a device, a
//! directory) is refused before it is opened for reading. [`check_finite`] names the
//! file and tensor of a NaN or an infinity.

use super::ParamError;
use crate::safetensors::SafeFile;
use crate::tensor::HostTensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A tensor's type as a file states it.
#[derive(Clone, Debug)]
pub struct Meta {
    /// `f32[2304, 768]`.
    pub text: String,
    pub shape: Vec<i64>,
    /// Whether it holds floats.
    pub float: bool,
    pub integer: bool,
    /// Whether graft has its dtype (a `u16` tensor can be listed, not loaded).
    pub loadable: bool,
}

/// One weights file.
pub struct WeightFile {
    pub path: PathBuf,
    pub metas: BTreeMap<String, Meta>,
    file: SafeFile,
}

fn not_weights(path: &Path, reason: impl Into<String>) -> ParamError {
    ParamError::File { path: path.to_path_buf(), reason: reason.into() }
}

impl WeightFile {
    /// Open a safetensors file, or a PEFT adapter directory's weights file; a PyTorch
    /// checkpoint (recognised by its first bytes, not its name) is refused with the
    /// command that converts it.
    pub fn open(path: &Path) -> Result<WeightFile, ParamError> {
        // A PEFT adapter directory: its weights file (keys mapped by the binding).
        let inner;
        let path = if super::peft::is_peft_dir(path) {
            inner = super::peft::weights_file(path)?;
            inner.as_path()
        } else {
            path
        };
        let mut head = [0u8; 8];
        {
            use std::io::Read;
            let io = |e: std::io::Error| not_weights(path, e.to_string());
            let mut f = crate::input_file::open_regular(path).map_err(io)?;
            let n = f.read(&mut head).map_err(io)?;
            if n < 8 {
                return Err(not_weights(path, format!("not a weights file ({n} bytes)")));
            }
        }
        let zip = head.starts_with(b"PK\x03\x04");
        if zip || (head[0] == 0x80 && (2..=5).contains(&head[1])) {
            return Err(not_weights(path, pytorch_refusal(path, zip)));
        }
        let f = SafeFile::open(path)?;
        let metas = f
            .entries()
            .iter()
            .map(|(k, e)| {
                let (float, loadable) = (!e.is_integer(), e.dtype.is_some());
                (
                    k.clone(),
                    Meta { text: e.type_text(), shape: e.shape.clone(), float, integer: e.is_integer(), loadable },
                )
            })
            .collect();
        Ok(WeightFile { path: path.to_path_buf(), metas, file: f })
    }

    /// The tensor `key`, in the file's dtype.
    pub fn tensor(&self, key: &str) -> Result<HostTensor, ParamError> {
        Ok(self.file.tensor(key)?)
    }
}

/// Why a PyTorch checkpoint is refused, and the command that converts it (the output
/// beside the input, `.safetensors`). `torch.load(..., weights_only=True)` loads
/// plain tensors only and checks their storages; `clone()` unties shared tensors,
/// which safetensors does not store.
pub fn pytorch_refusal(path: &Path, zip: bool) -> String {
    let out = path.with_extension("safetensors");
    let py = |p: &Path| format!("'{}'", p.display().to_string().replace('\\', "\\\\").replace('\'', "\\'"));
    format!(
        "a PyTorch checkpoint ({}); graft reads weights as data only, and loading a pickle can run code and read out of bounds, so it reads safetensors. Convert it once:\n    python -c \"import torch; from safetensors.torch import save_file; sd = torch.load({}, map_location='cpu', weights_only=True); save_file({{k: v.detach().clone().contiguous() for k, v in sd.items()}}, {})\"\n  then bind {}",
        if zip { "torch.save's zip format" } else { "the legacy pickle format" },
        py(path),
        py(&out),
        out.display()
    )
}

/// An error naming `file` and tensor `key` if `t` holds a NaN or an infinity.
pub fn check_finite(file: &Path, key: &str, t: &HostTensor) -> Result<(), ParamError> {
    match nonfinite(t) {
        Some(detail) => Err(ParamError::NonFinite { path: file.to_path_buf(), key: key.to_string(), detail }),
        None => Ok(()),
    }
}

/// The first NaN or infinity in `t`, in words (`NaN at element 2 of f32[2, 2]`).
pub fn nonfinite(t: &HostTensor) -> Option<String> {
    use crate::ir::DType;
    let c = |n: usize| t.data.chunks_exact(n).enumerate();
    let bad = match t.dtype {
        DType::F64 => {
            c(8).map(|(i, b)| (i, f64::from_le_bytes(b.try_into().unwrap_or_default()))).find(|v| !v.1.is_finite())
        }
        DType::F32 => c(4)
            .map(|(i, b)| (i, f32::from_le_bytes(b.try_into().unwrap_or_default()) as f64))
            .find(|v| !v.1.is_finite()),
        DType::F16 => {
            c(2).map(|(i, b)| (i, half::f16::from_le_bytes([b[0], b[1]]).to_f64())).find(|v| !v.1.is_finite())
        }
        DType::BF16 => {
            c(2).map(|(i, b)| (i, half::bf16::from_le_bytes([b[0], b[1]]).to_f64())).find(|v| !v.1.is_finite())
        }
        DType::I64 | DType::I32 | DType::Bool | DType::U8 => None,
    };
    bad.map(|(index, value)| format!("{value} at element {index} of {}", t.type_text()))
}
