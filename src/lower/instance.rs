//! Instances: modules, aliases, parametric primitives, `repeat`, and tensor functions.

use super::builtins::nearest;
use super::eval::{ArgVal, Env};
use super::{limits, Builder, ModuleEntry, Reported, Site, SiteKind, Value, R};
use crate::diag::Diagnostic;
use crate::ir::{DType, Init, NodeId, Op, ParamInfo, ParamSource};
use crate::source::Span;
use crate::syntax::ast::{Arg, LetValue, ParamTy, Stmt};

/// Bind arguments to a fixed signature of `(name, default)`; `None` = required.
fn bind(b: &mut Builder, what: &str, args: Vec<ArgVal>, sig: &[(&str, Option<Value>)], span: Span) -> R<Vec<Value>> {
    let mut slots: Vec<Option<Value>> = vec![None; sig.len()];
    let mut pos = 0;
    for a in args {
        let i = match &a.name {
            None => {
                if pos >= sig.len() {
                    return Err(b.error(
                        Diagnostic::error("E0401", format!("too many arguments to `{what}`"))
                            .at(a.span, format!("`{what}` takes {} argument(s)", sig.len()))
                            .hint(format!(
                                "`{what}` takes ({})",
                                sig.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                            )),
                    ));
                }
                pos += 1;
                pos - 1
            }
            Some((n, nspan)) => match sig.iter().position(|(s, _)| s == n) {
                Some(i) => i,
                None => {
                    let near = nearest(n, sig.iter().map(|(s, _)| *s), 2);
                    return Err(b.error(
                        Diagnostic::error("E0402", format!("`{what}` has no parameter `{n}`"))
                            .at(*nspan, "unknown parameter")
                            .hint(if near.is_empty() {
                                format!(
                                    "`{what}` takes ({})",
                                    sig.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                                )
                            } else {
                                format!("did you mean `{}`?", near[0])
                            }),
                    ));
                }
            },
        };
        if slots[i].is_some() {
            return Err(b.error(
                Diagnostic::error("E0403", format!("`{}` given twice", sig[i].0))
                    .at(a.span, "given again here")
                    .hint("pass each parameter once"),
            ));
        }
        slots[i] = Some(a.value);
    }
    let mut out = Vec::with_capacity(sig.len());
    for (slot, (n, default)) in slots.into_iter().zip(sig) {
        match slot.or_else(|| default.clone()) {
            Some(v) => out.push(v),
            None => {
                return Err(b.error(
                    Diagnostic::error("E0404", format!("`{what}` needs `{n}`"))
                        .at(span, format!("missing `{n}`"))
                        .hint(format!("pass it as `{n}: ...`")),
                ))
            }
        }
    }
    Ok(out)
}

impl Builder {
    fn int_arg(&mut self, v: &Value, what: &str, span: Span) -> R<i64> {
        match v {
            Value::Int(i) => Ok(*i),
            other => Err(self.error(
                Diagnostic::error("E0405", format!("`{what}` must be an int"))
                    .at(span, format!("got {}", other.a_kind()))
                    .hint("sizes and counts are integers; use int(x) to convert"),
            )),
        }
    }

    fn float_arg(&mut self, v: &Value, what: &str, span: Span) -> R<f64> {
        match v {
            Value::Int(i) => Ok(*i as f64),
            Value::Float(f) => Ok(*f),
            other => Err(self.error(
                Diagnostic::error("E0405", format!("`{what}` must be a number"))
                    .at(span, format!("got {}", other.a_kind()))
                    .hint("write a number such as 1e-6"),
            )),
        }
    }

    fn size_arg(&mut self, v: &Value, what: &str, span: Span) -> R<i64> {
        let n = self.int_arg(v, what, span)?;
        if n <= 0 || n as u128 > limits::MAX_PARAM_ELEMENTS {
            return Err(self.error(
                Diagnostic::error("E0406", format!("`{what}` = {n} is not a usable size"))
                    .at(span, "sizes must be positive and below 2^40")
                    .hint("check the parameters that compute it"),
            ));
        }
        Ok(n)
    }

    fn tensor_arg(&mut self, v: &Value, what: &str, span: Span) -> R<Option<NodeId>> {
        match v {
            Value::Tensor(t) => Ok(Some(*t)),
            Value::Absent => Ok(None),
            other => Err(self.error(
                Diagnostic::error("E0407", format!("`{what}` must be a tensor"))
                    .at(span, format!("got {}", other.a_kind()))
                    .hint("tensors come from inputs, instances and tensor functions"),
            )),
        }
    }

