//! `graft export pytorch`: a compiled model as one self-contained `model.py`.
//!
//! The module tree mirrors the model's paths ([`Tree`]): one class per graft module
//! (instances that build the same code share it; `Block`, `Block2` when an adapter
//! makes some instances differ), `nn.Linear` / `nn.LayerNorm` / `nn.Conv2d` /
//! `nn.Embedding` for primitives that hold the usual parameters, `nn.ModuleList` for
//! repeats and `nn.ModuleDict` / `Scope` for path levels without a module of their
//! own. So `state_dict()` keys are graft's parameter paths: timm and Hugging Face keys
//! for the standard backbones. `Model()` takes the spec's inputs by name and returns a
//! dict of its outputs; exactly graft's trainable parameters require gradients.
//! The output depends only on the compiled model (deterministic text), passes
//! `ruff check` and `ruff format --check`, and imports torch only.

use super::pyforward::{self, is_attr, Access, Ctx};
use super::pyops::{self, float, Helper, Py};
use super::pyscope::Scopes;
use super::tree::{Kind, Tree};
use super::ExportError;
use crate::ir::{Graph, Init, Op, ParamInfo, ParamSource};
use crate::pipeline::{Compiled, Mode};
use std::collections::{BTreeSet, HashMap};

const SCOPE: &str = r#"# A level of the model's paths with no computation of its own.
class Scope(nn.Module):
    def __init__(self, children: dict[str, nn.Module | nn.Parameter]) -> None:
        super().__init__()
        for name, value in children.items():
            if isinstance(value, nn.Parameter):
                self.register_parameter(name, value)
            else:
                self.add_module(name, value)
"#;

/// The text of `model.py` for a compiled model.
pub fn model_py(c: &Compiled) -> Result<String, ExportError> {
    let g = c.graph.graph();
    let tree = Tree::build(c)?;
    let scopes = Scopes::new(g, &tree);
    let access = |t: usize| access_of(&tree, t);
    let cx = Ctx { g, tree: &tree, scopes: &scopes, sources: &c.sources, access: &access };
    let mut w = Writer {
        cx: &cx,
        classes: Vec::new(),
        seen: HashMap::new(),
        counts: HashMap::new(),
        helpers: BTreeSet::new(),
        scope: false,
    };
    let mut names: HashMap<usize, String> = HashMap::new();
    // Classes bottom-up, so a class's children are named before it.
    for t in post_order(&tree) {
        if let Kind::Instance(module) = &tree.nodes[t].kind {
            let name = w.class(t, module, &names, None)?;
            names.insert(t, name);
        }
    }
    let trainable: Vec<&ParamInfo> = g.params().map(|(_, p)| p).filter(|p| p.trainable).collect();
    let freeze = vec![
        "        self.requires_grad_(False)".to_string(),
        "        for name in TRAINABLE:".to_string(),
        "            self.get_parameter(name).requires_grad_(True)".to_string(),
    ];
    w.class(0, "model", &names, Some(freeze))?;
    Ok(w.file(c, &trainable))
}

/// The tree nodes in post-order.
fn post_order(tree: &Tree) -> Vec<usize> {
    fn go(tree: &Tree, t: usize, out: &mut Vec<usize>) {
        for &ch in &tree.nodes[t].children {
            go(tree, ch, out);
        }
        out.push(t);
    }
    let mut out = Vec::new();
    go(tree, 0, &mut out);
    out
}

/// How the children of tree node `t` are reached in Python.
fn access_of(tree: &Tree, t: usize) -> Access {
    match tree.nodes[t].kind {
        Kind::Root | Kind::Instance(_) => Access::Attr,
        _ if tree.is_sugar(t) => Access::Attr,
        _ if tree.is_list(t) => Access::Index,
        _ if !tree.nodes[t].children.iter().any(|&c| matches!(tree.nodes[c].kind, Kind::Param(_))) => Access::Key,
        _ => Access::Attr,
    }
}

struct Writer<'a, 'b> {
    cx: &'a Ctx<'b>,
    classes: Vec<String>,
    /// (module, body) → class name: instances with the same code share a class.
    seen: HashMap<(String, String), String>,
    counts: HashMap<String, usize>,
    helpers: BTreeSet<Helper>,
    scope: bool,
}

