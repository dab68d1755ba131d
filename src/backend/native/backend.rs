//! The native backend behind the [`Backend`] / [`Executable`] seam.
//!
//! `prepare` widens the parameters to f32 once ([`Weights`], which later holds the
//! linear layers' weights packed) and starts the worker pool. Each `run`
//! looks up (or builds, the first time) the [`Program`] for its input shapes and
//! present inputs together with its arena, so a forward after the first allocates
//! nothing but its returned outputs. At most [`PROGRAMS`] programs are kept, the least
//! recently used evicted first ([`Lru`]).

use super::arena::Arena;
use super::attention::AttentionPath;
use super::cache::Lru;
use super::ew::{EwCompiler, EwStats, EwStrategy};
use super::exec::{self, Mem};
use super::lower::{lower, InputSig};
use super::math::{self, SimdLevel};
use super::pool::{Pool, SharedMut};
use super::program::{OutVal, Program, Step, Store, Strided};
use super::weights::Weights;
use crate::backend::alloc::{refused, reserve};
use crate::backend::plan::Plan;
use crate::backend::{time_runs, Backend, BackendError, Device, Executable, Options};
use crate::ir::DType;
use crate::tensor::HostTensor;
use std::time::Duration;

/// Programs kept per executable (one per input signature: shapes and which optional
/// inputs are present). A ninth signature evicts the least recently used.
pub const PROGRAMS: usize = 8;

/// The native CPU backend: `threads` participants per parallel region (1: the caller
/// alone), elementwise groups compiled with `elementwise`, the vectorised row and math
/// kernels at `simd` (`None`: the best level the CPU has; a level it lacks is refused).
#[derive(Clone, Copy, Debug)]
pub struct Native {
    pub threads: usize,
    pub elementwise: EwStrategy,
    pub simd: Option<SimdLevel>,
    /// The attention kernel: by key count (default), or always plain or blocked.
    pub attention: AttentionPath,
}

impl Default for Native {
    fn default() -> Self {
        Native { threads: 1, elementwise: EwStrategy::Jit, simd: None, attention: AttentionPath::Auto }
    }
}

