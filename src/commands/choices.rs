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

/// `--device`: `cpu`, `cuda` (the first GPU; under a data-parallel launch each rank
/// takes `cuda:LOCAL_RANK`), `cuda:N` (that GPU, for every rank), or `auto`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    Cpu,
    /// `cuda` (`None`) or `cuda:N`.
    Cuda(Option<usize>),
    /// CUDA when available, otherwise the CPU.
    Auto,
}

impl DeviceArg {
    /// Parse `cpu`, `cuda`, `cuda:N` or `auto` (clap's value parser).
    pub fn parse(s: &str) -> Result<DeviceArg, String> {
        match s {
            "cpu" => Ok(DeviceArg::Cpu),
            "cuda" => Ok(DeviceArg::Cuda(None)),
            "auto" => Ok(DeviceArg::Auto),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) if n < 1024 => Ok(DeviceArg::Cuda(Some(n))),
                _ => Err(format!("expected cpu, cuda, cuda:N (N a device index) or auto, got `{s}`")),
            },
        }
    }

    /// Whether the run names one GPU (`cuda:N`), which then serves every rank.
    pub fn pinned(self) -> bool {
        matches!(self, DeviceArg::Cuda(Some(_)))
    }

    /// The device on `backend`; a GPU where there is none is an error.
    pub fn device(self, backend: &dyn Backend) -> anyhow::Result<Device> {
        match self {
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Cuda(n) if backend.has_device(Device::Cuda(n.unwrap_or(0))) => Ok(Device::Cuda(n.unwrap_or(0))),
            DeviceArg::Cuda(Some(n)) if backend.has_device(Device::Cuda(0)) => anyhow::bail!(
                "--device cuda:{n}: {} sees no CUDA device {n} (devices are numbered from 0; CUDA_VISIBLE_DEVICES \
                 renumbers them)",
                backend.name()
            ),
            DeviceArg::Cuda(_) => anyhow::bail!(
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

/// `--normalize-on`: where the pixels of an input declared `normalized` are normalised.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NormalizeOn {
    /// `device` when the model runs on a GPU, `host` on the CPU (where the reader
    /// threads normalise alongside the step instead of in it).
    Auto,
    /// The reader hands over raw u8 pixels (a quarter of the bytes) and the model
    /// normalises them where it runs.
    Device,
    /// The reader normalises them to f32 on the host.
    Host,
}

impl NormalizeOn {
    /// The inputs `ds` hands over raw for `plan`, the model running on a GPU or not.
    pub fn raw_inputs(
        self,
        plan: &crate::backend::Plan,
        ds: &crate::data::Dataset,
        gpu: bool,
    ) -> std::collections::BTreeSet<String> {
        match (self, gpu) {
            (NormalizeOn::Device, _) | (NormalizeOn::Auto, true) => crate::commands::data::fits::raw_inputs(plan, ds),
            (NormalizeOn::Host, _) | (NormalizeOn::Auto, false) => Default::default(),
        }
    }
}
