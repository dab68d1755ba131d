//! The state of one lowering, and its intermediate form: the values computed so far,
//! the arena buffers (lengths only: lifetimes are derived once lowering ends, from
//! what each step declares), the steps, and the helpers every lowering rule shares
//! ([`super::lower`] for the plan's kernels, [`super::ewlower`] for fusion groups).
//!
//! The steps are [`Lowered`]: a runtime [`Step`], or a fusion group still being
//! formed ([`EwSpec`]), which exists only here; [`super::ewlower::finish`] compiles
//! the groups into [`Step::Ew`].

use super::attention::AttentionPath;
use super::ew::{EwBroadcast, EwCompiler, EwInstr, EwValue};
use super::math::SimdLevel;
use super::program::{Site, Step, Store, Strided, View};
use crate::backend::plan::Plan;
use crate::backend::{BackendError, KernelError};

/// A value during lowering.
#[derive(Clone, Debug)]
pub(super) enum Val {
    Absent,
    F(View),
    /// Integer buffer with its shape.
    I(usize, Vec<usize>),
}

/// A fusion group while lowering: its operands as views, its outputs with their
/// buffers.
#[derive(Clone, Debug)]
pub(super) struct EwSpec {
    pub rows: usize,
    pub cols: usize,
    pub inputs: Vec<(View, EwBroadcast)>,
    pub body: Vec<EwInstr>,
    pub outputs: Vec<(EwValue, View)>,
}

impl EwSpec {
    pub fn new(rows: usize, cols: usize) -> EwSpec {
        EwSpec { rows, cols, inputs: Vec::new(), body: Vec::new(), outputs: Vec::new() }
    }
}

/// A step of the lowering's intermediate form. Nearly every entry is a `Step`, so
/// boxing it would cost an allocation per step for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Lowered {
    Step(Step),
    /// A fusion group still being formed.
    Group(Box<EwSpec>),
}

pub(super) struct Lowering<'a> {
    pub plan: &'a Plan,
    /// Each step with the index of the [`Site`] it comes from.
    pub steps: Vec<(Lowered, usize)>,
    /// The length (f32 elements) of each arena buffer.
    pub buffers: Vec<usize>,
    pub ids: Vec<Vec<i64>>,
    pub threads: usize,
    /// Which attention kernel runs, by key count.
    pub attention: AttentionPath,
    /// The SIMD level the program runs at (which kernels it has).
    pub level: SimdLevel,
    pub ew: &'a mut EwCompiler,
    /// The plan instructions lowered so far (the last one is being lowered).
    pub sites: Vec<Site>,
}

pub(super) fn internal(msg: impl Into<String>) -> BackendError {
    BackendError::Internal(msg.into())
}

impl Lowering<'_> {
    /// Start lowering an instruction: steps pushed from now on come from it.
    pub fn enter(&mut self, path: &str, op: &'static str) {
        self.sites.push(Site { path: path.to_string(), op });
    }

    fn site(&self) -> usize {
        self.sites.len().saturating_sub(1)
    }

    /// A new contiguous arena buffer of `shape`.
    pub fn fresh(&mut self, shape: Vec<usize>) -> View {
        let len: usize = shape.iter().product();
        self.buffers.push(len.max(1));
        View::plain(Store::Arena(self.buffers.len() - 1), 0, shape)
    }

    pub fn push(&mut self, s: Step) {
        let site = self.site();
        self.steps.push((Lowered::Step(s), site));
    }

    pub fn push_group(&mut self, g: EwSpec) {
        let site = self.site();
        self.steps.push((Lowered::Group(Box::new(g)), site));
    }

    /// The fusion group being formed, if it is the last step.
    pub fn last_group(&self) -> Option<&EwSpec> {
        match self.steps.last() {
            Some((Lowered::Group(g), _)) => Some(g),
            _ => None,
        }
    }

    /// Remove the last step if it is a fusion group.
    pub fn pop_group(&mut self) -> Option<EwSpec> {
        self.last_group()?;
        match self.steps.pop() {
            Some((Lowered::Group(g), _)) => Some(*g),
            _ => None,
        }
    }

    /// A kernel error of the instruction being lowered.
    pub fn err(&self, error: KernelError) -> BackendError {
        let site = self.sites.last();
        BackendError::Kernel {
            path: site.map_or_else(String::new, |s| s.path.clone()),
            op: site.map_or("", |s| s.op),
            error,
        }
    }

    /// `v` as one dense row-major block (copied if it is not).
    pub fn dense(&mut self, v: View) -> View {
        if v.contiguous() {
            return v;
        }
        let dst = self.fresh(v.shape.clone());
        self.push(Step::Copy { src: Strided::of(&v), dst: Strided::of(&dst) });
        dst
    }

    /// `v` with uniformly strided rows (token-major values are transposed).
    pub fn rowwise(&mut self, v: View) -> View {
        if v.token_major {
            self.dense(v)
        } else {
            v
        }
    }

    pub fn param(&self, p: usize) -> View {
        let shape = self.plan.params()[p].shape.iter().map(|&d| d as usize).collect();
        View::plain(Store::Param(p), 0, shape)
    }
}

/// `v` as a float view: integer ids are a kernel error.
pub(super) fn float(l: &Lowering, v: Val) -> Result<View, BackendError> {
    match v {
        Val::F(v) => Ok(v),
        Val::I(..) => Err(l.err(KernelError::IntegerOperand)),
        Val::Absent => Err(internal("absent operand reached a kernel")),
    }
}

/// A possibly negative axis of a rank-`rank` value.
pub(super) fn norm_axis(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64) as usize
    } else {
        axis as usize
    }
}

/// A copy of `src` into a new dense buffer of its shape.
pub(super) fn copy_to_fresh(l: &mut Lowering, src: Strided) -> View {
    let dst = l.fresh(src.shape.clone());
    l.push(Step::Copy { src, dst: Strided::of(&dst) });
    dst
}
