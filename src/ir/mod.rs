//! The graph IR.
//!
//! A model is a directed acyclic graph of primitive [`Op`]s. Data flows along edges
//! from a producer to a consumer; the edge carries the operand slot. Parameters are
//! nodes too (`Op::Parameter`), so a weight that is computed (λ·W′ + W, folded LoRA)
//! is just a subgraph over parameter nodes. Every node keeps the hierarchical path of
//! the instance that created it and the source span it came from.
//!
//! Architecture invariant: petgraph types do not leave this module; everything
//! outside talks in [`NodeId`]s. `StableDiGraph` keeps ids valid across removals.

pub mod op;
pub mod param;
pub mod pixels;
pub mod print;
mod rules;
pub mod shape;
pub mod typing;
pub mod verified;
pub mod verify;

pub use op::Op;
pub use param::{FoldExpr, Init, ParamInfo, ParamSource};
pub use pixels::PixelNorm;
pub use shape::{DType, Dim, Shape, TensorType};
pub use verified::Verified;

use crate::source::Span;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, NodeIndexable};
use petgraph::Direction;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Identity of a node; stable across removals of other nodes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

impl NodeId {
    fn ix(self) -> NodeIndex {
        NodeIndex::new(self.0 as usize)
    }

    pub fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    /// The instance path this node belongs to (`target.blocks.3.attn.qkv`).
    pub path: String,
    pub span: Option<Span>,
    /// Filled in by `infer_shapes`.
    pub ty: Option<TensorType>,
}

/// The operand slot an edge feeds.
#[derive(Clone, Copy, Debug)]
struct Edge {
    slot: u32,
}

