//! The `forward` method of one module: its statements ([`Scopes`]) as Python lines.
//!
//! Values get names from their instance paths (`qkv`, `attn`, `x1`), made unique in
//! the function. A value that a missing optional input can make absent is `None` at
//! run time; every statement reading one applies graft's rule: `add` passes a present
//! operand computed from the data through, everything else is absent too.

use super::pyops::{self, Helper, Py, WIDTH};
use super::pyscope::{chain, Item, Scopes};
use super::tree::Tree;
use super::ExportError;
use crate::ir::{Dim, Graph, NodeId, Op};
use crate::source::SourceMap;
use std::collections::{BTreeSet, HashMap, HashSet};

/// What a `forward` needs from around it.
pub(crate) struct Ctx<'a> {
    pub g: &'a Graph,
    pub tree: &'a Tree,
    pub scopes: &'a Scopes,
    pub sources: &'a SourceMap,
    /// Tree node → the class (or container) it is built as; decides `.x` vs `[i]`.
    pub access: &'a dyn Fn(usize) -> Access,
    /// The head count of an attention or grouped linear node written in a callable
    /// (`self.heads`) when the callable's parameters give it.
    pub heads: &'a dyn Fn(usize, NodeId) -> Option<String>,
}

/// How a tree node's children are reached.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Attributes of a class (`getattr` for names that are not identifiers).
    Attr,
    /// `nn.ModuleList`: `[i]`.
    Index,
    /// `nn.ModuleDict`: `["key"]`.
    Key,
}

/// Python keywords and names `model.py` defines or imports.
const RESERVED: &[&str] = &[
    "False",
    "None",
    "True",
    "and",
    "as",
    "assert",
    "async",
    "await",
    "break",
    "class",
    "continue",
    "def",
    "del",
    "elif",
    "else",
    "except",
    "finally",
    "for",
    "from",
    "global",
    "if",
    "import",
    "in",
    "is",
    "lambda",
    "nonlocal",
    "not",
    "or",
    "pass",
    "raise",
    "return",
    "try",
    "while",
    "with",
    "yield",
    "self",
    "F",
    "nn",
    "torch",
    "Tensor",
    "attention",
    "positions",
    "grouped_linear",
    "sinusoid_positions",
    "Scope",
    "l",
    "O",
    "I",
    "match",
    "case",
    "type",
];

/// Python's keywords (soft keywords are valid attribute names).
const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
    "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal",
    "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

/// `nn.Module` attributes a child may not shadow.
const MODULE_ATTRS: &[&str] = &[
    "training",
    "forward",
    "train",
    "eval",
    "to",
    "cuda",
    "cpu",
    "type",
    "float",
    "double",
    "half",
    "bfloat16",
    "apply",
    "parameters",
    "buffers",
    "children",
    "modules",
    "state_dict",
    "load_state_dict",
    "register_buffer",
    "register_parameter",
    "add_module",
    "named_parameters",
    "named_buffers",
    "named_children",
    "named_modules",
    "zero_grad",
    "requires_grad_",
    "share_memory",
    "extra_repr",
    "get_parameter",
    "get_submodule",
    "get_buffer",
    "compile",
    "xpu",
    "ipu",
    "mtia",
    "to_empty",
    "register_module",
    "dump_patches",
    "call_super_init",
];

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut ch = s.chars();
    ch.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && ch.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED.contains(&s)
}

/// A child name usable as `obj.name`.
pub(crate) fn is_attr(s: &str) -> bool {
    let mut ch = s.chars();
    ch.next().is_some_and(|c| c.is_ascii_alphabetic())
        && ch.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&s)
        && !MODULE_ATTRS.contains(&s)
}

/// `base`.`seg` by the parent's access kind.
pub(crate) fn child(base: Py, seg: &str, access: Access) -> Py {
    match access {
        Access::Index => Py::atom(format!("{}[{seg}]", base.flat())),
        Access::Key => Py::atom(format!("{}[{}]", base.flat(), pyops::quote(seg))),
        Access::Attr if is_attr(seg) => Py::atom(format!("{}.{seg}", base.flat())),
        Access::Attr => Py::call("getattr", vec![base, Py::atom(pyops::quote(seg))]),
    }
}

