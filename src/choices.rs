//! Command-line choices (`--mode`, `--device`, `--dtype`) and how they map onto the
//! library's values. The library takes a [`Mode`], a [`Device`] and a [`DType`]; which
//! device `auto` means is decided here, against the backend that will run.

use crate::backend::{Backend, Device};
use crate::ir::DType;
use crate::pipeline::Mode;

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
