//! The state of one lowering: the values computed so far, the arena buffers with
//! their lifetimes (first write, last read), the steps, and the helpers every
//! lowering rule shares ([`super::lower`] for the plan's kernels,
//! [`super::ewlower`] for fusion groups).

use super::ew::EwCompiler;
use super::program::{Buffer, Step, Store, Strided, View};
use crate::backend::plan::Plan;
use crate::backend::BackendError;

/// A value during lowering.
#[derive(Clone, Debug)]
pub(super) enum Val {
    Absent,
    F(View),
    /// Integer buffer with its shape.
    I(usize, Vec<usize>),
}

pub(super) struct Lowering<'a> {
    pub plan: &'a Plan,
    pub steps: Vec<Step>,
    pub buffers: Vec<Buffer>,
    pub ids: Vec<Vec<i64>>,
    pub threads: usize,
    pub ew: &'a mut EwCompiler,
    /// The instruction being lowered, for error messages.
    pub path: String,
    pub op: &'static str,
}

pub(super) fn internal(msg: impl Into<String>) -> BackendError {
    BackendError::Internal(msg.into())
}

impl Lowering<'_> {
    /// A new contiguous arena buffer of `shape`, written by the next step.
    pub fn fresh(&mut self, shape: Vec<usize>) -> View {
        let len: usize = shape.iter().product();
        let at = self.steps.len();
        self.buffers.push(Buffer { len: len.max(1), first: at, last: at, offset: 0 });
        View::plain(Store::Arena(self.buffers.len() - 1), 0, shape)
    }

    /// Mark `v` read by the next step.
    pub fn touch(&mut self, v: &View) {
        if let Store::Arena(b) = v.store {
            let at = self.steps.len();
            let buf = &mut self.buffers[b];
            buf.last = buf.last.max(at);
        }
    }

    pub fn push(&mut self, s: Step) {
        self.steps.push(s);
    }

    pub fn err(&self, message: impl Into<String>) -> BackendError {
        BackendError::Kernel { path: self.path.clone(), op: self.op, message: message.into() }
    }

    /// `v` as one dense row-major block (copied if it is not).
    pub fn dense(&mut self, v: View) -> View {
        if v.contiguous() {
            return v;
        }
        let dst = self.fresh(v.shape.clone());
        self.touch(&v);
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
