//! Lowering a `model`: inputs, components, heads, outputs; adapters, pathways and
//! training rules are collected for the passes.

use super::eval::Env;
use super::{Builder, Component, Decls, Lowered, Program, Reported, Value};
use crate::diag::{Diagnostic, Diagnostics};
use crate::ir::{DType, Dim, Op, TensorType};
use crate::source::{SourceMap, Span};
use crate::syntax::ast::{ComponentKind, Expr, ExprKind, Ident, ModelDecl, ModelItem, Trainability};
use std::collections::HashMap;

/// Merge `model b extends a`: a's declarations, then b's; b's training rules replace a's.
fn merged_items(prog: &Program, model: &ModelDecl, diags: &mut Diagnostics) -> Vec<ModelItem> {
    let mut chain = vec![model.clone()];
    let mut cur = model.clone();
    while let Some(base) = &cur.extends {
        if chain.iter().any(|m| m.name.name == base.name) {
            diags.push(
                Diagnostic::error("E0501", format!("model `{}` extends itself", base.name))
                    .at(base.span, "cycle")
                    .hint("a chain of `extends` must end in a model that extends nothing"),
            );
            return Vec::new();
        }
        let Some(b) = prog.models.get(&base.name) else {
            diags.push(
                Diagnostic::error("E0502", format!("unknown model `{}`", base.name))
                    .at(base.span, "not found")
                    .hint("import the file that defines it with use \"file.graft\""),
            );
            return Vec::new();
        };
        chain.push(b.clone());
        cur = b.clone();
    }
    let mut items = Vec::new();
    let n = chain.len();
    for (i, m) in chain.into_iter().rev().enumerate() {
        for it in m.items {
            // Earlier models' training rules do not carry over: what they trained is now
            // loaded from their checkpoints and stays frozen.
            if i + 1 < n && matches!(it, ModelItem::Train { .. }) {
                continue;
            }
            items.push(it);
        }
    }
    items
}

/// The model's one namespace, and the `weights NAME ...` bindings no declaration has
/// claimed yet.
struct Scope {
    names: HashMap<String, Span>,
    /// `weights NAME "file"` / `weights NAME required` (file `None`).
    binds: HashMap<String, (Option<String>, Option<Trainability>, Span)>,
}

impl Scope {
    /// Take the name `n`; `false` (and an error) when it is already declared.
    fn declare(&mut self, b: &mut Builder, n: &Ident) -> bool {
        if let Some(prev) = self.names.get(&n.name) {
            b.error(
                Diagnostic::error("E0201", format!("`{}` is declared twice in the model", n.name))
                    .at(n.span, "declared again here")
                    .also(*prev, "first declared here")
                    .hint("inputs, components, adapters, pathways, heads and outputs share one namespace"),
            );
            false
        } else {
            self.names.insert(n.name.clone(), n.span);
            true
        }
    }
}

/// Lower the root model of `prog`.
pub fn lower(prog: Program) -> Result<Lowered, (SourceMap, Diagnostics)> {
    let Some(name) = prog.root_model.clone() else {
        let d = Diagnostic::error("E0503", "this spec has no model")
            .at(Span::new(prog.root, 0, 0), "file starts here")
            .hint("a compiled spec needs `model NAME { ... }`; files of modules are checked with `graft check`");
        return Err((prog.sources, d.into()));
    };
    let model = prog.models[&name].clone();
    let mut diags = Diagnostics::default();
    let items = merged_items(&prog, &model, &mut diags);
    if diags.has_errors() {
        return Err((prog.sources, diags));
    }
    let mut lw = Lowered { b: Builder::new(prog), decls: Decls { model: name.clone(), ..Decls::default() } };
    let mut scope = Scope { names: HashMap::new(), binds: weights_bindings(&items, &mut lw.decls) };
    // 1. Inputs.
    lower_inputs(&mut lw.b, &mut lw.decls, &mut scope, &items);
    // 2. Backbones and encoders, in order (a later one may read an earlier one).
    lower_components(&mut lw.b, &mut lw.decls, &mut scope, &items);
    // 3. Heads.
    lower_heads(&mut lw.b, &mut lw.decls, &mut scope, &items);
    // 4. Outputs.
    lower_outputs(&mut lw.b, &lw.decls.env, &mut scope, &items);
    // 5. Adapters, pathways and training rules go to the passes.
    collect_for_passes(&mut lw.b, &mut lw.decls, &mut scope, items);
    unclaimed_bindings(&mut lw.b, scope);
    if lw.b.graph.outputs().is_empty() && !lw.b.diags.has_errors() {
        lw.b.error(
            Diagnostic::error("E0509", format!("model `{name}` has no output"))
                .at(model.name.span, "nothing to compute")
                .hint("add `output logits = head_or_component`"),
        );
    }
    if lw.b.diags.has_errors() {
        return Err((lw.b.prog.sources, lw.b.diags));
    }
    Ok(lw)
}

