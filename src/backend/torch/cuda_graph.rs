//! CUDA graphs and bf16 autocast, through the C++ shim `csrc/cuda_graph.cpp` (tch
//! exposes neither). Built with the `cuda-graphs` feature; without it every entry
//! point reports that, so callers need no `cfg`.
//!
//! - [`CudaGraph`]: capture a sequence of LibTorch calls once, replay it. Capture runs
//!   on a side stream; replay on the current stream. Everything the captured calls
//!   read must stay at the same address (static buffers), and every tensor they
//!   return is overwritten by each replay.
//! - [`GraphedForward`]: a plan's forward at fixed input shapes (`graft run` /
//!   `graft bench --cuda-graph`).
//! - [`GraphedStep`]: forward + loss + backward of one training batch at fixed shapes
//!   (`graft train --cuda-graph` with gradient accumulation or data parallelism, where
//!   the optimizer step stays outside the graph); the whole step, optimizer included,
//!   is captured by [`super::train::device_step::GraphedTrainStep`].
//! - [`Autocast`]: bf16 autocast of CUDA ops on this thread while the guard lives.
//!
//! Errors cross the FFI as a return code and a message, never as a C++ exception.

use super::exec;
use crate::backend::plan::Plan;
use anyhow::{anyhow, bail, Result};
use std::ffi::{c_char, c_int, c_void};
use tch::{Device, Tensor};

/// Whether this build has the shim.
pub const BUILT: bool = cfg!(feature = "cuda-graphs");

/// The message for a build without the feature.
const NOT_BUILT: &str =
    "this graft was built without the `cuda-graphs` feature (rebuild with `cargo build --release --features cuda-graphs`)";

/// `--autocast`: the type CUDA ops autocast to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AutocastDtype {
    Bf16,
}

/// Warmup runs before a capture (eager, on the capture stream), as PyTorch advises.
pub const WARMUP: usize = 2;

