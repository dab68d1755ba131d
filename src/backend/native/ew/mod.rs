//! Fused elementwise groups: a small SSA program over a `[rows, cols]` iteration space
//! ([`EwGroup`]) compiled once ([`EwCompiler`]) into a kernel ([`EwKernel`]) by one of
//! three strategies, the ablation of the native backend's `--elementwise` flag:
//!
//! - [`EwStrategy::Unfused`] (`unfused.rs`): one rustc pass per instruction over the
//!   whole buffer, intermediates in full-size temporaries — what an op-by-op runtime does.
//! - [`EwStrategy::Blocks`] (`blocks.rs`): the same rustc kernels, one instruction at a
//!   time, over L1-sized blocks, so intermediates stay in cache. No code generation.
//! - [`EwStrategy::Jit`] (`jit.rs`): one Cranelift function per group that loops over the
//!   same blocks with f32x4 vectors, keeps intermediates in registers, and calls
//!   [`super::math`]'s block functions for `tanh`/`gelu`/`sigmoid`/`exp`.
//!
//! Every strategy computes each element with the same f32 operations in the same order
//! (no FMA contraction; the math functions give position-independent results), so the
//! three agree bit for bit, and a result never depends on how callers split rows across
//! threads. Kernels are cached by the group's structure: constants are data passed to
//! the code, so groups that differ only in constants (a ViT's twelve blocks, adapters
//! with different scales) share one compiled function.

mod blocks;
mod jit;
mod unfused;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One elementwise fusion group over a `[rows, cols]` iteration space; all buffers f32,
/// row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct EwGroup {
    /// Operand `i` is read with this broadcast.
    pub inputs: Vec<EwBroadcast>,
    /// SSA: [`EwValue::Instr`]`(i)` is the result of `body[i]`, and may be used only by
    /// later instructions.
    pub body: Vec<EwInstr>,
    /// Each written to its own contiguous `rows*cols` buffer.
    pub outputs: Vec<EwValue>,
}

/// How an input is indexed by element `(r, c)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EwBroadcast {
    /// `rows*cols` values: `x[r*cols + c]`.
    Full,
    /// `cols` values, one per column (a bias): `x[c]`.
    Row,
    /// `rows` values, one per row: `x[r]`.
    Col,
    /// One value: `x[0]`.
    Scalar,
}

/// An operand of an instruction or an output.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum EwValue {
    Input(usize),
    Instr(usize),
    Const(f32),
}

/// One elementwise operation. `Relu(x)` is `if x < 0 { 0 } else { x }` (NaN stays NaN);
/// the transcendental ones are those of [`super::math`].
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum EwInstr {
    Add(EwValue, EwValue),
    Sub(EwValue, EwValue),
    Mul(EwValue, EwValue),
    Scale(EwValue, f32),
    Relu(EwValue),
    Tanh(EwValue),
    Gelu(EwValue),
    Sigmoid(EwValue),
    Exp(EwValue),
}

/// How a group is executed (CLI: `--elementwise unfused|blocks|jit`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum EwStrategy {
    Unfused,
    Blocks,
    Jit,
}

impl std::str::FromStr for EwStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "unfused" => Ok(EwStrategy::Unfused),
            "blocks" => Ok(EwStrategy::Blocks),
            "jit" => Ok(EwStrategy::Jit),
            _ => Err(format!("unknown elementwise strategy `{s}`; expected unfused, blocks or jit")),
        }
    }
}

/// A group the compiler cannot accept, or a code generator failure.
#[derive(thiserror::Error, Debug)]
pub enum EwError {
    #[error("elementwise group: {at} reads input {index}, but the group has {count} inputs")]
    NoSuchInput { at: String, index: usize, count: usize },
    #[error("elementwise group: {at} reads instruction {index}, which is not an earlier instruction")]
    NotEarlier { at: String, index: usize },
    #[error("elementwise group has no outputs")]
    NoOutputs,
    #[error("elementwise group has {count} {what}; at most {max} are supported")]
    TooMany { what: &'static str, count: usize, max: usize },
    #[error("the JIT cannot target this CPU: {0}")]
    UnsupportedHost(String),
    #[error("JIT code generation failed: {0}")]
    Codegen(String),
}

/// Most inputs or outputs one group may have (the JIT passes pointer tables on the stack).
pub const MAX_OPERANDS: usize = 64;

/// Elements per block for [`EwStrategy::Blocks`] and [`EwStrategy::Jit`]: 4 KiB per
/// intermediate, so a group's live blocks stay in L1.
pub const BLOCK: usize = 1024;

/// What the compiler has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EwStats {
    /// Distinct kernels compiled (cache misses).
    pub kernels_compiled: usize,
    /// Groups served from the cache.
    pub cache_hits: usize,
    /// Wall time spent compiling (misses only).
    pub compile_time: Duration,
}

/// Compiles groups with one strategy and caches kernels by structure.
pub struct EwCompiler {
    strategy: EwStrategy,
    jit: Option<jit::Jit>,
    cache: HashMap<Vec<u32>, Arc<Code>>,
    stats: EwStats,
}

