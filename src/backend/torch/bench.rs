//! `graft bench`: compile time and forward latency of specs, measured side by side in
//! one process with one thread count.
//!
//! `graft bench SPEC... [--batch 1,8] [--iters N] [--warmup N] [--threads N]
//! [--mode infer|train] [--json]`. Parameters are random (init rules, or a seeded
//! fallback), so no weights files are needed: latency does not depend on values.
//! Every symbolic dim is set to the batch size. Figures are medians; compare specs
//! within one run only, as ratios.

use super::exec;
use super::inputs;
use super::params::{fallback_init, init_tensor, ParamStore};
use super::{kind_of, DeviceArg};
use crate::api::compile_file;
use crate::ir::{Init, ParamSource};
use crate::pipeline::Mode;
use crate::report::param_report;
use anyhow::{anyhow, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
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
    pub mode: Mode,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn measure(spec: &Path, a: &BenchArgs) -> Result<SpecTiming> {
    std::env::set_var("GRAFT_VERIFY", "1");
    let mut compiles = Vec::new();
    let mut compiled = None;
    for _ in 0..10 {
        let t0 = Instant::now();
        let c = compile_file(spec, a.mode).map_err(|f| anyhow!("{}", crate::api::render_failure(&f, false)))?;
        compiles.push(t0.elapsed().as_secs_f64() * 1e3);
        compiled = Some(c);
    }
    let c = compiled.expect("compiled ten times");
    let plan = super::cli::plan_of(&c)?;
    let device = a.device.device()?;
    let values = plan
        .params
        .iter()
        .map(|p| {
            let init = match &p.source {
                ParamSource::Init { init } => init.clone(),
                ParamSource::Weights { .. } | ParamSource::Folded { .. } => fallback_init(p),
            };
            let init = if matches!(init, Init::Zeros) { Init::Normal { std: 0.02 } } else { init };
            init_tensor(&init, &p.shape, kind_of(p.dtype), 0, &p.path)
        })
        .collect::<Result<Vec<_>>>()?;
    let store = ParamStore::from_values(&plan, values, device, tch::Kind::Float)?;
    let mut forward_ms = Vec::new();
    for &b in &a.batch {
        let given = inputs::random(&plan, b, 0)?;
        let (ins, _) = inputs::bind(&plan, given, tch::Kind::Float, device)?;
        let mut times = Vec::new();
        tch::no_grad(|| -> Result<()> {
            for i in 0..a.warmup + a.iters {
                let t0 = Instant::now();
                let outs = exec::run(
                    &plan,
                    &store.tensors,
                    ins.iter().map(|t| t.as_ref().map(|t| t.shallow_clone())).collect(),
                )?;
                if let tch::Device::Cuda(i) = device {
                    tch::Cuda::synchronize(i as i64);
                }
                drop(outs);
                if i >= a.warmup {
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            Ok(())
        })?;
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
pub fn bench(a: BenchArgs) -> Result<ExitCode> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let specs = a.specs.iter().map(|s| measure(s, &a)).collect::<Result<Vec<_>>>()?;
    let report = BenchReport { threads: tch::get_num_threads(), mode: a.mode, specs };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
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
            crate::report::thousands(s.params),
            s.compile_ms,
            lat.join("  ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
