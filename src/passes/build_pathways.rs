//! build_pathways: M2PT cross-modal re-parameterization.
//!
//! Analyzer pass. `pathway P = reparam(lambda: L, aux: trainable|frozen) from AUX into TGT`
//! pairs the linear sites matched by AUX and TGT in order and rewrites each target
//! linear to compute with `W + λ·W′`: a scalar parameter `P.<target site>.lambda`
//! (initialised to L, default 0) times the auxiliary weight, added to the target
//! weight. Only the target's bias is used. Differing counts (depths) or weight shapes
//! are errors, never a silent truncation.

use crate::diag::Diagnostic;
use crate::ir::{Init, NodeId, Op};
use crate::lower::{Lowered, SiteKind};
use crate::select::Universe;
use crate::syntax::ast::{ExprKind, PathwayDecl, UnOp};
use std::collections::HashMap;

/// What a pathway borrows: whether W′ trains, and the W′ parameter paths.
#[derive(Debug, Clone, Default)]
pub struct Borrowed {
    pub aux_trainable: bool,
    pub aux_params: Vec<String>,
    pub lambdas: Vec<String>,
}

pub fn build_pathways(lw: &mut Lowered) -> HashMap<String, Borrowed> {
    let mut out = HashMap::new();
    let mut targeted: HashMap<NodeId, String> = HashMap::new();
    for p in lw.pathways.clone() {
        if lw.b.diags.items.len() > crate::lower::limits::MAX_DIAGNOSTICS {
            break;
        }
        if let Some(b) = build_one(lw, &p, &mut targeted) {
            out.insert(p.name.name.clone(), b);
        }
    }
    out
}

fn options(lw: &mut Lowered, p: &PathwayDecl) -> Option<(f64, bool)> {
    let mut lambda = 0.0;
    let mut aux_trainable = true;
    for a in &p.args {
        let name = a.name.as_ref().map(|n| n.name.as_str());
        let ok = match (name, &a.value.kind) {
            (Some("lambda"), ExprKind::Float(f)) => {
                lambda = *f;
                true
            }
            (Some("lambda"), ExprKind::Int(i)) => {
                lambda = *i as f64;
                true
            }
            (Some("lambda"), ExprKind::Unary(UnOp::Neg, x)) => match x.kind {
                ExprKind::Float(f) => {
                    lambda = -f;
                    true
                }
                ExprKind::Int(i) => {
                    lambda = -(i as f64);
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
            lw.b.diags
                .push(Diagnostic::error("E0901", "bad argument to `reparam`").at(a.value.span, "not understood").hint(
                "reparam takes `lambda: NUMBER` (initial λ, default 0) and `aux: trainable|frozen` (default trainable)",
            ));
            return None;
        }
    }
    Some((lambda, aux_trainable))
}

fn build_one(lw: &mut Lowered, p: &PathwayDecl, targeted: &mut HashMap<NodeId, String>) -> Option<Borrowed> {
    if p.kind.name != "reparam" {
        lw.b.diags.push(
            Diagnostic::error("E0902", format!("unknown pathway kind `{}`", p.kind.name))
                .at(p.kind.span, "not a pathway kind")
                .hint("the pathway kind is `reparam` (cross-modal re-parameterization, M2PT)"),
        );
        return None;
    }
    let (lambda, aux_trainable) = options(lw, p)?;
    let universe = Universe::new(lw.b.site_order.iter().map(String::as_str));
    let mut sides = Vec::new();
    for (sel, what) in [(&p.from, "from"), (&p.into, "into")] {
        let m = universe.full_matches(sel);
        if m.is_empty() {
            let near = universe.suggest(sel, 3);
            lw.b.diags.push(
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
            if lw.b.sites[s].kind != SiteKind::Primitive("linear".into()) {
                lw.b.diags.push(
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
        lw.b.diags.push(
            Diagnostic::error("E0904", format!("pathway `{}` pairs {} auxiliary layers with {} target layers", p.name.name, from.len(), into.len()))
                .at(p.into.span, format!("{} target layers", into.len()))
                .also(p.from.span, format!("{} auxiliary layers", from.len()))
                .hint("layers are paired in order; models of different depth need index ranges that match, e.g. blocks[0..12]"),
        );
        return None;
    }
    let mut borrowed = Borrowed { aux_trainable, ..Borrowed::default() };
    for (src, dst) in from.iter().zip(into) {
        let aux_lin = lw.b.sites[src].output;
        let tgt_lin = lw.b.sites[dst].output;
        if let Some(prev) = targeted.get(&tgt_lin) {
            lw.b.diags.push(
                Diagnostic::error("E0905", format!("`{dst}` is the target of two pathways"))
                    .at(p.into.span, format!("`{}` targets it", p.name.name))
                    .hint(format!("pathway `{prev}` already re-parameterizes it; one pathway per layer")),
            );
            return None;
        }
        targeted.insert(tgt_lin, p.name.name.clone());
        let g = &lw.b.graph;
        let (w_aux, w_tgt) = (g.operands(aux_lin)[1], g.operands(tgt_lin)[1]);
        let shape = |id: NodeId| match &g.node(id).op {
            Op::Parameter(pi) => Some((pi.shape.clone(), pi.path.clone())),
            _ => None,
        };
        let (Some((sa, pa)), Some((st, _))) = (shape(w_aux), shape(w_tgt)) else {
            lw.b.diags.push(
                Diagnostic::error("E0905", format!("`{dst}` already computes its weight"))
                    .at(p.into.span, "its weight is not a plain parameter")
                    .hint("a layer takes one pathway"),
            );
            return None;
        };
        if sa != st {
            lw.b.diags.push(
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
        lw.b.set_owner(&p.name.name, None);
        let lpath = format!("{}.{dst}.lambda", p.name.name);
        let lam = lw.b.new_param(&lpath, vec![], Init::Constant { value: lambda }, p.span).ok()?;
        let g = &mut lw.b.graph;
        let scaled = g.add(Op::Mul, format!("{}.{dst}", p.name.name), Some(p.span), &[lam, w_aux]);
        let sum = g.add(Op::Add, format!("{}.{dst}", p.name.name), Some(p.span), &[w_tgt, scaled]);
        g.set_operand(tgt_lin, 1, sum);
        borrowed.aux_params.push(pa);
        borrowed.lambdas.push(lpath);
    }
    for (_, d) in crate::passes::infer_shapes::infer_shapes(&mut lw.b.graph) {
        lw.b.diags.push(d);
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
        let mut lw = lowered(&SPEC.replace("AUXDIM", "4"));
        let b = super::build_pathways(&mut lw);
        assert!(!lw.b.diags.has_errors(), "{}", errors(&lw));
        assert!(!b["p"].aux_trainable);
        crate::passes::eliminate_dead_code::eliminate_dead_code(&mut lw.b.graph);
        insta::assert_snapshot!(ir(&lw), @"
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
        let mut lw = lowered(&SPEC.replace("AUXDIM", "8"));
        super::build_pathways(&mut lw);
        insta::assert_snapshot!(errors(&lw), @"
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
}