/// The compiled, constant-free part of a kernel, shared by every group of one structure.
enum Code {
    Interpreted,
    Jit(Box<jit::JitCode>),
}

/// A compiled group: cheap to clone, `Send + Sync`, run from any thread.
#[derive(Clone)]
pub struct EwKernel {
    code: Arc<Code>,
    prog: Arc<Program>,
    strategy: EwStrategy,
}

/// A validated group, with its constants numbered (`consts`) and the dead instructions
/// marked; shared by the strategies.
#[derive(Debug)]
pub(crate) struct Program {
    pub group: EwGroup,
    /// Every constant of the group, in order of appearance (`Const` values and `Scale`
    /// factors); the generated code reads them from this table.
    pub consts: Vec<f32>,
    /// Index into `consts` of each instruction's constant operands (by position) and of
    /// its `Scale` factor (third entry).
    pub const_at: Vec<[Option<usize>; 3]>,
    /// Index into `consts` of each constant output.
    pub out_const: Vec<Option<usize>>,
    /// `live[i]`: instruction `i` contributes to an output.
    pub live: Vec<bool>,
}

impl EwCompiler {
    /// A compiler for `strategy`; for [`EwStrategy::Jit`] this sets up Cranelift for the
    /// host CPU.
    pub fn new(strategy: EwStrategy) -> Result<Self, EwError> {
        let jit = match strategy {
            EwStrategy::Jit => Some(jit::Jit::new()?),
            _ => None,
        };
        Ok(EwCompiler { strategy, jit, cache: HashMap::new(), stats: EwStats::default() })
    }

    /// The strategy this compiler uses.
    pub fn strategy(&self) -> EwStrategy {
        self.strategy
    }

    /// Validates `group` and returns its kernel, compiling only when no group of the same
    /// structure was compiled before.
    pub fn compile(&mut self, group: &EwGroup) -> Result<EwKernel, EwError> {
        let prog = Arc::new(Program::new(group)?);
        let key = structure_key(group);
        let code = match self.cache.get(&key) {
            Some(code) => {
                self.stats.cache_hits += 1;
                code.clone()
            }
            None => {
                let start = Instant::now();
                let code = Arc::new(match &self.jit {
                    Some(jit) => Code::Jit(Box::new(jit.compile(&prog, None)?)),
                    None => Code::Interpreted,
                });
                self.stats.compile_time += start.elapsed();
                self.stats.kernels_compiled += 1;
                self.cache.insert(key, code.clone());
                code
            }
        };
        Ok(EwKernel { code, prog, strategy: self.strategy })
    }

    /// The Cranelift IR the JIT generates for `group` (`None` for the rustc strategies);
    /// for reading and for snapshot tests. Does not touch the cache or the statistics.
    pub fn clif(&self, group: &EwGroup) -> Result<Option<String>, EwError> {
        let Some(jit) = &self.jit else { return Ok(None) };
        let mut text = String::new();
        jit.compile(&Program::new(group)?, Some(&mut text))?;
        Ok(Some(text))
    }

    /// Kernels compiled, cache hits and compile time so far.
    pub fn stats(&self) -> EwStats {
        self.stats
    }
}

impl std::fmt::Debug for EwKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EwKernel").field("strategy", &self.strategy).field("group", &self.prog.group).finish()
    }
}

impl EwKernel {
    /// Runs the group over `[rows, cols]`. `inputs[i].len()` must be `rows*cols`, `cols`,
    /// `rows` or `1` as its broadcast says, and every `outputs[j].len()` must be
    /// `rows*cols` (checked; a mismatch is a caller bug and panics).
    ///
    /// Callers split work across threads by passing row sub-ranges (slicing the `Full`
    /// and `Col` inputs and the outputs); results do not depend on the split. Outputs
    /// never alias inputs (Rust's borrows forbid it).
    pub fn run(&self, rows: usize, cols: usize, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        self.check(rows, cols, inputs, outputs);
        if rows == 0 || cols == 0 {
            return;
        }
        match (&*self.code, self.strategy) {
            (Code::Jit(code), _) => code.run(&self.prog, rows, cols, inputs, outputs),
            (Code::Interpreted, EwStrategy::Unfused) => unfused::run(&self.prog, rows, cols, inputs, outputs),
            (Code::Interpreted, _) => blocks::run(&self.prog, BLOCK, rows, cols, inputs, outputs),
        }
    }

    /// The strategy that compiled this kernel.
    pub fn strategy(&self) -> EwStrategy {
        self.strategy
    }

    /// Bytes of intermediates one run over `[rows, cols]` writes and reads back (the
    /// scratch it uses per thread): full-size temporaries when unfused, L1 blocks
    /// otherwise. Outputs are not counted.
    pub fn intermediate_bytes(&self, rows: usize, cols: usize) -> usize {
        let (br, bc) = blocks::block_shape(BLOCK, rows, cols);
        let per_slot = match self.strategy {
            EwStrategy::Unfused => rows * cols,
            _ => (br * bc).min(rows * cols),
        };
        let slots = match &*self.code {
            Code::Jit(code) => code.slots(),
            Code::Interpreted => blocks::scratch_slots(&self.prog),
        };
        slots * per_slot * std::mem::size_of::<f32>()
    }