#[cfg(feature = "cuda-graphs")]
mod sys {
    use std::ffi::{c_char, c_int, c_void};
    extern "C" {
        pub fn graft_cuda_device_count() -> c_int;
        pub fn graft_graph_new(out: *mut *mut c_void, err: *mut c_char, len: usize) -> c_int;
        pub fn graft_graph_free(g: *mut c_void);
        pub fn graft_graph_side_stream(g: *mut c_void, enter: c_int, err: *mut c_char, len: usize) -> c_int;
        pub fn graft_graph_capture_begin(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
        pub fn graft_graph_capture_end(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
        pub fn graft_graph_replay(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
        pub fn graft_autocast_bf16(enabled: c_int, was: *mut c_int, err: *mut c_char, len: usize) -> c_int;
    }
}

/// Stand-ins with the shim's signatures: every call fails (callers check [`BUILT`]
/// first, so the message is theirs).
#[cfg(not(feature = "cuda-graphs"))]
#[allow(clippy::missing_safety_doc)]
mod sys {
    use std::ffi::{c_char, c_int, c_void};
    pub unsafe fn graft_cuda_device_count() -> c_int {
        0
    }
    pub unsafe fn graft_graph_new(_: *mut *mut c_void, _: *mut c_char, _: usize) -> c_int {
        1
    }
    pub unsafe fn graft_graph_free(_: *mut c_void) {}
    pub unsafe fn graft_graph_side_stream(_: *mut c_void, _: c_int, _: *mut c_char, _: usize) -> c_int {
        1
    }
    pub unsafe fn graft_graph_capture_begin(_: *mut c_void, _: *mut c_char, _: usize) -> c_int {
        1
    }
    pub unsafe fn graft_graph_capture_end(_: *mut c_void, _: *mut c_char, _: usize) -> c_int {
        1
    }
    pub unsafe fn graft_graph_replay(_: *mut c_void, _: *mut c_char, _: usize) -> c_int {
        1
    }
    pub unsafe fn graft_autocast_bf16(_: c_int, _: *mut c_int, _: *mut c_char, _: usize) -> c_int {
        1
    }
}

/// Call a shim function with a message buffer; non-zero → an error `what: message`.
fn call(what: &str, f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<()> {
    if !BUILT {
        bail!("{what}: {NOT_BUILT}");
    }
    super::shim_call(f).map_err(|msg| anyhow!("{what}: {msg}"))
}

/// True when this build has the shim and LibTorch sees a CUDA device.
pub fn cuda_graphs_available() -> bool {
    // SAFETY: takes no arguments and never throws.
    BUILT && tch::Cuda::is_available() && unsafe { sys::graft_cuda_device_count() } > 0
}

/// Refuse `flag` (a CLI option, e.g. `--cuda-graph`) unless this build has the shim
/// and the run is on a CUDA device.
pub fn require(flag: &str, device: Device) -> Result<()> {
    if !BUILT {
        bail!("{flag}: {NOT_BUILT}");
    }
    if !matches!(device, Device::Cuda(_)) {
        bail!("{flag} needs a CUDA device, but this run is on the CPU (pass --device cuda on a machine with a GPU)");
    }
    if !cuda_graphs_available() {
        bail!("{flag}: no CUDA device is available to LibTorch");
    }
    Ok(())
}

/// A CUDA graph (`at::cuda::CUDAGraph` on its own side stream).
pub struct CudaGraph {
    raw: *mut c_void,
}

impl CudaGraph {
    /// Fails without a CUDA device (or without the feature).
    pub fn new() -> Result<CudaGraph> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer; the shim sets it only on success.
        call("creating a CUDA graph", |e, n| unsafe { sys::graft_graph_new(&mut raw, e, n) })?;
        if raw.is_null() {
            bail!("creating a CUDA graph: the shim returned no graph");
        }
        Ok(CudaGraph { raw })
    }

    /// Synchronize the device and make the graph's side stream current (warmup runs
    /// there); `false` switches back to the previous stream and synchronizes.
    pub fn side_stream(&mut self, enter: bool) -> Result<()> {
        // SAFETY: `raw` is a live graph owned by `self`.
        call("switching CUDA streams", |e, n| unsafe { sys::graft_graph_side_stream(self.raw, enter as c_int, e, n) })
    }

    /// Start capturing the CUDA work this thread issues (on the side stream).
    pub fn capture_begin(&mut self) -> Result<()> {
        // SAFETY: as above.
        call("beginning a CUDA graph capture", |e, n| unsafe { sys::graft_graph_capture_begin(self.raw, e, n) })
    }

    /// End the capture, instantiate the graph, switch back to the previous stream.
    pub fn capture_end(&mut self) -> Result<()> {
        // SAFETY: as above.
        call("CUDA graph capture", |e, n| unsafe { sys::graft_graph_capture_end(self.raw, e, n) })
    }

    /// Launch the captured work on the current stream (asynchronous).
    pub fn replay(&self) -> Result<()> {
        // SAFETY: as above.
        call("replaying a CUDA graph", |e, n| unsafe { sys::graft_graph_replay(self.raw, e, n) })
    }

    /// Run `f` eagerly `warmup` times on the side stream, then capture one more call
    /// and return its result: tensors that every [`Self::replay`] overwrites. The
    /// capture is always ended, also when `f` fails; nothing is computed until the
    /// first replay.
    pub fn capture<T>(&mut self, warmup: usize, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        self.side_stream(true)?;
        for _ in 0..warmup {
            if let Err(e) = f() {
                let _ = self.side_stream(false);
                return Err(e);
            }
        }
        self.capture_begin().inspect_err(|_| {
            let _ = self.side_stream(false);
        })?;
        let out = f();
        let end = self.capture_end();
        match (out, end) {
            (Ok(v), Ok(())) => Ok(v),
            (Err(e), _) => Err(e.context("while capturing a CUDA graph (run without --cuda-graph to run eagerly)")),
            (Ok(_), Err(e)) => {
                Err(e.context("an operation in the model cannot be captured (run without --cuda-graph)"))
            }
        }
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: `raw` came from graft_graph_new and is freed once.
        unsafe { sys::graft_graph_free(self.raw) }
    }
}

/// Turn bf16 autocast of CUDA ops on this thread on or off (with the cast cache off
/// while on); returns whether it was on.
pub fn set_autocast_bf16(enabled: bool) -> Result<bool> {
    let mut was: c_int = 0;
    // SAFETY: `was` is a valid out-pointer.
    call("setting bf16 autocast", |e, n| unsafe { sys::graft_autocast_bf16(enabled as c_int, &mut was, e, n) })?;
    Ok(was != 0)
}

/// bf16 autocast of CUDA ops on this thread while the guard lives.
pub struct Autocast {
    was: bool,
}

impl Autocast {
    pub fn bf16() -> Result<Autocast> {
        Ok(Autocast { was: set_autocast_bf16(true)? })
    }

    /// A guard when `on`, else nothing.
    pub fn bf16_if(on: bool) -> Result<Option<Autocast>> {
        on.then(Autocast::bf16).transpose()
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        if !self.was {
            let _ = set_autocast_bf16(false);
        }
    }
}

/// Shallow clones (the same storage) of optional tensors.
pub(crate) fn shallow(ts: &[Option<Tensor>]) -> Vec<Option<Tensor>> {
    ts.iter().map(|t| t.as_ref().map(Tensor::shallow_clone)).collect()
}

/// Same presence, shape, dtype and device, input by input.
pub(crate) fn same_signature(a: &[Option<Tensor>], b: &[Option<Tensor>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Some(x), Some(y)) => x.size() == y.size() && x.kind() == y.kind() && x.device() == y.device(),
            (None, None) => true,
            _ => false,
        })
}

/// Copy `src` into the static buffers `dst` (same signature).
fn fill(dst: &[Option<Tensor>], src: &[Option<Tensor>]) -> Result<()> {
    let _guard = tch::no_grad_guard();
    for (d, s) in dst.iter().zip(src) {
        if let (Some(d), Some(s)) = (d, s) {
            d.shallow_clone().f_copy_(s)?;
        }
    }
    Ok(())
}

/// Static copies of `inputs`, owned by a graph.
fn statics(inputs: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
    let _guard = tch::no_grad_guard();
    inputs
        .iter()
        .map(|t| {
            t.as_ref().map(|t| -> Result<Tensor> { Ok(t.f_detach()?.f_contiguous()?.f_empty_like()?) }).transpose()
        })
        .collect()
}

/// A plan's forward (no autograd) captured at the shapes of the inputs it was
/// captured with.
pub struct GraphedForward {
    // Field order: the graph goes before the buffers it reads and writes.
    graph: CudaGraph,
    inputs: Vec<Option<Tensor>>,
    outputs: Vec<(String, Tensor)>,
    /// Launches of the graph so far (what `graft bench` reports per timed forward).
    replays: std::cell::Cell<u64>,
}

impl GraphedForward {
    /// Capture `plan` over `params` (which must stay alive and in place) with inputs
    /// shaped like `inputs` (on a CUDA device).
    pub fn capture(plan: &Plan, params: &[Tensor], inputs: &[Option<Tensor>]) -> Result<GraphedForward> {
        let buffers = statics(inputs)?;
        fill(&buffers, inputs)?;
        let mut graph = CudaGraph::new()?;
        let outputs = tch::no_grad(|| graph.capture(WARMUP, || Ok(exec::run(plan, params, shallow(&buffers))?)))?;
        Ok(GraphedForward { graph, inputs: buffers, outputs, replays: std::cell::Cell::new(0) })
    }

