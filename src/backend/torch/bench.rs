//! Training-step benchmarks (`graft bench --train`): steps of several specs measured
//! side by side, as `graft train` takes them.
//!
//! A step is the forward with autograd, cross-entropy of the first output against
//! random labels, gradients of exactly the trainable parameters, their global norm,
//! one AdamW step (weight decay 0.01 on matrices). Parameters are random (init rules,
//! or a seeded fallback). Specs' steps are interleaved (one step of each spec per
//! round, the starting spec rotating), so a slow spell of a shared machine falls on
//! every spec alike. Peak memory is measured per spec and batch after all timing (see
//! [`memory_probe`]): the growth of the peak resident set over the process before the
//! model was built, i.e. parameters, optimizer state, gradients, activations and
//! workspace. On CUDA no memory is reported: `tch` exposes no CUDA allocator
//! statistics. Nothing here prints: reports are returned as data. The caller compiles
//! the specs ([`BenchModel`]).

use super::convert::{place, to_tensor};
use super::train::device_step::{train_step, DeviceStep, StepGraphs, StepParts};
use super::train::model::Model;
use super::train::optim::AdamW;
use crate::backend::{inputs, Plan};
use crate::ir::DType;
use crate::params::init::{draw, random_values};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// One spec compiled for training.
#[derive(Clone, Debug)]
pub struct BenchModel {
    /// The spec file, as given.
    pub spec: String,
    pub model: String,
    pub plan: Plan,
    /// Index into `plan.outputs` of the logits `[B, classes]`.
    pub output: usize,
    /// The number of classes random labels are drawn from.
    pub classes: i64,
    pub matmul_macs: crate::flops::StepMacs,
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct TrainBenchConfig {
    pub specs: Vec<BenchModel>,
    pub batch: Vec<i64>,
    pub iters: usize,
    pub warmup: usize,
    pub lr: f64,
    /// AdamW's decoupled weight decay (on tensors of two or more dimensions).
    pub weight_decay: f64,
    /// Measure peak memory (CPU only), after the timing.
    pub memory: bool,
    pub device: Device,
    /// Capture each spec's whole step (forward, backward, clipping, AdamW) in a CUDA
    /// graph per batch size and time its replays.
    pub cuda_graph: bool,
    /// Autocast CUDA ops to bf16 in the steps (`--autocast bf16`).
    pub autocast: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Resident-set memory of one spec's training steps (MiB, from `/proc/self/status`).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Memory {
    /// Resident-set growth once parameters, optimizer state and inputs exist.
    pub state_mib: f64,
    /// Peak resident-set growth over two training steps (state, gradients,
    /// activations, workspace): VmHWM minus VmRSS before the model was built.
    pub peak_mib: f64,
    /// Whether VmHWM was reset before the model was built (`/proc/self/clear_refs`);
    /// if not, it counts from the probe's start (compilation included, far smaller).
    pub peak_reset: bool,
}

#[derive(Serialize)]
pub struct TrainBatch {
    pub batch: i64,
    /// Median step time.
    pub step_ms: f64,
    /// Every measured step, in order.
    pub steps_ms: Vec<f64>,
    /// The loss of the first step (random weights, random labels: about ln(classes)).
    pub first_loss: f64,
    pub memory: Option<Memory>,
}

#[derive(Serialize)]
pub struct TrainTiming {
    pub spec: String,
    pub model: String,
    pub params: u64,
    pub trainable: u64,
    /// Matrix-multiply work of one step per sample ([`crate::flops`]): the floor the
    /// step time of two specs can be compared against.
    pub matmul_macs: crate::flops::StepMacs,
    pub batches: Vec<TrainBatch>,
}

#[derive(Serialize)]
pub struct TrainReport {
    pub threads: i32,
    pub device: String,
    pub iters: usize,
    pub warmup: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Where `memory` is null: why.
    pub memory_note: Option<String>,
    pub specs: Vec<TrainTiming>,
}

/// One spec ready for training steps: random parameters, AdamW over the trainable
/// ones, random inputs and labels for the current batch size.
struct TrainBench {
    name: String,
    model: Model,
    opt: AdamW,
    params: Vec<Tensor>,
    inputs: Vec<Option<Tensor>>,
    labels: Option<Tensor>,
    classes: i64,
    dev: DeviceStep,
    graphs: Option<StepGraphs>,
    autocast: bool,
}

impl TrainBench {
    fn new(
        spec: &BenchModel,
        (lr, weight_decay): (f64, f64),
        device: Device,
        graph: (bool, bool),
    ) -> Result<TrainBench> {
        let (cuda_graph, autocast) = graph;
        let values = spec.plan.params().iter().map(|p| random_values(p, 0)).collect();
        let model = Model::new(&spec.plan, spec.output, values, device)?;
        let opt = AdamW::new(model.trainable(), lr, &[], weight_decay, &model.frozen_paths())?;
        let params = opt.params();
        let dev = DeviceStep::new(device, 1)?;
        let graphs = cuda_graph.then(StepGraphs::default);
        let (name, classes) = (spec.model.clone(), spec.classes);
        Ok(TrainBench { name, model, opt, params, inputs: Vec::new(), labels: None, classes, dev, graphs, autocast })
    }

