//! infer_shapes: give every node its tensor type by the op's shape rule.
//!
//! Analyzer pass: a rule that fails is a user error (a linear fed the wrong width, a
//! kernel that does not tile the image) reported at the span of the expression that
//! built the node. Nodes fed by an `Unbound` input (auxiliary models) stay untyped;
//! nodes fed by a failed node are skipped so one mistake reports once.

use super::ctx::PassCtx;
use crate::diag::Diagnostic;
use crate::ir::typing::type_nodes;
use crate::ir::verify::VerifyError;
use crate::ir::{Graph, NodeId};

/// The pass: type every node; a failure inside a library module also points at the
/// model's declaration that instantiated it.
pub fn infer_shapes(g: &mut Graph, cx: &mut PassCtx) -> Result<bool, VerifyError> {
    let before: Vec<_> = g.ids().into_iter().map(|id| g.node(id).ty.clone()).collect();
    let errors = type_nodes(g);
    let changed = g.ids().into_iter().zip(before).any(|(id, ty)| g.node(id).ty != ty);
    for (id, d) in errors {
        let d = from_user_code(g, cx, id, d);
        cx.report(d);
    }
    Ok(changed)
}

/// A shape error found inside a library module (`<std>/vit.graft`) also points at the
/// model's declaration that instantiated it, so the user sees which of their lines to fix.
fn from_user_code(g: &Graph, cx: &PassCtx, id: NodeId, d: Diagnostic) -> Diagnostic {
    use crate::syntax::ast::ModelItem;
    let prog = cx.program();
    if d.primary.as_ref().is_none_or(|(span, _)| span.file == prog.root) {
        return d;
    }
    let path = g.node(id).path.clone();
    let top = path.split('.').next().unwrap_or_default();
    let root_first = prog.models.get(&cx.decls.model).into_iter().chain(prog.models.values());
    let decl = root_first.flat_map(|m| m.items.iter()).find_map(|it| match it {
        ModelItem::Component(c) if c.name.name == top => Some(c.value.span),
        ModelItem::Head { name, value, .. } if name.name == top => Some(value.span),
        _ => None,
    });
    match decl {
        Some(span) => d.also(span, format!("`{path}` is part of this instance")),
        None => d,
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::{DType, Dim, Graph, Init, Op, ParamInfo, ParamSource, TensorType};

    fn param(g: &mut Graph, path: &str, shape: &[i64]) -> crate::ir::NodeId {
        let p = ParamInfo {
            path: path.into(),
            shape: shape.to_vec(),
            dtype: DType::F32,
            trainable: false,
            component: "m".into(),
            source: ParamSource::Init { init: Init::Zeros },
        };
        g.add(Op::Parameter(p), path, None, &[])
    }

    #[test]
    fn linear_types_and_mismatch_reports() {
        let mut g = Graph::new();
        let ty = TensorType::new(DType::F32, vec![Dim::Sym("B".into()), Dim::Fixed(197), Dim::Fixed(768)]);
        let x = g.add(
            Op::Input { name: "x".into(), ty, optional: false, default_zeros: false, norm: None },
            "x",
            None,
            &[],
        );
        let w = param(&mut g, "fc.weight", &[3072, 768]);
        let l = g.add(Op::Linear, "fc", None, &[x, w]);
        let w2 = param(&mut g, "bad.weight", &[10, 100]);
        let bad = g.add(Op::Linear, "bad", None, &[l, w2]);
        let errs = super::type_nodes(&mut g);
        insta::assert_snapshot!(g.node(l).ty.as_ref().unwrap().to_string(), @"f32[B, 197, 3072]");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, bad);
        insta::assert_snapshot!(errs[0].1.message, @"shape mismatch in `linear` at `bad`: linear expects input features 100, but the input is f32[B, 197, 3072]");
    }
}
