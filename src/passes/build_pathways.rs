//! build_pathways: M2PT cross-modal re-parameterization.
//!
//! Analyzer pass. `pathway P = reparam(lambda: L, aux: trainable|frozen) from AUX into TGT`
//! pairs the linear sites matched by AUX and TGT in order and rewrites each target
//! linear to compute with `W + λ·W′`: a scalar parameter `P.<target site>.lambda`
//! (initialised to L, default 0) times the auxiliary weight, added to the target
//! weight. Only the target's bias is used. Differing counts (depths) or weight shapes
//! are errors, never a silent truncation.

use super::ctx::{Borrowed, Decls, PassCtx};
use crate::diag::Diagnostic;
use crate::ir::verify::VerifyError;
use crate::ir::{Graph, Init, NodeId, Op};
use crate::lower::{Builder, SiteKind, Value};
use crate::select::Universe;
use crate::syntax::ast::{ExprKind, PathwayDecl};
use std::collections::HashMap;

/// The pass: rewrite every paired target weight; what each pathway borrows is left
/// in the context for `apply_training_rules`.
pub fn build_pathways(g: &mut Graph, cx: &mut PassCtx) -> Result<bool, VerifyError> {
    let mut out = HashMap::new();
    let mut targeted: HashMap<NodeId, String> = HashMap::new();
    let (mut b, decls) = cx.lend(g);
    for p in &decls.pathways {
        if b.diags.items.len() > crate::lower::limits::MAX_DIAGNOSTICS {
            break;
        }
        if let Some(borrowed) = build_one(&mut b, decls, p, &mut targeted) {
            out.insert(p.name.name.clone(), borrowed);
        }
    }
    drop(b);
    let changed = !out.is_empty();
    cx.borrowed = out;
    Ok(changed)
}

fn options(b: &mut Builder, decls: &Decls, p: &PathwayDecl) -> Option<(f64, bool)> {
    let mut lambda = 0.0;
    let mut aux_trainable = true;
    for a in &p.args {
        let name = a.name.as_ref().map(|n| n.name.as_str());
        let ok = match (name, &a.value.kind) {
            // λ is configuration arithmetic like any other argument (`lambda: 1 / 8`).
            (Some("lambda"), _) => match b.eval(&a.value, &decls.env, &p.name.name).ok()? {
                Value::Float(f) => {
                    lambda = f;
                    true
                }
                Value::Int(i) => {
                    lambda = i as f64;
                    true
                }
                _ => false,
            },
            (Some("aux"), ExprKind::Name(n)) if n == "trainable" || n == "frozen" => {
                aux_trainable = n == "trainable";
                true
            }
            _ => false,
        };
        if !ok {
            b.diags
                .push(Diagnostic::error("E0901", "bad argument to `reparam`").at(a.value.span, "not understood").hint(
                "reparam takes `lambda: NUMBER` (initial λ, default 0) and `aux: trainable|frozen` (default trainable)",
            ));
            return None;
        }
    }
    Some((lambda, aux_trainable))
}