    /// Random inputs (every symbolic dim `batch`) and labels in `0..classes`.
    fn bind(&mut self, batch: i64) -> Result<()> {
        let plan = &self.model.plan;
        let given = inputs::random(plan, batch, 0)?;
        let bound = inputs::bind(plan, given, DType::F32)?;
        self.inputs = place(plan.inputs(), &bound.values, self.model.device, Kind::Float)?;
        let classes = self.classes as f64;
        let labels = draw(&[batch], 0, "labels", |r| (r.uniform() * classes).floor());
        self.labels = Some(to_tensor(&labels)?.f_to_kind(Kind::Int64)?.f_to_device(self.model.device)?);
        Ok(())
    }

    /// One optimizer step as `graft train` takes it with one batch per step and no
    /// clipping: forward with autograd, cross-entropy (mean), gradients of exactly the
    /// trainable parameters, their global norm, the non-finite check and the fused
    /// AdamW, all on the device (replayed as one CUDA graph with `--cuda-graph`); then
    /// the loss and norm are read back, which waits for the step. Returns the loss.
    fn step(&mut self) -> Result<f64> {
        let labels = self.labels.as_ref().ok_or_else(|| anyhow!("internal error: no batch bound"))?;
        let mut parts = StepParts {
            model: &self.model,
            params: &self.params,
            opt: &mut self.opt,
            clip: None,
            autocast: self.autocast,
            dev: &self.dev,
        };
        let (loss, norm) = match &mut self.graphs {
            Some(g) => g.step(&mut parts, &self.inputs, labels)?,
            None => {
                let ins = self.inputs.iter().map(|t| t.as_ref().map(|t| t.shallow_clone())).collect();
                train_step(&mut parts, None, ins, labels)?
            }
        };
        self.dev.record(0, &loss, &norm)?;
        let (values, bad) = self.dev.drain()?;
        if bad {
            let v = values.first().copied();
            bail!("model `{}`: loss {:?}, gradient norm {:?}", self.name, v.map(|v| v.loss), v.map(|v| v.grad_norm));
        }
        Ok(values.first().map_or(f64::NAN, |v| v.loss))
    }
}

/// A `/proc/self/status` field in kB (`VmRSS`, `VmHWM`).
fn status_kb(field: &str) -> Result<u64> {
    let text = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .ok_or_else(|| anyhow!("/proc/self/status has no {field}"))
}

/// Peak memory of one spec's training steps at one batch size, measured in this
/// process: the model is built, bound and stepped twice, and the growth of the
/// resident set over the moment before it was built is reported. Call it after any
/// timing: it pins glibc's mmap threshold at 64 KiB for the rest of the process, so
/// that tensors are mapped and unmapped one by one and the resident set follows the
/// live tensors (the default, dynamic threshold keeps freed blocks of up to 32 MiB in
/// the heap, and would make what earlier models freed count or not by chance).
pub fn memory_probe(spec: &BenchModel, batch: i64, a: &TrainBenchConfig) -> Result<Memory> {
    let device = a.device;
    if device != Device::Cpu {
        bail!("--memory-probe measures host memory: use --device cpu");
    }
    allocator::pin_mmap_threshold(64 << 10);
    allocator::trim();
    let base = status_kb("VmRSS")?;
    // Writing 5 resets VmHWM to the current resident set (Linux 4.0+).
    let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let mut tb = TrainBench::new(spec, (a.lr, a.weight_decay), device, (false, false))?;
    tb.bind(batch)?;
    let state = status_kb("VmRSS")?;
    for _ in 0..2 {
        tb.step()?;
    }
    let peak = status_kb("VmHWM")?;
    let mib = |kb: u64| kb.saturating_sub(base) as f64 / 1024.0;
    Ok(Memory { state_mib: mib(state), peak_mib: mib(peak), peak_reset })
}

/// glibc's allocator settings for [`memory_probe`] (elsewhere: nothing to set).
mod allocator {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }

