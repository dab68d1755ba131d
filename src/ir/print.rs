//! Deterministic text, YAML and Graphviz forms of the IR.
//!
//! The text form is the snapshot format and `--emit ir`: nodes in topological order,
//! densely renumbered `%0, %1, …`, one per line. Same spec, same bytes.

use super::{Graph, NodeId, Op, ParamSource};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// Print order: inputs, then a post-order walk from each output (operands in slot
/// order), so that a parameter is printed just before the op that uses it; anything
/// no output reaches comes last, in topological order.
pub fn print_order(g: &Graph) -> Vec<NodeId> {
    let mut seen: HashSet<NodeId> = HashSet::new();
    let mut order = Vec::with_capacity(g.len());
    for i in g.inputs() {
        seen.insert(i);
        order.push(i);
    }
    for out in g.outputs() {
        // Iterative post-order: (node, operands expanded?).
        let mut stack = vec![(out, false)];
        while let Some((n, expanded)) = stack.pop() {
            if expanded {
                if seen.insert(n) {
                    order.push(n);
                }
                continue;
            }
            if seen.contains(&n) {
                continue;
            }
            stack.push((n, true));
            for o in g.operands(n).into_iter().rev() {
                if !seen.contains(&o) {
                    stack.push((o, false));
                }
            }
        }
    }
    for n in g.topo_order().unwrap_or_else(|| g.ids()) {
        if seen.insert(n) {
            order.push(n);
        }
    }
    order
}

fn numbering(g: &Graph) -> (Vec<NodeId>, HashMap<NodeId, usize>) {
    let order = print_order(g);
    let num = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    (order, num)
}

/// The text form.
pub fn to_text(g: &Graph, header: &str) -> String {
    let (order, num) = numbering(g);
    let mut s = String::new();
    let _ = writeln!(s, "{header}");
    for id in order {
        let n = g.node(id);
        let ty = n.ty.as_ref().map_or("?".to_string(), |t| t.to_string());
        let ops: Vec<String> = g.operands(id).iter().map(|o| format!("%{}", num[o])).collect();
        let i = num[&id];
        match &n.op {
            Op::Input { name, optional, default_zeros, norm, .. } => {
                let opt = match (optional, default_zeros) {
                    (true, true) => " optional=zeros",
                    (true, false) => " optional",
                    _ => "",
                };
                let raw = norm.as_ref().map_or(String::new(), |n| format!(" raw_u8(channels: dim {})", n.axis));
                let _ = writeln!(s, "%{i} = input {name} : {ty}{opt}{raw}");
            }
            Op::Output { name } => {
                let _ = writeln!(s, "output {name} = {} : {ty}", ops.join(", "));
            }
            Op::Parameter(p) => {
                let train = if p.trainable { "train " } else { "frozen " };
                let (train, src) = match &p.source {
                    ParamSource::Weights { binding, key } => (train, format!("weights {binding}:{key}")),
                    ParamSource::Init { init } => (train, format!("init {init}")),
                    // Computed once from its leaves: neither trained nor loaded as it is.
                    ParamSource::Folded { expr } => ("", format!("folded {expr}")),
                };
                let _ = writeln!(s, "%{i} = param {} : {ty} {train}{src}", p.path);
            }
            op => {
                let _ = writeln!(s, "%{i} = {}{}({}) : {ty}  @{}", op.name(), op.attributes(), ops.join(", "), n.path);
            }
        }
    }
    s
}

#[derive(Serialize)]
struct YamlNode<'a> {
    id: usize,
    #[serde(flatten)]
    op: &'a Op,
    path: &'a str,
    operands: Vec<usize>,
    #[serde(rename = "type")]
    ty: Option<String>,
}

/// The YAML form: a list of nodes in the same numbering as the text form.
pub fn to_yaml(g: &Graph) -> String {
    let (order, num) = numbering(g);
    let nodes: Vec<YamlNode> = order
        .iter()
        .map(|&id| {
            let n = g.node(id);
            YamlNode {
                id: num[&id],
                op: &n.op,
                path: &n.path,
                operands: g.operands(id).iter().map(|o| num[o]).collect(),
                ty: n.ty.as_ref().map(|t| t.to_string()),
            }
        })
        .collect();
    serde_yaml::to_string(&nodes).unwrap_or_else(|e| format!("# yaml error: {e}\n"))
}

/// The Graphviz DOT form; parameters are boxes, trainable ones filled.
pub fn to_dot(g: &Graph, name: &str) -> String {
    let (order, num) = numbering(g);
    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{}\" {{\n  rankdir=TB;\n  node [fontname=\"monospace\"];", name.replace('"', ""));
    for &id in &order {
        let n = g.node(id);
        let i = num[&id];
        let ty = n.ty.as_ref().map_or(String::new(), |t| t.to_string());
        let (label, style) = match &n.op {
            Op::Parameter(p) => (
                format!("{}\\n{ty}", p.path),
                if p.trainable { "shape=box, style=filled, fillcolor=\"#ffd27f\"" } else { "shape=box, color=gray" },
            ),
            Op::Input { name, .. } => (format!("input {name}\\n{ty}"), "shape=invhouse"),
            Op::Output { name } => (format!("output {name}\\n{ty}"), "shape=house"),
            op => (format!("{}{}\\n{}\\n{ty}", op.name(), op.attributes(), n.path), "shape=ellipse"),
        };
        let _ = writeln!(s, "  n{i} [label=\"{}\", {style}];", label.replace('"', "'"));
    }
    for &id in &order {
        for (slot, o) in g.operands(id).iter().enumerate() {
            let _ = writeln!(s, "  n{} -> n{} [label=\"{slot}\"];", num[o], num[&id]);
        }
    }
    s.push_str("}\n");
    s
}
