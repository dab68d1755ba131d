//! The LibTorch backend behind the [`Backend`] / [`Executable`] seam.
//!
//! `prepare` places the parameters on the device in the compute dtype once; `run`
//! copies host inputs in (float inputs converted to the compute dtype), runs the plan
//! without autograd (or replays a CUDA graph captured at the first inputs of each
//! shape) and copies the outputs back. A training run wraps its live parameters
//! ([`TorchExecutable::over`]) to validate without copying them.

use super::convert::{device, place, to_host, to_tensor};
use super::cuda_graph::{self, GraphedForward};
use super::exec::{self, torch_message};
use super::{is_float_kind, kind_of};
use crate::backend::plan::Plan;
use crate::backend::{time_runs, Backend, BackendError, Device, Executable, Options};
use crate::ir::DType;
use crate::tensor::HostTensor;
use tch::{Kind, TchError, Tensor};

/// LibTorch (`tch`): CPU and CUDA, f32 / bf16 / f16, CUDA graphs with `cuda-graphs`.
pub struct TorchBackend;

fn tch_err(what: &str) -> impl Fn(TchError) -> BackendError + '_ {
    move |e| BackendError::runtime(what, torch_message(&e))
}

impl Backend for TorchBackend {
    fn name(&self) -> &'static str {
        "torch"
    }

    fn has_device(&self, d: Device) -> bool {
        match d {
            Device::Cpu => true,
            Device::Cuda(i) => tch::Cuda::is_available() && (i as i64) < tch::Cuda::device_count(),
        }
    }

    fn check(&self, opts: &Options) -> Result<(), BackendError> {
        if !matches!(opts.float, DType::F32 | DType::BF16 | DType::F16) {
            return Err(BackendError::Unsupported(format!(
                "torch computes in f32, bf16 or f16, not {}",
                opts.float.name()
            )));
        }
        if !self.has_device(opts.device) {
            return Err(BackendError::Unsupported(format!("no {:?} device is available to LibTorch", opts.device)));
        }
        if opts.graph_capture {
            cuda_graph::require("--cuda-graph", device(opts.device))
                .map_err(|e| BackendError::Unsupported(format!("{e:#}")))?;
        }
        Ok(())
    }

    fn prepare(
        &self,
        plan: &Plan,
        params: Vec<HostTensor>,
        opts: &Options,
    ) -> Result<Box<dyn Executable>, BackendError> {
        self.check(opts)?;
        let dev = device(opts.device);
        if params.len() != plan.params().len() {
            return Err(BackendError::Internal(format!(
                "{} values for {} parameters",
                params.len(),
                plan.params().len()
            )));
        }
        let float = kind_of(opts.float);
        let params = params
            .iter()
            .map(|h| {
                let t = to_tensor(h)?;
                let kind = if is_float_kind(t.kind()) { float } else { t.kind() };
                t.f_to_device(dev)?.f_to_kind(kind)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(tch_err("placing parameters"))?;
        let mut exe = TorchExecutable::over(plan.clone(), params, dev, float);
        exe.capture = opts.graph_capture;
        Ok(Box::new(exe))
    }
}

/// A plan with its parameters on one device.
pub struct TorchExecutable {
    plan: Plan,
    params: Vec<Tensor>,
    device: tch::Device,
    float: Kind,
    capture: bool,
    graphed: Option<GraphedForward>,
    /// Graphs captured so far (one per change of input shapes or present inputs).
    captures: u64,
}

impl TorchExecutable {
    /// Over given parameter tensors (in plan order, already placed): shallow clones of
    /// a training run's variables see every optimizer step.
    pub fn over(plan: Plan, params: Vec<Tensor>, device: tch::Device, float: Kind) -> TorchExecutable {
        TorchExecutable { plan, params, device, float, capture: false, graphed: None, captures: 0 }
    }

    /// Host inputs on the device, float ones in the compute dtype.
    pub fn place(&self, inputs: &[Option<HostTensor>]) -> Result<Vec<Option<Tensor>>, BackendError> {
        place(self.plan.inputs(), inputs, self.device, self.float)
    }

    /// With `--cuda-graph`: a graph for the shapes, dtypes and present inputs of
    /// `ins`, captured now unless the current one fits (the old graph's buffers are
    /// freed first). Without it: nothing.
    fn ensure_graph(&mut self, ins: &[Option<Tensor>]) -> Result<(), BackendError> {
        if !self.capture || self.graphed.as_ref().is_some_and(|g| g.fits(ins)) {
            return Ok(());
        }
        self.graphed = None;
        let g = GraphedForward::capture(&self.plan, &self.params, ins)
            .map_err(|e| BackendError::runtime("--cuda-graph", format!("{e:#}")))?;
        self.graphed = Some(g);
        self.captures += 1;
        Ok(())
    }

    /// One forward on placed inputs (one replay with `--cuda-graph`); outputs stay
    /// on the device.
    fn forward(&mut self, ins: &[Option<Tensor>]) -> Result<Vec<(String, Tensor)>, BackendError> {
        if !self.capture {
            let ins = ins.iter().map(|t| t.as_ref().map(Tensor::shallow_clone)).collect();
            return tch::no_grad(|| exec::run(&self.plan, &self.params, ins));
        }
        self.ensure_graph(ins)?;
        let g = self.graphed.as_ref().expect("captured above");
        g.run(ins).map_err(|e| BackendError::runtime("--cuda-graph", format!("{e:#}")))
    }
}

impl Executable for TorchExecutable {
    fn run(&mut self, inputs: &[Option<HostTensor>]) -> Result<Vec<(String, HostTensor)>, BackendError> {
        let ins = self.place(inputs)?;
        let outs = self.forward(&ins)?;
        outs.iter().map(|(n, t)| Ok((n.clone(), to_host(t)?))).collect()
    }

    fn time_forward(
        &mut self,
        inputs: &[Option<HostTensor>],
        warmup: usize,
        iters: usize,
    ) -> Result<Vec<f64>, BackendError> {
        let ins = self.place(inputs)?;
        // Capture (when these shapes have no graph yet) outside the timed runs; a graph
        // that fits is reused, so each timed forward is exactly one replay.
        self.ensure_graph(&ins)?;
        let dev = self.device;
        time_runs(
            warmup,
            iters,
            || synchronize(dev),
            |_| {
                drop(self.forward(&ins)?);
                Ok(())
            },
        )
    }

    fn report(&self) -> Vec<(String, f64)> {
        match &self.graphed {
            Some(g) => vec![
                ("cuda_graph_captures".into(), self.captures as f64),
                ("cuda_graph_replays".into(), g.replays() as f64),
            ],
            None => Vec::new(),
        }
    }
}

/// Wait for everything issued on a CUDA device (nothing to wait for on the CPU).
fn synchronize(device: tch::Device) {
    if let tch::Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}
