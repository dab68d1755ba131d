//! check_optional_inputs: every output must survive any optional input being absent.
//!
//! Analyzer pass. At run time a missing optional input (a missing modality) makes
//! the values computed from it absent, by each op's rule ([`Op::on_absent`]: `add`
//! passes its present operand through; that is how a cross-attention adapter
//! `x + gate * attend(x, context)` is skipped). An output that would itself become
//! absent is a user error.

use super::ctx::PassCtx;
use crate::diag::Diagnostic;
use crate::ir::verify::VerifyError;
use crate::ir::{Graph, NodeId, Op};
use std::collections::HashSet;

/// The nodes that are absent when the inputs in `missing` are.
pub fn absent_nodes(g: &Graph, missing: &[NodeId]) -> HashSet<NodeId> {
    let mut absent: HashSet<NodeId> = missing.iter().copied().collect();
    // The op's own rule ([`Op::on_absent`]) says which results survive.
    let data = g.computed_from_inputs();
    let Some(order) = g.topo_order() else { return absent };
    for id in order {
        let ops = g.operands(id);
        if absent.contains(&id) || ops.is_empty() {
            continue;
        }
        let gone: Vec<bool> = ops.iter().map(|o| absent.contains(o)).collect();
        let from_data: Vec<bool> = ops.iter().map(|o| data.contains(o)).collect();
        if gone.contains(&true) && g.node(id).op.on_absent(&gone, &from_data).is_none() {
            absent.insert(id);
        }
    }
    absent
}

/// The pass: report every output that a missing optional input would make absent.
/// It only checks; the graph never changes.
pub fn check_optional_inputs(g: &mut Graph, cx: &mut PassCtx) -> Result<bool, VerifyError> {
    for d in unreachable_outputs(g) {
        cx.report(d);
    }
    Ok(false)
}

fn unreachable_outputs(g: &Graph) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for inp in g.inputs() {
        let Op::Input { name, optional: true, default_zeros: false, .. } = &g.node(inp).op else { continue };
        let absent = absent_nodes(g, &[inp]);
        for o in g.outputs() {
            if absent.contains(&o) {
                let n = g.node(o);
                let Op::Output { name: oname } = &n.op else { continue };
                let mut d = Diagnostic::error("E0801", format!("output `{oname}` cannot be computed without optional input `{name}`"))
                    .hint(format!("reach `{name}` only through adapters that add to the main path (x + gate * f(x, {name})), or make the input required"));
                if let Some(sp) = n.span {
                    d = d.at(sp, format!("needs `{name}`"));
                }
                if let Some(sp) = g.node(inp).span {
                    d = d.also(sp, "declared optional here");
                }
                out.push(d);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::passes::testkit::lowered;

    #[test]
    fn add_passes_the_present_operand_but_an_output_needing_the_input_fails() {
        let (mut g, mut cx) = lowered(
            r#"
model m {
  input x: f32[B, 4]
  input a: f32[B, 4] optional
  encoder e = linear(4, 4)(a)
  output y = x + e
  output z = e
}
"#,
        );
        assert!(!super::check_optional_inputs(&mut g, &mut cx).unwrap());
        let d = &cx.diags().items;
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].message, "output `z` cannot be computed without optional input `a`");
    }
}