    /// Allocations of at least `bytes` are mapped on their own (`M_MMAP_THRESHOLD`).
    pub fn pin_mmap_threshold(bytes: i32) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes the allocator's tuning; M_MMAP_THRESHOLD (-3)
        // accepts any value up to 32 MiB.
        unsafe {
            mallopt(-3, bytes);
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        let _ = bytes;
    }

    /// Return the heap's free memory to the system.
    pub fn trim() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory; no pointer is invalidated.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// `graft bench --train`: every spec's steps at every batch size.
pub fn bench_train(a: &TrainBenchConfig) -> Result<TrainReport> {
    if !(a.lr.is_finite() && a.lr >= 0.0) {
        bail!("--lr must be a finite number >= 0");
    }
    if a.iters == 0 || a.batch.iter().any(|&b| b < 1) {
        bail!("--iters and every --batch must be at least 1");
    }
    let device = a.device;
    if a.cuda_graph {
        super::cuda_graph::require("--cuda-graph", device)?;
    }
    if a.autocast {
        super::cuda_graph::require("--autocast", device)?;
    }
    tch::manual_seed(0);
    let mut benches = Vec::with_capacity(a.specs.len());
    let mut specs = Vec::with_capacity(a.specs.len());
    for spec in &a.specs {
        let (params, trainable) = spec
            .plan
            .params()
            .iter()
            .fold((0, 0), |(n, t), p| (n + p.numel(), if p.trainable { t + p.numel() } else { t }));
        specs.push(TrainTiming {
            spec: spec.spec.clone(),
            model: spec.model.clone(),
            params,
            trainable,
            matmul_macs: spec.matmul_macs,
            batches: Vec::new(),
        });
        benches.push(TrainBench::new(spec, (a.lr, a.weight_decay), device, (a.cuda_graph, a.autocast))?);
    }
    let memory_note = match (!a.memory, device) {
        (true, _) => Some("not measured (--no-memory)".to_string()),
        (false, Device::Cpu) => None,
        (false, _) => Some("not measured on CUDA: tch exposes no CUDA allocator statistics".to_string()),
    };
    let n = benches.len();
    for &b in &a.batch {
        let mut first_loss = vec![f64::NAN; n];
        for (tb, l) in benches.iter_mut().zip(&mut first_loss) {
            tb.bind(b)?;
            *l = tb.step()?;
        }
        for _ in 1..a.warmup {
            for tb in &mut benches {
                tb.step()?;
            }
        }
        // Round i runs every spec once, starting with spec i mod n.
        let mut times = vec![Vec::with_capacity(a.iters); n];
        for i in 0..a.iters {
            for k in 0..n {
                let j = (i + k) % n;
                let t0 = Instant::now();
                benches[j].step()?;
                times[j].push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        for (j, steps_ms) in times.into_iter().enumerate() {
            let (step_ms, first_loss) = (median(steps_ms.clone()), first_loss[j]);
            specs[j].batches.push(TrainBatch { batch: b, step_ms, steps_ms, first_loss, memory: None });
        }
    }
    drop(benches);
    if memory_note.is_none() {
        // After every timed step: the probes change how the allocator maps memory.
        for (timing, spec) in specs.iter_mut().zip(&a.specs) {
            for tb in &mut timing.batches {
                tb.memory = Some(memory_probe(spec, tb.batch, a)?);
            }
        }
    }
    let report = TrainReport {
        threads: tch::get_num_threads(),
        device: match device {
            Device::Cuda(i) => format!("cuda:{i}"),
            other => format!("{other:?}").to_lowercase(),
        },
        iters: a.iters,
        warmup: a.warmup.max(1),
        lr: a.lr,
        weight_decay: a.weight_decay,
        memory_note,
        specs,
    };
    Ok(report)
}
