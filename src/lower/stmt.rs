//! Statements of a module body: `in`, `out`, named values, `if`, `repeat`.

use super::eval::{ArgVal, Env};
use super::{limits, Builder, Reported, Site, SiteKind, Value, R};
use crate::diag::Diagnostic;
use crate::source::Span;
use crate::syntax::ast::{Arg, LetValue, Stmt};

impl Builder {
    /// Run statements; the first failure in a statement is reported and the rest run on.
    pub(crate) fn exec(&mut self, stmts: &[Stmt], env: &mut Env, out: &mut Option<(Value, Span)>) -> R<()> {
        let mut failed = false;
        for s in stmts {
            if self.exec_one(s, env, out).is_err() {
                failed = true;
                if self.diags.items.len() > limits::MAX_DIAGNOSTICS {
                    break;
                }
            }
        }
        if failed {
            Err(Reported)
        } else {
            Ok(())
        }
    }

    pub(super) fn exec_one(&mut self, s: &Stmt, env: &mut Env, out: &mut Option<(Value, Span)>) -> R<()> {
        match s {
            Stmt::In { .. } => Ok(()),
            Stmt::Out { value, span } => {
                if let Some((_, prev)) = out {
                    let prev = *prev;
                    return Err(self.error(
                        Diagnostic::error("E0414", "a second `out`")
                            .at(*span, "module already has an output")
                            .also(prev, "first `out`")
                            .hint("a module has exactly one `out`; name other values and reach them as sites"),
                    ));
                }
                let path = env.scope.clone();
                let v = self.eval(value, env, &path)?;
                *out = Some((v, *span));
                Ok(())
            }
            Stmt::If { cond, then, otherwise, .. } => {
                let path = env.scope.clone();
                match self.eval(cond, env, &path)? {
                    Value::Bool(true) => self.exec(then, env, out),
                    Value::Bool(false) => self.exec(otherwise, env, out),
                    v => Err(self.error(
                        Diagnostic::error("E0415", "`if` needs a bool")
                            .at(cond.span, format!("got {}", v.a_kind()))
                            .hint("compare with ==, <, > to get a bool"),
                    )),
                }
            }
            Stmt::Let { name, value } => {
                if let Some((_, Some(prev))) = env.vars.get(&name.name) {
                    let prev = *prev;
                    return Err(self.error(
                        Diagnostic::error("E0201", format!("`{}` is defined twice", name.name))
                            .at(name.span, "redefined here")
                            .also(prev, "first defined here")
                            .hint("every instance and named value needs its own name"),
                    ));
                }
                let path = env.child_path(&name.name);
                let v = match value {
                    LetValue::Repeat { count, module, config, inputs, span } => {
                        self.repeat(count, module, config, inputs, env, &path, *span)
                    }
                    LetValue::Expr(e) => self.let_expr(e, env, &path),
                };
                let Ok(v) = v else {
                    env.failed.insert(name.name.clone());
                    return Err(Reported);
                };
                if self.sites.contains_key(&path) {
                    env.instances.insert(name.name.clone(), path.clone());
                }
                env.vars.insert(name.name.clone(), (v, Some(name.span)));
                Ok(())
            }
        }
    }

    /// The right side of `name = ...`: an instance, a parameter, or a value.
    pub(crate) fn let_expr(&mut self, e: &crate::syntax::ast::Expr, env: &Env, path: &str) -> R<Value> {
        use crate::syntax::ast::ExprKind;
        if let ExprKind::Call { callee, args: inputs } = &e.kind {
            if let ExprKind::Call { callee: inner, args: config } = &callee.kind {
                if let ExprKind::Name(m) = &inner.kind {
                    let config = self.eval_args(config, env, path)?;
                    let inputs = self.eval_args(inputs, env, path)?;
                    return self.instance(m, inner.span, config, inputs, path, e.span);
                }
            }
            if let ExprKind::Name(m) = &callee.kind {
                if m == "param" {
                    let args = self.eval_args(inputs, env, path)?;
                    let v = self.param_stmt(args, path, e.span)?;
                    if let Value::Tensor(t) = v {
                        self.add_site(Site {
                            path: path.to_string(),
                            kind: SiteKind::Primitive("param".into()),
                            input: None,
                            output: t,
                            span: e.span,
                            args: Vec::new(),
                        })?;
                    }
                    return Ok(v);
                }
            }
        }
        let v = self.eval(e, env, path)?;
        if let Value::Tensor(t) = v {
            let input = self.graph.operands(t).first().copied();
            self.add_site(Site {
                path: path.to_string(),
                kind: SiteKind::Value,
                input,
                output: t,
                span: e.span,
                args: vec![],
            })?;
        }
        Ok(v)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn repeat(
        &mut self,
        count: &crate::syntax::ast::Expr,
        module: &crate::syntax::ast::Ident,
        config: &[Arg],
        inputs: &[Arg],
        env: &Env,
        path: &str,
        span: Span,
    ) -> R<Value> {
        let n = self.eval(count, env, path)?;
        let n = self.int_arg(&n, "repeat count", count.span)?;
        if !(0..=limits::MAX_REPEAT).contains(&n) {
            return Err(self.error(
                Diagnostic::error("E0416", format!("repeat count {n} is out of range"))
                    .at(count.span, format!("must be between 0 and {}", limits::MAX_REPEAT))
                    .hint("a transformer has tens of blocks, not millions"),
            ));
        }
        let mut ins = self.eval_args(inputs, env, path)?;
        if ins.is_empty() {
            return Err(self.error(
                Diagnostic::error("E0412", "repeat needs an input to chain")
                    .at(span, "no inputs")
                    .hint(format!("write `repeat(n) {}(config)(x)`", module.name)),
            ));
        }
        for i in 0..n {
            let cfg = self.eval_args(config, env, path)?;
            let child = format!("{path}.{i}");
            let first = ins.remove(0);
            let mut call_ins = vec![first];
            call_ins.extend(ins.iter().map(|a| ArgVal { name: a.name.clone(), value: a.value.clone(), span: a.span }));
            let out = self.instance(&module.name, module.span, cfg, call_ins, &child, span)?;
            ins.insert(0, ArgVal { name: None, value: out, span });
        }
        Ok(ins.remove(0).value)
    }
}