    /// Whether `inputs` have the shapes, dtypes and absent inputs of the capture.
    pub fn fits(&self, inputs: &[Option<Tensor>]) -> bool {
        same_signature(&self.inputs, inputs)
    }

    /// How many times [`Self::run`] has launched the graph.
    pub fn replays(&self) -> u64 {
        self.replays.get()
    }

    /// The outputs for `inputs` (same shapes, dtypes and absent inputs as at capture).
    /// They are the graph's static tensors: the next run overwrites them.
    pub fn run(&self, inputs: &[Option<Tensor>]) -> Result<Vec<(String, Tensor)>> {
        if !same_signature(&self.inputs, inputs) {
            bail!(
                "--cuda-graph: the inputs differ in shape, dtype or presence from the ones the graph was captured with"
            );
        }
        fill(&self.inputs, inputs)?;
        self.graph.replay()?;
        self.replays.set(self.replays.get() + 1);
        Ok(self.outputs.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect())
    }
}

/// What one training batch gives: the loss (0-d) and the gradients with respect to
/// the parameters (an undefined tensor where a parameter got none; empty when the
/// loss does not depend on any parameter).
pub type LossAndGrads = (Tensor, Vec<Tensor>);

/// Forward, loss and backward of one training batch, captured at the shapes of the
/// batch it was captured with.
pub struct GraphedStep {
    graph: CudaGraph,
    inputs: Vec<Option<Tensor>>,
    labels: Vec<Option<Tensor>>,
    loss: Tensor,
    grads: Vec<Tensor>,
}

impl GraphedStep {
    /// Capture `step(inputs, labels)`, which must compute the loss with autograd and
    /// take its gradients without synchronizing with the host. The parameters it
    /// reads must stay in place (the optimizer updates them in place).
    pub fn capture(
        inputs: &[Option<Tensor>],
        labels: &Tensor,
        mut step: impl FnMut(Vec<Option<Tensor>>, &Tensor) -> Result<LossAndGrads>,
    ) -> Result<GraphedStep> {
        let labels = vec![Some(labels.shallow_clone())];
        let (buf_in, buf_labels) = (statics(inputs)?, statics(&labels)?);
        fill(&buf_in, inputs)?;
        fill(&buf_labels, &labels)?;
        let mut graph = CudaGraph::new()?;
        let label_buf = buf_labels[0].as_ref().expect("labels are present").shallow_clone();
        let (loss, grads) = graph.capture(WARMUP, || {
            let (loss, grads) = step(shallow(&buf_in), &label_buf)?;
            Ok((loss.f_detach()?, grads))
        })?;
        Ok(GraphedStep { graph, inputs: buf_in, labels: buf_labels, loss, grads })
    }

