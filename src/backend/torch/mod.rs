//! The LibTorch backend (through `tch`).
//!
//! ```text
//! Compiled ─lower─▶ Plan (instructions over tensor slots)
//! weights files ─weights─▶ leaf tensors ─params (+fold)─▶ ParamStore (VarStore)
//! inputs.safetensors ─inputs─▶ slots ─exec─▶ outputs.safetensors
//! ```
//!
//! - [`lower`]: the verified graph → a flat instruction list, computed once.
//! - [`params`]: the parameter store (trainable and frozen apart) and seeded init rules.
//! - [`weights`]: safetensors / PyTorch checkpoints, loaded strictly.
//! - [`fold`]: fold expressions (inference-mode weights) evaluated in float64.
//! - [`exec`]: runs the instruction list on CPU or CUDA.
//! - [`inputs`]: binds symbolic dims and checks given inputs against the spec.
//! - [`safetensors`]: the file format, read and written without trusting the file.
//! - [`fuse`]: `graft fuse`, folding a trained model into its backbone's weights.
//! - [`cli`]: the `graft run` and `graft fuse` commands.
//! - [`train`]: `graft train`, fine-tuning the trainable parameters, resumable runs.
//! - [`eval`]: `graft eval`, loss, accuracy and confusions on a dataset.
//! - [`bench`]: `graft bench`, compile time and forward latency side by side.
//! - [`cuda_graph`]: CUDA-graph capture/replay and bf16 autocast (`cuda-graphs` feature).
//! - [`dist`]: data-parallel training on c10d (`distributed` feature).

pub mod bench;
pub mod cli;
pub mod cuda_graph;
pub mod dist;
pub mod eval;
pub mod exec;
pub mod fold;
pub mod fuse;
pub mod inputs;
pub mod lower;
pub mod params;
pub mod safetensors;
pub mod train;
pub mod weights;

#[cfg(test)]
mod op_tests;

use crate::ir::DType;
use anyhow::bail;
use tch::{Device, Kind};

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

/// Where to run.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
    /// CUDA when available, otherwise the CPU.
    Auto,
}

impl DeviceArg {
    pub fn device(self) -> anyhow::Result<Device> {
        match self {
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Cuda => {
                if !tch::Cuda::is_available() {
                    bail!("--device cuda: no CUDA device is available to LibTorch (use --device cpu or auto)");
                }
                Ok(Device::Cuda(0))
            }
            DeviceArg::Auto => Ok(Device::cuda_if_available()),
        }
    }
}

/// The floating-point type a model computes in.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RunDtype {
    F32,
    Bf16,
    F16,
}

impl RunDtype {
    pub fn kind(self) -> Kind {
        match self {
            RunDtype::F32 => Kind::Float,
            RunDtype::Bf16 => Kind::BFloat16,
            RunDtype::F16 => Kind::Half,
        }
    }
}

/// Minimal glob: `*` matches any run of characters (dots included), `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("head.*", "head.weight"));
        assert!(glob_match("*", "anything.at.all"));
        assert!(glob_match("blocks.*.attn.qkv.bias", "blocks.11.attn.qkv.bias"));
        assert!(!glob_match("blocks.*.attn.qkv.bias", "blocks.11.attn.qkv.weight"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("head.*", "vit.head.weight"));
        assert!(glob_match("*head*", "vit.head.weight"));
    }
}