    /// Create a parameter node, owned by the current component.
    pub(crate) fn new_param(&mut self, path: &str, shape: Vec<i64>, init: Init, span: Span) -> R<NodeId> {
        let mut numel: u128 = 1;
        for &d in &shape {
            numel = numel.saturating_mul(d.max(0) as u128);
        }
        if shape.iter().any(|&d| d <= 0) || numel > limits::MAX_PARAM_ELEMENTS {
            return Err(self.error(
                Diagnostic::error("E0406", format!("parameter `{path}` has an absurd shape {shape:?}"))
                    .at(span, "declared here")
                    .hint("every dimension must be positive and a tensor below 2^40 elements"),
            ));
        }
        self.total_elements += numel;
        if self.total_elements > limits::MAX_TOTAL_ELEMENTS {
            return Err(self.error(
                Diagnostic::error("E0406", "the model has more than 2^42 parameters")
                    .at(span, "while creating this parameter")
                    .hint("check depths, widths and repeat counts"),
            ));
        }
        let source = match &self.binding {
            Some(binding) => ParamSource::Weights {
                binding: binding.clone(),
                key: path.strip_prefix(&format!("{binding}.")).unwrap_or(path).to_string(),
            },
            None => ParamSource::Init { init },
        };
        let info = ParamInfo {
            path: path.to_string(),
            shape,
            dtype: DType::F32,
            trainable: false,
            component: self.component.clone(),
            source,
        };
        self.node(Op::Parameter(info), path, span, &[])
    }

