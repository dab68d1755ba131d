//! `graft export pytorch`: a compiled model as one self-contained `model.py`.
//!
//! The module tree mirrors the model's paths ([`Tree`]): one class per graft module
//! whose keyword-only `__init__` parameters are the spec module's (`pyargs`), built by
//! its parent with the instance's values (`Block(dim=dim, heads=heads)` inside `Vit`,
//! `Vit(dim=384, depth=12, heads=6)` inside `Model`); sizes in a class are the spec's
//! expressions of those parameters where they provably give the compiled values
//! (`nn.Linear(dim, dim * 3)`, `range(depth)`, `self.heads`), concrete values
//! otherwise. Instances that build the same code share a class — so instances that
//! differ only in their arguments do; `Block2` when an adapter makes some differ.
//! `nn.Linear` / `nn.LayerNorm` / `nn.Conv2d` / `nn.Conv3d` / `nn.Embedding` stand for
//! primitives that hold the usual parameters, `nn.ModuleList` for repeats and
//! `nn.ModuleDict` / `Scope` for path levels without a module of their own. So
//! `state_dict()` keys are graft's parameter paths: timm and Hugging Face keys for the
//! standard backbones. `Model()` (no arguments) takes the spec's inputs by name and
//! returns a dict of its outputs; exactly graft's trainable parameters require
//! gradients. The output depends only on the compiled model (deterministic text),
//! passes `ruff check` and `ruff format --check`, and imports torch only.

use super::pyargs::{self, ClassParam, Env};
use super::pyforward::{self, is_attr, Access, Ctx};
use super::pyops::{self, float, Helper, Py};
use super::pyscope::Scopes;
use super::tree::{Kind, Tree};
use super::ExportError;
use crate::ir::{Graph, Init, NodeId, Op, ParamInfo, ParamSource};
use crate::lower::Value;
use crate::pipeline::{Compiled, Mode};
use crate::syntax::ast::{Expr, ModuleDecl};
use std::cell::RefCell;
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
    let used: RefCell<HashMap<usize, BTreeSet<String>>> = RefCell::new(HashMap::new());
    let heads = |inst: usize, n: NodeId| op_count(c, &tree, &used, inst, n);
    let cx = Ctx { g, tree: &tree, scopes: &scopes, sources: &c.sources, access: &access, heads: &heads };
    let mut w = Writer {
        c,
        used: &used,
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

/// `self.heads` for the head count of an attention or grouped linear node `n` written
/// in callable `inst`, when `inst`'s own module configures it from its parameters.
fn op_count(
    c: &Compiled,
    tree: &Tree,
    used: &RefCell<HashMap<usize, BTreeSet<String>>>,
    inst: usize,
    n: NodeId,
) -> Option<String> {
    let Kind::Instance(module) = &tree.nodes[inst].kind else { return None };
    let node = c.graph.graph().node(n);
    let path = &tree.nodes[inst].path;
    // `""`: the node of the module's `out` statement.
    let seg = node.path.strip_prefix(path.as_str())?;
    let seg = if seg.is_empty() { seg } else { seg.strip_prefix('.')? };
    if seg.contains('.') || tree.instance_of(&node.path) != inst {
        return None;
    }
    let d = pyargs::decl(c, module)?;
    let (e, want) = match node.op {
        Op::Attention { heads } => {
            let args = pyargs::value_call(d, seg, "sdpa", &["q", "k", "v", "heads", "mask"])?;
            (*args.get("heads")?, heads)
        }
        Op::GroupedLinear { groups } => {
            let names: Vec<&str> =
                crate::lower::primitive_signature("grouped_linear").iter().map(|(n, _)| *n).collect();
            (*pyargs::call_args(d, seg, "grouped_linear", &names).get("groups")?, groups)
        }
        _ => return None,
    };
    let params = pyargs::class_params(c, module);
    // An attribute may not hide a child or an `nn.Module` member.
    let taken: BTreeSet<&str> = tree.nodes[inst].children.iter().map(|&ch| tree.nodes[ch].seg.as_str()).collect();
    let env = Env::new(c, path, &params, "self.", &|py| !is_attr(py) || taken.contains(py));
    let (text, names) = pyargs::recover(e, &env, &Value::Int(want))?;
    used.borrow_mut().entry(inst).or_default().extend(names);
    Some(text)
}

/// The class being written: its module's declaration and parameters.
struct Cls<'c> {
    path: String,
    decl: Option<&'c ModuleDecl>,
    env: Env,
    /// The longest expression to write.
    limit: usize,
}

