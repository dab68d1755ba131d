//! Matrix-multiply work of one training step, counted from the graph.
//!
//! Multiply-accumulates per sample (every symbolic dim taken as 1, so the batch dim
//! drops out and token dims are the spec's): the forward of every `linear`,
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

/// Elements of a node's value with every symbolic dim 1.
fn numel(g: &Graph, n: crate::ir::NodeId) -> u64 {
    let ty = g.node(n).ty.as_ref();
    ty.map_or(0, |t| {
        t.shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(k) => *k as u64,
                Dim::Sym(_) => 1,
            })
            .product()
    })
}

/// The last dim of a node's value (1 when symbolic).
fn last(g: &Graph, n: crate::ir::NodeId) -> u64 {
    g.node(n).ty.as_ref().and_then(|t| t.shape.last()).and_then(Dim::fixed).unwrap_or(1) as u64
}

/// Dim `i` (negative from the end) of a node's value (1 when symbolic or absent).
fn dim(g: &Graph, n: crate::ir::NodeId, i: isize) -> u64 {
    g.node(n).ty.as_ref().and_then(|t| t.dim(i)).and_then(Dim::fixed).unwrap_or(1) as u64
}

/// The matrix-multiply work of one training step of `g` (a train-mode graph).
pub fn step_macs(g: &Graph) -> StepMacs {
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
                let f = numel(g, n) * last(g, ops[0]).max(1);
                let f = match node.op {
                    // The weight is [out, in / groups]: each output sums in / groups terms.
                    Op::GroupedLinear { .. } => numel(g, n) * dim(g, ops[1], -1),
                    _ => f,
                };
                (f, f * (needs(0) as u64 + needs(1) as u64))
            }
            Op::Conv2d { .. } | Op::Conv3d { .. } => {
                // Each output element sums over in_channels × kernel.
                let per: u64 = g
                    .node(ops[1])
                    .ty
                    .as_ref()
                    .map_or(0, |t| t.shape.iter().skip(1).map(|d| d.fixed().unwrap_or(1) as u64).product());
                let f = numel(g, n) * per;
                (f, f * (needs(0) as u64 + needs(1) as u64))
            }
            Op::Attention { .. } => {
                // q [B, T, D], k [B, S, D], v [B, S, Dv]: QKᵀ is T·S·D, PV is T·S·Dv.
                let (t, s) = (dim(g, ops[0], -2), dim(g, ops[1], -2));
                let (qk, pv) = (t * s * last(g, ops[0]), t * s * last(g, ops[2]));
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
}
