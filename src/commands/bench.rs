//! `graft bench`: compile time and forward latency of specs, or their training steps,
//! measured side by side in one process with one thread count.
//!
//! `graft bench SPEC... [--batch 1,8] [--iters N] [--warmup N] [--threads N]
//! [--mode infer|train] [--weights N:BINDING=FILE]... [--allow-missing PATTERN]...
//! [--backend native,torch] [--elementwise unfused|blocks|jit] [--simd LEVEL]
//! [--verify-each-pass] [--json]`. Parameters are random (init rules, or a seeded
//! fallback), so no weights files are needed: latency does not depend on values.
//! `--weights 2:video_vit=F` loads the second spec's binding from a file instead (a
//! deployed checkpoint is then measured as it is: its parameters come from the file,
//! strictly).
//! Every symbolic dim is set to the batch size. Figures are medians; compare specs
//! within one run only, as ratios. The forward runs on the backend seam
//! ([`crate::backend::Executable::time_forward`]); compile time is the pipeline with
//! the final verification only (`--verify-each-pass` adds the verifier after every
//! pass, as `cargo bench --bench compile` times it). With several backends, each spec and batch is timed on
//! every backend in turn, one forward at a time (interleaved), so ratios between
//! backends see the same machine state.
//!
//! `graft bench --train SPEC... [--lr X] [--no-memory]` measures training steps
//! instead ([`super::bench_train`]); specs compile in train mode. `graft bench --paced`
//! runs single forwards on request from stdin (`bench_paced`, which `main` calls).

use super::{backend, bindings, options, BackendArg, DeviceArg, DtypeArg, EngineArgs, ModeArg};
use crate::api::compile_file_with;
use crate::backend::{inputs, Executable, Plan};
use crate::ir::DType;
use crate::params::init::random_values;
use crate::params::{materialise, Declared, Leaves};
use crate::pipeline::{CompileOptions, Compiled, Mode};
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
    #[arg(long, value_delimiter = ',', default_value = "1,8", value_parser = crate::bounds::batch_i64())]
    pub batch: Vec<i64>,
    #[arg(long, default_value_t = 10, value_parser = crate::bounds::count(crate::bounds::MAX_ITERS))]
    pub iters: usize,
    #[arg(long, default_value_t = 2, value_parser = crate::bounds::iters_or_zero())]
    pub warmup: usize,
    /// Backends to time side by side (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BackendArg::DEFAULT])]
    pub backend: Vec<BackendArg>,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[arg(long, value_enum, default_value = "infer")]
    pub mode: ModeArg,
    #[arg(long, default_value = "cpu", value_parser = DeviceArg::parse, value_name = "cpu|cuda|cuda:N|auto")]
    pub device: DeviceArg,
    /// Time replays of a CUDA graph of the forward (with --train: of the whole training
    /// step), captured once per batch size (CUDA only; `cuda-graphs` build).
    #[arg(long = "cuda-graph")]
    pub cuda_graph: bool,
    /// Time compiles with the IR verifier after every pass.
    #[arg(long)]
    pub verify_each_pass: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Measure training steps (forward, loss, backward, AdamW) and peak memory
    /// instead of forward latency; specs compile in train mode.
    #[arg(long)]
    pub train: bool,
    /// Autocast CUDA ops of the training steps to bf16 (--train; `cuda-graphs` build).
    #[arg(long, value_enum, requires = "train")]
    pub autocast: Option<AutocastArg>,
    /// Learning rate of the AdamW steps (--train).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Skip the peak-memory probes (--train).
    #[arg(long)]
    pub no_memory: bool,
    /// Weights for one spec: `N:BINDING=FILE`, N the spec's position (1-based) on the
    /// command line (repeatable). Specs without any keep random weights.
    #[arg(long = "weights", value_name = "N:BINDING=FILE")]
    pub weights: Vec<String>,
    /// Glob of weight keys that may be missing from (or extra in) a file (repeatable).
    #[arg(long = "allow-missing", value_name = "PATTERN")]
    pub allow_missing: Vec<String>,
    /// Run one forward per batch size read from stdin and print its milliseconds
    /// (after `ready`), for a driver that interleaves single forwards with another
    /// runtime's (one spec, one backend; benches/python/paced.py). The driver decides how
    /// many forwards run, so `--iters` is refused beside it rather than ignored.
    #[arg(long, conflicts_with_all = ["train", "json", "iters"])]
    pub paced: bool,
    /// Internal: measure one spec's memory in this process and print it as JSON.
    #[arg(long, hide = true)]
    pub memory_probe: bool,
}

/// `--autocast` of `bench --train`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AutocastArg {
    Bf16,
}