impl Writer<'_, '_> {
    /// Write (or reuse) the class of instance `t`; returns its name.
    fn class(
        &mut self,
        t: usize,
        module: &str,
        names: &HashMap<usize, String>,
        extra_init: Option<Vec<String>>,
    ) -> Result<String, ExportError> {
        let tree = self.cx.tree;
        let mut body = vec!["    def __init__(self) -> None:".to_string(), "        super().__init__()".to_string()];
        for &ch in &tree.nodes[t].children {
            let seg = &tree.nodes[ch].seg;
            let e = self.build(ch, names)?;
            if is_attr(seg) {
                body.extend(e.lines(8, &format!("self.{seg} = "), ""));
            } else {
                let method =
                    if matches!(tree.nodes[ch].kind, Kind::Param(_)) { "register_parameter" } else { "add_module" };
                body.extend(Py::call(format!("self.{method}"), vec![Py::atom(pyops::quote(seg)), e]).lines(8, "", ""));
            }
        }
        let is_root = extra_init.is_some();
        body.extend(extra_init.unwrap_or_default());
        if self.cx.scopes.callable.contains(&t) {
            let f = pyforward::forward(self.cx, t)?;
            self.helpers.extend(f.helpers);
            body.push(String::new());
            body.extend(f.lines);
        }
        let text = body.join("\n");
        if is_root {
            self.classes.push(format!("class Model(nn.Module):\n{text}\n"));
            return Ok("Model".into());
        }
        if let Some(name) = self.seen.get(&(module.to_string(), text.clone())) {
            return Ok(name.clone());
        }
        let base = camel(module);
        let k = self.counts.entry(base.clone()).or_insert(0);
        *k += 1;
        let name = if *k == 1 { base } else { format!("{base}{k}") };
        let at = &tree.nodes[t].path;
        let head = format!("# graft module `{module}` (first instance: `{at}`)\nclass {name}(nn.Module):");
        self.classes.push(format!("{head}\n{text}\n"));
        self.seen.insert((module.to_string(), text), name.clone());
        Ok(name)
    }

    /// The expression that constructs tree node `t`.
    fn build(&mut self, t: usize, names: &HashMap<usize, String>) -> Result<Py, ExportError> {
        let tree = self.cx.tree;
        let node = &tree.nodes[t];
        match &node.kind {
            Kind::Param(id) => match &self.cx.g.node(*id).op {
                Op::Parameter(p) => Ok(Py::call("nn.Parameter", vec![init(p)])),
                _ => Err(ExportError::Unsupported(format!("internal: `{}` is not a parameter", node.path))),
            },
            Kind::Instance(_) => Ok(Py::atom(format!("{}()", names.get(&t).map_or("Scope", |s| s.as_str())))),
            Kind::Root => Err(ExportError::Unsupported("internal: the root inside the tree".into())),
            Kind::Primitive(p) if tree.is_sugar(t) => Ok(sugar(self.cx.g, tree, t, p)),
            Kind::Primitive(_) | Kind::Container => {
                let mut parts = Vec::new();
                for &ch in &node.children {
                    parts.push((tree.nodes[ch].seg.clone(), self.build(ch, names)?));
                }
                match access_of(tree, t) {
                    Access::Index => {
                        let first = parts[0].1.flat();
                        if parts.iter().all(|(_, p)| p.flat() == first) && parts.len() > 1 {
                            let comp = Py::Repeat(Box::new(parts[0].1.clone()), parts.len());
                            Ok(Py::call("nn.ModuleList", vec![comp]))
                        } else {
                            Ok(Py::call("nn.ModuleList", vec![Py::list(parts.into_iter().map(|(_, p)| p).collect())]))
                        }
                    }
                    Access::Key => Ok(Py::call("nn.ModuleDict", vec![Py::dict(parts)])),
                    Access::Attr => {
                        self.scope = true;
                        Ok(Py::call("Scope", vec![Py::dict(parts)]))
                    }
                }
            }
        }
    }

    fn file(&self, c: &Compiled, trainable: &[&ParamInfo]) -> String {
        let mode = match c.mode {
            Mode::Train => "train",
            Mode::Infer => "infer",
        };
        let spec = c.sources.files().next().map(|(_, f)| f.name.clone()).unwrap_or_default();
        let all = self.classes.join("\n\n");
        let mut out = format!(
            "\"\"\"Model `{}` ({mode} mode), written by `graft export pytorch` from {spec}.\n\n\
             `Model()` takes the spec's inputs by name and returns its outputs by name;\n\
             `state_dict()` keys are graft's parameter paths, so\n\
             `model.load_state_dict(load_file(\"weights.safetensors\"), strict=True)` loads\n\
             the exported weights. Exactly the parameters graft trains require gradients.\n\"\"\"\n\n",
            c.model
        );
        out += "import torch\n";
        let uses_f = all.contains("F.") || self.helpers.contains(&Helper::Attention);
        if uses_f {
            out += "import torch.nn.functional as F\n";
        }
        out += "from torch import Tensor, nn\n\n";
        // Inputs and outputs, for tools that read the module.
        let items: Vec<Py> = trainable.iter().map(|p| Py::atom(pyops::quote(&p.path))).collect();
        if items.is_empty() {
            out += "# The parameters graft trains (requires_grad); all others are frozen.\nTRAINABLE: tuple[str, ...] = ()\n";
        } else {
            out += "# The parameters graft trains (requires_grad); all others are frozen.\n";
            let tuple = Py::Group("(".into(), items.into_iter().map(|p| (String::new(), p)).collect(), ")");
            let mut lines = tuple.lines(0, "TRAINABLE = ", "");
            if lines.len() == 1 && trainable.len() == 1 {
                // A one-element tuple keeps its comma.
                lines = vec![format!("TRAINABLE = ({},)", pyops::quote(&trainable[0].path))];
            }
            out += &lines.join("\n");
            out += "\n";
        }
        let mut tops: Vec<String> = self.helpers.iter().map(|h| h.source().to_string()).collect();
        if self.scope {
            tops.push(SCOPE.to_string());
        }
        tops.extend(self.classes.iter().cloned());
        for t in tops {
            out += "\n\n";
            out += &t;
        }
        out
    }
}