    /// Whether a batch has the shapes, dtypes and inputs the graph was captured with.
    pub fn fits(&self, inputs: &[Option<Tensor>], labels: &Tensor) -> bool {
        same_signature(&self.inputs, inputs) && same_signature(&self.labels, &[Some(labels.shallow_clone())])
    }

    /// Loss and gradients for a batch that [`Self::fits`]: the graph's static tensors,
    /// overwritten by the next run (copy what must outlive it).
    pub fn run(&self, inputs: &[Option<Tensor>], labels: &Tensor) -> Result<LossAndGrads> {
        if !self.fits(inputs, labels) {
            return Err(anyhow!("internal error: a batch that does not fit the captured CUDA graph"));
        }
        fill(&self.inputs, inputs)?;
        fill(&self.labels, &[Some(labels.shallow_clone())])?;
        self.graph.replay()?;
        Ok((self.loss.shallow_clone(), self.grads.iter().map(Tensor::shallow_clone).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_flag_and_the_reason() {
        let e = require("--cuda-graph", Device::Cpu).unwrap_err().to_string();
        assert!(e.starts_with("--cuda-graph"), "{e}");
        if BUILT {
            assert!(e.contains("CUDA device"), "{e}");
        } else {
            assert!(e.contains("--features cuda-graphs"), "{e}");
        }
    }

    #[test]
    fn without_a_gpu_nothing_can_be_captured() {
        if cuda_graphs_available() {
            return;
        }
        let e = CudaGraph::new().err().expect("no graph without a CUDA device").to_string();
        let want = if BUILT { "no CUDA device" } else { "--features cuda-graphs" };
        assert!(e.contains(want), "{e}");
    }
}