/// The model's `weights NAME ...` items by name; their key rules go to `decls`.
fn weights_bindings(
    items: &[ModelItem],
    decls: &mut Decls,
) -> HashMap<String, (Option<String>, Option<Trainability>, Span)> {
    let mut binds = HashMap::new();
    for it in items {
        if let ModelItem::Bind { name, file, keys, trainability, span } = it {
            binds.insert(name.name.clone(), (file.clone(), *trainability, *span));
            if !keys.is_identity() {
                decls.key_maps.insert(name.name.clone(), keys.clone());
            }
        }
    }
    binds
}

/// One `Input` node per `input` declaration, named in `env`.
fn lower_inputs(b: &mut Builder, decls: &mut Decls, scope: &mut Scope, items: &[ModelItem]) {
    for it in items {
        let ModelItem::Input(inp) = it else { continue };
        if !scope.declare(b, &inp.name) {
            continue;
        }
        let norm = inp.normalized.as_ref().and_then(|n| match super::norm::resolve(n, inp.span) {
            Ok(n) => Some(n),
            Err(d) => {
                b.error(*d);
                None
            }
        });
        let dtype = DType::parse(&inp.dtype).unwrap_or(DType::F32);
        let mut shape = Vec::new();
        for d in &inp.dims {
            match d {
                crate::syntax::ast::Dim::Fixed(n, sp) => {
                    if *n <= 0 || *n > (1 << 32) {
                        b.error(
                            Diagnostic::error("E0504", format!("input dimension {n} is not usable"))
                                .at(*sp, "must be between 1 and 2^32")
                                .hint("use a symbol such as B for sizes known only at run time"),
                        );
                    }
                    shape.push(Dim::Fixed(*n));
                }
                crate::syntax::ast::Dim::Symbolic(id) => shape.push(Dim::Sym(id.name.clone())),
            }
        }
        let default_zeros = match &inp.default {
            None => false,
            Some(d) if d.name == "zeros" && inp.optional => true,
            Some(d) => {
                b.error(
                    Diagnostic::error("E0505", format!("unsupported input default `{}`", d.name))
                        .at(d.span, "only an optional input can have a default, and only `zeros`")
                        .hint("write `input token_type_ids: i64[B, T] optional = zeros`"),
                );
                false
            }
        };
        let pixels = match norm.as_ref().map(|n| super::norm::pixels(n, &shape)) {
            Some(Ok(p)) => p,
            Some(Err(d)) => {
                b.error(*d);
                None
            }
            None => None,
        };
        if let Some(n) = norm {
            decls.input_norms.insert(inp.name.name.clone(), n);
        }
        let op = Op::Input {
            name: inp.name.name.clone(),
            ty: TensorType::new(dtype, shape),
            optional: inp.optional,
            default_zeros,
            norm: pixels,
        };
        if let Ok(id) = b.node(op, &inp.name.name, inp.span, &[]) {
            decls.env.vars.insert(inp.name.name.clone(), (Value::Tensor(id), Some(inp.name.span)));
        }
    }
}

