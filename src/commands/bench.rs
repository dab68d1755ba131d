//! `graft bench`: compile time and forward latency of specs, or their training steps,
//! measured side by side in one process with one thread count.
//!
//! `graft bench SPEC... [--batch 1,8] [--iters N] [--warmup N] [--threads N]
//! [--mode infer|train] [--json]`. Parameters are random (init rules, or a seeded
//! fallback), so no weights files are needed: latency does not depend on values.
//! Every symbolic dim is set to the batch size. Figures are medians; compare specs
//! within one run only, as ratios. The forward runs on the backend seam
//! ([`crate::backend::Executable::time_forward`]); compile time is the pipeline as
//! configured (set `GRAFT_VERIFY=1` to include the verifier after every pass, as
//! `scripts/bench.sh` does).
//!
//! `graft bench --train SPEC... [--lr X] [--no-memory]` measures training steps
//! instead ([`crate::backend::torch::bench`]); specs compile in train mode.

use super::{backend, options, DeviceArg, DtypeArg, ModeArg};
use crate::api::compile_file;
use crate::backend::torch::bench::{self as train_bench, TrainBenchConfig, TrainReport};
use crate::backend::{inputs, Plan};
use crate::params::init::random_values;
use crate::pipeline::Mode;
use crate::report::{param_report, thousands};
use anyhow::{anyhow, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Specs to measure, side by side.
    #[arg(required = true)]
    pub specs: Vec<PathBuf>,
    /// Batch sizes (every symbolic dim takes this value).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub batch: Vec<i64>,
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Intra-op threads for LibTorch (default: what LibTorch chooses).
    #[arg(long)]
    pub threads: Option<i32>,
    #[arg(long, value_enum, default_value = "infer")]
    pub mode: ModeArg,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Time replays of a CUDA graph of the forward, captured once per batch size
    /// (CUDA only; `cuda-graphs` build).
    #[arg(long = "cuda-graph", conflicts_with = "train")]
    pub cuda_graph: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Measure training steps (forward, loss, backward, AdamW) and peak memory
    /// instead of forward latency; specs compile in train mode.
    #[arg(long)]
    pub train: bool,
    /// Learning rate of the AdamW steps (--train).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Skip the peak-memory probes (--train).
    #[arg(long)]
    pub no_memory: bool,
    /// Internal: measure one spec's memory in this process and print it as JSON.
    #[arg(long, hide = true)]
    pub memory_probe: bool,
}

#[derive(Serialize)]
pub struct SpecTiming {
    pub spec: String,
    pub model: String,
    pub params: u64,
    /// Source → verified IR, median of 10.
    pub compile_ms: f64,
    /// Batch → median forward latency.
    pub forward_ms: Vec<(i64, f64)>,
}

#[derive(Serialize)]
pub struct BenchReport {
    pub threads: i32,
    pub mode: Mode,
    pub specs: Vec<SpecTiming>,
}

/// The median (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn measure(spec: &Path, a: &BenchArgs) -> Result<SpecTiming> {
    let mode = a.mode.into();
    let mut compiles = Vec::new();
    let mut compiled = None;
    for _ in 0..10 {
        let t0 = Instant::now();
        let c = compile_file(spec, mode).map_err(|f| anyhow!("{}", crate::api::render_failure(&f, false)))?;
        compiles.push(t0.elapsed().as_secs_f64() * 1e3);
        compiled = Some(c);
    }
    let c = compiled.expect("compiled ten times");
    let plan = Plan::new(&c.graph);
    let backend = backend();
    let opts = options(backend.as_ref(), a.device, DtypeArg::F32, a.cuda_graph)?;
    let values = plan.params.iter().map(|p| random_values(p, 0)).collect();
    let mut exe = backend.prepare(&plan, values, &opts)?;
    let mut forward_ms = Vec::new();
    for &b in &a.batch {
        let given = inputs::random(&plan, b, 0)?;
        let bound = inputs::bind(&plan, given, opts.float)?;
        let times = exe.time_forward(&bound.values, a.warmup, a.iters)?;
        forward_ms.push((b, median(times)));
    }
    Ok(SpecTiming {
        spec: spec.display().to_string(),
        model: c.model.clone(),
        params: param_report(&c).total,
        compile_ms: median(compiles),
        forward_ms,
    })
}

/// `graft bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    if a.memory_probe || a.train {
        let backend = backend();
        let cfg = TrainBenchConfig {
            specs: a.specs.clone(),
            batch: a.batch.clone(),
            iters: a.iters,
            warmup: a.warmup,
            lr: a.lr,
            memory: !a.no_memory,
            device: crate::backend::torch::convert::device(a.device.device(backend.as_ref())?),
        };
        if a.memory_probe {
            let m = train_bench::memory_probe(&cfg)?;
            println!("{}", serde_json::to_string(&m)?);
            return Ok(());
        }
        let report = train_bench::bench_train(&cfg)?;
        if a.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print_train(&report);
        }
        return Ok(());
    }
    let specs = a.specs.iter().map(|s| measure(s, &a)).collect::<Result<Vec<_>>>()?;
    let report = BenchReport { threads: tch::get_num_threads(), mode: a.mode.into(), specs };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!("threads {}, mode {:?}, medians of {} runs", report.threads, report.mode, a.iters);
    let base = &report.specs[0];
    for s in &report.specs {
        let lat: Vec<String> = s
            .forward_ms
            .iter()
            .zip(&base.forward_ms)
            .map(|((b, ms), (_, base_ms))| format!("batch {b}: {ms:.2} ms ({:.3}x)", ms / base_ms))
            .collect();
        println!(
            "{:<32} {:>14} params  compile {:.2} ms  {}",
            s.model,
            thousands(s.params),
            s.compile_ms,
            lat.join("  ")
        );
    }
    Ok(())
}

fn print_train(r: &TrainReport) {
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
                thousands(s.params),
                thousands(s.trainable),
                t.step_ms,
                t.step_ms / bb.step_ms,
                peak,
                peak_ratio,
                state
            );
        }
    }
}
