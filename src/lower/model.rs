//! Lowering a `model`: inputs, components, heads, outputs; adapters, pathways and
//! training rules are collected for the passes.

use super::eval::Env;
use super::{Builder, Component, Decls, Lowered, Program, Reported, Value};
use crate::diag::{Diagnostic, Diagnostics};
use crate::ir::{DType, Dim, Op, TensorType};
use crate::source::SourceMap;
use crate::syntax::ast::{ComponentKind, Expr, ExprKind, ModelDecl, ModelItem, Trainability};
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

/// Lower the root model of `prog`.
pub fn lower(prog: Program) -> Result<Lowered, (SourceMap, Diagnostics)> {
    let Some(name) = prog.root_model.clone() else {
        let d = Diagnostic::error("E0503", "this spec has no model")
            .at(crate::source::Span::new(prog.root, 0, 0), "file starts here")
            .hint("a compiled spec needs `model NAME { ... }`; files of modules are checked with `graft check`");
        return Err((prog.sources, d.into()));
    };
    let model = prog.models[&name].clone();
    let mut diags = Diagnostics::default();
    let items = merged_items(&prog, &model, &mut diags);
    if diags.has_errors() {
        return Err((prog.sources, diags));
    }
    let mut names: HashMap<String, crate::source::Span> = HashMap::new();
    let mut lw = Lowered { b: Builder::new(prog), decls: Decls { model: name.clone(), ..Decls::default() } };
    // Disjoint borrows of the model's tables while it is being built.
    let b = &mut lw.b;
    let env = &mut lw.decls.env;
    let mut declare = |b: &mut Builder, n: &crate::syntax::ast::Ident| -> bool {
        if let Some(prev) = names.get(&n.name) {
            b.error(
                Diagnostic::error("E0201", format!("`{}` is declared twice in the model", n.name))
                    .at(n.span, "declared again here")
                    .also(*prev, "first declared here")
                    .hint("inputs, components, adapters, pathways, heads and outputs share one namespace"),
            );
            false
        } else {
            names.insert(n.name.clone(), n.span);
            true
        }
    };
    // `weights NAME "file"` / `weights NAME required` (file `None`).
    let mut binds: HashMap<String, (Option<String>, Option<Trainability>, crate::source::Span)> = HashMap::new();
    for it in &items {
        if let ModelItem::Bind { name, file, keys, trainability, span } = it {
            binds.insert(name.name.clone(), (file.clone(), *trainability, *span));
            if !keys.is_identity() {
                lw.decls.key_maps.insert(name.name.clone(), keys.clone());
            }
        }
    }
    // 1. Inputs.
    for it in &items {
        let ModelItem::Input(inp) = it else { continue };
        if !declare(b, &inp.name) {
            continue;
        }
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
        let op = Op::Input {
            name: inp.name.name.clone(),
            ty: TensorType::new(dtype, shape),
            optional: inp.optional,
            default_zeros,
        };
        if let Ok(id) = b.node(op, &inp.name.name, inp.span, &[]) {
            env.vars.insert(inp.name.name.clone(), (Value::Tensor(id), Some(inp.name.span)));
        }
    }
    // 2. Backbones and encoders, in order (a later one may read an earlier one).
    for it in &items {
        let ModelItem::Component(c) = it else { continue };
        if !declare(b, &c.name) {
            continue;
        }
        let mut weights = c.weights.as_ref().and_then(|w| w.file.clone());
        let mut required = c.weights.as_ref().is_some_and(|w| w.file.is_none());
        if let Some(w) = c.weights.as_ref().filter(|w| !w.keys.is_identity()) {
            lw.decls.key_maps.entry(c.name.name.clone()).or_insert_with(|| w.keys.clone());
        }
        let mut trainability = c.trainability.map(|t| t.0);
        if let Some((file, t, _)) = binds.remove(&c.name.name) {
            required = file.is_none();
            weights = file;
            trainability = t.or(trainability);
        }
        if required {
            lw.decls.required_weights.insert(c.name.name.clone());
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
            lw.decls.weights.insert(c.name.name.clone(), w.clone());
        }
        if let Ok(v) = instance_expr(b, &c.value, env, &c.name.name) {
            env.vars.insert(c.name.name.clone(), (v, Some(c.name.span)));
            env.instances.insert(c.name.name.clone(), c.name.name.clone());
        } else {
            env.failed.insert(c.name.name.clone());
        }
        let weights_only = is_weights_only(b, &c.value);
        lw.decls.components.push(Component {
            name: c.name.name.clone(),
            kind: c.kind,
            weights,
            trainability,
            weights_only,
            span: c.span,
        });
    }
    // 3. Heads.
    for it in &items {
        let ModelItem::Head { name, value, span } = it else { continue };
        if !declare(b, name) {
            continue;
        }
        let binding = binds.remove(&name.name).map(|(f, _, _)| {
            match f {
                Some(f) => {
                    lw.decls.weights.insert(name.name.clone(), f);
                }
                None => {
                    lw.decls.required_weights.insert(name.name.clone());
                }
            }
            name.name.clone()
        });
        b.set_owner(&name.name, binding);
        if let Ok(v) = b.let_expr(value, env, &name.name) {
            env.vars.insert(name.name.clone(), (v, Some(name.span)));
            env.instances.insert(name.name.clone(), name.name.clone());
        } else {
            env.failed.insert(name.name.clone());
        }
        lw.decls.heads.push((name.name.clone(), *span));
    }
    // 4. Outputs.
    for it in &items {
        let ModelItem::Output { name, value, span } = it else { continue };
        if !declare(b, name) {
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
    // 5. Adapters, pathways and training rules go to the passes.
    for it in items {
        match it {
            ModelItem::Adapter(a) if declare(b, &a.name) => {
                if let Some((f, t, _)) = binds.remove(&a.name.name) {
                    match &f {
                        Some(f) => {
                            lw.decls.weights.insert(a.name.name.clone(), f.clone());
                        }
                        None => {
                            lw.decls.required_weights.insert(a.name.name.clone());
                        }
                    }
                    lw.decls.adapter_weights.insert(a.name.name.clone(), (f.unwrap_or_default(), t));
                } else if let Some(w) = &a.weights {
                    if !w.keys.is_identity() {
                        lw.decls.key_maps.insert(a.name.name.clone(), w.keys.clone());
                    }
                    // `weights required` binds like a file; the command line names it.
                    let f = w.file.clone().unwrap_or_default();
                    match &w.file {
                        Some(f) => {
                            lw.decls.weights.insert(a.name.name.clone(), f.clone());
                        }
                        None => {
                            lw.decls.required_weights.insert(a.name.name.clone());
                        }
                    }
                    lw.decls.adapter_weights.insert(a.name.name.clone(), (f, a.trainability.map(|t| t.0)));
                }
                lw.decls.adapters.push(a);
            }
            ModelItem::Pathway(p) if declare(b, &p.name) => lw.decls.pathways.push(p),
            ModelItem::Train { rules, .. } => lw.decls.train.extend(rules),
            _ => {}
        }
    }
    for (name, (_, _, span)) in binds {
        let near = super::builtins::nearest(&name, names.keys().map(String::as_str), 1);
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
    if b.graph.outputs().is_empty() && !b.diags.has_errors() {
        b.error(
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
