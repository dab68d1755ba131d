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
use crate::backend::{Backend, Options};
pub use crate::choices::{DeviceArg, DtypeArg, ModeArg};
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
    let opts = Options { device: device.device(backend)?, float: dtype.into(), graph_capture };
    backend.check(&opts)?;
    Ok(opts)
}