/// Instantiate the backbones and encoders in order, each with its weights binding.
fn lower_components(b: &mut Builder, decls: &mut Decls, scope: &mut Scope, items: &[ModelItem]) {
    for it in items {
        let ModelItem::Component(c) = it else { continue };
        if !scope.declare(b, &c.name) {
            continue;
        }
        let mut weights = c.weights.as_ref().and_then(|w| w.file.clone());
        let mut required = c.weights.as_ref().is_some_and(|w| w.file.is_none());
        if let Some(w) = c.weights.as_ref().filter(|w| !w.keys.is_identity()) {
            decls.key_maps.entry(c.name.name.clone()).or_insert_with(|| w.keys.clone());
        }
        let mut trainability = c.trainability.map(|t| t.0);
        if let Some((file, t, _)) = scope.binds.remove(&c.name.name) {
            required = file.is_none();
            weights = file;
            trainability = t.or(trainability);
        }
        if required {
            decls.required_weights.insert(c.name.name.clone());
        }
        if c.kind == ComponentKind::Backbone && weights.is_none() && !required {
            b.error(
                Diagnostic::error("E0506", format!("backbone `{}` has no weights", c.name.name))
                    .at(c.name.span, "a backbone is pretrained")
                    .hint("add `weights \"file.safetensors\"` (or `weights required` to bind it on the command line with --weights), or declare it `encoder` to train it from its initialisation"),
            );
        }
        b.set_owner(&c.name.name, (weights.is_some() || required).then(|| c.name.name.clone()));
        if let Some(w) = &weights {
            decls.weights.insert(c.name.name.clone(), w.clone());
        }
        let env = &mut decls.env;
        if let Ok(v) = instance_expr(b, &c.value, env, &c.name.name) {
            env.vars.insert(c.name.name.clone(), (v, Some(c.name.span)));
            env.instances.insert(c.name.name.clone(), c.name.name.clone());
        } else {
            env.failed.insert(c.name.name.clone());
        }
        let weights_only = is_weights_only(b, &c.value);
        decls.components.push(Component {
            name: c.name.name.clone(),
            kind: c.kind,
            weights,
            trainability,
            weights_only,
            span: c.span,
        });
    }
}

/// Evaluate the heads, each owning the weights bound to its name.
fn lower_heads(b: &mut Builder, decls: &mut Decls, scope: &mut Scope, items: &[ModelItem]) {
    for it in items {
        let ModelItem::Head { name, value, span } = it else { continue };
        if !scope.declare(b, name) {
            continue;
        }
        let binding = scope.binds.remove(&name.name).map(|(f, _, _)| {
            match f {
                Some(f) => {
                    decls.weights.insert(name.name.clone(), f);
                }
                None => {
                    decls.required_weights.insert(name.name.clone());
                }
            }
            name.name.clone()
        });
        b.set_owner(&name.name, binding);
        let env = &mut decls.env;
        if let Ok(v) = b.let_expr(value, env, &name.name) {
            env.vars.insert(name.name.clone(), (v, Some(name.span)));
            env.instances.insert(name.name.clone(), name.name.clone());
        } else {
            env.failed.insert(name.name.clone());
        }
        decls.heads.push((name.name.clone(), *span));
    }
}

/// One `Output` node per `output` declaration, which must name a tensor.
fn lower_outputs(b: &mut Builder, env: &Env, scope: &mut Scope, items: &[ModelItem]) {
    for it in items {
        let ModelItem::Output { name, value, span } = it else { continue };
        if !scope.declare(b, name) {
            continue;
        }
        match b.eval(value, env, &name.name) {
            Ok(Value::Tensor(t)) => {
                let _ = b.node(Op::Output { name: name.name.clone() }, &name.name, *span, &[t]);
            }
            Ok(v) => {
                b.error(
                    Diagnostic::error("E0507", format!("output `{}` is not a tensor", name.name))
                        .at(value.span, format!("this is {}", v.a_kind()))
                        .hint("outputs name a component, a head or a site such as `target.head`"),
                );
            }
            Err(Reported) => {}
        }
    }
}

