//! fold_reparam: fold every re-parameterization into plain weights (`infer` mode).
//!
//! Optimizer pass (meaning-preserving up to float rounding; `graft fuse` checks it
//! numerically). Rewrite rules, applied to a fixed point (capped):
//! - `parallel_affine`: `linear(x, W, b) + C(x)` where `C` is a chain of linears and
//!   scales of `x` (LoRA, a parallel linear adapter) → `linear(x, W + M, b + c)`.
//! - `residual_affine`: `h + C(h)` with `h = linear(x, W, b)` used only there (a
//!   sequential linear adapter after a linear) → `linear(x, (I + M)·W, (I + M)·b + c)`.
//! - `fold_params`: an `add`/`mul`/`scale`/`matmul` whose operands are all parameters
//!   (a pathway's `W + λ·W′`, the products above) → one parameter whose source is the
//!   fold expression, evaluated once in float64 when weights load.
//!
//! Guards keep folding from growing a model: chains must consist of single-use nodes
//! and end on a linear that already exists, so a folded model has exactly its
//! backbone's parameter count.

use super::ctx::PassCtx;
use crate::ir::verify::VerifyError;
use crate::ir::{FoldExpr, Graph, NodeId, Op, ParamInfo, ParamSource};

/// Cap on rewrite rounds; every round removes at least one node, so real models end early.
const MAX_ROUNDS: usize = 10_000;

/// The pass: apply the rules until none applies (or the cap is reached).
pub fn fold_reparam(g: &mut Graph, _cx: &mut PassCtx) -> Result<bool, VerifyError> {
    let mut any = false;
    for _ in 0..MAX_ROUNDS {
        let changed = parallel_affine(g)? || residual_affine(g)? || fold_params(g);
        if !changed {
            break;
        }
        any = true;
        g.remove_dead();
    }
    Ok(any)
}

fn is_param(g: &Graph, n: NodeId) -> bool {
    matches!(g.node(n).op, Op::Parameter(_))
}

/// The operands of `n` if it is a linear whose weight (and bias) are parameters.
fn param_linear(g: &Graph, n: NodeId) -> Option<Vec<NodeId>> {
    let ops = g.operands(n);
    (matches!(g.node(n).op, Op::Linear) && ops[1..].iter().all(|&p| is_param(g, p))).then_some(ops)
}

fn single_use(g: &Graph, n: NodeId) -> bool {
    g.users(n).len() == 1
}

/// The affine chain from `x` to `end`: nodes in application order, or `None`.
fn affine_chain(g: &Graph, x: NodeId, end: NodeId) -> Option<Vec<NodeId>> {
    let mut chain = Vec::new();
    let mut cur = end;
    while cur != x {
        if !single_use(g, cur) || chain.len() > 16 {
            return None;
        }
        let ops = match g.node(cur).op {
            Op::Scale { .. } => g.operands(cur),
            _ => param_linear(g, cur)?,
        };
        chain.push(cur);
        cur = ops[0];
    }
    chain.reverse();
    (!chain.is_empty()).then_some(chain)
}

/// Build weight nodes for the chain's matrix `M` and offset `c` (`C(x) = M x + c`).
fn chain_weights(g: &mut Graph, chain: &[NodeId], width: i64, at: &str) -> (NodeId, Option<NodeId>) {
    let mut m: Option<NodeId> = None;
    let mut c: Option<NodeId> = None;
    for &n in chain {
        let ops = g.operands(n);
        match g.node(n).op.clone() {
            Op::Linear => {
                let a = ops[1];
                m = Some(match m {
                    None => a,
                    Some(m) => g.add(Op::MatMul, at, None, &[a, m]),
                });
                let prev = c.map(|c| g.add(Op::MatMul, at, None, &[a, c]));
                c = match (prev, ops.get(2).copied()) {
                    (Some(p), Some(b)) => Some(g.add(Op::Add, at, None, &[p, b])),
                    (Some(p), None) => Some(p),
                    (None, b) => b,
                };
            }
            Op::Scale { factor } => {
                let base = match m {
                    Some(m) => m,
                    None => eye(g, width, at),
                };
                m = Some(g.add(Op::Scale { factor }, at, None, &[base]));
                c = c.map(|c| g.add(Op::Scale { factor }, at, None, &[c]));
            }
            _ => unreachable!("affine_chain admits linear and scale only"),
        }
    }
    (m.expect("chain is not empty"), c)
}

fn eye(g: &mut Graph, n: i64, at: &str) -> NodeId {
    let k = g.len();
    let p = ParamInfo {
        path: format!("{at}.eye{k}"),
        shape: vec![n, n],
        dtype: crate::ir::DType::F32,
        trainable: false,
        component: String::new(),
        source: ParamSource::Folded { expr: Box::new(FoldExpr::Eye { n }) },
    };
    g.add(Op::Parameter(p), at, None, &[])
}

