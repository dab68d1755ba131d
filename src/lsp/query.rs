//! What the cursor is on: a walk of the document's AST to the innermost name,
//! selector or declaration that contains an offset, and the uses of a module across
//! a program (for find-references).

use crate::lower::{ModuleEntry, Program};
use crate::source::Span;
use crate::syntax::ast::*;

/// The thing under the cursor.
#[derive(Debug, Clone)]
pub enum Target {
    /// A module name: a declaration, a call, a `repeat`, an alias, an adapter's module.
    Module(String),
    /// An instance or value of the model, as a path (`vit`, `video_vit.norm`).
    Path(String),
    /// A name inside a module body (`qkv` in `attention`).
    Local {
        module: String,
        name: String,
    },
    Selector(Selector),
    Pathway(String),
    Use(UseTarget),
}

/// The name span of a module's declaration or alias.
pub fn entry_span(e: &ModuleEntry) -> Span {
    match e {
        ModuleEntry::Decl(m) => m.name.span,
        ModuleEntry::Alias(a) => a.name.span,
    }
}

fn has(span: Span, off: usize) -> bool {
    (span.start as usize) <= off && off <= span.end as usize
}

/// The target at byte offset `off` of the document.
pub fn target_at(file: &File, off: usize) -> Option<Target> {
    for u in &file.uses {
        if has(u.span, off) {
            return Some(Target::Use(u.target.clone()));
        }
    }
    for m in &file.modules {
        if has(m.name.span, off) {
            return Some(Target::Module(m.name.name.clone()));
        }
        if !has(m.span, off) {
            continue;
        }
        let local = |n: String| Target::Local { module: m.name.name.clone(), name: n };
        for p in &m.params {
            if let Some(t) = p.default.as_ref().and_then(|e| expr_at(e, off, &local)) {
                return Some(t);
            }
        }
        if let Some(t) = stmts_at(&m.body, off, &local) {
            return Some(t);
        }
    }
    for a in &file.aliases {
        if has(a.name.span, off) {
            return Some(Target::Module(a.name.name.clone()));
        }
        if has(a.target.span, off) {
            return Some(Target::Module(a.target.name.clone()));
        }
    }
    let path = |n: String| Target::Path(n);
    for model in &file.models {
        if !has(model.span, off) {
            continue;
        }
        for item in &model.items {
            if let Some(t) = item_at(item, off, &path) {
                return Some(t);
            }
        }
    }
    None
}

fn args_at(args: &[Arg], off: usize, name: &dyn Fn(String) -> Target) -> Option<Target> {
    args.iter().find_map(|a| expr_at(&a.value, off, name))
}

fn item_at(item: &ModelItem, off: usize, path: &dyn Fn(String) -> Target) -> Option<Target> {
    let named = |id: &Ident| has(id.span, off).then(|| Target::Path(id.name.clone()));
    match item {
        ModelItem::Input(i) => named(&i.name),
        ModelItem::Component(c) => named(&c.name).or_else(|| expr_at(&c.value, off, path)),
        ModelItem::Adapter(a) => named(&a.name)
            .or_else(|| has(a.module.span, off).then(|| Target::Module(a.module.name.clone())))
            .or_else(|| has(a.at.span, off).then(|| Target::Selector(a.at.clone())))
            .or_else(|| args_at(&a.args, off, path)),
        ModelItem::Pathway(p) => has(p.name.span, off)
            .then(|| Target::Pathway(p.name.name.clone()))
            .or_else(|| has(p.from.span, off).then(|| Target::Selector(p.from.clone())))
            .or_else(|| has(p.into.span, off).then(|| Target::Selector(p.into.clone()))),
        ModelItem::Head { name, value, .. } | ModelItem::Output { name, value, .. } => {
            named(name).or_else(|| expr_at(value, off, path))
        }
        ModelItem::Train { rules, .. } => rules.iter().find(|r| has(r.span, off)).map(|r| Target::Selector(r.clone())),
        ModelItem::Bind { name, .. } => named(name),
    }
}

fn stmts_at(stmts: &[Stmt], off: usize, local: &dyn Fn(String) -> Target) -> Option<Target> {
    for s in stmts {
        let t = match s {
            Stmt::In { name, .. } => has(name.span, off).then(|| local(name.name.clone())),
            Stmt::Out { value, .. } => expr_at(value, off, local),
            Stmt::If { cond, then, otherwise, .. } => expr_at(cond, off, local)
                .or_else(|| stmts_at(then, off, local))
                .or_else(|| stmts_at(otherwise, off, local)),
            Stmt::Let { name, value } => {
                has(name.span, off).then(|| local(name.name.clone())).or_else(|| match value {
                    LetValue::Expr(e) => expr_at(e, off, local),
                    LetValue::Repeat { count, module, config, inputs, .. } => {
                        has(module.span, off).then(|| Target::Module(module.name.clone())).or_else(|| {
                            expr_at(count, off, local)
                                .or_else(|| args_at(config, off, local))
                                .or_else(|| args_at(inputs, off, local))
                        })
                    }
                })
            }
        };
        if t.is_some() {
            return t;
        }
    }
    None
}