/// Adapters (with their weights), pathways and training rules, kept in `decls` for the
/// passes that apply them.
fn collect_for_passes(b: &mut Builder, decls: &mut Decls, scope: &mut Scope, items: Vec<ModelItem>) {
    for it in items {
        match it {
            ModelItem::Adapter(a) if scope.declare(b, &a.name) => {
                if let Some((f, t, _)) = scope.binds.remove(&a.name.name) {
                    match &f {
                        Some(f) => {
                            decls.weights.insert(a.name.name.clone(), f.clone());
                        }
                        None => {
                            decls.required_weights.insert(a.name.name.clone());
                        }
                    }
                    decls.adapter_weights.insert(a.name.name.clone(), (f.unwrap_or_default(), t));
                } else if let Some(w) = &a.weights {
                    if !w.keys.is_identity() {
                        decls.key_maps.insert(a.name.name.clone(), w.keys.clone());
                    }
                    // `weights required` binds like a file; the command line names it.
                    let f = w.file.clone().unwrap_or_default();
                    match &w.file {
                        Some(f) => {
                            decls.weights.insert(a.name.name.clone(), f.clone());
                        }
                        None => {
                            decls.required_weights.insert(a.name.name.clone());
                        }
                    }
                    decls.adapter_weights.insert(a.name.name.clone(), (f, a.trainability.map(|t| t.0)));
                }
                decls.adapters.push(a);
            }
            ModelItem::Pathway(p) if scope.declare(b, &p.name) => decls.pathways.push(p),
            ModelItem::Train { rules, .. } => decls.train.extend(rules),
            _ => {}
        }
    }
}

/// An error for each `weights NAME` that no declaration claimed.
fn unclaimed_bindings(b: &mut Builder, scope: Scope) {
    for (name, (_, _, span)) in scope.binds {
        let near = super::builtins::nearest(&name, scope.names.keys().map(String::as_str), 1);
        b.error(
            Diagnostic::error("E0508", format!("`weights {name}` binds nothing"))
                .at(span, "no backbone, encoder, head or adapter has this name")
                .hint(match near.first() {
                    Some(n) => {
                        format!("did you mean `{n}`? weights bind to a declared backbone, encoder, head or adapter")
                    }
                    None => "bind weights to a declared backbone, encoder, head or adapter".to_string(),
                }),
        );
    }
}

/// `module(config)` without inputs: an instance built for its weights only.
fn is_weights_only(b: &Builder, e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Call { callee, .. } => match &callee.kind {
            ExprKind::Name(m) => b.prog.modules.contains_key(m) || super::builtins::PRIMITIVES.contains(&m.as_str()),
            _ => false,
        },
        _ => false,
    }
}

/// `module(config)(inputs)` at `path`, or `module(config)` alone: an instance that is
/// built for its weights only (its inputs are `Unbound`).
fn instance_expr(b: &mut Builder, e: &Expr, env: &Env, path: &str) -> Result<Value, Reported> {
    if let ExprKind::Call { callee, args } = &e.kind {
        if let ExprKind::Name(m) = &callee.kind {
            if b.prog.modules.contains_key(m) || super::builtins::PRIMITIVES.contains(&m.as_str()) {
                let config = b.eval_args(args, env, path)?;
                let n_inputs = match b.prog.modules.get(m).map(|e| &**e) {
                    Some(super::ModuleEntry::Decl(d)) => {
                        d.body.iter().filter(|s| matches!(s, crate::syntax::ast::Stmt::In { .. })).count()
                    }
                    _ => 1,
                };
                let mut inputs = Vec::new();
                for _ in 0..n_inputs.max(1) {
                    let u = b.node(Op::Unbound, path, e.span, &[])?;
                    inputs.push(super::eval::ArgVal { name: None, value: Value::Tensor(u), span: e.span });
                }
                return b.instance(m, callee.span, config, inputs, path, e.span);
            }
        }
    }
    b.let_expr(e, env, path)
}
