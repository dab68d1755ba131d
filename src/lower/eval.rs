//! Expressions: configuration arithmetic and tensor expressions.
//!
//! Integers and floats are evaluated at compile time with overflow checks; tensor
//! expressions emit IR nodes (`x + attn` → `add`, `0.5 * y` → `scale`).

use super::builtins::{self, nearest};
use super::{limits, Builder, Reported, Value, R};
use crate::diag::Diagnostic;
use crate::ir::{NodeId, Op};
use crate::source::Span;
use crate::syntax::ast::{Arg, BinOp, Expr, ExprKind, UnOp};
use std::collections::HashMap;

/// Names visible in a module body or the model.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub vars: HashMap<String, (Value, Option<Span>)>,
    /// Names of instances in this scope → their full path (for `x.field`).
    pub instances: HashMap<String, String>,
    /// The instance path statements here create children of (`""` in the model).
    pub scope: String,
    /// Names whose definition failed (already reported): uses of them stay quiet.
    pub failed: std::collections::HashSet<String>,
}

impl Env {
    pub fn child_path(&self, name: &str) -> String {
        if self.scope.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.scope, name)
        }
    }
}

/// An evaluated argument.
pub struct ArgVal {
    pub name: Option<(String, Span)>,
    pub value: Value,
    pub span: Span,
}

impl Builder {
    pub(crate) fn eval_args(&mut self, args: &[Arg], env: &Env, path: &str) -> R<Vec<ArgVal>> {
        let mut out = Vec::with_capacity(args.len());
        let mut failed = false;
        for a in args {
            match self.eval(&a.value, env, path) {
                Ok(value) => out.push(ArgVal {
                    name: a.name.as_ref().map(|n| (n.name.clone(), n.span)),
                    value,
                    span: a.value.span,
                }),
                Err(_) => failed = true,
            }
        }
        if failed {
            Err(Reported)
        } else {
            Ok(out)
        }
    }

    pub(crate) fn node(&mut self, op: Op, path: &str, span: Span, operands: &[NodeId]) -> R<NodeId> {
        if self.graph.len() >= limits::MAX_NODES {
            return Err(self.error(
                Diagnostic::error("E0301", format!("the model has more than {} operations", limits::MAX_NODES))
                    .at(span, "while building this")
                    .hint("check repeat counts and depths for runaway sizes"),
            ));
        }
        Ok(self.graph.add(op, path, Some(span), operands))
    }

