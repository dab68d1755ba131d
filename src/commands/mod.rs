//! Command glue: the `graft run`, `fuse`, `eval`, `bench` and `train` commands over
//! the library. The one place besides `main.rs` that prints and uses `anyhow`; the
//! library underneath returns errors and data.
//!
//! This module maps command-line choices onto the library: `--mode` onto
//! [`Mode`], `--device` / `--dtype` onto [`Options`], and picks the backend
//! ([`backend`]). It also compiles and binds a spec the way every command does
//! ([`compiled`], [`bindings`]), so the commands share one path from a spec file to a
//! plan and its weights.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[cfg(feature = "torch")]
pub mod bench;
#[cfg(feature = "torch")]
pub mod eval;
#[cfg(feature = "torch")]
pub mod fuse;
#[cfg(feature = "torch")]
pub mod run;

use crate::api::compile_spec;
use crate::backend::{Backend, Device, Options};
use crate::ir::DType;
use crate::params::{Bindings, ParamError};
use crate::pipeline::{Compiled, Mode};
use std::path::Path;

pub use crate::api::SpecErrors;

/// Compile `spec` in `mode`.
pub fn compiled(spec: &Path, mode: Mode) -> Result<Compiled, SpecErrors> {
    compile_spec(spec, mode)
}

/// The spec's weights bindings, resolved against its directory, with `--weights`
/// applied; PyTorch checkpoints are readable when the build has LibTorch.
pub fn bindings(spec: &Path, c: &Compiled, cli: &[String]) -> Result<Bindings, ParamError> {
    #[allow(unused_mut)]
    let mut b = Bindings::of_spec(spec, c, cli)?;
    #[cfg(feature = "torch")]
    {
        b.pytorch = Some(crate::backend::torch::convert::read_pytorch);
    }
    Ok(b)
}

/// `--mode`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Train,
    Infer,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Train => Mode::Train,
            ModeArg::Infer => Mode::Infer,
        }
    }
}

/// `--device`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
    /// CUDA when available, otherwise the CPU.
    Auto,
}

impl DeviceArg {
    /// The device on `backend`; `cuda` where there is none is an error.
    pub fn device(self, backend: &dyn Backend) -> anyhow::Result<Device> {
        match self {
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Cuda if backend.has_device(Device::Cuda(0)) => Ok(Device::Cuda(0)),
            DeviceArg::Cuda => anyhow::bail!(
                "--device cuda: no CUDA device is available to {} (use --device cpu or auto)",
                backend.name()
            ),
            DeviceArg::Auto if backend.has_device(Device::Cuda(0)) => Ok(Device::Cuda(0)),
            DeviceArg::Auto => Ok(Device::Cpu),
        }
    }
}

/// `--dtype`: the floating-point type a model computes in.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    F32,
    Bf16,
    F16,
}

impl From<DtypeArg> for DType {
    fn from(d: DtypeArg) -> DType {
        match d {
            DtypeArg::F32 => DType::F32,
            DtypeArg::Bf16 => DType::BF16,
            DtypeArg::F16 => DType::F16,
        }
    }
}

/// The backend commands run on (a `--backend` choice goes here once there are two).
#[cfg(feature = "torch")]
pub fn backend() -> Box<dyn Backend> {
    Box::new(crate::backend::torch::TorchBackend)
}

/// Options for `backend` from the command line's choices.
pub fn options(
    backend: &dyn Backend,
    device: DeviceArg,
    dtype: DtypeArg,
    graph_capture: bool,
) -> anyhow::Result<Options> {
    Ok(Options { device: device.device(backend)?, float: dtype.into(), graph_capture })
}
