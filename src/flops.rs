//! Matrix-multiply work counted from the graph: of one training step per sample
//! ([`step_macs`]), and of one forward at the shapes `graft bench` runs
//! ([`forward_macs_at`], every symbolic dim at the batch size).
//!
//! Per sample, every symbolic dim is taken as 1, so the batch dim drops out and token
//! dims are the spec's. Counted: the forward of every `linear`,
//! `grouped_linear`, convolution, attention (its two matmuls) and `matmul`, and the
//! backward a step cannot skip. A value needs a gradient when it is computed from a
//! trainable parameter; the backward of a product computes the gradient of an operand
//! only when that operand needs one (a frozen weight gets none, a model input never),
//! each at the forward's cost. Attention's backward needs `dP = dO·Vᵀ` when q or k
//! needs a gradient, then `dV`, `dQ`, `dK` for the operands that do. The ratio of two
//! specs' totals is the matmul FLOP floor of one step against the other.

use crate::ir::{Dim, Graph, Op};
use serde::Serialize;
use std::collections::HashSet;

/// Multiply-accumulates per sample of one training step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StepMacs {
    pub forward: u64,
    pub backward: u64,
}

impl StepMacs {
    pub fn total(&self) -> u64 {
        self.forward + self.backward
    }
}

/// A dim's size with every symbolic dim `sym`.
fn size(d: &Dim, sym: u64) -> u64 {
    d.fixed().map_or(sym, |k| k as u64)
}

/// Elements of a node's value with every symbolic dim `sym`.
fn numel(g: &Graph, n: crate::ir::NodeId, sym: u64) -> u64 {
    g.node(n).ty.as_ref().map_or(0, |t| t.shape.iter().map(|d| size(d, sym)).product())
}

/// Dim `i` (negative from the end) of a node's value (`sym` when symbolic, 1 when absent).
fn dim(g: &Graph, n: crate::ir::NodeId, i: isize, sym: u64) -> u64 {
    g.node(n).ty.as_ref().and_then(|t| t.dim(i)).map_or(1, |d| size(d, sym))
}

/// The matrix-multiply work of one training step of `g` (a train-mode graph), per
/// sample: every symbolic dim taken as 1.
pub fn step_macs(g: &Graph) -> StepMacs {
    step_macs_at(g, 1)
}

/// Multiply-accumulates of one forward of `g` with every symbolic dim `sym`, the
/// shapes `graft bench --batch sym` runs (all of a forward's matrix-multiply work,
/// whatever trains).
pub fn forward_macs_at(g: &Graph, sym: u64) -> u64 {
    step_macs_at(g, sym).forward
}

/// [`step_macs`] with every symbolic dim `sym`.
fn step_macs_at(g: &Graph, sym: u64) -> StepMacs {
    let numel = |n| numel(g, n, sym);
    let dim = |n, i| dim(g, n, i, sym);
    let last = |n| dim(n, -1);
    let mut grad: HashSet<crate::ir::NodeId> = HashSet::new();
    let mut m = StepMacs::default();
    for n in g.topo_order().unwrap_or_default() {
        let node = g.node(n);
        let ops = g.operands(n);
        let operand_grads: Vec<bool> = ops.iter().map(|o| grad.contains(o)).collect();
        let needs = |i: usize| operand_grads.get(i).copied().unwrap_or(false);
        if matches!(&node.op, Op::Parameter(p) if p.trainable) || operand_grads.contains(&true) {
            grad.insert(n);
        }
        // Forward MACs, and which operands' gradients cost as much again.
        let (fwd, bwd) = match &node.op {
            Op::Linear | Op::GroupedLinear { .. } | Op::MatMul => {
                let f = numel(n) * last(ops[0]).max(1);
                let f = match node.op {
                    // The weight is [out, in / groups]: each output sums in / groups terms.
                    Op::GroupedLinear { .. } => numel(n) * dim(ops[1], -1),
                    _ => f,
                };
                (f, f * (needs(0) as u64 + needs(1) as u64))
            }
            Op::Conv2d { .. } | Op::Conv3d { .. } => {
                // Each output element sums over in_channels × kernel.
                let per: u64 =
                    g.node(ops[1]).ty.as_ref().map_or(0, |t| t.shape.iter().skip(1).map(|d| size(d, sym)).product());
                let f = numel(n) * per;
                (f, f * (needs(0) as u64 + needs(1) as u64))
            }
            Op::Attention { .. } => {
                // q [B, T, D], k [B, S, D], v [B, S, Dv]: QKᵀ is B·T·S·D, PV is B·T·S·Dv.
                let s = dim(ops[1], -2);
                let (qk, pv) = (numel(ops[0]) * s, numel(ops[0]) / last(ops[0]).max(1) * s * last(ops[2]));
                let (q, k, v) = (needs(0), needs(1), needs(2));
                let bwd = if q || k { pv } else { 0 } + v as u64 * pv + q as u64 * qk + k as u64 * qk;
                (qk + pv, bwd)
            }
            _ => (0, 0),
        };
        m.forward += fwd;
        m.backward += bwd;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::compile_str;
    use crate::pipeline::Mode;

    fn macs(train: &str) -> StepMacs {
        let src = format!(
            "model m {{\n  input x: f32[B, 5, 4]\n  encoder e = linear(4, 6)(x)\n  head h = linear(6, 3)(e)\n  output y = h\n  {train}\n}}\n"
        );
        let Ok(c) = compile_str("m.graft", None, &src, Mode::Train) else { panic!("compiles") };
        step_macs(&c.graph)
    }

    #[test]
    fn frozen_weights_and_inputs_take_no_gradient() {
        // e: 5 tokens × 6 × 4 = 120; h: 5 × 3 × 6 = 90.
        let all = macs("train e, h");
        assert_eq!(all, StepMacs { forward: 210, backward: 120 + 90 * 2 });
        // Only the head trains: e needs nothing back, h only its weight's gradient.
        assert_eq!(macs("train h"), StepMacs { forward: 210, backward: 90 });
        // Only e trains: h passes the gradient to its input, e takes its weight's.
        assert_eq!(macs("train e"), StepMacs { forward: 210, backward: 90 + 120 });
    }

    #[test]
    fn a_forward_at_a_batch_counts_every_symbolic_dim_at_that_size() {
        let src = "model m {\n  input x: f32[B, T, 8]\n  encoder q = linear(8, 8)(x)\n  encoder o = sdpa(q, q, q, heads: 2)\n  output y = o\n}\n";
        let Ok(c) = compile_str("m.graft", None, src, Mode::Infer) else { panic!("compiles") };
        // At B = T = 3: the linear 3·3·8·8, attention's two products 3·3·3·8 each.
        assert_eq!(forward_macs_at(&c.graph, 3), 3 * 3 * 8 * 8 + 2 * 3 * 3 * 3 * 8);
        assert_eq!(forward_macs_at(&c.graph, 1), step_macs(&c.graph).forward);
    }
}
