//! Weights files: safetensors, or PyTorch checkpoints through a reader the caller
//! supplies ([`PytorchReader`], LibTorch's), opened once, their tensors listed with
//! their types before any is read.

use super::ParamError;
use crate::safetensors::SafeFile;
use crate::tensor::HostTensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Reads a PyTorch zip checkpoint (`torch.save(state_dict)`) into named host tensors;
/// the error is the reason in words.
pub type PytorchReader = fn(&Path) -> Result<Vec<(String, HostTensor)>, String>;

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

enum Store {
    Safe(SafeFile),
    Loaded(BTreeMap<String, HostTensor>),
}

/// One weights file, any supported format.
pub struct WeightFile {
    pub path: PathBuf,
    pub metas: BTreeMap<String, Meta>,
    store: Store,
}

fn not_weights(path: &Path, reason: impl Into<String>) -> ParamError {
    ParamError::File { path: path.to_path_buf(), reason: reason.into() }
}

impl WeightFile {
    /// Open a file; the format comes from its first bytes, not its name.
    pub fn open(path: &Path, pytorch: Option<PytorchReader>) -> Result<WeightFile, ParamError> {
        let mut head = [0u8; 8];
        {
            use std::io::Read;
            let io = |e: std::io::Error| not_weights(path, e.to_string());
            let mut f = std::fs::File::open(path).map_err(io)?;
            let n = f.read(&mut head).map_err(io)?;
            if n < 8 {
                return Err(not_weights(path, format!("not a weights file ({n} bytes)")));
            }
        }
        if head.starts_with(b"PK\x03\x04") {
            let read = pytorch.ok_or_else(|| {
                not_weights(path, "a PyTorch checkpoint, which this build cannot read (it has no LibTorch); convert it to safetensors")
            })?;
            let tensors = read(path).map_err(|e| not_weights(path, e))?;
            let metas = tensors
                .iter()
                .map(|(k, t)| {
                    let float = t.dtype.is_float();
                    (
                        k.clone(),
                        Meta { text: t.type_text(), shape: t.shape.clone(), float, integer: !float, loadable: true },
                    )
                })
                .collect();
            return Ok(WeightFile {
                path: path.to_path_buf(),
                metas,
                store: Store::Loaded(tensors.into_iter().collect()),
            });
        }
        if head[0] == 0x80 && (2..=5).contains(&head[1]) {
            return Err(not_weights(
                path,
                "a PyTorch checkpoint in the legacy (pre-1.6, non-zip) format; re-save it with torch.save(state_dict, path) or convert it to safetensors",
            ));
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
        Ok(WeightFile { path: path.to_path_buf(), metas, store: Store::Safe(f) })
    }

    /// The tensor `key`, in the file's dtype.
    pub fn tensor(&self, key: &str) -> Result<HostTensor, ParamError> {
        match &self.store {
            Store::Safe(f) => Ok(f.tensor(key)?),
            Store::Loaded(m) => {
                m.get(key).cloned().ok_or_else(|| not_weights(&self.path, format!("no tensor `{key}`")))
            }
        }
    }
}