impl Cls<'_> {
    /// Tree node `t`'s path below the class.
    fn rel<'p>(&self, p: &'p str) -> &'p str {
        if self.path.is_empty() {
            p
        } else {
            p.strip_prefix(self.path.as_str()).and_then(|r| r.strip_prefix('.')).unwrap_or(p)
        }
    }

    /// The spec arguments of what the class's module builds at `rel` with `callee`.
    fn args(&self, rel: &str, callee: &str, names: &[&str]) -> HashMap<String, &Expr> {
        self.decl.map(|d| pyargs::call_args(d, rel, callee, names)).unwrap_or_default()
    }

    /// The spec's expression `e` as Python when it provably gives `want`.
    fn recover(&self, e: &Expr, want: &Value) -> Option<String> {
        pyargs::recover(e, &self.env, want).map(|(t, _)| t).filter(|t| t.chars().count() <= self.limit)
    }

    /// `want` as the spec's expression `e` when it provably is, else as a literal.
    fn value(&self, e: Option<&&Expr>, want: &Value) -> Option<String> {
        e.and_then(|e| self.recover(e, want)).or_else(|| pyargs::text_of(want))
    }
}

struct Writer<'a, 'b> {
    c: &'a Compiled,
    used: &'a RefCell<HashMap<usize, BTreeSet<String>>>,
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
        let is_root = extra_init.is_some();
        let params: Vec<ClassParam> = if is_root { Vec::new() } else { pyargs::class_params(self.c, module) };
        let mut body = pyargs::init_signature(&params);
        body.push("        super().__init__()".to_string());
        let attrs_at = body.len();
        // Expressions are never split: where one makes a line too long (the formatter
        // would break it), shorter ones, then none, are written.
        let mut children = Vec::new();
        for limit in [usize::MAX, 24, 0] {
            let path = tree.nodes[t].path.clone();
            let cls = Cls {
                env: Env::new(self.c, &path, &params, "", &|_| false),
                decl: if is_root { None } else { pyargs::decl(self.c, module) },
                path,
                limit,
            };
            children.clear();
            for &ch in &tree.nodes[t].children {
                let seg = &tree.nodes[ch].seg;
                let e = self.build(ch, names, &cls)?;
                if is_attr(seg) {
                    children.extend(e.lines(8, &format!("self.{seg} = "), ""));
                } else {
                    let method =
                        if matches!(tree.nodes[ch].kind, Kind::Param(_)) { "register_parameter" } else { "add_module" };
                    let call = Py::call(format!("self.{method}"), vec![Py::atom(pyops::quote(seg)), e]);
                    children.extend(call.lines(8, "", ""));
                }
            }
            if children.iter().all(|l| l.chars().count() <= pyops::WIDTH) {
                break;
            }
        }
        body.extend(children);
        body.extend(extra_init.unwrap_or_default());
        if self.cx.scopes.callable.contains(&t) {
            let f = pyforward::forward(self.cx, t)?;
            self.helpers.extend(f.helpers);
            body.push(String::new());
            body.extend(f.lines);
        }
        // Parameters the forward reads (the attention's head count).
        let attrs = self.used.borrow().get(&t).cloned().unwrap_or_default();
        let attrs = attrs.iter().map(|a| format!("        self.{a} = {a}"));
        body.splice(attrs_at..attrs_at, attrs);
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
    fn build(&mut self, t: usize, names: &HashMap<usize, String>, cls: &Cls) -> Result<Py, ExportError> {
        let tree = self.cx.tree;
        let node = &tree.nodes[t];
        let rel = cls.rel(&node.path);
        match &node.kind {
            Kind::Param(id) => match &self.cx.g.node(*id).op {
                Op::Parameter(p) => {
                    let spec = cls.args(rel, "param", &["shape", "init", "std", "value"]);
                    Ok(Py::call("nn.Parameter", vec![init(p, &shape(p, spec.get("shape"), cls))]))
                }
                _ => Err(ExportError::Unsupported(format!("internal: `{}` is not a parameter", node.path))),
            },
            Kind::Instance(m) => {
                let class = names.get(&t).map_or("Scope", |s| s.as_str());
                let params = pyargs::class_params(self.c, m);
                let spec = cls.args(rel, m, &params.iter().map(|p| p.spec.as_str()).collect::<Vec<_>>());
                let values = self.c.instance_args.get(&node.path);
                let mut args = Vec::new();
                for p in &params {
                    let Some(v) = values.and_then(|vs| vs.iter().find(|(n, _)| n == &p.spec)).map(|(_, v)| v) else {
                        if p.default.is_some() {
                            continue;
                        }
                        return Err(ExportError::Unsupported(format!("`{}` has no value for `{}`", node.path, p.spec)));
                    };
                    let given = spec.get(&p.spec).and_then(|e| cls.recover(e, v));
                    if given.is_none() && p.default.as_ref() == Some(v) {
                        continue;
                    }
                    let text = given.or_else(|| pyargs::text_of(v)).ok_or_else(|| {
                        ExportError::Unsupported(format!("`{}`: `{}` is not a number, flag or text", node.path, p.spec))
                    })?;
                    args.push(Py::atom(format!("{}={text}", p.py)));
                }
                Ok(Py::call(class, args))
            }
            Kind::Root => Err(ExportError::Unsupported("internal: the root inside the tree".into())),
            Kind::Primitive(p) if tree.is_sugar(t) => Ok(sugar(self.cx.g, tree, t, p, cls)),
            Kind::Primitive(_) | Kind::Container => {
                let mut parts = Vec::new();
                for &ch in &node.children {
                    parts.push((tree.nodes[ch].seg.clone(), self.build(ch, names, cls)?));
                }
                match access_of(tree, t) {
                    Access::Index => {
                        let first = parts[0].1.flat();
                        let n = Value::Int(parts.len() as i64);
                        let count = cls.decl.and_then(|d| pyargs::repeat_count(d, rel));
                        let count = count.and_then(|e| cls.recover(e, &n));
                        if parts.iter().all(|(_, p)| p.flat() == first) && (parts.len() > 1 || count.is_some()) {
                            let count = count.unwrap_or_else(|| parts.len().to_string());
                            let comp = Py::Repeat(Box::new(parts[0].1.clone()), count);
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

/// `nn.Linear(dim, dim * 3)` and friends for a primitive's `weight` (+ `bias`): each
/// size as the spec's argument where it provably is, else the weight's.
fn sugar(g: &Graph, tree: &Tree, t: usize, prim: &str, cls: &Cls) -> Py {
    let kids = &tree.nodes[t].children;
    let param = |i: usize| match tree.nodes[kids[i]].kind {
        Kind::Param(id) => match &g.node(id).op {
            Op::Parameter(p) => Some((id, p)),
            _ => None,
        },
        _ => None,
    };
    let Some((wid, w)) = param(0) else { return Py::atom("None") };
    let names: Vec<&str> = crate::lower::primitive_signature(prim).iter().map(|(n, _)| *n).collect();
    let spec = cls.args(cls.rel(&tree.nodes[t].path), prim, &names);
    let at = |name: &str, v: Value| Py::atom(cls.value(spec.get(name), &v).unwrap_or_default());
    let bias = kids.len() == 2;
    let s = &w.shape;
    let mut args: Vec<Py> = match prim {
        "linear" if s.len() == 2 => vec![at("in_features", Value::Int(s[1])), at("out_features", Value::Int(s[0]))],
        "embedding" if s.len() == 2 => vec![at("num", Value::Int(s[0])), at("dim", Value::Int(s[1]))],
        "layernorm" if s.len() == 1 => {
            let eps = g.users(wid).iter().find_map(|(u, _)| match g.node(*u).op {
                Op::LayerNorm { eps } => Some(eps),
                _ => None,
            });
            let mut a = vec![at("dim", Value::Int(s[0]))];
            if let Some(e) = eps {
                a.push(Py::atom(format!("eps={}", at("eps", Value::Float(e)).flat())));
            }
            a
        }
        "conv2d" | "conv3d" if s.len() >= 4 => {
            let stride = g.users(wid).iter().find_map(|(u, _)| match &g.node(*u).op {
                Op::Conv2d { stride } => Some(stride.to_vec()),
                Op::Conv3d { stride } => Some(stride.to_vec()),
                _ => None,
            });
            let kernel = sizes(spec.get("kernel"), &s[2..], cls);
            let mut a = vec![at("in_channels", Value::Int(s[1])), at("out_channels", Value::Int(s[0]))];
            a.push(Py::atom(kernel.clone()));
            if let Some(st) = stride {
                // graft's stride defaults to the kernel.
                let st = match spec.get("stride") {
                    None if st == s[2..] => kernel,
                    e => sizes(e, &st, cls),
                };
                a.push(Py::atom(format!("stride={st}")));
            }
            a
        }
        _ => return Py::call("Scope", vec![]),
    };
    if prim != "embedding" {
        match spec.get("bias").and_then(|e| cls.recover(e, &Value::Bool(bias))) {
            Some(b) => args.push(Py::atom(format!("bias={b}"))),
            None if !bias => args.push(Py::atom("bias=False")),
            None => {}
        }
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

/// A kernel or stride (`patch`, `(tubelet, patch, patch)`): one spec expression for
/// all sizes, a list of them, or the literal tuple.
fn sizes(e: Option<&&Expr>, dims: &[i64], cls: &Cls) -> String {
    if let Some(e) = e {
        if dims.iter().all(|&d| d == dims[0]) {
            if let Some(t) = cls.recover(e, &Value::Int(dims[0])) {
                return t;
            }
        }
        if let crate::syntax::ast::ExprKind::List(items) = &e.kind {
            let parts: Option<Vec<String>> =
                items.iter().zip(dims).map(|(i, &d)| cls.recover(i, &Value::Int(d))).collect();
            if let Some(p) = parts.filter(|p| p.len() == dims.len()) {
                return format!("({})", p.join(", "));
            }
        }
    }
    format!("({})", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

/// A parameter's dimensions: the spec's shape expressions where they provably are.
fn shape(p: &ParamInfo, e: Option<&&Expr>, cls: &Cls) -> Vec<String> {
    let items = match e.map(|e| &e.kind) {
        Some(crate::syntax::ast::ExprKind::List(items)) if items.len() == p.shape.len() => Some(items),
        _ => None,
    };
    p.shape
        .iter()
        .enumerate()
        .map(|(k, &d)| items.and_then(|i| cls.recover(&i[k], &Value::Int(d))).unwrap_or_else(|| d.to_string()))
        .collect()
}

/// A parameter's initial value: its init rule (graft draws its own seeded values;
/// these follow the same distributions), zeros for weights that load from a file.
fn init(p: &ParamInfo, dims: &[String]) -> Py {
    let tuple = match dims.len() {
        0 => "()".to_string(),
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut shape_args: Vec<Py> =
        if dims.is_empty() { vec![Py::atom("()")] } else { dims.iter().map(|d| Py::atom(d.clone())).collect() };
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