fn build_one(
    b: &mut Builder,
    decls: &Decls,
    p: &PathwayDecl,
    targeted: &mut HashMap<NodeId, String>,
) -> Option<Borrowed> {
    if p.kind.name != "reparam" {
        b.diags.push(
            Diagnostic::error("E0902", format!("unknown pathway kind `{}`", p.kind.name))
                .at(p.kind.span, "not a pathway kind")
                .hint("the pathway kind is `reparam` (cross-modal re-parameterization, M2PT)"),
        );
        return None;
    }
    let (lambda, aux_trainable) = options(b, decls, p)?;
    let universe = Universe::new(b.site_order.iter().map(String::as_str));
    let mut sides = Vec::new();
    for (sel, what) in [(&p.from, "from"), (&p.into, "into")] {
        let m = universe.full_matches(sel);
        if m.is_empty() {
            let near = universe.suggest(sel, 3);
            b.diags.push(
                Diagnostic::error(
                    "E0701",
                    format!("pathway `{}`: `{what}` selector `{sel}` matches nothing", p.name.name),
                )
                .at(sel.span, "no site has this path")
                .hint(if near.is_empty() {
                    "`graft select SPEC PATTERN` lists what a pattern matches".to_string()
                } else {
                    format!("nearest existing paths: {}", near.join(", "))
                }),
            );
            return None;
        }
        for s in &m {
            if b.sites[s].kind != SiteKind::Primitive("linear".into()) {
                b.diags.push(
                    Diagnostic::error("E0903", format!("pathway `{}`: `{s}` is not a linear layer", p.name.name))
                        .at(sel.span, format!("`{what}` matches it"))
                        .hint("pathways re-parameterize linear layers: select e.g. blocks[*].{attn.qkv, attn.proj, mlp.fc1, mlp.fc2}"),
                );
                return None;
            }
        }
        sides.push(m);
    }
    let (from, into) = (&sides[0], &sides[1]);
    if from.len() != into.len() {
        b.diags.push(
            Diagnostic::error("E0904", format!("pathway `{}` pairs {} auxiliary layers with {} target layers", p.name.name, from.len(), into.len()))
                .at(p.into.span, format!("{} target layers", into.len()))
                .also(p.from.span, format!("{} auxiliary layers", from.len()))
                .hint("layers are paired in order; models of different depth need index ranges that match, e.g. blocks[0..12]"),
        );
        return None;
    }
    let mut borrowed = Borrowed { aux_trainable, ..Borrowed::default() };
    for (src, dst) in from.iter().zip(into) {
        let aux_lin = b.sites[src].output;
        let tgt_lin = b.sites[dst].output;
        if let Some(prev) = targeted.get(&tgt_lin) {
            b.diags.push(
                Diagnostic::error("E0905", format!("`{dst}` is the target of two pathways"))
                    .at(p.into.span, format!("`{}` targets it", p.name.name))
                    .hint(format!("pathway `{prev}` already re-parameterizes it; one pathway per layer")),
            );
            return None;
        }
        targeted.insert(tgt_lin, p.name.name.clone());
        let g = &b.graph;
        let (w_aux, w_tgt) = (g.operands(aux_lin)[1], g.operands(tgt_lin)[1]);
        let shape = |id: NodeId| match &g.node(id).op {
            Op::Parameter(pi) => Some((pi.shape.clone(), pi.path.clone())),
            _ => None,
        };
        let (Some((sa, pa)), Some((st, _))) = (shape(w_aux), shape(w_tgt)) else {
            // A target rewritten by another pathway is caught above, so this is
            // normally an auxiliary layer that is itself a pathway's target.
            let (which, span) = if shape(w_aux).is_none() { (src, p.from.span) } else { (dst, p.into.span) };
            b.diags.push(
                Diagnostic::error("E0907", format!("`{which}` already computes its weight through a pathway"))
                    .at(span, "its weight is not a plain parameter")
                    .hint("a pathway borrows a plain weight: a layer takes part in one pathway"),
            );
            return None;
        };
        if sa != st {
            b.diags.push(
                Diagnostic::error(
                    "E0906",
                    format!("pathway `{}`: `{src}` weight {sa:?} does not fit `{dst}` weight {st:?}", p.name.name),
                )
                .at(p.from.span, format!("{sa:?}"))
                .also(p.into.span, format!("{st:?}"))
                .hint("W + λ·W′ needs the auxiliary model to have the target's widths"),
            );
            return None;
        }
        b.set_owner(&p.name.name, None);
        let lpath = format!("{}.{dst}.lambda", p.name.name);
        let lam = b.new_param(&lpath, vec![], Init::Constant { value: lambda }, p.span).ok()?;
        let g = &mut b.graph;
        let scaled = g.add(Op::Mul, format!("{}.{dst}", p.name.name), Some(p.span), &[lam, w_aux]);
        let sum = g.add(Op::Add, format!("{}.{dst}", p.name.name), Some(p.span), &[w_tgt, scaled]);
        g.set_operand(tgt_lin, 1, sum);
        borrowed.aux_params.push(pa);
        borrowed.lambdas.push(lpath);
    }
    for (_, d) in crate::ir::typing::type_nodes(&mut b.graph) {
        b.diags.push(d);
    }
    Some(borrowed)
}

