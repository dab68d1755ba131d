//! Which module's `forward` computes each node.
//!
//! A module instance gets a `forward` of its own when its nodes form a convex part of
//! the graph (no path leaves them and comes back): then the caller hands it the values
//! it reads and takes back the values others read. An adapter placed inside an
//! instance (`after` its `attn`, `parallel` to its `mlp`) makes the instance
//! non-convex: its computation is written in the nearest convex ancestor, which
//! still calls the convex parts inside (`attn`, `mlp`, the adapter itself).

use super::tree::{Kind, Tree};
use crate::ir::{Graph, NodeId, Op};
use std::collections::{BTreeSet, HashMap, HashSet};

/// One statement of a `forward`: a node, or a call of a child instance's `forward`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    Node(NodeId),
    Call(usize),
}

/// The forward structure of a model.
pub(crate) struct Scopes {
    /// Tree nodes with a `forward` (the root always).
    pub callable: HashSet<usize>,
    /// Each callable instance's statements, in an order that respects the dataflow.
    pub body: HashMap<usize, Vec<Item>>,
    /// Each callable instance's inputs (values computed elsewhere, or parameters
    /// outside its path) and outputs (values read elsewhere), in schedule order.
    pub inputs: HashMap<usize, Vec<NodeId>>,
    pub outputs: HashMap<usize, Vec<NodeId>>,
    /// Values that may be absent at run time (a missing optional input).
    pub maybe_absent: HashSet<NodeId>,
    /// Values computed from some model input (the pass-through rule of `add`).
    pub data: HashSet<NodeId>,
}

fn computes(op: &Op) -> bool {
    !matches!(op, Op::Input { .. } | Op::Output { .. } | Op::Parameter(_))
}

impl Scopes {
    pub fn new(g: &Graph, tree: &Tree) -> Scopes {
        let order = g.topo_order().unwrap_or_default();
        // Every computing node under every instance that contains it.
        let mut members: HashMap<usize, HashSet<NodeId>> = HashMap::new();
        let mut deepest: HashMap<NodeId, usize> = HashMap::new();
        for &n in &order {
            if !computes(&g.node(n).op) {
                continue;
            }
            let inst = tree.instance_of(&g.node(n).path);
            deepest.insert(n, inst);
            let mut t = Some(inst);
            while let Some(i) = t {
                if matches!(tree.nodes[i].kind, Kind::Instance(_)) {
                    members.entry(i).or_default().insert(n);
                }
                t = tree.nodes[i].parent;
            }
        }
        let mut callable: HashSet<usize> = HashSet::from([0]);
        for (&i, set) in &members {
            if convex(g, set) {
                callable.insert(i);
            }
        }
        let nearest = |mut t: usize| loop {
            if callable.contains(&t) {
                return t;
            }
            t = tree.nodes[t].parent.unwrap_or(0);
        };
        // Each callable instance's direct callable children, and owned nodes.
        let mut items: HashMap<usize, Vec<Item>> = HashMap::new();
        for &i in &callable {
            if i != 0 {
                let parent = nearest(tree.nodes[i].parent.unwrap_or(0));
                items.entry(parent).or_default().push(Item::Call(i));
            }
        }
        let mut owner: HashMap<NodeId, usize> = HashMap::new();
        for &n in &order {
            if let Some(&d) = deepest.get(&n) {
                let o = nearest(d);
                owner.insert(n, o);
                items.entry(o).or_default().push(Item::Node(n));
            }
        }
        let mut inputs = HashMap::new();
        let mut outputs = HashMap::new();
        let empty = HashSet::new();
        for &i in &callable {
            let set = if i == 0 { None } else { Some(members.get(&i).unwrap_or(&empty)) };
            let (ins, outs) = match set {
                None => (g.inputs(), vec![]),
                Some(set) => interface(g, tree, i, set),
            };
            inputs.insert(i, ins);
            outputs.insert(i, outs);
        }
        // Order each body: items as units, dependencies through their nodes.
        let mut body = HashMap::new();
        for (&i, its) in &items {
            let unit_of = |n: NodeId| -> Option<usize> {
                its.iter().position(|it| match *it {
                    Item::Node(m) => m == n,
                    Item::Call(c) => members.get(&c).is_some_and(|s| s.contains(&n)),
                })
            };
            let nodes_of = |it: &Item| -> Vec<NodeId> {
                match *it {
                    Item::Node(m) => vec![m],
                    Item::Call(c) => members.get(&c).map(|s| s.iter().copied().collect()).unwrap_or_default(),
                }
            };
            let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); its.len()];
            let mut first: Vec<usize> = vec![usize::MAX; its.len()];
            for (k, it) in its.iter().enumerate() {
                for n in nodes_of(it) {
                    // Node ids, not schedule positions: instances built alike list
                    // their statements alike (and share a class).
                    first[k] = first[k].min(n.index());
                    for o in g.operands(n) {
                        if let Some(u) = unit_of(o).filter(|&u| u != k) {
                            deps[k].insert(u);
                        }
                    }
                }
            }
            body.insert(i, schedule(its, &deps, &first));
        }
        let data = g.computed_from_inputs();
        let maybe_absent = absent(g, &order, &data);
        Scopes { callable, body, inputs, outputs, maybe_absent, data }
    }
}