    /// `name = callee(config)(inputs)` at `path`. Returns the instance's output.
    pub(crate) fn instance(
        &mut self,
        callee: &str,
        callee_span: Span,
        config: Vec<ArgVal>,
        inputs: Vec<ArgVal>,
        path: &str,
        span: Span,
    ) -> R<Value> {
        if self.stack.len() >= limits::MAX_INSTANCE_DEPTH {
            return Err(self.error(
                Diagnostic::error("E0408", "modules nested too deep")
                    .at(span, format!("more than {} instances deep", limits::MAX_INSTANCE_DEPTH))
                    .hint("is a module instantiating itself through an alias?"),
            ));
        }
        if let Some((_, first)) = self.stack.iter().find(|(m, _)| m == callee) {
            let first = *first;
            let chain: Vec<String> = self.stack.iter().map(|(m, _)| m.clone()).chain([callee.to_string()]).collect();
            return Err(self.error(
                Diagnostic::error("E0409", format!("module `{callee}` instantiates itself"))
                    .at(callee_span, "recursive instance")
                    .also(first, "entered here")
                    .hint(format!("the chain is {}; use `repeat(n)` for stacks of blocks", chain.join(" → "))),
            ));
        }
        let input = inputs.first().and_then(|a| match a.value {
            Value::Tensor(t) => Some(t),
            _ => None,
        });
        let entry = self.prog.modules.get(callee).cloned();
        let (out, kind) = match entry.as_deref() {
            Some(ModuleEntry::Alias(alias)) => {
                let env = Env::default();
                let mut preset = self.eval_args(&alias.args, &env, path)?;
                // Caller's arguments override the alias's presets.
                preset
                    .retain(|p| !config.iter().any(|c| c.name.as_ref().map(|n| &n.0) == p.name.as_ref().map(|n| &n.0)));
                preset.extend(config);
                self.stack.push((callee.to_string(), alias.name.span));
                let r = self.instance(&alias.target.name, alias.target.span, preset, inputs, path, span);
                self.stack.pop();
                return r;
            }
            Some(ModuleEntry::Decl(m)) => {
                self.stack.push((callee.to_string(), callee_span));
                let r = self.module_body(m, config, inputs, path, span);
                self.stack.pop();
                (r?, SiteKind::Module(callee.to_string()))
            }
            None if super::builtins::PRIMITIVES.contains(&callee) => {
                (self.primitive(callee, config, inputs, path, span)?, SiteKind::Primitive(callee.to_string()))
            }
            None => {
                let mut cands: Vec<&str> = self.prog.modules.keys().map(String::as_str).collect();
                cands.extend(super::builtins::PRIMITIVES);
                let near = nearest(callee, cands, 3);
                return Err(self.error(
                    Diagnostic::error("E0313", format!("unknown module `{callee}`"))
                        .at(callee_span, "not defined")
                        .hint(if near.is_empty() {
                            "modules come from this file or a `use` (std.vit, std.bert, std.adapters, std.encoders)"
                                .to_string()
                        } else {
                            format!(
                                "did you mean {}? (and is it imported with `use`?)",
                                near.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" or ")
                            )
                        }),
                ));
            }
        };
        if let Value::Tensor(o) = out {
            self.add_site(Site { path: path.to_string(), kind, input, output: o, span })?;
        }
        Ok(out)
    }

    fn module_body(
        &mut self,
        m: &crate::syntax::ast::ModuleDecl,
        config: Vec<ArgVal>,
        inputs: Vec<ArgVal>,
        path: &str,
        span: Span,
    ) -> R<Value> {
        let what = m.name.name.clone();
        // The adapter's site belongs to this module only, not to the ones it contains.
        let site = self.adapter_site.take();
        let mut env = Env { scope: path.to_string(), ..Env::default() };
        // Parameters: arguments by position or name; defaults see earlier parameters.
        let mut given: Vec<Option<ArgVal>> = (0..m.params.len()).map(|_| None).collect();
        let mut pos = 0;
        for a in config {
            let i = match &a.name {
                None => {
                    if pos >= m.params.len() {
                        return Err(self.error(
                            Diagnostic::error("E0401", format!("too many arguments to `{what}`"))
                                .at(a.span, format!("`{what}` takes {} parameter(s)", m.params.len()))
                                .also(m.name.span, "defined here")
                                .hint(format!(
                                    "`{what}` takes ({})",
                                    m.params.iter().map(|p| p.name.name.clone()).collect::<Vec<_>>().join(", ")
                                )),
                        ));
                    }
                    pos += 1;
                    pos - 1
                }
                Some((n, nspan)) => match m.params.iter().position(|p| &p.name.name == n) {
                    Some(i) => i,
                    None => {
                        let near = nearest(n, m.params.iter().map(|p| p.name.name.as_str()), 2);
                        return Err(self.error(
                            Diagnostic::error("E0402", format!("`{what}` has no parameter `{n}`"))
                                .at(*nspan, "unknown parameter")
                                .also(m.name.span, format!("`{what}` is defined here"))
                                .hint(if near.is_empty() {
                                    format!(
                                        "`{what}` takes ({})",
                                        m.params.iter().map(|p| p.name.name.clone()).collect::<Vec<_>>().join(", ")
                                    )
                                } else {
                                    format!("did you mean `{}`?", near[0])
                                }),
                        ));
                    }
                },
            };
            if given[i].is_some() {
                return Err(self.error(
                    Diagnostic::error("E0403", format!("`{}` given twice", m.params[i].name.name))
                        .at(a.span, "given again here")
                        .hint("pass each parameter once"),
                ));
            }
            given[i] = Some(a);
        }
        // Inputs: the top-level `in` statements, in order.
        let ins: Vec<(&crate::syntax::ast::Ident, bool)> = m
            .body
            .iter()
            .filter_map(|s| match s {
                Stmt::In { name, optional } => Some((name, *optional)),
                _ => None,
            })
            .collect();
        let mut bound: Vec<Option<Value>> = vec![None; ins.len()];
        let mut pos = 0;
        for a in inputs {
            let i = match &a.name {
                None => {
                    pos += 1;
                    pos - 1
                }
                Some((n, nspan)) => match ins.iter().position(|(i, _)| &i.name == n) {
                    Some(i) => i,
                    None => {
                        return Err(self.error(
                            Diagnostic::error("E0411", format!("`{what}` has no input `{n}`"))
                                .at(*nspan, "unknown input")
                                .hint(format!(
                                    "`{what}` takes inputs ({})",
                                    ins.iter().map(|(i, _)| i.name.clone()).collect::<Vec<_>>().join(", ")
                                )),
                        ))
                    }
                },
            };
            if i >= ins.len() {
                return Err(self.error(
                    Diagnostic::error("E0412", format!("`{what}` takes {} input(s), got more", ins.len()))
                        .at(a.span, "extra input")
                        .also(m.name.span, "defined here")
                        .hint(format!(
                            "`{what}` takes inputs ({})",
                            ins.iter().map(|(i, _)| i.name.clone()).collect::<Vec<_>>().join(", ")
                        )),
                ));
            }
            if !matches!(a.value, Value::Tensor(_) | Value::Absent) {
                return Err(self.error(
                    Diagnostic::error("E0407", format!("input `{}` of `{what}` must be a tensor", ins[i].0.name))
                        .at(a.span, format!("got {}", a.value.a_kind()))
                        .hint("configuration goes in the first argument list, tensors in the second"),
                ));
            }
            bound[i] = Some(a.value);
        }
        for ((name, optional), v) in ins.iter().zip(bound) {
            let v = match v {
                Some(v) => v,
                None if *optional => Value::Absent,
                None => {
                    return Err(self.error(
                        Diagnostic::error("E0412", format!("`{what}` needs input `{}`", name.name))
                            .at(span, "missing input")
                            .also(name.span, "declared here")
                            .hint(format!(
                                "pass inputs in the second list: `{what}(...)({})`",
                                ins.iter().map(|(i, _)| i.name.clone()).collect::<Vec<_>>().join(", ")
                            )),
                    ))
                }
            };
            env.vars.insert(name.name.clone(), (v, Some(name.span)));
        }
        // Defaults see earlier parameters, the inputs (`features(context)`) and, for a
        // module placed as an adapter, the site's widths (`site_in`, `site_out`).
        let site_vars: Vec<&str> = match site {
            Some((i, o)) => {
                env.vars.insert("site_in".into(), (Value::Int(i), None));
                env.vars.insert("site_out".into(), (Value::Int(o), None));
                super::builtins::SITE_NAMES.to_vec()
            }
            None => Vec::new(),
        };
        for (p, g) in m.params.iter().zip(given) {
            let (v, vspan) = match g {
                Some(a) => (a.value, a.span),
                None => match &p.default {
                    Some(d) => (self.eval(d, &env, path)?, d.span),
                    None => {
                        return Err(self.error(
                            Diagnostic::error("E0404", format!("`{what}` needs `{}`", p.name.name))
                                .at(span, format!("missing `{}`", p.name.name))
                                .also(p.name.span, "declared here without a default")
                                .hint(format!("pass it as `{}: ...`", p.name.name)),
                        ))
                    }
                },
            };
            let v = match (p.ty, v) {
                (ParamTy::Int, v @ Value::Int(_))
                | (ParamTy::Float, v @ Value::Float(_))
                | (ParamTy::Bool, v @ Value::Bool(_))
                | (ParamTy::Str, v @ Value::Str(_))
                | (ParamTy::List, v @ Value::List(_)) => v,
                (ParamTy::Float, Value::Int(i)) => Value::Float(i as f64),
                (ty, v) => {
                    return Err(self.error(
                        Diagnostic::error(
                            "E0410",
                            format!(
                                "`{}` of `{what}` must be {} {}",
                                p.name.name,
                                if ty == ParamTy::Int { "an" } else { "a" },
                                ty.name()
                            ),
                        )
                        .at(vspan, format!("got {}", v.a_kind()))
                        .also(p.name.span, "declared here")
                        .hint(if ty == ParamTy::Int {
                            "use int(x) to convert".to_string()
                        } else {
                            format!("pass a {}", ty.name())
                        }),
                    ))
                }
            };
            env.vars.insert(p.name.name.clone(), (v, Some(p.name.span)));
        }
        for n in site_vars {
            if !m.params.iter().any(|p| p.name.name == n) {
                env.vars.remove(n);
            }
        }
        let mut out = None;
        self.exec(&m.body, &mut env, &mut out)?;
        match out {
            Some((v, _)) => Ok(v),
            None => Err(self.error(
                Diagnostic::error("E0413", format!("module `{what}` has no `out`"))
                    .at(m.name.span, "never produces a value")
                    .hint("end the module body with `out expression`"),
            )),
        }
    }

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

    fn exec_one(&mut self, s: &Stmt, env: &mut Env, out: &mut Option<(Value, Span)>) -> R<()> {
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
                        })?;
                    }
                    return Ok(v);
                }
            }
        }
        let v = self.eval(e, env, path)?;
        if let Value::Tensor(t) = v {
            let input = self.graph.operands(t).first().copied();
            self.add_site(Site { path: path.to_string(), kind: SiteKind::Value, input, output: t, span: e.span })?;
        }
        Ok(v)
    }

    #[allow(clippy::too_many_arguments)]
    fn repeat(
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

    fn param_stmt(&mut self, args: Vec<ArgVal>, path: &str, span: Span) -> R<Value> {
        let v = bind(
            self,
            "param",
            args,
            &[
                ("shape", None),
                ("init", Some(Value::Str("zeros".into()))),
                ("std", Some(Value::Float(0.02))),
                ("value", Some(Value::Float(0.0))),
            ],
            span,
        )?;
        let Value::List(items) = &v[0] else {
            return Err(self.error(
                Diagnostic::error("E0405", "`shape` must be a list of sizes")
                    .at(span, format!("got {}", v[0].a_kind()))
                    .hint("write param([1, 1, dim])"),
            ));
        };
        let mut shape = Vec::new();
        for it in items.clone() {
            shape.push(self.size_arg(&it, "shape", span)?);
        }
        let init = self.init_rule(&v[1], &v[2], &v[3], 1.0, span)?;
        Ok(Value::Tensor(self.new_param(path, shape, init, span)?))
    }

    fn init_rule(&mut self, init: &Value, std: &Value, value: &Value, bound: f64, span: Span) -> R<Init> {
        let std = self.float_arg(std, "std", span)?;
        let value = self.float_arg(value, "value", span)?;
        Ok(match init {
            Value::Str(s) if s == "zeros" => Init::Zeros,
            Value::Str(s) if s == "ones" => Init::Ones,
            Value::Str(s) if s == "normal" => Init::Normal { std },
            Value::Str(s) if s == "trunc_normal" => Init::TruncNormal { std },
            Value::Str(s) if s == "constant" => Init::Constant { value },
            Value::Str(s) if s == "default" => Init::Uniform { bound },
            other => {
                return Err(self.error(
                    Diagnostic::error("E0417", "unknown init rule").at(span, format!("init {other:?}")).hint(
                        "init is one of \"default\", \"zeros\", \"ones\", \"normal\", \"trunc_normal\", \"constant\"",
                    ),
                ))
            }
        })
    }

    fn primitive(&mut self, prim: &str, config: Vec<ArgVal>, inputs: Vec<ArgVal>, path: &str, span: Span) -> R<Value> {
        if prim == "param" {
            return Err(self.error(
                Diagnostic::error("E0418", "`param` takes no inputs")
                    .at(span, "called with an input list")
                    .hint("write `name = param([shape])`"),
            ));
        }
        let s = |v: &str| Some(Value::Str(v.into()));
        let t = Some(Value::Bool(true));
        let f02 = Some(Value::Float(0.02));
        let f0 = Some(Value::Float(0.0));
        let sig: Vec<(&str, Option<Value>)> = match prim {
            "linear" => vec![
                ("in_features", None),
                ("out_features", None),
                ("bias", t),
                ("init", s("default")),
                ("std", f02),
                ("value", f0),
            ],
            "grouped_linear" => vec![
                ("in_features", None),
                ("out_features", None),
                ("groups", None),
                ("bias", t),
                ("init", s("default")),
                ("std", f02),
                ("value", f0),
            ],
            "layernorm" => vec![("dim", None), ("eps", Some(Value::Float(1e-5)))],
            "conv2d" | "conv3d" => vec![
                ("in_channels", None),
                ("out_channels", None),
                ("kernel", None),
                ("stride", Some(Value::Absent)),
                ("bias", t),
            ],
            "embedding" => vec![("num", None), ("dim", None), ("std", Some(Value::Float(1.0)))],
            _ => unreachable!("primitive {prim}"),
        };
        let v = bind(self, prim, config, &sig, span)?;
        if inputs.len() != 1 {
            return Err(self.error(
                Diagnostic::error("E0412", format!("`{prim}` takes 1 input, got {}", inputs.len()))
                    .at(span, "wrong number of inputs")
                    .hint(format!("write `name = {prim}(config)(x)`")),
            ));
        }
        let Some(x) = self.tensor_arg(&inputs[0].value, "input", inputs[0].span)? else {
            return Ok(Value::Absent);
        };
        let wpath = format!("{path}.weight");
        let bpath = format!("{path}.bias");
        let node = match prim {
            "linear" | "grouped_linear" => {
                let i = self.size_arg(&v[0], "in_features", span)?;
                let o = self.size_arg(&v[1], "out_features", span)?;
                let (groups, rest) = if prim == "grouped_linear" {
                    (self.size_arg(&v[2], "groups", span)?, &v[3..])
                } else {
                    (1, &v[2..])
                };
                if i % groups != 0 || o % groups != 0 {
                    return Err(self.error(
                        Diagnostic::error("E0419", format!("{groups} groups do not divide {i} → {o} features"))
                            .at(span, "uneven groups")
                            .hint("groups must divide both feature counts"),
                    ));
                }
                let bias = matches!(rest[0], Value::Bool(true));
                let fan_in = i / groups;
                let init = self.init_rule(&rest[1], &rest[2], &rest[3], 1.0 / (fan_in as f64).sqrt(), span)?;
                let w = self.new_param(&wpath, vec![o, fan_in], init.clone(), span)?;
                let mut ops = vec![x, w];
                if bias {
                    let binit = match init {
                        Init::Normal { .. } | Init::TruncNormal { .. } | Init::Constant { .. } => Init::Zeros,
                        other => other,
                    };
                    ops.push(self.new_param(&bpath, vec![o], binit, span)?);
                }
                let op = if prim == "linear" { Op::Linear } else { Op::GroupedLinear { groups } };
                self.node(op, path, span, &ops)?
            }
            "layernorm" => {
                let d = self.size_arg(&v[0], "dim", span)?;
                let eps = self.float_arg(&v[1], "eps", span)?;
                let w = self.new_param(&wpath, vec![d], Init::Ones, span)?;
                let b = self.new_param(&bpath, vec![d], Init::Zeros, span)?;
                self.node(Op::LayerNorm { eps }, path, span, &[x, w, b])?
            }
            "conv2d" | "conv3d" => {
                let sp = if prim == "conv2d" { 2 } else { 3 };
                let ci = self.size_arg(&v[0], "in_channels", span)?;
                let co = self.size_arg(&v[1], "out_channels", span)?;
                let kernel = self.sizes(&v[2], sp, "kernel", span)?;
                let stride =
                    if v[3] == Value::Absent { kernel.clone() } else { self.sizes(&v[3], sp, "stride", span)? };
                let mut shape = vec![co, ci];
                shape.extend(&kernel);
                let fan_in = (ci * kernel.iter().product::<i64>()) as f64;
                let init = Init::Uniform { bound: 1.0 / fan_in.sqrt() };
                let w = self.new_param(&wpath, shape, init.clone(), span)?;
                let mut ops = vec![x, w];
                if matches!(v[4], Value::Bool(true)) {
                    ops.push(self.new_param(&bpath, vec![co], init, span)?);
                }
                let op = if sp == 2 {
                    Op::Conv2d { stride: [stride[0], stride[1]] }
                } else {
                    Op::Conv3d { stride: [stride[0], stride[1], stride[2]] }
                };
                self.node(op, path, span, &ops)?
            }
            _ => {
                let n = self.size_arg(&v[0], "num", span)?;
                let d = self.size_arg(&v[1], "dim", span)?;
                let std = self.float_arg(&v[2], "std", span)?;
                let w = self.new_param(&wpath, vec![n, d], Init::Normal { std }, span)?;
                self.node(Op::Embedding, path, span, &[x, w])?
            }
        };
        Ok(Value::Tensor(node))
    }

    fn sizes(&mut self, v: &Value, n: usize, what: &str, span: Span) -> R<Vec<i64>> {
        match v {
            Value::Int(_) => {
                let k = self.size_arg(v, what, span)?;
                Ok(vec![k; n])
            }
            Value::List(items) if items.len() == n => items.iter().map(|i| self.size_arg(i, what, span)).collect(),
            other => Err(self.error(
                Diagnostic::error("E0405", format!("`{what}` must be an int or a list of {n}"))
                    .at(span, format!("got {}", other.kind()))
                    .hint(format!("write {what}: 16 or {what}: [{}]", vec!["16"; n].join(", "))),
            )),
        }
    }

    /// Tensor functions applied inline.
    pub(crate) fn tensor_fn(&mut self, name: &str, args: Vec<ArgVal>, span: Span, path: &str) -> R<Value> {
        if name == "concat" {
            let mut ts = Vec::new();
            let mut axis = 1;
            for a in args {
                match &a.name {
                    Some((n, _)) if n == "axis" => axis = self.int_arg(&a.value, "axis", a.span)?,
                    Some((n, ns)) => {
                        return Err(self.error(
                            Diagnostic::error("E0402", format!("`concat` has no parameter `{n}`"))
                                .at(*ns, "unknown parameter")
                                .hint("concat(a, b, ..., axis: 1)"),
                        ))
                    }
                    None => match self.tensor_arg(&a.value, "concat operand", a.span)? {
                        Some(t) => ts.push(t),
                        None => return Ok(Value::Absent),
                    },
                }
            }
            if ts.len() < 2 {
                return Err(self.error(
                    Diagnostic::error("E0404", "`concat` needs at least two tensors")
                        .at(span, "too few operands")
                        .hint("concat(a, b, axis: 1)"),
                ));
            }
            return Ok(Value::Tensor(self.node(Op::Concat { axis }, path, span, &ts)?));
        }
        let sig: Vec<(&str, Option<Value>)> = match name {
            "gelu" | "relu" | "tanh" | "sigmoid" | "sinusoid_positions" | "mean_tokens" | "positions"
            | "flatten_tokens" => vec![("x", None)],
            "sdpa" => vec![("q", None), ("k", None), ("v", None), ("heads", None), ("mask", Some(Value::Absent))],
            "split" => vec![("x", None), ("parts", None), ("index", None), ("axis", Some(Value::Int(-1)))],
            "token" => vec![("x", None), ("index", Some(Value::Int(0)))],
            "reshape" => vec![("x", None), ("dims", None)],
            "permute" => vec![("x", None), ("perm", None)],
            _ => unreachable!("tensor fn {name}"),
        };
        let v = bind(self, name, args, &sig, span)?;
        let Some(x) = self.tensor_arg(&v[0], "x", span)? else {
            return Ok(Value::Absent);
        };
        let ints = |b: &mut Builder, val: &Value, what: &str| -> R<Vec<i64>> {
            match val {
                Value::List(items) => items.iter().map(|i| b.int_arg(i, what, span)).collect(),
                other => Err(b.error(
                    Diagnostic::error("E0405", format!("`{what}` must be a list of ints"))
                        .at(span, format!("got {}", other.a_kind()))
                        .hint(format!("write {what}: [0, 2, 1]")),
                )),
            }
        };
        let node = match name {
            "gelu" => self.node(Op::Gelu, path, span, &[x])?,
            "relu" => self.node(Op::Relu, path, span, &[x])?,
            "tanh" => self.node(Op::Tanh, path, span, &[x])?,
            "sigmoid" => self.node(Op::Sigmoid, path, span, &[x])?,
            "sinusoid_positions" => self.node(Op::SinusoidPositions, path, span, &[x])?,
            "mean_tokens" => self.node(Op::MeanTokens, path, span, &[x])?,
            "positions" => self.node(Op::Positions, path, span, &[x])?,
            "flatten_tokens" => {
                let r = self.node(Op::Reshape { dims: vec![0, 0, -1] }, path, span, &[x])?;
                self.node(Op::Permute { perm: vec![0, 2, 1] }, path, span, &[r])?
            }
            "sdpa" => {
                let mut ops = vec![x];
                for (i, w) in ["k", "v"].iter().enumerate() {
                    match self.tensor_arg(&v[i + 1], w, span)? {
                        Some(t) => ops.push(t),
                        None => return Ok(Value::Absent),
                    }
                }
                let heads = self.size_arg(&v[3], "heads", span)?;
                if let Some(m) = self.tensor_arg(&v[4], "mask", span)? {
                    ops.push(m);
                }
                self.node(Op::Attention { heads }, path, span, &ops)?
            }
            "split" => {
                let parts = self.size_arg(&v[1], "parts", span)?;
                let index = self.int_arg(&v[2], "index", span)?;
                let axis = self.int_arg(&v[3], "axis", span)?;
                self.node(Op::Split { axis, parts, index }, path, span, &[x])?
            }
            "token" => {
                let index = self.int_arg(&v[1], "index", span)?;
                self.node(Op::TokenSelect { index }, path, span, &[x])?
            }
            "reshape" => {
                let dims = ints(self, &v[1], "dims")?;
                self.node(Op::Reshape { dims }, path, span, &[x])?
            }
            _ => {
                let perm = ints(self, &v[1], "perm")?;
                if perm.iter().any(|&p| p < 0) {
                    return Err(self.error(
                        Diagnostic::error("E0405", "permutation entries must be non-negative")
                            .at(span, format!("got {perm:?}"))
                            .hint("write perm: [0, 2, 1]"),
                    ));
                }
                self.node(Op::Permute { perm: perm.iter().map(|&p| p as usize).collect() }, path, span, &[x])?
            }
        };
        Ok(Value::Tensor(node))
    }
}