    /// Evaluate an expression; tensor operations emit nodes at `path`.
    pub(crate) fn eval(&mut self, e: &Expr, env: &Env, path: &str) -> R<Value> {
        match &e.kind {
            ExprKind::Int(v) => Ok(Value::Int(*v)),
            ExprKind::Float(v) => Ok(Value::Float(*v)),
            ExprKind::Bool(v) => Ok(Value::Bool(*v)),
            ExprKind::Str(s) => Ok(Value::Str(s.clone())),
            ExprKind::List(items) => {
                if items.len() > limits::MAX_LIST {
                    return Err(self.error(
                        Diagnostic::error("E0302", "list too long")
                            .at(e.span, format!("more than {} elements", limits::MAX_LIST))
                            .hint("lists hold shapes and kernel sizes"),
                    ));
                }
                let mut v = Vec::with_capacity(items.len());
                for it in items {
                    v.push(self.eval(it, env, path)?);
                }
                Ok(Value::List(v))
            }
            ExprKind::Name(n) => self.lookup(n, e.span, env),
            ExprKind::Field(..) => self.field(e, env),
            ExprKind::Index(base, ix) => {
                let b = self.eval(base, env, path)?;
                let i = self.eval(ix, env, path)?;
                match (b, i) {
                    (Value::List(items), Value::Int(i)) => {
                        let n = items.len() as i64;
                        let j = if i < 0 { n + i } else { i };
                        if j < 0 || j >= n {
                            return Err(self.error(
                                Diagnostic::error("E0303", "index out of range")
                                    .at(ix.span, format!("index {i} of a list of {n}"))
                                    .hint("indices run from 0, negative ones from the end"),
                            ));
                        }
                        Ok(items[j as usize].clone())
                    }
                    (b, i) => Err(self.error(
                        Diagnostic::error("E0304", "cannot index")
                            .at(e.span, format!("indexing {} with {}", b.a_kind(), i.a_kind()))
                            .hint("only lists are indexed, with integers"),
                    )),
                }
            }
            ExprKind::Unary(op, x) => {
                let v = self.eval(x, env, path)?;
                match (op, v) {
                    (UnOp::Neg, Value::Int(i)) => i.checked_neg().map(Value::Int).ok_or_else(|| self.overflow(e.span)),
                    (UnOp::Neg, Value::Float(f)) => Ok(Value::Float(-f)),
                    (UnOp::Neg, Value::Tensor(t)) => {
                        Ok(Value::Tensor(self.node(Op::Scale { factor: -1.0 }, path, e.span, &[t])?))
                    }
                    (UnOp::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
                    (op, v) => Err(self.type_error(
                        e.span,
                        &format!("`{}` cannot apply to {}", if *op == UnOp::Neg { "-" } else { "not" }, v.a_kind()),
                    )),
                }
            }
            ExprKind::Binary(op, a, b) => {
                let x = self.eval(a, env, path)?;
                let y = self.eval(b, env, path)?;
                self.binary(*op, x, y, e.span, path)
            }
            ExprKind::Call { callee, args } => self.call(callee, args, e.span, env, path),
        }
    }

    fn lookup(&mut self, n: &str, span: Span, env: &Env) -> R<Value> {
        if let Some((v, _)) = env.vars.get(n) {
            return Ok(v.clone());
        }
        if env.failed.contains(n) {
            return Err(Reported);
        }
        let hint = if self.prog.modules.contains_key(n) || builtins::is_builtin(n) {
            format!("`{n}` is a module; an instance is written `name = {n}(config)(inputs)`")
        } else {
            let near = nearest(n, env.vars.keys().map(String::as_str), 3);
            if near.is_empty() {
                "names must be parameters, inputs or earlier statements".to_string()
            } else {
                format!("did you mean {}?", near.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" or "))
            }
        };
        Err(self
            .error(Diagnostic::error("E0305", format!("unknown name `{n}`")).at(span, "not defined here").hint(hint)))
    }