/// Unique local names of one function.
#[derive(Default)]
struct Names {
    used: HashSet<String>,
}

impl Names {
    fn fresh(&mut self, base: &str) -> String {
        let mut b: String = base.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
        if b.is_empty() || b.starts_with(|c: char| c.is_ascii_digit()) {
            b = format!("v{b}");
        }
        if !is_identifier(&b) {
            b.push('_');
        }
        let mut name = b.clone();
        let mut k = 2;
        while !self.used.insert(name.clone()) {
            name = format!("{b}_{k}");
            k += 1;
        }
        name
    }
}

/// A readable base name from a path: its last segment (with the one before when the
/// last is an index: `blocks_3`).
pub(crate) fn base_name(path: &str) -> String {
    let mut segs = path.rsplit('.');
    let last = segs.next().unwrap_or("");
    if last.chars().all(|c| c.is_ascii_digit()) {
        match segs.next() {
            Some(prev) => format!("{prev}_{last}"),
            None => format!("x{last}"),
        }
    } else {
        last.to_string()
    }
}

/// The emitted method and the helpers it uses.
pub(crate) struct Forward {
    pub lines: Vec<String>,
    pub helpers: BTreeSet<Helper>,
}

/// Write the `forward` of callable tree node `inst` (the root: the model's).
pub(crate) fn forward(cx: &Ctx<'_>, inst: usize) -> Result<Forward, ExportError> {
    let g = cx.g;
    let mut names = Names::default();
    let mut vals: HashMap<NodeId, Py> = HashMap::new();
    let mut body: Vec<String> = Vec::new();
    let mut helpers = BTreeSet::new();
    let ma = &cx.scopes.maybe_absent;
    let hint = |n: NodeId| if ma.contains(&n) { "Tensor | None" } else { "Tensor" };
    // The signature.
    let mut params: Vec<String> = vec!["self".into()];
    let ins = &cx.scopes.inputs[&inst];
    if inst == 0 {
        let (mut req, mut opt) = (vec![], vec![]);
        for &n in ins {
            let Op::Input { name, optional, .. } = &g.node(n).op else { continue };
            if !is_identifier(name) {
                return Err(ExportError::Unsupported(format!(
                    "input `{name}` is not a Python identifier; PyTorch's forward takes inputs by name"
                )));
            }
            names.used.insert(name.clone());
            vals.insert(n, Py::atom(name.clone()));
            if *optional {
                opt.push(format!("{name}: Tensor | None = None"));
            } else {
                req.push(format!("{name}: Tensor"));
            }
        }
        params.extend(req);
        params.extend(opt);
        body.extend(zeros_defaults(g, ins)?);
    } else {
        for (k, &n) in ins.iter().enumerate() {
            let base = match &g.node(n).op {
                // The value the instance is called on.
                _ if k == 0 => "x".to_string(),
                Op::Input { name, .. } => name.clone(),
                Op::Parameter(p) => base_name(&p.path),
                _ => base_name(&g.node(n).path),
            };
            let name = names.fresh(&base);
            params.push(format!("{name}: {}", hint(n)));
            vals.insert(n, Py::atom(name));
        }
    }
    let outs = &cx.scopes.outputs[&inst];
    let ret = if inst == 0 {
        "dict[str, Tensor]".to_string()
    } else if outs.len() == 1 {
        hint(outs[0]).to_string()
    } else {
        format!("tuple[{}]", outs.iter().map(|&n| hint(n)).collect::<Vec<_>>().join(", "))
    };
    let mut lines = signature(&params, &ret);
    let mut last_comment = String::new();
    let items = &cx.scopes.body[&inst];
    let is_index = |t: usize| (cx.access)(t) == Access::Index;
    let mut k = 0;
    while k < items.len() {
        let item = &items[k];
        k += 1;
        match *item {
            Item::Node(n) => {
                if let Some(c) = source_comment(cx.sources, g.node(n).span) {
                    if c != last_comment {
                        body.extend(c.lines().map(|l| format!("        {l}")));
                        last_comment = c;
                    }
                }
                let (lines, h) = statement(cx, inst, n, &mut names, &mut vals)?;
                body.extend(lines);
                helpers.extend(h);
            }
            Item::Call(q) if chain(cx.g, cx.tree, cx.scopes, &is_index, &items[k - 1..]).is_some() => {
                let n = chain(cx.g, cx.tree, cx.scopes, &is_index, &items[k - 1..]).unwrap_or(1);
                body.extend(stack(cx, inst, q, &items[k + n - 2], &mut names, &mut vals)?);
                k += n - 1;
            }
            Item::Call(q) => {
                let args =
                    cx.scopes.inputs[&q].iter().map(|&o| operand(cx, inst, o, &vals)).collect::<Result<_, _>>()?;
                let call = Py::call(path_from(cx, inst, q).flat(), args);
                let outs = &cx.scopes.outputs[&q];
                let outs_names: Vec<String> = outs.iter().map(|&o| names.fresh(&base_name(&g.node(o).path))).collect();
                body.extend(call.lines(8, &format!("{} = ", outs_names.join(", ")), ""));
                for (o, name) in outs.iter().zip(outs_names) {
                    vals.insert(*o, Py::atom(name));
                }
            }
        }
    }
    // The return.
    if inst == 0 {
        let mut items = Vec::new();
        for o in g.outputs() {
            let Op::Output { name } = &g.node(o).op else { continue };
            let src = g.operands(o)[0];
            items.push((name.clone(), operand(cx, inst, src, &vals)?));
        }
        body.extend(Py::dict(items).lines(8, "return ", ""));
    } else {
        let outs: Vec<String> =
            outs.iter().map(|o| operand(cx, inst, *o, &vals).map(|p| p.flat())).collect::<Result<_, _>>()?;
        let one = format!("        return {}", outs.join(", "));
        if one.chars().count() <= WIDTH {
            body.push(one);
        } else {
            body.extend(
                Py::Group("(".into(), outs.into_iter().map(|o| (String::new(), Py::atom(o))).collect(), ")")
                    .lines(8, "return ", ""),
            );
        }
    }
    lines.extend(body);
    Ok(Forward { lines, helpers })
}

