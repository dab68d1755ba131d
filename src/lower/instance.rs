//! Instances: a module (or alias, or parametric primitive) instantiated at a path;
//! its body runs with its arguments bound, its sites are recorded.

use super::builtins::nearest;
use super::eval::{ArgVal, Env};
use super::{limits, Builder, ModuleEntry, Site, SiteKind, Value, R};
use crate::diag::Diagnostic;
use crate::source::Span;
use crate::syntax::ast::{ModuleDecl, ParamTy, Stmt};

impl Builder {
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
        self.instances += 1;
        if self.instances > limits::MAX_INSTANCES {
            // Reported once; every later instance unwinds silently.
            if self.instances > limits::MAX_INSTANCES + 1 {
                return Err(super::Reported);
            }
            return Err(self.error(
                Diagnostic::error("E0310", format!("the model has more than {} instances", limits::MAX_INSTANCES))
                    .at(span, "while building this")
                    .hint("check repeat counts and modules that instantiate others several times for runaway sizes"),
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
        let (out, kind, args) = match entry.as_deref() {
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
                let (out, args) = r?;
                (out, SiteKind::Module(callee.to_string()), args)
            }
            None if super::builtins::PRIMITIVES.contains(&callee) => (
                self.primitive(callee, config, inputs, path, span)?,
                SiteKind::Primitive(callee.to_string()),
                Vec::new(),
            ),
            None => {
                let mut cands: Vec<&str> = self.prog.modules.keys().map(String::as_str).collect();
                cands.extend(super::builtins::PRIMITIVES);
                let near = nearest(callee, cands, 3);
                return Err(self.error(
                    Diagnostic::error("E0313", format!("unknown module `{callee}`"))
                        .at(callee_span, "not defined")
                        .hint(if near.is_empty() {
                            format!("modules come from this file or a `use` ({})", super::load::std_names())
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
            self.add_site(Site { path: path.to_string(), kind, input, output: o, span, args })?;
        }
        Ok(out)
    }

    pub(super) fn module_body(
        &mut self,
        m: &ModuleDecl,
        config: Vec<ArgVal>,
        inputs: Vec<ArgVal>,
        path: &str,
        span: Span,
    ) -> R<(Value, Vec<(String, Value)>)> {
        // The adapter's site belongs to this module only, not to the ones it contains.
        let site = self.adapter_site.take();
        let mut env = Env { scope: path.to_string(), ..Env::default() };
        let given = self.bind_config(m, config)?;
        self.bind_inputs(m, inputs, span, &mut env)?;
        self.bind_params(m, given, site, &mut env, path, span)?;
        let args = m
            .params
            .iter()
            .filter_map(|p| env.vars.get(&p.name.name).map(|(v, _)| (p.name.name.clone(), v.clone())))
            .collect();
        let mut out = None;
        self.exec(&m.body, &mut env, &mut out)?;
        match out {
            Some((v, _)) => Ok((v, args)),
            None => Err(self.error(
                Diagnostic::error("E0413", format!("module `{}` has no `out`", m.name.name))
                    .at(m.name.span, "never produces a value")
                    .hint("end the module body with `out expression`"),
            )),
        }
    }

    /// A module's configuration arguments, by position or name, per parameter.
    fn bind_config(&mut self, m: &ModuleDecl, config: Vec<ArgVal>) -> R<Vec<Option<ArgVal>>> {
        let what = &m.name.name;
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
        Ok(given)
    }

    /// Bind a module's inputs (the top-level `in` statements, in order) in `env`: by
    /// position or name; a missing optional one is absent.
    fn bind_inputs(&mut self, m: &ModuleDecl, inputs: Vec<ArgVal>, span: Span, env: &mut Env) -> R<()> {
        let what = &m.name.name;
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
        Ok(())
    }

    /// Bind every parameter in `env`: the given value or its default, checked against
    /// its type. Defaults see earlier parameters, the inputs (`features(context)`)
    /// and, for a module placed as an adapter, the site's widths (`site_in`,
    /// `site_out`).
    fn bind_params(
        &mut self,
        m: &ModuleDecl,
        given: Vec<Option<ArgVal>>,
        site: Option<(i64, i64)>,
        env: &mut Env,
        path: &str,
        span: Span,
    ) -> R<()> {
        let what = &m.name.name;
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
                    Some(d) => (self.eval(d, env, path)?, d.span),
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
        Ok(())
    }
}