    fn check(&self, rows: usize, cols: usize, inputs: &[&[f32]], outputs: &[&mut [f32]]) {
        let g = &self.prog.group;
        assert_eq!(inputs.len(), g.inputs.len(), "elementwise kernel: number of inputs");
        assert_eq!(outputs.len(), g.outputs.len(), "elementwise kernel: number of outputs");
        let n = rows.checked_mul(cols).expect("elementwise kernel: rows*cols overflows");
        for (i, (b, x)) in g.inputs.iter().zip(inputs).enumerate() {
            let want = match b {
                EwBroadcast::Full => n,
                EwBroadcast::Row => cols,
                EwBroadcast::Col => rows,
                EwBroadcast::Scalar => 1,
            };
            assert_eq!(x.len(), want, "elementwise kernel: input {i} ({b:?}) over [{rows}, {cols}]");
        }
        for (j, y) in outputs.iter().enumerate() {
            assert_eq!(y.len(), n, "elementwise kernel: output {j} over [{rows}, {cols}]");
        }
    }
}

impl Program {
    fn new(group: &EwGroup) -> Result<Program, EwError> {
        if group.outputs.is_empty() {
            return Err(EwError::NoOutputs);
        }
        for (what, count) in [("inputs", group.inputs.len()), ("outputs", group.outputs.len())] {
            if count > MAX_OPERANDS {
                return Err(EwError::TooMany { what, count, max: MAX_OPERANDS });
            }
        }
        let check = |v: &EwValue, before: usize, at: &dyn Fn() -> String| match *v {
            EwValue::Input(index) if index >= group.inputs.len() => {
                Err(EwError::NoSuchInput { at: at(), index, count: group.inputs.len() })
            }
            EwValue::Instr(index) if index >= before => Err(EwError::NotEarlier { at: at(), index }),
            _ => Ok(()),
        };
        let mut consts = Vec::new();
        let mut number = |c: f32| {
            consts.push(c);
            Some(consts.len() - 1)
        };
        let mut const_at = Vec::with_capacity(group.body.len());
        for (i, ins) in group.body.iter().enumerate() {
            let mut at = [None; 3];
            for (k, v) in operands(ins).enumerate() {
                check(&v, i, &|| format!("instruction {i}"))?;
                if let EwValue::Const(c) = v {
                    at[k] = number(c);
                }
            }
            if let EwInstr::Scale(_, f) = ins {
                at[2] = number(*f);
            }
            const_at.push(at);
        }
        let mut out_const = Vec::with_capacity(group.outputs.len());
        for (j, v) in group.outputs.iter().enumerate() {
            check(v, group.body.len(), &|| format!("output {j}"))?;
            out_const.push(if let EwValue::Const(c) = v { number(*c) } else { None });
        }
        let mut live = vec![false; group.body.len()];
        for v in &group.outputs {
            if let EwValue::Instr(i) = v {
                live[*i] = true;
            }
        }
        for i in (0..group.body.len()).rev() {
            if live[i] {
                for v in operands(&group.body[i]) {
                    if let EwValue::Instr(j) = v {
                        live[j] = true;
                    }
                }
            }
        }
        Ok(Program { group: group.clone(), consts, const_at, out_const, live })
    }
}

/// The operands of an instruction, in order (a `Scale`'s factor is not an operand).
pub(crate) fn operands(ins: &EwInstr) -> impl Iterator<Item = EwValue> {
    use EwInstr::*;
    let (a, b) = match *ins {
        Add(a, b) | Sub(a, b) | Mul(a, b) => (a, Some(b)),
        Scale(a, _) | Relu(a) | Tanh(a) | Gelu(a) | Sigmoid(a) | Exp(a) => (a, None),
    };
    std::iter::once(a).chain(b)
}

/// The group with constants erased: two groups with equal keys run the same code.
fn structure_key(g: &EwGroup) -> Vec<u32> {
    let value = |v: &EwValue| match *v {
        EwValue::Input(i) => (1u32 << 30) | i as u32,
        EwValue::Instr(i) => (2u32 << 30) | i as u32,
        EwValue::Const(_) => 3u32 << 30,
    };
    let mut key = vec![g.inputs.len() as u32, g.body.len() as u32, g.outputs.len() as u32];
    key.extend(g.inputs.iter().map(|b| *b as u32));
    for ins in &g.body {
        key.push(match ins {
            EwInstr::Add(..) => 0,
            EwInstr::Sub(..) => 1,
            EwInstr::Mul(..) => 2,
            EwInstr::Scale(..) => 3,
            EwInstr::Relu(_) => 4,
            EwInstr::Tanh(_) => 5,
            EwInstr::Gelu(_) => 6,
            EwInstr::Sigmoid(_) => 7,
            EwInstr::Exp(_) => 8,
        });
        key.extend(operands(ins).map(|v| value(&v)));
    }
    key.extend(g.outputs.iter().map(value));
    key
}
