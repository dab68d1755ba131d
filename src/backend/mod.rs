//! Backends: execute a verified model. The seam every backend plugs into.
//!
//! ```text
//! Compiled.graph: Verified ─Plan::new─▶ Plan (instructions over value slots)
//! weights files, init rules, fold expressions ─crate::params─▶ Vec<HostTensor>
//! Backend::prepare(plan, params, Options) ─▶ Box<dyn Executable>
//! named host inputs ─inputs::bind─▶ plan-ordered inputs ─Executable::run─▶ named host outputs
//! ```
//!
//! Everything up to `prepare` is backend-neutral and computed once: the schedule
//! ([`plan`]), the parameter values ([`crate::params`]: weights files, seeded init
//! rules, fold expressions in float64), input checking and symbol binding
//! ([`inputs`]). A backend receives only a [`Plan`] (built from a [`Verified`] graph:
//! it never sees the spec or an unverified graph) and host tensors, and returns host
//! tensors. An absent optional input makes the values computed from it absent, by
//! each op's rule ([`crate::ir::Op::on_absent`]: `add` passes through a present
//! operand that is itself computed from the data, [`plan::Instr::data`]); outputs are
//! never absent in a model that compiled.
//!
//! Device and dtype are the caller's choice ([`Options`]); the command line maps its
//! flags onto them. Two backends implement the seam: LibTorch ([`torch`], cargo
//! feature `torch`) and the native CPU backend ([`native`], every build). Training has
//! a seam of its own ([`train`]: `Training` → `Trainer`, host tensors in and out),
//! which LibTorch implements (autograd).
//!
//! [`Verified`]: crate::ir::Verified

pub mod alloc;
pub mod error;
pub mod inputs;
pub mod native;
#[cfg(all(test, feature = "torch"))]
mod op_suite;
pub mod plan;
#[cfg(feature = "torch")]
pub mod torch;
pub mod train;

pub use error::{BackendError, KernelError};
pub use plan::Plan;

use crate::ir::DType;
use crate::tensor::HostTensor;

/// Where an executable runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(usize),
}

/// How [`Backend::prepare`] readies a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub device: Device,
    /// The float type the model computes in (`F32`, `BF16` or `F16`): float
    /// parameters and float inputs are converted to it.
    pub float: DType,
    /// Capture the forward once per input shape and replay it (LibTorch's CUDA graphs;
    /// a backend without such a facility refuses it).
    pub graph_capture: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { device: Device::Cpu, float: DType::F32, graph_capture: false }
    }
}

/// A way to execute plans.
pub trait Backend {
    /// A short name for messages (`torch`).
    fn name(&self) -> &'static str;

    /// Whether `device` exists for this backend (what `--device auto` asks).
    fn has_device(&self, device: Device) -> bool;

    /// Whether this backend can honour `opts` (device, dtype, graph capture), checked
    /// before any work: a refusal is [`BackendError::Unsupported`].
    fn check(&self, opts: &Options) -> Result<(), BackendError>;

    /// Ready `plan` to run with `params` (one per `plan.params()`, in order, each of the
    /// parameter's shape) on `opts.device`. Refuses devices, dtypes or options it does
    /// not support with [`BackendError::Unsupported`].
    fn prepare(
        &self,
        plan: &Plan,
        params: Vec<HostTensor>,
        opts: &Options,
    ) -> Result<Box<dyn Executable>, BackendError>;
}

/// A plan ready to run on one device.
pub trait Executable {
    /// Run on inputs in `plan.inputs()` order, as [`inputs::bind`] returns them (`None`:
    /// an absent optional input). Returns every output by name, in `plan.outputs()`
    /// order, on the host (float outputs in the compute dtype).
    fn run(&mut self, inputs: &[Option<HostTensor>]) -> Result<Vec<(String, HostTensor)>, BackendError>;

    /// Forward latency: the inputs are placed on the device once, then `warmup + iters`
    /// forwards run, each finished (synchronised) before the next; outputs stay on the
    /// device. Returns the `iters` measured wall times in milliseconds.
    fn time_forward(
        &mut self,
        inputs: &[Option<HostTensor>],
        warmup: usize,
        iters: usize,
    ) -> Result<Vec<f64>, BackendError>;

    /// Backend-specific figures for reports, by name (`arena_bytes`, compile times…),
    /// for the inputs of the last run; none by default.
    fn report(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
}

/// For the op tests: a graph whose inputs `in0, in1, …` have the given types; `None`
/// is an absent optional input (typed `f32[1]`).
#[cfg(all(test, feature = "torch"))]
pub(crate) fn graph_of_inputs(types: &[Option<crate::ir::TensorType>]) -> (crate::ir::Graph, Vec<crate::ir::NodeId>) {
    use crate::ir::{Graph, Op, TensorType};
    let mut g = Graph::new();
    let ids = types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let ty = t.clone().unwrap_or_else(|| TensorType::fixed(DType::F32, &[1]));
            let op = Op::Input { name: format!("in{i}"), ty, optional: t.is_none(), default_zeros: false, norm: None };
            g.add(op, format!("in{i}"), None, &[])
        })
        .collect();
    (g, ids)
}

/// The timing loop of [`Executable::time_forward`]: `once(false)` `warmup` times,
/// then `once(true)` `iters` times, each timed; milliseconds. `sync` waits until the
/// device has finished everything issued so far: it runs before every clock start
/// (so no earlier work is counted) and inside the timed span after `once` (so all of
/// its work is). A CPU backend passes a no-op.
pub fn time_runs(
    warmup: usize,
    iters: usize,
    mut sync: impl FnMut(),
    mut once: impl FnMut(bool) -> Result<(), BackendError>,
) -> Result<Vec<f64>, BackendError> {
    for _ in 0..warmup {
        once(false)?;
    }
    (0..iters)
        .map(|_| {
            sync();
            let t0 = std::time::Instant::now();
            once(true)?;
            sync();
            Ok(t0.elapsed().as_secs_f64() * 1e3)
        })
        .collect()
}

/// Check named inputs against the plan and run them (see [`inputs::bind`]).
pub fn run_named(
    exe: &mut dyn Executable,
    plan: &Plan,
    given: Vec<(String, HostTensor)>,
    float: DType,
) -> Result<Vec<(String, HostTensor)>, BackendError> {
    let bound = inputs::bind(plan, given, float)?;
    exe.run(&bound.values)
}