/// A stack of blocks from `first` to `last`, each fed the one before: a loop over
/// their `nn.ModuleList`, whatever the depth.
fn stack(
    cx: &Ctx<'_>,
    inst: usize,
    first: usize,
    last: &Item,
    names: &mut Names,
    vals: &mut HashMap<NodeId, Py>,
) -> Result<Vec<String>, ExportError> {
    let list = cx.tree.nodes[first].parent.unwrap_or(inst);
    let Item::Call(last) = *last else { return Ok(Vec::new()) };
    let input = operand(cx, inst, cx.scopes.inputs[&first][0], vals)?;
    let v = names.fresh(&base_name(&cx.tree.nodes[list].path));
    let layer = names.fresh("layer");
    let mut out = input.lines(8, &format!("{v} = "), "");
    out.push(format!("        for {layer} in {}:", path_from(cx, inst, list).flat()));
    out.push(format!("            {v} = {layer}({v})"));
    vals.insert(cx.scopes.outputs[&last][0], Py::atom(v));
    Ok(out)
}

/// `def forward(self, …) -> R:`, exploded one parameter a line when too long.
fn signature(params: &[String], ret: &str) -> Vec<String> {
    let one = format!("    def forward({}) -> {ret}:", params.join(", "));
    if one.chars().count() <= WIDTH {
        return vec![one];
    }
    let mut out = vec!["    def forward(".to_string()];
    out.extend(params.iter().map(|p| format!("        {p},")));
    out.push(format!("    ) -> {ret}:"));
    out
}

/// `x = zeros` for absent optional inputs declared `= zeros`, sized by the inputs
/// that bind their symbols.
fn zeros_defaults(g: &Graph, ins: &[NodeId]) -> Result<Vec<String>, ExportError> {
    let mut out = Vec::new();
    for &n in ins {
        let Op::Input { name, ty, default_zeros: true, .. } = &g.node(n).op else { continue };
        let mut sizes = Vec::new();
        let mut device = None;
        for d in &ty.shape {
            match d {
                Dim::Fixed(k) => sizes.push(Py::atom(k.to_string())),
                Dim::Sym(s) => {
                    let from = ins.iter().find_map(|&m| match &g.node(m).op {
                        Op::Input { name, ty, optional: false, .. } => {
                            ty.shape.iter().position(|e| *e == Dim::Sym(s.clone())).map(|j| (name.clone(), j))
                        }
                        _ => None,
                    });
                    let (other, j) = from.ok_or_else(|| {
                        ExportError::Unsupported(format!("input `{name}`: no required input gives the size of `{s}`"))
                    })?;
                    sizes.push(Py::atom(format!("{other}.shape[{j}]")));
                    device.get_or_insert(other);
                }
            }
        }
        sizes.push(Py::atom(format!("dtype={}", pyops::torch_dtype(ty.dtype))));
        if let Some(d) = device {
            sizes.push(Py::atom(format!("device={d}.device")));
        }
        out.push(format!("        if {name} is None:"));
        out.extend(Py::call("torch.zeros", sizes).lines(12, &format!("{name} = "), ""));
    }
    Ok(out)
}

