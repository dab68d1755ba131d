//! The elementwise ablation of the native backend, on ViT-S-like fusion groups:
//! `unfused` (one rustc pass per op) vs `blocks` (rustc passes over L1 blocks) vs `jit`
//! (one Cranelift function per group), plus the JIT's compile time cold and cached.
//!
//! ```text
//! cargo run --release --example ew_ablation [-- ROUNDS [portable|avx2|avx512]]
//! ```
//!
//! Strategies are timed interleaved (round-robin, the order rotating every round) in
//! one process, each sample a batch of calls of about a millisecond; the table gives the
//! minimum and median per call and the median's ratio to `unfused`. The three
//! strategies' outputs are checked bit-identical first. The second argument sets the SIMD
//! level of the rustc kernels and the math helpers (default: the best this CPU has), as
//! `graft run --simd` does for the native backend.

use graft::backend::native::ew::{EwBroadcast, EwCompiler, EwGroup, EwInstr, EwKernel, EwStrategy, EwValue};
use graft::backend::native::math;
use std::time::Instant;

const STRATEGIES: [EwStrategy; 3] = [EwStrategy::Unfused, EwStrategy::Blocks, EwStrategy::Jit];

/// `gelu(x + bias)`: the epilogue of a ViT MLP's fc1.
fn bias_gelu() -> EwGroup {
    use EwValue::{Input as I, Instr as N};
    EwGroup {
        inputs: vec![EwBroadcast::Full, EwBroadcast::Row],
        body: vec![EwInstr::Add(I(0), I(1)), EwInstr::Gelu(N(0))],
        outputs: vec![N(1)],
    }
}

/// `x + s·g·(u + bias)`: a residual add of a gated, scaled adapter output.
fn residual_gated(scale: f32) -> EwGroup {
    use EwValue::{Input as I, Instr as N};
    EwGroup {
        inputs: vec![EwBroadcast::Full, EwBroadcast::Full, EwBroadcast::Row, EwBroadcast::Scalar],
        body: vec![
            EwInstr::Add(I(1), I(2)),
            EwInstr::Mul(N(0), I(3)),
            EwInstr::Scale(N(1), scale),
            EwInstr::Add(I(0), N(2)),
        ],
        outputs: vec![N(3)],
    }
}

fn seeded(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 6.0 - 3.0
        })
        .collect()
}

struct Case {
    name: &'static str,
    group: EwGroup,
    rows: usize,
    cols: usize,
}

fn run_once(k: &EwKernel, c: &Case, inputs: &[Vec<f32>], out: &mut [f32]) {
    let ins: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    k.run(c.rows, c.cols, &ins, &mut [out]);
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let level = match std::env::args().nth(2) {
        None => math::best(),
        Some(name) => math::SimdLevel::all_available().into_iter().find(|l| l.name() == name).unwrap_or_else(|| {
            eprintln!("SIMD level `{name}` is not one this CPU has");
            std::process::exit(1)
        }),
    };
    math::with_level(level, ablation)
}

