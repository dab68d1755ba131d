//! The final verification stage and the only value a backend accepts.
//!
//! [`Verified::new`] runs in every build, release included (per-pass verification
//! is the pipeline option `verify_each_pass`, on in debug builds): the structural and
//! typing checks of [`verify`] on the finished graph, then what a backend relies on:
//!
//! - every node is typed and no `unbound` input survives (dead-code elimination
//!   removes the inputs of auxiliary models built only for their weights);
//! - the model has at least one output, and every output has its operand;
//! - every parameter source resolves: a weights key names a binding of the model, a
//!   fold expression's leaves are loaded or initialised parameters (never folded
//!   ones) and the expression's shape is the parameter's.
//!
//! A `Verified` owns its graph and hands out only shared references, so nothing can
//! change the graph between verification and a backend (naga's `Module` + `ModuleInfo`).

use super::verify::{verify, Stage, VerifyError};
use super::{FoldExpr, Graph, NodeId, Op, ParamInfo, ParamSource};
use std::collections::BTreeSet;

/// A graph that passed the final verification stage.
#[derive(Clone, Debug)]
pub struct Verified {
    graph: Graph,
}

/// What the final stage reports as the pass that ran.
const STAGE: &str = "final verification";

impl Verified {
    /// Run the final verification stage over `graph`. `bindings` are the model's
    /// weights bindings (the names a `Weights` source may use).
    pub fn new(graph: Graph, bindings: &BTreeSet<String>) -> Result<Verified, VerifyError> {
        verify(&graph, STAGE, Stage::Typed)?;
        let err = |node: Option<NodeId>, message: String| VerifyError { pass: STAGE.to_string(), node, message };
        let mut outputs = 0;
        for id in graph.ids() {
            let node = graph.node(id);
            match &node.op {
                Op::Unbound => return Err(err(Some(id), "an unbound input survived dead-code elimination".into())),
                Op::Output { name } => {
                    outputs += 1;
                    if graph.operands(id).len() != 1 {
                        return Err(err(Some(id), format!("output `{name}` has no operand")));
                    }
                }
                Op::Parameter(p) => check_source(p, bindings).map_err(|m| err(Some(id), m))?,
                _ => {}
            }
            if node.ty.is_none() {
                return Err(err(Some(id), format!("`{}` has no type", node.op.name())));
            }
        }
        if outputs == 0 {
            return Err(err(None, "the model has no output".into()));
        }
        Ok(Verified { graph })
    }

    /// The verified graph (read-only).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
}

impl std::ops::Deref for Verified {
    type Target = Graph;

    fn deref(&self) -> &Graph {
        &self.graph
    }
}

/// Where `p`'s value comes from must be somewhere a backend can find it.
fn check_source(p: &ParamInfo, bindings: &BTreeSet<String>) -> Result<(), String> {
    match &p.source {
        ParamSource::Weights { binding, .. } if !bindings.contains(binding) => {
            Err(format!("parameter `{}` reads weights binding `{binding}`, which the model does not have", p.path))
        }
        ParamSource::Weights { .. } | ParamSource::Init { .. } => Ok(()),
        ParamSource::Folded { expr } => {
            for leaf in expr.leaves() {
                if matches!(leaf.source, ParamSource::Folded { .. }) {
                    return Err(format!("folded parameter `{}` has a folded leaf `{}`", p.path, leaf.path));
                }
                check_source(leaf, bindings)?;
            }
            let shape = fold_shape(expr).map_err(|m| format!("folded parameter `{}` = {expr}: {m}", p.path))?;
            if shape != p.shape {
                return Err(format!("folded parameter `{}` has shape {:?}, its expression {shape:?}", p.path, p.shape));
            }
            Ok(())
        }
    }
}

/// The shape a fold expression evaluates to (broadcasting as the evaluator does).
pub fn fold_shape(e: &FoldExpr) -> Result<Vec<i64>, String> {
    Ok(match e {
        FoldExpr::Param { param } => param.shape.clone(),
        FoldExpr::Eye { n } => vec![*n, *n],
        FoldExpr::Scale { a, .. } => fold_shape(a)?,
        FoldExpr::Add { a, b } | FoldExpr::Mul { a, b } => {
            let (x, y) = (fold_shape(a)?, fold_shape(b)?);
            broadcast(&x, &y).ok_or_else(|| format!("shapes {x:?} and {y:?} do not broadcast"))?
        }
        FoldExpr::MatMul { a, b } => {
            let (x, y) = (fold_shape(a)?, fold_shape(b)?);
            match (x.as_slice(), y.as_slice()) {
                ([m, k], [k2, n]) if k == k2 => vec![*m, *n],
                ([m, k], [k2]) if k == k2 => vec![*m],
                _ => return Err(format!("matmul of {x:?} and {y:?}")),
            }
        }
    })
}