    /// `a.b.c` → the site at that path below instance `a`.
    fn field(&mut self, e: &Expr, env: &Env) -> R<Value> {
        let mut parts = Vec::new();
        let mut cur = e;
        loop {
            match &cur.kind {
                ExprKind::Field(base, f) => {
                    parts.push(f.name.clone());
                    cur = base;
                }
                ExprKind::Name(n) => {
                    parts.push(n.clone());
                    break;
                }
                _ => {
                    return Err(self.error(
                        Diagnostic::error("E0306", "cannot take a field of this")
                            .at(cur.span, "not an instance name")
                            .hint("fields name sites inside an instance: `backbone.blocks.11.mlp`"),
                    ))
                }
            }
        }
        parts.reverse();
        let Some(root) = env.instances.get(&parts[0]).cloned() else {
            if env.vars.contains_key(&parts[0]) {
                return Err(self.error(
                    Diagnostic::error("E0306", format!("`{}` is a value, not an instance", parts[0]))
                        .at(cur.span, "has no fields")
                        .hint("fields name sites inside a module instance"),
                ));
            }
            return self.lookup(&parts[0], cur.span, env);
        };
        let path = std::iter::once(root.clone()).chain(parts[1..].iter().cloned()).collect::<Vec<_>>().join(".");
        if let Some(site) = self.sites.get(&path) {
            return Ok(Value::Tensor(site.output));
        }
        let prefix = format!("{root}.");
        let near = nearest(&path, self.site_order.iter().filter(|p| p.starts_with(&prefix)).map(String::as_str), 3);
        Err(self.error(
            Diagnostic::error("E0307", format!("`{path}` is not a site of `{root}`"))
                .at(e.span, "no such instance or named value")
                .hint(if near.is_empty() {
                    format!("`graft select SPEC '{root}.*'` lists what `{root}` has")
                } else {
                    format!("did you mean {}?", near.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" or "))
                }),
        ))
    }

    fn overflow(&mut self, span: Span) -> Reported {
        self.error(
            Diagnostic::error("E0308", "arithmetic overflow")
                .at(span, "the result does not fit in 64 bits")
                .hint("check the sizes in this expression"),
        )
    }

    fn type_error(&mut self, span: Span, msg: &str) -> Reported {
        self.error(
            Diagnostic::error("E0309", "type mismatch")
                .at(span, msg)
                .hint("configuration values are int, float, bool, str or list; tensors come from inputs and instances"),
        )
    }

    fn binary(&mut self, op: BinOp, x: Value, y: Value, span: Span, path: &str) -> R<Value> {
        use Value::*;
        let fl = |v: &Value| match v {
            Int(i) => Some(*i as f64),
            Float(f) => Some(*f),
            _ => None,
        };
        match (op, &x, &y) {
            (BinOp::And, Bool(a), Bool(b)) => return Ok(Bool(*a && *b)),
            (BinOp::Or, Bool(a), Bool(b)) => return Ok(Bool(*a || *b)),
            (BinOp::Eq, a, b) if !matches!(a, Tensor(_)) => {
                return Ok(Bool(a == b || (fl(a).is_some() && fl(a) == fl(b))))
            }
            (BinOp::Ne, a, b) if !matches!(a, Tensor(_)) => {
                return Ok(Bool(!(a == b || (fl(a).is_some() && fl(a) == fl(b)))))
            }
            _ => {}
        }
        // Tensors.
        match (op, &x, &y) {
            (BinOp::Add, Tensor(a), Tensor(b)) => return Ok(Tensor(self.node(Op::Add, path, span, &[*a, *b])?)),
            (BinOp::Add, Tensor(_), Absent) => return Ok(x),
            (BinOp::Add, Absent, Tensor(_)) => return Ok(y),
            (BinOp::Sub, Tensor(a), Tensor(b)) => {
                let nb = self.node(Op::Scale { factor: -1.0 }, path, span, &[*b])?;
                return Ok(Tensor(self.node(Op::Add, path, span, &[*a, nb])?));
            }
            (BinOp::Mul, Tensor(a), Tensor(b)) => return Ok(Tensor(self.node(Op::Mul, path, span, &[*a, *b])?)),
            (BinOp::Mul, Tensor(t), s) | (BinOp::Mul, s, Tensor(t)) if fl(s).is_some() => {
                let factor = fl(s).expect("number");
                return Ok(Tensor(self.node(Op::Scale { factor }, path, span, &[*t])?));
            }
            (BinOp::Div, Tensor(t), s) if fl(s).is_some_and(|f| f != 0.0) => {
                let factor = 1.0 / fl(s).expect("number");
                return Ok(Tensor(self.node(Op::Scale { factor }, path, span, &[*t])?));
            }
            (_, Tensor(_), _) | (_, _, Tensor(_)) | (_, Absent, _) | (_, _, Absent) => {
                return Err(
                    self.type_error(span, &format!("this operator cannot combine {} and {}", x.a_kind(), y.a_kind()))
                )
            }
            _ => {}
        }
        // Integers stay integers; anything with a float is float.
        if let (Int(a), Int(b)) = (&x, &y) {
            let (a, b) = (*a, *b);
            let r = match op {
                BinOp::Add => a.checked_add(b),
                BinOp::Sub => a.checked_sub(b),
                BinOp::Mul => a.checked_mul(b),
                BinOp::Div | BinOp::Rem if b == 0 => {
                    return Err(self.error(
                        Diagnostic::error("E0310", "division by zero")
                            .at(span, "the divisor is 0")
                            .hint("check the parameters of this expression"),
                    ))
                }
                BinOp::Div => a.checked_div(b),
                BinOp::Rem => a.checked_rem(b),
                BinOp::Lt => return Ok(Bool(a < b)),
                BinOp::Le => return Ok(Bool(a <= b)),
                BinOp::Gt => return Ok(Bool(a > b)),
                BinOp::Ge => return Ok(Bool(a >= b)),
                _ => return Err(self.type_error(span, "`and`/`or` need booleans")),
            };
            return r.map(Int).ok_or_else(|| self.overflow(span));
        }
        let (Some(a), Some(b)) = (fl(&x), fl(&y)) else {
            return Err(
                self.type_error(span, &format!("this operator cannot combine {} and {}", x.a_kind(), y.a_kind()))
            );
        };
        let r = match op {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
            BinOp::Rem => a % b,
            BinOp::Lt => return Ok(Bool(a < b)),
            BinOp::Le => return Ok(Bool(a <= b)),
            BinOp::Gt => return Ok(Bool(a > b)),
            BinOp::Ge => return Ok(Bool(a >= b)),
            _ => return Err(self.type_error(span, "`and`/`or` need booleans")),
        };
        if !r.is_finite() {
            return Err(self.overflow(span));
        }
        Ok(Float(r))
    }

    fn call(&mut self, callee: &Expr, args: &[Arg], span: Span, env: &Env, path: &str) -> R<Value> {
        let name = match &callee.kind {
            ExprKind::Name(n) => n.clone(),
            ExprKind::Call { callee: inner, .. } => {
                let what = match &inner.kind {
                    ExprKind::Name(n) => format!("`{n}`"),
                    _ => "an instance".to_string(),
                };
                return Err(self.error(
                    Diagnostic::error("E0311", format!("an instance of {what} needs a name"))
                        .at(span, "anonymous instance")
                        .hint("give it a statement of its own, `name = module(config)(inputs)`, so that its parameters get a path"),
                ));
            }
            _ => {
                return Err(self.error(
                    Diagnostic::error("E0312", "this cannot be called")
                        .at(callee.span, "not a function or module")
                        .hint("calls are `function(args)` or `name = module(config)(inputs)`"),
                ))
            }
        };
        if builtins::SCALAR_FNS.contains(&name.as_str()) {
            let vals = self.eval_args(args, env, path)?;
            return self.scalar_fn(&name, &vals, span);
        }
        if builtins::TENSOR_FNS.contains(&name.as_str()) {
            let vals = self.eval_args(args, env, path)?;
            return self.tensor_fn(&name, vals, span, path);
        }
        if self.prog.modules.contains_key(&name) || builtins::PRIMITIVES.contains(&name.as_str()) {
            return Err(self.error(
                Diagnostic::error("E0311", format!("an instance of `{name}` needs a name and inputs"))
                    .at(span, "used like a function")
                    .hint(format!("write `x = {name}(config)(inputs)` as its own statement")),
            ));
        }
        let mut cands: Vec<&str> = self.prog.modules.keys().map(String::as_str).collect();
        cands.extend(builtins::TENSOR_FNS);
        cands.extend(builtins::PRIMITIVES);
        cands.extend(builtins::SCALAR_FNS);
        let near = nearest(&name, cands, 3);
        Err(self.error(
            Diagnostic::error("E0313", format!("unknown module or function `{name}`"))
                .at(callee.span, "not defined")
                .hint(if near.is_empty() {
                    format!("modules come from this file or a `use` ({})", super::load::std_names())
                } else {
                    format!(
                        "did you mean {}? (and is it imported with `use`?)",
                        near.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" or ")
                    )
                }),
        ))
    }

    fn scalar_fn(&mut self, name: &str, a: &[ArgVal], span: Span) -> R<Value> {
        let num = |v: &Value| match v {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        };
        let want = if name == "min" || name == "max" { 2 } else { 1 };
        if a.len() != want {
            return Err(self.error(
                Diagnostic::error("E0314", format!("`{name}` takes {want} argument(s), got {}", a.len()))
                    .at(span, "wrong number of arguments")
                    .hint(format!("call it as `{name}({})`", if want == 2 { "a, b" } else { "x" })),
            ));
        }
        let r = match (name, &a[0].value) {
            ("int", Value::Float(f)) if f.is_finite() && f.abs() < 9.2e18 => Some(Value::Int(f.floor() as i64)),
            ("int", Value::Int(i)) => Some(Value::Int(*i)),
            ("float", v) => num(v).map(Value::Float),
            ("sqrt", v) => num(v).filter(|x| *x >= 0.0).map(|x| Value::Float(x.sqrt())),
            ("len", Value::List(l)) => Some(Value::Int(l.len() as i64)),
            ("min" | "max", x) => match (x, &a[1].value) {
                (Value::Int(p), Value::Int(q)) => Some(Value::Int(if name == "min" { *p.min(q) } else { *p.max(q) })),
                (p, q) => match (num(p), num(q)) {
                    (Some(p), Some(q)) => Some(Value::Float(if name == "min" { p.min(q) } else { p.max(q) })),
                    _ => None,
                },
            },
            _ => None,
        };
        r.ok_or_else(|| self.type_error(a[0].span, &format!("`{name}` cannot take {}", a[0].value.a_kind())))
    }
}
