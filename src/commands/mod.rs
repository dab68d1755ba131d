//! The application: the `graft run`, `fuse`, `eval`, `bench` (+ `--train`), `train`,
//! `export` and `data` commands over the library. With `main.rs`, the one place that prints
//! and uses `anyhow`; the library underneath returns errors and data, and reports
//! progress as values ([`train::events`]).
//!
//! This module maps command-line choices onto the library ([`choices`]: `--mode` onto
//! [`Mode`], `--device` / `--dtype` onto [`Options`]), and picks the backend
//! ([`backend`]). It also compiles and binds a spec the way every command does
//! ([`compiled`], [`bindings`]), so the commands share one path from a spec file to a
//! plan and its weights. `graft train` ([`train`]) is the largest: the run directory,
//! resume, checkpoints, metrics and progress over the library's training seam
//! ([`crate::backend::train`]).

#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod bench;
pub mod bench_paced;
pub mod bench_train;
pub mod choices;
pub mod data;
#[cfg(feature = "torch")]
pub mod eval;
pub mod export;
pub mod fuse;
pub mod run;
#[cfg(feature = "torch")]
pub mod train;

use crate::api::compile_spec;
use crate::backend::{Backend, Options};
use crate::params::{Bindings, ParamError};
use crate::pipeline::{Compiled, Mode};
pub use choices::{DeviceArg, DtypeArg, ModeArg};
use std::path::Path;

pub use crate::api::SpecErrors;

/// Compile `spec` in `mode`.
pub fn compiled(spec: &Path, mode: Mode) -> Result<Compiled, SpecErrors> {
    compile_spec(spec, mode)
}

/// The spec's weights bindings, resolved against its directory, with `--weights`
/// applied.
pub fn bindings(spec: &Path, c: &Compiled, cli: &[String]) -> Result<Bindings, ParamError> {
    Bindings::of_spec(spec, c, cli)
}

/// `--backend`: which backend executes the model.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// The native CPU backend (no LibTorch).
    Native,
    /// LibTorch (CPU and CUDA; needs a build with the `torch` feature).
    Torch,
}

impl BackendArg {
    /// LibTorch when the build has it (what graft ran on before there were two),
    /// otherwise the native backend.
    pub const DEFAULT: BackendArg = if cfg!(feature = "torch") { BackendArg::Torch } else { BackendArg::Native };
}

/// `--elementwise`: how the native backend runs fused elementwise groups.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ElementwiseArg {
    /// One rustc kernel per op over whole tensors.
    Unfused,
    /// rustc kernels per op over L1-sized blocks of the group.
    Blocks,
    /// One Cranelift-compiled kernel per group.
    Jit,
}

/// `--simd`: the instruction set of the native backend's vectorised kernels.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SimdArg {
    /// The target's baseline (SSE2 on x86-64).
    Portable,
    /// AVX2 + FMA.
    Avx2,
    /// AVX-512F (+ AVX2 + FMA).
    Avx512,
}

/// Execution choices shared by `run`, `fuse` and `bench`.
#[derive(clap::Args, Clone, Debug)]
pub struct EngineArgs {
    /// Threads: the native backend's worker pool (default: the CPUs available), or
    /// LibTorch's intra-op threads (default: what LibTorch chooses).
    #[arg(long, value_parser = crate::bounds::threads())]
    pub threads: Option<usize>,
    /// How the native backend runs elementwise fusion groups.
    #[arg(long, value_enum, default_value = "jit")]
    pub elementwise: ElementwiseArg,
    /// The native backend's SIMD level (default: the best this CPU has; a level it
    /// lacks is refused).
    #[arg(long, value_enum)]
    pub simd: Option<SimdArg>,
    /// The native backend's attention kernel: `auto` (`packed` where the CPU has AVX2
    /// and FMA; otherwise `plain`, `blocked` from 4096 keys), or always `plain` (the
    /// whole score matrix per head), `blocked` (online softmax over key blocks: little
    /// scratch memory) or `packed` (keys and values packed per head, score blocks kept
    /// in L2, on the packed linear kernel; `blocked` without AVX2 and FMA).
    #[arg(long, value_enum, default_value = "auto")]
    pub attention: AttentionArg,
}

/// `--attention`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionArg {
    Auto,
    Plain,
    Blocked,
    Packed,
}

/// The native backend as `e` configures it.
pub fn native(e: &EngineArgs) -> crate::backend::native::Native {
    use crate::backend::native::{ew::EwStrategy, math::SimdLevel, AttentionPath, Native};
    let threads = e.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let elementwise = match e.elementwise {
        ElementwiseArg::Unfused => EwStrategy::Unfused,
        ElementwiseArg::Blocks => EwStrategy::Blocks,
        ElementwiseArg::Jit => EwStrategy::Jit,
    };
    let simd = e.simd.map(|s| match s {
        SimdArg::Portable => SimdLevel::Portable,
        SimdArg::Avx2 => SimdLevel::Avx2Fma,
        SimdArg::Avx512 => SimdLevel::Avx512,
    });
    let attention = match e.attention {
        AttentionArg::Auto => AttentionPath::Auto,
        AttentionArg::Plain => AttentionPath::Plain,
        AttentionArg::Blocked => AttentionPath::Blocked,
        AttentionArg::Packed => AttentionPath::Packed,
    };
    Native { threads: threads.max(1), elementwise, simd, attention }
}

/// The backend `kind` configured by `e`.
pub fn backend(kind: BackendArg, e: &EngineArgs) -> anyhow::Result<Box<dyn Backend>> {
    match kind {
        BackendArg::Native => Ok(Box::new(native(e))),
        #[cfg(feature = "torch")]
        BackendArg::Torch => {
            if e.simd.is_some() {
                anyhow::bail!("--simd: only the native backend has this choice (LibTorch picks its own kernels); drop it or use --backend native");
            }
            if e.attention != AttentionArg::Auto {
                anyhow::bail!("--attention: only the native backend has this choice (LibTorch picks its own kernels); drop it or use --backend native");
            }
            if let Some(t) = e.threads {
                tch::set_num_threads(t as i32);
            }
            Ok(Box::new(crate::backend::torch::TorchBackend))
        }
        #[cfg(not(feature = "torch"))]
        BackendArg::Torch => anyhow::bail!(
            "--backend torch: this graft was built without LibTorch; rebuild with `--features torch` (after scripts/setup.sh) or use --backend native"
        ),
    }
}

/// Options for `backend` from the command line's choices.
pub fn options(
    backend: &dyn Backend,
    device: DeviceArg,
    dtype: DtypeArg,
    graph_capture: bool,
) -> anyhow::Result<Options> {
    let opts = Options { device: device.device(backend)?, float: dtype.into(), graph_capture };
    backend.check(&opts)?;
    Ok(opts)
}