impl Native {
    /// The SIMD level executables run at, or why this CPU cannot honour the choice.
    fn level(&self) -> Result<SimdLevel, BackendError> {
        match self.simd {
            None => Ok(math::best()),
            Some(l) if l.available() => Ok(l),
            Some(l) => Err(BackendError::Unsupported(format!(
                "SIMD level `{}` is not available on this CPU (it has: {})",
                l.name(),
                SimdLevel::all_available().iter().map(|l| l.name()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

impl Backend for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn has_device(&self, device: Device) -> bool {
        device == Device::Cpu
    }

    fn check(&self, opts: &Options) -> Result<(), BackendError> {
        check_options(opts)?;
        self.level().map(|_| ())
    }

    fn prepare(
        &self,
        plan: &Plan,
        params: Vec<HostTensor>,
        opts: &Options,
    ) -> Result<Box<dyn Executable>, BackendError> {
        Ok(Box::new(NativeExecutable::new(plan, params, opts, *self)?))
    }
}

/// What the native backend supports: the CPU, f32, no graph capture.
fn check_options(opts: &Options) -> Result<(), BackendError> {
    if opts.device != Device::Cpu {
        return Err(BackendError::Unsupported(
            "the native backend runs on the CPU only; use `--backend torch` for `--device cuda`".into(),
        ));
    }
    if opts.float != DType::F32 {
        return Err(BackendError::Unsupported(format!(
            "the native backend computes in f32 (weights stored in bf16/f16 are widened at load); `{}` is not supported",
            opts.float.name()
        )));
    }
    if opts.graph_capture {
        return Err(BackendError::Unsupported("graph capture is a CUDA feature of the torch backend".into()));
    }
    Ok(())
}

/// A program and the arena it runs in.
struct Prepared {
    prog: Program,
    arena: Arena,
}

/// A plan ready to run on the CPU.
pub struct NativeExecutable {
    plan: Plan,
    /// The parameters, plain or packed.
    weights: Weights,
    pool: Pool,
    ew: EwCompiler,
    /// The level every forward's kernels run at (one the CPU has).
    simd: SimdLevel,
    attention: AttentionPath,
    programs: Lru<Vec<Option<InputSig>>, Prepared>,
    /// The inputs of the last run (for [`Executable::report`]).
    last: Option<Vec<Option<InputSig>>>,
    /// Forwards run and the time they spent in fused elementwise groups, since the
    /// last timed measurement began.
    forwards: u64,
    ew_time: Duration,
}

impl NativeExecutable {
    pub fn new(plan: &Plan, params: Vec<HostTensor>, opts: &Options, cfg: Native) -> Result<Self, BackendError> {
        check_options(opts)?;
        let simd = cfg.level()?;
        if params.len() != plan.params().len() {
            return Err(BackendError::Internal(format!(
                "{} parameters for a plan of {}",
                params.len(),
                plan.params().len()
            )));
        }
        let weights = Weights::new(params);
        let ew = EwCompiler::new(cfg.elementwise).map_err(|e| BackendError::runtime("elementwise compiler", e))?;
        Ok(NativeExecutable {
            plan: plan.clone(),
            weights,
            pool: Pool::new(cfg.threads),
            ew,
            simd,
            attention: cfg.attention,
            programs: Lru::new(PROGRAMS),
            last: None,
            forwards: 0,
            ew_time: Duration::ZERO,
        })
    }

    /// Compile statistics of the elementwise groups so far.
    pub fn ew_stats(&self) -> EwStats {
        self.ew.stats()
    }

    /// Arena bytes and peak live bytes of the program for these inputs (built if new).
    pub fn memory(&mut self, inputs: &[Option<HostTensor>]) -> Result<(usize, usize), BackendError> {
        let key = self.prepare_inputs(inputs)?;
        let p = self.programs.peek(&key).ok_or_else(|| BackendError::Internal("no program".into()))?;
        Ok((p.arena.bytes(), p.prog.peak_live_bytes))
    }

    /// Programs held (at most [`PROGRAMS`]).
    pub fn programs(&self) -> usize {
        self.programs.len()
    }

    /// Parameter bytes held (f32) in plain form: those read only as packed weights
    /// are held packed instead ([`NativeExecutable::packed_bytes`]).
    pub fn param_bytes(&self) -> usize {
        self.weights.param_bytes()
    }

    /// Bytes of the packed weights.
    pub fn packed_bytes(&self) -> usize {
        self.weights.packed_bytes()
    }

    fn prepare_inputs(&mut self, inputs: &[Option<HostTensor>]) -> Result<Vec<Option<InputSig>>, BackendError> {
        if inputs.len() != self.plan.inputs().len() {
            return Err(BackendError::Internal(format!(
                "{} inputs for a plan of {}",
                inputs.len(),
                self.plan.inputs().len()
            )));
        }
        let key: Vec<Option<InputSig>> = inputs
            .iter()
            .map(|t| {
                t.as_ref().map(|t| InputSig {
                    shape: t.shape.iter().map(|&d| d.max(0) as usize).collect(),
                    // Raw pixels load as floats, normalised on the way in.
                    int: !(t.dtype.is_float() || t.dtype == DType::U8),
                })
            })
            .collect();
        if self.programs.get(&key).is_none() {
            let prog = lower(&self.plan, &key, self.pool.threads(), (self.attention, self.simd), &mut self.ew)?;
            self.weights.pack(&prog, self.simd)?;
            let bytes = prog.arena_len.checked_mul(4).ok_or_else(|| refused(usize::MAX, "the native arena"))?;
            let arena = Arena::new(bytes)?;
            self.programs.insert(key.clone(), Prepared { prog, arena });
        }
        self.last = Some(key.clone());
        Ok(key)
    }

    /// Load the inputs and run every step.
    /// `timed`: a measured forward of `time_forward`, which also counts the time
    /// spent in fusion groups for [`Executable::report`].
    fn forward(
        &mut self,
        key: &[Option<InputSig>],
        inputs: &[Option<HostTensor>],
        timed: bool,
    ) -> Result<(), BackendError> {
        let prep = self.programs.get(key).ok_or_else(|| BackendError::Internal("no program".into()))?;
        let arena = SharedMut::new(prep.arena.as_mut_f32());
        for s in &prep.prog.steps {
            match &s.step {
                Step::LoadInput { input, dst } => {
                    let t = inputs[*input].as_ref().ok_or_else(|| BackendError::Internal("missing input".into()))?;
                    let Store::Arena(b) = dst.store else { continue };
                    let off = prep.prog.buffers[b].offset;
                    // SAFETY: loads run before any region, on this thread alone.
                    let d = unsafe { arena.slice(off, off + dst.numel()) };
                    match t.dtype {
                        DType::F32 => {
                            for (o, c) in d.iter_mut().zip(t.data.chunks_exact(4)) {
                                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                            }
                        }
                        DType::U8 => match &self.plan.inputs()[*input].norm {
                            Some(n) => n.apply(&t.shape, &t.data, d),
                            None => {
                                return Err(BackendError::Internal("raw u8 input not declared `normalized`".into()))
                            }
                        },
                        _ => {
                            for (o, v) in d.iter_mut().zip(t.to_f64()) {
                                *o = v as f32;
                            }
                        }
                    }
                }
                Step::LoadIds { input, dst } => {
                    let t = inputs[*input].as_ref().ok_or_else(|| BackendError::Internal("missing input".into()))?;
                    let ids = &mut prep.prog.ids[*dst];
                    match t.dtype {
                        DType::I64 => {
                            for (o, c) in ids.iter_mut().zip(t.data.chunks_exact(8)) {
                                *o = i64::from_le_bytes(c.try_into().unwrap_or_default());
                            }
                        }
                        _ => {
                            for (o, v) in ids.iter_mut().zip(t.to_f64()) {
                                *o = v as i64;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let prog = &prep.prog;
        // SAFETY: `prog` came from `lower`, which never has a step write a buffer it
        // reads and partitions every output among the participants.
        let mem = unsafe { Mem::new(arena, &prog.buffers, &self.weights.params, &self.weights.packed, &prog.ids) };
        self.forwards += timed as u64;
        exec::run(prog, &mem, &self.pool, timed.then_some(&mut self.ew_time)).map_err(|(step, error)| {
            let site = &prog.sites[prog.steps[step].site];
            BackendError::Kernel { path: site.path.clone(), op: site.op, error }
        })
    }

    fn outputs(&mut self, key: &[Option<InputSig>]) -> Result<Vec<(String, HostTensor)>, BackendError> {
        let prep = self.programs.get(key).ok_or_else(|| BackendError::Internal("no program".into()))?;
        let arena = SharedMut::new(prep.arena.as_mut_f32());
        let prog = &prep.prog;
        // SAFETY: only this thread reads, after every step has run.
        let mem = unsafe { Mem::new(arena, &prog.buffers, &self.weights.params, &self.weights.packed, &prog.ids) };
        let mut out = Vec::new();
        for (name, v) in &prog.outputs {
            let t = match v {
                OutVal::Float(v) => {
                    let s = Strided::of(v);
                    let values = gather(&mem, &s)?;
                    let shape: Vec<i64> = v.shape.iter().map(|&d| d as i64).collect();
                    HostTensor::from_f32(&shape, &values)
                }
                OutVal::Ids { buf, shape } => {
                    let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
                    HostTensor::from_i64(&shape, &prog.ids[*buf])
                }
            };
            out.push((
                name.clone(),
                t.ok_or_else(|| BackendError::Internal(format!("output `{name}` has a wrong size")))?,
            ));
        }
        Ok(out)
    }
}

/// A strided tensor's elements in row-major order.
fn gather(m: &Mem, s: &Strided) -> Result<Vec<f32>, BackendError> {
    let n: usize = s.shape.iter().product();
    let mut out = Vec::new();
    reserve(&mut out, n, "an output")?;
    if n == 0 {
        return Ok(out);
    }
    let span = 1 + s.shape.iter().zip(&s.strides).map(|(&d, &st)| (d - 1) * st).sum::<usize>();
    let v = super::program::View::plain(s.store, s.offset, vec![span]);
    let data = m.read(&v);
    let r = s.shape.len();
    let mut idx = vec![0usize; r];
    for _ in 0..n {
        out.push(data[idx.iter().zip(&s.strides).map(|(i, st)| i * st).sum::<usize>()]);
        for i in (0..r).rev() {
            idx[i] += 1;
            if idx[i] < s.shape[i] {
                break;
            }
            idx[i] = 0;
        }
    }
    Ok(out)
}

impl Executable for NativeExecutable {
    fn run(&mut self, inputs: &[Option<HostTensor>]) -> Result<Vec<(String, HostTensor)>, BackendError> {
        let key = self.prepare_inputs(inputs)?;
        math::with_level(self.simd, || self.forward(&key, inputs, false))?;
        self.outputs(&key)
    }

    fn time_forward(
        &mut self,
        inputs: &[Option<HostTensor>],
        warmup: usize,
        iters: usize,
    ) -> Result<Vec<f64>, BackendError> {
        let key = self.prepare_inputs(inputs)?;
        (self.forwards, self.ew_time) = (0, Duration::ZERO);
        let simd = self.simd;
        math::with_level(simd, || time_runs(warmup, iters, || {}, |timed| self.forward(&key, inputs, timed)))
    }

    /// For `graft bench`: the program of the last inputs (arena, steps, fusion groups
    /// and the bytes they write), the elementwise compiler's work, and the mean time
    /// per forward spent in fused groups.
    fn report(&self) -> Vec<(String, f64)> {
        let mut r: Vec<(&str, f64)> = Vec::new();
        if let Some(p) = self.last.as_ref().and_then(|k| self.programs.peek(k)) {
            let groups: Vec<usize> = p
                .prog
                .steps
                .iter()
                .filter_map(|s| match &s.step {
                    Step::Ew { rows, cols, outputs, .. } => Some(rows * cols * outputs.len() * 4),
                    _ => None,
                })
                .collect();
            r.push(("arena_bytes", p.arena.bytes() as f64));
            r.push(("peak_live_bytes", p.prog.peak_live_bytes as f64));
            r.push(("steps", p.prog.steps.len() as f64));
            r.push(("ew_groups", groups.len() as f64));
            r.push(("ew_bytes_written", groups.iter().sum::<usize>() as f64));
        }
        let s = self.ew.stats();
        r.push(("ew_kernels_compiled", s.kernels_compiled as f64));
        r.push(("ew_cache_hits", s.cache_hits as f64));
        r.push(("ew_compile_ms", s.compile_time.as_secs_f64() * 1e3));
        if self.forwards > 0 {
            r.push(("ew_ms_per_forward", self.ew_time.as_secs_f64() * 1e3 / self.forwards as f64));
        }
        r.push(("param_bytes", self.param_bytes() as f64));
        r.push(("packed_bytes", self.packed_bytes() as f64));
        r.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::native::packed;
    use crate::backend::{inputs, run_named};
    use crate::params::init::random_values;
    use crate::pipeline::Mode;

    /// A ViT block (layer norm, attention with its softmax, GELU MLP), small.
    const SPEC: &str = r#"use std.vit
model m {
  input image: f32[B, 3, 16, 16]
  encoder v = vit(dim: 32, depth: 1, heads: 2, classes: 5, patch: 8, height: 16)(image)
  output logits = v
}
"#;

    #[test]
    fn the_simd_option_picks_the_kernels_level_and_every_level_agrees() {
        let c = crate::api::compile_str("m.graft", None, SPEC, Mode::Infer).unwrap_or_else(|_| panic!("compiles"));
        let plan = Plan::new(&c.graph);
        let params: Vec<HostTensor> = plan.params().iter().map(|p| random_values(p, 0)).collect();
        let given = inputs::random(&plan, 2, 7).unwrap();
        let run = |simd| {
            let native = Native { threads: 2, simd, ..Native::default() };
            let mut exe = native.prepare(&plan, params.clone(), &Options::default()).unwrap();
            run_named(exe.as_mut(), &plan, given.clone(), DType::F32).unwrap().remove(0).1.to_f64()
        };
        let best = run(None);
        assert!(best.iter().all(|v| v.is_finite()) && best.len() == 10);
        for level in SimdLevel::all_available() {
            let got = run(Some(level));
            assert_eq!(got.len(), best.len());
            let worst = got.iter().zip(&best).map(|(a, b)| (a - b).abs()).fold(0.0f64, f64::max);
            // The math kernels differ by a few ulp between levels (FMA or not).
            assert!(worst < 1e-4, "{level:?} differs from the best level by {worst}");
            if level == math::best() {
                assert!(got == best, "the default is the best level");
            }
        }
        // The option reaches the kernels: without FMA the GELU and softmax round
        // differently, which shows in the logits' bits.
        if math::best() != SimdLevel::Portable {
            assert!(run(Some(SimdLevel::Portable)) != best, "`simd: Portable` ran at the best level");
        }
    }

    #[test]
    fn the_blocked_and_packed_attention_paths_agree_with_the_plain_one() {
        let c = crate::api::compile_str("m.graft", None, SPEC, Mode::Infer).unwrap_or_else(|_| panic!("compiles"));
        let plan = Plan::new(&c.graph);
        let params: Vec<HostTensor> = plan.params().iter().map(|p| random_values(p, 0)).collect();
        let given = inputs::random(&plan, 3, 7).unwrap();
        let run = |attention| {
            let native = Native { threads: 2, attention, ..Native::default() };
            let mut exe = native.prepare(&plan, params.clone(), &Options::default()).unwrap();
            run_named(exe.as_mut(), &plan, given.clone(), DType::F32).unwrap().remove(0).1.to_f64()
        };
        let (plain, blocked, packed) =
            (run(AttentionPath::Plain), run(AttentionPath::Blocked), run(AttentionPath::Packed));
        let auto = if packed::available(math::best()) { &packed } else { &plain };
        assert_eq!(&run(AttentionPath::Auto), auto, "short sequences: packed where the kernel runs, else plain");
        for (name, other) in [("blocked", &blocked), ("packed", &packed)] {
            assert_eq!(other.len(), 15, "{name}: {} logits", other.len());
            assert!(plain.len() == 15 && plain.iter().chain(other).all(|v| v.is_finite()), "non-finite logits");
            let worst = plain.iter().zip(other).map(|(a, b)| (a - b).abs()).fold(0.0f64, f64::max);
            assert!(worst < 1e-5, "{name} differs by {worst}");
        }
    }

    #[test]
    fn linear_weights_are_held_packed_once_and_come_back_exactly() {
        let c = crate::api::compile_str("m.graft", None, SPEC, Mode::Infer).unwrap_or_else(|_| panic!("compiles"));
        let plan = Plan::new(&c.graph);
        let params: Vec<HostTensor> = plan.params().iter().map(|p| random_values(p, 0)).collect();
        let total: usize = params.iter().map(|t| t.numel() * 4).sum();
        let level = if SimdLevel::Avx2Fma.available() { SimdLevel::Avx2Fma } else { SimdLevel::Portable };
        let native = Native { threads: 2, simd: Some(level), ..Native::default() };
        let mut exe = NativeExecutable::new(&plan, params.clone(), &Options::default(), native).unwrap();
        // Two programs (two batch sizes) share the packed weights; each equals a fresh
        // executable's result for its batch alone.
        let mut outs = Vec::new();
        for batch in [2, 3] {
            let given = inputs::random(&plan, batch, 7).unwrap();
            let got = run_named(&mut exe, &plan, given.clone(), DType::F32).unwrap().remove(0).1.to_f64();
            let mut fresh = NativeExecutable::new(&plan, params.clone(), &Options::default(), native).unwrap();
            let want = run_named(&mut fresh, &plan, given, DType::F32).unwrap().remove(0).1.to_f64();
            assert_eq!(got, want, "batch {batch}");
            outs.push(got);
        }
        if packed::available(level) {
            assert!(exe.packed_bytes() > 0, "the linear weights are packed");
            assert!(exe.param_bytes() < total / 2, "their plain copies are released");
            for (p, t) in params.iter().enumerate() {
                if exe.weights.params[p].is_empty() && t.numel() > 0 {
                    exe.weights.read_plainly(p).unwrap();
                    assert_eq!(exe.weights.params[p], t.as_f32().unwrap(), "parameter {p} unpacks exactly");
                }
            }
        } else {
            assert_eq!((exe.packed_bytes(), exe.param_bytes()), (0, total), "nothing packed at {level:?}");
        }
    }

    #[test]
    fn a_simd_level_the_cpu_lacks_is_refused_before_any_work() {
        for level in [SimdLevel::Portable, SimdLevel::Avx2Fma, SimdLevel::Avx512] {
            let native = Native { simd: Some(level), ..Native::default() };
            match native.check(&Options::default()) {
                Ok(()) => assert!(level.available()),
                Err(BackendError::Unsupported(m)) => {
                    assert!(!level.available());
                    assert!(m.contains(level.name()) && m.contains("portable"), "{m}");
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}
