//! eliminate_dead_code: drop every node that no output depends on.
//!
//! Optimizer pass (meaning-preserving). It removes the unused parts of auxiliary
//! models (only the weights a pathway borrows stay), the `Unbound` placeholders, and
//! what folding leaves behind.

use super::ctx::PassCtx;
use crate::ir::verify::VerifyError;
use crate::ir::Graph;

/// The pass: remove what no output needs.
pub fn eliminate_dead_code(g: &mut Graph, _cx: &mut PassCtx) -> Result<bool, VerifyError> {
    Ok(g.remove_dead() > 0)
}

#[cfg(test)]
mod tests {
    use crate::ir::{DType, Graph, Op, TensorType};

    #[test]
    fn keeps_what_outputs_need_and_all_inputs() {
        let mut g = Graph::new();
        let ty = TensorType::fixed(DType::F32, &[2, 3]);
        let x = g.add(
            Op::Input { name: "x".into(), ty: ty.clone(), optional: false, default_zeros: false, norm: None },
            "x",
            None,
            &[],
        );
        let y =
            g.add(Op::Input { name: "y".into(), ty, optional: true, default_zeros: false, norm: None }, "y", None, &[]);
        let r = g.add(Op::Relu, "a", None, &[x]);
        let dead = g.add(Op::Gelu, "b", None, &[y]);
        let _ = g.add(Op::Output { name: "o".into() }, "o", None, &[r]);
        assert_eq!(g.remove_dead(), 1);
        assert!(g.contains(r) && g.contains(x) && g.contains(y));
        assert!(!g.contains(dead));
        assert_eq!(g.len(), 4);
    }
}