/// `self.a.b[0].c` from callable `from` to tree node `to` (under it).
fn path_from(cx: &Ctx<'_>, from: usize, to: usize) -> Py {
    let mut chain = Vec::new();
    let mut t = to;
    while t != from {
        chain.push(t);
        t = cx.tree.nodes[t].parent.unwrap_or(from);
    }
    let mut s = Py::atom("self");
    let mut parent = from;
    for &c in chain.iter().rev() {
        s = child(s, &cx.tree.nodes[c].seg, (cx.access)(parent));
        parent = c;
    }
    s
}

/// An operand as seen from callable `inst`.
fn operand(cx: &Ctx<'_>, inst: usize, o: NodeId, vals: &HashMap<NodeId, Py>) -> Result<Py, ExportError> {
    if let Some(v) = vals.get(&o) {
        return Ok(v.clone());
    }
    if let Op::Parameter(p) = &cx.g.node(o).op {
        if let Some(t) = cx.tree.get(&p.path).filter(|&t| cx.tree.is_under(t, inst)) {
            return Ok(path_from(cx, inst, t));
        }
    }
    Err(ExportError::Unsupported(format!(
        "internal: `{}` ({}) is read before it is computed",
        cx.g.node(o).path,
        cx.g.node(o).op.name()
    )))
}

/// The statement(s) of one node.
fn statement(
    cx: &Ctx<'_>,
    inst: usize,
    n: NodeId,
    names: &mut Names,
    vals: &mut HashMap<NodeId, Py>,
) -> Result<(Vec<String>, Option<Helper>), ExportError> {
    let g = cx.g;
    let node = g.node(n);
    let ops = g.operands(n);
    let mut out = Vec::new();
    let ma = &cx.scopes.maybe_absent;
    let mut args: Vec<Py> = ops.iter().map(|&o| operand(cx, inst, o, vals)).collect::<Result<_, _>>()?;
    let tys: Vec<&crate::ir::TensorType> = ops.iter().filter_map(|&o| g.node(o).ty.as_ref()).collect();
    let ty = node.ty.as_ref().ok_or_else(|| ExportError::Unsupported(format!("`{}` has no type", node.path)))?;
    let own = node.path == cx.tree.nodes[inst].path && inst != 0;
    let name = names.fresh(&if own { "out".to_string() } else { base_name(&node.path) });
    let call = module_call(cx, inst, n, &ops);
    let build = |args: &[Py]| match &call {
        Some(m) => {
            let x = if matches!(node.op, Op::Embedding) && tys[0].dtype != crate::ir::DType::I64 {
                Py::atom(format!("{}.long()", args[0].flat()))
            } else {
                args[0].clone()
            };
            (Py::call(m.clone(), vec![x]), None)
        }
        None => match (&node.op, (cx.heads)(inst, n)) {
            (Op::Attention { .. }, Some(h)) => {
                let mut a = args[..3].to_vec();
                a.push(Py::atom(h));
                a.extend(args.get(3).cloned());
                (Py::call("attention", a), Some(Helper::Attention))
            }
            (Op::GroupedLinear { .. }, Some(h)) => {
                let bias = args.get(2).cloned().unwrap_or(Py::atom("None"));
                (
                    Py::call("grouped_linear", vec![args[0].clone(), args[1].clone(), bias, Py::atom(h)]),
                    Some(Helper::GroupedLinear),
                )
            }
            _ => pyops::expr(&node.op, args, &tys, ty),
        },
    };
    let (mut e, mut helper) = build(&args);
    // Parameters inside an expression that cannot be split get a name first.
    if matches!(e, Py::Atom(_)) && format!("        {name} = {}", e.flat()).chars().count() > WIDTH {
        for (k, &o) in ops.iter().enumerate() {
            if matches!(g.node(o).op, Op::Parameter(_)) && !vals.contains_key(&o) {
                let pname = names.fresh(&base_name(&g.node(o).path));
                out.extend(args[k].lines(8, &format!("{pname} = "), ""));
                args[k] = Py::atom(pname);
            }
        }
        (e, helper) = build(&args);
    }
    let absent: Vec<usize> = (0..ops.len()).filter(|&k| ma.contains(&ops[k])).collect();
    let flat = |k: usize| args[k].flat();
    if absent.is_empty() {
        out.extend(e.lines(8, &format!("{name} = "), ""));
    } else if matches!(node.op, Op::Add) {
        // (condition, value) pairs, then the value when both are present.
        let pass = |k: usize| if cx.scopes.data.contains(&ops[k]) { flat(k) } else { "None".to_string() };
        let mut cases = Vec::new();
        if absent.contains(&0) {
            cases.push((format!("{} is None", flat(0)), pass(1)));
        }
        if absent.contains(&1) {
            cases.push((format!("{} is None", flat(1)), pass(0)));
        }
        out.extend(guarded(&name, &cases, &e));
    } else {
        let cond = absent.iter().map(|&k| format!("{} is None", flat(k))).collect::<Vec<_>>().join(" or ");
        out.extend(guarded(&name, &[(cond, "None".into())], &e));
    }
    vals.insert(n, Py::atom(name));
    Ok((out, helper))
}