/// The graph of one compiled model.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    g: StableDiGraph<Node, Edge>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    pub fn add(&mut self, op: Op, path: impl Into<String>, span: Option<Span>, operands: &[NodeId]) -> NodeId {
        let id = self.g.add_node(Node { op, path: path.into(), span, ty: None });
        for (slot, o) in operands.iter().enumerate() {
            self.g.add_edge(o.ix(), id, Edge { slot: slot as u32 });
        }
        NodeId(id.index() as u32)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id.ix()]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id.ix()]
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id.ix())
    }

    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// All node ids in creation order.
    pub fn ids(&self) -> Vec<NodeId> {
        // StableGraph iterates its slots in index order.
        self.g.node_indices().map(|i| NodeId(i.index() as u32)).collect()
    }

    /// One past the largest id ever used: ids below it index dense side tables.
    pub fn id_bound(&self) -> usize {
        self.g.node_bound()
    }

    /// Ids at or above `mark` (nodes added since `id_bound()` returned it, provided
    /// nothing was removed in between).
    pub fn ids_from(&self, mark: usize) -> Vec<NodeId> {
        (mark..self.g.node_bound())
            .filter(|&i| self.g.contains_node(NodeIndex::new(i)))
            .map(|i| NodeId(i as u32))
            .collect()
    }

    /// Operands in slot order.
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        let mut v: Vec<(u32, NodeId)> = self
            .g
            .edges_directed(id.ix(), Direction::Incoming)
            .map(|e| (e.weight().slot, NodeId(e.source().index() as u32)))
            .collect();
        v.sort();
        v.into_iter().map(|(_, n)| n).collect()
    }

    /// Operand slots as stored (for the verifier).
    pub fn operand_slots(&self, id: NodeId) -> Vec<u32> {
        let mut v: Vec<u32> = self.g.edges_directed(id.ix(), Direction::Incoming).map(|e| e.weight().slot).collect();
        v.sort();
        v
    }

    /// Consumers of a node's value, with the slot they read it in, in id order.
    pub fn users(&self, id: NodeId) -> Vec<(NodeId, u32)> {
        let mut v: Vec<(NodeId, u32)> = self
            .g
            .edges_directed(id.ix(), Direction::Outgoing)
            .map(|e| (NodeId(e.target().index() as u32), e.weight().slot))
            .collect();
        v.sort();
        v
    }

    /// Make `user` read `new` in `slot` instead of what it read.
    pub fn set_operand(&mut self, user: NodeId, slot: u32, new: NodeId) {
        let old: Vec<_> = self
            .g
            .edges_directed(user.ix(), Direction::Incoming)
            .filter(|e| e.weight().slot == slot)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
        self.g.add_edge(new.ix(), user.ix(), Edge { slot });
    }

    /// Redirect the users of `old` accepted by `keep` to read `new`.
    pub fn replace_uses(&mut self, old: NodeId, new: NodeId, mut filter: impl FnMut(NodeId) -> bool) {
        for (user, slot) in self.users(old) {
            if user != new && filter(user) {
                self.set_operand(user, slot, new);
            }
        }
    }

    pub fn remove(&mut self, id: NodeId) {
        self.g.remove_node(id.ix());
    }

    /// Nodes in a deterministic topological order (Kahn's algorithm, smallest id
    /// first), or `None` if the graph has a cycle.
    pub fn topo_order(&self) -> Option<Vec<NodeId>> {
        let mut indeg: Vec<u32> = vec![0; self.g.node_bound()];
        let mut ready = BinaryHeap::new();
        let mut count = 0;
        for i in self.g.node_indices() {
            count += 1;
            let d = self.g.edges_directed(i, Direction::Incoming).count() as u32;
            indeg[i.index()] = d;
            if d == 0 {
                ready.push(Reverse(i.index() as u32));
            }
        }
        let mut out = Vec::with_capacity(count);
        while let Some(Reverse(ix)) = ready.pop() {
            out.push(NodeId(ix));
            for e in self.g.edges_directed(NodeIndex::new(ix as usize), Direction::Outgoing) {
                let t = e.target().index();
                indeg[t] -= 1;
                if indeg[t] == 0 {
                    ready.push(Reverse(t as u32));
                }
            }
        }
        (out.len() == count).then_some(out)
    }

    /// Parameter nodes in id order.
    pub fn params(&self) -> impl Iterator<Item = (NodeId, &ParamInfo)> {
        let mut v: Vec<(NodeId, &ParamInfo)> = self
            .g
            .node_indices()
            .filter_map(|i| match &self.g[i].op {
                Op::Parameter(p) => Some((NodeId(i.index() as u32), p)),
                _ => None,
            })
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v.into_iter()
    }

    pub fn param_mut(&mut self, id: NodeId) -> Option<&mut ParamInfo> {
        match &mut self.g[id.ix()].op {
            Op::Parameter(p) => Some(p),
            _ => None,
        }
    }

    /// Output nodes in id order.
    pub fn outputs(&self) -> Vec<NodeId> {
        self.ids().into_iter().filter(|&i| matches!(self.node(i).op, Op::Output { .. })).collect()
    }

    /// Input nodes in id order.
    pub fn inputs(&self) -> Vec<NodeId> {
        self.ids().into_iter().filter(|&i| matches!(self.node(i).op, Op::Input { .. })).collect()
    }

    /// Values computed from some model input, not from parameters alone: what an
    /// absent optional input can make absent, and what [`Op::on_absent`] is told about
    /// operands (an `add` passes on only such a value: a positional embedding never
    /// stands in for missing data).
    pub fn computed_from_inputs(&self) -> std::collections::HashSet<NodeId> {
        let mut data = std::collections::HashSet::new();
        for id in self.topo_order().unwrap_or_default() {
            if matches!(self.node(id).op, Op::Input { .. }) || self.operands(id).iter().any(|o| data.contains(o)) {
                data.insert(id);
            }
        }
        data
    }

    /// Remove every node no output depends on (inputs stay: they are the model's
    /// interface); returns how many were removed.
    pub fn remove_dead(&mut self) -> usize {
        let mut removed = 0;
        let mut live = std::collections::HashSet::new();
        let mut stack: Vec<NodeId> = self.outputs();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.operands(n));
            }
        }
        for id in self.ids() {
            if !live.contains(&id) && !matches!(self.node(id).op, Op::Input { .. }) {
                self.remove(id);
                removed += 1;
            }
        }
        removed
    }

    /// Total parameter elements.
    pub fn param_count(&self) -> u64 {
        self.params().map(|(_, p)| p.numel()).sum()
    }
}
