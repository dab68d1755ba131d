//! The IR verifier: structural invariants every pass must preserve.
//!
//! Failures here are compiler bugs, not user errors, so they name node ids rather
//! than source spans. The pipeline runs [`verify`] after every pass in debug and test
//! builds.

use super::{Graph, NodeId, Op};
use std::collections::HashSet;
use std::fmt;

/// How complete the graph must be at this point of the pipeline.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Straight after lowering: types may be missing.
    Lowered,
    /// After `infer_shapes`: every node not fed by an `Unbound` input has a type.
    Typed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    pub pass: String,
    pub node: Option<NodeId>,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            Some(n) => write!(f, "IR verifier after `{}`: node #{}: {}", self.pass, n.index(), self.message),
            None => write!(f, "IR verifier after `{}`: {}", self.pass, self.message),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Check the graph. `pass` names the pass that just ran, for the report.
pub fn verify(g: &Graph, pass: &str, stage: Stage) -> Result<(), VerifyError> {
    let err = |node: Option<NodeId>, message: String| VerifyError { pass: pass.to_string(), node, message };
    let order = g.topo_order().ok_or_else(|| err(None, "the graph has a cycle".into()))?;
    let mut paths = HashSet::new();
    let mut output_names = HashSet::new();
    let mut unbound: HashSet<NodeId> = HashSet::new();
    for &id in &order {
        let node = g.node(id);
        let slots = g.operand_slots(id);
        let (lo, hi) = node.op.arity();
        if slots.len() < lo || slots.len() > hi {
            return Err(err(
                Some(id),
                format!("`{}` has {} operands, expects {lo}..={hi}", node.op.name(), slots.len()),
            ));
        }
        if slots.iter().enumerate().any(|(i, &s)| s as usize != i) {
            return Err(err(Some(id), format!("operand slots are not dense: {slots:?}")));
        }
        let ops = g.operands(id);
        let fed_by_unbound = matches!(node.op, Op::Unbound) || ops.iter().any(|o| unbound.contains(o));
        if fed_by_unbound {
            unbound.insert(id);
        }
        match &node.op {
            Op::Parameter(p) => {
                if !paths.insert(p.path.as_str()) {
                    return Err(err(Some(id), format!("duplicate parameter path `{}`", p.path)));
                }
                if p.shape.iter().any(|&d| d <= 0) {
                    return Err(err(Some(id), format!("parameter `{}` has shape {:?}", p.path, p.shape)));
                }
            }
            Op::Output { name } => {
                if !output_names.insert(name.clone()) {
                    return Err(err(Some(id), format!("duplicate output `{name}`")));
                }
                if fed_by_unbound {
                    return Err(err(Some(id), format!("output `{name}` depends on an unbound input")));
                }
            }
            _ => {}
        }
        if !g.users(id).is_empty() && matches!(node.op, Op::Output { .. }) {
            return Err(err(Some(id), "an output has users".into()));
        }
        if stage == Stage::Typed && !fed_by_unbound {
            let Some(ty) = &node.ty else {
                return Err(err(Some(id), format!("`{}` has no type", node.op.name())));
            };
            let ins: Option<Vec<_>> = ops.iter().map(|o| g.node(*o).ty.as_ref()).collect();
            let ins = ins.ok_or_else(|| err(Some(id), "an operand has no type".into()))?;
            match node.op.infer(&ins) {
                Ok(t) if t == *ty => {}
                Ok(t) => return Err(err(Some(id), format!("type {ty} disagrees with the shape rule's {t}"))),
                Err(e) => return Err(err(Some(id), format!("shape rule fails: {e}"))),
            }
        }
    }
    Ok(())
}

/// Architecture invariant: the trainable set equals what the training rules name.
/// `named` holds the parameter paths the rules name. Every parameter of `g` is
/// trainable exactly when it is named, except a folded one (a fold expression
/// evaluated when weights load), which never trains; a named parameter the graph no
/// longer has (folded away, or dead) is no error.
pub fn verify_trainable(g: &Graph, named: &HashSet<String>, pass: &str) -> Result<(), VerifyError> {
    for (id, p) in g.params() {
        let folded = matches!(p.source, super::ParamSource::Folded { .. });
        let want = named.contains(&p.path) && !folded;
        if p.trainable == want {
            continue;
        }
        let message = match (p.trainable, folded) {
            (true, true) => format!("folded parameter `{}` is trainable", p.path),
            (true, false) => format!("parameter `{}` is trainable, but no training rule names it", p.path),
            (false, _) => format!("parameter `{}` is named by the training rules, but frozen", p.path),
        };
        return Err(VerifyError { pass: pass.to_string(), node: Some(id), message });
    }
    Ok(())
}