#[derive(Serialize)]
pub struct SpecTiming {
    /// `native` or `torch`.
    pub backend: String,
    pub spec: String,
    pub model: String,
    pub params: u64,
    /// Source → verified IR, median of 10.
    pub compile_ms: f64,
    /// `BINDING=FILE` loaded for this spec (empty: random weights).
    pub weights: Vec<String>,
    /// Elements of the parameters loaded from those files.
    pub weights_params: u64,
    /// Batch → median forward latency.
    pub forward_ms: Vec<(i64, f64)>,
    /// Batch → the forward's matrix-multiply work (multiply-accumulates, every
    /// symbolic dim at the batch size: [`crate::flops::forward_macs_at`]).
    pub forward_macs: Vec<(i64, u64)>,
    /// Batch → backend figures (native: arena and live bytes, fusion and JIT stats).
    pub details: Vec<(i64, Vec<(String, f64)>)>,
}

#[derive(Serialize)]
pub struct BenchReport {
    /// Threads of the native pool, or LibTorch's intra-op threads (0: their defaults).
    pub threads: i32,
    /// Peak resident memory of this process (bytes; VmHWM), every backend included.
    pub peak_rss_bytes: u64,
    pub mode: Mode,
    /// With the native backend: one core's FMA peak at its SIMD level, measured
    /// ([`crate::backend::native::peak`]), in multiply-accumulates per second.
    pub fma_peak_macs_per_core: Option<f64>,
    /// The native pool's threads (what the peak is multiplied by).
    pub native_threads: Option<usize>,
    pub specs: Vec<SpecTiming>,
}

/// The median (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `--weights N:BINDING=FILE` → the `BINDING=FILE` arguments of spec `index` (0-based).
pub(super) fn weights_for(a: &BenchArgs, index: usize) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for w in &a.weights {
        let (n, rest) = w
            .split_once(':')
            .and_then(|(n, r)| Some((n.parse::<usize>().ok()?, r)))
            .filter(|(n, r)| *n >= 1 && *n <= a.specs.len() && r.contains('='))
            .ok_or_else(|| {
                anyhow!("--weights expects N:BINDING=FILE with N the spec's position, 1..={}; got `{w}`", a.specs.len())
            })?;
        if n == index + 1 {
            out.push(rest.to_string());
        }
    }
    Ok(out)
}