/// `nn.Linear(64, 192)` and friends for a primitive's `weight` (+ `bias`).
fn sugar(g: &Graph, tree: &Tree, t: usize, prim: &str) -> Py {
    let kids = &tree.nodes[t].children;
    let param = |i: usize| match tree.nodes[kids[i]].kind {
        Kind::Param(id) => match &g.node(id).op {
            Op::Parameter(p) => Some((id, p)),
            _ => None,
        },
        _ => None,
    };
    let Some((wid, w)) = param(0) else { return Py::atom("None") };
    let bias = kids.len() == 2;
    let s = &w.shape;
    let int = |v: i64| Py::atom(v.to_string());
    let mut args: Vec<Py> = match prim {
        "linear" if s.len() == 2 => vec![int(s[1]), int(s[0])],
        "embedding" if s.len() == 2 => vec![int(s[0]), int(s[1])],
        "layernorm" if s.len() == 1 => {
            let eps = g.users(wid).iter().find_map(|(u, _)| match g.node(*u).op {
                Op::LayerNorm { eps } => Some(eps),
                _ => None,
            });
            let mut a = vec![int(s[0])];
            if let Some(e) = eps {
                a.push(Py::atom(format!("eps={}", float(e))));
            }
            a
        }
        "conv2d" | "conv3d" if s.len() >= 4 => {
            let stride = g.users(wid).iter().find_map(|(u, _)| match &g.node(*u).op {
                Op::Conv2d { stride } => Some(stride.to_vec()),
                Op::Conv3d { stride } => Some(stride.to_vec()),
                _ => None,
            });
            let k: Vec<String> = s[2..].iter().map(|d| d.to_string()).collect();
            let mut a = vec![int(s[1]), int(s[0]), Py::atom(format!("({})", k.join(", ")))];
            if let Some(st) = stride {
                let st: Vec<String> = st.iter().map(|d| d.to_string()).collect();
                a.push(Py::atom(format!("stride=({})", st.join(", "))));
            }
            a
        }
        _ => return Py::call("Scope", vec![]),
    };
    if !bias && prim != "embedding" {
        args.push(Py::atom("bias=False"));
    }
    let class = match prim {
        "linear" => "nn.Linear",
        "embedding" => "nn.Embedding",
        "layernorm" => "nn.LayerNorm",
        "conv2d" => "nn.Conv2d",
        _ => "nn.Conv3d",
    };
    Py::call(class, args)
}

/// A parameter's initial value: its init rule (graft draws its own seeded values;
/// these follow the same distributions), zeros for weights that load from a file.
fn init(p: &ParamInfo) -> Py {
    let dims: Vec<Py> = p.shape.iter().map(|d| Py::atom(d.to_string())).collect();
    let tuple = match p.shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", p.shape[0]),
        _ => format!("({})", p.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut shape_args = if dims.is_empty() { vec![Py::atom("()")] } else { dims };
    if p.dtype != crate::ir::DType::F32 {
        shape_args.push(Py::atom(format!("dtype={}", pyops::torch_dtype(p.dtype))));
    }
    let empty = Py::call("torch.empty", shape_args.clone());
    match &p.source {
        ParamSource::Init { init } => match init {
            Init::Zeros => Py::call("torch.zeros", shape_args),
            Init::Ones => Py::call("torch.ones", shape_args),
            Init::Constant { value } => Py::call("torch.full", vec![Py::atom(tuple), Py::atom(float(*value))]),
            Init::Normal { std } => {
                Py::call(format!("{}.normal_", empty.flat()), vec![Py::atom(format!("std={}", float(*std)))])
            }
            Init::TruncNormal { std } => {
                Py::call("nn.init.trunc_normal_", vec![empty, Py::atom(format!("std={}", float(*std)))])
            }
            Init::Uniform { bound } => {
                Py::call(format!("{}.uniform_", empty.flat()), vec![Py::atom(float(-bound)), Py::atom(float(*bound))])
            }
        },
        ParamSource::Weights { .. } | ParamSource::Folded { .. } => Py::call("torch.zeros", shape_args),
    }
}

/// `cross_attention_adapter` → `CrossAttentionAdapter`.
fn camel(module: &str) -> String {
    let mut out = String::new();
    for part in module.split(|c: char| !c.is_ascii_alphanumeric()).filter(|s| !s.is_empty()) {
        let mut ch = part.chars();
        if let Some(f) = ch.next() {
            out.extend(f.to_uppercase());
            out.push_str(ch.as_str());
        }
    }
    if out.is_empty()
        || out.starts_with(|c: char| c.is_ascii_digit())
        || ["Model", "Scope", "Tensor"].contains(&out.as_str())
    {
        out = format!("{out}Module");
    }
    out
}