/// `self.qkv` when node `n` applies a primitive built as its `nn` module to its
/// first operand with exactly that module's parameters.
fn module_call(cx: &Ctx<'_>, inst: usize, n: NodeId, ops: &[NodeId]) -> Option<String> {
    if !matches!(
        cx.g.node(n).op,
        Op::Linear | Op::LayerNorm { .. } | Op::Conv2d { .. } | Op::Conv3d { .. } | Op::Embedding
    ) {
        return None;
    }
    let params: Vec<usize> = ops[1..]
        .iter()
        .map(|&o| match &cx.g.node(o).op {
            Op::Parameter(p) => cx.tree.get(&p.path),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let owner = cx.tree.nodes[*params.first()?].parent?;
    let fits = cx.tree.is_sugar(owner) && cx.tree.nodes[owner].children == params && cx.tree.is_under(owner, inst);
    fits.then(|| path_from(cx, inst, owner).flat())
}

/// `name = v1 if c1 else v2 if c2 else e`, or the same as an `if` chain when long.
fn guarded(name: &str, cases: &[(String, String)], e: &Py) -> Vec<String> {
    let mut one = format!("        {name} = ");
    for (c, v) in cases {
        one += &format!("{v} if {c} else ");
    }
    one += &e.flat();
    if one.chars().count() <= WIDTH {
        return vec![one];
    }
    let mut out = Vec::new();
    for (i, (c, v)) in cases.iter().enumerate() {
        out.push(format!("        {} {c}:", if i == 0 { "if" } else { "elif" }));
        out.push(format!("            {name} = {v}"));
    }
    out.push("        else:".into());
    out.extend(e.lines(12, &format!("{name} = "), ""));
    out
}

/// The spec line a node came from, with the comment lines right above it, as `#`
/// comments.
fn source_comment(sources: &SourceMap, span: Option<crate::source::Span>) -> Option<String> {
    let span = span?;
    let text = &sources.get(span.file).text;
    let (line, _) = sources.line_col(span);
    let all: Vec<&str> = text.lines().collect();
    let this = all.get(line - 1)?.trim();
    if this.is_empty() {
        return None;
    }
    let mut lines = vec![this.to_string()];
    let mut k = line - 1;
    while k > 0 && all[k - 1].trim_start().starts_with("//") {
        lines.push(all[k - 1].trim().to_string());
        k -= 1;
    }
    lines.reverse();
    Some(lines.iter().map(|l| format!("# {}", l.trim_end())).collect::<Vec<_>>().join("\n"))
}