/// Kahn's algorithm, earliest first node first.
fn schedule(items: &[Item], deps: &[BTreeSet<usize>], first: &[usize]) -> Vec<Item> {
    let mut left: Vec<usize> = deps.iter().map(|d| d.len()).collect();
    let mut users: Vec<Vec<usize>> = vec![vec![]; items.len()];
    for (k, d) in deps.iter().enumerate() {
        for &u in d {
            users[u].push(k);
        }
    }
    let mut ready: BTreeSet<(usize, usize)> =
        (0..items.len()).filter(|&k| left[k] == 0).map(|k| (first[k], k)).collect();
    let mut out = Vec::with_capacity(items.len());
    while let Some((f, k)) = ready.iter().next().copied() {
        ready.remove(&(f, k));
        out.push(items[k]);
        for &u in &users[k] {
            left[u] -= 1;
            if left[u] == 0 {
                ready.insert((first[u], u));
            }
        }
    }
    out
}

/// No path leaves `set` and comes back into it.
fn convex(g: &Graph, set: &HashSet<NodeId>) -> bool {
    let mut seen: HashSet<NodeId> = HashSet::new();
    let mut stack: Vec<NodeId> = Vec::new();
    for &n in set {
        for (u, _) in g.users(n) {
            if !set.contains(&u) && seen.insert(u) {
                stack.push(u);
            }
        }
    }
    while let Some(n) = stack.pop() {
        for (u, _) in g.users(n) {
            if set.contains(&u) {
                return false;
            }
            if seen.insert(u) {
                stack.push(u);
            }
        }
    }
    true
}

/// What an instance reads from outside (parameters outside its path included) and
/// what it hands back, in schedule order.
fn interface(g: &Graph, tree: &Tree, inst: usize, set: &HashSet<NodeId>) -> (Vec<NodeId>, Vec<NodeId>) {
    // Inputs in the order the instance first reads them, outputs in creation order:
    // the same for every instance built alike.
    let mut ins: HashMap<NodeId, (usize, u32)> = HashMap::new();
    let mut outs: BTreeSet<NodeId> = BTreeSet::new();
    for &n in set {
        for (slot, o) in g.operands(n).into_iter().enumerate() {
            if set.contains(&o) {
                continue;
            }
            if let Op::Parameter(p) = &g.node(o).op {
                if tree.get(&p.path).is_some_and(|t| tree.is_under(t, inst)) {
                    continue;
                }
            }
            let key = (n.index(), slot as u32);
            let e = ins.entry(o).or_insert(key);
            *e = (*e).min(key);
        }
        if g.users(n).iter().any(|(u, _)| !set.contains(u)) {
            outs.insert(n);
        }
    }
    let mut ins: Vec<(NodeId, (usize, u32))> = ins.into_iter().collect();
    ins.sort_by_key(|(_, k)| *k);
    (ins.into_iter().map(|(n, _)| n).collect(), outs.into_iter().collect())
}

/// Values a missing optional input can make absent: everything computed from one,
/// except an `add` that passes a present operand computed from the data through.
fn absent(g: &Graph, order: &[NodeId], data: &HashSet<NodeId>) -> HashSet<NodeId> {
    let mut ma = HashSet::new();
    for &n in order {
        let ops = g.operands(n);
        let absent = match &g.node(n).op {
            Op::Input { optional, default_zeros, .. } => *optional && !default_zeros,
            Op::Add => {
                let (a, b) = (ops[0], ops[1]);
                let (ma_a, ma_b) = (ma.contains(&a), ma.contains(&b));
                (ma_a && (ma_b || !data.contains(&b))) || (ma_b && !data.contains(&a))
            }
            Op::Output { .. } => false,
            _ => ops.iter().any(|o| ma.contains(o)),
        };
        if absent {
            ma.insert(n);
        }
    }
    ma
}

/// How many items from the first make a chain: the calls of every block of a list
/// (`is_index`: an `nn.ModuleList`) in order, each taking one value, the previous block's only output,
/// which nothing else reads.
pub(crate) fn chain(
    g: &Graph,
    tree: &Tree,
    scopes: &Scopes,
    is_index: &dyn Fn(usize) -> bool,
    items: &[Item],
) -> Option<usize> {
    let Item::Call(q) = items[0] else { return None };
    let list = tree.nodes[q].parent?;
    let kids = &tree.nodes[list].children;
    if !tree.is_list(list) || !is_index(list) || kids.first() != Some(&q) {
        return None;
    }
    let mut prev: Option<NodeId> = None;
    for (j, &child) in kids.iter().enumerate() {
        if items.get(j) != Some(&Item::Call(child)) {
            return None;
        }
        let (ins, outs) = (scopes.inputs.get(&child)?, scopes.outputs.get(&child)?);
        if ins.len() != 1 || outs.len() != 1 {
            return None;
        }
        if let Some(p) = prev {
            let inside = |u: &NodeId| tree.is_under(tree.instance_of(&g.node(*u).path), child);
            if ins[0] != p || !g.users(p).iter().all(|(u, _)| inside(u)) {
                return None;
            }
        }
        prev = Some(outs[0]);
    }
    Some(kids.len())
}