/// `a.b.c` as a path, if the expression is a chain of names.
fn path_of(e: &Expr) -> Option<String> {
    match &e.kind {
        ExprKind::Name(n) => Some(n.clone()),
        ExprKind::Field(b, f) => Some(format!("{}.{}", path_of(b)?, f.name)),
        _ => None,
    }
}

fn expr_at(e: &Expr, off: usize, name: &dyn Fn(String) -> Target) -> Option<Target> {
    if !has(e.span, off) {
        return None;
    }
    match &e.kind {
        ExprKind::Name(n) => Some(name(n.clone())),
        ExprKind::Field(b, f) => {
            if has(f.span, off) {
                path_of(e).map(name)
            } else {
                expr_at(b, off, name)
            }
        }
        ExprKind::Call { callee, args } => {
            if let ExprKind::Name(n) = &callee.kind {
                if has(callee.span, off) {
                    return Some(Target::Module(n.clone()));
                }
            }
            expr_at(callee, off, name).or_else(|| args_at(args, off, name))
        }
        ExprKind::Unary(_, x) => expr_at(x, off, name),
        ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) => expr_at(a, off, name).or_else(|| expr_at(b, off, name)),
        ExprKind::List(xs) => xs.iter().find_map(|x| expr_at(x, off, name)),
        _ => None,
    }
}

/// Every place a module is used by name in a program: calls, `repeat`s, aliases,
/// adapters (in every loaded file).
pub fn module_uses(prog: &Program, module: &str) -> Vec<Span> {
    let mut out = Vec::new();
    for entry in prog.modules.values() {
        match entry.as_ref() {
            ModuleEntry::Decl(m) => {
                for p in &m.params {
                    if let Some(e) = &p.default {
                        expr_uses(e, module, &mut out);
                    }
                }
                stmt_uses(&m.body, module, &mut out);
            }
            ModuleEntry::Alias(a) => {
                if a.target.name == module {
                    out.push(a.target.span);
                }
                a.args.iter().for_each(|x| expr_uses(&x.value, module, &mut out));
            }
        }
    }
    for model in prog.models.values() {
        for item in &model.items {
            match item {
                ModelItem::Component(c) => expr_uses(&c.value, module, &mut out),
                ModelItem::Head { value, .. } | ModelItem::Output { value, .. } => expr_uses(value, module, &mut out),
                ModelItem::Adapter(a) => {
                    if a.module.name == module {
                        out.push(a.module.span);
                    }
                    a.args.iter().for_each(|x| expr_uses(&x.value, module, &mut out));
                }
                _ => {}
            }
        }
    }
    out.sort_by_key(|s| (s.file, s.start));
    out.dedup();
    out
}

fn stmt_uses(stmts: &[Stmt], module: &str, out: &mut Vec<Span>) {
    for s in stmts {
        match s {
            Stmt::In { .. } => {}
            Stmt::Out { value, .. } => expr_uses(value, module, out),
            Stmt::If { cond, then, otherwise, .. } => {
                expr_uses(cond, module, out);
                stmt_uses(then, module, out);
                stmt_uses(otherwise, module, out);
            }
            Stmt::Let { value: LetValue::Expr(e), .. } => expr_uses(e, module, out),
            Stmt::Let { value: LetValue::Repeat { count, module: m, config, inputs, .. }, .. } => {
                if m.name == module {
                    out.push(m.span);
                }
                expr_uses(count, module, out);
                config.iter().chain(inputs).for_each(|a| expr_uses(&a.value, module, out));
            }
        }
    }
}

fn expr_uses(e: &Expr, module: &str, out: &mut Vec<Span>) {
    match &e.kind {
        ExprKind::Call { callee, args } => {
            if matches!(&callee.kind, ExprKind::Name(n) if n == module) {
                out.push(callee.span);
            } else {
                expr_uses(callee, module, out);
            }
            args.iter().for_each(|a| expr_uses(&a.value, module, out));
        }
        ExprKind::Unary(_, x) | ExprKind::Field(x, _) => expr_uses(x, module, out),
        ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) => {
            expr_uses(a, module, out);
            expr_uses(b, module, out);
        }
        ExprKind::List(xs) => xs.iter().for_each(|x| expr_uses(x, module, out)),
        _ => {}
    }
}