fn ablation() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(40);
    let cases = [
        Case { name: "bias+gelu B=1", group: bias_gelu(), rows: 197, cols: 1536 },
        Case { name: "bias+gelu B=8", group: bias_gelu(), rows: 8 * 197, cols: 1536 },
        Case { name: "x+s*g*(u+b) B=1", group: residual_gated(0.5), rows: 197, cols: 384 },
        Case { name: "x+s*g*(u+b) B=8", group: residual_gated(0.5), rows: 8 * 197, cols: 384 },
    ];
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("SIMD level {}; {rounds} interleaved rounds; loadavg {}", math::level().name(), load.trim());
    println!();
    println!("| group [rows x cols] | strategy | min us | median us | p10-p90 us | median / unfused | intermediates |");
    println!("|---|---|---|---|---|---|---|");
    for c in &cases {
        let inputs: Vec<Vec<f32>> = c
            .group
            .inputs
            .iter()
            .enumerate()
            .map(|(k, b)| {
                let n = match b {
                    EwBroadcast::Full => c.rows * c.cols,
                    EwBroadcast::Row => c.cols,
                    EwBroadcast::Col => c.rows,
                    EwBroadcast::Scalar => 1,
                };
                seeded(n, k as u64 + 1)
            })
            .collect();
        let kernels: Vec<EwKernel> =
            STRATEGIES.iter().map(|s| EwCompiler::new(*s).unwrap().compile(&c.group).unwrap()).collect();
        let mut outs: Vec<Vec<f32>> = vec![vec![0.0; c.rows * c.cols]; 3];
        for (k, o) in kernels.iter().zip(outs.iter_mut()) {
            run_once(k, c, &inputs, o);
        }
        assert!(outs[0] == outs[1] && outs[1] == outs[2], "{}: strategies disagree", c.name);
        // Calls per sample: about a millisecond of the unfused kernel.
        let start = Instant::now();
        run_once(&kernels[0], c, &inputs, &mut outs[0]);
        let reps = (1e-3 / start.elapsed().as_secs_f64().max(1e-7)).clamp(1.0, 1000.0) as usize;
        let mut samples = vec![Vec::new(); 3];
        for round in 0..rounds {
            for i in 0..3 {
                let s = (i + round) % 3;
                let start = Instant::now();
                for _ in 0..reps {
                    run_once(&kernels[s], c, &inputs, &mut outs[s]);
                }
                samples[s].push(start.elapsed().as_secs_f64() * 1e6 / reps as f64);
            }
        }
        let base = quantile(&mut samples[0].clone(), 0.5);
        for (s, v) in samples.iter_mut().enumerate() {
            let (lo, med, p10, p90) = (quantile(v, 0.0), quantile(v, 0.5), quantile(v, 0.1), quantile(v, 0.9));
            let bytes = kernels[s].intermediate_bytes(c.rows, c.cols);
            println!(
                "| {} [{}x{}] | {:?} | {lo:.1} | {med:.1} | {p10:.1}-{p90:.1} | {:.2} | {} KiB |",
                c.name,
                c.rows,
                c.cols,
                STRATEGIES[s],
                med / base,
                bytes / 1024
            );
        }
    }

    // The math helpers alone, per SIMD level (in place over one [197, 1536] buffer).
    println!();
    println!(
        "| math over 197x1536 | {} |",
        math::SimdLevel::all_available().iter().map(|l| l.name()).collect::<Vec<_>>().join(" us | ") + " us"
    );
    println!("|---|{}", "---|".repeat(math::SimdLevel::all_available().len()));
    type At = fn(math::SimdLevel, &mut [f32]);
    let fns: [(&str, At); 4] = [
        ("gelu_erf", math::gelu_erf_inplace_at),
        ("tanh", math::tanh_inplace_at),
        ("exp", math::exp_inplace_at),
        ("sigmoid", math::sigmoid_inplace_at),
    ];
    let x = seeded(197 * 1536, 9);
    for (name, f) in fns {
        let mut cells = Vec::new();
        for level in math::SimdLevel::all_available() {
            let mut best = f64::INFINITY;
            for _ in 0..rounds.max(5) {
                let mut y = x.clone();
                let start = Instant::now();
                f(level, &mut y);
                best = best.min(start.elapsed().as_secs_f64() * 1e6);
            }
            cells.push(format!("{best:.1}"));
        }
        println!("| {name} (min) | {} |", cells.join(" | "));
    }

    // JIT compile time: cold (a fresh compiler), and a ViT-S's 12 blocks × 2 groups
    // where every block after the first is a cache hit.
    let mut cold = Vec::new();
    for _ in 0..10 {
        for g in [bias_gelu(), residual_gated(0.5)] {
            let mut jit = EwCompiler::new(EwStrategy::Jit).unwrap();
            jit.compile(&g).unwrap();
            cold.push(jit.stats().compile_time.as_secs_f64() * 1e3);
        }
    }
    let mut jit = EwCompiler::new(EwStrategy::Jit).unwrap();
    let start = Instant::now();
    for block in 0..12 {
        jit.compile(&bias_gelu()).unwrap();
        jit.compile(&residual_gated(0.5 + block as f32)).unwrap();
    }
    let all = start.elapsed();
    let st = jit.stats();
    let cached = (all - st.compile_time) / st.cache_hits.max(1) as u32;
    println!();
    println!(
        "JIT compile, cold: min {:.2} ms, median {:.2} ms per kernel (n = {})",
        quantile(&mut cold.clone(), 0.0),
        quantile(&mut cold, 0.5),
        20
    );
    println!(
        "ViT-S (12 blocks x 2 groups): {} compiled in {:.2} ms, {} cache hits at {:.1} us each, {:.2} ms in all",
        st.kernels_compiled,
        st.compile_time.as_secs_f64() * 1e3,
        st.cache_hits,
        cached.as_secs_f64() * 1e6,
        all.as_secs_f64() * 1e3
    );
}