/// NumPy broadcasting of two shapes.
pub fn broadcast(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[i64], i: usize| if i + s.len() < rank { 1 } else { s[i + s.len() - rank] };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{DType, Init, TensorType};

    fn param(path: &str, shape: &[i64], source: ParamSource) -> Op {
        Op::Parameter(ParamInfo {
            path: path.into(),
            shape: shape.to_vec(),
            dtype: DType::F32,
            trainable: false,
            component: "m".into(),
            source,
        })
    }

    /// y = linear(x, w): typed as `infer_shapes` would type it.
    fn model(w: Op) -> Graph {
        let mut g = Graph::new();
        let ty = TensorType::fixed(DType::F32, &[2, 4]);
        let x = g.add(
            Op::Input { name: "x".into(), ty, optional: false, default_zeros: false, norm: None },
            "x",
            None,
            &[],
        );
        let w = g.add(w, "w", None, &[]);
        let y = g.add(Op::Linear, "y", None, &[x, w]);
        g.add(Op::Output { name: "y".into() }, "y", None, &[y]);
        for id in g.topo_order().unwrap() {
            let ins: Vec<_> = g.operands(id).iter().map(|o| g.node(*o).ty.clone().unwrap()).collect();
            let refs: Vec<&TensorType> = ins.iter().collect();
            g.node_mut(id).ty = Some(g.node(id).op.infer(&refs).unwrap());
        }
        g
    }

    fn binds(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn accepts_a_sound_graph_and_names_each_broken_invariant() {
        let init = ParamSource::Init { init: Init::Ones };
        assert!(Verified::new(model(param("w", &[3, 4], init.clone())), &binds(&[])).is_ok());

        let weights = ParamSource::Weights { binding: "b".into(), key: "w".into() };
        let e = Verified::new(model(param("w", &[3, 4], weights.clone())), &binds(&[])).unwrap_err();
        assert!(e.message.contains("binding `b`"), "{e}");
        assert!(Verified::new(model(param("w", &[3, 4], weights)), &binds(&["b"])).is_ok());

        let leaf = |path: &str, shape: &[i64]| {
            Box::new(FoldExpr::Param {
                param: Box::new(ParamInfo {
                    path: path.into(),
                    shape: shape.to_vec(),
                    dtype: DType::F32,
                    trainable: false,
                    component: "m".into(),
                    source: ParamSource::Init { init: Init::Zeros },
                }),
            })
        };
        let good = FoldExpr::Add { a: leaf("a", &[3, 4]), b: leaf("b", &[1]) };
        let folded = |e: FoldExpr| ParamSource::Folded { expr: Box::new(e) };
        assert!(Verified::new(model(param("w", &[3, 4], folded(good))), &binds(&[])).is_ok());
        let wrong = FoldExpr::MatMul { a: leaf("a", &[3, 2]), b: leaf("b", &[2, 5]) };
        let e = Verified::new(model(param("w", &[3, 4], folded(wrong))), &binds(&[])).unwrap_err();
        assert!(e.message.contains("its expression [3, 5]"), "{e}");
        let bad = FoldExpr::MatMul { a: leaf("a", &[3, 2]), b: leaf("b", &[3, 4]) };
        let e = Verified::new(model(param("w", &[3, 4], folded(bad))), &binds(&[])).unwrap_err();
        assert!(e.message.contains("matmul of [3, 2] and [3, 4]"), "{e}");

        // No output.
        let mut g = Graph::new();
        let ty = TensorType::fixed(DType::F32, &[2]);
        let x = g.add(
            Op::Input { name: "x".into(), ty: ty.clone(), optional: false, default_zeros: false, norm: None },
            "x",
            None,
            &[],
        );
        g.node_mut(x).ty = Some(ty);
        let e = Verified::new(g.clone(), &binds(&[])).unwrap_err();
        assert!(e.message.contains("no output"), "{e}");
        // An unbound input, even one nothing reads.
        let u = g.add(Op::Unbound, "aux.x", None, &[]);
        let r = g.add(Op::Relu, "r", None, &[x]);
        g.node_mut(r).ty = g.node(x).ty.clone();
        g.add(Op::Output { name: "y".into() }, "y", None, &[r]);
        let o = g.outputs()[0];
        g.node_mut(o).ty = g.node(x).ty.clone();
        let e = Verified::new(g, &binds(&[])).unwrap_err();
        assert_eq!(e.node, Some(u));
        assert!(e.message.contains("unbound"), "{e}");
    }

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast(&[3, 4], &[1]), Some(vec![3, 4]));
        assert_eq!(broadcast(&[], &[2, 2]), Some(vec![2, 2]));
        assert_eq!(broadcast(&[3, 1], &[1, 5]), Some(vec![3, 5]));
        assert_eq!(broadcast(&[3], &[4]), None);
    }
}