fn width(g: &Graph, n: NodeId) -> i64 {
    g.node(n).ty.as_ref().and_then(|t| t.shape.last()).and_then(|d| d.fixed()).unwrap_or(0)
}

fn add_opt(g: &mut Graph, a: Option<NodeId>, b: Option<NodeId>, at: &str) -> Option<NodeId> {
    match (a, b) {
        (Some(a), Some(b)) => Some(g.add(Op::Add, at, None, &[a, b])),
        (a, None) => a,
        (None, b) => b,
    }
}

fn finish(g: &mut Graph, old: NodeId, x: NodeId, w: NodeId, b: Option<NodeId>, path: String) {
    let mut ops = vec![x, w];
    ops.extend(b);
    let span = g.node(old).span;
    let ty = g.node(old).ty.clone();
    let new = g.add(Op::Linear, path, span, &ops);
    g.node_mut(new).ty = ty;
    g.replace_uses(old, new, |_| true);
}

/// Type the rewritten nodes. A rewrite whose result breaks a shape rule is a bug in
/// the rule `rule`, reported with the node, never left untyped.
fn retype(g: &mut Graph, rule: &str) -> Result<(), VerifyError> {
    match crate::ir::typing::type_nodes(g).into_iter().next() {
        None => Ok(()),
        Some((id, d)) => Err(VerifyError {
            pass: format!("fold_reparam ({rule})"),
            node: Some(id),
            message: format!("the rewrite breaks typing: {}", d.message),
        }),
    }
}

fn parallel_affine(g: &mut Graph) -> Result<bool, VerifyError> {
    for add in g.ids() {
        if !matches!(g.node(add).op, Op::Add) {
            continue;
        }
        let ops = g.operands(add);
        for (li, ci) in [(0, 1), (1, 0)] {
            let (lin, other) = (ops[li], ops[ci]);
            let Some(lops) = param_linear(g, lin).filter(|_| single_use(g, lin)) else { continue };
            let x = lops[0];
            let Some(chain) = affine_chain(g, x, other) else { continue };
            let at = g.node(lin).path.clone();
            let (m, c) = chain_weights(g, &chain, width(g, x), &at);
            let w = g.add(Op::Add, &at, None, &[lops[1], m]);
            let b = add_opt(g, lops.get(2).copied(), c, &at);
            finish(g, add, x, w, b, at);
            retype(g, "parallel_affine")?;
            return Ok(true);
        }
    }
    Ok(false)
}

fn residual_affine(g: &mut Graph) -> Result<bool, VerifyError> {
    for add in g.ids() {
        if !matches!(g.node(add).op, Op::Add) {
            continue;
        }
        let ops = g.operands(add);
        for (hi, ci) in [(0, 1), (1, 0)] {
            let (h, other) = (ops[hi], ops[ci]);
            let Some(hops) = param_linear(g, h).filter(|_| g.users(h).len() == 2) else { continue };
            let Some(chain) = affine_chain(g, h, other) else { continue };
            let at = g.node(h).path.clone();
            let (m, c) = chain_weights(g, &chain, width(g, h), &at);
            let i = eye(g, width(g, h), &at);
            let im = g.add(Op::Add, &at, None, &[m, i]);
            let w = g.add(Op::MatMul, &at, None, &[im, hops[1]]);
            let b0 = hops.get(2).map(|&b| g.add(Op::MatMul, &at, None, &[im, b]));
            let b = add_opt(g, b0, c, &at);
            finish(g, add, hops[0], w, b, at);
            retype(g, "residual_affine")?;
            return Ok(true);
        }
    }
    Ok(false)
}

fn expr_of(g: &Graph, n: NodeId) -> FoldExpr {
    match &g.node(n).op {
        Op::Parameter(p) => match &p.source {
            ParamSource::Folded { expr } => (**expr).clone(),
            _ => FoldExpr::Param { param: Box::new(p.clone()) },
        },
        _ => unreachable!("fold_params folds parameters only"),
    }
}

