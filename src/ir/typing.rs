//! Typing a graph: every node gets its tensor type by its op's shape rule
//! ([`Op::infer`]). The `infer_shapes` pass runs it over the whole graph; passes that
//! add nodes (`insert_adapters`, `build_pathways`, `fold_reparam`) run it to type
//! what they added.

use super::{Graph, NodeId, Op};
use crate::diag::Diagnostic;

/// Type all nodes in topological order; returns the failures (error E0601, at the
/// node's span) with the node they occurred at. Nodes fed by an `Unbound` input or by
/// a failed node stay untyped, so one mistake reports once.
pub fn type_nodes(g: &mut Graph) -> Vec<(NodeId, Diagnostic)> {
    let mut errors = Vec::new();
    let Some(order) = g.topo_order() else {
        return errors;
    };
    for id in order {
        let ops = g.operands(id);
        let node = g.node(id);
        if matches!(node.op, Op::Unbound) {
            continue;
        }
        let ins: Option<Vec<_>> = ops.iter().map(|o| g.node(*o).ty.clone()).collect();
        let Some(ins) = ins else {
            g.node_mut(id).ty = None;
            continue;
        };
        let refs: Vec<_> = ins.iter().collect();
        match node.op.infer(&refs) {
            Ok(t) => g.node_mut(id).ty = Some(t),
            Err(msg) => {
                let node = g.node(id);
                let operands = ins.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
                let mut d =
                    Diagnostic::error("E0601", format!("shape mismatch in `{}` at `{}`", node.op.name(), node.path))
                        .hint(format!("operands are {operands}; check the sizes passed to this instance"));
                if let Some(span) = node.span {
                    d = d.at(span, msg);
                } else {
                    d.message = format!("{}: {msg}", d.message);
                }
                g.node_mut(id).ty = None;
                errors.push((id, d));
            }
        }
    }
    errors
}
