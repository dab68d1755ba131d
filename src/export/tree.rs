//! The path tree of a compiled model: every module instance, parametric primitive
//! and parameter at its hierarchical path (`video_vit.blocks.3.attn.qkv.weight`), and
//! the levels between them (`xa_audio.video_vit.blocks`) as containers.
//!
//! The PyTorch emitter turns each tree node into a submodule at the same path, so
//! `state_dict()` keys are graft's parameter paths.

use super::ExportError;
use crate::ir::{NodeId, Op};
use crate::pipeline::Compiled;
use std::collections::HashMap;

/// Site kinds that are parametric primitives, not graft modules.
const PRIMITIVES: [&str; 6] = ["linear", "grouped_linear", "layernorm", "conv2d", "conv3d", "embedding"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Root,
    /// An instance of a graft module (its name).
    Instance(String),
    /// A parametric primitive (`linear`, `layernorm`, …).
    Primitive(String),
    /// A path level with no site of its own.
    Container,
    /// A parameter (leaf).
    Param(NodeId),
}

#[derive(Clone, Debug)]
pub(crate) struct TNode {
    /// The last path segment (empty for the root).
    pub seg: String,
    pub path: String,
    pub kind: Kind,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
}

/// The tree; node 0 is the root (the model).
pub(crate) struct Tree {
    pub nodes: Vec<TNode>,
    index: HashMap<String, usize>,
}

impl Tree {
    pub fn build(c: &Compiled) -> Result<Tree, ExportError> {
        let g = c.graph.graph();
        let root = TNode { seg: String::new(), path: String::new(), kind: Kind::Root, parent: None, children: vec![] };
        let mut t = Tree { nodes: vec![root], index: HashMap::from([(String::new(), 0)]) };
        // Paths that hold something: a parameter or a computing node.
        let mut used: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for id in g.ids() {
            let n = g.node(id);
            let path = match &n.op {
                Op::Parameter(p) => p.path.as_str(),
                Op::Input { .. } | Op::Output { .. } => continue,
                _ => n.path.as_str(),
            };
            let mut p = path;
            loop {
                if !used.insert(p) {
                    break;
                }
                match p.rfind('.') {
                    Some(i) => p = &p[..i],
                    None => break,
                }
            }
        }
        for (path, kind) in &c.sites {
            if kind == "value" || kind == "param" || !used.contains(path.as_str()) {
                continue;
            }
            let kind = if PRIMITIVES.contains(&kind.as_str()) {
                Kind::Primitive(kind.clone())
            } else {
                Kind::Instance(kind.clone())
            };
            let at = t.insert(path)?;
            if t.nodes[at].kind == Kind::Container {
                t.nodes[at].kind = kind;
            }
        }
        for (id, p) in g.params() {
            let at = t.insert(&p.path)?;
            if !t.nodes[at].children.is_empty() || t.nodes[at].kind != Kind::Container {
                return Err(ExportError::Unsupported(format!(
                    "parameter `{}` has the path of a module; PyTorch cannot hold both",
                    p.path
                )));
            }
            t.nodes[at].kind = Kind::Param(id);
        }
        Ok(t)
    }

    /// The node at `path`, creating containers on the way.
    fn insert(&mut self, path: &str) -> Result<usize, ExportError> {
        if let Some(&i) = self.index.get(path) {
            return Ok(i);
        }
        let (parent, seg) = match path.rfind('.') {
            Some(i) => (self.insert(&path[..i])?, &path[i + 1..]),
            None => (0, path),
        };
        if matches!(self.nodes[parent].kind, Kind::Param(_)) {
            return Err(ExportError::Unsupported(format!(
                "`{path}` lies under the parameter `{}`; PyTorch cannot hold both",
                self.nodes[parent].path
            )));
        }
        let i = self.nodes.len();
        self.nodes.push(TNode {
            seg: seg.to_string(),
            path: path.to_string(),
            kind: Kind::Container,
            parent: Some(parent),
            children: vec![],
        });
        self.nodes[parent].children.push(i);
        self.index.insert(path.to_string(), i);
        Ok(i)
    }

    /// The deepest module instance (or the root) whose path is `path` or a prefix of it.
    pub fn instance_of(&self, path: &str) -> usize {
        let mut p = path;
        loop {
            if let Some(&i) = self.index.get(p) {
                if matches!(self.nodes[i].kind, Kind::Instance(_) | Kind::Root) {
                    return i;
                }
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None if p.is_empty() => return 0,
                None => p = "",
            }
        }
    }

    /// Whether `node` is `anc` or lies under it.
    pub fn is_under(&self, mut node: usize, anc: usize) -> bool {
        loop {
            if node == anc {
                return true;
            }
            match self.nodes[node].parent {
                Some(p) => node = p,
                None => return false,
            }
        }
    }

    /// The tree node of a parameter path.
    pub fn get(&self, path: &str) -> Option<usize> {
        self.index.get(path).copied()
    }

    /// The container's children are `0..n` in order (an `nn.ModuleList`).
    pub fn is_list(&self, i: usize) -> bool {
        let ch = &self.nodes[i].children;
        !ch.is_empty()
            && ch
                .iter()
                .enumerate()
                .all(|(k, &c)| self.nodes[c].seg == k.to_string() && !matches!(self.nodes[c].kind, Kind::Param(_)))
    }

    /// A primitive that holds exactly `weight` (+ `bias`): built as its `nn` module
    /// (`nn.Linear`, `nn.LayerNorm`, `nn.Conv2d`, `nn.Conv3d`, `nn.Embedding`).
    pub fn is_sugar(&self, t: usize) -> bool {
        let Kind::Primitive(p) = &self.nodes[t].kind else { return false };
        if !["linear", "layernorm", "conv2d", "conv3d", "embedding"].contains(&p.as_str()) {
            return false;
        }
        let kids = &self.nodes[t].children;
        let segs: Vec<&str> = kids.iter().map(|&c| self.nodes[c].seg.as_str()).collect();
        kids.iter().all(|&c| matches!(self.nodes[c].kind, Kind::Param(_)))
            && (segs == ["weight"] || segs == ["weight", "bias"])
    }
}