#[cfg(test)]
mod tests {
    use crate::passes::testkit::{errors, ir, lowered};

    const SPEC: &str = r#"
module lin(dim: int, depth: int) {
  in x
  fc = linear(dim, dim)(x)
  out fc
}
model m {
  input x: f32[B, 4]
  encoder t = lin(4, 1)(x)
  encoder aux = lin(AUXDIM, 1)
  pathway p = reparam(lambda: 0.5, aux: frozen) from aux.fc into t.fc
  output y = t
}
"#;

    #[test]
    fn target_weight_becomes_w_plus_lambda_w_aux() {
        let (mut g, mut cx) = lowered(&SPEC.replace("AUXDIM", "4"));
        assert!(super::build_pathways(&mut g, &mut cx).unwrap());
        assert!(!cx.diags().has_errors(), "{}", errors(&cx));
        assert!(!cx.borrowed["p"].aux_trainable);
        g.remove_dead();
        insta::assert_snapshot!(ir(&g), @"
        %0 = input x : f32[B, 4]
        %1 = param t.fc.weight : f32[4, 4] frozen init uniform(0.500000)
        %2 = param p.t.fc.lambda : f32[] frozen init constant(0.5)
        %3 = param aux.fc.weight : f32[4, 4] frozen init uniform(0.500000)
        %4 = mul(%2, %3) : f32[4, 4]  @p.t.fc
        %5 = add(%1, %4) : f32[4, 4]  @p.t.fc
        %6 = param t.fc.bias : f32[4] frozen init uniform(0.500000)
        %7 = linear(%0, %5, %6) : f32[B, 4]  @t.fc
        output y = %7 : f32[B, 4]
        ");
    }

    #[test]
    fn width_mismatch_is_an_error() {
        let (mut g, mut cx) = lowered(&SPEC.replace("AUXDIM", "8"));
        super::build_pathways(&mut g, &mut cx).unwrap();
        insta::assert_snapshot!(errors(&cx), @"
        error[E0906]: pathway `p`: `aux.fc` weight [8, 8] does not fit `t.fc` weight [4, 4]
           ┌─ test.graft:11:54
           │
        11 │   pathway p = reparam(lambda: 0.5, aux: frozen) from aux.fc into t.fc
           │                                                      ^^^^^^      ---- [4, 4]
           │                                                      │            
           │                                                      [8, 8]
           │
           = hint: W + λ·W′ needs the auxiliary model to have the target's widths
        ");
    }

    /// The λ of `lambda: EXPR` after the pass, or the rendered errors.
    fn lambda(expr: &str) -> Result<String, String> {
        let spec = SPEC.replace("AUXDIM", "4").replace("lambda: 0.5", &format!("lambda: {expr}"));
        let (mut g, mut cx) = lowered(&spec);
        super::build_pathways(&mut g, &mut cx).unwrap();
        if cx.diags().has_errors() {
            return Err(errors(&cx));
        }
        let (_, p) = g.params().find(|(_, p)| p.path == "p.t.fc.lambda").expect("the lambda parameter");
        Ok(format!("{:?}", p.source))
    }

    #[test]
    fn lambda_takes_configuration_arithmetic() {
        assert_eq!(lambda("2 * 0.25"), lambda("0.5"));
        assert!(lambda("2 * 0.25").unwrap().contains("0.5"));
        assert!(lambda("-(1.0 / 8)").unwrap().contains("-0.125"));
        assert!(lambda("3").unwrap().contains("3.0"));
        let err = lambda("\"big\"").unwrap_err();
        assert!(err.contains("E0901"), "{err}");
    }
}
