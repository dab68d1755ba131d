//! `graft bench --train SPEC... [--batch 1,8] [--iters N] [--warmup N] [--lr X]
//! [--no-memory] [--cuda-graph] [--autocast bf16] [--json]`: training steps of several specs side by side (forward,
//! cross-entropy, backward, AdamW), and the peak memory of each (CPU). Specs compile
//! in train mode here; LibTorch times the steps
//! ([`crate::backend::torch::bench`]), in this process, and returns the report as data,
//! printed here as a table or one JSON object.
//!
//! `--memory-probe` (hidden) measures one spec at one batch size and prints its
//! memory as JSON.

#[cfg(feature = "torch")]
use super::{backend, BackendArg};
use super::{DeviceArg, EngineArgs};
use anyhow::Result;
use std::path::PathBuf;

/// The flags of `graft bench` that `--train` reads.
pub struct TrainBenchArgs<'a> {
    pub specs: &'a [PathBuf],
    pub batch: &'a [i64],
    pub iters: usize,
    pub warmup: usize,
    pub engine: &'a EngineArgs,
    pub device: DeviceArg,
    pub json: bool,
    pub lr: f64,
    pub no_memory: bool,
    pub memory_probe: bool,
    /// Capture each spec's whole step in a CUDA graph and time its replays.
    pub cuda_graph: bool,
    /// Autocast the steps' CUDA ops to bf16.
    pub autocast: bool,
}

/// `graft bench --train` (and its memory probe): LibTorch only.
#[cfg(feature = "torch")]
pub fn run(a: &TrainBenchArgs) -> Result<()> {
    use crate::backend::torch::bench::{bench_train, memory_probe, TrainBenchConfig};
    if let Some(t) = a.engine.threads {
        tch::set_num_threads(t as i32);
    }
    if !(a.lr.is_finite() && a.lr >= 0.0) {
        anyhow::bail!("--lr must be a finite number >= 0");
    }
    let backend = backend(BackendArg::Torch, a.engine)?;
    let device = crate::backend::torch::convert::device(a.device.device(backend.as_ref())?);
    let specs = a.specs.iter().map(|p| model(p)).collect::<Result<Vec<_>>>()?;
    let cfg = TrainBenchConfig {
        specs,
        batch: a.batch.to_vec(),
        iters: a.iters,
        warmup: a.warmup,
        lr: a.lr,
        weight_decay: super::train::DEFAULT_WEIGHT_DECAY,
        memory: !a.no_memory,
        device,
        cuda_graph: a.cuda_graph,
        autocast: a.autocast,
    };
    if a.memory_probe {
        let ([spec], [batch]) = (cfg.specs.as_slice(), cfg.batch.as_slice()) else {
            anyhow::bail!("--memory-probe measures one spec at one batch size");
        };
        let m = memory_probe(spec, *batch, &cfg)?;
        println!("{}", serde_json::to_string(&m)?);
        return Ok(());
    }
    let report = bench_train(&cfg)?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_train(&report);
    }
    Ok(())
}

#[cfg(not(feature = "torch"))]
pub fn run(_: &TrainBenchArgs) -> Result<()> {
    anyhow::bail!("graft bench --train: training needs a graft built with `--features torch` (after scripts/setup.sh)")
}

/// Compile `path` for training (logits `[B, classes]` first, `classes` fixed).
#[cfg(feature = "torch")]
fn model(path: &std::path::Path) -> Result<crate::backend::torch::bench::BenchModel> {
    let spec = super::train::spec::Spec::compile(path)?;
    let Some(classes) = spec.classes else {
        anyhow::bail!(
            "{}: output `{}` needs a fixed number of classes for random labels",
            path.display(),
            spec.output_name
        );
    };
    Ok(crate::backend::torch::bench::BenchModel {
        spec: path.display().to_string(),
        model: spec.compiled.model.clone(),
        matmul_macs: crate::flops::step_macs(&spec.compiled.graph),
        plan: spec.plan,
        output: spec.output,
        classes,
    })
}

#[cfg(feature = "torch")]
fn print_train(r: &crate::backend::torch::bench::TrainReport) {
    println!(
        "threads {}, device {}: training steps (forward, cross-entropy, backward, AdamW), medians of {} interleaved steps after {} warmup",
        r.threads, r.device, r.iters, r.warmup
    );
    if let Some(note) = &r.memory_note {
        println!("memory: {note}");
    }
    let unreset = r.specs.iter().flat_map(|s| &s.batches).any(|b| b.memory.as_ref().is_some_and(|m| !m.peak_reset));
    if unreset {
        println!("memory: * VmHWM could not be reset (/proc/self/clear_refs): counted from the probe's start");
    }
    let Some(base) = r.specs.first() else { return };
    for (k, bb) in base.batches.iter().enumerate() {
        println!(
            "batch {:<4} {:>30} {:>12} {:>10} {:>7} {:>10} {:>7} {:>10}",
            bb.batch, "params", "trainable", "step ms", "ratio", "peak MiB", "ratio", "state MiB"
        );
        for s in &r.specs {
            let t = &s.batches[k];
            let (peak, peak_ratio, state) = match (&t.memory, &bb.memory) {
                (Some(m), Some(m0)) => (
                    format!("{:.0}{}", m.peak_mib, if m.peak_reset { "" } else { "*" }),
                    format!("{:.3}", m.peak_mib / m0.peak_mib),
                    format!("{:.0}", m.state_mib),
                ),
                _ => ("-".into(), "-".into(), "-".into()),
            };
            println!(
                "  {:<24} {:>16} {:>12} {:>10.1} {:>7.3} {:>10} {:>7} {:>10}",
                s.model,
                crate::report::thousands(s.params),
                crate::report::thousands(s.trainable),
                t.step_ms,
                t.step_ms / bb.step_ms,
                peak,
                peak_ratio,
                state
            );
        }
    }
}