fn fold_params(g: &mut Graph) -> bool {
    let mut changed = false;
    let Some(order) = g.topo_order() else { return false };
    for n in order {
        if !g.contains(n) {
            continue;
        }
        let ops = g.operands(n);
        if ops.is_empty() || !ops.iter().all(|&o| is_param(g, o)) {
            continue;
        }
        let args: Vec<FoldExpr> = ops.iter().map(|&o| expr_of(g, o)).collect();
        let Some(expr) = g.node(n).op.fold(&args) else { continue };
        // Name it after the weight slot it feeds (`t.fc.weight`); an intermediate
        // that later folds further gets a temporary unique name.
        let Some(ty) = g.node(n).ty.clone() else { continue };
        let shape: Vec<i64> = ty.shape.iter().map(|d| d.fixed().unwrap_or(1)).collect();
        let name = g
            .users(n)
            .iter()
            .find_map(|&(u, slot)| {
                let user = g.node(u);
                user.op.weight_name(slot as usize).map(|w| format!("{}.{w}", user.path))
            })
            .unwrap_or_else(|| format!("{}.fold{}", g.node(n).path, n.index()));
        let info = ParamInfo {
            component: name.split('.').next().unwrap_or_default().to_string(),
            path: name,
            shape,
            dtype: ty.dtype,
            trainable: false,
            source: ParamSource::Folded { expr: Box::new(expr) },
        };
        let path = g.node(n).path.clone();
        let span = g.node(n).span;
        let p = g.add(Op::Parameter(info), path, span, &[]);
        g.node_mut(p).ty = Some(ty);
        g.replace_uses(n, p, |_| true);
        // Drop the folded subgraph now so that the new parameter's path is unique.
        g.remove(n);
        for o in ops {
            if g.contains(o) && g.users(o).is_empty() {
                g.remove(o);
            }
        }
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use crate::passes::testkit::{errors, ir, lowered};

    #[test]
    fn a_rewrite_that_breaks_typing_is_a_compiler_bug() {
        use crate::ir::{DType, Graph, Init, Op, ParamInfo, ParamSource, TensorType};
        // What a wrong rule would leave: a linear whose new weight has the wrong width.
        let mut g = Graph::new();
        let ty = TensorType::fixed(DType::F32, &[2, 4]);
        let x = g.add(
            Op::Input { name: "x".into(), ty, optional: false, default_zeros: false, norm: None },
            "x",
            None,
            &[],
        );
        let p = ParamInfo {
            path: "w".into(),
            shape: vec![3, 5],
            dtype: DType::F32,
            trainable: false,
            component: "m".into(),
            source: ParamSource::Init { init: Init::Ones },
        };
        let w = g.add(Op::Parameter(p), "w", None, &[]);
        let y = g.add(Op::Linear, "t.fc", None, &[x, w]);
        let e = super::retype(&mut g, "parallel_affine").unwrap_err();
        assert_eq!(e.node, Some(y));
        assert!(e.to_string().contains("fold_reparam (parallel_affine)"), "{e}");
        assert!(e.message.contains("breaks typing"), "{e}");
    }

    /// One linear `t.fc` with the given adapter declaration, folded.
    fn folded(adapter: &str) -> String {
        let src = format!(
            "use std.adapters\nmodule lin(dim: int) {{\n  in x\n  fc = linear(dim, dim)(x)\n  out fc\n}}\n\
             model m {{\n  input x: f32[B, 4]\n  encoder t = lin(4)(x)\n  {adapter}\n  output y = t\n}}\n"
        );
        let (mut g, mut cx) = lowered(&src);
        crate::passes::insert_adapters::insert_adapters(&mut g, &mut cx).unwrap();
        crate::passes::build_pathways::build_pathways(&mut g, &mut cx).unwrap();
        assert!(!cx.diags().has_errors(), "{}", errors(&cx));
        super::fold_reparam(&mut g, &mut cx).unwrap();
        g.remove_dead();
        crate::ir::verify::verify(&g, "fold_reparam", crate::ir::verify::Stage::Typed).expect("verifies");
        ir(&g)
    }

    #[test]
    fn lora_folds_into_the_linear() {
        let out = folded("adapter l = lora(in_features: 4, out_features: 4, rank: 2, alpha: 4.0) at t.fc parallel");
        insta::assert_snapshot!(out, @"
        %0 = input x : f32[B, 4]
        %1 = param t.fc.weight : f32[4, 4] folded (t.fc.weight + 2 * (l.t.fc.lora_B.weight @ l.t.fc.lora_A.weight))
        %2 = param t.fc.bias : f32[4] frozen init uniform(0.500000)
        %3 = linear(%0, %1, %2) : f32[B, 4]  @t.fc
        output y = %3 : f32[B, 4]
        ");
    }

    #[test]
    fn linear_adapter_after_a_linear_folds() {
        let out = folded("adapter a = linear_adapter(dim: 4, bottleneck: 2, scale: 0.5) at t.fc after");
        insta::assert_snapshot!(out, @"
        %0 = input x : f32[B, 4]
        %1 = param t.fc.weight : f32[4, 4] folded ((0.5 * (a.t.fc.up.weight @ a.t.fc.down.weight) + eye(4)) @ t.fc.weight)
        %2 = param t.fc.bias : f32[4] folded (((0.5 * (a.t.fc.up.weight @ a.t.fc.down.weight) + eye(4)) @ t.fc.bias) + 0.5 * ((a.t.fc.up.weight @ a.t.fc.down.bias) + a.t.fc.up.bias))
        %3 = linear(%0, %1, %2) : f32[B, 4]  @t.fc
        output y = %3 : f32[B, 4]
        ");
    }

    #[test]
    fn nonlinear_adapter_does_not_fold() {
        let out = folded("adapter a = bottleneck(dim: 4, bottleneck: 2) at t.fc after");
        assert!(out.contains("relu"), "{out}");
        assert!(!out.contains("fold"), "{out}");
    }
}