/// One prepared executable per backend of `--backend`: its name, its float type and
/// the executable.
pub(super) type Prepared = Vec<(&'static str, DType, Box<dyn Executable>)>;

/// Prepare `c` on every backend of `--backend`, with `weights` (its spec's `--weights`,
/// [`weights_for`]; none: random values); also how many parameter elements came from
/// files.
pub(super) fn executables(
    spec: &Path,
    weights: &[String],
    a: &BenchArgs,
    c: &Compiled,
    plan: &Plan,
) -> Result<(Prepared, u64)> {
    let mut weights_params = 0;
    let mut exes: Prepared = Vec::new();
    for &kind in &a.backend {
        let backend = backend(kind, &a.engine)?;
        let opts = options(backend.as_ref(), a.device, DtypeArg::F32, a.cuda_graph)?;
        let values = if weights.is_empty() {
            plan.params().iter().map(|p| random_values(p, 0)).collect()
        } else {
            let b = bindings(spec, c, weights)?;
            let declared = Declared::from_sites(&c.sites);
            let leaves = Leaves::load(plan.params().iter(), &b, &declared, &a.allow_missing, 0)?;
            for note in &leaves.notes {
                eprintln!("note: {note}");
            }
            weights_params = plan.params().iter().filter(|p| b.source(p).is_some()).map(|p| p.numel()).sum();
            materialise(plan.params(), &leaves)?
        };
        exes.push((backend.name(), opts.float, backend.prepare(plan, values, &opts)?));
    }
    Ok((exes, weights_params))
}

fn measure(spec: &Path, index: usize, a: &BenchArgs) -> Result<Vec<SpecTiming>> {
    let mode = a.mode.into();
    let mut compiles = Vec::new();
    let mut compiled = None;
    for _ in 0..10 {
        let t0 = Instant::now();
        let opts = CompileOptions { verify_each_pass: a.verify_each_pass };
        let c =
            compile_file_with(spec, mode, &opts).map_err(|f| anyhow!("{}", crate::api::render_failure(&f, false)))?;
        compiles.push(t0.elapsed().as_secs_f64() * 1e3);
        compiled = Some(c);
    }
    let c = compiled.expect("compiled ten times");
    let plan = Plan::new(&c.graph);
    let weights = weights_for(a, index)?;
    let (mut exes, weights_params) = executables(spec, &weights, a, &c, &plan)?;
    let mut forward_ms = vec![Vec::new(); exes.len()];
    let mut details = vec![Vec::new(); exes.len()];
    for &b in &a.batch {
        let given = inputs::random(&plan, b, 0)?;
        let mut bound = Vec::new();
        for (_, float, exe) in exes.iter_mut() {
            let values = inputs::bind(&plan, given.clone(), *float)?.values;
            exe.time_forward(&values, a.warmup, 0)?;
            bound.push(values);
        }
        // Interleaved: one forward on each backend in turn.
        let mut times = vec![Vec::new(); exes.len()];
        for _ in 0..a.iters {
            for (i, (_, _, exe)) in exes.iter_mut().enumerate() {
                times[i].extend(exe.time_forward(&bound[i], 0, 1)?);
            }
        }
        for (i, t) in times.into_iter().enumerate() {
            forward_ms[i].push((b, median(t)));
            details[i].push((b, exes[i].2.report()));
        }
    }
    let params = param_report(&c).total;
    Ok(exes
        .iter()
        .zip(forward_ms.into_iter().zip(details))
        .map(|((name, _, _), (forward_ms, details))| SpecTiming {
            backend: name.to_string(),
            spec: spec.display().to_string(),
            model: c.model.clone(),
            params,
            compile_ms: median(compiles.clone()),
            weights: weights.clone(),
            weights_params,
            forward_macs: a
                .batch
                .iter()
                .map(|&b| (b, crate::flops::forward_macs_at(&c.graph, b.max(1) as u64)))
                .collect(),
            forward_ms,
            details,
        })
        .collect())
}

/// Peak resident memory of this process (Linux `VmHWM`), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `graft bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    if a.memory_probe || a.train {
        return super::bench_train::run(&super::bench_train::TrainBenchArgs {
            specs: &a.specs,
            batch: &a.batch,
            iters: a.iters,
            warmup: a.warmup,
            engine: &a.engine,
            device: a.device,
            json: a.json,
            lr: a.lr,
            no_memory: a.no_memory,
            memory_probe: a.memory_probe,
            cuda_graph: a.cuda_graph,
            autocast: a.autocast.is_some(),
        });
    }
    let mut specs = Vec::new();
    for (i, s) in a.specs.iter().enumerate() {
        specs.extend(measure(s, i, &a)?);
    }
    #[cfg(feature = "torch")]
    let default_threads = tch::get_num_threads();
    #[cfg(not(feature = "torch"))]
    let default_threads = std::thread::available_parallelism().map_or(1, |n| n.get() as i32);
    let threads = a.engine.threads.map_or(default_threads, |t| t as i32);
    // Measured after the forwards, so it sees the clock they ran at.
    let native = a.backend.contains(&BackendArg::Native).then(|| super::native(&a.engine));
    let fma_peak_macs_per_core = native.as_ref().map(|n| {
        let level = n.simd.unwrap_or_else(crate::backend::native::math::level);
        crate::backend::native::peak::fma_macs_per_sec(level)
    });
    let report = BenchReport {
        threads,
        peak_rss_bytes: peak_rss_bytes(),
        mode: a.mode.into(),
        fma_peak_macs_per_core,
        native_threads: native.map(|n| n.threads),
        specs,
    };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!("threads {}, mode {:?}, medians of {} runs", report.threads, report.mode, a.iters);
    if let Some(peak) = report.fma_peak_macs_per_core {
        println!("native: one core's FMA peak, measured: {:.1} GMAC/s", peak / 1e9);
    }
    let base = &report.specs[0];
    for s in &report.specs {
        let lat: Vec<String> = s
            .forward_ms
            .iter()
            .zip(&base.forward_ms)
            .map(|((b, ms), (_, base_ms))| format!("batch {b}: {ms:.2} ms ({:.3}x)", ms / base_ms))
            .collect();
        println!(
            "{:<7} {:<32} {:>14} params  compile {:.2} ms  {}",
            s.backend,
            s.model,
            thousands(s.params),
            s.compile_ms,
            lat.join("  ")
        );
        for ((b, det), ((_, ms), (_, macs))) in s.details.iter().zip(s.forward_ms.iter().zip(&s.forward_macs)) {
            let get = |k: &str| det.iter().find(|(n, _)| n == k).map_or(0.0, |(_, v)| *v);
            if let (true, Some(peak), Some(t)) =
                (s.backend == "native", report.fma_peak_macs_per_core, report.native_threads)
            {
                let rate = *macs as f64 / (ms / 1e3);
                println!(
                    "        batch {b}: {:.2} GMAC of matrix products, {:.1} GMAC/s = {:.0}% of the FMA peak of {t} core{}",
                    *macs as f64 / 1e9,
                    rate / 1e9,
                    100.0 * rate / (peak * t as f64),
                    if t == 1 { "" } else { "s" }
                );
            }
            if det.iter().any(|(n, _)| n == "ew_groups") {
                println!(
                    "        batch {b}: arena {:.1} MB, packed weights {:.1} MB; {} fused groups writing {:.1} MB, {:.2} ms of a forward; {} kernels compiled in {:.1} ms",
                    get("arena_bytes") / 1e6,
                    get("packed_bytes") / 1e6,
                    get("ew_groups"),
                    get("ew_bytes_written") / 1e6,
                    get("ew_ms_per_forward"),
                    get("ew_kernels_compiled"),
                    get("ew_compile_ms"),
                );
            }
        }
    }
    Ok(())
}
